"""Withdrawal and legal holds on the storage targets: the only code that removes a whole bag.

Why a module of its own: everywhere else a stored bag file is never deleted (repair deletes
only files a bag's manifests do not list). A withdrawal decided by a quorum (issue 13) is the
one exception, so it is kept here, apart, and does three things only:

* `inspect_bag`: what of the bag is stored and what stops its removal. On S3 every version of
  every object under the bag's prefix is listed (a versioned bucket keeps old versions: deleting
  the current one only adds a delete marker), each with its Object Lock retention and legal
  hold from a HEAD of that version. A filesystem target has no lock: only a recorded hold
  marker (the catalog's, checked by the caller) stops it;
* `remove_bag`: every file of the bag folder (links removed, never followed; folders emptied
  from the bottom up), and what repair moved aside of it, or every object version and delete marker, aborting unfinished multipart
  uploads too; with `bypass_governance` the S3 deletes carry x-amz-bypass-governance-retention
  (the caller decides that only at the governance-bypass quorum). Rerunnable: what is already
  gone is skipped;
* `set_legal_hold`: S3 PutObjectLegalHold ON/OFF on every version of every object of the bag.

Tombstones and hold markers are K1 records (`put_record`) under `.strongroom/tombstones/` and
`.strongroom/holds/`: the keys are built here (`tombstone_key`, `hold_key`).
"""

from __future__ import annotations

import datetime as _dt
import errno
import os
import stat
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

from strongroom.bag_id import BagId

from .base import NotFound, StorageAdapter, StorageError, bag_segments
from .filesystem import ASIDE_DIR

TOMBSTONE_SPACE = "tombstones"
HOLD_SPACE = "holds"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


def tombstone_key(bag_id: BagId, state: str) -> str:
    """`tombstones/LIB/COLL/bag-name/<state>.json`: records are never overwritten, so the
    "started" and "complete" tombstones are two records."""
    return "/".join((TOMBSTONE_SPACE, *bag_segments(bag_id), f"{state}.json"))


def hold_key(bag_id: BagId, request_id: str, action: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in request_id)[:80]
    return "/".join((HOLD_SPACE, *bag_segments(bag_id), f"{safe}-{action}.json"))


@dataclass(frozen=True)
class StoredVersion:
    """One stored object version (S3) or file (filesystem) of a bag, with what locks it."""

    key: str
    version_id: Optional[str] = None
    delete_marker: bool = False
    lock_mode: Optional[str] = None           # "GOVERNANCE" | "COMPLIANCE"
    retain_until: Optional[_dt.datetime] = None
    legal_hold: bool = False


@dataclass
class BagOnTarget:
    """What `inspect_bag` found of one bag on one target."""

    target: str
    versions: List[StoredVersion] = field(default_factory=list)

    def blockers(self, now: _dt.datetime, *, bypass_governance: bool) -> List[str]:
        """Why the bag cannot be removed from this target now (empty: it can)."""
        out: List[str] = []
        held = [v for v in self.versions if v.legal_hold]
        if held:
            out.append(f"{self.target}: {len(held)} object(s) under S3 legal hold, e.g. {held[0].key}")
        for mode in ("COMPLIANCE", "GOVERNANCE"):
            locked = [v for v in self.versions if v.lock_mode == mode and v.retain_until is not None
                      and v.retain_until > now]
            if not locked or (mode == "GOVERNANCE" and bypass_governance):
                continue
            until = max(v.retain_until for v in locked)  # type: ignore[type-var]
            how = "compliance mode cannot be shortened or bypassed by anyone" if mode == "COMPLIANCE" else \
                "governance mode: needs the governance-bypass quorum"
            out.append(f"{self.target}: {len(locked)} object(s) under Object Lock retention until "
                       f"{until.isoformat()} ({how}), e.g. {locked[0].key}")
        return out

    def governance_locked(self, now: _dt.datetime) -> bool:
        """True when removing the bag here needs the governance bypass."""
        return any(v.lock_mode == "GOVERNANCE" and v.retain_until is not None and v.retain_until > now
                   for v in self.versions)


@dataclass(frozen=True)
class Removed:
    """What `remove_bag` removed from one target."""

    objects: int        # files, or distinct S3 keys
    versions: int       # S3 versions and delete markers (filesystem: = objects)
    folders: int = 0    # filesystem folders removed


def _is_s3(adapter: StorageAdapter) -> bool:
    return adapter.type == "s3"


# ------------------------------------------------------------------------------------ inspect

def inspect_bag(adapter: StorageAdapter, bag_id: BagId) -> BagOnTarget:
    """Every stored version of the bag with its locks (see the module docstring)."""
    found = BagOnTarget(adapter.name)
    if not _is_s3(adapter):
        found.versions = [StoredVersion(relpath) for relpath in adapter.list_bag_files(bag_id)]
        return found
    for v in _s3_versions(adapter, bag_id):
        if v.delete_marker:
            found.versions.append(v)
            continue
        found.versions.append(_s3_locks(adapter, v))
    return found


def _s3_versions(adapter: Any, bag_id: BagId) -> List[StoredVersion]:
    prefix = adapter._bag_prefix(bag_id)
    loc = adapter.location(bag_id)
    adapter.ensure_bucket()
    out: List[StoredVersion] = []
    kwargs: Dict[str, Any] = {"Bucket": adapter.bucket, "Prefix": prefix}
    while True:
        args = dict(kwargs)

        def page(attempt: int, last: bool) -> Dict[str, Any]:
            try:
                return adapter.client.list_object_versions(**args)
            except Exception as exc:  # noqa: BLE001
                raise adapter._error(exc, "list the object versions", loc) from None

        answer = adapter._retrying(loc, page)
        for v in answer.get("Versions") or ():
            out.append(StoredVersion(v["Key"], v.get("VersionId")))
        for m in answer.get("DeleteMarkers") or ():
            out.append(StoredVersion(m["Key"], m.get("VersionId"), delete_marker=True))
        if not answer.get("IsTruncated"):
            return out
        kwargs["KeyMarker"] = answer.get("NextKeyMarker")
        kwargs["VersionIdMarker"] = answer.get("NextVersionIdMarker")


def _version_args(adapter: Any, v: StoredVersion) -> Dict[str, Any]:
    args: Dict[str, Any] = {"Bucket": adapter.bucket, "Key": v.key}
    if v.version_id and v.version_id != "null":
        args["VersionId"] = v.version_id
    return args


def _s3_locks(adapter: Any, v: StoredVersion) -> StoredVersion:
    loc = f"s3://{adapter.bucket}/{v.key}"

    def head(attempt: int, last: bool) -> Dict[str, Any]:
        try:
            return adapter.client.head_object(**_version_args(adapter, v))
        except Exception as exc:  # noqa: BLE001
            raise adapter._error(exc, "read the object's lock state", loc) from None

    r = adapter._retrying(loc, head)
    until = r.get("ObjectLockRetainUntilDate")
    if until is not None and until.tzinfo is None:
        until = until.replace(tzinfo=_dt.timezone.utc)
    return StoredVersion(v.key, v.version_id, lock_mode=r.get("ObjectLockMode"), retain_until=until,
                         legal_hold=r.get("ObjectLockLegalHoldStatus") == "ON")


# ------------------------------------------------------------------------------------ remove

def remove_bag(adapter: StorageAdapter, bag_id: BagId, *, bypass_governance: bool = False) -> Removed:
    """Remove every stored object of the bag from this target (module docstring); StorageError
    on the first failure (what was removed stays removed: a rerun continues)."""
    if _is_s3(adapter):
        return _remove_s3(adapter, bag_id, bypass_governance)
    return _remove_folder(adapter, bag_id)


def _remove_s3(adapter: Any, bag_id: BagId, bypass_governance: bool) -> Removed:
    adapter.cleanup_temp(bag_id)          # unfinished multipart uploads: their parts are bag bytes too
    versions = _s3_versions(adapter, bag_id)
    for v in versions:
        loc = f"s3://{adapter.bucket}/{v.key}"
        args = _version_args(adapter, v)
        if bypass_governance:
            args["BypassGovernanceRetention"] = True

        def delete(attempt: int, last: bool, args=args, loc=loc) -> None:
            try:
                adapter.client.delete_object(**args)
            except Exception as exc:  # noqa: BLE001
                code = adapter._code(exc)
                if code in ("NoSuchKey", "NoSuchVersion", "404") and attempt > 1:
                    return   # an earlier attempt's delete went through; its answer was lost
                if code == "AccessDenied":
                    raise StorageError("the server refused to delete this object version (Object Lock "
                                       "retention or legal hold, or no delete permission)",
                                       target=adapter.name, location=loc) from None
                raise adapter._error(exc, "delete", loc) from None

        adapter._retrying(loc, delete)
    left = [v for v in _s3_versions(adapter, bag_id) if not v.delete_marker]
    if left:
        raise StorageError(f"{len(left)} object version(s) are still there after deleting every version listed "
                           f"(a writer still at work?), e.g. {left[0].key}", target=adapter.name,
                           location=adapter.location(bag_id))
    return Removed(objects=len({v.key for v in versions if not v.delete_marker}), versions=len(versions))


def _remove_folder(adapter: Any, bag_id: BagId) -> Removed:
    """The bag folder, and whatever of it repair moved aside (`.strongroom-aside/<stamp>/LIB/COLL/`
    entries named after the bag: damaged copies of its files are its bytes too)."""
    lib, coll, name = bag_segments(bag_id)
    counts = [0, 0]
    _remove_entry(adapter, (lib, coll), lambda n: n == name, counts)
    aside = (ASIDE_DIR,)
    for stamp, is_dir in adapter._entries(aside) or ():
        if is_dir:
            _remove_entry(adapter, aside + (stamp, lib, coll),
                          lambda n: n == name or (n.startswith(name + ".") and n[len(name) + 1:].isdigit()), counts)
    return Removed(objects=counts[0], versions=counts[0], folders=counts[1])


def _remove_entry(adapter: Any, folder: Tuple[str, ...], wanted: Callable[[str], bool], counts: List[int]) -> None:
    """Remove the entries of `folder` that `wanted` names, emptying folders bottom-up with
    descriptors (no path is resolved twice, no link is followed: a link is an entry like any
    other and is unlinked itself). A folder that is not there: nothing to do."""
    loc = "/".join((str(adapter.root),) + folder)
    try:
        with adapter._dir(folder, create=False) as parent:
            for entry in sorted(n for n in os.listdir(parent) if wanted(n)):
                try:
                    fd = os.open(entry, _DIR_FLAGS, dir_fd=parent)
                except OSError as exc:
                    if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                        raise
                    os.unlink(entry, dir_fd=parent)   # a link or a file where a folder was: not followed
                    counts[0] += 1
                    continue
                try:
                    _empty(fd, counts)
                finally:
                    os.close(fd)
                os.rmdir(entry, dir_fd=parent)
                counts[1] += 1
            os.fsync(parent)
    except NotFound:
        return
    except OSError as exc:
        raise adapter._failure(exc, loc, writing=True) from None


def _empty(dfd: int, counts: List[int]) -> None:
    """Remove everything inside the open folder `dfd` (counts: [files, folders]); an explicit
    stack, not recursion, so any depth works."""
    stack = [(dfd, False)]
    while stack:
        fd, _ = stack[-1]
        descended = False
        for name in sorted(os.listdir(fd)):
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                child = os.open(name, _DIR_FLAGS, dir_fd=fd)
                if os.listdir(child):
                    stack.append((child, True))
                    descended = True
                    break
                os.close(child)
                os.rmdir(name, dir_fd=fd)
                counts[1] += 1
            else:
                os.unlink(name, dir_fd=fd)
                counts[0] += 1
        if descended:
            continue
        os.fsync(fd)
        stack.pop()
        if stack:
            os.close(fd)   # emptied: the parent's next listing removes it


# ------------------------------------------------------------------------------------ holds

def set_legal_hold(adapter: StorageAdapter, bag_id: BagId, on: bool) -> int:
    """S3 PutObjectLegalHold ON/OFF on every version of every object of the bag; how many.
    StorageError (e.g. a bucket without Object Lock) naming the object."""
    if not _is_s3(adapter):
        return 0
    a: Any = adapter
    count = 0
    for v in _s3_versions(a, bag_id):
        if v.delete_marker:
            continue
        loc = f"s3://{a.bucket}/{v.key}"
        args = dict(_version_args(a, v), LegalHold={"Status": "ON" if on else "OFF"})

        def put(attempt: int, last: bool, args=args, loc=loc) -> None:
            try:
                a.client.put_object_legal_hold(**args)
            except Exception as exc:  # noqa: BLE001
                raise a._error(exc, f"set the legal hold {'on' if on else 'off'}", loc) from None

        a._retrying(loc, put)
        count += 1
    return count


__all__ = ["StoredVersion", "BagOnTarget", "Removed", "inspect_bag", "remove_bag", "set_legal_hold", "tombstone_key",
           "hold_key", "TOMBSTONE_SPACE", "HOLD_SPACE"]
