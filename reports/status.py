"""What the archive holds, where, and what needs attention: the query behind `strongroom status`.

Read-only. Everything comes from the catalog (bags, the replica-state log, the ledger head)
plus the config (which targets each policy asks for, audit cadences) plus the deposit state
folders in staging (deposits not finished yet). The per-bag and per-replica work is done with
pyarrow joins and group-bys over the bags and replica tables; file rows are never read, since
each bag row already carries its file and byte counts (checked equal to its file rows when the
bag was registered), so the query costs the same for ten files or ten million.

The parts live in their own modules, all re-exported here: the replica table, its states and
what overdue means (`catalog.replicas`), target locations and reachability (`reports.targets`),
unfinished deposits (`ingest.deposit_states`), the records and their JSON form
(`reports.status_records`) and the text form (`reports.status_text`). This module builds the
status from them: flags per copy and bag, and totals.

Flags, and what they mean for the exit code of `strongroom status`:
  problems (exit 1)  damaged, failed, missing, disputed (two copies disagree and nothing
                     decides), inconclusive (the last audit could not read the copy), absent,
                     unverified (pending/copied: never verified), unreachable (the target's root
                     is gone, not a folder, or empty although the catalog records copies there:
                     an unmounted volume; an S3 target whose bucket does not answer one HEAD),
                     deposit-failed (an unfinished deposit with a recorded failure)
  warnings (exit 0)  overdue-deep, overdue-quick, unknown-policy, deposit-unfinished

A copy in trouble shows its open findings (`catalog.findings`: file, kind, since when, from the
ledger) and the detail of the record that put it there, not of a later passing quick check,
until a later check resolves them. Each bag's count of locations holding a good copy is shown.
Coverage (`catalog.coverage`): per target, what share of the files and bytes held was re-read
in full in the last 90 and 365 days, beside what the cadence asks for.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import pyarrow as pa

from catalog.access import open_catalog
from catalog.catalog import Catalog
from catalog.coverage import coverage
from catalog.findings import OpenCopy, OpenFinding, open_copies  # noqa: F401
from catalog.replicas import ABSENT, BAD_STATES, GOOD_STATES, UNVERIFIED_STATES, replica_table
from catalog.tombstones import withdrawn_bags, without_withdrawn
from catalog.schema import utc_now
from ingest.deposit_states import DepositStatus, unfinished_deposits  # noqa: F401
from reports.status_records import (
    PROBLEM_FLAGS,
    WARNING_FLAGS,
    BagStatus,
    CollectionTotals,
    Flag,
    LibraryTotals,
    ReplicaStatus,
    Status,
    Totals,
    replica_retention,
)
from reports.status_text import BAG_LIST_LIMIT, MESSAGE_LIMIT, status_text, text_table, text_width  # noqa: F401
from reports.targets import S3_CHECK_TIMEOUTS, TargetStatus, check_targets, location_groups  # noqa: F401
from strongroom.errors import UsageError

FINDINGS_IN_MESSAGE = 3


# --------------------------------------------------------------------------------------------
# The query


def build_status(config, catalog: Optional[Catalog] = None, *, library: Optional[str] = None,
                 collection: Optional[str] = None, bag_id: Optional[str] = None,
                 now: Optional[_dt.datetime] = None) -> Status:
    """The status of every bag matching the filters, their replicas, totals and unfinished deposits.

    UsageError (exit 2) when a filter matches nothing at all (no bag and no unfinished deposit),
    naming what is known, so a typo is not mistaken for an empty archive; a library listed in the
    config's registry that has deposited nothing yet has an empty status instead.
    """
    catalog = catalog if catalog is not None else open_catalog(config)
    now = (now or utc_now()).astimezone(_dt.timezone.utc)
    filters = {"library": library, "collection": collection, "bag": bag_id}

    bags = catalog.bags(library, collection, bag_id)
    deposits = unfinished_deposits(Path(config.staging), library=library, collection=collection, bag_id=bag_id,
                                   include_abandoned=True)  # abandoned: listed with their reason, a warning
    listed = library in (getattr(config, "libraries", None) or {}) and collection is None and bag_id is None
    if bags.num_rows == 0 and not deposits and not listed and any(v is not None for v in filters.values()):
        raise UsageError(_nothing_matches(catalog, library, collection, bag_id),
                         key="--bag" if bag_id else "--collection" if collection else "--library")

    # K4: a withdrawn bag is listed as WITHDRAWN with its request, never as copies missing
    gone = withdrawn_bags(catalog)
    withdrawn = [{**gone[b].to_dict(), "title": t} for b, t in zip(bags.column("bag_id").to_pylist(),
                                                                   bags.column("title").to_pylist()) if b in gone]
    bags = without_withdrawn(catalog, bags)
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
            if flag == "deposit-abandoned":
                gone = dep.abandoned or {}
                what = f"was abandoned at {gone.get('at', '?')} by {gone.get('by', '?')}"
                first = gone.get("reason") or gone.get("why")
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
        withdrawn=withdrawn,
        coverage=coverage(config, catalog, library=library, collection=collection, bag=bag_id, now=now),
    )


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
    if r["overdue_deep"] and r.get("early_reason"):
        out.append(("overdue-deep", f"copy on {target}: {r['early_reason']} (due {_fmt_time(r['deep_due_at'])})"))
    elif r["overdue_deep"]:
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
            broken = getattr(config, "broken_policies", {}).get(b["policy"])
            why = f"cannot be read ({broken.file} is broken)" if broken else "is not in the config"
            warnings.append(Flag("unknown-policy", "warning",
                                 f"policy {b['policy']!r} {why}: required copies and audit "
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


__all__ = ["Status", "BagStatus", "ReplicaStatus", "DepositStatus", "Totals", "CollectionTotals", "LibraryTotals",
           "Flag", "build_status", "replica_table", "unfinished_deposits", "status_text",
           "GOOD_STATES", "UNVERIFIED_STATES", "BAD_STATES", "ABSENT", "PROBLEM_FLAGS", "WARNING_FLAGS"]
