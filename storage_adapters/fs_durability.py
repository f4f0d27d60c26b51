"""Whether one flush of a whole file system can stand in for an fsync of each file, and how many
descriptors one batch may hold: what `put_files` (`fs_batch`) needs to make many files durable
at once.

syncfs() is trusted only on Linux local file systems where it is known to write back every
dirty file and to report write-back errors (ext2/3/4, xfs, btrfs, f2fs, tmpfs since Linux 5.8;
overlayfs since 5.15). Elsewhere (NFS, SMB, FUSE, other systems), where syncfs() may not reach
the server or may swallow an error, each file is fsynced, as by put_file.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import resource
import sys
from typing import Optional, Tuple

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


__all__ = ["syncfs", "syncfs_is_durable", "fd_budget"]
