"""The `metadata/` tag files every Strongroom bag carries, so a bag explains itself.

A bag must stay understandable without Strongroom's catalog (the catalog can be lost and is
rebuilt from bags): what each file is (`formats.csv`), what the source looked like beyond what
BagIt can hold (`empty-directories.txt`, `file-attributes.csv`), what the depositor vouched for
(`supplied-checksums.csv`), and what was done to it, by which software (`premis.xml`).

Writing and reading are both here, so the two cannot drift apart. Reading is strict, because a
stored bag is untrusted input by the time it is read back (`catalog rebuild`, `restore`): every
row has exactly the header's fields, sizes and times are ASCII digits within range
(`bagit_spec.parse_uint` / `parse_int`), paths are safe payload paths listed once, and no line is
longer than `bagit_spec.MAX_LINE_CHARS` nor any field than `bagit_spec.MAX_FIELD_CHARS`.
Anything else raises `bagit_spec.TagFileError` naming the bag, the file and the line.
"""

from __future__ import annotations

import csv
import io
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from strongroom import NAME, __version__, agent as _agent

from . import premis
from strongroom.bagit_spec import (INT64_MAX, INT64_MIN, MAX_FIELD_CHARS, MAX_LINE_CHARS, FieldError, TagFileError,
                         encode_path, is_payload_path, parse_int, parse_uint, path_problem, split_lines)
from .stage import StagedFile
from .supplied import SuppliedDigest

FORMATS_FILE = "metadata/formats.csv"
ATTRIBUTES_FILE = "metadata/file-attributes.csv"
EMPTY_DIRS_FILE = "metadata/empty-directories.txt"
ATTRIBUTE_COLUMNS = ["path", "size", "mtime_ns", "mtime_utc"]
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
    return _csv_bytes(ATTRIBUTE_COLUMNS, rows)


def empty_dirs_txt(empty_dirs: Sequence[str]) -> bytes:
    """One folder a line, relative to data/, percent-encoded like manifest paths (names may hold LF)."""
    return "".join(encode_path("data/" + d) + "\n" for d in empty_dirs).encode("utf-8")


def supplied_csv(supplied: Sequence[SuppliedDigest]) -> bytes:
    rows = (["data/" + s.path, s.algorithm, s.digest, "data/" + s.listed_in, s.line, "verified"] for s in supplied)
    return _csv_bytes(["path", "algorithm", "digest", "listed_in", "line", "outcome"], rows)


# --------------------------------------------------------------------------------------------
# Reading them back (strictly)


@dataclass(frozen=True)
class FileAttributes:
    """One row of metadata/file-attributes.csv, parsed."""

    path: str
    size: int
    mtime_ns: Optional[int]   # None when the field is empty
    line: int


@dataclass(frozen=True)
class FormatRow:
    """One row of metadata/formats.csv, parsed: `size` checked, the text fields as written."""

    path: str
    size: int
    fields: Dict[str, str]
    line: int


def decode_tag_text(raw: bytes, file: str, where: Optional[str] = None,
                    max_line: int = MAX_LINE_CHARS) -> str:
    """A Strongroom tag file's bytes as text: UTF-8 (a BOM is dropped), no line over `max_line`.

    Lines are those `bagit_spec.split_lines` gives (LF, CR or CRLF ends), so a CR-only file is
    not taken for one long line. TagFileError names the line of the first byte that is not UTF-8
    or of the first line too long.
    """
    for _ in split_lines(raw, file, where, max_line):
        pass
    return raw.decode("utf-8-sig")


def read_csv_rows(raw: bytes, file: str, columns: Sequence[str], where: Optional[str] = None
                  ) -> List[Tuple[int, Dict[str, str]]]:
    """(line number, {column: field}) per record of a metadata CSV, strictly (see the module docstring).

    The header must hold every name in `columns` (others are allowed, for later versions); each
    record has exactly as many fields as the header; blank lines are skipped.
    """
    text = decode_tag_text(raw, file, where)
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    out: List[Tuple[int, Dict[str, str]]] = []
    header: Optional[List[str]] = None
    number = 1   # the line the current record starts on (a quoted field may hold line breaks)
    try:
        for row in reader:
            if not row:
                number = reader.line_num + 1
                continue
            for i, value in enumerate(row):
                if len(value) > MAX_FIELD_CHARS:
                    raise TagFileError(f"field {i + 1} is {len(value)} characters long (at most {MAX_FIELD_CHARS} "
                                       "are accepted)", file=file, line=number, where=where)
            if header is None:
                header = row
                missing = [c for c in columns if c not in header]
                if missing or len(set(header)) != len(header):
                    raise TagFileError(f"the header {','.join(header)[:200]!r} lacks {', '.join(missing)}"
                                       if missing else "the header names a column twice",
                                       file=file, line=number, where=where)
                number = reader.line_num + 1
                continue
            if len(row) != len(header):
                raise TagFileError(f"has {len(row)} fields, the header {len(header)}", file=file, line=number,
                                   where=where)
            out.append((number, dict(zip(header, row))))
            number = reader.line_num + 1
    except csv.Error as exc:   # e.g. a quoted field beyond csv.field_size_limit(), a stray quote
        upto = f" (read up to line {reader.line_num})" if reader.line_num > number else ""
        raise TagFileError(f"is not valid CSV ({exc}){upto}", file=file, line=number, where=where) from None
    if header is None:
        raise TagFileError("is empty (not even a header line)", file=file, where=where)
    return out


def _path_field(value: str, file: str, number: int, where: Optional[str], seen: Dict[str, int]) -> str:
    problem = path_problem(value)
    if problem is None and not is_payload_path(value):
        problem = "is not a payload path (data/...)"
    if problem:
        raise TagFileError(f"path {value[:200]!r} {problem}" if problem.startswith("is ")
                           else f"path {value[:200]!r}: {problem}", file=file, line=number, where=where)
    if value in seen:
        raise TagFileError(f"path {value[:200]!r} is listed again (first on line {seen[value]})", file=file,
                           line=number, where=where)
    seen[value] = number
    return value


def read_file_attributes(raw: bytes, where: Optional[str] = None) -> Dict[str, FileAttributes]:
    """metadata/file-attributes.csv: path -> size and modification time (ns since 1970, int64 range)."""
    out: Dict[str, FileAttributes] = {}
    seen: Dict[str, int] = {}
    for number, row in read_csv_rows(raw, ATTRIBUTES_FILE, ("path", "size", "mtime_ns"), where):
        path = _path_field(row["path"], ATTRIBUTES_FILE, number, where, seen)
        try:
            size = parse_uint(row["size"], "size")
            mtime = parse_int(row["mtime_ns"], "mtime_ns", INT64_MIN, INT64_MAX) if row["mtime_ns"] else None
        except FieldError as exc:
            raise TagFileError(str(exc), file=ATTRIBUTES_FILE, line=number, where=where) from None
        out[path] = FileAttributes(path, size, mtime, number)
    return out


def read_formats(raw: bytes, where: Optional[str] = None) -> Dict[str, FormatRow]:
    """metadata/formats.csv: path -> size and the identification fields as written."""
    out: Dict[str, FormatRow] = {}
    seen: Dict[str, int] = {}
    for number, row in read_csv_rows(raw, FORMATS_FILE, ("path", "size"), where):
        path = _path_field(row["path"], FORMATS_FILE, number, where, seen)
        try:
            size = parse_uint(row["size"], "size")
        except FieldError as exc:
            raise TagFileError(str(exc), file=FORMATS_FILE, line=number, where=where) from None
        out[path] = FormatRow(path, size, row, number)
    return out


#: The formats.csv fields a file's catalog row holds, in FileRecord's names.
RECORD_FORMAT_FIELDS = (("puid", "puid"), ("format_name", "format_name"), ("format_version", "format_version"),
                        ("mime", "mime"), ("identification_method", "method"))


@dataclass(frozen=True)
class FileDescription:
    """What a bag's metadata/ says of one payload file, as its catalog row takes it: the size
    (file-attributes.csv, else formats.csv), the modification time and the identification
    (FileRecord's field names; an empty field is None)."""

    path: str
    size: int
    mtime_ns: Optional[int]
    identification: Dict[str, Optional[str]]


def describe_file(path: str, formats: Dict[str, FormatRow], attributes: Dict[str, FileAttributes],
                  where: Optional[str] = None) -> FileDescription:
    """One payload file's description from the parsed formats.csv and file-attributes.csv.

    Raises PreservationError when neither gives its size, TagFileError when they disagree."""
    from strongroom.errors import PreservationError

    fmt = formats.get(path)
    attr = attributes.get(path)
    size = attr.size if attr is not None else (fmt.size if fmt is not None else None)
    if size is None:
        raise PreservationError(f"{path}: size unknown ({ATTRIBUTES_FILE} lacks it)", path=where)
    if attr is not None and fmt is not None and attr.size != fmt.size:
        raise TagFileError(f"{path}: size {attr.size} disagrees with {FORMATS_FILE} line {fmt.line} "
                           f"({fmt.size})", file=ATTRIBUTES_FILE, line=attr.line, where=where)
    text = fmt.fields if fmt is not None else {}
    return FileDescription(path, size, attr.mtime_ns if attr is not None else None,
                           {name: text.get(column) or None for name, column in RECORD_FORMAT_FIELDS})


@dataclass(frozen=True)
class Provenance:
    """Who and what made the bag: recorded as PREMIS agents."""

    library: str
    fido_version: str
    signature_version: str
    when: datetime
    operator: str = field(default_factory=_agent.operator)   # who ran the deposit (strongroom.agent)

    def agents(self) -> List["premis.Agent"]:
        return [
            premis.Agent("local", f"operator:{self.operator}", self.operator, "person",
                         note=f"operator who ran the deposit ({_agent.OPERATOR_ENV}, else the OS user)"),
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
    virus: Optional[dict] = None,
) -> tuple:
    """(objects, events, agents) describing one bag's ingest (`virus`: ingest.virus.summarize())."""
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
    operator_agent = ("local", f"operator:{provenance.operator}", "implementer")
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
        event("validation", "BagIt 1.0 (RFC 8493) check of the staged bag (structure, completeness, Payload-Oxum, "
                            "tag manifests); every payload digest is checked again as each replica is written "
                            "and re-read",
              "success", f"{n} file(s) valid", [strongroom_agent], at=validated),
        event("ingestion", "deposit packaged as a BagIt bag in staging", "success", bag_id,
              [strongroom_agent, library_agent, operator_agent], at=validated),
    ]
    agents = provenance.agents()
    if virus is not None:
        from .virus import premis_parts

        virus_event, virus_agent = premis_parts(virus, bag_id, when)
        events.insert(2, virus_event)
        agents.append(virus_agent)
    return objects, events, agents
