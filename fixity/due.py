"""Which copies to audit now, and how: cadence, daily byte budget, priorities.

`--due` must agree with `strongroom status`: a copy status calls overdue is what `--due`
audits, and auditing it clears the warning. So overdue is not recomputed here: it comes from
`reports.status.replica_table` (per-target cadence, history of deep and quick audits,
inconclusive audits not counting, verification at deposit counting as a deep audit).

Selection with `--due` (the default), per (bag, target), with `now` injectable for tests:

* a good copy (verified, repaired) overdue for a deep audit gets a deep audit, overdue only
  for a quick one a quick audit;
* a copy in a bad state (damaged, missing, failed) gets a deep audit (with repair) as soon
  as something other than an audit marked it so (a restore that refused it, a failed
  deposit step), and again every `quick_every` after an audit that left it bad;
* a good copy whose last audit was inconclusive (its target unreachable, a file unreadable) is
  checked again, the same kind of audit, `min(quick_every, 1 day)` after that audit: `status`
  and every audit run report it as an open finding (exit 1) until a conclusive check, so the
  cron job must get to it without waiting for the next cadence;
* a copy the bag's policy asks for but the catalog has no record of (`absent`) gets a deep
  audit at once: finding the bag missing there, the repair step copies it from a good copy;
* after a damaged or inconclusive finding on a target, its other good copies not deep-verified
  since fall due `fixity.after_finding.deep_within` after it (never later than the policy says;
  `catalog.cadence_rules`), the reason naming the finding;
* on a `tier: cold` target copies get quick checks on the cadence and no deep cadence: instead
  `cold_samples` draws a random sample of copies not re-read within `fixity.cold.every`, up to
  `fixity.cold.sample_bytes` per period (after every other deep audit under the daily budget);
* never audited first, then most overdue first (oldest due date);
* deep audits are limited per policy to `daily_byte_budget` bytes per UTC day, counting
  what earlier runs of the same day already read (their replica records). Copies over the
  budget wait for the next day (still overdue, so status still says so); if they are also
  due for a quick check they get that instead. The first deep audit of a day is allowed
  even if its bag alone is larger than the budget, or a bag bigger than the budget would
  never be audited. The budget is what spreads deep audits over the cadence window: a
  large archive whose copies all fell due together is re-read over several days, and the
  staggered audit dates then stay staggered.

`--all` selects every copy of the matching bags (deep unless `--quick`), ignoring cadence
and budget: an explicit request. Copies not yet verified by their deposit (pending, copied)
are never audited (the deposit owns them); copies on targets no longer in the config, or of
bags whose policy is unknown, cannot be audited: all of these are listed as not audited,
never silently skipped.
"""

from __future__ import annotations

import datetime as _dt
import random
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import pyarrow as pa
import pyarrow.compute as pc

from catalog.catalog import Catalog
from catalog.replicas import ABSENT, BAD_STATES, GOOD_STATES, UNVERIFIED_STATES, replica_table
from catalog.schema import utc_now
from catalog.tombstones import without_withdrawn
from fixity.audit import basis_of
from fixity.repair import DETAIL_PREFIX
from policies.units import format_duration, format_size
from strongroom.errors import UsageError

DUE, ALL = "due", "all"
DEEP, QUICK = "deep", "quick"
#: An inconclusive audit of a good copy is retried this long after it at the latest (sooner if
#: the cadence's quick_every is shorter).
INCONCLUSIVE_RETRY = _dt.timedelta(days=1)


@dataclass(frozen=True)
class Candidate:
    """One copy to audit: which bag on which target, how, and why now."""

    bag_id: str
    target: str
    site: Optional[str]
    policy: str
    state: str
    kind: str
    reason: str
    due_at: Optional[_dt.datetime]
    basis: str                     # the copy's current catalog record (its recorded_at), "none" if absent
    bytes: int
    files: int
    order: int = 0
    early: bool = False      # deep audit brought forward by a finding on its target (policy after_finding)
    sampled: bool = False    # drawn for the random deep sample of a cold target, not overdue

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["due_at"] = None if self.due_at is None else _iso(self.due_at)
        return d


@dataclass
class Selection:
    mode: str
    kind: Optional[str]
    now: _dt.datetime
    chosen: List[Candidate] = field(default_factory=list)
    deferred: List[Candidate] = field(default_factory=list)      # deep audits over today's budget
    not_audited: List[Dict[str, Any]] = field(default_factory=list)
    budgets: Dict[str, Dict[str, int]] = field(default_factory=dict)

    def by_bag(self) -> Dict[str, List[Candidate]]:
        out: Dict[str, List[Candidate]] = {}
        for c in self.chosen:
            out.setdefault(c.bag_id, []).append(c)
        return out

    def to_dict(self) -> Dict[str, Any]:
        return {"mode": self.mode, "kind": self.kind, "now": _iso(self.now),
                "chosen": [c.to_dict() for c in self.chosen], "deferred": [c.to_dict() for c in self.deferred],
                "not_audited": self.not_audited, "budgets": self.budgets}


def _iso(value: _dt.datetime) -> str:
    return value.astimezone(_dt.timezone.utc).isoformat().replace("+00:00", "Z")


def select(config, catalog: Catalog, *, mode: str = DUE, kind: Optional[str] = None, library: Optional[str] = None,
           collection: Optional[str] = None, bag: Optional[str] = None,
           now: Optional[_dt.datetime] = None, rng: Optional[random.Random] = None) -> Selection:
    """The copies to audit (see the module docstring). UsageError when a filter matches no bag.
    `rng` draws the cold-tier sample (a SystemRandom by default: nobody can predict it)."""
    if mode not in (DUE, ALL):
        raise ValueError(f"mode must be {DUE!r} or {ALL!r}")
    if kind not in (None, DEEP, QUICK):
        raise ValueError(f"kind must be None, {DEEP!r} or {QUICK!r}")
    now = (now or utc_now()).astimezone(_dt.timezone.utc)
    bags = catalog.bags(library, collection, bag)
    if bags.num_rows == 0 and any(v is not None for v in (library, collection, bag)):
        what = f"bag {bag}" if bag else " / ".join(x for x in (library, collection) if x)
        raise UsageError(f"no registered bag matches {what}; `strongroom status` lists what is held",
                         key="--bag" if bag else "--collection" if collection else "--library")
    bags = without_withdrawn(catalog, bags)   # K4: withdrawn on purpose (a tombstone): never audited, never "missing"
    selection = Selection(mode=mode, kind=kind, now=now)
    if bags.num_rows == 0:
        return selection
    rows = replica_table(config, catalog, bags, bag_id=bag, now=now).to_pylist()
    facts = {r["bag_id"]: r for r in bags.select(["bag_id", "policy", "byte_count", "file_count"]).to_pylist()}

    samples = cold_samples(config, rows, facts, now, rng) if mode == DUE else {}
    deep: List[Tuple[Tuple, Candidate, Optional[Candidate]]] = []
    for r in rows:
        info = facts.get(r["bag_id"])
        if info is None:
            continue
        skip = _not_auditable(config, r, info)
        if skip:
            selection.not_audited.append({"bag_id": r["bag_id"], "target": r["target"], "state": r["state"],
                                          "reason": skip, "blocking": r["state"] not in UNVERIFIED_STATES})
            continue

        sample = samples.get((r["bag_id"], r["target"]))

        def make(k: str, reason: str, due_at: Optional[_dt.datetime]) -> Candidate:
            return Candidate(bag_id=r["bag_id"], target=r["target"], site=r["site"], policy=info["policy"],
                             state=r["state"], kind=k, reason=reason, due_at=due_at, basis=basis_of(r["recorded_at"]),
                             bytes=info["byte_count"], files=info["file_count"], order=r["order"],
                             early=k == DEEP and r["overdue_deep"] and bool(r.get("early_reason")),
                             sampled=k == DEEP and sample is not None and reason == sample)

        if mode == ALL:
            selection.chosen.append(make(kind or DEEP, "requested (--all)", None))
            continue
        wanted = _due(config, r, info, now)
        if sample is not None and kind != QUICK and (wanted is None or wanted[2] is None):
            wanted = (3, None, sample, None if wanted is None else wanted[3])
        if wanted is None:
            continue
        group, due_at, reason_deep, reason_quick = wanted
        if kind == QUICK:
            selection.chosen.append(make(QUICK, reason_quick or reason_deep or "", due_at))
            continue
        if reason_deep is None:
            if kind is None and reason_quick is not None:
                selection.chosen.append(make(QUICK, reason_quick, due_at))
            continue
        fallback = make(QUICK, f"{reason_quick} (deep audit deferred: daily byte budget spent)", due_at) \
            if reason_quick is not None and kind is None else None
        key = (group, due_at or _dt.datetime.min.replace(tzinfo=_dt.timezone.utc), r["bag_id"], r["order"], r["target"])
        deep.append((key, make(DEEP, reason_deep, due_at), fallback))

    _apply_budget(config, catalog, selection, sorted(deep, key=lambda x: x[0]), now, library=library)
    # Deep audits in priority order (as the budget took them), then quick checks, most overdue first.
    deep_chosen = [c for c in selection.chosen if c.kind == DEEP]
    quick_chosen = sorted((c for c in selection.chosen if c.kind == QUICK),
                          key=lambda c: (c.due_at is not None, c.due_at or now, c.bag_id, c.order, c.target))
    selection.chosen = deep_chosen + quick_chosen
    return selection


def _not_auditable(config, r: Dict[str, Any], info: Dict[str, Any]) -> Optional[str]:
    if r["target"] not in config.storage:
        return f"target {r['target']} is no longer in the config; this copy cannot be audited"
    if info["policy"] not in config.policies:
        broken = getattr(config, "broken_policies", {}).get(info["policy"])
        if broken is not None:
            return f"the bag's policy {info['policy']!r} cannot be read ({broken.file} is broken): fix the file to audit it"
        return f"the bag's policy {info['policy']!r} is not in the config: no cadence to audit it by"
    if r["state"] in UNVERIFIED_STATES:
        return f"copy not verified yet ({r['state']}): its deposit has not finished; `strongroom deposit` resumes it"
    return None


def _due(config, r: Dict[str, Any], info: Dict[str, Any], now: _dt.datetime
         ) -> Optional[Tuple[int, Optional[_dt.datetime], Optional[str], Optional[str]]]:
    """(priority group, due date, why deep, why quick) when the copy is due, else None."""
    state = r["state"]
    if state == ABSENT:
        return 0, None, "no copy recorded on this target although the policy asks for one", None
    cadence = config.cadence_for(config.policies[info["policy"]], r["target"])
    if state in BAD_STATES:
        last, recorded = r["last_audit_at"], r["recorded_at"]
        if last is None or (recorded is not None and recorded > last):
            detail = f": {r['detail']}" if r.get("detail") else ""
            return 0, recorded, f"marked {state} since its last audit{_short(detail)}", None
        retry_at = last + cadence.quick_every
        if retry_at <= now:
            return 0, retry_at, f"still {state} after the audit of {_day(last)}: repair retried", None
        return None
    if state not in GOOD_STATES:
        return None
    why_deep = why_quick = None
    if r["overdue_deep"] and r.get("early_reason"):
        why_deep = f"{r['early_reason']} (due {_day(r['deep_due_at'])}, last deep {_day(r['last_deep_at'])})"
    elif r["overdue_deep"]:
        why_deep = "never deep-audited" if r["last_deep_at"] is None else \
            f"deep audit due {_day(r['deep_due_at'])} (last {_day(r['last_deep_at'])})"
    if r["overdue_quick"]:
        why_quick = "never checked" if r["last_check_at"] is None else \
            f"quick check due {_day(r['quick_due_at'])} (last {_day(r['last_check_at'])})"
    retry = _inconclusive_retry(r, cadence, now)
    if retry is not None and why_deep is None and why_quick is None:
        retry_at, reason = retry
        if r["last_audit_kind"] == DEEP:
            return 1, retry_at, reason, reason
        return 1, retry_at, None, reason
    if why_deep is None and why_quick is None:
        return None
    group = 1 if r["last_deep_at"] is None else 2
    due_at = r["deep_due_at"] if why_deep else r["quick_due_at"]
    return group, due_at, why_deep, why_quick


def cold_samples(config, rows: List[Dict[str, Any]], facts: Dict[str, Dict[str, Any]], now: _dt.datetime,
                 rng: Optional[random.Random] = None) -> Dict[Tuple[str, str], str]:
    """(bag, target) -> why, for the copies on `tier: cold` targets drawn for a deep re-read now.

    Per cold target and policy: what deep checks re-read there within the policy's `cold.every`
    counts against `cold.sample_bytes`; the rest of the budget goes to good copies not re-read in
    that period, drawn at random (the first one even when it alone exceeds the budget, or a bag
    bigger than the budget would never be re-read)."""
    rng = rng or random.SystemRandom()
    groups: Dict[Tuple[str, str], List[Dict[str, Any]]] = {}
    for r in rows:
        info = facts.get(r["bag_id"])
        if not r.get("cold") or info is None or info["policy"] not in config.policies or r["target"] not in config.storage:
            continue
        groups.setdefault((r["target"], info["policy"]), []).append(r)
    out: Dict[Tuple[str, str], str] = {}
    for (target, policy), members in sorted(groups.items()):
        cold = config.cadence_for(config.policies[policy], target).cold
        since = now - cold.every
        read = sum(facts[r["bag_id"]]["byte_count"] for r in members
                   if r["last_deep_at"] is not None and r["last_deep_at"] >= since)
        pool = sorted((r for r in members if r["state"] in GOOD_STATES
                       and (r["last_deep_at"] is None or r["last_deep_at"] < since)), key=lambda r: r["bag_id"])
        rng.shuffle(pool)
        taken = 0
        for r in pool:
            size = facts[r["bag_id"]]["byte_count"]
            if read + taken + size > cold.sample_bytes and read + taken > 0:
                continue
            taken += size
            out[(r["bag_id"], target)] = (
                f"cold-tier random sample: {format_size(read)} re-read on {target} in the last "
                f"{format_duration(cold.every)}, budget {format_size(cold.sample_bytes)} (policy fixity.cold)")
    return out


def _inconclusive_retry(r: Dict[str, Any], cadence, now: _dt.datetime) -> Optional[Tuple[_dt.datetime, str]]:
    """(when, why) a good copy whose last audit was inconclusive is checked again, if that is now."""
    last = r.get("last_audit_at")
    if r.get("last_audit_outcome") != "inconclusive" or last is None:
        return None
    retry_at = last + min(cadence.quick_every, INCONCLUSIVE_RETRY)
    if retry_at > now:
        return None
    return retry_at, f"its {r.get('last_audit_kind') or ''} audit of {_day(last)} was inconclusive: checked again"


def _short(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _day(value: Optional[_dt.datetime]) -> str:
    return "never" if value is None else value.astimezone(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def bytes_read_today(catalog: Catalog, now: _dt.datetime, library: Optional[str] = None) -> Dict[str, int]:
    """Payload bytes deep audits recorded since 00:00 UTC of `now`'s day, by policy (of one
    library's bags with `library`)."""
    start = now.astimezone(_dt.timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    log = catalog.replicas(current=False)
    if log.num_rows == 0:
        return {}
    detail = pc.fill_null(log.column("detail"), "")
    mask = pc.and_(pc.fill_null(pc.equal(log.column("last_audit_kind"), DEEP), False),
                   pc.starts_with(detail, DETAIL_PREFIX))
    at = log.column("last_audit_at")
    mask = pc.and_(mask, pc.fill_null(pc.and_(pc.greater_equal(at, pa.scalar(start, at.type)),
                                              pc.less_equal(at, pa.scalar(now, at.type))), False))
    audits = log.filter(mask).select(["bag_id", "target", "last_audit_at"])
    if audits.num_rows == 0:
        return {}
    audits = audits.group_by(["bag_id", "target", "last_audit_at"]).aggregate([])
    bags = catalog.bags(library).select(["bag_id", "policy", "byte_count"])
    joined = audits.join(bags, "bag_id", join_type="inner")
    sums = joined.group_by("policy").aggregate([("byte_count", "sum")])
    return dict(zip(sums.column("policy").to_pylist(), sums.column("byte_count_sum").to_pylist()))


def _apply_budget(config, catalog: Catalog, selection: Selection,
                  deep: List[Tuple[Tuple, Candidate, Optional[Candidate]]], now: _dt.datetime,
                  library: Optional[str] = None) -> None:
    """Take deep audits while the policy's daily budget lasts. The budget is the machine's, shared
    by every library: what others' audits read today counts against it. With `library` the
    figures shown (`read_today`) are that library's own, and `shared: true` says the budget is
    also spent by others, so a library's view shows no total of theirs."""
    used = bytes_read_today(catalog, now) if deep else {}
    own = bytes_read_today(catalog, now, library) if deep and library is not None else used
    for _, cand, fallback in deep:
        budget = config.policies[cand.policy].fixity.daily_byte_budget
        info = selection.budgets.setdefault(cand.policy, {"budget": budget, "read_today": own.get(cand.policy, 0),
                                                          "chosen": 0})
        if library is not None:
            info["shared"] = True
        spent = used.get(cand.policy, 0) + info["chosen"]
        if spent + cand.bytes <= budget or spent == 0:
            info["chosen"] += cand.bytes
            selection.chosen.append(cand)
        else:
            selection.deferred.append(cand)
            if fallback is not None:
                selection.chosen.append(fallback)


__all__ = ["DUE", "ALL", "DEEP", "QUICK", "Candidate", "Selection", "select", "basis_of", "bytes_read_today",
           "cold_samples"]
