"""The catalog: what bags exist, what files they hold, where their copies are, what happened.

Four tables of Parquet files under one root (a folder or `s3://bucket/prefix`):

    bags/      one row per bag             (bag-<key>.parquet: one per add_bag; compact-*.parquet)
    files/     one row per payload file    (bag-<key>-<batch>.parquet; compact-*.parquet)
    replicas/  a LOG of replica states     (bag-<key>-<uuid>.parquet; compact-*.parquet)
    events/    the hash-chained ledger     (seg-<seq>.parquet, see ledger.py)

Nothing is ever rewritten: each write adds a file (see store.py), so parallel workers never
clash, and current state is derived by query. For example the current state of a replica is
its newest record; a file row counts only once the bag row written by the same `add_bag` call
exists (the bag row is the commit mark), so a crash between the two writes leaves nothing
visible. Queries are pyarrow dataset scans with filters pushed down, never Python loops over
rows, and return tables sorted in a fixed order, so two queries of the same data compare equal.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import uuid
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from catalog.compact import (CompactResult, ReplacedCache, bag_file_prefix, compact_store, live_files,
                             read_files, scan_files, table_bytes)
from catalog.ledger import FOLDER as EVENTS_FOLDER, Ledger
from catalog.schema import (BAGS_SCHEMA, BATCH, DIGEST_ALGORITHMS, EVENTS_SCHEMA, FILES_SCHEMA, RECORD_ID,
                            RECORDED, REPLICAS_SCHEMA, BagRecord, EventRecord, FileRecord, ReplicaRecord,
                            _utc, public_columns, records_to_table, table_to_records, utc_now)
from catalog.store import CatalogError, Store
from strongroom import agent
from strongroom.errors import InputError

__all__ = ["Catalog", "BagRecord", "FileRecord", "ReplicaRecord", "EventRecord", "CompactResult",
           "BagConflict", "CatalogError"]

# When two replica records carry the same recorded_at, the worse state wins: a preservation
# system should never report "verified" when it was also told "damaged" at the same instant.
TIE_ORDER = ("missing", "damaged", "disputed", "failed", "pending", "repaired", "copied", "verified")
READ_ATTEMPTS = 5


class BagConflict(InputError):
    """A bag id is already in the catalog with different content."""


class Catalog:
    """The archive's catalog at `location` (a folder, or s3://bucket/prefix with `filesystem=`
    and `put_if_absent=`: `catalog.access.open_catalog(config)` gives both)."""

    def __init__(self, location: str, *, filesystem: Optional[pafs.FileSystem] = None,
                 put_if_absent: Optional[Callable[[str, bytes], bool]] = None):
        self._attach(Store(location, filesystem=filesystem, put_if_absent=put_if_absent))

    @classmethod
    def from_store(cls, store: Store) -> "Catalog":
        """The catalog in an already opened Store (see catalog.access.open_catalog)."""
        catalog = cls.__new__(cls)
        catalog._attach(store)
        return catalog

    def _attach(self, store: Store) -> None:
        self.store = store
        self.location = store.location
        self._ledger = Ledger(store)
        self._replaced = ReplacedCache()
        self._library_of: Dict[str, Optional[str]] = {}  # bag id -> library (a bag's never changes)

    def __repr__(self) -> str:
        return f"Catalog({self.location!r})"

    # ------------------------------------------------------------------------------------
    # Writing
    def add_bag(self, bag: BagRecord, files: Sequence[FileRecord]) -> None:
        """Register a bag and its payload files. Re-adding identical content is a no-op;
        different content under the same bag id raises BagConflict."""
        files = list(files)
        _check_bag_files(bag, files)
        if self._same_or_conflict(bag, files):
            return
        batch = uuid.uuid4().hex
        prefix = bag_file_prefix(bag.bag_id)
        files_path = None
        if files:
            table = records_to_table(sorted(files, key=lambda f: f.path), FILES_SCHEMA, {BATCH: batch})
            files_path = self.store.write_new("files", f"{prefix}-{batch}.parquet", table_bytes(table, "files"))
        row = records_to_table([bag], BAGS_SCHEMA, {BATCH: batch, RECORDED: utc_now()})
        if self.store.create_exclusive("bags", f"{prefix}.parquet", table_bytes(row, "bags")):
            return
        # Another writer registered this bag id first: ours must match theirs.
        if files_path is not None:
            self.store.delete(files_path)
        if not self._same_or_conflict(bag, files):
            raise CatalogError(f"bag {bag.bag_id} is being registered but its row cannot be read yet",
                               path=self.store.path("bags", f"{prefix}.parquet"))

    def record_replica(self, rec: ReplicaRecord) -> None:
        """Append one replica state record; the newest recorded_at per (bag, target) is current."""
        if not isinstance(rec, ReplicaRecord):
            raise TypeError(f"record_replica takes a ReplicaRecord, got {type(rec).__name__}")
        rid = uuid.uuid4().hex
        table = records_to_table([rec], REPLICAS_SCHEMA, {RECORD_ID: rid})
        self.store.write_new("replicas", f"{bag_file_prefix(rec.bag_id)}-{rid}.parquet", table_bytes(table, "replicas"))

    def append_events(self, events: Sequence[EventRecord]) -> str:
        """Append events as one ledger segment; returns its id, e.g. "seg-000000000042".

        Every event is stamped here with its agent (contract C3): the operator and software of
        this process, and the library it acted for (the caller's `agent_library`, else its bag's).
        Doing it in the one place events enter the ledger means no caller can forget it."""
        return self._ledger.append([self._with_agent(e, agent.current()) if isinstance(e, EventRecord) else e
                                    for e in events])

    def _with_agent(self, event: EventRecord, who: "agent.Agent") -> EventRecord:
        library = event.agent_library
        if library is None and event.bag_id is not None:
            if event.bag_id not in self._library_of:
                try:
                    rows = self._committed_bags(event.bag_id)
                except CatalogError:  # a damaged bags table must not stop the event saying so
                    rows = None
                if rows is not None:
                    self._library_of[event.bag_id] = rows.column("library")[0].as_py() if rows.num_rows else None
            library = self._library_of.get(event.bag_id)
        return dataclasses.replace(event, operator=event.operator or who.operator, agent_library=library,
                                   software=event.software or who.software)

    def compact(self) -> CompactResult:
        """Merge each table's small files; for the ledger (whose segments are never merged) extend
        the query cache instead. Query results stay the same."""
        return compact_store(self.store, self._replaced)

    # ------------------------------------------------------------------------------------
    # Reading
    def bags(self, library: Optional[str] = None, collection: Optional[str] = None,
             bag_id: Optional[str] = None) -> pa.Table:
        """One row per bag, sorted by bag_id."""
        table = self._committed_bags(bag_id)
        mask = None
        for column, value in (("library", library), ("collection", collection)):
            if value is not None:
                m = pc.equal(table.column(column), value)
                mask = m if mask is None else pc.and_(mask, m)
        if mask is not None:
            table = table.filter(mask)
        return table.select(public_columns(BAGS_SCHEMA))

    def files(self, bag_id: Optional[str] = None, columns: Optional[Sequence[str]] = None) -> pa.Table:
        """Payload files of registered bags (of one bag with `bag_id`), sorted by bag_id, path.

        `columns` reads only those public columns, in that order: a deep audit of a 200,000-file
        bag needs path, size and digests, and reading the bag id, format and time columns as
        well made most of the memory its catalog read took."""
        public = public_columns(FILES_SCHEMA)
        wanted = list(columns) if columns is not None else public
        unknown = [c for c in wanted if c not in public]
        if unknown:
            raise ValueError(f"not columns of the files table: {unknown}")
        bags = self._committed_bags(bag_id)
        if bags.num_rows == 0:
            return FILES_SCHEMA.empty_table().select(wanted)
        batches = bags.column(BATCH)
        if bag_id is not None:
            flt = (ds.field("bag_id") == bag_id) & (ds.field(BATCH) == batches[0].as_py())
            order = ["path"]   # one bag: its rows sorted by path are sorted by (bag_id, path)
        else:
            flt = ds.field(BATCH).isin(batches.combine_chunks() if isinstance(batches, pa.ChunkedArray) else batches)
            order = ["bag_id", "path"]
        read = list(dict.fromkeys(order + wanted))
        table = self._read("files", bag_id, filter=flt, columns=read, batched=True)
        if not _is_sorted(table, order):  # compacted files already are: skip a copy
            table = table.sort_by([(c, "ascending") for c in order])
        return table.select(wanted)

    def file_batches(self, bag_id: str, columns: Sequence[str], after: Optional[str] = None
                     ) -> Iterator[pa.RecordBatch]:
        """One bag's payload rows (`columns`, path first), a batch of at most
        `compact.READ_BATCH_ROWS` rows at a time, in the order its files table holds them: sorted
        by path, as add_bag and compaction write them (callers that rely on the order check it).

        Why: a deep audit of a bag of a million files must not hold every row at once (issues 11,
        16). Rows of one bag's registration live in one table file, read front to back. If a
        compaction removes that file while it is read, the rows after the last path given are
        read again from the file that replaced it (`after`: rows with a greater path only)."""
        wanted = list(dict.fromkeys(["path", *columns]))
        unknown = [c for c in wanted if c not in public_columns(FILES_SCHEMA)]
        if unknown:
            raise ValueError(f"not columns of the files table: {unknown}")
        bags = self._committed_bags(bag_id)
        if bags.num_rows == 0:
            return
        flt = (ds.field("bag_id") == bag_id) & (ds.field(BATCH) == bags.column(BATCH)[0].as_py())
        for attempt in range(READ_ATTEMPTS):
            scan = flt if after is None else flt & (ds.field("path") > after)
            try:
                for rb in scan_files(self.store, "files", live_files(self.store, "files", bag_id, self._replaced),
                                     filter=scan, columns=wanted):
                    yield rb
                    after = rb.column(0)[rb.num_rows - 1].as_py()
                return
            except FileNotFoundError as exc:  # a compaction replaced the file being read
                if attempt == READ_ATTEMPTS - 1:
                    raise CatalogError(f"the files table kept changing while being read: {exc}",
                                       path=self.store.path("files"))

    def replicas(self, bag_id: Optional[str] = None, current: bool = True) -> pa.Table:
        """Replica states sorted by bag_id, target: the newest per (bag, target) with `current`,
        else the whole log (also by recorded_at)."""
        flt = None if bag_id is None else ds.field("bag_id") == bag_id
        table = self._read("replicas", bag_id, filter=flt)
        if current:
            rank = pc.index_in(table.column("state"), value_set=pa.array(TIE_ORDER))
            table = table.append_column("_rank", rank)
            table = _first_per_key(table, ["bag_id", "target"],
                                   [("recorded_at", "descending"), ("_rank", "ascending"), (RECORD_ID, "descending")])
        else:
            table = table.sort_by([("bag_id", "ascending"), ("target", "ascending"),
                                   ("recorded_at", "ascending"), (RECORD_ID, "ascending")])
        return table.select(public_columns(REPLICAS_SCHEMA))

    def events(self, bag_id: Optional[str] = None, since: Optional[_dt.datetime] = None,
               until: Optional[_dt.datetime] = None, type: Union[str, Iterable[str], None] = None) -> pa.Table:
        """Events in ledger order; `since` is inclusive, `until` exclusive; `type` one or several."""
        conditions = []
        if bag_id is not None:
            conditions.append(ds.field("bag_id") == bag_id)
        if since is not None:
            conditions.append(ds.field("datetime") >= pa.scalar(_utc(since, "since"), type=EVENTS_SCHEMA.field("datetime").type))
        if until is not None:
            conditions.append(ds.field("datetime") < pa.scalar(_utc(until, "until"), type=EVENTS_SCHEMA.field("datetime").type))
        if type is not None:
            types = [type] if isinstance(type, str) else list(type)
            conditions.append(ds.field("type").isin(types))
        flt = None
        for c in conditions:
            flt = c if flt is None else flt & c
        return self._read(EVENTS_FOLDER, None, filter=flt)

    def has_bag(self, bag_id: str) -> bool:
        return self._committed_bags(bag_id).num_rows > 0

    def bag(self, bag_id: str) -> Optional[BagRecord]:
        rows = self._committed_bags(bag_id)
        return table_to_records(rows, BagRecord)[0] if rows.num_rows else None

    def file_records(self, bag_id: str) -> List[FileRecord]:
        """The bag's files as records, sorted by path."""
        return table_to_records(self.files(bag_id), FileRecord)

    def file_digests(self, bag_id: str) -> Dict[str, Dict[str, str]]:
        """{path: {algorithm: hex digest}} for every file of the bag (only digests present)."""
        table = self.files(bag_id)
        columns = {alg: table.column(alg).to_pylist() for alg in DIGEST_ALGORITHMS}
        out: Dict[str, Dict[str, str]] = {}
        for i, path in enumerate(table.column("path").to_pylist()):
            out[path] = {alg: columns[alg][i] for alg in DIGEST_ALGORITHMS if columns[alg][i] is not None}
        return out

    def replica(self, bag_id: str, target: str) -> Optional[ReplicaRecord]:
        """The current state of one bag on one target, e.g. to `dataclasses.replace` and record anew."""
        table = self.replicas(bag_id)
        table = table.filter(pc.equal(table.column("target"), target))
        return table_to_records(table, ReplicaRecord)[0] if table.num_rows else None

    def ledger_head(self) -> Tuple[int, str]:
        """(seq, sha256 hex) of the newest ledger segment; (-1, 64 zeros) when there is none.
        Note it somewhere safe: `verify_ledger(..., expected_head=hash)` then detects removal."""
        return self._ledger.head()

    # ------------------------------------------------------------------------------------
    def _read(self, table: str, bag_id: Optional[str], **scan) -> pa.Table:
        for attempt in range(READ_ATTEMPTS):
            if table == EVENTS_FOLDER:
                files = self._ledger.query_files()  # in ledger order
            else:
                files = live_files(self.store, table, bag_id, self._replaced)
            try:
                return read_files(self.store, table, files, **scan)
            except FileNotFoundError as exc:  # a compaction replaced files between listing and reading
                if attempt == READ_ATTEMPTS - 1:
                    raise CatalogError(f"the {table} table kept changing while being read: {exc}",
                                       path=self.store.path(table))
        raise AssertionError("unreachable")

    def _committed_bags(self, bag_id: Optional[str] = None) -> pa.Table:
        """Bag rows with bookkeeping columns, one per bag id (the first registered), by bag_id."""
        flt = None if bag_id is None else ds.field("bag_id") == bag_id
        table = self._read("bags", bag_id, filter=flt)
        return _first_per_key(table, ["bag_id"], [(RECORDED, "ascending"), (BATCH, "ascending")])

    def _same_or_conflict(self, bag: BagRecord, files: List[FileRecord]) -> bool:
        """True if the bag is registered with exactly this content; BagConflict if differently."""
        existing = self.bag(bag.bag_id)
        if existing is None:
            return False
        problems = [f"{name}: catalog has {getattr(existing, name)!r}, new {getattr(bag, name)!r}"
                    for name in BagRecord.__dataclass_fields__ if getattr(existing, name) != getattr(bag, name)]
        if not problems:
            have = {f.path: f for f in self.file_records(bag.bag_id)}
            new = {f.path: f for f in files}
            for path in sorted(set(have) | set(new)):
                if path not in have:
                    problems.append(f"{path}: not in the catalog's copy")
                elif path not in new:
                    problems.append(f"{path}: in the catalog but not in the new record")
                elif have[path] != new[path]:
                    diff = [n for n in FileRecord.__dataclass_fields__ if getattr(have[path], n) != getattr(new[path], n)]
                    problems.append(f"{path}: differs in {', '.join(diff)}")
        if problems:
            raise BagConflict(f"bag {bag.bag_id} is already in the catalog with different content "
                              f"({len(problems)} difference(s)); bag ids are never reused",
                              path=self.store.path("bags"))
        return True


def _check_bag_files(bag: BagRecord, files: List[FileRecord]) -> None:
    if not isinstance(bag, BagRecord):
        raise TypeError(f"add_bag takes a BagRecord, got {type(bag).__name__}")
    wrong = [f for f in files if not isinstance(f, FileRecord) or f.bag_id != bag.bag_id]
    if wrong:
        w = wrong[0]
        raise ValueError(f"bag {bag.bag_id}: file records must be FileRecords of this bag, got "
                         f"{getattr(w, 'path', w)!r} of {getattr(w, 'bag_id', type(w).__name__)!r}")
    paths = [f.path for f in files]
    if len(set(paths)) != len(paths):
        seen, dup = set(), []
        for p in paths:
            (dup.append(p) if p in seen else seen.add(p))
        raise ValueError(f"bag {bag.bag_id}: duplicate file path(s) {dup[:5]}")
    total = sum(f.size for f in files)
    if bag.file_count != len(files) or bag.byte_count != total:
        raise ValueError(f"bag {bag.bag_id}: file_count/byte_count say {bag.file_count} files, "
                         f"{bag.byte_count} bytes, but {len(files)} file records total {total} bytes")


def _first_per_key(table: pa.Table, keys: List[str], order: List[Tuple[str, str]]) -> pa.Table:
    """The first row of each key group under `order`, sorted by the keys (vectorised, no row loop)."""
    table = table.sort_by([(k, "ascending") for k in keys] + order)
    n = table.num_rows
    if n <= 1:
        return table
    mask = None
    for k in keys:
        col = table.column(k)
        changed = pc.not_equal(col.slice(1), col.slice(0, n - 1))
        mask = changed if mask is None else pc.or_(mask, changed)
    first = pa.chunked_array([pa.array([True])] + list(mask.chunks), type=pa.bool_())
    return table.filter(first)


def _is_sorted(table: pa.Table, keys: List[str]) -> bool:
    """True if rows are in ascending lexicographic order of `keys` (vectorised; O(n), no copy of rows)."""
    n = table.num_rows
    if n < 2:
        return True
    ordered = None  # rows i, i+1 in order considering keys[j:] (built from the last key backwards)
    for k in reversed(keys):
        col = table.column(k)
        a, b = col.slice(0, n - 1), col.slice(1)
        if ordered is None:
            ordered = pc.less_equal(a, b)
        else:
            ordered = pc.or_(pc.less(a, b), pc.and_(pc.equal(a, b), ordered))
    return bool(pc.all(ordered).as_py())
