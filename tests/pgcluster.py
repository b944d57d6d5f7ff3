"""A throwaway PostgreSQL cluster a test can stop and start at will (the shared server on :5432
must never be stopped by a test).

PostgreSQL refuses to run as root: as root the cluster belongs to the ``postgres`` user and every
``initdb``/``pg_ctl`` runs through ``su postgres``. Its directory is a fresh one under the system
temporary directory (pytest's ``tmp_path`` sits below a 0700 directory of root that ``postgres``
cannot enter), removed by ``destroy``.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path


def find_bindir() -> Path | None:
    """The directory of ``initdb`` and ``pg_ctl``, or None when PostgreSQL is not installed."""
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                        key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    return Path(candidates[-1]).parent if candidates else None


class PgCluster:
    """``initdb`` + ``pg_ctl`` on a free port, trust authentication on 127.0.0.1."""

    def __init__(self, bindir: Path, port: int) -> None:
        self.bindir = bindir
        self.port = port
        self.as_root = os.geteuid() == 0
        self.dir = Path(tempfile.mkdtemp(prefix="dlm-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "postgres.log"
        if self.as_root:
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess:
        command = [str(self.bindir / argv[0]), *argv[1:]]
        if self.as_root:
            command = ["su", "postgres", "-c", shlex.join(command)]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                                cwd=self.dir)
        if result.returncode != 0:
            log = self.log.read_text()[-3000:] if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(argv)} failed ({result.returncode}):\n"
                               f"{result.stdout}\n{result.stderr}\n{log}")
        return result

    def init(self) -> PgCluster:
        user = [] if self.as_root else ["-U", "postgres"]
        self._run("initdb", "-D", str(self.data), "--auth=trust", "--no-sync", *user)
        return self

    def start(self) -> None:
        """Start and wait until it accepts connections (``pg_ctl -w``)."""
        options = (f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 "
                   f"-c max_connections=20 -c shared_buffers=16MB")
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.log),
                  "-w", "-t", "60", "start")

    def stop(self, mode: str = "immediate") -> None:
        """Stop; ``immediate`` is a crash as far as clients see: connections drop at once."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def running(self) -> bool:
        command = [str(self.bindir / "pg_ctl"), "-D", str(self.data), "status"]
        if self.as_root:
            command = ["su", "postgres", "-c", shlex.join(command)]
        return subprocess.run(command, capture_output=True, timeout=30).returncode == 0

    def destroy(self) -> None:
        """Stop it if it runs and remove every file; never raises."""
        with contextlib.suppress(Exception):
            if self.data.exists() and self.running():
                self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


def throwaway_cluster() -> Iterator[PgCluster]:
    """Body of a ``pg_cluster`` fixture: a started cluster of one test, always removed after.
    Skips when PostgreSQL is not installed, fails under CI=true."""
    from tests.conftest import free_port, missing_service

    bindir = find_bindir()
    if bindir is None:
        missing_service("PostgreSQL server binaries (initdb, pg_ctl)")
    cluster = PgCluster(bindir, free_port())
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()
