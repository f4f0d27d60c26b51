"""Which description of a bag a rebuild may register when its copies disagree, and when none may win.

Copies of one bag can each be intact (every file matches the copy's own manifests, the tag
files match its tag manifests) and still describe different bags: one copy altered together with
its manifests and tag manifests is consistent but wrong. Order and counting must never settle
that between two copies, because the loser is what the next audit overwrites. The rule:

1. Only intact copies (verified in this rebuild) vote; if they all describe the bag the same way,
   that description is registered (damaged copies are damage, repaired from it later).
2. A description wins outright only with a **strict majority of all the bag's copies** found
   (more than half, damaged and unreadable copies counted in the total): two against one wins,
   one against one never does, nor one against one with a third copy unreadable.
3. Otherwise independent evidence may decide: the depositor's supplied checksums
   (`metadata/supplied-checksums.csv`, written at deposit from the depositor's own checksum
   files). The evidence must not come from one side only: the file must be byte-identical in
   every disagreeing copy (the same digest in each side's verified tag manifest, and the bytes
   read must hash to it), every difference between the sides must be a payload file it lists (a
   changed bag-info, or a tag file, is not something it can speak to), and exactly one side
   must agree with it on every such file. (The ledger's history is not used: a rebuild runs when
   the catalog, and with it the ledger, may be lost; and the ledger records no file digests.)
4. With nothing to decide, the dispute is left for a person: every intact copy is recorded in
   replica state `disputed`, with a detail naming each differing file and every side's digest;
   the bag is still registered (from the first copy in config order, so it shows up in
   `status`), but that description carries no weight and no copy counts as good: the audit
   repairs nothing of a bag with a disputed copy, and `status` reports it (exit 1).
"""

from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass, field, replace
from typing import Any, Dict, List, Optional, Sequence, Tuple

from catalog.schema import DIGEST_ALGORITHMS, BagRecord, FileRecord

SUPPLIED = "metadata/supplied-checksums.csv"
SUPPLIED_MAX_BYTES = 64 * 1024 * 1024
AGREED, MAJORITY, EVIDENCE, DISPUTED, UNVERIFIED = (
    "all intact copies agree", "a strict majority of the copies", "the depositor's supplied checksums",
    "disputed", "the copies' own tag files, no copy verified in this rebuild")


@dataclass
class Decision:
    """The description to register (`chosen`: copies sharing it) and how it was decided."""

    how: Optional[str]                       # one of the constants above; None: nothing readable
    chosen: List[Any] = field(default_factory=list)
    sides: List[List[Any]] = field(default_factory=list)   # every group of copies, chosen first
    detail: str = ""                          # for a dispute: the files and every side's digests

    @property
    def disputed(self) -> bool:
        return self.how == DISPUTED


def _bag_key(bag: Optional[BagRecord]) -> Optional[BagRecord]:
    return None if bag is None else replace(bag, source_path=None)


def _description(copy) -> Tuple:
    return (_bag_key(copy.bag), tuple(copy.files),
            tuple(sorted((p, tuple(sorted(d.items()))) for p, d in copy.tag_digests.items())))


def decide(copies: Sequence[Any], total: int, read_supplied=None) -> Decision:
    """Apply the rule above to `copies` (rebuild `_Copy` objects, config order) of a bag that has
    `total` copies in all. `read_supplied(copy) -> bytes | None` reads the supplied checksums."""
    readable = [c for c in copies if c.bag is not None]
    if not readable:
        return Decision(None)
    verified = [c for c in readable if c.outcome is not None and c.outcome.state == "verified"]
    pool = verified or readable
    groups: Dict[Tuple, List[Any]] = {}
    for c in pool:
        groups.setdefault(_description(c), []).append(c)
    sides = list(groups.values())
    if len(sides) == 1:
        return Decision(AGREED if verified else UNVERIFIED, sides[0], sides)
    if not verified:  # every copy damaged: no side is good; register the most common, as before
        best = max(sides, key=len)
        return Decision(UNVERIFIED, best, [best] + [s for s in sides if s is not best])
    top = max(len(s) for s in sides)
    leaders = [s for s in sides if len(s) == top]
    if len(leaders) == 1 and 2 * top > total:
        return Decision(MAJORITY, leaders[0], leaders + [s for s in sides if s is not leaders[0]])
    winner = _supplied_verdict(sides, read_supplied)
    if winner is not None:
        return Decision(EVIDENCE, winner, [winner] + [s for s in sides if s is not winner])
    return Decision(DISPUTED, sides[0], sides, _dispute_detail(sides, total))


# --------------------------------------------------------------------------------------------


def _payload_differences(sides: List[List[Any]]) -> Tuple[List[str], bool]:
    """(payload paths whose records differ between sides, True if anything else differs too)."""
    first = sides[0][0]
    other = False
    paths = set()
    maps = [{f.path: f for f in s[0].files} for s in sides]
    for side in sides[1:]:
        c = side[0]
        if _bag_key(c.bag) != _bag_key(first.bag):
            bag_a, bag_b = _bag_key(c.bag), _bag_key(first.bag)
            if replace(bag_a, byte_count=0) != replace(bag_b, byte_count=0):
                other = True
        for name in set(c.tag_digests) | set(first.tag_digests):
            if c.tag_digests.get(name) != first.tag_digests.get(name) and not _follows_payload(name):
                other = True
    for path in set().union(*maps):
        recs = [m.get(path) for m in maps]
        if any(r is None for r in recs):
            other = True  # a file in one description only: not a matter of bytes
        elif len({(r.size, tuple(sorted(r.digests.items()))) for r in recs}) > 1:
            paths.add(path)
    return sorted(paths), other


def _follows_payload(tag_name: str) -> bool:
    """Tag files that change whenever a payload file's bytes do (manifests, tag manifests, the
    Payload-Oxum line of bag-info is handled with the bag record)."""
    return tag_name.startswith(("manifest-", "tagmanifest-")) or tag_name == "bag-info.txt"


def _supplied_verdict(sides: List[List[Any]], read_supplied) -> Optional[List[Any]]:
    if read_supplied is None:
        return None
    digests = {tuple(sorted(s[0].tag_digests.get(SUPPLIED, {}).items())) for s in sides}
    if len(digests) != 1 or not next(iter(digests)):
        return None  # absent, or not the same on every side: evidence from one side only
    (expected,) = digests
    raw = read_supplied(sides[0][0])
    if raw is None or len(raw) > SUPPLIED_MAX_BYTES:
        return None
    if any(hashlib.new(alg, raw).hexdigest() != d for alg, d in expected):
        return None
    try:
        rows = list(csv.DictReader(io.StringIO(raw.decode("utf-8"), newline="")))
    except (csv.Error, UnicodeError, ValueError):
        return None
    supplied: Dict[str, Dict[str, str]] = {}
    for r in rows:
        path, alg, digest = (r.get("path") or ""), (r.get("algorithm") or "").lower(), (r.get("digest") or "").lower()
        if alg in DIGEST_ALGORITHMS and digest:
            supplied.setdefault(path, {})[alg] = digest
    paths, other = _payload_differences(sides)
    if other or not paths:
        return None
    agreeing = []
    for side in sides:
        files = {f.path: f for f in side[0].files}
        verdicts = []
        for path in paths:
            common = [a for a in supplied.get(path, {}) if a in files[path].digests]
            if not common:
                return None  # a differing file the evidence does not cover
            verdicts.append(all(files[path].digests[a] == supplied[path][a] for a in common))
        if all(verdicts):
            agreeing.append(side)
    return agreeing[0] if len(agreeing) == 1 else None


def _primary(f: FileRecord) -> Tuple[str, str]:
    for alg in ("sha256", "sha512", "sha1", "md5"):
        if alg in f.digests:
            return alg, f.digests[alg]
    return "size", str(f.size)


def _dispute_detail(sides: List[List[Any]], total: int) -> str:
    paths, _ = _payload_differences(sides)
    names = [", ".join(c.target.name for c in s) for s in sides]
    parts = []
    for path in paths[:10]:
        seen = []
        for name, side in zip(names, sides):
            rec = next(f for f in side[0].files if f.path == path)
            alg, digest = _primary(rec)
            seen.append(f"{name} {alg} {digest}")
        parts.append(f"{path}: " + " vs ".join(seen))
    if len(paths) > 10:
        parts.append(f"... ({len(paths)} files differ)")
    first = sides[0][0]
    for side, name in zip(sides[1:], names[1:]):
        c = side[0]
        if _bag_key(c.bag) != _bag_key(first.bag):
            parts += [f"bag-info {n}: {getattr(first.bag, n)!r} ({names[0]}) vs {getattr(c.bag, n)!r} ({name})"
                      for n in BagRecord.__dataclass_fields__
                      if n != "source_path" and getattr(c.bag, n) != getattr(first.bag, n)][:5]
        mine, theirs = {f.path for f in first.files}, {f.path for f in c.files}
        parts += [f"{p}: only on {names[0]}" for p in sorted(mine - theirs)[:5]]
        parts += [f"{p}: only on {name}" for p in sorted(theirs - mine)[:5]]
    return (f"disputed: {len(sides)} intact copies describe the bag differently and nothing independent decides "
            f"(no strict majority of its {total} copies, no supplied checksum that settles it); left for a "
            f"person, nothing is repaired: " + "; ".join(parts or ["tag files differ"]))


__all__ = ["Decision", "decide", "AGREED", "MAJORITY", "EVIDENCE", "DISPUTED", "UNVERIFIED", "SUPPLIED"]
