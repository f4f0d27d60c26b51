"""The one progress display of a run: receives every phase's datagrams and draws the lines.

Why one display in the process that started the run: Luigi's `--workers 2` runs tasks in forked
processes, and two processes drawing bars on one terminal overwrite each other's line. Here the
workers only send (`pipelines.progress.send`) and this process alone writes to stderr.

Drawn with rich (`rich.live.Live`) rather than tqdm: rich redraws a block of several lines as
one unit, crops each line to the terminal's width and keeps finished lines above the running
ones; tqdm draws one bar per process and position, which is how bars came to overwrite each
other. The text of each line comes from `pipelines.progress.describe`, so the units and
counting are the same (and testable) whatever draws them.
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
                if line is None:
                    return
                if op == "files":
                    line.files_done(int(message["files"]), int(message["bytes"]))
                elif op == "tick":
                    line.tick(int(message["bytes"]))
                elif op == "end":
                    line.finish(bool(message["ok"]), self._clock())
        except (KeyError, TypeError, ValueError):
            pass

    def lines(self) -> List[PhaseLine]:
        with self._lock:
            return list(self._lines.values())

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
        # Not a terminal (`--progress 2> log`): rich writes the final lines once, no cursor codes.
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
        assert self._sock is not None
        while True:
            try:
                data = self._sock.recv(65536)
            except OSError:
                return
            if data == b"stop":
                return
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
                self._thread.join(timeout=5)
        finally:
            if self._previous_env is None:
                os.environ.pop(PROGRESS_SOCKET, None)
            else:
                os.environ[PROGRESS_SOCKET] = self._previous_env
            if self._live is not None:
                self._live.refresh()
                self._live.stop()
            self._sock.close()
            shutil.rmtree(self._dir, ignore_errors=True)
