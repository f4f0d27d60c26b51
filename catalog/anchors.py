"""The ledger anchored in every storage target: writing checkpoints, checking the catalog
against them, and restoring the events from them (issue 17 part 1; format: catalog.checkpoints).

* `anchor_all` runs after every command that moved the ledger head (one call site,
  pipelines/cli.py): each target a policy stores copies on gets one new checkpoint covering every segment since the
  newest checkpoint it holds (so a target that could not be written catches up at the next
  command that records events).
  A checkpoint never blesses a divergent catalog: if the catalog's chain does not continue the
  one a target anchored (rolled back, truncated, rewritten), nothing is written and the target
  is reported. Nothing is read or written after a command that recorded nothing (the CLI
  compares the head's number before and after it: one listing of the catalog's events/).
* `verify_against_storage` (`strongroom ledger verify --against-storage`): every segment every
  target anchored must be in the catalog with the same file hash, which catches a catalog
  rolled back, truncated, or replaced by a consistently re-hashed chain.
* `restore_events` (`catalog rebuild`): the segments the targets anchored, written back into
  the catalog byte for byte (so the chain's hashes are the anchored ones), when the targets
  agree; refused, and said, when they do not.
"""

from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from catalog.checkpoints import (BadCheckpoint, Checkpoint, Entry, TargetChain, build, checkpoint_keys,
                                 entry_of_segment, parse, read_chain)
from catalog.ledger import FOLDER, GENESIS, Ledger, Segment, segment_name, sha256_hex
from catalog.store import Store
from catalog.verifier_copy import ensure_verifier
from strongroom.errors import StrongroomError

WRITTEN, CURRENT, FAILED, SKIPPED = "written", "current", "failed", "skipped"


# --------------------------------------------------------------------------------------------
# Which retention a target's records get


def records_retention(config, target) -> Optional[Tuple[str, int]]:
    """The strongest Object Lock retention any policy asks of `target` ((mode, years)), for S3
    targets declared with object_lock: true; None elsewhere (the bucket's default rule, if any,
    still applies). Why the strongest: a checkpoint vouches for every bag the target holds."""
    if target.type != "s3" or not target.options.get("object_lock"):
        return None
    best: Optional[Tuple[bool, int, str]] = None
    for policy in config.policies.values():
        r = policy.retention
        if target.name in policy.replicas and r.mode != "none":
            rank = (r.mode == "compliance", r.years, r.mode)
            best = rank if best is None or rank > best else best
    return None if best is None else (best[2], best[1])


def open_for_records(config, target):
    from storage_adapters.registry import open_target

    retention = records_retention(config, target)
    return open_target(target) if retention is None else open_target(target, retention=retention)


# --------------------------------------------------------------------------------------------
# Anchoring


@dataclass
class TargetAnchor:
    """What anchoring did on one target: written, current (already held the head), failed, or
    skipped (no policy stores copies there, or a folder target holding no bag)."""

    target: str
    state: str
    key: Optional[str] = None
    segments: int = 0
    message: str = ""

    def to_dict(self) -> Dict[str, Any]:
        return {"target": self.target, "state": self.state, "key": self.key, "segments": self.segments,
                "message": self.message}


@dataclass
class AnchorReport:
    head_seq: int = -1
    head_sha256: str = GENESIS
    skipped: bool = False          # an empty ledger: nothing to anchor
    targets: List[TargetAnchor] = field(default_factory=list)

    @property
    def failed(self) -> List[TargetAnchor]:
        return [t for t in self.targets if t.state == FAILED]


class _Segments:
    """The catalog's segments, read (and checked) once however many targets need them."""

    def __init__(self, store: Store, listing: Sequence[Segment]):
        self.store = store
        self.by_seq = {s.seq: s for s in listing}
        self._entries: Dict[int, Entry] = {}

    def entry(self, seq: int) -> Entry:
        if seq not in self._entries:
            seg = self.by_seq.get(seq)
            if seg is None:
                raise BadCheckpoint(f"{segment_name(seq)}: missing from the catalog's ledger (a gap)")
            self._entries[seq] = entry_of_segment(seq, self.store.read_bytes(seg.file.path))
        return self._entries[seq]


def ledger_head(store: Store) -> Tuple[List[Segment], int, str]:
    """(segments, head seq, head sha256); (.., -1, GENESIS) for an empty ledger."""
    segs = Ledger(store).segments()
    if not segs:
        return segs, -1, GENESIS
    return segs, segs[-1].seq, sha256_hex(store.read_bytes(segs[-1].file.path))


#: Catalogs opened in this process since `take_opened` was last called, by location: (config,
#: store, ledger head's number when first opened). Why process state: the CLI must know whether
#: its command recorded anything, and where, without parsing the config a second time (YAML
#: costs 0.1-0.3 s); every command opens its catalog through catalog.access, which notes it here.
_OPENED: Dict[str, Tuple[Any, Store, int]] = {}


def noted(config, store: Store) -> Store:
    """Note a catalog a command opened (catalog.access), with its head's number then."""
    if store.location not in _OPENED:
        try:
            _OPENED[store.location] = (config, store, ledger_seq(store))
        except OSError:
            pass   # an unreadable catalog is the command's to report; nothing to compare with
    return store


def take_opened() -> List[Tuple[Any, Store, int]]:
    """The catalogs noted since the last call (and forget them)."""
    found = list(_OPENED.values())
    _OPENED.clear()
    return found


def ledger_seq(store: Store) -> int:
    """The newest segment's number (-1 for an empty ledger): one listing, no read. The CLI
    compares it before and after a command to know whether the command recorded anything."""
    segs = Ledger(store).segments()
    return segs[-1].seq if segs else -1


def anchor_all(config, store: Store, *, now: Optional[_dt.datetime] = None) -> AnchorReport:
    """Bring every storage target's checkpoints up to the catalog's ledger head (see the module
    docstring). Never raises for a target: each failure is a FAILED entry with its reason."""
    segs, head_seq, head_sha = ledger_head(store)
    report = AnchorReport(head_seq, head_sha)
    if head_seq < 0:
        report.skipped = True
        return report
    segments = _Segments(store, segs)
    used = {name for policy in config.policies.values() for name in policy.replicas}
    for target in config.storage.values():
        if target.name not in used:  # holds no copy any policy asks for: nothing to vouch for
            report.targets.append(TargetAnchor(target.name, SKIPPED, message="no policy stores copies there"))
            continue
        try:
            adapter = open_for_records(config, target)
            if target.type == "filesystem" and (not os.path.isdir(target.root)
                                                or next(iter(adapter.list_bags()), None) is None):
                # A folder holding no bag (or none at all) may be a mount point whose volume is
                # not mounted: as audits and deposits, write nothing there (it would land on the
                # local disk); audits and status report such a target.
                report.targets.append(TargetAnchor(target.name, SKIPPED, message="holds no bag"))
                continue
            report.targets.append(anchor_target(adapter, segments, head_seq, head_sha, now))
        except (StrongroomError, OSError) as exc:
            report.targets.append(TargetAnchor(target.name, FAILED, message=str(exc)))
    return report


def _newest(adapter) -> Optional[Checkpoint]:
    keys, _ = checkpoint_keys(adapter)
    if not keys:
        return None
    try:
        return parse(keys[-1], adapter.read_record(keys[-1]), deep=False)
    except BadCheckpoint as exc:
        raise BadCheckpoint(f"its newest checkpoint {adapter.record_location(keys[-1])} is damaged ({exc}); "
                            f"`strongroom ledger verify --against-storage` says more") from None


def anchor_target(adapter, segments: _Segments, head_seq: int, head_sha: str,
                  now: Optional[_dt.datetime] = None) -> TargetAnchor:
    """One target: a new checkpoint from its newest one to the catalog's head, unless it holds
    the head already, or the catalog does not continue what it anchored (FAILED, nothing written)."""
    from storage_adapters.base import ReplicaConflict

    name = adapter.name
    try:
        last = _newest(adapter)
        last_seq, last_head = (-1, GENESIS) if last is None else (last.last_seq, last.head_sha256)
        if (last_seq, last_head) == (head_seq, head_sha):
            return TargetAnchor(name, CURRENT, last.key if last else None)
        if last_seq >= head_seq:
            mine = segments.entry(last_seq).file_sha256 if last_seq == head_seq else None
            why = (f"it anchored {segment_name(last_seq)} but the catalog's ledger ends at {segment_name(head_seq)} "
                   f"(rolled back or truncated?)") if mine is None else \
                  (f"it anchored {segment_name(last_seq)} as {last_head[:16]}... but the catalog's hashes to "
                   f"{mine[:16]}... (replaced?)")
            return TargetAnchor(name, FAILED, message=f"{why}; nothing written: run `strongroom ledger verify "
                                                      f"--against-storage`")
        entries = [segments.entry(seq) for seq in range(last_seq + 1, head_seq + 1)]
        if entries[0].prev_sha256 != last_head:
            return TargetAnchor(name, FAILED, message=(
                f"the catalog's {segment_name(last_seq + 1)} does not continue the chain it anchored "
                f"up to {segment_name(last_seq)}: the catalog's ledger was replaced or rewritten; nothing written: "
                f"run `strongroom ledger verify --against-storage`"))
        key, data = build(name, entries, last, now)
        try:
            adapter.put_record(key, data)
        except ReplicaConflict:
            other = parse(key, adapter.read_record(key), deep=False)  # another command anchored this head at once
            if other.head_sha256 != head_sha:
                raise
        ensure_verifier(adapter)  # the means to check the checkpoints travels with them
        return TargetAnchor(name, WRITTEN, key, len(entries))
    except BadCheckpoint as exc:
        return TargetAnchor(name, FAILED, message=str(exc))
    except (StrongroomError, OSError) as exc:
        return TargetAnchor(name, FAILED, message=str(exc))


# --------------------------------------------------------------------------------------------
# Verifying the catalog against the targets


@dataclass
class TargetCheck:
    target: str
    checkpoints: int = 0
    anchored_seq: int = -1
    problems: List[str] = field(default_factory=list)
    note: str = ""

    def to_dict(self) -> Dict[str, Any]:
        return {"target": self.target, "checkpoints": self.checkpoints, "anchored_seq": self.anchored_seq,
                "ok": not self.problems, "problems": list(self.problems), "note": self.note}


@dataclass
class AnchorVerifyReport:
    head_seq: int
    head_sha256: str
    targets: List[TargetCheck] = field(default_factory=list)

    @property
    def problems(self) -> List[str]:
        return [p for t in self.targets for p in t.problems]

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> Dict[str, Any]:
        return {"ok": self.ok, "head_seq": self.head_seq, "head_sha256": self.head_sha256,
                "targets": [t.to_dict() for t in self.targets], "problems": self.problems}


def target_chains(config) -> Iterator[Tuple[Any, Optional[TargetChain], str]]:
    """(target, its checkpoint chain or None, why not) for every storage target; a segment
    anchored on several targets is decoded once (`read_chain`'s `checked`)."""
    checked: Dict[str, Entry] = {}
    for target in config.storage.values():
        try:
            yield target, read_chain(open_for_records(config, target), checked), ""
        except (StrongroomError, OSError) as exc:
            yield target, None, f"{target.name}: its checkpoints cannot be read: {exc}"


def catalog_hashes(store: Store, segs: Sequence[Segment]) -> Dict[int, str]:
    return {s.seq: sha256_hex(store.read_bytes(s.file.path)) for s in segs}


def verify_against_storage(config, store: Store) -> AnchorVerifyReport:
    """Every checkpoint on every target checked on its own and as a chain, and every segment it
    anchored found in the catalog with the same file hash (hence the same events)."""
    segs, head_seq, head_sha = ledger_head(store)
    mine = catalog_hashes(store, segs)
    report = AnchorVerifyReport(head_seq, head_sha)
    for target, chain, why in target_chains(config):
        check = TargetCheck(target.name)
        report.targets.append(check)
        if chain is None:
            check.problems.append(why)
            continue
        check.problems += chain.problems
        check.checkpoints = len(chain.checkpoints)
        check.anchored_seq = chain.head[0]
        for cp in chain.checkpoints:
            for e in cp.entries:
                have = mine.get(e.seq)
                where = f"{target.name}: {cp.key}: {segment_name(e.seq)}"
                if have is None:
                    check.problems.append(f"{where}: anchored ({e.file_sha256[:16]}..., {e.events} event(s)) but "
                                          f"missing from the catalog: the catalog's ledger was rolled back, "
                                          f"truncated or had segments removed")
                elif have != e.file_sha256:
                    check.problems.append(f"{where}: anchored as {e.file_sha256[:16]}... but the catalog's hashes to "
                                          f"{have[:16]}...: the catalog's ledger was altered or replaced")
        if not chain.checkpoints:
            check.note = "no checkpoints here yet" if head_seq >= 0 else ""
        elif head_seq > check.anchored_seq:
            check.note = f"{head_seq - check.anchored_seq} newer segment(s) not anchored here yet"
    return report


# --------------------------------------------------------------------------------------------
# Restoring the events (catalog rebuild)


@dataclass
class RestoreResult:
    restored: int = 0                    # segments written back into the catalog
    events: int = 0
    anchored_seq: int = -1               # the head of the longest chain the targets agree on
    sources: List[str] = field(default_factory=list)
    problems: List[str] = field(default_factory=list)   # refusals: nothing restored
    warnings: List[str] = field(default_factory=list)   # a target unreadable or damaged: others used

    def to_dict(self) -> Dict[str, Any]:
        return {"segments_restored": self.restored, "events_restored": self.events,
                "anchored_seq": self.anchored_seq, "from_targets": list(self.sources),
                "problems": list(self.problems), "warnings": list(self.warnings)}


def restore_events(config, store: Store) -> RestoreResult:
    """Write back into the catalog every anchored segment it lacks, byte for byte: the longest
    chain the targets agree on (targets whose own chain of checkpoints has a problem are left
    out). Refused (problems, nothing written) when two targets anchored
    different segments under one number, or the catalog holds a segment other than the
    anchored one (`ledger verify --against-storage` tells which)."""
    result = RestoreResult()
    agreed: Dict[int, Tuple[Entry, str]] = {}
    for target, chain, why in target_chains(config):
        if chain is None:
            result.warnings.append(why)
            continue
        if chain.problems:  # a chain with a damaged, missing or forged link vouches for nothing
            result.warnings += chain.problems + [f"{target.name}: its checkpoints were not used"]
            continue
        if chain.checkpoints:
            result.sources.append(target.name)
        for seq, e in sorted(chain.entries.items()):
            other = agreed.get(seq)
            if other is None:
                agreed[seq] = (e, target.name)
            elif other[0].file_sha256 != e.file_sha256:
                result.problems.append(f"the targets disagree on {segment_name(seq)}: {other[1]} anchored "
                                       f"{other[0].file_sha256[:16]}..., {target.name} {e.file_sha256[:16]}...; "
                                       f"no events restored (decide which target to trust)")
    if result.problems:
        return result
    upto = -1
    while upto + 1 in agreed:
        upto += 1
    result.anchored_seq = upto
    segs, _, _ = ledger_head(store)
    for seq, have in catalog_hashes(store, segs).items():
        if seq in agreed and agreed[seq][0].file_sha256 != have:
            result.problems.append(f"the catalog's {segment_name(seq)} is not the one the targets anchored: no "
                                   f"events restored; `strongroom ledger verify --against-storage` says more")
    present = {s.seq for s in segs}
    if result.problems or (present and max(present) >= upto):
        return result
    if present != set(range(len(present))):
        result.problems.append("the catalog's ledger has gaps: no events restored")
        return result
    for seq in range(len(present), upto + 1):
        entry = agreed[seq][0]
        if not store.create_exclusive(FOLDER, segment_name(seq), entry.data):
            result.problems.append(f"{segment_name(seq)}: written by another process meanwhile; restore stopped")
            break
        result.restored += 1
        result.events += entry.events
    return result


__all__ = ["anchor_all", "anchor_target", "AnchorReport", "TargetAnchor", "verify_against_storage",
           "AnchorVerifyReport", "restore_events", "RestoreResult", "records_retention", "ledger_seq",
           "noted", "take_opened"]
