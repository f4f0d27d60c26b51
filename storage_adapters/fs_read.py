"""Reading and listing the folder target: stored files opened (and stat'ed, and listed) without
following any symbolic link and without leaving the root (see `filesystem`).

`StoredReads` is a part of `FilesystemAdapter` (a mixin: it uses the adapter's folder walk,
`_dir`, `_key` and `_failure`); `_StoredFile` is the stream it hands out; `FolderReads` opens
many files of one bag (a whole-bag check) through folder descriptors kept open.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import stat
import threading
from collections import OrderedDict
from typing import Dict, Iterator, List, Optional, Tuple

from strongroom.bag_id import BagId

from . import safe_open
from .base import CHUNK, BagReads, CheckedStamp, FileStat, NotFound, OddObject, StorageError, bag_segments
from .fs_common import _BAG_NAME, _CODE, _O_CLOEXEC, _O_NOATIME, _O_NOFOLLOW, _O_PATH, is_temp_name, what_is


class StoredReads:
    """The reading and listing methods of `FilesystemAdapter`."""

    def _open_stored(self, bag_id: BagId, relpath: str) -> Tuple[int, os.stat_result]:
        """(descriptor, fstat) of a stored regular file, opened following no link at any level
        and staying below the root; NotFound if absent, OddObject for anything but a file."""
        dirs, name, loc = self._key(bag_id, relpath)
        if not safe_open.available():
            with self._dir(dirs, create=False) as dfd:
                return self._open_read_fd(dfd, name, loc)
        root = self._open_root()
        key = "/".join(dirs + (name,))
        flags = os.O_RDONLY | _O_NOFOLLOW | _O_CLOEXEC | os.O_NONBLOCK  # NONBLOCK: a planted FIFO must not hang us
        try:
            for attempt in range(3):
                try:
                    fd = safe_open.openat2(root, key, flags | _O_NOATIME)
                    break
                except PermissionError:
                    if not _O_NOATIME:
                        raise
                    fd = safe_open.openat2(root, key, flags)  # O_NOATIME needs ownership
                    break
                except BlockingIOError:   # EAGAIN: a concurrent rename; the kernel asks to try again
                    if attempt == 2:
                        raise
        except FileNotFoundError:
            raise NotFound("not stored here", target=self.name, location=loc) from None
        except OSError:
            # Something odd on the way (ELOOP, ENOTDIR, EXDEV) or in the file's place (a socket:
            # ENXIO), or a real read error: the walk names what is wrong, and where.
            with self._dir(dirs, create=False) as dfd:
                return self._open_read_fd(dfd, name, loc)
        finally:
            os.close(root)
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise self._odd_file(st.st_mode, loc)
        return fd, st   # O_NONBLOCK means nothing for a regular file: no system call to clear it

    def _odd_file(self, mode: int, loc: str) -> OddObject:
        what = what_is(mode)
        return OddObject(f"is {what}; a stored bag file must be a regular file", target=self.name, location=loc,
                         key=self._key_of(loc), what=what)

    @staticmethod
    def _file_stat(st: os.stat_result) -> FileStat:
        return FileStat(size=st.st_size, mtime=st.st_mtime, stored_digests={}, identity=(st.st_dev, st.st_ino),
                        links=st.st_nlink)

    @contextlib.contextmanager
    def _open_regular(self, dfd: int, name: str, loc: str):
        fd, _ = self._open_read_fd(dfd, name, loc)
        with os.fdopen(fd, "rb", buffering=0) as fh:
            yield fh

    def _open_read_fd(self, dfd: int, name: str, loc: str) -> Tuple[int, os.stat_result]:
        flags = os.O_RDONLY | _O_NOFOLLOW | _O_CLOEXEC | os.O_NONBLOCK  # NONBLOCK: a planted FIFO must not hang us
        try:
            try:
                fd = os.open(name, flags | _O_NOATIME, dir_fd=dfd) if _O_NOATIME else os.open(name, flags, dir_fd=dfd)
            except PermissionError:
                if not _O_NOATIME:
                    raise
                fd = os.open(name, flags, dir_fd=dfd)  # O_NOATIME needs ownership; audits still work without
        except FileNotFoundError:
            raise NotFound("not stored here", target=self.name, location=loc) from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise OddObject("is a symbolic link inside the storage target; refused (never followed)",
                                target=self.name, location=loc, key=self._key_of(loc),
                                what="a symbolic link") from None
            try:   # a socket cannot be opened at all (ENXIO): say what it is, not "cannot read"
                mode = os.stat(name, dir_fd=dfd, follow_symlinks=False).st_mode
            except OSError:
                mode = stat.S_IFREG
            if not stat.S_ISREG(mode):
                raise self._odd_file(mode, loc) from None
            raise self._failure(exc, loc, writing=False) from None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise self._odd_file(st.st_mode, loc)
        return fd, st   # O_NONBLOCK means nothing for a regular file

    def open_file(self, bag_id: BagId, relpath: str):
        fd, st = self._open_stored(bag_id, relpath)
        return _StoredFile(fd, st)

    def stream_identity(self, stream) -> Optional[Tuple[int, int, int]]:
        st = getattr(stream, "stored_stat", None)
        if st is not None:
            return st.st_dev, st.st_ino, st.st_nlink
        try:
            st = os.fstat(stream.fileno())
        except (AttributeError, OSError, ValueError):   # not a stream of ours (a test double, a wrapper)
            return None
        return st.st_dev, st.st_ino, st.st_nlink

    def folder_identity(self, bag_id: BagId) -> Optional[Tuple[int, int]]:
        try:
            with self._dir(bag_segments(bag_id), create=False) as fd:
                st = os.fstat(fd)
        except StorageError:   # not there, or odd: the listing says so
            return None
        return st.st_dev, st.st_ino

    def open_with_stat(self, bag_id: BagId, relpath: str):
        """One open: the fstat of the descriptor read is the stat (and the identity) of the bytes read."""
        try:
            fd, st = self._open_stored(bag_id, relpath)
        except NotFound:
            return None
        return self._file_stat(st), os.fdopen(fd, "rb")

    def reading(self, bag_id: BagId) -> "FolderReads":
        return FolderReads(self, bag_id)

    def stat_file(self, bag_id: BagId, relpath: str) -> Optional[FileStat]:
        dirs, name, loc = self._key(bag_id, relpath)
        if safe_open.available() and _O_PATH:
            root = self._open_root()
            try:
                # O_PATH | O_NOFOLLOW: the last component itself (a link is not an error here,
                # fstat says what it is); a link on the way is (ELOOP).
                fd = safe_open.openat2(root, "/".join(dirs + (name,)), _O_PATH | _O_NOFOLLOW)
            except FileNotFoundError:
                return None
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR, errno.EXDEV):
                    raise self._failure(exc, loc, writing=False) from None
                fd = None   # something odd on the way: the walk below names it
            finally:
                os.close(root)
            if fd is not None:
                try:
                    st = os.fstat(fd)
                finally:
                    os.close(fd)
                if not stat.S_ISREG(st.st_mode):
                    raise self._odd_file(st.st_mode, loc)
                return self._file_stat(st)
        try:
            with self._dir(dirs, create=False) as dfd:
                try:
                    st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
                except FileNotFoundError:
                    return None
                except OSError as exc:
                    raise self._failure(exc, loc, writing=False) from None
        except NotFound:
            return None
        if not stat.S_ISREG(st.st_mode):
            raise self._odd_file(st.st_mode, loc)
        return self._file_stat(st)

    # ------------------------------------------------------------------ listing

    def _entries(self, segments: Tuple[str, ...]):
        """Sorted (name, is_real_folder) of one folder; None if it is not there."""
        try:
            with self._dir(segments, create=False) as fd:
                try:
                    with os.scandir(fd) as it:
                        return sorted((e.name, e.is_dir(follow_symlinks=False)) for e in it)
                except OSError as exc:
                    raise self._failure(exc, "/".join((str(self.root),) + segments), writing=False) from None
        except NotFound:
            return None

    def _walk(self, segments: Tuple[str, ...], prefix: str = "") -> Iterator[Tuple[Tuple[str, ...], str, str]]:
        """(folder segments, name, bag path) of every non-folder entry, temp files included.

        A symbolic link (to anything) is reported as an entry, never descended into, so that
        verification names it instead of silently skipping it. Descriptors are closed before
        anything is yielded: abandoning the walk leaks nothing.
        """
        # Depth first in sorted order, with a stack rather than recursion: a bag of any depth
        # is listed (Python's recursion limit is about 1,000 frames).
        stack = [(segments, prefix, iter(self._entries(segments) or ()))]
        while stack:
            segs, pre, entries = stack[-1]
            for name, is_dir in entries:
                if is_dir:
                    stack.append((segs + (name,), f"{pre}{name}/", iter(self._entries(segs + (name,)) or ())))
                    break
                yield segs, name, pre + name
            else:
                stack.pop()

    def list_bag_files(self, bag_id: BagId) -> Iterator[str]:
        for _, name, relpath in self._walk(bag_segments(bag_id)):
            if not is_temp_name(name):
                yield relpath

    def list_bags(self) -> Iterator[BagId]:
        for lib, lib_dir in self._entries(()) or ():
            if not (lib_dir and _CODE.match(lib)):
                continue
            for coll, coll_dir in self._entries((lib,)) or ():
                if not (coll_dir and _CODE.match(coll)):
                    continue
                for name, bag_dir in self._entries((lib, coll)) or ():
                    if bag_dir and _BAG_NAME.match(name):
                        yield BagId.parse(f"{lib}/{coll}/{name}")

    def cleanup_temp(self, bag_id: BagId) -> int:
        removed = 0
        for segments, name, relpath in list(self._walk(bag_segments(bag_id))):
            if not is_temp_name(name):
                continue
            loc = "/".join((str(self.root),) + segments + (name,))
            try:
                with self._dir(segments, create=False) as dfd:
                    if self._remove_if_stale(dfd, name, loc):
                        removed += 1
                        os.fsync(dfd)
            except NotFound:
                continue
        return removed


class FolderReads(BagReads):
    """Many files of one bag opened through their folder's descriptor, kept open meanwhile.

    Why: opening every file from the root (open the root, openat2 the whole path, close the
    root: 3 calls and the whole folder chain resolved again per file) was most of the system
    calls of a deposit's Verify (issue 11). Here each folder is reached once, as `_dir`
    reaches it (openat2 RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS, or the walk without following
    links), and each file is opened relative to it by its single, checked name with
    O_NOFOLLOW: the same guarantee, one open per file. At most KEEP folders stay open.

    A kept descriptor still reads a folder that was moved or replaced after it was opened. So
    `problems()`, once the reads are over, reaches every folder read through again from the
    root and names each that is no longer the same folder (or no longer reachable): nothing
    read through a folder that left its place is taken for the stored bag.
    """

    KEEP = 64

    def __init__(self, adapter, bag_id: BagId):
        super().__init__(adapter, bag_id)
        self._open: "OrderedDict[Tuple[str, ...], int]" = OrderedDict()
        self._seen: Dict[Tuple[str, ...], Tuple[int, int]] = {}   # every folder read through: (dev, ino)
        self._lock = threading.Lock()   # verify_replica may read from several threads

    def __exit__(self, *exc) -> None:
        with self._lock:
            for fd in self._open.values():
                os.close(fd)
            self._open.clear()

    def _folder(self, dirs: Tuple[str, ...]) -> int:
        """The kept descriptor of root/dirs (opened as `_dir` opens it); NotFound if absent."""
        fd = self._open.get(dirs)
        if fd is not None:
            self._open.move_to_end(dirs)
            return fd
        with self.adapter._dir(dirs, create=False) as found:
            fd = os.dup(found)
        try:
            st = os.fstat(fd)
        except BaseException:
            os.close(fd)
            raise
        self._seen.setdefault(dirs, (st.st_dev, st.st_ino))
        self._open[dirs] = fd
        if len(self._open) > self.KEEP:
            os.close(self._open.popitem(last=False)[1])
        return fd

    def open_with_stat(self, relpath: str):
        adapter = self.adapter
        dirs, name, loc = adapter._key(self.bag_id, relpath)
        with self._lock:
            try:
                fd, st = adapter._open_read_fd(self._folder(dirs), name, loc)
            except NotFound:
                return None
        return adapter._file_stat(st), _StoredFile(fd, st)

    def stamp(self, relpath: str) -> Optional[CheckedStamp]:
        """The stored file's stamp, looked up through its kept folder by its single name without
        following a link; None when it is absent, not a regular file, or its folder cannot be
        reached (the full check that follows then says what is wrong)."""
        dirs, name, _ = self.adapter._key(self.bag_id, relpath)
        with self._lock:
            try:
                st = os.stat(name, dir_fd=self._folder(dirs), follow_symlinks=False)
            except (OSError, StorageError):
                return None
        return CheckedStamp.of(st) if stat.S_ISREG(st.st_mode) else None

    def problems(self) -> List[str]:
        out = []
        for dirs, identity in sorted(self._seen.items()):
            where = "/".join(dirs[3:]) or "(the bag folder)"
            try:
                with self.adapter._dir(dirs, create=False) as fd:
                    st = os.fstat(fd)
            except StorageError as exc:
                out.append(f"{where}: {exc.message} (after its files were read)")
                continue
            if (st.st_dev, st.st_ino) != identity:
                out.append(f"{where}: was replaced by another folder while its files were being read; "
                           "what was read is not what is stored there now")
        return out


class _StoredFile(io.BufferedReader):
    """A stored file opened for reading, with the fstat taken when it was opened (`stored_stat`):
    the audit compares copies' identities from it without another system call. Built directly
    rather than by open(), which asks the kernel whether a descriptor is a terminal."""

    def __init__(self, fd: int, st: os.stat_result):
        try:
            raw = io.FileIO(fd, "rb", closefd=True)
        except BaseException:
            os.close(fd)
            raise
        super().__init__(raw, buffer_size=max(io.DEFAULT_BUFFER_SIZE, min(CHUNK, st.st_blksize or 0)))
        self.stored_stat = st
