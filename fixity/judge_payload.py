"""Judge a bag's payload files across its copies: which copy is right, which must be repaired.

Payload files (the catalog holds their size and digests):
  * normally the catalog is the reference. A damaged or missing copy is replaced from another
    copy of that file, preferring copies that were re-read and matched in this run, then
    copies whose size matched (quick), then copies not checked in this run (`_Copies.sources`;
    how the replacement is verified: `fixity.repairer`).
  * the catalog is "in doubt" for a file when no copy matches it. Then, with three or more
    copies, the (size, digest) that more than half of all the bag's copies hold, and that
    each of those copies' own manifest gives too, wins: the other copies are repaired to it
    and the disagreement with the catalog is reported (`catalog-disagrees`, exit 1: the
    catalog needs attention). Without such a majority nothing is touched (`no-good-copy`).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Dict, List, Mapping, Optional, Tuple

from fixity import audit as A
from fixity import trust
from fixity.bag_audit import Reference, _Fix
from storage_adapters.base import StorageAdapter

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


__all__ = ["judge_payload"]
