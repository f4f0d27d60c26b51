"""fetch.txt of a version bag (RFC 8493 section 2.2.3): the files it lists but does not hold.

A new version of a collection stores only new and changed files; each unchanged file is listed
in the version bag's manifests like any other and, in fetch.txt, as the same path of the bag
that physically holds it:

    strongroom://LIB/COLL/YYYYMMDDTHHMMSSZ-N/<url-quoted data/path> <length> <data/path as in manifests>

The rules (also in /work/coord/api-versions.md and docs/versions.md): the bag named is of the
same library and collection and holds the bytes in its own data/ (one hop, never a chain), the
URL's path equals the file path, the length is a byte count. The file is read from an untrusted
copy, so `parse_fetch` refuses anything else with a TagFileError naming the line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Optional
from urllib.parse import quote, unquote

from strongroom import bagit_spec
from strongroom.bag_id import BagId
from strongroom.errors import UsageError

FETCH_TXT = bagit_spec.FETCH_TXT
SCHEME = "strongroom://"
Reader = Callable[[str], Optional[bytes]]  # bag path -> bytes, None when absent (catalog.bag_records)

_LINE = re.compile(r"(\S+) ([0-9]{1,19}) (.+)")


@dataclass(frozen=True)
class FetchEntry:
    """One unchanged file of a version bag: which earlier bag holds it, where, how long it is."""

    bag_id: str      # the bag whose data/ holds the bytes
    path: str        # bag path, e.g. "data/x.tif" (decoded)
    length: int
    line: int = 0


def fetch_line(entry: FetchEntry) -> str:
    """The fetch.txt line of `entry` (LF-terminated)."""
    BagId.parse(entry.bag_id)
    problem = bagit_spec.path_problem(entry.path)
    if problem or not bagit_spec.is_payload_path(entry.path):
        raise ValueError(f"{entry.path!r} cannot go into fetch.txt: {problem or 'not under data/'}")
    url = SCHEME + entry.bag_id + "/" + quote(entry.path, safe="/")
    return f"{url} {entry.length} {bagit_spec.encode_path(entry.path)}\n"


def fetch_bytes(entries: Iterable[FetchEntry]) -> bytes:
    """fetch.txt's content, sorted by path so a rerun writes the same bytes."""
    return "".join(fetch_line(e) for e in sorted(entries, key=lambda e: e.path)).encode("utf-8")


def parse_fetch(data: bytes, where: str, version: str = bagit_spec.BAGIT_VERSION) -> List[FetchEntry]:
    """The entries of a Strongroom fetch.txt; TagFileError naming the line for anything else."""
    out: List[FetchEntry] = []
    seen: Dict[str, int] = {}
    for number, line in bagit_spec.split_lines(data, FETCH_TXT, where):
        if not line.strip():
            continue
        m = _LINE.fullmatch(line)
        if not m:
            raise _bad(f"{line[:200]!r} is not 'URL LENGTH PATH'", number, where)
        url, length, written = m.groups()
        path = bagit_spec.decode_path(written, version)
        problem = bagit_spec.path_problem(path)
        if problem or bagit_spec.canonical_path(path) != path or not bagit_spec.is_payload_path(path):
            raise _bad(f"unsafe or non-payload path {written[:200]!r}: {problem or 'not a canonical data/ path'}",
                       number, where)
        if not url.startswith(SCHEME):
            raise _bad(f"{url[:200]!r} is not a {SCHEME} URL (Strongroom never fetches from elsewhere)", number, where)
        parts = url[len(SCHEME):].split("/", 3)
        if len(parts) != 4:
            raise _bad(f"{url[:200]!r} does not name a bag and a file", number, where)
        bag_id = "/".join(parts[:3])
        try:
            BagId.parse(bag_id)
        except UsageError:
            raise _bad(f"{bag_id[:200]!r} in {url[:200]!r} is not a bag id", number, where) from None
        try:
            url_path: Optional[str] = unquote(parts[3], errors="strict")
        except UnicodeDecodeError:
            url_path = None
        if url_path != path:
            raise _bad(f"the URL's path {parts[3][:200]!r} is not the file path {written[:200]!r}", number, where)
        if path in seen:
            raise _bad(f"{path!r} is listed again (first on line {seen[path]})", number, where)
        seen[path] = number
        out.append(FetchEntry(bag_id, path, int(length), number))
    return out


def fetched(read: Reader, where: str) -> Dict[str, FetchEntry]:
    """path -> entry of a bag's fetch.txt (empty when the bag has none: an ordinary bag)."""
    raw = read(FETCH_TXT)
    return {} if raw is None else {e.path: e for e in parse_fetch(raw, where)}


def _bad(problem: str, line: int, where: str) -> bagit_spec.TagFileError:
    return bagit_spec.TagFileError(problem, file=FETCH_TXT, line=line, where=where)
