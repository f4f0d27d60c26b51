"""Restore of every bag of one deposit into ONE destination: a split deposit, or a collection version.

Why: a deposit larger than its policy's bag limits is stored as several bags (one bag group,
`Bag-Group-Identifier`, `Bag-Count: N of T`, catalog `group_id`/`part`/`part_count`), and a
collection's versions are its successive deposits (contract C4, /work/coord/api-versions.md: a
version bag lists every file and fetches the unchanged ones from an earlier bag). A librarian
wants the deposit back as it came in, not T folders to merge by hand.

* **Which bags.** `select_deposit` takes the group id (`LIB/COLL/STAMP`), the deposit key
  `status` shows for deposits (`LIB-COLL-STAMP-<16 hex>`) or the id of any one part;
  `select_version` takes `LIB/COLL` and a version number (1 = the first deposit, by time
  stamp), a bag or group id of that collection, or nothing (the latest). A group whose parts
  are not all in the catalog (Bag-Count says 3, the catalog has 2) is refused before anything is
  written, naming the parts that are absent.
* **Layout.** Without --payload-only each bag is restored whole into DEST/<bag id>/ (its
  LIB/COLL/STAMP-N folders, as on a storage target). With --payload-only the payloads are merged
  into one source tree: a path in two bags with different digests (or a file where another bag
  has a folder) is refused before anything is written, never an overwrite; the same file twice
  is written once.
* **Same guarantees as one bag** (fixity.restore, which does the work per bag): every file is
  verified while streaming, everything is built in the temporary folder beside DEST and renamed
  into place in one step at the end; a rerun after a kill removes what was left, or, when the
  rename had happened, checks DEST again and records it (fixity.restore_rerun with one event
  per bag). A failure of any bag leaves nothing at DEST and is recorded for every bag.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from catalog.access import open_catalog
from catalog.catalog import Catalog
from catalog.schema import BagRecord
from strongroom import bagit_spec
from strongroom.bag_id import BagId
from strongroom.errors import PreservationError, UsageError
from fixity.restore import prepare, put_in_place
from fixity.restore_dest import TempFolder, check_dest_empty, check_dest_location, file_digests, make_dirs, \
    remove_tree, walk_tree
from fixity.restore_rerun import complete_earlier
from fixity.restore_result import RestoreError, RestoreResult

Progress = Callable[[int, int], None]

_GROUP = re.compile(r"^([^/\s]+)/([^/\s]+)/([0-9]{8}T[0-9]{6}Z)$")
_PART = re.compile(r"^([^/\s]+/[^/\s]+/[0-9]{8}T[0-9]{6}Z)-[0-9]+$")
_KEY = re.compile(r"^(.+)-([0-9]{8}T[0-9]{6}Z)-[0-9a-f]{16}$")


@dataclass(frozen=True)
class Selection:
    """The bags to restore into one DEST: one bag group, its parts in order."""

    group_id: str
    bags: Tuple[BagId, ...]
    label: str            # what the messages call it ("deposit X", "LIB/COLL version 2 (deposit X)")


@dataclass
class GroupResult:
    """What a restore of a bag group did: one RestoreResult per bag, in part order."""

    selection: Selection
    dest: str
    payload_only: bool
    parts: List[RestoreResult] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)
    events: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)      # "BAG/data/path" left out by --partial

    @property
    def files(self) -> int:
        return sum(p.files for p in self.parts)

    @property
    def bytes(self) -> int:
        return sum(p.bytes for p in self.parts)

    def to_dict(self) -> dict:
        return {"deposit": self.selection.group_id, "what": self.selection.label,
                "bags": [str(b) for b in self.selection.bags], "dest": self.dest, "payload_only": self.payload_only,
                "files": self.files, "bytes": self.bytes, "missing": self.missing,
                "events": self.events, "warnings": self.warnings, "parts": [p.to_dict() for p in self.parts]}


# --------------------------------------------------------------------------------------------
# Which bags


def select_deposit(catalog: Catalog, key: str) -> Selection:
    """The bag group named by its group id, a deposit key or one part's bag id (UsageError if unknown)."""
    text = (key or "").strip()
    group: Optional[str] = None
    if _GROUP.match(text):
        group = text
    elif _PART.match(text):
        group = _PART.match(text).group(1)
    elif _KEY.match(text):
        prefix, stamp = _KEY.match(text).groups()
        found = {r["group_id"] for r in catalog.bags().select(["library", "collection", "group_id"]).to_pylist()
                 if r["group_id"].endswith("/" + stamp) and f"{r['library']}-{r['collection']}" == prefix}
        group = found.pop() if len(found) == 1 else None
    if group is None:
        raise UsageError(f"{text!r}: no deposit of that name in the catalog; give the group id "
                         "(LIB/COLL/YYYYMMDDTHHMMSSZ, the bag id without its -N) or the deposit key `strongroom "
                         "status` shows", key="--deposit")
    return _group(catalog, group, f"deposit {group}")


def select_version(catalog: Catalog, collection: str, version: Optional[str]) -> Selection:
    """Version `version` (1-based number, a bag or group id; None: the latest) of LIB/COLL."""
    parts = (collection or "").strip().strip("/").split("/")
    if len(parts) != 2 or not all(parts):
        raise UsageError(f"{collection!r}: give LIBRARY/COLLECTION (e.g. PKU/rare-books)",
                         key="--collection")
    library, coll = parts
    groups = collection_versions(catalog, library, coll)
    if not groups:
        raise UsageError(f"{library}/{coll}: the catalog holds no bag of that collection "
                         "(`strongroom status` lists the collections)", key="--collection")
    listing = ", ".join(f"{n} = {g}" for n, g in enumerate(groups, start=1))
    if version is None:
        number = len(groups)
    elif re.fullmatch(r"[0-9]{1,9}", version.strip()):
        number = int(version)
        if not 1 <= number <= len(groups):
            raise UsageError(f"{version}: {library}/{coll} has {len(groups)} version(s): {listing}",
                             key="--version")
    else:
        wanted = version.strip()
        wanted = _PART.match(wanted).group(1) if _PART.match(wanted) else wanted
        if wanted not in groups:
            raise UsageError(f"{version!r} is not a version of {library}/{coll}; its versions: {listing}",
                             key="--version")
        number = groups.index(wanted) + 1
    group = groups[number - 1]
    return _group(catalog, group, f"{library}/{coll} version {number} of {len(groups)} (deposit {group})")


def collection_versions(catalog: Catalog, library: str, collection: str) -> List[str]:
    """The collection's bag groups (its versions), oldest first (group ids sort by their time stamp)."""
    rows = catalog.bags(library=library, collection=collection).column("group_id").to_pylist()
    return sorted(set(rows))


def _group(catalog: Catalog, group: str, label: str) -> Selection:
    ids = [r["bag_id"] for r in catalog.bags().select(["bag_id", "group_id"]).to_pylist() if r["group_id"] == group]
    records: List[BagRecord] = [catalog.bag(b) for b in ids]
    if not records:
        raise UsageError(f"no bag of deposit {group} in the catalog (`strongroom status` lists the bags held)",
                         key="--deposit")
    total = max(r.part_count for r in records)
    have = {r.part for r in records}
    absent = [n for n in range(1, total + 1) if n not in have]
    if absent:
        raise PreservationError(f"{label} has {total} parts (Bag-Count), but the catalog holds only "
                                f"{len(have)}; absent: " + ", ".join(f"part {n}" for n in absent) +
                                "; nothing was restored (restore the parts it has one by one with their bag ids)",
                                problems=[f"{group}-{n}: not in the catalog" for n in absent])
    ordered = sorted(records, key=lambda r: r.part)
    return Selection(group, tuple(BagId.parse(r.bag_id) for r in ordered), label)


# --------------------------------------------------------------------------------------------
# The restore


def restore_group(config, selection: Selection, dest, *, payload_only: bool = False,
                  from_target: Optional[str] = None, workers: int = 1, progress: Optional[Progress] = None,
                  catalog: Optional[Catalog] = None, partial: bool = False) -> GroupResult:
    """Restore every bag of `selection` into the new folder `dest` (see the module docstring).

    Errors as fixity.restore.restore_bag; a RestoreError names the bag concerned.
    """
    dest_path = check_dest_location(dest, config)
    temp = TempFolder(dest_path)
    temp.acquire()
    try:
        catalog = catalog or open_catalog(config)
        layout = [(b, _prefix(b, payload_only)) for b in selection.bags]
        if temp.earlier is not None:
            done = complete_earlier(config, catalog, selection.bags[0], dest_path, payload_only, temp,
                                    subject=selection.group_id, parts=layout)
            result = GroupResult(selection, str(dest_path), payload_only, [done], list(done.warnings),
                                 list(done.events), list(done.missing))
            return result
        check_dest_empty(dest_path)
        if payload_only:
            _check_merge(catalog, selection)
        return _Group(config, catalog, selection, dest_path, temp, layout, payload_only, from_target, workers,
                      progress, partial).run()
    finally:
        temp.release()


def _prefix(bag: BagId, payload_only: bool) -> str:
    """Where the bag goes inside DEST: its id as folders, or (merged payload) DEST itself."""
    return "" if payload_only else str(bag)


def _check_merge(catalog: Catalog, selection: Selection) -> None:
    """PreservationError when the payloads cannot be merged without overwriting: the same path with
    different digests in two bags, or a file in one where another has a folder."""
    seen: Dict[str, Tuple[str, Dict[str, str]]] = {}
    problems: List[str] = []
    for bag in selection.bags:
        for path, digests in catalog.file_digests(str(bag)).items():
            if path in seen:
                other, theirs = seen[path]
                common = [a for a in digests if a in theirs]
                if not common or any(digests[a].lower() != theirs[a].lower() for a in common):
                    problems.append(f"{path}: in {other} and in {bag} with different content")
                continue
            seen[path] = (str(bag), digests)
    for path, (bag, _) in seen.items():
        parent = path.rsplit("/", 1)[0]
        while "/" in parent:
            if parent in seen:
                problems.append(f"{parent}: a file in {seen[parent][0]}, a folder holding {path} in {bag}")
            parent = parent.rsplit("/", 1)[0]
    if problems:
        raise PreservationError(f"the payloads of {selection.label} cannot be merged into one tree without "
                                f"overwriting: {len(problems)} conflicting path(s); nothing was restored (restore "
                                "without --payload-only to get each bag in its own folder)", problems=sorted(problems))


class _Group:
    def __init__(self, config, catalog: Catalog, selection: Selection, dest: Path, temp: TempFolder,
                 layout: List[Tuple[BagId, str]], payload_only: bool, from_target: Optional[str], workers: int,
                 progress: Optional[Progress], partial: bool):
        self.config, self.catalog, self.selection = config, catalog, selection
        self.dest, self.temp, self.layout = dest, temp, layout
        self.payload_only, self.from_target, self.workers = payload_only, from_target, workers
        self.progress, self.partial = progress, partial
        self.result = GroupResult(selection, str(dest), payload_only)
        self.jobs: list = []
        self._offset = [0, 0]

    def run(self) -> GroupResult:
        done_events = []
        try:
            for index, (bag, prefix) in enumerate(self.layout, start=1):
                tmp = self.temp.path / (prefix if prefix else f"part-{index}")
                make_dirs(tmp)
                job = prepare(self.config, self.catalog, bag, self.dest, self.temp, payload_only=self.payload_only,
                              from_target=self.from_target, workers=self.workers, progress=self._progress,
                              partial=self.partial, tmp=tmp)
                self.jobs.append(job)
                done_events.append(job.build())
                self._offset = [self._offset[0] + job.result.files, self._offset[1] + job.result.bytes]
                self.result.parts.append(job.result)
            if self.payload_only:
                self._merge()
            self.temp.write_state(self._state(done_events))
            put_in_place(self.temp.path, self.dest, self.payload_only)
        except BaseException as exc:
            reason = f"the restore of {self.selection.label} failed: {exc or type(exc).__name__}"
            for job in self.jobs[:len(done_events)]:   # the bag that failed recorded its own failure
                job.abandon(reason)
            if isinstance(exc, RestoreError):
                raise RestoreError(f"{exc} (part of {self.selection.label}; nothing was restored)", path=str(self.dest),
                                   problems=exc.problems, result=exc.result) from None
            raise
        self.catalog.append_events(done_events)
        r = self.result
        for job, event in zip(self.jobs, done_events):
            job.result.events.append(event.event_id)
            r.events.extend(job.result.events)
            r.warnings.extend(f"{job.bag_id}: {w}" for w in job.result.warnings)
            r.missing.extend(f"{job.bag_id}/{m}" for m in job.result.missing)
        return r

    def _progress(self, files: int, nbytes: int) -> None:
        if self.progress is not None:
            self.progress(self._offset[0] + files, self._offset[1] + nbytes)

    def _merge(self) -> None:
        """Move every part's payload into one data/ (conflicts were refused before anything was written)."""
        merged = self.temp.path / bagit_spec.PAYLOAD_DIR
        merged.mkdir()
        for index in range(1, len(self.layout) + 1):
            part = self.temp.path / f"part-{index}"
            tree = walk_tree(part / bagit_spec.PAYLOAD_DIR)
            for rel in sorted(tree.dirs, key=lambda d: d.count("/")):
                make_dirs(merged / rel)
            for rel in sorted(tree.files):
                if os.path.lexists(merged / rel):
                    os.unlink(part / bagit_spec.PAYLOAD_DIR / rel)   # the same file in an earlier part
                    continue
                os.rename(part / bagit_spec.PAYLOAD_DIR / rel, merged / rel)
            remove_tree(part)

    def _state(self, done_events) -> dict:
        root = self.temp.path / bagit_spec.PAYLOAD_DIR if self.payload_only else self.temp.path
        tree = walk_tree(root)
        payload = set()
        for job, (bag, prefix) in zip(self.jobs, self.layout):
            for f in job.files:
                rel = f.path[len(bagit_spec.PAYLOAD_DIR) + 1:] if self.payload_only else f.path
                payload.add(f"{prefix}/{rel}" if prefix else rel)
        tags: Dict[str, List] = {}
        if not self.payload_only:
            for rel in sorted(set(tree.files) - payload):
                size, digests = file_digests(root / rel, ["sha256"])
                tags[rel] = [size, digests["sha256"]]
        missing = [f"{job.bag_id}/{m}" for job in self.jobs for m in job.result.missing]
        return {"bag": self.selection.group_id, "payload_only": self.payload_only, "dest": str(self.dest),
                "partial": self.partial, "missing": missing, "dirs": sorted(tree.dirs), "tags": tags,
                "events": [[e.bag_id, e.event_id, e.detail or "", e.outcome] for e in done_events],
                "result": {"files": self.result.files, "bytes": self.result.bytes}}


__all__ = ["Selection", "GroupResult", "select_deposit", "select_version", "collection_versions", "restore_group"]
