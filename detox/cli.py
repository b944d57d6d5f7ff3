"""``dlm detox``: Detox cycles against a running server, once, on a period, or as a dry run."""

from __future__ import annotations

from typing import Any

from detox.cycle import format_report, run_cycle
from inventory.cycle_cli import add_cycle_command


def add_commands(subparsers: Any) -> None:
    add_cycle_command(
        subparsers, "detox",
        help="delete by watermark and expiry (one cycle, a period, or a dry run)",
        description="Take a snapshot of the inventory, judge every replica with the policy, and "
                    "send the deletions to the server, which re-checks and queues them.",
        dry_run_help="print what would be deleted; change nothing",
        run_cycle=run_cycle, format_report=format_report)
