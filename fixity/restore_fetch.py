"""Where a version bag's unchanged files are read from: its fetch.txt (contract C4).

Why a module of its own: a bag deposited as a new version of a collection stores only new and
changed files; each unchanged one is listed in its manifests (so the catalog holds its digests
for the new bag) and in its `fetch.txt` as

    strongroom://<earlier-bag-id>/data/<path> <length> data/<path>

(RFC 8493 section 2.2.3, the paths encoded as in manifests). A restore of the version bag reads
such a file from a verified replica of the earlier bag and checks it against the NEW bag's
digests from the catalog, so what comes back is what the version bag lists, whatever the
earlier bag's replicas hold. The earlier bag may itself be a version bag whose copy of the
file is fetched again: entries are followed bag by bag (at most `MAX_HOPS`, never in a circle).

Nothing in a fetch.txt is trusted: only `strongroom://` URLs naming a bag of the SAME library
and collection that the catalog holds are used (never a network URL: nothing is downloaded),
every path passes `check_relpath` and must lie under data/, and an earlier bag whose catalog
digests for the file differ from the new bag's is refused before any replica is read (so a
replica is never blamed for a file the version bag describes differently).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Tuple
from urllib.parse import unquote

from catalog.catalog import Catalog
from ingest import bagit_spec
from ingest.naming import BagId
from strongroom.errors import UsageError
from storage_adapters.base import NotFound, StorageAdapter, StorageError, check_relpath

SCHEME = "strongroom://"
#: A fetch.txt longer than this is refused (it lists one short line per unchanged file).
MAX_FETCH_BYTES = 256 << 20
#: How many bags a file's reference may be followed through (version 20 of a file unchanged since 1).
MAX_HOPS = 1000

_ENTRY = re.compile(r" (?P<length>[0-9]{1,19}|-) (?P<path>data/.*)$")


@dataclass(frozen=True)
class FetchEntry:
    """One line of a fetch.txt: the file `path` of this bag is held as `source_path` in `source_bag`."""

    path: str
    source_bag: BagId
    source_path: str
    length: Optional[int]


@dataclass(frozen=True)
class Origin:
    """The bag and path whose stored bytes a fetched file is read from, once every reference is followed."""

    bag_id: BagId
    path: str


def parse_fetch_txt(raw: bytes, bag_id: BagId, version: str = bagit_spec.BAGIT_VERSION) -> Tuple[Dict[str, FetchEntry],
                                                                                                  List[str]]:
    """(entries by payload path, problems): a line that cannot be used is a problem, never a guess."""
    entries: Dict[str, FetchEntry] = {}
    problems: List[str] = []
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return {}, [f"{bagit_spec.FETCH_TXT}: not UTF-8 ({exc})"]
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{bagit_spec.FETCH_TXT} line {number}"
        entry = _parse_line(line, bag_id, version)
        if isinstance(entry, str):
            problems.append(f"{where}: {entry}")
        elif entry.path in entries:
            problems.append(f"{where}: {entry.path} is listed again")
        else:
            entries[entry.path] = entry
    return entries, problems


def _parse_line(line: str, bag_id: BagId, version: str):
    if not line.startswith(SCHEME):
        return f"{line[:80]!r} is not a {SCHEME} reference to an earlier bag (nothing is downloaded from elsewhere)"
    # a name may hold spaces: every ' LENGTH data/...' split is a candidate; the one whose URL
    # path (quoted, or encoded as in manifests) is the written path is taken
    candidates = []
    for start in [m.start() for m in re.finditer(r" (?:[0-9]{1,19}|-) data/", line)]:
        m = _ENTRY.match(line, start)
        if m:
            candidates.append((line[len(SCHEME):start], m.group("length"), m.group("path")))
    parsed = []
    for url, length, written in candidates:
        ref = _reference(url, bagit_spec.decode_path(written, version), version)
        if ref is not None:
            parsed.append((ref, length, bagit_spec.decode_path(written, version)))
    if not parsed:
        return f"{line[:80]!r} is not '{SCHEME}LIB/COLL/BAG/data/PATH LENGTH data/PATH' (the same path twice)"
    (source, source_path), length, path = parsed[0]
    for rel in (path, source_path):
        try:
            check_relpath(rel)
        except ValueError as exc:
            return f"unsafe path: {exc}"
        if not bagit_spec.is_payload_path(rel):
            return f"{rel!r} is not under data/"
    if (source.library, source.collection) != (bag_id.library, bag_id.collection):
        return f"refers to {source}, a bag of another collection (only earlier bags of {bag_id.library}/" \
               f"{bag_id.collection} are followed)"
    if source == bag_id:
        return f"refers to the bag itself ({source})"
    return FetchEntry(path, source, source_path, None if length == "-" else int(length))


def _reference(url: str, written: str, version: str) -> Optional[Tuple[BagId, str]]:
    parts = url.split("/", 3)
    if len(parts) != 4:
        return None
    try:
        source = BagId.parse("/".join(parts[:3]))
    except UsageError:
        return None
    encoded = parts[3]
    if written not in (unquote(encoded), bagit_spec.decode_path(encoded, version)):
        return None   # the URL's path must be the file's own path (api-versions: read the path from FILEPATH)
    return source, written


class FetchResolver:
    """Reads fetch.txt of the bags involved (once each) and follows a file to the bag holding its bytes.

    `read_fetch(bag_id)` must return the raw fetch.txt of that bag from one of its verified
    replicas (None: the bag has none), or raise StorageError.
    """

    def __init__(self, catalog: Catalog, read_fetch):
        self.catalog = catalog
        self._read_fetch = read_fetch
        self._entries: Dict[str, Dict[str, FetchEntry]] = {}
        self._problems: Dict[str, List[str]] = {}
        self._digests: Dict[str, Dict[str, Mapping[str, str]]] = {}

    def entries(self, bag_id: BagId) -> Dict[str, FetchEntry]:
        key = str(bag_id)
        if key not in self._entries:
            try:
                raw = self._read_fetch(bag_id)
            except StorageError as exc:
                raw, self._problems[key] = None, [f"{bagit_spec.FETCH_TXT} of {bag_id} cannot be read ({exc})"]
            if raw is None:
                self._entries[key] = {}
            elif len(raw) > MAX_FETCH_BYTES:
                self._entries[key] = {}
                self._problems[key] = [f"{bagit_spec.FETCH_TXT} of {bag_id} is longer than {MAX_FETCH_BYTES} bytes"]
            else:
                self._entries[key], self._problems[key] = parse_fetch_txt(raw, bag_id)
        return self._entries[key]

    def problems(self, bag_id: BagId) -> List[str]:
        self.entries(bag_id)
        return list(self._problems.get(str(bag_id), ()))

    def origin(self, bag_id: BagId, path: str, digests: Mapping[str, str]) -> Tuple[Optional[Origin], Optional[str]]:
        """(where the bytes of `path` of `bag_id` are, None) or (None, why they cannot be had).

        Follows fetch.txt entries through earlier bags; each bag on the way must be in the
        catalog and list the file with the same digests as `digests` (the bag being restored's).
        """
        seen = {str(bag_id)}
        current, current_path = bag_id, path
        for _ in range(MAX_HOPS):
            entry = self.entries(current).get(current_path)
            if entry is None:
                return Origin(current, current_path), None
            source = entry.source_bag
            if str(source) in seen:
                return None, f"fetch.txt references go round in a circle through {source}"
            seen.add(str(source))
            if self.catalog.bag(str(source)) is None:
                return None, f"fetch.txt refers to {source}, which is not in the catalog"
            held = self._file_digests(source).get(entry.source_path)
            if held is None:
                return None, f"fetch.txt refers to {source}/{entry.source_path}, which that bag does not list"
            common = [a for a in digests if a in held]
            if not common or any(held[a].lower() != digests[a].lower() for a in common):
                return None, (f"fetch.txt refers to {source}/{entry.source_path}, whose digests in the catalog "
                              "differ from this bag's")
            current, current_path = source, entry.source_path
        return None, f"fetch.txt references go through more than {MAX_HOPS} bags"

    def _file_digests(self, bag_id: BagId) -> Dict[str, Mapping[str, str]]:
        key = str(bag_id)
        if key not in self._digests:
            self._digests[key] = self.catalog.file_digests(key)
        return self._digests[key]


def read_tag_bytes(adapter: StorageAdapter, bag_id: BagId, relpath: str, limit: int = MAX_FETCH_BYTES) -> Optional[bytes]:
    """A small tag file of a stored bag (None when absent); StorageError when it cannot be read."""
    try:
        stream = adapter.open_file(bag_id, relpath)
    except NotFound:
        return None
    with stream:
        data = stream.read(limit + 1)
    return data


__all__ = ["SCHEME", "MAX_HOPS", "FetchEntry", "Origin", "FetchResolver", "parse_fetch_txt", "read_tag_bytes"]
