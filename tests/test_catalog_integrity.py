"""The catalog checks itself before any command acts on it (`catalog.integrity`).

Issue 10: one deleted `files/` Parquet file made a bag look empty, and the nightly audit removed
every payload file from both copies as "extra"; `status` said "All well". Each test damages a
private copy of a real deposited archive (see test_status.py) and runs the real CLI.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from typing import Dict, List

import pytest

from tests.test_deposit_s3 import buckets, s3_env  # noqa: F401  (fixtures)
from tests.test_status import cli, clone, deposited, load, status, status_text  # noqa: F401


@pytest.fixture
def arch(deposited, tmp_path):
    return clone(deposited, tmp_path)


def catalog_dir(arch) -> Path:
    return Path(load(arch).catalog)


def table_files(arch, table: str) -> List[Path]:
    return sorted(p for p in (catalog_dir(arch) / table).iterdir() if not p.name.startswith((".", "_")))


def payload(arch) -> Dict[str, bytes]:
    """Every stored file of every bag on every target: path -> bytes."""
    config = load(arch)
    found = {}
    for name in ("site-a", "site-b"):
        root = Path(config.target(name).root)
        for p in sorted(root.rglob("*")):
            if p.is_file():
                found[str(p)] = p.read_bytes()
    return found


def files_file_of(arch, bag_id: str) -> Path:
    from catalog.compact import bag_file_prefix

    (path,) = [p for p in table_files(arch, "files") if p.name.startswith(bag_file_prefix(bag_id))]
    return path


def health(arch):
    from catalog.catalog import Catalog
    from catalog.integrity import check_catalog

    return check_catalog(Catalog(str(catalog_dir(arch))))


# --------------------------------------------------------------------------------------------
# check_catalog itself


def test_an_intact_catalog_is_healthy(arch):
    h = health(arch)
    assert h.ok, h.problems
    assert h.counts["bags_rows"] == 2 and h.counts["files_rows"] == 6 and h.counts["segments"] > 0


def test_a_deleted_files_table_file_is_named(arch):
    books = arch.bags["books"]
    files_file_of(arch, books).unlink()
    h = health(arch)
    assert not h.ok
    (problem,) = h.problems
    assert problem.startswith("files: bag " + books) and "0 file row(s)" in problem and "4 file(s)" in problem


@pytest.mark.parametrize("table", ["bags", "files", "replicas"])
@pytest.mark.parametrize("damage", ["truncated", "empty", "foreign text", "other table", "wrong types"])
def test_unreadable_or_foreign_table_files_are_named_never_a_traceback(arch, table, damage):
    import pyarrow as pa
    import pyarrow.parquet as pq

    victim = table_files(arch, table)[0]
    if damage == "truncated":
        data = victim.read_bytes()
        victim.write_bytes(data[: len(data) // 2])
    elif damage == "empty":
        victim.write_bytes(b"")
    elif damage == "foreign text":
        victim.write_bytes(b"PAR1 this is not parquet at all PAR1")
    elif damage == "other table":
        other = {"bags": "replicas", "files": "bags", "replicas": "files"}[table]
        shutil.copyfile(table_files(arch, other)[0], victim)
    else:
        cols = {"bags": ["bag_id", "_batch", "_recorded_at", "file_count", "byte_count"],
                "files": ["_batch", "size"], "replicas": ["bag_id", "target"]}[table]
        pq.write_table(pa.table({c: ["x"] for c in cols}), victim)
    h = health(arch)
    assert not h.ok
    assert any(p.startswith(f"{table}/{victim.name}: ") for p in h.problems), h.problems
    assert str(victim) in h.unreadable


def test_a_deleted_bags_file_shows_through_the_ledger(arch):
    from catalog.compact import bag_file_prefix

    maps = arch.bags["maps"]
    (bag_row,) = [p for p in table_files(arch, "bags") if p.name.startswith(bag_file_prefix(maps))]
    bag_row.unlink()
    problems = health(arch).problems
    assert any(p.startswith(f"bags: bag {maps} is registered in the ledger") for p in problems), problems


def test_deleted_replica_records_show_through_the_ledger(arch):
    from catalog.compact import bag_file_prefix

    maps = arch.bags["maps"]
    for p in table_files(arch, "replicas"):
        if p.name.startswith(bag_file_prefix(maps)):
            p.unlink()
    problems = health(arch).problems
    assert {p.split(" on ")[1].split(",")[0] for p in problems if p.startswith(f"replicas: the ledger records copies of {maps}")} \
        == {"site-a", "site-b"}, problems


def test_a_deleted_ledger_segment_and_a_damaged_head_are_named(arch):
    segments = table_files(arch, "events")
    segments[1].unlink()
    segments[-1].write_bytes(segments[-1].read_bytes()[:50])
    problems = health(arch).problems
    assert any(p.startswith(f"events/{segments[1].name}: missing") for p in problems), problems
    assert any(p.startswith(f"events/{segments[-1].name}: the newest segment is not a readable") for p in problems)


def test_a_file_truncated_in_place_after_a_check_is_still_found(arch):
    """What a check read is remembered per file, but by name, size and mtime: damage in place shows."""
    assert health(arch).ok
    victim = table_files(arch, "replicas")[0]
    data = victim.read_bytes()
    victim.write_bytes(data[:-10])
    assert any(p.startswith(f"replicas/{victim.name}") for p in health(arch).problems)


# --------------------------------------------------------------------------------------------
# Every command that opens the catalog refuses a damaged one


def test_audit_refuses_a_damaged_catalog_and_removes_nothing(arch, capsys):
    """The reported disaster: a lost files-table file made `audit --all` delete every payload file."""
    before = payload(arch)
    files_file_of(arch, arch.bags["books"]).unlink()
    run = cli(capsys, "--config", arch.config, "audit", "--all")
    assert run.code == 1, run.out + run.err
    assert "the catalog is damaged: files: bag " + arch.bags["books"] in run.err
    assert "run `strongroom catalog rebuild`" in run.err
    assert payload(arch) == before  # every file, on both replicas, byte for byte


@pytest.mark.parametrize("argv", [["audit", "--due"], ["report", "preservation", "-o", "DEST"],
                                  ["restore", "BAG", "DEST"], ["catalog", "compact"],
                                  ["deposit", "SRC", "--library", "PKU", "--collection", "news", "--type", "self-built"]])
def test_other_commands_refuse_a_damaged_catalog(arch, capsys, tmp_path, argv):
    books = arch.bags["books"]
    src = tmp_path / "src"
    src.mkdir()
    (src / "new.txt").write_bytes(b"new material\n")
    files_file_of(arch, books).unlink()
    before = payload(arch)
    argv = [str(tmp_path / "dest") if a == "DEST" else books if a == "BAG" else str(src) if a == "SRC" else a
            for a in argv]
    run = cli(capsys, "--config", arch.config, *argv)
    assert run.code == 1, run.out + run.err
    assert "the catalog is damaged" in run.err and "Traceback" not in run.err
    assert not (tmp_path / "dest").exists()
    assert payload(arch) == before  # nothing written to, or removed from, the replicas


# --------------------------------------------------------------------------------------------
# status says so


def test_status_on_a_damaged_catalog(arch, capsys):
    files_file_of(arch, arch.bags["books"]).unlink()
    text = status_text(capsys, arch)
    assert text.code == 1
    assert "CATALOG DAMAGED" in text.out and arch.bags["books"] in text.out
    assert "strongroom catalog rebuild" in text.out
    js = status(capsys, arch)
    assert js.code == 1
    data = js.data  # still one JSON document
    assert data["catalog_ok"] is False and data["exit_code"] == 1
    assert any(arch.bags["books"] in p for p in data["catalog_problems"])


def test_status_on_a_missing_catalog_folder(arch, capsys):
    shutil.rmtree(catalog_dir(arch))
    text = status_text(capsys, arch)
    assert text.code == 1, text.out + text.err
    assert "CATALOG MISSING" in text.out and "strongroom catalog rebuild" in text.out
    js = status(capsys, arch)
    assert js.code == 1 and js.data["catalog_ok"] is False and js.data["exit_code"] == 1


def test_status_on_an_emptied_catalog_while_targets_hold_bags(arch, capsys):
    """The whole catalog deleted but the folder left: an empty index of a full archive is a loss."""
    for child in catalog_dir(arch).iterdir():
        shutil.rmtree(child) if child.is_dir() else child.unlink()
    text = status_text(capsys, arch)
    assert text.code == 1, text.out
    assert "CATALOG LOST" in text.out and "site-a" in text.out and "strongroom catalog rebuild" in text.out
    js = status(capsys, arch)
    assert js.code == 1 and js.data["catalog_ok"] is False


def test_status_on_a_fresh_archive_is_still_fine(archive, capsys):
    run = cli(capsys, "--config", archive.path, "--json", "status")
    assert run.code == 0, run.out + run.err
    assert run.data["totals"]["bags"] == 0 and "catalog_ok" not in run.data


# --------------------------------------------------------------------------------------------
# A full disk names the catalog


def test_a_full_disk_under_the_catalog_is_named(tmp_path, monkeypatch):
    from catalog.catalog import Catalog
    from catalog.store import CatalogError
    from tests.test_catalog import make_bag

    cat = Catalog(str(tmp_path / "catalog"))
    real_write = os.write

    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    bag, files = make_bag(1)
    with pytest.raises(CatalogError) as exc:
        cat.add_bag(bag, files)
    monkeypatch.setattr(os, "write", real_write)
    message = str(exc.value)
    assert str(tmp_path / "catalog") in message and "disk is full" in message and "ENOSPC" in message
    assert exc.value.exit_code == 2
    leftovers = [p for p in (tmp_path / "catalog").rglob("*") if p.is_file()]
    assert leftovers == []  # no temp file left behind


# --------------------------------------------------------------------------------------------
# The same for a catalog in object storage (SeaweedFS): the check lists and reads through
# pyarrow's S3 file system, and rebuild sets damage aside by copy + delete.


def test_an_s3_catalog_is_checked_and_mended_too(seaweed, buckets, s3_env, tmp_path, capsys):
    import json
    import uuid

    from tests.test_catalog_s3 import catalog_keys
    from tests.test_deposit_s3 import make_source, run, write_archive

    east, west = buckets
    prefix = f"catalog-{uuid.uuid4().hex[:6]}"
    cfg = write_archive(tmp_path / "archive", seaweed, east, west, prefix=f"rep-{uuid.uuid4().hex[:6]}",
                        catalog=f"s3://{east}/{prefix}")
    code, out, err = run(capsys, "--config", cfg, "--json", "deposit", make_source(tmp_path / "source"),
                         "--library", "PKU", "--collection", "S3CAT", "--type", "self-built", "--policy", "mixed")
    assert code == 0, out + err
    keys = [k for k in catalog_keys(seaweed, east, prefix) if k.endswith(".parquet")]
    (files_key,) = [k for k in keys if k.startswith("files/")]
    (bags_key,) = [k for k in keys if k.startswith("bags/")]
    seaweed.client().delete_object(Bucket=east, Key=f"{prefix}/{files_key}")

    code, out, err = run(capsys, "--config", cfg, "audit", "--all")
    assert code == 1 and "the catalog is damaged: files: bag PKU/S3CAT/" in err, out + err
    code, out, err = run(capsys, "--config", cfg, "--json", "status")
    assert code == 1 and json.loads(out)["catalog_state"] == "damaged"

    code, out, err = run(capsys, "--config", cfg, "--json", "catalog", "rebuild")
    assert code == 0, out + err
    aside = json.loads(out)["set_aside"]
    assert aside["moved"] == [bags_key]
    keys = catalog_keys(seaweed, east, prefix)
    assert any(k.startswith(".damaged/") and k.endswith("/" + bags_key) for k in keys), keys  # copied, kept
    code, out, err = run(capsys, "--config", cfg, "--json", "status")
    assert code == 0, out + err
    assert json.loads(out)["totals"]["files"] > 0


def test_no_false_alarm_while_others_register_and_compact(tmp_path):
    """The check runs while deposits write and a compaction replaces files: never "damaged"."""
    import threading

    from catalog.catalog import Catalog
    from catalog.integrity import check_catalog, forget
    from tests.test_catalog import make_bag

    root = str(tmp_path / "catalog")
    for i in range(20):
        Catalog(root).add_bag(*make_bag(i))
    stop = threading.Event()
    errors: list = []

    def writer() -> None:
        i = 100
        try:
            while not stop.is_set():
                cat = Catalog(root)
                cat.add_bag(*make_bag(i))
                i += 1
                if i % 4 == 0:
                    cat.compact()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        results = []
        for _ in range(15):
            cat = Catalog(root)
            forget(cat.store)
            results.append(check_catalog(cat))
    finally:
        stop.set()
        thread.join()
    assert errors == []
    assert [h.problems for h in results if not h.ok] == []
    assert results[-1].counts["bags_rows"] > 20  # the writer did write meanwhile


def test_status_does_not_take_an_unfinished_first_deposit_for_a_lost_catalog(archive, capsys, tmp_path, monkeypatch):
    """Copied to both targets, killed before registration: the catalog is empty and the targets
    hold a bag, but staging knows it is an unfinished deposit, not a lost catalog."""
    import pipelines.flow as flow
    from strongroom.errors import PreservationError

    def fail(*args, **kwargs):
        raise PreservationError("killed before registration (test)")

    monkeypatch.setattr(flow, "register", fail)
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_bytes(b"a\n")
    run = cli(capsys, "--config", archive.path, "deposit", src, "--library", "PKU", "--collection", "first",
              "--type", "self-built")
    assert run.code != 0
    assert any(Path(archive.target("site-a").root).rglob("bagit.txt"))  # copied, not registered
    text = status_text(capsys, type("A", (), {"config": archive.path})())
    assert "CATALOG LOST" not in text.out and "Unfinished deposits" in text.out, text.out


def test_catalog_check_command(arch, capsys):
    run = cli(capsys, "--config", arch.config, "catalog", "check")
    assert run.code == 0 and "healthy (2 bag(s), 6 file row(s)" in run.out, run.out + run.err
    files_file_of(arch, arch.bags["maps"]).unlink()
    run = cli(capsys, "--config", arch.config, "--json", "catalog", "check")
    assert run.code == 1 and run.data["ok"] is False and run.data["exit_code"] == 1
    assert any(p.startswith(f"files: bag {arch.bags['maps']}") for p in run.data["problems"])
