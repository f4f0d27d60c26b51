"""The catalog's cheap self-check, run by every command that opens it (`open_catalog(check=True)`).

Why: the catalog is an index of what the copies hold, and an index with a hole in it lies. A
deleted `files/` Parquet file makes a bag look empty, and an audit trusting that would remove
every payload file from every copy as "extra". So before any command acts on the catalog it
asks the catalog whether it agrees with itself, and a catalog in doubt stops the command
(`CatalogDamaged`, exit 1, "run `strongroom catalog rebuild`") before anything is repaired.

What is checked (`check_catalog`), each problem naming the table and file:

* every live Parquet file of `bags/`, `files/` and `replicas/` is readable and has the table's
  columns with their types (a truncated file, a zero-byte file, a foreign or other table's
  Parquet file is a problem naming that file, never a traceback);
* every committed bag's file rows add up to the bag row's file count and payload bytes (the
  bag's Payload-Oxum, recorded at registration): a missing or damaged `files/` file shows here;
* the ledger (see `catalog.ledger.glance`): segment numbers contiguous from 0, the head segment
  readable and consistent on its own (an older segment's content is `strongroom ledger verify`'s
  to judge: altered history does not make the index lie, so it stops no command);
* the ledger against the tables: every bag the ledger says was registered (a successful
  "ingestion" or "metadata extraction" event) has its bag row, unless a rebuild gave up on it
  on the record (a failed "metadata extraction": `status` lists it as lost); and every
  (registered bag, target) the ledger records a successful replication or fixity check of a
  copy for has a replica record (writers record the copy's state before such an event): a
  deleted `bags/` or `replicas/` file shows here. A withdrawn bag (catalog.tombstones) that a
  rebuild rightly did not register again is not such a hole.

Cost: only the few columns needed are read (column projection, one dataset scan per table, one
vectorised group_by for the file sums), and what was read from a file is kept for the life of
the process by its path (catalog files are immutable: never rewritten, only added and removed),
so a command that opens the catalog several times pays for each file once. The slow per-file
path runs only when a scan fails, to name the culprit.

Measured (bench/bench_integrity.py: 2,000 bags, 200,000 file rows, 4,000 replica records,
6,000 ledger segments; 2 cores shared with other work, load 6-9): compacted, a first check in
a process takes 0.42 s and each later one 0.16 s (0.05 s without the ledger part), i.e. about
0.2 s / 0.08 s per 100k file rows. Uncompacted (14,000 small table files and the segments) a
first check takes 12-36 s: the cost of opening every small file, which the queries of every
command pay too (`files()` alone took 10 s there); later checks 1.8 s. `strongroom catalog
compact` is what keeps both cheap.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Set, Tuple

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from catalog.compact import COMPACT_PREFIX, ReplacedCache, live_files
from catalog.ledger import CACHE_FOLDER, FOLDER as EVENTS_FOLDER, Ledger, glance
from catalog.schema import BATCH, EVENTS_SCHEMA, RECORDED, TABLE_SCHEMAS
from catalog.store import CatalogError, Store, StoredFile
from catalog.tombstones import withdrawn_bags
from strongroom.errors import PreservationError

REBUILD_HINT = "run `strongroom catalog rebuild`"
# Columns each check needs (projection: nothing else is read).
COLUMNS: Dict[str, List[str]] = {
    "bags": ["bag_id", BATCH, RECORDED, "file_count", "byte_count"],
    "files": [BATCH, "size"],
    "replicas": ["bag_id", "target", "state", "recorded_at"],
}
# Read as dictionaries: the files table repeats one `_batch` per bag on every file row, and
# decoding 200k such strings costs several times more than decoding their dictionary indices.
DICTIONARY_COLUMNS: Dict[str, List[str]] = {"files": [BATCH]}
# The files table is read in batches of at most this many rows and each file kept only as its
# per-batch sums (`_file_sums`): what the check holds does not grow with a bag's file count.
SCAN_BATCH_ROWS = 16384
# What is kept of a files/ table file: one row per `_batch` (file rows and their bytes).
FILE_SUMS = pa.schema([pa.field(BATCH, pa.string(), nullable=False), pa.field("count", pa.int64(), nullable=False),
                       pa.field("size", pa.int64(), nullable=False)])
REGISTRATION_EVENTS = ("ingestion", "metadata extraction")
COPY_EVENTS = ("replication", "fixity check")
LOST_EVENT = "metadata extraction"  # with outcome failure: a rebuild could not register the bag
READ_ATTEMPTS = 5       # a table whose files a compaction replaces mid-read is read again
MESSAGE_PROBLEMS = 5     # problems spelled out in the one-line message (all are in `problems`)


class CatalogDamaged(PreservationError):
    """The catalog disagrees with itself (a table file missing, unreadable or foreign; a bag's
    file rows not adding up): no command may act on it until `strongroom catalog rebuild`."""

    def __init__(self, location: str, problems: Sequence[str]):
        shown = "; ".join(problems[:MESSAGE_PROBLEMS])
        more = f" (and {len(problems) - MESSAGE_PROBLEMS} more)" if len(problems) > MESSAGE_PROBLEMS else ""
        super().__init__(f"the catalog is damaged: {shown}{more}; {REBUILD_HINT}", path=location,
                         problems=list(problems))


@dataclass
class CatalogHealth:
    """What `check_catalog` found. `unreadable`: store paths of files that cannot be read or are
    not the table's (what `catalog rebuild` moves aside)."""

    ok: bool
    location: str
    problems: List[str] = field(default_factory=list)
    unreadable: List[str] = field(default_factory=list)
    short_bags: List[str] = field(default_factory=list)      # bag rows whose file rows do not add up
    ledger_problems: List[str] = field(default_factory=list)  # what `catalog.ledger.glance` found
    lost_bags: List[str] = field(default_factory=list)  # a rebuild found them on no copy (on record)
    vanished: int = 0          # files gone between listing and reading (a compaction): read again
    counts: Dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> Dict[str, object]:
        return {"ok": self.ok, "location": self.location, "problems": list(self.problems),
                "unreadable": list(self.unreadable), "lost_bags": list(self.lost_bags), "counts": dict(self.counts),
                "seconds": round(self.seconds, 4)}

    def raise_if_damaged(self) -> None:
        if not self.ok:
            raise CatalogDamaged(self.location, self.problems)


# --------------------------------------------------------------------------------------------
# Per-process memo of what each (immutable) file contributed, by (store root, path).

_MEMO: Dict[Tuple[str, str, str, Tuple[int, int]], pa.Table] = {}
_MEMO_LOCK = threading.Lock()
MEMO_MAX_FILES = 200_000
Signature = Tuple[int, int]  # (size, mtime in ns): a file replaced or truncated in place is read again


def _signatures(store: Store, folder: str) -> Dict[str, Signature]:
    """name -> (size, mtime_ns) of the data files in `folder` (hidden and temp names left out)."""
    base = store.path(folder)
    found: Dict[str, Signature] = {}
    if store.is_local:
        try:
            with os.scandir(base) as it:
                for e in it:
                    if e.name[0] in "._":
                        continue
                    try:
                        st = e.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    if stat.S_ISREG(st.st_mode):
                        found[e.name] = (st.st_size, st.st_mtime_ns)
                    else:
                        found[e.name] = (-1, st.st_mode)  # not a regular file: named as a problem
        except FileNotFoundError:
            pass
        return found
    infos = store.fs.get_file_info(pafs.FileSelector(base, allow_not_found=True))
    for i in infos:
        if i.base_name.startswith((".", "_")) or i.type == pafs.FileType.Directory:
            continue
        mtime = i.mtime_ns if i.mtime_ns is not None else 0
        found[i.base_name] = (i.size if i.size is not None else 0, mtime)
    return found


def _memo_get(store: Store, table: str, path: str, sig: Signature) -> Optional[pa.Table]:
    return _MEMO.get((store.location, table, path, sig))


def _memo_put(store: Store, table: str, path: str, sig: Signature, value: pa.Table) -> None:
    with _MEMO_LOCK:
        if len(_MEMO) >= MEMO_MAX_FILES:
            _MEMO.clear()
        _MEMO[(store.location, table, path, sig)] = value


def forget(store: Store) -> None:
    """Drop what was remembered of this catalog's files (tests; after a rebuild moved files)."""
    with _MEMO_LOCK:
        for key in [k for k in _MEMO if k[0] == store.location]:
            del _MEMO[key]
        for key in [k for k in _COMBINED if k[0] == store.location]:
            del _COMBINED[key]


# --------------------------------------------------------------------------------------------


def _wanted_schema(table: str, columns: List[str]) -> pa.Schema:
    """The check's view of `columns` (dictionary-typed where DICTIONARY_COLUMNS says)."""
    dictionary = DICTIONARY_COLUMNS.get(table, [])
    out = []
    for c in columns:
        f = TABLE_SCHEMAS[table].field(c)
        out.append(f.with_type(pa.dictionary(pa.int32(), f.type)) if c in dictionary else f)
    return pa.schema(out)


def _probe(store: Store, table: str, f: StoredFile, columns: List[str]) -> Tuple[Optional[pa.Table], Optional[str]]:
    """One file's needed columns, or why they cannot be had (the slow path, naming the file)."""
    schema = TABLE_SCHEMAS[table]
    where = f"{table}/{f.name}"
    try:
        with store.fs.open_input_file(f.path) as fh:
            pf = pq.ParquetFile(fh)
            have = pf.schema_arrow
            missing = [c for c in columns if c not in have.names]
            if missing:
                return None, (f"{where}: not a {table} table file (no column {', '.join(missing)}): a foreign "
                              f"or misplaced Parquet file")
            wrong = [c for c in columns if not have.field(c).type.equals(schema.field(c).type)]
            if wrong:
                return None, (f"{where}: not a {table} table file (column {wrong[0]} is "
                              f"{have.field(wrong[0]).type}, not {schema.field(wrong[0]).type})")
            wanted = _wanted_schema(table, columns)
            reader = pq.ParquetFile(fh, read_dictionary=DICTIONARY_COLUMNS.get(table))
            parts: List[pa.Table] = []
            for rb in reader.iter_batches(batch_size=SCAN_BATCH_ROWS, columns=columns, use_threads=False):
                nulls = [c for c in columns if not schema.field(c).nullable and rb.column(c).null_count]
                if nulls:
                    return None, (f"{where}: {rb.column(nulls[0]).null_count} row(s) without {nulls[0]}: "
                                  f"not a {table} table file")
                part = pa.Table.from_batches([rb]).cast(wanted)
                parts.append(_file_sums(part) if table == "files" else part)
    except FileNotFoundError:
        return None, None  # removed since the listing (a compaction): not damage
    except (OSError, pa.ArrowException, ValueError) as exc:
        return None, f"{where}: not a readable Parquet file ({_short(exc)})"
    if table == "files":
        return _file_sums(pa.concat_tables(parts) if parts else FILE_SUMS.empty_table()), None
    return (pa.concat_tables(parts) if parts else wanted.empty_table()), None


def _file_sums(part: pa.Table) -> pa.Table:
    """Rows of a files/ table file (or sums already made of some of them) as FILE_SUMS: how many
    rows and bytes each `_batch` has. All the bag-sum check needs, and what is kept per file."""
    if part.num_rows == 0:
        return FILE_SUMS.empty_table()
    if "count" in part.column_names:
        agg = part.group_by(BATCH).aggregate([("count", "sum"), ("size", "sum")])
        count, size = agg.column("count_sum"), agg.column("size_sum")
    else:
        if pa.types.is_dictionary(part.schema.field(BATCH).type):
            part = part.unify_dictionaries()
        agg = part.group_by(BATCH).aggregate([("size", "count"), ("size", "sum")])
        count, size = agg.column("size_count"), agg.column("size_sum")
    return pa.table([agg.column(BATCH).cast(pa.string()), count.cast(pa.int64()), size.cast(pa.int64())],
                    schema=FILE_SUMS)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:200]


_COMBINED: Dict[Tuple[str, str], Tuple[Tuple, object]] = {}  # (location, table) -> (listing, result)


def _read_table(store: Store, table: str, files: List[StoredFile], sigs: Dict[str, Signature],
                health: CatalogHealth) -> pa.Table:
    """The needed columns of every readable file; unreadable ones are named in `health`. When
    the table's files are exactly those of the last check in this process, its result is reused
    (concatenating thousands of small tables again is most of a repeated check's cost)."""
    key = tuple((f.name, sigs.get(f.name, (0, 0))) for f in files)
    last = _COMBINED.get((store.location, table))
    if last is not None and last[0] == key:
        return last[1]
    before = (len(health.problems), health.vanished)
    combined = _read_files(store, table, files, sigs, health)
    if (len(health.problems), health.vanished) == before:
        with _MEMO_LOCK:
            _COMBINED[(store.location, table)] = (key, combined)
    return combined


def _read_files(store: Store, table: str, files: List[StoredFile], sigs: Dict[str, Signature],
                health: CatalogHealth) -> pa.Table:
    columns = COLUMNS[table]
    schema = _wanted_schema(table, columns)
    parts: List[pa.Table] = []
    todo: List[StoredFile] = []
    for f in files:
        got = _memo_get(store, table, f.path, sigs.get(f.name, (0, 0)))
        (todo.append(f) if got is None else parts.append(got))

    def probe(f: StoredFile) -> None:
        """Read one file on its own: its rows, or the problem that names it."""
        data, problem = _probe(store, table, f, columns)
        if data is None and problem is None:
            health.vanished += 1
        if problem:
            health.problems.append(problem)
            health.unreadable.append(f.path)
        elif data is not None:
            _memo_put(store, table, f.path, sigs.get(f.name, (0, 0)), data)
            parts.append(data)

    big = [f for f in todo if f.name.startswith(COMPACT_PREFIX)]
    todo = [f for f in todo if not f.name.startswith(COMPACT_PREFIX)]
    for f in big:  # a compacted file is read on its own: no per-row file name to carry and sort
        probe(f)
    if todo:
        fast = _scan(store, table, todo, columns, schema)
        if fast is not None:
            for f in todo:
                data = fast.get(f.path, FILE_SUMS.empty_table() if table == "files" else schema.empty_table())
                _memo_put(store, table, f.path, sigs.get(f.name, (0, 0)), data)
                parts.append(data)
        else:
            for f in todo:
                probe(f)
    if not parts:
        return FILE_SUMS.empty_table() if table == "files" else schema.empty_table()
    return pa.concat_tables(parts)


def _scan(store: Store, table: str, files: List[StoredFile], columns: List[str],
          schema: pa.Schema, filter=None) -> Optional[Dict[str, pa.Table]]:
    """The fast path: one dataset scan of all `files`, split by file; None if any file fails
    (unreadable, foreign: a required column null), so the caller probes them one by one.

    Batch by batch (at most SCAN_BATCH_ROWS rows, each with its file name, held at a time); a
    files/ file is kept only as its sums (`_file_sums`), so a table of a million file rows costs
    what one batch does, not a column of a million file names sorted."""
    dictionary = [c for c in DICTIONARY_COLUMNS.get(table, []) if c in columns]
    full = TABLE_SCHEMAS[table]
    if dictionary:
        full = pa.schema([f.with_type(pa.dictionary(pa.int32(), f.type)) if f.name in dictionary else f for f in full])
    fmt = ds.ParquetFileFormat(read_options=ds.ParquetReadOptions(dictionary_columns=dictionary)) \
        if dictionary else "parquet"
    sums = table == "files"
    found: Dict[str, List[pa.Table]] = {}
    try:
        dataset = ds.dataset([f.path for f in files], schema=full, format=fmt, filesystem=store.fs)
        batches = dataset.to_batches(columns=columns + ["__filename"], filter=filter, batch_size=SCAN_BATCH_ROWS)
        for rb in batches:
            if any(rb.column(c).null_count for c in columns if not schema.field(c).nullable):
                return None
            if rb.num_rows == 0:
                continue
            scanned = pa.Table.from_batches([rb]).sort_by("__filename")
            runs = pc.run_end_encode(scanned.column("__filename").combine_chunks())
            data = scanned.drop_columns(["__filename"]).cast(schema)
            start = 0
            for path, end in zip(runs.values.to_pylist(), runs.run_ends.to_pylist()):
                part = data.slice(start, end - start)
                found.setdefault(path, []).append(_file_sums(part) if sums else part)
                start = end
    except (OSError, pa.ArrowException, ValueError):
        return None
    out: Dict[str, pa.Table] = {}
    for path, parts in found.items():
        joined = parts[0] if len(parts) == 1 else pa.concat_tables(parts)
        out[path] = _file_sums(joined) if sums and len(parts) > 1 else joined
    return out


def _live(store: Store, table: str, cache: ReplacedCache, health: CatalogHealth
          ) -> Tuple[List[StoredFile], Dict[str, Signature]]:
    """The table's live files (and their signatures); a compacted file whose footer cannot be
    read, a non-Parquet name or a non-file is named and left out."""
    sigs = _signatures(store, table)
    good = []
    for n in sorted(sigs):
        path = store.path(table, n)
        if sigs[n][0] < 0:
            health.problems.append(f"{table}/{n}: not a regular file")
            health.unreadable.append(path)
            continue
        if not n.endswith(".parquet"):
            health.problems.append(f"{table}/{n}: not a catalog file name (*.parquet): a stray file")
            health.unreadable.append(path)
            continue
        if n.startswith(COMPACT_PREFIX):
            try:
                cache.replaces(store, StoredFile(n, path))
            except CatalogError as exc:
                health.problems.append(f"{table}/{n}: not a readable Parquet file ({_short(exc)})")
                health.unreadable.append(path)
                continue
        good.append(n)
    return live_files(store, table, cache=cache, names=good), sigs


def _first_per_bag(bags: pa.Table) -> pa.Table:
    from catalog.catalog import _first_per_key

    return _first_per_key(bags, ["bag_id"], [(RECORDED, "ascending"), (BATCH, "ascending")])


def _check_bag_sums(bags: pa.Table, files: pa.Table, health: CatalogHealth) -> None:
    """Every committed bag's file rows add up to its file count and bytes (vectorised; `files`
    holds each files/ file's FILE_SUMS)."""
    committed = _first_per_bag(bags)
    sums = files.group_by(BATCH).aggregate([("count", "sum"), ("size", "sum")])
    sums = sums.rename_columns([{"count_sum": "size_count"}.get(n, n) for n in sums.column_names])
    joined = committed.join(sums, keys=BATCH, join_type="left outer")
    count = pc.fill_null(joined.column("size_count"), 0)
    total = pc.fill_null(joined.column("size_sum"), 0)
    bad = pc.or_(pc.not_equal(count, joined.column("file_count")), pc.not_equal(total, joined.column("byte_count")))
    wrong = joined.filter(bad).sort_by("bag_id")
    for row, n, b in zip(wrong.select(["bag_id", "file_count", "byte_count"]).to_pylist(),
                         pc.fill_null(wrong.column("size_count"), 0).to_pylist(),
                         pc.fill_null(wrong.column("size_sum"), 0).to_pylist()):
        health.short_bags.append(row["bag_id"])
        health.problems.append(
            f"files: bag {row['bag_id']} has {n} file row(s), {b} byte(s) in the files table, but its bag row "
            f"(Payload-Oxum) says {row['file_count']} file(s), {row['byte_count']} byte(s): a files/ Parquet "
            f"file is missing or damaged")


def _ledger_mentions(store: Store, health: CatalogHealth, segs=None
                     ) -> Optional[Tuple[Set[str], Set[Tuple[str, str]], Set[str]]]:
    """Bags the ledger says were registered (and no rebuild gave up on), (bag, target) pairs it
    records copies of, and bags a rebuild gave up on (a failed "metadata extraction")."""
    try:
        files = Ledger(store).query_files(segs)
    except (OSError, pa.ArrowException) as exc:
        health.problems.append(f"{EVENTS_FOLDER}: cannot be listed ({_short(exc)})")
        return None
    # Signatures of just the files an events query reads (after compaction: the query cache and
    # the few newer segments), not of every segment ever written; S3 lists (one request per page).
    if store.is_local:
        local: Dict[str, Signature] = {}
        for f in files:
            try:
                st = os.stat(f.path)
                local[f.path] = (st.st_size, st.st_mtime_ns)
            except FileNotFoundError:
                local[f.path] = (0, 0)

        def sig(f: StoredFile) -> Signature:
            return local[f.path]
    else:
        sigs = {**{f"{EVENTS_FOLDER}/{n}": v for n, v in _signatures(store, EVENTS_FOLDER).items()},
                **{f"{CACHE_FOLDER}/{n}": v for n, v in _signatures(store, CACHE_FOLDER).items()}}

        def sig(f: StoredFile) -> Signature:
            return sigs.get(f"{f.path.rsplit('/', 2)[-2]}/{f.name}", (0, 0))

    key = tuple((f.path, sig(f)) for f in files)
    last = _COMBINED.get((store.location, EVENTS_FOLDER))
    if last is not None and last[0] == key:
        return last[1]  # type: ignore[return-value]
    before = len(health.problems)
    parts: List[pa.Table] = []
    todo: List[StoredFile] = []
    for f in files:
        got = _memo_get(store, EVENTS_FOLDER, f.path, sig(f))
        (todo.append(f) if got is None else parts.append(got))
    columns = ["type", "outcome", "object_type", "bag_id", "target"]
    wanted = ds.field("type").isin(list(REGISTRATION_EVENTS + COPY_EVENTS)) & ds.field("bag_id").is_valid()
    schema = pa.schema([EVENTS_SCHEMA.field(c) for c in columns])
    for f in [f for f in todo if not f.name.startswith("seg-")]:  # the query cache: big, read alone
        try:
            with store.fs.open_input_file(f.path) as fh:
                got = pq.ParquetFile(fh, read_dictionary=columns).read(columns=columns, use_threads=False)
            got = got.unify_dictionaries().group_by(columns).aggregate([]).cast(schema)
        except (OSError, pa.ArrowException, ValueError):
            continue  # a broken cache is ignored by queries and reported by `ledger verify`
        _memo_put(store, EVENTS_FOLDER, f.path, sig(f), got)
        parts.append(got)
    todo = [f for f in todo if f.name.startswith("seg-")]
    # No filter pushed down: on thousands of one-row segments it costs more than it saves.
    fast = _scan(store, EVENTS_FOLDER, todo, columns, schema) if todo else None
    if fast is not None:
        for f in todo:
            got = fast.get(f.path, schema.empty_table())
            _memo_put(store, EVENTS_FOLDER, f.path, sig(f), got)
            parts.append(got)
        todo = []
    for f in todo:  # the slow path: one file at a time
        try:
            dataset = ds.dataset([f.path], schema=EVENTS_SCHEMA, format="parquet", filesystem=store.fs)
            got = dataset.to_table(columns=columns, filter=wanted)
        except (OSError, pa.ArrowException, ValueError):
            # An older segment that cannot be read is `strongroom ledger verify`'s to report (and the
            # fixity report's to show): the history is damaged, but the index of what the copies
            # hold is not, so no command is stopped for it. (The head and the numbering are checked.)
            continue
        got = got.group_by(columns).aggregate([])  # one row per distinct mention keeps it small
        _memo_put(store, EVENTS_FOLDER, f.path, sig(f), got)
        parts.append(got)
    if not parts:
        return set(), set(), set()
    events = pa.concat_tables(parts)
    success = pc.equal(events.column("outcome"), "success")
    registered = events.filter(pc.and_(pc.and_(pc.is_in(events.column("type"), pa.array(REGISTRATION_EVENTS)),
                                               success), pc.is_valid(events.column("bag_id"))))
    # A rebuild that could not register a bag the ledger knows says so with a failed "metadata
    # extraction" event: the loss is then on record (and was reported), not a hole in the index.
    given_up = events.filter(pc.and_(pc.equal(events.column("type"), LOST_EVENT), pc.invert(success)))
    copies = events.filter(pc.and_(pc.and_(pc.is_in(events.column("type"), pa.array(COPY_EVENTS)),
                                           pc.equal(events.column("object_type"), "replica")),
                                   pc.and_(pc.is_valid(events.column("target")), success)))
    pairs = copies.group_by(["bag_id", "target"]).aggregate([])
    gave_up = set(given_up.column("bag_id").to_pylist()) - {None}
    found = (set(registered.column("bag_id").unique().to_pylist()) - gave_up,
             set(zip(pairs.column("bag_id").to_pylist(), pairs.column("target").to_pylist())), gave_up)
    if len(health.problems) == before:
        with _MEMO_LOCK:
            _COMBINED[(store.location, EVENTS_FOLDER)] = (key, found)  # type: ignore[assignment]
    return found


def check_catalog(catalog, *, ledger: bool = True) -> CatalogHealth:
    """Does the catalog agree with itself? See the module docstring for what is checked.

    Safe while others write: the ledger is read before the tables (writers record a bag row or
    a copy's state before the event about it, so every event seen has its row in the later
    listing); bag rows before file rows is safe too (add_bag writes the file rows first); and a table whose files vanish while being read (a compaction replaced them)
    is listed and read again, as `Catalog` queries do."""
    started = time.perf_counter()
    store: Store = catalog.store
    cache: ReplacedCache = getattr(catalog, "_replaced", None) or ReplacedCache()
    health = CatalogHealth(ok=True, location=catalog.location)
    mentions = None
    if ledger:
        glimpse = glance(store)
        health.problems += glimpse.problems
        health.ledger_problems = list(glimpse.problems)
        health.counts["segments"] = glimpse.segments
        mentions = _ledger_mentions(store, health, glimpse.listing if glimpse.segments else None)
    tables: Dict[str, pa.Table] = {}
    for table in ("bags", "files", "replicas"):
        for attempt in range(READ_ATTEMPTS):
            trial = CatalogHealth(ok=True, location=catalog.location)
            files, sigs = _live(store, table, cache, trial)
            tables[table] = _read_table(store, table, files, sigs, trial)
            if not trial.vanished or attempt == READ_ATTEMPTS - 1:
                break
        health.problems += trial.problems
        health.unreadable += trial.unreadable
        health.counts[f"{table}_files"] = len(files)
        health.counts[f"{table}_rows"] = (pc.sum(tables[table].column("count")).as_py() or 0) if table == "files" \
            else tables[table].num_rows
    _check_bag_sums(tables["bags"], tables["files"], health)
    if mentions is not None:
        registered, pairs, gave_up = mentions
        have_bags = set(tables["bags"].column("bag_id").unique().to_pylist())
        health.lost_bags = sorted(gave_up - have_bags)
        # a withdrawn bag a rebuild did not register again is not a hole in the index (K4)
        for bag_id in sorted(registered - have_bags - set(withdrawn_bags(catalog))):
            health.problems.append(f"bags: bag {bag_id} is registered in the ledger but has no bag row: a bags/ "
                                   f"Parquet file is missing or damaged")
        reps = tables["replicas"]
        have_pairs = set(zip(reps.column("bag_id").to_pylist(), reps.column("target").to_pylist()))
        lost = sorted(p for p in pairs - have_pairs if p[0] in have_bags)
        for bag_id, target in lost:
            health.problems.append(f"replicas: the ledger records copies of {bag_id} on {target}, but the "
                                   f"replicas table has no record of it: a replicas/ Parquet file is missing "
                                   f"or damaged")
    health.ok = not health.problems
    health.seconds = time.perf_counter() - started
    return health


__all__ = ["CatalogDamaged", "CatalogHealth", "check_catalog", "forget", "REBUILD_HINT"]
