"""The single-writer claim: one dlm server writes a database, for as long as it runs.

Two servers on one database would each acknowledge writes the other never sees (issue 15). The
server takes an exclusive claim before it opens the database and commits only while it holds it:

- SQLite: ``flock`` on a file next to the database file (``inventory.sqlite.writer.lock``), whose
  content names the holder. The kernel drops the lock when the process dies, however it dies.
- PostgreSQL: the session advisory lock ``CLAIM_KEY`` on a connection kept for it, the one every
  commit uses. A dead session (crash, ``pg_terminate_backend``, a dropped connection) releases
  the lock with it, and a write cannot run on a connection that does not hold it. The
  connection's ``application_name`` names the holder; pg_locks and pg_stat_activity find it.

Read workers open the database without a claim: they never write.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from datetime import UTC, datetime

import asyncpg

from inventory.store.base import ClaimRefused, StoreUnavailable

CLAIM_KEY = 864201  # pg_try_advisory_lock(864201); 864200 serializes migrations
LOCK_SUFFIX = ".writer.lock"
APP_NAME = "dlm-serve"
# TCP keepalives on the claim's connection: if the server's host vanishes without closing it,
# PostgreSQL ends the session (and frees the claim) after about a minute, not the system's
# default of two hours.
_KEEPALIVES = {"tcp_keepalives_idle": "30", "tcp_keepalives_interval": "10",
               "tcp_keepalives_count": "3"}
_UNREACHABLE = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError,
                asyncpg.exceptions.InternalClientError)


def holder_line() -> str:
    """Who takes the claim now: ``host=H pid=P since=ISO``."""
    since = datetime.now(UTC).isoformat(timespec="seconds")
    return f"host={socket.gethostname()} pid={os.getpid()} since={since}"


class FileClaim:
    """``flock`` on ``<database file>.writer.lock``: the lock is next to the database file, not in
    the data directory, so two servers given different paths to one file collide as well."""

    def __init__(self, db_path: str, where: str) -> None:
        self.path = os.path.realpath(db_path) + LOCK_SUFFIX
        self.where = where
        self._fd: int | None = None

    def held(self) -> bool:
        return self._fd is not None

    def take(self) -> None:
        """Hold the lock, or raise ClaimRefused naming the holder. Blocking (file system)."""
        if self._fd is not None:
            return
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        for _attempt in range(3):  # the file may be replaced between the open and the lock
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise ClaimRefused(self.where, f"{self.holder()} (lock {self.path})") from None
            if self._same_file(fd):
                os.ftruncate(fd, 0)
                os.write(fd, (holder_line() + "\n").encode())
                self._fd = fd
                return
            os.close(fd)
        raise StoreUnavailable(f"{self.path} keeps being replaced; cannot take the write claim")

    def check(self) -> bool:
        """Whether the lock is still held on the file at the path (someone may have removed or
        replaced it, and a second server could then lock the new file). Drops it if not."""
        if self._fd is None:
            return False
        if self._same_file(self._fd):
            return True
        self.release()
        return False

    def _same_file(self, fd: int) -> bool:
        try:
            return os.stat(self.path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            return False

    def holder(self) -> str:
        """The holder's line (meaningful while someone holds the lock)."""
        try:
            with open(self.path) as f:
                line = f.readline().strip()
        except OSError:
            line = ""
        return line or "a process that has not written its name yet"

    def release(self) -> None:
        """Drop the lock; the file stays (removing it would race with a server taking it)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None


class PgClaim:
    """The session advisory lock ``CLAIM_KEY`` on a connection of its own (never a pool's: a pool
    resets a connection it gets back, and the reset releases advisory locks)."""

    def __init__(self, url: str, where: str) -> None:
        self.url = url
        self.where = where
        self.conn: asyncpg.Connection | None = None

    def held(self) -> bool:
        return self.conn is not None and not self.conn.is_closed()

    async def take(self) -> asyncpg.Connection:
        """The claim's connection, connecting and locking if needed; ClaimRefused names the
        holder, StoreUnavailable when PostgreSQL cannot be reached."""
        if self.held():
            return self.conn
        await self.release()
        name = f"{APP_NAME} host={socket.gethostname()} pid={os.getpid()}"[:63]
        try:
            conn = await asyncpg.connect(self.url, timeout=10, command_timeout=300,
                                         server_settings={"application_name": name,
                                                          **_KEEPALIVES})
        except _UNREACHABLE as exc:
            raise StoreUnavailable(f"cannot connect to {self.where}: {exc}") from exc
        try:
            if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", CLAIM_KEY,
                                       timeout=10):
                raise ClaimRefused(self.where, await pg_holder(conn))
        except BaseException as exc:
            conn.terminate()
            if isinstance(exc, _UNREACHABLE):
                raise StoreUnavailable(f"postgresql: {exc}") from exc
            raise
        self.conn = conn
        return conn

    async def release(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None and not conn.is_closed():
            try:
                await conn.close(timeout=5)
            except Exception:  # closing a broken connection: the session ends either way
                conn.terminate()


_HOLDER_QUERY = """
SELECT a.pid, a.application_name, host(a.client_addr), a.backend_start
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.classid = 0 AND l.objid = $1
  AND l.objsubid = 1
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""


async def pg_holder(conn: asyncpg.Connection) -> str:
    """Who holds the claim: ``host=H pid=P since=ISO (PostgreSQL backend N from ADDR)``; the
    backend pid is what ``pg_terminate_backend`` takes."""
    row = await conn.fetchrow(_HOLDER_QUERY, CLAIM_KEY, timeout=10)
    if row is None:  # released between the two statements
        return "a session that has just ended"
    backend, name, addr, started = row
    since = started.isoformat(timespec="seconds") if started is not None else "?"
    session = f"PostgreSQL backend {backend} from {addr or 'a local socket'}"
    if name and name.startswith(APP_NAME + " "):
        return f"{name.removeprefix(APP_NAME + ' ')} since={since} ({session})"
    return f"application_name {name!r} since={since} ({session})"
