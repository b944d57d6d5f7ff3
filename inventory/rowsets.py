"""Sorted sets of row numbers kept as chunks of 4-byte ints: the listing indexes' storage.

Why not ``sortedcontainers.SortedList``: it keeps a pointer and an int object per entry (~36
bytes), and an index entry per replica at 10M replicas would cost 360 MB. A ``RowSet`` keeps
4 bytes per entry in ``array('i')`` chunks of at most ``2 * LOAD`` rows (about 5 bytes per
entry with the chunks' slack), with the same bisect-then-memmove insertion.

Bulk loads (``defer``/``settle``): a load at start adds rows in the database's order, not in
row order; inserting each would cost ~1 us apiece. Rows added while deferred are appended to an
unsorted buffer, and ``settle`` sorts everything once (numpy, in C).
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator

import numpy as np

LOAD = 1024  # a chunk splits in two when it reaches 2 * LOAD rows


class RowSet:
    """Distinct non-negative ints in ascending order, with O(log n) add and discard and
    iteration from any point (``after``)."""

    __slots__ = ("_chunks", "_len", "_maxes", "_pending")

    def __init__(self, rows: Iterable[int] = ()) -> None:
        self._chunks: list[array] = []
        self._maxes: list[int] = []  # the last (largest) row of each chunk
        self._len = 0
        self._pending: array | None = None  # rows added while deferred, unsorted
        rows = array("i", rows)
        if rows:
            self._pending = rows
            self.settle()

    # ---------------------------------------------------------------- bulk

    def defer(self) -> None:
        """Buffer the rows ``add`` is given until ``settle`` (a bulk load)."""
        if self._pending is None:
            self._pending = array("i")

    def settle(self) -> None:
        """Sort the buffered rows in (the whole set rebuilt once) and stop deferring."""
        pending, self._pending = self._pending, None
        if not pending:
            return
        parts = [np.frombuffer(c, dtype=np.int32) for c in self._chunks]
        parts.append(np.frombuffer(pending, dtype=np.int32))
        rows = np.unique(np.concatenate(parts))
        self._chunks = [array("i", rows[i:i + LOAD].tobytes())
                        for i in range(0, len(rows), LOAD)]
        self._maxes = [c[-1] for c in self._chunks]
        self._len = len(rows)

    # ---------------------------------------------------------------- one row

    def add(self, row: int) -> None:
        if self._pending is not None:
            self._pending.append(row)
            return
        maxes = self._maxes
        if not maxes:
            self._chunks.append(array("i", (row,)))
            maxes.append(row)
            self._len = 1
            return
        if row > maxes[-1]:  # the common case: a new item's row
            pos = len(maxes) - 1
            chunk = self._chunks[pos]
            chunk.append(row)
            maxes[pos] = row
        else:
            pos = bisect_left(maxes, row)
            chunk = self._chunks[pos]
            i = bisect_left(chunk, row)
            if chunk[i] == row:
                return
            chunk.insert(i, row)
        self._len += 1
        if len(chunk) >= 2 * LOAD:
            self._chunks[pos:pos + 1] = [chunk[:LOAD], chunk[LOAD:]]
            maxes[pos:pos + 1] = [chunk[LOAD - 1], chunk[-1]]

    def discard(self, row: int) -> None:
        if self._pending is not None:
            self.settle()
        maxes = self._maxes
        pos = bisect_left(maxes, row)
        if pos == len(maxes):
            return
        chunk = self._chunks[pos]
        i = bisect_left(chunk, row)
        if chunk[i] != row:
            return
        del chunk[i]
        self._len -= 1
        if not chunk:
            del self._chunks[pos], maxes[pos]
        elif i == len(chunk):
            maxes[pos] = chunk[-1]

    def __contains__(self, row: int) -> bool:
        if self._pending is not None:
            self.settle()
        pos = bisect_left(self._maxes, row)
        if pos == len(self._maxes):
            return False
        chunk = self._chunks[pos]
        return chunk[bisect_left(chunk, row)] == row

    def __len__(self) -> int:
        if self._pending is not None:
            self.settle()
        return self._len

    def nbytes(self) -> int:
        """Memory of the chunks (what the index costs)."""
        return sum(c.buffer_info()[1] * c.itemsize + 64 for c in self._chunks) + \
            8 * (2 * len(self._chunks))

    # ---------------------------------------------------------------- reading

    def after(self, row: int) -> Iterator[int]:
        """The rows greater than ``row``, ascending. Not to be kept across an await: the
        chunks change under it when the set does."""
        if self._pending is not None:
            self.settle()
        chunks = self._chunks
        pos = bisect_right(self._maxes, row)
        if pos == len(chunks):
            return
        chunk = chunks[pos]
        yield from chunk[bisect_right(chunk, row):]
        for later in range(pos + 1, len(chunks)):
            yield from chunks[later]

    def __iter__(self) -> Iterator[int]:
        return self.after(-1)
