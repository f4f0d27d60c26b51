"""The fixity report, for auditors: every audit event of the period, per bag and copy, with
its outcome, the damage found and how it was repaired, the copies never or not recently
audited, and the ledger's verification with its head hash at report time.

Its CSV and JSON forms list one row per event (`events`), so an auditor can re-count every
total from the rows. Audit events are "fixity check" events (audits, and verification after
copying, which is a deep check too) and repair events (`reports.preservation.repair_mask`:
"replication"/"deletion" whose detail starts "repair:", as fixity.repair writes them, and
"repair"/"recovery"); the `repair` column marks the latter. A failed fixity check counts as
*repaired* by the first successful repair event of the same bag and copy at or after it (and of
the same file, when both name one); `repaired_at` is empty when there is none. Bag-level
failures (no copy named) are never matched: nothing repairs "no good copy".

Counting damage (the figures every section agrees on, defined on the page as well): an audit
records a damaged file twice, once in the copy's summary event and once for the file, and
finds it again on every later audit until it is repaired. So a *damage* is one thing found
damaged in the period, counted once however often it was found: a file of a copy (bag,
target, path), or a whole copy or bag when no file is named. The `damage` column marks the
events that count (a copy's summary failure does not when the same copy has file failures in
the period); `damage_found` is the number of distinct (bag_id, target, path) among them.
`damage_repaired` counts those whose latest finding was repaired afterwards (a file repaired
and then found damaged again is not repaired). `repairs` counts successful repair events,
which include extra files set aside, so they can outnumber the damage repaired.

Damage outlives the period it was found in: `open_findings` lists every finding outstanding at
report time (catalog.findings, the same rows as the preservation report), whatever --since and
--until select, so an audit window that starts after a file was found damaged (and left so)
still shows it. The HTML form shows them first, the JSON form as `open_findings` (their count in
`summary`); the CSV form stays one row per event of the period (the preservation report's CSV
carries the findings as its `open_finding` rows).

The last restore drill per target (`catalog.drills.last_drills`, whatever the period): HTML
section `drills`, JSON key `drills`.

Coverage (`catalog.coverage`, at report time whatever the period): per target, the share of the
files and bytes held that a deep check re-read within 90 and 365 days, beside the cadence's
target. HTML section `coverage`, JSON key `coverage`; the CSV form writes it beside the events
CSV as `NAME-coverage.csv` (COVERAGE_COLUMNS), the events CSV staying one row per event.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field, fields
from typing import Any, Dict, Iterator, List, Optional

import pyarrow as pa
import pyarrow.compute as pc

from catalog.access import open_catalog
from catalog.catalog import Catalog
from catalog.coverage import WINDOWS, Coverage, coverage
from catalog.drills import TargetDrill, last_drills
from catalog.ledger import verify_store
from catalog.tombstones import without_withdrawn
from reports.common import Scope, in_period, lookup, make_scope, plain, select_bags
from reports.preservation import (AUDIT_TYPE, Ledger, attach_findings, copies_table, finding_rows, repair_mask,
                                  scope_events)
from reports.status import GOOD_STATES

CHUNK_ROWS = 10_000

EVENT_COLUMNS = ["event_id", "datetime", "type", "outcome", "library", "collection", "bag_id", "target", "site",
                 "object_type", "path", "agent", "operator", "agent_library", "software", "detail", "repair", "damage", "repaired_at", "repair_event_id",
                 "repair_type"]


@dataclass
class FixityReport:
    kind: str
    catalog: str
    generated_at: _dt.datetime
    scope: Scope
    ledger: Ledger
    summary: Dict[str, int]
    by_type: List[Dict[str, Any]]          # type, outcome, events
    by_month: List[Dict[str, Any]]         # month (YYYY-MM), outcome, events (fixity checks)
    per_copy: List[Dict[str, Any]]         # one row per copy: audits in the period by outcome, state now
    damage: List[Dict[str, Any]]           # each distinct damage of the period once (damage_items), its repair if any
    not_audited: List[Dict[str, Any]]      # copies never audited, overdue, or not audited in the period
    open_findings: List[Dict[str, Any]]    # every outstanding finding now, whatever the period (preservation.finding_rows)
    events: pa.Table                       # one row per audit or repair event in the period (EVENT_COLUMNS)
    coverage: Optional[Coverage] = None    # per target: re-read in full in 90/365 days (catalog.coverage), at report time
    drills: Dict[str, TargetDrill] = field(default_factory=dict)   # per target: its last restore drill (catalog.drills)

    def to_dict(self, events: bool = True) -> Dict[str, Any]:
        """Plain values; `events=False` leaves the rows out (writers stream them: event_rows)."""
        data = {f.name: plain(getattr(self, f.name)) for f in fields(self) if f.name != "events"}
        data["scope"] = self.scope.to_dict()
        data["coverage"] = None if self.coverage is None else self.coverage.to_dict()
        data["drills"] = {name: d.to_dict() for name, d in self.drills.items()}
        if events:
            data["events"] = [row for chunk in self.event_rows() for row in chunk]
        return data

    def event_rows(self, chunk: int = CHUNK_ROWS) -> Iterator[List[Dict[str, Any]]]:
        """The event rows as plain dicts, a chunk at a time (never all 100,000 as Python objects)."""
        for batch in self.events.to_batches(max_chunksize=chunk):
            yield batch.to_pylist()

    def drill_rows(self) -> List[tuple]:
        """(target, site, its last drill) per drilled target, for the HTML (reports/templates/drills.html)."""
        sites = {t.target: t.site for t in self.coverage.targets} if self.coverage is not None else {}
        return [(name, sites.get(name), d) for name, d in self.drills.items()]

    def latest_events(self, n: int) -> List[Dict[str, Any]]:
        """The newest n rows, newest first (what the HTML form shows)."""
        start = max(self.events.num_rows - n, 0)
        return list(reversed(self.events.slice(start).to_pylist()))


def build_fixity(config, catalog: Optional[Catalog] = None, scope: Optional[Scope] = None) -> FixityReport:
    catalog = catalog if catalog is not None else open_catalog(config)
    scope = scope or make_scope()
    bags = select_bags(catalog, scope)
    # K4: a withdrawn bag's audits and repairs stay in the history; it has no copies any more
    copies = copies_table(config, catalog, without_withdrawn(catalog, bags), scope.now)
    events = scope_events(catalog, bags, scope)
    events = events.append_column("repair", repair_mask(events))
    wanted = pc.or_(pc.equal(events.column("type"), AUDIT_TYPE), events.column("repair"))
    events = in_period(events.filter(wanted), "datetime", scope)
    events = lookup(events, ["bag_id"], bags, ["bag_id"], ["library", "collection"])
    events = lookup(events, ["bag_id", "target"], copies, ["bag_id", "target"], ["site"])
    events = _with_repairs(events).sort_by([("datetime", "ascending"), ("event_id", "ascending")])
    ledger = Ledger.of(verify_store(catalog.store))

    is_check = pc.equal(events.column("type"), AUDIT_TYPE)
    outcome = events.column("outcome")
    checks = events.filter(is_check)
    per_copy = _per_copy(copies, checks)
    not_audited = [r for r in per_copy if r["never_audited"] or r["overdue_deep"] or r["overdue_quick"]
                   or (r["audits"] == 0 and r["state"] in GOOD_STATES)]
    repairs = pc.and_(events.column("repair"), pc.equal(outcome, "success"))
    findings = finding_rows(catalog, copies)
    attach_findings(per_copy, findings)
    items = damage_items(events)
    summary = {
        "events": events.num_rows,
        "fixity_checks": checks.num_rows,
        "passed": _count(pc.and_(is_check, pc.equal(outcome, "success"))),
        "failed": _count(pc.and_(is_check, pc.equal(outcome, "failure"))),
        "inconclusive": _count(pc.and_(is_check, pc.equal(outcome, "inconclusive"))),
        "repairs": _count(repairs),
        "damage_found": len(items),
        "damage_repaired": sum(1 for d in items if d["repaired_at"] is not None),
        "copies": copies.num_rows,
        "copies_audited": sum(1 for r in per_copy if r["audits"]),
        "copies_not_audited": len(not_audited),
        "copies_damaged_now": sum(1 for r in per_copy if r["state"] not in GOOD_STATES),
        "open_findings": len(findings),
        "bags": bags.num_rows,
    }
    return FixityReport(
        kind="fixity", catalog=catalog.location, generated_at=scope.now, scope=scope, ledger=ledger,
        summary=summary, by_type=_group_count(events, ["type", "outcome"]),
        by_month=_group_count(checks.append_column("month", pc.strftime(checks.column("datetime"), "%Y-%m")),
                              ["month", "outcome"]) if checks.num_rows else [],
        per_copy=per_copy, damage=items, not_audited=not_audited,
        open_findings=findings, events=events.select(EVENT_COLUMNS),
        coverage=coverage(config, catalog, library=scope.library, collection=scope.collection, now=scope.now),
        drills=last_drills(catalog, scope.library))


COVERAGE_COLUMNS = ["target", "site", "tier", "held_copies", "held_files", "held_bytes", "good_copies", "never_deep",
                    *[f"{w}_{d}d" for d in WINDOWS for w in ("files", "bytes", "files_pct", "bytes_pct",
                                                             "expected_pct")], "cadence"]


def coverage_csv_path(path):
    """Where the CSV form puts the coverage table: beside the events CSV (one row per event, so
    it cannot hold a second table), `NAME-coverage.csv`."""
    return path.with_name(f"{path.stem}-coverage{path.suffix or '.csv'}")


def coverage_rows(report: "FixityReport") -> Iterator[List[Any]]:
    """The coverage CSV: a header, then one row per target and an "*" row for all targets."""
    yield COVERAGE_COLUMNS
    if report.coverage is None:
        return
    for t in [*report.coverage.targets, report.coverage.total]:
        row: Dict[str, Any] = {c: getattr(t, c, None) for c in COVERAGE_COLUMNS}
        for d in WINDOWS:
            w = t.windows[d]
            for name in ("files", "bytes", "files_pct", "bytes_pct", "expected_pct"):
                row[f"{name}_{d}d"] = getattr(w, name)
        yield ["" if row[c] is None else row[c] for c in COVERAGE_COLUMNS]


def _count(mask) -> int:
    return int(pc.sum(pc.cast(mask, pa.int64())).as_py() or 0)


def _group_count(table: pa.Table, keys: List[str]) -> List[Dict[str, Any]]:
    if table.num_rows == 0:
        return []
    agg = table.group_by(keys).aggregate([([], "count_all")]).sort_by([(k, "ascending") for k in keys])
    return agg.rename_columns(keys + ["events"]).to_pylist()


DAMAGE_KEYS = ["bag_id", "target", "path"]


def damage_items(events: pa.Table) -> List[Dict[str, Any]]:
    """Each distinct damage of the period once (see the module doc): bag_id, target, path (None
    for a whole copy or bag), first_found, last_found, times_found, the latest finding's detail
    and its repair (repaired_at, repair_event_id, repair_type; None when not repaired)."""
    found = events.filter(events.column("damage"))
    if found.num_rows == 0:
        return []
    found = found.append_column("key", _null_safe_key(found, DAMAGE_KEYS))
    agg = found.group_by(["key"]).aggregate([("datetime", "min"), ("datetime", "max"), ([], "count_all")])
    agg = agg.rename_columns(["key", "first_found", "last_found", "times_found"])
    latest = found.join(agg, "key", join_type="inner")
    latest = latest.filter(pc.equal(latest.column("datetime"), latest.column("last_found")))
    # One row per damage: of several findings at the same last instant, the greatest event id.
    latest = latest.sort_by([("key", "ascending"), ("event_id", "descending")])
    rows, seen = [], set()
    for r in latest.select(["key", *DAMAGE_KEYS, "library", "collection", "site", "first_found", "last_found",
                            "times_found", "detail", "event_id", "repaired_at", "repair_event_id",
                            "repair_type"]).to_pylist():
        if r["key"] in seen:
            continue
        seen.add(r.pop("key"))
        rows.append(r)
    return sorted(rows, key=lambda r: (r["first_found"], r["bag_id"], r["target"] or "", r["path"] or ""))


def _null_safe_key(table: pa.Table, keys: List[str]) -> pa.Array:
    """One string key over columns that may be null (null as empty), so nulls group and join."""
    cols = [pc.fill_null(table.column(k), "") for k in keys]
    key = pc.binary_join_element_wise(*cols, "\x1f")
    return key.combine_chunks() if isinstance(key, pa.ChunkedArray) else key


def _with_repairs(events: pa.Table) -> pa.Table:
    """Add damage (a failed fixity check that counts as damage: not a copy's summary when the
    same copy has file failures in the period), repaired_at, repair_event_id, repair_type."""
    failed = pc.and_(pc.equal(events.column("type"), AUDIT_TYPE), pc.equal(events.column("outcome"), "failure"))
    copy_key = _null_safe_key(events, ["bag_id", "target"])
    with_file = pc.and_(failed, pc.is_valid(events.column("path")))
    file_copies = pc.unique(copy_key.filter(pc.fill_null(with_file, False)))
    summary = pc.and_(pc.and_(failed, pc.is_null(events.column("path"))), pc.is_valid(events.column("target")))
    superseded = pc.and_(summary, pc.is_in(copy_key, value_set=file_copies))
    damage = pc.fill_null(pc.and_(failed, pc.invert(superseded)), False)
    events = events.append_column("damage", damage)
    fails = events.filter(damage).select(["event_id", "bag_id", "target", "path", "datetime"])
    fails = fails.rename_columns(["fail_id", "bag_id", "target", "fail_path", "fail_at"])
    rep_mask = pc.and_(events.column("repair"), pc.equal(events.column("outcome"), "success"))
    reps = events.filter(rep_mask).select(["event_id", "bag_id", "target", "path", "datetime", "type"])
    reps = reps.rename_columns(["repair_event_id", "bag_id", "target", "repair_path", "repaired_at", "repair_type"])
    empty = pa.table({"fail_id": pa.array([], pa.string()), "repaired_at": pa.array([], events.schema.field("datetime").type),
                      "repair_event_id": pa.array([], pa.string()), "repair_type": pa.array([], pa.string())})
    matched = empty
    if fails.num_rows and reps.num_rows:
        pairs = fails.join(reps, ["bag_id", "target"], join_type="inner")
        ok = pc.and_(pc.greater_equal(pairs.column("repaired_at"), pairs.column("fail_at")),
                     pc.or_(pc.or_(pc.is_null(pairs.column("fail_path")), pc.is_null(pairs.column("repair_path"))),
                            pc.fill_null(pc.equal(pairs.column("fail_path"), pairs.column("repair_path")), False)))
        pairs = pairs.filter(pc.fill_null(ok, False))
        if pairs.num_rows:
            first = pairs.group_by(["fail_id"]).aggregate([("repaired_at", "min")])
            first = first.rename_columns(["fail_id", "repaired_at"])
            pairs = pairs.join(first, ["fail_id", "repaired_at"], join_type="inner")
            pick = pairs.group_by(["fail_id", "repaired_at"]).aggregate([("repair_event_id", "min"),
                                                                         ("repair_type", "min")])
            matched = pick.rename_columns(["fail_id", "repaired_at", "repair_event_id", "repair_type"])
    matched = matched.rename_columns(["event_id", "repaired_at", "repair_event_id", "repair_type"])
    return lookup(events, ["event_id"], matched, ["event_id"], ["repaired_at", "repair_event_id", "repair_type"])


def _per_copy(copies: pa.Table, checks: pa.Table) -> List[Dict[str, Any]]:
    """Every copy in scope with its fixity checks in the period, by outcome, and its state now."""
    if copies.num_rows == 0:
        return []
    if checks.num_rows:
        table = pa.table({
            "bag_id": checks.column("bag_id"), "target": checks.column("target"), "datetime": checks.column("datetime"),
            **{o: pc.cast(pc.equal(checks.column("outcome"), o), pa.int64())
               for o in ("success", "failure", "inconclusive", "warning")}})
        agg = table.group_by(["bag_id", "target"]).aggregate(
            [([], "count_all"), ("datetime", "max")] + [(o, "sum") for o in ("success", "failure", "inconclusive",
                                                                             "warning")])
        agg = agg.rename_columns(["bag_id", "target", "audits", "last_in_period", "passed", "failed", "inconclusive",
                                  "warning"])
        rows = copies.join(agg, ["bag_id", "target"], join_type="left outer")
    else:
        rows = copies
        for name, typ in (("audits", pa.int64()), ("last_in_period", copies.schema.field("last_check_at").type),
                          ("passed", pa.int64()), ("failed", pa.int64()), ("inconclusive", pa.int64()),
                          ("warning", pa.int64())):
            rows = rows.append_column(name, pa.nulls(rows.num_rows, typ))
    for name in ("audits", "passed", "failed", "inconclusive", "warning"):
        rows = rows.set_column(rows.schema.get_field_index(name), name, pc.fill_null(rows.column(name), 0))
    rows = rows.append_column("never_audited", pc.is_null(rows.column("last_check_at")))
    rows = rows.sort_by([("bag_id", "ascending"), ("order", "ascending"), ("target", "ascending")])
    return rows.select(["bag_id", "library", "collection", "target", "site", "state", "audits", "passed", "failed",
                        "inconclusive", "warning", "last_in_period", "last_deep_at", "last_quick_at",
                        "last_check_at", "deep_due_at", "quick_due_at", "overdue_deep", "overdue_quick",
                        "never_audited"]).to_pylist()
