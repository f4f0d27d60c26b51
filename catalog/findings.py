"""Open findings: the damage (and the doubt) the archive has now, whatever the last audit run looked at.

Why this exists: an audit run only reports what it selected. A copy an earlier run found
damaged and could not repair (no good copy), or that `audit --no-repair` left damaged, is not
due again for a while, so the next `audit --due` used to report "Nothing is due." and exit 0,
and `latest.json` went green. Every audit run and `strongroom status` therefore read the open
findings from the catalog instead: the copies whose *current* replica record is in a problem
state (damaged, missing, failed, disputed) or whose last audit was inconclusive.

What one finding is (bag, copy, file, kind, since when) comes from the ledger, not from the
replica record's `detail` text, which is a human summary (and which a later quick check used to
overwrite): every file an audit finds damaged is a `fixity check` event of object type `file`
with the file's path and a detail starting with the finding's kind (`corrupted: ...`), at the
time of the check. For one copy (bag x target), only the events of its *current bad run* count:
the records of the replica log since its last good record. Within that run a file's finding is
resolved by a later successful repair of that file (`replication`/`deletion` whose detail starts
`repair:`) or by a later conclusive deep audit that no longer reports it. `since` is the first
time the file was found so in the run. A copy in a bad state with no open file finding (the bag
missing, a failed deposit step, a restore that refused it) gives one copy-level finding whose
detail is that of the record that made the copy bad, not of a later quick check.

Cost: the replica log of the problem copies and the ledger events of their bags since their
runs began; nothing is read when every copy is well.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import pyarrow as pa
import pyarrow.compute as pc

#: Replica states that are damage or doubt (status flags them, audit exits 1 while any remains).
PROBLEM_STATES = ("damaged", "missing", "failed", "disputed")
INCONCLUSIVE = "inconclusive"
AUDIT_EVENT = "fixity check"
REPAIR_EVENTS = ("replication", "deletion")
REPAIR_PREFIX = "repair:"
AUDIT_SUMMARY_PREFIX = "audit "   # fixity.repair.DETAIL_PREFIX: a copy's audit summary event/record
BAG_MISSING = "bag-missing"
#: Bags read one query each up to this many; more and the events are read once and filtered.
PER_BAG_QUERIES = 20


@dataclass(frozen=True)
class OpenFinding:
    """One outstanding problem: a file (or a whole copy, path None) of a bag on one target."""

    bag: str
    target: Optional[str]
    site: Optional[str]
    state: str                     # the copy's current state (damaged, missing, failed, disputed, verified...)
    kind: str                      # corrupted, missing, truncated, ..., bag-missing, unreadable, inconclusive, ...
    path: Optional[str]            # the file within the bag, None for the copy as a whole
    detail: str
    since: Optional[_dt.datetime]  # first found so (in the copy's current bad run)
    checked_at: Optional[_dt.datetime]  # the newest check that found it
    no_good_copy: bool = False     # an audit found no copy to repair this file from

    def to_dict(self) -> Dict[str, Any]:
        return {"bag": self.bag, "target": self.target, "site": self.site, "state": self.state, "kind": self.kind,
                "path": self.path, "detail": self.detail, "since": _iso(self.since),
                "checked_at": _iso(self.checked_at), "no_good_copy": self.no_good_copy}

    def line(self) -> str:
        """One line for people: bag target: kind path (detail), since when."""
        what = f"{self.kind} {self.path}" if self.path else self.kind
        extra = " (no good copy to repair from)" if self.no_good_copy else ""
        since = f", since {_when(self.since)}" if self.since else ""
        text = f"{self.bag} {self.target or '(all copies)'}: {what}{extra}{since}"
        detail = self.detail.strip()
        return f"{text}: {detail}" if detail else text


def _iso(value: Optional[_dt.datetime]) -> Optional[str]:
    return None if value is None else value.astimezone(_dt.timezone.utc).isoformat().replace("+00:00", "Z")


def _when(value: _dt.datetime) -> str:
    return value.astimezone(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def is_problem(state: Optional[str], outcome: Optional[str]) -> bool:
    """A copy whose current record is damage or doubt."""
    return state in PROBLEM_STATES or (outcome == INCONCLUSIVE and state is not None)


@dataclass(frozen=True)
class OpenCopy:
    """A copy with open findings: since when it is in trouble, the detail of the record that put
    it there (not of a later passing quick check), and its findings."""

    bag: str
    target: str
    state: str
    since: Optional[_dt.datetime]
    detail: str
    findings: Tuple[OpenFinding, ...]


def open_copies(catalog, rows: Iterable[Mapping[str, Any]]) -> Dict[Tuple[str, str], OpenCopy]:
    """The copies in `rows` (rows of `reports.status.replica_table`, or any mappings with bag_id,
    target, site, state, detail, recorded_at, last_audit_at, last_audit_outcome) that have open
    findings, by (bag, target)."""
    problems = [dict(r) for r in rows if is_problem(r.get("state"), r.get("last_audit_outcome"))]
    if not problems:
        return {}
    bag_ids = sorted({r["bag_id"] for r in problems})
    wanted = {(r["bag_id"], r["target"]) for r in problems}
    history = _histories(catalog, bag_ids, wanted)
    runs = {}
    for r in problems:
        key = (r["bag_id"], r["target"])
        runs[key] = _bad_run(history.get(key, []), inconclusive_only=r["state"] not in PROBLEM_STATES)
    lowers = [low for low, _ in runs.values()]
    since = None if any(low is None for low in lowers) else min(lowers)
    events = _events(catalog, bag_ids, since)
    out: Dict[Tuple[str, str], OpenCopy] = {}
    for r in problems:
        key = (r["bag_id"], r["target"])
        lower, run = runs[key]
        mine = [e for e in events.get(key, []) if lower is None or e["datetime"] > lower]
        bag_events = [e for e in events.get((r["bag_id"], None), []) if lower is None or e["datetime"] > lower]
        found = sorted(_copy_findings(r, run, mine, bag_events), key=lambda f: (f.path or "", f.kind))
        record = _bad_record(run) if r["state"] in PROBLEM_STATES else (run[-1] if run else None)
        first = run[0]["recorded_at"] if run else r.get("recorded_at")
        times = [f.since for f in found if f.since is not None] + ([first] if first is not None else [])
        out[key] = OpenCopy(bag=r["bag_id"], target=r["target"], state=r["state"], since=min(times) if times else None,
                            detail=((record or {}).get("detail") or r.get("detail") or ""), findings=tuple(found))
    return out


def open_findings(catalog, rows: Iterable[Mapping[str, Any]]) -> List[OpenFinding]:
    """Every open finding of the copies in `rows` (see `open_copies`), sorted by bag, target, path."""
    out = [f for c in open_copies(catalog, rows).values() for f in c.findings]
    out.sort(key=lambda f: (f.bag, f.target or "", f.path or "", f.kind))
    return out


# --------------------------------------------------------------------------------------------


def _bad(rec: Mapping[str, Any]) -> bool:
    return rec.get("state") in PROBLEM_STATES


def _histories(catalog, bag_ids: Sequence[str], wanted) -> Dict[Tuple[str, str], List[Dict[str, Any]]]:
    """The replica log of the wanted copies, oldest record first."""
    log = catalog.replicas(bag_ids[0], current=False) if len(bag_ids) == 1 else catalog.replicas(current=False)
    if len(bag_ids) > 1:
        log = log.filter(pc.is_in(log.column("bag_id"), value_set=pa.array(bag_ids, pa.string())))
    cols = [c for c in ("bag_id", "target", "state", "detail", "recorded_at", "last_audit_at", "last_audit_kind",
                        "last_audit_outcome") if c in log.column_names]
    out: Dict[Tuple[str, str], List[Dict[str, Any]]] = {}
    for rec in log.select(cols).to_pylist():
        key = (rec["bag_id"], rec["target"])
        if key in wanted:
            out.setdefault(key, []).append(rec)
    for recs in out.values():
        recs.sort(key=lambda x: (x["recorded_at"] is None, x["recorded_at"] or _dt.datetime.min))
    return out


def _bad_run(recs: List[Dict[str, Any]], *, inconclusive_only: bool
             ) -> Tuple[Optional[_dt.datetime], List[Dict[str, Any]]]:
    """(recorded_at of the last record before the run or None, the run's records oldest first).

    The run of a copy in a problem state: its trailing records in a problem state. The run of a
    good copy whose last audit was inconclusive: its trailing inconclusive records."""
    def inside(rec: Mapping[str, Any]) -> bool:
        if inconclusive_only:
            return rec.get("last_audit_outcome") == INCONCLUSIVE and not _bad(rec)
        return _bad(rec)

    i = len(recs)
    while i > 0 and inside(recs[i - 1]):
        i -= 1
    lower = recs[i - 1]["recorded_at"] if i > 0 else None
    return lower, recs[i:]


def _events(catalog, bag_ids: Sequence[str], since: Optional[_dt.datetime]
            ) -> Dict[Tuple[str, Optional[str]], List[Dict[str, Any]]]:
    """Audit and repair events of the bags since `since`, by (bag, target), oldest first."""
    types = [AUDIT_EVENT, *REPAIR_EVENTS]
    cols = ["bag_id", "target", "type", "outcome", "object_type", "path", "detail", "datetime"]
    tables = []
    if len(bag_ids) <= PER_BAG_QUERIES:
        for bag in bag_ids:
            tables.append(catalog.events(bag_id=bag, since=since, type=types).select(cols))
    else:
        t = catalog.events(since=since, type=types)
        tables.append(t.filter(pc.fill_null(pc.is_in(t.column("bag_id"), value_set=pa.array(bag_ids, pa.string())),
                                            False)).select(cols))
    out: Dict[Tuple[str, Optional[str]], List[Dict[str, Any]]] = {}
    for table in tables:
        for e in table.to_pylist():
            out.setdefault((e["bag_id"], e["target"]), []).append(e)
    for evs in out.values():
        evs.sort(key=lambda e: e["datetime"])
    return out


def _kind_and_text(detail: Optional[str]) -> Tuple[str, str]:
    kind, sep, text = (detail or "").partition(": ")
    if not sep or not kind or " " in kind:
        return "", detail or ""
    return kind, text


def _copy_findings(r: Mapping[str, Any], run: List[Dict[str, Any]], events: List[Dict[str, Any]],
                   bag_events: List[Dict[str, Any]]) -> List[OpenFinding]:
    bag, target, state = r["bag_id"], r["target"], r["state"]
    site = r.get("site")
    current_outcome = r.get("last_audit_outcome")
    last_audit = r.get("last_audit_at")
    deep_times = [rec["last_audit_at"] for rec in run if rec.get("last_audit_kind") == "deep"
                  and rec.get("last_audit_outcome") in ("success", "failure") and rec.get("last_audit_at")]
    no_good = {e["path"] for e in bag_events if e["type"] == AUDIT_EVENT and e["outcome"] == "failure"
               and (e["detail"] or "").startswith("no-good-copy") and e["path"]}

    by_path: Dict[str, List[Dict[str, Any]]] = {}
    repaired_at: Dict[str, _dt.datetime] = {}
    copy_level: List[Dict[str, Any]] = []
    inconclusive_files: List[Dict[str, Any]] = []
    for e in events:
        if e["type"] in REPAIR_EVENTS:
            if e["outcome"] == "success" and (e["detail"] or "").startswith(REPAIR_PREFIX) and e["path"]:
                repaired_at[e["path"]] = max(e["datetime"], repaired_at.get(e["path"], e["datetime"]))
            continue
        if e["type"] != AUDIT_EVENT:
            continue
        if e["outcome"] == "failure" and e["object_type"] == "file" and e["path"]:
            by_path.setdefault(e["path"], []).append(e)
        elif e["outcome"] == "failure" and e["object_type"] == "replica" \
                and not (e["detail"] or "").startswith(AUDIT_SUMMARY_PREFIX):
            copy_level.append(e)   # the copy as a whole (its bag missing), not the audit's summary
        elif e["outcome"] == INCONCLUSIVE and e["object_type"] == "file" and e["path"] \
                and last_audit is not None and e["datetime"] == last_audit and current_outcome == INCONCLUSIVE:
            inconclusive_files.append(e)

    out: List[OpenFinding] = []
    if state in PROBLEM_STATES:
        for path, found in by_path.items():
            newest = found[-1]
            fixed = repaired_at.get(path)
            if fixed is not None and fixed >= newest["datetime"]:
                continue
            if any(t > newest["datetime"] for t in deep_times):
                continue  # a later deep audit re-read the copy and no longer found it
            first = min(e["datetime"] for e in found if fixed is None or e["datetime"] > fixed)
            kind, text = _kind_and_text(newest["detail"])
            out.append(OpenFinding(bag=bag, target=target, site=site, state=state, kind=kind or state, path=path,
                                   detail=text, since=first, checked_at=newest["datetime"],
                                   no_good_copy=path in no_good))
    for e in inconclusive_files:
        kind, text = _kind_and_text(e["detail"])
        out.append(OpenFinding(bag=bag, target=target, site=site, state=state, kind=kind or INCONCLUSIVE,
                               path=e["path"], detail=text, since=_inconclusive_since(run, e["datetime"]),
                               checked_at=e["datetime"]))
    if out:
        return out
    # Nothing file by file: one finding for the copy as a whole.
    if state in PROBLEM_STATES:
        whole = [e for e in copy_level if not any(t > e["datetime"] for t in deep_times)]
        if whole:
            kind, text = _kind_and_text(whole[-1]["detail"])
            kind = kind or (BAG_MISSING if state == "missing" else state)
            return [OpenFinding(bag=bag, target=target, site=site, state=state, kind=kind, path=None, detail=text,
                                since=whole[0]["datetime"], checked_at=whole[-1]["datetime"])]
        record = _bad_record(run)
        since = run[0]["recorded_at"] if run else r.get("recorded_at")
        detail = (record or {}).get("detail") or r.get("detail") or ""
        return [OpenFinding(bag=bag, target=target, site=site, state=state, kind=state, path=None, detail=detail,
                            since=since, checked_at=(record or {}).get("last_audit_at"))]
    return [OpenFinding(bag=bag, target=target, site=site, state=state, kind=INCONCLUSIVE, path=None,
                        detail=r.get("detail") or "", since=_inconclusive_since(run, last_audit),
                        checked_at=last_audit)]


def _bad_record(run: List[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    """The record that says why the copy is bad: the newest of its run that is not a passing
    (quick) check, else the first of the run."""
    for rec in reversed(run):
        if rec.get("last_audit_outcome") != "success":
            return rec
    return run[0] if run else None


def _inconclusive_since(run: List[Dict[str, Any]], fallback: Optional[_dt.datetime]) -> Optional[_dt.datetime]:
    times = [rec["last_audit_at"] for rec in run
             if rec.get("last_audit_outcome") == INCONCLUSIVE and rec.get("last_audit_at") is not None]
    return min(times) if times else fallback


__all__ = ["OpenFinding", "OpenCopy", "open_copies", "open_findings", "is_problem", "PROBLEM_STATES"]
