"""``dlm ops queue --from FILE``: queue many copies and deletions from JSON lines or CSV.

One request per operation cost 20-43 s for 1,000 of them while copies ran (issue 25); here they
go in batches of up to 10,000, each one transaction on the server (``POST /v1/operations`` with
a list), with the progress bar and the line-numbered errors of ``dlm inject --from``, whose file
reading this reuses. A record has ``kind`` (copy or delete), ``item`` (an oid or a name),
``target`` and optionally ``source``; the command's ``KIND`` and ``--source`` fill in what a
record leaves out.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from typing import Any

from inventory.cli import CLIError
from inventory.cli_common import USAGE_ERROR
from inventory.cli_inject import BulkKind, lines_and_format

MAX_BATCH = 10_000  # the server's limit for one POST /v1/operations
FIELDS = ("kind", "item", "target", "source")

Record = tuple[int, dict[str, Any]]  # (line number in the file, operation spec)


def read_operations(stream: Iterable[bytes], source: str, fmt: str | None) -> Iterator[Record]:
    """Operation specs with their line numbers, from JSON lines or CSV (told, or guessed from
    the suffix, else from the first line: ``{`` is JSON)."""
    lines, fmt = lines_and_format(stream, source, fmt)
    return _json_lines(lines, source) if fmt == "jsonl" else _csv_lines(lines, source)


def _json_lines(lines: Iterable[str], source: str) -> Iterator[Record]:
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise CLIError(f"{source} line {number}: not valid JSON: {exc}", USAGE_ERROR) \
                from None
        if not isinstance(record, dict):
            raise CLIError(f"{source} line {number}: expected a JSON object with item and "
                           f"target", USAGE_ERROR)
        yield number, record


def _csv_lines(lines: Iterable[str], source: str) -> Iterator[Record]:
    """CSV rows as specs: the header names the fields (kind, item, target, source); an empty
    cell is left out, so the command's defaults apply to it."""
    reader = csv.reader(lines)
    try:
        header = next(reader, None)
        if header is None:
            return
        header = [h.strip() for h in header]
        unknown = [h for h in header if h not in FIELDS]
        if unknown or "item" not in header:
            raise CLIError(f"{source} line 1: the header names the fields, among "
                           f"{', '.join(FIELDS)}, item included (it has: {', '.join(header)})",
                           USAGE_ERROR)
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise CLIError(f"{source} line {reader.line_num}: {len(row)} fields, the "
                               f"header has {len(header)}", USAGE_ERROR)
            yield reader.line_num, {k: v for k, v in zip(header, row, strict=True) if v != ""}
    except csv.Error as exc:
        raise CLIError(f"{source} line {reader.line_num}: not valid CSV: {exc}", USAGE_ERROR) \
            from None


def with_defaults(record: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    return {**defaults, **record} if defaults else record


OPERATIONS = BulkKind(lambda client, specs: client.add_operations(specs), with_defaults,
                      "operations", "operations", " ops", "queue", "queued")
