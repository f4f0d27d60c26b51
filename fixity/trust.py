"""What the copies themselves say, for the judgements a damaged catalog must never decide alone.

Two questions `fixity.repair` asks before it touches anything:

* **Is a stored file really extra?** The catalog is an index, the copies are the authority. A
  payload file absent from the catalog is extra only when it is also absent from the bag's own
  payload manifests on a strict majority of ALL the bag's copies, counting only manifests whose
  digest their own copy's tag manifest confirms. A file the copies' manifests list but the
  catalog does not is a catalog disagreement: reported, nothing moved or deleted. (Without
  this, a catalog that lost rows of its `files` table made every payload file "extra" and the
  audit removed them from every copy.)
* **Are two copies independent?** Two copies whose files are one file on disk (the same device
  and inode: hard links) are one copy. A file Strongroom stores has one link; files with more
  were noted by the check (`ReplicaCheck.linked`, from the descriptor it read: no extra system
  call). Their identities are compared across copies, the copies not read in this run are
  stat'ed for just those files, and the later copy in the bag's target order gets a
  `shared-storage` finding: damage, repaired by writing a real copy (a new inode).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Set, Tuple

from fixity import audit as A
from strongroom.bag_id import BagId
from storage_adapters.base import StorageAdapter


# --------------------------------------------------------------------------------------------
# Manifests the copies vouch for


def vouched_manifests(look: A.ReplicaCheck) -> List[str]:
    """Algorithms of this copy's payload manifests that parsed and whose digest one of the
    copy's own tag manifests confirms (a manifest nobody vouches for proves nothing)."""
    out = []
    for alg, state in look.manifest_state.items():
        if state not in ("agrees", "disagrees"):
            continue
        name = f"manifest-{alg}.txt"
        copy = look.tag_copies.get(name)
        if copy is None:
            continue
        if any(entries.get(name) is not None and copy.digests.get(talg) == entries.get(name)
               for talg, entries in look.tag_manifests.items()):
            out.append(alg)
    return out


def manifest_lists(look: A.ReplicaCheck, alg: str, path: str) -> bool:
    """Does this copy's (vouched) manifest list `path`, a path the catalog does not hold?"""
    if look.manifest_state.get(alg) != "disagrees":
        return False
    return look.manifest_differences.get(alg, {}).get(path) is not None


@dataclass
class ExtraVerdict:
    """Payload paths stored but not in the catalog, sorted out by what the copies' manifests say."""

    extra: Set[str] = field(default_factory=set)                  # may be moved aside
    listed: Dict[str, List[str]] = field(default_factory=dict)    # path -> copies whose manifest lists it
    undecided: Set[str] = field(default_factory=set)              # too few vouched manifests to tell


def judge_extras(looks: Mapping[str, A.ReplicaCheck], n_copies: int) -> ExtraVerdict:
    """Decide, for every payload path some copy stores but the catalog lacks, whether it is extra."""
    verdict = ExtraVerdict()
    candidates: Set[str] = set()
    for look in looks.values():
        if look.reachable and look.bag_present and look.kind != A.TAGS:
            candidates.update(look.extra_payload)
    if not candidates:
        return verdict
    vouched = {t: vouched_manifests(look) for t, look in looks.items() if look.reachable and look.bag_present}
    for path in candidates:
        listing, absent = [], 0
        for target, algs in vouched.items():
            if not algs:
                continue
            if any(manifest_lists(looks[target], alg, path) for alg in algs):
                listing.append(target)
            else:
                absent += 1
        if listing:
            verdict.listed[path] = sorted(listing)
        elif absent * 2 > n_copies:
            verdict.extra.add(path)
        else:
            verdict.undecided.add(path)
    return verdict


def catalog_disagreement(verdict: ExtraVerdict) -> Optional[A.Finding]:
    """One bag-level finding for every stored file the copies' manifests list and the catalog lacks."""
    if not verdict.listed:
        return None
    paths = sorted(verdict.listed)
    sample = "; ".join(f"{p} (listed on {', '.join(verdict.listed[p])})" for p in paths[:10])
    more = f" and {len(paths) - 10} more" if len(paths) > 10 else ""
    return A.Finding(A.CATALOG_DISAGREES, None, None,
                     f"{len(paths)} stored file(s) are listed by the bag's own manifests but missing from the "
                     f"catalog: {sample}{more}; nothing was moved or deleted (the catalog is in doubt: "
                     "run `strongroom catalog rebuild`)")


# --------------------------------------------------------------------------------------------
# Copies that are one copy


@dataclass
class Shared:
    """`path` on `target` is the same file on disk as on `first` (the earlier copy)."""

    target: str
    path: str
    first: str
    identity: Tuple[int, int]

    def finding(self) -> A.Finding:
        return A.Finding(A.SHARED_STORAGE, self.target, self.path,
                         f"is the same file on disk as {self.first}'s copy (device {self.identity[0]}, inode "
                         f"{self.identity[1]}): two copies that are one; a separate copy is written in its place")


def shared_files(order: Sequence[str], looks: Mapping[str, A.ReplicaCheck],
                 adapters: Mapping[str, StorageAdapter]) -> List[Shared]:
    """Files of the bag that two copies share on disk, named on the later copy in `order`."""
    bag: Optional[BagId] = None
    linked: Dict[str, Dict[str, Tuple[int, int]]] = {}
    for target in order:
        look = looks.get(target)
        if look is None:
            continue
        bag = bag or BagId.parse(look.bag_id)
        linked[target] = {p: (int(d), int(i)) for p, d, i in look.linked}
    paths = sorted({p for per in linked.values() for p in per})
    if not paths or bag is None:
        return []
    out: List[Shared] = []
    for path in paths:
        by_identity: Dict[Tuple[int, int], List[str]] = defaultdict(list)
        for target in order:
            ident = _identity(target, path, looks, linked, adapters, bag)
            if ident is not None:
                by_identity[ident].append(target)
        for ident, holders in by_identity.items():
            for later in holders[1:]:
                out.append(Shared(later, path, holders[0], ident))
    return out


def _identity(target: str, path: str, looks: Mapping[str, A.ReplicaCheck],
              linked: Mapping[str, Mapping[str, Tuple[int, int]]], adapters: Mapping[str, StorageAdapter],
              bag: BagId) -> Optional[Tuple[int, int]]:
    """The (device, inode) of `path` on `target`: from its check where the check read it (a file
    sharing an inode has more than one link, so it was noted), else one stat now."""
    look = looks.get(target)
    if look is None or not (look.reachable and look.bag_present) or target not in adapters:
        return None
    if path in linked.get(target, {}):
        return linked[target][path]
    read_here = path in look.tag_copies or (look.kind != A.TAGS and A.is_payload(path))
    if read_here:
        return None   # read in this run with one link: not shared
    try:
        st = adapters[target].stat_file(bag, path)
    except Exception:   # odd or unreadable: the check reports that; it is not shared storage
        return None
    if st is None or st.identity is None or (st.links or 1) < 2:
        return None
    return st.identity


def shared_folders(order: Sequence[str], looks: Mapping[str, A.ReplicaCheck]) -> List[A.Finding]:
    """Copies whose bag folder is one folder on disk with an earlier copy's (a bind mount, or
    two targets' roots leading to one place): one copy, counted once. Damage on the later copy,
    left for a person (a mount point is not moved aside, nothing is written through it)."""
    first: Dict[Tuple[int, int], str] = {}
    out: List[A.Finding] = []
    for target in order:
        look = looks.get(target)
        if look is None or not look.folder_identity or not look.bag_present:
            continue
        ident = (int(look.folder_identity[0]), int(look.folder_identity[1]))
        if ident in first:
            out.append(A.Finding(A.SHARED_STORAGE, target, None,
                                 f"the bag's folder is the same folder on disk as {first[ident]}'s copy (device "
                                 f"{ident[0]}, inode {ident[1]}; a bind mount or two roots leading to one place): "
                                 "two copies that are one; not repaired through it, left for a person"))
        else:
            first[ident] = target
    return out


def note_shared(shared: List[Shared], looks: Mapping[str, A.ReplicaCheck]) -> List[Shared]:
    """Payload files shared with an earlier copy become problems of the later copy (repaired like
    damage, from the other copies); the shared tag files are returned for `shared_tag_fixes`."""
    tags = []
    for s in shared:
        look = looks[s.target]
        if not A.is_payload(s.path):
            tags.append(s)
        elif not any(p.path == s.path for p in look.payload_problems):
            look.payload_problems.append(A.FileProblem(s.path, A.SHARED_STORAGE, s.finding().detail))
    return tags


def shared_tag_fixes(shared: List[Shared], refs: Mapping, tfixes: List, make_fix) -> List:
    """Repairs of tag files a later copy shares with an earlier one: `make_fix(target, path, ref,
    finding, sources, tag=True)` for each (fixity.repair's planned fix), none where one is planned."""
    planned = {(f.target, f.path) for f in tfixes}
    out = []
    for s in shared:
        ref = refs.get(s.path)
        if (s.target, s.path) in planned or ref is None:
            continue
        out.append(make_fix(s.target, s.path, ref, s.finding(), [t for t in ref.holders if t != s.target], tag=True))
    return out


__all__ = ["shared_folders", "note_shared", "shared_tag_fixes", "vouched_manifests", "manifest_lists", "ExtraVerdict", "judge_extras",
           "catalog_disagreement",
           "Shared", "shared_files"]
