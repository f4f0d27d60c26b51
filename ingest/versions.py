"""A deposit compared with the collection's earlier bags: a duplicate, or a new version.

The comparison uses the digests computed while staging (the source is read once) and the
catalog's rows of the same library and collection, so it runs before anything is written to a
replica. Two files are the same when their paths and sizes are equal and every digest both
have is equal (at least one in common).

- Duplicate: the deposit's files equal the complete listing of an earlier bag group (every
  part registered). Nothing is stored unless --new-version is given.
- New version: a file equal to one of an earlier bag is not stored again; the version bag lists
  it in its manifests and in fetch.txt, naming the earliest bag holding it. That bag stored
  it in its own data/: a bag that fetched it would have had to find it in a bag earlier still,
  so one hop always reaches the bytes (docs/versions.md).

The catalog rows come in as Arrow tables (`Earlier.from_tables`): ingest sits below the catalog
in the import order, so the pipeline reads them and hands them down.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import pyarrow as pa

from .fetch import FetchEntry
from strongroom.bag_id import BagId

DIGESTS = ("md5", "sha1", "sha256", "sha512")


@dataclass(frozen=True)
class KnownFile:
    """One payload file of a registered bag, as the catalog holds it."""

    bag_id: str
    size: int
    digests: Tuple[Tuple[str, str], ...]

    def same(self, size: int, digests: Mapping[str, str]) -> bool:
        if size != self.size:
            return False
        common = [(a, d) for a, d in self.digests if a in digests]
        return bool(common) and all(digests[a].lower() == d for a, d in common)


@dataclass(frozen=True)
class Duplicate:
    """The earlier bag group a deposit is identical to."""

    group: str
    bag_ids: Tuple[str, ...]
    deposited_at: str            # ISO time of the group's stamp
    files: int
    bytes: int

    def message(self, source: str) -> str:
        return (f"{source} is identical to bag group {self.group} ({', '.join(self.bag_ids)}), deposited "
                f"{self.deposited_at}: {self.files} file(s), {self.bytes:,} bytes, the same paths and digests; "
                f"nothing was stored. Use --new-version to record it as a new version anyway")

    def to_dict(self) -> dict:
        return {"group": self.group, "bags": list(self.bag_ids), "deposited_at": self.deposited_at,
                "files": self.files, "bytes": self.bytes}


@dataclass
class Earlier:
    """The registered bag groups of one library/collection, oldest first.

    A group's files are read from the catalog only when needed (`listing`): a deposit compared
    with a collection of a million earlier files holds none of them unless one group has its
    exact file count and bytes (a duplicate), or it is a new version (which must look at all)."""

    groups: List[str] = field(default_factory=list)
    listings: Dict[str, Dict[str, KnownFile]] = field(default_factory=dict)   # group -> path -> file, once read
    bags: Dict[str, List[str]] = field(default_factory=dict)                  # group -> bag ids
    complete: Dict[str, bool] = field(default_factory=dict)                   # every part registered
    totals: Dict[str, Tuple[int, int]] = field(default_factory=dict)          # group -> (files, bytes)
    load: Optional[Callable[[List[str]], pa.Table]] = None                    # bag ids -> their `files` rows

    @classmethod
    def from_tables(cls, bags: pa.Table, files: pa.Table) -> "Earlier":
        """From the catalog's `bags` rows of the collection and their `files` rows."""
        import pyarrow.compute as pc

        return cls.from_bags(bags, lambda ids: files.filter(pc.is_in(files.column("bag_id"), pa.array(ids))))

    @classmethod
    def from_bags(cls, bags: pa.Table, load: Callable[[List[str]], pa.Table]) -> "Earlier":
        """From the catalog's `bags` rows of the collection; `load(bag_ids)` reads their `files` rows."""
        out = cls(load=load)
        parts: Dict[str, Tuple[int, set]] = {}
        for row in sorted(bags.to_pylist(), key=lambda r: r["bag_id"]):
            group = BagId.parse(row["bag_id"]).group
            if group not in out.bags:
                out.groups.append(group)
                out.bags[group] = []
                out.totals[group] = (0, 0)
            out.bags[group].append(row["bag_id"])
            files, nbytes = out.totals[group]
            out.totals[group] = (files + row["file_count"], nbytes + row["byte_count"])
            count, seen = parts.setdefault(group, (row["part_count"], set()))
            seen.add(row["part"])
        out.groups.sort(key=lambda g: g.rsplit("/", 1)[1])      # by stamp: oldest first
        for group, (count, seen) in parts.items():
            out.complete[group] = seen == set(range(1, count + 1))
        return out

    def listing(self, group: str) -> Dict[str, KnownFile]:
        """path -> file of one group, read from the catalog the first time it is asked for."""
        if group not in self.listings:
            files = self.load(self.bags[group]) if self.load is not None else None
            listing: Dict[str, KnownFile] = {}
            if files is not None:
                algs = [a for a in DIGESTS if a in files.column_names]
                columns = {n: files.column(n).to_pylist() for n in ["bag_id", "path", "size"] + algs}
                for i, bag_id in enumerate(columns["bag_id"]):
                    digests = tuple((a, columns[a][i]) for a in algs if columns[a][i])
                    listing[columns["path"][i]] = KnownFile(bag_id, columns["size"][i], digests)
            self.listings[group] = listing
        return self.listings[group]

    @property
    def latest(self) -> Optional[str]:
        return self.groups[-1] if self.groups else None

    def duplicate_of(self, staged: Mapping[str, Tuple[int, Mapping[str, str]]]) -> Optional[Duplicate]:
        """The newest complete group whose listing equals `staged` (bag path -> (size, digests))."""
        groups = self.duplicate_candidates(len(staged), sum(size for size, _ in staged.values()))
        return self.duplicate(self.still_equal(groups, staged))

    def duplicate_candidates(self, files: int, total_bytes: int) -> List[str]:
        """Complete groups, newest first, of `files` files and `total_bytes` bytes: the only ones
        a deposit of that many files and bytes can be a duplicate of (known from the scan, before
        any byte is staged, so the deposit can be compared one bag's files at a time)."""
        return [g for g in reversed(self.groups) if self.complete[g] and self.totals[g] == (files, total_bytes)]

    def still_equal(self, groups: Sequence[str], staged: Mapping[str, Tuple[int, Mapping[str, str]]]) -> List[str]:
        """The groups of `groups` holding every file of `staged` (some of a deposit's files) the
        same. A group of the deposit's file count that holds all of its (distinct) paths the
        same holds exactly them: its listing equals the deposit's."""
        return [g for g in groups
                if all(p in self.listing(g) and self.listing(g)[p].same(*staged[p]) for p in staged)]

    def duplicate(self, groups: Sequence[str]) -> Optional[Duplicate]:
        """The Duplicate of the first of `groups` (newest first), or None when there is none."""
        if not groups:
            return None
        group = groups[0]
        listing = self.listing(group)
        stamp = group.rsplit("/", 1)[1]
        when = f"{stamp[0:4]}-{stamp[4:6]}-{stamp[6:8]} {stamp[9:11]}:{stamp[11:13]}:{stamp[13:15]} UTC"
        return Duplicate(group, tuple(self.bags[group]), when, len(listing), sum(f.size for f in listing.values()))

    def fetchable(self, staged: Mapping[str, Tuple[int, Mapping[str, str]]]) -> Dict[str, FetchEntry]:
        """bag path -> fetch.txt entry for each staged file equal to one of an earlier bag
        (the earliest such bag: it holds the bytes in its own data/)."""
        out: Dict[str, FetchEntry] = {}
        for path, (size, digests) in staged.items():
            for group in self.groups:
                known = self.listing(group).get(path)
                if known is not None and known.same(size, digests):
                    out[path] = FetchEntry(known.bag_id, path, size)
                    break
        return out


def staged_listing(files: Sequence) -> Dict[str, Tuple[int, Mapping[str, str]]]:
    """bag path -> (size, digests) of staged files (ingest.stage.StagedFile)."""
    return {"data/" + f.relpath: (f.size, f.digests) for f in files}
