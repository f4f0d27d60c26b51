"""Sorting more values than an audit may hold: sorted runs in unlinked temporary files, merged.

Why: a payload manifest not written in the catalog's order (another tool's bag) is compared
with the catalog as sorted lines. Sorting every line in memory made such an audit's memory
grow with the bag (a million lines are ~100 MB). `SortedSpill` takes values a slice at a time,
sorts each RUN_ROWS of them in memory and writes them to a temporary file (created unlinked:
nothing is left behind, whatever happens to the process), then gives every value back in
sorted order, merging the runs a READ_ROWS slice of each at a time (`sorted`). `same_sequence`
compares two such streams position by position: two sorted streams are the same multiset
exactly when they are the same sequence.
"""

from __future__ import annotations

import tempfile
from typing import BinaryIO, Iterable, Iterator, List, Optional

import pyarrow as pa
import pyarrow.compute as pc

#: Values sorted in memory per run, and read back per slice of each run while merging.
RUN_ROWS = 65536
READ_ROWS = 4096


class SortedSpill:
    """Values of one Arrow type, added in any order (`add`), given back sorted (`sorted`)."""

    def __init__(self, kind: pa.DataType = pa.large_binary()):
        self._kind = kind
        self._schema = pa.schema([("v", kind)])
        self._pending: List[pa.Array] = []
        self._count = 0
        self._runs: List[BinaryIO] = []
        self.total = 0

    def add(self, values: pa.Array) -> None:
        if len(values):
            self._pending.append(values.cast(self._kind))
            self._count += len(values)
            self.total += len(values)
        if self._count >= RUN_ROWS:
            self._write_run()

    def _write_run(self) -> None:
        if not self._pending:
            return
        run = _sort(pa.concat_arrays(self._pending))
        self._pending, self._count = [], 0
        fh = tempfile.TemporaryFile(prefix=".strongroom-audit-sort-")
        with pa.ipc.new_stream(fh, self._schema) as writer:
            for offset in range(0, len(run), READ_ROWS):
                writer.write_batch(pa.record_batch([run.slice(offset, READ_ROWS)], schema=self._schema))
        fh.seek(0)
        self._runs.append(fh)

    @property
    def on_disk(self) -> bool:
        """True once a run was written to a temporary file."""
        return bool(self._runs)

    def sorted(self) -> Iterator[pa.Array]:
        """Every value added, in ascending order, a slice at a time (once)."""
        if not self._runs:   # everything fits in one run: no file at all
            if self._pending:
                yield _sort(pa.concat_arrays(self._pending))
            self._pending = []
            return
        self._write_run()
        readers = [pa.ipc.open_stream(fh) for fh in self._runs]
        heads = [(r, _next(r)) for r in readers]
        heads = [(r, cur) for r, cur in heads if cur is not None]
        try:
            while heads:
                frontier = min(cur[len(cur) - 1].as_py() for _, cur in heads)
                parts, kept = [], []
                for reader, cur in heads:
                    now = pc.less_equal(cur, pa.scalar(frontier, self._kind))
                    parts.append(cur.filter(now))
                    rest = cur.filter(pc.invert(now))
                    rest = rest if len(rest) else _next(reader)
                    if rest is not None:
                        kept.append((reader, rest))
                heads = kept
                yield _sort(pa.concat_arrays(parts))
        finally:
            self.close()

    def close(self) -> None:
        for fh in self._runs:
            fh.close()
        self._runs = []


def _next(reader) -> Optional[pa.Array]:
    try:
        return reader.read_next_batch().column(0)
    except StopIteration:
        return None


def _sort(values: pa.Array) -> pa.Array:
    return pc.take(values, pc.sort_indices(values))


def same_sequence(a: Iterable[pa.Array], b: Iterable[pa.Array]) -> bool:
    """True when two streams of slices hold the same values in the same order (slices may be
    cut anywhere)."""
    ia, ib = iter(a), iter(b)
    bufa = bufb = None
    while True:
        while (bufa is None or not len(bufa)) and ia is not None:
            bufa = next(ia, None)
            if bufa is None:
                ia = None
        while (bufb is None or not len(bufb)) and ib is not None:
            bufb = next(ib, None)
            if bufb is None:
                ib = None
        left, right = len(bufa) if bufa is not None else 0, len(bufb) if bufb is not None else 0
        if not left or not right:
            return not left and not right
        n = min(left, right)
        if not pc.all(pc.equal(bufa.slice(0, n), bufb.slice(0, n))).as_py():
            return False
        bufa, bufb = bufa.slice(n), bufb.slice(n)


__all__ = ["SortedSpill", "same_sequence", "RUN_ROWS", "READ_ROWS"]
