"""The replica table: one row per copy a bag's policy asks for or the catalog records.

The query behind `strongroom status`, `strongroom audit --due` and the reports: pyarrow joins
and group-bys over the bags and replica tables (file rows are never read), so it costs the same
for ten files or ten million.

Replica states come from the catalog (verified, repaired, copied, pending, failed, damaged,
missing, disputed) plus one pseudo-state, `absent`: the bag's policy asks for a copy on a target
and the catalog has no record of one there. `repaired` (damage found, repaired from a good copy
and re-verified) counts as good exactly as `verified` does.

Overdue is a schedule matter, not damage: `strongroom audit --due` clears it. A replica is
overdue for a deep audit when no deep audit (a re-hash of every file) finished within the
cadence's `deep_every` of now; verification at deposit or rebuild counts as a deep audit at
`verified_at` (unless it was recorded as a quick check). It is overdue for a quick audit when
no check of any kind finished within `quick_every`. Inconclusive audits do not count. Cadences
are per target: `config.cadence_for(policy, target)`. Only replicas in a good state (verified,
repaired) are checked for overdue: the others are problems already. The rules of
`catalog.cadence_rules` then apply: a finding on a target brings its other copies' deep audits
forward (column `early_reason` says why), and copies on `tier: cold` targets are never overdue
for a deep audit by `deep_every` (a random sample is re-read instead; column `cold`).
"""

from __future__ import annotations

import datetime as _dt
from typing import Dict, Optional

import pyarrow as pa
import pyarrow.compute as pc

from catalog import cadence_rules
from catalog.catalog import Catalog
from catalog.schema import TIMESTAMP, utc_now

GOOD_STATES = ("verified", "repaired")
UNVERIFIED_STATES = ("pending", "copied")
BAD_STATES = ("failed", "damaged", "missing", "disputed")
ABSENT = "absent"

_DURATION = pa.duration("us")
_NO_ORDER = 1 << 30  # sorts replicas on targets outside the policy after the policy's own


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
    out = cadence_rules.apply(config, out, log, bags, now)   # after findings, cold targets
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
