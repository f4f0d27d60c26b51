"""The `metadata/` tag files every Strongroom bag carries, so a bag explains itself.

A bag must stay understandable without Strongroom's catalog (the catalog can be lost and is
rebuilt from bags): what each file is (`formats.csv`), what the source looked like beyond what
BagIt can hold (`empty-directories.txt`, `file-attributes.csv`), what the depositor vouched for
(`supplied-checksums.csv`), and what was done to it, by which software (`premis.xml`).
"""

from __future__ import annotations

import csv
import io
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Dict, Iterable, List, Optional, Sequence

from strongroom import NAME, __version__

from . import premis
from .bagit_spec import encode_path
from .stage import StagedFile
from .supplied import SuppliedDigest

FORMAT_COLUMNS = [
    "path", "size", "puid", "format_name", "format_version", "mime", "method", "alternatives",
    "fido_version", "signature_version",
]


def _csv_bytes(header: Sequence[str], rows: Iterable[Sequence]) -> bytes:
    out = io.StringIO(newline="")
    # RFC 4180 CRLF rows: the csv module then quotes any field holding CR or LF (file names may).
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue().encode("utf-8")


def format_row(path: str, size: int, ident) -> list:
    if ident is None:
        return [path, size, "", "", "", "", "none", "", "", ""]
    return [
        path, size, ident.puid, ident.format_name, ident.format_version, ident.mime, ident.method,
        ";".join(ident.alternatives), ident.fido_version, ident.signature_version,
    ]


def formats_csv(files: Sequence[StagedFile]) -> bytes:
    return _csv_bytes(FORMAT_COLUMNS, (format_row("data/" + f.relpath, f.size, f.identification) for f in files))


def file_attributes_csv(files: Sequence[StagedFile]) -> bytes:
    """Modification times: kept on staged copies, but object stores and restores need them written down."""
    rows = (
        ["data/" + f.relpath, f.size, f.mtime_ns,
         datetime.fromtimestamp(f.mtime_ns / 1e9, timezone.utc).isoformat().replace("+00:00", "Z")]
        for f in files
    )
    return _csv_bytes(["path", "size", "mtime_ns", "mtime_utc"], rows)


def empty_dirs_txt(empty_dirs: Sequence[str]) -> bytes:
    """One folder a line, relative to data/, percent-encoded like manifest paths (names may hold LF)."""
    return "".join(encode_path("data/" + d) + "\n" for d in empty_dirs).encode("utf-8")


def supplied_csv(supplied: Sequence[SuppliedDigest]) -> bytes:
    rows = (["data/" + s.path, s.algorithm, s.digest, "data/" + s.listed_in, s.line, "verified"] for s in supplied)
    return _csv_bytes(["path", "algorithm", "digest", "listed_in", "line", "outcome"], rows)


@dataclass(frozen=True)
class Provenance:
    """Who and what made the bag: recorded as PREMIS agents."""

    library: str
    fido_version: str
    signature_version: str
    when: datetime

    def agents(self) -> List["premis.Agent"]:
        return [
            premis.Agent("local", "strongroom", NAME, "software", version=__version__,
                         note=f"{NAME} {__version__} digital preservation pipeline"),
            premis.Agent("local", "fido", "FIDO (opf-fido)", "software", version=self.fido_version,
                         note=f"PRONOM signature file {self.signature_version}"),
            premis.Agent("local", f"library:{self.library}", self.library, "organization",
                         note="depositing library (Source-Organization)"),
        ]


def premis_for_bag(
    bag_id: str,
    files: Sequence[StagedFile],
    algorithms: Sequence[str],
    provenance: Provenance,
    *,
    supplied_count: int,
    validated_at: datetime,
    unidentified: int,
    title: str = "",
    external_id: str = "",
) -> tuple:
    """(objects, events, agents) describing one bag's ingest."""
    when = provenance.when.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
    validated = validated_at.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
    objects: list = [premis.IntellectualEntity(
        "strongroom-bag", bag_id, title=title,
        other_identifiers=(("UUID", external_id),) if external_id else (),
    )]
    for f in files:
        ident = f.identification
        objects.append(premis.FileObject(
            identifier_type="strongroom-path",
            identifier_value=f"{bag_id}/data/{f.relpath}",
            original_name=f.relpath,
            size=f.size,
            fixity=tuple((a, f.digests[a]) for a in algorithms),
            format_puid=getattr(ident, "puid", "") or "",
            format_name=getattr(ident, "format_name", "") or "",
            format_version=getattr(ident, "format_version", "") or "",
            format_basis=getattr(ident, "method", "") or "",
        ))
    strongroom_agent = ("local", "strongroom", "executing program")
    fido_agent = ("local", "fido", "executing program")
    library_agent = ("local", f"library:{provenance.library}", "implementer")
    bag_obj = (("strongroom-bag", bag_id, "source"),)

    def event(kind: str, detail: str, outcome: str, outcome_detail: str, agents, at: str = when):
        return premis.Event("UUID", str(uuid.uuid4()), kind, at, detail, outcome, outcome_detail,
                            agents=tuple(agents), objects=bag_obj)

    n = len(files)
    events = [
        event("message digest calculation",
              f"{', '.join(algorithms)} computed for {n} file(s) while copying from the source (one read per byte)",
              "success", f"{n} file(s)", [strongroom_agent]),
        event("format identification", f"FIDO {provenance.fido_version}, PRONOM {provenance.signature_version}",
              "warning" if unidentified else "success",
              f"{n - unidentified} identified, {unidentified} unidentified", [fido_agent, strongroom_agent]),
    ]
    if supplied_count:
        events.append(event("fixity check", "depositor-supplied checksums compared with the bytes received",
                            "success", f"{supplied_count} supplied digest(s) matched", [strongroom_agent]))
    events += [
        event("validation", "BagIt 1.0 (RFC 8493) validation of the staged bag, every payload digest re-computed",
              "success", f"{n} file(s) valid", [strongroom_agent], at=validated),
        event("ingestion", "deposit packaged as a BagIt bag in staging", "success", bag_id,
              [strongroom_agent, library_agent], at=validated),
    ]
    return objects, events, provenance.agents()
