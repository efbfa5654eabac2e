"""Artifact directories stored by URI: a local path or ``s3://bucket/prefix`` (MinIO/S3).

An artifact is a directory of files plus a manifest ``meta.json`` that is written last;
the manifest's presence is what marks an artifact complete.  S3 settings come only from
the environment variables in :data:`S3_ENV_VARS`.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import certifi
import urllib3
from minio import Minio
from minio.error import MinioException, S3Error

from vla_rft import __version__

log = logging.getLogger(__name__)

MANIFEST_NAME = "meta.json"
S3_ENV_VARS = ("VLA_RFT_S3_ENDPOINT", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION")
"""Environment variables read for S3 access; the first three are required."""
DEFAULT_REGION = "us-east-1"

RETRY_ATTEMPTS = 4
RETRY_BASE_DELAY_S = 0.2
CONNECT_TIMEOUT_S = 3.0
READ_TIMEOUT_S = 30.0
TIMEOUT_ENV = "VLA_RFT_S3_TIMEOUT"
"""Environment variable: seconds one S3 operation may take, all its retries together."""
DEFAULT_TIMEOUT_S = 60.0
_DATA_PREFIX_RE = re.compile(r"\.data-[0-9a-f]{32}")

_CHUNK = 1 << 20
_AUTH_CODES = frozenset(
    {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken", "ExpiredToken"}
)
_CONNECTION_ERRORS = (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError)
_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_ENDPOINT_RE = re.compile(r"(?P<scheme>https?)://(?P<host>([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(:\d{1,5})?)/?")

T = TypeVar("T")


class StorageError(Exception):
    """Base class of every error raised by this module."""


class StorageConfigError(StorageError):
    """S3 environment variables are missing or malformed."""


class StorageUnreachableError(StorageError):
    """The S3 endpoint could not be reached after bounded retries."""


class StorageAuthError(StorageError):
    """The S3 endpoint rejected the credentials."""


class BucketNotFoundError(StorageError):
    """The bucket does not exist."""


class ArtifactNotFoundError(StorageError):
    """No manifest at the URI: the artifact is missing or incomplete."""


class ArtifactIntegrityError(StorageError):
    """A file is missing or does not match the manifest, or the manifest is malformed."""


class ArtifactExistsError(StorageError):
    """The destination already holds an artifact and overwrite was not requested."""


class ArtifactKindError(StorageError):
    """The artifact is of another kind than expected."""


class ArtifactDestinationError(StorageError):
    """The destination holds something that is not an artifact of ours, or cannot be written."""


# ----------------------------------------------------------------------------- URIs


def is_s3_uri(uri: str | os.PathLike[str]) -> bool:
    """True if ``uri`` starts with ``s3://``."""
    return str(uri).startswith("s3://")


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """Split ``s3://bucket/prefix`` into ``(bucket, prefix)``; prefix has no edge slashes, may be ''."""
    if not is_s3_uri(uri):
        raise ValueError(f"not an S3 URI (expected s3://bucket/prefix): {uri!r}")
    bucket, _, prefix = uri[len("s3://") :].partition("/")
    if not bucket:
        raise ValueError(f"S3 URI has no bucket name: {uri!r}")
    if not _BUCKET_RE.fullmatch(bucket) or ".." in bucket:
        raise ValueError(
            f"invalid bucket name {bucket!r} in {uri!r}: need 3-63 chars of a-z, 0-9, '.', '-', "
            "starting and ending with a letter or digit"
        )
    prefix = prefix.strip("/")
    if prefix and any(part in ("", ".", "..") for part in prefix.split("/")):
        raise ValueError(f"S3 URI has an empty, '.' or '..' path segment: {uri!r}")
    return bucket, prefix


def _artifact_location(uri: str) -> tuple[str, str]:
    bucket, prefix = parse_s3_uri(uri)
    if not prefix:
        raise ValueError(f"an artifact URI needs a key prefix after the bucket: {uri!r}")
    return bucket, prefix


def _local_path(uri: str | os.PathLike[str]) -> Path:
    text = str(uri)
    if text.startswith("file://"):
        return Path(text[len("file://") :])
    if _SCHEME_RE.match(text):
        raise ValueError(f"unsupported URI scheme (use a local path or s3://): {text!r}")
    return Path(text)


# ------------------------------------------------------------------------- manifest


@functools.lru_cache(maxsize=1)
def _code_version() -> str:
    """Package version, plus ``+g<short sha>`` when the source tree is a git checkout."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=2,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"{__version__}+g{sha}" if sha else __version__


def _list_files(src_dir: Path) -> list[tuple[str, Path]]:
    if not src_dir.is_dir():
        raise NotADirectoryError(f"artifact source is not a directory: {src_dir}")
    files = sorted((p.relative_to(src_dir).as_posix(), p) for p in src_dir.rglob("*") if p.is_file())
    if any(rel == MANIFEST_NAME for rel, _ in files):
        raise ValueError(f"{src_dir} contains {MANIFEST_NAME}, which is reserved for the manifest")
    return files


def _new_manifest(kind: str, schema_version: int, config: dict, files: dict[str, dict]) -> dict:
    return {
        "kind": kind,
        "schema_version": schema_version,
        "config": config,
        "code_version": _code_version(),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "files": dict(sorted(files.items())),
    }


def _manifest_bytes(manifest: dict) -> bytes:
    return (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()


def _parse_manifest(data: bytes, uri: str) -> dict:
    """Decode and validate a manifest, so later code may trust its shape and file paths."""
    try:
        manifest = json.loads(data)
        ok = isinstance(manifest["kind"], str) and isinstance(manifest["files"], dict)
        for rel, entry in manifest["files"].items() if ok else ():
            parts = rel.split("/")
            ok = ok and rel != MANIFEST_NAME and all(part not in ("", ".", "..") for part in parts)
            ok = ok and isinstance(entry["sha256"], str) and isinstance(entry["size"], int)
        data_prefix = manifest.get("data_prefix", "") if ok else ""
        ok = ok and (data_prefix == "" or (isinstance(data_prefix, str) and bool(_DATA_PREFIX_RE.fullmatch(data_prefix))))
    except (ValueError, KeyError, TypeError, AttributeError):
        ok = False
    if not ok:
        raise ArtifactIntegrityError(f"manifest {MANIFEST_NAME} of {uri} is malformed")
    return manifest


def _check_kind(manifest: dict, expected_kind: str | None, uri: str) -> None:
    if expected_kind is not None and manifest["kind"] != expected_kind:
        raise ArtifactKindError(
            f"artifact {uri} is of kind {manifest['kind']!r}, expected kind {expected_kind!r}"
        )


def _check_entry(rel: str, entry: dict, sha256: str, size: int, uri: str) -> None:
    if size != entry["size"]:
        raise ArtifactIntegrityError(f"file {rel!r} of {uri} has {size} bytes, manifest says {entry['size']}")
    if sha256 != entry["sha256"]:
        raise ArtifactIntegrityError(f"file {rel!r} of {uri} does not match its sha256 in the manifest")


def _not_found(uri: str) -> ArtifactNotFoundError:
    return ArtifactNotFoundError(f"artifact {uri} is missing or incomplete (no {MANIFEST_NAME})")


# ------------------------------------------------------------------ local directories


def _file_chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as f:
        yield from iter(lambda: f.read(_CHUNK), b"")


def _hash_file(path: Path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    for chunk in _file_chunks(path):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


def _write_hashing(chunks: Iterable[bytes], dst: Path) -> tuple[str, int]:
    """Write ``chunks`` to ``dst`` and fsync it; return (sha256, size) of what was written."""
    digest, size = hashlib.sha256(), 0
    dst.parent.mkdir(parents=True, exist_ok=True)
    with open(dst, "wb") as out:
        for chunk in chunks:
            out.write(chunk)
            digest.update(chunk)
            size += len(chunk)
        out.flush()
        os.fsync(out.fileno())
    return digest.hexdigest(), size


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sibling(dest: Path, tag: str) -> Path:
    return dest.with_name(f"{dest.name}.{tag}-{uuid.uuid4().hex}")


def _local_destination(dest: Path, overwrite: bool) -> bool:
    """Whether ``dest`` holds an artifact of ours (to be replaced); refuse anything else that is there.

    Absent or an empty directory: free. A directory whose valid ``meta.json`` lists every file in it:
    our artifact, replaced only with ``overwrite``. Anything else (a file, the user's own files, a
    directory holding other artifacts) is never written over, with or without ``overwrite``.
    """
    for parent in dest.parents:  # the nearest existing ancestor must be a writable directory
        if parent.exists() or parent == parent.parent:
            if not parent.is_dir():
                raise ArtifactDestinationError(f"cannot write {dest}: {parent} is a file, not a directory")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise ArtifactDestinationError(f"cannot write {dest}: directory {parent} is not writable")
            break
    if not dest.exists() and not dest.is_symlink():
        return False
    if not dest.is_dir() or dest.is_symlink():
        raise ArtifactDestinationError(f"{dest} exists and is not an artifact directory; choose another output")
    present = {p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file() or p.is_symlink()}
    if not present and not any(dest.iterdir()):
        return False
    try:
        manifest = _read_local_manifest(str(dest))
    except ArtifactIntegrityError:
        manifest = None
    foreign = sorted(present - {MANIFEST_NAME} - set(manifest["files"])) if manifest else sorted(present)
    if manifest is None or foreign:
        what = f"e.g. {foreign[0]!r}" if foreign else "no files"
        raise ArtifactDestinationError(
            f"{dest} is not an artifact of ours ({'no valid ' + MANIFEST_NAME if manifest is None else 'files the manifest does not list'}: "
            f"{what}); refusing to write there: --overwrite replaces only artifacts this tool wrote"
        )
    if not overwrite:
        raise ArtifactExistsError(f"artifact {dest} already exists (pass overwrite=True to replace it)")
    return True


def _finish_dir(tmp: Path, manifest_data: bytes, dest: Path, overwrite: bool, *, replace_any: bool = False) -> None:
    """Write the manifest into ``tmp`` last, fsync the tree, then move ``tmp`` to ``dest``.

    With overwrite, the old ``dest`` is moved aside and deleted only once the new one is in place.
    ``replace_any`` (our own download cache only) replaces whatever is at ``dest``.
    """
    _write_hashing([manifest_data], tmp / MANIFEST_NAME)
    for d in sorted((p for p in tmp.rglob("*") if p.is_dir()), reverse=True):
        _fsync_dir(d)
    _fsync_dir(tmp)
    occupied = dest.exists() if replace_any else _local_destination(dest, overwrite)
    if not occupied:
        os.rename(tmp, dest)  # also replaces an empty directory
    else:
        old = _sibling(dest, "old")
        os.rename(dest, old)
        try:
            os.rename(tmp, dest)
        except BaseException:
            os.rename(old, dest)
            raise
        shutil.rmtree(old, ignore_errors=True)
    _fsync_dir(dest.parent)


def _write_local(files: list[tuple[str, Path]], dest: Path, meta: Callable[[dict], dict], overwrite: bool) -> dict:
    _local_destination(dest, overwrite)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(dest, "tmp")
    try:
        tmp.mkdir()
        entries = {}
        for rel, path in files:
            sha256, size = _write_hashing(_file_chunks(path), tmp / rel)
            entries[rel] = {"sha256": sha256, "size": size}
        manifest = meta(entries)
        _finish_dir(tmp, _manifest_bytes(manifest), dest, overwrite)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest


def _read_local_manifest(uri: str) -> dict | None:
    try:
        data = (_local_path(uri) / MANIFEST_NAME).read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return _parse_manifest(data, uri)


def _verify_local(root: Path, manifest: dict, uri: str) -> None:
    for rel, entry in manifest["files"].items():
        path = root / rel
        if not path.is_file():
            raise ArtifactIntegrityError(f"file {rel!r} listed in the manifest of {uri} is missing")
        _check_entry(rel, entry, *_hash_file(path), uri)


# ------------------------------------------------------------------------------- S3


class _DeadlinePool(urllib3.PoolManager):
    """A pool whose requests take the timeout of the operation in progress (what is left of its bound)."""

    request_timeout: urllib3.Timeout | None = None

    def urlopen(self, method: str, url: str, redirect: bool = True, **kw: Any):  # type: ignore[override]
        if self.request_timeout is not None:
            kw["timeout"] = self.request_timeout
        return super().urlopen(method, url, redirect=redirect, **kw)


def s3_timeout() -> float:
    """Seconds one S3 operation may take with all its retries: ``$VLA_RFT_S3_TIMEOUT`` or 60."""
    raw = os.environ.get(TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not (value > 0 and value < 86_400):  # also refuses nan and inf
        raise StorageConfigError(f"{TIMEOUT_ENV} must be a number of seconds in (0, 86400), got {raw!r}")
    return value


class _Bucket:
    """One bucket on the configured endpoint; every call retries connection errors and maps S3 errors.

    One call (with its retries) never takes longer than :func:`s3_timeout`: each attempt's connect and
    read timeouts are cut to what is left of that bound, and no retry starts once it is spent.
    """

    def __init__(self, bucket: str) -> None:
        env = {name: os.environ.get(name, "").strip() for name in S3_ENV_VARS}
        missing = [name for name in S3_ENV_VARS[:3] if not env[name]]
        if missing:
            raise StorageConfigError(f"S3 storage needs the environment variable(s) {', '.join(missing)}")
        url = _ENDPOINT_RE.fullmatch(env["VLA_RFT_S3_ENDPOINT"])
        if not url:
            raise StorageConfigError(
                "VLA_RFT_S3_ENDPOINT must be an http(s) URL of a host and optional port, "
                "e.g. http://127.0.0.1:9000"
            )
        self.bucket = bucket
        self.endpoint = url["host"]
        self.timeout_s = s3_timeout()
        http = self.http = _DeadlinePool(
            timeout=urllib3.Timeout(connect=CONNECT_TIMEOUT_S, read=READ_TIMEOUT_S),
            retries=False,
            maxsize=10,
            cert_reqs="CERT_REQUIRED",
            ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
        )
        self.client = Minio(
            url["host"],
            access_key=env["AWS_ACCESS_KEY_ID"],
            secret_key=env["AWS_SECRET_ACCESS_KEY"],
            secure=url["scheme"] == "https",
            region=env["AWS_REGION"] or DEFAULT_REGION,
            http_client=http,
        )

    def call(self, fn: Callable[..., T], *args: Any, missing_ok: bool = False, **kwargs: Any) -> T | None:
        """Run ``fn``; retry connection errors with exponential backoff; return None for a missing key if allowed."""
        attempt, deadline = 1, time.monotonic() + self.timeout_s
        while True:
            left = deadline - time.monotonic()
            self.http.request_timeout = urllib3.Timeout(connect=max(0.01, min(CONNECT_TIMEOUT_S, left)),
                                                        read=max(0.01, min(READ_TIMEOUT_S, left)))
            try:
                return fn(*args, **kwargs)
            except S3Error as exc:
                if missing_ok and exc.code == "NoSuchKey":
                    return None
                if exc.code in _AUTH_CODES:
                    raise StorageAuthError(
                        f"S3 endpoint {self.endpoint} rejected the credentials from AWS_ACCESS_KEY_ID/"
                        f"AWS_SECRET_ACCESS_KEY for bucket {self.bucket!r} ({exc.code})"
                    ) from None
                if exc.code == "NoSuchBucket":
                    raise BucketNotFoundError(
                        f"bucket {self.bucket!r} does not exist on S3 endpoint {self.endpoint}"
                    ) from None
                raise StorageError(f"S3 endpoint {self.endpoint}: {exc.code} on bucket {self.bucket!r}") from None
            except MinioException as exc:
                raise StorageError(f"S3 endpoint {self.endpoint} failed: {type(exc).__name__}") from None
            except _CONNECTION_ERRORS as exc:
                delay = RETRY_BASE_DELAY_S * 2 ** (attempt - 1)
                if attempt == RETRY_ATTEMPTS or time.monotonic() + delay >= deadline - 0.05:
                    raise StorageUnreachableError(
                        f"S3 endpoint {self.endpoint} is unreachable or not answering "
                        f"({type(exc).__name__} after {attempt} attempt(s); every S3 operation is bounded to "
                        f"{self.timeout_s:g} s with its retries, set {TIMEOUT_ENV} to change it)"
                    ) from None
                log.warning("S3 endpoint %s: %s, retrying in %.1fs", self.endpoint, type(exc).__name__, delay)
                time.sleep(delay)
                attempt += 1

    def get_bytes(self, key: str) -> bytes | None:
        """The object's bytes, or None if there is no such key."""

        def get() -> bytes:
            response = self.client.get_object(self.bucket, key)
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()

        return self.call(get, missing_ok=True)

    def download(self, key: str, dest: Path) -> tuple[str, int] | None:
        """Stream the object into ``dest``; return (sha256, size), or None if there is no such key."""

        def get() -> tuple[str, int]:
            response = self.client.get_object(self.bucket, key)
            try:
                return _write_hashing(response.stream(_CHUNK), dest)
            finally:
                response.close()
                response.release_conn()

        return self.call(get, missing_ok=True)

    def upload_file(self, key: str, path: Path) -> None:
        self.call(self.client.fput_object, self.bucket, key, str(path))

    def upload_bytes(self, key: str, data: bytes) -> None:
        self.call(self.client.put_object, self.bucket, key, io.BytesIO(data), len(data),
                  content_type="application/json")

    def remove(self, key: str) -> None:
        self.call(self.client.remove_object, self.bucket, key)

    def keys(self, prefix: str) -> list[str]:
        return self.call(
            lambda: [o.object_name for o in self.client.list_objects(self.bucket, prefix=prefix, recursive=True)]
        ) or []


def ensure_bucket(bucket: str) -> None:
    """Create ``bucket`` on the configured endpoint unless it exists (for setup code)."""
    parse_s3_uri(f"s3://{bucket}")
    s3 = _Bucket(bucket)
    if not s3.call(s3.client.bucket_exists, bucket):
        s3.call(s3.client.make_bucket, bucket)


def _object_key(prefix: str, manifest: dict, rel: str) -> str:
    """Where a file of an S3 artifact lives: under the manifest's ``data_prefix`` (flat in old artifacts)."""
    data_prefix = manifest.get("data_prefix", "")
    return f"{prefix}/{data_prefix}/{rel}" if data_prefix else f"{prefix}/{rel}"


def _ours(prefix: str, manifest: dict | None, key: str) -> bool:
    """Whether ``key`` under ``prefix/`` was written by us: the manifest, a data version, an old flat file."""
    rest = key[len(prefix) + 1 :]
    if _DATA_PREFIX_RE.fullmatch(rest.split("/", 1)[0]):
        return True  # a data version: of this artifact, an older one, or an interrupted write
    if manifest is None:
        return False
    return rest == MANIFEST_NAME or (not manifest.get("data_prefix") and rest in manifest["files"])


def _s3_destination(s3: _Bucket, prefix: str, uri: str, overwrite: bool) -> tuple[dict | None, list[str]]:
    """The artifact at ``prefix`` (or None) and every key under it; refuse a prefix holding anything else."""
    keys = s3.keys(f"{prefix}/")
    data = s3.get_bytes(f"{prefix}/{MANIFEST_NAME}") if keys else None
    try:
        manifest = _parse_manifest(data, uri) if data is not None else None
    except ArtifactIntegrityError:
        manifest = None
    foreign = sorted(k for k in keys if not _ours(prefix, manifest, k))
    if foreign:
        raise ArtifactDestinationError(
            f"{uri} holds {len(foreign)} object(s) that are not part of an artifact of ours (e.g. {foreign[0]!r}); "
            "refusing to write there: --overwrite replaces only artifacts this tool wrote"
        )
    if manifest is not None and not overwrite:
        raise ArtifactExistsError(f"artifact {uri} already exists (pass overwrite=True to replace it)")
    return manifest, keys


def _write_s3(files: list[tuple[str, Path]], uri: str, meta: Callable[[dict], dict], overwrite: bool) -> dict:
    """Upload the files under a fresh ``.data-<id>/`` prefix, then switch the manifest with one PUT.

    Until that PUT the old manifest and its files are untouched (the old artifact verifies); after it
    the new one does. Only then are the keys of the old version (and of interrupted writes) deleted.
    """
    bucket, prefix = _artifact_location(uri)
    s3 = _Bucket(bucket)
    manifest_key = f"{prefix}/{MANIFEST_NAME}"
    old, _ = _s3_destination(s3, prefix, uri, overwrite)
    data_prefix = f".data-{uuid.uuid4().hex}"
    entries = {}
    for rel, path in files:
        sha256, size = _hash_file(path)
        s3.upload_file(f"{prefix}/{data_prefix}/{rel}", path)
        entries[rel] = {"sha256": sha256, "size": size}
    manifest = {**meta(entries), "data_prefix": data_prefix}
    s3.upload_bytes(manifest_key, _manifest_bytes(manifest))
    keep = {_object_key(prefix, manifest, rel) for rel in entries} | {manifest_key}
    for key in s3.keys(f"{prefix}/"):
        if key not in keep and _ours(prefix, old, key):
            s3.remove(key)
    return manifest


def _read_s3(uri: str, expected_kind: str | None, cache_dir: Path | None) -> tuple[Path, dict]:
    bucket, prefix = _artifact_location(uri)
    s3 = _Bucket(bucket)
    data = s3.get_bytes(f"{prefix}/{MANIFEST_NAME}")
    if data is None:
        raise _not_found(uri)
    manifest = _parse_manifest(data, uri)
    _check_kind(manifest, expected_kind, uri)

    cache_dir = Path(tempfile.mkdtemp(prefix="vla_rft-")) if cache_dir is None else Path(cache_dir)
    dest = cache_dir.joinpath(bucket, *prefix.split("/"))
    cached = _read_local_manifest(str(dest)) if dest.is_dir() else None
    if cached == manifest:
        try:
            _verify_local(dest, manifest, uri)
            return dest, manifest
        except ArtifactIntegrityError:
            log.warning("cached copy of %s in %s is damaged; downloading again", uri, dest)

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(dest, "tmp")
    try:
        tmp.mkdir()
        for rel, entry in manifest["files"].items():
            got = s3.download(_object_key(prefix, manifest, rel), tmp / rel)
            if got is None:
                raise ArtifactIntegrityError(f"file {rel!r} listed in the manifest of {uri} is missing")
            _check_entry(rel, entry, *got, uri)
        _finish_dir(tmp, data, dest, overwrite=True, replace_any=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest, manifest


# ------------------------------------------------------------------------ public API


def write_artifact(
    src_dir: Path,
    uri: str,
    *,
    kind: str,
    config: dict,
    schema_version: int = 1,
    overwrite: bool = False,
) -> dict:
    """Store the files under ``src_dir`` as an artifact at ``uri``; return the manifest.

    The manifest is written last, so an interrupted write never reads as complete.
    """
    if not kind or not isinstance(kind, str):
        raise ValueError("kind must be a non-empty string")
    json.dumps(config)  # fail fast, before any copy, if config is not JSON-serializable
    files = _list_files(Path(src_dir))

    def meta(entries: dict) -> dict:
        return _new_manifest(kind, schema_version, config, entries)

    if is_s3_uri(uri):
        return _write_s3(files, uri, meta, overwrite)
    return _write_local(files, _local_path(uri), meta, overwrite)


def check_destination(uri: str, *, overwrite: bool = False) -> None:
    """Refuse, before any work, an output location that :func:`write_artifact` would refuse.

    Free: nothing there (or an empty directory). Ours: an artifact this tool wrote, replaced only with
    ``overwrite``. Anything else (a file, a directory or prefix of other files or artifacts, an
    unwritable parent) raises :class:`ArtifactDestinationError`; an artifact without ``overwrite``
    raises :class:`ArtifactExistsError`.
    """
    if is_s3_uri(uri):
        bucket, prefix = _artifact_location(uri)
        _s3_destination(_Bucket(bucket), prefix, uri, overwrite)
    else:
        _local_destination(_local_path(uri), overwrite)


def read_manifest(uri: str) -> dict:
    """Return the manifest of the artifact at ``uri``; ArtifactNotFoundError if there is none."""
    if is_s3_uri(uri):
        bucket, prefix = _artifact_location(uri)
        data = _Bucket(bucket).get_bytes(f"{prefix}/{MANIFEST_NAME}")
        if data is None:
            raise _not_found(uri)
        return _parse_manifest(data, uri)
    manifest = _read_local_manifest(uri)
    if manifest is None:
        raise _not_found(uri)
    return manifest


def artifact_exists(uri: str) -> bool:
    """True only if a manifest exists at ``uri`` (the artifact is complete)."""
    if is_s3_uri(uri):
        bucket, prefix = _artifact_location(uri)
        return _Bucket(bucket).get_bytes(f"{prefix}/{MANIFEST_NAME}") is not None
    return (_local_path(uri) / MANIFEST_NAME).is_file()


def read_artifact(
    uri: str, *, expected_kind: str | None = None, cache_dir: Path | None = None
) -> tuple[Path, dict]:
    """Return a local directory holding the artifact's verified files, and its manifest.

    Local artifacts are verified in place; S3 artifacts are downloaded to ``cache_dir/bucket/prefix``
    (default: a fresh temp dir, which the caller owns) and verified.
    """
    if is_s3_uri(uri):
        return _read_s3(uri, expected_kind, cache_dir)
    manifest = read_manifest(uri)
    _check_kind(manifest, expected_kind, uri)
    root = _local_path(uri)
    _verify_local(root, manifest, uri)
    return root, manifest


def write_json(uri: str, obj: Any) -> None:
    """Write one small JSON document atomically: a single PUT on S3, temp file + rename locally.

    Used for pointers (e.g. the model registry's champion), where a reader must see the old
    document or the new one, never a mix.
    """
    data = json.dumps(obj, indent=2, sort_keys=True).encode()
    if is_s3_uri(uri):
        bucket, key = parse_s3_uri(uri)
        if not key:
            raise ValueError(f"{uri}: a JSON document needs a key, not only a bucket")
        _Bucket(bucket).upload_bytes(key, data)
        return
    path = _local_path(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(path, "tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_json(uri: str) -> Any | None:
    """The JSON document at ``uri``, or None if there is none."""
    if is_s3_uri(uri):
        bucket, key = parse_s3_uri(uri)
        data = _Bucket(bucket).get_bytes(key)
    else:
        path = _local_path(uri)
        data = path.read_bytes() if path.is_file() else None
    if data is None:
        return None
    try:
        return json.loads(data)
    except json.JSONDecodeError as err:
        raise ArtifactIntegrityError(f"{uri} is not valid JSON ({err.msg})") from None


def join_uri(base: str, *parts: str) -> str:
    """``base`` with path parts appended, for local paths and s3:// URIs alike."""
    if is_s3_uri(base):
        return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])
    return str(Path(base).joinpath(*parts))
