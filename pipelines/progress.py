"""Progress of long work for a person at a terminal: one line per phase, bytes within a file.

A run (a deposit, an audit, a restore) shows one line per phase: stage, validate per bag,
replicate per target, verify per target. Each line counts the same files and bytes its phase
works through (a bag's tag files included: the copy and the check handle them too, so a line
never reads "3045/3034 files"), moves while a big file is being read (`strongroom.byte_ticks`),
and uses the units of every summary (`policies.units.display_size`: decimal, three figures).

Who draws: one display, owned by the process that started the run (`progress_display.Hub`).
The work may run in other processes (Luigi's `--workers 2` forks one per task; staging forks a
pool), so a phase never writes to the terminal itself: `phase()` sends small datagrams to the
display's socket, named by the environment variable PROGRESS_SOCKET that every child inherits.
Without that variable (stderr is not a terminal, or `--no-progress`) a phase costs nothing.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

from policies.units import display_size
from strongroom import byte_ticks

#: Environment variable naming the display's socket; set only while a display runs.
PROGRESS_SOCKET = "STRONGROOM_PROGRESS_SOCKET"
#: "1" forces a display (as `--progress`), "0" forbids it (`--no-progress`); unset: only at a terminal.
PROGRESS_MODE = "STRONGROOM_PROGRESS"
#: Seconds between two file-count messages of one phase (the last one is always sent).
SEND_EVERY = 0.1
#: Seconds between two calls of a phase's `on_update` (a Luigi task's status in luigid's UI,
#: one HTTP request to luigid each): once per file tripled a deposit's time through luigid.
STATUS_EVERY = 2.0
#: Seconds a send may wait for room in the display's queue (Linux queues only ~10 datagrams per
#: socket): a byte tick is dropped rather than slow the work, a phase's start and end are not.
TICK_WAIT, LINE_WAIT = 0.05, 2.0

Update = Callable[[int, int], None]  # (files done, bytes done), both counted from the phase's start


def wanted(stream=None) -> bool:
    """Should this run show progress? `--progress`/`--no-progress` first, else only at a terminal."""
    mode = os.environ.get(PROGRESS_MODE, "").strip().lower()
    if mode in ("1", "yes", "always", "true"):
        return True
    if mode in ("0", "no", "never", "false"):
        return False
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


@contextlib.contextmanager
def forced_mode(show: Optional[bool]) -> Iterator[None]:
    """`--progress` (True) / `--no-progress` (False) for the `with`; None leaves the default."""
    if show is None:
        yield
        return
    before = os.environ.get(PROGRESS_MODE)
    os.environ[PROGRESS_MODE] = "1" if show else "0"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(PROGRESS_MODE, None)
        else:
            os.environ[PROGRESS_MODE] = before


# --- the model of one line -------------------------------------------------------------------

@dataclass
class PhaseLine:
    """One phase's counters. `done_bytes` are bytes of finished files (from the phase's own
    callback), `partial` bytes counted inside files still being read (from byte ticks); what is
    shown never exceeds the totals, whatever order the messages of several processes arrive in."""

    label: str
    total_bytes: int
    total_files: int
    started: float
    files: int = 0
    done_bytes: int = 0
    partial: int = 0
    finished: Optional[float] = None
    ok: bool = True
    seconds: Optional[float] = None  # the phase's own measure of its duration (sent with its end)

    def files_done(self, files: int, nbytes: int) -> None:
        """Cumulative counts of finished files; their bytes leave `partial` (already counted there)."""
        grown = max(0, nbytes - self.done_bytes)
        self.partial = max(0, self.partial - grown)
        self.files = max(self.files, files)
        self.done_bytes = max(self.done_bytes, nbytes)

    def tick(self, nbytes: int) -> None:
        self.partial += max(0, nbytes)

    def finish(self, ok: bool, now: float, seconds: Optional[float] = None) -> None:
        """A phase that succeeded handled all it was given: its line says so in full. `seconds`
        is the duration the phase measured itself: messages may reach the display late or in a
        bunch, so the display's own clock could make a short phase look instantaneous."""
        self.finished, self.ok, self.seconds = now, ok, seconds
        if ok:
            self.files = max(self.files, self.total_files)
            self.done_bytes = max(self.done_bytes, self.total_bytes)
            self.partial = 0

    @property
    def shown_files(self) -> int:
        return min(self.files, self.total_files) if self.total_files else self.files

    @property
    def shown_bytes(self) -> int:
        n = self.done_bytes + self.partial
        return min(n, self.total_bytes) if self.total_bytes else n


def _clock(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _bar(fraction: float, width: int = 20) -> str:
    full = int(round(max(0.0, min(1.0, fraction)) * width))
    return "#" * full + "-" * (width - full)


def describe(line: PhaseLine, now: float, width: int = 24) -> str:
    """The text of one line: label, bar and percentage, bytes, files, rate and ETA (or the outcome)."""
    keep = width - 1
    label = line.label if len(line.label) <= width else line.label[: keep // 2] + "~" + line.label[-(keep - keep // 2):]
    label = label.ljust(width)
    if line.finished is not None and line.seconds is not None:
        elapsed = max(1e-3, line.seconds)
    else:
        elapsed = max(1e-3, (line.finished or now) - line.started)
    shown = line.shown_bytes
    rate = shown / elapsed
    files = f"{line.shown_files:,}/{line.total_files:,} files" if line.total_files else f"{line.shown_files:,} files"
    if line.finished is not None:
        size = f", {display_size(line.total_bytes or shown)}" if line.total_bytes or shown else ""
        if not line.ok:
            return f"{label} stopped after {_clock(elapsed)}: {files}{size}"
        speed = f" ({display_size(rate)}/s)" if shown else ""  # a short phase has a rate too
        return f"{label} done in {_clock(elapsed)}: {files}{size}{speed}"
    if not line.total_bytes:
        if not (shown or line.files):  # a phase with no counts of its own (validate): what and how long
            return f"{label} checking {line.total_files:,} files, {_clock(elapsed)}"
        return f"{label} {files}, {display_size(shown)}, {_clock(elapsed)}"
    fraction = shown / line.total_bytes
    eta = _clock((line.total_bytes - shown) / rate) if rate > 0 and elapsed >= 1 else "--:--"
    return (f"{label} [{_bar(fraction)}] {int(fraction * 100):3d}%  {display_size(shown)} / "
            f"{display_size(line.total_bytes)}  {files}  {display_size(rate)}/s  ETA {eta}")


# --- sending from any process ------------------------------------------------------------------

_sender: Optional[tuple] = None  # (pid, socket): a forked child opens its own
_ids = itertools.count(1)


def send(message: dict, wait: float = TICK_WAIT) -> None:
    """One datagram to the display, if there is one; dropped after `wait` seconds with no room,
    rather than ever holding up the work for long."""
    global _sender
    path = os.environ.get(PROGRESS_SOCKET)
    if not path:
        return
    try:
        if _sender is None or _sender[0] != os.getpid():
            _sender = (os.getpid(), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM))
        _sender[1].settimeout(wait)
        _sender[1].sendto(json.dumps(message, separators=(",", ":")).encode("utf-8"), path)
    except OSError:
        pass


@contextlib.contextmanager
def phase(label: str, total_bytes: int, total_files: int, *,
          on_update: Optional[Update] = None) -> Iterator[Update]:
    """One line of the display for the work inside the `with`: yields update(files, bytes).

    Bytes read inside files (byte ticks, from this process or children it forks) move the line
    too. `on_update` gets the first update, then at most one every STATUS_EVERY seconds, and
    the last one at the end (a Luigi task's status in luigid's UI: each call is a request)."""
    line = f"{os.getpid()}.{next(_ids)}"
    send({"op": "start", "line": line, "label": label, "bytes": int(total_bytes), "files": int(total_files)},
         LINE_WAIT)
    began = time.monotonic()
    last = [0.0, -1, -1]
    status = [0.0, None]  # when on_update was last called, and the counts it has not been given yet
    lock = threading.Lock()

    def update(files: int, nbytes: int) -> None:
        now = time.monotonic()
        if on_update is not None:
            with lock:
                due = now - status[0] >= STATUS_EVERY
                status[:] = [now, None] if due else [status[0], (files, nbytes)]
            if due:
                on_update(files, nbytes)
        with lock:
            if now - last[0] < SEND_EVERY:
                last[1], last[2] = files, nbytes
                return
            last[:] = [now, -2, -2]
        send({"op": "files", "line": line, "files": files, "bytes": nbytes})

    drawn = bool(os.environ.get(PROGRESS_SOCKET))  # else byte ticks stay off: nothing to show them
    previous = byte_ticks.set_sink(lambda n: send({"op": "tick", "line": line, "bytes": n})) if drawn else None
    ok = False
    try:
        yield update
        ok = True
    finally:
        if drawn:
            byte_ticks.set_sink(previous)
        if on_update is not None and status[1] is not None:
            on_update(*status[1])  # the last counts, so a finished task's status says where it ended
        if last[1] >= 0:
            send({"op": "files", "line": line, "files": last[1], "bytes": last[2]}, LINE_WAIT)
        send({"op": "end", "line": line, "ok": ok, "seconds": time.monotonic() - began}, LINE_WAIT)


class ByteProgress:
    """A one-phase display for work run in this process (restore): `with ByteProgress(...) as update`.

    Starts a display of its own when none is running and progress is wanted (`enabled`: None
    means `wanted()`); inside a running display it is just one more line."""

    def __init__(self, total_bytes: int, total_files: int, label: str, enabled: Optional[bool] = None):
        self._args = (label, total_bytes, total_files)
        self._enabled = wanted() if enabled is None else enabled
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> Update:
        if self._enabled and not os.environ.get(PROGRESS_SOCKET):
            from pipelines.progress_display import Hub

            self._stack.enter_context(Hub())
        return self._stack.enter_context(phase(*self._args))

    def __exit__(self, *exc) -> None:
        self._stack.__exit__(*exc)


@contextlib.contextmanager
def display_for_run(enabled: Optional[bool] = None) -> Iterator[None]:
    """The display of a whole run (runner.run_tasks), unless one already runs or none is wanted."""
    if os.environ.get(PROGRESS_SOCKET) or not (wanted() if enabled is None else enabled):
        yield
        return
    from pipelines.progress_display import Hub

    with Hub():
        yield
