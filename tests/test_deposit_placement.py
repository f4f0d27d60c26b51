"""Placing staged files in a folder target instead of copying them (issue 11, storage_adapters/fs_place).

When staging and a folder target share a file system, the policy's first such target gets the
staged files hard-linked to its temp names (checked against the manifests, flushed, named
without replacing anything) instead of copied; every other target is copied as before, so at
most one target ever shares a staged inode. A staged file that already has another name is
copied; a target on another file system is copied; a kill between placing on one target and
copying to the other, or between linking a temp name and naming it, resumes on the rerun.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict

import pytest

from tests.test_deposit_crash import run_until_killed
from tests.test_deposit_pipeline import (LIB, TARGETS, TEMP_SUFFIX, check_preserved, deposit_argv, make_archive,
                                         make_source, strongroom)


def _inodes(root: Path) -> Dict[str, int]:
    """Bag path -> inode of every file below a bag folder."""
    return {os.path.relpath(os.path.join(d, n), root): os.lstat(os.path.join(d, n)).st_ino
            for d, _, names in os.walk(root) for n in names}


def _staged_inodes_at_finish(monkeypatch) -> Dict[str, Dict[str, int]]:
    """Record the staged bags' inodes just before finish() removes them."""
    from pipelines import flow

    seen: Dict[str, Dict[str, int]] = {}
    original = flow.finish

    def finish(config, state, bags):
        for bag in bags:
            seen[bag["id"]] = _inodes(Path(bag["path"]))
        return original(config, state, bags)

    monkeypatch.setattr(flow, "finish", finish)
    return seen


def test_the_first_target_places_the_staged_files_and_the_other_gets_copies(tmp_path, capsys, monkeypatch):
    arch = make_archive(tmp_path)
    source = make_source(tmp_path / "source", small=6)
    staged = _staged_inodes_at_finish(monkeypatch)

    res = strongroom(capsys, *deposit_argv(arch, source, "placed"))
    assert res.code == 0, res.err
    check_preserved(arch, source, res.data)
    (bag_id, staged_inodes), = staged.items()
    site_a = _inodes(arch.bag_folder("site-a", bag_id))
    site_b = _inodes(arch.bag_folder("site-b", bag_id))
    assert site_a == staged_inodes, "site-a (the first folder target on staging's disk) did not place the files"
    assert not set(site_b.values()) & set(staged_inodes.values()), "site-b shares an inode with staging"
    for path in site_a:  # the staged names are gone: each placed copy has its own single name again
        assert os.lstat(arch.bag_folder("site-a", bag_id) / path).st_nlink == 1
    assert not (arch.staging / LIB / "placed").exists() or not any((arch.staging / LIB / "placed").iterdir())


def _bag_and_adapters(tmp_path, roots):
    from storage_adapters.filesystem import FilesystemAdapter
    from strongroom.bag_id import BagId
    from tests.strategies import build_bag

    bag = build_bag(tmp_path, {"a.txt": b"alpha" * 100, "dir/b.bin": os.urandom(5000), "empty": b""})
    adapters = []
    for i, root in enumerate(roots):
        root.mkdir(parents=True, exist_ok=True)
        adapter = FilesystemAdapter(f"t{i}", f"site{i}", root)
        adapter.place_from = bag
        adapters.append(adapter)
    return bag, BagId.parse("PKU/c/20260101T000000Z-1"), adapters


def test_a_staged_inode_is_placed_on_one_target_at_most(tmp_path):
    from storage_adapters.replicate import replicate_bag, verify_replica, bag_inventory

    bag, bag_id, (one, two) = _bag_and_adapters(tmp_path, [tmp_path / "one", tmp_path / "two"])
    staged = _inodes(bag)
    for adapter in (one, two):  # both told they may place: the second finds every inode taken
        replicate_bag(adapter, bag, bag_id)
    first = _inodes(Path(one.location(bag_id)))
    second = _inodes(Path(two.location(bag_id)))
    assert first == staged
    assert not set(second.values()) & set(staged.values())
    inventory = bag_inventory(bag)
    for adapter in (one, two):
        assert verify_replica(adapter, bag_id, inventory.digests, inventory.sizes).ok
        assert not [n for _, _, ns in os.walk(adapter.root) for n in ns if n.endswith(TEMP_SUFFIX)]


def test_a_staged_file_with_another_name_is_copied_and_other_file_systems_get_copies(tmp_path):
    from storage_adapters.replicate import replicate_bag

    shm = Path("/dev/shm")
    if os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.fail("/dev/shm is expected to be another file system than the test's tmp_path")
    other_fs = Path(os.path.join(shm, f"strongroom-place-{os.getpid()}-{tmp_path.name}"))
    bag, bag_id, (here, elsewhere) = _bag_and_adapters(tmp_path, [tmp_path / "here", other_fs])
    try:
        os.link(bag / "data" / "a.txt", tmp_path / "another-name")  # e.g. left by a config change
        staged = _inodes(bag)
        replicate_bag(here, bag, bag_id)
        replicate_bag(elsewhere, bag, bag_id)
        placed = _inodes(Path(here.location(bag_id)))
        assert placed["data/a.txt"] != staged["data/a.txt"], "a staged inode with two names was placed"
        assert placed["data/dir/b.bin"] == staged["data/dir/b.bin"]
        assert not set(_inodes(Path(elsewhere.location(bag_id))).values()) & set(staged.values())
    finally:
        import shutil

        shutil.rmtree(other_fs, ignore_errors=True)


# --- killed, then rerun --------------------------------------------------------------------------

BOOTSTRAP = r'''
import os, signal, sys

POINT = os.environ["STRONGROOM_TEST_KILL_AT"]


def die():
    os.killpg(os.getpgrp(), signal.SIGKILL)


if POINT == "placed on one target, not copied to the other":
    import pipelines.flow as flow
    original = flow.replicate_to

    def replicate_to(config, state, bag, target_name, **kw):
        # Whichever Replicate Luigi starts first: place on the placing target, then die, so the
        # other target has nothing yet and the placing one has no marker.
        original(config, state, bag, flow.placing_target(config, state, bag), **kw)
        die()
    flow.replicate_to = replicate_to
elif POINT == "placed temp name, not checked or named":
    import storage_adapters.fs_batch as batch
    original = batch.place_temp
    calls = [0]

    def place_temp(*args, **kw):
        result = original(*args, **kw)
        calls[0] += 1
        if result is not None and calls[0] == 3:
            die()
        return result
    batch.place_temp = place_temp
else:
    raise SystemExit(f"unknown kill point {POINT}")

from pipelines.cli import main
sys.exit(main(sys.argv[1:]))
'''


@pytest.mark.parametrize("point", ["placed on one target, not copied to the other",
                                   "placed temp name, not checked or named"])
def test_a_kill_during_placement_resumes(tmp_path, capsys, monkeypatch, point):
    arch = make_archive(tmp_path)
    source = make_source(tmp_path / "source", small=8)
    run_until_killed(arch, source, "killed", tmp_path / "child.log", kill_at=point, bootstrap=BOOTSTRAP)
    site_a = arch.target_root("site-a") / LIB / "killed"
    left = [n for _, _, ns in os.walk(site_a) for n in ns]
    if point.startswith("placed temp"):
        assert [n for n in left if n.endswith(TEMP_SUFFIX)], "no placed temp name was left by the kill"
    else:
        assert left and not [n for n in left if n.endswith(TEMP_SUFFIX)]
        assert not [n for _, _, ns in os.walk(arch.target_root("site-b")) for n in ns], "site-b was written"

    staged = _staged_inodes_at_finish(monkeypatch)
    res = strongroom(capsys, *deposit_argv(arch, source, "killed"))
    assert res.code == 0, res.out + res.err
    assert len(arch.state_dirs()) == 1, "the rerun started a new deposit instead of resuming"
    check_preserved(arch, source, res.data)
    (bag_id, staged_inodes), = staged.items()
    assert _inodes(arch.bag_folder("site-a", bag_id)) == staged_inodes  # placed, after the rerun too
    assert not set(_inodes(arch.bag_folder("site-b", bag_id)).values()) & set(staged_inodes.values())
    for target in TARGETS:
        assert not [n for _, _, ns in os.walk(arch.target_root(target)) for n in ns if n.endswith(TEMP_SUFFIX)]
