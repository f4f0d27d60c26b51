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

`put_files` does the same for many files at once, with one flush per batch instead of one per
file, and each file checked once, re-read after that flush and before its name: `fs_batch`. Reading and listing: `fs_read`.

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
import errno
import fcntl
import os
import re
import stat
from pathlib import Path
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

from strongroom.bag_id import BagId

from . import safe_open
from .base import (
    CHUNK,
    HashingReader,
    ItemChecked,
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
    check_size,
    check_relpath,
    check_unique_relpaths,
    hash_stream,
    open_source,
    read_buffer,
    read_into,
)
from .fs_batch import _Batch
from .fs_common import (  # noqa: F401  (re-exported: TEMP_SUFFIX, temp_name, is_temp_name, what_is)
    _DIR_FLAGS,
    _NO_HARDLINKS,
    _O_CLOEXEC,
    _O_NOFOLLOW,
    _STAMP,
    TEMP_SUFFIX,
    is_temp_name,
    WriteInProgress,
    temp_name,
    what_is,
)
# Looked up here at call time (tests replace them on this module).
from .fs_durability import fd_budget, syncfs, syncfs_is_durable
from .fs_read import StoredReads
from .fs_rename import rename_noreplace
from .fs_records import StoredRecords

#: Where repair moves odd objects and extra files: `<root>/ASIDE_DIR/<stamp>/<LIB>/<COLL>/<bag>/...`.
#: Its name starts with a dot, so it is never taken for a library by list_bags.
ASIDE_DIR = ".strongroom-aside"

_WRITE_REASONS = {
    errno.EACCES: "not writable (permission denied)",
    errno.EPERM: "not writable (operation not permitted)",
    errno.EROFS: "not writable (read-only file system)",
    errno.ENOSPC: "cannot write: no space left on device",
    getattr(errno, "EDQUOT", -1): "cannot write: disk quota exceeded",
    errno.EFBIG: "cannot write: file too large for this file system",
    errno.ENAMETOOLONG: "cannot write: name too long for this file system",
}


def _write_all(fd: int, data: memoryview) -> None:
    while data:
        n = os.write(fd, data)
        data = data[n:]


class FilesystemAdapter(StoredReads, StoredRecords, StorageAdapter):
    """Bags as folders under `root`. Thread-safe: every call uses its own descriptors.

    Reading and listing come from `StoredReads` (fs_read), records under `.strongroom/` from
    `StoredRecords` (fs_records)."""

    type = "filesystem"
    #: put_files flushes at least this often (files, bytes): bounds dirty memory and open files
    batch_files = 1000
    batch_bytes = 1 << 30
    #: A staged bag's folder whose files put_files may place (hard-link, `fs_place`) instead of
    #: copying; None: copy everything. Set by the deposit for at most one target per bag.
    place_from: Optional[Path] = None

    def __init__(self, name: str, site: str, root):
        super().__init__(name, site)
        self.root = Path(os.path.abspath(os.fspath(root)))
        self._bag_prefixes: Dict[BagId, Tuple[Tuple[str, ...], str]] = {}  # _key's per-bag part

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
        # Called for every file stored or read (4 times per file of a deposit with two targets):
        # the bag's folders and location prefix are worked out once per bag, not once per file.
        known = self._bag_prefixes.get(bag_id)
        if known is None:
            known = (bag_segments(bag_id), self.location(bag_id))
            if len(self._bag_prefixes) < 256:
                self._bag_prefixes[bag_id] = known
        bag_dirs, prefix = known
        loc = f"{prefix}/{relpath}" if relpath else prefix
        try:
            segments = check_relpath(relpath)
        except ValueError as exc:
            raise UnsafePath(f"refused bag path: {exc}", target=self.name, location=loc) from None
        for seg in segments if TEMP_SUFFIX in relpath else ():
            if is_temp_name(seg):
                raise UnsafePath(f"refused bag path: {seg!r} has the form Strongroom reserves for its "
                                 f"temporary files (.NAME{TEMP_SUFFIX})", target=self.name, location=loc)
        return bag_dirs + segments[:-1], segments[-1], loc

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
                  on_done: Optional[ItemDone] = None, on_checked: Optional[ItemChecked] = None) -> List[PutOutcome]:
        """Batch put (`fs_batch`): one flush per batch instead of one per file, each file re-read
        and checked after that flush, before its name (its stamp then goes to `on_checked`).

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
        batch = _Batch(self, syncfs_is_durable=syncfs_is_durable, syncfs=syncfs)
        try:
            for index, item, digests, dirs, name, loc in work:
                if batch.pending and (len(batch.pending) >= self.batch_files
                                      or batch.bytes + item.size > self.batch_bytes
                                      or batch.open_fds + len(dirs) + 2 > max_fds):
                    batch.commit(report, on_checked)
                    batch.close()
                batch.add(index, item, digests, dirs, name, loc, report)
            batch.commit(report, on_checked)
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
        """Give the finished temp file its final name without ever replacing anything there: one
        renameat2(RENAME_NOREPLACE) where offered (fs_rename), else link (the temp then removed)."""
        try:
            if rename_noreplace(dfd, tmp, name):
                return PutOutcome.WRITTEN, True
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
        for _ in range(2):
            try:
                fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW | _O_CLOEXEC, 0o600,
                             dir_fd=dfd)
            except FileExistsError:
                if not self._remove_if_stale(dfd, tmp, loc):
                    raise self._busy(loc) from None
                continue
            except OSError as exc:
                raise self._failure(exc, loc, writing=True) from None
            self._lock_temp(dfd, tmp, fd, loc)
            return tmp, fd
        raise self._busy(loc)

    def _busy(self, loc: str) -> WriteInProgress:
        return WriteInProgress("is being written by another process right now (its temporary file is locked); "
                               "try again when that process has finished", target=self.name, location=loc)

    def _lock_temp(self, dfd: int, tmp: str, fd: int, loc: str) -> os.stat_result:
        """Lock a temp file just made (created or linked) and check its name is still ours (a
        cleaner may have removed it between our create and our lock); its fstat. On failure
        `fd` is closed and `_busy(loc)` raised (built only then: an error object per file
        stored cost more than the lock)."""
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            mine = os.fstat(fd)
            if os.stat(tmp, dir_fd=dfd, follow_symlinks=False).st_ino != mine.st_ino:
                raise BlockingIOError
        except (BlockingIOError, FileNotFoundError):
            os.close(fd)
            raise self._busy(loc) from None
        except BaseException:
            os.close(fd)
            raise
        return mine

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

    def _fill(self, fd: int, src: Source, size: int, digests: Optional[Dict[str, str]], mtime: Optional[float],
              loc: str, *, durable: bool = True) -> None:
        """Copy the source into the temp file, digesting it and checking it against `digests`
        (None: its size only; put_files checks each file after its flush, `fs_batch`); read-only
        when it returns, and durable unless `durable` is False (put_files flushes a batch at once)."""
        with open_source(src, target=self.name) as stream:
            reader = HashingReader(stream, digests.keys()) if digests is not None else None
            buf = read_buffer(size)
            view = memoryview(buf)
            copied = 0
            while True:
                try:
                    n = reader.readinto(buf) if reader is not None else read_into(stream, view)
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
                copied += n
                if copied > size:
                    break  # longer than announced: stop filling the disk, the check says so
            if reader is not None:
                reader.check(size, digests or {}, target=self.name, location=loc)
            else:
                check_size(copied, size, target=self.name, location=loc)
        self._seal(fd, mtime, loc, durable=durable)

    def _seal(self, fd: int, mtime: Optional[float], loc: str, *, durable: bool) -> None:
        """A checked temp file made read-only, given the staged mtime, and fsynced if `durable`."""
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


__all__ = ["FilesystemAdapter", "ASIDE_DIR", "what_is", "TEMP_SUFFIX", "temp_name", "is_temp_name", "syncfs", "syncfs_is_durable",
           "fd_budget"]
