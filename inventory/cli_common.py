"""What every client subcommand of ``dlm`` shares: where the server is, the token, turning library
errors into one line, and printing (aligned tables for people, JSON for scripts).

Not a command module itself (it is not in ``COMMAND_MODULES``): ``cli_storage``, ``cli_items``,
``cli_inject``, ``cli_ops`` and ``cli_token`` build on it, so that each command stays one call
into ``inventory.client`` plus its printing, as datasette's CLI is a thin layer over the library.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

from inventory.cli import SERVER_ERROR, USAGE_ERROR, CLIError
from inventory.client import DEFAULT_URL, ServerUnreachable, SyncClient, server_url
from inventory.errors import DLMError

CONFIG_KEYS = frozenset({"url", "token"})

Command = Callable[[argparse.Namespace, SyncClient], int | None]


def client_parent() -> argparse.ArgumentParser:
    """The options every client subcommand takes, as a parent parser.

    Defaults are ``SUPPRESS``: argparse lets a nested subparser's defaults overwrite what its
    parent parsed (``dlm requests --url X cancel 3``), so an option that was not given must leave
    no attribute at all; ``settings`` falls back to the environment and the config file.
    """
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("server")
    group.add_argument("--url", default=argparse.SUPPRESS,
                       help=f"server URL (DLM_URL, config file; default {DEFAULT_URL})")
    group.add_argument("--token", default=argparse.SUPPRESS,
                       help="bearer token (DLM_TOKEN, config file)")
    group.add_argument("--config", default=argparse.SUPPRESS, metavar="FILE",
                       help="client config file with url and token "
                            "(DLM_CONFIG; default ~/.config/dlm/client.yaml)")
    group.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                       help="print JSON for scripts instead of a table")
    return parent


def add_parser(subparsers: Any, name: str, **kwargs: Any) -> argparse.ArgumentParser:
    """A subcommand parser with the client options, its help doubling as its description."""
    if "help" in kwargs and "description" not in kwargs:
        kwargs["description"] = kwargs["help"][:1].upper() + kwargs["help"][1:] + "."
    return subparsers.add_parser(name, parents=[client_parent()], **kwargs)


# ------------------------------------------------------------------------------ settings

def config_path() -> tuple[Path, bool]:
    """The client config file and whether the user named it (then it must exist)."""
    named = os.environ.get("DLM_CONFIG")
    if named:
        return Path(named), True
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "dlm" / "client.yaml", False


def read_config(path: Path, required: bool) -> dict[str, str]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        if required:
            raise CLIError(f"config file {path} does not exist", USAGE_ERROR) from None
        return {}
    except OSError as exc:
        raise CLIError(f"cannot read config {path}: {exc.strerror}", USAGE_ERROR) from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        # PyYAML's own text spans several lines with a caret drawing; keep one line.
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or "cannot parse"
        raise CLIError(f"{where}: not valid YAML: {problem}", USAGE_ERROR) from None
    if not isinstance(data, dict):
        raise CLIError(f"{path}: expected a mapping with url and token", USAGE_ERROR)
    unknown = sorted(set(data) - CONFIG_KEYS)
    if unknown:
        raise CLIError(f"{path}: unknown setting(s) {', '.join(map(str, unknown))}; "
                       f"known: {', '.join(sorted(CONFIG_KEYS))}", USAGE_ERROR)
    for key, value in data.items():
        if not isinstance(value, str):
            raise CLIError(f"{path}: {key}: expected a string", USAGE_ERROR)
    return data


def settings(args: argparse.Namespace) -> tuple[str, str]:
    """Server URL and token: the flag, else the environment, else the config file, else the
    default (no token: the server's open mode on loopback)."""
    url = getattr(args, "url", None)
    if url is None:  # an empty --url is a mistake to report, not the default
        url = os.environ.get("DLM_URL")
    token = getattr(args, "token", None) or os.environ.get("DLM_TOKEN")
    if url is None or token is None:
        named = getattr(args, "config", None)
        path, required = (Path(named), True) if named else config_path()
        config = read_config(path, required)
        url = config.get("url") if url is None else url
        token = token or config.get("token")
    try:
        url = server_url(DEFAULT_URL if url is None else url)
    except ValueError as exc:
        raise CLIError(f"{exc} (--url, DLM_URL or the config file)", USAGE_ERROR) from None
    return url, token or ""


def wants_json(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "json", False))


# ------------------------------------------------------------------------------ errors

def client_command(fn: Command) -> Callable[[argparse.Namespace], int]:
    """Wrap ``fn(args, client)``: connect, run, and turn library errors into a ``CLIError``.

    This is the only place where ``DLMError`` becomes a CLI error, so every command reports the
    server's message and field the same way and none prints a traceback.
    """

    @functools.wraps(fn)
    def run(args: argparse.Namespace) -> int:
        url, token = settings(args)
        client = SyncClient(url, token)
        try:
            return int(fn(args, client) or 0)
        except ServerUnreachable as exc:
            if exc.message.startswith("cannot reach"):
                raise CLIError(f"cannot reach the DLM server at {exc.url} "
                               f"(is `dlm serve` running?)", SERVER_ERROR) from None
            raise CLIError(exc.message, SERVER_ERROR) from None
        except DLMError as exc:
            raise CLIError(describe(exc), SERVER_ERROR) from None
        finally:
            client.close()

    return run


def describe(exc: DLMError, field: str | None = None) -> str:
    """One line from a server error: ``field: message`` plus details (``last_copies: 3``) and a
    hint for the two errors whose fix is on the user's side of the wire."""
    field = field if field is not None else exc.field
    text = f"{field}: {exc.message}" if field else exc.message
    extra = [f"{k}: {v}" for k, v in exc.details.items()]
    if extra:
        text += f" ({', '.join(extra)})"
    if exc.status == 401:
        text += " (give a token with --token, DLM_TOKEN or the config file)"
    elif exc.status == 403 and "rule" not in exc.details:  # a rule's message says what to do
        text += " (this token's role may not do this)"
    return text


# ------------------------------------------------------------------------------ parsing

def parse_scalar(text: str) -> str | int | float | bool | None:
    """A ``K=V`` value: JSON numbers, ``true``/``false`` and ``null`` keep their type (storage
    attributes are scalars policies compare), anything else is the string as typed."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, str | int | float | bool) or value is None else text


def parse_pairs(pairs: Sequence[str] | None, option: str, *,
                typed: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CLIError(f"{option}: expected KEY=VALUE, got {pair!r}", USAGE_ERROR)
        out[key] = parse_scalar(value) if typed else value
    return out


def is_oid(text: str) -> bool:
    """Whether an ITEM argument is an oid (a UUID) rather than an item name."""
    if len(text) != 36:
        return False
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def resolve_item(client: SyncClient, ref: str, version: int | None = None) -> dict[str, Any]:
    """The item an ITEM argument names: an oid, or an item name (its latest version unless
    ``version`` is given). An exact name is looked up through the name query; one with glob
    characters through ``exists``, so ``*`` in a name is not read as a pattern."""
    if is_oid(ref):
        return client.item(ref)
    if any(c in ref for c in "*?["):
        found = client.exists(ref, version=version)
        if found.get("oid"):
            return client.item(found["oid"])
    else:
        for item in client.find_items(ref, version=version or "latest", limit=10):
            if item["item_name"] == ref:
                return item
    # Listings hide DELETED items unless asked (`dlm ls --state DELETED`); a name that is only
    # DELETED still names that item: the newest such version (its state says what it is).
    deleted = [item for item in client.find_items(ref, version=version or "all",
                                                  state="DELETED", limit=1000)
               if item["item_name"] == ref]
    if deleted:
        return max(deleted, key=lambda item: item["item_version"])
    which = f"{ref!r} version {version}" if version else repr(ref)
    raise CLIError(f"no item named {which}", SERVER_ERROR)


# ------------------------------------------------------------------------------ printing

_UNITS = ("B", "kB", "MB", "GB", "TB", "PB", "EB")


def human_size(size: int | None) -> str:
    """Decimal units, as capacities are written (``10 TB``); exact bytes are in ``--json``."""
    if size is None:
        return "-"
    value = float(size)
    for unit in _UNITS:
        if abs(value) < 1000 or unit == _UNITS[-1]:
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def human_time(text: str | None) -> str:
    """ISO time to the second, UTC: ``2026-11-25 12:05:46``."""
    if not text:
        return "-"
    return text.replace("T", " ")[:19]


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items()) or "-"
    return str(value)


def print_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], *,
                right: Iterable[str] = ()) -> None:
    """Aligned columns with a header; columns named in ``right`` (numbers, sizes) align right."""
    text_rows = [[cell(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in text_rows:
        widths = [max(w, len(v)) for w, v in zip(widths, row, strict=True)]
    align_right = set(right)

    def line(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if h in align_right else v.ljust(w)
                 for h, v, w in zip(headers, values, widths, strict=True)]
        return "  ".join(parts).rstrip()

    print(line(headers))
    for row in text_rows:
        print(line(row))


def print_fields(pairs: Iterable[tuple[str, Any]]) -> None:
    """``key  value`` lines with the values aligned: one object for people."""
    pairs = [(k, cell(v)) for k, v in pairs]
    width = max((len(k) for k, _ in pairs), default=0)
    for key, value in pairs:
        print(f"{key.ljust(width)}  {value}")


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2))


def print_json_list(values: Iterable[Any]) -> int:
    """A JSON array written as it is produced, so a million items are never all in memory;
    returns how many were written."""
    count = 0
    out = sys.stdout
    out.write("[")
    for value in values:
        out.write(",\n " if count else "\n ")
        out.write(json.dumps(value))
        count += 1
    out.write("\n]\n" if count else "]\n")
    return count
