"""Catalog records read from a bag itself, wherever it is stored.

Bags are self-describing (bag-info.txt, manifests, metadata/), which is what lets the catalog
be lost and rebuilt. The same function serves registration after a deposit (reading the
staged bag) and `catalog rebuild` (reading a replica through its storage adapter), so the
two can never describe a bag differently.
"""

from __future__ import annotations

import csv
import io
from datetime import datetime, timezone
from typing import Callable, Dict, List, Optional, Tuple

from catalog.schema import DIGEST_ALGORITHMS, BagRecord, FileRecord
from ingest import bagit_spec
from ingest.naming import BagId
from strongroom.errors import PreservationError

Reader = Callable[[str], Optional[bytes]]  # bag path -> bytes, or None when the file is absent


def _lines(data: bytes):
    text = data.decode("utf-8-sig")
    return ((n, line.rstrip("\r")) for n, line in enumerate(text.split("\n"), 1) if line.rstrip("\r") or n == 1)


def read_bag_info(read: Reader, where: str) -> Dict[str, str]:
    raw = read("bag-info.txt")
    if raw is None:
        raise PreservationError("bag-info.txt is missing", path=where)
    items, issues = bagit_spec.parse_tag_lines(_lines(raw))
    info: Dict[str, str] = {}
    for label, value in items:
        info.setdefault(label, value)
    return info


def read_payload_digests(read: Reader, where: str, version: str = bagit_spec.BAGIT_VERSION
                         ) -> Dict[str, Dict[str, str]]:
    """bag path -> {algorithm: digest}, from every payload manifest Strongroom can compute."""
    digests: Dict[str, Dict[str, str]] = {}
    for alg in DIGEST_ALGORITHMS:
        raw = read(f"manifest-{alg}.txt")
        if raw is None:
            continue
        entries, issues = bagit_spec.parse_manifest_lines(_lines(raw), version, alg)
        if issues:
            raise PreservationError(f"manifest-{alg}.txt cannot be read", path=where,
                                    problems=[str(i) for i in issues])
        for e in entries:
            digests.setdefault(e.path, {})[alg] = e.digest
    if not digests:
        raise PreservationError("the bag has no payload manifest Strongroom can read", path=where)
    return digests


def _csv_rows(raw: Optional[bytes]) -> List[Dict[str, str]]:
    if raw is None:
        return []
    return list(csv.DictReader(io.StringIO(raw.decode("utf-8"), newline="")))


def records_from_bag(read: Reader, bag_id: BagId, where: str) -> Tuple[BagRecord, List[FileRecord]]:
    """The bag's catalog rows, from its own tag files (`where` names it in errors)."""
    info = read_bag_info(read, where)
    digests = read_payload_digests(read, where)
    formats = {r["path"]: r for r in _csv_rows(read("metadata/formats.csv"))}
    attributes = {r["path"]: r for r in _csv_rows(read("metadata/file-attributes.csv"))}
    oxum = info.get("Payload-Oxum")
    files: List[FileRecord] = []
    for path in sorted(digests):
        fmt = formats.get(path, {})
        attr = attributes.get(path, {})
        size = attr.get("size") or fmt.get("size")
        if size is None:
            raise PreservationError(f"{path}: size unknown (metadata/file-attributes.csv lacks it)", path=where)
        files.append(FileRecord(
            bag_id=str(bag_id), path=path, size=int(size),
            mtime_ns=int(attr["mtime_ns"]) if attr.get("mtime_ns") else None,
            **{alg: d for alg, d in digests[path].items()},
            puid=fmt.get("puid") or None, format_name=fmt.get("format_name") or None,
            format_version=fmt.get("format_version") or None, mime=fmt.get("mime") or None,
            identification_method=fmt.get("method") or None,
        ))
    total = sum(f.size for f in files)
    if oxum and bagit_spec.parse_payload_oxum(oxum) != (total, len(files)):
        raise PreservationError(f"Payload-Oxum {oxum} disagrees with the manifests ({total}.{len(files)})",
                                path=where)
    part, _, count = info.get("Bag-Count", "1 of 1").partition(" of ")
    created = datetime.strptime(bag_id.stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
    bag = BagRecord(
        bag_id=str(bag_id), library=bag_id.library, collection=bag_id.collection,
        collection_type=info.get("Strongroom-Collection-Type", ""),
        title=info.get("Strongroom-Collection-Title") or None,
        policy=info.get("Strongroom-Policy", ""),
        external_identifier=info.get("External-Identifier", ""),
        group_id=info.get("Bag-Group-Identifier", bag_id.group),
        part=int(part or bag_id.part), part_count=int(count or 1) if count.strip() != "?" else 1,
        file_count=len(files), byte_count=total, created_at=created,
    )
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
