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
from urllib.parse import unquote, urlsplit

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


def connect_problem(where: str, exc: BaseException) -> str:
    """Why connecting to PostgreSQL failed, with what to do when the fix is on the operator's
    side: a database or a role that does not exist (refusals a retry never cures)."""
    text = f"cannot connect to {where}: {exc}"
    url = urlsplit(where)
    if isinstance(exc, asyncpg.InvalidCatalogNameError):
        name = unquote(url.path.lstrip("/")) or "NAME"
        return (f"{text}; create it (`createdb {name}` as a role that may) or start once with "
                f"`dlm serve --create-db`")
    if isinstance(exc, asyncpg.InvalidAuthorizationSpecificationError) \
            and "does not exist" in str(exc):
        return (f"{text}; create the role (`createuser {unquote(url.username or 'NAME')}`) or "
                f"name another user in the URL")
    return text


def make_directory(path: str) -> None:
    """The database's directory (the data dir), created if missing; StoreUnavailable saying
    which directory could not be made and why (not a bare OSError that reads like a port)."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise StoreUnavailable(f"cannot create the data directory {path}: "
                               f"{exc.strerror or exc}") from exc


def holder_line() -> str:
    """Who takes the claim now: ``host=H pid=P since=ISO``."""
    since = datetime.now(UTC).isoformat(timespec="seconds")
    return f"host={socket.gethostname()} pid={os.getpid()} since={since}"


def printable(text: str, limit: int = 200) -> str:
    """``text`` safe to print on one line: a holder line read from a file anyone could write
    may hold terminal escapes or newlines; those are shown escaped, and the line is cut."""
    out = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return out if len(out) <= limit else out[:limit] + "..."


class FileClaim:
    """Two ``flock``s: on the database file itself, and on ``<database file>.writer.lock``.

    The lock on the database file's own inode is the claim: every path to that file (another
    data directory, a symbolic link, a hard link) reaches the same inode, so two servers never
    both hold it. On Linux ``flock`` and SQLite's ``fcntl`` byte-range locks do not interact,
    and a ``flock`` belongs to its open file description, so SQLite closing its own descriptors
    of the file (which drops this process's ``fcntl`` locks) does not release it. The lock file
    next to the database file carries the holder's line for a refused server to print; it is
    locked as well, so a server started by another name still finds whom to name."""

    def __init__(self, db_path: str, where: str) -> None:
        self.db_path = os.path.realpath(db_path)
        self.path = self.db_path + LOCK_SUFFIX
        self.where = where
        self._fd: int | None = None  # the lock file
        self._db_fd: int | None = None  # the database file
        self._first: tuple[int, int] | None = None  # (device, inode) of the file first locked

    def held(self) -> bool:
        """Whether the claim is held now: the database file's lock, on the file its path still
        names (a database file replaced under the server is another database)."""
        return self._db_fd is not None and _same_file(self.db_path, self._db_fd)

    def take(self) -> None:
        """Hold the claim, or raise ClaimRefused naming the holder (StoreUnavailable when the
        lock file is not a usable file). Blocking (file system)."""
        if self.held():
            if not self._lock_file_intact():
                self._relock_file()
            return
        self.release()
        if self._first is not None and not self._still_first():
            raise ClaimRefused(self.where, "", (
                f"the database file {self.db_path} was replaced or removed after this server "
                f"opened it; this server writes no other file (restart it to serve the file "
                f"now there)"))
        make_directory(os.path.dirname(self.path))
        self._fd = self._lock_file()
        try:
            self._db_fd = self._lock_database()
        except BaseException:
            self.release()
            raise
        held = os.fstat(self._db_fd)
        self._first = self._first or (held.st_dev, held.st_ino)
        os.ftruncate(self._fd, 0)
        os.write(self._fd, (holder_line() + "\n").encode())

    def _still_first(self) -> bool:
        try:
            st = os.stat(self.db_path)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == self._first

    def _lock_file(self) -> int:
        """The lock file's descriptor, locked; ClaimRefused naming its holder if locked."""
        for _attempt in range(3):  # the file may be replaced between the open and the lock
            fd = self._open_lock_file()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise ClaimRefused(self.where, f"{self.holder()} (lock {self.path})") from None
            if _same_file(self.path, fd):
                return fd
            os.close(fd)
        raise StoreUnavailable(f"{self.path} keeps being replaced; cannot take the write claim")

    def _open_lock_file(self) -> int:
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW,
                           0o644)
        except OSError as exc:
            raise StoreUnavailable(f"the write claim's lock file {self.path}: "
                                   f"{_what_is_wrong(self.path, exc)}") from None

    def _lock_database(self) -> int:
        try:
            fd = os.open(self.db_path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise StoreUnavailable(f"the database file {self.db_path}: "
                                   f"{exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ClaimRefused(self.where, "a process that holds the database file itself: it "
                               "was opened by another name (a hard link, or a lock file "
                               "removed meanwhile); see `fuser` or /proc/locks") from None
        return fd

    def _lock_file_intact(self) -> bool:
        return self._fd is not None and _same_file(self.path, self._fd)

    def _relock_file(self) -> None:
        """The lock file was removed or replaced while the claim stayed held: put the holder's
        line back where a refused server reads it (best effort: the claim does not need it)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
        with contextlib.suppress(ClaimRefused, StoreUnavailable, OSError):
            self._fd = self._lock_file()
            os.ftruncate(self._fd, 0)
            os.write(self._fd, (holder_line() + "\n").encode())

    def check(self) -> bool:
        """Whether the claim is still held (the database file at the path is the one locked);
        drops the locks if not. Restores a removed lock file while held."""
        if self.held():
            if not self._lock_file_intact():
                self._relock_file()
            return True
        self.release()
        return False

    def holder(self) -> str:
        """The holder's line (meaningful while someone holds the lock), printable."""
        try:
            with open(self.path, errors="replace") as f:
                line = f.readline(4096).strip()
        except OSError:
            line = ""
        return printable(line) if line else "a process that has not written its name yet"

    def release(self) -> None:
        """Drop the locks; the files stay (removing the lock file would race with a server
        taking it)."""
        for name in ("_db_fd", "_fd"):
            fd = getattr(self, name)
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
                setattr(self, name, None)


def _same_file(path: str, fd: int) -> bool:
    try:
        st, held = os.stat(path), os.fstat(fd)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == (held.st_dev, held.st_ino)


def _what_is_wrong(path: str, exc: OSError) -> str:
    """One line on a lock file that cannot be opened, for the operator to fix."""
    if os.path.islink(path):
        target = os.readlink(path)
        return (f"is a symbolic link (to {printable(target)}), not a lock file; remove it "
                f"(dlm creates the file)")
    if os.path.isdir(path):
        return "is a directory, not a lock file; remove it (dlm creates the file)"
    return f"cannot be opened: {exc.strerror or exc}"


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
            raise StoreUnavailable(connect_problem(self.where, exc)) from exc
        try:
            if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", CLAIM_KEY,
                                       timeout=10):
                raise ClaimRefused(self.where, await pg_holder(conn))
        except BaseException as exc:
            conn.terminate()
            if isinstance(exc, _UNREACHABLE):
                raise StoreUnavailable("the database connection was lost; retry") from exc
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
        return f"{printable(name.removeprefix(APP_NAME + ' '))} since={since} ({session})"
    return f"application_name {printable(repr(name))} since={since} ({session})"
