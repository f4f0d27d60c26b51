"""`strongroom deposit` end to end: real files, the real Luigi scheduler, real storage failures.

Each test builds a fresh `strongroom init` archive (two filesystem targets, site-a and site-b),
runs the command through `pipelines.cli.main` (or `luigid`), then checks what a preservation
officer would check by hand: the bag ids, every replica's state, the catalog rows, the events and
their hash chain, that staging was cleaned up, and that each replica's payload bytes are the
source's bytes.

Storage failures are made the way they happen for real, and so that they also stop root (CI
runs as root, where chmod stops nothing): a target root that is a regular file (ENOTDIR), a
read-only tmpfs mounted on it (EROFS), a tiny tmpfs (ENOSPC). Mounts need root, which these
tests have; every mount is undone in a `finally`.

The helpers here are shared with test_deposit_crash.py.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

import pytest

REPO = Path(__file__).resolve().parents[1]
LIB = "PKU"
TARGETS = ("site-a", "site-b")
BAG_ID_RE = re.compile(r"^PKU/[A-Za-z0-9._-]+/\d{8}T\d{6}Z-\d+$")
TEMP_SUFFIX = ".strongroom-part"


# --------------------------------------------------------------------------------------------
# Helpers (also imported by test_deposit_crash.py)


@dataclass
class Archive:
    """A fresh `strongroom init` folder; its paths are read once, so a test may break the config."""

    root: Path
    config_path: Path
    staging: Path
    catalog_path: str
    roots: Dict[str, Path]

    @property
    def config(self):
        from policies.config import load_config

        return load_config(self.config_path)

    def catalog(self):
        from catalog.catalog import Catalog

        return Catalog(self.catalog_path)

    def target_root(self, name: str) -> Path:
        return self.roots[name]

    def bag_folder(self, target: str, bag_id: str) -> Path:
        return self.target_root(target).joinpath(*bag_id.split("/"))

    def state_dirs(self) -> List[Path]:
        root = self.staging / ".state"
        return sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def make_archive(tmp_path: Path) -> Archive:
    from policies.config import load_config, write_default_config

    path = Path(write_default_config(tmp_path / "archive"))
    config = load_config(path)
    return Archive(tmp_path / "archive", path, Path(config.staging), str(config.catalog),
                   {name: Path(t.root) for name, t in config.storage.items()})


def make_source(folder: Path, *, small: int = 12, small_size: int = 64 * 1024, big: Sequence[int] = (),
                seed: str = "source") -> Path:
    """A collection with awkward names (spaces, %, CJK, nesting, an empty file) and given sizes.

    Content is derived from the seed and the file's name, so two sources with different seeds
    never share bytes, and the test can regenerate nothing: it reads the source back instead.
    """
    folder.mkdir(parents=True)
    (folder / "nested" / "deeper").mkdir(parents=True)
    (folder / "古籍").mkdir()
    (folder / "readme 100% done.txt").write_text(f"{seed}: a name with a space and a percent sign\n", "utf-8")
    (folder / "古籍" / "善本 第1卷.txt").write_text(f"{seed}: 善本\n", "utf-8")
    (folder / "nested" / "deeper" / "empty.dat").write_bytes(b"")
    for i in range(small):
        (folder / "nested" / f"part-{i:03d}.bin").write_bytes(_bytes(f"{seed}/small/{i}", small_size))
    for i, size in enumerate(big):
        (folder / f"big-{i}.bin").write_bytes(_bytes(f"{seed}/big/{i}", size))
    return folder


def _bytes(label: str, size: int) -> bytes:
    """Incompressible, reproducible bytes (SHAKE-256 of the label)."""
    return hashlib.shake_256(label.encode("utf-8")).digest(size) if size else b""


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def tree_digests(root: Path) -> Dict[str, str]:
    """{relative path: sha256} of every regular file below root."""
    out = {}
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            p = Path(dirpath) / name
            out[p.relative_to(root).as_posix()] = sha256(p)
    return out


def file_ids(root: Path) -> Dict[str, tuple]:
    """(inode, mtime, ctime) of every file below root: a rewrite or a re-link changes them."""
    out = {}
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            st = os.lstat(os.path.join(dirpath, name))
            out[os.path.relpath(os.path.join(dirpath, name), root)] = (st.st_ino, st.st_mtime_ns, st.st_ctime_ns)
    return out


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    @property
    def data(self) -> dict:
        return json.loads(self.out)


def strongroom(capsys, *argv: str) -> CliResult:
    """Run the `strongroom` command in this process, as the console script would."""
    from pipelines.cli import main

    capsys.readouterr()
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return CliResult(code, captured.out, captured.err)


def deposit_argv(arch: Archive, source: Path, collection: str, *extra: str, json_out: bool = True,
                 workers: Optional[int] = None) -> List[str]:
    argv = ["--config", str(arch.config_path)]
    if json_out:
        argv.append("--json")
    if workers:
        argv += ["--workers", str(workers)]
    return argv + ["deposit", str(source), "--library", LIB, "--collection", collection,
                   "--type", "self-built", *extra]


def success_counts(catalog) -> Counter:
    """How often each step was recorded as a success: (type, bag_id, target) -> count."""
    table = catalog.events()
    rows = zip(table.column("type").to_pylist(), table.column("bag_id").to_pylist(),
               table.column("target").to_pylist(), table.column("outcome").to_pylist())
    return Counter((t, b, tg) for t, b, tg, o in rows if o == "success")


def expected_successes(bag_ids: Iterable[str], targets: Sequence[str] = TARGETS) -> Counter:
    c = Counter()
    for bag in bag_ids:
        for t in targets:
            c[("replication", bag, t)] = 1
            c[("fixity check", bag, t)] = 1
        c[("virus check", bag, None)] = 1  # every policy says virus_check: required (tests/clamav.py's clamd)
        c[("ingestion", bag, None)] = 1
    return c


def ledger_problems(arch: Archive) -> List[str]:
    from catalog.ledger import verify_ledger

    report = verify_ledger(arch.catalog_path)
    return [] if report.ok else list(report.problems) or ["ledger not ok"]


def temp_files(root: Path) -> List[str]:
    return sorted(os.path.relpath(os.path.join(d, n), root) for d, _, names in os.walk(root)
                  for n in names if n.endswith(TEMP_SUFFIX))


def replica_payload_problems(arch: Archive, source: Path, bag_ids: Sequence[str], target: str,
                             source_digests: Optional[Dict[str, str]] = None) -> List[str]:
    """Restore by hand: the data/ files of all bags on `target` must be exactly the source's files."""
    want = source_digests if source_digests is not None else tree_digests(source)
    got: Dict[str, str] = {}
    for bag_id in bag_ids:
        data = arch.bag_folder(target, bag_id) / "data"
        for rel, digest in tree_digests(data).items():
            if os.path.basename(rel).endswith(TEMP_SUFFIX):
                continue  # not a stored file (checked separately)
            if rel in got:
                return [f"{target}: {rel} is in two bags"]
            got[rel] = digest
    problems = [f"{target}: {rel} missing" for rel in sorted(set(want) - set(got))]
    problems += [f"{target}: {rel} is not in the source" for rel in sorted(set(got) - set(want))]
    problems += [f"{target}: {rel} differs from the source" for rel in sorted(set(want) & set(got))
                 if want[rel] != got[rel]]
    return problems


def check_preserved(arch: Archive, source: Path, outcome: dict, *, targets: Sequence[str] = TARGETS) -> None:
    """Everything a finished deposit must leave behind, checked from the outside."""
    assert outcome["exit_code"] == 0, outcome
    assert outcome["state"] == "preserved", outcome
    assert outcome["failures"] == [], outcome["failures"]
    bag_ids = [b["id"] for b in outcome["bags"]]
    assert bag_ids and all(BAG_ID_RE.match(b) for b in bag_ids), bag_ids
    for bag in outcome["bags"]:
        assert {t: r["state"] for t, r in bag["replicas"].items()} == {t: "verified" for t in targets}, bag
        assert bag["preserved"] is True
        assert not Path(bag["path"]).exists(), f"staged copy {bag['path']} was not removed"
    incomplete = arch.staging / ".incomplete"
    leftovers = sorted(p.name for p in incomplete.iterdir()) if incomplete.is_dir() else []
    assert leftovers == [], f"staging/.incomplete still holds {leftovers}"

    source_digests = tree_digests(source)
    catalog = arch.catalog()
    bags = catalog.bags(library=LIB).to_pylist()
    mine = {b["bag_id"]: b for b in bags if b["bag_id"] in bag_ids}
    assert sorted(mine) == sorted(bag_ids)
    assert sum(b["file_count"] for b in mine.values()) == len(source_digests)
    for b in mine.values():
        assert b["source_path"] == os.path.realpath(source)
    files = {}
    for bag_id in bag_ids:
        for row in catalog.files(bag_id).to_pylist():
            assert row["path"].startswith("data/"), row["path"]
            files[row["path"][len("data/"):]] = row["sha256"]
    assert files == source_digests, "catalog file records differ from the source"

    current = {(r["bag_id"], r["target"]): r["state"] for r in catalog.replicas().to_pylist()}
    for bag_id in bag_ids:
        for t in targets:
            assert current.get((bag_id, t)) == "verified", (bag_id, t, current)

    counts = success_counts(catalog)
    mine_counts = Counter({k: v for k, v in counts.items() if k[1] in bag_ids})
    assert mine_counts == expected_successes(bag_ids, targets), "events: each step once per bag (and target)"
    assert ledger_problems(arch) == []

    for t in targets:
        assert replica_payload_problems(arch, source, bag_ids, t, source_digests) == []
        assert temp_files(arch.target_root(t)) == [], f"temp files left on {t}"


@contextlib.contextmanager
def mounted_tmpfs(folder: Path, options: str):
    """A tmpfs mounted on `folder` for the duration (root only); always unmounted."""
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], check=True,
                   capture_output=True)
    try:
        yield folder
    finally:
        if subprocess.run(["umount", str(folder)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------------------------
# The happy path


def test_deposit_happy_path_json(tmp_path, capsys):
    arch = make_archive(tmp_path)
    source = make_source(tmp_path / "source", big=[3 * 1024 * 1024])
    before = file_ids(source)

    res = strongroom(capsys, *deposit_argv(arch, source, "happy"))
    assert res.code == 0, res.err
    outcome = res.data
    assert len(outcome["bags"]) == 1
    check_preserved(arch, source, outcome)
    assert file_ids(source) == before, "the source was modified"

    events = arch.catalog().events(bag_id=outcome["bags"][0]["id"])
    assert set(events.column("type").to_pylist()) >= {"replication", "fixity check", "ingestion"}

    verify = strongroom(capsys, "--config", arch.config_path, "ledger", "verify")
    assert verify.code == 0 and "ledger intact" in verify.out, verify.out + verify.err


def test_deposit_with_two_workers_gives_the_same_result(tmp_path, capsys):
    arch = make_archive(tmp_path)
    source = make_source(tmp_path / "source", small=20, big=[2 * 1024 * 1024])

    res = strongroom(capsys, *deposit_argv(arch, source, "parallel", workers=2))
    assert res.code == 0, res.err
    check_preserved(arch, source, res.data)


def test_same_source_twice_after_the_first_finished_is_a_new_deposit(tmp_path, capsys):
    """A finished deposit is closed: depositing the same folder again (same library and
    collection) makes a NEW deposit with a new bag id, and leaves the first one's replicas and
    records as they were. (Only an *unfinished* deposit of the same source is resumed.)"""
    arch = make_archive(tmp_path)
    source = make_source(tmp_path / "source", small=4)

    first = strongroom(capsys, *deposit_argv(arch, source, "twice", json_out=False))
    assert first.code == 0, first.err
    first_ids = re.findall(r"PKU/twice/\d{8}T\d{6}Z-\d+", first.out)
    assert len(set(first_ids)) == 1, first.out  # the bag id is printed for people, too
    first_id = first_ids[0]
    stored_first = {t: file_ids(arch.bag_folder(t, first_id)) for t in TARGETS}
    assert all(stored_first.values())

    (source / "added later.txt").write_text("a file the first deposit did not have\n", "utf-8")
    second = strongroom(capsys, *deposit_argv(arch, source, "twice"))   # (the same files: test_deposit_versions)
    assert second.code == 0, second.err
    check_preserved(arch, source, second.data)
    second_ids = [b["id"] for b in second.data["bags"]]
    assert first_id not in second_ids

    assert {t: file_ids(arch.bag_folder(t, first_id)) for t in TARGETS} == stored_first
    assert sorted(arch.catalog().bags().column("bag_id").to_pylist()) == sorted([first_id, *second_ids])
    assert success_counts(arch.catalog()) == expected_successes([first_id, *second_ids])
    assert len(arch.state_dirs()) == 2


# --------------------------------------------------------------------------------------------
# Usage and configuration errors: exit 2, nothing done


def _write_policy(arch: Archive, name: str, replicas: str) -> None:
    (arch.root / "policies" / f"{name}.yaml").write_text(
        f"name: {name}\nchecksums: [sha256]\nreplicas: {replicas}\n", "utf-8")


@pytest.mark.parametrize("case", ["unknown policy", "policy names an unknown target", "bad library code",
                                  "bad collection code"])
def test_config_and_usage_errors_exit_2_before_any_work(tmp_path, capsys, case):
    arch = make_archive(tmp_path)
    source = make_source(tmp_path / "source", small=2)
    argv = deposit_argv(arch, source, "errs")
    if case == "unknown policy":
        argv += ["--policy", "nope"]
        expected = ["nope", "no policy named"]
    elif case == "policy names an unknown target":
        _write_policy(arch, "elsewhere", "[site-a, site-z]")
        argv += ["--policy", "elsewhere"]
        expected = ["elsewhere.yaml", "site-z"]
    elif case == "bad library code":
        argv[argv.index("--library") + 1] = "../PKU"
        expected = ["library", "../PKU"]
    else:
        argv[argv.index("--collection") + 1] = "rare books"
        expected = ["collection", "rare books"]

    res = strongroom(capsys, *argv)
    assert res.code == 2, (res.code, res.out, res.err)
    for word in expected:
        assert word in res.err, f"{word!r} not in the message: {res.err}"
    assert "Traceback" not in res.err
    assert arch.state_dirs() == [], "a deposit was started"
    assert arch.catalog().events().num_rows == 0
    for t in TARGETS:
        assert list(arch.target_root(t).iterdir()) == []


# --------------------------------------------------------------------------------------------
# A target that cannot be written


@contextlib.contextmanager
def _broken_root(root: Path, how: str):
    """Make a target root unusable even for root; restore it (empty) afterwards."""
    if how == "a missing folder (volume not mounted)":
        # (a regular file in place of the root is refused before the deposit starts: see
        # test_deposit_refusals.py; a missing root may be a volume still to mount, so it fails
        # only that target and a rerun resumes)
        root.rmdir()
        try:
            yield "does not exist"
        finally:
            root.mkdir()
    else:
        with mounted_tmpfs(root, "ro,size=1m"):
            yield "read-only"


@pytest.mark.parametrize("how", ["a missing folder (volume not mounted)", "read-only mount"])
def test_unwritable_target_fails_only_that_target_and_a_rerun_completes(tmp_path, capsys, how):
    arch = make_archive(tmp_path)
    source = make_source(tmp_path / "source", small=6)
    site_b = arch.target_root("site-b")

    with _broken_root(site_b, how) as why:
        res = strongroom(capsys, *deposit_argv(arch, source, "unwritable"))
        assert res.code == 1, (res.code, res.err)
        outcome = res.data
        assert outcome["state"] == "incomplete"
        assert len(outcome["bags"]) == 1
        bag = outcome["bags"][0]
        assert bag["replicas"]["site-a"]["state"] == "verified"  # other targets unaffected
        assert bag["replicas"]["site-b"]["state"] == "failed"
        messages = " | ".join(f["message"] for f in outcome["failures"])
        assert "site-b" in messages and why in messages, messages
        assert "site-a" not in messages, messages

        text = strongroom(capsys, *deposit_argv(arch, source, "unwritable", json_out=False))
        assert text.code == 1
        assert "site-b" in text.out and why in text.out, text.out

    bag_id = bag["id"]
    catalog = arch.catalog()
    log = catalog.replicas(bag_id=bag_id, current=False).to_pylist()
    assert not [r for r in log if r["target"] == "site-b" and r["state"] == "verified"]
    assert [r for r in log if r["target"] == "site-a" and r["state"] == "verified"]
    assert not [k for k in success_counts(catalog) if k[2] == "site-b"], "a success was recorded on site-b"
    assert not catalog.has_bag(bag_id), "registered before every replica was verified"
    assert ledger_problems(arch) == []

    site_a_files = file_ids(arch.bag_folder("site-a", bag_id))
    assert site_a_files
    state_dir = arch.state_dirs()[0]
    copied_a = state_dir / f"{bag_id.replace('/', '__')}.site-a.copied.json"
    copied_a_id = file_ids(state_dir)[copied_a.name]

    rerun = strongroom(capsys, *deposit_argv(arch, source, "unwritable"))
    assert rerun.code == 0, rerun.err
    assert rerun.data["deposit"] == outcome["deposit"], "the rerun did not resume the unfinished deposit"
    check_preserved(arch, source, rerun.data)
    # Inode and mtime: site-a placed the staged files (storage_adapters.fs_place), so their ctime
    # changes once more when finish() removes the staged names; nothing is written again.
    same = {k: v[:2] for k, v in file_ids(arch.bag_folder("site-a", bag_id)).items()}
    assert same == {k: v[:2] for k, v in site_a_files.items()}, "site-a's files were written again"
    assert file_ids(state_dir)[copied_a.name] == copied_a_id, "site-a was replicated again"


def test_a_failed_target_is_reported_in_one_clear_message_without_tracebacks(tmp_path, capsys):
    """The CLI names every failed step itself (from the failure records tasks leave); Luigi's
    tracebacks of an expected storage failure are noise for the librarian (they stay with -v)."""
    arch = make_archive(tmp_path)
    source = make_source(tmp_path / "source", small=2)
    with _broken_root(arch.target_root("site-b"), "a missing folder (volume not mounted)") as why:
        res = strongroom(capsys, *deposit_argv(arch, source, "quiet", json_out=False))
    assert res.code == 1
    assert f"failed: Replicate: site-b: {arch.target_root('site-b')}: storage folder {why}" in res.out, res.out
    assert "rerun the same command to resume once the problem below is fixed" in res.out, res.out
    assert "Traceback" not in res.err, res.err


def test_full_target_fails_with_no_space_and_leaves_no_partial_file(tmp_path, capsys):
    arch = make_archive(tmp_path)
    source = make_source(tmp_path / "source", small=8)  # ~512 KiB, 8 times the target's room
    site_b = arch.target_root("site-b")

    with mounted_tmpfs(site_b, "size=64k"):
        res = strongroom(capsys, *deposit_argv(arch, source, "full"))
        assert res.code == 1, (res.code, res.err)
        outcome = res.data
        bag = outcome["bags"][0]
        messages = " | ".join(f["message"] for f in outcome["failures"])
        assert "site-b" in messages and "no space" in messages, messages
        assert bag["replicas"]["site-a"]["state"] == "verified"
        assert bag["replicas"]["site-b"]["state"] == "failed"
        assert "no space" in (bag["replicas"]["site-b"]["detail"] or "")

        # Whatever reached site-b under its final name is whole: same bytes as the staged bag.
        staged = Path(bag["path"])
        stored = tree_digests(arch.bag_folder("site-b", bag["id"])) if arch.bag_folder("site-b", bag["id"]).exists() else {}
        staged_digests = tree_digests(staged)
        partial = {rel for rel, d in stored.items() if not rel.endswith(TEMP_SUFFIX) and staged_digests.get(rel) != d}
        assert partial == set(), f"partial files under their final names on site-b: {partial}"
        assert temp_files(site_b) == [], "temp files left behind on the full target"
        assert "bagit.txt" not in stored, "an incomplete bag is marked complete (bagit.txt stored)"

    assert replica_payload_problems(arch, source, [bag["id"]], "site-a") == []
    assert not [k for k in success_counts(arch.catalog()) if k[2] == "site-b"]
    assert ledger_problems(arch) == []

    rerun = strongroom(capsys, *deposit_argv(arch, source, "full"))
    assert rerun.code == 0, rerun.err
    check_preserved(arch, source, rerun.data)


# --------------------------------------------------------------------------------------------
# A central scheduler


def test_deposit_through_a_real_luigid(tmp_path, capsys):
    arch = make_archive(tmp_path)
    source = make_source(tmp_path / "source", small=4)
    port = free_port()
    luigid = Path(sys.executable).parent / "luigid"  # the luigi package's console script
    command = [str(luigid) if luigid.exists() else shutil.which("luigid") or "luigid"]
    logs = tmp_path / "luigid"
    logs.mkdir()
    with open(logs / "out.txt", "wb") as out:
        server = subprocess.Popen(command + ["--address", "127.0.0.1", "--port", str(port),
                                             "--state-path", str(logs / "state.pickle"), "--logdir", str(logs)],
                                  stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_for_port(port, server, logs / "out.txt")
        res = strongroom(capsys, "--scheduler-url", url, *deposit_argv(arch, source, "central"))
        assert res.code == 0, res.err
        check_preserved(arch, source, res.data)

        # The work really went through luigid: it knows the finished Deposit task.
        query = urllib.parse.quote(json.dumps({"status": "DONE", "search": "Deposit"}))
        with urllib.request.urlopen(f"{url}/api/task_list?data={query}", timeout=30) as reply:
            done = json.load(reply)["response"]
        assert any(task_id.startswith("Deposit(") or task_id.startswith("Deposit_") for task_id in done), done
    finally:
        server.kill()
        server.wait()


def _wait_for_port(port: int, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 60  # start-up allowance, not a timing assertion
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"luigid exited with {process.returncode}: {log.read_text(errors='replace')}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.1)
    raise AssertionError(f"luigid did not listen on port {port}: {log.read_text(errors='replace')}")
