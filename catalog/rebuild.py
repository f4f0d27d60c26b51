"""Rebuild the catalog from what the storage targets hold (`strongroom catalog rebuild`).

Bags are self-describing: bag-info.txt, the manifests and metadata/ say everything the catalog
records about a bag and its files (`catalog.bag_records.records_from_bag`, the same function
deposits register with). So a lost catalog is rebuilt by listing every storage target of the
config, reading each bag's tag files from its copies, and verifying each copy:

* deep (default): every file of the copy is re-read and re-hashed against the copy's own
  manifests (payload) and tag manifests (tag files); `quick`: existence and size only.
  A copy that matches is recorded "verified" (verified_at = now, an audit of that kind); one
  that does not is "damaged", with every problem in `detail`. A target the bag's policy lists
  that does not hold the bag is recorded "missing".
* the catalog's description of a bag comes from the copies that verified (see
  `catalog.disputes` for the rule): when they all agree, that one; when intact copies describe
  the bag differently (different bag-info, files or digests: e.g. one copy altered together with
  its manifests and tag manifests), a description wins only with a strict majority of ALL the
  bag's copies, or with independent evidence (the depositor's supplied checksums, identical on
  every side); the losing copies are recorded "damaged" with the difference in `detail`.
  Otherwise neither order nor counting picks one: every intact copy is recorded "disputed"
  (the files and each side's digests in `detail`), the bag is registered from the first copy in
  config order only so that it shows up, no copy counts as good, the audit repairs nothing of
  it, and the rebuild reports the conflict (exit 1). If no copy verifies, the most common
  readable description is registered anyway, so the damage shows in `strongroom status`
  instead of the bag vanishing.
* a damaged catalog is mended first: `catalog.integrity.check_catalog` names what cannot be
  trusted (unreadable, truncated, foreign or stray table files; bag rows whose file rows were
  lost; a ledger with a missing or unreadable segment) and `catalog.salvage.set_aside` MOVES those files into
  `<catalog>/.damaged/<UTC stamp>/<table>/` (never deletes them); the rebuild then registers
  from the copies what they held. The catalog is checked again at the end: what is still wrong
  is reported (exit 1).
* one bag that cannot be read (a hostile tag file, an unexpected error reading it) is reported,
  naming the bag, the file being read and the reason, and every other bag is still registered.
* it only ADDS what is missing: a bag already registered is not registered again (a copy whose
  content differs from the registered bag is a conflict), and a (bag, target) pair that
  already has a replica record is left as it is, neither re-read nor re-recorded (re-checking
  known copies is `strongroom audit`'s job). So a rebuild into a complete catalog reads nothing
  but the listings, and an interrupted rebuild can simply be run again.
* the ledger's history comes back from the checkpoints every storage target keeps
  (`catalog.anchors.restore_events`: the longest chain the targets agree on, segment files
  byte for byte; refused, and said, when targets disagree); then the rebuild appends,
  per bag it touched, one ledger segment holding one event of type "metadata extraction"
  (PREMIS eventType: catalog records were extracted from the bag's own tag files; its detail
  starts with "catalog rebuild") and one "fixity check" event per copy it verified or found
  missing, so the new catalog's replica states have evidence behind them.

Works into an empty or missing catalog folder (the catalog creates its folders on first write).
"""

from __future__ import annotations

import csv
import datetime as _dt
import hashlib
import logging
from dataclasses import dataclass, field, fields, is_dataclass, replace
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

from catalog.bag_records import adapter_reader, records_from_bag
from ingest.fetch import fetched
from catalog.access import open_catalog
from catalog.anchors import RestoreResult, restore_events
from catalog.catalog import BagConflict, Catalog
from catalog.disputes import decide
from catalog.governance_recover import recover_governance
from catalog.integrity import LOST_EVENT, check_catalog
from catalog.salvage import SetAside, set_aside
from catalog.schema import DIGEST_ALGORITHMS, BagRecord, EventRecord, FileRecord, ReplicaRecord, utc_now
from catalog.tombstones import recover_from_target, withdrawn_bags
from strongroom import bagit_spec
from strongroom.bag_id import BagId
from strongroom import NAME, __version__
from strongroom.errors import StrongroomError

log = logging.getLogger(__name__)

AGENT = f"{NAME} {__version__}"
REBUILD_EVENT = LOST_EVENT  # "metadata extraction"; with outcome failure it tells the catalog check a bag was given up on
FIXITY_EVENT = "fixity check"
DETAIL_LIMIT = 2000
TEMP_FOLDERS = ("", "bags", "files", "replicas", "events", "ledger-cache")

# Per-copy outcomes. "known": the catalog already had a record of this copy; left alone.
VERIFIED, DAMAGED, MISSING, KNOWN, DISPUTED = "verified", "damaged", "missing", "known", "disputed"
# What reading one bag's tag files may raise besides the project's own errors: a hostile CSV
# field (csv.Error), digits beyond range (OverflowError), undecodable text (UnicodeError)...
# Each is that bag's problem, reported; anything else is a bug and is left to surface.
BAG_READ_ERRORS = (StrongroomError, ValueError, UnicodeError, OSError, csv.Error, OverflowError, RecursionError,
                   LookupError)


# --------------------------------------------------------------------------------------------
# Results


@dataclass
class CopyOutcome:
    """One bag on one target, as the rebuild found it."""

    target: str
    site: str
    state: str                  # verified | damaged | missing | known | disputed
    detail: str = ""
    files_checked: int = 0
    bytes_checked: int = 0
    problems: List[str] = field(default_factory=list)


@dataclass
class BagOutcome:
    bag_id: str
    action: str                 # added | already registered | unreadable | conflict with catalog
    described_by: Optional[str] = None   # target whose copy's tag files were registered
    decided_by: Optional[str] = None     # how that description was chosen (catalog.disputes)
    copies: List[CopyOutcome] = field(default_factory=list)
    conflicts: List[str] = field(default_factory=list)
    problems: List[str] = field(default_factory=list)
    files: int = 0
    bytes: int = 0

    @property
    def ok(self) -> bool:
        return not self.conflicts and not self.problems and all(c.state in (VERIFIED, KNOWN) for c in self.copies)

    @property
    def disputed(self) -> bool:
        return any(c.state == DISPUTED for c in self.copies)


@dataclass
class TargetOutcome:
    name: str
    type: str
    site: str
    bags: int = 0
    error: Optional[str] = None


@dataclass
class RebuildResult:
    catalog: str
    deep: bool
    started_at: _dt.datetime
    finished_at: Optional[_dt.datetime] = None
    targets: List[TargetOutcome] = field(default_factory=list)
    bags: List[BagOutcome] = field(default_factory=list)
    catalog_problems: List[str] = field(default_factory=list)    # what the check found before
    set_aside: SetAside = field(default_factory=SetAside)         # what was moved out of the way
    remaining_problems: List[str] = field(default_factory=list)  # what the check still finds after
    temps_removed: List[str] = field(default_factory=list)       # killed writers' temp files
    events: RestoreResult = field(default_factory=RestoreResult)  # the ledger, from the checkpoints

    def count(self, state: str) -> int:
        return sum(1 for b in self.bags for c in b.copies if c.state == state)

    @property
    def bags_added(self) -> int:
        return sum(1 for b in self.bags if b.action == "added")

    @property
    def conflicts(self) -> List[str]:
        return [f"{b.bag_id}: {c}" for b in self.bags for c in b.conflicts]

    @property
    def ok(self) -> bool:
        """False when a copy is damaged or missing, copies or catalog disagree, a bag could not
        be read, or a target could not be listed: each is a preservation problem (exit 1)."""
        return all(b.ok for b in self.bags) and not any(t.error for t in self.targets) \
            and not self.remaining_problems and not self.events.problems

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    def to_dict(self) -> Dict[str, Any]:
        return {
            "catalog": self.catalog, "mode": "deep" if self.deep else "quick",
            "started_at": _iso(self.started_at), "finished_at": _iso(self.finished_at),
            "ok": self.ok, "exit_code": self.exit_code,
            "summary": {"bags_found": len(self.bags), "bags_added": self.bags_added,
                        "bags_already_registered": sum(1 for b in self.bags if b.action == "already registered"),
                        "copies_verified": self.count(VERIFIED), "copies_damaged": self.count(DAMAGED),
                        "copies_missing": self.count(MISSING), "copies_already_known": self.count(KNOWN),
                        "copies_disputed": self.count(DISPUTED),
                        "conflicts": len(self.conflicts),
                        "bags_unreadable": sum(1 for b in self.bags if b.action == "unreadable"),
                        "catalog_files_set_aside": len(self.set_aside.moved),
                        "targets_unavailable": sum(1 for t in self.targets if t.error)},
            "catalog_problems": list(self.catalog_problems), "set_aside": self.set_aside.to_dict(),
            "remaining_problems": list(self.remaining_problems), "temps_removed": list(self.temps_removed),
            "events": self.events.to_dict(),
            "targets": [_plain(t) for t in self.targets],
            "bags": [{**_plain(b), "ok": b.ok} for b in self.bags],
        }


def _iso(value: Optional[_dt.datetime]) -> Optional[str]:
    return None if value is None else value.astimezone(_dt.timezone.utc).isoformat().replace("+00:00", "Z")


def _plain(value: Any) -> Any:
    if is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, _dt.datetime):
        return _iso(value)
    return value


# --------------------------------------------------------------------------------------------
# One copy: what it says it is, and whether its bytes match


@dataclass
class _Copy:
    target: Any                  # policies.config.StorageTarget
    adapter: Any
    bag: Optional[BagRecord] = None
    files: List[FileRecord] = field(default_factory=list)
    tag_digests: Dict[str, Dict[str, str]] = field(default_factory=dict)
    read_error: Optional[str] = None
    outcome: Optional[CopyOutcome] = None
    fetched: Set[str] = field(default_factory=set)  # a version bag's files held by earlier bags (fetch.txt)

    def description(self) -> Tuple:
        """What must be equal for two copies to be the same bag (source_path is never in a bag)."""
        return (_bag_key(self.bag), tuple(self.files), tuple(sorted((p, tuple(sorted(d.items())))
                                                                    for p, d in self.tag_digests.items())))


def _bag_key(bag: Optional[BagRecord]) -> Optional[BagRecord]:
    return None if bag is None else replace(bag, source_path=None)


def describe_copy(target, adapter, bag_id: BagId) -> _Copy:
    """Read a copy's catalog records and tag-manifest digests; `read_error` says why it could not."""
    copy = _Copy(target=target, adapter=adapter)
    where = adapter.location(bag_id)
    plain = adapter_reader(adapter, bag_id)
    reading: List[str] = []

    def read(path: str):
        reading.append(path)  # the last file asked for is the one an error concerns
        return plain(path)

    try:
        raw = read(bagit_spec.BAGIT_TXT)
        if raw is None:
            copy.read_error = "bagit.txt is missing: the copy was never completely stored"
            return copy
        decl = bagit_spec.parse_bagit_txt(raw)
        version = decl.rules or bagit_spec.BAGIT_VERSION
        copy.bag, copy.files = records_from_bag(read, bag_id, where)
        copy.fetched = set(fetched(read, where))  # their rows are the version's; their bytes are elsewhere
        for alg in DIGEST_ALGORITHMS:
            name = f"tagmanifest-{alg}.txt"
            raw = read(name)
            if raw is None:
                continue
            entries, issues = bagit_spec.parse_manifest_lines(bagit_spec.split_lines(raw, name, where), version, alg)
            errors = [str(i) for i in issues if i.error]
            if errors:
                copy.read_error = f"{name} cannot be read: {'; '.join(errors[:5])}"
                return copy
            for e in entries:
                copy.tag_digests.setdefault(e.path, {})[alg] = e.digest
            # A tag manifest lists every tag file but itself: its own digest is taken from this
            # copy, so it is not reported as an extra file; comparing copies still checks it.
            copy.tag_digests.setdefault(name, {})[alg] = hashlib.new(alg, raw).hexdigest()
    except BAG_READ_ERRORS as exc:
        copy.bag, copy.files = None, []
        text = str(exc) or type(exc).__name__
        if reading and reading[-1] not in text:
            text = f"{reading[-1]}: {type(exc).__name__}: {text}"
        copy.read_error = text[:DETAIL_LIMIT]
    return copy


def verify_copy(copy: _Copy, bag_id: BagId, *, deep: bool, workers: int = 1) -> CopyOutcome:
    """Check every stored file of the copy against the copy's own manifests."""
    from storage_adapters.replicate import verify_replica

    site = copy.target.site
    if copy.bag is None:
        return CopyOutcome(copy.target.name, site, DAMAGED, detail=f"cannot be read: {copy.read_error}",
                           problems=[copy.read_error or "unreadable"])
    # A version bag's fetched files are checked where they are stored: in the earlier bag (the
    # audit checks that the catalog holds it with the same digests; docs/versions.md).
    manifests: Dict[str, Dict[str, str]] = {f.path: f.digests for f in copy.files if f.path not in copy.fetched}
    sizes = {f.path: f.size for f in copy.files if f.path not in copy.fetched}
    for path, digests in copy.tag_digests.items():
        manifests.setdefault(path, {}).update(digests)
    try:
        result = verify_replica(copy.adapter, bag_id, manifests, sizes, deep=deep, workers=workers)
    except StrongroomError as exc:
        return CopyOutcome(copy.target.name, site, DAMAGED, detail=f"cannot be verified: {exc}", problems=[str(exc)])
    kind = "deep" if deep else "quick"
    if result.ok:
        how = f"{result.files_checked} files, {result.bytes_checked} bytes re-read and matched" if deep else \
            f"{result.files_checked} files present with the expected sizes"
        return CopyOutcome(copy.target.name, site, VERIFIED, detail=f"catalog rebuild, {kind} check: {how}",
                           files_checked=result.files_checked, bytes_checked=result.bytes_checked)
    detail = f"catalog rebuild, {kind} check: {len(result.problems)} problem(s): " + "; ".join(result.problems[:20])
    return CopyOutcome(copy.target.name, site, DAMAGED, detail=detail[:DETAIL_LIMIT],
                       files_checked=result.files_checked, bytes_checked=result.bytes_checked,
                       problems=list(result.problems))


def _difference(a: _Copy, bag: BagRecord, files: Sequence[FileRecord], tags: Optional[Dict]) -> str:
    """A short account of how a copy's description differs from the chosen one."""
    diffs = []
    if _bag_key(a.bag) != _bag_key(bag):
        diffs += [f"bag-info {n}: {getattr(a.bag, n)!r} vs {getattr(bag, n)!r}"
                  for n in BagRecord.__dataclass_fields__ if n != "source_path" and getattr(a.bag, n) != getattr(bag, n)]
    mine = {f.path: f for f in a.files}
    theirs = {f.path: f for f in files}
    for path in sorted(set(mine) | set(theirs)):
        if mine.get(path) != theirs.get(path):
            diffs.append(f"{path}: " + ("only in this copy" if path not in theirs else
                                        "not in this copy" if path not in mine else "differs"))
    if tags is not None:
        for path in sorted(set(a.tag_digests) | set(tags)):
            if a.tag_digests.get(path) != tags.get(path):
                diffs.append(f"{path}: tag file differs")
    return "; ".join(diffs[:10]) + (f"; ... ({len(diffs)} differences)" if len(diffs) > 10 else "")


# --------------------------------------------------------------------------------------------
# The rebuild


def rebuild_catalog(config, catalog: Optional[Catalog] = None, *, deep: bool = True, workers: int = 1,
                    now: Optional[Callable[[], _dt.datetime]] = None,
                    progress: Optional[Callable[[int, int, str], None]] = None) -> RebuildResult:
    """List every storage target, read and verify every copy found, add what the catalog lacks.

    `now` gives the timestamps recorded (tests); `progress(done, total, bag_id)` is called
    before each bag. Never raises for what it finds on storage: every problem is in the result.
    """
    from storage_adapters.registry import open_target

    clock = now or utc_now
    catalog = catalog if catalog is not None else open_catalog(config, check=False)
    result = RebuildResult(catalog=catalog.location, deep=deep, started_at=clock())
    # What killed writers (a killed rebuild among them) left half-written: never data, never read.
    result.temps_removed = catalog.store.remove_stale_temps(TEMP_FOLDERS)
    health = check_catalog(catalog)
    if not health.ok:
        result.catalog_problems = list(health.problems)
        result.set_aside = set_aside(catalog, health, stamp=clock().strftime("%Y%m%dT%H%M%SZ"))
        log.warning("catalog rebuild: the catalog was damaged; %d file(s) set aside in %s",
                    len(result.set_aside.moved), result.set_aside.folder)
    result.events = restore_events(config, catalog.store)  # before anything is appended: same seqs
    recover_governance(catalog)  # entitlements, requests, approvals, releases: back from those events
    ledger_knows = _ledger_registered(catalog)

    holders: Dict[str, List[Tuple[Any, Any]]] = {}
    listable: set = set()
    for target in config.storage.values():
        outcome = TargetOutcome(target.name, target.type, target.site)
        result.targets.append(outcome)
        try:
            adapter = open_target(target)
            found = list(adapter.list_bags())
        except (StrongroomError, OSError) as exc:
            outcome.error = str(exc)
            log.warning("catalog rebuild: cannot list %s: %s", target.name, exc)
            continue
        listable.add(target.name)
        outcome.bags = len(found)
        try:  # tombstones (those bags are never registered again) and legal holds
            recover_from_target(catalog, adapter)
        except (StrongroomError, OSError) as exc:
            outcome.error = f"cannot read its tombstones and holds: {exc}"
            listable.discard(target.name)
        for bag_id in found:
            holders.setdefault(str(bag_id), []).append((target, adapter))

    registered = set(catalog.bags().column("bag_id").to_pylist())
    current = catalog.replicas()
    known = set(zip(current.column("bag_id").to_pylist(), current.column("target").to_pylist()))
    if result.set_aside.moved:
        _note_set_aside(catalog, result.set_aside, clock)

    withdrawn = set(withdrawn_bags(catalog))
    ids = sorted(set(holders) - withdrawn)
    for n, bag_text in enumerate(ids):
        if progress is not None:
            progress(n, len(ids), bag_text)
        try:
            bag_id = BagId.parse(bag_text)
            outcome = _rebuild_bag(config, catalog, bag_id, holders[bag_text], listable, bag_text in registered,
                                   known, deep=deep, workers=workers, clock=clock)
        except BAG_READ_ERRORS as exc:  # one bad bag never stops the others being registered
            log.warning("catalog rebuild: %s: %s: %s", bag_text, type(exc).__name__, exc)
            outcome = BagOutcome(bag_id=bag_text, action="unreadable",
                                 problems=[f"{bag_text}: cannot be rebuilt: {type(exc).__name__}: {exc}"[:DETAIL_LIMIT]])
            _append_events(catalog, outcome, deep, clock)
        result.bags.append(outcome)

    # Bags the ledger says were registered, found on no target: say so, once, on the record.
    if len(listable) == len(config.storage):
        lost = sorted(ledger_knows - set(catalog.bags().column("bag_id").to_pylist()) - set(holders) - withdrawn)
        for bag_text in lost:
            outcome = BagOutcome(bag_id=bag_text, action="unreadable", problems=[
                f"{bag_text}: registered in the ledger, but no storage target holds a copy: lost"])
            _append_events(catalog, outcome, deep, clock)
            result.bags.append(outcome)
    after = check_catalog(catalog)
    result.remaining_problems = list(after.problems)
    result.finished_at = clock()
    return result


def _ledger_registered(catalog: Catalog) -> set:
    """Bags the (remaining) ledger records as registered, and not already given up on."""
    from catalog.integrity import CatalogHealth, _ledger_mentions

    mentions = _ledger_mentions(catalog.store, CatalogHealth(ok=True, location=catalog.location))
    return set() if mentions is None else mentions[0]


def _note_set_aside(catalog: Catalog, aside: SetAside, clock) -> None:
    """A ledger event saying what was set aside, and where (a new chain, if the old one went)."""
    what = f"{len(aside.moved)} damaged catalog file(s) set aside in {aside.folder}: " + \
        "; ".join(aside.reasons[:20])
    if aside.ledger_reset:
        what += ("; the ledger itself was damaged: its segments were set aside there too (kept: `strongroom "
                 "ledger verify` of that folder) and this event starts a new chain")
    catalog.append_events([EventRecord(type=REBUILD_EVENT, outcome="warning", agent=AGENT, object_type="bag",
                                       detail=f"catalog rebuild: {what}"[:DETAIL_LIMIT], datetime=clock())])


def _rebuild_bag(config, catalog: Catalog, bag_id: BagId, holders, listable: set, is_registered: bool,
                 known: set, *, deep: bool, workers: int, clock) -> BagOutcome:
    text = str(bag_id)
    outcome = BagOutcome(bag_id=text, action="already registered" if is_registered else "added")
    unknown = [(t, a) for t, a in holders if (text, t.name) not in known]
    copies: List[_Copy] = []
    for target, adapter in holders:
        if (text, target.name) in known:
            outcome.copies.append(CopyOutcome(target.name, target.site, KNOWN, detail="already in the catalog"))
            if not is_registered:  # its description may still be needed to register the bag
                copies.append(describe_copy(target, adapter, bag_id))
            continue
        copy = describe_copy(target, adapter, bag_id)
        copy.outcome = verify_copy(copy, bag_id, deep=deep, workers=workers)
        copies.append(copy)
    if is_registered and not unknown:
        bag = catalog.bag(text)
        outcome.files, outcome.bytes = bag.file_count, bag.byte_count
        _record_missing(config, catalog, outcome, bag.policy, holders, listable, known, deep, clock)
        _append_events(catalog, outcome, deep, clock)
        return outcome
    if not is_registered and len({c.description() for c in copies if c.bag is not None}) > 1:
        # Known copies that disagree: their old states cannot say which is right; check them now.
        for copy in copies:
            if copy.outcome is None:
                copy.outcome = verify_copy(copy, bag_id, deep=deep, workers=workers)

    # The description to register: the catalog's, else the one `catalog.disputes.decide` allows.
    decision = None
    if is_registered:
        bag, files, tags = catalog.bag(text), catalog.file_records(text), None
        outcome.described_by, outcome.decided_by = "catalog", "the catalog's record"
    else:
        decision = decide(copies, total=len(holders), read_supplied=_supplied_reader(bag_id))
        chosen = decision.chosen[0] if decision.chosen else None
        bag, files, tags = (chosen.bag, chosen.files, chosen.tag_digests) if chosen else (None, [], None)
        outcome.described_by = chosen.target.name if chosen else None
        outcome.decided_by = decision.how
    if bag is None:
        outcome.action = "unreadable"
        outcome.problems.append("no copy could be read: " + "; ".join(
            f"{c.target.name}: {c.read_error}" for c in copies if c.read_error))
    else:
        outcome.files, outcome.bytes = bag.file_count, bag.byte_count
        if decision is not None and decision.disputed:
            outcome.conflicts.append(f"DISPUTED, left for a person (no copy counts as good, nothing will be "
                                     f"repaired): {decision.detail}"[:DETAIL_LIMIT])
        for copy in copies:
            if copy.outcome is None or copy.bag is None:
                continue
            if decision is not None and decision.disputed and copy.outcome.state == VERIFIED:
                copy.outcome.state = DISPUTED
                copy.outcome.detail = f"catalog rebuild: {decision.detail}"[:DETAIL_LIMIT]
                copy.outcome.problems.append(decision.detail)
                continue
            same = (_bag_key(copy.bag), tuple(copy.files)) == (_bag_key(bag), tuple(files)) and \
                (tags is None or copy.tag_digests == tags)
            if same:
                continue
            diff = _difference(copy, bag, files, tags)
            against = "the catalog's record" if is_registered else \
                f"the copy on {outcome.described_by} ({outcome.decided_by})"
            if copy.outcome.state == VERIFIED:
                outcome.conflicts.append(f"the copy on {copy.target.name} is intact but is a different bag from "
                                         f"{against}: {diff}")
                copy.outcome.state = DAMAGED
                copy.outcome.detail = (f"catalog rebuild: intact, but differs from {against}: {diff}")[:DETAIL_LIMIT]
                copy.outcome.problems.append(f"differs from {against}: {diff}")
        if not is_registered:
            try:
                catalog.add_bag(bag, files)
            except BagConflict as exc:  # registered meanwhile by someone else, differently
                outcome.action = "conflict with catalog"
                outcome.conflicts.append(str(exc))

    for copy in copies:
        if copy.outcome is None:
            continue
        outcome.copies = [c for c in outcome.copies if c.target != copy.target.name] + [copy.outcome]
        _record_copy(catalog, text, copy.outcome, deep, clock())
    outcome.copies.sort(key=lambda c: c.target)
    if bag is not None:
        _record_missing(config, catalog, outcome, bag.policy, holders, listable, known, deep, clock)
    _append_events(catalog, outcome, deep, clock)
    return outcome


def _supplied_reader(bag_id: BagId):
    """Reads one copy's supplied checksums for `catalog.disputes` (None when it cannot)."""
    from catalog.disputes import SUPPLIED

    def read(copy: _Copy) -> Optional[bytes]:
        try:
            return adapter_reader(copy.adapter, bag_id)(SUPPLIED)
        except BAG_READ_ERRORS:
            return None

    return read


def _outcome_of(state: str) -> str:
    """A disputed copy is intact by its own manifests: the check was inconclusive, not a failure."""
    return "success" if state == VERIFIED else "inconclusive" if state == DISPUTED else "failure"


def _record_copy(catalog: Catalog, bag_id: str, copy: CopyOutcome, deep: bool, at: _dt.datetime) -> None:
    ok = copy.state == VERIFIED
    catalog.record_replica(ReplicaRecord(
        bag_id=bag_id, target=copy.target, site=copy.site, state=copy.state,
        verified_at=at if ok else None, last_audit_at=at, last_audit_kind="deep" if deep else "quick",
        last_audit_outcome=_outcome_of(copy.state), detail=copy.detail[:DETAIL_LIMIT] or None,
        recorded_at=at))


def _record_missing(config, catalog: Catalog, outcome: BagOutcome, policy_name: str, holders, listable: set,
                    known: set, deep: bool, clock) -> None:
    """Policy targets that were listed and do not hold the bag: recorded "missing" unless known."""
    policy = config.policies.get(policy_name)
    if policy is None:
        return
    held = {t.name for t, _ in holders}
    for name in policy.replicas:
        if name in held or name not in listable or (outcome.bag_id, name) in known:
            continue
        target = config.storage[name]
        copy = CopyOutcome(name, target.site, MISSING,
                           detail=f"catalog rebuild: policy {policy.name} lists {name}, which does not hold the bag")
        _record_copy(catalog, outcome.bag_id, copy, deep, clock())
        outcome.copies.append(copy)
    outcome.copies.sort(key=lambda c: c.target)


def _append_events(catalog: Catalog, outcome: BagOutcome, deep: bool, clock) -> None:
    """One ledger segment per bag touched: the rebuild event and a fixity check per copy examined."""
    examined = [c for c in outcome.copies if c.state != KNOWN]
    if outcome.action == "already registered" and not examined:
        return
    at = clock()
    states = ", ".join(f"{c.target} {c.state}" for c in outcome.copies) or "no copy"
    if outcome.action == "unreadable":
        result, what = "failure", "; ".join(outcome.problems)
    else:
        result = "warning" if outcome.conflicts else "success"
        what = (f"bag record and {outcome.files} file record(s) read from its own tag files on "
                f"{outcome.described_by} ({outcome.decided_by})" if outcome.action == "added"
                else f"bag {outcome.action}")
        if outcome.conflicts:
            what += "; CONFLICT: " + "; ".join(outcome.conflicts)
    events = [EventRecord(type=REBUILD_EVENT, outcome=result, agent=AGENT, object_type="bag", bag_id=outcome.bag_id,
                          detail=f"catalog rebuild: {what}; copies: {states}"[:DETAIL_LIMIT], datetime=at)]
    for c in examined:
        events.append(EventRecord(type=FIXITY_EVENT, outcome=_outcome_of(c.state),
                                  agent=AGENT, object_type="replica", bag_id=outcome.bag_id, target=c.target,
                                  detail=c.detail[:DETAIL_LIMIT] or None, datetime=at))
    catalog.append_events(events)


__all__ = ["rebuild_catalog", "describe_copy", "verify_copy", "RebuildResult", "BagOutcome", "CopyOutcome",
           "TargetOutcome", "REBUILD_EVENT", "FIXITY_EVENT", "DISPUTED"]
