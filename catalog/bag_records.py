"""Catalog records read from a bag itself, wherever it is stored.

Bags are self-describing (bag-info.txt, manifests, metadata/), which is what lets the catalog
be lost and rebuilt. The same function serves registration after a deposit (reading the
staged bag), `catalog rebuild` (reading a replica through its storage adapter) and `restore`
(checking the tag files it is about to write back), so the three can never describe a bag
differently.

A stored bag is untrusted by the time it is read back: every field is parsed with the strict
parsers of `strongroom.bagit_spec` / `ingest.metadata` (ASCII digits, ranges, bounded lines and
fields), and anything that does not parse raises `bagit_spec.TagFileError` (a
PreservationError, exit 1) naming the bag, the file and the line - never a bare ValueError,
csv.Error or OverflowError from deep inside.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from catalog.schema import DIGEST_ALGORITHMS, BagRecord, FileRecord
from ingest import metadata
from strongroom import bagit_spec
from strongroom.bagit_spec import FieldError, TagFileError
from strongroom.bag_id import BagId
from strongroom.errors import PreservationError

Reader = Callable[[str], Optional[bytes]]  # bag path -> bytes, or None when the file is absent

BAG_INFO = "bag-info.txt"
#: bag-info.txt labels every Strongroom bag has (the deposit writes them) and a BagRecord needs.
REQUIRED_LABELS = ("Strongroom-Collection-Type", "Strongroom-Policy", "External-Identifier")


def _lines(data: bytes, file: str, where: str) -> Iterator[Tuple[int, str]]:
    """(number, line) of a UTF-8 tag file, LF, CR or CRLF line ends (`bagit_spec.split_lines`).

    TagFileError for bytes that are not UTF-8 or a line too long."""
    return bagit_spec.split_lines(data, file, where)


def _manifest_lines(data: bytes, file: str, where: str) -> Iterator[Tuple[int, str]]:
    """The manifest's lines without blank ones: a blank line is only a warning, and
    `read_payload_digests` refuses a manifest with any issue at all."""
    return ((n, line) for n, line in _lines(data, file, where) if line.strip())


def bag_version(read: Reader, where: str) -> str:
    """The rules bagit.txt declares (1.0 when it is absent: validation says why).

    A bagit.txt that is present but wrong (an unknown version, an encoding that does not exist
    or is not a text encoding...) raises TagFileError naming it: the tag files of such a bag
    cannot be read as it declares, so no catalog record is made from them.
    """
    raw = read(bagit_spec.BAGIT_TXT)
    if raw is None:
        return bagit_spec.BAGIT_VERSION
    decl = bagit_spec.parse_bagit_txt(raw)
    errors = [i for i in decl.issues if i.error]
    if errors:
        raise TagFileError(errors[0].message, file=bagit_spec.BAGIT_TXT, line=errors[0].line, where=where,
                           problems=[f"{bagit_spec.BAGIT_TXT}: {i}" for i in errors])
    return decl.rules or bagit_spec.BAGIT_VERSION


def read_bag_info_lines(read: Reader, where: str) -> Dict[str, Tuple[str, int]]:
    """label -> (value, line number) of bag-info.txt, first occurrence of each label."""
    raw = read(BAG_INFO)
    if raw is None:
        raise PreservationError(f"{BAG_INFO} is missing", path=where)
    return bagit_spec.bag_info_lines(raw, where)


def read_bag_info(read: Reader, where: str) -> Dict[str, str]:
    return {label: value for label, (value, _) in read_bag_info_lines(read, where).items()}


def read_payload_digests(read: Reader, where: str, version: str = bagit_spec.BAGIT_VERSION
                         ) -> Dict[str, Dict[str, str]]:
    """bag path -> {algorithm: digest}, from every payload manifest Strongroom can compute."""
    digests: Dict[str, Dict[str, str]] = {}
    for alg in DIGEST_ALGORITHMS:
        name = f"manifest-{alg}.txt"
        raw = read(name)
        if raw is None:
            continue
        entries, issues = bagit_spec.parse_manifest_lines(_manifest_lines(raw, name, where), version, alg)
        if issues:
            first = next((i for i in issues if i.error), issues[0])
            raise TagFileError(f"cannot be read: {first.message}", file=name, line=first.line, where=where,
                               problems=[f"{name}: {i}" for i in issues])
        for e in entries:
            if e.path in digests and alg in digests[e.path]:
                raise TagFileError(f"{e.path!r} is listed twice", file=name, line=e.line, where=where)
            digests.setdefault(e.path, {})[alg] = e.digest
    if not digests:
        raise PreservationError("the bag has no payload manifest Strongroom can read", path=where)
    return digests


def records_from_bag(read: Reader, bag_id: BagId, where: str) -> Tuple[BagRecord, List[FileRecord]]:
    """The bag's catalog rows, from its own tag files (`where` names it in errors)."""
    info_lines = read_bag_info_lines(read, where)
    digests = read_payload_digests(read, where, bag_version(read, where))
    raw = read(metadata.FORMATS_FILE)
    formats = metadata.read_formats(raw, where) if raw is not None else {}
    raw = read(metadata.ATTRIBUTES_FILE)
    attributes = metadata.read_file_attributes(raw, where) if raw is not None else {}
    described = [metadata.describe_file(path, formats, attributes, where) for path in sorted(digests)]
    return records_from_parts(info_lines, digests, described, bag_id, where)


def records_from_parts(info_lines: Dict[str, Tuple[str, int]], digests: Dict[str, Dict[str, str]],
                       described: Sequence[metadata.FileDescription], bag_id: BagId, where: str
                       ) -> Tuple[BagRecord, List[FileRecord]]:
    """The bag's catalog rows from its parsed tag files: bag-info.txt (label -> (value, line)),
    the payload manifests (path -> {algorithm: digest}) and each listed file's description in
    path order. `records_from_bag` parses them from the bag; a deposit hands on what its one
    check of the staged bag parsed (`ingest.bag_check`), so both describe a bag alike."""
    info = {label: value for label, (value, _) in info_lines.items()}
    files: List[FileRecord] = []
    for d in described:
        files.append(FileRecord(
            bag_id=str(bag_id), path=d.path, size=d.size, mtime_ns=d.mtime_ns,
            **{alg: digest for alg, digest in digests[d.path].items() if alg in DIGEST_ALGORITHMS},
            **d.identification,
        ))
    total = sum(f.size for f in files)
    try:
        if "Payload-Oxum" in info_lines:
            oxum, number = info_lines["Payload-Oxum"]
            if bagit_spec.parse_payload_oxum(oxum) != (total, len(files)):
                raise TagFileError(f"Payload-Oxum {oxum} disagrees with the manifests ({total}.{len(files)})",
                                   file=BAG_INFO, line=number, where=where)
        count_value, number = info_lines.get("Bag-Count", ("1 of 1", 0))
        part, count = bagit_spec.parse_bag_count(count_value)
    except FieldError as exc:
        raise TagFileError(str(exc), file=BAG_INFO, line=number, where=where) from None
    for label in REQUIRED_LABELS:
        if not info.get(label):
            problem = f"has no {label} (every Strongroom bag records it)" if label not in info_lines else \
                f"{label} is empty (every Strongroom bag records it)"
            raise TagFileError(problem, file=BAG_INFO, line=info_lines.get(label, ("", 0))[1], where=where)
    created = datetime.strptime(bag_id.stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
    try:
        bag = BagRecord(
            bag_id=str(bag_id), library=bag_id.library, collection=bag_id.collection,
            collection_type=info["Strongroom-Collection-Type"],
            title=info.get("Strongroom-Collection-Title") or None,
            policy=info["Strongroom-Policy"],
            external_identifier=info["External-Identifier"],
            group_id=info.get("Bag-Group-Identifier", bag_id.group),
            part=part, part_count=count if count is not None else 1,
            file_count=len(files), byte_count=total, created_at=created,
        )
    except ValueError as exc:   # the record's own checks (a collection type it does not know, part > count...)
        raise TagFileError(f"does not describe a bag the catalog can hold: {exc}", file=BAG_INFO,
                           where=where) from None
    return bag, files


def folder_reader(bag_dir) -> Reader:
    from pathlib import Path

    root = Path(bag_dir)

    def read(path: str) -> Optional[bytes]:
        p = root / path
        return p.read_bytes() if p.is_file() else None

    return read


def adapter_reader(adapter, bag_id: BagId) -> Reader:
    from storage_adapters.base import NotFound

    def read(path: str) -> Optional[bytes]:
        try:
            with adapter.open_file(bag_id, path) as fh:
                return fh.read()
        except NotFound:
            return None

    return read
