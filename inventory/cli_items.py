"""``dlm ls``, ``dlm show``, ``dlm rm``, ``dlm access``: find items, look at one, mark one for
deletion, record reads of one. ITEM is an oid or an item name (its latest version)."""

from __future__ import annotations

import argparse
import itertools
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
    print_json_list,
    print_table,
    resolve_item,
    wants_json,
)
from inventory.client import SyncClient

PAGE = 1000  # items per request while following cursors: few round trips, bounded answers


def add_commands(subparsers: Any) -> None:
    p = add_parser(subparsers, "ls", help="list items matching filters")
    p.add_argument("name", nargs="?", help="an exact item name or a glob ('run42/*'; * matches /)")
    p.add_argument("--prefix", help="names starting with this")
    p.add_argument("--version", help="'latest' (default), 'all', or a number")
    p.add_argument("--state", choices=model.ITEM_STATES,
                   help="only items in this state (DELETED ones are hidden unless asked)")
    p.add_argument("--phase", choices=model.PHASES, help="current phase")
    p.add_argument("--target-phase", choices=model.PHASES)
    p.add_argument("--type", choices=model.ITEM_TYPES)
    p.add_argument("--storage", help="items with a replica on this storage")
    p.add_argument("--parent", metavar="OID", help="members of this container")
    p.add_argument("--expired-before", metavar="TIME", help="ISO-8601 time")
    p.add_argument("--meta", action="append", metavar="KEY=VALUE",
                   help="metadata equality (string compare); repeatable")
    p.add_argument("--limit", type=int, help="at most this many items (default: all)")
    p.set_defaults(func=client_command(ls))

    p = add_parser(subparsers, "show", help="one item with its replicas")
    p.add_argument("item", metavar="ITEM", help="an oid or an item name")
    p.add_argument("--version", type=int, help="this version of a name (default the latest)")
    p.set_defaults(func=client_command(show))

    p = add_parser(subparsers, "rm",
                   help="mark an item for deletion; Detox removes its payloads (operator)")
    p.add_argument("item", metavar="ITEM", help="an oid or an item name")
    p.add_argument("--version", type=int, help="this version of a name (default the latest)")
    p.set_defaults(func=client_command(rm))

    p = add_parser(subparsers, "access", help="record reads of an item (popularity)")
    p.add_argument("item", metavar="ITEM", help="an oid or an item name")
    p.add_argument("--count", type=int, default=1, help="how many reads (default 1)")
    p.add_argument("--at", metavar="TIME", help="when (ISO-8601; default now)")
    p.add_argument("--version", type=int, help="this version of a name (default the latest)")
    p.set_defaults(func=client_command(access))


def filters_of(args: argparse.Namespace) -> dict[str, Any]:
    """The ``ls`` flags as the query parameters of ``GET /v1/items``."""
    return {
        "name": args.name, "prefix": args.prefix, "version": args.version, "state": args.state,
        "phase": args.phase, "target_phase": args.target_phase, "type": args.type,
        "storage": args.storage, "parent": args.parent, "expired_before": args.expired_before,
        "metadata": parse_pairs(args.meta, "--meta", typed=False) or None,
    }


def ls(args: argparse.Namespace, client: SyncClient) -> None:
    if args.limit is not None and args.limit < 1:
        raise CLIError("--limit: expected a positive number", USAGE_ERROR)
    page = min(args.limit or PAGE, PAGE)
    items = itertools.islice(client.find_items(**filters_of(args), limit=page), args.limit)
    if wants_json(args):
        print_json_list(items)
        return
    print_table(
        ["NAME", "VER", "TYPE", "STATE", "PHASE", "TARGET", "SIZE", "COPIES", "EXPIRES", "OID"],
        ([i["item_name"], i["item_version"], i["item_type"], i["state"], i["current_phase"],
          i["target_phase"], human_size(i["size"]), complete_copies(i),
          human_time(i["expire_at"]), i["oid"]] for i in items),
        right=("VER", "SIZE", "COPIES"),
    )


def complete_copies(item: dict[str, Any]) -> int:
    return sum(r["state"] == "complete" for r in item.get("replicas", ()))


def show(args: argparse.Namespace, client: SyncClient) -> None:
    show_item(args, resolve_item(client, args.item, args.version))


def rm(args: argparse.Namespace, client: SyncClient) -> None:
    item = client.delete_item(resolve_item(client, args.item, args.version)["oid"])
    if wants_json(args):
        print_json(item)
        return
    after = ("it had no replica, so nothing is left to remove" if item["state"] == "DELETED"
             else "Detox removes its payloads")
    print(f"{item['item_name']} v{item['item_version']} ({item['oid']}) is now "
          f"{item['state']}; {after}")


def access(args: argparse.Namespace, client: SyncClient) -> None:
    if args.count < 1:
        raise CLIError("--count: expected a positive number", USAGE_ERROR)
    item = resolve_item(client, args.item, args.version)
    result = client.record_access(item["oid"], args.count, args.at)
    if wants_json(args):
        print_json(result)
        return
    print(f"{item['item_name']} v{item['item_version']}: {result['access_count']} accesses, "
          f"last at {human_time(result['last_access'])}")


def show_item(args: argparse.Namespace, item: dict[str, Any]) -> None:
    """One item for people: its fields, then its replicas as a table."""
    if wants_json(args):
        print_json(item)
        return
    checksum = item.get("checksum")
    if checksum and item.get("checksum_method"):
        checksum = f"{checksum} ({item['checksum_method']})"
    print_fields([
        ("oid", item["oid"]), ("name", item["item_name"]), ("version", item["item_version"]),
        ("type", item["item_type"]), ("parent", item.get("parent_oid")),
        ("state", item["state"]),
        ("phase", f"{item['current_phase']} (target {item['target_phase']})"),
        ("size", human_size(item["size"]) if item["size"] is None
         else f"{human_size(item['size'])} ({item['size']} bytes)"),
        ("checksum", checksum), ("metadata", item.get("metadata") or None),
        ("created", human_time(item.get("created"))),
        ("expires", human_time(item.get("expire_at"))),
        ("accesses", f"{item.get('access_count', 0)}, last "
                     f"{human_time(item.get('last_access'))}"),
        ("owner", item.get("owner")), ("group", item.get("group")),
        ("registered by", item.get("registered_by")),
    ])
    replicas = item.get("replicas") or []
    print()
    if not replicas:
        print("no replicas")
        return
    print_table(["STORAGE", "STATE", "SIZE", "VERIFIED", "URI"],
                ([r["storage"], r["state"], human_size(r["size"]),
                  human_time(r.get("last_verified")), r["uri"]] for r in replicas),
                right=("SIZE",))

