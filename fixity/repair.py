"""Judge a bag's copies against each other, repair the damaged ones, record everything.

`fixity.audit` checks one copy at a time. What counts as the *right* bytes is decided here,
across every copy of the bag, file by file: payload files by `fixity.judge_payload`, tag files
by `fixity.judge_tags`; `fixity.repairer` makes the repairs, `fixity.audit_record` writes the
events and the copies' records; the records themselves are in `fixity.bag_audit`.

The copies are the authority, the catalog an index (`fixity.trust`): a stored payload file the
catalog lacks is extra only when a strict majority of all copies' own payload manifests (each
confirmed by its copy's tag manifest) omit it too; one they list is a catalog disagreement,
reported and never touched. Copies that share files on disk (hard links) are one copy: the
later one in the bag's target order gets `shared-storage` and a real copy is written (a new
inode). While any copy of the bag is `disputed` (the copies disagree and nothing independent
decides), nothing of it is repaired.
"""

from __future__ import annotations

import datetime as _dt
from collections import defaultdict
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Set, Tuple

from catalog.catalog import Catalog
from fixity import audit as A
from fixity import open_detail as D
from fixity import trust
# audit_bag looks `_record` up here, so the tests monkeypatch it here.
from fixity.audit_record import DETAIL_PREFIX, _record
from fixity.bag_audit import (DISPUTED_STATE, FAILURE, INCONCLUSIVE, REPAIRED, SKIPPED, SUCCESS, BagAudit,
                              Reference, RepairAction, ReplicaOutcome, _Fix)
from fixity.judge_payload import _Copies, judge_payload
from fixity.judge_tags import expected_tag_names, judge_tags, tag_fixes
from fixity.repairer import _missing_bag_fixes, _Repairer, _repair_order
from strongroom.errors import StrongroomError
from storage_adapters.base import StorageAdapter

open_since, OPEN_SINCE, STILL_OPEN = D.open_since, D.OPEN_SINCE, D.STILL_OPEN


# --------------------------------------------------------------------------------------------
# The whole bag


def audit_bag(config, catalog: Catalog, bag_id: str, plan: Mapping[str, str], checks: Mapping[str, A.ReplicaCheck],
              *, repair: bool = True, retry: Optional[A.Retry] = None, open_adapter: Optional[Callable] = None,
              clock: Optional[Callable[[], _dt.datetime]] = None, skipped: Mapping[str, str] = {}) -> BagAudit:
    """Judge every copy of the bag, repair (unless `repair` is False), record events and states.

    `plan` maps each target selected for this run to its kind (deep/quick); `checks` holds
    their ReplicaChecks. Every other copy the bag has (policy targets and targets the catalog
    records) is looked at for its tag files, and used as a repair source. `skipped` maps
    selected targets to why they were not checked (e.g. another run audited them meanwhile):
    they are treated like the other copies and get no audit record.
    """
    from storage_adapters.registry import open_target

    open_adapter = open_adapter or open_target
    retry = retry or A.DEFAULT_RETRY
    clock = clock or (lambda: A.utcnow())
    started = clock()
    record = catalog.bag(bag_id)
    if record is None:
        raise KeyError(bag_id)
    policy = config.policies.get(record.policy)
    expected = A.ExpectedBag.from_catalog(catalog, bag_id, policy)
    current = {r["target"]: r for r in catalog.replicas(bag_id).to_pylist()}
    targets = [t for t in (list(policy.replicas) if policy else []) + sorted(current) if t in config.storage]
    targets = list(dict.fromkeys(targets))
    result = BagAudit(bag_id=bag_id, policy=record.policy, started_at=started.isoformat(), repair=repair)

    adapters: Dict[str, StorageAdapter] = {}
    looks: Dict[str, A.ReplicaCheck] = {}
    for target in targets:
        spec = config.target(target)
        try:
            adapters[target] = open_adapter(spec)
        except StrongroomError as exc:   # e.g. an S3 target whose credentials are not set
            look = A.ReplicaCheck(bag_id=bag_id, target=target, site=spec.site, kind=plan.get(target, A.TAGS),
                                  started_at=clock().isoformat())
            looks[target] = A.mark_unreachable(look, f"the target cannot be opened ({exc})", clock)
            continue
        if target in checks and target in plan and target not in skipped:
            looks[target] = checks[target]
        else:
            looks[target] = A.check_replica(adapters[target], expected, kind=A.TAGS, retry=retry,
                                            now=clock, empty_target_ok=target not in current)
    shared_tags = trust.note_shared(trust.shared_files(targets, looks, adapters), looks)
    copies = _Copies(expected, looks)
    payload_fixes, overrides, bag_findings = judge_payload(expected, copies, adapters, retry)
    refs, why = judge_tags(expected, looks, overrides)
    tfixes, doubts = tag_fixes(expected, looks, refs, why)
    tfixes += trust.shared_tag_fixes(shared_tags, refs, tfixes, _Fix)
    bag_findings += doubts
    verdict = trust.judge_extras(looks, len(targets))
    disagreement = trust.catalog_disagreement(verdict)
    if disagreement is not None:
        bag_findings.append(disagreement)
    disputed = sorted(t for t in targets if (current.get(t) or {}).get("state") == DISPUTED_STATE)
    if disputed:
        bag_findings.append(A.Finding(A.DISPUTED, None, None,
                                      f"disputed: the copies disagree and nothing independent decides; left for a "
                                      f"person (disputed: {', '.join(disputed)}); nothing of the bag was repaired"))
        repair = False
    result.bag_findings = bag_findings

    per_target, fixes_by_target = _assemble(expected, looks, payload_fixes, tfixes, overrides, verdict)
    for f in trust.shared_folders(targets, looks):
        per_target[f.target or ""].append(f)

    repairer = _Repairer(expected, adapters, copies, retry, started.strftime("%Y%m%dT%H%M%S%fZ"),
                         record_now=catalog.append_events)
    repairer.recorded_moves = lambda target, path: [
        e["detail"] or "" for e in catalog.events(bag_id=bag_id, type=["quarantine"]).to_pylist()
        if e["target"] == target and (e["path"] or "") == path and e["outcome"] == "success"]
    ok_fixes: Set[Tuple[str, str]] = set()
    whole_bag: Dict[str, bool] = {}       # target -> every file of a missing bag was restored
    if repair:
        repairer.announce_moves([f for t in targets if looks[t].reachable and looks[t].bag_present
                                 for f in fixes_by_target[t]],
                                {t: looks[t].odd_keys for t in targets if looks[t].reachable and looks[t].odd_keys})
        for target in targets:
            look = looks[target]
            if not look.reachable:
                continue
            if not look.bag_present:
                if not all(repairer.move_odd(target, key, "an odd object where the bag's folder belongs")
                           for key in look.odd_keys):
                    whole_bag[target] = False
                    continue
                results = [repairer.run(fix) for fix in sorted(
                    _missing_bag_fixes(expected, target, copies, refs, overrides), key=_repair_order)]
                whole_bag[target] = bool(results) and all(results)
                continue
            for fix in sorted(fixes_by_target[target], key=_repair_order):
                if repairer.run(fix):
                    ok_fixes.add((fix.target, fix.path))
        # Sources found bad while repairing: repair them too, from the remaining good copies.
        for _ in range(len(targets)):
            if not repairer.extra_fixes:
                break
            pending, repairer.extra_fixes = repairer.extra_fixes, []
            for fix in sorted(pending, key=_repair_order):
                per_target[fix.target].append(fix.finding)
                if repairer.run(fix):
                    ok_fixes.add((fix.target, fix.path))
        for target, found in repairer.found.items():
            for f in found:
                if f not in per_target[target]:
                    per_target[target].append(f)

    now = clock()
    for target in targets:
        look = looks[target]
        audited = target in plan and target not in skipped
        findings = per_target[target]
        remaining = []
        for f in findings:
            if not f.damage:
                continue
            if f.kind in (A.BAG_MISSING, A.BAG_NOT_A_FOLDER):
                if not whole_bag.get(target):
                    remaining.append(f)
            elif f.path is None or (target, f.path) not in ok_fixes:
                remaining.append(f)
        damage = [f for f in findings if f.damage]
        inconclusive = [f for f in findings if f.inconclusive]
        if target in skipped:
            outcome = SKIPPED
        elif remaining:
            outcome = FAILURE
        elif damage:
            outcome = REPAIRED
        elif inconclusive:
            outcome = INCONCLUSIVE
        else:
            outcome = SUCCESS
        listed = findings[:A.MAX_LISTED]
        state_before = current.get(target, {}).get("state")
        result.replicas.append(ReplicaOutcome(
            target=target, site=config.target(target).site, kind=look.kind if audited else A.TAGS, audited=audited,
            outcome=outcome, state_before=state_before, state_after=state_before,
            files_checked=look.files_checked if audited else 0, bytes_checked=look.bytes_checked if audited else 0,
            findings=listed, repairs=repairer.actions.get(target, []), remaining=remaining[:A.MAX_LISTED],
            not_listed=max(0, len(findings) - len(listed)) + look.problems_not_listed,
            note=skipped.get(target, ""), checked_at=look.finished_at or look.started_at))

    result.finished_at = clock().isoformat()
    _record(catalog, config, result, looks, now, current)
    result.events += repairer.appended
    return result


def finish_bag(config, catalog: Catalog, bag_id: str, plan: Sequence[Tuple[str, str, str]],
               results: Mapping[str, Mapping[str, Any]], *, repair: bool = True, retry: Optional[A.Retry] = None,
               open_adapter: Optional[Callable] = None, clock: Optional[Callable[[], _dt.datetime]] = None) -> BagAudit:
    """`audit_bag` from the outputs of the per-copy check tasks: `plan` lists (target, kind,
    basis) as selected, `results` what `fixity.audit.check_target` returned for each. A copy
    whose catalog record changed since it was planned was audited by another run meanwhile:
    it is skipped here (no second repair, no second record)."""
    checks: Dict[str, A.ReplicaCheck] = {}
    skipped: Dict[str, str] = {}
    kinds: Dict[str, str] = {}
    recorded = {r["target"]: r["recorded_at"] for r in catalog.replicas(bag_id).to_pylist()}
    for target, kind, basis in plan:
        kinds[target] = kind
        out = results.get(target) or {"skipped": "not checked"}
        if "skipped" in out:
            skipped[target] = out["skipped"]
            continue
        now_basis = A.basis_of(recorded.get(target))
        if now_basis != basis:
            skipped[target] = f"audited by another run meanwhile (its catalog record changed at {now_basis})"
            continue
        checks[target] = A.ReplicaCheck.from_dict(out["check"])
    return audit_bag(config, catalog, bag_id, kinds, checks, repair=repair, retry=retry, open_adapter=open_adapter,
                     clock=clock, skipped=skipped)


def _assemble(expected: A.ExpectedBag, looks: Mapping[str, A.ReplicaCheck], payload_fixes: List[_Fix],
              tfixes: List[_Fix], overrides: Mapping[str, Reference],
              verdict: Optional[trust.ExtraVerdict] = None
              ) -> Tuple[Dict[str, List[A.Finding]], Dict[str, List[_Fix]]]:
    """Per copy: every finding (damage and inconclusive) and the fixes planned for it. A stored
    payload file not in the catalog is extra (moved aside) only as `verdict` says: one the
    copies' manifests list is a catalog disagreement (a bag finding), never touched."""
    per_target: Dict[str, List[A.Finding]] = defaultdict(list)
    fixes_by_target: Dict[str, List[_Fix]] = defaultdict(list)
    for fix in payload_fixes + tfixes:
        fixes_by_target[fix.target].append(fix)
    for target, look in looks.items():
        out = per_target[target]
        if not look.reachable or not look.bag_present:
            out.extend(look.findings)
            continue
        planned = {f.path: f for f in fixes_by_target[target]}
        for p in look.payload_problems:
            if p.path in overrides and target in overrides[p.path].holders:
                continue  # this copy is right; the catalog is not (a bag-level finding says so)
            fix = planned.get(p.path)
            out.append(fix.finding if fix is not None else A.Finding(p.kind, target, p.path, p.detail))
        if look.kind != A.TAGS:
            for path in look.extra_payload:
                if verdict is not None and path in verdict.listed:
                    continue   # the copies' manifests list it: the catalog is what is wrong
                if verdict is not None and path not in verdict.extra:
                    out.append(A.Finding(A.EXTRA, target, path, "stored but not in the catalog, and too few copies' "
                                                                "manifests are intact to show it is extra; left "
                                                                "in place"))
                    continue
                f = A.Finding(A.EXTRA, target, path, "extra file: in no manifest of the bag and not in the catalog")
                out.append(f)
                fixes_by_target[target].append(_Fix(target, path, None, f))
        payload_paths = {p.path for p in look.payload_problems}
        tag_planned = {fix.path for fix in tfixes if fix.target == target}
        for f in look.findings:   # tag files that could not be read, or are links
            if f.path is not None and not A.is_payload(f.path) and f.kind in (A.UNREADABLE, A.NOT_A_FILE) \
                    and f.path not in payload_paths:
                out.append(f)
                if f.kind == A.NOT_A_FILE and f.path not in tag_planned:
                    # An odd object in no good copy's place (a link where data/ belongs...): moved aside.
                    fixes_by_target[target].append(_Fix(target, f.path, None, f, tag=True))
        out.extend(fix.finding for fix in tfixes if fix.target == target)
        # A version bag's fetch.txt entry no registered bag vouches for (fixity.fetched): never repaired.
        out.extend(f for f in look.findings if f.kind == A.FETCH_UNVERIFIED)
        # Manifest disagreements: a manifest being replaced says so in its own finding; one the
        # catalog-in-doubt judgement explains is right; the rest are named file by file.
        replaced = {f.path for f in fixes_by_target[target]}
        for alg, diff in sorted(look.manifest_differences.items()):
            name = f"manifest-{alg}.txt"
            if name in replaced:
                continue
            for path, digest in sorted(diff.items()):
                if path in overrides and overrides[path].digests.get(alg) == digest:
                    continue
                what = f"{name} does not list this file, which the catalog holds" if digest is None else \
                    f"{name} gives {alg} {digest}; the catalog says otherwise"
                out.append(A.Finding(A.MANIFEST_DISAGREES, target, path, what))
    return per_target, fixes_by_target


__all__ = ["Reference", "RepairAction", "ReplicaOutcome", "BagAudit", "audit_bag", "finish_bag", "judge_payload",
           "judge_tags", "tag_fixes", "expected_tag_names", "DETAIL_PREFIX", "DISPUTED_STATE", "SUCCESS", "REPAIRED", "FAILURE",
           "INCONCLUSIVE", "SKIPPED"]
