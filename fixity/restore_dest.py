"""Where a restore may write, and the temporary folder it writes into (see fixity.restore).

Why a module of its own: these are the rules that keep a restore from ever writing inside the
archive, and from leaving anything behind when it is killed; they need no catalog and no
storage adapter, so they are checked (and tested) before either is opened.

* **Never inside the archive.** `check_dest_location` refuses a DEST inside, equal to or
  containing one of `archive_folders` (catalog, staging with its `.state/`, policies, every
  filesystem target root), however it is spelled (relative, `..`, a trailing '/') or reached:
  DEST is resolved with realpath both as the kernel would walk it and as it is spelled, and
  the existing ancestors are compared with each folder by device and inode too (bind mounts,
  case-insensitive file systems). It writes nothing.
* **A kill -9 leaves nothing after the rerun.** The temporary folder beside DEST has one name
  per DEST (`.NAME.restore-strongroom`); the lock file `.NAME.restore-strongroom.lock`, held with
  flock while a restore runs, names it. A rerun that gets the lock knows the folder it names is
  a dead restore's and removes it; a live lock is refused (exit 2); a folder or lock file of
  that name that a restore did not write is never touched (exit 2).
* **A kill between "in place" and "recorded" is finished by the rerun.** Just before the
  temporary folder is renamed to DEST, the restore appends a `state:` line to its lock file
  (`TempFolder.write_state`: the bag, the options, the event it is about to record, the tag
  files' sizes and sha256, the folders). A rerun that finds that line, DEST in place and the
  temporary folder renamed away knows DEST is its own earlier run's (`TempFolder.earlier`); it
  re-verifies DEST read-only (`verify_tree`: every file, size and digest, no extra file or
  folder, no link) before recording the restore. A DEST that no state line vouches for stays
  refused as not empty.
* **No recursion.** `remove_tree` and `make_dirs` (strongroom.fstree, re-exported here)
  replace shutil.rmtree and mkdir -p, which recurse once per level on Python 3.11 and fail on
  a tree 1,000 folders deep.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Set, Tuple

from ingest import metadata
from strongroom import bagit_spec
from storage_adapters.base import check_relpath
from strongroom.checksums import SUPPORTED, MultiHasher
from strongroom.durable import fsync_dir, unlink_quietly
from strongroom.errors import InputError, UsageError
from strongroom.fstree import make_dirs, remove_tree  # moved down so that ingest can share them

log = logging.getLogger(__name__)

#: The temporary folder beside DEST is `.NAME` + TEMP_MARK; its lock file adds LOCK_SUFFIX.
TEMP_MARK = ".restore-strongroom"
LOCK_SUFFIX = ".lock"
#: First line of a lock file: how a rerun knows the folder it names is a restore's own.
LOCK_MARKER = b"strongroom restore temporary folder lock\n"
#: The line a restore appends to its lock file just before it renames the folder to DEST.
STATE_PREFIX = b"state: "
#: The phase that line names (the only one so far: the next step is the rename).
PHASE_IN_PLACE = "renaming into DEST"
_CHUNK = 1 << 20


def check_dest(dest, config=None) -> Path:
    """DEST as an absolute path; UsageError unless it is outside the archive and absent or an
    empty real folder whose parent exists (`check_dest_location`, then the emptiness check)."""
    path = check_dest_location(dest, config)
    check_dest_empty(path)
    return path


def check_dest_location(dest, config=None) -> Path:
    """DEST as an absolute path, checked without writing anything (UsageError, exit 2):

    not the root folder, not a symbolic link, not an existing non-folder, its parent exists, and
    not inside, equal to or containing one of the archive's own folders (`archive_folders`),
    whatever the spelling or the links on the way.
    """
    text = os.fspath(dest)
    if not text:
        raise UsageError("the destination folder is empty text")
    path = Path(os.path.abspath(text))
    if path.name in ("", ".", ".."):
        raise UsageError("cannot restore into the root folder; give a folder to create", path=str(path))
    if config is not None:
        _refuse_archive_folders(text, path, config)
    if os.path.islink(path):
        raise UsageError("is a symbolic link; give a real folder that does not exist yet (or is empty)",
                         path=str(path))
    if os.path.lexists(path) and not path.is_dir():
        raise UsageError("already exists and is not a folder; restore needs a new or empty folder",
                         path=str(path))
    if not path.parent.is_dir():
        raise UsageError("its parent folder does not exist; create it first", path=str(path))
    return path


def check_dest_empty(path: Path) -> None:
    """UsageError unless DEST is absent or an empty folder (restore never writes into one that holds something)."""
    if not os.path.lexists(path):
        return
    try:
        with os.scandir(path) as it:
            entries = [e.name for e in it]
    except OSError as exc:
        raise UsageError(f"cannot be read ({exc.strerror or exc})", path=str(path)) from None
    if entries:
        raise UsageError(f"is not empty ({len(entries)} entr{'y' if len(entries) == 1 else 'ies'}, "
                         f"e.g. {sorted(entries)[0]!r}); restore never writes into a folder that holds "
                         "something: give a new or empty folder", path=str(path))


def archive_folders(config) -> List[Tuple[str, str]]:
    """(what, folder) for every folder the archive keeps its own things in, as configured."""
    out: List[Tuple[str, str]] = []
    catalog = getattr(config, "catalog", None)
    if catalog and "://" not in str(catalog):
        out.append(("the archive's catalog folder", str(catalog)))
    for attr, what in (("staging", "the archive's staging folder"), ("policies_dir", "the archive's policies folder")):
        value = getattr(config, attr, None)
        if value:
            out.append((what, str(value)))
    for target in getattr(config, "storage", {}).values():
        root = getattr(target, "root", None)
        if root is not None:
            out.append((f"storage target {target.name}'s folder", str(root)))
    return out


def _refuse_archive_folders(text: str, path: Path, config) -> None:
    """UsageError when DEST (or the sibling temporary folder) would land in an archive folder.

    DEST is resolved twice, as the kernel would ('..' after following links) and as `path`
    spells it ('..' removed first); each archive folder is resolved too. Inside, equal and
    containing are all refused, and an ancestor of DEST that is the same folder (device and
    inode) as an archive folder counts as inside it, so bind mounts do not hide one.
    """
    spelled = {os.path.realpath(os.path.join(os.getcwd(), text)), os.path.realpath(path)}
    for what, folder in archive_folders(config):
        real = os.path.realpath(folder)
        for d in sorted(spelled):
            relation = _relation(d, real)
            if relation is None:
                relation = _same_folder_relation(d, real)
            if relation is not None:
                also = f" (it resolves to {d})" if d != str(path) else ""
                raise UsageError(f"{relation} {what} ({folder}){also}; restore writes only outside the archive's "
                                 "own folders: give a DEST elsewhere", path=text)


def _relation(dest: str, folder: str) -> Optional[str]:
    if dest == folder:
        return "is"
    if dest.startswith(folder.rstrip("/") + "/"):
        return "is inside"
    if folder.startswith(dest.rstrip("/") + "/"):
        return "contains"
    return None


def _same_folder_relation(dest: str, folder: str) -> Optional[str]:
    """'is inside' / 'contains' by device and inode of the existing ancestors (bind mounts, aliases)."""
    def ids(p: str):
        try:
            st = os.stat(p)
        except OSError:
            return None
        return (st.st_dev, st.st_ino) if stat.S_ISDIR(st.st_mode) else None

    def ancestors(p: str):
        while True:
            yield p
            parent = os.path.dirname(p)
            if parent == p:
                return
            p = parent

    target = ids(folder)
    if target is not None and any(ids(a) == target for a in ancestors(dest)):
        return "is inside"
    mine = ids(dest)
    if mine is not None and any(ids(a) == mine for a in ancestors(folder)):
        return "contains"
    return None


# --------------------------------------------------------------------------------------------
# The temporary folder beside DEST


class TempFolder:
    """`.NAME.restore-strongroom` beside DEST, owned through the lock file `.NAME.restore-strongroom.lock`.

    `acquire` takes the lock (flock, non-blocking: a live restore into the same DEST makes it a
    UsageError), removes a stale folder a killed restore left (only when the lock file says it
    is ours), and creates the folder afresh; `release` removes the folder if it is still there,
    then the lock file. Why a lock file and not a marker inside the folder: the folder itself is
    renamed to DEST at the end, and must hold nothing but the bag.
    """

    def __init__(self, dest: Path):
        self.dest = dest
        self.path = dest.parent / f".{dest.name}{TEMP_MARK}"
        self.lock_path = dest.parent / f".{dest.name}{TEMP_MARK}{LOCK_SUFFIX}"
        self.removed_stale = False
        #: The state line of an earlier run of a restore into DEST that renamed its folder to DEST
        #: and was stopped before it recorded the restore (None: no such run).
        self.earlier: Optional[dict] = None
        #: Set by the caller to keep the lock file (and its state line) when it ends: DEST holds
        #: an earlier run's restore that this run did not record.
        self.keep_lock = False
        self._fd: Optional[int] = None
        self._foreign_lock = False
        self._header = b""

    def acquire(self) -> None:
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        while True:
            try:
                fd = os.open(self.lock_path, flags, 0o600)
            except OSError as exc:
                raise InputError(f"cannot create the restore's lock file next to the destination "
                                 f"({exc.strerror or exc})", path=str(self.lock_path)) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise UsageError(f"another restore into this folder is running (it holds {self.lock_path}); "
                                 "wait for it to finish", path=str(self.dest)) from None
            except OSError as exc:   # e.g. ENOLCK on a share without locks
                os.close(fd)
                raise InputError(f"cannot lock the restore's lock file ({exc.strerror or exc}); restore into a "
                                 "folder on a local file system", path=str(self.lock_path)) from None
            # the previous holder unlinks the file as it ends: make sure we locked the current one
            try:
                same = os.stat(self.lock_path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        self._fd = fd
        try:
            content = _read_all(fd)
            if content and not content.startswith(LOCK_MARKER):
                self._foreign_lock = True   # not ours: never rewritten, never removed
                raise UsageError(f"{self.lock_path} is in the way: restore uses that name for its lock file, but "
                                 "this one was not written by a restore; remove it, or restore into another folder",
                                 path=str(self.dest))
            state = self._state_line(content)
            if state is not None and self._renamed(state):
                self.earlier = state
            if os.path.lexists(self.path):
                self._remove_stale(content)
            if self.earlier is not None:
                return   # the lock file is left as it is: its state line is the only proof DEST is ours
            self._header = LOCK_MARKER + f"folder: {self.path.name}\npid: {os.getpid()}\n".encode("utf-8")
            os.ftruncate(fd, 0)
            os.pwrite(fd, self._header, 0)
            os.fsync(fd)
            os.mkdir(self.path)
        except OSError as exc:
            self.release(remove_folder=False)
            raise InputError(f"cannot create a temporary folder next to the destination ({exc.strerror or exc})",
                             path=str(self.path)) from None
        except BaseException:
            self.release(remove_folder=False)
            raise

    def write_state(self, state: Mapping) -> None:
        """Append the state line (JSON, one line) to the lock file and make it durable.

        Called just before the rename to DEST. Appended, never rewritten in place: a kill in
        the middle leaves a torn line that reads as no state, while the folder is still beside
        DEST (the rename comes after the fsync), so the rerun starts afresh.
        """
        if self._fd is None:
            raise RuntimeError("write_state needs the lock")
        line = STATE_PREFIX + json.dumps({"phase": PHASE_IN_PLACE, **state}, sort_keys=True,
                                         ensure_ascii=True).encode("ascii") + b"\n"
        try:
            os.pwrite(self._fd, line, len(self._header))
            os.fsync(self._fd)
        except OSError as exc:
            raise InputError(f"cannot write the restore's lock file ({exc.strerror or exc})",
                             path=str(self.lock_path)) from None

    def _state_line(self, content: bytes) -> Optional[dict]:
        for line in content.split(b"\n"):
            if line.startswith(STATE_PREFIX):
                try:
                    state = json.loads(line[len(STATE_PREFIX):].decode("ascii"))
                except (UnicodeDecodeError, ValueError):
                    return None   # torn by a kill while it was written: the rename had not happened
                return state if isinstance(state, dict) and state.get("phase") == PHASE_IN_PLACE else None
        return None

    def _renamed(self, state: dict) -> bool:
        """True when the rename the state line announced took place: DEST is a real, non-empty
        folder and what was to be renamed (the folder, or its data/ with --payload-only) is gone."""
        moved = self.path / "data" if state.get("payload_only") else self.path
        if os.path.lexists(moved):
            return False
        try:
            st = os.lstat(self.dest)
            if not stat.S_ISDIR(st.st_mode):
                return False
            with os.scandir(self.dest) as it:
                return any(True for _ in it)
        except OSError:
            return False

    def _remove_stale(self, content: bytes) -> None:
        ours = content.startswith(LOCK_MARKER) and f"folder: {self.path.name}\n".encode("utf-8") in content
        if not ours and not (os.path.isdir(self.path) and not os.path.islink(self.path) and not os.listdir(self.path)):
            raise UsageError(f"{self.path} is in the way: restore uses that name for its temporary folder, but no "
                             f"lock file of a restore names it; remove it if it is a leftover, or restore into "
                             "another folder", path=str(self.dest))
        log.warning("removing %s, left by a restore that was stopped before it finished", self.path)
        remove_tree(self.path)
        self.removed_stale = True

    def release(self, remove_folder: bool = True) -> None:
        if self._fd is None:
            return
        if remove_folder:
            remove_tree(self.path)
        if not self._foreign_lock and not self.keep_lock:
            unlink_quietly(self.lock_path)   # while still holding the lock: see acquire
        os.close(self._fd)
        self._fd = None
        try:
            fsync_dir(self.dest.parent)
        except OSError:
            pass


def _read_all(fd: int) -> bytes:
    parts: List[bytes] = []
    offset = 0
    while True:
        chunk = os.pread(fd, 1 << 16, offset)
        if not chunk:
            return b"".join(parts)
        parts.append(chunk)
        offset += len(chunk)


# --------------------------------------------------------------------------------------------
# What a restored tree holds, and checking it again


@dataclass(frozen=True)
class Tree:
    """A folder's contents as relative '/' paths, walked without following any link."""

    files: Dict[str, int]          # regular file -> size
    dirs: Set[str]                 # every folder below the root
    odd: Dict[str, str]            # anything else (a link, FIFO, socket, device) -> what it is


def walk_tree(root: Path) -> Tree:
    """Every entry below `root` (iterative, lstat only: a link is listed, never followed)."""
    files: Dict[str, int] = {}
    dirs: Set[str] = set()
    odd: Dict[str, str] = {}
    stack = [""]
    while stack:
        rel = stack.pop()
        with os.scandir(os.path.join(root, rel) if rel else root) as it:
            for entry in it:
                sub = f"{rel}/{entry.name}" if rel else entry.name
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    dirs.add(sub)
                    stack.append(sub)
                elif stat.S_ISREG(st.st_mode):
                    files[sub] = st.st_size
                else:
                    odd[sub] = _kind(st.st_mode)
    return Tree(files, dirs, odd)


def file_digests(path: Path, algorithms) -> Tuple[int, Dict[str, str]]:
    """(size, digests) of a regular file, opened without following a link (OSError otherwise)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
                 | getattr(os, "O_CLOEXEC", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(0, "not a regular file")
        hasher = MultiHasher([a for a in algorithms if a in SUPPORTED])
        buf = bytearray(_CHUNK)
        view = memoryview(buf)
        while True:
            n = os.readv(fd, [buf])
            if not n:
                break
            hasher.update(view[:n])
        return hasher.size, hasher.hexdigests()
    finally:
        os.close(fd)


def verify_tree(root: Path, files: Mapping[str, Tuple[int, Mapping[str, str]]], dirs: Set[str]) -> List[str]:
    """Problems of the tree at `root` against what it must hold exactly (empty: it does).

    `files`: relative path -> (size, digests by algorithm); `dirs`: every folder. A missing or
    extra file or folder, a link or other odd object, a size or any digest that differs is a
    problem naming the path. Read-only: nothing is changed, not even an access time on purpose.
    """
    try:
        tree = walk_tree(root)
    except OSError as exc:
        return [f"{root}: cannot be read ({exc.strerror or exc})"]
    problems: List[str] = []
    for rel, what in sorted(tree.odd.items()):
        problems.append(f"{rel}: {what} where the restore put a file or nothing")
    for rel in sorted(set(tree.files) - set(files)):
        problems.append(f"{rel}: an extra file the restore did not write")
    for rel in sorted(tree.dirs - set(dirs)):
        problems.append(f"{rel}: an extra folder the restore did not make")
    for rel in sorted(set(dirs) - tree.dirs - set(tree.odd)):
        problems.append(f"{rel}: a folder the restore made is missing")
    for rel, (size, digests) in sorted(files.items()):
        if rel in tree.odd:
            continue
        if rel not in tree.files:
            problems.append(f"{rel}: missing")
            continue
        if tree.files[rel] != size:
            problems.append(f"{rel}: size differs ({tree.files[rel]} bytes, {size} expected)")
            continue
        try:
            got_size, got = file_digests(root / rel, digests)
        except OSError as exc:
            problems.append(f"{rel}: cannot be read ({exc.strerror or exc})")
            continue
        wrong = [f"{a} expected {d.lower()}, found {got[a]}" for a, d in sorted(digests.items())
                 if a in got and got[a] != str(d).lower()]
        if got_size != size:
            problems.append(f"{rel}: size differs ({got_size} bytes read, {size} expected)")
        elif wrong:
            problems.append(f"{rel}: checksum mismatch ({'; '.join(wrong)})")
        elif not got:
            problems.append(f"{rel}: no digest to check it against")
    return problems


# --------------------------------------------------------------------------------------------
# Finishing the tree


def make_empty_dirs(tmp: Path, version: str, warnings: List[str]) -> int:
    """Recreate the empty folders metadata/empty-directories.txt lists (in `tmp`, the restored bag);
    an unsafe or unreadable line is a warning, never a folder outside data/. Returns how many."""
    name = metadata.EMPTY_DIRS_FILE
    path = tmp / name
    if not path.is_file():
        return 0
    made = 0
    try:
        lines = list(bagit_spec.iter_lines(path))
    except (OSError, UnicodeError, bagit_spec.BagItSyntaxError) as exc:
        warnings.append(f"{name}: cannot be read ({exc}); no empty folder recreated")
        return 0
    for number, line in lines:
        if not line.strip():
            continue
        rel = bagit_spec.decode_path(line, version)
        try:
            check_relpath(rel)
            if not bagit_spec.is_payload_path(rel):
                raise ValueError(f"{rel!r} is outside data/")
        except ValueError as exc:
            warnings.append(f"{name} line {number}: refused ({exc})")
            continue
        try:
            make_dirs(tmp / rel)
            made += 1
        except OSError as exc:
            warnings.append(f"{name} line {number}: {rel!r} not created ({exc.strerror or exc})")
    return made


def put_in_place(tmp: Path, dest: Path, payload_only: bool) -> None:
    """Rename the finished temporary folder (its data/ with `payload_only`) to DEST, in one step."""
    source = tmp / bagit_spec.PAYLOAD_DIR if payload_only else tmp
    try:
        os.rename(source, dest)  # replaces DEST only if it is (still) an empty folder
    except OSError as exc:
        if exc.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
            raise UsageError("was changed while the restore ran (it is no longer absent or empty); "
                             "nothing was restored", path=str(dest)) from None
        if exc.errno in (errno.EXDEV, errno.EBUSY):
            raise UsageError("cannot be replaced (is it a mount point?); restore into a new folder "
                             "inside it", path=str(dest)) from None
        raise InputError(f"cannot be created ({exc.strerror or exc})", path=str(dest)) from None
    if payload_only:
        remove_tree(tmp)
    fsync_dir(dest.parent)


def _kind(mode: int) -> str:
    for test, what in ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISCHR, "a character device")):
        if test(mode):
            return what
    return "an object that is not a file"


__all__ = ["TEMP_MARK", "LOCK_SUFFIX", "LOCK_MARKER", "PHASE_IN_PLACE", "TempFolder", "Tree", "archive_folders",
           "check_dest", "check_dest_location", "check_dest_empty", "file_digests", "remove_tree", "make_dirs",
           "verify_tree", "walk_tree", "make_empty_dirs", "put_in_place"]
