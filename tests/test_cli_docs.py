"""docs/cli.md documents every client subcommand and every option it takes (datasette's
tests/test_docs.py idea: the docs fail a test when they fall behind the code). The client
commands are those of the ``inventory.cli_*`` modules; ``serve``, ``policy``, ``detox``... are
documented on their own pages."""

from __future__ import annotations

import argparse
import importlib
import re

import pytest

from inventory.cli import COMMAND_MODULES
from tests.conftest import REPO

DOCS = (REPO / "docs" / "cli.md").read_text()
SHARED = {"-h", "--help", "--url", "--token", "--config", "--json"}  # in "Finding the server"


def subcommands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                path = (*prefix, name)
                if not any(isinstance(a, argparse._SubParsersAction) for a in sub._actions) \
                        or name == "requests":
                    yield path, sub
                yield from subcommands(sub, path)


def client_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dlm")
    subparsers = parser.add_subparsers()
    for name in COMMAND_MODULES:
        if name.startswith("inventory.cli_"):
            importlib.import_module(name).add_commands(subparsers)
    return parser


COMMANDS = list(subcommands(client_parser()))


@pytest.mark.parametrize(("path", "parser"), COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_every_subcommand_and_option_is_documented(path, parser):
    assert re.search(rf"`dlm {' '.join(path)}\b", DOCS), f"dlm {' '.join(path)} not in cli.md"
    for action in parser._actions:
        for option in action.option_strings:
            if option not in SHARED:
                assert f"`{option}" in DOCS or f" {option} " in DOCS or f"[{option}" in DOCS, \
                    f"{option} of dlm {' '.join(path)} not in docs/cli.md"
