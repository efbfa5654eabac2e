"""vla_rft.storage against local directories and a real S3 server on loopback (the JuiceFS gateway, MinIO's code)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from vla_rft import storage
from vla_rft.storage import (
    ArtifactExistsError,
    ArtifactIntegrityError,
    ArtifactKindError,
    ArtifactNotFoundError,
    BucketNotFoundError,
    StorageAuthError,
    StorageConfigError,
    StorageUnreachableError,
    artifact_exists,
    read_artifact,
    read_manifest,
    write_artifact,
)

try:  # tests/ is a plain directory (no __init__.py) on sys.path under pytest's default import mode
    from s3server import (
        ACCESS_KEY,
        SECRET_KEY,
        free_port,
        raw_client,
        s3_env,  # noqa: F401  (fixture)
        s3_server,  # noqa: F401  (fixture)
        set_env,
        start_s3_subprocess,
    )
except ImportError:  # tests/ became a package
    from tests.s3server import (  # type: ignore[no-redef]
        ACCESS_KEY,
        SECRET_KEY,
        free_port,
        raw_client,
        s3_env,  # noqa: F401
        s3_server,  # noqa: F401
        set_env,
        start_s3_subprocess,
    )

SRC = str(Path(__file__).resolve().parents[1] / "src")
WRITER = (
    "import sys; from pathlib import Path; from vla_rft.storage import write_artifact; "
    "write_artifact(Path(sys.argv[1]), sys.argv[2], kind='big', config={}, overwrite=True)"
)


def make_tree(root: Path, *, big: bool = False) -> dict[str, bytes]:
    """Create a small nested tree (plus a ~1 MB binary file if ``big``); return {relpath: bytes}."""
    files = {
        "weights.bin": bytes(range(256)) * 8,
        "config/model.yaml": b"dim: 8\n",
        "config/deep/er/notes.txt": "ünïcode\n".encode(),
        "empty.txt": b"",
    }
    if big:
        files["data/blob.bin"] = os.urandom(1_000_003)
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return files


def make_many(root: Path, n: int, size: int) -> Path:
    for i in range(n):
        sub = root / f"d{i % 10}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"f{i:05d}.bin").write_bytes(os.urandom(size))
    return root


def s3_uri(env, name: str = "art") -> str:
    return f"s3://{env.bucket}/t-{uuid.uuid4().hex[:8]}/{name}"


# ------------------------------------------------------------------------------ URIs


@pytest.mark.parametrize(
    "uri, expected",
    [
        ("s3://bucket/a/b", ("bucket", "a/b")),
        ("s3://my.bucket-1/prefix/", ("my.bucket-1", "prefix")),
        ("s3://abc", ("abc", "")),
    ],
)
def test_parse_s3_uri(uri, expected):
    assert storage.is_s3_uri(uri)
    assert storage.parse_s3_uri(uri) == expected


@pytest.mark.parametrize(
    "uri, fragment",
    [
        ("s3://", "no bucket"),
        ("s3:///prefix", "no bucket"),
        ("s3://ab/x", "invalid bucket"),
        ("s3://Bucket/x", "invalid bucket"),
        ("s3://bucket/a//b", "segment"),
        ("s3://bucket/a/../b", "segment"),
        ("/local/path", "not an S3 URI"),
    ],
)
def test_parse_s3_uri_rejects_malformed(uri, fragment):
    with pytest.raises(ValueError, match=fragment):
        storage.parse_s3_uri(uri)


def test_artifact_uri_needs_prefix_and_known_scheme(tmp_path):
    with pytest.raises(ValueError, match="prefix"):
        read_manifest("s3://bucket")
    with pytest.raises(ValueError, match="scheme"):
        read_manifest("gs://bucket/x")


# ----------------------------------------------------------------------------- local


def test_local_round_trip(tmp_path):
    files = make_tree(tmp_path / "src")
    dest = tmp_path / "out" / "model"
    manifest = write_artifact(tmp_path / "src", str(dest), kind="world_model", config={"lr": 0.1})

    assert manifest["kind"] == "world_model" and manifest["schema_version"] == 1
    assert manifest["config"] == {"lr": 0.1}
    assert manifest["code_version"].startswith(storage.__version__)
    assert manifest["created_at"].endswith("+00:00")
    assert manifest["files"] == {
        rel: {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)} for rel, data in files.items()
    }
    assert json.loads((dest / "meta.json").read_text()) == manifest
    assert artifact_exists(str(dest)) and read_manifest(str(dest)) == manifest

    root, got = read_artifact(str(dest), expected_kind="world_model")
    assert root == dest and got == manifest  # verified in place
    for rel, data in files.items():
        assert (root / rel).read_bytes() == data
    assert sorted(p.name for p in dest.parent.iterdir()) == ["model"]  # no temp leftovers


def test_local_overwrite(tmp_path):
    make_tree(tmp_path / "v1")
    (tmp_path / "v2").mkdir()
    (tmp_path / "v2" / "only.txt").write_text("v2")
    dest = str(tmp_path / "art")
    write_artifact(tmp_path / "v1", dest, kind="k", config={"v": 1})

    with pytest.raises(ArtifactExistsError, match="already exists"):
        write_artifact(tmp_path / "v2", dest, kind="k", config={"v": 2})
    assert read_artifact(dest)[1]["config"] == {"v": 1}

    # a failing overwrite (config not JSON-serializable) leaves the old artifact in place
    with pytest.raises(TypeError):
        write_artifact(tmp_path / "v2", dest, kind="k", config={"v": object()}, overwrite=True)
    assert read_artifact(dest)[1]["config"] == {"v": 1}

    manifest = write_artifact(tmp_path / "v2", dest, kind="k", config={"v": 2}, overwrite=True)
    root, got = read_artifact(dest)
    assert got == manifest and got["config"] == {"v": 2}
    assert sorted(p.name for p in root.iterdir()) == ["meta.json", "only.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art", "v1", "v2"]


def test_local_integrity(tmp_path):
    make_tree(tmp_path / "src")
    dest = tmp_path / "art"
    write_artifact(tmp_path / "src", str(dest), kind="k", config={})
    (dest / "extra.txt").write_text("not listed: ignored")
    read_artifact(str(dest))

    target = dest / "config" / "model.yaml"
    original = target.read_bytes()
    target.write_bytes(b"X" + original[1:])  # same size, one byte changed
    with pytest.raises(ArtifactIntegrityError, match="config/model.yaml"):
        read_artifact(str(dest))
    target.write_bytes(original + b"\n")
    with pytest.raises(ArtifactIntegrityError, match="config/model.yaml"):
        read_artifact(str(dest))
    target.unlink()
    with pytest.raises(ArtifactIntegrityError, match="config/model.yaml.*missing"):
        read_artifact(str(dest))


def test_local_missing_manifest_and_kind(tmp_path):
    make_tree(tmp_path / "src")
    for uri in (str(tmp_path / "nope"), str(tmp_path / "src")):
        assert not artifact_exists(uri)
        with pytest.raises(ArtifactNotFoundError, match=re.escape(f"{uri} is missing or incomplete")):
            read_artifact(uri)

    write_artifact(tmp_path / "src", str(tmp_path / "art"), kind="policy", config={})
    with pytest.raises(ArtifactKindError, match="'policy'.*'world_model'"):
        read_artifact(str(tmp_path / "art"), expected_kind="world_model")


@pytest.mark.parametrize("manifest", [b"not json", b"[]", json.dumps(
    {"kind": "k", "files": {"../escape": {"sha256": "0" * 64, "size": 0}}}).encode()])
def test_malformed_manifest(tmp_path, manifest):
    (tmp_path / "art").mkdir()
    (tmp_path / "art" / "meta.json").write_bytes(manifest)
    with pytest.raises(ArtifactIntegrityError, match="malformed"):
        read_artifact(str(tmp_path / "art"))


def test_reserved_manifest_name(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "meta.json").write_text("{}")
    with pytest.raises(ValueError, match="reserved"):
        write_artifact(tmp_path / "src", str(tmp_path / "art"), kind="k", config={})


# -------------------------------------------------------------------------------- S3


def test_s3_round_trip(s3_env, tmp_path):
    files = make_tree(tmp_path / "src", big=True)
    uri = s3_uri(s3_env)
    assert not artifact_exists(uri)
    manifest = write_artifact(tmp_path / "src", uri, kind="dataset", config={"n": 3}, schema_version=2)
    assert artifact_exists(uri) and read_manifest(uri) == manifest
    assert manifest["files"]["data/blob.bin"]["sha256"] == hashlib.sha256(files["data/blob.bin"]).hexdigest()

    root, got = read_artifact(uri, expected_kind="dataset", cache_dir=tmp_path / "cache")
    assert got == manifest and got["schema_version"] == 2
    assert root.is_relative_to(tmp_path / "cache")
    for rel, data in files.items():
        assert (root / rel).read_bytes() == data
    assert json.loads((root / "meta.json").read_text()) == manifest

    # a second read reuses the verified cache; the default cache is a fresh temp dir
    assert read_artifact(uri, cache_dir=tmp_path / "cache")[0] == root
    other, _ = read_artifact(uri)
    assert other != root and (other / "data/blob.bin").read_bytes() == files["data/blob.bin"]


def test_s3_overwrite_replaces_and_cleans_stale(s3_env, tmp_path):
    make_tree(tmp_path / "v1")
    (tmp_path / "v2").mkdir()
    (tmp_path / "v2" / "only.txt").write_text("v2")
    uri = s3_uri(s3_env)
    write_artifact(tmp_path / "v1", uri, kind="k", config={"v": 1})
    with pytest.raises(ArtifactExistsError, match="already exists"):
        write_artifact(tmp_path / "v2", uri, kind="k", config={"v": 2})
    assert read_manifest(uri)["config"] == {"v": 1}

    write_artifact(tmp_path / "v2", uri, kind="k", config={"v": 2}, overwrite=True)
    root, manifest = read_artifact(uri, cache_dir=tmp_path / "cache")
    assert manifest["config"] == {"v": 2} and (root / "only.txt").read_text() == "v2"
    prefix = storage.parse_s3_uri(uri)[1]
    keys = sorted(o.object_name for o in raw_client(s3_env.endpoint).list_objects(
        s3_env.bucket, prefix=prefix + "/", recursive=True))
    assert keys == [f"{prefix}/{manifest['data_prefix']}/only.txt", f"{prefix}/meta.json"]


def test_s3_tampered_and_missing_object(s3_env, tmp_path):
    make_tree(tmp_path / "src")
    uri = s3_uri(s3_env)
    data_prefix = write_artifact(tmp_path / "src", uri, kind="k", config={})["data_prefix"]
    prefix = storage.parse_s3_uri(uri)[1] + "/" + data_prefix
    client = raw_client(s3_env.endpoint)
    evil = bytes(range(256)) * 8
    evil = b"\xff" + evil[1:]  # same size, first byte changed
    client.put_object(s3_env.bucket, f"{prefix}/weights.bin", io.BytesIO(evil), len(evil))
    with pytest.raises(ArtifactIntegrityError, match="weights.bin"):
        read_artifact(uri, cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache" / s3_env.bucket / storage.parse_s3_uri(uri)[1]).exists()  # nothing half-verified left behind

    client.remove_object(s3_env.bucket, f"{prefix}/weights.bin")
    with pytest.raises(ArtifactIntegrityError, match="weights.bin.*missing"):
        read_artifact(uri, cache_dir=tmp_path / "cache")


def test_s3_missing_manifest_and_kind(s3_env, tmp_path):
    make_tree(tmp_path / "src")
    uri = s3_uri(s3_env)
    with pytest.raises(ArtifactNotFoundError, match=re.escape(f"{uri} is missing or incomplete")):
        read_artifact(uri)
    write_artifact(tmp_path / "src", uri, kind="policy", config={})
    with pytest.raises(ArtifactKindError, match="'policy'.*'world_model'"):
        read_artifact(uri, expected_kind="world_model")


def test_s3_missing_bucket(s3_env, tmp_path):
    make_tree(tmp_path / "src")
    uri = "s3://no-such-bucket-here/x"
    with pytest.raises(BucketNotFoundError, match="no-such-bucket-here"):
        write_artifact(tmp_path / "src", uri, kind="k", config={})
    with pytest.raises(BucketNotFoundError, match="no-such-bucket-here"):
        read_artifact(uri)
    with pytest.raises(BucketNotFoundError):
        artifact_exists(uri)


def test_s3_wrong_credentials(s3_env, tmp_path, monkeypatch):
    """The server refuses a wrong secret and an unknown key (MinIO's signature check); neither leaks."""
    make_tree(tmp_path / "src")
    uri = s3_uri(s3_env)
    write_artifact(tmp_path / "src", uri, kind="k", config={})  # control: the right keys work
    for access_key, secret in [(ACCESS_KEY, "wrong-secret-value"), ("unknown-access-key", SECRET_KEY)]:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", access_key)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
        for call in (lambda: read_artifact(uri), lambda: artifact_exists(uri),
                     lambda: write_artifact(tmp_path / "src", uri, kind="k", config={}, overwrite=True)):
            with pytest.raises(StorageAuthError, match="rejected the credentials") as info:
                call()
            assert secret not in str(info.value) and access_key not in str(info.value)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    assert read_manifest(uri)["kind"] == "k"  # the refused overwrite left the artifact as it was


def test_s3_unreachable_endpoint(monkeypatch, tmp_path):
    port = free_port()
    set_env(monkeypatch, f"http://127.0.0.1:{port}")
    start = time.monotonic()
    with pytest.raises(StorageUnreachableError, match=f"127.0.0.1:{port} is unreachable"):
        read_artifact("s3://bucket/x")
    assert time.monotonic() - start < 5


@pytest.mark.parametrize("missing", ["VLA_RFT_S3_ENDPOINT", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"])
def test_s3_missing_env(monkeypatch, missing):
    set_env(monkeypatch, "http://127.0.0.1:1")
    monkeypatch.delenv(missing)
    with pytest.raises(StorageConfigError, match=missing) as info:
        artifact_exists("s3://bucket/x")
    assert SECRET_KEY not in str(info.value) and ACCESS_KEY not in str(info.value)
    assert set(storage.S3_ENV_VARS) >= {"VLA_RFT_S3_ENDPOINT", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}


def test_s3_malformed_endpoint(monkeypatch):
    set_env(monkeypatch, f"http://{ACCESS_KEY}:{SECRET_KEY}@127.0.0.1:1")
    with pytest.raises(StorageConfigError, match="VLA_RFT_S3_ENDPOINT") as info:
        artifact_exists("s3://bucket/x")
    assert SECRET_KEY not in str(info.value)


# ------------------------------------------------------------------ interrupted writes


def run_writer_and_kill(src: Path, uri: str, started) -> None:
    """Run WRITER in a subprocess, SIGKILL it once ``started()`` is true, and check it was cut short."""
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(src), uri],
                            env={**os.environ, "PYTHONPATH": SRC})
    try:
        deadline = time.monotonic() + 20
        while not started():
            assert proc.poll() is None, "writer ended before it could be interrupted"
            assert time.monotonic() < deadline
            time.sleep(0.002)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL


def test_local_write_killed_midway(tmp_path):
    src = make_many(tmp_path / "src", 1500, 8192)
    dest = tmp_path / "out" / "art"
    def copying() -> bool:  # the writer's temp dir holds a few files already
        return len(list(dest.parent.glob("art.tmp-*/d0/*"))) > 2

    run_writer_and_kill(src, str(dest), copying)
    assert not dest.exists()
    assert not artifact_exists(str(dest))
    with pytest.raises(ArtifactNotFoundError):
        read_artifact(str(dest))

    # killed while overwriting: the old artifact stays complete and readable
    make_tree(tmp_path / "old")
    write_artifact(tmp_path / "old", str(dest), kind="old", config={})
    run_writer_and_kill(src, str(dest), copying)
    assert read_artifact(str(dest), expected_kind="old")[1]["kind"] == "old"


def test_s3_write_killed_midway(s3_env, tmp_path):
    src = make_many(tmp_path / "src", 400, 256)
    uri = s3_uri(s3_env)
    prefix = storage.parse_s3_uri(uri)[1]
    client = raw_client(s3_env.endpoint)
    run_writer_and_kill(src, uri, lambda: any(client.list_objects(s3_env.bucket, prefix=prefix + "/", recursive=True)))
    assert not artifact_exists(uri)
    with pytest.raises(ArtifactNotFoundError):
        read_artifact(uri)


def test_s3_endpoint_stops_midway(monkeypatch, tmp_path):
    port = free_port()
    server = start_s3_subprocess(port, tmp_path / "s3")  # its own server: this test kills it
    try:
        endpoint = f"http://127.0.0.1:{port}"
        set_env(monkeypatch, endpoint)
        storage.ensure_bucket("stop-test")
        src = make_many(tmp_path / "src", 400, 256)
        errors: list[BaseException] = []

        def write() -> None:
            try:
                write_artifact(src, "s3://stop-test/art", kind="k", config={})
            except BaseException as exc:  # noqa: BLE001 - handed to the main thread
                errors.append(exc)

        writer = threading.Thread(target=write)
        writer.start()
        client = raw_client(endpoint)
        deadline = time.monotonic() + 20
        while len(keys := [o.object_name for o in client.list_objects("stop-test", recursive=True)]) < 5:
            assert writer.is_alive() and time.monotonic() < deadline
            time.sleep(0.01)
        assert "art/meta.json" not in keys
    finally:
        server.kill()
        server.wait()
    stopped = time.monotonic()
    writer.join(timeout=20)
    assert not writer.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], StorageUnreachableError), errors
    assert f"127.0.0.1:{port}" in str(errors[0])
    assert time.monotonic() - stopped < 10



# ------------------------------------------------- never write over what we did not write


def test_s3_out_that_is_the_parent_prefix_of_an_artifact_is_refused(s3_env, tmp_path):
    """`--out s3://b/cli` while s3://b/cli/dataset exists: refused, with or without overwrite; nothing deleted."""
    make_tree(tmp_path / "src")
    inner = s3_uri(s3_env, "cli/dataset")
    write_artifact(tmp_path / "src", inner, kind="dataset", config={})
    parent = inner.rsplit("/", 1)[0]
    for overwrite in (False, True):
        with pytest.raises(storage.ArtifactDestinationError, match="not part of an artifact of ours"):
            write_artifact(tmp_path / "src", parent, kind="k", config={}, overwrite=overwrite)
        with pytest.raises(storage.ArtifactDestinationError):
            storage.check_destination(parent, overwrite=overwrite)
    assert read_artifact(inner, expected_kind="dataset", cache_dir=tmp_path / "c")[1]["kind"] == "dataset"
    assert not artifact_exists(parent)


def test_s3_prefix_of_foreign_objects_is_refused_even_with_overwrite(s3_env, tmp_path):
    make_tree(tmp_path / "src")
    uri = s3_uri(s3_env)
    bucket, prefix = storage.parse_s3_uri(uri)
    raw_client(s3_env.endpoint).put_object(bucket, f"{prefix}/notes.txt", io.BytesIO(b"mine"), 4)
    with pytest.raises(storage.ArtifactDestinationError, match="notes.txt"):
        write_artifact(tmp_path / "src", uri, kind="k", config={}, overwrite=True)
    assert raw_client(s3_env.endpoint).get_object(bucket, f"{prefix}/notes.txt").read() == b"mine"


def test_s3_overwrite_killed_midway_keeps_the_old_artifact(s3_env, tmp_path):
    """Killed while uploading the new version: the old artifact still verifies, then a re-run completes."""
    make_tree(tmp_path / "old")
    uri = s3_uri(s3_env)
    write_artifact(tmp_path / "old", uri, kind="old", config={})
    src = make_many(tmp_path / "src", 400, 256)
    bucket, prefix = storage.parse_s3_uri(uri)
    client = raw_client(s3_env.endpoint)
    before = {o.object_name for o in client.list_objects(bucket, prefix=prefix + "/", recursive=True)}
    run_writer_and_kill(src, uri, lambda: len(list(client.list_objects(bucket, prefix=prefix + "/",
                                                                       recursive=True))) > len(before) + 3)
    root, manifest = read_artifact(uri, expected_kind="old", cache_dir=tmp_path / "c")
    assert (root / "weights.bin").read_bytes() == bytes(range(256)) * 8
    # the same overwrite again completes and cleans up the old version and the interrupted one
    manifest = write_artifact(src, uri, kind="big", config={}, overwrite=True)
    keys = {o.object_name for o in client.list_objects(bucket, prefix=prefix + "/", recursive=True)}
    assert keys == {f"{prefix}/meta.json"} | {f"{prefix}/{manifest['data_prefix']}/{rel}" for rel in manifest["files"]}
    assert read_artifact(uri, expected_kind="big", cache_dir=tmp_path / "c2")[1] == manifest


def test_local_overwrite_of_a_directory_that_is_not_an_artifact_is_refused(tmp_path):
    make_tree(tmp_path / "src")
    mine = tmp_path / "my-files"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    with pytest.raises(storage.ArtifactDestinationError, match="not an artifact of ours"):
        write_artifact(tmp_path / "src", str(mine), kind="k", config={}, overwrite=True)
    assert (mine / "thesis.tex").read_text() == "years of work"
    # a directory holding another artifact, and an artifact with a foreign file in it: refused too
    write_artifact(tmp_path / "src", str(mine / "dataset"), kind="k", config={})
    (mine / "thesis.tex").unlink()
    with pytest.raises(storage.ArtifactDestinationError):
        write_artifact(tmp_path / "src", str(mine), kind="k", config={}, overwrite=True)
    (mine / "dataset" / "extra.txt").write_text("x")
    with pytest.raises(storage.ArtifactDestinationError, match="extra.txt"):
        write_artifact(tmp_path / "src", str(mine / "dataset"), kind="k", config={}, overwrite=True)
    (mine / "dataset" / "extra.txt").unlink()
    write_artifact(tmp_path / "src", str(mine / "dataset"), kind="k2", config={}, overwrite=True)  # ours: replaced
    assert read_manifest(str(mine / "dataset"))["kind"] == "k2"
    (tmp_path / "file").write_text("x")
    with pytest.raises(storage.ArtifactDestinationError, match="not an artifact directory"):
        storage.check_destination(str(tmp_path / "file"), overwrite=True)
    (tmp_path / "empty").mkdir()
    write_artifact(tmp_path / "src", str(tmp_path / "empty"), kind="k", config={})  # an empty directory is free


def test_a_hanging_s3_endpoint_fails_within_its_bound(monkeypatch, tmp_path):
    """A server on loopback that accepts and never answers: a named error within VLA_RFT_S3_TIMEOUT."""
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept_and_ignore() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                pass

    thread = threading.Thread(target=accept_and_ignore, daemon=True)
    thread.start()
    try:
        set_env(monkeypatch, f"http://127.0.0.1:{server.getsockname()[1]}")
        monkeypatch.setenv(storage.TIMEOUT_ENV, "2")
        start = time.monotonic()
        with pytest.raises(StorageUnreachableError, match="bounded to 2 s.*VLA_RFT_S3_TIMEOUT"):
            artifact_exists("s3://bucket/x")
        assert time.monotonic() - start < 3.0
        assert accepted, "the client never connected"
        monkeypatch.setenv(storage.TIMEOUT_ENV, "nan")
        with pytest.raises(StorageConfigError, match="VLA_RFT_S3_TIMEOUT"):
            artifact_exists("s3://bucket/x")
    finally:
        stop.set()
        thread.join(timeout=2)
        for conn in accepted:
            conn.close()
        server.close()
