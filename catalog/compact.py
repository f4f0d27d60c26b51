"""Which files of a table are live, and compaction: many small files into one, queries unchanged.

Writers add one small file per write, named after the bag it concerns (`bag-<key>-...`), so a
per-bag query opens only that bag's files plus the compacted ones. Compaction merges a table's
small files into `compact-<stamp>-<uuid>.parquet`, sorted by bag (so row-group statistics let
per-bag queries skip the rest), then deletes the files it merged. Earlier compacted files join
the merge in size tiers (see TIER_FACTOR), so a big table ends up as a few large files.

Crash safety without rewriting anything: the compacted file lists, in its Parquet metadata
(`strongroom.compact.replaces`), every file it replaces. Readers treat a listed file as gone even
while it still exists, so a compaction that dies after writing its output but before deleting its
inputs never shows a row twice; the next compaction deletes the leftovers.

Compaction keeps every row (the replica log stays a log; duplicate or orphaned rows, which the
queries already ignore, stay too), so `Catalog` queries return the same tables before and after.
It never touches `events/`: merging ledger segments would break the hash chain. Instead it
extends the ledger's query cache (`ledger-cache/`, see ledger.py), a derived copy that lets
event queries read one file rather than one per segment.
One compaction at a time per catalog (a `_compact.lock` file); writers may keep writing meanwhile.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import socket
import os
import uuid
from dataclasses import dataclass
from typing import Dict, FrozenSet, Iterator, List, Optional, Tuple

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from catalog.ledger import Ledger
from catalog.schema import BATCH, RECORD_ID, RECORDED, SCHEMA_VERSION, TABLE_SCHEMAS
from catalog.store import CatalogError, Store, StoredFile

COMPACT_PREFIX = "compact-"
KEY_REPLACES = b"strongroom.compact.replaces"
KEY_TABLE = b"strongroom.table"
KEY_VERSION = b"strongroom.schema_version"
LOCK_NAME = "_compact.lock"
COMPACTED_TABLES = ("bags", "files", "replicas")
# Row groups of at most this many rows, in every table file written (add_bag's files/ file of a
# 200,000-file bag as well as compacted files): a reader decodes one row group's column chunks
# at a time, so its memory is bounded by this, not by a bag's file count (issues 11, 16).
ROW_GROUP_ROWS = 16384
# Batches that batched reads (`read_files(..., batched=True)`) hold at a time.
READ_BATCH_ROWS = 16384
# A compacted file is merged again only into new data at least 1/TIER_FACTOR of its size, and
# never into a result over MAX_MERGE_ROWS rows: each row is rewritten O(log n) times and a
# compaction holds at most about that many rows in memory (plus the new small files).
TIER_FACTOR = 4
MAX_MERGE_ROWS = 1_000_000

SORT_KEYS: Dict[str, List[Tuple[str, str]]] = {
    "bags": [("bag_id", "ascending"), (RECORDED, "ascending"), (BATCH, "ascending")],
    "files": [("bag_id", "ascending"), ("path", "ascending"), (BATCH, "ascending")],
    "replicas": [("bag_id", "ascending"), ("target", "ascending"), ("recorded_at", "ascending"),
                 (RECORD_ID, "ascending")],
}


def bag_key(bag_id: str) -> str:
    """A fixed-length, name-safe stand-in for a bag id in file names (ids contain '/')."""
    return hashlib.sha256(bag_id.encode("utf-8")).hexdigest()[:32]


def bag_file_prefix(bag_id: str) -> str:
    return f"bag-{bag_key(bag_id)}"


def table_bytes(table: pa.Table, name: str, extra_meta: Optional[Dict[bytes, bytes]] = None,
                row_group_rows: int = ROW_GROUP_ROWS) -> bytes:
    """The Parquet bytes of a table file (zstd, row groups of at most `row_group_rows`)."""
    meta = {KEY_TABLE: name.encode(), KEY_VERSION: SCHEMA_VERSION.encode(), **(extra_meta or {})}
    sink = pa.BufferOutputStream()
    pq.write_table(table.replace_schema_metadata(meta), sink, compression="zstd",
                   row_group_size=row_group_rows)
    return sink.getvalue().to_pybytes()


class ReplacedCache:
    """What compacted files replace, and their row counts, by path: they are immutable, so each
    footer is read once per Catalog object."""

    def __init__(self) -> None:
        self._seen: Dict[str, Tuple[FrozenSet[str], int]] = {}

    def _info(self, store: Store, f: StoredFile) -> Tuple[FrozenSet[str], int]:
        found = self._seen.get(f.path)
        if found is None:
            try:
                with store.fs.open_input_file(f.path) as fh:
                    md = pq.read_metadata(fh)
                meta = md.metadata or {}
                found = (frozenset(json.loads(meta.get(KEY_REPLACES, b"[]").decode("utf-8"))), md.num_rows)
            except FileNotFoundError:
                return frozenset(), 0  # removed by a newer compaction since the listing
            except Exception as exc:
                raise CatalogError(f"catalog file cannot be read: {exc}", path=f.path)
            self._seen[f.path] = found
        return found

    def replaces(self, store: Store, f: StoredFile) -> FrozenSet[str]:
        return self._info(store, f)[0]

    def rows(self, store: Store, f: StoredFile) -> int:
        return self._info(store, f)[1]


def live_files(store: Store, table: str, bag_id: Optional[str] = None,
               cache: Optional[ReplacedCache] = None, names: Optional[List[str]] = None) -> List[StoredFile]:
    """The files a query of `table` must read (only those that can hold `bag_id`, if given).
    `names` is a listing already made (compaction must decide from one single listing)."""
    cache = cache or ReplacedCache()
    base = store.path(table)
    names = [n for n in (store.names(table) if names is None else names) if n.endswith(".parquet")]
    compacted = [StoredFile(n, f"{base}/{n}") for n in names if n.startswith(COMPACT_PREFIX)]
    replaced: set = set()
    for f in compacted:
        replaced |= cache.replaces(store, f)
    if bag_id is not None:
        prefix = bag_file_prefix(bag_id)
        names = [n for n in names if n.startswith(prefix) or n.startswith(COMPACT_PREFIX)]
    return [StoredFile(n, f"{base}/{n}") for n in names if n not in replaced]


def read_files(store: Store, table: str, files: List[StoredFile], batched: bool = False, **scan) -> pa.Table:
    """The rows of `files` (`scan`: columns, filter). `batched`: filtered batch by batch (at most
    READ_BATCH_ROWS rows decoded at a time, also in older files written as one big row group),
    for reads that keep few of the rows or few columns of many (one bag of a compacted table)."""
    schema = TABLE_SCHEMAS[table]
    if not files:
        empty = schema.empty_table()
        return empty.select(scan["columns"]) if scan.get("columns") else empty
    try:
        dataset = ds.dataset([f.path for f in files], schema=schema, format="parquet", filesystem=store.fs)
        if batched:
            scanner = _batch_scanner(dataset, scan)
            return pa.Table.from_batches([b for b in scanner.to_batches() if b.num_rows], schema=scanner.projected_schema)
        return dataset.to_table(**scan)
    except FileNotFoundError:
        raise  # removed by a compaction since the listing: the caller lists again
    except (pa.ArrowInvalid, OSError) as exc:
        raise CatalogError(f"the {table} table cannot be read: {exc}", path=store.path(table))


def scan_files(store: Store, table: str, files: List[StoredFile], **scan) -> Iterator[pa.RecordBatch]:
    """The rows of `files` (`scan`: columns, filter) as non-empty batches of at most
    READ_BATCH_ROWS rows, one file after the other, each front to back: a reader that keeps no
    more than a batch holds no more than that (`Catalog.file_batches`)."""
    if not files:
        return
    try:
        dataset = ds.dataset([f.path for f in files], schema=TABLE_SCHEMAS[table], format="parquet",
                             filesystem=store.fs)
        for rb in _batch_scanner(dataset, scan).to_batches():
            if rb.num_rows:
                yield rb
    except FileNotFoundError:
        raise  # removed by a compaction since the listing: the caller lists again
    except (pa.ArrowInvalid, OSError) as exc:
        raise CatalogError(f"the {table} table cannot be read: {exc}", path=store.path(table))


def _batch_scanner(dataset: ds.Dataset, scan) -> ds.Scanner:
    """Batches of at most READ_BATCH_ROWS rows, one at a time, files and rows in order. Without
    pre-buffering: Parquet's pre-buffer reads every selected column chunk of a file before its
    first batch (57 MB of a 1,000,000-file bag's rows held for the whole read)."""
    return dataset.scanner(batch_size=READ_BATCH_ROWS, batch_readahead=1, fragment_readahead=1, use_threads=False,
                           fragment_scan_options=ds.ParquetFragmentScanOptions(pre_buffer=False), **scan)


@dataclass(frozen=True)
class TableCompaction:
    table: str
    files_before: int
    files_after: int
    rows: int


@dataclass(frozen=True)
class CompactResult:
    tables: Tuple[TableCompaction, ...]
    events_cached: int = 0   # events the ledger's query cache now covers

    @property
    def files_before(self) -> int:
        return sum(t.files_before for t in self.tables)

    @property
    def files_after(self) -> int:
        return sum(t.files_after for t in self.tables)

    def to_dict(self) -> Dict[str, object]:
        return {"files_before": self.files_before, "files_after": self.files_after,
                "tables": [t.__dict__.copy() for t in self.tables], "events_cached": self.events_cached}


def compact_store(store: Store, cache: Optional[ReplacedCache] = None) -> CompactResult:
    """Merge each table's files into one; safe against concurrent writers and crashes (see above)."""
    cache = cache or ReplacedCache()
    lock = _take_lock(store)
    try:
        store.remove_stale_temps(("",) + COMPACTED_TABLES + ("events", "ledger-cache"))  # killed writers' temps
        results = tuple(_compact_table(store, name, cache) for name in COMPACTED_TABLES)
        events_cached = Ledger(store).build_cache()
    finally:
        store.delete(lock)
    return CompactResult(results, events_cached)


def _compact_table(store: Store, name: str, cache: ReplacedCache) -> TableCompaction:
    """Merge the small files, plus the compacted files that are small next to them (size tiers,
    so a big table is not rewritten for a few new rows, and memory stays bounded)."""
    # One listing decides everything: a file written after it is neither merged nor deleted.
    names = [n for n in store.names(name) if n.endswith(".parquet")]
    everything = [StoredFile(n, store.path(name, n)) for n in names]
    live = live_files(store, name, cache=cache, names=names)
    live_names = {f.name for f in live}
    leftovers = [f for f in everything if f.name not in live_names]  # inputs of a crashed compaction
    small = [f for f in live if not f.name.startswith(COMPACT_PREFIX)]
    compacted = sorted((f for f in live if f.name.startswith(COMPACT_PREFIX)), key=lambda f: cache.rows(store, f))
    small_table = read_files(store, name, small) if len(small) > 1 or compacted else None
    rows = 0 if small_table is None else small_table.num_rows
    chosen: List[StoredFile] = []
    for f in compacted:
        r = cache.rows(store, f)
        if rows + r > MAX_MERGE_ROWS or ((small or chosen) and r > TIER_FACTOR * max(rows, 1)):
            break
        chosen.append(f)
        rows += r
    inputs = small + chosen
    if len(inputs) < 2:
        for f in leftovers:
            store.delete(f.path)
        total = sum(cache.rows(store, f) for f in live)
        return TableCompaction(name, len(everything), len(live), total)
    parts = ([] if small_table is None else [small_table]) + ([read_files(store, name, chosen)] if chosen else [])
    table = pa.concat_tables(parts).sort_by(SORT_KEYS[name])
    replaced = sorted(f.name for f in inputs + leftovers)
    data = table_bytes(table, name, {KEY_REPLACES: json.dumps(replaced).encode("utf-8")}, ROW_GROUP_ROWS)
    del table, parts, small_table
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
    out = store.write_new(name, f"{COMPACT_PREFIX}{stamp}-{uuid.uuid4().hex}.parquet", data)
    for f in inputs + leftovers:
        store.delete(f.path)
    remaining = [f for f in live if f not in inputs] + [StoredFile(out.rsplit("/", 1)[-1], out)]
    return TableCompaction(name, len(everything), len(remaining), sum(cache.rows(store, f) for f in remaining))


def _take_lock(store: Store) -> str:
    note = json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                       "started": _dt.datetime.now(_dt.timezone.utc).isoformat()}).encode()
    if not store.create_exclusive("", LOCK_NAME, note):
        path = store.path(LOCK_NAME)
        raise CatalogError("another compaction holds the lock (or one crashed): if no "
                           "`strongroom catalog compact` is running, remove this file and retry", path=path)
    return store.path(LOCK_NAME)
