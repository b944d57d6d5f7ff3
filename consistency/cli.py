"""``dlm consistency STORAGE``: list a storage, diff it with the inventory, report, and fix.

Exit status: 0 the run completed (whatever it found); 1 the server or the storage said no or
could not be reached; 2 a wrong command line; 3 the safety limit held (too much looks missing:
the report is written and stored, nothing was fixed).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from consistency import report as reports
from consistency.cycle import CHECKSUM_MODES, Options, RunResult, run_consistency
from consistency.diff import CLASSES, DEFAULT_GRACE
from inventory import errors
from inventory.cli import INTERRUPTED, SERVER_ERROR, USAGE_ERROR, CLIError
from inventory.cli_common import describe, settings
from inventory.client import Client
from inventory.storage.errors import StorageError

SAFETY_LIMIT = 3
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}
_FRACTION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(%?)\s*$")


def parse_duration(text: str, option: str) -> float:
    match = _DURATION.match(text)
    if not match:
        raise CLIError(f"{option}: expected a duration like 30m, 24h or 7d, got {text!r}",
                       USAGE_ERROR)
    return float(match.group(1)) * _SECONDS[match.group(2)]


def parse_fraction(text: str, option: str) -> float:
    match = _FRACTION.match(text)
    value = None if not match else float(match.group(1)) / (100 if match.group(2) else 1)
    if value is None or not 0 <= value <= 1:
        raise CLIError(f"{option}: expected a share like 5% or 0.05, got {text!r}", USAGE_ERROR)
    return value


def add_commands(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "consistency", help="compare a storage with the inventory: missing, orphan, mismatched",
        description="List STORAGE, compare it with the inventory's replicas there, write a "
                    "report (missing, orphan/dark, size and checksum mismatches) and store it "
                    "on the server; with --fix, repair what it found. Exit status: 0 done, 1 "
                    "server or storage error, 2 usage error, 3 safety limit (nothing fixed).")
    p.add_argument("storage", metavar="STORAGE", help="the storage's name")
    p.add_argument("--report", metavar="FILE",
                   help="write the full report here ('-' for stdout)")
    p.add_argument("--format", choices=reports.FORMATS, default=None,
                   help="report format (default: from the file's extension, else json)")
    p.add_argument("--fix", action="store_true",
                   help="re-copy missing and mismatched replicas from good copies (or flag "
                        "lost items), delete orphans older than the grace period")
    p.add_argument("--checksums", choices=CHECKSUM_MODES, default="sample",
                   help="read objects to compare checksums: a sample (1%%, at least 100; "
                        "default), all, or none")
    p.add_argument("--grace", default="24h", metavar="DURATION",
                   help="objects younger than this are never orphans (default 24h)")
    p.add_argument("--max-missing", default="5%", metavar="SHARE",
                   help="safety limit: if more than this share of the replicas looks missing, "
                        "report and fix nothing (default 5%%)")
    p.add_argument("--no-store", action="store_true",
                   help="do not send the report to the server (for a reader token)")
    p.add_argument("--url", default=None, help="server URL (DLM_URL, client config file)")
    p.add_argument("--token", default=None, help="API token (DLM_TOKEN, client config file)")
    p.set_defaults(func=cmd_consistency)


def cmd_consistency(args: argparse.Namespace) -> int:
    options = Options(
        grace=parse_duration(args.grace, "--grace") if args.grace else DEFAULT_GRACE,
        checksums=args.checksums,
        max_missing=parse_fraction(args.max_missing, "--max-missing"),
        fix=args.fix, store=not args.no_store)
    if args.fix and args.no_store:
        raise CLIError("--fix needs the server: it cannot go with --no-store", USAGE_ERROR)
    fmt = args.format or _format_of(args.report)
    report = args.report
    if report is None and args.format is not None:  # asked for a format: it goes in a file
        report = default_report_name(args.storage, fmt, time.time())
    target = None if report in (None, "-") else Path(report)
    if target is not None and not target.parent.is_dir():
        raise CLIError(f"--report: no directory {str(target.parent)!r}", USAGE_ERROR)
    url, token = settings(args)
    try:
        run = asyncio.run(_run(args, options, url, token))
    except KeyboardInterrupt:
        return INTERRUPTED
    text = reports.render(run.report, fmt)
    if report == "-":
        sys.stdout.write(text)
    else:
        if target is not None:
            target.write_text(text, encoding="utf-8")
        print(format_summary(run, target))
    if run.safety:
        print(f"dlm: error: safety limit: {run.safety}", file=sys.stderr)
        return SAFETY_LIMIT
    return 0


async def _run(args: argparse.Namespace, options: Options, url: str, token: str) -> RunResult:
    try:
        async with Client(url, token) as client:
            return await run_consistency(client, args.storage, options)
    except (aiohttp.ClientError, OSError) as exc:
        raise CLIError(f"cannot reach the DLM server at {url} ({exc})", SERVER_ERROR) from None
    except errors.DLMError as exc:
        field = exc.field if exc.field != "body" else ""
        raise CLIError(describe(exc, field), SERVER_ERROR) from None
    except StorageError as exc:
        raise CLIError(f"storage {args.storage!r}: {exc.message}", SERVER_ERROR) from None


def default_report_name(storage: str, fmt: str, now: float) -> str:
    """Where ``--format`` without ``--report`` writes: ``consistency-STORAGE-TIME.FMT`` in the
    current directory (UTC time to the second, so runs never overwrite each other's)."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", storage)
    return f"consistency-{safe}-{stamp}.{fmt}"


def _format_of(path: str | None) -> str:
    suffix = Path(path).suffix.lower().lstrip(".") if path and path != "-" else ""
    return suffix if suffix in reports.FORMATS else "json"


def format_summary(run: RunResult, target: Path | None) -> str:
    """What an operator reads on the terminal: counts per class and what the fix did."""
    report = run.report
    counts = report["counts"]
    lines = [
        f"Consistency of {report['storage']['name']} at inventory version "
        f"{report['inventory_version']}: listed {counts['listed']['count']} objects "
        f"({reports.human_bytes(counts['listed']['bytes'])}) in "
        f"{report['listing']['seconds']:.1f}s, {counts['expected']} replicas judged, "
        f"{counts['checksums_read']} checksums read",
    ]
    for kind in (*CLASSES, "ok"):
        entry = counts[kind]
        lines.append(f"  {kind:<18} {entry['count']:>9}  {reports.human_bytes(entry['bytes'])}")
    skipped = ", ".join(f"{k} {v}" for k, v in counts["skipped"].items() if v)
    if skipped:
        lines.append(f"  left alone (in flight, or behind a symlink): {skipped}")
    links = report.get("symlinks") or []
    if links:
        shown = ", ".join(f"{s['path']} -> {s['target'] or '(outside the root or dangling)'}"
                          for s in links[:5])
        lines.append(f"  symlinks {len(links):>9}  never objects, never deleted; replicas "
                     f"through them are not judged: {shown}"
                     + (f" and {len(links) - 5} more" if len(links) > 5 else ""))
    fix = report.get("fix")
    if fix:
        applied, dropped = fix.get("applied", {}), fix.get("dropped", {})
        lines.append(
            f"fix: {applied.get('recopies', 0)} re-copies queued, "
            f"{applied.get('marked_missing', 0)} marked missing, "
            f"{applied.get('marked_corrupt', 0)} marked corrupt, {applied.get('lost', 0)} "
            f"items LOST, {fix.get('orphans_deleted', 0)} orphans deleted; left alone: "
            + (", ".join(f"{k} {v}" for k, v in dropped.items()) or "none"))
    if report.get("id") is not None:
        lines.append(f"report {report['id']}: GET /v1/consistency/reports/{report['id']}"
                     "?format=html")
    if target is not None:
        lines.append(f"report written to {target}")
    return "\n".join(lines)
