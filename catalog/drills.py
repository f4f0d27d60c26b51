"""Restore drills as the ledger records them: the event's wording, and the last drill per target.

Why here, in the catalog layer: `strongroom drill` (fixity.drill) writes these events, while
the reports, `status` and the evidence pack (reports/) read them, and fixity and reports may not
import each other. Keeping the wording and its reader in one place means a drill is recognised
the same way everywhere.

A drill restores a bag from ONE target into scratch space and verifies every byte against the
catalog and the bag's manifests: that copy was re-read in full, so the event is a PREMIS
"fixity check" of the replica (LoC eventType vocabulary), told apart from an audit's by its
detail, which always starts `restore drill RUN (seed SEED): ` (contract K6,
/work/coord/api-drill.md). RUN names one `strongroom drill` run; SEED reproduces its sample.
"""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import pyarrow.compute as pc

from catalog.catalog import Catalog
from catalog.scope import LibraryScope

DRILL_EVENT = "fixity check"
DETAIL_PREFIX = "restore drill "
_DETAIL = re.compile(r"^restore drill (drill-[0-9]{8}T[0-9]{6}Z-[0-9a-f]{8}) \(seed ([0-9]+)\): ")
_VERIFIED = re.compile(r" verified ([0-9]+) files, ([0-9]+) bytes ")


@dataclass(frozen=True)
class TargetDrill:
    """The newest drill run on one target: when, what it found, and the events behind it."""

    target: str
    run_id: str
    seed: Optional[int]
    at: _dt.datetime          # UTC: the newest event of that run on that target
    outcome: str              # "success" when every bag of the run passed there, else "failure"
    bags: int                 # bags drilled on that target in that run
    failed: int               # of which failed
    files: int                # files verified (bags that passed)
    bytes: int                # bytes verified (bags that passed)
    event_ids: Tuple[str, ...]

    def to_dict(self) -> dict:
        return {"target": self.target, "run": self.run_id, "seed": self.seed, "at": self.at.isoformat(),
                "outcome": self.outcome, "bags": self.bags, "failed": self.failed, "files": self.files,
                "bytes": self.bytes, "events": list(self.event_ids)}


def run_prefix(run_id: str, seed: int) -> str:
    """The start of every drill event's detail of run `run_id`."""
    return f"{DETAIL_PREFIX}{run_id} (seed {seed}): "


def success_detail(run_id: str, seed: int, target: str, files: int, size: int) -> str:
    return (run_prefix(run_id, seed) + f"restored from {target} into scratch space and verified {files} files, "
            f"{size} bytes against the catalog and the bag's manifests")


def failure_detail(run_id: str, seed: int, target: str, reason: str) -> str:
    return run_prefix(run_id, seed) + f"FAILED on {target}: {reason}"


def is_drill_detail(detail: Optional[str]) -> bool:
    """Whether an event's detail is a restore drill's (for views that count audits apart)."""
    return bool(detail) and _DETAIL.match(detail) is not None


def drill_events(catalog: Catalog, library: Optional[str] = None) -> List[dict]:
    """Every drill event (dict rows, ledger order), of one library's bags with `library`."""
    table = LibraryScope(library).events(catalog, type=DRILL_EVENT)
    if table.num_rows == 0:
        return []
    table = table.filter(pc.fill_null(pc.starts_with(table.column("detail"), DETAIL_PREFIX), False))
    return [row for row in table.select(["event_id", "datetime", "outcome", "bag_id", "target", "detail"]).to_pylist()
            if is_drill_detail(row["detail"]) and row["target"]]


def last_drills(catalog: Catalog, library: Optional[str] = None) -> Dict[str, TargetDrill]:
    """Per target (that was ever drilled), its newest drill run and its result."""
    runs: Dict[Tuple[str, str], List[dict]] = {}
    for row in drill_events(catalog, library):
        run_id = _DETAIL.match(row["detail"]).group(1)
        runs.setdefault((row["target"], run_id), []).append(row)
    newest: Dict[str, TargetDrill] = {}
    for (target, run_id), rows in runs.items():
        drill = _summarise(target, run_id, rows)
        if target not in newest or (drill.at, drill.run_id) > (newest[target].at, newest[target].run_id):
            newest[target] = drill
    return dict(sorted(newest.items()))


def _summarise(target: str, run_id: str, rows: List[dict]) -> TargetDrill:
    last: Dict[str, dict] = {}
    for row in rows:            # a bag drilled twice in one run (never by fixity.drill): its last word counts
        last[row["bag_id"] or ""] = row
    failed = sum(1 for r in last.values() if r["outcome"] != "success")
    files = size = 0
    for r in last.values():
        m = _VERIFIED.search(r["detail"]) if r["outcome"] == "success" else None
        if m:
            files += int(m.group(1))
            size += int(m.group(2))
    seed = _DETAIL.match(rows[0]["detail"]).group(2)
    return TargetDrill(target=target, run_id=run_id, seed=int(seed), at=max(r["datetime"] for r in rows),
                       outcome="success" if failed == 0 else "failure", bags=len(last), failed=failed,
                       files=files, bytes=size, event_ids=tuple(r["event_id"] for r in rows))


__all__ = ["DRILL_EVENT", "DETAIL_PREFIX", "TargetDrill", "run_prefix", "success_detail", "failure_detail",
           "is_drill_detail", "drill_events", "last_drills"]
