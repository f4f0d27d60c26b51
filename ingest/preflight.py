"""Refuse, before anything is written, a deposit that can only fail (or that would harm the archive).

A deposit writes a state folder, catalog events and replica records as it goes. Some setups
are known to fail before the first byte is read, or worse, to succeed in a way nobody wants:

* a replica root that is a regular file (every copy to it fails, for ever);
* a replica root, the staging folder or the catalog folder inside the source: the archive
  would bag its own work files, or its own bags, into the deposit;
* a source that is (or is inside) a replica root, the staging or the catalog folder: the
  archive bagged into itself;
* a source that holds the bags of a Strongroom archive (`LIB/COLL/STAMP-N/bagit.txt` whose
  bag-info names that very bag id): a copied replica root, not a collection;
* a source with no file at all (empty, or only empty folders): a bag must list at least one
  payload file to be registered, so it would be copied and verified, then stay "NOT complete";
* a file nested more than MAX_FOLDER_DEPTH folders deep (see there);
* a supplied BagIt bag whose `bagit.txt` declares a version that is not M.N (see
  `supplied.check_bag_versions`).

These are checked here, on paths resolved with realpath (through every symbolic link), so the
command exits 2 naming the path and the problem, and the archive is exactly as it was.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, List, Optional, Sequence

from strongroom.errors import ConfigError, InputError

from .scan import ScanResult, SourceFile
from .supplied import BAG_MANIFEST

# The layout of a replica root: LIB/COLL/YYYYMMDDTHHMMSSZ-N/bagit.txt (ingest.naming)
_ARCHIVE_BAG = re.compile(r"(?:^|/)([A-Za-z0-9][A-Za-z0-9._-]{0,63}/[A-Za-z0-9][A-Za-z0-9._-]{0,63}/"
                          r"[0-9]{8}T[0-9]{6}Z-[0-9]+)/bagit\.txt\Z")  # ASCII digits only, no trailing newline
_TELLING_NAMES = frozenset({"bagit.txt", "bag-info.txt"})
_BAG_ID_LINE = re.compile(rb"^Strongroom-Bag-Id:[ \t]*(\S+)[ \t]*\r?$", re.MULTILINE)
#: The deepest a file may sit below the source root, in folders. BagIt (RFC 8493) sets no limit,
#: and scanning, staging, bagging, validating and the storage adapters' bag walks take any depth
#: (no recursion, explicit stacks). The bound left is PATH_MAX (4,096 bytes): ~2,000 one-letter
#: levels for a full path, less the staging and replica roots in front. 1,500 stays clear of it
#: for short names; a copy that dies half way on a path too long is worse than a clear refusal.
MAX_FOLDER_DEPTH = 1500
_BAG_INFO_LIMIT = 1 << 20  # bag-info.txt of a Strongroom bag is a few hundred bytes


@dataclass(frozen=True)
class Place:
    """A folder of the archive that a deposit must keep apart from its source."""

    what: str  # e.g. "the replica root of storage.site-a", "the staging folder"
    path: Path
    key: Optional[str] = None  # the config key that sets it, for the message
    must_be_folder: bool = False  # the deposit will write there: a file in its place can only fail


def telling_files(scan: ScanResult, limit: Optional[int] = None) -> List[SourceFile]:
    """The few files the checks before any work look at, in one pass over the spilled list (each
    pass costs ~0.06 s per 20,000 files): every bagit.txt, bag-info.txt and BagIt manifest, and
    every file nested more than `limit` (MAX_FOLDER_DEPTH) folders deep."""
    limit = MAX_FOLDER_DEPTH if limit is None else limit
    found = []
    for f in scan.files:
        name = f.relpath.rpartition("/")[2]
        if name in _TELLING_NAMES or BAG_MANIFEST.match(name) or f.relpath.count("/") > limit:
            found.append(f)
    return found


def refuse_impossible(source: Path, scan: ScanResult, places: Sequence[Place], *,
                      config_path: Optional[str] = None, telling: Optional[Sequence[SourceFile]] = None) -> None:
    """ConfigError (exit 2) for a place that cannot be a folder, InputError (exit 2) for a source
    the archive must not take; each names the path and the problem. Reads no payload byte.
    `telling`: `telling_files(scan)`, when the caller has it already."""
    config_problems = [f"{p.key or p.what}: {p.path} is not a folder (it is {_kind(p.path)}); "
                       f"nothing can be stored there" for p in places if p.must_be_folder and _not_a_folder(p.path)]
    if config_problems:
        raise ConfigError(f"cannot deposit: {len(config_problems)} storage location(s) can only fail",
                          path=config_path, problems=config_problems)

    problems: List[str] = []
    real_source = os.path.realpath(source)
    for place in places:
        real = os.path.realpath(place.path)
        if real == real_source:
            problems.append(f"the source is {place.what} ({place.path}): the archive cannot be deposited into itself")
        elif _inside(real, real_source):
            problems.append(f"{place.what} ({place.path}) is inside the source: the archive would bag its own "
                            f"files; deposit a folder that holds only the collection")
        elif _inside(real_source, real):
            problems.append(f"the source is inside {place.what} ({place.path}): the archive cannot be deposited "
                            f"into itself")
    telling = telling_files(scan) if telling is None else telling
    problems.extend(archive_bags_in(telling))
    problems.extend(too_deep(telling))
    if not scan.files:
        held = f" (only {len(scan.empty_dirs)} empty folder(s))" if scan.empty_dirs else ""
        problems.append(f"the source holds no file{held}: a bag must hold at least one file; "
                        f"put the collection's files in it")
    if problems:
        raise InputError(f"cannot deposit this source: {len(problems)} problem(s) found", path=str(source),
                         problems=problems)


def too_deep(files: Iterable[SourceFile], limit: Optional[int] = None) -> List[str]:
    """One line naming how many of `files` (the scan's, or `telling_files` with the same limit)
    sit deeper than `limit` folders, and the deepest of them."""
    limit = MAX_FOLDER_DEPTH if limit is None else limit
    deep = [(f.relpath.count("/"), f.relpath) for f in files if f.relpath.count("/") > limit]
    if not deep:
        return []
    depth, rel = max(deep)
    shown = rel if len(rel) <= 120 else f"{rel[:60]}...{rel[-50:]}"
    return [f"{len(deep)} file(s) nested more than {limit} folders deep, the deepest {depth} folders deep "
            f"({shown}): at most {limit} levels of folders can be deposited (depth limit, "
            f"ingest.preflight.MAX_FOLDER_DEPTH); move the files up or deposit the deep folder on its own"]


def archive_bags_in(files: Sequence[SourceFile]) -> List[str]:
    """The bags of a Strongroom archive among `files` (the source's `telling_files`: a copied
    replica root), one line each."""
    found = []
    by_rel = {f.relpath: f for f in files if f.relpath.endswith("bag-info.txt")}
    for rel in sorted(f.relpath for f in files if _ARCHIVE_BAG.search(f.relpath)):
        m = _ARCHIVE_BAG.search(rel)
        info = by_rel.get(rel[: -len("bagit.txt")] + "bag-info.txt")
        if info is None or info.size > _BAG_INFO_LIMIT:
            continue
        try:
            with open(info.abspath, "rb") as fh:
                declared = _BAG_ID_LINE.search(fh.read(_BAG_INFO_LIMIT))
        except OSError:
            continue  # scan_source already checked it is readable; a vanished file is no bag
        if declared and declared.group(1).decode("utf-8", "replace") == m.group(1):
            found.append(f"{rel[: -len('/bagit.txt')]}: is bag {m.group(1)} of a Strongroom archive; the source "
                         f"holds an archive's stored copies (a replica root?), not a collection")
    return found


def _inside(inner: str, outer: str) -> bool:
    return inner != outer and os.path.commonpath([inner, outer]) == outer


def _not_a_folder(path: Path) -> bool:
    return os.path.lexists(path) and not os.path.isdir(path)


def _kind(path: Path) -> str:
    if os.path.islink(path) and not os.path.exists(path):
        return "a broken symbolic link"
    return "a file" if os.path.isfile(path) else "not a folder"
