"""`strongroom restore --deposit`: every bag of a split deposit back into ONE destination.

A real deposit through the real pipeline with a policy of `bag: {max_files: 2}`, so the four
files of tests.test_restore's source become a group of two bags; each test works on its own
copy of the archive folder.
"""

import contextlib
import dataclasses
import io
import json
import shutil
from pathlib import Path

import pytest

from catalog.catalog import Catalog
from ingest.validate import validate_bag
from pipelines.cli import main
from policies.config import load_config, write_default_config
from tests.test_restore import _Killed, _leftovers, _make_source, dies_after_rename, tree


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    base = tmp_path_factory.mktemp("split")
    src = base / "source"
    _make_source(src)
    cfg = write_default_config(base / "archive")
    policy = base / "archive" / "policies" / "self-built.yaml"
    policy.write_text(policy.read_text("utf-8").replace("max_files: 100000", "max_files: 2"), "utf-8")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(["--config", str(cfg), "--json", "deposit", str(src), "--library", "LIB", "--collection", "COLL",
                     "--type", "self-built"])
    assert code == 0, buf.getvalue()
    rows = Catalog(load_config(cfg).catalog).bags().to_pylist()
    assert len(rows) == 2 and len({r["group_id"] for r in rows}) == 1 and {r["part_count"] for r in rows} == {2}
    return src, base / "archive", rows[0]["group_id"], sorted(r["bag_id"] for r in rows), json.loads(buf.getvalue())


@pytest.fixture
def archive(split, tmp_path):
    src, folder, group, bags, deposit = split
    copy = tmp_path / "archive"
    shutil.copytree(folder, copy, symlinks=True)
    return src, copy / "strongroom.yaml", group, bags, deposit


def _restore(capsys, cfg, *argv, json_out=True):
    code = main(["--config", str(cfg)] + (["--json"] if json_out else []) + ["restore", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if json_out and out.strip() else out), err


def test_payload_only_merges_both_bags_into_the_source_tree(archive, tmp_path, capsys):
    src, cfg, group, bags, _ = archive
    dest = tmp_path / "tree"
    code, out, err = _restore(capsys, cfg, "--deposit", group, dest, "--payload-only")
    assert code == 0, err
    assert tree(dest) == tree(src)                 # every file of both bags, empty folders, bytes, mtimes
    assert out["bags"] == bags and out["files"] == 4 and out["missing"] == []
    assert _leftovers(tmp_path, "tree") == []
    catalog = Catalog(load_config(cfg).catalog)
    for bag in bags:
        assert [e["outcome"] for e in catalog.events(bag_id=bag, type="dissemination").to_pylist()] == ["success"]


def test_whole_restore_puts_each_bag_in_its_own_folder_valid(archive, tmp_path, capsys):
    src, cfg, group, bags, _ = archive
    dest = tmp_path / "bags"
    code, out, err = _restore(capsys, cfg, "--deposit", group, dest, json_out=False)
    assert code == 0, err
    assert "2 bag(s)" in out and group in out
    payload = {}
    for bag in bags:
        report = validate_bag(dest / bag)          # full validation, every digest recomputed
        assert report.valid, report.problems
        payload.update({k[len("data/"):]: v for k, v in tree(dest / bag).items() if k.startswith("data/")})
    assert {k: v for k, v in payload.items() if v != "dir"} == {k: v for k, v in tree(src).items() if v != "dir"}
    assert sorted(p.name for p in (dest / "LIB" / "COLL").iterdir()) == sorted(b.split("/")[-1] for b in bags)


def test_the_deposit_key_and_a_part_bag_id_name_the_same_deposit(archive, tmp_path, capsys):
    src, cfg, group, bags, deposit = archive
    for n, name in enumerate([deposit["deposit"], bags[1]]):
        code, out, err = _restore(capsys, cfg, "--deposit", name, tmp_path / f"d{n}", "--payload-only")
        assert code == 0, err
        assert out["deposit"] == group and tree(tmp_path / f"d{n}") == tree(src)


def test_a_part_without_good_copy_leaves_nothing_and_is_recorded_for_every_bag(archive, tmp_path, capsys):
    src, cfg, group, bags, _ = archive
    config = load_config(cfg)
    catalog = Catalog(config.catalog)
    victim = catalog.file_records(bags[1])[0].path
    for target in ("site-a", "site-b"):
        p = Path(config.target(target).root).joinpath(*bags[1].split("/"), victim)
        p.unlink()
    dest = tmp_path / "never"
    code, out, err = _restore(capsys, cfg, "--deposit", group, dest, "--payload-only", json_out=False)
    assert code == 1 and victim in err and "nothing was restored" in err
    assert not dest.exists() and _leftovers(tmp_path, "never") == []
    for bag in bags:
        assert [e["outcome"] for e in catalog.events(bag_id=bag, type="dissemination").to_pylist()] == ["failure"]


def test_partial_restore_of_a_deposit_lists_the_missing_file_with_its_bag(archive, tmp_path, capsys):
    src, cfg, group, bags, _ = archive
    config = load_config(cfg)
    victim = Catalog(config.catalog).file_records(bags[0])[0].path
    for target in ("site-a", "site-b"):
        Path(config.target(target).root).joinpath(*bags[0].split("/"), victim).unlink()
    dest = tmp_path / "some"
    code, out, err = _restore(capsys, cfg, "--deposit", group, dest, "--payload-only", "--partial")
    assert code == 1 and out["missing"] == [f"{bags[0]}/{victim}"]
    want = {k: v for k, v in tree(src).items() if k != victim[len("data/"):]}
    assert tree(dest) == want


def test_a_group_with_a_part_absent_from_the_catalog_is_refused(archive, tmp_path, capsys):
    src, cfg, group, bags, _ = archive
    catalog = Catalog(load_config(cfg).catalog)
    first = catalog.bag(bags[0])
    stamp = "20000101T000000Z"
    lone = dataclasses.replace(first, bag_id=f"LIB/COLL/{stamp}-1", group_id=f"LIB/COLL/{stamp}", part=1, part_count=3)
    catalog.add_bag(lone, [dataclasses.replace(f, bag_id=lone.bag_id) for f in catalog.file_records(bags[0])])
    dest = tmp_path / "never"
    code, out, err = _restore(capsys, cfg, "--deposit", f"LIB/COLL/{stamp}", dest, json_out=False)
    assert code == 1 and "3 parts" in err and "part 2, part 3" in err
    assert not dest.exists()


def test_conflicting_paths_are_refused_before_anything_is_written(archive, tmp_path, capsys):
    from fixity.restore_group import Selection, _check_merge
    from strongroom.bag_id import BagId
    from strongroom.errors import PreservationError

    src, cfg, group, bags, _ = archive
    catalog = Catalog(load_config(cfg).catalog)
    first = catalog.bag(bags[0])
    stamp = "20000101T000000Z"
    files = catalog.file_records(bags[0])
    other = dataclasses.replace(first, bag_id=f"LIB/COLL/{stamp}-1", group_id=f"LIB/COLL/{stamp}")
    changed = [dataclasses.replace(f, bag_id=other.bag_id, **({"sha256": "0" * 64} if f is files[0] else {}))
               for f in files]
    catalog.add_bag(other, changed)
    with pytest.raises(PreservationError) as exc:
        _check_merge(catalog, Selection(group, (BagId.parse(bags[0]), BagId.parse(other.bag_id)), "test"))
    assert f"{files[0].path}: in {bags[0]} and in {other.bag_id} with different content" in exc.value.problems


def test_bad_arguments_are_usage_errors(archive, tmp_path, capsys):
    src, cfg, group, bags, _ = archive
    assert _restore(capsys, cfg, "--deposit", group, bags[0], tmp_path / "x", json_out=False)[0] == 2
    code, _, err = _restore(capsys, cfg, "--deposit", "LIB/COLL/19990101T000000Z", tmp_path / "x", json_out=False)
    assert code == 2 and "no bag of deposit" in err
    code, _, err = _restore(capsys, cfg, bags[0], tmp_path / "x", "--version", "2", json_out=False)
    assert code == 2 and "--version needs --collection" in err
    assert not (tmp_path / "x").exists()


def test_a_killed_group_restore_in_place_is_checked_and_recorded_by_the_rerun(archive, tmp_path, capsys, monkeypatch):
    """Killed (like kill -9: nothing cleaned up) after the rename, before the events were recorded."""
    from fixity.restore_group import restore_group, select_deposit

    src, cfg, group, bags, _ = archive
    dest = tmp_path / "killed"
    config = load_config(cfg)
    with dies_after_rename(monkeypatch), pytest.raises(_Killed):
        restore_group(config, select_deposit(Catalog(config.catalog), group), dest)
    assert dest.is_dir()
    code, out, err = _restore(capsys, cfg, "--deposit", group, dest)
    assert code == 0, err
    assert any("checked again" in w for w in out["warnings"])
    catalog = Catalog(config.catalog)
    for bag in bags:
        assert validate_bag(dest / bag).valid
        assert [e["outcome"] for e in catalog.events(bag_id=bag, type="dissemination").to_pylist()] == ["success"]
    assert _leftovers(tmp_path, "killed") == []


def test_a_killed_group_restore_is_finished_only_by_the_same_command(archive, tmp_path, capsys, monkeypatch):
    from fixity.restore_group import restore_group, select_deposit

    src, cfg, group, bags, _ = archive
    dest = tmp_path / "killed"
    config = load_config(cfg)
    with dies_after_rename(monkeypatch), pytest.raises(_Killed):
        restore_group(config, select_deposit(Catalog(config.catalog), group), dest, payload_only=True)
    code, _, err = _restore(capsys, cfg, bags[0], dest, "--payload-only", json_out=False)
    assert code == 2 and f"strongroom restore --deposit {group} {dest} --payload-only" in err
    code, out, err = _restore(capsys, cfg, "--deposit", group, dest, "--payload-only")
    assert code == 0, err
    assert tree(dest) == tree(src)
