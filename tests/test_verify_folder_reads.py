"""Verify of a folder target opens each stored file through its folder's kept descriptor
(`fs_read.FolderReads`, issue 11): one folder lookup per folder instead of a walk from the root
per file, with the same refusals, and a folder replaced while it is read is never taken for
the stored bag."""

from __future__ import annotations

import os
import shutil

import pytest

from storage_adapters import fs_read
from storage_adapters.filesystem import FilesystemAdapter
from storage_adapters.replicate import bag_inventory, replicate_bag, verify_replica
from tests.test_replicate import BAG, make_bag

PAYLOAD = {f"sub/f{i:02d}.bin": bytes([i]) * (100 + i) for i in range(48)}
PAYLOAD.update({f"other/deep/g{i}.bin": b"g" * i for i in range(3)}, **{"top.txt": b"top\n"})


@pytest.fixture
def stored_bag(tmp_path):
    bag = make_bag(tmp_path / "staging" / BAG.name, PAYLOAD)
    root = tmp_path / "replicas" / "site-a"
    root.mkdir(parents=True)
    adapter = FilesystemAdapter("site-a", "beijing", root)
    replicate_bag(adapter, bag, BAG)
    return adapter, bag_inventory(bag), root / "LIB" / "COLL" / BAG.name


def test_each_folder_is_looked_up_once_not_once_per_file(stored_bag, monkeypatch):
    adapter, (digests, sizes), _ = stored_bag
    lookups = []
    real = adapter._open_root

    def counting():
        lookups.append(1)
        return real()

    monkeypatch.setattr(adapter, "_open_root", counting)
    result = verify_replica(adapter, BAG, digests, sizes)
    assert result.ok, result.problems
    assert result.files_checked == len(digests) > 50
    # Every path below the root starts from the root's descriptor: the listing once per folder,
    # the reads once per folder and once more per folder to check it is still there.
    folders = 6  # the bag, data, data/sub, data/other, data/other/deep, metadata
    assert len(lookups) <= 3 * folders < len(digests)


def test_a_folder_replaced_while_its_files_are_read_is_reported(stored_bag, tmp_path):
    adapter, (digests, sizes), bag_dir = stored_bag
    sub = bag_dir / "data" / "sub"
    moved = tmp_path / "moved-sub"
    after = sorted(digests).index("data/sub/f00.bin") + 1   # verify goes in name order
    state = {"done": False}

    def swap(files_done: int, _bytes: int) -> None:
        # After the first file of data/sub: the real folder leaves, a damaged copy takes its place.
        if files_done == after:
            state["done"] = True
            os.rename(sub, moved)
            shutil.copytree(moved, sub)
            damaged = sub / "f47.bin"
            os.chmod(damaged, 0o644)
            damaged.write_bytes(b"X" * len(PAYLOAD["sub/f47.bin"]))

    result = verify_replica(adapter, BAG, digests, sizes, progress=swap)
    assert state["done"]
    assert not result.ok
    assert any("data/sub" in p and ("replaced" in p or "f47.bin" in p) for p in result.problems), result.problems


def test_more_folders_than_are_kept_open_verify_alike_and_a_missing_file_is_named(stored_bag, monkeypatch):
    adapter, (digests, sizes), bag_dir = stored_bag
    monkeypatch.setattr(fs_read.FolderReads, "KEEP", 1)
    (bag_dir / "data" / "other" / "deep" / "g1.bin").unlink()
    result = verify_replica(adapter, BAG, digests, sizes)
    assert result.missing == ["data/other/deep/g1.bin"]
    assert result.problems == ["data/other/deep/g1.bin: missing"]


def test_a_linked_folder_and_a_linked_file_are_refused_through_kept_folders(stored_bag, tmp_path):
    adapter, (digests, sizes), bag_dir = stored_bag
    deep = bag_dir / "data" / "other" / "deep"
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(deep, elsewhere)          # the same bytes: following the link would hide the swap
    shutil.rmtree(deep)
    deep.symlink_to(elsewhere, target_is_directory=True)
    top = bag_dir / "data" / "top.txt"
    (tmp_path / "top-copy").write_bytes(top.read_bytes())
    os.chmod(top, 0o644)
    top.unlink()
    top.symlink_to(tmp_path / "top-copy")
    result = verify_replica(adapter, BAG, digests, sizes)
    assert not result.ok
    assert result.damaged == ["data/top.txt"]
    assert "data/top.txt: is a symbolic link inside the storage target; refused (never followed)" in result.problems
    # The listing never descends into a linked folder: its files are not there, the link is extra.
    assert result.missing == [p for p in sorted(digests) if p.startswith("data/other/deep/")]
    assert result.extra == ["data/other/deep"]
