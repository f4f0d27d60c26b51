"""Split a deposit into bags no larger than the policy allows.

Very large deposits are split so that each bag stays transferable, auditable and repairable
on its own (a 40 TB bag cannot be re-copied in a night). Files keep their order (sorted paths),
so related files stay together and the split is reproducible for the same source.
"""

from __future__ import annotations

from typing import List, Sequence, TypeVar

T = TypeVar("T")


def plan_parts(files: Sequence[T], *, max_bytes: int, max_files: int, size=lambda f: f.size) -> List[List[T]]:
    """Greedy split in order; a single file larger than max_bytes gets a bag of its own.

    An empty deposit still gives one (empty) part, so its empty folders are recorded.
    """
    parts: List[List[T]] = [[]]
    used = 0
    for f in files:
        n = size(f)
        current = parts[-1]
        if current and (used + n > max_bytes or len(current) >= max_files):
            parts.append([])
            current = parts[-1]
            used = 0
        current.append(f)
        used += n
    return parts
