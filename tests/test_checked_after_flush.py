"""Each replica of a folder target is checked once, re-read after it was made durable and before
it gets its name (`storage_adapters.fs_batch`, issue 11), and the deposit's Verify takes a file
whose stamp is unchanged since that check instead of reading it a second time.

What must hold: bytes that change between the copy and the flush (or a staged inode placed and
then altered) never get a name, nothing of their batch does; a file changed, replaced or
truncated after its check is read again and reported; a resumed deposit whose replica was
damaged before its Verify fails that Verify.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from storage_adapters import filesystem as fs_module
from storage_adapters.base import CheckedStamp, PutOutcome, SourceMismatch
from storage_adapters.filesystem import TEMP_SUFFIX, FilesystemAdapter
from storage_adapters.replicate import bag_inventory, replicate_bag, verify_replica
from strongroom.bag_id import BagId
from tests.test_deposit_pipeline import check_preserved, deposit_argv, make_archive, make_source, strongroom
from tests.test_storage_filesystem import BAG, batch_items, final_files, temp_leftovers

FILES = {f"data/{'x' if i % 2 else 'y'}/f{i}.bin": os.urandom(3000 + i) for i in range(6)}


def _damage_in_place(path: Path, index: int = 0) -> None:
    """Flip one byte of a stored (read-only) file, writing into the same inode."""
    data = bytearray(path.read_bytes())
    data[index] ^= 0xFF
    os.chmod(path, 0o644)
    with open(path, "r+b") as fh:
        fh.write(bytes(data))


def test_bytes_changed_after_the_copy_and_before_the_flush_get_no_name(tmp_path, monkeypatch):
    root = tmp_path / "r"
    root.mkdir()
    adapter = FilesystemAdapter("site-a", "beijing", root)
    hurt = []
    monkeypatch.setattr(fs_module, "syncfs_is_durable", lambda fd: True)
    monkeypatch.setattr(fs_module, "syncfs", _tampering(root, fs_module.syncfs, hurt))
    with pytest.raises(SourceMismatch, match="does not match its checksums"):
        adapter.put_files(BAG, batch_items(tmp_path, FILES))
    assert hurt, "the tamper never ran"
    assert final_files(root) == {}, "a file of the batch got its name after bytes of it changed"
    assert temp_leftovers(root) == []
    # the same batch, untouched, stores
    monkeypatch.undo()
    assert FilesystemAdapter("site-a", "beijing", root).put_files(BAG, batch_items(tmp_path, FILES)) == \
        [PutOutcome.WRITTEN] * len(FILES)
    assert final_files(root) == FILES


def _tampering(root: Path, real_syncfs, hurt):
    """syncfs that first overwrites one waiting temp file with other bytes of the same size: what
    was copied is then no longer what was read from the source."""
    def syncfs(fd):
        if not hurt:
            victim = sorted(p for p in root.rglob("*" + TEMP_SUFFIX))[0]
            _damage_in_place(victim)
            hurt.append(victim)
        return real_syncfs(fd)
    return syncfs


def test_a_placed_staged_file_changed_before_the_flush_gets_no_name(tmp_path, monkeypatch):
    from tests.strategies import build_bag

    bag = build_bag(tmp_path, {"a.txt": b"alpha" * 100, "dir/b.bin": os.urandom(5000), "c": b"gamma"})
    bag_id = BagId.parse("PKU/c/20260101T000000Z-1")
    root = tmp_path / "placed"
    root.mkdir()
    adapter = FilesystemAdapter("t0", "site0", root)
    adapter.place_from = bag
    hurt = []

    real_syncfs = fs_module.syncfs

    def syncfs(fd):
        if not hurt:  # the staged inode, linked to its temp name by now, altered in place
            victim = bag / "data" / "dir" / "b.bin"
            assert os.lstat(victim).st_nlink == 2, "the staged file was not placed"
            _damage_in_place(victim, -1)
            hurt.append(victim)
        return real_syncfs(fd)

    monkeypatch.setattr(fs_module, "syncfs_is_durable", lambda fd: True)
    monkeypatch.setattr(fs_module, "syncfs", syncfs)
    with pytest.raises(SourceMismatch):
        replicate_bag(adapter, bag, bag_id, inventory=bag_inventory(bag))  # taken before the change
    assert hurt
    stored = Path(adapter.location(bag_id))
    assert not stored.exists() or not [p for p in stored.rglob("*") if p.is_file()], \
        "a file of the batch got its name after the placed inode changed"


def test_new_files_get_the_stamp_of_their_named_file_and_present_ones_none(tmp_path):
    root = tmp_path / "r"
    root.mkdir()
    adapter = FilesystemAdapter("site-a", "beijing", root)
    first = dict(list(FILES.items())[:2])
    adapter.put_files(BAG, batch_items(tmp_path, first))
    stamps, done = {}, []
    outcomes = adapter.put_files(BAG, batch_items(tmp_path, FILES), on_done=lambda i, o: done.append(i),
                                 on_checked=lambda i, s: stamps.setdefault(i, s))
    assert outcomes == [PutOutcome.ALREADY_PRESENT] * 2 + [PutOutcome.WRITTEN] * (len(FILES) - 2)
    assert sorted(stamps) == list(range(2, len(FILES))), "a stamp for a file not checked by this call"
    base = root / "LIB/COLL" / BAG.name
    for index, stamp in stamps.items():
        relpath = list(FILES)[index]
        assert stamp == CheckedStamp.of(os.lstat(base / relpath)), relpath
        assert index in done


def _stored_bag(tmp_path):
    from tests.strategies import build_bag

    bag = build_bag(tmp_path, {f"d{i}/f{i}.bin": os.urandom(2000 + i) for i in range(8)})
    bag_id = BagId.parse("PKU/c/20260101T000000Z-1")
    root = tmp_path / "copy"
    root.mkdir()
    adapter = FilesystemAdapter("t0", "site0", root)
    result = replicate_bag(adapter, bag, bag_id)
    inventory = bag_inventory(bag)
    return adapter, bag_id, inventory, result, Path(adapter.location(bag_id))


def test_verify_takes_unchanged_stamps_and_reads_every_changed_file_again(tmp_path):
    adapter, bag_id, inventory, result, stored = _stored_bag(tmp_path)
    assert set(result.checked) == set(inventory.digests), "not every file written was stamped"
    ok = verify_replica(adapter, bag_id, inventory.digests, inventory.sizes, checked=result.checked)
    assert ok.ok and ok.files_unchanged == len(inventory.digests) and ok.bytes_checked == 0
    assert ok.bytes_unchanged == sum(inventory.sizes.values())

    _damage_in_place(stored / "data/d1/f1.bin", 10)  # same size, other bytes, written in place
    swapped = stored / "data/d2/f2.bin"  # replaced by another file of the same size
    other = stored / "data/d2/.other"
    other.write_bytes(os.urandom(swapped.stat().st_size))
    os.replace(other, swapped)
    touched = stored / "data/d3/f3.bin"  # only its mode changed: read again, still good
    os.chmod(touched, 0o400)

    res = verify_replica(adapter, bag_id, inventory.digests, inventory.sizes, checked=result.checked)
    assert not res.ok
    assert sorted(res.damaged) == ["data/d1/f1.bin", "data/d2/f2.bin"], res.problems
    assert res.files_unchanged == len(inventory.digests) - 3
    assert res.bytes_checked == sum(inventory.sizes[p] for p in ("data/d1/f1.bin", "data/d2/f2.bin",
                                                                 "data/d3/f3.bin"))
    # stamps of the wrong files prove nothing: every file is read
    shuffled = dict(zip(sorted(result.checked), reversed([result.checked[p] for p in sorted(result.checked)])))
    res = verify_replica(adapter, bag_id, inventory.digests, inventory.sizes, checked=shuffled)
    assert res.files_unchanged <= 1 and sorted(res.damaged) == ["data/d1/f1.bin", "data/d2/f2.bin"]


def test_a_quick_check_never_takes_a_stamp_for_a_read(tmp_path):
    adapter, bag_id, inventory, result, _ = _stored_bag(tmp_path)
    res = verify_replica(adapter, bag_id, inventory.digests, inventory.sizes, deep=False, checked=result.checked)
    assert res.ok and res.files_unchanged == 0


def test_a_deposit_verifies_by_the_stamps_and_a_resumed_one_rereads_a_damaged_replica(tmp_path, capsys,
                                                                                        monkeypatch):
    from pipelines import flow

    arch = make_archive(tmp_path)
    source = make_source(tmp_path / "source", small=6)
    real_verify = flow.verify_on
    monkeypatch.setattr(flow, "verify_on", lambda *a, **k: (_ for _ in ()).throw(OSError("power cut")))
    first = strongroom(capsys, *deposit_argv(arch, source, "stamps"))
    assert first.code != 0
    (state_dir,) = arch.state_dirs()
    copied = sorted(state_dir.glob("*.copied.json"))
    assert len(copied) == 2, "both targets should be replicated before Verify"
    bag_id = json.loads(copied[0].read_text())["bag"]
    site_b = arch.bag_folder("site-b", bag_id)
    victim = sorted(p for p in (site_b / "data").rglob("*") if p.is_file() and p.stat().st_size)[0]
    _damage_in_place(victim)

    monkeypatch.setattr(flow, "verify_on", real_verify)
    rerun = strongroom(capsys, *deposit_argv(arch, source, "stamps"))
    assert rerun.code == 1, rerun.err
    states = {r["target"]: r["state"] for r in arch.catalog().replicas(bag_id=bag_id).to_pylist()}
    assert states.get("site-b") == "failed" and states.get("site-a") == "verified", states
    verified = json.loads((state_dir / f"{flow.state_name(bag_id)}.site-a.verified.json").read_text())
    assert verified["unchanged_since_checked"] == verified["files"] > 0, verified
    assert not arch.catalog().has_bag(bag_id)


def test_an_uninterrupted_deposit_reads_each_replica_once(tmp_path, capsys, monkeypatch):
    from pipelines import flow

    arch = make_archive(tmp_path)
    source = make_source(tmp_path / "source", small=6)
    markers = []
    real_register = flow.register

    def register(config, state, bag):
        for target in ("site-a", "site-b"):
            path = state.state_dir(Path(config.staging)) / f"{flow.state_name(bag['id'])}.{target}.verified.json"
            markers.append(json.loads(path.read_text()))
        return real_register(config, state, bag)

    monkeypatch.setattr(flow, "register", register)
    res = strongroom(capsys, *deposit_argv(arch, source, "once"))
    assert res.code == 0, res.err
    check_preserved(arch, source, res.data)
    assert len(markers) == 2
    for marker in markers:  # every file was checked after its flush, none read again by Verify
        assert marker["unchanged_since_checked"] == marker["files"] > 0 and marker["bytes"] == 0, marker
    (state_dir,) = arch.state_dirs()
    assert not list(state_dir.glob("*.checked.json")), "the stamps outlived the bag's registration"
    events = arch.catalog().events(bag_id=res.data["bags"][0]["id"]).to_pylist()
    details = [e["detail"] for e in events if e["type"] == "fixity check"]
    assert len(details) == 2 and all("before they were named" in d for d in details), details
