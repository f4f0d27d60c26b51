"""One piece of work done by a forked child while this process goes on with another (issue 11).

Why: finishing a staged bag runs on one core while the machine's other cores idle. Writing the
bag's premis.xml (about 0.5 s of a 20,000-file bag) needs nothing that the rest of the finish
writes, and a forked child already holds every record it needs, so the child writes it
meanwhile; the parent waits for it before it uses the file.

The rules that keep this as safe as doing the work inline:
  * the child runs the work and leaves with `os._exit`: no atexit handler, no buffered output
    and no teardown of the parent (Luigi, logging, open files) runs a second time;
  * the child dies with its parent (PR_SET_PDEATHSIG on Linux): a killed command leaves no
    writer behind that could write after its rerun cleaned up;
  * `wait()` raises in the parent what the child raised: an OSError with its errno, text and
    file name (what the inline call would have raised), any other exception as `ForkedFailure`
    naming its type and message; a child that died without a word (killed) is a
    `ForkedFailure` too. The parent never goes on as if the work had been done;
  * where fork is missing, `start` runs the work inline (same results, no overlap).
"""

from __future__ import annotations

import ctypes
import os
import pickle
import signal
from typing import Callable, Optional

from .errors import StrongroomError

_PR_SET_PDEATHSIG = 1


class ForkedFailure(StrongroomError):
    """The forked work failed with something other than an OSError, or its child died."""

    exit_code = 1


def _die_with_parent(parent: int) -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the child still ends when its work does
        pass
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def _outcome(work: Callable[[], None]) -> bytes:
    try:
        work()
        return pickle.dumps(("ok",))
    except OSError as exc:
        name = exc.filename
        name = None if name is None else os.fsdecode(name) if isinstance(name, (bytes, os.PathLike)) else str(name)
        return pickle.dumps(("oserror", exc.errno, exc.strerror, name, str(exc)))
    except BaseException as exc:  # noqa: BLE001 -- everything goes back to the parent
        return pickle.dumps(("error", type(exc).__name__, str(exc)))


def _reap(pid: int) -> Optional[int]:
    """The child's wait status, or None where it was reaped already (SIGCHLD ignored): the
    outcome read from the pipe is what counts, the status only says how a silent child ended."""
    try:
        return os.waitpid(pid, 0)[1]
    except ChildProcessError:
        return None


class Forked:
    """Work running in a forked child (or already done inline); `wait()` once for its outcome."""

    def __init__(self, what: str, pid: Optional[int], reader: Optional[int], inline_error=None):
        self.what = what
        self._pid = pid
        self._reader = reader
        self._inline_error = inline_error

    @classmethod
    def start(cls, what: str, work: Callable[[], None], *, inline: bool = False) -> "Forked":
        """Start `work()` in a forked child; `what` names it in errors ("writing premis.xml").
        `inline`: do it here and now instead (small work, where a fork costs more than it saves)."""
        if inline or not hasattr(os, "fork"):
            try:
                work()
            except Exception as exc:  # kept for wait(); an interrupt (Ctrl-C) stops the caller at once
                return cls(what, None, None, exc)
            return cls(what, None, None)
        reader, writer = os.pipe()
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # the child: never returns
            try:
                os.close(reader)
                _die_with_parent(parent)
                data = _outcome(work)
                view = memoryview(data)
                while view:
                    view = view[os.write(writer, view):]
            finally:
                os._exit(0)
        os.close(writer)
        return cls(what, pid, reader)

    def stop(self) -> None:
        """Kill the child and reap it (the parent failed meanwhile): nothing writes after this."""
        if self._pid is None:
            return
        try:
            os.kill(self._pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.close(self._reader)
        _reap(self._pid)
        self._pid = None

    def wait(self) -> None:
        """Block until the work is done; raise what it raised (see the module doc)."""
        if self._pid is None:
            if self._inline_error is not None:
                error, self._inline_error = self._inline_error, None
                raise error
            return
        chunks = []
        try:
            while True:
                chunk = os.read(self._reader, 1 << 16)
                if not chunk:
                    break
                chunks.append(chunk)
        finally:
            os.close(self._reader)
            status = _reap(self._pid)
            self._pid = None
        try:
            outcome = pickle.loads(b"".join(chunks))
        except Exception:
            outcome = None
        if not outcome:
            if status is None:
                how = "ended"
            elif os.WIFSIGNALED(status):
                how = f"was killed by signal {os.WTERMSIG(status)}"
            else:
                how = f"ended with exit status {os.waitstatus_to_exitcode(status)}"
            raise ForkedFailure(f"{self.what}: the process doing it {how} before it said it was done",
                                rerun_helps=True)
        if outcome[0] == "oserror":
            _, errno_, strerror, filename, text = outcome
            if errno_ is None:
                raise OSError(text)
            raise OSError(errno_, strerror, filename) if filename is not None else OSError(errno_, strerror)
        if outcome[0] == "error":
            raise ForkedFailure(f"{self.what}: {outcome[1]}: {outcome[2]}")
