"""A deep audit's memory does not grow with a bag's file count (issues 11, 16): the catalog's
files tables are written in bounded row groups and read batch by batch, the integrity check at
open keeps per-file sums instead of file rows, and a copy's manifest is compared with the
catalog a window at a time. Each must give the verdicts the simple, all-in-memory way gave.
"""

from __future__ import annotations

import datetime as dt
import random
from typing import Dict, List, Tuple

import pyarrow.parquet as pq
from hypothesis import given
from hypothesis import strategies as st

from catalog.catalog import Catalog
from catalog.compact import ROW_GROUP_ROWS
from catalog.schema import BagRecord, FileRecord
from fixity import manifests as M
from strongroom import bagit_spec
from tests import strategies as S
from tests.test_properties import MUTATIONS, _expected, _mutate


def _simple_matches(raw: bytes, expected, algorithm: str, version: str) -> bool:
    """The comparison as it was before it streamed: every line split, both sides sorted."""
    start = 3 if raw.startswith(b"\xef\xbb\xbf") else 0
    lines = raw[start:].split(b"\n")
    if lines and not lines[-1]:
        lines.pop()
    if raw.find(b"\r", start) >= 0:
        try:
            lines = [line.decode("utf-8").rstrip("\r").encode("utf-8") for line in lines]
        except UnicodeDecodeError:
            return False
    paths = expected.files.column("path").to_pylist()
    digests = expected.files.column(algorithm).to_pylist()
    wanted = [f"{d}  {bagit_spec.encode_path(p, version)}".encode("utf-8") for p, d in zip(paths, digests)]
    return sorted(lines) == sorted(wanted)


@S.quick(150)
@given(entries=st.dictionaries(S.payload_paths(), st.tuples(st.integers(0, 10 ** 6), S.hex_digest()), max_size=8),
       mutation=st.sampled_from(MUTATIONS), rnd=st.randoms(use_true_random=False), shuffle=st.booleans(),
       ending=st.sampled_from(["\n", "\r\n"]), bom=st.booleans(), version=st.sampled_from(["1.0", "0.97"]),
       window=st.integers(1, 300))
def test_windowed_manifest_comparison_gives_the_simple_comparisons_verdict(entries, mutation, rnd, shuffle, ending,
                                                                            bom, version, window):
    """Any entries, in the catalog's order or not, damaged or not, windows of any size (down to
    one byte, so lines cross window edges): the same answer as sorting every line."""
    if version != "1.0":
        entries = {p: v for p, v in entries.items() if "%0A" not in p.upper() and "%0D" not in p.upper()}
    expected = _expected(entries)
    _, lines = S.manifest_text({p: d for p, (_, d) in entries.items()}, version)
    if shuffle:
        rnd.shuffle(lines)
    lines = _mutate(lines, mutation, rnd)
    raw = (b"\xef\xbb\xbf" if bom else b"") + S.line_endings("".join(lines), ending).encode("utf-8")
    old = M.WINDOW_BYTES
    M.WINDOW_BYTES = window
    try:
        got = M.manifest_matches(raw, expected, "sha256", version)
    finally:
        M.WINDOW_BYTES = old
    assert got == _simple_matches(raw, expected, "sha256", version), (mutation, shuffle, window, raw)


def test_a_manifest_in_the_catalogs_order_is_compared_without_holding_all_its_lines(monkeypatch):
    """Strongroom's own manifests (sorted by path) never take the all-lines way, whatever their
    length: that is what keeps a 1,000,000-file audit's memory that of a 20,000-file one."""
    entries = {f"data/d{i // 100:03d}/f{i:05d}.bin": (i, f"{i:064x}") for i in range(3000)}
    expected = _expected(entries)
    _, lines = S.manifest_text({p: d for p, (_, d) in entries.items()}, "1.0")
    raw = "".join(lines).encode("utf-8")
    monkeypatch.setattr(M, "WINDOW_BYTES", 4096)   # ~40 windows

    def unordered(*args):
        raise AssertionError("a sorted manifest was compared by sorting all its lines")

    monkeypatch.setattr(M, "matches_sorted", unordered)
    assert M.manifest_matches(raw, expected, "sha256", "1.0")
    damaged = raw.replace(f"{7:064x}".encode(), f"{8:064x}".encode(), 1)
    with monkeypatch.context() as m:
        m.setattr(M, "matches_sorted", lambda *a: False)   # a difference falls back, and says no
        assert not M.manifest_matches(damaged, expected, "sha256", "1.0")


# -- the catalog: row groups, batched reads, the integrity check ---------------------------


def _bag(catalog: Catalog, n: int, name: str = "C") -> Tuple[str, List[FileRecord]]:
    bag_id = f"LIB/{name}/20240101T000000Z-1"
    rng = random.Random(n)
    files = [FileRecord(bag_id=bag_id, path=f"data/{rng.randrange(10 ** 9):09d}-{i}.bin", size=i % 97,
                        sha256=f"{i:064x}", md5=f"{i:032x}") for i in range(n)]
    created = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
    catalog.add_bag(BagRecord(bag_id=bag_id, library="LIB", collection=name, collection_type="self-built",
                              title=None, policy="p", external_identifier=f"urn:x:{name}", group_id=f"LIB/{name}/x",
                              part=1, part_count=1, file_count=n, byte_count=sum(f.size for f in files),
                              created_at=created), files)
    return bag_id, files


def test_a_big_bags_files_table_is_written_in_bounded_row_groups_and_reads_back_the_same(tmp_path):
    n = 2 * ROW_GROUP_ROWS + 123
    catalog = Catalog(str(tmp_path / "cat"))
    bag_id, files = _bag(catalog, n)
    (written,) = sorted((tmp_path / "cat" / "files").glob("*.parquet"))
    md = pq.read_metadata(written)
    assert md.num_rows == n and md.num_row_groups == 3
    assert max(md.row_group(i).num_rows for i in range(md.num_row_groups)) <= ROW_GROUP_ROWS
    got = catalog.files(bag_id, columns=["path", "size", "sha256"])
    want = sorted(files, key=lambda f: f.path)
    assert got.column("path").to_pylist() == [f.path for f in want]
    assert got.column("sha256").to_pylist() == [f.sha256 for f in want]
    _bag(catalog, 3, "OTHER")   # compaction merges two files or more
    catalog.compact()
    (compacted,) = sorted((tmp_path / "cat" / "files").glob("compact-*.parquet"))
    md = pq.read_metadata(compacted)
    assert max(md.row_group(i).num_rows for i in range(md.num_row_groups)) <= ROW_GROUP_ROWS
    assert catalog.files(bag_id, columns=["path", "size", "sha256"]).equals(got)


def test_an_older_files_table_written_as_one_row_group_still_reads_the_same(tmp_path):
    catalog = Catalog(str(tmp_path / "cat"))
    bag_id, _ = _bag(catalog, ROW_GROUP_ROWS + 500)
    before = catalog.files(bag_id)
    (written,) = sorted((tmp_path / "cat" / "files").glob("*.parquet"))
    table = pq.read_table(written)
    pq.write_table(table, written, compression="zstd", row_group_size=len(table))   # as written before
    assert pq.read_metadata(written).num_row_groups == 1
    fresh = Catalog(str(tmp_path / "cat"))
    assert fresh.files(bag_id).equals(before)


def test_the_integrity_check_over_many_file_rows_gives_the_same_verdicts(tmp_path):
    """Bags of more rows than one scan batch, small and compacted files: a whole catalog is
    sound; a files/ file of a bag removed, or replaced by one row short, is named (the sums are
    kept per batch of rows, the verdict is that of the rows)."""
    from catalog.integrity import SCAN_BATCH_ROWS, check_catalog, forget

    catalog = Catalog(str(tmp_path / "cat"))
    big, _ = _bag(catalog, SCAN_BATCH_ROWS * 2 + 7, "BIG")
    small, _ = _bag(catalog, 5, "SMALL")
    health = check_catalog(catalog, ledger=False)
    assert health.ok, health.problems
    assert health.counts["files_rows"] == SCAN_BATCH_ROWS * 2 + 12
    catalog.compact()
    forget(catalog.store)
    health = check_catalog(Catalog(str(tmp_path / "cat")), ledger=False)
    assert health.ok and health.counts["files_rows"] == SCAN_BATCH_ROWS * 2 + 12, health.problems

    catalog = Catalog(str(tmp_path / "two"))
    big, _ = _bag(catalog, SCAN_BATCH_ROWS + 3, "BIG")
    small, _ = _bag(catalog, 5, "SMALL")
    files: Dict[str, str] = {p.name: str(p) for p in (tmp_path / "two" / "files").glob("*.parquet")}
    big_file = next(path for path in files.values() if pq.read_table(path).column("bag_id")[0].as_py() == big)
    table = pq.read_table(big_file)
    pq.write_table(table.slice(1).replace_schema_metadata(table.schema.metadata), big_file)   # one row short
    forget(catalog.store)
    health = check_catalog(Catalog(str(tmp_path / "two")), ledger=False)
    assert not health.ok and health.short_bags == [big]
    assert f"bag {big} has {SCAN_BATCH_ROWS + 2} file row(s)" in health.problems[0]
    for path in files.values():
        if pq.read_table(path).column("bag_id")[0].as_py() == small:
            (tmp_path / "two" / "files" / path.rsplit("/", 1)[-1]).unlink()
    forget(catalog.store)
    health = check_catalog(Catalog(str(tmp_path / "two")), ledger=False)
    assert sorted(health.short_bags) == sorted([big, small])
