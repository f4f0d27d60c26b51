"""`strongroom audit` on real deposits: each kind of damage named, inconclusive reads, exit codes,
the summary, unreachable targets, and a second concurrent run doing no duplicate work.

One collection is deposited through the real pipeline once per module on three filesystem
targets on three sites; each test works on its own copy of the whole archive folder.
"""

from __future__ import annotations

import datetime as dt
import errno
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Dict, List

import pytest

from catalog.catalog import Catalog
from fixity import audit as A
from pipelines.cli import main
from policies.config import load_config
from storage_adapters.filesystem import FilesystemAdapter
from storage_adapters.fs_read import FolderReads

REPO = Path(__file__).resolve().parents[1]

FILES: Dict[str, bytes] = {
    "a.txt": b"hello, world\n" * 40,
    "sub dir/b b.bin": bytes(range(256)) * 300,
    "中文/文件.txt": "善本书目\n".encode("utf-8") * 80,
    "pct%41.txt": b"100% literal\n" * 9,
    "same-1.bin": b"\x01" * 5000,
    "same-2.bin": b"\x02" * 5000,
}


# --------------------------------------------------------------------------------------------
# Helpers shared with the other audit test modules


def write_archive(root: Path, *, site_c_fixity: str = "", budget: str = "500GB", deep: str = "90d",
                  quick: str = "7d") -> Path:
    """Three filesystem targets on three sites; policy self-built keeps a copy on each."""
    for d in ("catalog", "staging", "policies", "replicas/a", "replicas/b", "replicas/c"):
        (root / d).mkdir(parents=True, exist_ok=True)
    extra = f", fixity: {site_c_fixity}" if site_c_fixity else ""
    (root / "strongroom.yaml").write_text(textwrap.dedent(f"""\
        catalog: ./catalog
        staging: ./staging
        policies: ./policies
        storage:
          site-a: {{type: filesystem, root: ./replicas/a, site: beijing}}
          site-b: {{type: filesystem, root: ./replicas/b, site: wuhan}}
          site-c: {{type: filesystem, root: ./replicas/c, site: shanghai{extra}}}
        """), encoding="utf-8")
    (root / "policies" / "self-built.yaml").write_text(textwrap.dedent(f"""\
        name: self-built
        checksums: [sha256, md5]
        replicas: [site-a, site-b, site-c]
        fixity: {{deep_every: {deep}, quick_every: {quick}, daily_byte_budget: {budget}}}
        """), encoding="utf-8")
    return root / "strongroom.yaml"


def make_source(folder: Path, files: Dict[str, bytes]) -> Path:
    for rel, data in files.items():
        p = folder / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return folder


def deposit(cfg: Path, src: Path, library: str = "LIB", collection: str = "COLL") -> List[str]:
    code = main(["--config", str(cfg), "deposit", str(src), "--library", library, "--collection", collection,
                 "--type", "self-built"])
    assert code == 0
    return Catalog(load_config(cfg).catalog).bags(library, collection).column("bag_id").to_pylist()


class Archive:
    """A deposited archive folder: paths of stored copies, damage, audits, catalog queries."""

    def __init__(self, folder: Path, bags: List[str]):
        self.folder = folder
        self.cfg = folder / "strongroom.yaml"
        self.config = load_config(self.cfg)
        self.catalog = Catalog(self.config.catalog)
        self.bags = bags
        self.bag = bags[0]

    def path(self, target: str, relpath: str = "", bag: str = None) -> Path:
        p = Path(self.config.target(target).root).joinpath(*(bag or self.bag).split("/"))
        return p / relpath if relpath else p

    def writable(self, p: Path) -> Path:
        p.chmod(0o644)
        return p

    def flip(self, target: str, relpath: str, bag: str = None) -> None:
        p = self.writable(self.path(target, relpath, bag))
        data = bytearray(p.read_bytes())
        data[len(data) // 2] ^= 0x10
        p.write_bytes(bytes(data))

    def truncate(self, target: str, relpath: str, bag: str = None) -> None:
        p = self.writable(self.path(target, relpath, bag))
        data = p.read_bytes()
        p.write_bytes(data[: len(data) // 2])

    def append(self, target: str, relpath: str, bag: str = None) -> None:
        p = self.writable(self.path(target, relpath, bag))
        p.write_bytes(p.read_bytes() + b"appended")

    def delete(self, target: str, relpath: str, bag: str = None) -> None:
        self.path(target, relpath, bag).unlink()

    def put(self, target: str, relpath: str, data: bytes, bag: str = None) -> None:
        p = self.path(target, relpath, bag)
        p.parent.mkdir(parents=True, exist_ok=True)
        if p.exists():
            self.writable(p)
        p.write_bytes(data)

    def audit(self, capsys, *args: str, workers: int = 1):
        code = main(["--config", str(self.cfg), "--json", "--workers", str(workers), "audit", *args])
        out, err = capsys.readouterr()
        return code, json.loads(out), err

    def bag_results(self, summary: dict) -> List[dict]:
        """The per-bag results of a run (the AuditBag outputs), as plain dicts."""
        root = Path(self.config.staging) / ".audit" / "bags"
        out = []
        for bag in {r["bag"] for r in summary["replicas"]}:
            folder = root / bag.replace("/", "__")
            newest = max(folder.glob("*.json"), key=lambda p: p.stat().st_mtime_ns)
            out.append(json.loads(newest.read_text("utf-8")))
        return out

    def findings(self, summary: dict) -> List[dict]:
        return [f for b in self.bag_results(summary) for r in b["replicas"] for f in r["findings"]] + \
            [f for b in self.bag_results(summary) for f in b["bag_findings"]]

    def events(self, type_=None) -> List[dict]:
        return self.catalog.events(type=type_).to_pylist()

    def repair_events(self) -> List[dict]:
        """Ledger events of repairs: replication/deletion whose detail starts with "repair:"."""
        return [e for e in self.events(["replication", "deletion"]) if (e["detail"] or "").startswith("repair:")]

    def replica(self, target: str, bag: str = None):
        return self.catalog.replica(bag or self.bag, target)

    def tree(self, target: str, bag: str = None) -> Dict[str, bytes]:
        root = self.path(target, bag=bag)
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def copy_archive(base: Path, dest: Path, bags: List[str]) -> Archive:
    shutil.copytree(base, dest, symlinks=True)
    return Archive(dest, bags)


# --------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module")
def deposited(tmp_path_factory):
    base = tmp_path_factory.mktemp("audit")
    cfg = write_archive(base / "archive")
    src = make_source(base / "source", FILES)
    bags = deposit(cfg, src)
    assert len(bags) == 1
    # A second bag, so a target that lost the first one still holds something (a target
    # holding nothing at all is treated as unmounted: see test_empty_target_...).
    other = deposit(cfg, make_source(base / "other", {"x.txt": b"another bag\n"}), collection="OTHER")
    return base / "archive", bags + other


@pytest.fixture
def arch(deposited, tmp_path) -> Archive:
    folder, bags = deposited
    return copy_archive(folder, tmp_path / "archive", bags)


@pytest.fixture
def instant_retry(monkeypatch):
    monkeypatch.setattr(A, "DEFAULT_RETRY", A.Retry(attempts=3, delays=(0.0,)))


# --------------------------------------------------------------------------------------------
# Intact copies


def test_intact_copies_pass_deep_then_quick(capsys, arch):
    code, s, _ = arch.audit(capsys, "--all", workers=2)     # two Luigi worker processes, one per bag
    assert code == 0, s
    assert s["counts"]["success"] == 6 and s["counts"]["failure"] == 0 and s["bags"] == 2
    payload = sum(len(v) for v in FILES.values()) + len(b"another bag\n")
    assert s["bytes_checked"] == 3 * payload          # every payload byte of every copy re-read
    assert {r["kind"] for r in s["replicas"]} == {"deep"}
    for t in ("site-a", "site-b", "site-c"):
        rec = arch.replica(t)
        assert (rec.state, rec.last_audit_kind, rec.last_audit_outcome) == ("verified", "deep", "success")

    code, s, _ = arch.audit(capsys, "--all", "--quick")
    assert code == 0
    assert s["bytes_checked"] == 0 and s["files_checked"] == 3 * (len(FILES) + 1)
    assert {arch.replica(t).last_audit_kind for t in ("site-a", "site-b", "site-c")} == {"quick"}
    checks = list((Path(arch.config.staging) / ".audit" / "checks").rglob("*.quick.*.json"))
    assert len(checks) == 6


def test_all_digests_recomputes_every_catalog_digest(capsys, arch):
    code, s, _ = arch.audit(capsys, "--bag", arch.bag, "--all-digests")
    assert code == 0
    checks = list((Path(arch.config.staging) / ".audit" / "checks").rglob("*.deep.all.*.json"))
    assert len(checks) == 3
    for c in checks:
        assert json.loads(c.read_text("utf-8"))["check"]["algorithms"] == ["md5", "sha256"]


def test_summary_json_for_monitoring_matches_stdout(capsys, arch):
    code, s, _ = arch.audit(capsys)
    latest = Path(arch.config.staging) / ".audit" / "summaries" / "latest.json"
    on_disk = json.loads(latest.read_text("utf-8"))
    assert on_disk["run_id"] == s["run_id"] and on_disk["exit_code"] == code == 0
    assert s["summary_file"] and Path(s["summary_file"]).is_file()
    assert s["mode"] == "due" and s["counts"]["success"] == 0     # nothing is due right after a deposit


# --------------------------------------------------------------------------------------------
# Each kind of damage, named (with --no-repair: reported, nothing touched)


def _damage_cases():
    return [
        ("flip", "site-a", "data/a.txt", A.CORRUPTED),
        ("truncate", "site-b", "data/sub dir/b b.bin", A.TRUNCATED),
        ("append", "site-c", "data/中文/文件.txt", A.GROWN),
        ("delete", "site-a", "data/pct%41.txt", A.MISSING),
        ("same-size", "site-b", "data/same-1.bin", A.CORRUPTED),
        ("stray", "site-c", "data/stray.bin", A.EXTRA),
        ("stray", "site-a", "notes.txt", A.EXTRA),
        ("stray-tagmanifest", "site-b", "tagmanifest-sha1.txt", A.EXTRA),
        ("delete", "site-b", "bag-info.txt", A.TAG_MISSING),
        ("delete", "site-c", "metadata/formats.csv", A.TAG_MISSING),
        ("delete", "site-a", "tagmanifest-md5.txt", A.TAG_MISSING),
        ("flip", "site-b", "manifest-sha256.txt", A.TAG_DAMAGED),
        ("flip", "site-c", "bagit.txt", A.TAG_DAMAGED),
        ("flip", "site-a", "metadata/premis.xml", A.TAG_DAMAGED),
        ("rmbag", "site-b", "", A.BAG_MISSING),
    ]


@pytest.mark.parametrize("how,target,relpath,kind", _damage_cases(),
                         ids=[f"{c[0]}-{c[1]}-{c[2] or 'bag'}" for c in _damage_cases()])
def test_each_damage_is_found_and_named(capsys, arch, how, target, relpath, kind):
    if how == "same-size":
        arch.put(target, relpath, arch.path(target, "data/same-2.bin").read_bytes())
    elif how == "stray":
        arch.put(target, relpath, b"not part of the bag")
    elif how == "stray-tagmanifest":   # a well-formed, consistent tag manifest Strongroom never wrote
        import hashlib

        names = ["bagit.txt", "bag-info.txt", "manifest-md5.txt", "manifest-sha256.txt"]
        arch.put(target, relpath, "".join(f"{hashlib.sha1(arch.path(target, n).read_bytes()).hexdigest()}  {n}\n"
                                          for n in names).encode())
    elif how == "rmbag":
        shutil.rmtree(arch.path(target))
    else:
        getattr(arch, how)(target, relpath)
    before = {t: arch.tree(t) if arch.path(t).exists() else None for t in ("site-a", "site-b", "site-c")}

    code, s, _ = arch.audit(capsys, "--bag", arch.bag, "--no-repair")
    assert code == 1
    assert s["counts"]["failure"] == 1 and s["counts"]["success"] == 2
    found = [f for f in arch.findings(s) if f["target"] == target]
    assert any(f["kind"] == kind and (f["path"] or "") == relpath for f in found), found
    assert all(f["target"] == target for f in arch.findings(s) if f["target"]), "damage blamed on a good copy"
    after = {t: arch.tree(t) if arch.path(t).exists() else None for t in ("site-a", "site-b", "site-c")}
    assert after == before                              # --no-repair changes nothing
    assert arch.replica(target).state == ("missing" if kind == A.BAG_MISSING else "damaged")
    events = arch.events("fixity check")
    assert any(e["outcome"] == "failure" and e["target"] == target and (e["path"] or "") == relpath
               for e in events if e["detail"].startswith(kind) or kind == A.BAG_MISSING)
    assert not arch.repair_events()

    code, s, _ = arch.audit(capsys, "--bag", arch.bag)    # now with repair
    assert code == 0, s["remaining"]
    assert s["counts"]["repaired"] == 1 and s["counts"]["success"] == 2
    assert arch.tree(target) == arch.tree("site-a" if target != "site-a" else "site-b")
    assert arch.replica(target).state == "repaired"       # the campaign checks that a second audit passes


def test_manifest_disagreeing_with_catalog_is_reported_and_repaired(capsys, arch):
    """A consistent forgery on one copy: its manifest and tag manifest rewritten for a changed file."""
    import hashlib

    t = "site-b"
    forged = b"F" * len(FILES["a.txt"])
    arch.put(t, "data/a.txt", forged)
    for alg in ("sha256", "md5"):
        man = arch.path(t, f"manifest-{alg}.txt")
        lines = man.read_text("utf-8").splitlines()
        new = hashlib.new(alg, forged).hexdigest()
        lines = [f"{new}  data/a.txt" if ln.endswith("  data/a.txt") else ln for ln in lines]
        arch.put(t, f"manifest-{alg}.txt", ("\n".join(lines) + "\n").encode())
    for alg in ("sha256", "md5"):
        tm = arch.path(t, f"tagmanifest-{alg}.txt")
        out = []
        for ln in tm.read_text("utf-8").splitlines():
            digest, name = ln.split("  ", 1)
            if name.startswith("manifest-"):
                digest = hashlib.new(alg, arch.path(t, name).read_bytes()).hexdigest()
            out.append(f"{digest}  {name}")
        arch.put(t, f"tagmanifest-{alg}.txt", ("\n".join(out) + "\n").encode())

    code, s, _ = arch.audit(capsys, "--bag", arch.bag, "--no-repair")
    assert code == 1
    found = {(f["kind"], f["path"]) for f in arch.findings(s) if f["target"] == t}
    assert (A.CORRUPTED, "data/a.txt") in found
    manifest = [f for f in arch.findings(s) if f["target"] == t and f["path"] == "manifest-sha256.txt"]
    assert manifest and manifest[0]["kind"] == A.TAG_DAMAGED and "disagrees with the catalog" in manifest[0]["detail"]
    code, s, _ = arch.audit(capsys, "--bag", arch.bag)
    assert code == 0
    assert arch.tree(t) == arch.tree("site-a")


def test_symbolic_link_in_place_of_a_file_is_damage(capsys, arch, tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_bytes(FILES["a.txt"])
    p = arch.path("site-c", "data/a.txt")
    p.unlink()
    p.symlink_to(outside)
    code, s, _ = arch.audit(capsys, "--bag", arch.bag)
    assert code == 0
    assert any(f["kind"] == A.NOT_A_FILE and f["path"] == "data/a.txt" for f in arch.findings(s))
    assert not p.is_symlink() and p.read_bytes() == FILES["a.txt"]
    assert outside.read_bytes() == FILES["a.txt"]


# --------------------------------------------------------------------------------------------
# Inconclusive is not damage


class FlakyAdapter(FilesystemAdapter):
    """The real filesystem adapter, whose reads of chosen files fail like a flaky disk or server.

    `fail_opens[path]` opens of that path raise EIO before one succeeds (-1: always);
    `fail_reads[path]`: the stream raises EIO after its first chunk, that many times. Both
    ways of opening fail alike: `open_file` (one file) and the kept reads of a whole-bag
    check (`reading`, what a deep audit opens its payload files through).
    """

    fail_opens: Dict[str, int] = {}
    fail_reads: Dict[str, int] = {}
    opens: Dict[str, int] = {}

    @staticmethod
    def flaky_open(relpath, really_open):
        FlakyAdapter.opens[relpath] = FlakyAdapter.opens.get(relpath, 0) + 1
        left = FlakyAdapter.fail_opens.get(relpath, 0)
        if left:
            FlakyAdapter.fail_opens[relpath] = left - 1 if left > 0 else left
            raise OSError(errno.EIO, "Input/output error")
        stream = really_open()
        left = FlakyAdapter.fail_reads.get(relpath, 0)
        if left:
            FlakyAdapter.fail_reads[relpath] = left - 1 if left > 0 else left
            return _FailingStream(stream)
        return stream

    def open_file(self, bag_id, relpath):
        return FlakyAdapter.flaky_open(relpath, lambda: super(FlakyAdapter, self).open_file(bag_id, relpath))

    def reading(self, bag_id):
        return _FlakyReads(self, bag_id)


class _FlakyReads(FolderReads):
    def open_with_stat(self, relpath):
        got = super().open_with_stat(relpath)
        if got is None:
            return None
        return got[0], FlakyAdapter.flaky_open(relpath, lambda: got[1])


class _FailingStream:
    def __init__(self, stream):
        self.stream = stream
        self.calls = 0

    def readinto(self, buf):
        self.calls += 1
        if self.calls > 1:
            raise OSError(errno.EIO, "Input/output error")
        return self.stream.readinto(memoryview(buf)[:10])

    def read(self, n=-1):
        raise OSError(errno.EIO, "Input/output error")

    def close(self):
        self.stream.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@pytest.fixture
def flaky_site_a(monkeypatch, instant_retry):
    import storage_adapters.registry as registry

    real = registry.open_target
    FlakyAdapter.fail_opens, FlakyAdapter.fail_reads, FlakyAdapter.opens = {}, {}, {}

    def open_target(target):
        if target.name == "site-a":
            return FlakyAdapter(target.name, target.site, target.root)
        return real(target)

    monkeypatch.setattr(registry, "open_target", open_target)
    return FlakyAdapter


def test_transient_read_errors_pass_on_retry(capsys, arch, flaky_site_a):
    flaky_site_a.fail_opens["data/a.txt"] = 2            # two failures, the third attempt works
    flaky_site_a.fail_reads["data/sub dir/b b.bin"] = 1  # fails mid-stream once
    code, s, _ = arch.audit(capsys, "--bag", arch.bag)
    assert code == 0, s
    assert s["counts"]["success"] == 3 and not arch.findings(s)
    assert flaky_site_a.opens["data/a.txt"] >= 3 and flaky_site_a.opens["data/sub dir/b b.bin"] >= 2
    assert not arch.repair_events()


@pytest.mark.parametrize("where", ["open", "read"])
def test_persistent_read_error_is_inconclusive_never_repaired(capsys, arch, flaky_site_a, monkeypatch, where):
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=100)   # every copy deep-overdue
    monkeypatch.setattr(A, "utcnow", lambda: later)
    (flaky_site_a.fail_opens if where == "open" else flaky_site_a.fail_reads)["data/a.txt"] = -1
    victim = arch.path("site-a", "data/a.txt")
    st = victim.stat()

    code, s, _ = arch.audit(capsys, "--due", "--collection", "COLL")
    assert code == 1
    assert s["counts"]["inconclusive"] == 1 and s["counts"]["failure"] == 0 and s["counts"]["success"] == 2
    assert not s["remaining"] and not s["repaired"]
    assert [(i["target"], i["count"]) for i in s["inconclusive"]] == [("site-a", 1)]
    found = [f for f in arch.findings(s) if f["target"] == "site-a"]
    assert [f["kind"] for f in found] == [A.UNREADABLE]
    assert not arch.repair_events()
    st2 = victim.stat()
    assert (st2.st_ino, st2.st_mtime_ns, st2.st_size) == (st.st_ino, st.st_mtime_ns, st.st_size)
    rec = arch.replica("site-a")
    assert (rec.state, rec.last_audit_outcome) == ("verified", "inconclusive")
    assert any(e["outcome"] == "inconclusive" and e["target"] == "site-a" for e in arch.events("fixity check"))
    # Re-queued: just after the run, only the inconclusive copy is still due.
    from fixity.due import select

    again = select(arch.config, arch.catalog, collection="COLL", now=later + dt.timedelta(minutes=1))
    assert [(c.target, c.kind) for c in again.chosen] == [("site-a", "deep")]


def test_unmounted_target_is_inconclusive_not_missing(capsys, arch):
    root = Path(arch.config.target("site-b").root)
    root.rename(root.with_name("b-unmounted"))
    code, s, _ = arch.audit(capsys, "--bag", arch.bag)
    assert code == 1
    assert s["counts"]["inconclusive"] == 1 and s["counts"]["failure"] == 0
    assert [f["kind"] for f in arch.findings(s) if f["target"] == "site-b"] == [A.UNREACHABLE]
    assert not root.exists()                              # nothing was written in its place
    assert arch.replica("site-b").state == "verified"


def test_empty_target_is_inconclusive_not_a_missing_bag(capsys, arch):
    """A target holding no bag at all looks like an unmounted volume: no copy is written to it."""
    root = Path(arch.config.target("site-c").root)
    shutil.rmtree(root / "LIB")
    code, s, _ = arch.audit(capsys, "--bag", arch.bag)
    assert code == 1 and s["counts"]["inconclusive"] == 1
    assert "holds no bags at all" in arch.findings(s)[0]["detail"] or \
        any("holds no bags at all" in f["detail"] for f in arch.findings(s))
    assert [p for p in root.iterdir() if p.name != ".strongroom"] == []   # .strongroom: the deposit's checkpoint


# --------------------------------------------------------------------------------------------
# Exit codes and usage


def test_usage_and_config_errors_exit_2(capsys, arch, tmp_path):
    assert main(["--config", str(arch.cfg), "audit", "--bag", "LIB/COLL/20990101T000000Z-1"]) == 2
    assert main(["--config", str(arch.cfg), "audit", "--bag", "not-a-bag-id"]) == 2
    assert main(["--config", str(arch.cfg), "audit", "--library", "NOPE"]) == 2
    shutil.rmtree(arch.folder / "catalog")
    assert main(["--config", str(arch.cfg), "audit"]) == 2
    with pytest.raises(SystemExit) as exc:
        main(["--config", str(arch.cfg), "audit", "--quick", "--deep"])
    assert exc.value.code == 2
    capsys.readouterr()


def test_bag_option_audits_that_bag_now(capsys, arch):
    code, s, _ = arch.audit(capsys, "--bag", arch.bag)
    assert code == 0 and s["mode"] == "all" and s["counts"]["success"] == 3
    code, s, _ = arch.audit(capsys, "--bag", arch.bag, "--due")
    assert code == 0 and s["counts"]["success"] == 0


# --------------------------------------------------------------------------------------------
# Two runs at once


_RUNNER = textwrap.dedent("""
    import os, sys, time
    sys.path.insert(0, {repo!r})
    role, cfg, flags = sys.argv[1], sys.argv[2], sys.argv[3]
    def wait_for(name):
        path = os.path.join(flags, name)
        for _ in range(6000):
            if os.path.exists(path):
                return
            time.sleep(0.01)
        raise SystemExit(role + ": gave up waiting for " + name)
    if role == "first":
        import storage_adapters.fs_read as fs_read
        real = fs_read.FolderReads.open_with_stat   # how a deep audit opens each payload file
        def open_with_stat(self, relpath):
            if relpath.startswith("data/") and not os.path.exists(os.path.join(flags, "first-checking")):
                open(os.path.join(flags, "first-checking"), "w").close()
                wait_for("second-planned")      # hold the first check until the second run has planned
                time.sleep(0.3)
            return real(self, relpath)
        fs_read.FolderReads.open_with_stat = open_with_stat
    else:
        wait_for("first-checking")
        import fixity.due as due
        real_select = due.select
        def select(*a, **k):
            result = real_select(*a, **k)
            open(os.path.join(flags, "second-planned"), "w").close()
            return result
        due.select = select
    from pipelines.cli import main
    sys.exit(main(["--config", cfg, "--json", "audit", "--all"]))
""")


def test_second_run_while_one_is_going_does_no_duplicate_work(arch, tmp_path):
    flags = tmp_path / "flags"
    flags.mkdir()
    script = tmp_path / "runner.py"
    script.write_text(_RUNNER.format(repo=str(REPO)), encoding="utf-8")
    records_before = arch.catalog.replicas(current=False).num_rows
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, str(script), role, str(arch.cfg), str(flags)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, env=env, cwd=str(tmp_path)) for role in ("first", "second")]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err.decode()
    first, second = (json.loads(o) for o, _ in outs)
    assert first["counts"]["success"] == 6 and second["counts"]["success"] == 6
    assert (flags / "second-planned").exists()
    catalog = Catalog(arch.config.catalog)
    # One audit per copy, not two: one replica record and one copy-level check event each.
    assert catalog.replicas(current=False).num_rows == records_before + 6
    audits = [e for e in catalog.events(type="fixity check").to_pylist()
              if e["object_type"] == "replica" and (e["detail"] or "").startswith("audit ")]
    assert sorted(e["target"] for e in audits) == ["site-a", "site-a", "site-b", "site-b", "site-c", "site-c"]


def test_a_target_added_to_the_policy_gets_its_copies(capsys, arch):
    """A new, empty target the policy now lists: the bags are absent there, and --due copies them."""
    (arch.folder / "replicas" / "d").mkdir()
    with open(arch.cfg, "a", encoding="utf-8") as fh:
        fh.write("  site-d: {type: filesystem, root: ./replicas/d, site: xian}\n")
    policy = arch.folder / "policies" / "self-built.yaml"
    policy.write_text(policy.read_text("utf-8").replace("site-c]", "site-c, site-d]"), encoding="utf-8")
    arch = Archive(arch.folder, arch.bags)
    code, s, _ = arch.audit(capsys)
    assert code == 0, s["remaining"]
    assert sorted((r["bag"], r["target"], r["outcome"]) for r in s["replicas"]) == [
        (b, "site-d", "repaired") for b in sorted(arch.bags)]
    for b in arch.bags:
        assert arch.tree("site-d", b) == arch.tree("site-a", b)
        assert arch.replica("site-d", b).state == "repaired"
    code, s, _ = arch.audit(capsys)
    assert code == 0 and s["replicas"] == []


def test_parallel_check_finds_what_a_single_process_finds(arch):
    """The pool of checker processes (each with its own adapter) reports the same problems."""
    from storage_adapters.registry import open_target

    arch.flip("site-a", "data/a.txt")
    arch.truncate("site-a", "data/same-2.bin")
    policy = arch.config.policy("self-built")
    expected = A.ExpectedBag.from_catalog(arch.catalog, arch.bag, policy)
    spec = arch.config.target("site-a")
    results = []
    for workers in (1, 2):
        files, nbytes, problems = A.check_payload(
            open_target(spec), arch.bag, expected.iter_files(), deep=True, algorithms=["sha256"],
            retry=A.Retry(), workers=workers, open_adapter=lambda: open_target(spec), use_pool=True)
        results.append((files, nbytes, sorted((p.path, p.kind, p.size) for p in problems)))
    assert results[0] == results[1]
    assert results[0][2] == [("data/a.txt", A.CORRUPTED, len(FILES["a.txt"])),
                             ("data/same-2.bin", A.TRUNCATED, 2500)]


def test_manifest_fast_comparison_agrees_with_the_full_parse(arch):
    """The vectorised manifest check accepts exactly what parsing accepts as the catalog's entries
    (BOM, CRLF, any line order) and hands everything else to the parse."""
    expected = A.ExpectedBag.from_catalog(arch.catalog, arch.bag, arch.config.policy("self-built"))
    raw = arch.path("site-a", "manifest-sha256.txt").read_bytes()
    lines = raw.decode("utf-8").splitlines(keepends=True)
    same = [raw, b"\xef\xbb\xbf" + raw, raw.replace(b"\n", b"\r\n"), "".join(reversed(lines)).encode()]
    different = [raw[:-1] + b"0\n",                          # a digit of the last digest... or its path
                 "".join(lines[1:]).encode(),                 # a file left out
                 raw + lines[0].encode(),                     # a file listed twice
                 raw.replace(b"pct%2541.txt", b"pct%41.txt"),  # '%' not encoded (BagIt 1.0 requires %25)
                 raw.upper()]                                # upper-case digests: only the parse may accept
    for data in same:
        assert A.manifest_matches(data, expected, "sha256", "1.0")
    for data in different:
        assert not A.manifest_matches(data, expected, "sha256", "1.0")
    table, errors = A.parse_manifest(raw.upper(), "1.0", "sha256")
    assert errors or A.compare_manifest(expected, table, "sha256")   # the parse decides, and sees a difference


# --------------------------------------------------------------------------------------------
# The same audit on S3 targets (a real SeaweedFS server), through the StorageAdapter interface


S3_KEY_ENV, S3_SECRET_ENV = "SR_AUDIT_S3_KEY", "SR_AUDIT_S3_SECRET"


def s3_archive(seaweed, tmp_path: Path, monkeypatch, name: str = "audit"):
    """A local filesystem target and two SeaweedFS buckets (s3-east, s3-west), policy self-built
    on all three, one bag of FILES deposited: (archive, bag, east bucket, west bucket, prefix)."""
    import uuid

    monkeypatch.setenv(S3_KEY_ENV, seaweed.access_key)
    monkeypatch.setenv(S3_SECRET_ENV, seaweed.secret_key)
    east, west = seaweed.make_bucket(), seaweed.make_bucket()
    prefix = f"{name}-" + uuid.uuid4().hex[:6]
    root = tmp_path / "archive"
    for d in ("policies", "replicas/local"):
        (root / d).mkdir(parents=True)
    creds = f"{{{{access_key_env: {S3_KEY_ENV}, secret_key_env: {S3_SECRET_ENV}}}}}"
    s3 = "{{type: s3, endpoint: {e}, bucket: {b}, region: us-east-1, prefix: {p}, addressing_style: path, " \
         "site: {s}, credentials: " + creds + "}}"
    (root / "strongroom.yaml").write_text(
        "catalog: ./catalog\nstaging: ./staging\npolicies: ./policies\nstorage:\n"
        "  local: {type: filesystem, root: ./replicas/local, site: beijing}\n"
        f"  s3-east: {s3.format(e=seaweed.endpoint, b=east, p=prefix, s='shanghai')}\n"
        f"  s3-west: {s3.format(e=seaweed.endpoint, b=west, p=prefix, s='chengdu')}\n", encoding="utf-8")
    (root / "policies" / "self-built.yaml").write_text(
        "name: self-built\nchecksums: [sha256, md5]\nreplicas: [local, s3-east, s3-west]\n", encoding="utf-8")
    [bag] = deposit(root / "strongroom.yaml", make_source(tmp_path / "src", FILES))
    return Archive(root, [bag]), bag, east, west, prefix


def test_audit_and_repair_on_s3_targets(seaweed, tmp_path, capsys, monkeypatch):
    arch, bag, east, west, prefix = s3_archive(seaweed, tmp_path, monkeypatch)
    capsys.readouterr()
    client = seaweed.client()
    key = lambda rel: f"{prefix}/{bag}/{rel}"  # noqa: E731
    original = FILES["a.txt"]
    client.put_object(Bucket=east, Key=key("data/a.txt"), Body=b"X" * len(original))   # same size, other bytes
    client.delete_object(Bucket=west, Key=key("data/sub dir/b b.bin"))
    client.delete_object(Bucket=west, Key=key("bag-info.txt"))
    client.put_object(Bucket=east, Key=key("data/stray.bin"), Body=b"stray")

    code, s, _ = arch.audit(capsys, "--bag", bag, "--no-repair")
    assert code == 1
    found = {(f["target"], f["path"], f["kind"]) for f in arch.findings(s)}
    assert found == {("s3-east", "data/a.txt", A.CORRUPTED), ("s3-east", "data/stray.bin", A.EXTRA),
                     ("s3-west", "data/sub dir/b b.bin", A.MISSING), ("s3-west", "bag-info.txt", A.TAG_MISSING)}
    code, s, _ = arch.audit(capsys, "--bag", bag)
    assert code == 0, s["remaining"]
    assert client.get_object(Bucket=east, Key=key("data/a.txt"))["Body"].read() == original
    # An object store cannot move an object aside: the extra one is deleted, what it was in the
    # ledger first (an event of its own, appended before the delete), then the deletion.
    import hashlib

    gone = [e for e in arch.events(["deletion"]) if e["path"] == "data/stray.bin"]
    assert [e["outcome"] for e in gone] == ["warning", "success"]
    assert "about to delete" in gone[0]["detail"] and hashlib.sha256(b"stray").hexdigest() in gone[0]["detail"]
    assert gone[0]["datetime"] <= gone[1]["datetime"]
    code, s, _ = arch.audit(capsys, "--bag", bag)
    assert code == 0 and s["counts"]["success"] == 3 and not arch.findings(s)
    code, s, _ = arch.audit(capsys, "--bag", bag, "--quick")
    assert code == 0 and s["bytes_checked"] == 0
