"""The one progress display of a run: receives every phase's datagrams and draws the lines.

Why one display in the process that started the run: Luigi's `--workers 2` runs tasks in forked
processes, and two processes drawing bars on one terminal overwrite each other's line. Here the
workers only send (`pipelines.progress.send`) and this process alone writes to stderr.

Drawn with rich (`rich.live.Live`) rather than tqdm: rich redraws a block of several lines as
one unit, crops each line to the terminal's width and keeps finished lines above the running
ones; tqdm draws one bar per process and position, which is how bars came to overwrite each
other. The text of each line comes from `pipelines.progress.describe`, so the units and
counting are the same (and testable) whatever draws them. Off a terminal (`--progress 2> log`)
nothing is drawn while the run goes: the final lines are written once at the end, each ending
in a newline (rich's Live leaves the last one open, so line-based tools lost the last phase).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
from typing import Dict, List, Optional

from pipelines.progress import PROGRESS_SOCKET, PhaseLine, describe

#: Finished lines kept on screen; older ones are folded into a count (a run of 100 bags).
KEEP_FINISHED = 12
#: After the run: seconds to wait for phases still open (a worker's end still on its way), and
#: the quiet spell that ends the draining of whatever else is queued.
DRAIN_LIMIT, DRAIN_QUIET = 2.0, 0.05


class Display:
    """Phase lines by id, fed by messages; `render` gives the text drawn (thread-safe)."""

    def __init__(self, clock=time.monotonic):
        self._clock = clock
        self._lines: Dict[str, PhaseLine] = {}
        self._lock = threading.Lock()

    def apply(self, message: dict) -> None:
        """One message of `pipelines.progress.phase`; a malformed or unknown one is ignored."""
        try:
            op, key = message["op"], str(message["line"])
            with self._lock:
                if op == "start":
                    self._lines[key] = PhaseLine(str(message["label"]), int(message["bytes"]),
                                                 int(message["files"]), self._clock())
                    return
                line = self._lines.get(key)
                if line is None or line.finished is not None:  # late ticks never change a final line
                    return
                if op == "files":
                    line.files_done(int(message["files"]), int(message["bytes"]))
                elif op == "tick":
                    line.tick(int(message["bytes"]))
                elif op == "end":
                    seconds = message.get("seconds")
                    line.finish(bool(message["ok"]), self._clock(), None if seconds is None else float(seconds))
        except (KeyError, TypeError, ValueError):
            pass

    def lines(self) -> List[PhaseLine]:
        with self._lock:
            return list(self._lines.values())

    def open_lines(self) -> int:
        """Phases started and not yet ended: their end message may still be on its way."""
        with self._lock:
            return sum(1 for x in self._lines.values() if x.finished is None)

    def render(self) -> List[str]:
        now = self._clock()
        lines = self.lines()
        finished = [x for x in lines if x.finished is not None]
        folded = max(0, len(finished) - KEEP_FINISHED)
        hidden = set(map(id, finished[:folded]))
        text = [f"({folded} earlier steps done)"] if folded else []
        return text + [describe(x, now) for x in lines if id(x) not in hidden]


class Hub:
    """`with Hub():` a socket for the phases of this run (named in the environment, so every
    child process finds it) and a rich Live display on stderr, until the `with` ends."""

    def __init__(self, stream=None):
        self.display = Display()
        self._stream = stream if stream is not None else sys.stderr
        self._dir: Optional[str] = None
        self._sock: Optional[socket.socket] = None
        self._thread: Optional[threading.Thread] = None
        self._live = None
        self._previous_env: Optional[str] = None

    def __enter__(self) -> "Hub":
        from rich.console import Console
        from rich.live import Live

        self._dir = tempfile.mkdtemp(prefix="strongroom-progress-")
        path = os.path.join(self._dir, "socket")
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(path)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self._previous_env = os.environ.get(PROGRESS_SOCKET)
        os.environ[PROGRESS_SOCKET] = path
        self._thread = threading.Thread(target=self._receive, name="progress-display", daemon=True)
        self._thread.start()
        try:
            at_terminal = bool(self._stream.isatty())
        except (AttributeError, ValueError):
            at_terminal = False
        if at_terminal:
            console = Console(file=self._stream, highlight=False)
            self._live = Live(get_renderable=self._renderable, console=console, refresh_per_second=4,
                              transient=False, redirect_stdout=False, redirect_stderr=False)
            self._live.start()
        return self

    def _renderable(self):
        from rich.console import Group
        from rich.text import Text

        return Group(*[Text(t, no_wrap=True, overflow="ellipsis") for t in self.display.render()])

    def _receive(self) -> None:
        """Apply datagrams until "stop"; then drain: wait (at most DRAIN_LIMIT) for phases still
        open, whose end a worker may have sent just before the run returned, and take whatever
        else is queued until a quiet spell, so the final lines are complete."""
        assert self._sock is not None
        stopped_at: Optional[float] = None
        while True:
            if stopped_at is not None:
                left = DRAIN_LIMIT - (time.monotonic() - stopped_at)
                if left <= 0:
                    return
                self._sock.settimeout(min(left, 0.2) if self.display.open_lines() else DRAIN_QUIET)
            try:
                data = self._sock.recv(65536)
            except socket.timeout:
                if not self.display.open_lines():
                    return
                continue
            except OSError:
                return
            if data == b"stop":
                stopped_at = time.monotonic()
                continue
            try:
                self.display.apply(json.loads(data.decode("utf-8")))
            except ValueError:
                pass

    def __exit__(self, *exc) -> None:
        assert self._sock is not None and self._dir is not None
        path = os.path.join(self._dir, "socket")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as stopper:
                stopper.sendto(b"stop", path)  # after every message already queued
            if self._thread is not None:
                self._thread.join(timeout=DRAIN_LIMIT + 3)
        finally:
            if self._previous_env is None:
                os.environ.pop(PROGRESS_SOCKET, None)
            else:
                os.environ[PROGRESS_SOCKET] = self._previous_env
            if self._live is not None:
                self._live.refresh()
                self._live.stop()
            else:  # not a terminal (`--progress 2> log`): the final lines once, each a whole line
                self._stream.write("".join(text + "\n" for text in self.display.render()))
                self._stream.flush()
            self._sock.close()
            shutil.rmtree(self._dir, ignore_errors=True)
