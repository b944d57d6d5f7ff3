"""``dlm policy check FILE...`` and ``dlm policy explain --policy FILE ITEM``.

A thin layer: loading, summarising and explaining are library calls; this module only reads
arguments, fetches the item from the server for ``explain``, and prints. Policy errors are printed
one per line as ``file:line:col: message`` on stderr with exit status 1; network and server
problems become `CLIError`.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import time
from typing import Any

from inventory.cli import SERVER_ERROR, USAGE_ERROR, CLIError
from inventory.cli_common import settings

from .errors import PolicyError
from .explain import explain, render
from .loader import load_policy
from .model import Policy
from .remote import RemoteDataError, item_views
from .summary import summarize

DEFAULT_URL = "http://127.0.0.1:8642"
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def add_commands(subparsers: Any) -> None:
    """Add ``policy check`` and ``policy explain`` to the ``dlm`` parser."""
    policy = subparsers.add_parser("policy", help="check policy files and explain decisions",
                                   description="Check policy files and explain decisions.")
    actions = policy.add_subparsers(dest="policy_command", metavar="ACTION")
    actions.required = True

    check = actions.add_parser(
        "check", help="validate policy files and summarise what they do",
        description="Validate policy files; print a summary of each valid one on stdout and "
                    "every error as file:line:col: message on stderr (exit 1 if any fails).")
    check.add_argument("files", nargs="+", metavar="FILE")
    check.add_argument("-q", "--quiet", action="store_true", help="print no summary")
    check.set_defaults(func=cmd_check)

    exp = actions.add_parser(
        "explain", help="say which rule decides each replica of an item, and why",
        description="Fetch ITEM (a name or an oid) from a running server and print, for each "
                    "replica, the rule that decides it and the attribute values it looked at.")
    exp.add_argument("--policy", required=True, metavar="FILE")
    exp.add_argument("item", metavar="ITEM")
    exp.add_argument("--url", default=None,
                     help=f"server URL (DLM_URL, client config file; default {DEFAULT_URL})")
    exp.add_argument("--token", default=None, help="API token (DLM_TOKEN, client config file)")
    exp.add_argument("--now", default=None, metavar="TIME",
                     help="evaluate at this ISO-8601 time instead of the current time")
    exp.set_defaults(func=cmd_explain)


def _report(error: PolicyError) -> None:
    for diagnostic in error.diagnostics:
        print(diagnostic, file=sys.stderr)


def cmd_check(args: argparse.Namespace) -> int:
    failed = 0
    for path in args.files:
        try:
            policy = load_policy(path)
        except PolicyError as exc:
            _report(exc)
            failed += 1
            continue
        if not args.quiet:
            print("\n".join(summarize(policy)))
    if len(args.files) > 1 and not args.quiet:
        print(f"{len(args.files) - failed} of {len(args.files)} policies valid")
    return 1 if failed else 0


def cmd_explain(args: argparse.Namespace) -> int:
    try:
        policy = load_policy(args.policy)
    except PolicyError as exc:  # an input file that is wrong: nothing was sent
        _report(exc)
        return USAGE_ERROR
    now = _now(args.now)
    url, token = settings(args)
    item, storages, parent = asyncio.run(fetch(url, token, args.item))
    print("\n".join(explain_json(policy, item, storages, now, parent)))
    return 0


def explain_json(policy: Policy, item: dict, storages: list, now: float,
                 parent_name: str | None = None) -> list[str]:
    """Explanation lines for REST JSON (the part of ``explain`` after the fetch)."""
    half_life = policy.dealer.popularity.half_life if (
        policy.dealer is not None and policy.dealer.popularity is not None) else None
    try:
        remote = item_views(item, storages, now, partition=policy.partition,
                            half_life=half_life, parent_name=parent_name)
    except RemoteDataError as exc:
        raise CLIError(f"unexpected data from the server: {exc}", SERVER_ERROR) from None
    pairs = [(r.view, r.storage) for r in remote.replicas]
    return render(explain(policy, remote.view, pairs, now), now, remote.oid)


def _now(text: str | None) -> float:
    if text is None:
        return time.time()
    from .units import parse_date

    try:
        return parse_date(text)
    except ValueError:
        raise CLIError(f"--now: not an ISO-8601 time: {text!r}") from None


async def fetch(url: str, token: str | None, item: str) -> tuple[dict, list, str | None]:
    """(item JSON with replicas, storages JSON, parent name or None) from the server."""
    import aiohttp

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    timeout = aiohttp.ClientTimeout(total=30)
    try:
        async with aiohttp.ClientSession(headers=headers, timeout=timeout) as session:
            if _UUID.match(item):
                record = await _get(session, f"{url}/v1/items/{item}", f"no item with oid {item}")
            else:
                found = await _get(session, f"{url}/v1/items", f"no item named {item!r}",
                                   params={"name": item})
                record = _pick(found, item)
            if not isinstance(record.get("replicas"), list) and record.get("oid"):
                record = await _get(session, f"{url}/v1/items/{record['oid']}",
                                    f"no item with oid {record['oid']}")
            storages = (await _get(session, f"{url}/v1/storages", "no storages")).get("storages")
            parent = None
            if record.get("parent_oid"):
                try:
                    parent_record = await _get(session, f"{url}/v1/items/{record['parent_oid']}",
                                               "parent not found")
                    parent = parent_record.get("item_name")
                except CLIError:
                    parent = None  # explain with the parent's oid rather than fail
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        raise CLIError(f"cannot reach the server at {url}: {exc or type(exc).__name__}",
                       SERVER_ERROR) from None
    if not isinstance(storages, list):
        raise CLIError("unexpected data from the server: /v1/storages has no 'storages' list",
                       SERVER_ERROR)
    return record, storages, parent


async def _get(session: Any, url: str, missing: str, params: dict | None = None) -> dict:
    async with session.get(url, params=params) as response:
        if response.status == 404:
            raise CLIError(missing, SERVER_ERROR)
        if response.status in (401, 403):
            raise CLIError(f"the server refused the request ({response.status}): set DLM_TOKEN "
                           "or --token", SERVER_ERROR)
        try:
            body = await response.json(content_type=None)
        except ValueError:
            body = None
        if response.status >= 400:
            message = body.get("error", {}).get("message") if isinstance(body, dict) else None
            raise CLIError(f"server error {response.status} on {url}: "
                           f"{message or response.reason}", SERVER_ERROR)
        if not isinstance(body, dict):
            raise CLIError(f"unexpected data from the server at {url}: not a JSON object",
                           SERVER_ERROR)
        return body


def _pick(found: dict, name: str) -> dict:
    items = [i for i in found.get("items") or [] if isinstance(i, dict)
             and i.get("item_name") == name]
    if not items:
        raise CLIError(f"no item named {name!r}", SERVER_ERROR)
    return max(items, key=lambda i: i.get("item_version") or 0)
