"""One execution of a governance request at a time.

Two approvers who send their signatures at the same moment each see the quorum reached, and each
`strongroom approve` would carry the request out: for a withdrawal, two runs removing the same
objects and recording the same deletions twice. The executed marker (catalog.requests) is written
only once an execution has finished, so it cannot be the lock. A run therefore first claims the
execution: `governance/execution-claims/<REQ>.<generation>.json`, created exclusively (link() on a
folder catalog, a conditional put on S3), naming the host, the process and the time. The run
that created it executes; any other run is told who holds it and exits. A claim is released with
a `<name>.released` marker when its run ends (the execution done, or refused and left to a rerun);
a claim whose run died (killed on this host, or silent for `STALE_AFTER` on another) is
superseded by the next generation, so a rerun resumes the idempotent executors.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import socket
from contextlib import contextmanager
from typing import Iterator

from catalog.catalog import Catalog
from catalog.schema import utc_now
from strongroom.errors import PreservationError

CLAIMS = "governance/execution-claims"
STALE_AFTER = _dt.timedelta(hours=6)
MAX_GENERATIONS = 100_000


class ExecutionBusy(PreservationError):
    """Another run is carrying the request out now (exit 1: nothing was done by this one)."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read(catalog: Catalog, name: str) -> dict:
    return json.loads(catalog.store.read_bytes(catalog.store.path(CLAIMS, name)).decode("utf-8"))


def _released(catalog: Catalog, name: str) -> bool:
    try:
        catalog.store.read_bytes(catalog.store.path(CLAIMS, f"{name}.released"))
    except FileNotFoundError:
        return False
    return True


def _free(catalog: Catalog, name: str, now: _dt.datetime) -> bool:
    """Whether the claim `name` no longer holds: released, its process gone, or stale."""
    if _released(catalog, name):
        return True
    try:
        holder = _read(catalog, name)
        at = _dt.datetime.fromisoformat(holder["at"])
    except (FileNotFoundError, ValueError, KeyError, TypeError, UnicodeError):
        return False                    # unreadable: never taken over on a guess
    if holder.get("host") == socket.gethostname() and not _alive(int(holder.get("pid", 0))):
        return True
    return now - at > STALE_AFTER


def _claim(catalog: Catalog, request_id: str) -> str:
    now = utc_now()
    me = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "at": now.isoformat()}).encode("utf-8")
    for generation in range(1, MAX_GENERATIONS):
        name = f"{request_id}.{generation:06d}.json"
        if catalog.store.create_exclusive(CLAIMS, name, me):
            return name
        if _free(catalog, name, now):
            continue
        try:
            holder = _read(catalog, name)
            who = f"{holder.get('host')} (process {holder.get('pid')}) since {holder.get('at')}"
        except (FileNotFoundError, ValueError, UnicodeError):
            who = "another run (its claim cannot be read)"
        raise ExecutionBusy(f"request {request_id} is being carried out by {who}; nothing was done by this run. "
                            f"Run `strongroom approve {request_id}` again once that run has ended: it finishes "
                            f"whatever is left")
    raise ExecutionBusy(f"request {request_id}: too many execution claims; see {CLAIMS} in the catalog")


@contextmanager
def execution_claim(catalog: Catalog, request_id: str) -> Iterator[None]:
    """Hold the execution of `request_id` for the duration of the block (see the module docstring)."""
    name = _claim(catalog, request_id)
    try:
        yield
    finally:
        catalog.store.create_exclusive(CLAIMS, f"{name}.released", b"")
