"""``dlm storage add|ls|show|set|rm``: register storages, see their occupancy, change their
status, remove an empty one."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from inventory import model
from inventory.cli import CLIError
from inventory.cli_common import (
    USAGE_ERROR,
    add_parser,
    client_command,
    human_size,
    human_time,
    parse_pairs,
    print_fields,
    print_json,
    print_table,
    wants_json,
)
from inventory.client import SyncClient

KINDS = ("posix", "s3")
STATUSES = ("online", "draining", "offline", "retired")


def add_commands(subparsers: Any) -> None:
    storage = subparsers.add_parser("storage", help="add, list, show, change, remove storages",
                                    description="Add, list, show, change and remove storages.")
    actions = storage.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True

    p = add_parser(actions, "add", help="register a storage (operator)")
    p.add_argument("name", help="1-64 of letters, digits, _ . -")
    p.add_argument("--kind", required=True, choices=KINDS)
    p.add_argument("--root", required=True,
                   help="posix: an absolute directory; s3: bucket or bucket/prefix")
    p.add_argument("--capacity", required=True,
                   help="bytes, or with a unit: '500 TB', '2GiB'")
    p.add_argument("--phase", choices=model.PHASES,
                   help="the resilience the storage gives (default GAS)")
    p.add_argument("--status", choices=STATUSES, help="default online")
    p.add_argument("--attr", action="append", metavar="KEY=VALUE",
                   help="an attribute policies can read (region, tier...); repeatable")
    p.add_argument("--set-config", action="append", metavar="KEY=VALUE", dest="backend",
                   help="a backend setting (S3 endpoint, credentials); repeatable")
    p.add_argument("--create-root", action="store_true",
                   help="posix: create the root directory if it does not exist (without, a "
                        "missing root is only warned about: copies never create it)")
    p.set_defaults(func=client_command(add))

    p = add_parser(actions, "rm", help="remove an empty storage (operator)")
    p.add_argument("name")
    p.set_defaults(func=client_command(remove))

    p = add_parser(actions, "ls", help="list storages with their occupancy")
    p.set_defaults(func=client_command(ls))

    p = add_parser(actions, "show", help="one storage in full")
    p.add_argument("name")
    p.set_defaults(func=client_command(show))

    p = add_parser(actions, "set", help="change status, capacity, phase, attributes (operator)")
    p.add_argument("name")
    p.add_argument("--status", choices=STATUSES,
                   help="'retired' is refused while the storage holds last copies")
    p.add_argument("--capacity")
    p.add_argument("--phase", choices=model.PHASES)
    p.add_argument("--attr", action="append", metavar="KEY=VALUE",
                   help="add or change an attribute; repeatable")
    p.add_argument("--unset-attr", action="append", metavar="KEY", help="remove an attribute")
    p.add_argument("--set-config", action="append", metavar="KEY=VALUE", dest="backend",
                   help="change a backend setting; repeatable")
    p.set_defaults(func=client_command(change))


def capacity_value(text: str) -> int | str:
    """Plain digits go as a number, anything with a unit as the string the server parses."""
    return int(text) if text.strip().isdigit() else text


def add(args: argparse.Namespace, client: SyncClient) -> None:
    spec: dict[str, Any] = {"name": args.name, "kind": args.kind, "root": args.root,
                            "capacity": capacity_value(args.capacity)}
    if args.phase:
        spec["phase"] = args.phase
    if args.status:
        spec["status"] = args.status
    if args.attr:
        spec["attributes"] = parse_pairs(args.attr, "--attr")
    if args.backend:
        spec["config"] = parse_pairs(args.backend, "--set-config")
    if args.create_root:
        spec["create_root"] = True
    storage = client.add_storage(**spec)
    for warning in storage.pop("warnings", None) or ():
        print(f"dlm: warning: {warning}", file=sys.stderr)
    show_storage(args, storage)


def remove(args: argparse.Namespace, client: SyncClient) -> None:
    result = client.remove_storage(args.name)
    if wants_json(args):
        print_json(result)
        return
    history = ""
    if result["operations_removed"] or result["requests_removed"]:
        history = (f", with {result['operations_removed']} finished operation(s) and "
                   f"{result['requests_removed']} copy request(s) that named it")
    print(f"storage {result['name']!r} (id {result['id']}) removed{history}")


def ls(args: argparse.Namespace, client: SyncClient) -> None:
    storages = client.storages()
    if wants_json(args):
        print_json(storages)
        return
    print_table(
        ["NAME", "KIND", "PHASE", "STATUS", "CAPACITY", "USED", "FREE", "USE%", "REPLICAS",
         "ROOT"],
        ([s["name"], s["kind"], s["phase"], s["status"], human_size(s["capacity"]),
          human_size(s["used"]), human_size(s["free"]), percent(s["occupancy"]),
          s["replica_count"], s["root"]] for s in storages),
        right=("CAPACITY", "USED", "FREE", "USE%", "REPLICAS"),
    )


def show(args: argparse.Namespace, client: SyncClient) -> None:
    show_storage(args, client.storage(args.name))


def change(args: argparse.Namespace, client: SyncClient) -> None:
    changes: dict[str, Any] = {}
    if args.status:
        changes["status"] = args.status
    if args.capacity:
        changes["capacity"] = capacity_value(args.capacity)
    if args.phase:
        changes["phase"] = args.phase
    attributes = parse_pairs(args.attr, "--attr")
    attributes.update(dict.fromkeys(args.unset_attr or ()))  # null removes the key
    if attributes:
        changes["attributes"] = attributes
    if args.backend:
        changes["config"] = parse_pairs(args.backend, "--set-config")
    if not changes:
        raise CLIError("nothing to change: give --status, --capacity, --phase, --attr, "
                       "--unset-attr or --set-config", USAGE_ERROR)
    show_storage(args, client.patch_storage(args.name, **changes))


def percent(fraction: float | None) -> str:
    return "-" if fraction is None else f"{100 * fraction:.1f}%"


def show_storage(args: argparse.Namespace, storage: dict[str, Any]) -> None:
    if wants_json(args):
        print_json(storage)
        return
    print_fields([
        ("name", storage["name"]), ("id", storage.get("id")), ("kind", storage["kind"]),
        ("root", storage["root"]), ("phase", storage["phase"]), ("status", storage["status"]),
        ("capacity", human_size(storage["capacity"])), ("used", human_size(storage.get("used"))),
        ("free", human_size(storage.get("free"))),
        ("occupancy", percent(storage.get("occupancy"))),
        ("replicas", storage.get("replica_count")),
        ("attributes", storage.get("attributes") or None),
        ("config", storage.get("config") or None),
        ("created", human_time(storage.get("created"))),
    ])
