"""openat2(2) with RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS: one system call that opens a path below
a folder descriptor, following no symbolic link at any level and never leaving the folder.

Why: every read of a stored copy must reach the stored object itself, never something a planted
link points to (a bag folder linked to another target's copy would make one copy look like two).
Without openat2 that takes one open() with O_NOFOLLOW per path component (`FilesystemAdapter._dir`);
openat2 gives the same guarantee, enforced by the kernel, in one call. Linux 5.6+ has it; where it
is missing (older kernels, other systems, a seccomp filter answering ENOSYS/EPERM) `available()`
is False and callers walk component by component as before.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import sys
from typing import Optional

RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08

#: What every read of a stored copy asks for.
RESOLVE_SAFE = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS

# The system call number is the same on every architecture that has the unified table (5.6+).
_SYS_OPENAT2 = {"x86_64": 437, "aarch64": 437, "arm64": 437, "riscv64": 437, "ppc64le": 437, "s390x": 437,
                "i686": 437, "i386": 437, "armv7l": 437}


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def _load():
    if not sys.platform.startswith("linux"):
        return None, None
    number = _SYS_OPENAT2.get(platform.machine())
    if number is None:
        return None, None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.syscall
    except (OSError, AttributeError):
        return None, None
    fn.restype = ctypes.c_long
    fn.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_char_p, ctypes.POINTER(_OpenHow), ctypes.c_size_t]
    return fn, number


_SYSCALL, _NUMBER = _load()
_SIZE = ctypes.sizeof(_OpenHow)
_AVAILABLE: Optional[bool] = None


def openat2(dirfd: int, path: str, flags: int, resolve: int = RESOLVE_SAFE, mode: int = 0) -> int:
    """A new descriptor for `path` below `dirfd`; OSError (errno set) on failure.

    ELOOP: a symbolic link on the way (or the last component, with O_NOFOLLOW); ENOTDIR: a
    component that should be a folder is not; EXDEV: the path would leave `dirfd`; EAGAIN: a
    concurrent rename made the kernel refuse (try again)."""
    if _SYSCALL is None:
        raise OSError(errno.ENOSYS, "openat2 is not available on this system")
    how = _OpenHow(flags | getattr(os, "O_CLOEXEC", 0), mode, resolve)
    fd = _SYSCALL(_NUMBER, dirfd, os.fsencode(path), ctypes.byref(how), _SIZE)
    if fd < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), path)
    return fd


def available() -> bool:
    """True when openat2 with the resolve flags works here (probed once per process)."""
    global _AVAILABLE
    if _AVAILABLE is None:
        if _SYSCALL is None or os.environ.get("STRONGROOM_NO_OPENAT2"):
            _AVAILABLE = False
        else:
            try:
                root = os.open("/", os.O_RDONLY | os.O_DIRECTORY)
            except OSError:
                _AVAILABLE = False
            else:
                try:
                    os.close(openat2(root, ".", os.O_RDONLY | os.O_DIRECTORY))
                    _AVAILABLE = True
                except OSError:      # ENOSYS (old kernel), EPERM (seccomp), EINVAL (unknown flag)
                    _AVAILABLE = False
                finally:
                    os.close(root)
    return _AVAILABLE


def set_available(value: Optional[bool]) -> None:
    """For tests: force the fallback (False), or probe again (None)."""
    global _AVAILABLE
    _AVAILABLE = value


__all__ = ["openat2", "available", "set_available", "RESOLVE_BENEATH", "RESOLVE_NO_SYMLINKS",
           "RESOLVE_NO_MAGICLINKS", "RESOLVE_NO_XDEV", "RESOLVE_SAFE"]


RENAME_NOREPLACE = 1


def _load_renameat2():
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    fn.restype = ctypes.c_int
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return fn


_RENAMEAT2 = _load_renameat2()


def rename_noreplace(src_dir: int, src: str, dst_dir: int, dst: str) -> None:
    """Rename src (below src_dir) to dst (below dst_dir), never replacing anything at dst:
    FileExistsError if something is there. renameat2(RENAME_NOREPLACE) where the kernel and the
    file system have it, else a check then rename (a tiny race window, as with link-less puts)."""
    if _RENAMEAT2 is not None:
        if _RENAMEAT2(src_dir, os.fsencode(src), dst_dir, os.fsencode(dst), RENAME_NOREPLACE) == 0:
            return
        code = ctypes.get_errno()
        if code not in (errno.EINVAL, errno.ENOSYS, getattr(errno, "ENOTSUP", errno.EOPNOTSUPP)):
            raise OSError(code, os.strerror(code), dst)
    try:
        os.stat(dst, dir_fd=dst_dir, follow_symlinks=False)
    except FileNotFoundError:
        os.rename(src, dst, src_dir_fd=src_dir, dst_dir_fd=dst_dir)
        return
    raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), dst)


__all__ += ["rename_noreplace"]
