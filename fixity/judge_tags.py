"""Judge a bag's tag files across its copies: which copy of each is right, which are extra.

Tag files (not in the catalog): every copy's tag files are read; for each tag file the
candidates are the distinct contents found. A candidate is disqualified when it contradicts
the catalog (a payload manifest whose entries differ from the catalog, a bag-info.txt whose
Payload-Oxum or External-Identifier differs, an invalid bagit.txt) or, for a tag manifest,
when it lists a digest that no qualified copy of that file has. The winner holds the most
copies plus endorsements by consistent tag manifests (so with two copies a bag-info.txt
damaged on one is still told apart: both tag manifests vouch for the good one). No unique
winner: `tag-in-doubt`, nothing touched. A tag file only some tag manifest that lost the vote
lists, or none lists, is `extra`.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Set, Tuple

from fixity import audit as A
from fixity.bag_audit import Reference, _Fix
from strongroom import bagit_spec

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


__all__ = ["judge_tags", "tag_fixes", "expected_tag_names"]
