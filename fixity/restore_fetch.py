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

Nothing in a fetch.txt is trusted: it is read with the strict parser of ingest.fetch (only
`strongroom://` URLs, never a network one: nothing is downloaded; safe data/ paths), only bags
of the SAME library and collection that the catalog holds are followed, and an earlier bag
whose catalog digests for the file differ from the new bag's is refused before any replica is
read (so a replica is never blamed for a file the version bag describes differently).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Tuple

from catalog.catalog import Catalog
from strongroom import bagit_spec
from ingest.fetch import FETCH_TXT, FetchEntry, parse_fetch
from strongroom.bag_id import BagId
from storage_adapters.base import NotFound, StorageAdapter, StorageError

#: A fetch.txt longer than this is refused (it lists one short line per unchanged file).
MAX_FETCH_BYTES = 256 << 20
#: How many bags a file's reference may be followed through (deposits write one hop; older or
#: rebuilt bags might chain).
MAX_HOPS = 1000


@dataclass(frozen=True)
class Origin:
    """The bag and path whose stored bytes a fetched file is read from, once every reference is followed."""

    bag_id: BagId
    path: str


def parse_fetch_txt(raw: bytes, bag_id: BagId, where: str) -> Tuple[Dict[str, FetchEntry], List[str]]:
    """(entries by payload path, problems), read with the strict parser deposits write with
    (ingest.fetch); an entry naming a bag of another collection, or the bag itself, is a problem."""
    try:
        parsed = parse_fetch(raw, where)
    except bagit_spec.TagFileError as exc:
        return {}, [str(exc)]
    entries: Dict[str, FetchEntry] = {}
    problems: List[str] = []
    for e in parsed:
        source = BagId.parse(e.bag_id)
        if (source.library, source.collection) != (bag_id.library, bag_id.collection):
            problems.append(f"{FETCH_TXT} line {e.line}: refers to {source}, a bag of another collection (only "
                            f"earlier bags of {bag_id.library}/{bag_id.collection} are followed)")
        elif source == bag_id:
            problems.append(f"{FETCH_TXT} line {e.line}: refers to the bag itself")
        else:
            entries[e.path] = e
    return entries, problems


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
                self._entries[key], self._problems[key] = parse_fetch_txt(raw, bag_id, f"{FETCH_TXT} of {bag_id}")
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
            source = BagId.parse(entry.bag_id)
            if str(source) in seen:
                return None, f"fetch.txt references go round in a circle through {source}"
            seen.add(str(source))
            if self.catalog.bag(str(source)) is None:
                return None, f"fetch.txt refers to {source}, which is not in the catalog"
            held = self._file_digests(source).get(entry.path)
            if held is None:
                return None, f"fetch.txt refers to {source}/{entry.path}, which that bag does not list"
            common = [a for a in digests if a in held]
            if not common or any(held[a].lower() != digests[a].lower() for a in common):
                return None, (f"fetch.txt refers to {source}/{entry.path}, whose digests in the catalog "
                              "differ from this bag's")
            current, current_path = source, entry.path
        return None, f"fetch.txt references go through more than {MAX_HOPS} bags"

    def _file_digests(self, bag_id: BagId) -> Dict[str, Mapping[str, str]]:
        key = str(bag_id)
        if key not in self._digests:
            self._digests[key] = self.catalog.file_digests(key)
        return self._digests[key]


def read_tag_bytes(adapter: StorageAdapter, bag_id: BagId, relpath: str,
                   limit: int = MAX_FETCH_BYTES) -> Optional[bytes]:
    """A small tag file of a stored bag (None when absent); StorageError when it cannot be read."""
    try:
        stream = adapter.open_file(bag_id, relpath)
    except NotFound:
        return None
    with stream:
        data = stream.read(limit + 1)
    return data


__all__ = ["MAX_HOPS", "Origin", "FetchResolver", "parse_fetch_txt", "read_tag_bytes"]
