"""Restore drills: prove, target by target, that the copies can really be restored.

An audit re-reads a copy where it lies; a drill does what a librarian would do on the bad day:
it restores whole bags from ONE storage target (no fallback to another copy: the point is that
this copy alone suffices) into scratch space, verifies every byte, records the result, and
throws the scratch copy away. Auditors ask for exactly that (ISO 16363 4.4.1.2 and 5.2.4,
CoreTrustSeal R14): not "we check our checksums" but "we restored, and it worked".

* **What is restored** is fixity.restore's work, reused whole (`prepare(..., only_from=True)`
  then `build`): every payload file streamed and checked against all the catalog's digests,
  the tag files validated as BagIt (tag manifests, Payload-Oxum) and their payload manifests
  compared with the catalog, a version bag's fetch.txt followed on the same target. Findings
  are recorded as a restore records them (a bad file is a "fixity check" failure, the copy is
  marked damaged for the next audit to repair). Instead of a dissemination (nothing left the
  archive) one drill event per bag and target is recorded (catalog.drills: its wording).
* **Which bags**: per target, those whose copy there is verified (or repaired) and that are not
  withdrawn (catalog.tombstones), in the library
  with `library`, drawn at random: `sample` bags, or bags up to `budget` bytes (at least one: a
  bag bigger than the budget is still drilled when nothing smaller is). The seed is the time
  unless given, is recorded in every event, and each target draws from `Random("SEED/TARGET")`,
  so a run can be reproduced exactly.
* **When**: `due=True` drills only targets whose last drill (catalog.drills.last_drills) is
  older than the cadence: `every` if given, else the shortest policy `fixity.drill_every`
  (default 180 days) of the policies that keep copies on that target.
* **Scratch space** is fixity.drill_scratch: one folder per run under STAGING/drills, removed
  after every bag and at the end however the run ends; a killed run's is removed by the next.
"""

from __future__ import annotations

import datetime as _dt
import logging
import random
import secrets
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

from catalog.catalog import Catalog
from catalog.drills import DRILL_EVENT, failure_detail, last_drills, success_detail
from catalog.schema import EventRecord
from catalog.scope import LibraryScope
from catalog.tombstones import withdrawn_bags
from fixity.drill_scratch import Scratch
from fixity.restore import prepare
from fixity.restore_result import AGENT, DETAIL_MAX, RestoreError, RestoreResult
from fixity.restore_sources import USABLE_STATES
from policies.model import DEFAULT_FIXITY
from policies.units import format_duration
from strongroom.bag_id import BagId
from strongroom.errors import PreservationError, UsageError

log = logging.getLogger(__name__)

#: How often a target no policy names is drilled by `drill --due` (the policies' own default).
DEFAULT_EVERY = DEFAULT_FIXITY.drill_every
#: Bags drilled per target when neither a sample size nor a byte budget is given.
DEFAULT_SAMPLE = 1


@dataclass
class BagDrill:
    """One bag restored from one target: passed or failed, and what was verified or found."""

    bag_id: str
    target: str
    outcome: str                 # "success" | "failure"
    files: int = 0
    bytes: int = 0
    event_id: Optional[str] = None
    problems: List[str] = field(default_factory=list)
    damaged: bool = False        # the restore marked this copy damaged (or missing)

    def to_dict(self) -> dict:
        return {"bag": self.bag_id, "target": self.target, "outcome": self.outcome, "files": self.files,
                "bytes": self.bytes, "event": self.event_id, "problems": self.problems, "damaged": self.damaged}


@dataclass
class TargetDrillRun:
    """What a run did on one target: the bags drawn, or why none was."""

    target: str
    candidates: int = 0            # bags with a verified copy there (in scope)
    skipped: Optional[str] = None  # why nothing was drilled (not due, no bag)
    bags: List[BagDrill] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return sum(1 for b in self.bags if b.outcome != "success")

    def to_dict(self) -> dict:
        return {"target": self.target, "candidates": self.candidates, "skipped": self.skipped,
                "drilled": len(self.bags), "failed": self.failed, "bags": [b.to_dict() for b in self.bags]}


@dataclass
class DrillReport:
    run_id: str
    seed: int
    targets: List[TargetDrillRun] = field(default_factory=list)
    removed_stale: List[str] = field(default_factory=list)   # scratch folders of killed drills removed
    warnings: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(t.failed == 0 for t in self.targets)

    def to_dict(self) -> dict:
        return {"run": self.run_id, "seed": self.seed, "ok": self.ok, "targets": [t.to_dict() for t in self.targets],
                "removed_stale_scratch": self.removed_stale, "warnings": self.warnings}


def new_run_id(now: Optional[_dt.datetime] = None) -> str:
    now = now or _dt.datetime.now(_dt.timezone.utc)
    return f"drill-{now.strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(4)}"


def run_drill(config, catalog: Catalog, *, sample: Optional[int] = None, budget: Optional[int] = None,
              library: Optional[str] = None, target: Optional[str] = None, due: bool = False,
              every: Optional[_dt.timedelta] = None, seed: Optional[int] = None, workers: int = 1,
              now: Optional[_dt.datetime] = None) -> DrillReport:
    """Drill every storage target in turn (or only `target`); see the module docstring."""
    if sample is not None and budget is not None:
        raise UsageError("give --sample N or --bytes SIZE, not both", key="--sample")
    if sample is not None and sample < 1:
        raise UsageError(f"--sample must be at least 1, got {sample}", key="--sample")
    if budget is not None and budget < 1:
        raise UsageError("--bytes must be more than 0", key="--bytes")
    names = [config.target(target).name] if target is not None else sorted(config.storage)
    now = now or _dt.datetime.now(_dt.timezone.utc)
    seed = time.time_ns() if seed is None else int(seed)
    report = DrillReport(run_id=new_run_id(now), seed=seed)
    scope = LibraryScope(library)
    held = _verified_copies(catalog, scope)
    sizes = {r["bag_id"]: r["byte_count"] for r in scope.bags(catalog).select(["bag_id", "byte_count"]).to_pylist()}
    last = last_drills(catalog, library) if due else {}
    broken = getattr(config, "broken_policies", {})
    if due and every is None and broken:      # its drill_every cannot be known: never guess a cadence
        raise broken[sorted(broken)[0]].error()
    with Scratch(config.staging, report.run_id) as scratch:
        report.removed_stale = scratch.removed
        for name in names:
            run = TargetDrillRun(name, candidates=len(held.get(name, [])))
            report.targets.append(run)
            previous = last.get(name)
            cadence = every or cadence_of(config, name)
            if due and previous is not None and previous.at > now - cadence:
                run.skipped = (f"not due: last drilled {previous.at.isoformat()} "
                               f"(every {format_duration(cadence)})")
                continue
            chosen = choose(held.get(name, []), sizes, random.Random(f"{seed}/{name}"), sample, budget)
            if not chosen:
                run.skipped = "no bag with a verified copy here" + (f" of library {library}" if library else "")
                continue
            for bag in chosen:
                run.bags.append(_drill_one(config, catalog, scratch, report, bag, name, workers))
    return report


def cadence_of(config, target: str) -> _dt.timedelta:
    """The shortest `fixity.drill_every` of the policies keeping copies on `target` (DEFAULT_EVERY if none)."""
    named = [p.fixity.drill_every for p in config.policies.values() if target in p.replicas]
    return min(named) if named else DEFAULT_EVERY


def choose(bags: Sequence[str], sizes: Dict[str, int], rng: random.Random, sample: Optional[int],
           budget: Optional[int]) -> List[str]:
    """The bags to drill, drawn at random from `bags` (sorted first, so the seed alone decides)."""
    order = sorted(bags)
    rng.shuffle(order)
    if budget is None:
        return order[:sample or DEFAULT_SAMPLE]
    chosen, total = [], 0
    for bag in order:
        if total + sizes.get(bag, 0) <= budget:
            chosen.append(bag)
            total += sizes.get(bag, 0)
    if not chosen and order:          # every bag is bigger than the budget: the smallest still proves the copy
        chosen = [min(order, key=lambda b: (sizes.get(b, 0), b))]
    return chosen


def _verified_copies(catalog: Catalog, scope: LibraryScope) -> Dict[str, List[str]]:
    """target -> bags whose current copy there is verified (or repaired), in scope, not withdrawn."""
    table = scope.only_bags(catalog.replicas(), catalog)
    gone = withdrawn_bags(catalog)
    out: Dict[str, List[str]] = {}
    for row in table.select(["bag_id", "target", "state"]).to_pylist():
        if row["state"] in USABLE_STATES and row["bag_id"] not in gone:
            out.setdefault(row["target"], []).append(row["bag_id"])
    return out


def _drill_one(config, catalog: Catalog, scratch: Scratch, report: DrillReport, bag: str, target: str,
               workers: int) -> BagDrill:
    """Restore `bag` from `target` alone into a scratch folder, verified; record; remove the folder."""
    result = BagDrill(bag, target, "failure")

    def record_as(restored: RestoreResult, reason: Optional[str]) -> EventRecord:
        if reason is None:
            detail = success_detail(report.run_id, report.seed, target, restored.files, restored.bytes)
        else:
            detail = failure_detail(report.run_id, report.seed, target, reason)
        return EventRecord(DRILL_EVENT, "success" if reason is None else "failure", detail=detail[:DETAIL_MAX],
                           agent=AGENT, object_type="replica", bag_id=bag, target=target)

    index = sum(len(t.bags) for t in report.targets)
    folder = scratch.bag_folder(index)
    try:
        job = None
        try:
            job = prepare(config, catalog, BagId.parse(bag), folder, None, payload_only=False, from_target=target,
                          workers=workers, progress=None, partial=False, tmp=folder, only_from=True,
                          record_as=record_as)
            event = job.build()
        except (RestoreError, PreservationError, UsageError) as exc:
            result.problems = [str(exc)] + [str(p) for p in getattr(exc, "problems", [])]
            if job is None:            # refused before anything was read: recorded here
                event = record_as(RestoreResult(bag, str(folder), False), str(exc))
                catalog.append_events([event])
                result.event_id = event.event_id
            else:                      # the restore recorded the failure (its record_as event) itself
                result.event_id = job.result.events[-1] if job.result.events else None   # its event is last
                result.damaged = target in job.result.damaged
            return result
        catalog.append_events([event])
        result.outcome, result.files, result.bytes = "success", job.result.files, job.result.bytes
        result.event_id = event.event_id
        report.warnings.extend(f"{bag} on {target}: {w}" for w in job.result.warnings)
        return result
    finally:
        scratch.clear(folder)


__all__ = ["DEFAULT_EVERY", "DEFAULT_SAMPLE", "BagDrill", "TargetDrillRun", "DrillReport", "run_drill", "choose",
           "new_run_id", "cadence_of"]
