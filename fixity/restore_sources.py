"""Where a restore reads from: the replicas to use, in order, and one verified copy of one file.

Why a module of its own: choosing the sources (which replicas count, in which order) and
streaming one stored file while checking it are the parts of a restore that trust nothing the
replica says; they need no temporary folder and no record keeping (fixity.restore does those).

Which replicas: only those whose current catalog state is "verified" or "repaired" (an audit
repaired the copy and re-verified it: `USABLE_STATES`, the audit's GOOD_STATES); with
--partial also copies already found damaged or disputed (`PARTIAL_STATES`, after the others). In
this order: `from_target` first when given, then the bag's policy's replica order, then any
other verified replica in catalog order. A target that cannot be reached (its root is not
mounted, listing fails) is skipped with a warning and blamed for nothing; a reachable target
that holds nothing of the bag is recorded as "missing".

Each payload file is streamed once from a replica and hashed on the way (`copy_verified`); the
catalog's file list is checked for unsafe paths (`check_catalog_paths`) before anything is
created from it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from catalog.catalog import Catalog
from catalog.schema import BagRecord, FileRecord
from catalog.tombstones import refuse_withdrawn
from strongroom import bagit_spec
from strongroom.bag_id import BagId
from strongroom.checksums import SUPPORTED
from strongroom.durable import unlink_quietly, write_all
from strongroom.errors import ConfigError, InputError, PreservationError, StrongroomError, UsageError
from storage_adapters.base import CHUNK, HashingReader, NotFound, StorageAdapter, StorageError, check_relpath

#: Catalog replica states a restore may read from: a copy an audit repaired and re-verified is
#: as good as one that never needed repair (the same as fixity.repair.GOOD_STATES).
USABLE_STATES = ("verified", "repaired")
#: What `restore --partial` also reads: copies found damaged (by an earlier restore or an audit) or
#: disputed still hold good files, and --partial writes only files whose bytes verify against the
#: bag's manifest digests, so such a copy can give up its good files. Usable copies come first.
PARTIAL_STATES = USABLE_STATES + ("damaged", "disputed")


def replica_order(config, catalog: Catalog, bag_id: str, policy_name: Optional[str],
                  from_target: Optional[str] = None, allowed: Sequence[str] = USABLE_STATES) -> Tuple[List, List[str]]:
    """(StorageTargets to read from, best first; warnings about verified replicas left out).

    Only replicas whose current state is in `allowed` count: USABLE_STATES (verified, or repaired
    and re-verified), or PARTIAL_STATES for --partial, those in USABLE_STATES first.
    PreservationError when none is; UsageError when `from_target` is not one of them.
    """
    states = {r["target"]: r for r in catalog.replicas(bag_id).to_pylist()}
    usable = [t for t, r in states.items() if r["state"] in allowed]
    if from_target is not None:
        config.target(from_target)  # ConfigError naming the known targets
        if from_target not in usable:
            have = states.get(from_target)
            why = f"its copy is {have['state']!r}" if have else "the catalog knows no copy of the bag there"
            raise UsageError(f"--from {from_target}: {why}, not verified (or repaired); usable copies of "
                             f"{bag_id}: {', '.join(usable) or 'none'}", key="--from")
    if not usable:
        lines = [f"{t}: {r['state']}" + (f" ({r['detail']})" if r.get("detail") else "") for t, r in states.items()]
        raise PreservationError(f"no verified (or repaired) replica of {bag_id} to restore from "
                                f"(`strongroom audit --bag {bag_id}` checks and repairs the copies)",
                                problems=lines or ["the catalog records no replica of this bag"])
    order: List[str] = []
    if from_target is not None:
        order.append(from_target)
    policy = getattr(config, "policies", {}).get(policy_name) if policy_name else None
    names = list(policy.replicas if policy else ()) + sorted(states)
    for good in (True, False):      # the copies no one found bad first
        for name in names:
            if name in usable and name not in order and (states[name]["state"] in USABLE_STATES) == good:
                order.append(name)
    targets, warnings = [], []
    for name in order:
        try:
            targets.append(config.target(name))
        except ConfigError:
            warnings.append(f"{name}: holds a verified copy but is no longer in the config; not used")
    if not targets:
        raise PreservationError(f"no verified (or repaired) replica of {bag_id} is on a storage target of this config",
                                path=str(getattr(config, "path", "")), problems=warnings)
    return targets, warnings


def copy_verified(adapter: StorageAdapter, bag_id: BagId, relpath: str, out: Path, size: Optional[int],
                  digests: Mapping[str, str]) -> Optional[str]:
    """Stream one stored file into `out` (created, never overwritten), hashing as it goes.

    Returns None when the copy matches `size` and every digest in `digests` (no check when they
    are None/empty), else what was wrong, with `out` removed. Errors writing `out` are not the
    replica's fault and raise InputError.
    """
    algorithms = [a for a in digests if a in SUPPORTED]
    try:
        stream = adapter.open_file(bag_id, relpath)
    except NotFound:
        return "missing"
    except StorageError as exc:
        return f"cannot be read ({exc.message})"
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
                     | getattr(os, "O_CLOEXEC", 0), 0o666)
    except OSError as exc:
        stream.close()
        raise InputError(f"cannot create a restored file ({exc.strerror or exc})", path=str(out)) from None
    problem: Optional[str] = None
    try:
        with stream:
            reader = HashingReader(stream, algorithms)
            buf = bytearray(CHUNK)
            view = memoryview(buf)
            while True:
                try:
                    n = reader.readinto(buf)
                except (OSError, StorageError) as exc:
                    problem = f"cannot be read ({getattr(exc, 'message', None) or exc.strerror or exc})"
                    break
                if not n:
                    break
                write_all(fd, view[:n])
                if size is not None and reader.hasher.size > size:
                    problem = f"longer than expected (more than the {size} bytes the catalog records)"
                    break
            if problem is None:
                os.fsync(fd)
    except OSError as exc:
        os.close(fd)
        unlink_quietly(out)
        raise InputError(f"cannot write a restored file ({exc.strerror or exc})", path=str(out)) from None
    except BaseException:
        os.close(fd)
        unlink_quietly(out)
        raise
    os.close(fd)
    if problem is None and size is not None and reader.hasher.size != size:
        problem = f"size differs ({reader.hasher.size} bytes read, {size} expected: truncated)"
    if problem is None and algorithms:
        found = reader.hasher.hexdigests()
        wrong = [f"{a} expected {digests[a].lower()}, found {found[a]}" for a in algorithms
                 if found[a] != digests[a].lower()]
        if wrong:
            problem = "checksum mismatch (" + "; ".join(wrong) + ")"
    if problem is not None:
        unlink_quietly(out)
    return problem


class BagSources:
    """The replicas to read, best first, of the bag being restored and of the earlier bags its
    fetch.txt names (a version bag, see fixity.restore_fetch); one adapter per target, shared."""

    def __init__(self, config, catalog: Catalog, bag_id: BagId, adapters: List[StorageAdapter],
                 from_target: Optional[str] = None, allowed: Sequence[str] = USABLE_STATES, only: bool = False):
        self.config = config
        self.allowed = tuple(allowed)
        self.catalog = catalog
        self.from_target = from_target
        #: read from `from_target` alone, also for the earlier bags a fetch.txt names (a restore drill)
        self.only = only
        self._by_name = {a.name: a for a in adapters}
        self._order: Dict[str, Tuple[List[StorageAdapter], List[str]]] = {str(bag_id): (list(adapters), [])}

    def for_bag(self, bag_id: BagId) -> Tuple[List[StorageAdapter], List[str]]:
        """(adapters of the bag's verified replicas, best first; why there are none, when so)."""
        key = str(bag_id)
        if key not in self._order:
            record = self.catalog.bag(key)
            try:
                if record is None:
                    raise PreservationError(f"{key} is not in the catalog")
                usable = {r["target"] for r in self.catalog.replicas(key).to_pylist() if r["state"] in self.allowed}
                first = self.from_target if self.from_target in usable else None
                if self.only and first is None:
                    raise PreservationError(f"{key} has no verified copy on {self.from_target}")
                targets, notes = replica_order(self.config, self.catalog, key, record.policy, first, self.allowed)
                targets = targets[:1] if self.only else targets
                adapters = []
                for t in targets:
                    if t.name not in self._by_name:
                        self._by_name[t.name] = open_adapters(self.config, [t])[0]
                    adapters.append(self._by_name[t.name])
                self._order[key] = (adapters, notes)
            except PreservationError as exc:
                self._order[key] = ([], [str(exc)])
        return self._order[key]


def open_adapters(config, targets: Sequence) -> List[StorageAdapter]:
    from storage_adapters.registry import open_target

    return [open_target(t) for t in targets]


def bag_files(catalog: Catalog, bag_id: BagId) -> Tuple[BagRecord, List[FileRecord]]:
    """(the catalog's bag record, its file records with their paths checked): UsageError for an unknown bag."""
    refuse_withdrawn(catalog, str(bag_id))          # K4: gone on purpose, not "missing"
    record = catalog.bag(str(bag_id))
    if record is None:
        raise UsageError(unknown_bag_message(catalog, bag_id))
    files = catalog.file_records(str(bag_id))
    check_catalog_paths(files, str(bag_id))
    return record, files


def check_catalog_paths(files: Iterable[FileRecord], bag_id: str) -> None:
    bad = []
    for f in files:
        try:
            check_relpath(f.path)
            if not bagit_spec.is_payload_path(f.path):
                raise ValueError(f"{f.path!r} is not under data/")
        except ValueError as exc:
            bad.append(str(exc))
    if bad:
        raise PreservationError(f"the catalog's file list of {bag_id} holds unsafe paths; nothing was restored",
                                problems=bad)


def unknown_bag_message(catalog: Catalog, bag_id: BagId) -> str:
    message = (f"no bag {bag_id} in the catalog ({catalog.location}). `strongroom status` lists the bags "
               f"held; `strongroom status --library {bag_id.library} --collection {bag_id.collection}` "
               "those of one collection")
    try:
        same = catalog.bags(library=bag_id.library, collection=bag_id.collection).column("bag_id").to_pylist()
    except StrongroomError:
        same = []
    if same:
        shown = ", ".join(same[:10]) + (f" and {len(same) - 10} more" if len(same) > 10 else "")
        message += f". Bags of {bag_id.library}/{bag_id.collection}: {shown}"
    return message


__all__ = ["USABLE_STATES", "PARTIAL_STATES", "BagSources", "replica_order", "copy_verified", "open_adapters", "bag_files",
           "check_catalog_paths",
           "unknown_bag_message"]
