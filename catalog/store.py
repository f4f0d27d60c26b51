"""Where the catalog's files live: a local folder, or `s3://bucket/prefix`, through `pyarrow.fs`.

The catalog never rewrites a file: every write adds a new, uniquely named file, and readers see
a file either whole or not at all. That is what lets several Luigi workers and several machines
write to one catalog without a lock:

* local folder: write `.tmp-<host>-<pid>-<uuid>` in the same folder, fsync, then rename (or hard-link, for
  a write that must not replace an existing name) — both are atomic on POSIX file systems;
  fsync the folder so the new name survives a power cut.
* object stores (S3 and compatible): a single PUT is atomic (an object appears whole or not at
  all), so the bytes are sent in one request to the final key. "Create only if absent" is the
  conditional PUT `If-None-Match: *` (S3 since 2024, SeaweedFS, MinIO, Ceph), which `pyarrow.fs`
  cannot send: the caller passes `put_if_absent` (boto3, see `catalog/access.py`) and
  `create_exclusive` uses it. Without one, it is check-then-put, which leaves a small race
  between two writers (tests and tools only; `open_catalog` always passes one for S3).

Names that start with `.` or `_` are never data: temp files of a crashed writer are ignored
by every reader (pyarrow.dataset skips them too), and removed by the next writer into that
folder (`Store._sweep`, once per folder per opened catalog; never a live writer's).
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Callable, List, Optional

import pyarrow as pa
import pyarrow.fs as pafs

from strongroom.durable import fsync_dir, unlink_quietly
from strongroom.errors import ConfigError, StrongroomError

TEMP_PREFIX = ".tmp-"
# Temp names carry their writer, `.tmp-<host>-<pid>-<uuid>`, so a temp whose writer is gone (killed
# before it could rename or remove it) can be told from one being written right now.
_HOST = "".join(c if c.isalnum() or c in ".-" else "_" for c in socket.gethostname())[:64] or "host"
STALE_FOREIGN_TEMP_SECONDS = 24 * 3600   # a temp of another host (a shared folder), or of an older naming


class CatalogError(StrongroomError):
    """The catalog cannot be read or written as asked (unreadable file, busy, conflicting bag)."""


@dataclass(frozen=True)
class StoredFile:
    name: str   # base name inside its folder
    path: str   # full path for the Store's file system


class Store:
    """A catalog root on some `pyarrow.fs` file system, with append-only write primitives."""

    def __init__(self, location: str, filesystem: Optional[pafs.FileSystem] = None, *,
                 put_if_absent: Optional[Callable[[str, bytes], bool]] = None):
        self._put_if_absent = put_if_absent
        if not isinstance(location, str) or not location:
            raise ConfigError(f"catalog location must be a folder path or s3://bucket/prefix, got {location!r}")
        self.location = location
        if filesystem is not None:
            self.fs = filesystem
            # The caller's file system knows its endpoint and credentials: only drop the scheme.
            root = location.split("://", 1)[1] if "://" in location else location
        elif "://" in location:
            try:
                self.fs, root = pafs.FileSystem.from_uri(location)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as exc:
                raise ConfigError(f"catalog location {location!r} cannot be opened: {exc}")
        else:
            self.fs = pafs.LocalFileSystem()
            root = os.path.abspath(os.path.expanduser(location))
        self.root = root.rstrip("/") or "/"
        if not self.root:
            raise ConfigError(f"catalog location {location!r} names no folder or bucket")
        self.is_local = isinstance(self.fs, pafs.LocalFileSystem)
        self._swept: set = set()   # folders this Store has cleared of killed writers' temps

    def __repr__(self) -> str:
        return f"Store({self.location!r})"

    # -- paths and listing ----------------------------------------------------------------
    def path(self, *parts: str) -> str:
        parts = tuple(p for p in parts if p)
        return "/".join([self.root, *parts]) if self.root != "/" else "/" + "/".join(parts)

    def exists(self) -> bool:
        """True if the catalog root exists (an s3 prefix "exists" once it holds a file)."""
        info = self.fs.get_file_info(self.root)
        return info.type != pafs.FileType.NotFound

    def list(self, folder: str) -> List[StoredFile]:
        """Data files directly in `folder`, sorted by name; temp and hidden names are left out."""
        base = self.path(folder)
        return [StoredFile(name, f"{base}/{name}") for name in self.names(folder)]

    def names(self, folder: str) -> List[str]:
        """Sorted base names of the data files in `folder` (cheaper than `list` for big folders)."""
        base = self.path(folder)
        if self.is_local:
            try:
                with os.scandir(base) as it:
                    found = [e.name for e in it if e.name[0] not in "._" and e.is_file()]
            except FileNotFoundError:
                return []
        else:
            infos = self.fs.get_file_info(pafs.FileSelector(base, allow_not_found=True))
            found = [i.base_name for i in infos
                     if i.type == pafs.FileType.File and not i.base_name.startswith((".", "_"))]
        found.sort()
        return found

    def read_bytes(self, path: str) -> bytes:
        with self.fs.open_input_stream(path) as fh:
            return fh.read()

    def delete(self, path: str) -> None:
        """Remove a file; a file already gone is fine (another compaction or cleanup took it)."""
        try:
            self.fs.delete_file(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            if self.fs.get_file_info(path).type != pafs.FileType.NotFound:
                raise exc

    def _ensure_folder(self, folder: str) -> str:
        base = self.path(folder)
        self.fs.create_dir(base, recursive=True)
        return base

    # -- writing ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def _writing(self, folder: str):
        """An OS error while writing names the catalog (and says "the disk is full" for ENOSPC):
        a bare "[Errno 28] No space left on device" does not tell which of the archive's
        folders (catalog, staging, a replica) ran out. Nothing is left half-written: the temp
        file is removed and the final name never appears."""
        self._sweep(folder)
        try:
            yield
        except CatalogError:
            raise
        except OSError as exc:
            where = self.path(folder)
            if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
                code = errno.errorcode.get(exc.errno, str(exc.errno))
                raise CatalogError(f"the disk is full ({code}) under the catalog {self.location}: nothing was "
                                   f"written; free space there and rerun (what was done so far is kept)",
                                   path=where) from exc
            raise CatalogError(f"cannot write to the catalog {self.location}: {exc.strerror or exc}",
                               path=where) from exc

    def write_new(self, folder: str, name: str, data: bytes) -> str:
        """Write a new file atomically; `name` must be unique (callers put a uuid in it)."""
        with self._writing(folder):
            return self._write_new(folder, name, data)

    def _write_new(self, folder: str, name: str, data: bytes) -> str:
        base = self._ensure_folder(folder)
        final = f"{base}/{name}"
        if not self.is_local:
            self._put(final, data)
            return final
        tmp = self._write_temp(base, data)
        try:
            os.replace(tmp, final)
        except BaseException:
            unlink_quietly(tmp)
            raise
        fsync_dir(base)
        return final

    def create_exclusive(self, folder: str, name: str, data: bytes) -> bool:
        """Write `name` only if no file has that name; False (and nothing written) if one has.

        Local: hard-link a fully written temp file to the final name; link() fails with
        EEXIST if the name is taken, atomically, even across processes and NFSv3+.
        """
        with self._writing(folder):
            return self._create_exclusive(folder, name, data)

    def _create_exclusive(self, folder: str, name: str, data: bytes) -> bool:
        base = self._ensure_folder(folder)
        final = f"{base}/{name}"
        if not self.is_local:
            if self._put_if_absent is not None:
                return self._put_if_absent(final, data)
            if self.fs.get_file_info(final).type != pafs.FileType.NotFound:
                return False
            self._put(final, data)
            return True
        tmp = self._write_temp(base, data)
        try:
            os.link(tmp, final)
        except FileExistsError:
            return False
        finally:
            unlink_quietly(tmp)
        fsync_dir(base)
        return True

    def _sweep(self, folder: str) -> None:
        """Before this Store's first write into `folder`: remove the temps that killed writers left
        there (a kill -9 between writing a temp and renaming it). Where it belongs, every writer
        cleans up: one listing per folder per opened catalog, and a live writer's temp (this host,
        its pid alive) is never touched. Best effort: a folder that cannot be listed or cleaned
        is left to the write itself to report."""
        if folder in self._swept or not self.is_local:
            return
        self._swept.add(folder)
        try:
            self.remove_stale_temps((folder,))
        except OSError:
            pass

    def remove_stale_temps(self, folders) -> List[str]:
        """Remove the temp files that killed writers left in `folders` (local catalogs only; an
        object store has none: a PUT is whole or absent). A temp of a live process of this host
        is left alone; of another host, only once a day old. Returns the paths removed."""
        if not self.is_local:
            return []
        removed = []
        now = time.time()
        for folder in folders:
            base = self.path(folder)
            try:
                names = [n for n in os.listdir(base) if n.startswith(TEMP_PREFIX)]
            except FileNotFoundError:
                continue
            for name in names:
                path = os.path.join(base, name)
                if _writer_alive(name[len(TEMP_PREFIX):]):
                    continue
                try:
                    if _writer_host(name[len(TEMP_PREFIX):]) != _HOST and \
                            now - os.lstat(path).st_mtime < STALE_FOREIGN_TEMP_SECONDS:
                        continue
                    os.unlink(path)
                    removed.append(path)
                except FileNotFoundError:
                    continue
            if removed:
                fsync_dir(base)
        return removed

    def _put(self, path: str, data: bytes) -> None:
        with self.fs.open_output_stream(path) as out:
            out.write(data)

    def _write_temp(self, base: str, data: bytes) -> str:
        # The pid now, not at import: a forked worker's temps must carry its own pid, or a parent
        # that exits would make them look like a dead writer's while the child still writes them.
        tmp = os.path.join(base, f"{TEMP_PREFIX}{_HOST}-{os.getpid()}-{uuid.uuid4().hex}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            unlink_quietly(tmp)
            raise
        os.close(fd)
        return tmp


def _writer_host(rest: str) -> Optional[str]:
    """The host of a temp name's `<host>-<pid>-<uuid>`, or None for an older `<uuid>` name."""
    parts = rest.rsplit("-", 2)
    return parts[0] if len(parts) == 3 and parts[1].isdigit() else None


def _writer_alive(rest: str) -> bool:
    """True if the temp's writer is a live process of this host."""
    parts = rest.rsplit("-", 2)
    if len(parts) != 3 or not (parts[1].isascii() and parts[1].isdigit()) or parts[0] != _HOST:
        return False
    pid = int(parts[1])
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, someone else's
    return True
