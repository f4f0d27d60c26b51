"""Judge a bag's copies against each other, repair the damaged ones, record everything.

`fixity.audit` checks one copy at a time. What counts as the *right* bytes is decided here,
across every copy of the bag, file by file:

Payload files (the catalog holds their size and digests):
  * normally the catalog is the reference. A damaged or missing copy is replaced from another
    copy of that file, preferring copies that were re-read and matched in this run, then
    copies whose size matched (quick), then copies not checked in this run. Whatever the
    source, `StorageAdapter.replace_file` checks every byte it reads against the size and
    *all* catalog digests before the new file gets its name, so a copy is never overwritten
    with one that was not verified in this run; a source that fails that check is itself
    reported damaged (and repaired from another copy if there is one).
  * the catalog is "in doubt" for a file when no copy matches it. Then, with three or more
    copies, the (size, digest) that more than half of all the bag's copies hold, and that
    each of those copies' own manifest gives too, wins: the other copies are repaired to it
    and the disagreement with the catalog is reported (`catalog-disagrees`, exit 1: the
    catalog needs attention). Without such a majority nothing is touched (`no-good-copy`).

Tag files (not in the catalog): every copy's tag files are read; for each tag file the
candidates are the distinct contents found. A candidate is disqualified when it contradicts
the catalog (a payload manifest whose entries differ from the catalog, a bag-info.txt whose
Payload-Oxum or External-Identifier differs, an invalid bagit.txt) or, for a tag manifest,
when it lists a digest that no qualified copy of that file has. The winner holds the most
copies plus endorsements by consistent tag manifests (so with two copies a bag-info.txt
damaged on one is still told apart: both tag manifests vouch for the good one). No unique
winner: `tag-in-doubt`, nothing touched. A tag file only some tag manifest that lost the vote
lists, or none lists, is `extra`.

The copies are the authority, the catalog an index (`fixity.trust`): a stored payload file the
catalog lacks is extra only when a strict majority of all copies' own payload manifests (each
confirmed by its copy's tag manifest) omit it too; one they list is a catalog disagreement,
reported and never touched. Extra files and odd objects (a link, FIFO, socket, a folder where a
file belongs, a linked `data/`, bag or collection folder: `storage_adapters.base.OddObject`)
are moved aside on a file system (`<root>/.strongroom-aside/<UTC stamp>/...`), never deleted;
on an object store an extra object is deleted after its size and sha256 are in the ledger (an
event appended before the delete). Copies
that share files on disk (hard links) are one copy: the later one in the bag's target order
gets `shared-storage` and a real copy is written (a new inode). While any copy of the bag is
`disputed` (the copies disagree and nothing independent decides), nothing of it is repaired.

Repair order on a copy: extra files and odd objects out of the way, payload files, tag files,
bagit.txt last (a copy without bagit.txt is visibly incomplete if a repair is interrupted).
Every replaced file is re-read afterwards and must match (`re-verified`).

Events (one ledger segment per bag audit; LoC PREMIS eventType vocabulary, which has no
"repair"): `fixity check` per copy audited (success / failure / inconclusive) and per file
found damaged or unreadable; `replication` for each file replaced from a good copy, its detail
starting "repair:"; `quarantine` for each extra file or odd object moved aside (`deletion`
where it had to be deleted), detail starting "repair:". Bag-level judgements (no good copy,
catalog in doubt, tag file in doubt, disputed) are `fixity check` failures of the bag.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import logging
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Set, Tuple

from catalog.catalog import Catalog
from catalog.schema import EventRecord, ReplicaRecord, check_bag_path
from fixity import audit as A
from fixity import open_detail as D
from fixity import trust
from ingest import bagit_spec
from ingest.naming import BagId
from strongroom import NAME, __version__
from strongroom.errors import StrongroomError
from storage_adapters.base import NotFound, OddObject, SourceMismatch, StorageAdapter, StorageError, bag_key

log = logging.getLogger(__name__)

AGENT = f"{NAME} {__version__}"
#: Every replica record an audit writes has a detail starting with this (due.py counts the
#: bytes today's audits read by it).
DETAIL_PREFIX = "audit "
DETAIL_MAX = D.DETAIL_MAX
#: Ledger events per copy: file-level events beyond these are counted in the copy's event.
MAX_FILE_EVENTS = 1000
MAX_INCONCLUSIVE_EVENTS = 100

GOOD_STATES = ("verified", "repaired")
#: A copy a person must look at (catalog.schema REPLICA_STATES): the copies disagree and nothing
#: independent decides which is right. While any copy of a bag is disputed nothing of it is repaired.
DISPUTED_STATE = "disputed"

# Outcomes of one copy in one audit run.
SUCCESS, REPAIRED, FAILURE, INCONCLUSIVE, SKIPPED = "success", "repaired", "failure", "inconclusive", "skipped"


# --------------------------------------------------------------------------------------------
# Records


@dataclass
class Reference:
    """The right content of one file: size and digests, and the copies known to hold it."""

    size: Optional[int]
    digests: Dict[str, str]
    holders: List[str] = field(default_factory=list)


@dataclass
class RepairAction:
    """One repair on one copy: `replace` a damaged/missing file from `source`, `move-aside` an
    extra file or odd object, or `delete` an extra object (object stores)."""

    target: str
    path: str
    action: str
    outcome: str                 # success | failure
    detail: str
    source: Optional[str] = None


@dataclass
class ReplicaOutcome:
    target: str
    site: str
    kind: str                    # deep | quick | tags (looked at for comparison only)
    audited: bool                # selected for this run (its record gets the audit)
    outcome: str                 # success | repaired | failure | inconclusive | skipped
    state_before: Optional[str]
    state_after: Optional[str]
    files_checked: int = 0
    bytes_checked: int = 0
    findings: List[A.Finding] = field(default_factory=list)      # damage and inconclusive, as found
    repairs: List[RepairAction] = field(default_factory=list)
    remaining: List[A.Finding] = field(default_factory=list)     # damage not repaired
    not_listed: int = 0          # findings beyond what is listed
    note: str = ""
    checked_at: Optional[str] = None


@dataclass
class BagAudit:
    bag_id: str
    policy: str
    started_at: str
    finished_at: str = ""
    repair: bool = True
    replicas: List[ReplicaOutcome] = field(default_factory=list)
    bag_findings: List[A.Finding] = field(default_factory=list)
    events: int = 0

    @property
    def damage_remains(self) -> bool:
        return any(r.remaining for r in self.replicas) or any(f.damage for f in self.bag_findings)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "BagAudit":
        d = dict(d)
        reps = []
        for r in d.get("replicas", []):
            r = dict(r)
            r["findings"] = [A.Finding.from_dict(f) for f in r.get("findings", [])]
            r["remaining"] = [A.Finding.from_dict(f) for f in r.get("remaining", [])]
            r["repairs"] = [RepairAction(**a) for a in r.get("repairs", [])]
            reps.append(ReplicaOutcome(**r))
        d["replicas"] = reps
        d["bag_findings"] = [A.Finding.from_dict(f) for f in d.get("bag_findings", [])]
        return cls(**d)


@dataclass
class _Fix:
    """A planned repair: make `path` on `target` equal `ref` (or remove it: ref None)."""

    target: str
    path: str
    ref: Optional[Reference]
    finding: A.Finding
    sources: List[str] = field(default_factory=list)
    tag: bool = False


# --------------------------------------------------------------------------------------------
# Judging payload files across copies


_PAYLOAD_DAMAGE = {A.MISSING, A.TRUNCATED, A.GROWN, A.CORRUPTED, A.NOT_A_FILE, A.SHARED_STORAGE}


class _Copies:
    """What is known about every copy of the bag, for choosing sources and voting."""

    def __init__(self, expected: A.ExpectedBag, looks: Mapping[str, A.ReplicaCheck]):
        self.expected = expected
        self.looks = looks
        self.problems: Dict[str, Dict[str, A.FileProblem]] = {
            t: {p.path: p for p in look.payload_problems} for t, look in looks.items()}
        self._vouched: Dict[str, List[str]] = {}

    def usable(self, target: str) -> bool:
        look = self.looks[target]
        return look.reachable and look.bag_present

    def trust(self, target: str, path: str) -> Optional[int]:
        """How far a copy of a payload file can be trusted as a source (lower is better), None if not at all."""
        if not self.usable(target):
            return None
        look = self.looks[target]
        problem = self.problems[target].get(path)
        if problem is not None:
            return None
        if look.kind == A.DEEP and look.problems_not_listed == 0:
            return 0
        if look.kind == A.QUICK and look.problems_not_listed == 0:
            return 1
        return 2

    def sources(self, path: str, exclude: str) -> List[str]:
        ranked = [(self.trust(t, path), t) for t in self.looks if t != exclude]
        return [t for rank, t in sorted((r, t) for r, t in ranked if r is not None)]

    def manifest_digest(self, target: str, path: str, alg: str) -> Optional[str]:
        """What this copy's own payload manifest gives for `path`; None when the manifest is
        missing, invalid, or not confirmed by the copy's own tag manifest."""
        look = self.looks[target]
        if alg not in self._vouched.setdefault(target, trust.vouched_manifests(look)):
            return None
        state = look.manifest_state.get(alg)
        if state == "agrees":
            return self._catalog_digest(path, alg)
        if state == "disagrees":
            diff = look.manifest_differences.get(alg, {})
            return diff[path] if path in diff else self._catalog_digest(path, alg)
        return None

    def _catalog_digest(self, path: str, alg: str) -> Optional[str]:
        found = self.expected.digests_of([path]).get(path)
        return found[1].get(alg) if found else None


def judge_payload(expected: A.ExpectedBag, copies: _Copies, adapters: Mapping[str, StorageAdapter],
                  retry: A.Retry) -> Tuple[List[_Fix], Dict[str, Reference], List[A.Finding]]:
    """(repairs to make, catalog overrides by path, bag-level findings) for damaged payload files."""
    fixes: List[_Fix] = []
    overrides: Dict[str, Reference] = {}
    findings: List[A.Finding] = []
    damaged: Dict[str, List[Tuple[str, A.FileProblem]]] = defaultdict(list)
    for target, probs in copies.problems.items():
        for path, problem in probs.items():
            if problem.kind in _PAYLOAD_DAMAGE:
                damaged[path].append((target, problem))
    if not damaged:
        return fixes, overrides, findings
    catalog_refs = expected.digests_of(damaged)
    n_copies = len(copies.looks)
    for path in sorted(damaged):
        size, digests = catalog_refs[path]
        bad_targets = {t for t, _ in damaged[path]}
        maybe_good = [t for t in copies.looks if t not in bad_targets and copies.trust(t, path) is not None]
        if maybe_good:
            ref = Reference(size, digests, [t for t in maybe_good if copies.trust(t, path) == 0])
            for target, problem in damaged[path]:
                fixes.append(_Fix(target, path, ref, _finding(target, problem), copies.sources(path, target)))
            continue
        # No copy matches the catalog (or could): the catalog itself is in doubt for this file,
        # unless a copy's own (vouched) manifest agrees with it: then the catalog is corroborated
        # and the file is damaged everywhere; no count of copies may overwrite that evidence.
        unreadable = [t for t in copies.looks if copies.problems[t].get(path) is not None
                      and copies.problems[t][path].kind == A.UNREADABLE]
        corroborated = [t for t in copies.looks if copies.usable(t)
                        and copies.manifest_digest(t, path, expected.primary) == digests.get(expected.primary)]
        winner = None if corroborated else _majority(expected, copies, adapters, path, damaged[path], n_copies,
                                                     retry)
        if winner is None:
            what = "; ".join(f"{t}: {p.detail}" for t, p in damaged[path])
            if unreadable:
                what += "; could not be read on " + ", ".join(unreadable)
            findings.append(A.Finding(A.NO_GOOD_COPY, None, path,
                                      f"no good copy of this file on any replica ({what}); nothing was "
                                      "overwritten"))
            continue
        overrides[path] = winner
        findings.append(A.Finding(A.CATALOG_DISAGREES, None, path,
                                  f"no copy matches the catalog ({_digest_text(digests)}, {size} bytes); "
                                  f"{len(winner.holders)} of {n_copies} copies and their manifests agree on "
                                  f"{_digest_text(winner.digests)}, {winner.size} bytes, which was kept; the "
                                  "catalog needs correcting"))
        for target, problem in damaged[path]:
            if target not in winner.holders:
                fixes.append(_Fix(target, path, winner, _finding(target, problem), list(winner.holders)))
    return fixes, overrides, findings


def _majority(expected: A.ExpectedBag, copies: _Copies, adapters: Mapping[str, StorageAdapter], path: str,
              damaged: List[Tuple[str, A.FileProblem]], n_copies: int, retry: A.Retry) -> Optional[Reference]:
    """The (size, digests) more than half of all copies hold AND their manifests give; None otherwise.
    Needs three or more copies: with two, a disagreement cannot be settled by counting."""
    if n_copies < 3:
        return None
    primary = expected.primary
    votes: Dict[Tuple[int, str], List[str]] = defaultdict(list)
    for target, problem in damaged:
        if problem.kind == A.MISSING or problem.kind == A.NOT_A_FILE:
            continue
        size, found = problem.size, dict(problem.digests)
        if primary not in found:  # a quick check saw only the size: read this copy now
            read = A.read_copy(adapters[target], expected.bag_id, path, expected.algorithms, retry)
            if read.status != "ok":
                continue
            size, found = read.size, read.digests
        if copies.manifest_digest(target, path, primary) != found[primary]:
            continue
        votes[(size, found[primary])].append(target)
    if not votes:
        return None
    (size, digest), holders = max(votes.items(), key=lambda kv: len(kv[1]))
    if len(holders) * 2 <= n_copies:
        return None
    digests = {primary: digest}
    for alg in expected.algorithms:  # the other digests: as the majority's manifests give them, if they agree
        given = {copies.manifest_digest(t, path, alg) for t in holders}
        if len(given) == 1 and None not in given:
            digests[alg] = given.pop()
    return Reference(size, digests, sorted(holders))


def _finding(target: str, problem: A.FileProblem) -> A.Finding:
    return A.Finding(problem.kind, target, problem.path, problem.detail)


def _digest_text(digests: Mapping[str, str]) -> str:
    return ", ".join(f"{a} {d}" for a, d in sorted(digests.items()))


# --------------------------------------------------------------------------------------------
# Judging tag files across copies


@dataclass
class _Candidate:
    size: int
    digests: Dict[str, str]
    holders: List[str] = field(default_factory=list)
    qualified: bool = True
    why: str = ""
    endorsements: int = 0


def expected_tag_names(expected: A.ExpectedBag) -> Set[str]:
    """Tag files every Strongroom bag has: bagit.txt, bag-info.txt, a manifest and a tag
    manifest per catalog algorithm (Strongroom writes both for every policy checksum)."""
    names = {bagit_spec.BAGIT_TXT, "bag-info.txt"}
    for alg in expected.algorithms:
        names.update({f"manifest-{alg}.txt", f"tagmanifest-{alg}.txt"})
    return names


def _tm_alg(path: str) -> Optional[str]:
    m = bagit_spec.TAGMANIFEST_RE.match(path) if "/" not in path else None
    return bagit_spec.hashlib_name(m.group(1)) if m else None


def _m_alg(path: str) -> Optional[str]:
    m = bagit_spec.MANIFEST_RE.match(path) if "/" not in path else None
    return bagit_spec.hashlib_name(m.group(1)) if m else None


def judge_tags(expected: A.ExpectedBag, looks: Mapping[str, A.ReplicaCheck], overrides: Mapping[str, Reference]
               ) -> Tuple[Dict[str, Optional[Reference]], Dict[str, Dict[str, str]]]:
    """(reference per expected tag file (None: in doubt), why each losing candidate lost: path -> {sha256: why})."""
    usable = {t: l for t, l in looks.items() if l.reachable and l.bag_present}
    fixed = expected_tag_names(expected)
    cands: Dict[str, Dict[str, _Candidate]] = defaultdict(dict)
    for target, look in usable.items():
        for path, copy in look.tag_copies.items():
            key = copy.digests["sha256"]
            cand = cands[path].setdefault(key, _Candidate(copy.size, dict(copy.digests)))
            cand.holders.append(target)
    # Qualification of everything but tag manifests.
    for path, by_key in cands.items():
        if _tm_alg(path):
            continue
        for cand in by_key.values():
            look = usable[cand.holders[0]]
            alg = _m_alg(path)
            if path == bagit_spec.BAGIT_TXT and not look.bagit_ok:
                cand.qualified, cand.why = False, "not a valid bagit.txt"
            elif path == "bag-info.txt" and look.bag_info_issues:
                cand.qualified, cand.why = False, "; ".join(look.bag_info_issues)
            elif alg in expected.algorithms:
                cand.qualified, cand.why = _manifest_qualifies(look, alg, overrides)
    # Tag manifests: consistent when every entry matches some qualified copy.
    consistent: Dict[Tuple[str, str], bool] = {}   # (target, alg) -> its tag manifest is consistent
    for path, by_key in cands.items():
        alg = _tm_alg(path)
        if not alg:
            continue
        for cand in by_key.values():
            look = usable[cand.holders[0]]
            entries = look.tag_manifests.get(alg)
            if entries is None:
                cand.qualified = False
                cand.why = f"cannot be parsed ({look.tag_manifest_errors.get(alg, 'invalid')})"
            else:
                # An entry is contradicted when copies of that file exist and none has its digest;
                # a file no copy holds is not evidence against the tag manifest (it is reported itself).
                # An entry vouching only for a disqualified copy (a manifest contradicting the
                # catalog...) contradicts it too: a forged pair never outvotes an intact one.
                bad = [q for q, d in entries.items()
                       if cands.get(q) and not any(c.digests.get(alg) == d and (c.qualified or _tm_alg(q))
                                                   for c in cands[q].values())]
                lacking = sorted(q for q in fixed if not _tm_alg(q) and q not in entries)
                if bad:
                    cand.qualified = False
                    cand.why = f"lists {alg} digests that match no copy ({', '.join(sorted(bad)[:5])})"
                elif lacking:
                    cand.qualified = False
                    cand.why = f"does not list {', '.join(lacking[:5])}"
            for t in cand.holders:
                consistent[(t, alg)] = cand.qualified
    # Winners of the tag manifests Strongroom writes (one per catalog algorithm; any other tag
    # manifest is extra), by copies held; what the winners list is expected.
    refs: Dict[str, Optional[Reference]] = {}
    tm_paths = {p for p in fixed if _tm_alg(p)}
    tm_algs = {_tm_alg(p) for p in tm_paths}
    listed: Set[str] = set()
    any_winner = False
    for path in tm_paths:
        ref = _winner(cands.get(path, {}), lambda c: len(c.holders))
        refs[path] = ref
        if ref is not None:
            any_winner = True
            listed.update(usable[ref.holders[0]].tag_manifests.get(_tm_alg(path), {}))
    if not any_winner:
        for (target, alg), ok in consistent.items():
            if ok and alg in tm_algs:
                listed.update(usable[target].tag_manifests.get(alg, {}))
    # Endorsements of the other tag files by consistent tag manifests of every copy.
    for (target, alg), ok in consistent.items():
        if not ok or alg not in tm_algs:
            continue
        for q, d in usable[target].tag_manifests.get(alg, {}).items():
            for cand in cands.get(q, {}).values():
                if cand.digests.get(alg) == d:
                    cand.endorsements += 1
    wanted = (fixed | listed) - tm_paths - {p for p in listed if _tm_alg(p)}
    for path in wanted:
        refs[path] = _winner(cands.get(path, {}), lambda c: len(c.holders) + c.endorsements)
    why = {path: {k: c.why for k, c in by_key.items() if c.why} for path, by_key in cands.items()}
    return refs, why


def _manifest_qualifies(look: A.ReplicaCheck, alg: str, overrides: Mapping[str, Reference]) -> Tuple[bool, str]:
    state = look.manifest_state.get(alg, "missing")
    if state.startswith("invalid"):
        return False, f"cannot be parsed ({state[len('invalid: '):]})"
    if state not in ("agrees", "disagrees"):
        return False, state
    diff = look.manifest_differences.get(alg, {}) if state == "disagrees" else {}
    unexplained = [p for p, d in diff.items() if p not in overrides or overrides[p].digests.get(alg) != d]
    unmet = [p for p, ref in overrides.items() if alg in ref.digests and p not in diff]
    if unexplained or unmet:
        sample = ", ".join(sorted(unexplained + unmet)[:3])
        return False, f"disagrees with the catalog on {len(unexplained) + len(unmet)} file(s) (e.g. {sample})"
    return True, ""


def _winner(by_key: Mapping[str, _Candidate], score: Callable[[_Candidate], int]) -> Optional[Reference]:
    good = [c for c in by_key.values() if c.qualified]
    if not good:
        return None
    ranked = sorted(good, key=score, reverse=True)
    if len(ranked) > 1 and score(ranked[0]) == score(ranked[1]):
        return None
    best = ranked[0]
    return Reference(best.size, dict(best.digests), sorted(best.holders))


def tag_fixes(expected: A.ExpectedBag, looks: Mapping[str, A.ReplicaCheck], refs: Mapping[str, Optional[Reference]],
              why: Mapping[str, Mapping[str, str]]) -> Tuple[List[_Fix], List[A.Finding]]:
    """Per copy: missing, damaged and extra tag files (as repairs to make), and bag-level doubts."""
    fixes: List[_Fix] = []
    doubts: List[A.Finding] = []
    for path, ref in sorted(refs.items()):
        if ref is None:
            seen = {t: look.tag_copies[path].digests["sha256"][:12] for t, look in looks.items()
                    if path in look.tag_copies}
            if not seen:
                unreadable = sorted(t for t, look in looks.items() if path in look.tag_unreadable)
                doubts.append(A.Finding(A.NO_GOOD_COPY, None, path,
                                        "tag file missing on every copy" + (
                                            f" that could be read (unreadable on {', '.join(unreadable)})"
                                            if unreadable else "") + "; nothing to repair it from"))
                continue
            reasons = sorted({w for w in why.get(path, {}).values()})
            doubts.append(A.Finding(A.TAG_IN_DOUBT, None, path,
                                    "no copy of this tag file can be shown to be right ("
                                    + "; ".join(f"{t} has sha256 {d}..." for t, d in sorted(seen.items()))
                                    + (f"; {'; '.join(reasons[:3])}" if reasons else "")
                                    + "); nothing was overwritten"))
    for target, look in sorted(looks.items()):
        if not (look.reachable and look.bag_present):
            continue
        for path, ref in sorted(refs.items()):
            if ref is None or path in look.tag_unreadable:
                continue
            copy = look.tag_copies.get(path)
            if copy is None:
                f = A.Finding(A.TAG_MISSING, target, path, "tag file missing")
            elif copy.digests["sha256"] != ref.digests["sha256"]:
                reason = why.get(path, {}).get(copy.digests["sha256"]) or "differs from the good copies"
                size = f"{copy.size} bytes, {ref.size} expected; " if copy.size != ref.size else ""
                f = A.Finding(A.TAG_DAMAGED, target, path,
                              f"tag file damaged ({size}sha256 {copy.digests['sha256']}, the good copies on "
                              f"{', '.join(ref.holders)} have {ref.digests['sha256']}): {reason}")
            else:
                continue
            fixes.append(_Fix(target, path, ref, f, [t for t in ref.holders if t != target], tag=True))
        for path in sorted(set(look.tag_copies) | set(look.tag_unreadable)):
            if path not in refs and not _tag_listed(path, looks):
                f = A.Finding(A.EXTRA, target, path, "extra file: not a tag file of the bag (no tag manifest "
                                                     "of the good copies lists it)")
                fixes.append(_Fix(target, path, None, f, tag=True))
    return fixes, doubts


def _tag_listed(path: str, looks: Mapping[str, A.ReplicaCheck]) -> bool:
    """True unless a strict majority of all copies have tag manifests that do not list `path`:
    a tag file the bag's own tag manifests list is never taken for an extra file (even when no
    tag manifest can be shown to be right, as when the catalog itself is damaged)."""
    absent = sum(1 for look in looks.values() if look.reachable and look.bag_present and look.tag_manifests
                 and not any(path in entries for entries in look.tag_manifests.values()))
    return absent * 2 <= len(looks)


# --------------------------------------------------------------------------------------------
# Repairing


class _SourceStream:
    """A source stream that remembers its own read failure, so a failed replace_file can tell a
    bad or unreadable *source* (try another copy) from a failing *destination* (stop)."""

    def __init__(self, stream):
        self._stream = stream
        self.error: Optional[BaseException] = None

    def readinto(self, buf) -> int:
        try:
            readinto = getattr(self._stream, "readinto", None)
            if readinto is not None:
                n = readinto(buf)
                return 0 if n is None else n
            data = self._stream.read(len(buf))
            memoryview(buf)[:len(data)] = data
            return len(data)
        except BaseException as exc:
            self.error = exc
            raise

    def read(self, n: int = -1) -> bytes:
        try:
            return self._stream.read(n)
        except BaseException as exc:
            self.error = exc
            raise

    def readable(self) -> bool:
        return True


class _Repairer:
    def __init__(self, expected: A.ExpectedBag, adapters: Mapping[str, StorageAdapter], copies: _Copies,
                 retry: A.Retry, stamp: str = "", record_now: Optional[Callable[[List[EventRecord]], None]] = None):
        self.record_now = record_now   # appends events to the ledger at once (before moves and deletions)
        #: (target, path) -> the details of the moves aside of it the ledger holds
        self.recorded_moves: Optional[Callable[[str, str], List[str]]] = None
        self.appended = 0              # events appended that way
        self.stamp = stamp or A.utcnow().strftime("%Y%m%dT%H%M%S%fZ")   # names this run's moved-aside folder
        self.expected = expected
        self.bag = BagId.parse(expected.bag_id)
        self.adapters = adapters
        self.copies = copies
        self.retry = retry
        self.actions: Dict[str, List[RepairAction]] = defaultdict(list)
        self.found: Dict[str, List[A.Finding]] = defaultdict(list)   # damage found on sources while repairing
        self.bad_sources: Set[Tuple[str, str]] = set()
        self.extra_fixes: List[_Fix] = []
        self.done: Set[Tuple[str, str]] = set()

    def run(self, fix: _Fix) -> bool:
        """Make one fix; True when it succeeded and was re-verified."""
        if fix.ref is None:
            return self._remove(fix)
        for source in fix.sources:
            if (source, fix.path) in self.bad_sources or source == fix.target:
                continue
            result = self._copy_from(fix, source)
            if result is not None:
                return result
        tried = ", ".join(s for s in fix.sources if s != fix.target) or "none"
        self._act(fix, "replace", "failure", f"repair: no good copy could be copied (sources tried: {tried})")
        return False

    def _copy_from(self, fix: _Fix, source: str) -> Optional[bool]:
        """True/False: repaired or not (stop); None: this source was no good, try the next."""
        ref = fix.ref
        assert ref is not None
        src, dst = self.adapters[source], self.adapters[fix.target]
        size = ref.size
        if size is None:
            return None
        moved: Set[str] = set()
        for _ in range(8):   # each odd object on the way (a link at data/, a folder in the file's place) once
            result = self._copy_once(fix, source, src, dst, size)
            if not isinstance(result, OddObject):
                if result and not moved and fix.finding.kind == A.NOT_A_FILE:
                    self.recover_move(fix.target, bag_key(self.bag, fix.path), fix.path)   # moved by a stopped run?
                return result
            if result.key in moved or not self.move_odd(fix.target, result.key, result.what, fix):
                self._act(fix, "replace", "failure", f"repair: cannot write the good copy from {source}: "
                                                     f"{result.message}", source)
                return False
            moved.add(result.key)
        self._act(fix, "replace", "failure", "repair: too many odd objects in the way", source)
        return False

    def move_odd(self, target: str, key: str, what: str, fix: Optional[_Fix] = None) -> bool:
        """Move an odd object (a link, FIFO, folder...) out of the way of a repair, never following
        or deleting it; recorded as a repair action of its own. False if it cannot be moved."""
        dst = self.adapters[target]
        path = self._bag_path(key)
        place = path or ""     # "": the bag's folder or one above it (the detail names the key)
        action = _Fix(target, place, None, fix.finding if fix else A.Finding(A.NOT_A_FILE, target, path, what))
        if not dst.can_move_aside:
            return False
        try:
            where = A.with_retry(self.retry, lambda: dst.move_aside(self.bag, key, self.stamp))
        except NotFound:
            self.recover_move(target, key, place)
            return True
        except Exception as exc:
            if not isinstance(exc, (StorageError, OSError)):
                raise
            self._record_move(action, "failure", f"repair: {what or 'the odd object'} at {key} cannot be moved "
                                                 f"aside ({A.describe(exc)})")
            return False
        self._record_move(action, "success", f"repair: {what or 'an odd object'} found at {key} (never followed) "
                                             f"was moved aside to {where}")
        return True

    def _record_move(self, fix: _Fix, outcome: str, detail: str) -> None:
        self.actions[fix.target].append(RepairAction(fix.target, fix.path, "move-aside", outcome, detail))

    def _bag_path(self, key: str) -> Optional[str]:
        """The bag path of a root-relative key inside this bag; None for the bag or a folder above it."""
        own = bag_key(self.bag) + "/"
        return key[len(own):] if key.startswith(own) else None

    def _copy_once(self, fix: _Fix, source: str, src: StorageAdapter, dst: StorageAdapter, size: int):
        """True/False/None as `_copy_from`, or the OddObject in the way of the write."""
        ref = fix.ref
        assert ref is not None
        try:
            stream = A.with_retry(self.retry, lambda: src.open_file(self.bag, fix.path))
        except NotFound:
            self._source_bad(source, fix, A.Finding(A.TAG_MISSING if fix.tag else A.MISSING, source, fix.path,
                                                    "found missing while repairing another copy"))
            return None
        except Exception as exc:
            if not A.is_transient(exc) and not isinstance(exc, StorageError):
                raise
            log.warning("%s: %s on %s cannot be read as a repair source: %s", self.bag, fix.path, source, exc)
            return None
        wrapped = _SourceStream(stream)
        try:
            with stream:
                dst.replace_file(self.bag, fix.path, wrapped, size=size, digests=ref.digests)
        except OddObject as exc:
            if wrapped.error is None:
                return exc
            raise
        except SourceMismatch as exc:
            kind = A.TAG_DAMAGED if fix.tag else A.CORRUPTED
            self._source_bad(source, fix, A.Finding(kind, source, fix.path,
                                                    f"found damaged while repairing another copy: {exc.message}"))
            return None
        except Exception as exc:
            if wrapped.error is not None:   # the source failed to read: another copy may do
                if not A.is_transient(wrapped.error):
                    raise
                log.warning("%s: reading %s from %s failed during repair: %s", self.bag, fix.path, source, exc)
                return None
            if not isinstance(exc, (StorageError, OSError)):
                raise
            self._act(fix, "replace", "failure", f"repair: cannot write the good copy from {source}: "
                                                 f"{A.describe(exc)}", source)
            return False
        # Re-verify what is now stored.
        read = A.read_copy(dst, self.expected.bag_id, fix.path, sorted(ref.digests), self.retry)
        if read.status == "ok" and read.size == size and all(read.digests.get(a) == d for a, d in ref.digests.items()):
            self._act(fix, "replace", "success",
                      f"repair: replaced with the copy from {source} ({size} bytes, {_digest_text(ref.digests)}), "
                      f"verified while copying and re-verified after", source)
            return True
        self._act(fix, "replace", "failure", f"repair: the file written from {source} did not re-verify "
                                             f"({read.status} {read.detail})", source)
        return False

    def _source_bad(self, source: str, fix: _Fix, finding: A.Finding) -> None:
        self.bad_sources.add((source, fix.path))
        self.found[source].append(finding)
        others = [s for s in fix.sources if s != source]
        if (source, fix.path) not in self.done:
            self.extra_fixes.append(_Fix(source, fix.path, fix.ref, finding, others + [fix.target], fix.tag))

    def _remove(self, fix: _Fix) -> bool:
        """Take an extra file (or an odd object) out of the bag: moved aside where the target can
        (a file system: nothing is ever deleted), else deleted after its size and sha256 are
        recorded (an object store; the ledger event keeps what it was)."""
        dst = self.adapters[fix.target]
        if dst.can_move_aside:
            return self._move_extra(fix, dst)
        read = A.read_copy(dst, self.expected.bag_id, fix.path, ["sha256"], self.retry)
        if read.status == "missing":
            self._act(fix, "delete", "success", "repair: the extra file is already gone")
            return True
        if read.status == "not-a-file":
            what = f"a symbolic link or special file ({read.detail})"
        elif read.status != "ok":
            self._act(fix, "delete", "failure", f"repair: extra file not removed: it cannot be read to record "
                                                f"what it was ({read.detail or read.status})")
            return False
        else:
            what = f"{read.size} bytes, sha256 {read.digests.get('sha256')}"
        if self.record_now is not None:
            # In the ledger before the object goes: a crash after the delete cannot lose what it was.
            try:
                self.record_now([_event("deletion", "warning", "file", self.expected.bag_id, fix.target, fix.path,
                                        f"repair: about to delete the extra object ({what}): {fix.finding.detail}",
                                        A.utcnow())])
                self.appended += 1
            except (StrongroomError, OSError) as exc:
                self._act(fix, "delete", "failure", f"repair: extra object not deleted: what it is cannot be "
                                                    f"recorded first ({exc})")
                return False
        try:
            A.with_retry(self.retry, lambda: dst.delete_file(self.bag, fix.path))
        except NotFound:
            pass
        except Exception as exc:
            if not isinstance(exc, (StorageError, OSError)):
                raise
            self._act(fix, "delete", "failure", f"repair: extra file not removed ({A.describe(exc)})")
            return False
        try:
            gone = A.with_retry(self.retry, lambda: dst.stat_file(self.bag, fix.path)) is None
        except Exception as exc:
            if not A.is_transient(exc) and not isinstance(exc, StorageError):
                raise
            gone = False
        self._act(fix, "delete", "success" if gone else "failure",
                  f"repair: extra file removed ({what})"
                  if gone else "repair: the extra file is still listed after deletion")
        return gone

    def _gone(self, fix: _Fix) -> bool:
        """The extra file is no longer there: moved aside by an earlier run (recorded now if that
        run was stopped before recording it), or removed by someone else."""
        if not self.recover_move(fix.target, bag_key(self.bag, fix.path), fix.path):
            self._act(fix, "move-aside", "success", "repair: the extra file is already gone")
        return True

    def recover_move(self, target: str, key: str, path: str) -> bool:
        """After a crash: what is no longer at `key` but sits in the aside folder was moved by an
        earlier run. Its move is recorded now unless the ledger has it (each move once, saying
        where to). False when nothing of it is aside."""
        dst = self.adapters[target]
        places = dst.find_aside(self.bag, key) if dst.can_move_aside else []
        if not places:
            return False
        said = " ".join(self.recorded_moves(target, path)) if self.recorded_moves is not None else ""
        unsaid = [p for p in places if p not in said]
        if unsaid:
            self.actions[target].append(RepairAction(
                target, path, "move-aside", "success", f"repair: what was at {key} was moved aside to {unsaid[-1]} "
                                                       "by an earlier run stopped before it could record it; "
                                                       "nothing was deleted"))
        return True

    def _move_extra(self, fix: _Fix, dst: StorageAdapter) -> bool:
        read = A.read_copy(dst, self.expected.bag_id, fix.path, ["sha256"], self.retry)
        if read.status == "missing":
            return self._gone(fix)
        what = f"{read.size} bytes, sha256 {read.digests.get('sha256')}" if read.status == "ok" else \
            (read.detail or read.status)
        try:
            where = A.with_retry(self.retry, lambda: dst.move_aside(self.bag, bag_key(self.bag, fix.path), self.stamp))
        except NotFound:
            return self._gone(fix)
        except Exception as exc:
            if not isinstance(exc, (StorageError, OSError, ValueError)):
                raise
            self._act(fix, "move-aside", "failure", f"repair: extra file not moved aside ({A.describe(exc)})")
            return False
        self._act(fix, "move-aside", "success", f"repair: extra file moved aside to {where} ({what}); nothing "
                                                "was deleted")
        return True

    def announce_moves(self, fixes: Sequence[_Fix], odd: Mapping[str, Sequence[str]]) -> None:
        """One ledger append, before anything is moved: every move aside this run may make, and
        where to. A run stopped before its own record leaves no object aside that the ledger does
        not point to (the rerun then records the moves themselves, `recover_move`)."""
        if self.record_now is None:
            return
        now = A.utcnow()
        events = []
        for fix in fixes:
            dst = self.adapters.get(fix.target)
            if dst is None or not dst.can_move_aside or not (fix.ref is None or fix.finding.kind == A.NOT_A_FILE):
                continue
            what = "what is at" if fix.ref is not None else "the extra file"
            events.append(_event("quarantine", "warning", "file", self.expected.bag_id, fix.target, fix.path,
                                 f"repair: about to move aside {what} {bag_key(self.bag, fix.path)} into the aside "
                                 f"folder {self.stamp} of {fix.target}: {fix.finding.detail}", now))
        for target, keys in odd.items():
            for key in keys:
                events.append(_event("quarantine", "warning", "replica", self.expected.bag_id, target, None,
                                     f"repair: about to move aside what is at {key} into the aside folder "
                                     f"{self.stamp} of {target}", now))
        if events:
            self.record_now(events)
            self.appended += len(events)

    def _act(self, fix: _Fix, action: str, outcome: str, detail: str, source: Optional[str] = None) -> None:
        self.done.add((fix.target, fix.path))
        self.actions[fix.target].append(RepairAction(fix.target, fix.path, action, outcome, detail, source))


def _repair_order(fix: _Fix) -> Tuple[int, str]:
    if fix.ref is None:
        return 0, fix.path
    if fix.path == bagit_spec.BAGIT_TXT:
        return 3, fix.path
    return (2 if fix.tag else 1), fix.path


def _missing_bag_fixes(expected: A.ExpectedBag, target: str, copies: _Copies,
                       refs: Mapping[str, Optional[Reference]], overrides: Mapping[str, Reference]) -> Iterator[_Fix]:
    """Every file of a bag missing from `target`: payload from the catalog, tag files from the references."""
    for path, size, digests in expected.iter_files():
        ref = overrides.get(path) or Reference(size, digests)
        f = A.Finding(A.MISSING, target, path, "missing (the whole bag is missing)")
        yield _Fix(target, path, ref, f, copies.sources(path, target))
    for path, ref in sorted(refs.items()):
        if ref is not None:
            f = A.Finding(A.TAG_MISSING, target, path, "tag file missing (the whole bag is missing)")
            yield _Fix(target, path, ref, f, [t for t in ref.holders if t != target], tag=True)


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


# --------------------------------------------------------------------------------------------
# The record


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


open_since, OPEN_SINCE, STILL_OPEN = D.open_since, D.OPEN_SINCE, D.STILL_OPEN

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


__all__ = ["Reference", "RepairAction", "ReplicaOutcome", "BagAudit", "audit_bag", "finish_bag", "judge_payload",
           "judge_tags", "tag_fixes", "expected_tag_names", "DETAIL_PREFIX", "DISPUTED_STATE", "SUCCESS", "REPAIRED", "FAILURE",
           "INCONCLUSIVE", "SKIPPED"]
