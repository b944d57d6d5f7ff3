"""The command line shared by the cycle processes (``dlm detox``, ``dlm dealer``): load the
policy, run one cycle or one every period against a server, print the report or JSON."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import re
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from tqdm import tqdm

from inventory import errors
from inventory.cli import INTERRUPTED, SERVER_ERROR, USAGE_ERROR, CLIError
from inventory.cli_common import describe, settings
from inventory.client import Client
from policies import Policy, PolicyError, load_policy

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)\s*$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}

RunCycle = Callable[..., Awaitable[Any]]
FormatReport = Callable[..., str]


def parse_duration(text: str) -> float:
    match = _DURATION.match(text)
    if not match or float(match.group(1)) <= 0:
        raise CLIError(f"--every: expected a duration like 30m, 4h or 1d, got {text!r}")
    return float(match.group(1)) * _SECONDS[match.group(2)]


def add_cycle_command(subparsers: Any, name: str, *, help: str, description: str,
                      dry_run_help: str, run_cycle: RunCycle,
                      format_report: FormatReport) -> None:
    p = subparsers.add_parser(name, help=help, description=description)
    p.add_argument("--policy", required=True, help="policy file")
    when = p.add_mutually_exclusive_group()
    when.add_argument("--once", action="store_true", help="run one cycle (the default)")
    when.add_argument("--every", metavar="DURATION", help="run a cycle every 30m, 4h, 1d...")
    p.add_argument("--dry-run", action="store_true", help=dry_run_help)
    p.add_argument("--json", action="store_true", help="print the cycle summary as JSON")
    p.add_argument("--url", default=None, help="server URL (DLM_URL, client config file)")
    p.add_argument("--token", default=None, help="API token (DLM_TOKEN, client config file)")
    p.set_defaults(func=lambda args: _command(args, name, run_cycle, format_report))


def _command(args: argparse.Namespace, name: str, run_cycle: RunCycle,
             format_report: FormatReport) -> int:
    path = Path(args.policy)
    try:
        policy = load_policy(path)
    except PolicyError as exc:  # an input file that is wrong: nothing was sent
        for diagnostic in exc.diagnostics:
            print(diagnostic, file=sys.stderr)
        return USAGE_ERROR
    every = parse_duration(args.every) if args.every else None
    url, token = settings(args)
    text = path.read_text(encoding="utf-8")
    try:
        return asyncio.run(_loop(args, name, policy, text, every, run_cycle, format_report,
                                 url, token))
    except KeyboardInterrupt:
        return INTERRUPTED


async def _loop(args: argparse.Namespace, name: str, policy: Policy, text: str,
                every: float | None, run_cycle: RunCycle, format_report: FormatReport,
                url: str, token: str) -> int:
    log = logging.getLogger(f"dlm.{name}")
    async with Client(url, token) as client:
        kept = None  # the last cycle's snapshot: the next one catches it up through the feed
        while True:
            problem = None
            # A progress line on a terminal (tqdm stays silent when stderr is not one).
            bar = tqdm(desc=f"{name}: snapshot", unit=" records", file=sys.stderr,
                       disable=None, leave=False)

            def progress(stage: str, done: int, total: int, bar: tqdm = bar) -> None:
                bar.set_description(f"{name}: {stage}", refresh=False)
                if total:
                    bar.total = total
                    bar.n = done
                bar.refresh()

            try:
                result = await run_cycle(client, policy, text, dry_run=args.dry_run,
                                         progress=progress, snapshot=kept)
            except (aiohttp.ClientError, OSError) as exc:
                problem = f"cannot reach the DLM server at {client.url} ({exc})"
            except errors.DLMError as exc:
                problem = describe(exc)  # with the token hint on a 401 or 403
            else:
                bar.close()
                kept = result.snapshot if every is not None else None
                if args.json:
                    body = result.plan.summary()
                    body["applied"] = result.applied
                    body["timing"] = result.seconds
                    print(json.dumps(body, indent=2, sort_keys=True))
                else:
                    print(format_report(result, dry_run=args.dry_run))
                sys.stdout.flush()
            bar.close()
            if problem is not None:
                if every is None:
                    raise CLIError(problem, SERVER_ERROR)
                log.error(f"{name} cycle failed; trying again next period",
                          extra={"error": problem})
            if every is None:
                return 0
            await asyncio.sleep(every)
