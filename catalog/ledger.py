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
(`If-None-Match: *`, answered 412 when the key exists), sent with boto3 by the `put_if_absent`
that `catalog.access.open_catalog` gives the store (pyarrow cannot send it).

Segments are never merged (that would change the bytes the chain commits to). So that event
queries do not open one file per segment forever, compaction writes a query cache,
`ledger-cache/upto-<seq>-<uuid>.parquet`: the events of segments 0..seq in order, with a `_seq`
column, and the hash of segment `seq` in its metadata. Queries use the newest cache whose
recorded hash still matches that segment, plus the segments after it. The cache is derived and
disposable; `verify_ledger` checks every cache against the segments, so a doctored cache cannot
hide behind an intact chain.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from catalog.schema import (EVENT_AGENT_FIELDS, EVENTS_SCHEMA, EVENTS_SCHEMA_V1, SCHEMA_VERSION, EventRecord,
                            records_to_table)
from catalog.store import Store, StoredFile

FOLDER = "events"
# Derived, disposable copy of a chain prefix, so queries read one file instead of thousands of
# segments. Never part of the chain; `verify_ledger` checks it against the segments too.
CACHE_FOLDER = "ledger-cache"
CACHE_RE = re.compile(r"^upto-([0-9]{12})-[0-9a-f]{32}\.parquet\Z")
KEY_CACHE_UPTO = b"strongroom.ledger_cache.upto"
KEY_CACHE_HEAD = b"strongroom.ledger_cache.head_sha256"
SEQ_COLUMN = "_seq"
GENESIS = "0" * 64
SEGMENT_RE = re.compile(r"^seg-([0-9]{12})\.parquet\Z")
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
    """SHA-256 of `canonical_events(table)` (UTF-8): pins a segment's events on the segment."""
    return hashlib.sha256(canonical_events(table).encode("utf-8")).hexdigest()


def canonical_events(table: pa.Table) -> str:
    """The events as canonical JSON text, independent of how Parquet encoded them; what
    `content_digest` hashes, and what the storage checkpoints carry (catalog.checkpoints), so
    a script with nothing but the standard library can recompute the digest.

    Column-major: `{"columns": [names], "values": [[column values], ...]}` with timestamps as
    integer microseconds since 1970-01-01 UTC (the value Arrow stores), compact separators,
    UTF-8. Stable across pyarrow versions, and one json.dumps per segment keeps it fast.

    The columns are the original ones (EVENTS_SCHEMA_V1) plus each agent column that holds a
    value in some row: so segments written before agents were recorded keep the digest they
    were written with, and so does their copy in the query cache, where those columns are null.
    """
    names = EVENTS_SCHEMA_V1.names + [f.name for f in EVENT_AGENT_FIELDS if f.name in table.column_names
                                      and table.column(f.name).null_count < table.num_rows]
    values = []
    for name in names:
        column = table.column(name)
        if pa.types.is_timestamp(column.type):
            column = column.cast(pa.int64())
        values.append(column.to_pylist())
    return json.dumps({"columns": names, "values": values}, ensure_ascii=False, separators=(",", ":"))


def read_segment_bytes(data: bytes) -> pa.Table:
    """A segment's table from its bytes (single-threaded: segments are small, threads cost more)."""
    return pq.ParquetFile(pa.BufferReader(data)).read(use_threads=False)


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

    # -- query cache ------------------------------------------------------------------------
    def caches(self) -> List[Tuple[int, StoredFile]]:
        """Query-cache files as (upto seq, file), newest first."""
        found = []
        for f in self.store.list(CACHE_FOLDER):
            m = CACHE_RE.match(f.name)
            if m:
                found.append((int(m.group(1)), f))
        found.sort(key=lambda c: (-c[0], c[1].name))
        return found

    def query_files(self, segs: Optional[List[Segment]] = None) -> List[StoredFile]:
        """What an events query reads, in ledger order: the newest cache that still matches the
        segment it ends with, then the segments after it; all segments if no cache matches.
        `segs`: a listing already made (`segments()`), so a ledger of many segments is listed once."""
        segs = self.segments() if segs is None else segs
        by_seq = {s.seq: s for s in segs}
        for upto, cache in self.caches():
            seg = by_seq.get(upto)
            if seg is None or _cache_meta(self.store, cache).get(KEY_CACHE_HEAD) != \
                    sha256_hex(self.store.read_bytes(seg.file.path)).encode():
                continue
            return [cache] + [s.file for s in segs if s.seq > upto]
        return [s.file for s in segs]

    def build_cache(self) -> int:
        """Extend the query cache to the newest segment (called by compaction); returns how many
        events it covers. Only an unbroken chain prefix from seg 0 is cached."""
        segs = self.segments()
        old = self.caches()
        base: Optional[pa.Table] = None
        upto = -1
        query = self.query_files()
        if query and CACHE_RE.match(query[0].name):
            upto = int(CACHE_RE.match(query[0].name).group(1))
            with self.store.fs.open_input_file(query[0].path) as fh:
                base = pq.ParquetFile(fh).read(use_threads=False)
        tables = [] if base is None else [base]
        head_hash = None
        for seg in segs:
            if seg.seq <= upto:
                continue
            if seg.seq != upto + 1:
                break  # a gap: leave the rest to `ledger verify` to report
            data = self.store.read_bytes(seg.file.path)
            table = read_segment_bytes(data).replace_schema_metadata(None)
            tables.append(table.append_column(SEQ_COLUMN, pa.array([seg.seq] * table.num_rows, pa.int64())))
            upto, head_hash = seg.seq, sha256_hex(data)
        if head_hash is None:  # nothing new
            return 0 if base is None else base.num_rows
        # Segments from before agents were recorded lack those columns: the cache holds them as null.
        merged = pa.concat_tables([t.replace_schema_metadata(None) for t in tables], promote_options="default")
        meta = {KEY_CACHE_UPTO: str(upto).encode(), KEY_CACHE_HEAD: head_hash.encode(),
                KEY_VERSION: SCHEMA_VERSION.encode()}
        sink = pa.BufferOutputStream()
        pq.write_table(merged.replace_schema_metadata(meta), sink, compression="zstd", row_group_size=65536)
        self.store.write_new(CACHE_FOLDER, f"upto-{upto:012d}-{uuid.uuid4().hex}.parquet",
                             sink.getvalue().to_pybytes())
        for _, f in old:
            self.store.delete(f.path)
        return merged.num_rows


def _cache_meta(store: Store, f: StoredFile) -> Dict[bytes, bytes]:
    try:
        with store.fs.open_input_file(f.path) as fh:
            return pq.read_metadata(fh).metadata or {}
    except (OSError, pa.ArrowInvalid):
        return {}


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


def _gap_problem(expected_seq: int, seq: int, name: str) -> str:
    missing = (segment_name(expected_seq) if seq == expected_seq + 1
               else f"{segment_name(expected_seq)} to {segment_name(seq - 1)}")
    return f"{missing}: missing (deleted?) before {name}"


def _content_or_wrong(table: pa.Table) -> str:
    """The content digest of a segment with the current columns or those of before agents were
    recorded (older catalogs stay verifiable); any other set of columns is damage."""
    return content_digest(table) if table.schema.remove_metadata() in (EVENTS_SCHEMA, EVENTS_SCHEMA_V1) \
        else "(wrong columns)"


def segment_problems(seq: int, name: str, table: pa.Table, actual_content: Optional[str] = None) -> List[str]:
    """What is wrong with one decoded segment on its own (not its place in the chain): the
    sequence number, event count and content digest it records, and genesis for segment 0."""
    meta = table.schema.metadata or {}
    recorded_seq = meta.get(KEY_SEQ, b"").decode(errors="replace")
    recorded_prev = meta.get(KEY_PREV, b"").decode(errors="replace")
    recorded_content = meta.get(KEY_CONTENT, b"").decode(errors="replace")
    recorded_count = meta.get(KEY_COUNT, b"").decode(errors="replace")
    problems = []
    if recorded_seq != str(seq):
        problems.append(f"{name}: records sequence number {recorded_seq or '(none)'}, not {seq}: "
                        f"segments were renamed, swapped or forged")
    actual = _content_or_wrong(table) if actual_content is None else actual_content
    if recorded_count != str(table.num_rows) or actual != recorded_content:
        problems.append(f"{name}: its events do not match the digest recorded when it was written "
                        f"(an event was edited, added or removed)")
    if seq == 0 and recorded_prev != GENESIS:
        problems.append(f"{name}: the first segment must chain onto {GENESIS[:12]}..., "
                        f"records {recorded_prev[:12] or '(none)'}...")
    return problems


@dataclass
class LedgerGlance:
    """What `glance` found: cheap enough for every command that opens the catalog."""

    problems: List[str]
    segments: int
    head_seq: Optional[int]
    head_events: int = 0
    listing: List[Segment] = field(default_factory=list, repr=False)  # the segments, by seq


def glance(store: Store) -> LedgerGlance:
    """The ledger's cheap self-check: segment names, numbers contiguous from 0 (a deleted segment
    shows as a gap), and the newest segment (the head) read whole and checked on its own as
    `verify_store` checks every segment. Re-hashing the chain stays `strongroom ledger verify`'s."""
    problems: List[str] = []
    segs = []
    for f in store.list(FOLDER):  # one listing (a ledger grows for ever: segments are never merged)
        m = SEGMENT_RE.match(f.name)
        if m:
            segs.append(Segment(int(m.group(1)), f))
        else:
            problems.append(f"{FOLDER}/{f.name}: not a ledger segment name (seg-<12 digits>.parquet): "
                            f"a stray or renamed file in {store.path(FOLDER)}")
    segs.sort(key=lambda s: s.seq)
    expected = 0
    for seg in segs:
        if seg.seq > expected:
            problems.append(f"{FOLDER}/" + _gap_problem(expected, seg.seq, seg.file.name))
        expected = seg.seq + 1
    if not segs:
        return LedgerGlance(problems, 0, None)
    head = segs[-1]
    glimpse = LedgerGlance(problems, len(segs), head.seq, 0, segs)
    try:
        table = read_segment_bytes(store.read_bytes(head.file.path))
    except FileNotFoundError as exc:
        problems.append(f"{FOLDER}/{head.file.name}: the newest segment vanished while being read ({exc})")
        return glimpse
    except Exception as exc:  # any decoding failure is damage to report, not to crash on
        problems.append(f"{FOLDER}/{head.file.name}: the newest segment is not a readable Parquet segment ({exc})")
        return glimpse
    problems += [f"{FOLDER}/{p}" for p in segment_problems(head.seq, head.file.name, table)]
    glimpse.head_events = table.num_rows
    return glimpse


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
    contents: Dict[int, str] = {}
    events = 0
    expected_seq = 0
    prev_hash: Optional[str] = GENESIS
    prev_name: Optional[str] = None
    for seg, data, table, error in _load_segments(store, segs):
        name = seg.file.name
        if seg.seq > expected_seq:
            problems.append(_gap_problem(expected_seq, seg.seq, name))
            prev_hash = None
        expected_seq = seg.seq + 1
        if data is None:
            problems.append(f"{name}: removed while the ledger was being verified ({error})")
            prev_hash, prev_name = None, name
            continue
        digest = sha256_hex(data)
        hashes[digest] = seg.seq
        if table is None:
            problems.append(f"{name}: not a readable Parquet segment ({error})")
            prev_hash, prev_name = digest, name
            continue
        events += table.num_rows
        contents[seg.seq] = _content_or_wrong(table)
        problems += segment_problems(seg.seq, name, table, contents[seg.seq])
        recorded_prev = (table.schema.metadata or {}).get(KEY_PREV, b"").decode(errors="replace")
        if seg.seq > 0 and prev_hash is not None and recorded_prev != prev_hash:
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

    problems += _check_caches(ledger, contents)
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


def _load_segments(store: Store, segs: List[Segment], window: int = 256):
    """(segment, bytes, table or None, error) in order; reads and decodes a window of segments
    in threads (file reads and Parquet decoding release the GIL), holding at most `window`."""
    def load(seg: Segment):
        try:
            data = store.read_bytes(seg.file.path)
        except FileNotFoundError as exc:
            return seg, None, None, exc
        try:
            return seg, data, read_segment_bytes(data), None
        except Exception as exc:  # any decoding failure is damage to report, not to crash on
            return seg, data, None, exc

    with ThreadPoolExecutor(max_workers=4) as pool:
        for start in range(0, len(segs), window):
            yield from pool.map(load, segs[start:start + window])


def _check_caches(ledger: Ledger, contents: Dict[int, str]) -> List[str]:
    """Each query-cache file must hold exactly the events of segments 0..upto, in order."""
    problems = []
    for upto, f in ledger.caches():
        where = f"{CACHE_FOLDER}/{f.name}"
        try:
            with ledger.store.fs.open_input_file(f.path) as fh:
                table = pq.ParquetFile(fh).read(use_threads=False)
        except (OSError, pa.ArrowInvalid) as exc:
            problems.append(f"{where}: not a readable query cache ({exc}); delete it, `strongroom catalog "
                            f"compact` rebuilds it")
            continue
        if SEQ_COLUMN not in table.column_names:
            problems.append(f"{where}: has no {SEQ_COLUMN} column; delete it, `strongroom catalog compact` rebuilds it")
            continue
        seqs = table.column(SEQ_COLUMN).to_pylist()
        runs: List[Tuple[int, int, int]] = []  # (seq, start, length)
        for i, sq in enumerate(seqs):
            if runs and runs[-1][0] == sq:
                runs[-1] = (sq, runs[-1][1], runs[-1][2] + 1)
            else:
                runs.append((sq, i, 1))
        bad = [sq for sq, _, _ in runs]
        if bad != list(range(upto + 1)):
            problems.append(f"{where}: does not hold segments 0..{upto} in order (altered); delete it, "
                            f"`strongroom catalog compact` rebuilds it")
            continue
        events = table.select([n for n in EVENTS_SCHEMA.names if n in table.column_names])  # older caches: V1 only
        for sq, start, length in runs:
            if sq in contents and content_digest(events.slice(start, length)) != contents[sq]:
                problems.append(f"{where}: its copy of {segment_name(sq)} differs from the segment (the "
                                f"cache or the segment was altered); queries read the cache")
    return problems
