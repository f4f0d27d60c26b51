"""Record a bag audit: its ledger events and each copy's new catalog record.

Events (one ledger segment per bag audit; LoC PREMIS eventType vocabulary, which has no
"repair"): `fixity check` per copy audited (success / failure / inconclusive) and per file
found damaged or unreadable; `replication` for each file replaced from a good copy, its detail
starting "repair:"; `quarantine` for each extra file or odd object moved aside (`deletion`
where it had to be deleted), detail starting "repair:". Bag-level judgements (no good copy,
catalog in doubt, tag file in doubt, disputed) are `fixity check` failures of the bag.

How a damaged copy's record keeps its damage open (and since when): `fixity.open_detail`.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
from typing import Any, List, Mapping, Optional

from catalog.catalog import Catalog
from catalog.schema import EventRecord, ReplicaRecord, check_bag_path
from fixity import audit as A
from fixity import open_detail as D
from fixity.bag_audit import (DISPUTED_STATE, FAILURE, GOOD_STATES, INCONCLUSIVE, REPAIRED, SKIPPED, SUCCESS,
                              BagAudit, ReplicaOutcome)
from strongroom import NAME, __version__

AGENT = f"{NAME} {__version__}"
#: Every replica record an audit writes has a detail starting with this (due.py counts the
#: bytes today's audits read by it).
DETAIL_PREFIX = "audit "
DETAIL_MAX = D.DETAIL_MAX
#: Ledger events per copy: file-level events beyond these are counted in the copy's event.
MAX_FILE_EVENTS = 1000
MAX_INCONCLUSIVE_EVENTS = 100


def _record(catalog: Catalog, config, result: BagAudit, looks: Mapping[str, A.ReplicaCheck],
            now: _dt.datetime, current: Mapping[str, Mapping[str, Any]]) -> None:
    events: List[EventRecord] = []
    bag = result.bag_id
    for ro in result.replicas:
        look = looks[ro.target]
        checked_at = _parse_time(ro.checked_at) or now
        if ro.audited and ro.outcome != SKIPPED:
            events.append(_event("fixity check", _event_outcome(ro), "replica", bag, ro.target, None,
                                 _replica_detail(ro, look), checked_at))
        file_events = 0
        for f in ro.findings:
            if f.path is None and f.kind in (A.BAG_MISSING, A.BAG_NOT_A_FOLDER):
                events.append(_event("fixity check", "failure", "replica", bag, ro.target, None, f.detail, checked_at))
                continue
            if f.path is None:
                continue
            if f.damage and file_events < MAX_FILE_EVENTS or f.inconclusive and file_events < MAX_INCONCLUSIVE_EVENTS:
                file_events += 1
                events.append(_event("fixity check", "failure" if f.damage else "inconclusive", "file", bag,
                                     ro.target, f.path, f"{f.kind}: {f.detail}", checked_at))
        for a in ro.repairs:
            events.append(_event(_ACTION_EVENTS.get(a.action, "replication"), a.outcome,
                                 "file" if a.path else "replica", bag, a.target, a.path or None, a.detail, now))
    for f in result.bag_findings:
        events.append(_event("fixity check", "failure", "bag", bag, None, f.path, f"{f.kind}: {f.detail}", now))
    if events:
        catalog.append_events(events)
    result.events = len(events)

    for ro in result.replicas:
        known = current.get(ro.target)
        rec = _replica_record(bag, ro, looks[ro.target], now,
                              ReplicaRecord(**{k: known[k] for k in ReplicaRecord.__dataclass_fields__})
                              if known else None)
        for r in rec:
            catalog.record_replica(r)
        if rec:
            ro.state_after = rec[-1].state


#: PREMIS event type of each repair action ("quarantine": LoC's term for setting an object aside).
_ACTION_EVENTS = {"delete": "deletion", "move-aside": "quarantine", "replace": "replication"}

def _replica_record(bag: str, ro: ReplicaOutcome, look: A.ReplicaCheck, now: _dt.datetime,
                    current: Optional[ReplicaRecord]) -> List[ReplicaRecord]:
    """The copy's new catalog record(s); `current` is its record when the bag's audit began.

    A disputed copy stays disputed (only a person resolves it). A damaged copy stays damaged
    until a deep check or a repair clears it: a quick check cannot see corrupted bytes, so its
    success keeps the state and the open findings, with the time they were first found."""
    records = _new_records(bag, ro, look, now, current)
    if current is not None and current.state == DISPUTED_STATE:
        records = [dataclasses.replace(r, state=DISPUTED_STATE) for r in records[:1]]
    return records


def _new_records(bag: str, ro: ReplicaOutcome, look: A.ReplicaCheck, now: _dt.datetime,
                 current: Optional[ReplicaRecord]) -> List[ReplicaRecord]:
    if ro.outcome == SKIPPED:
        return []
    site = ro.site
    if not ro.audited:
        # Looked at for comparison only: a record only when something was found or fixed on it.
        if not ro.findings or all(f.inconclusive for f in ro.findings):
            return []
        base = current or ReplicaRecord(bag_id=bag, target=ro.target, site=site, state="verified")
        state = "damaged" if ro.remaining else "repaired"
        since = (D.open_since(current.detail) if current is not None and current.state == "damaged" else None) \
            or now.isoformat()
        detail = D.with_since(_remaining_detail(ro), since) if ro.remaining else \
            f"{len(ro.repairs)} file(s) repaired while other copies were audited"[:DETAIL_MAX]
        return [dataclasses.replace(base, site=site, state=state, detail=detail, recorded_at=now)]
    checked_at = _parse_time(ro.checked_at) or now
    kind = look.kind
    before = ro.state_before
    verified_at = current.verified_at if current else None
    out: List[ReplicaRecord] = []
    summary = _replica_detail(ro, look)
    if ro.outcome == INCONCLUSIVE:
        if before is None:
            return out  # never recorded (absent): it stays absent, so it stays due; the event says why
        detail = summary[:DETAIL_MAX]
        if before not in GOOD_STATES and current is not None and current.detail:
            detail = D.still_open(summary, current)   # what was found stays open until a check clears it
        out.append(ReplicaRecord(bag_id=bag, target=ro.target, site=site, state=before, verified_at=verified_at,
                                 last_audit_at=checked_at, last_audit_kind=kind, last_audit_outcome="inconclusive",
                                 detail=detail, recorded_at=checked_at))
        return out
    if ro.outcome == SUCCESS:
        detail = summary[:DETAIL_MAX]
        if kind == A.DEEP:
            state, verified_at = "verified", checked_at
        else:  # a quick check cannot clear damage it cannot see (digests)
            state = "verified" if before in GOOD_STATES or before is None else before
            if state not in GOOD_STATES and current is not None and current.detail:
                detail = D.still_open(summary, current)
        out.append(ReplicaRecord(bag_id=bag, target=ro.target, site=site, state=state, verified_at=verified_at,
                                 last_audit_at=checked_at, last_audit_kind=kind, last_audit_outcome="success",
                                 detail=detail, recorded_at=checked_at))
        return out
    bag_missing = any(f.kind == A.BAG_MISSING for f in ro.findings)
    whole_bag = bag_missing or any(f.kind == A.BAG_NOT_A_FOLDER for f in ro.findings)
    found_state = "missing" if bag_missing else "damaged"
    since = checked_at.isoformat()
    if current is not None and current.state in ("damaged", "missing") and ro.outcome == FAILURE:
        since = D.open_since(current.detail) or (current.last_audit_at or current.recorded_at).isoformat()
    out.append(ReplicaRecord(bag_id=bag, target=ro.target, site=site, state=found_state, verified_at=verified_at,
                             last_audit_at=checked_at, last_audit_kind=kind, last_audit_outcome="failure",
                             detail=D.with_since(summary, since) if ro.outcome == FAILURE else summary[:DETAIL_MAX],
                             recorded_at=checked_at))
    if ro.outcome == REPAIRED:
        verified = now if kind == A.DEEP or whole_bag else verified_at
        out.append(ReplicaRecord(bag_id=bag, target=ro.target, site=site, state="repaired", verified_at=verified,
                                 last_audit_at=checked_at, last_audit_kind=kind, last_audit_outcome="success",
                                 detail=(f"{DETAIL_PREFIX}({kind}): {len(ro.repairs)} repair(s) made from good "
                                         f"copies and re-verified")[:DETAIL_MAX],
                                 recorded_at=max(now, checked_at + _dt.timedelta(microseconds=1))))
    return out


def _replica_detail(ro: ReplicaOutcome, look: A.ReplicaCheck) -> str:
    kind = look.kind
    if ro.outcome == INCONCLUSIVE and not look.reachable:
        head = f"{DETAIL_PREFIX}({kind}): inconclusive: {look.unreachable_reason}"
    else:
        what = f"{look.files_checked} files, {look.bytes_checked} bytes re-read" if kind == A.DEEP else \
            f"{look.files_checked} files present with the expected sizes checked"
        head = f"{DETAIL_PREFIX}({kind}): {ro.outcome}: {what}"
    damage = [f for f in ro.findings if f.damage]
    inconclusive = [f for f in ro.findings if f.inconclusive]
    parts = [head]
    if damage:
        parts.append(f"{len(damage) + ro.not_listed} damaged: " + "; ".join(str(f) for f in damage[:10]))
    if ro.repairs:
        ok = sum(1 for a in ro.repairs if a.outcome == "success")
        parts.append(f"{ok} of {len(ro.repairs)} repair(s) succeeded")
    if ro.remaining:
        parts.append(f"{len(ro.remaining)} remain damaged")
    if inconclusive:
        parts.append(f"{len(inconclusive)} could not be read: " + "; ".join(str(f) for f in inconclusive[:5]))
    return ". ".join(parts)


def _remaining_detail(ro: ReplicaOutcome) -> str:
    return f"{DETAIL_PREFIX}(comparison): {len(ro.remaining)} damaged: " + "; ".join(str(f) for f in ro.remaining[:10])


def _event_outcome(ro: ReplicaOutcome) -> str:
    return {SUCCESS: "success", REPAIRED: "failure", FAILURE: "failure", INCONCLUSIVE: "inconclusive"}[ro.outcome]


def _event(type_: str, outcome: str, object_type: str, bag: str, target: Optional[str], path: Optional[str],
           detail: str, when: _dt.datetime) -> EventRecord:
    if path is not None:
        try:
            check_bag_path(path)
        except ValueError:
            detail = f"{path!r}: {detail}"
            path = None
            object_type = "replica" if object_type == "file" else object_type
    return EventRecord(type=type_, outcome=outcome, detail=detail[:DETAIL_MAX], agent=AGENT, object_type=object_type,
                       bag_id=bag, target=target, path=path, datetime=when)


def _parse_time(text: Optional[str]) -> Optional[_dt.datetime]:
    if not text:
        return None
    try:
        value = _dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=_dt.timezone.utc)
