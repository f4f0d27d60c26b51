"""The preservation report: what is held, where its copies are and in what state, how it is
audited, what was repaired, and the NDSA level each collection reaches (see reports.ndsa).

Everything is computed from the catalog (bags, the replica-state log, the ledger), the file
aggregate (reports.scan: streamed, one row per collection x format) and the config. The
per-copy work is pyarrow joins and group-bys over the replica table of `reports.status` (whose
overdue rules this report shares, so `status` and the report never disagree); Python loops
run over collections, sites and policies only, never over files or events.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import pyarrow as pa
import pyarrow.compute as pc

from catalog.access import open_catalog
from catalog.catalog import Catalog
from catalog.findings import open_findings
from catalog.ledger import LedgerReport, verify_store
from catalog.schema import TIMESTAMP
from catalog.tombstones import without_withdrawn
from policies.units import format_duration
from reports import ndsa
from reports.common import Scope, in_period, lookup, plain, select_bags
from reports.governance_report import governance_section
from reports.scan import file_aggregate, sum_by
from reports.status import ABSENT, BAD_STATES, GOOD_STATES, UNVERIFIED_STATES, location_groups, replica_table

AUDIT_TYPE = "fixity check"
# How repairs appear in the ledger. Audits (fixity.repair) record a file replaced from a good copy
# as "replication" and an extra file removed as "deletion", each with a detail starting "repair:"
# (the LoC eventType vocabulary has no "repair"); "repair" itself and "recovery" (restore taking a
# file from another copy) count too. Other event types are shown as they are.
REPAIR_TYPES = ("repair", "recovery")
REPAIR_TAGGED_TYPES = ("replication", "deletion", "quarantine")
REPAIR_PREFIX = "repair:"
REPLICA_LIMIT_HTML = 200


@dataclass
class Ledger:
    ok: bool
    head_seq: Optional[int]
    head_hash: Optional[str]
    segments: int
    events: int
    problems: List[str]

    @classmethod
    def of(cls, report: LedgerReport) -> "Ledger":
        return cls(ok=report.ok, head_seq=report.head_seq, head_hash=report.head_hash, segments=report.segments,
                   events=report.events, problems=list(report.problems))


@dataclass
class PreservationReport:
    kind: str
    catalog: str
    generated_at: _dt.datetime
    scope: Scope
    ledger: Ledger
    totals: Dict[str, int]
    by_type: List[Dict[str, Any]]            # collection_type, bags, files, bytes
    collections: List[Dict[str, Any]]        # library, collection, types, policies, bags, files, bytes, copies{}
    copies_by_site: List[Dict[str, Any]]     # site, target, storage_type, state, copies
    retention: List[Dict[str, Any]]          # policy, mode, years, targets[{target, type, object_lock}]
    audits: List[Dict[str, Any]]             # per collection x target: cadences, oldest/newest audits, overdue
    replicas: List[Dict[str, Any]]           # one row per copy
    overdue: List[Dict[str, Any]]            # copies overdue for a deep or quick audit
    open_damage: List[Dict[str, Any]]        # copies damaged, failed, missing, absent or unverified
    repairs: List[Dict[str, Any]]            # repair events in the period
    events_by_type: List[Dict[str, Any]]     # type, outcome, events (in the period)
    ndsa: List[ndsa.CollectionAssessment]
    facts: List[ndsa.Facts]
    # Every open finding (catalog.findings: bag, target, file, kind, since) of the bags in scope,
    # whatever the period: damage stays in the report until a later check resolves it.
    open_findings: List[Dict[str, Any]] = field(default_factory=list)
    # The config's locations (location, targets, sites, shared_by: why its targets are one) and,
    # per collection, how many separate locations hold its good copies (the NDSA storage figures).
    locations: List[Dict[str, Any]] = field(default_factory=list)
    collection_locations: List[Dict[str, Any]] = field(default_factory=list)
    # Deposits that did not finish (ingest.deposit_states): failed, unfinished and abandoned ones,
    # whatever the period, so a deposit that never reached the archive is on the record.
    deposits: List[Dict[str, Any]] = field(default_factory=list)
    # Access states, entitlements and governance requests of the collections in scope
    # (reports.governance_report, issue 13).
    governance: Dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        data = plain(self)
        data["scope"] = self.scope.to_dict()
        return data


def target_table(config, names: List[str]) -> pa.Table:
    """target -> storage type and the site the config gives it ("unknown" for targets it no longer has)."""
    names = sorted(set(names) | set(config.storage))
    return pa.table({
        "target": pa.array(names, pa.string()),
        "storage_type": pa.array([config.storage[n].type if n in config.storage else "unknown" for n in names]),
        "object_lock": pa.array([bool(config.storage[n].options.get("object_lock")) if n in config.storage
                                 else False for n in names]),
    })


def copies_table(config, catalog: Catalog, bags: pa.Table, now: _dt.datetime) -> pa.Table:
    """status.replica_table plus library/collection, storage type, last quick audit and a `good` flag."""
    rt = replica_table(config, catalog, bags, now=now)
    rt = rt.join(bags.select(["bag_id", "library", "collection"]), "bag_id", join_type="left outer")
    rt = rt.join(target_table(config, pc.unique(rt.column("target")).to_pylist()), "target", join_type="left outer")
    rt = rt.join(_last_quick(catalog, bags), ["bag_id", "target"], join_type="left outer")
    good = pc.is_in(rt.column("state"), value_set=pa.array(GOOD_STATES))
    rt = rt.append_column("good", good)
    # Targets on one file system, in one bucket or on one site are one location (Config.location_of).
    rt = rt.append_column("location", pa.array([config.location_of(t) for t in rt.column("target").to_pylist()],
                                               pa.string()))
    rt = rt.set_column(rt.schema.get_field_index("storage_type"), "storage_type",
                       pc.coalesce(rt.column("storage_type"), pa.scalar("unknown")))
    return rt.sort_by([("bag_id", "ascending"), ("order", "ascending"), ("target", "ascending")])


def _last_quick(catalog: Catalog, bags: pa.Table) -> pa.Table:
    """Per (bag, target): the newest conclusive quick audit in the replica log."""
    log = catalog.replicas(current=False)
    log = log.filter(pc.is_in(log.column("bag_id"), value_set=bags.column("bag_id").combine_chunks()))
    quick = pc.and_(pc.fill_null(pc.equal(log.column("last_audit_kind"), "quick"), False),
                    pc.fill_null(pc.not_equal(log.column("last_audit_outcome"), "inconclusive"), True))
    at = pc.if_else(quick, log.column("last_audit_at"), pa.scalar(None, TIMESTAMP))
    table = pa.table({"bag_id": log.column("bag_id"), "target": log.column("target"), "last_quick_at": at})
    agg = table.group_by(["bag_id", "target"]).aggregate([("last_quick_at", "max")])
    return agg.rename_columns(["bag_id", "target", "last_quick_at"])


def repair_mask(events: pa.Table) -> pa.ChunkedArray:
    """True for the events that record a repair (see REPAIR_TYPES), whatever their outcome."""
    kind = events.column("type")
    tagged = pc.and_(pc.is_in(kind, value_set=pa.array(REPAIR_TAGGED_TYPES)),
                     pc.fill_null(pc.starts_with(events.column("detail"), REPAIR_PREFIX), False))
    return pc.or_(pc.is_in(kind, value_set=pa.array(REPAIR_TYPES)), tagged)


def scope_events(catalog: Catalog, bags: pa.Table, scope: Scope) -> pa.Table:
    """Every event of the bags in scope (all time); with no filter, events without a bag too."""
    events = catalog.events()
    ids = bags.column("bag_id").combine_chunks()
    mask = pc.is_in(events.column("bag_id"), value_set=ids)
    if scope.library is None and scope.collection is None:
        mask = pc.or_(pc.fill_null(mask, False), pc.is_null(events.column("bag_id")))
    return events.filter(pc.fill_null(mask, False))


def build_preservation(config, catalog: Optional[Catalog] = None, scope: Optional[Scope] = None) -> PreservationReport:
    from reports.common import make_scope

    catalog = catalog if catalog is not None else open_catalog(config)
    scope = scope or make_scope()
    everything = select_bags(catalog, scope)
    # K4: withdrawn bags are no longer holdings (their withdrawal is in the governance section)
    bags = without_withdrawn(catalog, everything)
    copies = copies_table(config, catalog, bags, scope.now)
    agg = file_aggregate(config, catalog, bags)
    events = scope_events(catalog, bags, scope)
    keyed_events = lookup(events, ["bag_id"], bags, ["bag_id"], ["library", "collection"])
    period = in_period(keyed_events, "datetime", scope)
    ledger = Ledger.of(verify_store(catalog.store))

    collections = _collections(bags, copies, config)
    facts = _facts(config, bags, copies, agg, keyed_events, period, ledger)
    ndsa.add_virus_facts(facts, keyed_events, scope.now)  # NDSA integrity 1: virus checks (ledger events)
    findings = finding_rows(catalog, copies)
    open_damage = [r for r in _replica_rows(copies) if r["state"] not in GOOD_STATES]
    attach_findings(open_damage, findings)
    totals = _totals(bags, copies)
    totals["open_findings"] = len(findings)
    deposits = deposit_rows(config, scope)
    for state in DEPOSIT_STATES:
        totals[f"deposits_{state}"] = sum(1 for d in deposits if d["state"] == state)
    return PreservationReport(
        kind="preservation", catalog=catalog.location, generated_at=scope.now, scope=scope, ledger=ledger,
        totals=totals,
        by_type=_by_type(bags),
        collections=collections,
        copies_by_site=_copies_by_site(copies),
        retention=_retention(config, bags),
        audits=_audits(copies),
        replicas=_replica_rows(copies),
        overdue=[r for r in _replica_rows(copies) if r["overdue_deep"] or r["overdue_quick"]],
        open_damage=open_damage,
        repairs=_event_rows(period.filter(repair_mask(period))),
        events_by_type=_counts(period, ["type", "outcome"], "events"),
        ndsa=[ndsa.assess(f) for f in facts],
        facts=facts,
        open_findings=findings,
        locations=locations(config),
        collection_locations=_collection_locations(facts),
        deposits=deposits,
        governance=governance_section(config, catalog, everything),
    )


FINDING_COLUMNS = ["bag", "library", "collection", "target", "site", "state", "kind", "path", "detail", "since",
                   "checked_at", "no_good_copy"]


def finding_rows(catalog: Catalog, copies: pa.Table) -> List[Dict[str, Any]]:
    """Every open finding of the copies (catalog.findings), with the bag's library and collection
    and its times as datetimes (the JSON form writes them as ISO 8601 UTC, like every time).
    `copies` is `copies_table`: the fixity report shares this, so both reports list the same."""
    where = {r["bag_id"]: (r["library"], r["collection"])
             for r in copies.select(["bag_id", "library", "collection"]).to_pylist()}
    out = []
    for f in open_findings(catalog, copies.to_pylist()):
        library, collection = where.get(f.bag, (None, None))
        row = {**f.to_dict(), "library": library, "collection": collection, "since": f.since,
               "checked_at": f.checked_at}
        out.append({c: row[c] for c in FINDING_COLUMNS})
    return out


DEPOSIT_STATES = ("failed", "abandoned", "unfinished")
DEPOSIT_COLUMNS = ["key", "state", "library", "collection", "source", "policy", "started_at", "stage", "bags",
                   "reason", "at", "by"]


def deposit_rows(config, scope: Scope) -> List[Dict[str, Any]]:
    """The deposits of the scope that did not finish: failed (a failure recorded), abandoned
    (`deposit --abandon`, with its reason) and unfinished, from the staging state folders."""
    from pathlib import Path

    from ingest.deposit_states import unfinished_deposits

    out = []
    for d in unfinished_deposits(Path(config.staging), library=scope.library, collection=scope.collection,
                                 include_abandoned=True):
        if d.abandoned is not None:
            state = "abandoned"
            reason, at, by = d.abandoned.get("reason") or d.abandoned.get("why"), d.abandoned.get("at"), \
                d.abandoned.get("by")
        elif d.failures:
            state, last = "failed", d.failures[-1]
            reason, at, by = f"{last.get('step')}: {last.get('message')}", None, None
        else:
            state, reason, at, by = "unfinished", None, None, None
        out.append({"key": d.key, "state": state, "library": d.library, "collection": d.collection,
                    "source": d.source, "policy": d.policy, "started_at": _when(d.started_at), "stage": d.stage,
                    "bags": [b["id"] for b in d.bags], "reason": reason, "at": _when(at), "by": by})
    never = _dt.datetime.min.replace(tzinfo=_dt.timezone.utc)
    return sorted(out, key=lambda r: (DEPOSIT_STATES.index(r["state"]), r["started_at"] or never, r["key"]))


def _when(text: Any) -> Optional[_dt.datetime]:
    """A state file's ISO time as an aware datetime (None when absent or not a time: it is only shown)."""
    try:
        when = _dt.datetime.fromisoformat(str(text).replace("Z", "+00:00")) if text else None
    except ValueError:
        return None
    return when.replace(tzinfo=_dt.timezone.utc) if when is not None and when.tzinfo is None else when


def attach_findings(rows: List[Dict[str, Any]], findings: List[Dict[str, Any]]) -> None:
    """Each copy's open findings (kind, path; None for the whole copy) as `findings`: what the
    Attention column says about a damaged copy, the same rows as the Open findings section."""
    by_copy: Dict[tuple, List[Dict[str, Any]]] = {}
    for f in findings:
        by_copy.setdefault((f["bag"], f["target"]), []).append({"kind": f["kind"], "path": f["path"]})
    for row in rows:
        row["findings"] = by_copy.get((row["bag_id"], row["target"]), [])


def locations(config) -> List[Dict[str, Any]]:
    """`status.location_groups` (location, targets, sites) plus `shared_by`: why the targets of
    a location are one ("file system": filesystem roots on one device; "bucket": S3 targets in one
    bucket of one endpoint; "site": the config gives them one site). Empty for a lone target."""
    out = []
    for group in location_groups(config):
        names = [n for n in group["targets"] if n in config.storage]
        why = set()
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                why.update(_shared_by(config.storage[a], config.storage[b]))
        out.append({**group, "shared_by": [w for w in SHARED_BY if w in why]})
    return out


SHARED_BY = ("file system", "bucket", "site")


def _shared_by(a, b) -> List[str]:
    """What two targets share that makes them one location (policies.config.find_locations' rules)."""
    import policies.locations as cfg   # at call time: tests stand in for its device lookup

    why = []
    if a.type == b.type == "filesystem" and a.root is not None and b.root is not None:
        dev = cfg._device(a.root)
        if dev is not None and dev == cfg._device(b.root):
            why.append("file system")
    if a.type == b.type == "s3" and (a.options.get("endpoint"), a.options.get("bucket")) == \
            (b.options.get("endpoint"), b.options.get("bucket")):
        why.append("bucket")
    if a.site == b.site:
        why.append("site")
    return why


def _collection_locations(facts: List[ndsa.Facts]) -> List[Dict[str, Any]]:
    """Per collection: good copies per bag and the separate locations they are in (fewest and
    most over its bags), from the same facts the NDSA storage levels are assessed on."""
    return [{"library": f.library, "collection": f.collection, "bags": f.bags,
             "good_copies_min": f.good_copies_min, "good_copies_max": f.good_copies_max,
             "locations_min": f.good_sites_min, "locations_max": f.good_sites_max, "locations": list(f.sites)}
            for f in facts]


# --------------------------------------------------------------------------------------------


def _totals(bags: pa.Table, copies: pa.Table) -> Dict[str, int]:
    good = copies.filter(copies.column("good"))
    return {"bags": bags.num_rows,
            "files": int(pc.sum(bags.column("file_count")).as_py() or 0),
            "bytes": int(pc.sum(bags.column("byte_count")).as_py() or 0),
            "copies": copies.num_rows, "verified_copies": good.num_rows,
            "collections": bags.group_by(["library", "collection"]).aggregate([]).num_rows}


def _counts(table: pa.Table, keys: List[str], name: str) -> List[Dict[str, Any]]:
    """Row counts per group, sorted by the keys, the count under `name`."""
    if table.num_rows == 0:
        return []
    agg = table.group_by(keys).aggregate([([], "count_all")]).sort_by([(k, "ascending") for k in keys])
    return agg.rename_columns(keys + [name]).to_pylist()


def _by_type(bags: pa.Table) -> List[Dict[str, Any]]:
    if bags.num_rows == 0:
        return []
    agg = bags.group_by(["collection_type"]).aggregate([([], "count_all"), ("file_count", "sum"), ("byte_count", "sum")])
    agg = agg.sort_by([("collection_type", "ascending")])
    return agg.rename_columns(["collection_type", "bags", "files", "bytes"]).to_pylist()


def _collections(bags: pa.Table, copies: pa.Table, config) -> List[Dict[str, Any]]:
    per = bags.group_by(["library", "collection"]).aggregate(
        [("bag_id", "count"), ("file_count", "sum"), ("byte_count", "sum"), ("policy", "distinct"),
         ("collection_type", "distinct")]).sort_by([("library", "ascending"), ("collection", "ascending")])
    states = copies.group_by(["library", "collection", "state"]).aggregate([("bag_id", "count")]).to_pylist()
    by_key: Dict[tuple, Dict[str, int]] = {}
    for row in states:
        by_key.setdefault((row["library"], row["collection"]), {})[row["state"]] = row["bag_id_count"]
    out = []
    for row in per.to_pylist():
        key = (row["library"], row["collection"])
        out.append({"library": row["library"], "collection": row["collection"],
                    "collection_types": sorted(row["collection_type_distinct"]),
                    "policies": sorted(row["policy_distinct"]), "bags": row["bag_id_count"],
                    "files": row["file_count_sum"] or 0, "bytes": row["byte_count_sum"] or 0,
                    "copies": dict(sorted(by_key.get(key, {}).items()))})
    return out


def _copies_by_site(copies: pa.Table) -> List[Dict[str, Any]]:
    table = copies.set_column(copies.schema.get_field_index("site"), "site",
                              pc.coalesce(copies.column("site"), pa.scalar("?")))
    return _counts(table, ["site", "target", "storage_type", "state"], "copies")


def _retention(config, bags: pa.Table) -> List[Dict[str, Any]]:
    used = sorted(pc.unique(bags.column("policy")).to_pylist())
    out = []
    for name in used:
        policy = config.policies.get(name)
        if policy is None:
            out.append({"policy": name, "known": False, "mode": None, "years": None, "targets": []})
            continue
        out.append({"policy": name, "known": True, "mode": policy.retention.mode, "years": policy.retention.years,
                    "targets": [{"target": t, "storage_type": config.storage[t].type if t in config.storage else "unknown",
                                 "object_lock": bool(config.storage[t].options.get("object_lock"))
                                 if t in config.storage else False,
                                 "deep_every": format_duration(config.cadence_for(policy, t).deep_every),
                                 "quick_every": format_duration(config.cadence_for(policy, t).quick_every)}
                                for t in policy.replicas]})
    return out


def _audits(copies: pa.Table) -> List[Dict[str, Any]]:
    """Per collection x target: oldest and newest last deep / quick audit, and overdue counts."""
    if copies.num_rows == 0:
        return []
    good = copies.filter(copies.column("good"))
    table = pa.table({
        "library": good.column("library"), "collection": good.column("collection"), "target": good.column("target"),
        "last_deep_at": good.column("last_deep_at"), "last_quick_at": good.column("last_quick_at"),
        "deep_every": good.column("deep_due_at"),
        "overdue_deep": pc.cast(good.column("overdue_deep"), pa.int64()),
        "overdue_quick": pc.cast(good.column("overdue_quick"), pa.int64()),
        "never_audited": pc.cast(pc.is_null(good.column("last_check_at")), pa.int64()),
    })
    agg = table.group_by(["library", "collection", "target"]).aggregate([
        ([], "count_all"), ("last_deep_at", "min"), ("last_deep_at", "max"), ("last_quick_at", "min"),
        ("last_quick_at", "max"), ("overdue_deep", "sum"), ("overdue_quick", "sum"), ("never_audited", "sum")])
    agg = agg.sort_by([("library", "ascending"), ("collection", "ascending"), ("target", "ascending")])
    return [{"library": r["library"], "collection": r["collection"], "target": r["target"],
             "verified_copies": r["count_all"],
             "last_deep_oldest": r["last_deep_at_min"], "last_deep_newest": r["last_deep_at_max"],
             "last_quick_oldest": r["last_quick_at_min"], "last_quick_newest": r["last_quick_at_max"],
             "overdue_deep": r["overdue_deep_sum"], "overdue_quick": r["overdue_quick_sum"],
             "never_audited": r["never_audited_sum"]} for r in agg.to_pylist()]


REPLICA_COLUMNS = ["bag_id", "library", "collection", "target", "site", "storage_type", "state", "in_policy",
                   "verified_at", "last_deep_at", "last_quick_at", "last_audit_kind", "last_audit_at",
                   "last_audit_outcome", "deep_due_at", "quick_due_at", "overdue_deep", "overdue_quick", "detail"]


def _replica_rows(copies: pa.Table) -> List[Dict[str, Any]]:
    return copies.select(REPLICA_COLUMNS).to_pylist()


EVENT_COLUMNS = ["event_id", "datetime", "type", "outcome", "library", "collection", "bag_id", "target",
                 "object_type", "path", "agent", "operator", "agent_library", "software", "detail"]


def _event_rows(events: pa.Table) -> List[Dict[str, Any]]:
    return events.select(EVENT_COLUMNS).sort_by([("datetime", "ascending")]).to_pylist()


def _facts(config, bags: pa.Table, copies: pa.Table, agg: pa.Table, events: pa.Table, period: pa.Table,
           ledger: Ledger) -> List[ndsa.Facts]:
    """One ndsa.Facts per collection: group-bys over bags, copies, the file aggregate and events."""
    keys = ["library", "collection"]

    def per(table: pa.Table, aggs, where=None) -> Dict[tuple, Dict[str, Any]]:
        if where is not None:
            table = table.filter(where)
        if table.num_rows == 0:
            return {}
        rows = table.group_by(keys).aggregate(aggs).to_pylist()
        return {(r["library"], r["collection"]): r for r in rows}

    def count(table: pa.Table, where=None) -> Dict[tuple, int]:
        return {k: v["count_all"] for k, v in per(table, [([], "count_all")], where).items()}

    bag_facts = per(bags, [("bag_id", "count"), ("file_count", "sum"), ("policy", "distinct")])
    untitled = count(bags, pc.is_null(bags.column("title")))

    # Per bag: verified copies, sites and storage kinds; then min/max per collection.
    good = copies.filter(copies.column("good"))
    per_bag = good.group_by(["bag_id"]).aggregate(
        [([], "count_all"), ("location", "count_distinct"), ("storage_type", "count_distinct")])
    per_bag = bags.select(["bag_id", "library", "collection"]).join(per_bag, "bag_id", join_type="left outer")
    for name in ("count_all", "location_count_distinct", "storage_type_count_distinct"):
        per_bag = per_bag.set_column(per_bag.schema.get_field_index(name), name, pc.fill_null(per_bag.column(name), 0))
    spread = per(per_bag, [("count_all", "min"), ("count_all", "max"), ("location_count_distinct", "min"),
                           ("location_count_distinct", "max"), ("storage_type_count_distinct", "min")])
    good_info = per(good, [([], "count_all"), ("location", "distinct"), ("storage_type", "distinct"),
                           ("last_deep_at", "min"), ("last_deep_at", "max"),
                           ("overdue_deep", "sum"), ("overdue_quick", "sum")])
    state = copies.column("state")
    all_copies = count(copies)
    bad = count(copies, pc.is_in(state, value_set=pa.array(BAD_STATES)))
    absent = count(copies, pc.equal(state, ABSENT))
    unverified = count(copies, pc.is_in(state, value_set=pa.array(UNVERIFIED_STATES)))
    extra = count(copies, pc.invert(copies.column("in_policy")))
    unverified_good = count(good, pc.is_null(good.column("verified_at")))

    # Files: from the streamed aggregate.
    files = per(agg, [("files", "sum")])
    unidentified = per(agg, [("files", "sum")], pc.is_null(agg.column("puid")))
    no_ident = per(agg, [("files", "sum")], pc.is_null(agg.column("identification_method")))
    at_risk = per(agg, [("files", "sum"), ("bytes", "sum")], agg.column("at_risk"))
    methods: Dict[tuple, Dict[str, int]] = {}
    for r in sum_by(agg, ["library", "collection", "identification_method"]):
        methods.setdefault((r["library"], r["collection"]), {})[r["identification_method"] or "-"] = r["files"]
    missing_primary: Dict[tuple, int] = {}
    for r in sum_by(agg, ["library", "collection", "policy"], ["files"] + [c for c in agg.column_names
                                                                          if c.startswith("with_")]):
        policy = config.policies.get(r["policy"])
        primary = policy.primary_checksum if policy else None
        have = r.get(f"with_{primary}", 0) if primary else 0
        k = (r["library"], r["collection"])
        missing_primary[k] = missing_primary.get(k, 0) + r["files"] - have

    # Events (all time) and repairs (in the period).
    ev_type = events.column("type")
    ev_count = count(events)
    no_agent = count(events, pc.is_null(events.column("agent")))
    fixity_events = count(events, pc.equal(ev_type, AUDIT_TYPE))
    with_type = {t: per(events, [("bag_id", "count_distinct")], pc.equal(ev_type, t))
                 for t in ("ingestion", "replication", AUDIT_TYPE)}
    repairs = count(period, pc.and_(repair_mask(period), pc.equal(period.column("outcome"), "success")))

    out = []
    for key in sorted(bag_facts):
        library, collection = key
        b = bag_facts[key]
        policies = sorted(b["policy_distinct"])
        known = [config.policies[p] for p in policies if p in config.policies]
        s = spread.get(key, {})
        g = good_info.get(key, {})
        cadences = sorted({(config.cadence_for(p, t).deep_every, config.cadence_for(p, t).quick_every)
                           for p in known for t in p.replicas if t in config.storage})
        n_bags = b["bag_id_count"]

        def missing_bags(t: str) -> int:
            return n_bags - with_type[t].get(key, {}).get("bag_id_count_distinct", 0)

        out.append(ndsa.Facts(
            library=library, collection=collection, bags=n_bags,
            files=files.get(key, {}).get("files_sum", 0) or 0, files_declared=b["file_count_sum"] or 0,
            policies=policies, unknown_policies=[p for p in policies if p not in config.policies],
            policy_targets=sorted({t for p in known for t in p.replicas}),
            copies=all_copies.get(key, 0),
            good_copies_min=s.get("count_all_min", 0), good_copies_max=s.get("count_all_max", 0),
            good_sites_min=s.get("location_count_distinct_min", 0),
            good_sites_max=s.get("location_count_distinct_max", 0),
            good_types_min=s.get("storage_type_count_distinct_min", 0),
            good_copies=g.get("count_all", 0), sites=sorted(g.get("location_distinct") or []),
            storage_types=sorted(g.get("storage_type_distinct") or []),
            copies_bad=bad.get(key, 0), copies_absent=absent.get(key, 0), copies_unverified=unverified.get(key, 0),
            copies_extra=extra.get(key, 0), good_without_verification=unverified_good.get(key, 0),
            overdue_deep=int(g.get("overdue_deep_sum") or 0), overdue_quick=int(g.get("overdue_quick_sum") or 0),
            last_deep_oldest=g.get("last_deep_at_min"), last_deep_newest=g.get("last_deep_at_max"),
            deep_every=sorted({format_duration(d) for d, _ in cadences}),
            quick_every=sorted({format_duration(q) for _, q in cadences}),
            primary_digests=sorted({p.primary_checksum for p in known}),
            files_missing_primary=missing_primary.get(key, 0),
            files_unidentified=unidentified.get(key, {}).get("files_sum", 0) or 0,
            files_no_identification=no_ident.get(key, {}).get("files_sum", 0) or 0,
            methods=dict(sorted(methods.get(key, {}).items())),
            at_risk_files=at_risk.get(key, {}).get("files_sum", 0) or 0,
            at_risk_bytes=at_risk.get(key, {}).get("bytes_sum", 0) or 0,
            at_risk_watched=len({puid for p in known for puid in p.formats.at_risk}),
            policies_without_watch=[p.name for p in known if not p.formats.at_risk],
            bags_untitled=untitled.get(key, 0),
            events=ev_count.get(key, 0), events_without_agent=no_agent.get(key, 0),
            fixity_events=fixity_events.get(key, 0),
            bags_without_ingestion=missing_bags("ingestion"), bags_without_replication=missing_bags("replication"),
            bags_without_fixity=missing_bags(AUDIT_TYPE),
            repairs_in_period=repairs.get(key, 0), ledger_ok=ledger.ok,
        ))
    return out
