"""The embedded default target: bags as plain folders under a root folder (a local disk, a NAS mount).

Layout: `<root>/<LIB>/<COLL>/<bag-name>/<path inside bag>`, one file per bag file.

How a file is written, so that a crash (kill -9, power loss) never leaves a partial file under
its final name and a rerun does only what is missing:
  1. the bytes go to `.<name>.strongroom-part` in the same folder, opened with O_EXCL and held
     under an exclusive flock() for as long as the writer lives; every byte is digested on the
     way and checked against the manifest digests before the file may get its name;
  2. the temp file is fsynced, made read-only (0444) and hard-linked to the final name:
     link() fails if the name exists, so nothing is ever overwritten, even by a concurrent
     writer. (On file systems without hard links, an existence check plus rename is used.)
  3. the temp name is removed and the folder fsynced.

A temp file left by a crash is no longer locked: the next put of that file, or cleanup_temp(),
removes it; a locked one belongs to a live writer and is left alone. Temp names are never
listed.

`put_files` does the same for many files at once, with the flushes shared (a flush per file
costs milliseconds; thousands of small files took minutes):
  1. each file is written and checked under its locked temp name as above, without fsync;
  2. ONE flush makes all of them durable: syncfs() of their file system, on Linux local file
     systems where that is known to write back every dirty file and to report write-back errors
     (ext2/3/4, xfs, btrfs, f2fs, tmpfs since Linux 5.8; overlayfs since 5.15).
     Elsewhere (NFS, SMB, FUSE, other systems), where syncfs() may not reach the server or
     may swallow an error, each file is fsynced, as by put_file;
  3. only then does each file get its final name by link() (never overwriting: same
     ReplicaConflict/ALREADY_PRESENT rules), and each folder touched is fsynced once.
A crash at any point leaves files that already have their names (complete, checked, durable)
and unlocked temp files, never a partial or unflushed file under a final name; the next put
removes the leftovers as usual. At most `batch_files` files / `batch_bytes` bytes
(and a share of the open-file limit: each waiting file keeps its locked descriptor) wait for one
flush; bigger calls are split.

Every path below the root is opened without following any symbolic link, at any level, and
without leaving the root: with one openat2(2) call (RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS,
`safe_open`) where the kernel has it, else relative to its parent folder's descriptor with
O_NOFOLLOW, component by component. Only regular files are read as stored files. A link, FIFO,
socket, device, or a folder where a file belongs (or a file where a folder belongs) is an
OddObject: damage, named with its place, which repair moves aside (`move_aside`, into
`<root>/.strongroom-aside/<UTC stamp>/...`, never listed as a bag) before storing a good copy.
The root itself may be a link (an admin's choice in the config).
A missing root is an error, never created here: writing into an unmounted mount point would
fill the local disk instead of the NAS. Needs POSIX (flock, *at system calls): Linux, macOS.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import hashlib
import io
import os
import re
import resource
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Set, Tuple

from ingest.naming import BagId

from . import safe_open
from .base import (
    CHUNK,
    FileStat,
    HashingReader,
    ItemDone,
    NotFound,
    OddObject,
    PutItem,
    PutOutcome,
    ReplicaConflict,
    Source,
    StorageAdapter,
    StorageError,
    UnsafePath,
    bag_segments,
    check_aside_key,
    check_digests,
    check_relpath,
    check_unique_relpaths,
    hash_stream,
    open_source,
    read_buffer,
)

TEMP_SUFFIX = ".strongroom-part"
NAME_MAX = 255
#: Where repair moves odd objects and extra files: `<root>/ASIDE_DIR/<stamp>/<LIB>/<COLL>/<bag>/...`.
#: Its name starts with a dot, so it is never taken for a library by list_bags.
ASIDE_DIR = ".strongroom-aside"
_STAMP = re.compile(r"^[0-9]{8}T[0-9]{6}([0-9]{0,6})Z\Z")
_O_PATH = getattr(os, "O_PATH", 0)

_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_NOFOLLOW = os.O_NOFOLLOW
_O_NOATIME = getattr(os, "O_NOATIME", 0)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | _O_CLOEXEC
# ASCII digits and \Z, never \d and $: these read folder names from a replica (rebuild, list_bags,
# the aside folder); an Arabic-Indic digit or a trailing newline must not pass for a bag or stamp.
_CODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
_BAG_NAME = re.compile(r"^[0-9]{8}T[0-9]{6}Z-[0-9]+\Z")

# link() errors meaning "this file system has no hard links" (FAT/exFAT, some SMB mounts).
_NO_HARDLINKS = {errno.EPERM, errno.EOPNOTSUPP, getattr(errno, "ENOTSUP", errno.EOPNOTSUPP), errno.EMLINK}

_WRITE_REASONS = {
    errno.EACCES: "not writable (permission denied)",
    errno.EPERM: "not writable (operation not permitted)",
    errno.EROFS: "not writable (read-only file system)",
    errno.ENOSPC: "cannot write: no space left on device",
    getattr(errno, "EDQUOT", -1): "cannot write: disk quota exceeded",
    errno.EFBIG: "cannot write: file too large for this file system",
    errno.ENAMETOOLONG: "cannot write: name too long for this file system",
}


# --------------------------------------------------------------------------------------------
# One flush for many files

# statfs() magic numbers (linux/magic.h) of file systems whose syncfs() writes back every dirty
# file and directory of the file system, with the first Linux release whose syncfs() also
# reports write-back errors (before that an I/O error during write-back was silently lost).
_SYNCFS_DURABLE = {
    0xEF53: (5, 8),        # ext2/3/4
    0x58465342: (5, 8),    # xfs
    0x9123683E: (5, 8),    # btrfs
    0xF2F52010: (5, 8),    # f2fs
    0x01021994: (5, 8),    # tmpfs (nothing to write back)
    0x794C7630: (5, 15),   # overlayfs: syncs its upper file system, errors reported since 5.15
}


def _kernel_release() -> Optional[Tuple[int, int]]:
    if not sys.platform.startswith("linux"):
        return None
    numbers = re.findall(r"[0-9]+", os.uname().release)
    return (int(numbers[0]), int(numbers[1])) if len(numbers) >= 2 else None


def _load_libc():
    if _kernel_release() is None:
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syncfs.argtypes = [ctypes.c_int]
        libc.fstatfs.argtypes = [ctypes.c_int, ctypes.c_void_p]
        return libc
    except (OSError, AttributeError):
        return None


_KERNEL = _kernel_release()
_LIBC = _load_libc()


def syncfs_is_durable(fd: int) -> bool:
    """True if syncfs(fd) makes every written file of fd's file system durable and reports
    write-back errors, like an fsync of each; False where only per-file fsync is trusted."""
    if _LIBC is None or _KERNEL is None:
        return False
    buf = ctypes.create_string_buffer(256)  # struct statfs: f_type (a C long) comes first
    if _LIBC.fstatfs(fd, buf) != 0:
        return False
    magic = ctypes.c_long.from_buffer(buf).value & 0xFFFFFFFF
    needs = _SYNCFS_DURABLE.get(magic)
    return needs is not None and _KERNEL >= needs


def syncfs(fd: int) -> None:
    """syncfs(2): write back the whole file system holding fd; OSError on failure.

    Reports write-back errors that happened since fd was opened, so fd must be opened before
    the files it is meant to cover are written."""
    if _LIBC is None:
        raise OSError(errno.ENOSYS, "syncfs is not available on this system")
    if _LIBC.syncfs(fd) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def fd_budget() -> int:
    """How many descriptors one put_files may hold at once: a quarter of the open-file limit
    (leaving room for the rest of the process and for parallel calls), at least 16."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 16
    return max(16, (soft - 64) // 4)


def temp_name(name: str) -> str:
    """The temp name of a file being written; deterministic, so a rerun finds a crash's leftover."""
    candidate = "." + name + TEMP_SUFFIX
    if len(os.fsencode(candidate)) <= NAME_MAX:
        return candidate
    return "." + hashlib.sha256(os.fsencode(name)).hexdigest()[:40] + TEMP_SUFFIX


def is_temp_name(name: str) -> bool:
    return name.startswith(".") and name.endswith(TEMP_SUFFIX) and len(name) > len(TEMP_SUFFIX) + 1


def what_is(mode: int) -> str:
    """Plain words for a stored object's type, for findings ("a symbolic link", "a FIFO"...)."""
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISREG(mode):
        return "a file"
    return "an object of unknown type"


def _write_all(fd: int, data: memoryview) -> None:
    while data:
        n = os.write(fd, data)
        data = data[n:]


class FilesystemAdapter(StorageAdapter):
    """Bags as folders under `root`. Thread-safe: every call uses its own descriptors."""

    type = "filesystem"
    #: put_files flushes at least this often (files, bytes): bounds dirty memory and open files
    batch_files = 1000
    batch_bytes = 1 << 30

    def __init__(self, name: str, site: str, root):
        super().__init__(name, site)
        self.root = Path(os.path.abspath(os.fspath(root)))

    # ------------------------------------------------------------------ where things are

    def location(self, bag_id: BagId, relpath: Optional[str] = None) -> str:
        parts = [str(self.root), *bag_segments(bag_id)]
        if relpath:
            parts.append(relpath)
        return "/".join(parts)

    def describe(self) -> Dict[str, object]:
        return {"name": self.name, "type": self.type, "site": self.site, "root": str(self.root),
                "available": self.root.is_dir()}

    def _key(self, bag_id: BagId, relpath: str) -> Tuple[Tuple[str, ...], str, str]:
        """(folders below the root, file name, location for messages); UnsafePath for a bad path."""
        loc = self.location(bag_id, relpath)
        try:
            segments = check_relpath(relpath)
        except ValueError as exc:
            raise UnsafePath(f"refused bag path: {exc}", target=self.name, location=loc) from None
        for seg in segments:
            if is_temp_name(seg):
                raise UnsafePath(f"refused bag path: {seg!r} has the form Strongroom reserves for its "
                                 f"temporary files (.NAME{TEMP_SUFFIX})", target=self.name, location=loc)
        return bag_segments(bag_id) + segments[:-1], segments[-1], loc

    # ------------------------------------------------------------------ errors

    def _failure(self, exc: OSError, location: str, *, writing: bool) -> StorageError:
        if isinstance(exc, StorageError):
            return exc
        if writing and exc.errno in _WRITE_REASONS:
            message = _WRITE_REASONS[exc.errno]
        elif exc.errno in (errno.EACCES, errno.EPERM):
            message = "not readable (permission denied)"
        else:
            message = f"cannot {'write' if writing else 'read'} ({exc.strerror or exc})"
        err = StorageError(message, target=self.name, location=location)
        err.__cause__ = exc
        return err

    # ------------------------------------------------------------------ folders

    def _open_root(self) -> int:
        try:
            return os.open(self.root, _DIR_FLAGS)
        except FileNotFoundError:
            raise StorageError("storage folder does not exist (is the volume mounted? `strongroom init` "
                               "creates the folders of a new archive)", target=self.name,
                               location=str(self.root)) from None
        except NotADirectoryError:
            raise StorageError("storage root is not a folder", target=self.name, location=str(self.root)) from None
        except OSError as exc:
            raise self._failure(exc, str(self.root), writing=False) from None

    @contextlib.contextmanager
    def _dir(self, segments: Tuple[str, ...], *, create: bool) -> Iterator[int]:
        """A descriptor of root/segments..., reached without following any symbolic link: one
        openat2 call where it works, else (and to name what is wrong) walked folder by folder."""
        fd = self._open_root()
        path = str(self.root)
        if segments and safe_open.available():
            try:
                child = safe_open.openat2(fd, "/".join(segments), _DIR_FLAGS)
            except OSError:
                pass   # the walk below creates what is missing or says precisely what is wrong
            else:
                os.close(fd)
                fd, segments = child, ()
        try:
            for seg in segments:
                path += "/" + seg
                try:
                    child = self._open_child_dir(fd, seg, path, create)
                except OSError as exc:
                    raise self._failure(exc, path, writing=create) from None
                os.close(fd)
                fd = child
            yield fd
        finally:
            os.close(fd)

    def _open_child_dir(self, parent: int, name: str, path: str, create: bool) -> int:
        try:
            return os.open(name, _DIR_FLAGS | _O_NOFOLLOW, dir_fd=parent)
        except FileNotFoundError:
            if not create:
                raise NotFound("not stored here", target=self.name, location=path) from None
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
            self._refuse_non_dir(parent, name, path)
        try:
            os.mkdir(name, 0o755, dir_fd=parent)
        except FileExistsError:
            pass  # made by a concurrent writer: fine, opened below
        else:
            os.fsync(parent)  # the new folder's entry must survive a crash before files go in
        try:
            return os.open(name, _DIR_FLAGS | _O_NOFOLLOW, dir_fd=parent)
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
            self._refuse_non_dir(parent, name, path)
            raise

    def _refuse_non_dir(self, parent: int, name: str, path: str) -> None:
        st = os.stat(name, dir_fd=parent, follow_symlinks=False)
        key = self._key_of(path)
        if stat.S_ISLNK(st.st_mode):
            raise OddObject("is a symbolic link inside the storage target; refused (Strongroom never follows "
                            "links inside a target: it could lead outside the root, or to another copy)",
                            target=self.name, location=path, key=key, what=what_is(st.st_mode))
        raise OddObject(f"should be a folder but is {what_is(st.st_mode)}", target=self.name, location=path,
                        key=key, what=what_is(st.st_mode))

    def _key_of(self, location: str) -> str:
        """The root-relative key of a location this adapter built (root + '/' + key)."""
        prefix = str(self.root) + "/"
        return location[len(prefix):] if location.startswith(prefix) else location

    # ------------------------------------------------------------------ writing

    def put_file(self, bag_id: BagId, relpath: str, src: Source, *, size: int, digests: Mapping[str, str],
                 mtime: Optional[float] = None) -> PutOutcome:
        digests = check_digests(digests)
        dirs, name, loc = self._key(bag_id, relpath)
        with self._dir(dirs, create=True) as dfd:
            return self._store(dfd, name, loc, src, size, digests, mtime, replace=False)

    def replace_file(self, bag_id: BagId, relpath: str, src: Source, *, size: int, digests: Mapping[str, str],
                     mtime: Optional[float] = None) -> PutOutcome:
        digests = check_digests(digests)
        dirs, name, loc = self._key(bag_id, relpath)
        with self._dir(dirs, create=True) as dfd:
            return self._store(dfd, name, loc, src, size, digests, mtime, replace=True)

    def put_files(self, bag_id: BagId, items: Sequence[PutItem], *,
                  on_done: Optional[ItemDone] = None) -> List[PutOutcome]:
        """Batch put (see the module docstring): one flush per batch instead of one per file.

        Every key and digest is checked before anything is written. A failure before the names
        are given (a bad source, a full disk, a conflict found up front, a failed flush)
        removes the batch's temp files: none of its new files gets a name.
        """
        check_unique_relpaths(items)
        work = []
        for index, item in enumerate(items):
            digests = check_digests(item.digests)
            dirs, name, loc = self._key(bag_id, item.relpath)
            work.append((index, item, digests, dirs, name, loc))
        outcomes: List[Optional[PutOutcome]] = [None] * len(items)

        def report(index: int, outcome: PutOutcome) -> None:
            outcomes[index] = outcome
            if on_done is not None:
                on_done(index, outcome)

        max_fds = fd_budget()
        batch = _Batch(self)
        try:
            for index, item, digests, dirs, name, loc in work:
                if batch.pending and (len(batch.pending) >= self.batch_files
                                      or batch.bytes + item.size > self.batch_bytes
                                      or batch.open_fds + len(dirs) + 2 > max_fds):
                    batch.commit(report)
                    batch.close()
                batch.add(index, item, digests, dirs, name, loc, report)
            batch.commit(report)
        finally:
            batch.close()
        return outcomes  # type: ignore[return-value]  # every item was reported

    def _store(self, dfd: int, name: str, loc: str, src: Source, size: int, digests: Dict[str, str],
               mtime: Optional[float], *, replace: bool) -> PutOutcome:
        if not replace and self._same_as_existing(dfd, name, loc, size, digests):
            return PutOutcome.ALREADY_PRESENT
        if replace:
            self._refuse_odd(dfd, name, loc)
        tmp, fd = self._create_temp(dfd, name, loc)
        tmp_gone = False
        try:
            self._fill(fd, src, size, digests, mtime, loc)
            try:
                if replace:
                    os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
                    tmp_gone = True
                    outcome = PutOutcome.WRITTEN
                else:
                    outcome, tmp_gone = self._link_new(dfd, tmp, name, loc, size, digests)
                os.fsync(dfd)
            except OSError as exc:
                raise self._failure(exc, loc, writing=True) from None
            return outcome
        finally:
            if not tmp_gone:
                with contextlib.suppress(OSError):
                    os.unlink(tmp, dir_fd=dfd)
            os.close(fd)  # releases the lock last: nobody may remove the temp name while it is ours

    def _link_new(self, dfd: int, tmp: str, name: str, loc: str, size: int,
                  digests: Dict[str, str]) -> Tuple[PutOutcome, bool]:
        """Give the finished temp file its final name without ever replacing anything there."""
        try:
            os.link(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd, follow_symlinks=False)
            return PutOutcome.WRITTEN, False
        except FileExistsError:
            pass  # a concurrent writer was faster
        except OSError as exc:
            if exc.errno not in _NO_HARDLINKS:
                raise
            if not self._same_as_existing(dfd, name, loc, size, digests):
                # No hard links here: rename, after a fresh check (a tiny race window remains).
                os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
                return PutOutcome.WRITTEN, True
            return PutOutcome.ALREADY_PRESENT, False
        if self._same_as_existing(dfd, name, loc, size, digests):
            return PutOutcome.ALREADY_PRESENT, False
        raise StorageError("appeared and vanished again while being written; try again", target=self.name,
                           location=loc)

    def _refuse_odd(self, dfd: int, name: str, loc: str) -> None:
        """OddObject if something other than a regular file is stored under `name`: a repair
        never replaces a link, FIFO or folder in place (a folder may hold files); it is moved
        aside first (`move_aside`)."""
        try:
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise self._failure(exc, loc, writing=True) from None
        if not stat.S_ISREG(st.st_mode):
            raise OddObject(f"is {what_is(st.st_mode)}, not a regular file; not replaced in place",
                            target=self.name, location=loc, key=self._key_of(loc), what=what_is(st.st_mode))

    def _same_as_existing(self, dfd: int, name: str, loc: str, size: int, digests: Dict[str, str]) -> bool:
        """False if nothing is stored under `name`; True if the same bytes are; else ReplicaConflict."""
        try:
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise self._failure(exc, loc, writing=False) from None
        if stat.S_ISLNK(st.st_mode):
            raise UnsafePath("a symbolic link is stored here; refused (never followed, never replaced by a "
                             "plain put)", target=self.name, location=loc)
        if not stat.S_ISREG(st.st_mode):
            raise ReplicaConflict("something other than a regular file is stored here; not overwriting it",
                                  target=self.name, location=loc)
        if st.st_size != size:
            raise ReplicaConflict(f"a different file is already stored here ({st.st_size} bytes; the new one "
                                  f"has {size}); not overwriting it", target=self.name, location=loc)
        with self._open_regular(dfd, name, loc) as fh:
            try:
                found_size, found = hash_stream(fh, digests.keys(), chunk_size=min(CHUNK, size + 1))
            except OSError as exc:
                raise self._failure(exc, loc, writing=False) from None
        wrong = [f"{a} {found[a]} stored, {digests[a]} new" for a in digests if found[a] != digests[a]]
        if found_size != size or wrong:
            detail = "; ".join(wrong) or f"{found_size} bytes read"
            raise ReplicaConflict(f"a different file is already stored here ({detail}); not overwriting it",
                                  target=self.name, location=loc)
        return True

    def _create_temp(self, dfd: int, name: str, loc: str) -> Tuple[str, int]:
        """Create and lock this file's temp file; a crash's unlocked leftover is removed first."""
        tmp = temp_name(name)
        busy = StorageError("is being written by another process right now (its temporary file is locked); "
                            "try again when that process has finished", target=self.name, location=loc)
        for _ in range(2):
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW | _O_CLOEXEC, 0o600,
                             dir_fd=dfd)
            except FileExistsError:
                if not self._remove_if_stale(dfd, tmp, loc):
                    raise busy from None
                continue
            except OSError as exc:
                raise self._failure(exc, loc, writing=True) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                # A cleaner may have removed the name between our create and our lock.
                if os.stat(tmp, dir_fd=dfd, follow_symlinks=False).st_ino != os.fstat(fd).st_ino:
                    raise BlockingIOError
            except (BlockingIOError, FileNotFoundError):
                os.close(fd)
                raise busy from None
            except BaseException:
                os.close(fd)
                raise
            return tmp, fd
        raise busy

    def _remove_if_stale(self, dfd: int, tmp: str, loc: str) -> bool:
        """Remove a temp file nobody holds locked (its writer died); False if a live writer has it."""
        try:
            fd = os.open(tmp, os.O_RDONLY | _O_NOFOLLOW | _O_CLOEXEC | os.O_NONBLOCK, dir_fd=dfd)
        except FileNotFoundError:
            return True
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise self._failure(exc, loc, writing=True) from None
            fd = None  # a link planted under our temp name: removing the link itself is safe
        try:
            if fd is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return False
                with contextlib.suppress(FileNotFoundError):
                    if os.stat(tmp, dir_fd=dfd, follow_symlinks=False).st_ino != os.fstat(fd).st_ino:
                        return False  # replaced by a new writer's file meanwhile
            try:
                os.unlink(tmp, dir_fd=dfd)
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise self._failure(exc, loc, writing=True) from None
            return True
        finally:
            if fd is not None:
                os.close(fd)

    def _fill(self, fd: int, src: Source, size: int, digests: Dict[str, str], mtime: Optional[float],
              loc: str, *, durable: bool = True) -> None:
        """Copy the source into the temp file, digesting it; read-only when it returns, and
        durable unless `durable` is False (put_files flushes a whole batch at once)."""
        with open_source(src, target=self.name) as stream:
            reader = HashingReader(stream, digests.keys())
            buf = read_buffer(size)
            view = memoryview(buf)
            while True:
                try:
                    n = reader.readinto(buf)
                except StorageError:
                    raise
                except OSError as exc:
                    raise StorageError(f"cannot read the source ({exc.strerror or exc}); nothing was stored",
                                       target=self.name, location=loc) from exc
                if not n:
                    break
                try:
                    _write_all(fd, view[:n])
                except OSError as exc:
                    raise self._failure(exc, loc, writing=True) from None
                if reader.hasher.size > size:
                    break  # longer than announced: stop filling the disk, check() says so
            reader.check(size, digests, target=self.name, location=loc)
        try:
            os.fchmod(fd, 0o444)  # a preservation copy is not edited in place
            if mtime is not None:
                whole = int(mtime // 1)  # split first: a float has too few digits for epoch nanoseconds
                ns = whole * 1_000_000_000 + int(round((mtime - whole) * 1_000_000_000))
                os.utime(fd, ns=(ns, ns))
            if durable:
                os.fsync(fd)
        except OSError as exc:
            raise self._failure(exc, loc, writing=True) from None

    def delete_file(self, bag_id: BagId, relpath: str) -> None:
        dirs, name, loc = self._key(bag_id, relpath)
        with self._dir(dirs, create=False) as dfd:
            try:
                st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    raise StorageError("is a folder, not a file; not deleted", target=self.name, location=loc)
                os.unlink(name, dir_fd=dfd)  # a symbolic link is removed itself, never followed
                os.fsync(dfd)
            except FileNotFoundError:
                raise NotFound("not stored here", target=self.name, location=loc) from None
            except OSError as exc:
                raise self._failure(exc, loc, writing=True) from None

    can_move_aside = True

    def move_aside(self, bag_id: BagId, key: str, stamp: str) -> str:
        """Rename whatever is at `key` (a file, link, FIFO, a folder with all it holds) to
        `<root>/.strongroom-aside/<stamp>/<key>` (`<key>.1`, `.2`... if taken): nothing is
        followed, nothing deleted, and a rename within the root is atomic."""
        try:
            segments = check_aside_key(bag_id, key)
        except ValueError as exc:
            raise UnsafePath(f"refused: {exc}", target=self.name, location=str(self.root)) from None
        if not _STAMP.match(stamp):
            raise ValueError(f"{stamp!r} is not a UTC stamp (YYYYMMDDTHHMMSS[ffffff]Z)")
        loc = "/".join((str(self.root),) + segments)
        name = segments[-1]
        with self._dir(segments[:-1], create=False) as src:
            try:
                os.stat(name, dir_fd=src, follow_symlinks=False)
            except FileNotFoundError:
                raise NotFound("not stored here", target=self.name, location=loc) from None
            except OSError as exc:
                raise self._failure(exc, loc, writing=True) from None
            aside = (ASIDE_DIR, stamp) + segments[:-1]
            with self._dir(aside, create=True) as dst:
                for n in range(1000):
                    new = name if n == 0 else f"{name}.{n}"
                    try:
                        safe_open.rename_noreplace(src, name, dst, new)
                    except FileExistsError:
                        continue
                    except OSError as exc:
                        raise self._failure(exc, loc, writing=True) from None
                    break
                else:
                    raise StorageError("cannot be moved aside: 1000 things of that name are already there",
                                       target=self.name, location=loc)
                try:
                    os.fsync(dst)
                    os.fsync(src)
                except OSError as exc:
                    raise self._failure(exc, loc, writing=True) from None
        return "/".join((str(self.root),) + aside + (new,))

    def find_aside(self, bag_id: BagId, key: str) -> List[str]:
        try:
            segments = check_aside_key(bag_id, key)
        except ValueError:
            return []
        out: List[str] = []
        for stamp, is_dir in self._entries((ASIDE_DIR,)) or ():
            if not (is_dir and _STAMP.match(stamp)):
                continue
            try:
                with self._dir((ASIDE_DIR, stamp) + segments[:-1], create=False) as fd:
                    names = sorted(n for n in os.listdir(fd)
                                   if n == segments[-1] or re.fullmatch(re.escape(segments[-1]) + r"\.[0-9]+", n))
            except (StorageError, OSError):
                continue
            out.extend("/".join((str(self.root), ASIDE_DIR, stamp) + segments[:-1] + (n,)) for n in names)
        return out

    # ------------------------------------------------------------------ reading

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


class _Batch:
    """The state of one put_files batch: folder descriptors, files waiting, folders to fsync.

    `close()` always runs: it removes the temp files of files that did not get their name and
    closes every descriptor, so a failure leaves nothing but what was completely stored.
    """

    def __init__(self, adapter: FilesystemAdapter):
        self.adapter = adapter
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
        tmp, fd = adapter._create_temp(dfd, name, loc)
        self.pending.append(_Pending(index, dirs, name, loc, tmp, fd, item.size, digests))
        self.open_files += 1
        adapter._fill(fd, item.src, item.size, digests, item.mtime, loc, durable=False)
        self.bytes += item.size

    def commit(self, report: Callable[[int, PutOutcome], None]) -> None:
        """Flush once, then give every waiting file its name, then fsync each folder touched once."""
        self._make_durable()
        touched = set(self.present)
        try:
            for p in self.pending:
                try:
                    outcome, gone = self.adapter._link_new(self.folders[p.dirs], p.tmp, p.name, p.loc, p.size,
                                                           p.digests)
                except OSError as exc:
                    raise self.adapter._failure(exc, p.loc, writing=True) from None
                touched.add(p.dirs)
                self._release(p, unlink=not gone)
                report(p.index, outcome)
        except BaseException:
            self._sync_folders(touched, strict=False)  # the names already given must survive a crash
            raise
        self._sync_folders(touched, strict=True)

    def _make_durable(self) -> None:
        by_dev: Dict[int, List[_Pending]] = {}
        for p in self.pending:
            by_dev.setdefault(self.folder_dev[p.dirs], []).append(p)
        for dev, group in by_dev.items():
            dirs = self.first_on_dev[dev]
            fd = self.folders[dirs]
            if len(group) > 1 and syncfs_is_durable(fd):
                try:
                    syncfs(fd)
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

    def _release(self, p: _Pending, *, unlink: bool) -> None:
        try:
            if unlink:
                with contextlib.suppress(OSError):
                    os.unlink(p.tmp, dir_fd=self.folders[p.dirs])
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


__all__ = ["FilesystemAdapter", "ASIDE_DIR", "what_is", "TEMP_SUFFIX", "temp_name", "is_temp_name", "syncfs", "syncfs_is_durable",
           "fd_budget"]
