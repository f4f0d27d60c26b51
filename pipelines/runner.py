"""Run Luigi tasks the way the CLI promises: local scheduler by default, `luigid` on request."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Iterator, Optional, Sequence

import luigi


#: Luigi's loggers: silenced for a run without -v, their levels restored after every run
LUIGI_LOGGERS = ("luigi", "luigi-interface", "luigi.scheduler")


@dataclass
class RunOutcome:
    ok: bool
    summary: str
    status: str


def run_tasks(tasks: Sequence[luigi.Task], *, workers: int = 1, scheduler_url: Optional[str] = None,
              verbose: int = 0) -> RunOutcome:
    """Build `tasks`; Luigi's own summary is kept for the CLI to show on failure or with -v."""
    # Without -v the CLI reports every failed step itself, from the failure records tasks leave;
    # Luigi's ERROR lines (each failed task's traceback, printed twice) would only bury that.
    params = dict(workers=workers, detailed_summary=True, log_level="INFO" if verbose else "CRITICAL")
    if scheduler_url:
        from pipelines.central import check_reachable

        check_reachable(scheduler_url)  # exit 2 naming the URL, instead of Luigi's retries and traceback
        params["scheduler_url"] = scheduler_url
    else:
        params["local_scheduler"] = True
    # Luigi's own logging set-up may set luigi-interface's level during the build: every level is
    # put back afterwards, so that a run inside a longer-lived process (tests, a program using
    # Strongroom as a library) does not leave Luigi silenced or re-levelled for what follows.
    before = {name: logging.getLogger(name).level for name in LUIGI_LOGGERS}
    try:
        if not verbose:
            # Luigi logs every scheduling decision; the CLI prints its own one-screen summary instead.
            for name in LUIGI_LOGGERS:
                logging.getLogger(name).setLevel(logging.CRITICAL)
        from pipelines.progress import display_for_run

        with display_for_run():  # one display, in this process, for every worker's phases
            result = _build(tasks, params, scheduler_url)
    finally:
        for name, level in before.items():
            logging.getLogger(name).setLevel(level)
    from luigi.execution_summary import LuigiStatusCode

    ok = result.status in (LuigiStatusCode.SUCCESS, LuigiStatusCode.SUCCESS_WITH_RETRY)
    # On luigid the last build may have found the work finished by other workers (Luigi then
    # reports "not granted run permission"): what counts is that every root task is complete.
    ok = ok or bool(scheduler_url and all(t.complete() for t in tasks))
    return RunOutcome(ok=ok, summary=result.summary_text, status=result.status.name)


def _build(tasks: Sequence[luigi.Task], params: dict, scheduler_url: Optional[str]):
    """luigi.build, and on luigid again while other workers hold some of the work (`central`):
    a rerun right after a worker was killed then finishes instead of ending "NOT complete", and
    a second machine running the same command takes on its share of the pending tasks."""
    if not scheduler_url:
        return luigi.build(list(tasks), **params)
    from luigi.rpc import RPCError

    from pipelines.central import SchedulerLost, Waiter, root_keys, shown_url

    waiter = Waiter(scheduler_url, root_keys(tasks))
    extra: list = []
    try:
        with _keep_alive(KEEP_ALIVE_IDLE):
            while True:
                result = luigi.build(list(tasks) + extra, **params)
                if all(t.complete() for t in tasks):
                    return result
                extra = waiter.again([t.task_id for t in tasks])
                if extra is None:
                    return result
    except RPCError as exc:
        raise SchedulerLost(f"the central scheduler at {shown_url(scheduler_url)} stopped answering "
                            f"during the run ({type(exc).__name__}); rerun the same command once luigid "
                            "is back (finished steps are kept)") from None


#: Seconds a worker on luigid stays with nothing to run while tasks it added wait on others'.
KEEP_ALIVE_IDLE = 5


@contextlib.contextmanager
def _keep_alive(idle_seconds: int) -> Iterator[None]:
    """Luigi's [worker] keep_alive for the `with`, bounded: a worker whose pending tasks wait on
    tasks another worker runs stays to take them up, but never more than `idle_seconds` idle (a
    pending task whose requirement failed would otherwise hold it until luigid's retry_delay)."""
    config = luigi.configuration.get_config()
    if not config.has_section("worker"):
        config.add_section("worker")
    keys = {"keep_alive": "true", "max_keep_alive_idle_duration": f"{idle_seconds} seconds"}
    before = {k: config.get("worker", k, None) for k in keys}
    for k, v in keys.items():
        config.set("worker", k, v)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                config.remove_option("worker", k)
            else:
                config.set("worker", k, v)
