"""Executing a withdrawal, a legal hold and its release once a quorum approved it (issue 13 part 5).

G1's `strongroom approve` calls these at quorum (contract K3, /work/coord/api-governance.md);
they are the only code that removes a bag from the archive, so the order of the steps is the
safety argument:

1. Check everything first, on every target, before anything is removed: the bag is registered
   (or already being withdrawn by this request), no legal hold is on (the catalog's record, and
   on S3 each version's own legal-hold flag), no version is under Object Lock retention that
   cannot be passed (compliance mode: never; governance mode: only when the approvals reach the
   `governance-bypass` quorum, and then the withdrawal is recorded as a bypass). A target that
   cannot be checked stops the withdrawal too: "nothing deleted anywhere" means all targets.
2. Before the first deletion: the "started" tombstone on every target (a K1 record under
   `.strongroom/tombstones/`) and in the catalog, and a `deaccession` event saying the
   withdrawal started. From here on the bag is withdrawn for every reader (audits, status,
   rebuild), also if the process dies half way: never half withdrawn without saying so.
3. Per target: remove every object (storage_adapters.withdrawal), one `deletion` event per copy.
4. Once every copy is gone: the "complete" tombstone on every target and in the catalog, and a
   `deaccession` event. (A target's "complete" record thus means gone everywhere: a catalog
   rebuilt after a crash in step 3 still says the withdrawal is unfinished.)

A rerun (G1 retries execution with `strongroom approve REQ`) reuses the started tombstone (same
time, same manifest digests), skips the steps already done and finishes the rest.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from catalog.requests import ExecutionResult
from catalog.schema import EventRecord, utc_now
from catalog.tombstones import (COMPLETE, HOLD, RELEASE, STARTED, HoldRecord, Tombstone, held_bags, holds, record_hold,
                                record_tombstone, withdrawn_bags)
from fixity.audit_record import AGENT, DETAIL_MAX
from storage_adapters.base import NotFound, StorageAdapter, StorageError
from storage_adapters.registry import open_target
from storage_adapters.withdrawal import BagOnTarget, hold_key, inspect_bag, remove_bag, set_legal_hold, tombstone_key
from strongroom.bag_id import BagId
from strongroom.errors import PreservationError

BYPASS = "governance-bypass"


class WithdrawalRefused(PreservationError):
    """The approved request cannot be carried out now (legal hold, Object Lock, unknown bag, a
    target that cannot be checked); nothing was removed anywhere. Exit 1: the request stays
    approved, and `strongroom approve REQ` retries once the obstacle is gone."""


@dataclass
class _Plan:
    """One bag to withdraw: its tombstone and what each target holds of it."""

    bag_id: str
    tombstone: Tombstone
    found: Dict[str, BagOnTarget] = field(default_factory=dict)
    resumed: bool = False


def _approvers(approvals: Sequence[Any]) -> Tuple[str, ...]:
    return tuple(sorted({str(getattr(a, "principal", a)) for a in approvals}))


def _bypass_quorum(config) -> Optional[int]:
    gov = getattr(config, "governance", None)
    return None if gov is None else gov.quorum.get(BYPASS)


def _adapters(config, catalog, bag_id: str) -> List[StorageAdapter]:
    """Every configured target, opened with the bag's policy retention (records get the lock
    the bag's objects had)."""
    bag = catalog.bag(bag_id)
    policy = None if bag is None else config.policies.get(bag.policy)
    retention = None if policy is None else getattr(policy, "retention", None)
    return [open_target(t, retention=retention) for _, t in sorted(config.storage.items())]


def _manifest_digests(adapters: Sequence[StorageAdapter], bag: BagId) -> Dict[str, str]:
    """sha256 of each top-level manifest and tag manifest of the bag, from the first copy that
    has them (they name every payload digest: enough to recognise the withdrawn bag later)."""
    for adapter in adapters:
        try:
            names = [p for p in adapter.list_bag_files(bag) if "/" not in p
                     and (p.startswith("manifest-") or p.startswith("tagmanifest-")) and p.endswith(".txt")]
            if not names:
                continue
            out = {}
            for name in sorted(names):
                h = hashlib.sha256()
                with adapter.open_file(bag, name) as fh:
                    for chunk in iter(lambda: fh.read(1 << 20), b""):
                        h.update(chunk)
                out[name] = h.hexdigest()
            return out
        except (NotFound, StorageError):
            continue
    return {}


def _event(type_: str, outcome: str, bag_id: str, detail: Dict[str, Any], *, target: Optional[str] = None,
           object_type: str = "bag") -> EventRecord:
    text = json.dumps(detail, sort_keys=True, ensure_ascii=False)
    return EventRecord(type=type_, outcome=outcome, detail=text[:DETAIL_MAX], agent=AGENT, object_type=object_type,
                       bag_id=bag_id, target=target)


def _done_targets(catalog, bag_id: str, request_id: str) -> set:
    """Targets whose `deletion` event for this request is already in the ledger (a rerun)."""
    done = set()
    for e in catalog.events(bag_id, type="deletion").to_pylist():
        try:
            if json.loads(e["detail"] or "{}").get("request") == request_id:
                done.add(e["target"])
        except (ValueError, AttributeError):
            continue
    return done


# ------------------------------------------------------------------------------------ withdraw

def execute_withdraw(config, catalog, request, approvals) -> ExecutionResult:
    """Withdraw every bag of the request from every target (see the module docstring)."""
    approvers = _approvers(approvals)
    quorum = _bypass_quorum(config)
    may_bypass = quorum is not None and len(approvers) >= quorum
    now = utc_now()
    existing = withdrawn_bags(catalog)
    held = held_bags(catalog)
    plans: List[_Plan] = []
    problems: List[str] = []
    adapters_of: Dict[str, List[StorageAdapter]] = {}
    for bag_id in request.bag_ids:
        old = existing.get(bag_id)
        if old is not None and old.request_id != request.id:
            problems.append(f"{bag_id}: already withdrawn by {old.request_id}")
            continue
        if old is not None and old.state == COMPLETE:
            continue
        rec = catalog.bag(bag_id)
        if rec is None and old is None:
            problems.append(f"{bag_id}: not a registered bag")
            continue
        if bag_id in held:
            problems.append(f"{bag_id}: under legal hold ({held[bag_id].request_id}); a release-hold request "
                            "must reach its quorum first")
            continue
        adapters = adapters_of[bag_id] = _adapters(config, catalog, bag_id)
        bag = BagId.parse(bag_id)
        plan = _Plan(bag_id, old) if old is not None else _Plan(bag_id, Tombstone(
            bag_id=bag_id, library=rec.library, collection=rec.collection, request_id=request.id, state=STARTED,
            withdrawn_at=now, approvers=approvers, manifest_digests=_manifest_digests(adapters, bag),
            reason=str(getattr(request, "reason", "") or "")))
        plan.resumed = old is not None
        for adapter in adapters:
            try:
                plan.found[adapter.name] = found = inspect_bag(adapter, bag)
            except StorageError as exc:
                problems.append(f"{bag_id}: {adapter.name} cannot be checked ({exc}); nothing was removed")
                continue
            problems += [f"{bag_id}: {p}" for p in found.blockers(now, bypass_governance=may_bypass)]
        plans.append(plan)
    problems += _fetched_by_others(config, catalog, request, existing)
    if problems:
        raise WithdrawalRefused(f"withdrawal {request.id} refused, nothing was removed anywhere: {problems[0]}"
                                + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""),
                                problems=problems)
    details: Dict[str, Any] = {}
    for plan in plans:
        bypass = plan.tombstone.bypass_governance or (
            may_bypass and any(f.governance_locked(now) for f in plan.found.values()))
        if bypass and not plan.tombstone.bypass_governance:
            plan.tombstone = dataclasses.replace(plan.tombstone, bypass_governance=True)
        details[plan.bag_id] = _withdraw_one(catalog, request, plan, adapters_of[plan.bag_id])
    names = ", ".join(p.bag_id for p in plans) or "nothing left to do"
    return ExecutionResult(summary=f"withdrawn ({request.id}): {names}", details={"withdrawn": details})


def _fetched_by_others(config, catalog, request, existing: Dict[str, Tombstone]) -> List[str]:
    """Why the withdrawal would break a bag it does not cover: a later version of the collection
    lists files in its fetch.txt as held by a bag being withdrawn (docs/versions.md), so removing
    that bag would take the version's unchanged files with it. Read from the copies (the catalog
    does not index fetch.txt); a version bag whose fetch.txt no copy can give is a doubt, and a
    doubt refuses too."""
    from ingest.fetch import FETCH_TXT, parse_fetch

    going = set(request.bag_ids)
    problems: List[str] = []
    readers: Optional[List[StorageAdapter]] = None   # opened once, and only if there is a bag to read
    for lib, coll in sorted({tuple(b.split("/")[:2]) for b in going}):
        for other in catalog.bags(library=lib, collection=coll).column("bag_id").to_pylist():
            if other in going or other in existing:
                continue
            raw, where, bag = None, other, BagId.parse(other)
            if readers is None:   # reading fetch.txt needs no retention: one set of targets serves every bag
                readers = [open_target(t) for _, t in sorted(config.storage.items())]
            for adapter in readers:
                try:
                    with adapter.open_file(bag, FETCH_TXT) as fh:
                        raw, where = fh.read(), adapter.location(bag, FETCH_TXT)
                    break
                except NotFound:
                    try:
                        if adapter.has_bag(bag):   # the bag is there, without fetch.txt: an ordinary bag
                            raw = b""
                            break
                    except StorageError:
                        pass
                except StorageError:
                    continue
            try:
                entries = [] if raw is None or not raw else parse_fetch(raw, where)
            except PreservationError as exc:      # a damaged fetch.txt (TagFileError)
                entries, raw = [], None
                where = f"{where}: {exc}"
            if raw is None:
                problems.append(f"{other}: no copy's fetch.txt can be read ({where}) to tell whether it fetches files "
                                f"from the bags being withdrawn")
                continue
            sources = sorted({e.bag_id for e in entries} & going)
            if sources:
                problems.append(f"{other} is a later version that fetches unchanged files from {', '.join(sources)} "
                                f"(its fetch.txt); withdrawing {'it' if len(sources) == 1 else 'them'} would take "
                                f"those files from {other} too: request the withdrawal of {other} as well "
                                f"(e.g. `strongroom request withdraw {lib}/{coll}`)")
    return problems


def _withdraw_one(catalog, request, plan: _Plan, adapters: Sequence[StorageAdapter]) -> Dict[str, Any]:
    t = plan.tombstone
    bag = BagId.parse(plan.bag_id)
    base = {"request": request.id, "request_sha256": getattr(request, "sha256", None), "approvers": list(t.approvers),
            "manifest_digests": t.manifest_digests, "bypass_governance": t.bypass_governance}
    started = t.to_json()
    for adapter in adapters:                       # step 2: the tombstone before any deletion
        adapter.put_record(tombstone_key(bag, STARTED), started)
    if record_tombstone(catalog, t):
        catalog.append_events([_event("deaccession", "warning", plan.bag_id, {**base, "phase": STARTED})])
    done = _done_targets(catalog, plan.bag_id, request.id)
    out: Dict[str, Any] = {}
    complete = dataclasses.replace(t, state=COMPLETE)
    for adapter in adapters:                       # step 3: each copy
        if adapter.name in done:
            removed = None
        else:
            removed = remove_bag(adapter, bag, bypass_governance=t.bypass_governance)
            catalog.append_events([_event("deletion", "success", plan.bag_id,
                                          {**base, "objects": removed.objects, "versions": removed.versions},
                                          target=adapter.name, object_type="replica")])
        out[adapter.name] = "already removed" if removed is None else \
            {"objects": removed.objects, "versions": removed.versions}
    for adapter in adapters:                       # step 4: gone everywhere, said everywhere
        adapter.put_record(tombstone_key(bag, COMPLETE), complete.to_json())
    if record_tombstone(catalog, complete):
        catalog.append_events([_event("deaccession", "success", plan.bag_id, {**base, "phase": COMPLETE})])
    return out


# ------------------------------------------------------------------------------------ holds

def _hold_targets(config, catalog, request, *, on: bool) -> List[Tuple[str, List[StorageAdapter]]]:
    withdrawn = withdrawn_bags(catalog)
    held = held_bags(catalog)
    problems = []
    out = []
    for bag_id in request.bag_ids:
        if catalog.bag(bag_id) is None:
            problems.append(f"{bag_id}: not a registered bag")
        elif bag_id in withdrawn:
            problems.append(f"{bag_id}: withdrawn by {withdrawn[bag_id].request_id}")
        elif not on and bag_id not in held:
            problems.append(f"{bag_id}: not under legal hold")
        else:
            out.append((bag_id, _adapters(config, catalog, bag_id)))
    if problems:
        what = "legal hold" if on else "release of the legal hold"
        raise WithdrawalRefused(f"{what} {request.id} refused, nothing changed: {problems[0]}"
                                + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""),
                                problems=problems)
    return out


def _execute_hold(config, catalog, request, approvals, *, on: bool) -> ExecutionResult:
    action = HOLD if on else RELEASE
    approvers = list(_approvers(approvals))
    details: Dict[str, Any] = {}
    for bag_id, adapters in _hold_targets(config, catalog, request, on=on):
        bag = BagId.parse(bag_id)
        # the marker's time is the request's (a rerun writes the same bytes); the catalog's record,
        # which orders holds and releases, is the time it took effect (kept from a first run)
        marker = HoldRecord(bag_id=bag_id, request_id=request.id, action=action, at=_created(request))
        hold = next((h for h in holds(catalog) if (h.bag_id, h.request_id, h.action) == (bag_id, request.id, action)),
                    dataclasses.replace(marker, at=utc_now()))
        per: Dict[str, Any] = {}
        for adapter in adapters:
            adapter.put_record(hold_key(bag, request.id, action), marker.to_json())
            if adapter.type == "s3" and not getattr(adapter, "object_lock", False):
                per[adapter.name] = "marker only: the bucket is not declared with object_lock (no S3 legal hold)"
            elif adapter.type == "s3":
                per[adapter.name] = {"objects": set_legal_hold(adapter, bag, on)}
            else:
                per[adapter.name] = "marker only (a folder has no legal hold)"
        if record_hold(catalog, hold):
            catalog.append_events([_event("legal hold" if on else "legal hold release", "success", bag_id,
                                          {"request": request.id, "approvers": approvers, "targets": per})])
        details[bag_id] = per
    names = ", ".join(details)
    return ExecutionResult(summary=f"legal hold {'on' if on else 'released'} ({request.id}): {names}",
                           details={"legal_hold" if on else "released": details})


def _created(request) -> _dt.datetime:
    """The hold's time: the request's own (the same on a rerun, so the record is the same bytes)."""
    value = getattr(request, "created", None)
    return value if isinstance(value, _dt.datetime) and value.tzinfo is not None else utc_now()


def execute_legal_hold(config, catalog, request, approvals) -> ExecutionResult:
    """Put a legal hold on every bag of the request: S3 PutObjectLegalHold ON on every version of
    every object on Object-Locked S3 targets, a hold marker record on every target, the catalog's
    hold record (which `execute_withdraw` checks) and a `legal hold` event per bag."""
    return _execute_hold(config, catalog, request, approvals, on=True)


def execute_release_hold(config, catalog, request, approvals) -> ExecutionResult:
    """Lift the legal hold of every bag of the request (its own quorum): the reverse of
    `execute_legal_hold`, recorded as a `legal hold release` event."""
    return _execute_hold(config, catalog, request, approvals, on=False)


__all__ = ["execute_withdraw", "execute_legal_hold", "execute_release_hold", "WithdrawalRefused"]
