"""File facts per collection and format, aggregated while streaming the catalog's file table.

`Catalog.files()` returns every column of every file row at once (digests and paths included:
a few hundred bytes a file), which is the right answer for one bag and the wrong one for a
report over a million files. Reports need only counts and sums, so this module scans the files
table in record batches, reading only the columns it needs, aggregates each batch with
pyarrow's `group_by` and then merges the small partial results: memory is one batch plus one
row per group (collection x format), whatever the number of files.

It reads the catalog's Parquet files below the `Catalog` query methods (`live_files`, the
committed-bag `_batch` marks, `Catalog._replaced`), because those methods have no streaming form yet; the same
rules apply as in `Catalog.files`: only rows written together with a committed bag row count
(leftovers of a crashed `add_bag` never do), and files replaced by a compaction are skipped.
A compaction that deletes files mid-scan makes the scan start again.
"""

from __future__ import annotations

from typing import Callable, Dict, Iterator, List, Optional, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from catalog.catalog import Catalog
from catalog.compact import live_files
from catalog.schema import BATCH, DIGEST_ALGORITHMS
from catalog.store import CatalogError

BATCH_ROWS = 32_768
ATTEMPTS = 5

# Group keys of the aggregate; `at_risk` is true when the bag's policy lists the file's PUID.
KEYS = ["library", "collection", "collection_type", "policy", "puid", "format_name", "format_version",
        "identification_method", "at_risk"]
# Aggregates: files, bytes, and how many files carry each digest.
VALUES = ["files", "bytes"] + [f"with_{alg}" for alg in DIGEST_ALGORITHMS]

AGG_SCHEMA = pa.schema([
    ("library", pa.string()), ("collection", pa.string()), ("collection_type", pa.string()),
    ("policy", pa.string()), ("puid", pa.string()), ("format_name", pa.string()),
    ("format_version", pa.string()), ("identification_method", pa.string()), ("at_risk", pa.bool_()),
    *[(v, pa.int64()) for v in VALUES],
])


def at_risk_table(config) -> pa.Table:
    """(policy, puid) for every PUID a policy lists as at risk: a tiny table."""
    policies, puids = [], []
    for policy in config.policies.values():
        for puid in policy.formats.at_risk:
            policies.append(policy.name)
            puids.append(puid)
    return pa.table({"policy": pa.array(policies, pa.string()), "puid": pa.array(puids, pa.string())})


def at_risk_mask(rows: pa.Table, risk: pa.Table) -> pa.ChunkedArray:
    """True where the row's (policy, puid) is listed as at risk; a set lookup on a joined key."""
    sep = "\x1f"
    listed = pc.binary_join_element_wise(risk.column("policy"), risk.column("puid"), sep)
    mine = pc.binary_join_element_wise(rows.column("policy"), rows.column("puid"), sep)
    return pc.fill_null(pc.is_in(mine, value_set=listed.combine_chunks() if isinstance(listed, pa.ChunkedArray)
                                 else listed), False)


def file_aggregate(config, catalog: Catalog, bags: pa.Table) -> pa.Table:
    """One row per (library, collection, type, policy, format, identification method, at_risk)
    of the files of `bags`, with file and byte counts and digest coverage. No row loops."""
    risk = at_risk_table(config)
    for attempt in range(ATTEMPTS):
        partials: List[pa.Table] = []
        try:
            for batch in file_batches(catalog, bags, AGG_COLUMNS):
                partials.append(_aggregate_batch(batch, risk))
                if len(partials) > 64:  # keep the partial results small too
                    partials = [_merge(partials)]
        except TableChanged:
            if attempt == ATTEMPTS - 1:
                raise
            continue
        return _merge(partials) if partials else AGG_SCHEMA.empty_table()
    raise AssertionError("unreachable")


class TableChanged(CatalogError):
    """A compaction replaced files of the table while it was being read: read it again."""


AGG_COLUMNS = ["size", "puid", "format_name", "format_version", "identification_method", *DIGEST_ALGORITHMS]
BAG_COLUMNS = ["library", "collection", "collection_type", "policy"]


def file_batches(catalog: Catalog, bags: pa.Table, columns: Sequence[str],
                 keep: Optional[Callable[[pa.Table], pa.ChunkedArray]] = None) -> Iterator[pa.Table]:
    """The committed file rows of `bags` in batches: `bag_id`, `columns`, and the bag's library,
    collection, collection_type and policy; `keep(table)` may narrow each batch (a boolean mask).

    Each Parquet file is read with `ParquetFile.iter_batches`, one file and one batch at a time:
    measured flat (about +50 MB at 100k and at 1M files), where a `pyarrow.dataset` scan of the
    same files grew with the table. A compaction that removes files mid-scan restarts the scan if
    nothing was yielded yet, and raises TableChanged otherwise (file_aggregate starts again)."""
    if bags.num_rows == 0:
        return
    committed = catalog._committed_bags()  # bag rows with their `_batch` commit mark
    committed = committed.filter(pc.is_in(committed.column("bag_id"), value_set=bags.column("bag_id").combine_chunks()))
    keyed = committed.select(["bag_id", BATCH] + BAG_COLUMNS)
    marks = keyed.column(BATCH).combine_chunks()
    wanted = ["bag_id", BATCH] + [c for c in columns if c not in ("bag_id", BATCH)]
    for attempt in range(ATTEMPTS):
        yielded = False
        try:
            for f in live_files(catalog.store, "files", None, catalog._replaced):
                with catalog.store.fs.open_input_file(f.path) as fh:
                    for batch in pq.ParquetFile(fh).iter_batches(batch_size=BATCH_ROWS, columns=wanted,
                                                                 use_threads=False):
                        table = pa.Table.from_batches([batch])
                        # Only rows written with a committed bag row count (see Catalog.files); the
                        # mark's position gives the bag's columns: a lookup, not a join per batch.
                        index = pc.index_in(table.column(BATCH), value_set=marks)
                        table = table.filter(pc.is_valid(index))
                        if table.num_rows == 0:
                            continue
                        index = index.filter(pc.is_valid(index))
                        for name in BAG_COLUMNS:
                            table = table.append_column(name, keyed.column(name).take(index))
                        if keep is not None:
                            table = table.filter(keep(table))
                        if table.num_rows:
                            yielded = True
                            yield table
            return
        except FileNotFoundError:  # a compaction replaced files between listing and reading
            if yielded or attempt == ATTEMPTS - 1:
                raise TableChanged("the files table changed while being read (a compaction ran); run the "
                                   "report again", path=catalog.store.path("files"))
        except (pa.ArrowInvalid, OSError) as exc:
            raise CatalogError(f"the files table cannot be read: {exc}", path=catalog.store.path("files"))


def _aggregate_batch(rows: pa.Table, risk: pa.Table) -> pa.Table:
    rows = rows.append_column("at_risk", at_risk_mask(rows, risk))
    agg = rows.group_by(KEYS, use_threads=False).aggregate(
        [([], "count_all"), ("size", "sum")] + [(alg, "count") for alg in DIGEST_ALGORITHMS])
    return _normalise(agg, ["count_all", "size_sum"] + [f"{alg}_count" for alg in DIGEST_ALGORITHMS])


def _normalise(agg: pa.Table, value_names: Sequence[str]) -> pa.Table:
    cols = {k: agg.column(k).cast(AGG_SCHEMA.field(k).type) for k in KEYS}
    for new, old in zip(VALUES, value_names):
        cols[new] = pc.fill_null(agg.column(old), 0).cast(pa.int64())
    return pa.table(cols, schema=AGG_SCHEMA)


def _merge(partials: List[pa.Table]) -> pa.Table:
    table = pa.concat_tables(partials)
    agg = table.group_by(KEYS, use_threads=False).aggregate([(v, "sum") for v in VALUES])
    return _normalise(agg, [f"{v}_sum" for v in VALUES]).sort_by([(k, "ascending") for k in KEYS])


def sum_by(agg: pa.Table, keys: Sequence[str], values: Sequence[str] = ("files", "bytes"),
           where: Optional[pa.ChunkedArray] = None) -> List[Dict]:
    """Sums of `values` grouped by `keys` over (a filter of) the aggregate, as sorted dict rows."""
    table = agg if where is None else agg.filter(where)
    if not keys:
        return [{v: int(pc.sum(table.column(v)).as_py() or 0) for v in values}]
    out = table.group_by(list(keys), use_threads=False).aggregate([(v, "sum") for v in values])
    out = out.rename_columns([n[:-4] if n.endswith("_sum") else n for n in out.column_names])
    out = out.sort_by([(k, "ascending") for k in keys])
    return out.to_pylist()
