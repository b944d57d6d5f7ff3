"""The `dlm` command line: a thin layer that turns arguments into one library call.

Each command group lives in its own module exposing ``add_commands(subparsers)``; this module only
assembles them and turns library errors into one line on stderr and a non-zero exit, never a
traceback (the boundary where errors become CLI errors, as in datasette's ``cli.py``).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Modules contributing subcommands, in the order their help is listed.
COMMAND_MODULES: tuple[str, ...] = (
    "inventory.serve_cli",
    "inventory.cli_storage",
    "inventory.cli_inject",
    "inventory.cli_items",
    "inventory.cli_ops",
    "inventory.cli_token",
    "policies.cli",
    "detox.cli",
    "dealer.cli",
    "consistency.cli",
)


class CLIError(Exception):
    """An error the user can act on: printed as one line, exit status 2 unless given."""

    def __init__(self, message: str, status: int = 2) -> None:
        super().__init__(message)
        self.status = status


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dlm", description="DLM: data lifecycle manager for large scientific data."
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_commands(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status = args.func(args)
    except CLIError as exc:
        print(f"dlm: error: {exc}", file=sys.stderr)
        return exc.status
    except KeyboardInterrupt:
        return 130
    return int(status or 0)


if __name__ == "__main__":
    # Run through the imported module, not __main__, so that the CLIError that command modules
    # raise (imported from inventory.cli) is the class caught here.
    from inventory.cli import main as _main

    sys.exit(_main())
