"""Bytes moved inside a file, for a progress display: a process-wide counter the copy and hash
loops feed as they go.

Why: the per-file progress callbacks of staging, replication and verification only learn of a
file when it is finished, so a 1.5 GB file kept every bar at 0 % for 15 s. Every byte Strongroom
copies or verifies passes through `strongroom.checksums.MultiHasher.update`, which calls `add`;
a display sets a sink (`set_sink`) for the phase running in this process and is told every
REPORT_EVERY bytes. With no sink (the usual case: not at a terminal), `add` is one global
lookup and a comparison per 1 MiB chunk, nothing measurable beside hashing that chunk.

Lowest layer on purpose: ingest, storage_adapters and fixity may call it, and the display
itself lives in `pipelines.progress`. Forked workers (staging's pool) inherit the sink.
"""

from __future__ import annotations

import os
import threading
from typing import Callable, Optional

#: Bytes gathered before the sink is called: a few MiB, so a fast disk calls it about a hundred
#: times a second at most while a 1.5 GB file moves the bar hundreds of times.
REPORT_EVERY = 4 << 20

Sink = Callable[[int], None]

_sink: Optional[Sink] = None
_pending = 0
_lock = threading.Lock()


def _after_fork() -> None:
    """A forked child (staging's pool) gets a fresh lock: another thread may have held it at fork."""
    global _lock, _pending
    _lock, _pending = threading.Lock(), 0


os.register_at_fork(after_in_child=_after_fork)


def set_sink(sink: Optional[Sink]) -> Optional[Sink]:
    """Send this process's byte counts to `sink` (None: nowhere); returns the previous sink."""
    global _sink, _pending
    with _lock:
        previous, _sink, _pending = _sink, sink, 0
    return previous


def add(nbytes: int) -> None:
    """Count `nbytes` just read, copied or hashed; the sink hears of them in REPORT_EVERY steps."""
    global _pending
    if _sink is None:
        return
    with _lock:
        _pending += nbytes
        if _pending < REPORT_EVERY:
            return
        sink, count, _pending = _sink, _pending, 0
    if sink is not None:
        try:
            sink(count)
        except Exception:  # a display must never break the work it shows
            pass
