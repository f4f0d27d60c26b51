"""The cadence rules beyond `deep_every` (policies.fixity_rules), applied to the replica table.

Applied inside `catalog.replicas.replica_table`, so `strongroom status`, `audit --due` and the
reports agree on what is overdue and why:

* after a finding: a damaged or inconclusive audit outcome on a target (the newest one) makes
  every OTHER good copy on it that was not deep-verified since then due for a deep audit
  `after_finding.deep_within` after the finding, for findings younger than
  `after_finding.window` (per the bag's policy). Only ever earlier than the policy's own due
  date: the new due date is the earlier of the two, so a clean history changes nothing.
* cold targets (`tier: cold`): no copy is overdue for a deep audit by `deep_every` (a random
  sample is re-read instead, chosen by `fixity.due`); quick checks keep their cadence. A finding
  on a cold target still brings its copies' deep audits forward.

Vectorised over the table (joins of a small per-(policy, target) table), no row loops.
"""

from __future__ import annotations

import datetime as _dt
from typing import Dict, List

import pyarrow as pa
import pyarrow.compute as pc

from catalog.schema import TIMESTAMP
from policies.units import format_duration

GOOD = ("verified", "repaired")
FINDING_OUTCOMES = ("failure", "inconclusive")


def newest_findings(log: pa.Table) -> pa.Table:
    """target -> finding_at, finding_bag, finding_outcome: the newest damaged/inconclusive audit
    outcome recorded on each target (from the replica log)."""
    bad = pc.fill_null(pc.is_in(log.column("last_audit_outcome"), value_set=pa.array(FINDING_OUTCOMES)), False)
    bad = log.filter(pc.and_(bad, pc.is_valid(log.column("last_audit_at"))))
    bad = bad.select(["target", "last_audit_at", "bag_id", "last_audit_outcome"])
    bad = bad.sort_by([("target", "ascending"), ("last_audit_at", "descending"), ("bag_id", "ascending")])
    n = bad.num_rows
    if n > 1:
        col = bad.column("target")
        first = pa.chunked_array([pa.array([True])] + list(pc.not_equal(col.slice(1), col.slice(0, n - 1)).chunks),
                                 type=pa.bool_())
        bad = bad.filter(first)
    return bad.rename_columns(["target", "finding_at", "finding_bag", "finding_outcome"])


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
    findings = newest_findings(log)
    rows = out.append_column("_row", pa.array(range(out.num_rows), pa.int64()))
    rows = rows.join(bags.select(["bag_id", "policy"]), "bag_id", join_type="left outer")
    rows = rows.join(_rules(config), ["policy", "target"], join_type="left outer")
    rows = rows.join(findings, "target", join_type="left outer")
    rows = rows.sort_by([("_row", "ascending")])

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


__all__ = ["apply", "newest_findings"]
