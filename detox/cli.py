"""``dlm detox``: run Detox cycles against a running server, once, on a period, or as a dry run."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import re
import sys
from pathlib import Path
from typing import Any

import aiohttp

from detox.cycle import format_report, run_cycle
from inventory import errors
from inventory.cli import CLIError
from inventory.client import Client, default_url
from policies import PolicyError, load_policy

log = logging.getLogger("dlm.detox")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)\s*$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    match = _DURATION.match(text)
    if not match or float(match.group(1)) <= 0:
        raise CLIError(f"--every: expected a duration like 30m, 4h or 1d, got {text!r}")
    return float(match.group(1)) * _SECONDS[match.group(2)]


def add_commands(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "detox", help="delete by watermark and expiry (one cycle, a period, or a dry run)",
        description="Take a snapshot of the inventory, judge every replica with the policy, and "
                    "send the deletions to the server, which re-checks and queues them.")
    p.add_argument("--policy", required=True, help="policy file")
    when = p.add_mutually_exclusive_group()
    when.add_argument("--once", action="store_true", help="run one cycle (the default)")
    when.add_argument("--every", metavar="DURATION", help="run a cycle every 30m, 4h, 1d...")
    p.add_argument("--dry-run", action="store_true",
                   help="print what would be deleted; change nothing")
    p.add_argument("--json", action="store_true", help="print the cycle summary as JSON")
    p.add_argument("--url", default=None, help="server URL (DLM_URL)")
    p.add_argument("--token", default=None, help="API token (DLM_TOKEN)")
    p.set_defaults(func=cmd_detox)


def cmd_detox(args: argparse.Namespace) -> int:
    path = Path(args.policy)
    try:
        policy = load_policy(path)
    except PolicyError as exc:
        for diagnostic in exc.diagnostics:
            print(diagnostic, file=sys.stderr)
        return 1
    text = path.read_text(encoding="utf-8")
    every = parse_duration(args.every) if args.every else None
    try:
        return asyncio.run(_main(args, policy, text, every))
    except KeyboardInterrupt:
        return 130


async def _main(args: argparse.Namespace, policy, text: str, every: float | None) -> int:
    async with Client(args.url or default_url(), args.token) as client:
        while True:
            try:
                result = await run_cycle(client, policy, text, dry_run=args.dry_run)
            except (aiohttp.ClientError, OSError) as exc:
                if every is None:
                    raise CLIError(f"cannot reach the DLM server at {client.url} ({exc})"
                                   ) from None
                log.error("detox cycle failed; trying again next period",
                          extra={"error": str(exc)})
            except errors.DLMError as exc:
                if every is None:
                    raise CLIError(f"{exc.message}" + (f" ({exc.field})" if exc.field else "")
                                   ) from None
                log.error("detox cycle failed; trying again next period",
                          extra={"error": exc.message})
            else:
                if args.json:
                    body = result.plan.summary()
                    body["applied"] = result.applied
                    body["timing"] = result.seconds
                    print(json.dumps(body, indent=2, sort_keys=True))
                else:
                    print(format_report(result, dry_run=args.dry_run))
                sys.stdout.flush()
            if every is None:
                return 0
            await asyncio.sleep(every)
