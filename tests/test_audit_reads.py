"""What a deep audit reads from the catalog, and the per-file work it no longer repeats (issue 11).

A deep audit of a big bag needs each file's path, size and digests; reading every column of the
files table (bag id, format, times) was most of the memory its catalog read took. These tests
hold `Catalog.files(columns=...)` to the rows `files()` gives, and ExpectedBag to those columns.
"""

from __future__ import annotations

import pytest

from catalog.catalog import Catalog
from catalog.schema import DIGEST_ALGORITHMS
from fixity.expected_bag import _EXPECTED_CACHE, ExpectedBag
from storage_adapters.base import bag_segments
from strongroom.bag_id import BagId
from tests.test_catalog import make_bag


@pytest.fixture
def cat(tmp_path):
    catalog = Catalog(str(tmp_path / "catalog"))
    for i in (1, 2):
        catalog.add_bag(*make_bag(i, n_files=5))
    return catalog


def test_files_with_columns_are_the_same_rows(cat):
    bag_id = "PKU/maps/20240501T093000Z-2"
    some = ["path", "size", "sha256"]
    assert cat.files(bag_id, columns=some).equals(cat.files(bag_id).select(some))
    assert cat.files(columns=["bag_id", "path"]).equals(cat.files().select(["bag_id", "path"]))
    assert cat.files("PKU/maps/20240501T093000Z-9", columns=some).column_names == some  # no such bag
    with pytest.raises(ValueError, match="_batch"):
        cat.files(bag_id, columns=["path", "_batch"])


def test_expected_bag_reads_only_paths_sizes_and_digests(cat, monkeypatch):
    import catalog.catalog as C

    read = []
    real = C.scan_files

    def spy(store, table, files, **scan):
        if table == "files":
            read.append(list(scan["columns"]))
        return real(store, table, files, **scan)

    monkeypatch.setattr(C, "scan_files", spy)
    _EXPECTED_CACHE.clear()
    expected = ExpectedBag.from_catalog(cat, "PKU/maps/20240501T093000Z-1")
    rows = expected.table()
    _EXPECTED_CACHE.clear()
    assert read and all(set(cols) <= {"path", "size", *DIGEST_ALGORITHMS} for cols in read)
    assert expected.algorithms == ("md5", "sha256")
    assert expected.files is None   # the rows stay in the catalog, read a batch at a time
    assert rows.column_names == ["path", "size", "md5", "sha256"]
    assert rows.num_rows == 5 and expected.file_count == 5
    assert rows.equals(cat.files("PKU/maps/20240501T093000Z-1", columns=rows.column_names))


def test_bag_segments_still_refuses_a_bag_id_built_by_hand():
    good = BagId.parse("PKU/maps/20240501T093000Z-1")
    assert bag_segments(good) == ("PKU", "maps", "20240501T093000Z-1")
    assert bag_segments(good) == ("PKU", "maps", "20240501T093000Z-1")   # from the memo, same answer
    for odd in (BagId("PKU", "../maps", "20240501T093000Z", 1), BagId("PKU", "maps", "20240501T093000Z", -1)):
        with pytest.raises(ValueError, match="not a canonical bag id"):
            bag_segments(odd)
