"""The event ledger: append-only Parquet segments chained by SHA-256, and its verifier.

Each `append_events` call writes one segment, `events/seg-<12-digit seq>.parquet`, whose Parquet
key-value metadata records:

* `strongroom.ledger.seq`            its own sequence number (0, 1, 2, ... with no gaps);
* `strongroom.ledger.prev_sha256`    SHA-256 of the previous segment's file bytes (64 zeros for 0);
* `strongroom.ledger.content_sha256` SHA-256 of a canonical text form of its events, so an
  edit is pinned on the segment that was edited, and damage to the newest segment shows even
  without a noted head;
* `strongroom.ledger.events`         how many events it holds.

The head hash (SHA-256 of the newest segment's bytes) therefore commits to every event ever
appended: editing, reordering, inserting or deleting an event or a segment breaks the chain at
a named segment. Removing the newest segment(s) leaves a shorter chain that is still
consistent; only a head hash noted earlier (`verify_ledger(..., expected_head=HASH)`, e.g. kept
in a report or printed by `strongroom ledger verify`) shows that.

Concurrent appenders (several Luigi workers or machines) claim the next sequence number
atomically: the segment is written under a temp name and hard-linked to its final name, which
fails if another writer took that number first; the loser re-reads the head, re-chains its
segment onto it and tries the next number. On S3 the same claim is a conditional PUT
(`If-None-Match: *`, answered 412 when the key exists); until `store.Store` sends it, appenders to
one S3 catalog must be serialised (e.g. one Luigi task writes events at a time).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import random
import re
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from catalog.schema import EVENTS_SCHEMA, SCHEMA_VERSION, EventRecord, records_to_table
from catalog.store import Store, StoredFile

FOLDER = "events"
GENESIS = "0" * 64
SEGMENT_RE = re.compile(r"^seg-(\d{12})\.parquet$")
KEY_SEQ = b"strongroom.ledger.seq"
KEY_PREV = b"strongroom.ledger.prev_sha256"
KEY_CONTENT = b"strongroom.ledger.content_sha256"
KEY_COUNT = b"strongroom.ledger.events"
KEY_VERSION = b"strongroom.schema_version"
MAX_CLAIM_ATTEMPTS = 1000


def segment_name(seq: int) -> str:
    return f"seg-{seq:012d}.parquet"


def segment_id(seq: int) -> str:
    return f"seg-{seq:012d}"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def content_digest(table: pa.Table) -> str:
    """SHA-256 of the events as canonical JSON lines, independent of how Parquet encoded them.

    A Python pass over the rows, on purpose: the form must stay the same across pyarrow
    versions, and verification is not a hot path (about a second per 100,000 events).
    """
    h = hashlib.sha256()
    names = EVENTS_SCHEMA.names
    h.update(json.dumps(names).encode("utf-8") + b"\n")
    columns = [table.column(n).to_pylist() for n in names]
    for row in zip(*columns):
        h.update(json.dumps([_canonical(v) for v in row], ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()


def _canonical(value):
    if isinstance(value, _dt.datetime):
        return value.astimezone(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return value


def events_table(events: Sequence[EventRecord]) -> pa.Table:
    if not events:
        raise ValueError("append_events needs at least one event")
    bad = [e for e in events if not isinstance(e, EventRecord)]
    if bad:
        raise ValueError(f"append_events takes EventRecord objects, got {type(bad[0]).__name__}")
    ids = [e.event_id for e in events]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        raise ValueError(f"duplicate event_id(s) in one append: {', '.join(dup[:5])}")
    return records_to_table(events, EVENTS_SCHEMA)


def build_segment(table: pa.Table, seq: int, prev_hash: str) -> bytes:
    """The bytes of segment `seq` holding `table`, chained onto `prev_hash`."""
    meta = {
        KEY_SEQ: str(seq).encode(),
        KEY_PREV: prev_hash.encode(),
        KEY_CONTENT: content_digest(table).encode(),
        KEY_COUNT: str(table.num_rows).encode(),
        KEY_VERSION: SCHEMA_VERSION.encode(),
    }
    table = table.replace_schema_metadata(meta)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue().to_pybytes()


@dataclass(frozen=True)
class Segment:
    seq: int
    file: StoredFile


class Ledger:
    """The `events/` folder of one catalog. Keeps the head it last saw to append without listing."""

    def __init__(self, store: Store):
        self.store = store
        self._head: Optional[Tuple[int, str]] = None

    def segments(self) -> List[Segment]:
        found = []
        for f in self.store.list(FOLDER):
            m = SEGMENT_RE.match(f.name)
            if m:
                found.append(Segment(int(m.group(1)), f))
        found.sort(key=lambda s: s.seq)
        return found

    def head(self) -> Tuple[int, str]:
        """(seq, sha256) of the newest segment; (-1, 64 zeros) for an empty ledger."""
        segs = self.segments()
        if not segs:
            return -1, GENESIS
        last = segs[-1]
        return last.seq, sha256_hex(self.store.read_bytes(last.file.path))

    def append(self, events: Sequence[EventRecord]) -> str:
        """Write one segment holding `events`; returns its id, e.g. "seg-000000000042"."""
        table = events_table(events)
        seq, prev = self._head if self._head is not None else self.head()
        for attempt in range(MAX_CLAIM_ATTEMPTS):
            data = build_segment(table, seq + 1, prev)
            if self.store.create_exclusive(FOLDER, segment_name(seq + 1), data):
                self._head = (seq + 1, sha256_hex(data))
                return segment_id(seq + 1)
            # Another writer took seq + 1: chain onto whatever is newest now.
            new_seq, new_prev = self.head()
            if new_seq < seq + 1:  # a listing that lags behind the write (object stores)
                new_seq, new_prev = seq + 1, sha256_hex(self.store.read_bytes(self.store.path(FOLDER, segment_name(seq + 1))))
            seq, prev = new_seq, new_prev
            if attempt > 10:
                time.sleep(random.uniform(0, 0.01 * min(attempt, 50)))
        raise RuntimeError(f"could not claim a ledger sequence number in {self.store.path(FOLDER)} "
                           f"after {MAX_CLAIM_ATTEMPTS} attempts")


@dataclass
class LedgerReport:
    """What `verify_ledger` found. `problems` name the segment file each one concerns."""

    ok: bool
    head_hash: Optional[str]
    segments: int
    events: int
    problems: List[str] = field(default_factory=list)
    head_seq: Optional[int] = None

    def to_dict(self) -> Dict[str, object]:
        return {"ok": self.ok, "head_seq": self.head_seq, "head_hash": self.head_hash,
                "segments": self.segments, "events": self.events, "problems": list(self.problems)}


def verify_ledger(catalog_location: str, expected_head: Optional[str] = None, *,
                  filesystem: Optional[pafs.FileSystem] = None) -> LedgerReport:
    """Re-hash every segment and check the chain; with `expected_head`, also that the segment
    with that hash is still there (so removing the newest segments is detected too)."""
    return verify_store(Store(catalog_location, filesystem=filesystem), expected_head)


def verify_store(store: Store, expected_head: Optional[str] = None) -> LedgerReport:
    ledger = Ledger(store)
    problems: List[str] = []
    for f in store.list(FOLDER):
        if not SEGMENT_RE.match(f.name):
            problems.append(f"{f.name}: not a ledger segment name (seg-<12 digits>.parquet): "
                            f"a stray or renamed file in {store.path(FOLDER)}")
    segs = ledger.segments()
    hashes: Dict[str, int] = {}
    seen_ids: Dict[str, str] = {}
    events = 0
    expected_seq = 0
    prev_hash: Optional[str] = GENESIS
    prev_name: Optional[str] = None
    for seg in segs:
        name = seg.file.name
        if seg.seq > expected_seq:
            missing = (segment_name(expected_seq) if seg.seq == expected_seq + 1
                       else f"{segment_name(expected_seq)} to {segment_name(seg.seq - 1)}")
            problems.append(f"{missing}: missing (deleted?) before {name}")
            prev_hash = None
        expected_seq = seg.seq + 1
        data = store.read_bytes(seg.file.path)
        digest = sha256_hex(data)
        hashes[digest] = seg.seq
        try:
            table = pq.read_table(pa.BufferReader(data))
        except Exception as exc:  # any decoding failure is damage to report, not to crash on
            problems.append(f"{name}: not a readable Parquet segment ({exc})")
            prev_hash, prev_name = digest, name
            continue
        meta = table.schema.metadata or {}
        events += table.num_rows
        recorded_seq = meta.get(KEY_SEQ, b"").decode(errors="replace")
        recorded_prev = meta.get(KEY_PREV, b"").decode(errors="replace")
        recorded_content = meta.get(KEY_CONTENT, b"").decode(errors="replace")
        recorded_count = meta.get(KEY_COUNT, b"").decode(errors="replace")
        if recorded_seq != str(seg.seq):
            problems.append(f"{name}: records sequence number {recorded_seq or '(none)'}, not {seg.seq}: "
                            f"segments were renamed, swapped or forged")
        if table.schema.remove_metadata() != EVENTS_SCHEMA or recorded_count != str(table.num_rows) \
                or content_digest(table) != recorded_content:
            problems.append(f"{name}: its events do not match the digest recorded when it was written "
                            f"(an event was edited, added or removed)")
        if seg.seq == 0 and recorded_prev != GENESIS:
            problems.append(f"{name}: the first segment must chain onto {GENESIS[:12]}..., "
                            f"records {recorded_prev[:12] or '(none)'}...")
        elif seg.seq > 0 and prev_hash is not None and recorded_prev != prev_hash:
            problems.append(f"{name}: chain broken: it records previous hash {recorded_prev[:16] or '(none)'}... "
                            f"but {prev_name} hashes to {prev_hash[:16]}... ({prev_name} altered or replaced, "
                            f"or {name} forged)")
        ids = table.column("event_id").to_pylist() if "event_id" in table.column_names else []
        for event_id in ids:
            other = seen_ids.get(event_id)
            if other is not None:
                problems.append(f"{name}: event {event_id} already appears in {other} (copied event)")
            else:
                seen_ids[event_id] = name
        prev_hash, prev_name = digest, name

    head_seq = segs[-1].seq if segs else None
    head_hash = prev_hash if segs else None
    if expected_head is not None:
        wanted = expected_head.strip().lower()
        if wanted.startswith("sha256:"):
            wanted = wanted[len("sha256:"):]
        if wanted not in hashes and not (wanted == GENESIS and not segs):
            after = segment_name(head_seq + 1) if head_seq is not None else segment_name(0)
            problems.append(f"{after}: the expected head {wanted[:16]}... is not the hash of any segment: "
                            f"{after} (after the newest, {segs[-1].file.name if segs else 'none'}) or later "
                            f"segments were removed, or the expected head's segment was altered")
    return LedgerReport(ok=not problems, head_hash=head_hash, segments=len(segs), events=events,
                        problems=problems, head_seq=head_seq)
