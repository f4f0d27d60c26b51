"""What one row of each catalog table is: the record dataclasses and their Arrow schemas.

The records are the only way rows get into the catalog, so they check their values when built:
a bad enum value or a naive datetime fails at the caller, not years later in a report. Every
timestamp is stored as UTC microseconds (`timestamp[us, tz=UTC]`), so a catalog written on a
machine in Beijing and read in Wuhan gives the same instants.

Columns whose names start with `_` are bookkeeping (which write a row came from, for
deduplication and crash safety); the query methods of `Catalog` never return them.
"""

from __future__ import annotations

import datetime as _dt
import re
import uuid
from dataclasses import dataclass, field, fields
from typing import Any, Dict, List, Optional, Sequence, Type, TypeVar

import pyarrow as pa

SCHEMA_VERSION = "1"

DIGEST_ALGORITHMS = ("md5", "sha1", "sha256", "sha512")
COLLECTION_TYPES = ("purchased", "self-built")
# "disputed": intact by its own manifests, but the bag's intact copies describe it differently and
# nothing independent decides which is right (catalog.disputes); a problem state, never good.
REPLICA_STATES = ("pending", "copied", "verified", "failed", "damaged", "repaired", "missing", "disputed")
AUDIT_KINDS = ("quick", "deep")
AUDIT_OUTCOMES = ("success", "failure", "inconclusive")
EVENT_OUTCOMES = ("success", "failure", "warning", "inconclusive")
OBJECT_TYPES = ("bag", "file", "replica")
# The usual PREMIS event types; others are allowed (PREMIS vocabularies grow), empty ones are not.
EVENT_TYPES = ("ingestion", "replication", "fixity check", "repair", "validation", "deletion",
               "message digest calculation", "format identification")

TIMESTAMP = pa.timestamp("us", tz="UTC")
_HEX = re.compile(r"[0-9a-fA-F]+")


def utc_now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def _utc(value: Optional[_dt.datetime], what: str, *, required: bool = True) -> Optional[_dt.datetime]:
    """An aware datetime in UTC truncated to microseconds (what Parquet keeps), so equality holds after a round trip."""
    if value is None:
        if required:
            raise ValueError(f"{what} is required (an aware datetime)")
        return None
    if not isinstance(value, _dt.datetime):
        raise ValueError(f"{what} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware (e.g. datetime.now(timezone.utc)), got naive {value}")
    return value.astimezone(_dt.timezone.utc)


def _choice(value: Any, allowed: Sequence[str], what: str, *, required: bool = True) -> None:
    if value is None and not required:
        return
    if value not in allowed:
        raise ValueError(f"{what} {value!r} is not one of: {', '.join(allowed)}")


def _text(value: Any, what: str, *, required: bool = True) -> None:
    if value is None and not required:
        return
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty string, got {value!r}")


def _count(value: Any, what: str, *, required: bool = True) -> None:
    if value is None and not required:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{what} must be a whole number >= 0, got {value!r}")


def check_bag_path(path: Any) -> None:
    """A path relative to the bag root ("data/x.tif"): never absolute, never escaping the bag."""
    if not isinstance(path, str) or not path:
        raise ValueError(f"file path must be a non-empty string, got {path!r}")
    parts = path.split("/")
    if path.startswith("/") or "\\" in path or "\x00" in path or any(p in ("", ".", "..") for p in parts) \
            or (len(parts[0]) == 2 and parts[0][1] == ":"):
        raise ValueError(f"file path {path!r} must be relative to the bag root with '/' separators "
                         f"and no empty, '.' or '..' segments (e.g. 'data/x.tif')")


def _freeze(obj: Any, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)


@dataclass(frozen=True)
class BagRecord:
    """One bag as registered: where it came from and what it holds (payload file and byte counts)."""

    bag_id: str
    library: str
    collection: str
    collection_type: str
    title: Optional[str]
    policy: str
    external_identifier: str
    group_id: str          # the deposit the bag belongs to; parts of one split deposit share it
    part: int              # 1-based
    part_count: int
    file_count: int        # payload files (rows in `files`)
    byte_count: int        # payload bytes (sum of `files.size`)
    created_at: _dt.datetime
    source_path: Optional[str] = None

    def __post_init__(self) -> None:
        for name in ("bag_id", "library", "collection", "policy", "external_identifier", "group_id"):
            _text(getattr(self, name), f"bag {name}")
        _choice(self.collection_type, COLLECTION_TYPES, "collection_type")
        _text(self.title, "bag title", required=False)
        _text(self.source_path, "bag source_path", required=False)
        for name in ("file_count", "byte_count"):
            _count(getattr(self, name), f"bag {name}")
        _count(self.part, "bag part")
        _count(self.part_count, "bag part_count")
        if not 1 <= self.part <= self.part_count:
            raise ValueError(f"bag {self.bag_id}: part {self.part} must be between 1 and part_count {self.part_count}")
        _freeze(self, "created_at", _utc(self.created_at, "bag created_at"))


@dataclass(frozen=True)
class FileRecord:
    """One payload file of a bag: size, digests (one column per algorithm) and format identification."""

    bag_id: str
    path: str              # relative to the bag root, e.g. "data/x.tif"
    size: int
    mtime_ns: Optional[int] = None
    md5: Optional[str] = None
    sha1: Optional[str] = None
    sha256: Optional[str] = None
    sha512: Optional[str] = None
    puid: Optional[str] = None
    format_name: Optional[str] = None
    format_version: Optional[str] = None
    mime: Optional[str] = None
    identification_method: Optional[str] = None

    def __post_init__(self) -> None:
        _text(self.bag_id, "file bag_id")
        check_bag_path(self.path)
        _count(self.size, f"file {self.path}: size")
        if self.mtime_ns is not None and (not isinstance(self.mtime_ns, int) or isinstance(self.mtime_ns, bool)):
            raise ValueError(f"file {self.path}: mtime_ns must be an int or None, got {self.mtime_ns!r}")
        for alg in DIGEST_ALGORITHMS:
            value = getattr(self, alg)
            if value is not None:
                if not isinstance(value, str) or not _HEX.fullmatch(value):
                    raise ValueError(f"file {self.path}: {alg} must be a hex digest or None, got {value!r}")
                _freeze(self, alg, value.lower())

    @property
    def digests(self) -> Dict[str, str]:
        """The digests present, by algorithm name."""
        return {alg: getattr(self, alg) for alg in DIGEST_ALGORITHMS if getattr(self, alg) is not None}


@dataclass(frozen=True)
class ReplicaRecord:
    """One state record of one bag on one storage target; the newest `recorded_at` is the current state."""

    bag_id: str
    target: str
    site: str
    state: str
    verified_at: Optional[_dt.datetime] = None
    last_audit_at: Optional[_dt.datetime] = None
    last_audit_kind: Optional[str] = None
    last_audit_outcome: Optional[str] = None
    detail: Optional[str] = None
    recorded_at: _dt.datetime = field(default_factory=utc_now)

    def __post_init__(self) -> None:
        for name in ("bag_id", "target", "site"):
            _text(getattr(self, name), f"replica {name}")
        _choice(self.state, REPLICA_STATES, "replica state")
        _choice(self.last_audit_kind, AUDIT_KINDS, "replica last_audit_kind", required=False)
        _choice(self.last_audit_outcome, AUDIT_OUTCOMES, "replica last_audit_outcome", required=False)
        _freeze(self, "verified_at", _utc(self.verified_at, "replica verified_at", required=False))
        _freeze(self, "last_audit_at", _utc(self.last_audit_at, "replica last_audit_at", required=False))
        _freeze(self, "recorded_at", _utc(self.recorded_at, "replica recorded_at"))


@dataclass(frozen=True)
class EventRecord:
    """A PREMIS-style event. `event_id` (a UUID) and `datetime` (now, UTC) are filled in when omitted."""

    type: str
    outcome: str
    detail: Optional[str] = None
    agent: Optional[str] = None
    object_type: str = "bag"
    bag_id: Optional[str] = None
    target: Optional[str] = None
    path: Optional[str] = None
    event_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    datetime: _dt.datetime = field(default_factory=utc_now)
    # Who acted (contract C3): filled in by Catalog.append_events, the one place events enter the
    # ledger; null in events written before they were recorded. `agent` above stays the program.
    operator: Optional[str] = None
    agent_library: Optional[str] = None   # the library the event acted for (else the bag's)
    software: Optional[str] = None        # e.g. "Strongroom 0.1.0"

    def __post_init__(self) -> None:
        _text(self.type, "event type")
        _choice(self.outcome, EVENT_OUTCOMES, "event outcome")
        _choice(self.object_type, OBJECT_TYPES, "event object_type")
        _text(self.event_id, "event_id")
        for name in ("bag_id", "target", "agent", "operator", "agent_library", "software"):
            _text(getattr(self, name), f"event {name}", required=False)
        if self.path is not None:
            check_bag_path(self.path)
        _freeze(self, "datetime", _utc(self.datetime, "event datetime"))


# --------------------------------------------------------------------------------------------
# Arrow schemas. Column order = field order of the record, then bookkeeping columns.

BAG_FIELDS = [
    pa.field("bag_id", pa.string(), nullable=False),
    pa.field("library", pa.string(), nullable=False),
    pa.field("collection", pa.string(), nullable=False),
    pa.field("collection_type", pa.string(), nullable=False),
    pa.field("title", pa.string()),
    pa.field("policy", pa.string(), nullable=False),
    pa.field("external_identifier", pa.string(), nullable=False),
    pa.field("group_id", pa.string(), nullable=False),
    pa.field("part", pa.int32(), nullable=False),
    pa.field("part_count", pa.int32(), nullable=False),
    pa.field("file_count", pa.int64(), nullable=False),
    pa.field("byte_count", pa.int64(), nullable=False),
    pa.field("created_at", TIMESTAMP, nullable=False),
    pa.field("source_path", pa.string()),
]
FILE_FIELDS = [
    pa.field("bag_id", pa.string(), nullable=False),
    pa.field("path", pa.string(), nullable=False),
    pa.field("size", pa.int64(), nullable=False),
    pa.field("mtime_ns", pa.int64()),
    *[pa.field(alg, pa.string()) for alg in DIGEST_ALGORITHMS],
    pa.field("puid", pa.string()),
    pa.field("format_name", pa.string()),
    pa.field("format_version", pa.string()),
    pa.field("mime", pa.string()),
    pa.field("identification_method", pa.string()),
]
REPLICA_FIELDS = [
    pa.field("bag_id", pa.string(), nullable=False),
    pa.field("target", pa.string(), nullable=False),
    pa.field("site", pa.string(), nullable=False),
    pa.field("state", pa.string(), nullable=False),
    pa.field("verified_at", TIMESTAMP),
    pa.field("last_audit_at", TIMESTAMP),
    pa.field("last_audit_kind", pa.string()),
    pa.field("last_audit_outcome", pa.string()),
    pa.field("detail", pa.string()),
    pa.field("recorded_at", TIMESTAMP, nullable=False),
]
EVENT_FIELDS = [
    pa.field("event_id", pa.string(), nullable=False),
    pa.field("type", pa.string(), nullable=False),
    pa.field("datetime", TIMESTAMP, nullable=False),
    pa.field("outcome", pa.string(), nullable=False),
    pa.field("detail", pa.string()),
    pa.field("agent", pa.string()),
    pa.field("object_type", pa.string(), nullable=False),
    pa.field("bag_id", pa.string()),
    pa.field("target", pa.string()),
    pa.field("path", pa.string()),
]
# The event columns before agents were recorded: older ledger segments hold exactly these, and
# their content digests cover exactly these (see ledger.content_digest).
EVENT_FIELDS_V1 = list(EVENT_FIELDS)
EVENT_AGENT_FIELDS = [
    pa.field("operator", pa.string()),
    pa.field("agent_library", pa.string()),
    pa.field("software", pa.string()),
]
EVENT_FIELDS += EVENT_AGENT_FIELDS

# Bookkeeping: `_batch` ties a bag row to the files rows written by the same add_bag call (files
# rows whose batch has no bag row are leftovers of a crash and never returned); `_recorded_at`
# orders duplicate bag rows; `_record_id` breaks exact ties between replica records.
BATCH = "_batch"
RECORDED = "_recorded_at"
RECORD_ID = "_record_id"

BAGS_SCHEMA = pa.schema(BAG_FIELDS + [pa.field(BATCH, pa.string(), nullable=False),
                                      pa.field(RECORDED, TIMESTAMP, nullable=False)])
FILES_SCHEMA = pa.schema(FILE_FIELDS + [pa.field(BATCH, pa.string(), nullable=False)])
REPLICAS_SCHEMA = pa.schema(REPLICA_FIELDS + [pa.field(RECORD_ID, pa.string(), nullable=False)])
EVENTS_SCHEMA = pa.schema(EVENT_FIELDS)
EVENTS_SCHEMA_V1 = pa.schema(EVENT_FIELDS_V1)

TABLE_SCHEMAS: Dict[str, pa.Schema] = {
    "bags": BAGS_SCHEMA,
    "files": FILES_SCHEMA,
    "replicas": REPLICAS_SCHEMA,
    "events": EVENTS_SCHEMA,
}


def public_columns(schema: pa.Schema) -> List[str]:
    return [name for name in schema.names if not name.startswith("_")]


R = TypeVar("R")


def records_to_table(records: Sequence[Any], schema: pa.Schema, extra: Optional[Dict[str, Any]] = None) -> pa.Table:
    """Build a table column by column (records are few per write; this is not a query path)."""
    extra = extra or {}
    columns = {}
    for f in schema:
        if f.name in extra:
            value = extra[f.name]
            columns[f.name] = value if isinstance(value, list) else [value] * len(records)
        else:
            columns[f.name] = [getattr(r, f.name) for r in records]
    return pa.Table.from_pydict(columns, schema=schema)


def table_to_records(table: pa.Table, cls: Type[R]) -> List[R]:
    names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
    return [cls(**{n: row[n] for n in names}) for row in table.select(names).to_pylist()]
