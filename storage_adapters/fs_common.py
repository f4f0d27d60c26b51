"""What the folder target's modules share (`filesystem`, `fs_read`, `fs_batch`): the temp-file
names of files being written, the open flags and folder-name patterns, and plain words for the
type of a stored object.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import stat

from .base import StorageError

TEMP_SUFFIX = ".strongroom-part"
NAME_MAX = 255
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


__all__ = ["TEMP_SUFFIX", "NAME_MAX", "temp_name", "is_temp_name", "what_is"]


class WriteInProgress(StorageError):
    """Another live process holds this name's locked temporary file: it is writing the same name
    right now. Nothing was written; the caller may wait for it (a record: catalog checkpoints of two
    commands that ended at once) or say so."""
