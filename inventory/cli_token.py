"""``dlm token create|ls|rm``: bearer tokens with roles (reader, producer, operator).

The secret is printed once, by ``create``, alone on stdout so that
``DLM_TOKEN=$(dlm token create --role producer)`` works; the server keeps only its hash.
"""

from __future__ import annotations

import argparse
import secrets
import sys
from typing import Any

from inventory.cli_common import (
    add_parser,
    client_command,
    human_time,
    print_json,
    print_table,
    wants_json,
)
from inventory.client import SyncClient

ROLES = ("reader", "producer", "operator")


def add_commands(subparsers: Any) -> None:
    token = subparsers.add_parser("token", help="create, list and remove API tokens",
                                  description="Create, list and remove API tokens (operator). "
                                              "Creating the first token ends the server's "
                                              "open mode.")
    actions = token.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True

    p = add_parser(actions, "create", help="make a token and print it, once")
    p.add_argument("--role", required=True, choices=ROLES)
    p.add_argument("--name", help="a name to list and remove it by (default: ROLE-xxxxxx)")
    p.add_argument("--expires-at", metavar="TIME", help="ISO-8601 time (default: never)")
    p.set_defaults(func=client_command(create))

    p = add_parser(actions, "ls", help="list tokens (never their secrets)")
    p.set_defaults(func=client_command(ls))

    p = add_parser(actions, "rm", help="revoke a token")
    p.add_argument("name")
    p.set_defaults(func=client_command(rm))


def create(args: argparse.Namespace, client: SyncClient) -> None:
    # A name is how a token is listed and revoked, so one is always sent: the role and a random
    # suffix when none is given (two unnamed tokens of one role must not collide).
    name = args.name or f"{args.role}-{secrets.token_hex(3)}"
    made = client.add_token(args.role, name=name, expires_at=args.expires_at)
    if wants_json(args):
        print_json(made)
        return
    print(made["token"])
    print(f"token {made['name']!r} ({made['role']}) created; it is shown only now, so store "
          f"it (DLM_TOKEN or the config file)", file=sys.stderr)


def ls(args: argparse.Namespace, client: SyncClient) -> None:
    tokens = client.list_tokens()
    if wants_json(args):
        print_json(tokens)
        return
    print_table(["NAME", "ROLE", "CREATED", "EXPIRES"],
                ([t["name"], t["role"], human_time(t["created"]), human_time(t["expires_at"])]
                 for t in tokens))


def rm(args: argparse.Namespace, client: SyncClient) -> None:
    client.delete_token(args.name)
    if wants_json(args):
        print_json({"name": args.name, "deleted": True})
        return
    print(f"token {args.name!r} removed")
