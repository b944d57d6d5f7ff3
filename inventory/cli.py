"""The `dlm` command line: a thin layer that turns arguments into one library call.

Each command group lives in its own module exposing ``add_commands(subparsers)``; this module only
assembles them and turns library errors into one line on stderr and a non-zero exit, never a
traceback (the boundary where errors become CLI errors, as in datasette's ``cli.py``).
"""

from __future__ import annotations

import argparse
import importlib
import os
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


# Exit statuses, one rule for every command (docs/cli.md, "Exit status"):
OK = 0
SERVER_ERROR = 1  # the server or a storage refused or could not be reached (the request failed)
USAGE_ERROR = 2   # the command line, a config or input file is wrong, found before anything
                  # was sent; for `dlm serve`, it could not start
INTERRUPTED = 130  # Ctrl-C, as shells report SIGINT


class CLIError(Exception):
    """An error the user can act on: printed as one line, exit status 2 (usage) unless given."""

    def __init__(self, message: str, status: int = USAGE_ERROR) -> None:
        super().__init__(message)
        self.status = status


def stdout_closed() -> bool:
    """Whether the reader of our stdout went away (``dlm ls | head``): a BrokenPipeError that
    reaches ``main`` is then that, and not a connection of ours that broke."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # captured or replaced (tests): not a pipe
        return False
    try:
        import select

        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (AttributeError, OSError):  # pragma: no cover - no poll(): assume it was stdout
        return True


def quiet_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's last flush at exit, which would write
    what is still buffered to the closed pipe, does not print a complaint of its own."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (AttributeError, OSError, ValueError):
        pass


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
        sys.stdout.flush()  # a closed pipe shows here, while it can still be handled
    except CLIError as exc:
        print(f"dlm: error: {exc}", file=sys.stderr)
        return exc.status
    except KeyboardInterrupt:
        return INTERRUPTED
    except BrokenPipeError:
        # `dlm ls | head`, `dlm policy check ... | head`: the reader has seen enough. Exit
        # quietly and successfully, as the commands a pipe usually ends in do (no traceback, no
        # "Exception ignored" at exit). Any other broken pipe is a failed request.
        if not stdout_closed():
            print("dlm: error: a connection closed while sending (broken pipe)",
                  file=sys.stderr)
            return SERVER_ERROR
        quiet_stdout()
        return OK
    return int(status or 0)


if __name__ == "__main__":
    # Run through the imported module, not __main__, so that the CLIError that command modules
    # raise (imported from inventory.cli) is the class caught here.
    from inventory.cli import main as _main

    sys.exit(_main())
