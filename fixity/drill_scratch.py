"""The scratch space a restore drill restores into, and removing what a killed drill left there.

Why a module of its own: a drill writes whole bags into the archive's staging folder, so the
space must come back however the drill ends. Each run gets its own folder,
`STAGING/drills/RUN/`, owned through a lock file `STAGING/drills/RUN.lock` (created first, held
with flock for the whole run, and naming the folder); the folder is removed first and the lock
file last. A drill killed with -9 leaves both; the next drill finds a lock file of ours that
nobody holds and removes its folder and then the lock file. Nothing else under `drills/` is
touched: only names of the drill's own pattern, with a lock file that says it is a drill's.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
from pathlib import Path
from typing import List, Optional

from strongroom.durable import fsync_dir, unlink_quietly
from strongroom.errors import InputError
from strongroom.fstree import make_dirs, remove_tree

log = logging.getLogger(__name__)

SCRATCH_DIR = "drills"
LOCK_SUFFIX = ".lock"
LOCK_MARKER = b"strongroom restore drill scratch lock\n"
_RUN = re.compile(r"^drill-[0-9]{8}T[0-9]{6}Z-[0-9a-f]{8}\Z")


class Scratch:
    """`STAGING/drills/RUN/`, held through its lock file while the drill runs (see the module)."""

    def __init__(self, staging: Path, run_id: str):
        if not _RUN.match(run_id):
            raise ValueError(f"not a drill run id: {run_id!r}")
        self.root = Path(staging) / SCRATCH_DIR
        self.path = self.root / run_id
        self.lock_path = self.root / f"{run_id}{LOCK_SUFFIX}"
        self._fd: Optional[int] = None
        #: folders of killed drills removed when this one started
        self.removed: List[str] = []

    def __enter__(self) -> "Scratch":
        try:
            make_dirs(self.root)
            self.removed = remove_stale(self.root)
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
                         | getattr(os, "O_CLOEXEC", 0), 0o600)
            self._fd = fd
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.write(fd, LOCK_MARKER + f"folder: {self.path.name}\npid: {os.getpid()}\n".encode("ascii"))
            os.fsync(fd)
            os.mkdir(self.path)
            fsync_dir(self.root)
        except OSError as exc:
            self.__exit__(None, None, None)
            raise InputError(f"cannot make the drill's scratch space in the staging folder ({exc.strerror or exc})",
                             path=str(self.path)) from None
        return self

    def bag_folder(self, index: int) -> Path:
        """A new empty folder for one bag's restore (removed again by `clear`)."""
        folder = self.path / f"bag-{index}"
        os.mkdir(folder)
        return folder

    def clear(self, folder: Path) -> None:
        remove_tree(folder)

    def __exit__(self, *exc) -> None:
        if self._fd is None:
            return
        remove_tree(self.path)
        unlink_quietly(self.lock_path)   # while still holding the lock, as fixity.restore_dest does
        os.close(self._fd)
        self._fd = None


def remove_stale(root: Path) -> List[str]:
    """Remove the scratch folders (and lock files) of drills that are no longer running; returns them."""
    removed: List[str] = []
    try:
        names = sorted(os.listdir(root))
    except FileNotFoundError:
        return removed
    for name in names:
        if not name.endswith(LOCK_SUFFIX) or not _RUN.match(name[:-len(LOCK_SUFFIX)]):
            continue
        lock = root / name
        try:
            fd = os.open(lock, os.O_RDWR | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
        except OSError:
            continue   # gone meanwhile, or a link: not ours to touch
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue   # a drill running now
            if not os.pread(fd, len(LOCK_MARKER), 0) == LOCK_MARKER:
                continue
            folder = root / name[:-len(LOCK_SUFFIX)]
            log.warning("removing %s, left by a restore drill that was stopped before it finished", folder)
            remove_tree(folder)
            unlink_quietly(lock)
            removed.append(str(folder))
        finally:
            os.close(fd)
    return removed


__all__ = ["SCRATCH_DIR", "Scratch", "remove_stale"]
