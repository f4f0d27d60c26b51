"""Restore: write a preserved bag (or only its payload, the original source tree) back to a folder.

Why it works the way it does:

* **The catalog is the authority for payload bytes.** Every payload file is streamed once from
  a replica into the destination and hashed on the way with *all* digests the catalog holds for
  it (`MultiHasher`), so memory stays flat and no copy is read twice. A copy that is missing,
  unreadable, of the wrong size or with a wrong digest is not used: that one file is taken from
  the next verified replica instead, and the finding is recorded (a "fixity check" failure for
  the bad copy, a "recovery" success naming where the good copy came from) and the replica's
  state becomes "damaged", so `status` shows it and the next audit repairs it. Restore itself
  never repairs a replica: repair is the audit's job.
* **Tag files come from a replica too**, and are checked as a set: the restored bag must pass
  BagIt validation (`completeness_only`: structure, completeness, Payload-Oxum, tag manifest
  digests; payload digests were already checked while streaming) and its payload manifests must
  say exactly what the catalog says. If one replica's tag files fail, the next replica's are
  tried; replicas whose tag files failed are marked damaged only once another replica's tag
  files passed (if none passes, the catalog itself may be the odd one out, so nobody is blamed
  and the restore fails).
* **The destination is all or nothing.** Everything is written into a hidden sibling folder
  (`.DEST.restore-strongroom`) and renamed into place at the end, so DEST is either absent (or
  the empty folder it was) or complete. Any failure removes the temporary folder. Its name is
  the same for every restore into DEST, and a lock file beside it
  (`.DEST.restore-strongroom.lock`, held with flock while the restore runs and naming the folder)
  proves it is Strongroom's: a restore killed with -9 leaves both, and the rerun, finding the
  lock free, removes the stale folder before it starts (and both files when it ends). A lock
  held by a live restore makes the second one refuse (exit 2); a folder of that name that no
  lock file of ours names is never touched (exit 2, remove it yourself).
* **Never inside the archive.** DEST may not be inside, equal to or contain the catalog folder,
  the staging folder (with its `.state/`), the policies folder or any filesystem target's root,
  however it is spelled (relative, `..`, trailing '/') or reached (symbolic links are resolved,
  and folders are also compared by device and inode, which sees through bind mounts). That is
  checked before anything is written, even before the catalog is opened.
* **Untrusted paths and fields.** Paths from the replica (tag file names, empty-directories.txt)
  pass `storage_adapters.base.check_relpath` before anything is created; payload paths come from
  the catalog and are checked the same way. A replica's tag files are accepted only when
  `catalog.bag_records.records_from_bag` - the strict reader that registration and `catalog
  rebuild` use - reads them without error and they describe what the catalog holds; a hostile
  field (a non-ASCII digit, a time beyond int64 nanoseconds, a 200 KB CSV field) makes that
  replica's tag set refused and the next replica's tried.
* **Killed after DEST is in place, before it is recorded**, the same command rerun checks DEST
  again and records it once: fixity.restore_rerun.

Which replicas are read, in which order, and how one file is copied and checked:
fixity.restore_sources. The records returned and raised: fixity.restore_result.

Event types (LoC PREMIS eventType vocabulary, see ingest/premis.py): "fixity check" (failure,
per bad copy of a file, or per replica whose tag files failed), "recovery" (success, per file
taken from a fallback replica), "dissemination" (per restore: success, or failure when no good
copy exists).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Tuple

from catalog.bag_records import folder_reader, records_from_bag
from catalog.access import open_catalog
from catalog.catalog import Catalog
from catalog.schema import EventRecord, FileRecord
from ingest import metadata
from strongroom import bagit_spec
from strongroom.bag_id import BagId
from strongroom.errors import InputError, PreservationError, UsageError
from fixity.restore_dest import (TEMP_MARK, TempFolder, archive_folders, check_dest, check_dest_location,
                                 check_dest_empty, file_digests, make_dirs, make_empty_dirs, put_in_place, remove_tree,
                                 walk_tree)
from fixity.restore_result import (AGENT, DETAIL_MAX as _DETAIL_MAX, CopyProblem, Fallback, Missing, RestoreError,
                                   RestoreResult)
from fixity.restore_rerun import complete_earlier
from fixity.restore_fetch import FetchResolver, read_tag_bytes
from fixity.restore_sources import PARTIAL_STATES, USABLE_STATES, BagSources, bag_files, copy_verified, open_adapters, replica_order
from storage_adapters.base import StorageAdapter, StorageError, check_relpath

log = logging.getLogger(__name__)

EMPTY_DIRS_FILE = metadata.EMPTY_DIRS_FILE
ATTRIBUTES_FILE = metadata.ATTRIBUTES_FILE

Progress = Callable[[int, int], None]  # (payload files done, payload bytes done)
#: Makes the event recorded for the restore itself from its result and failure reason (None: success).
RecordAs = Callable[[RestoreResult, Optional[str]], EventRecord]


# --------------------------------------------------------------------------------------------
# Entry point


def restore_bag(config, bag: str, dest, *, payload_only: bool = False, from_target: Optional[str] = None,
                workers: int = 1, progress: Optional[Progress] = None,
                catalog: Optional[Catalog] = None, partial: bool = False) -> RestoreResult:
    """Restore bag `bag` (a bag id) into the new folder `dest`; see the module docstring.

    Raises UsageError (exit 2) for a malformed or unknown bag id, a DEST inside the archive or
    not empty, another restore into DEST still running, or a `from_target` that holds no
    usable copy; ConfigError for an unknown target name; PreservationError (exit 1) when there
    is no usable replica, and RestoreError (exit 1) when some file has no good copy anywhere.
    With `partial`, every file that has a good copy is written and the others are listed in
    `RestoreResult.missing` (exit 1); tag files must be good; damaged copies are read too.
    """
    try:
        bag_id = BagId.parse(bag)
    except UsageError as exc:
        raise UsageError(f"{exc}; `strongroom status` lists the bags held") from None
    dest_path = check_dest_location(dest, config)    # nothing is written before this
    temp = TempFolder(dest_path)
    temp.acquire()                                   # removes a killed restore's leftovers
    try:
        if temp.earlier is not None:                 # DEST in place, the restore never recorded
            return complete_earlier(config, catalog, bag_id, dest_path, payload_only, temp)
        check_dest_empty(dest_path)
        catalog = catalog or open_catalog(config)
        job = prepare(config, catalog, bag_id, dest_path, temp, payload_only=payload_only, from_target=from_target,
                      workers=workers, progress=progress, partial=partial)
        return job.run()
    finally:
        temp.release()


def prepare(config, catalog: Catalog, bag_id: BagId, dest_path: Path, temp: Optional[TempFolder], *,
            payload_only: bool, from_target: Optional[str], workers: int, progress: Optional[Progress], partial: bool,
            tmp: Optional[Path] = None, only_from: bool = False,
            record_as: Optional[RecordAs] = None) -> "_Restore":
    """The restore of one bag, its sources chosen, ready to build into `tmp` (default: temp's folder).

    Shared by `restore_bag`, fixity.restore_group and the drill (fixity.drill: `only_from` reads
    from_target alone, `record_as(result, failure or None)` makes its event, not a dissemination).
    """
    record, files = bag_files(catalog, bag_id)
    result = RestoreResult(bag_id=str(bag_id), dest=str(dest_path), payload_only=payload_only, partial=partial)
    allowed = PARTIAL_STATES if partial else USABLE_STATES
    targets, skipped = replica_order(config, catalog, str(bag_id), record.policy, from_target, allowed)
    targets = targets[:1] if only_from else targets
    result.warnings.extend(skipped)
    adapters = open_adapters(config, targets)
    # files read at once: at least what the first source serves best (an S3 target's concurrency:
    # each read waits on the network; a folder is read one file at a time)
    workers = max(int(workers), adapters[0].parallel_reads if adapters else 1)
    sources = BagSources(config, catalog, bag_id, adapters, from_target, allowed, only=only_from)
    return _Restore(catalog, bag_id, files, sources, dest_path, payload_only, result, workers, progress, temp,
                    partial=partial, tmp=tmp, record_as=record_as)


# --------------------------------------------------------------------------------------------
# The work


class _Restore:
    def __init__(self, catalog: Catalog, bag_id: BagId, files: List[FileRecord], sources: BagSources,
                 dest: Path, payload_only: bool, result: RestoreResult, workers: int, progress: Optional[Progress],
                 temp: Optional[TempFolder], *, partial: bool = False, tmp: Optional[Path] = None,
                 record_as: Optional[RecordAs] = None):
        self.catalog = catalog
        self.record_as = record_as
        self.bag_id = bag_id
        self.files = files
        self.sources = sources
        self.adapters = sources.for_bag(bag_id)[0]
        self.partial = partial
        self.fetch = FetchResolver(catalog, self._read_fetch)
        self.dest = dest
        self.payload_only = payload_only
        self.result = result
        self.workers = max(1, int(workers))
        self.progress = progress
        self.temp = temp
        self.tmp = tmp or temp.path   # created (empty) and removed by TempFolder (or by fixity.restore_group)
        self._findings_recorded = False
        self.events: List[EventRecord] = []
        self.damaged: Dict[str, List[str]] = {}     # target -> problems (-> state "damaged")
        self.missing: Dict[str, str] = {}           # target -> detail (-> state "missing")
        #: earlier bag (read for a version bag's fetch.txt) -> target -> problems (-> its replica "damaged")
        self.damaged_earlier: Dict[str, Dict[str, List[str]]] = {}
        self._reachable: Dict[Tuple[str, str], bool] = {}
        self._lock = threading.Lock()         # results shared by worker threads
        self._probe_lock = threading.Lock()   # one reachability probe per target
        self._done = [0, 0]
        self._bag_version = bagit_spec.BAGIT_VERSION  # as bagit.txt declares, once validated
        self._tag_mtimes: Dict[str, Optional[int]] = {}   # from the accepted file-attributes.csv
        self._have_attributes = False

    # ------------------------------------------------------------------ orchestration

    def run(self) -> RestoreResult:
        done = self.build()
        try:
            self.temp.write_state(self._state(done))
            self._put_in_place()
        except BaseException as exc:
            self.abandon(str(exc) or type(exc).__name__)
            raise
        self.catalog.append_events([done])   # a kill before this: the rerun re-verifies DEST, then records it
        self.result.events.append(done.event_id)
        return self.result

    def build(self) -> EventRecord:
        """Write the bag (payload and tag files, verified) into the temporary folder and record the
        findings; returns the dissemination event to record once it is in place. On failure the
        folder is removed and the failure recorded (`abandon`)."""
        try:
            hopeless = self._restore_payload()
            if hopeless and not self.partial:
                self._fail(f"{len(hopeless)} file(s) of {self.bag_id} have no good copy on any verified replica; "
                           "nothing was restored", [str(h) for h in hopeless])
            self.result.missing_detail = [str(h) for h in hopeless]
            self.result.missing = [line.path for line in hopeless]
            tag_failures = self._restore_tags()
            if self.result.tag_source is None:
                self._fail(f"the tag files of {self.bag_id} (bag-info, manifests, metadata) are damaged or "
                           "disagree with the catalog on every verified replica; nothing was restored",
                           tag_failures)
            self._finish_tree()
            self._record_findings()        # real whatever happens next; never recorded twice by this run
            return self._done_event()
        except BaseException as exc:
            self.abandon(str(exc) or type(exc).__name__)
            raise

    def abandon(self, reason: str) -> None:
        """Remove what was built and record the failed restore (with the findings, if not yet recorded)."""
        remove_tree(self.tmp)
        try:
            self._record_failure(reason)
        except Exception:  # never hide the restore's own failure behind a bookkeeping one
            log.exception("restore of %s: the findings could not be recorded in the catalog", self.bag_id)

    def _state(self, done: EventRecord) -> dict:
        """The lock file's state line: what a rerun needs to know DEST is this restore's and to check it."""
        r = self.result
        root = self.tmp / bagit_spec.PAYLOAD_DIR if self.payload_only else self.tmp
        tree = walk_tree(root)
        tags: Dict[str, List] = {}
        if not self.payload_only:
            payload = {f.path for f in self.files}
            for rel in sorted(set(tree.files) - payload):
                size, digests = file_digests(self.tmp / rel, ["sha256"])
                tags[rel] = [size, digests["sha256"]]
        return {"bag": str(self.bag_id), "payload_only": self.payload_only, "dest": str(self.dest),
                "partial": self.partial, "missing": list(r.missing),
                "event_id": done.event_id, "detail": done.detail or "", "outcome": done.outcome,
                "dirs": sorted(tree.dirs), "tags": tags,
                "result": {"files": r.files, "bytes": r.bytes, "tag_files": r.tag_files, "empty_dirs": r.empty_dirs,
                           "sources": r.sources, "tag_source": r.tag_source}}

    def _fail(self, message: str, problems: List[str]) -> None:
        raise RestoreError(message, path=str(self.dest), problems=problems, result=self.result)

    # ------------------------------------------------------------------ replicas

    def _usable(self, adapter: StorageAdapter, bag: Optional[BagId] = None) -> bool:
        """Reachable and holding the bag (checked once per target and bag, lazily: fallbacks may never be
        needed). `bag`: an earlier bag a version bag's fetch.txt names (default: the bag restored)."""
        bag = bag or self.bag_id
        with self._probe_lock:
            known = self._reachable.get((str(bag), adapter.name))
            if known is None:
                known = self._reachable[(str(bag), adapter.name)] = self._probe(adapter, bag)
            return known

    def _probe(self, adapter: StorageAdapter, bag: BagId) -> bool:
        try:
            ok = adapter.has_bag(bag)
            if not ok and bag == self.bag_id:
                detail = f"nothing of the bag is stored at {adapter.location(bag)}"
                with self._lock:
                    self.missing[adapter.name] = detail
                    self.events.append(self._event("fixity check", "failure", "replica", adapter.name, None,
                                                   f"restore: {detail}"))
            elif not ok:
                with self._lock:
                    self.result.warnings.append(f"{adapter.name}: holds nothing of {bag} (named by fetch.txt); "
                                                "not used for it (`strongroom audit --bag` checks that bag)")
        except StorageError as exc:
            ok = False
            with self._lock:
                self.result.warnings.append(f"{adapter.name}: cannot be reached ({exc}); not used")
        return ok

    def _unusable_notes(self, bag: Optional[BagId] = None) -> List[str]:
        bag = bag or self.bag_id
        adapters = self.sources.for_bag(bag)[0]
        return [f"{a.name}: " + (f"missing ({self.missing[a.name]})" if a.name in self.missing and bag == self.bag_id
                                 else "unreachable or without the bag")
                for a in adapters if self._reachable.get((str(bag), a.name)) is False]

    def _read_fetch(self, bag: BagId) -> Optional[bytes]:
        """The bag's fetch.txt from its first reachable replica holding the bag (None: it has none).

        Read before the tag files are checked: it only says where to read from, and what is read
        is checked against the catalog's digests of the bag being restored all the same."""
        for adapter in self.sources.for_bag(bag)[0]:
            if not self._usable(adapter, bag):
                continue
            try:
                return read_tag_bytes(adapter, bag, bagit_spec.FETCH_TXT)
            except (OSError, StorageError) as exc:
                self.result.warnings.append(f"{adapter.name}: {bagit_spec.FETCH_TXT} of {bag} cannot be read ({exc})")
        return None

    # ------------------------------------------------------------------ payload

    def _restore_payload(self) -> List[str]:
        """Stream every payload file; returns one line per file that has no good copy."""
        (self.tmp / bagit_spec.PAYLOAD_DIR).mkdir()
        if self.workers > 1 and len(self.files) > 1:
            with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="restore") as pool:
                outcomes = list(pool.map(self._restore_file, self.files))
        else:
            outcomes = [self._restore_file(f) for f in self.files]
        hopeless: List[Missing] = []
        for rec, (source, failed) in zip(self.files, outcomes):
            for p in failed:
                if p.bag is None:
                    self.damaged.setdefault(p.target, []).append(f"{p.path}: {p.problem}")
                elif not p.blameless:
                    self.damaged_earlier.setdefault(p.bag, {}).setdefault(p.target, []).append(
                        f"{p.path}: {p.problem}")
                if not p.blameless:
                    self.events.append(self._event("fixity check", "failure", "file", p.target, p.path,
                                                   f"restore: copy refused: {p.problem}", bag=p.bag))
            if source is None:
                tried = "; ".join([f"{p.target}: {p.problem}" for p in failed] + self._unusable_notes()) \
                    or "no verified replica holds it"
                hopeless.append(Missing(rec.path, tried))
                continue
            s = self.result.sources.setdefault(source, {"files": 0, "bytes": 0})
            s["files"] += 1
            s["bytes"] += rec.size
            self.result.files += 1
            self.result.bytes += rec.size
            if failed:
                self.result.fallbacks.append(Fallback(rec.path, source, tuple(failed)))
                refused = ", ".join(sorted({p.target for p in failed}))
                self.events.append(self._event("recovery", "success", "file", source, rec.path,
                                               f"restore: the copy on {refused} was refused; this good copy "
                                               f"(size and {', '.join(sorted(rec.digests))} match the catalog) "
                                               f"was used instead"))
        return hopeless

    def _restore_file(self, rec: FileRecord) -> Tuple[Optional[str], List[CopyProblem]]:
        """(target the good copy came from or None, the copies refused on the way)."""
        out = self.tmp / rec.path
        try:
            make_dirs(out.parent)
        except OSError as exc:
            raise InputError(f"cannot create a folder of the restored bag ({exc.strerror or exc})",
                             path=str(out.parent)) from None
        failed: List[CopyProblem] = []
        bag, path, earlier = self.bag_id, rec.path, None
        if self.fetch.entries(self.bag_id):            # a version bag: unchanged files are in an earlier bag
            origin, why = self.fetch.origin(self.bag_id, rec.path, rec.digests)
            if origin is None:
                return None, [CopyProblem("fetch.txt", rec.path, why, bag=None, blameless=True)]
            bag, path = origin.bag_id, origin.path
            earlier = str(bag) if bag != self.bag_id else None
        adapters, notes = self.sources.for_bag(bag)
        if earlier is not None and not adapters:
            return None, [CopyProblem("fetch.txt", rec.path, f"held in {bag}: {'; '.join(notes)}", blameless=True)]
        for adapter in adapters:
            if not self._usable(adapter, bag):
                continue  # unreachable, or the whole bag is absent there: said once, not per file
            problem = copy_verified(adapter, bag, path, out, rec.size, rec.digests)
            if problem is not None and earlier is not None:
                problem = f"{problem} (its copy of {earlier}/{path}, named by fetch.txt)"
            if problem is None:
                with self._lock:
                    self._done[0] += 1
                    self._done[1] += rec.size
                    if self.progress is not None:
                        self.progress(self._done[0], self._done[1])
                if earlier is not None:
                    with self._lock:
                        self.result.fetched += 1
                return adapter.name, failed
            failed.append(CopyProblem(adapter.name, rec.path, problem, bag=earlier))
        if earlier is not None and not failed:
            failed.append(CopyProblem("fetch.txt", rec.path, f"held in {bag}: "
                                      + ("; ".join(self._unusable_notes(bag)) or "no reachable replica holds it"),
                                      blameless=True))
        return None, failed

    # ------------------------------------------------------------------ tag files

    def _restore_tags(self) -> List[str]:
        """Tag files from the first replica whose set makes a valid bag agreeing with the catalog.

        Returns the problems of every replica tried when none did.
        """
        tried: List[Tuple[str, List[str]]] = []
        expected = {f.path: f.digests for f in self.files}
        for adapter in self.adapters:
            if not self._usable(adapter):
                continue
            problems, count = self._fetch_tags(adapter)
            if not problems:
                problems = self._check_bag(expected, adapter)
            if not problems:
                self.result.tag_source = adapter.name
                self.result.tag_files = count
                for name, found in tried:  # blamed only now that a good set shows the catalog agrees
                    self.damaged.setdefault(name, []).extend(found)
                    self.events.append(self._event("fixity check", "failure", "replica", name, None,
                                                   "restore: tag files refused: " + "; ".join(found)))
                return []
            tried.append((adapter.name, problems))
            self._remove_tags()
        return [f"{name}: {p}" for name, found in tried for p in found] or \
            ["no reachable verified replica holds the bag's tag files"]

    def _fetch_tags(self, adapter: StorageAdapter) -> Tuple[List[str], int]:
        problems: List[str] = []
        try:
            listed = [p for p in adapter.list_bag_files(self.bag_id) if not p.startswith(bagit_spec.PAYLOAD_DIR + "/")]
        except StorageError as exc:
            return [f"cannot list the bag ({exc.message})"], 0
        if bagit_spec.BAGIT_TXT not in listed:
            problems.append(f"{bagit_spec.BAGIT_TXT}: missing")
        count = 0
        for relpath in listed:
            try:
                check_relpath(relpath)
                if relpath == bagit_spec.PAYLOAD_DIR:
                    raise ValueError(f"{relpath!r}: a file where the payload folder belongs")
            except ValueError as exc:
                problems.append(f"refused path: {exc}")
                continue
            out = self.tmp / relpath
            try:
                make_dirs(out.parent)
            except OSError as exc:
                problems.append(f"{relpath}: cannot be placed ({exc.strerror or exc})")
                continue
            problem = copy_verified(adapter, self.bag_id, relpath, out, None, {})
            if problem:
                problems.append(f"{relpath}: {problem}")
            else:
                count += 1
        return problems, count

    def _check_bag(self, expected: Mapping[str, Mapping[str, str]], adapter: StorageAdapter) -> List[str]:
        """Problems of the tag files now in the temporary folder (empty: they are accepted).

        Valid BagIt (completeness only: payload digests were checked while streaming), readable
        by the strict reader registration and rebuild use (`records_from_bag`: every field of
        bag-info, the manifests and the metadata CSVs), and agreeing with the catalog.
        """
        from ingest.validate import validate_bag

        report = validate_bag(self.tmp, completeness_only=True)
        left_out = set(self.result.missing)   # --partial: those files are absent on purpose
        problems = [str(p) for p in report.problems
                    if not (left_out and (p.path in left_out or "Payload-Oxum" in p.message))]
        self._bag_version = report.version or bagit_spec.BAGIT_VERSION
        if problems:
            return problems
        read = folder_reader(self.tmp)
        try:
            _, files = records_from_bag(read, self.bag_id, f"{adapter.name}: {adapter.location(self.bag_id)}")
            raw = read(EMPTY_DIRS_FILE)
            if raw is not None:
                metadata.decode_tag_text(raw, EMPTY_DIRS_FILE)
        except PreservationError as exc:
            return [str(exc)] + [str(p) for p in exc.problems]
        sizes = {f.path: f.size for f in self.files}
        for f in files:
            if f.path in sizes and f.size != sizes[f.path]:
                problems.append(f"{f.path}: the bag's metadata says {f.size} bytes, the catalog {sizes[f.path]}")
        manifests = {f.path: f.digests for f in files}
        for path in sorted(set(manifests) | set(expected)):
            have, want = manifests.get(path), dict(expected.get(path) or {})
            if have is None:
                problems.append(f"{path}: in the catalog but not in the bag's payload manifests")
            elif not want:
                problems.append(f"{path}: in the bag's payload manifests but not in the catalog")
            elif {a: d.lower() for a, d in have.items()} != {a: d.lower() for a, d in want.items()}:
                problems.append(f"{path}: the payload manifests say {_digests_text(have)}, "
                                f"the catalog {_digests_text(want)}")
        if not problems:
            self._tag_mtimes = {f.path: f.mtime_ns for f in files}
            self._have_attributes = read(ATTRIBUTES_FILE) is not None
        return problems

    def _remove_tags(self) -> None:
        for entry in os.scandir(self.tmp):
            if entry.name == bagit_spec.PAYLOAD_DIR and entry.is_dir(follow_symlinks=False):
                continue
            if entry.is_dir(follow_symlinks=False):
                remove_tree(entry.path)
            else:
                os.unlink(entry.path)

    # ------------------------------------------------------------------ finishing

    def _finish_tree(self) -> None:
        """Modification times from metadata/file-attributes.csv; empty folders for the payload tree."""
        if not self._have_attributes:
            self.result.warnings.append(f"{ATTRIBUTES_FILE} is absent; modification times from the catalog")
        left_out = set(self.result.missing)   # --partial did not write them: no time to set
        for rec in (f for f in self.files if f.path not in left_out):
            ns = self._tag_mtimes.get(rec.path) if self._have_attributes else None
            if ns is None:
                ns = rec.mtime_ns
            if ns is None:
                self.result.warnings.append(f"{rec.path}: no modification time recorded; left as restored")
                continue
            try:
                os.utime(self.tmp / rec.path, ns=(ns, ns), follow_symlinks=False)
            except (OSError, OverflowError, ValueError) as exc:   # a time this file system cannot hold
                self.result.warnings.append(f"{rec.path}: modification time {ns} ns could not be set ({exc}); "
                                            "left as restored")
        if self.payload_only:
            self.result.empty_dirs = make_empty_dirs(self.tmp, self._bag_version, self.result.warnings)

    def _put_in_place(self) -> None:
        put_in_place(self.tmp, self.dest, self.payload_only)

    # ------------------------------------------------------------------ the record

    def _event(self, type_: str, outcome: str, object_type: str, target: Optional[str], path: Optional[str],
               detail: str, bag: Optional[str] = None) -> EventRecord:
        return EventRecord(type=type_, outcome=outcome, detail=detail[:_DETAIL_MAX], agent=AGENT,
                           object_type=object_type, bag_id=bag or str(self.bag_id), target=target, path=path)

    def _done_event(self) -> EventRecord:
        """The dissemination success event, made (with its id) before DEST is put in place."""
        r = self.result
        if self.record_as is not None:
            return self.record_as(r, None)
        srcs = ", ".join(f"{t} ({s['files']} files)" for t, s in r.sources.items())
        what = "payload (source tree)" if self.payload_only else "whole bag"
        detail = (f"restored {what} to {r.dest}: {r.files} files, {r.bytes} bytes, verified against the "
                  f"catalog while streaming; payload from {srcs or 'no file'}; tag files from {r.tag_source}")
        if r.fallbacks:
            detail += f"; {len(r.fallbacks)} file(s) taken from a fallback replica"
        if r.fetched:
            detail += f"; {r.fetched} unchanged file(s) read from the earlier bag(s) named by fetch.txt"
        if r.missing:
            detail = (f"partial restore: {r.files} of {len(self.files)} files written, {len(r.missing)} left out "
                      f"(no good copy on any verified replica: {', '.join(r.missing[:20])}"
                      f"{' ...' if len(r.missing) > 20 else ''}); " + detail)
        return self._event("dissemination", "warning" if r.missing else "success", "bag", None, None, detail)

    def _record_findings(self) -> None:
        """Bad copies, fallbacks and replica states, once; recorded before DEST is put in place."""
        if self._findings_recorded:
            return
        self._set_states()              # idempotent: set again by _record_failure if the append fails
        if self.events:
            self.catalog.append_events(self.events)
            self.result.events.extend(e.event_id for e in self.events)
        self._findings_recorded = True

    def _record_failure(self, reason: str) -> None:
        """The failed restore and, if not yet recorded, its findings (they are real all the same)."""
        r = self.result
        events = [] if self._findings_recorded else list(self.events)
        if not self._findings_recorded:
            self._findings_recorded = True
            self._set_states()
        events.append(self.record_as(r, reason) if self.record_as is not None else
                      self._event("dissemination", "failure", "bag", None, None,
                                  f"restore to {r.dest} failed, nothing was written there: {reason}"))
        self.catalog.append_events(events)
        r.events.extend(e.event_id for e in events)

    def _set_states(self) -> None:
        r = self.result
        now = datetime.now(timezone.utc)
        for name, detail in sorted(self.missing.items()):
            self._set_state(name, "missing", f"restore found: {detail}", now)
        for name, problems in sorted(self.damaged.items()):
            if name in self.missing:
                continue
            r.damaged[name] = list(problems)
            self._set_state(name, "damaged", f"restore found {len(problems)} bad file(s): " + "; ".join(problems), now)
        for name in self.missing:
            r.damaged[name] = [self.missing[name]]
        for bag, by_target in sorted(self.damaged_earlier.items()):
            for name, problems in sorted(by_target.items()):
                r.warnings.append(f"{name}: its copy of {bag} (named by fetch.txt) has {len(problems)} bad file(s), "
                                  f"now marked damaged; `strongroom audit --bag {bag}` repairs it")
                self._set_state(name, "damaged", f"restore found {len(problems)} bad file(s): " + "; ".join(problems),
                                now, bag=bag)

    def _set_state(self, target: str, state: str, detail: str, now: datetime, bag: Optional[str] = None) -> None:
        current = self.catalog.replica(bag or str(self.bag_id), target)
        if current is None:
            return
        self.catalog.record_replica(dataclasses.replace(current, state=state, detail=detail[:_DETAIL_MAX],
                                                        recorded_at=now))


# --------------------------------------------------------------------------------------------
# Helpers


def _digests_text(digests: Mapping[str, str]) -> str:
    return ", ".join(f"{a} {d}" for a, d in sorted(digests.items()))


__all__ = ["AGENT", "USABLE_STATES", "TEMP_MARK", "CopyProblem", "Fallback", "RestoreResult", "RestoreError",
           "TempFolder", "restore_bag", "prepare", "put_in_place", "check_dest", "check_dest_location",
           "archive_folders", "replica_order",
           "copy_verified", "remove_tree", "make_dirs"]