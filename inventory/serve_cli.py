"""``dlm serve``: run the inventory server (embedded SQLite by default, PostgreSQL with --db)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import os
import re
import signal
import socket
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import yaml

from inventory.cli import CLIError
from inventory.fileops.limits import FileOpsLimits
from inventory.objects import CONFIG_TOKEN_CREATED, ROLES, Token
from inventory.schedule import Job, Schedule, ScheduleError, internal_token, parse_schedule
from inventory.server.limits import ServerLimits

# The server itself (aiohttp, the stores, the storage backends) is imported when `dlm serve`
# runs, not when the CLI starts: every other `dlm` command starts faster for it.

if TYPE_CHECKING:
    from inventory.server.app import ServerConfig

log = logging.getLogger("dlm.serve")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8642
DEFAULT_DATA_DIR = "./dlm-data"
CONFIG_KEYS = {"db", "host", "port", "data_dir", "log_level", "tokens", "fileops", "schedule",
               "workers", "max_body", "max_plan_body", "limits", "metadata",
               "ops_retention"}
MAX_WORKERS = 64
EXIT_STALE = 3  # another server wrote while this one had lost its write claim: restart it


@dataclass(slots=True)
class ServeSettings:
    data_dir: str = DEFAULT_DATA_DIR
    db: str | None = None
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    log_level: str = "info"
    tokens: list[dict[str, Any]] = field(default_factory=list)
    fileops: dict[str, Any] = field(default_factory=dict)
    schedule: list[Any] = field(default_factory=list)
    workers: int = 1
    max_body: int | str | None = None  # request bodies; default app.MAX_BODY (64 MiB)
    max_plan_body: int | str | None = None  # Detox/Dealer plans; default 1 GiB
    limits: dict[str, Any] = field(default_factory=dict)  # server.limits.ServerLimits
    metadata: dict[str, Any] | None = None  # bounds of item metadata (inventory.metadata)
    ops_retention: int | float | str | None = None  # default retention.DEFAULT_OPS_RETENTION


def add_commands(subparsers: Any) -> None:
    p = subparsers.add_parser("serve", help="run the inventory server",
                              description="Run the inventory server. Flags override --config.")
    p.add_argument("--config", help="YAML file with db, host, port, data_dir, log_level")
    p.add_argument("--data-dir", help=f"where the embedded database lives ({DEFAULT_DATA_DIR})")
    p.add_argument("--db", help="database URL: postgresql://... or sqlite:PATH "
                                "(default: a SQLite file in the data dir)")
    p.add_argument("--host", help=f"listen address ({DEFAULT_HOST})")
    p.add_argument("--port", type=int, help=f"listen port, 1 to 65535 ({DEFAULT_PORT})")
    p.add_argument("--create-db", action="store_true",
                   help="create the PostgreSQL database --db names if it does not exist (through "
                        "the server's 'postgres' database); a SQLite file is always created")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    p.add_argument("--ops-retention", metavar="DURATION",
                   help="how long a finished (done, failed, cancelled) operation stays in "
                        "memory: 90s, 30m, 1h (default), 2d, or 'forever'; after it, queries "
                        "read it from the database")
    p.add_argument("--workers", type=int,
                   help="processes answering requests (1): with N > 1, N-1 read workers answer "
                        "item queries beside the primary, which does every write")
    p.set_defaults(func=run_serve)


def settings_from(args: argparse.Namespace) -> ServeSettings:
    settings = ServeSettings()
    if args.config:
        for key, value in read_config(args.config).items():
            setattr(settings, key, value)
    for key in ("data_dir", "db", "host", "port", "log_level", "workers", "ops_retention"):
        value = getattr(args, key)
        if value is not None:
            setattr(settings, key, value)
    if settings.db is None:
        settings.db = os.environ.get("DLM_DB") or None
    check_workers(settings.workers, "--workers")
    if args.ops_retention is not None:
        retention_seconds(args.ops_retention, "--ops-retention")
    check_port(settings.port)
    return settings


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$")
_UNIT_SECONDS = {None: 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def retention_seconds(value: Any, where: str) -> float | None:
    """The ops retention: seconds (a number, or a duration like ``30m``), None for 'forever'."""
    if value == "forever":
        return None
    match = None if isinstance(value, bool) else _DURATION.match(str(value))
    if match is None:
        raise CLIError(f"{where}: expected a duration like 90s, 30m, 1h or 2d (or 'forever'), "
                       f"got {value!r}")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def check_port(port: int, where: str = "--port") -> None:
    # Refused, not wrapped: asyncio would listen on port % 65536 and print the number asked for.
    if not 1 <= port <= 65535:
        raise CLIError(f"{where}: expected a TCP port from 1 to 65535, got {port}")


def check_workers(value: Any, where: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_WORKERS:
        raise CLIError(f"{where}: expected a number of processes from 1 to {MAX_WORKERS}")
    if value > 1 and not hasattr(socket, "SO_REUSEPORT"):
        raise CLIError(f"{where}: read workers need SO_REUSEPORT (Linux, BSD, macOS)")


def read_config(path: str) -> dict[str, Any]:
    try:
        with open(path) as f:
            data = yaml.safe_load(f) or {}
    except OSError as exc:
        raise CLIError(f"cannot read config {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise CLIError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise CLIError(f"{path}: expected a mapping of settings at the top level")
    unknown = sorted(set(data) - CONFIG_KEYS)
    if unknown:
        raise CLIError(f"{path}: unknown setting(s) {', '.join(unknown)}; "
                       f"known: {', '.join(sorted(CONFIG_KEYS))}")
    if "port" in data:
        if isinstance(data["port"], bool) or not isinstance(data["port"], int):
            raise CLIError(f"{path}: port: expected an integer")
        check_port(data["port"], f"{path}: port")
    if "workers" in data:
        check_workers(data["workers"], f"{path}: workers")
    if "ops_retention" in data:
        retention_seconds(data["ops_retention"], f"{path}: ops_retention")
    for key in ("max_body", "max_plan_body"):
        if key in data:
            body_limit(data[key], f"{path}: {key}")
    metadata_limits(data.get("metadata"), f"{path}: metadata")
    config_tokens(data.get("tokens", []), path)  # fail now, not at start
    fileops_limits(data.get("fileops", {}), path)
    server_limits(data.get("limits", {}), path)
    try:
        parse_schedule(data.get("schedule"), path)
    except ScheduleError as exc:
        raise CLIError(str(exc)) from None
    return data


def metadata_limits(value: Any, where: str) -> Any:
    """The ``metadata:`` mapping as ``inventory.metadata.Limits``; CLIError saying what is
    wrong."""
    from inventory.metadata import limits_from

    try:
        return limits_from(value, where)
    except ValueError as exc:
        raise CLIError(str(exc)) from None


def body_limit(value: Any, where: str) -> int:
    """A request size limit: bytes, or a size with a unit (``64 MiB``), at least 1 KiB."""
    from inventory.errors import BadRequest
    from inventory.validate import byte_size

    if isinstance(value, bool) or not isinstance(value, int | str):
        raise CLIError(f"{where}: expected bytes, e.g. 67108864 or '64 MiB'")
    try:
        size = byte_size(value, where)
    except BadRequest as exc:
        raise CLIError(f"{where}: {exc.message}") from None
    if size < 1024:
        raise CLIError(f"{where}: expected at least 1 KiB, got {size} bytes")
    return size


def fileops_limits(entries: Any, path: str) -> FileOpsLimits:
    """The ``fileops:`` settings (workers, per_storage, max_attempts, retry_base, ...)."""
    known = {f.name: f.type for f in dataclasses.fields(FileOpsLimits)}
    if not isinstance(entries, dict):
        raise CLIError(f"{path}: fileops: expected a mapping of {', '.join(known)}")
    for key, value in entries.items():
        if key not in known:
            raise CLIError(f"{path}: fileops: unknown setting {key!r}; known: "
                           f"{', '.join(known)}")
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise CLIError(f"{path}: fileops.{key}: expected a non-negative number")
    return FileOpsLimits(**entries)


def server_limits(entries: Any, path: str) -> ServerLimits:
    """The ``limits:`` settings: what one client may take of the server (server.limits)."""
    known = [f.name for f in dataclasses.fields(ServerLimits)]
    if not isinstance(entries, dict):
        raise CLIError(f"{path}: limits: expected a mapping of {', '.join(known)}")
    values = dict(entries)
    for key, value in entries.items():
        if key not in known:
            raise CLIError(f"{path}: limits: unknown setting {key!r}; known: {', '.join(known)}")
        if key in ("snapshot_buffer", "max_decision_bytes") and isinstance(value, str):
            values[key] = body_limit(value, f"{path}: limits.{key}")
    limits = ServerLimits(**values)
    wrong = limits.check()
    if wrong:
        raise CLIError(f"{path}: limits.{wrong[0]}")
    return limits


def config_tokens(entries: Any, path: str) -> list[Token]:
    """Tokens listed in the config as ``{name, role, sha256}`` (the hash of the secret)."""
    if not isinstance(entries, list):
        raise CLIError(f"{path}: tokens: expected a list of {{name, role, sha256}}")
    tokens = []
    for i, entry in enumerate(entries):
        where = f"{path}: tokens[{i}]"
        if not isinstance(entry, dict) or set(entry) != {"name", "role", "sha256"}:
            raise CLIError(f"{where}: expected exactly the keys name, role, sha256")
        if entry["role"] not in ROLES:
            raise CLIError(f"{where}: role: expected one of {', '.join(ROLES)}")
        digest = str(entry["sha256"]).lower()
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise CLIError(f"{where}: sha256: expected 64 hex digits (sha256 of the token)")
        tokens.append(Token(str(entry["name"]), entry["role"], digest, CONFIG_TOKEN_CREATED,
                            None))
    return tokens


def run_serve(args: argparse.Namespace) -> int:
    from inventory import logs
    from inventory.server.app import ServerConfig
    from inventory.server.auth import is_loopback
    from inventory.store import ClaimRefused, SchemaError, StoreError, open_store

    settings = settings_from(args)
    logs.setup(settings.log_level)
    try:
        store = open_store(settings.db, settings.data_dir)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    if getattr(args, "create_db", False) and store.backend == "postgresql":
        create_db(store)
    limits = {key: body_limit(getattr(settings, key), key)
              for key in ("max_body", "max_plan_body") if getattr(settings, key) is not None}
    config = ServerConfig(store=store, loopback=is_loopback(settings.host),
                          tokens=config_tokens(settings.tokens, "config"),
                          fileops=fileops_limits(settings.fileops, "config"),
                          limits=server_limits(settings.limits, "config"),
                          metadata_limits=metadata_limits(settings.metadata, "metadata"),
                          **limits)
    if settings.ops_retention is not None:
        config.ops_retention = retention_seconds(settings.ops_retention, "ops_retention")
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency except on Windows
        runner = asyncio.run
    else:
        runner = uvloop.run
    try:
        runner(serve(config, settings.host, settings.port,
                     parse_schedule(settings.schedule, "config"), settings))
    except ClaimRefused as exc:
        raise CLIError(f"{exc}; a database has one writing server (`dlm serve --workers N` "
                       f"adds read workers to it)") from None
    except SchemaError as exc:
        raise CLIError(str(exc)) from None
    except StoreError as exc:
        raise CLIError(f"database: {exc}") from None
    except OSError as exc:  # not the listening socket (serve says that): name what failed
        where = f" {exc.filename}" if exc.filename else ""
        raise CLIError(f"cannot start:{where} {exc.strerror or exc}") from None
    return 0


def create_db(store: Any) -> None:
    """``--create-db``: the PostgreSQL database, created before the server opens it."""
    from inventory.store import StoreError
    from inventory.store.postgres import create_database

    try:
        asyncio.run(create_database(store.url, store.describe()))  # logs when it creates one
    except StoreError as exc:
        raise CLIError(f"database: {exc}") from None


async def serve(config: ServerConfig, host: str, port: int, jobs: list[Job] | None = None,
                settings: ServeSettings | None = None) -> None:
    from aiohttp import web

    from inventory.server.app import make_app
    from inventory.server.connections import GuardedSite, raise_file_limit, runner_options
    from inventory.server.state import STATE

    workers = 1 if settings is None else settings.workers
    app = make_app(config)
    runner = web.AppRunner(app, access_log=None, handle_signals=False,
                           **runner_options(config.limits))
    await runner.setup()
    runtime = None
    stop = asyncio.Event()
    stale: list[str] = []

    def give_up(reason: str) -> None:  # the scheduler will not write on a stale inventory
        stale.append(reason)
        stop.set()

    try:
        state = app[STATE]
        state.scheduler.on_fatal = give_up
        inventory = state.inventory
        if not inventory.tokens and not config.loopback:
            raise CLIError(
                f"refusing to listen on {host} with no API token: anyone could change the "
                f"inventory. Create one first (`dlm token create --role operator` against a "
                f"server on 127.0.0.1) or list token hashes under `tokens:` in the config")
        token = internal_token()  # what the server's own cycles and read workers present
        state.internal_token_hash = hashlib.sha256(token.encode()).hexdigest()
        site = GuardedSite(runner, host, port, reuse_port=workers > 1 or None,
                           max_connections=raise_file_limit(config.limits.max_connections))
        try:
            await site.start()
        except OSError as exc:
            raise CLIError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        if workers > 1:
            runtime = await start_read_workers(runner, state, workers - 1, token, host, port,
                                               settings)
        url = f"http://{host}:{port}"
        auth = ("open: no token exists, so every request from this host is an operator; "
                "`dlm token create` ends this" if not inventory.tokens else "tokens required")
        more = f"; {workers - 1} read worker(s)" if workers > 1 else ""
        print(f"dlm inventory server ready at {url} (db: {config.store.describe()}; "
              f"auth: {auth}{more})", file=sys.stdout, flush=True)
        log.info("listening", extra={"url": url, "db": config.store.describe(),
                                     "workers": workers})
        schedule = None
        if jobs:
            local = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
            schedule = Schedule(jobs, f"http://{local}:{port}", token,
                                state.scheduler.check_claim)
            schedule.start()
            log.info("schedule started", extra={"jobs": [f"{j.kind} {j.target} every "
                                                         f"{j.every:g}s" for j in jobs]})
        loop = asyncio.get_running_loop()

        def on_signal(sig: int) -> None:
            if not stop.is_set():
                stop.set()
                return
            # a second signal while stopping: do not make the operator reach for kill -9
            # (what is committed is durable, what is not was never acknowledged)
            log.warning("second signal while stopping: exiting now", extra={"signal": sig})
            logging.shutdown()
            os._exit(128 + sig)

        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, on_signal, sig)
        await stop.wait()
        log.info("stopping")
        if schedule is not None:
            await schedule.stop()
        if state.read_workers is not None:
            await state.read_workers.stop()
    finally:
        await runner.cleanup()
        if runtime is not None:
            runtime.remove()
    if stale:
        raise CLIError(stale[0], status=EXIT_STALE)


async def start_read_workers(runner: Any, state: Any, count: int, token: str, host: str,
                             port: int, settings: ServeSettings) -> Any:
    """The primary's side of ``--workers``: a private Unix socket for the workers' feed and
    forwarded requests, the shared committed version, and the worker processes."""
    from aiohttp import web

    from inventory.server.workers import ReadWorkers, RuntimeDir, SharedVersion, WorkerSpec

    runtime = RuntimeDir()
    # backlog: a burst of forwarded writes (1,500 at once through two workers) found the
    # default 128 full, and each connect past it failed at once (EAGAIN) as a 503
    await web.UnixSite(runner, runtime.socket, backlog=4096).start()
    shared = SharedVersion(runtime.shared, create=True)
    inventory = state.inventory
    shared.publish(inventory.version, inventory.token_generation)
    state.feed.listeners.append(
        lambda version: shared.publish(version, inventory.token_generation))
    spec = WorkerSpec(db=state.store.describe() if settings.db is None else settings.db,
                      data_dir=settings.data_dir, host=host, port=port, socket=runtime.socket,
                      shared=runtime.shared, token=token, config_tokens=settings.tokens,
                      loopback=state.open_mode, log_level=settings.log_level,
                      limits=settings.limits)
    state.read_workers = ReadWorkers(count, spec)
    state.read_workers.start()
    return runtime
