"""Placing a staged file in a folder target instead of copying it (issue 11).

Why: when staging and a folder target are on the same file system, copying a staged file to
the target writes every payload byte a second time, only for the staged copy to be deleted
minutes later (its blocks freed again). Placing hard-links the staged file to the target's
locked temp name instead; from there it follows the copy's path exactly (`fs_batch`): it is
made read-only, made durable with the batch's flush, re-read and checked against the
manifests (a staged file that differs is never stored under its name) and named with
renameat2(RENAME_NOREPLACE); finish() removes the staged name, which frees nothing.

Rules that keep the copies independent and the placed bytes untouched:
  * only a staged file whose inode has no other name (st_nlink == 1) is placed, checked again
    after linking: at most ONE target ever shares a staged inode (two targets sharing one would
    not be two copies); every other target gets a copy, as before;
  * a crashed run's temp name (possibly a link to this very staged file) is removed first, so
    the rerun places again instead of giving up;
  * nothing writes into a staged file after staging: staged files are created with O_EXCL,
    a stale staged bag is removed by name only (fstree.remove_tree), quarantine moves files
    before any bag is built, and the placed inode is 0444 from here on;
  * another file system (EXDEV), no hard links (EPERM, EMLINK...) or any surprise: copy.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import TYPE_CHECKING, Optional, Tuple

from .base import PutItem
from .fs_common import _NO_HARDLINKS, _O_CLOEXEC, _O_NOFOLLOW, temp_name

if TYPE_CHECKING:
    from .filesystem import FilesystemAdapter

#: link() errors that mean "cannot place here, copy instead"
_COPY_INSTEAD = _NO_HARDLINKS | {errno.EXDEV, errno.EACCES}


def placeable(adapter: FilesystemAdapter, item: PutItem) -> Optional[str]:
    """The staged path of `item` if the adapter was told it may place files from there."""
    root = adapter.place_from
    if root is None or not isinstance(item.src, (str, os.PathLike)):
        return None
    src = os.fspath(item.src)
    return src if isinstance(src, str) and src.startswith(os.fspath(root) + "/") else None


def place_temp(adapter: FilesystemAdapter, dfd: int, name: str, loc: str, src: str,
               size: int) -> Optional[Tuple[str, int]]:
    """Link the staged file `src` to `name`'s temp name in folder `dfd`, locked as `_create_temp`
    leaves a temp file: (temp name, descriptor), or None when it must be copied instead."""
    tmp = temp_name(name)
    if not adapter._remove_if_stale(dfd, tmp, loc):
        raise adapter._busy(loc)
    try:
        st = os.stat(src, follow_symlinks=False)
    except OSError:
        return None  # the copy reports what is wrong with the staged file
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1 or st.st_size != size:
        return None
    try:
        os.link(src, tmp, dst_dir_fd=dfd, follow_symlinks=False)
    except FileExistsError:
        raise adapter._busy(loc) from None
    except OSError as exc:
        if exc.errno in _COPY_INSTEAD:
            return None
        raise adapter._failure(exc, loc, writing=True) from None
    try:
        fd = os.open(tmp, os.O_RDONLY | _O_NOFOLLOW | _O_CLOEXEC, dir_fd=dfd)
    except OSError as exc:
        raise adapter._failure(exc, loc, writing=True) from None
    mine = adapter._lock_temp(dfd, tmp, fd, loc)
    if mine.st_ino != st.st_ino or mine.st_nlink != 2:
        # The staged name was replaced after our look at it, or another writer linked the same
        # staged file at the same moment (neither may share it): the name is ours and locked.
        os.unlink(tmp, dir_fd=dfd)
        os.close(fd)
        return None
    return tmp, fd


__all__ = ["placeable", "place_temp"]
