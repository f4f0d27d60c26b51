"""`strongroom restore`: a real deposit through the real pipeline, then restores from its replicas.

One collection is deposited once per module; each test works on its own copy of the whole
archive folder (config paths are relative), so damaging a replica in one test cannot leak.
"""

import contextlib
import hashlib
import json
import os
import random
import shutil
from pathlib import Path

import pytest

from catalog.catalog import Catalog
from catalog.schema import ReplicaRecord
from ingest.validate import validate_bag
from pipelines.cli import main
from policies.config import load_config, write_default_config
from tests.conftest import tree_state

# name -> (bytes, mtime in ns); names with spaces, Chinese, '%' (BagIt 1.0 encodes it) and depth.
FILES = {
    "sub dir/a b.txt": (b"hello, world\n", 1_600_000_000_123_456_789),
    "中文目录/文件 一.txt": ("善本书目\n".encode("utf-8") * 50, 1_500_000_000_987_654_321),
    "pct%41.txt": (b"100% literal", 1_400_000_000_000_000_001),
    "big.bin": (random.Random(7).randbytes(3 * (1 << 20) + 12345), 1_650_000_000_555_555_555),
}
EMPTY_DIRS = ["empty/inner", "空 文件夹"]
CHINESE = "data/中文目录/文件 一.txt"


def _make_source(root: Path) -> None:
    for rel, (data, mtime_ns) in FILES.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        os.utime(p, ns=(mtime_ns, mtime_ns))
    for rel in EMPTY_DIRS:
        (root / rel).mkdir(parents=True)


def tree(root: Path) -> dict:
    """Every entry below root: folders as 'dir', files as (sha256, size, mtime_ns)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            out[os.path.relpath(os.path.join(dirpath, name), root)] = "dir"
        for name in filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, root)] = (hashlib.sha256(fh.read()).hexdigest(), st.st_size, st.st_mtime_ns)
    return out


@pytest.fixture(scope="module")
def deposited(tmp_path_factory):
    base = tmp_path_factory.mktemp("restore")
    src = base / "source"
    _make_source(src)
    cfg = write_default_config(base / "archive")
    code = main(["--config", str(cfg), "deposit", str(src), "--library", "LIB", "--collection", "COLL",
                 "--type", "self-built", "--title", "测试 collection"])
    assert code == 0
    bags = Catalog(load_config(cfg).catalog).bags().column("bag_id").to_pylist()
    assert len(bags) == 1
    return src, base / "archive", bags[0]


class Archive:
    def __init__(self, folder: Path, bag: str, source: Path):
        self.folder = folder
        self.cfg = folder / "strongroom.yaml"
        self.config = load_config(self.cfg)
        self.catalog = Catalog(self.config.catalog)
        self.bag = bag
        self.source = source

    def replica_file(self, target: str, relpath: str) -> Path:
        return Path(self.config.target(target).root).joinpath(*self.bag.split("/"), relpath)

    def damage(self, target: str, relpath: str, how: str = "flip") -> None:
        p = self.replica_file(target, relpath)
        if how == "delete":
            p.unlink()
            return
        p.chmod(0o644)  # stored copies are read-only
        data = bytearray(p.read_bytes())
        if how == "flip":
            data[len(data) // 2] ^= 0x01       # same size, one bit different
        elif how == "truncate":
            del data[len(data) // 2:]
        p.write_bytes(bytes(data))

    def restore(self, capsys, dest, *extra, json_out=True, workers=1):
        argv = ["--config", str(self.cfg), "--workers", str(workers)] + (["--json"] if json_out else []) \
            + ["restore", self.bag, str(dest), *extra]
        code = main(argv)
        out, err = capsys.readouterr()
        return code, (json.loads(out) if json_out and out.strip() else out), err

    def state(self, target: str) -> str:
        return self.catalog.replica(self.bag, target).state

    def events(self, type_: str):
        return [e for e in self.catalog.events(bag_id=self.bag, type=type_).to_pylist()]


@pytest.fixture
def archive(deposited, tmp_path):
    src, folder, bag = deposited
    copy = tmp_path / "archive"
    shutil.copytree(folder, copy, symlinks=True)
    return Archive(copy, bag, src)


def _source_files(src: Path) -> dict:
    return {k: v for k, v in tree(src).items() if v != "dir"}


def _leftovers(parent: Path, name: str) -> list:
    """The restore's temporary folder or lock file (.NAME.restore-strongroom[.lock], or an older .NAME.restore-<uuid>)."""
    return [p.name for p in parent.iterdir() if p.name.startswith(f".{name}.") and "restore" in p.name]


# --------------------------------------------------------------------------------------------


def test_whole_bag_is_restored_valid_with_the_source_bytes_and_mtimes(archive, tmp_path, capsys):
    dest = tmp_path / "out" / "bag"
    dest.parent.mkdir()
    code, out, err = archive.restore(capsys, dest)
    assert code == 0, err
    report = validate_bag(dest)  # full validation: every payload digest re-computed
    assert report.valid, [str(p) for p in report.problems]
    assert report.files_hashed >= len(FILES)
    restored = {k[len("data/"):]: v for k, v in tree(dest).items() if k.startswith("data/") and v != "dir"}
    assert restored == _source_files(archive.source)
    stored = archive.replica_file("site-a", "bag-info.txt").read_text("utf-8")
    assert (dest / "bag-info.txt").read_text("utf-8") == stored
    assert out["files"] == len(FILES)
    assert out["bytes"] == sum(len(d) for d, _ in FILES.values())
    assert out["sources"] == {"site-a": {"files": len(FILES), "bytes": out["bytes"]}}
    assert out["fallback_files"] == [] and out["damaged_replicas"] == {}
    assert out["tag_source"] == "site-a"
    dissemination = archive.events("dissemination")
    assert [e["event_id"] for e in dissemination] == out["events"]
    assert dissemination[0]["outcome"] == "success" and str(dest) in dissemination[0]["detail"]
    assert _leftovers(dest.parent, "bag") == []
    assert archive.state("site-a") == archive.state("site-b") == "verified"


def test_payload_only_gives_back_the_source_tree_exactly(archive, tmp_path, capsys):
    dest = tmp_path / "empty-already"
    dest.mkdir()  # an existing empty folder is accepted
    code, out, err = archive.restore(capsys, dest, "--payload-only", json_out=False)
    assert code == 0, err
    assert tree(dest) == tree(archive.source)  # names, empty folders, bytes, mtimes
    assert "Restored payload" in out and "2 empty folder(s)" in out
    assert _leftovers(tmp_path, "empty-already") == []


@pytest.mark.parametrize("how", ["flip", "truncate", "delete"])
def test_a_damaged_file_on_site_a_is_taken_from_site_b_and_recorded(archive, tmp_path, capsys, how):
    archive.damage("site-a", CHINESE, how)
    dest = tmp_path / "restored"
    code, out, err = archive.restore(capsys, dest, "--payload-only")
    assert code == 0, err
    assert tree(dest) == tree(archive.source)
    assert [(f["path"], f["from"]) for f in out["fallback_files"]] == [(CHINESE, "site-b")]
    problem = out["fallback_files"][0]["instead_of"][0]
    assert problem["target"] == "site-a"
    assert {"flip": "checksum mismatch", "truncate": "size differs", "delete": "missing"}[how] in problem["problem"]
    assert out["sources"]["site-b"] == {"files": 1, "bytes": len(FILES["中文目录/文件 一.txt"][0])}
    assert out["sources"]["site-a"]["files"] == len(FILES) - 1

    failures = [e for e in archive.events("fixity check") if e["outcome"] == "failure"]
    assert [(e["target"], e["path"], e["object_type"]) for e in failures] == [("site-a", CHINESE, "file")]
    if how == "flip":
        expected = hashlib.sha256(FILES["中文目录/文件 一.txt"][0]).hexdigest()
        assert f"sha256 expected {expected}" in failures[0]["detail"]
    recovery = archive.events("recovery")
    assert [(e["target"], e["path"], e["outcome"]) for e in recovery] == [("site-b", CHINESE, "success")]
    assert set(out["events"]) >= {failures[0]["event_id"], recovery[0]["event_id"]}
    assert archive.state("site-a") == "damaged"
    assert CHINESE in archive.catalog.replica(archive.bag, "site-a").detail
    assert archive.state("site-b") == "verified"
    assert out["damaged_replicas"].keys() == {"site-a"}


def test_text_output_says_which_file_came_from_another_replica(archive, tmp_path, capsys):
    archive.damage("site-a", "data/big.bin")
    code, out, err = archive.restore(capsys, tmp_path / "r", json_out=False)
    assert code == 0, err
    assert "data/big.bin: from site-b" in out and "site-a" in out and "damaged" in out
    assert validate_bag(tmp_path / "r").valid


def test_no_good_copy_anywhere_fails_naming_the_file_and_leaves_nothing(archive, tmp_path, capsys):
    archive.damage("site-a", CHINESE, "flip")
    archive.damage("site-b", CHINESE, "delete")
    dest = tmp_path / "never"
    code, out, err = archive.restore(capsys, dest, json_out=False)
    assert code == 1
    assert CHINESE in err and "site-a" in err and "site-b" in err and "no good copy" in err
    assert not dest.exists()
    assert _leftovers(tmp_path, "never") == []
    assert archive.state("site-a") == archive.state("site-b") == "damaged"
    failed = [e for e in archive.events("fixity check") if e["outcome"] == "failure"]
    assert sorted((e["target"], e["path"]) for e in failed) == [("site-a", CHINESE), ("site-b", CHINESE)]
    assert [e["outcome"] for e in archive.events("dissemination")] == ["failure"]


def test_no_good_copy_with_json_still_reports_what_was_found(archive, tmp_path, capsys):
    for target in ("site-a", "site-b"):
        archive.damage(target, "data/sub dir/a b.txt", "flip")
    code, out, err = archive.restore(capsys, tmp_path / "never")
    assert code == 1
    assert out["restored"] is False and any("data/sub dir/a b.txt" in p for p in out["problems"])
    assert out["damaged_replicas"].keys() == {"site-a", "site-b"} and len(out["events"]) == 3
    assert not (tmp_path / "never").exists()


def test_damaged_tag_files_on_site_a_are_taken_from_site_b(archive, tmp_path, capsys):
    p = archive.replica_file("site-a", "bag-info.txt")
    p.chmod(0o644)
    p.write_text(p.read_text("utf-8").replace("Source-Organization: LIB", "Source-Organization: XXX"), "utf-8")
    dest = tmp_path / "bag"
    code, out, err = archive.restore(capsys, dest)
    assert code == 0, err
    assert out["tag_source"] == "site-b"
    assert out["sources"] == {"site-a": {"files": len(FILES), "bytes": out["bytes"]}}  # payload was fine there
    assert "Source-Organization: LIB" in (dest / "bag-info.txt").read_text("utf-8")
    assert validate_bag(dest).valid
    assert archive.state("site-a") == "damaged" and archive.state("site-b") == "verified"
    assert any("bag-info.txt" in line for line in out["damaged_replicas"]["site-a"])


def test_from_reads_the_named_replica(archive, tmp_path, capsys):
    code, out, err = archive.restore(capsys, tmp_path / "b", "--from", "site-b", "--payload-only", workers=3)
    assert code == 0, err
    assert out["sources"] == {"site-b": {"files": len(FILES), "bytes": out["bytes"]}}
    assert out["tag_source"] == "site-b"
    assert tree(tmp_path / "b") == tree(archive.source)


@pytest.mark.parametrize("workers", [1, 3])
def test_parallel_restore_falls_back_per_file_too(archive, tmp_path, capsys, workers):
    archive.damage("site-a", CHINESE, "flip")
    archive.damage("site-b", "data/big.bin", "truncate")
    code, out, err = archive.restore(capsys, tmp_path / "p", "--payload-only", workers=workers)
    assert code == 0, err
    assert tree(tmp_path / "p") == tree(archive.source)
    assert sorted((f["path"], f["from"]) for f in out["fallback_files"]) == [(CHINESE, "site-b")]
    # site-b's bad copy was never needed, so nothing is known (or recorded) about it
    assert archive.state("site-a") == "damaged" and archive.state("site-b") == "verified"


def test_a_replica_that_lost_the_bag_or_cannot_be_reached(archive, tmp_path, capsys):
    bag_dir = archive.replica_file("site-a", "")
    shutil.rmtree(bag_dir)
    code, out, err = archive.restore(capsys, tmp_path / "m", "--payload-only")
    assert code == 0, err
    assert tree(tmp_path / "m") == tree(archive.source)
    assert out["sources"].keys() == {"site-b"} and out["fallback_files"] == []
    assert archive.state("site-a") == "missing"
    failed = [e for e in archive.events("fixity check") if e["outcome"] == "failure"]
    assert [(e["target"], e["object_type"]) for e in failed] == [("site-a", "replica")]

    root_b = Path(archive.config.target("site-b").root)
    root_b.rename(root_b.with_name("unmounted"))  # site-b's volume is gone: not the bag's fault
    cur = archive.catalog.replica(archive.bag, "site-a")
    archive.catalog.record_replica(ReplicaRecord(bag_id=archive.bag, target="site-a", site=cur.site,
                                                 state="verified"))
    code, out, err = archive.restore(capsys, tmp_path / "n", json_out=False)
    assert code == 1 and "site-b: unreachable" in err and "site-a: missing" in err
    assert archive.state("site-b") == "verified"
    assert not (tmp_path / "n").exists()


def test_only_verified_replicas_are_read(archive, tmp_path, capsys):
    cur = archive.catalog.replica(archive.bag, "site-a")
    archive.catalog.record_replica(ReplicaRecord(bag_id=archive.bag, target="site-a", site=cur.site,
                                                 state="damaged", detail="test"))
    archive.damage("site-b", CHINESE, "flip")  # the only copy restore may read is bad
    code, out, err = archive.restore(capsys, tmp_path / "x", "--from", "site-a", json_out=False)
    assert code == 2 and "--from site-a" in err and "damaged" in err
    code, out, err = archive.restore(capsys, tmp_path / "x", json_out=False)
    assert code == 1 and CHINESE in err  # site-a's good copy is not used: it is not verified
    assert not (tmp_path / "x").exists()

    cur = archive.catalog.replica(archive.bag, "site-b")
    archive.catalog.record_replica(ReplicaRecord(bag_id=archive.bag, target="site-b", site=cur.site,
                                                 state="failed", detail="test"))
    code, out, err = archive.restore(capsys, tmp_path / "y", json_out=False)
    assert code == 1 and "no verified (or repaired) replica" in err and "site-a: damaged" in err


def test_dest_that_is_not_empty_is_refused(archive, tmp_path, capsys):
    dest = tmp_path / "full"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    code, out, err = archive.restore(capsys, dest, json_out=False)
    assert code == 2 and str(dest) in err and "not empty" in err
    assert [p.name for p in dest.iterdir()] == ["keep.txt"]
    assert _leftovers(tmp_path, "full") == []
    afile = tmp_path / "afile"
    afile.write_text("x")
    code, out, err = archive.restore(capsys, afile, json_out=False)
    assert code == 2 and str(afile) in err
    code, out, err = archive.restore(capsys, tmp_path / "no" / "parent", json_out=False)
    assert code == 2 and "parent folder does not exist" in err
    assert archive.events("dissemination") == []


def test_unknown_or_malformed_bag_id_is_a_usage_error(archive, tmp_path, capsys):
    code, _, err = main(["--config", str(archive.cfg), "restore", "LIB/COLL/19990101T000000Z-1",
                         str(tmp_path / "d")]), *capsys.readouterr()
    assert code == 2 and "LIB/COLL/19990101T000000Z-1" in err and "strongroom status" in err
    assert archive.bag in err  # the bags of that collection are listed
    code, _, err = main(["--config", str(archive.cfg), "restore", "not-a-bag", str(tmp_path / "d")]), \
        *capsys.readouterr()
    assert code == 2 and "not a bag id" in err and "strongroom status" in err
    assert not (tmp_path / "d").exists()


def _rewrite_tag_file(archive: Archive, target: str, relpath: str, data: bytes) -> None:
    """Replace a tag file on a replica and fix its tag manifest lines, so the bag stays valid."""
    p = archive.replica_file(target, relpath)
    p.chmod(0o644)
    p.write_bytes(data)
    for alg in ("sha256", "md5"):
        m = archive.replica_file(target, f"tagmanifest-{alg}.txt")
        if not m.exists():
            continue
        m.chmod(0o644)
        lines = m.read_text("utf-8").splitlines()
        digest = hashlib.new(alg, data).hexdigest()
        m.write_text("".join(f"{digest}  {relpath}\n" if line.endswith("  " + relpath) else line + "\n"
                             for line in lines), "utf-8")


def test_unsafe_empty_folder_entries_are_refused(archive, tmp_path, capsys):
    evil = "data/../../escaped\nnotdata/dir\n/abs/dir\ndata/ok/新\n"
    for target in ("site-a", "site-b"):
        _rewrite_tag_file(archive, target, "metadata/empty-directories.txt",
                          evil.encode("utf-8"))
    dest = tmp_path / "work" / "d"
    dest.parent.mkdir()
    code, out, err = archive.restore(capsys, dest, "--payload-only")
    assert code == 0, err
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "work" / "escaped").exists()
    assert (dest / "ok" / "新").is_dir()
    refused = [w for w in out["warnings"] if "refused" in w]
    assert len(refused) == 3 and "line 2" in refused[1] and "outside data/" in refused[1]
    assert sorted(os.listdir(tmp_path / "work")) == ["d"]


# ------------------------------------------------------------------ issue 10: trust


def test_a_repaired_copy_is_as_usable_as_a_verified_one(archive, tmp_path, capsys):
    """An audit that repaired a copy re-verified it: restore must read it (it refused it before)."""
    for target, state in (("site-a", "repaired"), ("site-b", "damaged")):
        cur = archive.catalog.replica(archive.bag, target)
        archive.catalog.record_replica(ReplicaRecord(bag_id=archive.bag, target=target, site=cur.site,
                                                     state=state, detail="test"))
    code, out, err = archive.restore(capsys, tmp_path / "r", "--payload-only")
    assert code == 0, err
    assert tree(tmp_path / "r") == tree(archive.source)
    assert out["sources"].keys() == {"site-a"}
    code, out, err = archive.restore(capsys, tmp_path / "s", "--from", "site-a", "--payload-only")
    assert code == 0, err


def _inside_archive_cases(archive: Archive, tmp_path: Path):
    """(DEST as given, phrase the refusal must hold): every spelling of a folder of the archive."""
    folder = archive.folder
    catalog = Path(archive.config.catalog)
    staging = Path(archive.config.staging)
    link = tmp_path / "innocent-looking"
    link.symlink_to(catalog)
    parent_link = tmp_path / "to-archive"
    parent_link.symlink_to(folder)
    root_a = Path(archive.config.target("site-a").root)
    return [
        (str(catalog / "restored"), "inside the archive's catalog folder"),
        (str(staging / ".state" / "restored"), "inside the archive's staging folder"),
        (str(staging / ".state") + "/", "inside the archive's staging folder"),
        (os.path.relpath(catalog / "bags" / "x", os.getcwd()), "inside the archive's catalog folder"),
        (str(tmp_path / "elsewhere" / ".." / folder.name / "archive" / "catalog" / "y"), "catalog folder"),
        (str(link / "z"), "inside the archive's catalog folder"),
        (str(parent_link / "archive" / "staging" / ".state" / "w"), "staging folder"),
        (str(root_a), "is storage target site-a's folder"),
        (str(root_a / "LIB" / "new"), "inside storage target site-a's folder"),
        (str(catalog.parent), "contains the archive's catalog folder"),
    ]


def test_dest_inside_the_archive_is_refused_in_any_spelling_before_anything_is_written(archive, tmp_path, capsys):
    (tmp_path / "elsewhere").mkdir()
    cases = _inside_archive_cases(archive, tmp_path)
    before = tree_state(archive.folder)
    for dest, phrase in cases:
        code, out, err = archive.restore(capsys, dest, json_out=False)
        assert code == 2, (dest, err)
        assert dest.rstrip("/") in err or dest in err, (dest, err)
        assert phrase in err, (dest, err)
    assert tree_state(archive.folder) == before   # not a byte written: no temp folder, no lock, no event
    assert archive.events("dissemination") == []


def test_a_folder_beside_the_archive_is_still_accepted(archive, tmp_path, capsys):
    """Only the archive's own folders are refused: a sibling of the catalog is fine."""
    catalog = Path(archive.config.catalog)
    for dest in (catalog.parent / "restored-here", catalog.parent / catalog.name.upper()):
        # case is significant on Linux: CATALOG is another folder than catalog
        code, out, err = archive.restore(capsys, dest, "--payload-only")
        assert code == 0, err
        assert tree(dest) == tree(archive.source)
        assert _leftovers(dest.parent, dest.name) == []


def _lock_path(dest: Path) -> Path:
    return dest.parent / f".{dest.name}.restore-strongroom.lock"


def _temp_path(dest: Path) -> Path:
    return dest.parent / f".{dest.name}.restore-strongroom"


def test_a_restore_killed_with_sigkill_leaves_nothing_after_its_rerun(archive, tmp_path, capsys):
    """A real `strongroom restore` process, stopped once its temporary folder exists, then killed -9."""
    import signal
    import subprocess
    import sys
    import time

    dest = tmp_path / "out" / "bag"
    dest.parent.mkdir()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    caught = False
    for attempt in range(5):
        proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "--config", str(archive.cfg), "restore",
                                 archive.bag, str(dest)], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < deadline:
            temps = [dest.parent / n for n in _leftovers(dest.parent, dest.name)]
            if any((t / "data").is_dir() for t in temps):
                proc.send_signal(signal.SIGSTOP)   # frozen mid-restore: the temp folder is being filled
                break
            time.sleep(0.0005)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if _leftovers(dest.parent, dest.name) and not dest.exists():
            caught = True
            break
        shutil.rmtree(dest, ignore_errors=True)   # it finished first: try again
    assert caught, "the restore always finished before it could be stopped"
    code, out, err = archive.restore(capsys, dest)
    assert code == 0, err
    assert validate_bag(dest).valid
    assert sorted(os.listdir(dest.parent)) == ["bag"]   # the stale folder and the lock file are gone


def test_a_live_restore_into_the_same_dest_is_not_disturbed(archive, tmp_path, capsys):
    import fcntl

    dest = tmp_path / "busy"
    lock = _lock_path(dest)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    os.write(fd, b"strongroom restore temporary folder lock\nfolder: .busy.restore-strongroom\n")
    _temp_path(dest).mkdir()
    (_temp_path(dest) / "half-written").write_bytes(b"x")
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        code, out, err = archive.restore(capsys, dest, json_out=False)
        assert code == 2 and "another restore" in err and str(dest) in err
        assert (_temp_path(dest) / "half-written").exists() and lock.exists()
    finally:
        os.close(fd)
    # the holder died without cleaning up: now the folder is stale and the rerun removes it
    code, out, err = archive.restore(capsys, dest, json_out=False)
    assert code == 0, err
    assert sorted(os.listdir(tmp_path)) == ["archive", "busy"]


def test_a_folder_in_the_way_that_no_lock_names_is_never_removed(archive, tmp_path, capsys):
    dest = tmp_path / "mine"
    stranger = _temp_path(dest)
    stranger.mkdir()
    (stranger / "precious.txt").write_text("not Strongroom's")
    code, out, err = archive.restore(capsys, dest, json_out=False)
    assert code == 2 and "in the way" in err and str(stranger) in err
    assert (stranger / "precious.txt").read_text() == "not Strongroom's"
    assert not _lock_path(dest).exists() and not dest.exists()


def test_a_lock_file_that_is_not_a_restores_is_left_alone(archive, tmp_path, capsys):
    dest = tmp_path / "d"
    _lock_path(dest).write_text("someone else's notes")
    code, out, err = archive.restore(capsys, dest, json_out=False)
    assert code == 2 and "in the way" in err
    assert _lock_path(dest).read_text() == "someone else's notes"
    assert sorted(os.listdir(tmp_path)) == sorted(["archive", _lock_path(dest).name])


# --------------------------------------------------------------------------------------------
# Killed after DEST is in place, before the restore is recorded


class _Killed(BaseException):
    """Stands for SIGKILL: nothing of the restore's own cleanup runs after it."""


def _restore_killed_after_rename(archive: Archive, dest: Path, monkeypatch, *, payload_only: bool = False,
                                 recorded: bool = False) -> None:
    """Run a restore in-process that dies like a kill -9 just after DEST is put in place (before the
    dissemination event, or with `recorded` just after it): its lock file stays, as a kill leaves it."""
    from fixity.restore import restore_bag

    with dies_after_rename(monkeypatch, recorded=recorded):
        if recorded:
            restore_bag(archive.config, archive.bag, dest, payload_only=payload_only)
        else:
            with pytest.raises(_Killed):
                restore_bag(archive.config, archive.bag, dest, payload_only=payload_only)
    assert dest.is_dir() and _lock_path(dest).exists()


@contextlib.contextmanager
def dies_after_rename(monkeypatch, *, recorded: bool = False):
    """While inside, a restore dies like a kill -9 (raising _Killed) when it records its dissemination
    success (or, with `recorded`, just after), and leaves its lock file as a kill does."""
    from fixity.restore_dest import TempFolder

    real_append = Catalog.append_events

    def append(self, events):
        if not recorded and any(e.type == "dissemination" and e.outcome == "success" for e in events):
            raise _Killed()
        return real_append(self, events)

    def release(self, remove_folder=True):   # the kernel drops the flock; nothing is removed
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    with monkeypatch.context() as m:
        m.setattr(Catalog, "append_events", append)
        m.setattr(TempFolder, "release", release)
        yield


@pytest.mark.parametrize("payload_only", [False, True], ids=["whole-bag", "payload-only"])
@pytest.mark.parametrize("recorded", [False, True], ids=["before-the-record", "after-the-record"])
def test_a_restore_killed_once_dest_is_in_place_is_checked_and_recorded_once_by_its_rerun(
        archive, tmp_path, capsys, monkeypatch, payload_only, recorded):
    dest = tmp_path / "out" / "bag"
    dest.parent.mkdir()
    _restore_killed_after_rename(archive, dest, monkeypatch, payload_only=payload_only, recorded=recorded)
    assert len(archive.events("dissemination")) == (1 if recorded else 0)
    extra = ["--payload-only"] if payload_only else []
    code, out, err = archive.restore(capsys, dest, *extra)
    assert code == 0, err
    assert any("checked again" in w for w in out["warnings"]), out
    if payload_only:
        assert tree(dest) == tree(archive.source)
    else:
        assert validate_bag(dest).valid and _source_files(dest / "data") == _source_files(archive.source)
    done = archive.events("dissemination")
    assert [e["outcome"] for e in done] == ["success"] and out["events"] == [done[0]["event_id"]]
    assert sorted(os.listdir(dest.parent)) == ["bag"]     # the lock file (and any temp folder) gone
    code, out, err = archive.restore(capsys, dest, *extra, json_out=False)
    assert code == 2 and "not empty" in err                # once recorded, DEST is an ordinary full folder


def test_a_dest_changed_after_a_killed_restore_is_reported_and_nothing_is_deleted(archive, tmp_path, capsys,
                                                                                   monkeypatch):
    dest = tmp_path / "out" / "bag"
    dest.parent.mkdir()
    _restore_killed_after_rename(archive, dest, monkeypatch)
    changed = dest / "data" / "sub dir" / "a b.txt"
    changed.write_bytes(b"hello, World\n")                 # same size, other bytes
    (dest / "data" / "stray.txt").write_bytes(b"not restored\n")
    (dest / "bag-info.txt").write_bytes((dest / "bag-info.txt").read_bytes() + b"X-Note: edited\n")
    code, out, err = archive.restore(capsys, dest, json_out=False)
    assert code == 1, err
    for name in ("data/sub dir/a b.txt: checksum mismatch", "data/stray.txt: an extra file",
                 "bag-info.txt: size differs"):
        assert name in err, err
    assert changed.read_bytes() == b"hello, World\n" and (dest / "data" / "stray.txt").exists()
    assert archive.events("dissemination") == [] and _lock_path(dest).exists()
    code, out, err = archive.restore(capsys, dest, json_out=False)
    assert code == 1                                       # the same answer until someone looks
    shutil.rmtree(dest)
    code, out, err = archive.restore(capsys, dest)         # removed by hand: a fresh restore
    assert code == 0, err
    assert validate_bag(dest).valid and sorted(os.listdir(dest.parent)) == ["bag"]


def test_a_killed_restore_is_finished_only_by_the_same_command(archive, tmp_path, capsys, monkeypatch):
    dest = tmp_path / "out" / "bag"
    dest.parent.mkdir()
    _restore_killed_after_rename(archive, dest, monkeypatch)
    before = tree(dest)
    code, out, err = archive.restore(capsys, dest, "--payload-only", json_out=False)
    assert code == 2 and "not empty" in err and "was put in place by a run stopped" in err, err
    assert tree(dest) == before and _lock_path(dest).exists() and archive.events("dissemination") == []
    code, out, err = archive.restore(capsys, dest)
    assert code == 0, err
    assert len(archive.events("dissemination")) == 1 and sorted(os.listdir(dest.parent)) == ["bag"]


def test_a_state_line_never_vouches_for_a_dest_the_rename_did_not_make(archive, tmp_path, capsys, monkeypatch):
    """Killed after the state line was written but before the rename: DEST (here someone's full
    folder) was never Strongroom's, and stays refused; the stale temporary folder is removed."""
    from fixity.restore_dest import TempFolder

    dest = tmp_path / "out" / "bag"
    dest.parent.mkdir()
    real_write = TempFolder.write_state

    def write_then_die(self, state):
        real_write(self, state)
        os.close(self._fd)
        self._fd = None
        raise _Killed()

    monkeypatch.setattr(TempFolder, "write_state", write_then_die)
    monkeypatch.setattr("fixity.restore.remove_tree", lambda *a, **k: None)   # no cleanup after a kill
    with pytest.raises(_Killed):
        from fixity.restore import restore_bag
        restore_bag(archive.config, archive.bag, dest)
    monkeypatch.undo()
    assert _temp_path(dest).is_dir() and b"state: " in _lock_path(dest).read_bytes() and not dest.exists()
    dest.mkdir()
    (dest / "mine.txt").write_text("someone's")
    code, out, err = archive.restore(capsys, dest, json_out=False)
    assert code == 2 and "is not empty" in err and "was put in place" not in err, err
    assert (dest / "mine.txt").read_text() == "someone's"
    (dest / "mine.txt").unlink()
    code, out, err = archive.restore(capsys, dest)
    assert code == 0, err
    assert validate_bag(dest).valid and sorted(os.listdir(dest.parent)) == ["bag"]


# --------------------------------------------------------------------------------------------
# --partial: every good file written, each missing one listed, exit 1, recorded as a warning


def test_partial_writes_every_good_file_and_lists_the_one_damaged_on_every_copy(archive, tmp_path, capsys):
    archive.damage("site-a", CHINESE, "flip")
    archive.damage("site-b", CHINESE, "truncate")
    dest = tmp_path / "partial"
    code, out, err = archive.restore(capsys, dest, "--payload-only", "--partial")
    assert code == 1 and out["exit_code"] == 1 and out["restored"] is True
    assert out["missing"] == [CHINESE] and "site-a" in out["missing_detail"][0]
    assert f"missing: {CHINESE}" in err
    want = {k: v for k, v in tree(archive.source).items() if k != CHINESE[len("data/"):]}
    assert tree(dest) == want                      # every other file, byte-identical, mtimes, empty folders
    assert _leftovers(tmp_path, "partial") == []
    [event] = archive.events("dissemination")
    assert event["outcome"] == "warning"
    assert "3 of 4 files written, 1 left out" in event["detail"] and CHINESE in event["detail"]
    assert archive.state("site-a") == archive.state("site-b") == "damaged"


def test_partial_whole_bag_keeps_the_tag_files_and_text_names_the_missing_file(archive, tmp_path, capsys):
    for target in ("site-a", "site-b"):
        archive.damage(target, "data/big.bin", "delete")
    dest = tmp_path / "partial-bag"
    code, out, err = archive.restore(capsys, dest, "--partial", json_out=False)
    assert code == 1
    assert "Partially restored bag" in out and "missing: data/big.bin" in err
    assert (dest / "bagit.txt").is_file() and not (dest / "data" / "big.bin").exists()
    report = validate_bag(dest)                    # incomplete on purpose: only the file left out is missing
    assert {p.path for p in report.problems if p.path.startswith("data/")} == {"data/big.bin"}
    assert (dest / "data" / "sub dir" / "a b.txt").read_bytes() == FILES["sub dir/a b.txt"][0]


def test_partial_with_nothing_missing_is_an_ordinary_restore(archive, tmp_path, capsys):
    code, out, err = archive.restore(capsys, tmp_path / "full", "--partial", "--payload-only")
    assert code == 0 and out["missing"] == []
    assert [e["outcome"] for e in archive.events("dissemination")] == ["success"]


def test_partial_still_reads_copies_already_marked_damaged_by_a_restore_or_an_audit(archive, tmp_path, capsys):
    """Issue 18: the first --partial run (or an audit) marks both copies damaged; --partial must
    keep reading them, writing every file that verifies and nothing that does not."""
    archive.damage("site-a", CHINESE, "flip")
    archive.damage("site-b", CHINESE, "truncate")
    want = {k: v for k, v in tree(archive.source).items() if k != CHINESE[len("data/"):]}
    code, out, err = archive.restore(capsys, tmp_path / "first", "--payload-only", "--partial")
    assert code == 1 and archive.state("site-a") == archive.state("site-b") == "damaged"
    assert "could not be set" not in err and not any("could not be set" in w for w in out["warnings"])
    code, out, err = archive.restore(capsys, tmp_path / "refused", "--payload-only")
    assert code == 1 and "no verified (or repaired) replica" in err and not (tmp_path / "refused").exists()
    for run in ("second", "after-audit"):
        if run == "after-audit":
            assert main(["--config", str(archive.cfg), "audit", "--bag", archive.bag]) == 1
            capsys.readouterr()
            assert archive.state("site-a") == archive.state("site-b") == "damaged"
        dest = tmp_path / run
        code, out, err = archive.restore(capsys, dest, "--payload-only", "--partial")
        assert code == 1 and out["restored"] is True and out["missing"] == [CHINESE], err
        assert tree(dest) == want                  # every good file, byte-identical, and not the bad one
        assert _leftovers(tmp_path, run) == []
        assert archive.events("dissemination")[-1]["outcome"] == "warning"
        assert archive.state("site-a") == archive.state("site-b") == "damaged"
