"""Walk a deposit's source folder safely, before a single payload byte is read.

The source belongs to the library: it is only ever listed and read, never changed. Scanning
first (stat only) lets a deposit refuse bad input as a whole, naming every offending path,
instead of failing half way through a copy:

* symbolic links are refused (never followed outside the source; with
  `follow_internal_links=True`, a link to a regular file inside the source is taken as that file);
* FIFOs, sockets and devices are refused (reading a FIFO can block forever);
* names that are not valid UTF-8 are refused (BagIt manifests are UTF-8 text);
* two names that differ only in Unicode normalisation (NFC vs NFD) are refused: many file
  systems and every BagIt validator would treat them as one file;
* unreadable files and folders are refused;
* empty folders are recorded, because a bag cannot hold them.
"""

from __future__ import annotations

import itertools
import os
import stat
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, NamedTuple, Optional, Set, Tuple

from strongroom.errors import InputError

from .spill import SpilledFiles


class SourceFile(NamedTuple):
    """A regular file of the source, as it was when scanned.

    A NamedTuple, not a frozen dataclass: every pass over a deposit's spilled list makes one per
    file, and a frozen dataclass's __init__ (one object.__setattr__ per field) cost 2 us of
    the 5 us a record took to read back; a named tuple is as immutable, at a third of that."""

    relpath: str  # POSIX path relative to the source root, exactly as on disk (not normalised)
    abspath: bytes  # the path to open (bytes: what the OS gave us)
    size: int
    mtime_ns: int
    mode: int
    inode: Tuple[int, int]  # (st_dev, st_ino): to notice a file swapped between scan and copy


@dataclass
class ScanResult:
    """What the walk found. `files` is on disk (`ingest.spill.SpilledFiles`, walk order): iterate
    it, never index it, so a million-file source costs no more memory than a small one."""

    root: Path
    files: SpilledFiles
    empty_dirs: List[str] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return self.files.total_bytes


def describe_name(raw: bytes) -> str:
    """A printable form of a path whose bytes may not be valid UTF-8."""
    return raw.decode("utf-8", errors="backslashreplace")


def scan_source(root, *, follow_internal_links: bool = False, spill_dir: Optional[str] = None) -> ScanResult:
    """List the source's files, or raise InputError listing every problem found.

    The list is written to an unlinked temporary file in `spill_dir` (the system's temporary
    folder when None) as the walk goes: memory stays flat however many files the source holds."""
    root_path = Path(root)
    if not root_path.exists() and not root_path.is_symlink():
        raise InputError("source does not exist", path=str(root_path))
    if root_path.is_symlink():
        raise InputError("source is a symbolic link; give the real folder", path=str(root_path))
    if not root_path.is_dir():
        raise InputError("source is not a folder (deposit a folder of files)", path=str(root_path))
    root_bytes = os.fsencode(os.path.abspath(root_path))
    real_root = os.path.realpath(root_bytes)
    result = ScanResult(root=Path(os.fsdecode(root_bytes)), files=SpilledFiles(root_bytes, spill_dir))
    odd: Dict[str, str] = {}  # NFC form -> first name not in NFC (only those can clash, see below)
    problems: List[str] = []

    def rel(raw_rel: bytes) -> str:
        return raw_rel.decode("utf-8")

    def listing(dir_abs: bytes, dir_rel: bytes) -> Optional[List[os.DirEntry]]:
        """The folder's entries sorted by name, or None (problem noted) if it cannot be read."""
        try:
            entries = sorted(os.scandir(dir_abs), key=lambda e: e.name)
        except PermissionError:
            problems.append(f"{describe_name(dir_rel) or '.'}: folder cannot be read (permission denied)")
            return None
        except OSError as exc:
            problems.append(f"{describe_name(dir_rel) or '.'}: folder cannot be read ({exc.strerror})")
            return None
        if not entries and dir_rel:
            result.empty_dirs.append(rel(dir_rel))
            _note_odd(odd, result.empty_dirs[-1])
        return entries

    # Depth first, names sorted at each level, a folder's contents right after its own entry
    # (the order the files are bagged in). Iterative, with an explicit stack of open listings:
    # a source may be nested deeper than Python's recursion limit (1,100 levels and more).
    stack: List[Tuple[bytes, Iterator[os.DirEntry]]] = []
    top = listing(root_bytes, b"")
    if top is not None:
        stack.append((b"", iter(top)))
    while stack:
        dir_rel, pending = stack[-1]
        for entry in pending:  # resumes where this folder's listing was left for a subfolder
            raw_rel = dir_rel + b"/" + entry.name if dir_rel else entry.name
            shown = describe_name(raw_rel)
            try:
                rel(raw_rel)
            except UnicodeDecodeError:
                problems.append(f"{shown}: name is not valid UTF-8 (rename it; BagIt manifests are UTF-8)")
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError as exc:
                problems.append(f"{shown}: cannot be examined ({exc.strerror})")
                continue
            if stat.S_ISLNK(st.st_mode):
                target = _internal_link_target(entry.path, real_root) if follow_internal_links else None
                if target is None:
                    why = "points outside the source or not to a regular file" if follow_internal_links else \
                        "symbolic links are refused (copy the real file into the source instead)"
                    problems.append(f"{shown}: symbolic link -> {describe_name(os.readlink(entry.path))}: {why}")
                    continue
                _add_file(result, problems, raw_rel, target, os.stat(target), odd)  # read the file itself
            elif stat.S_ISDIR(st.st_mode):
                below = listing(entry.path, raw_rel)
                if below is not None:
                    stack.append((raw_rel, iter(below)))
                    break  # descend now; this folder's remaining entries come after
            elif stat.S_ISREG(st.st_mode):
                _add_file(result, problems, raw_rel, entry.path, st, odd)
            else:
                problems.append(f"{shown}: {_kind(st.st_mode)} refused (only regular files can be deposited)")
        else:
            stack.pop()  # listing exhausted

    if odd:
        problems.extend(_normalisation_clashes(result, set(odd)))
    if problems:
        result.files.close()
        raise InputError(
            f"cannot deposit this source: {len(problems)} problem(s) found", path=str(root_path), problems=problems
        )
    return result


def _add_file(result: ScanResult, problems: List[str], raw_rel: bytes, abspath: bytes, st: os.stat_result,
              odd: Dict[str, str]) -> None:
    relpath = raw_rel.decode("utf-8")
    _note_odd(odd, relpath)
    if not os.access(abspath, os.R_OK):
        problems.append(f"{relpath}: file cannot be read (permission denied)")
        return
    result.files.append(
        SourceFile(
            relpath=relpath,
            abspath=abspath,
            size=st.st_size,
            mtime_ns=st.st_mtime_ns,
            mode=stat.S_IMODE(st.st_mode),
            inode=(st.st_dev, st.st_ino),
        )
    )


def _internal_link_target(link: bytes, real_root: bytes):
    target = os.path.realpath(link)
    if os.path.commonpath([target, real_root]) != real_root:
        return None
    try:
        st = os.stat(target)
    except OSError:
        return None
    return target if stat.S_ISREG(st.st_mode) else None


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode):
        return "character device"
    if stat.S_ISBLK(mode):
        return "block device"
    return "special file"


def _note_odd(odd: Dict[str, str], name: str) -> None:
    """Remember a name not in NFC. Two different names with one NFC form cannot both be in NFC
    (each would then be that form): every clash involves such a name, and sources rarely hold
    any, so the clash check needs no list of every name."""
    key = unicodedata.normalize("NFC", name)
    if key != name:
        odd.setdefault(key, name)


def _normalisation_clashes(result: ScanResult, keys: Set[str]) -> List[str]:
    """The clashes among names whose NFC form is one of `keys` (a second pass over the spilled
    list, only when some name is not in NFC); the same messages, in the same order, as comparing
    every name with every other."""
    seen: Dict[str, str] = {}
    clashes = []
    names = itertools.chain((f.relpath for f in result.files), result.empty_dirs)
    for name in names:
        key = unicodedata.normalize("NFC", name)
        if key not in keys:
            continue
        if key in seen and seen[key] != name:
            clashes.append(
                f"{seen[key]!r} and {name!r}: names differ only in Unicode normalisation (NFC/NFD); "
                "rename one of them, BagIt treats them as the same file"
            )
        else:
            seen[key] = name
    return clashes
