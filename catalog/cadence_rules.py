"""The cadence rules beyond `deep_every` (policies.fixity_rules), applied to the replica table.

Applied inside `catalog.replicas.replica_table`, so `strongroom status`, `audit --due` and the
reports agree on what is overdue and why:

* after a finding: a damaged or inconclusive audit outcome on a target makes every OTHER good
  copy on it that was not deep-verified since due for a deep audit `after_finding.deep_within`
  after the first such finding, for findings younger than `after_finding.window` (per the
  bag's policy). Only ever earlier than the policy's own due
  date: the new due date is the earlier of the two, so a clean history changes nothing.
* cold targets (`tier: cold`): no copy is overdue for a deep audit by `deep_every` (a random
  sample is re-read instead, chosen by `fixity.due`); quick checks keep their cadence. A finding
  on a cold target still brings its copies' deep audits forward.

Vectorised over the table (joins of a small per-(policy, target) table); only the copies on
targets with findings in the window are looked at one by one (a bisect each).
"""

from __future__ import annotations

import bisect
import datetime as _dt
from typing import Dict, List, Optional, Tuple

import pyarrow as pa
import pyarrow.compute as pc

from catalog.schema import TIMESTAMP
from policies.units import format_duration

GOOD = ("verified", "repaired")
FINDING_OUTCOMES = ("failure", "inconclusive")


def _findings(rows: pa.Table, log: pa.Table, now: _dt.datetime) -> pa.Table:
    """finding_at, finding_bag, finding_outcome per row (null when none): the FIRST damaged or
    inconclusive audit outcome on the row's target, of another bag, after the copy's last deep
    verification and within its policy's window. The first, not the newest: a later finding
    must never push back an audit an earlier one already brought forward. Only rows on targets
    with findings in the window are looked at (bisect over that target's findings)."""
    n = rows.num_rows
    empty = pa.table({"finding_at": pa.nulls(n, TIMESTAMP), "finding_bag": pa.nulls(n, pa.string()),
                      "finding_outcome": pa.nulls(n, pa.string())})
    longest_us = pc.max(pc.cast(rows.column("window"), pa.int64())).as_py()   # no min_max kernel for durations
    if longest_us is None:
        return empty
    longest = _dt.timedelta(microseconds=longest_us)
    bad = pc.fill_null(pc.is_in(log.column("last_audit_outcome"), value_set=pa.array(FINDING_OUTCOMES)), False)
    at = log.column("last_audit_at")
    bad = pc.and_(bad, pc.fill_null(pc.greater_equal(at, pa.scalar(now - longest, at.type)), False))
    found = log.filter(bad).select(["target", "last_audit_at", "bag_id", "last_audit_outcome"])
    if found.num_rows == 0:
        return empty
    found = found.sort_by([("target", "ascending"), ("last_audit_at", "ascending"), ("bag_id", "ascending")])
    by_target: Dict[str, Tuple[List[int], List[str], List[str]]] = {}
    for target, when, bag, outcome in zip(found.column("target").to_pylist(),
                                          pc.cast(found.column("last_audit_at"), pa.int64()).to_pylist(),
                                          found.column("bag_id").to_pylist(),
                                          found.column("last_audit_outcome").to_pylist()):
        entry = by_target.setdefault(target, ([], [], []))
        entry[0].append(when)
        entry[1].append(bag)
        entry[2].append(outcome)
    now_us = _us(now)
    picked_at: List[Optional[int]] = [None] * n
    picked_bag: List[Optional[str]] = [None] * n
    picked_outcome: List[Optional[str]] = [None] * n
    index = pc.indices_nonzero(pc.fill_null(pc.is_in(rows.column("target"),
                                                      value_set=pa.array(list(by_target))), False)).to_pylist()
    if not index:
        return empty
    sub = rows.take(index)
    last = pc.cast(sub.column("last_deep_at"), pa.int64()).to_pylist()
    window = pc.cast(sub.column("window"), pa.int64()).to_pylist()
    for i, target, bag, deep_us, window_us in zip(index, sub.column("target").to_pylist(),
                                                   sub.column("bag_id").to_pylist(), last, window):
        if window_us is None:
            continue
        ats, bags, outcomes = by_target[target]
        low = max(now_us - window_us, -1 if deep_us is None else deep_us + 1)
        k = bisect.bisect_left(ats, low)
        while k < len(ats) and bags[k] == bag:
            k += 1
        if k < len(ats):
            picked_at[i], picked_bag[i], picked_outcome[i] = ats[k], bags[k], outcomes[k]
    return pa.table({"finding_at": pc.cast(pa.array(picked_at, pa.int64()), TIMESTAMP),
                     "finding_bag": pa.array(picked_bag, pa.string()),
                     "finding_outcome": pa.array(picked_outcome, pa.string())})


def _us(value: _dt.datetime) -> int:
    return (value - _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)) // _dt.timedelta(microseconds=1)


def _rules(config) -> pa.Table:
    """(policy, target) -> deep_within and window of after_finding (null when off), cold flag."""
    cols: Dict[str, List] = {"policy": [], "target": [], "deep_within": [], "window": [], "cold": []}
    for policy in config.policies.values():
        for name, spec in config.storage.items():
            after = config.cadence_for(policy, name).after_finding
            cols["policy"].append(policy.name)
            cols["target"].append(name)
            cols["deep_within"].append(None if after is None else after.deep_within)
            cols["window"].append(None if after is None else after.window)
            cols["cold"].append(getattr(spec, "tier", "hot") == "cold")
    return pa.table(cols, schema=pa.schema([("policy", pa.string()), ("target", pa.string()),
                                            ("deep_within", pa.duration("us")), ("window", pa.duration("us")),
                                            ("cold", pa.bool_())]))


def apply(config, out: pa.Table, log: pa.Table, bags: pa.Table, now: _dt.datetime) -> pa.Table:
    """`out` (replica_table's columns) with deep_due_at / overdue_deep adjusted and two columns
    added: `early_reason` (why a deep audit is due before the policy's date, else null) and
    `cold` (the copy is on a cold target)."""
    if out.num_rows == 0:
        return out.append_column("early_reason", pa.array([], pa.string())) \
            .append_column("cold", pa.array([], pa.bool_()))
    rows = out.append_column("_row", pa.array(range(out.num_rows), pa.int64()))
    rows = rows.join(bags.select(["bag_id", "policy"]), "bag_id", join_type="left outer")
    rows = rows.join(_rules(config), ["policy", "target"], join_type="left outer")
    rows = rows.sort_by([("_row", "ascending")])
    for name, column in zip(("finding_at", "finding_bag", "finding_outcome"), _findings(rows, log, now).columns):
        rows = rows.append_column(name, column)

    now_s = pa.scalar(now, type=TIMESTAMP)
    finding_at = rows.column("finding_at")
    live = pc.fill_null(pc.greater_equal(finding_at, pc.subtract(now_s, rows.column("window"))), False)
    good = pc.is_in(rows.column("state"), value_set=pa.array(GOOD))
    other = pc.fill_null(pc.not_equal(rows.column("bag_id"), rows.column("finding_bag")), True)
    stale = pc.fill_null(pc.less(rows.column("last_deep_at"), finding_at), True)
    early_at = pc.add(finding_at, rows.column("deep_within"))
    deep_due = rows.column("deep_due_at")
    cold = pc.fill_null(rows.column("cold"), False)
    # Hot: only when earlier than the policy's date (a copy never deep-verified is overdue already).
    sooner = pc.or_(cold, pc.fill_null(pc.less(early_at, deep_due), False))
    early = pc.fill_null(pc.and_(pc.and_(pc.and_(live, good), pc.and_(other, stale)), sooner), False)

    new_due = pc.if_else(early, early_at, pc.if_else(cold, pa.scalar(None, TIMESTAMP), deep_due))
    overdue = pc.if_else(early, pc.fill_null(pc.less(early_at, now_s), False),
                         pc.and_(rows.column("overdue_deep"), pc.invert(cold)))
    reason = _reasons(rows, early)
    out = out.set_column(out.schema.get_field_index("deep_due_at"), "deep_due_at", new_due)
    out = out.set_column(out.schema.get_field_index("overdue_deep"), "overdue_deep", overdue)
    return out.append_column("early_reason", reason).append_column("cold", cold)


def _reasons(rows: pa.Table, early: pa.ChunkedArray) -> pa.Array:
    """'after a damaged finding on site-b (bag X, 2031-06-01): deep audits within 7d' per early row.
    Few rows are early; only those are formatted."""
    flags = early.to_pylist()
    if not any(flags):
        return pa.nulls(len(flags), pa.string())
    at = rows.column("finding_at").to_pylist()
    bag = rows.column("finding_bag").to_pylist()
    outcome = rows.column("finding_outcome").to_pylist()
    within = rows.column("deep_within").to_pylist()
    target = rows.column("target").to_pylist()
    out: List = []
    for i, flag in enumerate(flags):
        if not flag:
            out.append(None)
            continue
        what = "damaged" if outcome[i] == "failure" else "inconclusive"
        when = at[i].astimezone(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        out.append(f"deep audit brought forward: {what} finding on {target[i]} ({bag[i]}, {when}); "
                   f"policy after_finding.deep_within {format_duration(within[i])}")
    return pa.array(out, pa.string())


__all__ = ["apply"]
