"""Check one replica of one bag: what is wrong with it, named file by file.

Why it is built this way:

* **Two references, compared with each other.** Payload files are checked against the
  catalog (path, size, digests), which is the archive's record of what was deposited. The
  copy's own manifests are parsed too and compared with the catalog: a manifest that says
  something else is itself a finding (`manifest-disagrees`), and the repair step
  (`fixity.repair`) decides, with the other copies, whether the manifest or the catalog is
  the odd one out. Tag files (bagit.txt, bag-info.txt, manifests, tag manifests, metadata/)
  are not in the catalog: every copy's tag files are read and digested here, with the copy's
  tag manifests parsed, and `fixity.repair` judges them across copies.
* **Inconclusive is not damage.** A read error, timeout or server error is retried
  (`Retry`); if it persists the file is `unreadable` and the replica's outcome is
  `inconclusive`, never `failure`, so nothing is repaired because of it. Only a digest or
  size mismatch, a confirmed missing file (absent from the listing, or NotFound), or an odd
  object (`OddObject`: a link, FIFO, socket, device or folder where a file belongs, or a
  linked `data/`, bag or collection folder: never followed) is damage.
* **Independent copies.** Reading a file also gives its identity (device, inode, links) from
  the descriptor read: files with more than one hard link, and the bag folder's identity, are
  kept in the check for `fixity.trust` to compare across copies (shared storage is one copy).
* **Deep and quick.** deep re-reads every payload file and recomputes the policy's primary
  digest (every catalog digest with `all_digests`); quick checks existence, size and any
  checksum the storage keeps itself (S3 full-object checksums) without reading payload bytes.
  Tag files are always read: they are small and are what the copies are compared with.

Only the `StorageAdapter` interface is used, so the same code audits filesystem and S3 targets.

Where the parts live: `check_records` (finding kinds, records), `expected_bag` (the catalog's
record of a bag), `retry`, `payload_check` (payload files, pools), `tag_check` (tag files),
`manifests` (manifest parsing and comparison). Their names stay reachable from here.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional

import pyarrow as pa

from strongroom import bagit_spec
from strongroom.bag_id import BagId
from storage_adapters.base import OddObject, StorageAdapter
from strongroom.errors import StrongroomError

from .check_records import (  # noqa: F401  (re-exported: fixity.audit is where callers find them)
    BAG_MISSING,
    BAG_NOT_A_FOLDER,
    CATALOG_DISAGREES,
    CORRUPTED,
    DAMAGE_KINDS,
    DEEP,
    DISPUTED,
    EXTRA,
    FETCH_UNVERIFIED,
    GROWN,
    INCONCLUSIVE_KINDS,
    MANIFEST_DISAGREES,
    MAX_LISTED,
    MISSING,
    NO_GOOD_COPY,
    NOT_A_FILE,
    QUICK,
    SHARED_STORAGE,
    TAG_DAMAGED,
    TAG_IN_DOUBT,
    TAG_MISSING,
    TAGS,
    TRUNCATED,
    UNREACHABLE,
    UNREADABLE,
    FileProblem,
    Finding,
    ReplicaCheck,
    TagCopy,
)
from .expected_bag import _EXPECTED_CACHE, ExpectedBag  # noqa: F401
from .path_merge import unshared
from .manifests import _lines, compare_manifest, manifest_matches, parse_manifest  # noqa: F401
from .payload_check import (  # noqa: F401
    CHUNK_BYTES,
    CHUNK_FILES,
    AdapterFactory,
    CopyRead,
    FileChecker,
    Progress,
    check_payload,
    read_copy,
    size_problem,
)
from .retry import DEFAULT_RETRY, Retry, describe, is_transient, with_retry  # noqa: F401
from .tag_check import _bag_info_issues, _check_tags, read_tag_file, tag_algorithms  # noqa: F401

#: Below this many files (and bytes) a pool costs more than it saves.
POOL_MIN_FILES = 64
POOL_MIN_BYTES = 64 << 20


def utcnow() -> _dt.datetime:
    """The audit's clock: every time an audit records (check times, replica records, events,
    the due selection of the command) comes from here, so tests can move it."""
    return _dt.datetime.now(_dt.timezone.utc)


# --------------------------------------------------------------------------------------------
# Listing

#: Stored paths per slice of the listing handed to the merge with the catalog's rows.
LIST_SLICE = 16384
_NONE = pa.array([], pa.string())


def _slices(paths: Iterable[str], size: int = LIST_SLICE) -> Iterator[pa.Array]:
    batch: List[str] = []
    for relpath in paths:
        batch.append(relpath)
        if len(batch) >= size:
            yield pa.array(batch, pa.string())
            batch = []
    if batch:
        yield pa.array(batch, pa.string())


@dataclass
class Presence:
    """A copy's listing set against the catalog's rows: how many paths are stored, the tag
    files among them, and the payload paths on one side only (sorted)."""

    stored: int
    tag_paths: List[str]
    not_stored: pa.Array      # catalog rows with no stored file of that path
    not_in_catalog: pa.Array  # stored payload paths the catalog does not hold


def presence(adapter: StorageAdapter, expected: ExpectedBag, retry: Retry, payload: bool = True) -> Presence:
    """List the copy and merge its payload paths with the catalog's, a slice of each at a time
    (`path_merge.unshared`): neither the listing nor the catalog's paths are held whole.
    Without `payload` (a look at the tag files only) the payload paths are only counted."""
    bag_id = BagId.parse(expected.bag_id)

    def run() -> Presence:
        tags: List[str] = []
        stored = 0

        def stored_payload() -> Iterator[str]:
            nonlocal stored
            for relpath in adapter.list_bag_files(bag_id):
                stored += 1
                if is_payload(relpath):
                    yield relpath
                else:
                    tags.append(relpath)

        if not payload:
            for _ in stored_payload():
                pass
            return Presence(stored, sorted(tags), _NONE, _NONE)
        merged = unshared((rb.column(0) for rb in expected.batches(["path"])), _slices(stored_payload()))
        return Presence(stored, sorted(tags), merged.only_left, merged.only_right)
    return with_retry(retry, run)


def is_payload(path: str) -> bool:
    return path.startswith(bagit_spec.PAYLOAD_DIR + "/")


# --------------------------------------------------------------------------------------------
# One copy


def basis_of(recorded_at: Optional[_dt.datetime]) -> str:
    """A copy's current catalog record as short stable text ("none" without one). Audit tasks
    are keyed on it, so two runs selecting the same copy in the same state are the same unit
    of work, and a run can tell that another one audited the copy meanwhile."""
    if recorded_at is None:
        return "none"
    return recorded_at.astimezone(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")


def current_basis(catalog, bag_id: str, target: str) -> str:
    record = catalog.replica(bag_id, target)
    return basis_of(record.recorded_at if record is not None else None)


def check_target(config, catalog, bag_id: str, target: str, *, kind: str, basis: Optional[str] = None,
                 all_digests: bool = False, retry: Optional[Retry] = None, workers: int = 1,
                 open_adapter: Optional[Callable] = None, progress: Optional[Progress] = None) -> Dict[str, Any]:
    """Check `bag_id` on the config's storage target `target`: {"check": ReplicaCheck as a dict},
    or {"skipped": why} when the copy's catalog record is no longer `basis` (another run
    audited it since this one was planned)."""
    from storage_adapters.registry import open_target

    retry = retry or DEFAULT_RETRY
    current = catalog.replica(bag_id, target)
    if basis is not None:
        now_basis = basis_of(current.recorded_at if current is not None else None)
        if now_basis != basis:
            return {"skipped": f"audited by another run meanwhile (its catalog record changed at {now_basis})"}
    opener = open_adapter or open_target
    record = catalog.bag(bag_id)
    policy = config.policies.get(record.policy) if record is not None else None
    expected = ExpectedBag.from_catalog(catalog, bag_id, policy)
    spec = config.target(target)
    try:
        adapter = opener(spec)
    except StrongroomError as exc:   # e.g. an S3 target whose credentials are not set
        check = ReplicaCheck(bag_id=bag_id, target=target, site=spec.site, kind=kind, started_at=utcnow().isoformat())
        return {"check": mark_unreachable(check, f"the target cannot be opened ({exc})", utcnow).to_dict()}
    recorded = current is not None
    check = check_replica(adapter, expected, kind=kind, all_digests=all_digests, retry=retry, workers=workers,
                          open_adapter=lambda: opener(spec), progress=progress, empty_target_ok=not recorded)
    return {"check": check.to_dict()}


def check_replica(adapter: StorageAdapter, expected: ExpectedBag, *, kind: str = DEEP, all_digests: bool = False,
                  retry: Optional[Retry] = None, workers: int = 1, open_adapter: Optional[AdapterFactory] = None,
                  progress: Optional[Progress] = None, now: Optional[Callable[[], _dt.datetime]] = None,
                  empty_target_ok: bool = False) -> ReplicaCheck:
    """Check one copy of `expected` on `adapter` (see the module docstring).

    Never raises for what it finds; storage failures become `unreachable` / `unreadable`
    findings. `open_adapter` builds a fresh adapter for each pool process (workers > 1).
    A target holding no bag at all is taken as unmounted (unreachable), unless
    `empty_target_ok` (the copy was never made: a new target is legitimately empty).
    """
    clock = now or (lambda: utcnow())
    retry = retry or DEFAULT_RETRY
    bag_id = BagId.parse(expected.bag_id)
    check = ReplicaCheck(bag_id=expected.bag_id, target=adapter.name, site=adapter.site, kind=kind,
                         started_at=clock().isoformat())
    algorithms = list(expected.algorithms if all_digests else (expected.primary,)) if kind == DEEP else []
    check.algorithms = algorithms
    try:
        seen = presence(adapter, expected, retry, payload=kind != TAGS)
    except OddObject as exc:
        return _bag_not_a_folder(check, exc, clock)
    except Exception as exc:
        if not is_transient(exc):
            raise
        return mark_unreachable(check, f"the bag's files cannot be listed ({describe(exc)})", clock)
    if seen.stored == 0:
        return _bag_missing(adapter, check, retry, clock, empty_target_ok)

    try:
        ident = adapter.folder_identity(bag_id)
    except Exception as exc:   # an identity that cannot be had is no finding of its own
        if not is_transient(exc):
            raise
        ident = None
    check.folder_identity = list(ident) if ident is not None else None
    tag_paths = seen.tag_paths
    _check_tags(adapter, bag_id, expected, tag_paths, check, retry)
    from .fetched import fetched_paths

    fetched = fetched_paths(adapter, bag_id, expected, tag_paths, check, retry)  # a version bag's (docs/versions.md)

    if kind != TAGS:
        not_stored = seen.not_stored.to_pylist()
        absent = [p for p in not_stored if p not in fetched]
        extras = seen.not_in_catalog.to_pylist()
        if fetched:   # stored (a catalog row that is not missing, or an extra file) and in fetch.txt too
            gone, extra_set = set(not_stored), set(extras)
            held = expected.digests_of(sorted(fetched))
            for path in sorted(p for p in fetched if (p in held and p not in gone) or p in extra_set):
                check.findings.append(Finding(FETCH_UNVERIFIED, adapter.name, path, "is stored in data/ and listed "
                                              "in fetch.txt too; a version bag holds a file or refers to it, never both"))
        folders = _folders_in_place(absent, extras)
        for path in absent:
            if path in folders:
                _add_problem(check, FileProblem(path, NOT_A_FILE, "is a folder where a file belongs; a stored bag "
                                                                  "file must be a regular file"))
            else:
                _add_problem(check, FileProblem(path, MISSING, "missing: not stored on this target"))
        # What is stored inside such a folder goes aside with it: not extra files of their own.
        check.extra_payload = [p for p in extras if not any(p.startswith(f + "/") for f in _parents(p, folders))]
        to_check = expected.file_count - len(not_stored)
        big = to_check >= POOL_MIN_FILES or expected.byte_count >= POOL_MIN_BYTES
        files, nbytes, problems = check_payload(
            adapter, expected.bag_id,
            expected.iter_files(seen.not_stored, algorithms=algorithms if kind == DEEP else None),
            deep=(kind == DEEP), algorithms=algorithms,
            retry=retry, workers=workers, open_adapter=open_adapter, progress=progress, use_pool=bool(big),
            linked=check.linked)
        check.files_checked, check.bytes_checked = files, nbytes
        for p in sorted(problems, key=lambda p: p.path):
            _add_problem(check, p)
        for path in check.extra_payload:
            check.findings.append(Finding(EXTRA, adapter.name, path, "extra file: in no manifest of the bag "
                                                                     "and not in the catalog"))
    check.finished_at = clock().isoformat()
    return check


def _parents(path: str, among) -> List[str]:
    """The folders above `path` that are in `among`."""
    parts = path.split("/")
    return [p for p in ("/".join(parts[:i]) for i in range(1, len(parts))) if p in among]


def _folders_in_place(absent: List[str], extras: List[str]) -> set:
    """Catalog paths not stored as files but as folders (something is stored below them)."""
    if not absent or not extras:
        return set()
    wanted = set(absent)
    return {p for e in extras for p in _parents(e, wanted)}


def _add_problem(check: ReplicaCheck, problem: FileProblem) -> None:
    if len(check.payload_problems) >= MAX_LISTED:
        check.problems_not_listed += 1
        return
    check.payload_problems.append(problem)
    check.findings.append(Finding(problem.kind, check.target, problem.path, problem.detail))


def _bag_not_a_folder(check: ReplicaCheck, exc: OddObject, clock) -> ReplicaCheck:
    """The bag's folder, or a folder above it, is a link (perhaps into another target) or not a
    folder: nothing of this copy is read through it. Damage: repair moves it aside and stores
    the bag again from a good copy."""
    check.bag_present = False
    check.odd_keys.append(exc.key)
    check.findings.append(Finding(BAG_NOT_A_FOLDER, check.target, None,
                                  f"{exc.location or exc.key} is {exc.what or 'not a folder'} where the bag's "
                                  "folder belongs; it is not followed, so no copy of the bag is stored here "
                                  "(a link into another target would make one copy count as two)"))
    check.finished_at = clock().isoformat()
    return check


def mark_unreachable(check: ReplicaCheck, reason: str, clock) -> ReplicaCheck:
    """The copy could not be looked at (listing failed, target cannot be opened): inconclusive."""
    check.reachable = False
    check.unreachable_reason = reason
    check.findings.append(Finding(UNREACHABLE, check.target, None, reason + "; inconclusive, not damage"))
    check.finished_at = clock().isoformat()
    return check


def _bag_missing(adapter: StorageAdapter, check: ReplicaCheck, retry: Retry, clock,
                 empty_target_ok: bool = False) -> ReplicaCheck:
    """Nothing of the bag is stored. On a target that holds no bag at all, that more likely
    means an unmounted volume or a wrong root than a lost copy: inconclusive, not repaired."""
    try:
        holds_any = empty_target_ok or with_retry(retry, lambda: next(iter(adapter.list_bags()), None) is not None)
    except Exception as exc:
        if not is_transient(exc):
            raise
        return mark_unreachable(check, f"the target cannot be listed ({describe(exc)})", clock)
    if not holds_any:
        return mark_unreachable(check, f"the target holds no bags at all ({adapter.location(BagId.parse(check.bag_id))} "
                                   "and everything around it is empty): is the volume mounted or the "
                                   "bucket/prefix right?", clock)
    check.bag_present = False
    check.findings.append(Finding(BAG_MISSING, check.target, None,
                                  f"the whole bag is missing: nothing is stored at "
                                  f"{adapter.location(BagId.parse(check.bag_id))}"))
    check.finished_at = clock().isoformat()
    return check


__all__ = [
    "DEEP", "QUICK", "TAGS", "CORRUPTED", "TRUNCATED", "GROWN", "MISSING", "EXTRA", "NOT_A_FILE", "SHARED_STORAGE",
    "BAG_NOT_A_FOLDER", "DISPUTED", "TAG_DAMAGED",
    "TAG_MISSING", "BAG_MISSING", "MANIFEST_DISAGREES", "CATALOG_DISAGREES", "NO_GOOD_COPY", "TAG_IN_DOUBT",
    "UNREADABLE", "UNREACHABLE", "DAMAGE_KINDS", "INCONCLUSIVE_KINDS", "DEFAULT_RETRY", "Finding", "FileProblem",
    "TagCopy", "ReplicaCheck", "ExpectedBag", "Retry", "basis_of", "current_basis", "check_target", "FileChecker",
    "is_transient", "describe", "with_retry", "CopyRead", "read_copy", "check_payload", "check_replica", "presence", "Presence",
    "is_payload", "tag_algorithms", "read_tag_file", "utcnow", "manifest_matches", "compare_manifest",
    "parse_manifest",
]
