"""A real S3 endpoint on loopback for tests: moto's server, in a thread or in a subprocess.

Import the fixtures into a test module: ``from s3server import s3_server, s3_env``.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from minio import Minio
from moto.server import ThreadedMotoServer

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


def wait_until_up(endpoint: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def start_moto_subprocess(port: int) -> subprocess.Popen:
    """Start ``moto_server`` on 127.0.0.1:port in a subprocess (so a test can kill it) and wait for it."""
    exe = Path(sys.executable).with_name("moto_server")
    proc = subprocess.Popen(
        [str(exe), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until_up(f"http://127.0.0.1:{port}")
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
    """An in-process moto S3 server for the whole session; yields its endpoint URL."""
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    wait_until_up(endpoint)
    yield endpoint
    server.stop()


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
