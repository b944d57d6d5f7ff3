"""``dlm dealer``: Dealer cycles against a running server, once, on a period, or as a dry run."""

from __future__ import annotations

from typing import Any

from dealer.cycle import format_report, run_cycle
from inventory.cycle_cli import add_cycle_command


def add_commands(subparsers: Any) -> None:
    add_cycle_command(
        subparsers, "dealer",
        help="place copies by phase, rules, requests, popularity and balance",
        description="Take a snapshot of the inventory, decide which copies are missing and "
                    "where they go, and send them to the server, which re-checks and queues "
                    "them.",
        dry_run_help="print what would be copied; change nothing",
        run_cycle=run_cycle, format_report=format_report)
