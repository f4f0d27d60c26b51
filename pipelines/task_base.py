"""What every Strongroom Luigi task shares: the archive's config, and failure records.

A task may run in a forked worker or on another machine under luigid, so its failure is
written as a small JSON record (message, every problem, exit code) where the CLI that started
the run can read it, instead of living only in Luigi's log.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
from pathlib import Path

import luigi

from strongroom.durable import atomic_write_json

#: The process that imported the tasks (the worker); a task running under another pid was forked.
_WORKER_PID = os.getpid()
_PR_SET_PDEATHSIG = 1


def failure_record(step: str, exc: BaseException) -> dict:
    """What the CLI needs to report a failed step: message, every problem, exit code."""
    from strongroom.errors import StrongroomError

    if isinstance(exc, StrongroomError):
        return {"step": step, "message": str(exc), "problems": [str(p) for p in exc.problems],
                "exit_code": exc.exit_code, "rerun_helps": rerun_helps(exc)}
    return {"step": step, "message": f"{type(exc).__name__}: {exc}", "problems": [], "exit_code": 1,
            "rerun_helps": rerun_helps(exc)}


def rerun_helps(exc: BaseException) -> bool:
    """Can the same command, run again unchanged, get past this failure?

    Storage trouble (full, read-only, unmounted, unreachable) passes once the storage is fixed
    and a rerun resumes where it stopped; so do OS-level errors in staging. A bad source, config
    or bag fails the same way every time (a different stored file under the same key, an unsafe
    path or a staged copy that does not match is no transient fault either)."""
    from storage_adapters.base import ReplicaConflict, SourceMismatch, StorageError, UnsafePath
    from strongroom.errors import StrongroomError

    if isinstance(exc, StorageError):
        return exc.exit_code != 2 and not isinstance(exc, (ReplicaConflict, UnsafePath, SourceMismatch))
    if isinstance(exc, StrongroomError):
        return bool(exc.rerun_helps)
    return isinstance(exc, (OSError, TimeoutError))


class ArchiveTask(luigi.Task):
    config_path = luigi.Parameter(description="strongroom.yaml of the archive")

    @property
    def config(self):
        if not hasattr(self, "_config"):
            from policies.config import load_config

            self._config = load_config(self.config_path)
        return self._config

    def failure_path(self) -> Path:  # pragma: no cover - every task family says where
        raise NotImplementedError

    def on_failure(self, exception):
        """Leave the reason where the CLI can read it, whichever process or machine ran the task."""
        try:
            atomic_write_json(self.failure_path(), failure_record(self.task_family, exception))
        except Exception:  # never hide the original failure behind a bookkeeping one
            pass
        return super().on_failure(exception)

    def on_success(self):
        self.failure_path().unlink(missing_ok=True)
        return super().on_success()


def die_with_worker() -> None:
    """In a task process Luigi forked (`--workers N`), be killed when the worker dies.

    Luigi's forked task processes outlive a worker killed with -9 and go on working, while the
    rerun that finds the worker gone runs the same task again (`pipelines.central`): two
    processes on one task. With PR_SET_PDEATHSIG the kernel kills the task process with its
    worker, so a killed worker's work stops as a whole, as on one process; every step resumes
    from what it made durable. Linux only; elsewhere a no-op."""
    if os.getpid() == _WORKER_PID or not hasattr(os, "getppid"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != _WORKER_PID:  # the worker died before the call: nothing would kill us later
        os._exit(1)


@ArchiveTask.event_handler(luigi.Event.START)
def _on_start(task: luigi.Task) -> None:
    die_with_worker()
