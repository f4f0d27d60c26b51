"""Issue 10, the audit's side: a damaged catalog never costs data, and "verified" means an
independent, byte-identical copy read as itself.

* extra files: only what neither the catalog nor a majority of copies' own (vouched) manifests
  list; moved aside, never deleted; a catalog that lost file rows removes nothing;
* two copies that disagree with nothing independent to decide: both reported, both kept;
  a bag with a `disputed` copy gets no repair at all;
* reads follow no link at any level: a linked bag or collection folder, `data/` as a link, a
  link, FIFO or folder in place of a file are damage, named, moved aside, repaired (with openat2
  and with the O_NOFOLLOW walk);
* copies sharing files on disk (hard links) are one copy: the later one is re-replicated;
* a quick check never clears damage a deep check found, nor loses what it was and since when.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import textwrap
from pathlib import Path
from typing import Dict, List

import pyarrow.compute as pc
import pytest

from catalog.catalog import Catalog
from fixity import audit as A
from fixity import repair as R
from fixity.judge_payload import _majority
from strongroom.bag_id import BagId
from storage_adapters import safe_open
from storage_adapters.base import NotFound, OddObject
from storage_adapters.filesystem import ASIDE_DIR, FilesystemAdapter
from tests.test_audit import FILES, Archive, copy_archive, deposit, make_source, write_archive


def write_two_site_archive(root: Path) -> Path:
    """Two filesystem targets (the default `init` layout has two), policy keeps a copy on each."""
    for d in ("catalog", "staging", "policies", "replicas/a", "replicas/b"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "strongroom.yaml").write_text(textwrap.dedent("""\
        catalog: ./catalog
        staging: ./staging
        policies: ./policies
        storage:
          site-a: {type: filesystem, root: ./replicas/a, site: beijing}
          site-b: {type: filesystem, root: ./replicas/b, site: wuhan}
        """), encoding="utf-8")
    (root / "policies" / "self-built.yaml").write_text(textwrap.dedent("""\
        name: self-built
        checksums: [sha256, md5]
        replicas: [site-a, site-b]
        fixity: {deep_every: 90d, quick_every: 7d, daily_byte_budget: 500GB}
        """), encoding="utf-8")
    return root / "strongroom.yaml"


@pytest.fixture(scope="module")
def deposited3(tmp_path_factory):
    base = tmp_path_factory.mktemp("trust3")
    cfg = write_archive(base / "archive")
    bags = deposit(cfg, make_source(base / "source", FILES))
    return base / "archive", bags


@pytest.fixture(scope="module")
def deposited2(tmp_path_factory):
    base = tmp_path_factory.mktemp("trust2")
    cfg = write_two_site_archive(base / "archive")
    bags = deposit(cfg, make_source(base / "source", FILES))
    return base / "archive", bags


@pytest.fixture
def arch(deposited3, tmp_path) -> Archive:
    return copy_archive(deposited3[0], tmp_path / "archive", deposited3[1])


@pytest.fixture
def arch2(deposited2, tmp_path) -> Archive:
    return copy_archive(deposited2[0], tmp_path / "archive", deposited2[1])


@pytest.fixture(params=["openat2", "walk"])
def read_mode(request, monkeypatch):
    """Every read-path test runs with openat2 (where the kernel has it) and with the fallback walk."""
    if request.param == "openat2":
        safe_open.set_available(None)   # where the kernel lacks it, this is the walk again
    else:
        safe_open.set_available(False)
    yield request.param
    safe_open.set_available(None)


def payload(arch: Archive, target: str) -> Dict[str, bytes]:
    return {k: v for k, v in arch.tree(target).items() if k.startswith("data/")}


def aside(arch: Archive, target: str) -> Path:
    return Path(arch.config.target(target).root) / ASIDE_DIR


def aside_entries(arch: Archive, target: str) -> List[Path]:
    root = aside(arch, target)
    return sorted(root.rglob("*")) if root.exists() else []


def make_writable(p: Path) -> None:
    for dirpath, dirnames, filenames in os.walk(p):
        os.chmod(dirpath, 0o755)
        for f in filenames:
            fp = os.path.join(dirpath, f)
            if not os.path.islink(fp):
                os.chmod(fp, 0o644)


def forge(arch: Archive, target: str, rel: str, data: bytes) -> None:
    """A consistent forgery on one copy: the file, its manifest lines and the tag manifests."""
    arch.put(target, rel, data)
    for alg in ("sha256", "md5"):
        man = arch.path(target, f"manifest-{alg}.txt")
        lines = man.read_text("utf-8").splitlines()
        new = hashlib.new(alg, data).hexdigest()
        lines = [f"{new}  {rel}" if ln.endswith(f"  {rel}") else ln for ln in lines]
        arch.put(target, f"manifest-{alg}.txt", ("\n".join(lines) + "\n").encode())
    for alg in ("sha256", "md5"):
        tm = arch.path(target, f"tagmanifest-{alg}.txt")
        out = []
        for ln in tm.read_text("utf-8").splitlines():
            digest, name = ln.split("  ", 1)
            if name.startswith("manifest-"):
                digest = hashlib.new(alg, arch.path(target, name).read_bytes()).hexdigest()
            out.append(f"{digest}  {name}")
        arch.put(target, f"tagmanifest-{alg}.txt", ("\n".join(out) + "\n").encode())


# --------------------------------------------------------------------------------------------
# 1. Extra never deletes a listed file


@pytest.fixture
def catalog_lost_rows(monkeypatch):
    """The catalog's file rows of a bag partly lost, in a way no table-level check would see:
    the audit is handed an ExpectedBag without them (as a lost Parquet file of `files` did)."""
    real = A.ExpectedBag._read.__func__
    lost: Dict[str, List[str]] = {}

    def read(cls, catalog, bag_id, policy=None):
        exp = real(cls, catalog, bag_id, policy)
        drop = lost.get(bag_id)
        if drop is None:
            return exp
        rows = exp.table()
        keep = rows.filter(pc.invert(pc.is_in(rows.column("path"), value_set=__import__("pyarrow").array(drop))))
        exp.files = keep
        return exp

    monkeypatch.setattr(A.ExpectedBag, "_read", classmethod(read))
    A._EXPECTED_CACHE.clear()
    yield lost
    A._EXPECTED_CACHE.clear()


@pytest.mark.parametrize("which", ["three-copies-all-rows", "two-copies-all-rows", "two-copies-one-row"])
def test_lost_catalog_rows_never_remove_a_listed_file(capsys, deposited3, deposited2, tmp_path, catalog_lost_rows,
                                                      which):
    folder, bags = deposited3 if which.startswith("three") else deposited2
    arch = copy_archive(folder, tmp_path / "archive", bags)
    targets = ["site-a", "site-b", "site-c"] if which.startswith("three") else ["site-a", "site-b"]
    before = {t: arch.tree(t) for t in targets}
    rows = [f"data/{p}" for p in FILES] if "all-rows" in which else ["data/a.txt"]
    catalog_lost_rows[arch.bag] = rows
    code, s, _ = arch.audit(capsys, "--bag", arch.bag)
    assert code == 1, s
    for t in targets:
        assert arch.tree(t) == before[t], t                    # nothing removed, nothing changed
        assert aside_entries(arch, t) == []                    # not even moved aside
    bag_findings = [f for b in arch.bag_results(s) for f in b["bag_findings"]]
    assert any(f["kind"] == A.CATALOG_DISAGREES and "listed by the bag's own manifests" in f["detail"]
               and "data/a.txt" in f["detail"] for f in bag_findings), bag_findings
    assert not [e for e in arch.events(["deletion", "quarantine"])]
    assert not any(f["kind"] == A.EXTRA for f in arch.findings(s))


def test_extra_file_is_moved_aside_not_deleted(capsys, arch):
    arch.put("site-c", "data/stray.bin", b"planted\n")
    code, s, _ = arch.audit(capsys, "--bag", arch.bag)
    assert code == 0, s
    assert not arch.path("site-c", "data/stray.bin").exists()
    kept = [p for p in aside_entries(arch, "site-c") if p.name == "stray.bin"]
    assert len(kept) == 1 and kept[0].read_bytes() == b"planted\n"
    assert kept[0].relative_to(aside(arch, "site-c")).parts[1:] == tuple(arch.bag.split("/")) + ("data", "stray.bin")
    events = arch.events(["quarantine"])
    assert [e["outcome"] for e in events] == ["warning", "success"]    # announced before, done after
    assert "sha256 " + hashlib.sha256(b"planted\n").hexdigest() in events[1]["detail"]
    assert str(kept[0]) in events[1]["detail"]
    assert not arch.events(["deletion"])
    # The moved-aside folder is not a library: list_bags and a later audit ignore it.
    adapter = FilesystemAdapter("site-c", "x", arch.config.target("site-c").root)
    assert sorted(str(b) for b in adapter.list_bags()) == sorted(arch.bags)
    code, s, _ = arch.audit(capsys, "--bag", arch.bag)
    assert code == 0


def test_extra_needs_a_majority_of_intact_manifests(capsys, arch2):
    """Two copies, one of whose manifests is damaged: one intact manifest of two is no majority,
    so a file the catalog lacks is left where it is (and the damaged manifest is repaired)."""
    arch2.put("site-a", "data/stray.bin", b"planted\n")
    arch2.flip("site-b", "manifest-md5.txt")
    arch2.flip("site-b", "manifest-sha256.txt")
    verdict = R.trust.judge_extras
    looks = {t: A.check_replica(FilesystemAdapter(t, "x", arch2.config.target(t).root),
                                A.ExpectedBag.from_catalog(arch2.catalog, arch2.bag), kind=A.DEEP)
             for t in ("site-a", "site-b")}
    v = verdict(looks, 2)
    assert "data/stray.bin" in v.undecided and not v.extra
    v3 = verdict({"site-a": looks["site-a"]}, 1)
    assert v3.extra == {"data/stray.bin"}


# --------------------------------------------------------------------------------------------
# 2. Copies that disagree with nothing independent to decide


def test_two_copies_against_the_catalog_are_never_settled_by_counting(capsys, arch2):
    """Both copies differ from the catalog, each consistently forged: no majority of two exists,
    both are reported and both kept as they are."""
    forge(arch2, "site-a", "data/a.txt", b"A" * len(FILES["a.txt"]))
    forge(arch2, "site-b", "data/a.txt", b"B" * len(FILES["a.txt"]))
    before = {t: arch2.tree(t) for t in ("site-a", "site-b")}
    code, s, _ = arch2.audit(capsys, "--bag", arch2.bag)
    assert code == 1
    assert {t: arch2.tree(t) for t in ("site-a", "site-b")} == before
    kinds = {f["kind"] for f in arch2.findings(s)}
    assert A.NO_GOOD_COPY in kinds and A.CATALOG_DISAGREES not in kinds


def test_majority_needs_more_than_half_of_all_copies(arch2):
    """`_majority` with two copies that agree with each other against the catalog: no winner."""
    forge(arch2, "site-a", "data/a.txt", b"C" * len(FILES["a.txt"]))
    forge(arch2, "site-b", "data/a.txt", b"C" * len(FILES["a.txt"]))
    exp = A.ExpectedBag.from_catalog(arch2.catalog, arch2.bag)
    adapters = {t: FilesystemAdapter(t, "x", arch2.config.target(t).root) for t in ("site-a", "site-b")}
    looks = {t: A.check_replica(a, exp, kind=A.DEEP) for t, a in adapters.items()}
    copies = R._Copies(exp, looks)
    damaged = [(t, copies.problems[t]["data/a.txt"]) for t in looks]
    assert _majority(exp, copies, adapters, "data/a.txt", damaged, 2, A.DEFAULT_RETRY) is None
    # Three copies, two agreeing with their manifests: that is a majority of all copies.
    looks3 = dict(looks, **{"site-c": looks["site-b"]})
    copies3 = R._Copies(exp, looks3)
    adapters3 = dict(adapters, **{"site-c": adapters["site-b"]})
    ref = _majority(exp, copies3, adapters3, "data/a.txt", damaged + [("site-c", damaged[1][1])], 3,
                    A.DEFAULT_RETRY)
    assert ref is not None and ref.digests["sha256"] == hashlib.sha256(b"C" * len(FILES["a.txt"])).hexdigest()
    # ... but not when a voter's manifest is not vouched for by its own tag manifest.
    arch2.put("site-b", "tagmanifest-sha256.txt", b"0" * 64 + b"  manifest-sha256.txt\n")
    arch2.put("site-b", "tagmanifest-md5.txt", b"0" * 32 + b"  manifest-md5.txt\n")
    looks["site-b"] = A.check_replica(adapters["site-b"], exp, kind=A.DEEP)
    looks3 = dict(looks, **{"site-c": looks["site-b"]})
    copies3 = R._Copies(exp, looks3)
    assert _majority(exp, copies3, adapters3, "data/a.txt", damaged + [("site-c", damaged[1][1])], 3,
                     A.DEFAULT_RETRY) is None


@pytest.fixture
def disputed_state(monkeypatch):
    """`disputed` in the replica states (added by the catalog; set here too if not there yet)."""
    import catalog.schema as schema

    if R.DISPUTED_STATE not in schema.REPLICA_STATES:
        monkeypatch.setattr(schema, "REPLICA_STATES", schema.REPLICA_STATES + (R.DISPUTED_STATE,))
    return R.DISPUTED_STATE


def test_a_disputed_bag_gets_no_repair(capsys, arch2, disputed_state):
    import dataclasses

    rec = arch2.replica("site-a")
    arch2.catalog.record_replica(dataclasses.replace(rec, state=disputed_state, detail="catalog rebuild: the copies "
                                                     "disagree", recorded_at=rec.recorded_at.now(rec.recorded_at.tzinfo)))
    arch2.flip("site-b", "data/a.txt")
    arch2.put("site-a", "data/stray.bin", b"planted\n")
    before = {t: arch2.tree(t) for t in ("site-a", "site-b")}
    code, s, _ = arch2.audit(capsys, "--bag", arch2.bag)
    assert code == 1
    assert {t: arch2.tree(t) for t in ("site-a", "site-b")} == before      # nothing repaired, moved, deleted
    found = [f for b in arch2.bag_results(s) for f in b["bag_findings"] if f["kind"] == A.DISPUTED]
    assert found and "the copies disagree and nothing independent decides; left for a person" in found[0]["detail"]
    assert arch2.replica("site-a").state == disputed_state                  # only a person resolves it
    assert not arch2.repair_events() and not arch2.events(["quarantine"])


# --------------------------------------------------------------------------------------------
# 3. Reads that cannot be fooled (and 4b: a collection folder linked into another target)


def _odd_fifo(arch, t, tmp):
    p = arch.path(t, "data/a.txt")
    p.unlink()
    os.mkfifo(p)
    return "data/a.txt", A.NOT_A_FILE, p


def _odd_socket(arch, t, tmp):
    import socket

    p = arch.path(t, "data/a.txt")
    p.unlink()
    # bound by a short relative name from inside its folder: an AF_UNIX address holds ~107 bytes,
    # less than a pytest tmp path in a deep CI checkout (binding str(p) fails there)
    here = os.getcwd()
    os.chdir(p.parent)
    try:
        with socket.socket(socket.AF_UNIX) as sock:   # a socket file cannot even be opened (ENXIO)
            sock.bind(p.name)
    finally:
        os.chdir(here)
    assert stat.S_ISSOCK(p.lstat().st_mode)
    return "data/a.txt", A.NOT_A_FILE, p


def _odd_folder(arch, t, tmp):
    p = arch.path(t, "data/a.txt")
    p.unlink()
    p.mkdir()
    (p / "inner.txt").write_bytes(b"kept, never deleted\n")
    return "data/a.txt", A.NOT_A_FILE, p


def _odd_symlink(arch, t, tmp):
    outside = tmp / "outside.txt"
    outside.write_bytes(FILES["a.txt"])
    p = arch.path(t, "data/a.txt")
    p.unlink()
    p.symlink_to(outside)
    return "data/a.txt", A.NOT_A_FILE, p


def _odd_data_link(arch, t, tmp):
    p = arch.path(t, "data")
    make_writable(p)
    shutil.rmtree(p)
    p.symlink_to(arch.path("site-b", "data"))
    return "data", A.NOT_A_FILE, p


def _odd_bag_link(arch, t, tmp):
    """The bag folder replaced by a link to a folder whose file differs (the issue's case)."""
    fake = tmp / "fake"
    shutil.copytree(arch.path(t), fake)
    make_writable(fake)
    (fake / "data" / "a.txt").write_bytes(b"changed\n")
    p = arch.path(t)
    make_writable(p)
    shutil.rmtree(p)
    p.symlink_to(fake)
    return None, A.BAG_NOT_A_FOLDER, p


def _odd_collection_link(arch, t, tmp):
    """site-a's collection folder a link to site-b's: one copy seen twice."""
    p = arch.path(t).parent
    make_writable(p)
    shutil.rmtree(p)
    p.symlink_to(arch.path("site-b").parent)
    return None, A.BAG_NOT_A_FOLDER, p


ODD = {"fifo": _odd_fifo, "socket": _odd_socket, "folder-in-place": _odd_folder, "symlink-file": _odd_symlink,
       "data-is-a-link": _odd_data_link, "bag-folder-link": _odd_bag_link,
       "collection-folder-link": _odd_collection_link}


@pytest.mark.parametrize("case", sorted(ODD))
def test_odd_objects_are_damage_moved_aside_and_repaired(capsys, arch, tmp_path, read_mode, case):
    t = "site-a"
    good = arch.tree("site-b")
    other_before = arch.tree("site-b")
    make_writable(arch.path(t, "data"))
    path, kind, odd = ODD[case](arch, t, tmp_path)
    link_target = os.readlink(odd) if odd.is_symlink() else None
    code, s, _ = arch.audit(capsys, "--bag", arch.bag)
    assert code == 0, s
    found = [f for f in arch.findings(s) if f["target"] == t and f["kind"] == kind]
    assert found and (path is None or any(f["path"] == path for f in found)), arch.findings(s)
    assert arch.tree(t) == good                              # repaired from a good copy
    assert not arch.path(t).is_symlink() and not arch.path(t).parent.is_symlink()
    assert arch.tree("site-b") == other_before               # the copy a link led to is untouched
    moved = [p for p in aside_entries(arch, t) if p.name == odd.name and (p.is_symlink() or not p.is_dir()
                                                                            or case == "folder-in-place")]
    assert moved, aside_entries(arch, t)                     # the odd object itself, moved aside
    if link_target is not None:
        assert any(p.is_symlink() and os.readlink(p) == link_target for p in moved)
    if case == "folder-in-place":
        assert (moved[0] / "inner.txt").read_bytes() == b"kept, never deleted\n"
    if case in ("fifo", "socket"):
        assert any((stat.S_ISFIFO if case == "fifo" else stat.S_ISSOCK)(p.lstat().st_mode) for p in moved)
    assert arch.replica(t).state == "repaired"
    code, s, _ = arch.audit(capsys, "--bag", arch.bag)
    assert code == 0 and s["counts"]["success"] == 3


def test_adapter_reads_follow_no_link_at_any_level(arch, read_mode, tmp_path):
    a = FilesystemAdapter("site-a", "x", arch.config.target("site-a").root)
    bag = BagId.parse(arch.bag)
    make_writable(arch.path("site-a", "data"))
    sub = arch.path("site-a", "data/sub dir")
    shutil.rmtree(sub)
    sub.symlink_to(arch.path("site-b", "data/sub dir"))
    for call in (lambda: a.open_file(bag, "data/sub dir/b b.bin"), lambda: a.stat_file(bag, "data/sub dir/b b.bin"),
                 lambda: a.open_with_stat(bag, "data/sub dir/b b.bin")):
        with pytest.raises(OddObject) as info:
            call()
        assert info.value.key == f"{arch.bag}/data/sub dir" and info.value.what == "a symbolic link"
    fifo = arch.path("site-a", "data/a.txt")
    fifo.unlink()
    os.mkfifo(fifo)
    with pytest.raises(OddObject) as info:
        a.open_file(bag, "data/a.txt")                       # never blocks on the FIFO
    assert "FIFO" in info.value.what
    with pytest.raises(OddObject):
        a.stat_file(bag, "data/a.txt")
    st, fh = a.open_with_stat(bag, "data/same-1.bin")
    with fh:
        assert fh.read() == FILES["same-1.bin"]
    real = os.stat(arch.path("site-a", "data/same-1.bin"))
    assert st.identity == (real.st_dev, real.st_ino) and st.links == 1
    where = a.move_aside(bag, f"{arch.bag}/data/sub dir", "20260101T000000Z")
    assert os.path.islink(where) and not sub.exists()
    with pytest.raises(NotFound):
        a.move_aside(bag, f"{arch.bag}/data/sub dir", "20260101T000000Z")
    with pytest.raises(Exception):
        a.move_aside(bag, "LIB/OTHER", "20260101T000000Z")   # not this bag nor one of its folders


# --------------------------------------------------------------------------------------------
# 4a. Copies that are one copy on disk


def test_hard_linked_copies_are_one_copy_and_the_later_is_replicated_again(capsys, arch):
    a_bag, b_bag = arch.path("site-a"), arch.path("site-b")
    make_writable(b_bag)
    shutil.rmtree(b_bag)
    shutil.copytree(a_bag, b_bag, copy_function=os.link)      # every file of site-b is site-a's
    a_inodes = {p: p.stat().st_ino for p in a_bag.rglob("*") if p.is_file()}
    assert all(p.stat().st_nlink == 2 for p in a_inodes)
    code, s, _ = arch.audit(capsys, "--bag", arch.bag)
    assert code == 0, s
    shared = [f for f in arch.findings(s) if f["kind"] == A.SHARED_STORAGE]
    assert {f["target"] for f in shared} == {"site-b"}       # the later copy in config order
    assert {f["path"] for f in shared} >= {"data/a.txt", "bagit.txt", "manifest-sha256.txt"}
    assert "is the same file on disk as site-a's copy" in shared[0]["detail"]
    for p, ino in a_inodes.items():                          # site-a's files untouched
        assert p.stat().st_ino == ino and p.stat().st_nlink == 1
        q = b_bag / p.relative_to(a_bag)
        assert q.read_bytes() == p.read_bytes() and q.stat().st_ino != ino
    assert arch.tree("site-b") == arch.tree("site-c")
    code, s, _ = arch.audit(capsys, "--bag", arch.bag, "--quick")
    assert code == 0 and not [f for f in arch.findings(s) if f["kind"] == A.SHARED_STORAGE]


def test_hard_link_found_by_a_quick_check_too(capsys, arch):
    a, b = arch.path("site-a", "data/a.txt"), arch.path("site-b", "data/a.txt")
    arch.writable(b)
    b.unlink()
    os.link(a, b)
    code, s, _ = arch.audit(capsys, "--bag", arch.bag, "--quick")
    assert code == 0, s
    assert [(f["target"], f["path"]) for f in arch.findings(s) if f["kind"] == A.SHARED_STORAGE] == \
        [("site-b", "data/a.txt")]
    assert a.stat().st_ino != b.stat().st_ino and b.read_bytes() == FILES["a.txt"]


# --------------------------------------------------------------------------------------------
# 5. A quick check never clears damage a deep check found


def test_quick_success_keeps_the_open_damage_and_since_when(capsys, arch):
    arch.flip("site-a", "data/a.txt")
    code, s, _ = arch.audit(capsys, "--bag", arch.bag, "--no-repair")
    assert code == 1
    first = arch.replica("site-a")
    assert first.state == "damaged" and "corrupted" in first.detail and "data/a.txt" in first.detail
    since = R.open_since(first.detail)
    assert since is not None
    for _ in range(2):      # a second quick check keeps it too, with the first time it was found
        code, s, _ = arch.audit(capsys, "--bag", arch.bag, "--quick", "--no-repair")
        rec = arch.replica("site-a")
        assert rec.state == "damaged" and rec.last_audit_kind == "quick"
        assert "corrupted" in rec.detail and "data/a.txt" in rec.detail, rec.detail
        assert rec.detail.startswith(R.DETAIL_PREFIX + "(quick): success") and R.STILL_OPEN in rec.detail
        assert R.open_since(rec.detail) == since
        assert rec.detail.count(R.STILL_OPEN) == 1
    code, s, _ = arch.audit(capsys, "--bag", arch.bag)       # a deep check with repair clears it
    assert code == 0 and arch.replica("site-a").state == "repaired"


def test_inconclusive_check_keeps_the_open_damage(capsys, arch):
    arch.flip("site-a", "data/a.txt")
    code, s, _ = arch.audit(capsys, "--bag", arch.bag, "--no-repair")
    since = R.open_since(arch.replica("site-a").detail)
    root = Path(arch.config.target("site-a").root)
    root.rename(root.with_name("a-unmounted"))              # the volume is not mounted
    root.mkdir()
    code, s, _ = arch.audit(capsys, "--bag", arch.bag, "--no-repair")
    assert code == 1
    rec = arch.replica("site-a")
    assert rec.state == "damaged" and rec.last_audit_outcome == "inconclusive"
    assert "corrupted" in rec.detail and "data/a.txt" in rec.detail and R.open_since(rec.detail) == since


def test_one_bag_folder_seen_by_two_targets_is_one_copy(capsys, arch, monkeypatch):
    """site-c's bag folder is site-a's (as a bind mount makes it: every file has one link, so only
    the folders' identity tells): reported on site-c, the later copy, and left for a person."""
    real = FilesystemAdapter.folder_identity
    site_a = FilesystemAdapter("site-a", "x", arch.config.target("site-a").root)
    bag = BagId.parse(arch.bag)
    st = os.stat(arch.path("site-a"))
    assert real(site_a, bag) == (st.st_dev, st.st_ino)

    def mounted(self, bag_id):
        return real(site_a if self.name == "site-c" else self, bag_id)

    monkeypatch.setattr(FilesystemAdapter, "folder_identity", mounted)
    before = {t: arch.tree(t) for t in ("site-a", "site-b", "site-c")}
    code, s, _ = arch.audit(capsys, "--bag", arch.bag)
    assert code == 1
    shared = [f for f in arch.findings(s) if f["kind"] == A.SHARED_STORAGE]
    assert [(f["target"], f["path"]) for f in shared] == [("site-c", None)]
    assert "same folder on disk as site-a's copy" in shared[0]["detail"]
    assert arch.replica("site-c").state == "damaged" and arch.replica("site-a").state == "verified"
    assert {t: arch.tree(t) for t in ("site-a", "site-b", "site-c")} == before


def test_a_move_aside_stopped_before_its_record_is_recorded_by_the_rerun(capsys, arch, monkeypatch):
    """Stopped right after moving an extra file aside, before the bag's events are written: the
    ledger already said what would be moved where (one append before any move), and the rerun
    records the move itself, once, with the place it went."""
    arch.put("site-c", "data/stray.bin", b"planted\n")
    real = R._record

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("stopped before the bag's events are written")

    monkeypatch.setattr(R, "_record", killed)
    with pytest.raises(KeyboardInterrupt):
        R.audit_bag(arch.config, arch.catalog, arch.bag, {"site-c": A.DEEP},
                    {"site-c": A.check_replica(FilesystemAdapter("site-c", "x", arch.config.target("site-c").root),
                                               A.ExpectedBag.from_catalog(arch.catalog, arch.bag), kind=A.DEEP)})
    moved = [p for p in aside_entries(arch, "site-c") if p.name == "stray.bin"]
    assert len(moved) == 1 and moved[0].read_bytes() == b"planted\n"
    stamp = moved[0].relative_to(aside(arch, "site-c")).parts[0]
    intent = Catalog(arch.config.catalog).events(type=["quarantine"]).to_pylist()
    assert [(e["outcome"], e["path"]) for e in intent] == [("warning", "data/stray.bin")]
    assert stamp in intent[0]["detail"] and "about to move aside" in intent[0]["detail"]
    monkeypatch.setattr(R, "_record", real)
    for _ in range(2):   # the rerun (with the stopped run's check, as the task outputs keep it), then another
        R.audit_bag(arch.config, arch.catalog, arch.bag, {"site-c": A.DEEP},
                    {"site-c": A.check_replica(FilesystemAdapter("site-c", "x", arch.config.target("site-c").root),
                                               A.ExpectedBag.from_catalog(arch.catalog, arch.bag), kind=A.DEEP)
                     if _ else _stale_check(arch)})
    done = [e for e in Catalog(arch.config.catalog).events(type=["quarantine"]).to_pylist() if e["outcome"] == "success"]
    assert len(done) == 1 and str(moved[0]) in done[0]["detail"] and done[0]["path"] == "data/stray.bin"


def _stale_check(arch):
    """The check the stopped run made (it lists the stray file that is now aside)."""
    check = A.check_replica(FilesystemAdapter("site-c", "x", arch.config.target("site-c").root),
                            A.ExpectedBag.from_catalog(arch.catalog, arch.bag), kind=A.DEEP)
    check.extra_payload = ["data/stray.bin"]
    check.findings.append(A.Finding(A.EXTRA, "site-c", "data/stray.bin", "extra file"))
    return check


@pytest.mark.parametrize("alg", ["sha256", "md5"])
def test_a_digest_with_a_trailing_newline_is_refused(alg):
    """check_digests: one hex digit short plus a newline has the right length but is no digest."""
    from storage_adapters.base import check_digests

    good = hashlib.new(alg, b"x").hexdigest()
    assert check_digests({alg: good.upper()}) == {alg: good}
    for bad in (good[:-1] + "\n", good[:-1] + "g", good[:-1] + "\u0661", good + "\n"):
        with pytest.raises(ValueError, match=f"{alg} digest .* is not {len(good)} hex digits"):
            check_digests({alg: bad})
