"""Runs on a central `luigid`: reachability, and tasks a dead or busy worker still holds.

Why this exists: luigid hands a task id to one worker at a time and keeps it RUNNING until that
worker reports back. A worker killed with -9 never does; luigid only notices it when the worker
has been silent for `[scheduler] worker_disconnect_delay` (60 s by default), at its next prune
(every 60 s, or when a client asks for a task or worker list), and then marks its tasks FAILED,
which a new run may schedule again (spotify/luigi #443, #1334). A rerun started at once used to
find its root task "run by another worker", do nothing and end "NOT complete" (issue 16).

So after each build the runner asks luigid which tasks of its graphs are still RUNNING, and by
whom (`holders`), and then:
- a holder on this machine whose process is gone (killed): its tasks are reported FAILED in its
  name, exactly the report it would have sent had it lived, and the run goes on at once. Its
  forked task processes died with it (`task_base` sets PR_SET_PDEATHSIG), so nothing of it runs;
- a holder on another machine that stopped pinging: the run waits for luigid to drop it, saying
  so (and for how long it has been silent), then goes on;
- a live holder (another run of the same command): the run helps, taking on the pending tasks
  of the graph luigid knows of (`helpers`: a deposit's per-bag tasks, known only to the worker
  that built the bags), and else waits, as the local scheduler's flock waits, saying what for;
  its next build then finds the work done.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Set

from strongroom.errors import PreservationError, UsageError

#: Seconds to wait for luigid's answer to one request.
REQUEST_TIMEOUT = 10.0
#: A worker pings luigid every second (Luigi's `worker.ping_interval`). Silent this long (as seen
#: from here, luigid's clock aside) a worker of this machine whose process is gone is released;
#: the wait also keeps a live worker of another machine with the same host name from being taken
#: for it. Silent SILENT_AFTER seconds, a worker elsewhere is said to have stopped answering.
RELEASE_AFTER, SILENT_AFTER = 5.0, 15.0
#: Seconds between two looks at luigid while waiting, and between two "still waiting" lines.
POLL_EVERY, SAY_EVERY = 2.0, 30.0
#: Longest wait for luigid to drop a silent worker (its worker_disconnect_delay plus a prune).
MAX_SILENT_WAIT = 900.0


class SchedulerUnreachable(UsageError):
    """--scheduler-url names no luigid that answers (exit 2: a usage or configuration problem)."""


class SchedulerLost(PreservationError):
    """luigid stopped answering during a run (exit 1: the steps finished are kept; rerun)."""

    rerun_helps = True


class SchedulerStuck(PreservationError):
    """luigid still holds this run's tasks for a worker that stopped long ago (exit 1)."""

    rerun_helps = True


@dataclass(frozen=True)
class Holder:
    """A worker luigid says runs one of our tasks, and what is known of it."""

    worker: str
    host: str
    pid: Optional[int]
    last_active: Optional[float]  # luigid's time of its last message; None: no longer listed
    tasks: tuple
    silent_for: float = 0.0  # seconds this run has seen last_active unchanged (Waiter.observe)

    @property
    def here(self) -> bool:
        return self.host == socket.gethostname()

    def describe(self) -> str:
        heard = f", silent for {self.silent_for:.0f} s" if self.silent_for >= 1 else ""
        return f"worker pid {self.pid} on {self.host}{heard}"


def shown_url(url: str) -> str:
    """The URL as errors show it: never a user name or password it may carry."""
    parts = urllib.parse.urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def check_url(url: str) -> None:
    """An http(s)://HOST[:PORT] URL, else exit 2 before anything is scheduled."""
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise SchedulerUnreachable(f"--scheduler-url {shown_url(url)!r}: not a URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SchedulerUnreachable(f"--scheduler-url {shown_url(url)!r}: give luigid's address as "
                                   "http://HOST:PORT (luigid listens on 8082 by default)")


def call(url: str, method: str, **args):
    """One request to luigid's JSON API (the form Luigi's own RemoteScheduler sends)."""
    body = urllib.parse.urlencode({"data": json.dumps(args)}).encode("ascii")
    full = url.rstrip("/") + "/api/" + method
    try:
        with urllib.request.urlopen(full, body, timeout=REQUEST_TIMEOUT) as answer:
            return json.loads(answer.read().decode("utf-8"))["response"]
    except (urllib.error.URLError, OSError, ValueError, KeyError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise SchedulerUnreachable(
            f"the central scheduler at {shown_url(url)} does not answer ({reason}): start luigid there, "
            "or fix --scheduler-url (without it the run uses the local scheduler)") from None


def check_reachable(url: str) -> None:
    """Exit 2 naming the URL when no luigid answers there, before any task is scheduled."""
    check_url(url)
    call(url, "task_list", status="RUNNING", upstream_status="")


@dataclass
class Survey:
    """What luigid says of the graphs of a run's root tasks: who holds what, what still waits."""

    holders: List[Holder]
    pending: List[tuple]  # (task_id, family, params) of PENDING tasks, for `helpers`


def survey(url: str, task_ids: Iterable[str]) -> Survey:
    """The workers holding RUNNING tasks of the graphs of `task_ids`, and their PENDING tasks."""
    running: Dict[str, List[str]] = {}
    pending: Dict[str, tuple] = {}
    for task_id in task_ids:
        graph = call(url, "dep_graph", task_id=task_id, include_done=False) or {}
        for tid, info in graph.items():
            if info.get("status") == "RUNNING" and info.get("worker_running"):
                running.setdefault(info["worker_running"], []).append(tid)
            elif info.get("status") == "PENDING" and info.get("name"):
                pending[tid] = (tid, info["name"], info.get("params") or {})
    if not running:
        return Survey([], list(pending.values()))
    workers = {w["name"]: w for w in call(url, "worker_list", include_running=False) or []}
    found = []
    for worker, tids in running.items():
        info = workers.get(worker, {})
        pid = info.get("pid")
        found.append(Holder(worker=worker, host=str(info.get("host", "")),
                            pid=int(pid) if str(pid or "").isdigit() else None,
                            last_active=info.get("last_active"),
                            tasks=tuple(sorted(set(tids)))))
    return Survey(found, list(pending.values()))


def helpers(pending: Iterable[tuple], roots: Set[tuple]) -> list:
    """The pending tasks of the graph this run may take on: Strongroom tasks of this archive only.

    A deposit's bags are only known once built, so its per-bag tasks are added to luigid by the
    worker that ran the deposit's root task; a second worker running the same command learns of
    them here and adds them too, so luigid hands them out to both. Only tasks of ours (an
    ArchiveTask) of a root's (config file, deposit key) are taken, and no parameter may name a
    path outside (`..`, absolute): never another archive's or deposit's work, whatever luigid says."""
    from luigi.task_register import Register, TaskClassException

    from pipelines.task_base import ArchiveTask

    found = []
    for task_id, family, params in pending:
        try:
            cls = Register.get_task_cls(family)
        except TaskClassException:
            continue
        if not (isinstance(cls, type) and issubclass(cls, ArchiveTask)) \
                or (params.get("config_path"), params.get("deposit_key")) not in roots or not _plain(params):
            continue
        try:
            task = cls.from_str_params(params)
        except Exception:  # noqa: BLE001 - a task we cannot rebuild is simply not helped with
            continue
        if task.task_id == task_id:
            found.append(task)
    return found


def process_gone(pid: Optional[int]) -> bool:
    """Is process `pid` of this machine gone (or a zombie nobody reaped)?"""
    if pid is None or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, another user's
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return False


def release(url: str, holder: Holder) -> None:
    """Report the tasks of a worker that died on this machine FAILED, in its name, and disable it.

    luigid accepts a RUNNING task's end only from the worker running it; a dead worker cannot
    send it, so the run that proved it dead (same host, no such process) sends what the worker
    would have. The task then becomes PENDING again when this run adds it."""
    for task_id in holder.tasks:
        call(url, "add_task", worker=holder.worker, task_id=task_id, status="FAILED", runnable=False,
             expl=json.dumps(f"worker pid {holder.pid} on {holder.host} died while running this task; "
                             f"released by strongroom (pid {os.getpid()}) to be run again"))
    call(url, "disable_worker", worker=holder.worker)


class Waiter:
    """Decides, after a build left work undone, what to build next (and says why)."""

    def __init__(self, url: str, roots: Set[tuple], stream=None):
        self.url = url
        self.roots = roots
        self.stream = stream if stream is not None else sys.stderr
        self._said: Dict[str, float] = {}
        self._heard: Dict[str, tuple] = {}

    def say(self, key: str, text: str) -> None:
        now = time.monotonic()
        if now - self._said.get(key, -SAY_EVERY) >= SAY_EVERY:
            self._said[key] = now
            print(f"strongroom: {text}", file=self.stream, flush=True)

    def observe(self, h: Holder) -> Holder:
        """`h` with how long this run has seen its last_active unchanged (own clock only)."""
        seen = self._heard.get(h.worker)
        now = time.monotonic()
        if seen is None or seen[0] != h.last_active:
            self._heard[h.worker] = (h.last_active, now)
            return h
        return dataclasses.replace(h, silent_for=now - seen[1])

    def again(self, task_ids: List[str]) -> Optional[list]:
        """None: nothing of the run is held by another worker (done, or failed: stop). Else the
        tasks to build besides the roots: pending ones others' work made known (maybe none),
        once tasks held by a dead worker are released or while live workers run the rest."""
        freed = False
        while True:
            found = survey(self.url, task_ids)
            if not found.holders:
                return [] if freed else None  # held before, free now: build again; never held: stop
            freed, waiting = True, False
            for h in map(self.observe, found.holders):
                if h.here and process_gone(h.pid) and h.silent_for >= RELEASE_AFTER:
                    release(self.url, h)
                    self.say(f"released {h.worker}", f"luigid at {shown_url(self.url)} still held {len(h.tasks)} "
                             f"task(s) for {h.describe()}, which is gone (killed?): released them, running "
                             "them again")
                    continue
                waiting = True
                self._wait_on(h)
            if not waiting:
                return []
            extra = helpers(found.pending, self.roots)
            if extra:
                return extra
            time.sleep(POLL_EVERY)

    def _wait_on(self, h: Holder) -> None:
        if h.here and process_gone(h.pid):
            self.say(h.worker, f"{h.describe()} (this machine) is gone; its {len(h.tasks)} task(s) on luigid are "
                     f"released once it has been silent {RELEASE_AFTER:.0f} s")
            return
        if h.silent_for <= SILENT_AFTER:
            self.say(h.worker, f"waiting for {h.describe()}, which is running {len(h.tasks)} task(s) of this run "
                     f"({_short(h.tasks[0])}); checking luigid every {POLL_EVERY:.0f} s")
            return
        if h.silent_for > MAX_SILENT_WAIT:
            raise SchedulerStuck(
                f"luigid at {shown_url(self.url)} still holds {len(h.tasks)} task(s) of this run for {h.describe()}: "
                "check luigid's [scheduler] worker_disconnect_delay, or restart the worker, then rerun the same "
                "command")
        self.say(h.worker, f"waiting for luigid to release {len(h.tasks)} task(s) held by {h.describe()}, "
                 "which stopped answering (another machine?): luigid frees them after its "
                 "[scheduler] worker_disconnect_delay (60 s unless configured)")


def _plain(params: dict) -> bool:
    """No parameter but the config file names a path outside its folder."""
    for name, value in params.items():
        text = str(value)
        if name != "config_path" and (text.startswith("/") or ".." in text.split("/") or "\0" in text):
            return False
    return True


def root_keys(tasks) -> Set[tuple]:
    """(config file, deposit key) of the root tasks that have a deposit key, for `helpers`."""
    return {(str(t.config_path), str(t.deposit_key)) for t in tasks if hasattr(t, "deposit_key")}


def _short(task_id: str) -> str:
    return task_id if len(task_id) <= 60 else task_id[:57] + "..."
