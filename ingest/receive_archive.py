"""Unpack an uploaded `.tar` or `.zip` batch into a fresh folder, refusing anything hostile.

Why so strict: a receiving area is written by outsiders, and an archive is the classic way to
smuggle a path out of its folder or to fill a disk. Refused, each named in the problem list:
absolute names, `..`, backslashes and drive letters (strongroom.bagit_spec.path_problem), symbolic
and hard links, devices, FIFOs and other special members, two members with one name (or a file
where a folder is needed), encrypted zip members, zip members whose stored data overlap (the
overlapping-entry zip bomb), and any archive that unpacks to more than `max_bytes` in total or
to more bytes than a member declares (a zip bomb lies about its size).

A tar is read once, as a stream (`r|*`: straight from the GET body, plain or compressed), so
problems found in later members are found after earlier ones were written: the caller removes
the folder when this raises. A zip's directory is at its end, so it is read from a local file;
every problem of the directory is found before any member is written.
"""

from __future__ import annotations

import os
import stat
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Dict, List, Optional

from strongroom.bagit_spec import path_problem
from strongroom.errors import InputError

CHUNK = 1 << 20
_WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".zip")


class ArchiveRefused(InputError):
    """The archive holds something that must not be unpacked; `problems` names every member."""


@dataclass
class Unpacked:
    """What was written: regular files and their bytes (empty folders are kept too)."""

    files: int = 0
    bytes: int = 0
    problems: List[str] = field(default_factory=list)


def is_archive(name: str) -> bool:
    return name.lower().endswith(ARCHIVE_SUFFIXES)


def member_path(name: str) -> tuple:
    """(canonical path, problem or None) of an archive member name ('./a//b/' -> 'a/b')."""
    problem = path_problem(name)
    if problem:
        return "", problem
    return "/".join(p for p in name.split("/") if p not in ("", ".")), None


_KIND_PROBLEMS = {
    "symlink": "is a symbolic link{to}; links are not taken",
    "hardlink": "is a hard link{to}; links are not taken",
    "special": "is a special file (device, FIFO or similar); only files and folders are taken",
    "encrypted": "is encrypted; upload it unencrypted",
}


def judge_member(name: str, kind: str, names: "_Names", link: str = "") -> tuple:
    """(path, problem) for one member: `path` "" with no problem is the archive's own top folder
    ('.', './'), skipped; kind is file, dir, symlink, hardlink, special or encrypted."""
    path, problem = member_path(name)
    if problem:
        return path, f"{name}: {problem}"
    if not path:
        return path, None
    if kind in _KIND_PROBLEMS:
        return path, f"{path}: " + _KIND_PROBLEMS[kind].format(to=f" (to {link})" if link else "")
    return path, names.take(path, kind)


class _Names:
    """Every path taken so far, to refuse duplicates and file/folder clashes."""

    def __init__(self) -> None:
        self.kinds: Dict[str, str] = {}

    def take(self, path: str, kind: str) -> Optional[str]:
        parts = path.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            if self.kinds.get(parent) == "file":
                return f"{path}: its folder {parent} is also a file in the archive"
            self.kinds.setdefault(parent, "dir")
        seen = self.kinds.get(path)
        if seen == "file" or (seen == "dir" and kind == "file"):
            return f"{path}: appears more than once in the archive (a second copy would replace the first)"
        self.kinds[path] = kind
        return None


def _write(dest: Path, path: str, stream: BinaryIO, declared: int, budget: List[int], mtime: Optional[float]) -> int:
    """Copy one member; at most `declared` bytes (more is a lie) and what remains of the budget."""
    target = dest / path
    target.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(target, _WRITE_FLAGS, 0o644)
    written = 0
    try:
        while True:
            chunk = stream.read(CHUNK)
            if not chunk:
                break
            written += len(chunk)
            if written > declared:
                raise ArchiveRefused(f"{path}: unpacks to more than the {declared:,} bytes it declares "
                                     f"(a zip bomb, or a damaged archive)")
            if written > budget[0]:
                raise ArchiveRefused(f"the archive unpacks to more than the {budget[1]:,} bytes allowed")
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view):]
    finally:
        os.close(fd)
    if written != declared:
        raise ArchiveRefused(f"{path}: holds {written:,} bytes, its header declares {declared:,} (a damaged archive)")
    budget[0] -= written
    if mtime is not None:
        os.utime(target, (mtime, mtime))
    return written


def _refused(label: str, problems: List[str]) -> ArchiveRefused:
    return ArchiveRefused(f"the uploaded archive {label} cannot be unpacked: {len(problems)} problem(s)",
                          problems=problems)


def unpack_tar(stream: BinaryIO, dest: Path, *, max_bytes: int, label: str = "archive") -> Unpacked:
    """Unpack a tar (plain or compressed) read once from `stream` into the empty folder `dest`."""
    out = Unpacked()
    names = _Names()
    budget = [max_bytes, max_bytes]
    declared_total = 0
    try:
        with tarfile.open(fileobj=stream, mode="r|*") as tar:
            for member in tar:
                kind = ("symlink" if member.issym() else "hardlink" if member.islnk() else "dir"
                        if member.isdir() else "file" if member.isreg() else "special")
                path, problem = judge_member(member.name, kind, names, member.linkname)
                if problem or not path:
                    if problem:
                        out.problems.append(problem)
                    continue
                if member.isdir():
                    (dest / path).mkdir(parents=True, exist_ok=True)
                    continue
                declared_total += member.size
                if declared_total > max_bytes:
                    out.problems.append(f"the archive unpacks to more than the {max_bytes:,} bytes allowed "
                                        f"(at {path})")
                    break
                if out.problems:
                    continue  # already refused: read on (to name every problem), write nothing more
                fh = tar.extractfile(member)
                out.bytes += _write(dest, path, fh, member.size, budget, member.mtime)
                out.files += 1
    except ArchiveRefused as exc:
        out.problems.append(exc.message)
    except (tarfile.TarError, EOFError, OSError) as exc:
        out.problems.append(f"not a readable tar archive ({type(exc).__name__}: {exc})")
    if out.problems:
        raise _refused(label, out.problems)
    return out


def _zip_kind(info: zipfile.ZipInfo) -> str:
    mode = info.external_attr >> 16
    if info.is_dir():
        return "dir"
    if mode and stat.S_ISLNK(mode):
        return "symlink"
    if mode and stat.S_IFMT(mode) not in (0, stat.S_IFREG):
        return "special"
    return "file"


def unpack_zip(path: Path, dest: Path, *, max_bytes: int, label: str = "archive") -> Unpacked:
    """Unpack the zip file at `path` into the empty folder `dest`; its directory is judged whole first."""
    out = Unpacked()
    names = _Names()
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise _refused(label, [f"not a readable zip archive ({exc})"]) from None
    with zf:
        infos = zf.infolist()
        take = []
        for info in infos:
            kind = "encrypted" if info.flag_bits & 0x1 else _zip_kind(info)
            member, problem = judge_member(info.filename, kind, names)
            if problem:
                out.problems.append(problem)
            elif member:
                take.append((member, info))
        declared = sum(i.file_size for _, i in take)
        if declared > max_bytes:
            out.problems.append(f"the archive declares {declared:,} bytes unpacked, more than the {max_bytes:,} "
                                f"bytes allowed")
        # the smallest each member's local header can be (30 bytes + its name): only true overlaps show
        ranges = sorted((i.header_offset, i.header_offset + 30 + _name_bytes(i)
                         + i.compress_size, i.filename) for i in infos)
        for (_, end, first), (start, _, second) in zip(ranges, ranges[1:]):
            if start < end:
                out.problems.append(f"{second}: its data overlaps {first}'s (an overlapping-entry zip bomb)")
        if out.problems:
            raise _refused(label, out.problems)
        budget = [max_bytes, max_bytes]
        try:
            for member, info in take:
                if info.is_dir():
                    (dest / member).mkdir(parents=True, exist_ok=True)
                    continue
                with zf.open(info) as fh:
                    out.bytes += _write(dest, member, fh, info.file_size, budget, _zip_mtime(info))
                out.files += 1
        except ArchiveRefused as exc:
            raise _refused(label, [exc.message]) from None
        except (zipfile.BadZipFile, NotImplementedError, EOFError, OSError, ValueError) as exc:
            raise _refused(label, [f"cannot be read ({type(exc).__name__}: {exc})"]) from None
    return out


def _zip_mtime(info: zipfile.ZipInfo) -> Optional[float]:
    import datetime as _dt

    try:
        return _dt.datetime(*info.date_time).timestamp()
    except (ValueError, OverflowError):
        return None


def _name_bytes(info: zipfile.ZipInfo) -> int:
    """The length of the member's name as stored (UTF-8 when flagged, else code page 437)."""
    return len(info.orig_filename.encode("utf-8" if info.flag_bits & 0x800 else "cp437", "replace"))
