"""What the archive holds, where, and what needs attention: the query behind `strongroom status`.

Read-only. Everything comes from the catalog (bags, the replica-state log, the ledger head)
plus the config (which targets each policy asks for, audit cadences) plus the deposit state
folders in staging (deposits not finished yet). The per-bag and per-replica work is done with
pyarrow joins and group-bys over the bags and replica tables; file rows are never read, since
each bag row already carries its file and byte counts (checked equal to its file rows when the
bag was registered), so the query costs the same for ten files or ten million.

Replica states come from the catalog (verified, repaired, copied, pending, failed, damaged,
missing, disputed) plus one pseudo-state, `absent`: the bag's policy asks for a copy on a target
and the catalog has no record of one there. `repaired` (damage found, repaired from a good copy
and re-verified) counts as good exactly as `verified` does.

Flags, and what they mean for the exit code of `strongroom status`:
  problems (exit 1)  damaged, failed, missing, disputed (two copies disagree and nothing
                     decides), inconclusive (the last audit could not read the copy), absent,
                     unverified (pending/copied: never verified), unreachable (the target's root
                     is gone, not a folder, or empty although the catalog records copies there:
                     an unmounted volume; an S3 target whose bucket does not answer one HEAD),
                     deposit-failed (an unfinished deposit with a recorded failure)
  warnings (exit 0)  overdue-deep, overdue-quick, unknown-policy, deposit-unfinished

A copy in trouble shows its open findings (`reports.findings`: file, kind, since when, from the
ledger) and the detail of the record that put it there, not of a later passing quick check,
until a later check resolves them. Locations: targets on one file system, in one bucket or on
one site are one location (`Config.location_of`); each bag's count of locations holding a good
copy is shown, and the config's warning about targets sharing a file system is repeated.
Overdue is a schedule matter, not damage: `strongroom audit --due` clears it. A replica is
overdue for a deep audit when no deep audit (a re-hash of every file) finished within the
cadence's `deep_every` of now; verification at deposit or rebuild counts as a deep audit at
`verified_at` (unless it was recorded as a quick check). It is overdue for a quick audit when
no check of any kind finished within `quick_every`. Inconclusive audits do not count. Cadences
are per target: `config.cadence_for(policy, target)`. Only replicas in a good state (verified,
repaired) are checked for overdue: the others are problems already.
"""

from __future__ import annotations

import datetime as _dt
import unicodedata
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import pyarrow as pa
import pyarrow.compute as pc

from catalog.access import open_catalog
from catalog.catalog import Catalog
from catalog.schema import TIMESTAMP, utc_now
from policies.units import add_years
from reports.findings import OpenCopy, OpenFinding, open_copies
from strongroom.errors import UsageError

GOOD_STATES = ("verified", "repaired")
UNVERIFIED_STATES = ("pending", "copied")
BAD_STATES = ("failed", "damaged", "missing", "disputed")
ABSENT = "absent"

PROBLEM_FLAGS = ("damaged", "failed", "missing", "disputed", "inconclusive", "absent", "unverified", "unreachable",
                 "deposit-failed")
#: An S3 target's reachability check: one HEAD of its bucket, no retries, short timeouts.
S3_CHECK_TIMEOUTS = {"max_attempts": 1, "connect_timeout": 3.0, "read_timeout": 5.0}
FINDINGS_IN_MESSAGE = 3
WARNING_FLAGS = ("overdue-deep", "overdue-quick", "unknown-policy", "deposit-unfinished")

# More bags than this and the text lists only the bags that need attention (JSON lists all).
BAG_LIST_LIMIT = 40
MESSAGE_LIMIT = 50

_DURATION = pa.duration("us")
_NO_ORDER = 1 << 30  # sorts replicas on targets outside the policy after the policy's own


# --------------------------------------------------------------------------------------------
# Records


@dataclass(frozen=True)
class Flag:
    """One thing that needs attention, naming what it concerns."""

    flag: str
    severity: str                # "problem" or "warning"
    message: str
    bag_id: Optional[str] = None
    target: Optional[str] = None
    deposit: Optional[str] = None


@dataclass
class ReplicaStatus:
    target: str
    site: Optional[str]
    state: str                   # a catalog replica state, or "absent"
    in_policy: bool              # the bag's policy asks for a copy on this target
    verified_at: Optional[_dt.datetime]
    last_audit_kind: Optional[str]
    last_audit_at: Optional[_dt.datetime]
    last_audit_outcome: Optional[str]
    last_deep_at: Optional[_dt.datetime]   # newest deep audit, or verification counting as one
    last_check_at: Optional[_dt.datetime]  # newest audit or verification of any kind
    deep_due_at: Optional[_dt.datetime]
    quick_due_at: Optional[_dt.datetime]
    detail: Optional[str]
    recorded_at: Optional[_dt.datetime]
    flags: List[str] = field(default_factory=list)
    retention: Optional[Dict[str, Any]] = None  # see replica_retention
    location: Optional[str] = None              # Config.location_of(target)
    since: Optional[_dt.datetime] = None        # in trouble since (open findings), else None
    findings: List[Dict[str, Any]] = field(default_factory=list)  # open findings (OpenFinding.to_dict)


def replica_retention(config, policy_name: str, target_name: str, created_at: _dt.datetime) -> Optional[Dict[str, Any]]:
    """What keeps this copy from being deleted or overwritten before its time.

    From the bag's policy and the target: an S3 target declared with object_lock applies the
    policy's retention to every object it stores (refused at deposit time otherwise), each object
    locked for `years` from its upload, which came after the bag was made, hence "until at
    least" created_at + years. A folder cannot lock files. None when the policy is unknown.
    """
    policy = config.policies.get(policy_name)
    target = config.storage.get(target_name)
    if policy is None or target is None:
        return None
    mode, years = policy.retention.mode, policy.retention.years
    if mode == "none":
        return {"mode": "none", "years": 0, "locked": False, "until_at_least": None}
    locked = target.type == "s3" and bool(target.options.get("object_lock"))
    until = add_years(created_at, years) if locked else None
    return {"mode": mode, "years": years, "locked": locked, "until_at_least": until,
            **({} if locked else {"why_not": "a folder cannot lock files" if target.type == "filesystem"
                                  else "the target is not declared with object_lock: true"})}


@dataclass
class BagStatus:
    bag_id: str
    library: str
    collection: str
    title: Optional[str]
    policy: str
    part: int
    part_count: int
    files: int
    bytes: int
    created_at: _dt.datetime
    replicas: List[ReplicaStatus] = field(default_factory=list)
    flags: List[str] = field(default_factory=list)
    locations: int = 0           # distinct locations holding a good (verified/repaired) copy

    @property
    def ok(self) -> bool:
        return not any(f in PROBLEM_FLAGS for f in self.flags)


@dataclass
class TargetStatus:
    """One storage target: where it is, which location it counts as, and whether it answered."""

    name: str
    type: str
    site: str
    location: str
    copies: int                  # copies the catalog records there (any state)
    reachable: Optional[bool]    # None: not checked (an S3 target holding no recorded copy)
    reason: str = ""


@dataclass
class Totals:
    """Counts over a set of bags; `replicas` counts replica states (absent included)."""

    bags: int = 0
    files: int = 0
    bytes: int = 0
    replicas: Dict[str, int] = field(default_factory=dict)
    problems: int = 0
    warnings: int = 0


@dataclass
class CollectionTotals:
    library: str
    collection: str
    policies: List[str]
    totals: Totals


@dataclass
class LibraryTotals:
    library: str
    totals: Totals


@dataclass
class DepositStatus:
    """A deposit in staging that has not finished (no done.json in its state folder)."""

    key: str
    library: Optional[str]
    collection: Optional[str]
    source: Optional[str]
    policy: Optional[str]
    started_at: Optional[str]
    stage: str                    # "bagging", "replicating", "unreadable"
    bags: List[Dict[str, Any]]    # [{"id", "registered", "verified_on": [targets]}]
    failures: List[Dict[str, Any]]
    flags: List[str] = field(default_factory=list)


@dataclass
class Status:
    catalog: str
    generated_at: _dt.datetime
    ledger_seq: Optional[int]     # None when the ledger is empty
    ledger_hash: Optional[str]
    filters: Dict[str, Optional[str]]
    bags: List[BagStatus]
    collections: List[CollectionTotals]
    libraries: List[LibraryTotals]
    totals: Totals
    deposits: List[DepositStatus]
    problems: List[Flag]
    warnings: List[Flag]
    open_findings: List[OpenFinding] = field(default_factory=list)
    targets: List[TargetStatus] = field(default_factory=list)
    locations: List[Dict[str, Any]] = field(default_factory=list)   # {location, targets, sites}
    notes: List[str] = field(default_factory=list)                  # config warnings (shared file systems)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def exit_code(self) -> int:
        """1 when anything is damaged, failed, missing, disputed, inconclusive, absent, unverified
        or unreachable; overdue alone is 0."""
        return 0 if self.ok else 1

    def to_dict(self) -> Dict[str, Any]:
        """Plain JSON-ready values with stable keys (timestamps as ISO 8601 UTC strings)."""
        return {
            "catalog": self.catalog,
            "generated_at": _iso(self.generated_at),
            "ok": self.ok,
            "exit_code": self.exit_code,
            "ledger_head": {"seq": self.ledger_seq, "hash": self.ledger_hash},
            "filters": dict(self.filters),
            "totals": _plain(self.totals),
            "libraries": [_plain(x) for x in self.libraries],
            "collections": [_plain(x) for x in self.collections],
            "bags": [{**_plain(b), "ok": b.ok} for b in self.bags],
            "deposits": [_plain(d) for d in self.deposits],
            "problems": [_plain(f) for f in self.problems],
            "warnings": [_plain(f) for f in self.warnings],
            "open_findings": [f.to_dict() for f in self.open_findings],
            "targets": [_plain(t) for t in self.targets],
            "locations": [_plain(x) for x in self.locations],
            "notes": list(self.notes),
        }


def _iso(value: Optional[_dt.datetime]) -> Optional[str]:
    return None if value is None else value.astimezone(_dt.timezone.utc).isoformat().replace("+00:00", "Z")


def _plain(value: Any) -> Any:
    if is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, _dt.datetime):
        return _iso(value)
    return value


# --------------------------------------------------------------------------------------------
# The query


def build_status(config, catalog: Optional[Catalog] = None, *, library: Optional[str] = None,
                 collection: Optional[str] = None, bag_id: Optional[str] = None,
                 now: Optional[_dt.datetime] = None) -> Status:
    """The status of every bag matching the filters, their replicas, totals and unfinished deposits.

    UsageError (exit 2) when a filter matches nothing at all (no bag and no unfinished deposit),
    naming what is known, so a typo is not mistaken for an empty archive.
    """
    catalog = catalog if catalog is not None else open_catalog(config)
    now = (now or utc_now()).astimezone(_dt.timezone.utc)
    filters = {"library": library, "collection": collection, "bag": bag_id}

    bags = catalog.bags(library, collection, bag_id)
    deposits = unfinished_deposits(Path(config.staging), library=library, collection=collection, bag_id=bag_id)
    if bags.num_rows == 0 and not deposits and any(v is not None for v in filters.values()):
        raise UsageError(_nothing_matches(catalog, library, collection, bag_id),
                         key="--bag" if bag_id else "--collection" if collection else "--library")

    replicas = replica_table(config, catalog, bags, bag_id=bag_id, now=now)
    rows = replicas.to_pylist()
    troubled = open_copies(catalog, rows)
    targets = check_targets(config, catalog, None if any(filters.values()) else list(config.storage),
                            rows, now=now)
    bag_list, problems, warnings = _bags_and_flags(config, bags, replicas, troubled,
                                                   {t.name: t for t in targets if t.reachable is False})
    for t in targets:
        if t.reachable is False:
            problems.insert(0, Flag("unreachable", "problem", f"storage target {t.name} is unreachable: {t.reason}; "
                                                              f"its {t.copies} recorded cop"
                                                              f"{'y' if t.copies == 1 else 'ies'} cannot be "
                                                              f"trusted until it answers", target=t.name))
    for dep in deposits:
        for flag in dep.flags:
            what = "has failed" if flag == "deposit-failed" else "is not finished"
            first = dep.failures[0]["message"] if dep.failures else None
            msg = f"deposit of {dep.source or '?'} into {dep.library}/{dep.collection} {what} ({dep.stage})"
            if first:
                msg += f": {first}"
            (problems if flag in PROBLEM_FLAGS else warnings).append(
                Flag(flag, _severity(flag), msg, deposit=dep.key))

    collections, libraries, totals = _totals(bags, replicas, bag_list)
    seq, head = catalog.ledger_head()
    findings = sorted((f for c in troubled.values() for f in c.findings),
                      key=lambda f: (f.bag, f.target or "", f.path or "", f.kind))
    return Status(
        catalog=catalog.location, generated_at=now,
        ledger_seq=None if seq < 0 else seq, ledger_hash=None if seq < 0 else head,
        filters=filters, bags=bag_list, collections=collections, libraries=libraries, totals=totals,
        deposits=deposits, problems=problems, warnings=warnings, open_findings=findings, targets=targets,
        locations=location_groups(config), notes=list(getattr(config, "warnings", ())),
    )


def location_groups(config) -> List[Dict[str, Any]]:
    """The config's locations: each with its targets and their sites (one device, bucket or site)."""
    groups: Dict[str, List[str]] = {}
    for name in config.storage:
        groups.setdefault(config.location_of(name), []).append(name)
    return [{"location": loc, "targets": names, "sites": sorted({config.storage[n].site for n in names})}
            for loc, names in sorted(groups.items())]


def check_targets(config, catalog: Catalog, names: Optional[List[str]], rows: Sequence[Dict[str, Any]], *,
                  now: Optional[_dt.datetime] = None) -> List[TargetStatus]:
    """Is every storage target there? Cheap checks, one per target: those in `names`, or, when
    `names` is None (a filtered status), the targets of `rows`.

    A folder target: its root exists, is a folder, and is not empty when the catalog records copies
    there (an unmounted mount point looks empty). An S3 target holding recorded copies: one HEAD
    request of its bucket (it answers, the credentials are accepted, the bucket exists), no
    retries, short timeouts (S3_CHECK_TIMEOUTS). Never raises."""
    recorded: Dict[str, List[str]] = {}
    for r in rows:
        if r["state"] != ABSENT:
            recorded.setdefault(r["target"], []).append(r["bag_id"])
    if names is None:
        names = sorted({r["target"] for r in rows})
    out: List[TargetStatus] = []
    for name in names:
        target = config.storage.get(name)
        if target is None:
            continue
        held = recorded.get(name, [])
        reachable, reason = _reach(target, held)
        out.append(TargetStatus(name=name, type=target.type, site=target.site, location=config.location_of(name),
                                copies=len(held), reachable=reachable, reason=reason))
    return out


def _reach(target, held: Sequence[str]) -> Tuple[Optional[bool], str]:
    import os

    if target.type == "filesystem":
        root = target.root
        try:
            if not os.path.lexists(root):
                return False, f"its root folder {root} does not exist (not mounted, or moved?)"
            if not os.path.isdir(root):
                return False, f"its root {root} is not a folder"
            if held:
                with os.scandir(root) as entries:
                    if next(entries, None) is None:
                        return False, (f"its root folder {root} is empty although the catalog records copies "
                                       f"there: is the volume mounted?")
        except OSError as exc:
            return False, f"its root folder {root} cannot be read ({exc.strerror or exc})"
        return True, ""
    if not held:
        return None, "not checked: the catalog records no copy there"
    import dataclasses
    import types as _types

    from ingest.naming import BagId
    from storage_adapters.registry import open_target

    quick = dataclasses.replace(target, options=_types.MappingProxyType({**target.options, **S3_CHECK_TIMEOUTS}))
    try:
        adapter = open_target(quick)
        check = getattr(adapter, "ensure_bucket", None)   # one HEAD of the bucket
        if check is not None:
            check()
        elif not adapter.has_bag(BagId.parse(held[0])):
            return False, f"it holds nothing of {held[0]}, which the catalog records there"
    except Exception as exc:  # noqa: BLE001 - any failure to answer is what this check reports
        return False, f"it does not answer ({type(exc).__name__}: {exc})"[:300]
    return True, ""


def replica_table(config, catalog: Catalog, bags: pa.Table, *, bag_id: Optional[str] = None,
                  now: Optional[_dt.datetime] = None) -> pa.Table:
    """One row per (bag, target) that the policy asks for or the catalog has a record of.

    Columns: bag_id, target, site, state ("absent" when only the policy knows it), in_policy,
    verified_at, last_audit_*, detail, recorded_at, last_deep_at, last_check_at, deep_due_at,
    quick_due_at, overdue_deep, overdue_quick, policy_known. Sorted by bag_id, then the policy's
    target order, then the other targets by name. Joins and group-bys only: no row loops.
    """
    now = (now or utc_now()).astimezone(_dt.timezone.utc)
    ids = bags.column("bag_id")
    current = catalog.replicas(bag_id)
    log = catalog.replicas(bag_id, current=False)
    if bag_id is None:  # narrow to the selected bags (replica records of unregistered bags too)
        current = current.filter(pc.is_in(current.column("bag_id"), value_set=ids.combine_chunks()))
        log = log.filter(pc.is_in(log.column("bag_id"), value_set=ids.combine_chunks()))

    # Expected copies: bag x the targets its policy lists.
    policy_targets = _policy_targets(config)
    expected = bags.select(["bag_id", "policy"]).join(policy_targets, "policy", join_type="inner")
    expected = expected.select(["bag_id", "target", "order", "expected_site"])
    rows = expected.join(current, ["bag_id", "target"], join_type="full outer")
    rows = rows.join(_audit_history(log), ["bag_id", "target"], join_type="left outer")
    rows = rows.join(bags.select(["bag_id", "policy"]), "bag_id", join_type="left outer")
    rows = rows.join(_cadences(config), ["policy", "target"], join_type="left outer")
    rows = rows.join(_policy_cadences(config), "policy", join_type="left outer")

    in_policy = pc.is_valid(rows.column("order"))
    state = pc.coalesce(rows.column("state"), pa.scalar(ABSENT))
    site = pc.coalesce(rows.column("site"), rows.column("expected_site"))
    deep_every = pc.coalesce(rows.column("deep_every"), rows.column("policy_deep_every"))
    quick_every = pc.coalesce(rows.column("quick_every"), rows.column("policy_quick_every"))
    last_deep = _newest(rows.column("deep_audit_at"), rows.column("deep_verified_at"))
    last_check = _newest(rows.column("check_at"), rows.column("any_verified_at"), last_deep)
    deep_due = pc.add(last_deep, deep_every)
    quick_due = pc.add(last_check, quick_every)
    now_scalar = pa.scalar(now, type=TIMESTAMP)
    checkable = pc.and_(pc.is_in(state, value_set=pa.array(GOOD_STATES)), pc.is_valid(deep_every))
    overdue_deep = pc.and_(checkable, pc.fill_null(pc.less(deep_due, now_scalar), True))
    overdue_quick = pc.and_(checkable, pc.fill_null(pc.less(quick_due, now_scalar), True))

    out = pa.table({
        "bag_id": rows.column("bag_id"),
        "target": rows.column("target"),
        "site": site,
        "state": state,
        "in_policy": in_policy,
        "order": pc.coalesce(rows.column("order"), pa.scalar(_NO_ORDER, pa.int64())),
        "verified_at": rows.column("verified_at"),
        "last_audit_at": rows.column("last_audit_at"),
        "last_audit_kind": rows.column("last_audit_kind"),
        "last_audit_outcome": rows.column("last_audit_outcome"),
        "detail": rows.column("detail"),
        "recorded_at": rows.column("recorded_at"),
        "last_deep_at": last_deep,
        "last_check_at": last_check,
        "deep_due_at": deep_due,
        "quick_due_at": quick_due,
        "overdue_deep": overdue_deep,
        "overdue_quick": overdue_quick,
        "policy_known": pc.is_valid(rows.column("policy_deep_every")),
    })
    return out.sort_by([("bag_id", "ascending"), ("order", "ascending"), ("target", "ascending")])


def _newest(*columns) -> pa.ChunkedArray:
    """Element-wise newest timestamp, nulls skipped (max_element_wise has no timestamp kernel)."""
    as_int = [pc.cast(c, pa.int64()) for c in columns]
    return pc.cast(pc.max_element_wise(*as_int, skip_nulls=True), TIMESTAMP)


def _policy_targets(config) -> pa.Table:
    """(policy, target, order, expected_site) for every policy of the config: a tiny table."""
    cols: Dict[str, list] = {"policy": [], "target": [], "order": [], "expected_site": []}
    for policy in config.policies.values():
        for order, name in enumerate(policy.replicas):
            cols["policy"].append(policy.name)
            cols["target"].append(name)
            cols["order"].append(order)
            cols["expected_site"].append(config.storage[name].site if name in config.storage else None)
    return pa.table(cols, schema=pa.schema([("policy", pa.string()), ("target", pa.string()),
                                            ("order", pa.int64()), ("expected_site", pa.string())]))


def _cadences(config) -> pa.Table:
    """(policy, target) -> deep_every, quick_every with each target's own override applied."""
    cols: Dict[str, list] = {"policy": [], "target": [], "deep_every": [], "quick_every": []}
    for policy in config.policies.values():
        for name in config.storage:
            cadence = config.cadence_for(policy, name)
            cols["policy"].append(policy.name)
            cols["target"].append(name)
            cols["deep_every"].append(cadence.deep_every)
            cols["quick_every"].append(cadence.quick_every)
    return pa.table(cols, schema=pa.schema([("policy", pa.string()), ("target", pa.string()),
                                            ("deep_every", _DURATION), ("quick_every", _DURATION)]))


def _policy_cadences(config) -> pa.Table:
    """policy -> its own cadence: for copies on targets the config no longer declares."""
    names = list(config.policies)
    return pa.table({
        "policy": pa.array(names, pa.string()),
        "policy_deep_every": pa.array([config.policies[n].fixity.deep_every for n in names], _DURATION),
        "policy_quick_every": pa.array([config.policies[n].fixity.quick_every for n in names], _DURATION),
    })


def _audit_history(log: pa.Table) -> pa.Table:
    """Per (bag, target), from the whole replica-state log: when it was last deep-audited (or
    verified, which counts as a deep audit unless recorded as a quick check), and last checked
    at all. The current record alone cannot say: a quick audit hides the deep one before it."""
    kind = log.column("last_audit_kind")
    outcome = log.column("last_audit_outcome")
    audit_at = log.column("last_audit_at")
    verified_at = log.column("verified_at")
    null_ts = pa.scalar(None, type=TIMESTAMP)
    conclusive = pc.fill_null(pc.not_equal(outcome, "inconclusive"), True)
    is_deep = pc.fill_null(pc.equal(kind, "deep"), False)
    not_quick = pc.fill_null(pc.not_equal(kind, "quick"), True)
    table = pa.table({
        "bag_id": log.column("bag_id"),
        "target": log.column("target"),
        "deep_audit_at": pc.if_else(pc.and_(is_deep, conclusive), audit_at, null_ts),
        "deep_verified_at": pc.if_else(not_quick, verified_at, null_ts),
        "check_at": pc.if_else(conclusive, audit_at, null_ts),
        "any_verified_at": verified_at,
    })
    agg = table.group_by(["bag_id", "target"]).aggregate(
        [(c, "max") for c in ("deep_audit_at", "deep_verified_at", "check_at", "any_verified_at")])
    return agg.rename_columns([n[:-len("_max")] if n.endswith("_max") else n for n in agg.column_names])


# --------------------------------------------------------------------------------------------
# Flags and totals (loops over bags and replicas here, never over files)


def _severity(flag: str) -> str:
    return "problem" if flag in PROBLEM_FLAGS else "warning"


def _fmt_time(value: Optional[_dt.datetime]) -> str:
    return "never" if value is None else value.astimezone(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _findings_text(trouble: OpenCopy) -> str:
    files = [f for f in trouble.findings if f.path]
    if not files:
        detail = trouble.findings[0].detail if trouble.findings else trouble.detail
        return f": {detail}" if detail else ""
    shown = "; ".join(f"{f.kind} {f.path}" + (" (no good copy)" if f.no_good_copy else "")
                      for f in files[:FINDINGS_IN_MESSAGE])
    more = f"; and {len(files) - FINDINGS_IN_MESSAGE} more" if len(files) > FINDINGS_IN_MESSAGE else ""
    return f": {len(files)} open finding(s): {shown}{more}"


def _replica_flags(r: Dict[str, Any], trouble: Optional[OpenCopy] = None,
                   unreachable: Optional["TargetStatus"] = None) -> List[Tuple[str, str]]:
    """(flag, message) for one replica row of `replica_table` (and its open findings, if any)."""
    state, target = r["state"], r["target"]
    out: List[Tuple[str, str]] = []
    detail = f": {r['detail']}" if r.get("detail") else ""
    since = f" since {_fmt_time(trouble.since)}" if trouble is not None and trouble.since else ""
    if state in BAD_STATES:
        out.append((state, f"copy on {target} is {state}{since}"
                    + (_findings_text(trouble) if trouble is not None else detail)))
    elif state in UNVERIFIED_STATES:
        out.append(("unverified", f"copy on {target} is {state} but was never verified{detail}"))
    elif state == ABSENT:
        out.append((ABSENT, f"the policy asks for a copy on {target}; the catalog records none"))
    if state not in BAD_STATES and r.get("last_audit_outcome") == "inconclusive":
        out.append(("inconclusive", f"copy on {target}: its audits could not read it{since}"
                    + (_findings_text(trouble) if trouble is not None else detail)))
    if unreachable is not None and state != ABSENT:
        out.append(("unreachable", f"copy on {target}: the target is unreachable ({unreachable.reason})"))
    if r["overdue_deep"]:
        out.append(("overdue-deep", f"copy on {target}: never deep-audited (only quick checks)"
                    if r["last_deep_at"] is None else
                    f"copy on {target}: no deep audit since {_fmt_time(r['last_deep_at'])} "
                    f"(was due {_fmt_time(r['deep_due_at'])})"))
    if r["overdue_quick"]:
        out.append(("overdue-quick", f"copy on {target}: never audited" if r["last_check_at"] is None else
                    f"copy on {target}: no audit since {_fmt_time(r['last_check_at'])} "
                    f"(was due {_fmt_time(r['quick_due_at'])})"))
    return out


def _bags_and_flags(config, bags: pa.Table, replicas: pa.Table,
                    troubled: Optional[Dict[Tuple[str, str], OpenCopy]] = None,
                    unreachable: Optional[Dict[str, "TargetStatus"]] = None):
    troubled = troubled or {}
    unreachable = unreachable or {}
    by_bag: Dict[str, List[Dict[str, Any]]] = {}
    for r in replicas.to_pylist():
        by_bag.setdefault(r["bag_id"], []).append(r)
    problems: List[Flag] = []
    warnings: List[Flag] = []
    out: List[BagStatus] = []
    for b in bags.to_pylist():
        bag = BagStatus(bag_id=b["bag_id"], library=b["library"], collection=b["collection"], title=b["title"],
                        policy=b["policy"], part=b["part"], part_count=b["part_count"], files=b["file_count"],
                        bytes=b["byte_count"], created_at=b["created_at"])
        flags: List[str] = []
        if b["policy"] not in config.policies:
            flags.append("unknown-policy")
            warnings.append(Flag("unknown-policy", "warning",
                                 f"policy {b['policy']!r} is not in the config: required copies and audit "
                                 f"cadence unknown", bag_id=bag.bag_id))
        good_locations = set()
        for r in by_bag.get(bag.bag_id, []):
            trouble = troubled.get((r["bag_id"], r["target"]))
            rflags = _replica_flags(r, trouble, unreachable.get(r["target"]))
            if r["state"] in GOOD_STATES and r["target"] not in unreachable:
                good_locations.add(config.location_of(r["target"]))
            bag.replicas.append(ReplicaStatus(
                target=r["target"], site=r["site"], state=r["state"], in_policy=r["in_policy"],
                verified_at=r["verified_at"], last_audit_kind=r["last_audit_kind"],
                last_audit_at=r["last_audit_at"], last_audit_outcome=r["last_audit_outcome"],
                last_deep_at=r["last_deep_at"], last_check_at=r["last_check_at"],
                deep_due_at=r["deep_due_at"], quick_due_at=r["quick_due_at"],
                detail=trouble.detail if trouble is not None and r["state"] in BAD_STATES else r["detail"],
                recorded_at=r["recorded_at"], flags=[f for f, _ in rflags],
                retention=replica_retention(config, b["policy"], r["target"], b["created_at"]),
                location=config.location_of(r["target"]),
                since=trouble.since if trouble is not None else None,
                findings=[f.to_dict() for f in trouble.findings] if trouble is not None else []))
            for flag, message in rflags:
                if flag not in flags:
                    flags.append(flag)
                if flag == "unreachable":
                    continue  # one problem per target (build_status), not one per copy
                (problems if flag in PROBLEM_FLAGS else warnings).append(
                    Flag(flag, _severity(flag), message, bag_id=bag.bag_id, target=r["target"]))
        bag.flags = flags
        bag.locations = len(good_locations)
        out.append(bag)
    return out, problems, warnings


def _totals(bags: pa.Table, replicas: pa.Table, bag_list: Sequence[BagStatus]
            ) -> Tuple[List[CollectionTotals], List[LibraryTotals], Totals]:
    """Group-bys over the bag and replica tables; problem/warning counts from the bags' flags."""
    keyed = replicas.join(bags.select(["bag_id", "library", "collection"]), "bag_id", join_type="inner")
    states_cc = keyed.group_by(["library", "collection", "state"]).aggregate([("bag_id", "count")]).to_pylist()
    per_cc = bags.group_by(["library", "collection"]).aggregate(
        [("bag_id", "count"), ("file_count", "sum"), ("byte_count", "sum"), ("policy", "distinct")]).to_pylist()
    per_lib = bags.group_by(["library"]).aggregate(
        [("bag_id", "count"), ("file_count", "sum"), ("byte_count", "sum")]).to_pylist()

    flag_counts: Dict[Tuple[str, str], List[int]] = {}
    for bag in bag_list:
        counts = flag_counts.setdefault((bag.library, bag.collection), [0, 0])
        for r in bag.replicas:
            counts[0] += sum(1 for f in r.flags if f in PROBLEM_FLAGS)
            counts[1] += sum(1 for f in r.flags if f in WARNING_FLAGS)
        counts[1] += bag.flags.count("unknown-policy")

    states: Dict[Tuple[str, str], Dict[str, int]] = {}
    for row in states_cc:
        states.setdefault((row["library"], row["collection"]), {})[row["state"]] = row["bag_id_count"]

    collections = []
    for row in sorted(per_cc, key=lambda r: (r["library"], r["collection"])):
        key = (row["library"], row["collection"])
        p, w = flag_counts.get(key, [0, 0])
        collections.append(CollectionTotals(
            library=row["library"], collection=row["collection"], policies=sorted(row["policy_distinct"]),
            totals=Totals(bags=row["bag_id_count"], files=row["file_count_sum"] or 0,
                          bytes=row["byte_count_sum"] or 0, replicas=dict(sorted(states.get(key, {}).items())),
                          problems=p, warnings=w)))
    libraries = []
    for row in sorted(per_lib, key=lambda r: r["library"]):
        mine = [c.totals for c in collections if c.library == row["library"]]
        libraries.append(LibraryTotals(library=row["library"], totals=Totals(
            bags=row["bag_id_count"], files=row["file_count_sum"] or 0, bytes=row["byte_count_sum"] or 0,
            replicas=_sum_states(t.replicas for t in mine),
            problems=sum(t.problems for t in mine), warnings=sum(t.warnings for t in mine))))
    everything = [c.totals for c in collections]
    totals = Totals(bags=sum(t.bags for t in everything), files=sum(t.files for t in everything),
                    bytes=sum(t.bytes for t in everything), replicas=_sum_states(t.replicas for t in everything),
                    problems=sum(t.problems for t in everything), warnings=sum(t.warnings for t in everything))
    return collections, libraries, totals


def _sum_states(items) -> Dict[str, int]:
    out: Dict[str, int] = {}
    for states in items:
        for state, n in states.items():
            out[state] = out.get(state, 0) + n
    return dict(sorted(out.items()))


def _nothing_matches(catalog: Catalog, library, collection, bag_id) -> str:
    everything = catalog.bags()
    if bag_id is not None:
        what = f"no bag {bag_id!r} in the catalog"
        if library or collection:
            what += f" within {library or '*'}/{collection or '*'}"
        return what + " (bag ids look like LIB/COLL/YYYYMMDDTHHMMSSZ-N; `strongroom status` lists them)"
    pairs = sorted(set(zip(everything.column("library").to_pylist(), everything.column("collection").to_pylist())))
    if library is not None and collection is not None:
        known = ", ".join(f"{l}/{c}" for l, c in pairs if l == library) or "none"
        return f"no bags in {library}/{collection} (collections of {library}: {known})"
    if library is not None:
        known = ", ".join(sorted({l for l, _ in pairs})) or "none (the catalog is empty)"
        return f"no bags in library {library!r} (libraries: {known})"
    known = ", ".join(sorted({c for _, c in pairs})) or "none (the catalog is empty)"
    return f"no bags in collection {collection!r} (collections: {known})"


# --------------------------------------------------------------------------------------------
# Unfinished deposits (staging/.state/<key>/, written by pipelines.flow)


def unfinished_deposits(staging: Path, *, library: Optional[str] = None, collection: Optional[str] = None,
                        bag_id: Optional[str] = None) -> List[DepositStatus]:
    """Deposits whose state folder has no done.json, with their recorded failures, by key."""
    from pipelines.flow import STATE_DIR, read_json

    root = Path(staging) / STATE_DIR
    if not root.is_dir():
        return []
    out: List[DepositStatus] = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if (folder / "done.json").exists() or not (folder / "deposit.json").exists():
            continue
        dep = _deposit_status(folder, read_json)
        if library is not None and dep.library != library:
            continue
        if collection is not None and dep.collection != collection:
            continue
        if bag_id is not None and bag_id not in [b["id"] for b in dep.bags]:
            continue
        out.append(dep)
    return out


def _deposit_status(folder: Path, read_json) -> DepositStatus:
    failures = []
    for f in sorted((folder / "failures").glob("*.json")) if (folder / "failures").is_dir() else []:
        try:
            failures.append(read_json(f))
        except (OSError, ValueError) as exc:
            failures.append({"step": f.stem, "message": f"failure record {f} cannot be read: {exc}",
                             "problems": [], "exit_code": 1})
    try:
        info = read_json(folder / "deposit.json")
    except (OSError, ValueError) as exc:
        failures.append({"step": "deposit.json", "message": f"{folder / 'deposit.json'} cannot be read: {exc}",
                         "problems": [], "exit_code": 2})
        return DepositStatus(key=folder.name, library=None, collection=None, source=None, policy=None,
                             started_at=None, stage="unreadable", bags=[], failures=failures,
                             flags=["deposit-failed"])
    bags: List[Dict[str, Any]] = []
    stage = "bagging"
    try:
        built = read_json(folder / "bags.json") if (folder / "bags.json").exists() else None
    except (OSError, ValueError):
        built = None
    if built is not None:
        stage = "replicating"
        for b in built.get("bags", []):
            safe = str(b["id"]).replace("/", "__")
            verified = sorted(p.name[len(safe) + 1:-len(".verified.json")]
                              for p in folder.glob(f"{safe}.*.verified.json"))
            bags.append({"id": b["id"], "registered": (folder / f"{safe}.registered.json").exists(),
                         "verified_on": verified})
        if bags and all(b["registered"] for b in bags):
            stage = "finishing"
    return DepositStatus(
        key=folder.name, library=info.get("library"), collection=info.get("collection"),
        source=info.get("source"), policy=info.get("policy"), started_at=info.get("created_at"),
        stage=stage, bags=bags, failures=failures,
        flags=["deposit-failed" if failures else "deposit-unfinished"])


# --------------------------------------------------------------------------------------------
# Text (what `strongroom status` prints without --json)


def status_text(status: Status) -> str:
    """About one screen for a small archive: totals, one line per copy, then what needs attention."""
    lines: List[str] = [f"Strongroom status of {status.catalog} at {_when(status.generated_at, minutes=True)}"]
    if status.ledger_hash is None:
        lines.append("Ledger head: none (no events yet)")
    else:
        lines.append(f"Ledger head: seg-{status.ledger_seq:012d} sha256:{status.ledger_hash}")
        lines.append("  (note it; `strongroom ledger verify --expected-head HASH` later proves nothing was removed)")
    lines.append("")

    if status.totals.bags == 0:
        lines.append("No bags in the catalog" + (" match the filters." if any(status.filters.values()) else "."))
    else:
        lines += _collection_table(status)
        lines.append("")
        lines += _bag_table(status)

    if status.deposits:
        lines += ["", f"Unfinished deposits ({len(status.deposits)}):"]
        for d in status.deposits:
            lines.append(f"  {d.library}/{d.collection} from {d.source}: {d.stage}, started {d.started_at} "
                         f"[{d.key}]")
            for b in d.bags:
                state = "registered" if b["registered"] else f"verified on {', '.join(b['verified_on']) or 'no target yet'}"
                lines.append(f"      {b['id']}: {state}")
            for f in d.failures:
                lines.append(f"      FAILED {f.get('step')}: {f.get('message')}")
                for p in (f.get("problems") or [])[:5]:
                    lines.append(f"        - {p}")
        lines.append("  (rerun the same `strongroom deposit` command to resume one)")

    if status.open_findings:
        copies = len({(f.bag, f.target) for f in status.open_findings})
        lines += ["", f"Open findings ({len(status.open_findings)} on {copies} cop{'y' if copies == 1 else 'ies'}, "
                      f"open until a later check resolves them):"]
        lines += [f"  {f.line()}"[:240] for f in status.open_findings[:MESSAGE_LIMIT]]
        if len(status.open_findings) > MESSAGE_LIMIT:
            lines.append(f"  ... and {len(status.open_findings) - MESSAGE_LIMIT} more (--json lists them all)")

    if status.notes:
        lines += ["", "Locations:"]
        for g in status.locations:
            lines.append(f"  {g['location']}: {', '.join(g['targets'])}")
        lines += [f"  note: {n}" for n in status.notes]

    for title, flags in (("Problems", status.problems), ("Warnings", status.warnings)):
        if not flags:
            continue
        lines += ["", f"{title} ({len(flags)}):"]
        for f in flags[:MESSAGE_LIMIT]:
            who = f.bag_id or f.deposit or ""
            lines.append(f"  {who}: {f.message}" if who else f"  {f.message}")
        if len(flags) > MESSAGE_LIMIT:
            lines.append(f"  ... and {len(flags) - MESSAGE_LIMIT} more (--json lists them all)")

    lines.append("")
    if status.problems:
        lines.append(f"ATTENTION: {len(status.problems)} problem(s) need action (exit 1).")
    elif status.totals.bags == 0 and not status.deposits:
        lines.append("Nothing held yet.")
    elif status.warnings:
        overdue = sum(1 for w in status.warnings if w.flag.startswith("overdue"))
        hint = "; run `strongroom audit --due`" if overdue else ""
        lines.append(f"No damage; {len(status.warnings)} warning(s){hint}.")
    else:
        copies = sum(status.totals.replicas.values())
        fewest = min((b.locations for b in status.bags), default=0)
        where = f" in {fewest} location(s) at the least" if status.notes else ""
        lines.append(f"All well: {status.totals.bags} bag(s), {copies} copy(ies){where}, every one verified and "
                     f"audited on schedule.")
    return "\n".join(lines)


def _collection_table(status) -> List[str]:
    from policies.units import format_size

    rows = []
    for c in status.collections:
        rows.append([f"{c.library}/{c.collection}", ", ".join(c.policies), c.totals.bags, c.totals.files,
                     format_size(c.totals.bytes), _states(c.totals.replicas), _attention(c.totals)])
    if len(status.collections) > 1:
        for lib in status.libraries:
            t = lib.totals
            rows.append([f"{lib.library} (library)", "", t.bags, t.files, format_size(t.bytes),
                         _states(t.replicas), _attention(t)])
        t = status.totals
        rows.append(["all", "", t.bags, t.files, format_size(t.bytes), _states(t.replicas), _attention(t)])
    return text_table(["COLLECTION", "POLICY", "BAGS", "FILES", "BYTES", "COPIES", "ATTENTION"], rows,
                 right={2, 3, 4})


def _bag_table(status) -> List[str]:
    from policies.units import format_size

    bags = status.bags
    hidden = 0
    if len(bags) > BAG_LIST_LIMIT and status.filters.get("bag") is None:
        shown = [b for b in bags if b.flags]
        hidden = len(bags) - len(shown)
        bags = shown
    rows = []
    for b in bags:
        first = True
        for r in b.replicas or [None]:
            head = [b.bag_id, b.files, format_size(b.bytes)] if first else ["", "", ""]
            first = False
            if r is None:
                rows.append(head + ["-", "-", "no copy recorded", "", "", "", ",".join(b.flags) or "-"])
                continue
            target = r.target if r.in_policy else f"{r.target} (extra)"
            audit = "-" if r.last_audit_at is None else \
                f"{r.last_audit_kind or '?'} {_when(r.last_audit_at)} {_outcome(r.last_audit_outcome)}"
            flags = ",".join(f.upper() if f in PROBLEM_FLAGS else f for f in r.flags) or "-"
            rows.append(head + [target, r.site or "?", r.state, _when(r.verified_at), audit, _retention(r.retention),
                                flags])
    lines = text_table(["BAG", "FILES", "BYTES", "TARGET", "SITE", "STATE", "VERIFIED", "LAST AUDIT", "RETENTION",
                        "FLAGS"], rows,
                  right={1, 2})
    if hidden:
        lines.append(f"({hidden} more bag(s), all well; narrow with --collection or --bag, or use --json)")
    return lines


def _retention(retention: Optional[Dict[str, Any]]) -> str:
    if not retention or retention["mode"] == "none":
        return "-"
    if not retention["locked"]:
        return "not locked"
    return f"{retention['mode']} to {retention['until_at_least']:%Y-%m-%d}+"


def _states(states) -> str:
    return ", ".join(f"{n} {s}" for s, n in states.items()) or "-"


def _attention(totals) -> str:
    parts = []
    if totals.problems:
        parts.append(f"{totals.problems} PROBLEM(S)")
    if totals.warnings:
        parts.append(f"{totals.warnings} warning(s)")
    return ", ".join(parts) or "-"


def _outcome(outcome: Optional[str]) -> str:
    return {"success": "ok", "failure": "FAILED", None: ""}.get(outcome, outcome or "")


def _when(value: Optional[_dt.datetime], minutes: bool = False) -> str:
    if value is None:
        return "never"
    value = value.astimezone(_dt.timezone.utc)
    return value.strftime("%Y-%m-%d %H:%M UTC") if minutes else value.strftime("%Y-%m-%d")


def text_width(text: str) -> int:
    """Terminal columns: East Asian wide characters (site or collection titles in Chinese) take two."""
    return sum(2 if unicodedata.east_asian_width(ch) in ("W", "F") else 0 if unicodedata.combining(ch) else 1
               for ch in text)


def text_table(headers: Sequence[str], rows: Sequence[Sequence[object]], right=frozenset()) -> List[str]:
    """Aligned columns, two spaces apart; numbers in `right` columns right-aligned."""
    cells = [[str(h) for h in headers]] + [["" if v is None else str(v) for v in row] for row in rows]
    widths = [max(text_width(row[i]) for row in cells) for i in range(len(headers))]
    out = []
    for row in cells:
        parts = []
        for i, value in enumerate(row):
            pad = " " * (widths[i] - text_width(value))
            parts.append(pad + value if i in right else value + pad)
        out.append("  ".join(parts).rstrip())
    return out


__all__ = ["Status", "BagStatus", "ReplicaStatus", "DepositStatus", "Totals", "CollectionTotals", "LibraryTotals",
           "Flag", "build_status", "replica_table", "unfinished_deposits", "status_text",
           "GOOD_STATES", "UNVERIFIED_STATES", "BAD_STATES", "ABSENT", "PROBLEM_FLAGS", "WARNING_FLAGS"]
