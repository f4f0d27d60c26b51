"""The staged bag is checked once and what the check read is handed on (issue 11, `ingest.bag_check`).

* `finish_bag` checks the bag before its rename and keeps the result in the deposit's state:
  ValidateBag does not check it again, no step rebuilds the inventory, Register does not parse
  the bag's manifests and metadata again, and the catalog rows are those `records_from_bag`
  reads from a stored replica (the bag describes itself the same).
* The kept inventory is the one `bag_inventory` takes from the bag.
* A kept result that is missing or of another build is not used: the bag is checked again.
* A staged tag file altered after the check is refused by the copy; a file added to staging
  after it is never stored; nothing is registered.
* kill -9 between keeping the check and the rename, and between the bag's check and its
  ValidateBag marker, then a rerun: the deposit ends as an uninterrupted one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.test_deposit_crash import _check_after_kill, _rerun_and_check, run_until_killed
from tests.test_deposit_pipeline import (TARGETS, check_preserved, deposit_argv, make_archive, make_source,
                                         strongroom)


def _count(monkeypatch, module, name, calls):
    original = getattr(module, name)

    def counted(*args, **kwargs):
        calls.append(name)
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)


def test_the_staged_bag_is_checked_once_and_no_later_step_parses_it(tmp_path, capsys, monkeypatch):
    import ingest.bag as bag_mod
    import ingest.validate as validate
    from catalog.bag_records import folder_reader, records_from_bag
    from strongroom import bagit_spec
    from strongroom.bag_id import BagId

    arch = make_archive(tmp_path)
    source = make_source(tmp_path / "source", small=5)
    calls: list = []
    _count(monkeypatch, validate, "validate_bag", calls)
    _count(monkeypatch, bag_mod, "validate_bag", calls)
    _count(monkeypatch, bagit_spec, "parse_manifest_lines", calls)
    res = strongroom(capsys, *deposit_argv(arch, source, "once"))
    assert res.code == 0, res.err
    check_preserved(arch, source, res.data)
    monkeypatch.undo()
    # One check, which read each of the bag's manifests (2 payload, 2 tag) once: no second
    # check, no inventory rebuilt, no registration parsing the manifests again.
    assert calls.count("validate_bag") == 1, calls
    assert calls.count("parse_manifest_lines") == 4, calls
    # The kept records go once the bag is registered; the inventory stays with the markers.
    assert not [p for d in arch.state_dirs() for p in d.glob("*.records.json")]
    assert [p for d in arch.state_dirs() for p in d.glob("*.inventory.json")]
    # The rows registered from the kept check are those the bag itself gives when read back.
    catalog = arch.catalog()
    (bag_id,) = catalog.bags().column("bag_id").to_pylist()
    replica = arch.target_root(TARGETS[0]) / bag_id
    record, files = records_from_bag(folder_reader(replica), BagId.parse(bag_id), str(replica))
    rows = sorted(catalog.files(bag_id).to_pylist(), key=lambda r: r["path"])
    want = [{k: getattr(f, k) for k in rows[0] if hasattr(f, k)} for f in files]
    assert [{k: r[k] for k in w} for r, w in zip(rows, want)] == want
    assert len(rows) == len(files) >= 5
    bag_row = catalog.bags().to_pylist()[0]
    assert (bag_row["file_count"], bag_row["byte_count"], bag_row["external_identifier"]) == \
        (record.file_count, record.byte_count, record.external_identifier)


def test_the_kept_inventory_is_the_one_bag_inventory_takes(tmp_path):
    from ingest import bag_check
    from pipelines import flow
    from storage_adapters.replicate import bag_inventory
    from tests.strategies import build_bag

    bag = build_bag(tmp_path, {"a.txt": b"alpha", "古籍/名 100%.bin": b"\x00" * 10, "d/e/f": b""})
    check = bag_check.check_staged(bag, "L/c/20260101T000000Z-1", allow_fetched=False)
    assert bag_inventory(bag) == (check.digests, check.sizes)
    state = tmp_path / "state"
    bag_check.keep(check, state)
    inventory, records = bag_check.kept_paths(state, "L/c/20260101T000000Z-1")
    assert inventory.read_bytes().isascii() and records.read_bytes().isascii()
    assert flow.load_inventory(inventory, bag) == bag_inventory(bag)
    assert flow.load_inventory(state / "absent.json", bag) == bag_inventory(bag)
    assert bag_check.is_kept(state, check.bag_id, check.external_identifier)
    assert not bag_check.is_kept(state, check.bag_id, "urn:uuid:another-build")


def _built_then(monkeypatch, change):
    """Let BuildBags finish, then `change(state_dir, bag)` before any later step runs."""
    import pipelines.flow as flow

    build = flow.build_bags

    def building(config, state, **kw):
        bags, warnings = build(config, state, **kw)
        for bag in bags:
            change(state.state_dir(Path(config.staging)), bag)
        return bags, warnings

    monkeypatch.setattr(flow, "build_bags", building)


@pytest.mark.parametrize("how", ["missing", "another build"])
def test_a_kept_check_missing_or_of_another_build_is_not_used(tmp_path, capsys, monkeypatch, how):
    from ingest import bag_check

    def spoil(state_dir, bag):
        inventory, records = bag_check.kept_paths(state_dir, bag["id"])
        if how == "missing":
            inventory.unlink()
        else:  # what a build before a crash kept: another External-Identifier
            for path in (inventory, records):
                data = json.loads(path.read_bytes())
                path.write_text(json.dumps({**data, "external_identifier": "urn:uuid:0"}), "ascii")

    arch = make_archive(tmp_path)
    source = make_source(tmp_path / "source", small=4)
    _built_then(monkeypatch, spoil)
    res = strongroom(capsys, *deposit_argv(arch, source, "spoilt"))
    assert res.code == 0, res.err
    check_preserved(arch, source, res.data)
    (valid,) = [p for d in arch.state_dirs() for p in d.glob("*.valid.json")]
    assert json.loads(valid.read_bytes())["checked_again"] is True


@pytest.mark.parametrize("change", ["tag file altered", "file added"])
def test_a_staged_bag_changed_after_its_check_is_never_stored_as_changed(tmp_path, capsys, monkeypatch, change):
    def alter(state_dir, bag):
        staged = Path(bag["path"])
        if change == "tag file altered":
            path = staged / "metadata" / "formats.csv"
            path.write_bytes(path.read_bytes().replace(b"\r\n", b"\n", 1))
        else:
            (staged / "data" / "added.txt").write_bytes(b"not in the bag as checked")

    arch = make_archive(tmp_path)
    source = make_source(tmp_path / "source", small=3)
    _built_then(monkeypatch, alter)
    res = strongroom(capsys, *deposit_argv(arch, source, "changed"))
    stored = [Path(d) / f for t in TARGETS for d, _, fs in os.walk(arch.target_root(t)) for f in fs]
    if change == "tag file altered":
        assert res.code == 1, res.out + res.err
        assert "formats.csv" in res.out + res.err
        assert not [p for p in stored if p.name == "formats.csv"], stored
        assert arch.catalog().bags().num_rows == 0
        assert not [r for r in arch.catalog().replicas().to_pylist() if r.get("state") == "verified"]
    else:
        assert res.code == 0, res.out + res.err
        assert not [p for p in stored if p.name == "added.txt"], stored
        check_preserved(arch, source, res.data)


# Kills the child's session at one moment (the way tests/test_deposit_crash.py does).
BOOTSTRAP = r'''
import os, signal, sys

POINT = os.environ["STRONGROOM_TEST_KILL_AT"]


def die():
    os.killpg(os.getpgrp(), signal.SIGKILL)


import ingest.bag_check as bag_check
import pipelines.flow as flow

if POINT == "check kept, bag not renamed":
    import ingest.bag as bag_mod
    keep = bag_check.keep

    def keeping(check, state_dir):
        keep(check, state_dir)
        die()
    bag_mod.bag_check.keep = keeping
elif POINT == "records kept, inventory not":
    write = bag_check.durable.atomic_write_bytes

    def writing(path, data):
        if str(path).endswith(".inventory.json"):
            die()
        return write(path, data)
    bag_check.durable.atomic_write_bytes = writing
elif POINT == "bags recorded, valid marker not written":
    write = flow.write_json_atomic

    def writing(path, data):
        if str(path).endswith(".valid.json"):
            die()
        return write(path, data)
    flow.write_json_atomic = writing
else:
    raise SystemExit(f"unknown kill point {POINT}")

from pipelines.cli import main
sys.exit(main(sys.argv[1:]))
'''


@pytest.mark.parametrize("point", ["check kept, bag not renamed", "records kept, inventory not",
                                   "bags recorded, valid marker not written"])
def test_kill_9_around_the_kept_check_then_rerun(tmp_path, capsys, point):
    arch = make_archive(tmp_path)
    source = make_source(tmp_path / "source", small=6)
    run_until_killed(arch, source, "killed", tmp_path / "child.log", kill_at=point, bootstrap=BOOTSTRAP)
    state_dirs = arch.state_dirs()
    bags_recorded = any((d / "bags.json").exists() for d in state_dirs)
    assert bags_recorded == (point == "bags recorded, valid marker not written")
    _check_after_kill(arch, source, "killed")
    data = _rerun_and_check(arch, source, "killed", capsys)
    assert data


def test_kept_records_lost_before_register_are_taken_from_the_staged_bag_again(tmp_path, capsys, monkeypatch):
    import pipelines.flow as flow
    from ingest import bag_check

    register = flow.register

    def losing(config, state, bag):
        bag_check.kept_paths(state.state_dir(Path(config.staging)), bag["id"])[1].unlink()
        return register(config, state, bag)

    monkeypatch.setattr(flow, "register", losing)
    arch = make_archive(tmp_path)
    source = make_source(tmp_path / "source", small=3)
    res = strongroom(capsys, *deposit_argv(arch, source, "lost"))
    assert res.code == 0, res.out + res.err
    check_preserved(arch, source, res.data)
    assert arch.catalog().files(res.data["bags"][0]["id"]).num_rows >= 3


def test_the_source_is_walked_once_when_the_command_runs_the_tasks(tmp_path, capsys, monkeypatch):
    """The deposit command's own scan (made before any work, for its checks) is handed to
    BuildBags (`tasks.hand_over_scan`) instead of a second walk of the source; a scan of another
    path than the one the deposit records (through a symbolic link to a parent folder) is not,
    and BuildBags walks the source itself. Either way the deposit is the same."""
    import ingest.scan as scan_mod

    arch = make_archive(tmp_path)
    source = make_source(tmp_path / "source", small=5)
    walks: list = []
    _count(monkeypatch, scan_mod, "scan_source", walks)
    res = strongroom(capsys, *deposit_argv(arch, source, "walked"))
    assert res.code == 0, res.err
    check_preserved(arch, source, res.data)
    assert walks == ["scan_source"]

    again = make_source(tmp_path / "real" / "again", small=3)
    (tmp_path / "link").symlink_to(tmp_path / "real")
    walks.clear()
    res = strongroom(capsys, *deposit_argv(arch, tmp_path / "link" / "again", "linked"))
    assert res.code == 0, res.err
    check_preserved(arch, again, res.data)
    assert walks == ["scan_source", "scan_source"]
