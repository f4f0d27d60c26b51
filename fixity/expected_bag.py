"""What a bag should hold, from the catalog (`ExpectedBag`): the reference every copy is checked
against, read once per bag and kept for the check that follows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import pyarrow as pa
import pyarrow.compute as pc

from catalog.schema import DIGEST_ALGORITHMS


_EXPECTED_CACHE: Dict[Tuple, "ExpectedBag"] = {}


@dataclass
class ExpectedBag:
    """The catalog's record of a bag: payload files (an Arrow table) and bag facts."""

    bag_id: str
    policy: str
    files: pa.Table                 # path, size and one column per digest algorithm
    algorithms: Tuple[str, ...]     # digest algorithms the catalog holds for every file
    primary: str                    # the policy's primary digest (or the first the catalog has)
    file_count: int
    byte_count: int
    external_identifier: Optional[str] = None
    catalog: Any = field(default=None, repr=False, compare=False)  # where the earlier bags of a version are

    @classmethod
    def from_catalog(cls, catalog, bag_id: str, policy=None) -> "ExpectedBag":
        """The bag's catalog record. `policy` (a policies.model.Policy, if known) names the
        primary digest, and the algorithms of a bag without payload files.

        The last one read is kept (per process): a registered bag's rows never change (the
        catalog refuses different content under a bag id), and the check of a copy and the
        judgement of the bag, run one after the other, need the same rows."""
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
        files = catalog.files(bag_id, columns=["path", "size", *DIGEST_ALGORITHMS])  # no other column read
        if files.num_rows:
            algorithms = tuple(a for a in DIGEST_ALGORITHMS if files.column(a).null_count == 0)
        else:
            algorithms = tuple(a for a in DIGEST_ALGORITHMS if policy is not None and a in policy.checksums)
        primary = policy.primary_checksum if policy is not None else None
        if primary not in algorithms:
            primary = "sha256" if "sha256" in algorithms else (algorithms[0] if algorithms else "sha256")
        keep = ["path", "size"] + list(algorithms)
        return cls(bag_id=bag_id, policy=record.policy, files=files.select(keep), algorithms=algorithms,
                   primary=primary, file_count=record.file_count, byte_count=record.byte_count,
                   external_identifier=record.external_identifier, catalog=catalog)

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
        """(size, digests) of some payload files, by path (vectorised lookup)."""
        wanted = pa.array(list(paths), pa.string())
        rows = self.files.filter(pc.is_in(self.files.column("path"), value_set=wanted))
        out: Dict[str, Tuple[int, Dict[str, str]]] = {}
        cols = {a: rows.column(a).to_pylist() for a in self.algorithms}
        for i, (p, s) in enumerate(zip(rows.column("path").to_pylist(), rows.column("size").to_pylist())):
            out[p] = (s, {a: cols[a][i] for a in self.algorithms if cols[a][i]})
        return out

    def iter_files(self, table: Optional[pa.Table] = None, batch: int = 4096,
                   algorithms: Optional[Sequence[str]] = None) -> Iterator[Tuple[str, int, Dict[str, str]]]:
        """(path, size, digests) of every row, batch by batch (no list of every file);
        `algorithms` limits the digests given (less to hand to worker processes)."""
        table = self.files if table is None else table
        wanted = [a for a in self.algorithms if algorithms is None or a in algorithms]
        for rb in table.to_batches(max_chunksize=batch):
            paths = rb.column("path").to_pylist()
            sizes = rb.column("size").to_pylist()
            cols = [(a, rb.column(rb.schema.get_field_index(a)).to_pylist()) for a in wanted]
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
