"""Run Luigi tasks the way the CLI promises: local scheduler by default, `luigid` on request."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional, Sequence

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
            result = luigi.build(list(tasks), **params)
    finally:
        for name, level in before.items():
            logging.getLogger(name).setLevel(level)
    from luigi.execution_summary import LuigiStatusCode

    ok = result.status in (LuigiStatusCode.SUCCESS, LuigiStatusCode.SUCCESS_WITH_RETRY)
    return RunOutcome(ok=ok, summary=result.summary_text, status=result.status.name)
