"""``dlm inject``: register one item from flags, or many from a file of JSON lines or CSV.

Bulk files go in batches of up to 10,000 items, each one transaction on the server, with a
progress bar on stderr. Every record keeps the line it came from, so an error the server reports
for ``items[3].size`` of a batch is shown as the file's line, and what was registered before it is
said plainly (batches before the failing one are committed; rerun with ``--start-line``).
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from tqdm import tqdm

from inventory import model
from inventory.cli import CLIError
from inventory.cli_common import (
    SERVER_ERROR,
    USAGE_ERROR,
    add_parser,
    client_command,
    describe,
    parse_pairs,
    print_json_list,
    wants_json,
)
from inventory.cli_items import show_item
from inventory.client import ServerUnreachable, SyncClient
from inventory.errors import DLMError, NotFound

MAX_BATCH = 10_000  # the server's limit for one POST /v1/items
INT_COLUMNS = frozenset({"item_version", "size"})
NUMBER_COLUMNS = frozenset({"lifetime"})
JSON_COLUMNS = frozenset({"metadata"})

Record = tuple[int, dict[str, Any]]  # (line number in the file, item spec)


def add_commands(subparsers: Any) -> None:
    p = add_parser(subparsers, "inject",
                   help="register items: one from flags, or many from a JSON-lines or CSV file",
                   description="Register one item from flags, or many with --from FILE (JSON "
                               "lines, or CSV with a header naming the fields). With --from, "
                               "the item flags (--storage, --lifetime, --owner...) are "
                               "defaults for records that do not set them.")
    p.add_argument("name", nargs="?", metavar="ITEM_NAME",
                   help="the item's name: a relative path such as obs/scan-1.ms")
    bulk = p.add_argument_group("bulk")
    bulk.add_argument("--from", dest="source", metavar="FILE",
                      help="JSON lines or CSV with a header; '-' reads stdin")
    bulk.add_argument("--format", choices=("jsonl", "csv"),
                      help="default: from the file's suffix, else from its first line")
    bulk.add_argument("--batch-size", type=int, default=MAX_BATCH, metavar="N",
                      help=f"items per transaction, at most {MAX_BATCH:,}")
    bulk.add_argument("--start-line", type=int, default=1, metavar="N",
                      help="skip records before line N (to resume after an error)")
    bulk.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    item = p.add_argument_group("item fields")
    item.add_argument("--storage", help="one-call ingest: the item is READY with a complete "
                                        "replica there")
    item.add_argument("--uri", help="where on the storage, relative to its root or absolute "
                                    "under it (default: root + item name, + @vN for "
                                    "version N >= 2)")
    item.add_argument("--size", type=int,
                      help="bytes; with --storage it must match the payload's, and by default "
                           "is read from the storage (required only on a storage with "
                           "verify_ingest off)")
    item.add_argument("--checksum", help="adler32, 1-8 hex digits")
    item.add_argument("--checksum-method", help="adler32 (the default; the only one accepted)")
    item.add_argument("--verify", choices=("size", "checksum"),
                      help="with --storage, what the server checks on the payload before it "
                           "registers anything: its size (default), or also its adler32, "
                           "read from the whole file (recorded when --checksum is not given)")
    item.add_argument("--version", type=int, dest="item_version", metavar="N",
                      help="default: the name's latest version + 1")
    item.add_argument("--type", dest="item_type", choices=model.ITEM_TYPES)
    item.add_argument("--parent", dest="parent_oid", metavar="OID", help="a container's oid")
    item.add_argument("--meta", action="append", metavar="KEY=VALUE",
                      help="a metadata entry (JSON scalars keep their type); repeatable")
    item.add_argument("--metadata", metavar="JSON", help="the metadata object as JSON")
    item.add_argument("--target-phase", choices=model.PHASES, help="default SOLID")
    expiry = item.add_mutually_exclusive_group()
    expiry.add_argument("--expire-at", metavar="TIME", help="ISO-8601 time")
    expiry.add_argument("--lifetime", type=float, metavar="SECONDS")
    item.add_argument("--owner")
    item.add_argument("--group")
    p.set_defaults(func=client_command(inject))


def fields_of(args: argparse.Namespace) -> dict[str, Any]:
    """The item flags that were given, as ItemSpec fields."""
    fields: dict[str, Any] = {
        key: getattr(args, key) for key in (
            "storage", "uri", "size", "checksum", "checksum_method", "item_version",
            "item_type", "parent_oid", "target_phase", "expire_at", "owner", "group", "verify")
        if getattr(args, key) is not None
    }
    if args.lifetime is not None:
        fields["lifetime"] = int(args.lifetime) if args.lifetime.is_integer() else args.lifetime
    metadata: dict[str, Any] = {}
    if args.metadata is not None:
        try:
            metadata = json.loads(args.metadata)
        except ValueError as exc:
            raise CLIError(f"--metadata: not valid JSON: {exc}", USAGE_ERROR) from None
        if not isinstance(metadata, dict):
            raise CLIError("--metadata: expected a JSON object", USAGE_ERROR)
    metadata.update(parse_pairs(args.meta, "--meta"))
    if metadata:
        fields["metadata"] = metadata
    return fields


def inject(args: argparse.Namespace, client: SyncClient) -> None:
    if (args.name is None) == (args.source is None):
        raise CLIError("give an ITEM_NAME, or --from FILE for many items", USAGE_ERROR)
    fields = fields_of(args)
    if args.storage:
        check_storage(client, args.storage)
    if args.name is not None:
        show_item(args, client.add_item(item_name=args.name, **fields))
        return
    if "uri" in fields:
        raise CLIError("--uri names one item's location; put a uri column in the file",
                       USAGE_ERROR)
    if not 1 <= args.batch_size <= MAX_BATCH:
        raise CLIError(f"--batch-size: expected 1 to {MAX_BATCH:,}", USAGE_ERROR)
    with open_source(args.source) as stream:
        records = read_records(stream, args.source, args.format)
        records = (r for r in records if r[0] >= args.start_line)
        total = count_records(args.source, args.start_line)
        answers = bulk_send(ITEMS, client, records, fields, source=args.source,
                              batch_size=args.batch_size, total=total,
                              progress=not args.no_progress)
        if wants_json(args):
            print_json_list(answers)
        else:
            count = sum(1 for _ in answers)
            print(f"registered {count:,} items from {args.source}")


def check_storage(client: SyncClient, name: str) -> None:
    """Fail before sending anything when --storage names no storage, with a hint."""
    try:
        client.storage(name)
    except NotFound:
        raise CLIError(f"unknown storage {name!r} (`dlm storage ls` lists them)",
                       SERVER_ERROR) from None


# ------------------------------------------------------------------------------ reading

def open_source(source: str) -> BinaryIO:
    """The file as bytes: lines are decoded one by one, so a byte that is not UTF-8 is reported
    at its own line (a text stream decodes ahead in blocks and would blame an earlier one)."""
    if source == "-":
        return sys.stdin.buffer
    try:
        return open(source, "rb")
    except OSError as exc:
        raise CLIError(f"cannot read {source}: {exc.strerror}", USAGE_ERROR) from None


def count_records(source: str, start_line: int) -> int | None:
    """Lines in the file, for the progress bar's total: one fast pass over the bytes (a second
    read of a file the page cache now holds); unknown for stdin."""
    if source == "-":
        return None
    lines = 0
    last = b"\n"
    with open(source, "rb") as f:
        while chunk := f.read(1 << 20):
            lines += chunk.count(b"\n")
            last = chunk[-1:]
    if last != b"\n":
        lines += 1
    return max(lines - max(start_line - 1, 0), 0)


def read_records(stream: BinaryIO, source: str, fmt: str | None) -> Iterator[Record]:
    """Item specs with their line numbers, from JSON lines or CSV (told, or guessed from the
    suffix, else from the first non-blank character: ``{`` is JSON)."""
    lines, fmt = lines_and_format(stream, source, fmt)
    return json_records(lines, source) if fmt == "jsonl" else csv_records(lines, source)


def lines_and_format(stream: Iterable[bytes], source: str, fmt: str | None
                     ) -> tuple[Iterator[str], str]:
    """A bulk file's decoded lines and its format, ``jsonl`` or ``csv``: as told, else from the
    suffix, else from the first line (``{`` is JSON). ``dlm inject`` and ``dlm ops queue``."""
    lines = decoded(stream, source)
    if fmt is None:
        suffix = Path(source).suffix.lower()
        if suffix == ".csv":
            fmt = "csv"
        elif suffix in (".jsonl", ".ndjson", ".json"):
            fmt = "jsonl"
        else:
            head = list(itertools.islice(lines, 1))
            fmt = "jsonl" if head and head[0].lstrip().startswith("{") else "csv"
            lines = itertools.chain(head, lines)
    return lines, fmt


def decoded(stream: Iterable[bytes], source: str) -> Iterator[str]:
    """UTF-8 lines (a byte-order mark at the start, as spreadsheets write, is dropped)."""
    for number, raw in enumerate(stream, 1):
        try:
            yield raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as exc:
            raise CLIError(f"{source} line {number}: not UTF-8 text ({exc.reason} at byte "
                           f"{exc.start + 1})", USAGE_ERROR) from None


def json_records(lines: Iterable[str], source: str) -> Iterator[Record]:
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise CLIError(f"{source} line {number}: not valid JSON: {exc}", USAGE_ERROR) \
                from None
        if not isinstance(record, dict):
            raise CLIError(f"{source} line {number}: expected a JSON object with item_name",
                           USAGE_ERROR)
        yield number, record


def csv_records(lines: Iterable[str], source: str) -> Iterator[Record]:
    """CSV rows as item specs: the header names ItemSpec fields; ``meta.KEY`` columns become
    metadata entries; empty cells are left out; numbers and the metadata JSON are converted
    here, so a bad cell is reported with its line before anything is sent."""
    reader = csv.reader(lines)
    try:
        yield from _csv_rows(reader, source)
    except csv.Error as exc:  # a NUL byte, an unclosed quote at the end, a huge field
        raise CLIError(f"{source} line {reader.line_num}: not valid CSV: {exc}", USAGE_ERROR) \
            from None


def _csv_rows(reader: Any, source: str) -> Iterator[Record]:
    header = next(reader, None)
    if header is None:
        return
    header = [h.strip() for h in header]
    if "item_name" not in header:
        raise CLIError(f"{source} line 1: the header has no item_name column "
                       f"(it has: {', '.join(header)})", USAGE_ERROR)
    for row in reader:
        number = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise CLIError(f"{source} line {number}: {len(row)} fields, the header has "
                           f"{len(header)}", USAGE_ERROR)
        record: dict[str, Any] = {}
        for column, text in zip(header, row, strict=True):
            if text == "":
                continue
            try:
                convert_cell(record, column, text)
            except ValueError as exc:
                raise CLIError(f"{source} line {number}: {column}: {exc}", USAGE_ERROR) \
                    from None
        yield number, record


def convert_cell(record: dict[str, Any], column: str, text: str) -> None:
    if column.startswith("meta."):
        record.setdefault("metadata", {})[column[5:]] = text
    elif column in INT_COLUMNS:
        try:
            record[column] = int(text)
        except ValueError:
            raise ValueError(f"expected an integer, got {text!r}") from None
    elif column in NUMBER_COLUMNS:
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"expected a number, got {text!r}") from None
        record[column] = int(value) if value.is_integer() else value
    elif column in JSON_COLUMNS:
        try:
            value = json.loads(text)
        except ValueError:
            raise ValueError(f"expected a JSON object, got {text!r}") from None
        if not isinstance(value, dict):
            raise ValueError(f"expected a JSON object, got {text!r}")
        record.setdefault(column, {}).update(value)
    else:
        record[column] = text


# ------------------------------------------------------------------------------ sending

def with_defaults(record: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """The record over the flag defaults; a record's own expiry replaces both default forms."""
    if not defaults:
        return record
    base = dict(defaults)
    if "expire_at" in record or "lifetime" in record:
        base.pop("expire_at", None)
        base.pop("lifetime", None)
    if "metadata" in base and "metadata" in record:
        record = {**record, "metadata": {**base["metadata"], **record["metadata"]}}
    return {**base, **record}


@dataclass(frozen=True, slots=True)
class BulkKind:
    """What a bulk command sends and how it words progress and errors: ``dlm inject --from``
    (items) and ``dlm ops queue --from`` (operations) share everything else."""

    send: Callable[[SyncClient, Iterable[dict[str, Any]]], list[dict[str, Any]]]
    merge: Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]]  # record over defaults
    root: str  # the list's name in the server's error fields: items[3].size
    noun: str  # what the records are, plural
    unit: str  # the progress bar's unit
    desc: str  # the progress bar's label
    verb: str  # what the server did to them: registered, queued


def bulk_send(kind: BulkKind, client: SyncClient, records: Iterable[Record],
              defaults: dict[str, Any], *, source: str, batch_size: int, total: int | None,
              progress: bool) -> Iterator[dict[str, Any]]:
    """Send the records in batches, yielding the server's answer for each as its batch
    commits. A generator, so ``--json`` output streams."""
    done = 0
    bar = tqdm(total=total, unit=kind.unit, file=sys.stderr, disable=not progress,
               desc=kind.desc, dynamic_ncols=True)
    try:
        for batch in batched(records, batch_size):
            try:
                answers = kind.send(client, (kind.merge(r, defaults) for _, r in batch))
            except ServerUnreachable as exc:
                if not done:
                    raise
                raise CLIError(f"{exc.message}; the {kind.noun} before {source} line "
                               f"{batch[0][0]} ({done:,}) are {kind.verb}", SERVER_ERROR
                               ) from None
            except DLMError as exc:
                raise CLIError(batch_error(kind, exc, batch, source, done),
                               SERVER_ERROR) from None
            done += len(answers)
            bar.update(len(answers))
            yield from answers
        if bar.total is not None and bar.n != bar.total:
            bar.total = bar.n  # blank lines and multi-line CSV cells made the estimate high
            bar.refresh()
    except BaseException:
        bar.leave = False  # erase it, so the error is the one line left on the terminal
        raise
    finally:
        bar.close()


def batch_error(kind: BulkKind, exc: DLMError, batch: tuple[Record, ...], source: str,
                done: int) -> str:
    """The server's error about ``items[i].field`` (``operations[i]``...) of a batch, as the
    file's line and field."""
    first = batch[0][0]
    match = re.match(rf"^(?:{kind.root}|\$)\[(\d+)\]\.?(.*)$", exc.field or "")
    if match and int(match.group(1)) < len(batch):
        where = f"{source} line {batch[int(match.group(1))][0]}"
        text = f"{where}: {describe(exc, match.group(2) or None)}"
    else:
        text = f"{source} lines {first}-{batch[-1][0]}: {describe(exc)}"
    if done:
        return (f"{text}; nothing from line {first} on was {kind.verb}, the {done:,} "
                f"{kind.noun} before it were (fix the file, then rerun with --start-line "
                f"{first})")
    if f"nothing was {kind.verb}" in text:  # the server's words say it already
        return text
    return f"{text}; nothing was {kind.verb}"


ITEMS = BulkKind(lambda client, specs: client.add_items(specs), with_defaults, "items",
                 "items", " items", "inject", "registered")


def batched(records: Iterable[Record], size: int) -> Iterator[tuple[Record, ...]]:
    """``itertools.batched``, which Python 3.11 lacks."""
    it = iter(records)
    while batch := tuple(itertools.islice(it, size)):
        yield batch
