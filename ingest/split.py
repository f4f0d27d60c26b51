"""Split a deposit into bags no larger than the policy allows.

Very large deposits are split so that each bag stays transferable, auditable and repairable
on its own (a 40 TB bag cannot be re-copied in a night). Files keep their order (sorted paths),
so related files stay together and the split is reproducible for the same source.
"""

from __future__ import annotations

from typing import Iterable, Iterator, List, Sequence, TypeVar

T = TypeVar("T")


def plan_parts(files: Sequence[T], *, max_bytes: int, max_files: int, size=lambda f: f.size) -> List[List[T]]:
    """Greedy split in order; a single file larger than max_bytes gets a bag of its own.

    An empty deposit still gives one (empty) part, so its empty folders are recorded.
    """
    return list(iter_parts(files, max_bytes=max_bytes, max_files=max_files, size=size))


def iter_parts(files: Iterable[T], *, max_bytes: int, max_files: int, size=lambda f: f.size) -> Iterator[List[T]]:
    """`plan_parts` one part at a time: only running totals and the current part are held, so a
    deposit's files can stream from disk (`ingest.spill`) and be bagged part after part."""
    current: List[T] = []
    used = 0
    for f in files:
        n = size(f)
        if current and (used + n > max_bytes or len(current) >= max_files):
            yield current
            current = []
            used = 0
        current.append(f)
        used += n
    yield current


def count_parts(files: Iterable[T], *, max_bytes: int, max_files: int, size=lambda f: f.size) -> int:
    """How many parts `iter_parts` gives, without holding any (each bag's Bag-Count needs it first)."""
    return sum(1 for _ in iter_parts(files, max_bytes=max_bytes, max_files=max_files, size=size))
