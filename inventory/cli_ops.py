"""``dlm copy``, ``dlm requests``, ``dlm ops``, ``dlm history``: ask for copies, and see what the
file operations and the Detox/Dealer/Consistency cycles did."""

from __future__ import annotations

import argparse
import itertools
from typing import Any

from inventory.cli import CLIError
from inventory.cli_common import (
    USAGE_ERROR,
    add_parser,
    client_command,
    human_size,
    human_time,
    print_fields,
    print_json,
    print_json_list,
    print_table,
    wants_json,
)
from inventory.cli_inject import bulk_send, count_records, open_source
from inventory.cli_ops_bulk import MAX_BATCH, OPERATIONS, read_operations
from inventory.client import SyncClient

REQUEST_STATES = ("pending", "done", "failed", "cancelled")
OPERATION_STATES = ("queued", "running", "done", "failed", "cancelled")
OPERATION_KINDS = ("copy", "delete")
CYCLE_KINDS = ("detox", "dealer", "consistency")


def add_commands(subparsers: Any) -> None:
    p = add_parser(subparsers, "copy",
                   help="ask for a copy of an item (or a container's members) on a storage")
    p.add_argument("item", metavar="ITEM", help="an oid or an item name")
    p.add_argument("storage", metavar="STORAGE")
    p.add_argument("--pin-until", metavar="TIME",
                   help="keep the copy there until this ISO-8601 time")
    p.add_argument("--comment", help="why, for the operators")
    p.set_defaults(func=client_command(copy))

    p = add_parser(subparsers, "requests", help="list copy requests, or cancel one",
                   description="List copy requests (`dlm requests`), or cancel one "
                               "(`dlm requests cancel ID`).")
    p.add_argument("--state", choices=REQUEST_STATES)
    p.add_argument("--storage")
    p.set_defaults(func=client_command(list_requests))
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    cancel = add_parser(actions, "cancel", help="cancel a pending copy request")
    cancel.add_argument("id", metavar="ID")
    cancel.set_defaults(func=client_command(cancel_request))

    p = add_parser(subparsers, "ops", help="list copy and delete operations, queue or cancel one",
                   description="List file operations (`dlm ops`), show one (`dlm ops show "
                               "ID`), queue one (`dlm ops queue copy|delete ITEM STORAGE`), or "
                               "cancel a queued one (`dlm ops cancel ID`).")
    p.add_argument("--state", choices=OPERATION_STATES)
    p.add_argument("--kind", choices=OPERATION_KINDS)
    p.add_argument("--storage", help="operations from or to this storage")
    p.add_argument("--limit", type=int, help="at most this many (default: all)")
    p.set_defaults(func=client_command(ops))
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    queue = add_parser(actions, "queue",
                       help="copy an item to a storage, or delete it from one, now (operator); "
                            "many from a file with --from",
                       description="Queue one operation (`dlm ops queue copy ITEM STORAGE`), or "
                                   "many from JSON lines or CSV (`dlm ops queue --from FILE`: "
                                   "fields kind, item, target, source; KIND and --source are "
                                   "defaults for records without them), in batches of one "
                                   "transaction each.")
    queue.add_argument("op_kind", metavar="KIND", nargs="?", help="copy or delete")
    queue.add_argument("item", metavar="ITEM", nargs="?", help="an oid or an item name")
    queue.add_argument("target", metavar="STORAGE", nargs="?",
                       help="where to copy to, or delete from")
    queue.add_argument("--source", help="the storage whose replica a copy reads")
    bulk = queue.add_argument_group("bulk")
    bulk.add_argument("--from", dest="from_file", metavar="FILE",
                      help="JSON lines or CSV with a header; '-' reads stdin")
    bulk.add_argument("--format", choices=("jsonl", "csv"),
                      help="default: from the file's suffix, else from its first line")
    bulk.add_argument("--batch-size", type=int, default=MAX_BATCH, metavar="N",
                      help=f"operations per transaction, at most {MAX_BATCH:,}")
    bulk.add_argument("--start-line", type=int, default=1, metavar="N",
                      help="skip records before line N (to resume after an error)")
    bulk.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    queue.set_defaults(func=client_command(queue_operation))
    cancel = add_parser(actions, "cancel", help="cancel a queued operation (operator)")
    cancel.add_argument("id", metavar="ID")
    cancel.set_defaults(func=client_command(cancel_operation))
    show = add_parser(actions, "show", help="one operation, live or finished")
    show.add_argument("id", metavar="ID")
    show.set_defaults(func=client_command(show_operation))

    p = add_parser(subparsers, "history",
                   help="Detox, Dealer and Consistency cycles, or one cycle in full")
    p.add_argument("id", nargs="?", metavar="ID", help="show this cycle with its policy")
    p.add_argument("--kind", choices=CYCLE_KINDS)
    p.set_defaults(func=client_command(history))


def copy(args: argparse.Namespace, client: SyncClient) -> None:
    request = client.add_request(args.item, args.storage, pin_until=args.pin_until,
                                 comment=args.comment)
    if wants_json(args):
        print_json(request)
        return
    pinned = f", pinned until {human_time(request['pin_until'])}" if request.get("pin_until") \
        else ""
    print(f"request {request['id']}: {request['item_name']} to {request['storage']}, "
          f"{request['state']}{pinned}")


def list_requests(args: argparse.Namespace, client: SyncClient) -> None:
    requests = client.requests(state=args.state, storage=args.storage)
    if wants_json(args):
        print_json(requests)
        return
    print_table(["ID", "ITEM", "STORAGE", "STATE", "PIN UNTIL", "REQUESTER", "CREATED",
                 "COMMENT"],
                ([r["id"], r["item_name"], r["storage"], r["state"], human_time(r["pin_until"]),
                  r.get("requester"), human_time(r["created"]), r.get("comment")]
                 for r in requests),
                right=("ID",))


def cancel_request(args: argparse.Namespace, client: SyncClient) -> None:
    client.cancel_request(args.id)
    if wants_json(args):
        print_json({"id": args.id, "state": "cancelled"})
        return
    print(f"request {args.id} cancelled")


def ops(args: argparse.Namespace, client: SyncClient) -> None:
    if args.limit is not None and args.limit < 1:
        raise CLIError("--limit: expected a positive number", USAGE_ERROR)
    operations = itertools.islice(
        client.operations(state=args.state, kind=args.kind, storage=args.storage), args.limit)
    if wants_json(args):
        print_json_list(operations)
        return
    print_table(["ID", "KIND", "ITEM", "SOURCE", "TARGET", "ORIGIN", "STATE", "TRIES",
                 "UPDATED", "LAST ERROR"],
                ([o["id"], o["kind"], o["item_name"], o.get("source"), o.get("target"),
                  o.get("origin"), o["state"], o.get("attempts"), human_time(o.get("updated")),
                  o.get("last_error")] for o in operations),
                right=("ID", "TRIES"))


def queue_operation(args: argparse.Namespace, client: SyncClient) -> None:
    if args.op_kind is not None and args.op_kind not in OPERATION_KINDS:
        raise CLIError(f"KIND: expected copy or delete, not {args.op_kind!r}", USAGE_ERROR)
    if args.from_file is not None:
        queue_from_file(args, client)
        return
    if args.target is None:
        raise CLIError("give KIND ITEM STORAGE, or --from FILE for many operations",
                       USAGE_ERROR)
    op = client.add_operation(args.op_kind, args.item, args.target, source=args.source)
    if wants_json(args):
        print_json(op)
        return
    where = f"{op['source']} to {op['target']}" if op["kind"] == "copy" and op.get("source") \
        else op["target"]
    print(f"operation {op['id']}: {op['kind']} {op['item_name']} {where}, {op['state']}")


def queue_from_file(args: argparse.Namespace, client: SyncClient) -> None:
    if args.item is not None:
        raise CLIError("--from FILE names the items: give no ITEM or STORAGE", USAGE_ERROR)
    if not 1 <= args.batch_size <= MAX_BATCH:
        raise CLIError(f"--batch-size: expected 1 to {MAX_BATCH:,}", USAGE_ERROR)
    defaults = {k: v for k, v in (("kind", args.op_kind), ("source", args.source)) if v}
    with open_source(args.from_file) as stream:
        records = read_operations(stream, args.from_file, args.format)
        records = (r for r in records if r[0] >= args.start_line)
        queued = bulk_send(OPERATIONS, client, records, defaults, source=args.from_file,
                           batch_size=args.batch_size,
                           total=count_records(args.from_file, args.start_line),
                           progress=not args.no_progress)
        if wants_json(args):
            print_json_list(queued)
        else:
            print(f"queued {sum(1 for _ in queued):,} operations from {args.from_file}")


def show_operation(args: argparse.Namespace, client: SyncClient) -> None:
    op = client.operation(args.id)
    if wants_json(args):
        print_json(op)
        return
    print_fields([("id", op["id"]), ("kind", op["kind"]), ("item", op["item_name"]),
                  ("oid", op["oid"]), ("source", op.get("source")), ("target", op["target"]),
                  ("origin", op["origin"]), ("state", op["state"]),
                  ("attempts", op["attempts"]), ("last error", op.get("last_error")),
                  ("created", human_time(op["created"])),
                  ("updated", human_time(op["updated"]))])


def cancel_operation(args: argparse.Namespace, client: SyncClient) -> None:
    op = client.cancel_operation(args.id)
    if wants_json(args):
        print_json(op)
        return
    print(f"operation {op['id']} {op['state']}")


def history(args: argparse.Namespace, client: SyncClient) -> None:
    if args.id is not None:
        cycle = client.cycle(args.id)
        if wants_json(args):
            print_json(cycle)
            return
        print_fields([("id", cycle["id"]), ("kind", cycle["kind"]),
                      ("started", human_time(cycle.get("started"))),
                      ("ended", human_time(cycle.get("ended"))),
                      ("summary", cycle_summary(cycle["kind"], cycle.get("summary")))])
        if cycle.get("policy"):
            print()
            print(cycle["policy"].rstrip("\n"))
        return
    cycles = client.history(kind=args.kind)
    if wants_json(args):
        print_json(cycles)
        return
    print_table(["ID", "KIND", "STARTED", "ENDED", "SUMMARY"],
                ([c["id"], c["kind"], human_time(c.get("started")), human_time(c.get("ended")),
                  cycle_summary(c["kind"], c.get("summary"))] for c in cycles),
                right=("ID",))


# The keys that identify each kind's summary (Detox and Dealer plans, consistency reports).
_KNOWN_KEYS = {"detox": {"deletions", "expirations", "applied"},
               "dealer": {"copies", "requests_done", "applied"},
               "consistency": {"counts", "storage"}}


def cycle_summary(kind: str, summary: Any) -> str:
    """One line of what a cycle did, for people: the counts an operator looks for first (the
    whole summary, per storage and per rule, is in ``--json``). What the server applied when it
    says so, else what was planned; ``-`` while a cycle runs."""
    if not isinstance(summary, dict) or not summary:
        return "-"
    if not set(summary) & _KNOWN_KEYS.get(kind, set()):  # a shape this client does not know
        return ", ".join(f"{k}={v}" for k, v in summary.items()
                         if isinstance(v, int | float | str) and not isinstance(v, bool)) or "-"
    if kind == "consistency":
        return _consistency_line(summary)
    applied = summary.get("applied") if isinstance(summary.get("applied"), dict) else None
    done = applied or summary
    parts = []
    if kind == "detox":
        parts.append(f"{_count(done, 'deletions')} deletions "
                     f"({human_size(_count(done, 'deleted_bytes'))}), "
                     f"{_count(done, 'expirations')} expirations")
        unsatisfied = summary.get("unsatisfied") or []
        if unsatisfied:
            parts.append(f"unsatisfied: {', '.join(map(str, unsatisfied))}")
    else:
        parts.append(f"{_count(done, 'copies')} copies ({human_size(_count(done, 'bytes'))}), "
                     f"{_count(done, 'requests_done')} requests done")
        unmet = summary.get("unmet")
        if isinstance(unmet, dict) and unmet:
            parts.append(f"{sum(v for v in unmet.values() if isinstance(v, int))} unmet")
    dropped = summary.get("dropped")
    if isinstance(dropped, dict) and any(dropped.values()):
        parts.append(f"{sum(v for v in dropped.values() if isinstance(v, int))} dropped at "
                     f"apply")
    if applied is None:
        parts.append("not applied")
    policy = summary.get("policy")
    head = f"{policy['name']}: " if isinstance(policy, dict) and policy.get("name") else ""
    return head + "; ".join(parts)


def _consistency_line(summary: dict[str, Any]) -> str:
    storage = summary.get("storage")
    name = storage.get("name") if isinstance(storage, dict) else None
    counts = summary.get("counts") if isinstance(summary.get("counts"), dict) else {}
    found = [f"{_count(counts.get(kind), 'count')} {kind}"
             for kind in ("ok", "missing", "orphan", "size_mismatch", "checksum_mismatch")
             if kind == "ok" or _count(counts.get(kind), "count")]
    parts = [", ".join(found)]
    if summary.get("safety"):
        parts.append("safety limit held, nothing fixed")
    fix = summary.get("fix")
    if isinstance(fix, dict):
        applied = fix.get("applied") if isinstance(fix.get("applied"), dict) else {}
        parts.append(f"fixed: {_count(applied, 'recopies')} re-copies, "
                     f"{_count(fix, 'orphans_deleted')} orphans deleted")
    return (f"{name}: " if name else "") + "; ".join(parts)


def _count(entry: Any, key: str) -> int:
    value = entry.get(key) if isinstance(entry, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
