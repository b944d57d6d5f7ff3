"""``dlm serve``: run the inventory server (embedded SQLite by default, PostgreSQL with --db)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from dataclasses import dataclass
from typing import Any

import yaml
from aiohttp import web

from inventory import logs
from inventory.cli import CLIError
from inventory.server.app import ServerConfig, make_app
from inventory.store import SchemaError, StoreError, open_store

log = logging.getLogger("dlm.serve")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8642
DEFAULT_DATA_DIR = "./dlm-data"
CONFIG_KEYS = {"db", "host", "port", "data_dir", "log_level"}


@dataclass(slots=True)
class ServeSettings:
    data_dir: str = DEFAULT_DATA_DIR
    db: str | None = None
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    log_level: str = "info"


def add_commands(subparsers: Any) -> None:
    p = subparsers.add_parser("serve", help="run the inventory server",
                              description="Run the inventory server. Flags override --config.")
    p.add_argument("--config", help="YAML file with db, host, port, data_dir, log_level")
    p.add_argument("--data-dir", help=f"where the embedded database lives ({DEFAULT_DATA_DIR})")
    p.add_argument("--db", help="database URL: postgresql://... or sqlite:PATH "
                                "(default: a SQLite file in the data dir)")
    p.add_argument("--host", help=f"listen address ({DEFAULT_HOST})")
    p.add_argument("--port", type=int, help=f"listen port ({DEFAULT_PORT})")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=run_serve)


def settings_from(args: argparse.Namespace) -> ServeSettings:
    settings = ServeSettings()
    if args.config:
        for key, value in read_config(args.config).items():
            setattr(settings, key, value)
    for key in ("data_dir", "db", "host", "port", "log_level"):
        value = getattr(args, key)
        if value is not None:
            setattr(settings, key, value)
    if settings.db is None:
        settings.db = os.environ.get("DLM_DB") or None
    return settings


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
    if "port" in data and not isinstance(data["port"], int):
        raise CLIError(f"{path}: port: expected an integer")
    return data


def run_serve(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    logs.setup(settings.log_level)
    try:
        store = open_store(settings.db, settings.data_dir)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    config = ServerConfig(store=store)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency except on Windows
        runner = asyncio.run
    else:
        runner = uvloop.run
    try:
        runner(serve(config, settings.host, settings.port))
    except SchemaError as exc:
        raise CLIError(str(exc)) from None
    except StoreError as exc:
        raise CLIError(f"database: {exc}") from None
    except OSError as exc:
        raise CLIError(f"cannot listen on {settings.host}:{settings.port}: {exc.strerror}") \
            from None
    return 0


async def serve(config: ServerConfig, host: str, port: int) -> None:
    app = make_app(config)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        url = f"http://{host}:{port}"
        print(f"dlm inventory server ready at {url} (db: {config.store.describe()})",
              file=sys.stdout, flush=True)
        log.info("listening", extra={"url": url, "db": config.store.describe()})
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("stopping")
    finally:
        await runner.cleanup()
