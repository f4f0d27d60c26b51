"""What a bag should hold, from the catalog (`ExpectedBag`): the reference every copy is checked
against. Its facts (counts, digest algorithms) are read once per bag; its payload rows stay in
the catalog and are read a batch at a time (`batches`) each time a check passes over them, so a
deep audit's memory does not grow with the bag's file count (issues 11, 16). Rows given as a
table (`files`, tests and small tools) are used as they are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import pyarrow as pa
import pyarrow.compute as pc

from catalog.schema import DIGEST_ALGORITHMS, FILES_SCHEMA

#: Rows per batch when the rows are given as a table.
BATCH_ROWS = 16384

_EXPECTED_CACHE: Dict[Tuple, "ExpectedBag"] = {}


@dataclass
class ExpectedBag:
    """The catalog's record of a bag: bag facts, and its payload files (path, size and one
    column per digest algorithm) read from the catalog batch by batch, or given as `files`."""

    bag_id: str
    policy: str
    files: Optional[pa.Table]       # the rows, when given whole; None: read from `catalog` as needed
    algorithms: Tuple[str, ...]     # digest algorithms the catalog holds for every file
    primary: str                    # the policy's primary digest (or the first the catalog has)
    file_count: int
    byte_count: int
    external_identifier: Optional[str] = None
    catalog: Any = field(default=None, repr=False, compare=False)  # where the rows (and earlier bags) are
    _known: Dict[str, Tuple[int, Dict[str, str]]] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_catalog(cls, catalog, bag_id: str, policy=None) -> "ExpectedBag":
        """The bag's catalog record. `policy` (a policies.model.Policy, if known) names the
        primary digest, and the algorithms of a bag without payload files.

        The last one read is kept (per process): a registered bag's rows never change (the
        catalog refuses different content under a bag id), and the check of a copy and the
        judgement of the bag, run one after the other, need the same facts."""
        key = (str(getattr(catalog, "location", id(catalog))), bag_id, getattr(policy, "primary_checksum", None),
               tuple(getattr(policy, "checksums", ()) or ()))
        cached = _EXPECTED_CACHE.get(key)
        if cached is not None:
            return cached
        _EXPECTED_CACHE.clear()
        _EXPECTED_CACHE[key] = expected = cls._read(catalog, bag_id, policy)
        return expected

    @classmethod
    def _read(cls, catalog, bag_id: str, policy=None) -> "ExpectedBag":
        record = catalog.bag(bag_id)
        if record is None:
            raise KeyError(bag_id)
        rows = 0
        nulls_of = dict.fromkeys(DIGEST_ALGORITHMS, 0)
        for rb in catalog.file_batches(bag_id, DIGEST_ALGORITHMS):   # only digest columns: which are whole
            rows += rb.num_rows
            for i, a in enumerate(DIGEST_ALGORITHMS, start=1):
                nulls_of[a] += rb.column(i).null_count
        if rows:
            algorithms = tuple(a for a in DIGEST_ALGORITHMS if nulls_of[a] == 0)
        else:
            algorithms = tuple(a for a in DIGEST_ALGORITHMS if policy is not None and a in policy.checksums)
        primary = policy.primary_checksum if policy is not None else None
        if primary not in algorithms:
            primary = "sha256" if "sha256" in algorithms else (algorithms[0] if algorithms else "sha256")
        return cls(bag_id=bag_id, policy=record.policy, files=None, algorithms=algorithms, primary=primary,
                   file_count=record.file_count, byte_count=record.byte_count,
                   external_identifier=record.external_identifier, catalog=catalog)

    def batches(self, columns: Optional[Sequence[str]] = None) -> Iterator[pa.RecordBatch]:
        """The rows (`columns`, default path, size and the digests), a batch at a time, sorted by
        path as the catalog holds them (a reader relying on the order checks it)."""
        wanted = list(columns) if columns is not None else ["path", "size", *self.algorithms]
        if self.files is not None:
            yield from self.files.select(wanted).to_batches(max_chunksize=BATCH_ROWS)
            return
        for rb in self.catalog.file_batches(self.bag_id, wanted):
            yield rb.select(wanted)

    def table(self, columns: Optional[Sequence[str]] = None) -> pa.Table:
        """Every row at once: only for the exact comparisons of what the streaming ones cannot
        settle (a manifest that disagrees with the catalog); its memory grows with the bag."""
        wanted = list(columns) if columns is not None else ["path", "size", *self.algorithms]
        if self.files is not None:
            return self.files.select(wanted)
        rows = list(self.batches(wanted))
        return pa.Table.from_batches(rows) if rows else FILES_SCHEMA.empty_table().select(wanted)

    def fetch_problems(self, entries: Sequence[Any]) -> List[Tuple[str, str]]:
        """(path, why) for each fetch.txt entry (`ingest.fetch.FetchEntry`) of a copy of this
        version bag that the catalog does not vouch for: the file must be one of this bag's
        rows, of the length given, and the bag named must be an earlier registered bag of the
        same library and collection whose row for the same path has the same size and every
        digest both rows have (docs/versions.md). An entry that passes is preserved there."""
        from strongroom.bag_id import BagId

        own = self.digests_of(e.path for e in entries)
        me = BagId.parse(self.bag_id)
        holders: Dict[str, Optional[Dict[str, Tuple[int, Dict[str, str]]]]] = {}
        out: List[Tuple[str, str]] = []
        for e in entries:
            where = f"fetch.txt line {e.line}: {e.path}"
            if e.path not in own:
                out.append((e.path, f"{where}: not a file the catalog holds for this bag"))
                continue
            size, digests = own[e.path]
            if e.length != size:
                out.append((e.path, f"{where}: length {e.length} differs from the catalog's {size} bytes"))
                continue
            holder = BagId.parse(e.bag_id)
            if (holder.library, holder.collection) != (me.library, me.collection) or holder.stamp >= me.stamp:
                out.append((e.path, f"{where}: refers to {e.bag_id}, which is not an earlier bag of "
                                    f"{me.library}/{me.collection}"))
                continue
            if e.bag_id not in holders:
                holders[e.bag_id] = _rows_of(self.catalog, e.bag_id)
            rows = holders[e.bag_id]
            if rows is None:
                out.append((e.path, f"{where}: refers to {e.bag_id}, which the catalog does not hold; the "
                                    "file is preserved nowhere the archive knows of"))
                continue
            theirs = rows.get(e.path)
            common = [a for a in digests if theirs is not None and a in theirs[1]]
            if theirs is None or theirs[0] != size or not common or any(theirs[1][a] != digests[a] for a in common):
                what = "does not hold that file" if theirs is None else "holds it with another size or digest"
                out.append((e.path, f"{where}: refers to {e.bag_id}, which {what} in the catalog"))
        return out

    def digests_of(self, paths: Iterable[str]) -> Dict[str, Tuple[int, Dict[str, str]]]:
        """(size, digests) of some payload files, by path: one pass over the rows, keeping only
        those asked for (and remembered: the judgement asks again for the same damaged files)."""
        asked = list(paths)
        unknown = [p for p in dict.fromkeys(asked) if p not in self._known]
        if unknown:
            wanted = pa.array(unknown, pa.string())
            for rb in self.batches():
                rows = rb.filter(pc.is_in(rb.column(0), value_set=wanted))
                if rows.num_rows:
                    self._remember(rows)
        return {p: self._known[p] for p in asked if p in self._known}

    def _remember(self, rows: pa.RecordBatch) -> None:
        cols = {a: rows.column(a).to_pylist() for a in self.algorithms}
        for i, (p, s) in enumerate(zip(rows.column("path").to_pylist(), rows.column("size").to_pylist())):
            self._known[p] = (s, {a: cols[a][i] for a in self.algorithms if cols[a][i]})

    def iter_files(self, skip: Optional[pa.Array] = None, algorithms: Optional[Sequence[str]] = None
                   ) -> Iterator[Tuple[str, int, Dict[str, str]]]:
        """(path, size, digests) of every row but those whose path is in `skip`, batch by batch
        (no list of every file); `algorithms` limits the digests given (less to hand to worker
        processes)."""
        wanted = [a for a in self.algorithms if algorithms is None or a in algorithms]
        for rb in self.batches(["path", "size", *wanted]):
            if skip is not None and len(skip):
                rb = rb.filter(pc.invert(pc.is_in(rb.column(0), value_set=skip)))
            paths = rb.column(0).to_pylist()
            sizes = rb.column(1).to_pylist()
            cols = [(a, rb.column(i).to_pylist()) for i, a in enumerate(wanted, start=2)]
            for i, p in enumerate(paths):
                yield p, sizes[i], {a: c[i] for a, c in cols if c[i]}


def _rows_of(catalog, bag_id: str) -> Optional[Dict[str, Tuple[int, Dict[str, str]]]]:
    """path -> (size, digests) of a registered bag, None when the catalog does not hold it."""
    if catalog is None or catalog.bag(bag_id) is None:
        return None
    files = catalog.files(bag_id, columns=["path", "size", *DIGEST_ALGORITHMS])
    algs = list(DIGEST_ALGORITHMS)
    cols = {n: files.column(n).to_pylist() for n in ["path", "size"] + algs}
    return {p: (cols["size"][i], {a: cols[a][i] for a in algs if cols[a][i]}) for i, p in enumerate(cols["path"])}
