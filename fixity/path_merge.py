"""Which paths two streams of unique paths do not share, merged a slice at a time.

Why: a deep audit must tell which of a bag's catalog rows are not stored on a copy (missing)
and which stored payload files the catalog does not hold (extra). Holding both path sets whole
made the audit's memory grow with the bag's file count (issues 11, 16). Strongroom writes the
catalog's rows sorted by path, and a target lists in (nearly) that order, so the two streams
are merged like sorted lists, with Arrow doing the work a slice at a time: everything up to the
smaller of the two slices' last paths (the frontier) is compared now, the rest waits for the
next slice. Memory is then about two slices, whatever the bag's size.

Exact for any order, not only sorted input: a path the merge could not pair (because an input
was out of order there, or it truly is on one side only) is kept aside as unmatched, and at
the end a path kept aside on both sides is paired after all. Each side lists a path at most
once (catalog paths are unique per bag, stored names per copy), so a path on both sides is
either paired on the way or kept aside on both, never lost: `only_left` and `only_right` are
exactly the set differences. Out-of-order input costs the paths kept aside, never a wrong
verdict; a slice found out of order is kept aside whole, so the merge always advances a whole
slice per step. Many paths kept aside go to sorted runs in temporary files
(`external_sort.SortedSpill`) and are paired at the end by the same merge of the two sorted
streams, so even a listing in no order at all is compared in bounded memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator, List, Tuple

import pyarrow as pa
import pyarrow.compute as pc

from .external_sort import SortedSpill

_EMPTY = pa.array([], pa.string())


@dataclass
class Unshared:
    """The outcome of `unshared`: the paths on one side only, each sorted, and whether either
    input was found out of order (it then held more paths aside, nothing else)."""

    only_left: pa.Array
    only_right: pa.Array
    out_of_order: bool = False


class _Side:
    """One input: the paths not yet compared (a slice) and those kept aside (in memory, or in
    sorted runs on disk once there are many: `external_sort.SortedSpill`)."""

    def __init__(self, slices: Iterable[pa.Array], spill: bool):
        self._slices: Iterator[pa.Array] = iter(slices)
        self.pending: pa.Array = _EMPTY
        self.done = False
        self.aside: List[pa.Array] = []
        self.spill = SortedSpill(pa.string()) if spill else None

    def top_up(self) -> None:
        while not len(self.pending) and not self.done:
            try:
                nxt = next(self._slices)
            except StopIteration:
                self.done = True
                return
            self.pending = nxt.combine_chunks() if isinstance(nxt, pa.ChunkedArray) else nxt

    def last(self) -> str:
        return self.pending[len(self.pending) - 1].as_py()

    def keep_aside(self, paths: pa.Array) -> None:
        if len(paths):
            (self.aside.append(paths) if self.spill is None else self.spill.add(paths))


def unshared(left: Iterable[pa.Array], right: Iterable[pa.Array], spill: bool = True) -> Unshared:
    """The paths of `left` not in `right` and of `right` not in `left` (string arrays, each
    side's paths unique, given as slices in any order; sorted input keeps memory at a slice).

    The paths kept aside go to sorted runs on disk once there are many (`spill`): pairing them
    is then a merge of the two sorted streams, whose own paths kept aside are only the
    unshared ones (held, as the answer is)."""
    a, b = _Side(left, spill), _Side(right, spill)
    out_of_order = False
    while True:
        a.top_up()
        b.top_up()
        if not len(a.pending) or not len(b.pending):   # one side is exhausted: the rest is unpaired
            a.keep_aside(a.pending)
            b.keep_aside(b.pending)
            a.pending = b.pending = _EMPTY
            if a.done and b.done:
                break
            continue
        la, lb = a.last(), b.last()
        frontier = min(la, lb)
        parts = []
        for side in (a, b):
            now = pc.less_equal(side.pending, frontier)
            parts.append(side.pending.filter(now))
            side.pending = side.pending.filter(pc.invert(now))
        pa_, pb_ = parts
        a.keep_aside(pa_.filter(pc.invert(pc.is_in(pa_, value_set=pb_))))
        b.keep_aside(pb_.filter(pc.invert(pc.is_in(pb_, value_set=pa_))))
        for side, last in ((a, la), (b, lb)):
            if last == frontier and len(side.pending):   # paths after this slice's last: out of order
                out_of_order = True
                side.keep_aside(side.pending)
                side.pending = _EMPTY
    if a.spill is not None and b.spill is not None:
        if a.spill.on_disk or b.spill.on_disk:
            paired = unshared(a.spill.sorted(), b.spill.sorted(), spill=False)
            return Unshared(paired.only_left, paired.only_right, out_of_order)
        a.aside, b.aside = list(a.spill.sorted()), list(b.spill.sorted())
    only_left, only_right = _pair_aside(_concat(a.aside), _concat(b.aside))
    return Unshared(pc.take(only_left, pc.sort_indices(only_left)), pc.take(only_right, pc.sort_indices(only_right)),
                    out_of_order)


def _pair_aside(left: pa.Array, right: pa.Array) -> Tuple[pa.Array, pa.Array]:
    """The paths kept aside on one side that are not kept aside on the other: a path kept
    aside on both sides was on both, only out of order (see the module docstring)."""
    return (left.filter(pc.invert(pc.is_in(left, value_set=right))),
            right.filter(pc.invert(pc.is_in(right, value_set=left))))


def _concat(arrays: List[pa.Array]) -> pa.Array:
    return pa.concat_arrays([x.cast(pa.string()) for x in arrays]) if arrays else _EMPTY


__all__ = ["Unshared", "unshared"]
