"""renameat2(RENAME_NOREPLACE): give a file its name in one system call, never replacing one.

Why: the folder target named every new file by link(temp, name) then unlink(temp) -- two calls
per file (40,000 of each for a 20,000-file deposit to two targets, issue 11) -- because plain
rename() would silently replace a file already stored under that name. RENAME_NOREPLACE makes
the rename fail with EEXIST instead, exactly like link(). Python has no binding, so it is
called through ctypes (glibc >= 2.28); where the C library, the kernel or the file system does
not offer it, `rename_noreplace` says so and the caller keeps to link + unlink.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
from typing import Optional

RENAME_NOREPLACE = 1
#: errno values meaning "not offered here" (no syscall, flag unknown to this file system)
_UNSUPPORTED = {errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, getattr(errno, "ENOTSUP", errno.EOPNOTSUPP)}


def _load():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_renameat2 = _load()
_offered: Optional[bool] = None if _renameat2 is not None else False


def rename_noreplace(dir_fd: int, src: str, dst: str) -> bool:
    """Rename `src` to `dst`, both in the folder `dir_fd`, unless `dst` exists.

    True: renamed. False: not offered here (nothing was done; use link + unlink). Raises
    FileExistsError when `dst` exists (nothing was done), other OSErrors as rename() would.
    """
    global _offered
    if _offered is False:
        return False
    if _renameat2(dir_fd, os.fsencode(src), dir_fd, os.fsencode(dst), RENAME_NOREPLACE) == 0:
        _offered = True
        return True
    err = ctypes.get_errno()
    if err in _UNSUPPORTED:
        if err == errno.ENOSYS:
            _offered = False  # the kernel lacks the call: never ask again
        return False
    raise OSError(err, os.strerror(err), dst)
