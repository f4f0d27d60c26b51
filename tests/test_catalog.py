"""Catalog tables: round trips, idempotent registration, derived replica state, event filters,
compaction that keeps answers, parallel writers, crash leftovers, the `catalog compact` CLI."""

import argparse
import dataclasses
import datetime as dt
import json
import multiprocessing as mp
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from catalog.catalog import BagConflict, BagRecord, Catalog, CatalogError, EventRecord, FileRecord, ReplicaRecord
from catalog.ledger import verify_ledger

T0 = dt.datetime(2024, 5, 1, 9, 30, tzinfo=dt.timezone.utc)
UTC8 = dt.timezone(dt.timedelta(hours=8))


def make_bag(i: int, n_files: int = 3, library: str = "PKU", collection: str = "maps"):
    bag_id = f"{library}/{collection}/20240501T093000Z-{i}"
    files = [FileRecord(bag_id, f"data/地图 {j}%.tif", 100 * (j + 1), 1_714_555_800_000_000_000 + j,
                        md5=f"{i:02x}{j:030x}", sha256=f"{i:032x}{j:032x}", puid="fmt/353",
                        format_name="Tagged Image File Format", format_version=None, mime="image/tiff",
                        identification_method="signature")
             for j in range(n_files)]
    bag = BagRecord(bag_id, library, collection, "self-built", f"北京地图 {i}", "self-built",
                    f"urn:uuid:0000-{i}", f"group-{i}", 1, 1, n_files, sum(f.size for f in files),
                    T0.astimezone(UTC8), source_path=f"/deposits/maps/{i}")
    return bag, files


def data_files(root: Path, table: str):
    return sorted(p.name for p in (root / table).iterdir() if not p.name.startswith((".", "_")))


@pytest.fixture
def cat(tmp_path):
    return Catalog(str(tmp_path / "catalog"))


def test_empty_catalog_answers_empty_tables(cat):
    assert cat.bags().num_rows == 0 and cat.files().num_rows == 0
    assert cat.replicas().num_rows == 0 and cat.events().num_rows == 0
    assert not cat.has_bag("X/Y/Z") and cat.bag("X/Y/Z") is None and cat.file_digests("X/Y/Z") == {}
    assert cat.bags().schema.names[:3] == ["bag_id", "library", "collection"]


def test_round_trip(cat):
    bag, files = make_bag(1)
    other, other_files = make_bag(2, n_files=2, library="NLC")
    cat.add_bag(bag, files)
    cat.add_bag(other, other_files)

    assert cat.has_bag(bag.bag_id) and not cat.has_bag(bag.bag_id + "0")
    back = cat.bag(bag.bag_id)
    assert back == bag and back.created_at == T0 and back.title == "北京地图 1"
    assert cat.bags().column("bag_id").to_pylist() == sorted([bag.bag_id, other.bag_id])
    assert cat.bags(library="NLC").column("bag_id").to_pylist() == [other.bag_id]
    assert cat.bags(library="PKU", collection="maps", bag_id=bag.bag_id).num_rows == 1
    assert cat.bags(library="PKU", collection="nope").num_rows == 0
    assert "_batch" not in cat.bags().schema.names and "_batch" not in cat.files().schema.names

    assert cat.file_records(bag.bag_id) == sorted(files, key=lambda f: f.path)
    assert cat.files().num_rows == 5
    assert cat.files(other.bag_id).column("path").to_pylist() == [f.path for f in other_files]
    digests = cat.file_digests(bag.bag_id)
    assert digests["data/地图 1%.tif"] == {"md5": files[1].md5, "sha256": files[1].sha256}
    assert set(digests) == {f.path for f in files}


def test_add_bag_is_idempotent(cat, tmp_path):
    bag, files = make_bag(1)
    cat.add_bag(bag, files)
    before = {t: data_files(tmp_path / "catalog", t) for t in ("bags", "files")}
    cat.add_bag(bag, list(reversed(files)))  # same content, other order
    assert {t: data_files(tmp_path / "catalog", t) for t in ("bags", "files")} == before
    assert cat.bags().num_rows == 1 and cat.files().num_rows == 3


@pytest.mark.parametrize("change", ["title", "digest", "extra file", "missing file"])
def test_conflicting_add_bag_is_refused(cat, change):
    bag, files = make_bag(1)
    cat.add_bag(bag, files)
    new_bag, new_files = bag, list(files)
    if change == "title":
        new_bag = dataclasses.replace(bag, title="another title")
    elif change == "digest":
        new_files[0] = dataclasses.replace(files[0], sha256="f" * 64)
    elif change == "extra file":
        new_files.append(FileRecord(bag.bag_id, "data/new.tif", 5))
        new_bag = dataclasses.replace(bag, file_count=4, byte_count=bag.byte_count + 5)
    else:
        new_files = files[:2]
        new_bag = dataclasses.replace(bag, file_count=2, byte_count=bag.byte_count - files[2].size)
    with pytest.raises(BagConflict) as err:
        cat.add_bag(new_bag, new_files)
    assert bag.bag_id in str(err.value) and err.value.exit_code == 2
    assert cat.bag(bag.bag_id) == bag and cat.file_records(bag.bag_id) == files


def test_add_bag_checks_its_input(cat):
    bag, files = make_bag(1)
    with pytest.raises(ValueError, match="file_count"):
        cat.add_bag(dataclasses.replace(bag, file_count=4), files)
    with pytest.raises(ValueError, match="duplicate"):
        cat.add_bag(dataclasses.replace(bag, file_count=4, byte_count=bag.byte_count + 100), files + files[:1])
    with pytest.raises(ValueError, match="of this bag"):
        cat.add_bag(bag, files[:2] + [dataclasses.replace(files[2], bag_id="X/Y/Z")])
    for bad in ("../etc/passwd", "/data/x", "data//x", "data/./x", "data\\x", "C:/x"):
        with pytest.raises(ValueError, match="relative"):
            FileRecord(bag.bag_id, bad, 1)
    with pytest.raises(ValueError, match="timezone-aware"):
        dataclasses.replace(bag, created_at=dt.datetime(2024, 1, 1))
    with pytest.raises(ValueError, match="state"):
        ReplicaRecord(bag.bag_id, "site-a", "bj", "fine")
    with pytest.raises(ValueError, match="outcome"):
        EventRecord("ingestion", "ok")
    assert not cat.has_bag(bag.bag_id)


def test_crash_between_files_and_bag_row_leaves_nothing_visible(cat, monkeypatch):
    bag, files = make_bag(1)
    real = cat.store.create_exclusive

    def crash(*a, **k):
        raise KeyboardInterrupt("power cut")

    monkeypatch.setattr(cat.store, "create_exclusive", crash)
    with pytest.raises(KeyboardInterrupt):
        cat.add_bag(bag, files)
    monkeypatch.setattr(cat.store, "create_exclusive", real)
    assert not cat.has_bag(bag.bag_id) and cat.files().num_rows == 0
    cat.add_bag(bag, files)  # the retry registers it once
    assert cat.files().num_rows == 3 and cat.file_records(bag.bag_id) == files
    cat.compact()
    assert cat.files().num_rows == 3 and cat.files(bag.bag_id).num_rows == 3


def test_current_replica_state_is_the_latest_record(cat):
    b1, _ = make_bag(1)
    b2, _ = make_bag(2)
    t = lambda minutes: T0 + dt.timedelta(minutes=minutes)  # noqa: E731
    # recorded out of order: the 'copied' record arrives last but is older
    cat.record_replica(ReplicaRecord(b1.bag_id, "site-a", "beijing", "verified", verified_at=t(2), recorded_at=t(2)))
    cat.record_replica(ReplicaRecord(b1.bag_id, "site-a", "beijing", "copied", recorded_at=t(1)))
    cat.record_replica(ReplicaRecord(b1.bag_id, "site-b", "wuhan", "copied", recorded_at=t(1)))
    cat.record_replica(ReplicaRecord(b1.bag_id, "site-b", "wuhan", "damaged", last_audit_at=t(9),
                                     last_audit_kind="deep", last_audit_outcome="failure",
                                     detail="data/x.tif: sha256 mismatch", recorded_at=t(9)))
    cat.record_replica(ReplicaRecord(b1.bag_id, "site-b", "wuhan", "repaired", recorded_at=t(10).astimezone(UTC8)))
    # an exact tie: the worse state wins, whatever the write order
    cat.record_replica(ReplicaRecord(b2.bag_id, "site-a", "beijing", "verified", recorded_at=t(5)))
    cat.record_replica(ReplicaRecord(b2.bag_id, "site-a", "beijing", "missing", recorded_at=t(5)))
    cat.record_replica(ReplicaRecord(b2.bag_id, "site-a", "beijing", "verified", recorded_at=t(5)))

    current = cat.replicas()
    assert [(r["bag_id"], r["target"], r["state"]) for r in current.to_pylist()] == [
        (b1.bag_id, "site-a", "verified"), (b1.bag_id, "site-b", "repaired"), (b2.bag_id, "site-a", "missing")]
    assert current.to_pylist()[0]["verified_at"] == t(2)
    assert cat.replicas(b1.bag_id).num_rows == 2
    log = cat.replicas(b1.bag_id, current=False)
    assert log.num_rows == 5
    assert log.column("state").to_pylist() == ["copied", "verified", "copied", "damaged", "repaired"]
    assert cat.replica(b1.bag_id, "site-b").state == "repaired"
    damaged = [r for r in log.to_pylist() if r["state"] == "damaged"][0]
    assert damaged["last_audit_kind"] == "deep" and damaged["detail"] == "data/x.tif: sha256 mismatch"
    assert cat.replica(b1.bag_id, "site-c") is None


def test_event_filters(cat):
    b1, _ = make_bag(1)
    b2, _ = make_bag(2)
    t = lambda h: T0 + dt.timedelta(hours=h)  # noqa: E731
    cat.append_events([EventRecord("ingestion", "success", agent="strongroom", bag_id=b1.bag_id, datetime=t(0)),
                       EventRecord("validation", "success", bag_id=b1.bag_id, datetime=t(1))])
    cat.append_events([EventRecord("replication", "success", bag_id=b1.bag_id, target="site-a", datetime=t(2)),
                       EventRecord("ingestion", "success", bag_id=b2.bag_id, datetime=t(3))])
    cat.append_events([EventRecord("fixity check", "failure", object_type="file", bag_id=b1.bag_id,
                                   target="site-a", path="data/地图 0%.tif", detail="sha256 mismatch", datetime=t(4)),
                       EventRecord("repair", "success", object_type="file", bag_id=b1.bag_id, target="site-a",
                                   path="data/地图 0%.tif", datetime=t(5).astimezone(UTC8))])
    types = lambda table: table.column("type").to_pylist()  # noqa: E731
    assert types(cat.events()) == ["ingestion", "validation", "replication", "ingestion", "fixity check", "repair"]
    assert cat.events(bag_id=b2.bag_id).column("datetime").to_pylist() == [t(3)]
    assert types(cat.events(since=t(2), until=t(4))) == ["replication", "ingestion"]  # since in, until out
    assert types(cat.events(since=t(4).astimezone(UTC8))) == ["fixity check", "repair"]
    assert types(cat.events(type="ingestion")) == ["ingestion", "ingestion"]
    assert types(cat.events(type=["repair", "fixity check"], bag_id=b1.bag_id)) == ["fixity check", "repair"]
    assert cat.events(bag_id=b2.bag_id, type="repair").num_rows == 0
    failed = cat.events(type="fixity check").to_pylist()[0]
    assert failed["path"] == "data/地图 0%.tif" and failed["outcome"] == "failure" and failed["object_type"] == "file"
    assert len(set(cat.events().column("event_id").to_pylist())) == 6
    with pytest.raises(ValueError, match="timezone-aware"):
        cat.events(since=dt.datetime(2024, 1, 1))


def _snapshot(cat, bag_ids):
    snap = {"bags": cat.bags(), "files": cat.files(), "replicas": cat.replicas(),
            "log": cat.replicas(current=False), "events": cat.events(), "lib": cat.bags(library="NLC")}
    for b in bag_ids:
        snap[b] = (cat.files(b), cat.replicas(b), cat.bag(b), cat.file_digests(b))
    return snap


def _assert_same(before, after):
    assert before.keys() == after.keys()
    for key in before:
        if isinstance(before[key], pa.Table):
            assert before[key].equals(after[key]), key
            assert before[key].num_rows > 0, key
        else:
            b, a = before[key], after[key]
            assert b[0].equals(a[0]) and b[1].equals(a[1]) and b[2] == a[2] and b[3] == a[3], key


def test_compact_keeps_answers_and_reduces_files(cat, tmp_path):
    root = tmp_path / "catalog"
    ids = []
    for i in range(6):
        bag, files = make_bag(i, n_files=i + 1, library="NLC" if i % 2 else "PKU")
        cat.add_bag(bag, files)
        ids.append(bag.bag_id)
        for k, state in enumerate(["copied", "verified"]):
            cat.record_replica(ReplicaRecord(bag.bag_id, "site-a", "beijing", state,
                                             recorded_at=T0 + dt.timedelta(minutes=10 * i + k)))
        cat.append_events([EventRecord("ingestion", "success", bag_id=bag.bag_id)])
    before = _snapshot(cat, ids)
    counts = {t: len(data_files(root, t)) for t in ("bags", "files", "replicas", "events")}
    assert counts == {"bags": 6, "files": 6, "replicas": 12, "events": 6}

    result = cat.compact()
    assert {t.table: (t.files_before, t.files_after, t.rows) for t in result.tables} == {
        "bags": (6, 1, 6), "files": (6, 1, 21), "replicas": (12, 1, 12)}
    assert {t: len(data_files(root, t)) for t in ("bags", "files", "replicas", "events")} == {
        "bags": 1, "files": 1, "replicas": 1, "events": 6}
    _assert_same(before, _snapshot(Catalog(str(root)), ids))
    _assert_same(before, _snapshot(cat, ids))
    assert verify_ledger(str(root)).ok

    # writes after compaction, then a second compaction that merges old and new
    new_ids = []
    for i in (7, 8, 9):
        bag, files = make_bag(i, n_files=8, library="NLC")
        cat.add_bag(bag, files)
        cat.add_bag(bag, files)  # still idempotent once compacted
        cat.record_replica(ReplicaRecord(bag.bag_id, "site-b", "wuhan", "copied", recorded_at=T0))
        new_ids.append(bag.bag_id)
    with pytest.raises(BagConflict):
        cat.add_bag(dataclasses.replace(make_bag(0)[0], title="changed"), make_bag(0)[1])
    cat.record_replica(ReplicaRecord(ids[0], "site-a", "beijing", "damaged", recorded_at=T0 + dt.timedelta(days=1)))
    mid = _snapshot(cat, ids + new_ids)
    assert mid["files"].num_rows == 45 and cat.replica(ids[0], "site-a").state == "damaged"
    cat.compact()
    assert {t: len(data_files(root, t)) for t in ("bags", "files", "replicas")} == {"bags": 1, "files": 1, "replicas": 1}
    _assert_same(mid, _snapshot(cat, ids + new_ids))


def test_compaction_tiers_keep_big_files_and_answers(cat, tmp_path, monkeypatch):
    """Compacted files are merged again only with data of similar size and never past the cap,
    and whatever the file layout, the answers are the same."""
    import catalog.compact as compact

    monkeypatch.setattr(compact, "MAX_MERGE_ROWS", 40)
    root = tmp_path / "catalog"
    ids = []

    def add(first, count, n_files):
        for i in range(first, first + count):
            bag, files = make_bag(i, n_files=n_files)
            cat.add_bag(bag, files)
            ids.append(bag.bag_id)

    def files_rows():
        return sorted(pq.read_metadata(root / "files" / n).num_rows for n in data_files(root, "files"))

    add(0, 10, 3)            # 30 rows in 10 small files
    before = cat.files()
    cat.compact()
    assert files_rows() == [30] and cat.files().equals(before)
    add(10, 1, 2)            # one small file (2 rows): nothing to merge it with (30 > 4 * 2)
    cat.compact()
    assert files_rows() == [2, 30]
    add(11, 3, 3)            # 9 new rows + the 2-row file = 11; 30 <= 4 * 11, but 11 + 30 > the cap
    expected = cat.files()
    cat.compact()
    assert files_rows() == [11, 30]
    assert cat.files().equals(expected) and cat.files().num_rows == 41
    for b in (ids[0], ids[10], ids[13]):
        assert cat.file_records(b) == make_bag(int(b.rsplit("-", 1)[1]), n_files=len(cat.file_records(b)))[1]
    monkeypatch.setattr(compact, "MAX_MERGE_ROWS", 1000)
    cat.compact()            # no new data: the 11-row file takes in the 30-row one (30 <= 4 * 11)
    assert files_rows() == [41] and cat.files().equals(expected)


def test_compaction_interrupted_before_deleting_inputs(cat, tmp_path):
    """A compaction that wrote its output but died before deleting its inputs shows no row twice."""
    root = tmp_path / "catalog"
    for i in range(3):
        bag, files = make_bag(i, library="NLC" if i == 1 else "PKU")
        cat.add_bag(bag, files)
        cat.record_replica(ReplicaRecord(bag.bag_id, "site-a", "beijing", "verified", recorded_at=T0))
    cat.append_events([EventRecord("ingestion", "success")])
    before = _snapshot(cat, [])
    saved = tmp_path / "saved"
    shutil.copytree(root, saved)
    cat.compact()
    for table in ("bags", "files", "replicas"):  # put the inputs back, as if never deleted
        for p in (saved / table).iterdir():
            shutil.copy2(p, root / table / p.name)
    assert len(data_files(root, "files")) == 4
    _assert_same(before, _snapshot(Catalog(str(root)), []))
    cat.compact()
    assert {t: len(data_files(root, t)) for t in ("bags", "files", "replicas")} == {"bags": 1, "files": 1, "replicas": 1}
    _assert_same(before, _snapshot(cat, []))


def test_one_compaction_at_a_time(cat, tmp_path):
    bag, files = make_bag(1)
    cat.add_bag(bag, files)
    (tmp_path / "catalog" / "_compact.lock").write_text("{}")
    with pytest.raises(CatalogError, match="_compact.lock"):
        cat.compact()
    (tmp_path / "catalog" / "_compact.lock").unlink()
    cat.compact()
    assert not (tmp_path / "catalog" / "_compact.lock").exists()


def test_crash_leftover_temp_files_are_ignored(cat, tmp_path):
    bag, files = make_bag(1)
    cat.add_bag(bag, files)
    cat.record_replica(ReplicaRecord(bag.bag_id, "site-a", "beijing", "verified"))
    cat.append_events([EventRecord("ingestion", "success", bag_id=bag.bag_id)])
    for table in ("bags", "files", "replicas", "events"):
        (tmp_path / "catalog" / table / ".tmp-deadbeef").write_bytes(b"PAR1 half written")
    assert cat.bags().num_rows == 1 and cat.files().num_rows == 3
    assert cat.replicas().num_rows == 1 and cat.events().num_rows == 1
    assert cat.compact().files_after == 3
    assert cat.files().num_rows == 3 and verify_ledger(str(tmp_path / "catalog")).ok


def _register(root: str, worker: int, start) -> None:
    cat = Catalog(root)
    start.wait()
    for i in range(8):
        bag, files = make_bag(100 * worker + i)
        cat.add_bag(bag, files)
        cat.record_replica(ReplicaRecord(bag.bag_id, "site-a", "beijing", "verified"))
        shared, shared_files = make_bag(999)  # both workers register the same bag too
        cat.add_bag(shared, shared_files)
        cat.record_replica(ReplicaRecord(shared.bag_id, f"site-{worker}", "x", "copied"))


def test_parallel_writers_never_clash(tmp_path):
    root = str(tmp_path / "catalog")
    ctx = mp.get_context("spawn")
    start = ctx.Barrier(2)
    procs = [ctx.Process(target=_register, args=(root, w, start)) for w in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    cat = Catalog(root)
    assert cat.bags().num_rows == 17
    assert cat.files().num_rows == 17 * 3
    assert cat.file_records(make_bag(999)[0].bag_id) == make_bag(999)[1]
    assert cat.replicas().num_rows == 16 + 2
    assert cat.replicas(current=False).num_rows == 32


def test_non_local_filesystem_path(tmp_path):
    """The object-store code path (single PUTs, no rename/link), run on a pyarrow file system
    that is not LocalFileSystem."""
    fs = pafs.SubTreeFileSystem(str(tmp_path), pafs.LocalFileSystem())
    cat = Catalog("s3://archive/catalog", filesystem=fs)
    assert not cat.store.is_local
    bag, files = make_bag(1)
    cat.add_bag(bag, files)
    cat.add_bag(bag, files)
    cat.record_replica(ReplicaRecord(bag.bag_id, "s3-east", "shanghai", "verified"))
    assert cat.append_events([EventRecord("ingestion", "success", bag_id=bag.bag_id)]) == "seg-000000000000"
    assert cat.append_events([EventRecord("replication", "success", bag_id=bag.bag_id)]) == "seg-000000000001"
    assert (tmp_path / "archive" / "catalog" / "events" / "seg-000000000001.parquet").is_file()
    assert cat.file_records(bag.bag_id) == files and cat.replicas().num_rows == 1
    cat.compact()
    assert cat.file_records(bag.bag_id) == files
    from catalog.ledger import verify_ledger as verify
    assert verify("s3://archive/catalog", filesystem=fs).ok


def test_parquet_files_are_readable_without_strongroom(cat, tmp_path):
    """The catalog outlives the software: plain Parquet with typed UTC timestamps."""
    bag, files = make_bag(1)
    cat.add_bag(bag, files)
    (path,) = (tmp_path / "catalog" / "files").iterdir()
    table = pq.read_table(path)
    assert table.num_rows == 3 and table.schema.field("sha256").type == pa.string()
    (bpath,) = (tmp_path / "catalog" / "bags").iterdir()
    assert pq.read_table(bpath).schema.field("created_at").type == pa.timestamp("us", tz="UTC")


# ----------------------------------------------------------------------------------------
# CLI: `strongroom catalog compact`

def test_cli_catalog_compact(archive, capsys):
    from pipelines.commands import catalog_cmd

    cat = Catalog(archive.catalog)
    for i in range(3):
        bag, files = make_bag(i)
        cat.add_bag(bag, files)
    before = cat.files()
    parser = argparse.ArgumentParser()
    parser.add_argument("--config")
    parser.add_argument("--json", action="store_true")
    sub = parser.add_subparsers(dest="command")
    actions = catalog_cmd.register(sub)
    assert "compact" in actions.choices
    args = parser.parse_args(["--config", str(archive.path), "--json", "catalog", "compact"])
    assert args.run(args) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["files_before"] == 6 and data["files_after"] == 2
    assert Catalog(archive.catalog).files().equals(before)
    args = parser.parse_args(["--config", str(archive.path), "catalog", "compact"])
    assert args.run(args) == 0
    assert "files: 1 -> 1 file(s), 9 row(s)" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        parser.parse_args(["--config", str(archive.path), "catalog"])


def test_stale_temp_files_of_killed_writers_are_removed_and_live_ones_kept(cat, tmp_path):
    """A writer killed between writing its temp file and renaming it leaves `.tmp-...` behind;
    rebuild and compaction remove those whose writer is gone, never one being written."""
    import os
    import subprocess
    import sys

    from catalog.store import TEMP_PREFIX, _HOST

    bag, files = make_bag(1)
    cat.add_bag(bag, files)
    folder = tmp_path / "catalog" / "files"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    stale = folder / f"{TEMP_PREFIX}{_HOST}-{dead}-{'a' * 32}"
    live = folder / f"{TEMP_PREFIX}{_HOST}-{os.getpid()}-{'b' * 32}"
    foreign = folder / f"{TEMP_PREFIX}elsewhere-1-{'c' * 32}"
    for p in (stale, live, foreign):
        p.write_bytes(b"half a parquet file")
    cat.compact()
    assert not stale.exists() and live.exists() and foreign.exists()  # another host's: only when a day old
    assert cat.file_records(bag.bag_id) == sorted(files, key=lambda f: f.path)
