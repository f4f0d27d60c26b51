"""The state of one batch of `FilesystemAdapter.put_files`.

`put_files` writes many files as `put_file` does (`filesystem`), with the flushes shared (a flush
per file costs milliseconds; thousands of small files took minutes), and each file checked once,
after it was made durable:
  1. each file is copied to its locked temp name, sealed (0444, the staged mtime), not yet
     flushed (or, from a staged bag the deposit lets this target place, hard-linked there:
     `fs_place`);
  2. ONE flush makes all of them durable: syncfs() of their file system where that is known to
     write back every dirty file and to report write-back errors (`fs_durability`); elsewhere
     each file is fsynced, as by put_file;
  3. every file is then re-read through its own descriptor and checked against the manifests'
     size and digests (a staged file that differs, or a copy that came out wrong, never gets
     its name: nothing of the batch does);
  4. only then does each file get its final name (renameat2 RENAME_NOREPLACE, never
     overwriting: same ReplicaConflict/ALREADY_PRESENT rules), and each folder touched is
     fsynced once. `on_checked` gets each named file's stamp (`CheckedStamp`): what the
     deposit's Verify compares instead of reading the file a second time.
Why the check comes after the flush (issue 11): it is then both the check before naming and
the re-read after durability, one hashing pass per replica instead of two.
A crash at any point leaves files that already have their names (complete, checked, durable)
and unlocked temp files, never a partial, unchecked or unflushed file under a final name; the
next put removes the leftovers as usual. At most `batch_files` files / `batch_bytes` bytes
(and a share of the open-file limit: each waiting file keeps its locked descriptor) wait for one
flush; bigger calls are split.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Set, Tuple

from strongroom.checksums import MultiHasher

from .base import CHUNK, CheckedStamp, ItemChecked, PutItem, PutOutcome, StorageError, check_hashed
from .fs_place import place_temp, placeable

if TYPE_CHECKING:
    from .filesystem import FilesystemAdapter


@dataclass
class _Pending:
    """A file of a batch written to its locked temp file, waiting for the flush and its name."""

    index: int
    dirs: Tuple[str, ...]
    name: str
    loc: str
    tmp: str
    fd: int
    size: int
    digests: Dict[str, str]
    open: bool = True


def _named_stamp(fd: int, dfd: int, name: str) -> Optional[CheckedStamp]:
    try:
        mine = os.fstat(fd)
        named = os.stat(name, dir_fd=dfd, follow_symlinks=False)
    except OSError:
        return None
    if (named.st_dev, named.st_ino) != (mine.st_dev, mine.st_ino):
        return None
    return CheckedStamp.of(mine)


class _Batch:
    """The state of one put_files batch: folder descriptors, files waiting, folders to fsync.

    `close()` always runs: it removes the temp files of files that did not get their name and
    closes every descriptor, so a failure leaves nothing but what was completely stored.
    """

    def __init__(self, adapter: FilesystemAdapter, *, syncfs_is_durable: Callable[[int], bool],
                 syncfs: Callable[[int], None]):
        self.adapter = adapter
        # fs_durability's functions, handed in by the adapter (looked up where tests replace them)
        self.syncfs_is_durable = syncfs_is_durable
        self.syncfs = syncfs
        self.folders: Dict[Tuple[str, ...], int] = {}
        self.folder_dev: Dict[Tuple[str, ...], int] = {}
        # The first folder opened on each device: its descriptor predates every write of the batch
        # there, so syncfs() through it reports any write-back error of those writes.
        self.first_on_dev: Dict[int, Tuple[str, ...]] = {}
        self.pending: List[_Pending] = []
        self.present: Set[Tuple[str, ...]] = set()
        self.bytes = 0
        self.open_files = 0

    @property
    def open_fds(self) -> int:
        return len(self.folders) + self.open_files

    def path(self, dirs: Tuple[str, ...]) -> str:
        return "/".join((str(self.adapter.root),) + dirs)

    def folder(self, dirs: Tuple[str, ...]) -> int:
        """root/dirs..., created if needed, walked without following links; kept open for the batch."""
        depth = len(dirs)
        while depth and dirs[:depth] not in self.folders:
            depth -= 1
        if depth == 0 and () not in self.folders:
            self._keep((), self.adapter._open_root())
        fd = self.folders[dirs[:depth]]
        for i in range(depth, len(dirs)):
            path = self.path(dirs[:i + 1])
            try:
                child = self.adapter._open_child_dir(fd, dirs[i], path, True)
            except OSError as exc:
                raise self.adapter._failure(exc, path, writing=True) from None
            self._keep(dirs[:i + 1], child)
            fd = child
        return fd

    def _keep(self, dirs: Tuple[str, ...], fd: int) -> None:
        self.folders[dirs] = fd
        try:
            dev = os.fstat(fd).st_dev
        except OSError as exc:
            raise self.adapter._failure(exc, self.path(dirs), writing=True) from None
        self.folder_dev[dirs] = dev
        self.first_on_dev.setdefault(dev, dirs)

    def add(self, index: int, item: PutItem, digests: Dict[str, str], dirs: Tuple[str, ...], name: str,
            loc: str, report: Callable[[int, PutOutcome], None]) -> None:
        """Write one file to its temp name (checked, not yet flushed), or report it already stored."""
        adapter = self.adapter
        dfd = self.folder(dirs)
        if adapter._same_as_existing(dfd, name, loc, item.size, digests):
            self.present.add(dirs)  # fsynced at commit: a crashed run may have linked it but not synced the folder
            report(index, PutOutcome.ALREADY_PRESENT)
            return
        src = placeable(adapter, item)
        placed = place_temp(adapter, dfd, name, loc, src, item.size) if src is not None else None
        tmp, fd = placed if placed is not None else adapter._create_temp(dfd, name, loc)
        self.pending.append(_Pending(index, dirs, name, loc, tmp, fd, item.size, digests))
        self.open_files += 1
        if placed is not None:
            adapter._seal(fd, item.mtime, loc, durable=False)
        else:
            adapter._fill(fd, item.src, item.size, None, item.mtime, loc, durable=False)  # checked after the flush
        self.bytes += item.size

    def commit(self, report: Callable[[int, PutOutcome], None], checked: Optional[ItemChecked] = None) -> None:
        """Flush once, re-read and check every waiting file, then give each its name, then fsync
        each folder touched once."""
        self._make_durable()
        for p in self.pending:
            self._check(p)
        touched = set(self.present)
        try:
            for p in self.pending:
                try:
                    outcome, gone = self.adapter._link_new(self.folders[p.dirs], p.tmp, p.name, p.loc, p.size,
                                                           p.digests)
                except OSError as exc:
                    raise self.adapter._failure(exc, p.loc, writing=True) from None
                touched.add(p.dirs)
                stamp = self._release(p, unlink=not gone, stamp=checked is not None and outcome is PutOutcome.WRITTEN)
                report(p.index, outcome)
                if stamp is not None:
                    checked(p.index, stamp)  # type: ignore[misc]  # stamp is only taken when checked is given
        except BaseException:
            self._sync_folders(touched, strict=False)  # the names already given must survive a crash
            raise
        self._sync_folders(touched, strict=True)

    def _check(self, p: _Pending) -> None:
        """Re-read a flushed temp file through its own descriptor, from its first byte (pread: one
        call for a small file, no stream objects), and check it against the manifests
        (SourceMismatch names it; the batch then names nothing)."""
        hasher = MultiHasher(p.digests.keys())
        chunk = min(CHUNK, p.size + 1)
        try:
            while hasher.size <= p.size:
                data = os.pread(p.fd, chunk, hasher.size)
                if not data:
                    break
                hasher.update(data)
        except OSError as exc:
            raise self.adapter._failure(exc, p.loc, writing=False) from None
        check_hashed(hasher, p.size, p.digests, target=self.adapter.name, location=p.loc)

    def _make_durable(self) -> None:
        by_dev: Dict[int, List[_Pending]] = {}
        for p in self.pending:
            by_dev.setdefault(self.folder_dev[p.dirs], []).append(p)
        for dev, group in by_dev.items():
            dirs = self.first_on_dev[dev]
            fd = self.folders[dirs]
            if len(group) > 1 and self.syncfs_is_durable(fd):
                try:
                    self.syncfs(fd)
                except OSError as exc:
                    err = self.adapter._failure(exc, self.path(dirs), writing=True)
                    raise StorageError(f"{err.message} (while making {len(group)} new files durable; none of "
                                       "them was given its name)", target=self.adapter.name,
                                       location=self.path(dirs)) from exc
            else:
                for p in group:  # one file, or a file system whose syncfs() is not trusted
                    try:
                        os.fsync(p.fd)
                    except OSError as exc:
                        raise self.adapter._failure(exc, p.loc, writing=True) from None

    def _sync_folders(self, touched: Set[Tuple[str, ...]], *, strict: bool) -> None:
        for dirs in sorted(touched):
            try:
                os.fsync(self.folders[dirs])
            except OSError as exc:
                if strict:
                    raise self.adapter._failure(exc, self.path(dirs), writing=True) from None

    def _release(self, p: _Pending, *, unlink: bool, stamp: bool = False) -> Optional[CheckedStamp]:
        """Drop a file's temp name (unless renamed away) and close it; with `stamp`, the named
        file's stamp, taken last (the rename and unlink change its ctime), or None when its name
        no longer leads to the file checked."""
        try:
            if unlink:
                with contextlib.suppress(OSError):
                    os.unlink(p.tmp, dir_fd=self.folders[p.dirs])
            if stamp:
                return _named_stamp(p.fd, self.folders[p.dirs], p.name)
            return None
        finally:
            p.open = False
            self.open_files -= 1
            os.close(p.fd)  # releases the lock last: nobody may remove the temp name while it is ours

    def close(self) -> None:
        """Remove the temp files still waiting (a failure), close everything, start empty."""
        try:
            for p in self.pending:
                if p.open:
                    self._release(p, unlink=True)
        finally:
            for fd in self.folders.values():
                with contextlib.suppress(OSError):
                    os.close(fd)
            self.folders.clear()
            self.folder_dev.clear()
            self.first_on_dev.clear()
            self.pending.clear()
            self.present.clear()
            self.bytes = 0
            self.open_files = 0
