"""Make the repairs the judgement planned, on one copy after another, and re-verify each.

A damaged or missing file is replaced from a good copy: `StorageAdapter.replace_file` checks
every byte it reads against the size and *all* catalog digests before the new file gets its
name, so a copy is never overwritten with one that was not verified in this run; a source that
fails that check is itself reported damaged (and repaired from another copy if there is one).

Extra files and odd objects (a link, FIFO, socket, a folder where a file belongs, a linked
`data/`, bag or collection folder: `storage_adapters.base.OddObject`) are moved aside on a file
system (`<root>/.strongroom-aside/<UTC stamp>/...`), never deleted; on an object store an extra
object is deleted after its size and sha256 are in the ledger (an event appended before the
delete).

Repair order on a copy: extra files and odd objects out of the way, payload files, tag files,
bagit.txt last (a copy without bagit.txt is visibly incomplete if a repair is interrupted).
Every replaced file is re-read afterwards and must match (`re-verified`).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Set, Tuple

from catalog.schema import EventRecord
from fixity import audit as A
from fixity.audit_record import _event
from fixity.bag_audit import Reference, RepairAction, _Fix
from fixity.judge_payload import _Copies, _digest_text
from strongroom import bagit_spec
from strongroom.bag_id import BagId
from strongroom.errors import StrongroomError
from storage_adapters.base import NotFound, OddObject, SourceMismatch, StorageAdapter, StorageError, bag_key

log = logging.getLogger("fixity.repair")   # the name its messages always had (the CLI's log lines show it)

class _SourceStream:
    """A source stream that remembers its own read failure, so a failed replace_file can tell a
    bad or unreadable *source* (try another copy) from a failing *destination* (stop)."""

    def __init__(self, stream):
        self._stream = stream
        self.error: Optional[BaseException] = None

    def readinto(self, buf) -> int:
        try:
            readinto = getattr(self._stream, "readinto", None)
            if readinto is not None:
                n = readinto(buf)
                return 0 if n is None else n
            data = self._stream.read(len(buf))
            memoryview(buf)[:len(data)] = data
            return len(data)
        except BaseException as exc:
            self.error = exc
            raise

    def read(self, n: int = -1) -> bytes:
        try:
            return self._stream.read(n)
        except BaseException as exc:
            self.error = exc
            raise

    def readable(self) -> bool:
        return True


class _Repairer:
    def __init__(self, expected: A.ExpectedBag, adapters: Mapping[str, StorageAdapter], copies: _Copies,
                 retry: A.Retry, stamp: str = "", record_now: Optional[Callable[[List[EventRecord]], None]] = None):
        self.record_now = record_now   # appends events to the ledger at once (before moves and deletions)
        #: (target, path) -> the details of the moves aside of it the ledger holds
        self.recorded_moves: Optional[Callable[[str, str], List[str]]] = None
        self.appended = 0              # events appended that way
        self.stamp = stamp or A.utcnow().strftime("%Y%m%dT%H%M%S%fZ")   # names this run's moved-aside folder
        self.expected = expected
        self.bag = BagId.parse(expected.bag_id)
        self.adapters = adapters
        self.copies = copies
        self.retry = retry
        self.actions: Dict[str, List[RepairAction]] = defaultdict(list)
        self.found: Dict[str, List[A.Finding]] = defaultdict(list)   # damage found on sources while repairing
        self.bad_sources: Set[Tuple[str, str]] = set()
        self.extra_fixes: List[_Fix] = []
        self.done: Set[Tuple[str, str]] = set()

    def run(self, fix: _Fix) -> bool:
        """Make one fix; True when it succeeded and was re-verified."""
        if fix.ref is None:
            return self._remove(fix)
        for source in fix.sources:
            if (source, fix.path) in self.bad_sources or source == fix.target:
                continue
            result = self._copy_from(fix, source)
            if result is not None:
                return result
        tried = ", ".join(s for s in fix.sources if s != fix.target) or "none"
        self._act(fix, "replace", "failure", f"repair: no good copy could be copied (sources tried: {tried})")
        return False

    def _copy_from(self, fix: _Fix, source: str) -> Optional[bool]:
        """True/False: repaired or not (stop); None: this source was no good, try the next."""
        ref = fix.ref
        assert ref is not None
        src, dst = self.adapters[source], self.adapters[fix.target]
        size = ref.size
        if size is None:
            return None
        moved: Set[str] = set()
        for _ in range(8):   # each odd object on the way (a link at data/, a folder in the file's place) once
            result = self._copy_once(fix, source, src, dst, size)
            if not isinstance(result, OddObject):
                if result and not moved and fix.finding.kind == A.NOT_A_FILE:
                    self.recover_move(fix.target, bag_key(self.bag, fix.path), fix.path)   # moved by a stopped run?
                return result
            if result.key in moved or not self.move_odd(fix.target, result.key, result.what, fix):
                self._act(fix, "replace", "failure", f"repair: cannot write the good copy from {source}: "
                                                     f"{result.message}", source)
                return False
            moved.add(result.key)
        self._act(fix, "replace", "failure", "repair: too many odd objects in the way", source)
        return False

    def move_odd(self, target: str, key: str, what: str, fix: Optional[_Fix] = None) -> bool:
        """Move an odd object (a link, FIFO, folder...) out of the way of a repair, never following
        or deleting it; recorded as a repair action of its own. False if it cannot be moved."""
        dst = self.adapters[target]
        path = self._bag_path(key)
        place = path or ""     # "": the bag's folder or one above it (the detail names the key)
        action = _Fix(target, place, None, fix.finding if fix else A.Finding(A.NOT_A_FILE, target, path, what))
        if not dst.can_move_aside:
            return False
        try:
            where = A.with_retry(self.retry, lambda: dst.move_aside(self.bag, key, self.stamp))
        except NotFound:
            self.recover_move(target, key, place)
            return True
        except Exception as exc:
            if not isinstance(exc, (StorageError, OSError)):
                raise
            self._record_move(action, "failure", f"repair: {what or 'the odd object'} at {key} cannot be moved "
                                                 f"aside ({A.describe(exc)})")
            return False
        self._record_move(action, "success", f"repair: {what or 'an odd object'} found at {key} (never followed) "
                                             f"was moved aside to {where}")
        return True

    def _record_move(self, fix: _Fix, outcome: str, detail: str) -> None:
        self.actions[fix.target].append(RepairAction(fix.target, fix.path, "move-aside", outcome, detail))

    def _bag_path(self, key: str) -> Optional[str]:
        """The bag path of a root-relative key inside this bag; None for the bag or a folder above it."""
        own = bag_key(self.bag) + "/"
        return key[len(own):] if key.startswith(own) else None

    def _copy_once(self, fix: _Fix, source: str, src: StorageAdapter, dst: StorageAdapter, size: int):
        """True/False/None as `_copy_from`, or the OddObject in the way of the write."""
        ref = fix.ref
        assert ref is not None
        try:
            stream = A.with_retry(self.retry, lambda: src.open_file(self.bag, fix.path))
        except NotFound:
            self._source_bad(source, fix, A.Finding(A.TAG_MISSING if fix.tag else A.MISSING, source, fix.path,
                                                    "found missing while repairing another copy"))
            return None
        except Exception as exc:
            if not A.is_transient(exc) and not isinstance(exc, StorageError):
                raise
            log.warning("%s: %s on %s cannot be read as a repair source: %s", self.bag, fix.path, source, exc)
            return None
        wrapped = _SourceStream(stream)
        try:
            with stream:
                dst.replace_file(self.bag, fix.path, wrapped, size=size, digests=ref.digests)
        except OddObject as exc:
            if wrapped.error is None:
                return exc
            raise
        except SourceMismatch as exc:
            kind = A.TAG_DAMAGED if fix.tag else A.CORRUPTED
            self._source_bad(source, fix, A.Finding(kind, source, fix.path,
                                                    f"found damaged while repairing another copy: {exc.message}"))
            return None
        except Exception as exc:
            if wrapped.error is not None:   # the source failed to read: another copy may do
                if not A.is_transient(wrapped.error):
                    raise
                log.warning("%s: reading %s from %s failed during repair: %s", self.bag, fix.path, source, exc)
                return None
            if not isinstance(exc, (StorageError, OSError)):
                raise
            self._act(fix, "replace", "failure", f"repair: cannot write the good copy from {source}: "
                                                 f"{A.describe(exc)}", source)
            return False
        # Re-verify what is now stored.
        read = A.read_copy(dst, self.expected.bag_id, fix.path, sorted(ref.digests), self.retry)
        if read.status == "ok" and read.size == size and all(read.digests.get(a) == d for a, d in ref.digests.items()):
            self._act(fix, "replace", "success",
                      f"repair: replaced with the copy from {source} ({size} bytes, {_digest_text(ref.digests)}), "
                      f"verified while copying and re-verified after", source)
            return True
        self._act(fix, "replace", "failure", f"repair: the file written from {source} did not re-verify "
                                             f"({read.status} {read.detail})", source)
        return False

    def _source_bad(self, source: str, fix: _Fix, finding: A.Finding) -> None:
        self.bad_sources.add((source, fix.path))
        self.found[source].append(finding)
        others = [s for s in fix.sources if s != source]
        if (source, fix.path) not in self.done:
            self.extra_fixes.append(_Fix(source, fix.path, fix.ref, finding, others + [fix.target], fix.tag))

    def _remove(self, fix: _Fix) -> bool:
        """Take an extra file (or an odd object) out of the bag: moved aside where the target can
        (a file system: nothing is ever deleted), else deleted after its size and sha256 are
        recorded (an object store; the ledger event keeps what it was)."""
        dst = self.adapters[fix.target]
        if dst.can_move_aside:
            return self._move_extra(fix, dst)
        read = A.read_copy(dst, self.expected.bag_id, fix.path, ["sha256"], self.retry)
        if read.status == "missing":
            self._act(fix, "delete", "success", "repair: the extra file is already gone")
            return True
        if read.status == "not-a-file":
            what = f"a symbolic link or special file ({read.detail})"
        elif read.status != "ok":
            self._act(fix, "delete", "failure", f"repair: extra file not removed: it cannot be read to record "
                                                f"what it was ({read.detail or read.status})")
            return False
        else:
            what = f"{read.size} bytes, sha256 {read.digests.get('sha256')}"
        if self.record_now is not None:
            # In the ledger before the object goes: a crash after the delete cannot lose what it was.
            try:
                self.record_now([_event("deletion", "warning", "file", self.expected.bag_id, fix.target, fix.path,
                                        f"repair: about to delete the extra object ({what}): {fix.finding.detail}",
                                        A.utcnow())])
                self.appended += 1
            except (StrongroomError, OSError) as exc:
                self._act(fix, "delete", "failure", f"repair: extra object not deleted: what it is cannot be "
                                                    f"recorded first ({exc})")
                return False
        try:
            A.with_retry(self.retry, lambda: dst.delete_file(self.bag, fix.path))
        except NotFound:
            pass
        except Exception as exc:
            if not isinstance(exc, (StorageError, OSError)):
                raise
            self._act(fix, "delete", "failure", f"repair: extra file not removed ({A.describe(exc)})")
            return False
        try:
            gone = A.with_retry(self.retry, lambda: dst.stat_file(self.bag, fix.path)) is None
        except Exception as exc:
            if not A.is_transient(exc) and not isinstance(exc, StorageError):
                raise
            gone = False
        self._act(fix, "delete", "success" if gone else "failure",
                  f"repair: extra file removed ({what})"
                  if gone else "repair: the extra file is still listed after deletion")
        return gone

    def _gone(self, fix: _Fix) -> bool:
        """The extra file is no longer there: moved aside by an earlier run (recorded now if that
        run was stopped before recording it), or removed by someone else."""
        if not self.recover_move(fix.target, bag_key(self.bag, fix.path), fix.path):
            self._act(fix, "move-aside", "success", "repair: the extra file is already gone")
        return True

    def recover_move(self, target: str, key: str, path: str) -> bool:
        """After a crash: what is no longer at `key` but sits in the aside folder was moved by an
        earlier run. Its move is recorded now unless the ledger has it (each move once, saying
        where to). False when nothing of it is aside."""
        dst = self.adapters[target]
        places = dst.find_aside(self.bag, key) if dst.can_move_aside else []
        if not places:
            return False
        said = " ".join(self.recorded_moves(target, path)) if self.recorded_moves is not None else ""
        unsaid = [p for p in places if p not in said]
        if unsaid:
            self.actions[target].append(RepairAction(
                target, path, "move-aside", "success", f"repair: what was at {key} was moved aside to {unsaid[-1]} "
                                                       "by an earlier run stopped before it could record it; "
                                                       "nothing was deleted"))
        return True

    def _move_extra(self, fix: _Fix, dst: StorageAdapter) -> bool:
        read = A.read_copy(dst, self.expected.bag_id, fix.path, ["sha256"], self.retry)
        if read.status == "missing":
            return self._gone(fix)
        what = f"{read.size} bytes, sha256 {read.digests.get('sha256')}" if read.status == "ok" else \
            (read.detail or read.status)
        try:
            where = A.with_retry(self.retry, lambda: dst.move_aside(self.bag, bag_key(self.bag, fix.path), self.stamp))
        except NotFound:
            return self._gone(fix)
        except Exception as exc:
            if not isinstance(exc, (StorageError, OSError, ValueError)):
                raise
            self._act(fix, "move-aside", "failure", f"repair: extra file not moved aside ({A.describe(exc)})")
            return False
        self._act(fix, "move-aside", "success", f"repair: extra file moved aside to {where} ({what}); nothing "
                                                "was deleted")
        return True

    def announce_moves(self, fixes: Sequence[_Fix], odd: Mapping[str, Sequence[str]]) -> None:
        """One ledger append, before anything is moved: every move aside this run may make, and
        where to. A run stopped before its own record leaves no object aside that the ledger does
        not point to (the rerun then records the moves themselves, `recover_move`)."""
        if self.record_now is None:
            return
        now = A.utcnow()
        events = []
        for fix in fixes:
            dst = self.adapters.get(fix.target)
            if dst is None or not dst.can_move_aside or not (fix.ref is None or fix.finding.kind == A.NOT_A_FILE):
                continue
            what = "what is at" if fix.ref is not None else "the extra file"
            events.append(_event("quarantine", "warning", "file", self.expected.bag_id, fix.target, fix.path,
                                 f"repair: about to move aside {what} {bag_key(self.bag, fix.path)} into the aside "
                                 f"folder {self.stamp} of {fix.target}: {fix.finding.detail}", now))
        for target, keys in odd.items():
            for key in keys:
                events.append(_event("quarantine", "warning", "replica", self.expected.bag_id, target, None,
                                     f"repair: about to move aside what is at {key} into the aside folder "
                                     f"{self.stamp} of {target}", now))
        if events:
            self.record_now(events)
            self.appended += len(events)

    def _act(self, fix: _Fix, action: str, outcome: str, detail: str, source: Optional[str] = None) -> None:
        self.done.add((fix.target, fix.path))
        self.actions[fix.target].append(RepairAction(fix.target, fix.path, action, outcome, detail, source))


def _repair_order(fix: _Fix) -> Tuple[int, str]:
    if fix.ref is None:
        return 0, fix.path
    if fix.path == bagit_spec.BAGIT_TXT:
        return 3, fix.path
    return (2 if fix.tag else 1), fix.path


def _missing_bag_fixes(expected: A.ExpectedBag, target: str, copies: _Copies,
                       refs: Mapping[str, Optional[Reference]], overrides: Mapping[str, Reference]) -> Iterator[_Fix]:
    """Every file of a bag missing from `target`: payload from the catalog, tag files from the references."""
    for path, size, digests in expected.iter_files():
        ref = overrides.get(path) or Reference(size, digests)
        f = A.Finding(A.MISSING, target, path, "missing (the whole bag is missing)")
        yield _Fix(target, path, ref, f, copies.sources(path, target))
    for path, ref in sorted(refs.items()):
        if ref is not None:
            f = A.Finding(A.TAG_MISSING, target, path, "tag file missing (the whole bag is missing)")
            yield _Fix(target, path, ref, f, [t for t in ref.holders if t != target], tag=True)
