"""Faults as they happen to a real archive: kill -9 at many moments, full disks, a target that
turns read-only in the middle of a deposit. Then the operator reruns the same command, and the
archive must end exactly as if nothing had happened.

After every rerun the same checks (tests/faultkit.py `health_problems`): exit 0, `ledger
verify` passes, `status` is all well, every copy deep-verifies, no temporary file
(`.strongroom-part`, `*.tmp`, `.tmp-*`, a restore's `.DEST.restore-*`) is left anywhere, no
step is recorded twice, and no copy is called verified that does not hold the catalog's bytes
(checked by hand, with hashlib).

The commands run as real child processes (`python -m pipelines`, STRONGROOM_CONFIG naming the
archive) in their own session, and the whole session is SIGKILLed, so no Luigi worker lives on
and nothing gets a chance to clean up. The moment is chosen from outside, by watching the
files the command writes (a temp file on the target being repaired, a restore's temp folder
filling up, a new ledger segment, DEST appearing). Production code has no test hooks. Killed
here: audit (mid-repair, with odd objects and a stray file to move aside), restore, catalog
rebuild, and a deposit at two points checked as strictly as the others (test_deposit_crash.py
kills the deposit at many more points).

Disk full and read-only use real mounts (root only; CI runs as root): a small tmpfs (a loop-
mounted ext4 image where tmpfs mounts are refused) and a read-only bind remount, undone in a
`finally` whatever happens.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path
from typing import Callable, Dict, List

import pytest

from tests import faultkit as fk

KiB = 1024
KILLED = -signal.SIGKILL


# --------------------------------------------------------------------------------------------
# A deposited archive, made once and copied for each case


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults-template")
    arch = fk.new_archive(root / "archive")
    source = fk.make_files(root / "source", 48, 256 * KiB)
    r = fk.inproc(arch, "--json", "deposit", source, "--library", fk.LIB, "--collection", "faults",
                  "--type", "self-built")
    assert r.code == 0, r.text
    (bag,) = r.data["bags"]
    return arch, source, bag["id"]


def fresh(template, folder: Path) -> fk.FaultArchive:
    arch, _, _ = template
    return fk.copy_archive(arch, folder)


def damage(arch: fk.FaultArchive, bag_id: str, target: str = "site-b", *, odd: bool = False) -> Dict[str, List[str]]:
    """Corrupt a third of the payload on one copy, delete another third, alter bag-info.txt; with
    `odd`, also a FIFO and a symbolic link where payload files belong and a stray file no
    manifest lists (each to be moved aside, never followed nor deleted, and replaced)."""
    folder = arch.bag_folder(target, bag_id)
    pages = sorted((folder / "data" / "scans").iterdir())
    corrupted, deleted = pages[0:16], pages[16:32]
    for p in corrupted:
        data = bytearray(p.read_bytes())
        data[100:110] = b"XXXXXXXXXX"
        os.chmod(p, 0o644)
        p.write_bytes(bytes(data))
    for p in deleted:
        p.unlink()
    info = folder / "bag-info.txt"
    os.chmod(info, 0o644)
    info.write_text(info.read_text("utf-8") + "Tampered: yes\n", "utf-8")
    replaced = corrupted + deleted
    aside: List[str] = []
    if odd:
        fifo, link = pages[32], pages[33]
        fifo.unlink()
        os.mkfifo(fifo)
        link.unlink()
        os.symlink(arch.bag_folder("site-a", bag_id) / "data" / "scans" / link.name, link)
        stray = folder / "data" / "scans" / "stray.bin"
        stray.write_bytes(b"in no manifest, in no catalog\n")
        replaced += [fifo, link]
        aside = [p.relative_to(folder).as_posix() for p in (fifo, link, stray)]
    return {"corrupted": [str(p) for p in corrupted], "deleted": [str(p) for p in deleted],
            "relpaths": sorted([p.relative_to(folder).as_posix() for p in replaced] + ["bag-info.txt"]),
            "aside": sorted(aside)}


def moved_aside(arch: fk.FaultArchive, bag_id: str, target: str = "site-b") -> Dict[str, List[str]]:
    """path -> the details of the successful moves aside of it on `target` the ledger holds."""
    out: Dict[str, List[str]] = {}
    for e in arch.catalog().events(bag_id=bag_id).to_pylist():
        if e["target"] == target and e["path"] and e["outcome"] == "success" and e["type"] == "quarantine":
            out.setdefault(e["path"], []).append(e["detail"] or "")
    return out


def repairs_recorded(arch: fk.FaultArchive, bag_id: str, target: str = "site-b") -> Dict[str, int]:
    """path -> how many successful repairs of it on `target` the ledger holds."""
    out: Dict[str, int] = {}
    for e in arch.catalog().events(bag_id=bag_id).to_pylist():
        if e["target"] == target and e["path"] and e["outcome"] == "success" and e["type"] == "replication" \
                and (e["detail"] or "").startswith("repair:"):
            out[e["path"]] = out.get(e["path"], 0) + 1
    return out


# --------------------------------------------------------------------------------------------
# kill -9 of an audit in the middle of its repairs


def _temp_on(folder: Path) -> Callable[[], bool]:
    def seen() -> bool:
        for _, _, names in os.walk(folder):
            if any(n.endswith(".strongroom-part") for n in names):
                return True
        return False
    return seen


def _half_back(paths: List[str]) -> Callable[[], bool]:
    return lambda: sum(os.path.exists(p) for p in paths) >= len(paths) // 2


def _new_segment(arch: fk.FaultArchive) -> Callable[[], bool]:
    events = arch.catalog_path / "events"
    before = set(os.listdir(events))
    return lambda: bool(set(os.listdir(events)) - before)


AUDIT_POINTS = ["something moved aside", "a repaired file being written", "half the missing files restored",
                "a new ledger segment appears"]


def test_audit_killed_mid_repair_then_rerun_repairs_everything_once(template, tmp_path):
    failed, outcomes = {}, {}
    for i, point in enumerate(AUDIT_POINTS):
        arch = fresh(template, tmp_path / f"a{i}")
        bag_id = template[2]
        hurt = damage(arch, bag_id, odd=True)
        folder = arch.bag_folder("site-b", bag_id)
        when = {
            "something moved aside": lambda: (arch.roots["site-b"] / ".strongroom-aside").exists(),
            "a repaired file being written": _temp_on(folder),
            "half the missing files restored": _half_back(hurt["deleted"]),
            "a new ledger segment appears": _new_segment(arch),
        }[point]
        code = fk.run_and_kill(arch, ["--json", "audit", "--all", "--deep"], tmp_path / f"a{i}.log", when=when)
        outcomes[point] = code
        log = (tmp_path / f"a{i}.log").read_text(errors="replace")
        # killed, or (on a fast machine) it finished first and repaired everything: exit 0
        if code not in (KILLED, 0):
            failed[point] = [f"first run exit {code}: {log[-800:]}"]
            continue
        rerun = fk.inproc(arch, "--json", "audit", "--all", "--deep")
        problems = [] if rerun.code == 0 else [f"rerun exit {rerun.code}: {rerun.text[:800]}"]
        # the copy holds the source's bytes again
        if fk.tree_digests(folder / "data") != fk.tree_digests(arch.bag_folder("site-a", bag_id) / "data"):
            problems.append("site-b's payload differs from site-a's after the rerun")
        # every repair is in the ledger, once: none lost with the killed run, none twice
        recorded = repairs_recorded(arch, bag_id)
        if recorded != {p: 1 for p in hurt["relpaths"]}:
            problems.append(f"repairs recorded {recorded}, want each of {hurt['relpaths']} once")
        # the odd objects and the stray file are moved aside (kept, never deleted), each recorded once
        aside = arch.roots["site-b"] / ".strongroom-aside"
        kept = sorted({Path(d).name for d, _, names in os.walk(aside) for n in names} |
                      {n for _, _, names in os.walk(aside) for n in names}) if aside.is_dir() else []
        if "stray.bin" not in kept:
            problems.append(f"the stray file is not kept in {aside}: {kept}")
        # ... and the ledger says where each went, once: an auditor must be able to find it
        recorded_aside = moved_aside(arch, bag_id)
        if sorted(recorded_aside) != hurt["aside"] or any(len(d) != 1 for d in recorded_aside.values()):
            problems.append(f"moves aside recorded {recorded_aside}, want each of {hurt['aside']} once")
        elif not all(".strongroom-aside" in d[0] for d in recorded_aside.values()):
            problems.append(f"a move aside is recorded without saying where to: {recorded_aside}")
        problems += fk.health_problems(arch)
        if problems:
            failed[point] = problems
    assert failed == {}, failed
    hit = [p for p, c in outcomes.items() if c == KILLED]
    assert len(hit) >= len(AUDIT_POINTS) - 1, f"only {hit} were interrupted: {outcomes}"
    assert "a repaired file being written" in hit or "half the missing files restored" in hit, outcomes


# --------------------------------------------------------------------------------------------
# kill -9 of a restore


def _restore_temp(dest: Path) -> List[Path]:
    return [dest.parent / n for n in os.listdir(dest.parent) if n.startswith(f".{dest.name}.restore-")]


def _restore_started(dest: Path) -> Callable[[], bool]:
    return lambda: bool(_restore_temp(dest))


def _restore_half(dest: Path, files: int) -> Callable[[], bool]:
    def seen() -> bool:
        for tmp in _restore_temp(dest):
            scans = tmp / "data" / "scans"
            try:
                if len(os.listdir(scans)) >= files // 2:
                    return True
            except OSError:
                pass
        return False
    return seen


RESTORE_POINTS = [(False, "temp folder made"), (False, "half the payload written"),
                  (True, "half the payload written"), (False, "DEST in place")]


def test_restore_killed_then_rerun_restores_exactly_and_leaves_nothing(template, tmp_path):
    _, source, bag_id = template
    failed, outcomes = {}, {}
    for i, (payload_only, point) in enumerate(RESTORE_POINTS):
        point = point + (" (payload only)" if payload_only else "")
        arch = fresh(template, tmp_path / f"r{i}")
        dest = tmp_path / f"r{i}-out" / "restored"
        dest.parent.mkdir()
        argv = ["restore", bag_id, dest] + (["--payload-only"] if payload_only else [])
        when = {"temp folder made": _restore_started(dest),
                "half the payload written": _restore_half(dest, 48),
                # renamed into place: the restore is done but for its record and its exit; the
                # operator who saw it killed cannot know, and reruns the same command
                "DEST in place": dest.exists}.get(point.split(" (")[0])
        code = fk.run_and_kill(arch, argv, tmp_path / f"r{i}.log", when=when)
        outcomes[point] = code
        if code not in (KILLED, 0):
            failed[point] = [f"first run exit {code}: " + (tmp_path / f"r{i}.log").read_text(errors="replace")[-800:]]
            continue
        problems = []
        if code == KILLED:
            rerun = fk.inproc(arch, *argv)
            if rerun.code != 0:
                problems.append(f"rerun exit {rerun.code}: {rerun.text[:800]}")
        payload = dest if payload_only else dest / "data"
        if not payload.is_dir() or fk.tree_digests(payload) != fk.tree_digests(source):
            problems.append("the restored tree differs from the source")
        done = sum(n for k, n in fk.success_counts(arch).items() if k[0] == "dissemination")
        if done != 1:
            problems.append(f"the restore is recorded {done} times")
        problems += fk.health_problems(arch, dest.parent, deep=(i == 0))
        if problems:
            failed[point] = problems
    assert failed == {}, failed
    hit = [p for p, c in outcomes.items() if c == KILLED]
    assert len(hit) >= len(RESTORE_POINTS) - 1, f"only {hit} were interrupted: {outcomes}"


# --------------------------------------------------------------------------------------------
# kill -9 of a deposit, checked as strictly as the others (test_deposit_crash.py has more points)


def _temp_under(folder: Path, test: Callable[[str], bool]) -> Callable[[], bool]:
    def seen() -> bool:
        for _, _, names in os.walk(folder):
            if any(test(n) for n in names):
                return True
        return False
    return seen


DEPOSIT_POINTS = ["a target being written", "a catalog record being written"]


def test_deposit_killed_then_rerun_leaves_a_healthy_archive(tmp_path):
    source = fk.make_files(tmp_path / "source", 16, 256 * KiB, seed="killed deposit")
    failed, outcomes = {}, {}
    for i, point in enumerate(DEPOSIT_POINTS):
        arch = fk.new_archive(tmp_path / f"d{i}" / "archive")
        when = {"a target being written": _temp_under(arch.root / "archive" / "replicas",
                                                      lambda n: n.endswith(".strongroom-part")),
                "a catalog record being written": _temp_under(arch.catalog_path,
                                                              lambda n: n.startswith(".tmp-"))}[point]
        argv = ["deposit", source, "--library", fk.LIB, "--collection", "killed", "--type", "self-built"]
        code = fk.run_and_kill(arch, argv, tmp_path / f"d{i}.log", when=when)
        outcomes[point] = code
        if code not in (KILLED, 0):
            failed[point] = [f"first run exit {code}: " + (tmp_path / f"d{i}.log").read_text(errors="replace")[-800:]]
            continue
        rerun = _deposit(arch, source, "killed")
        problems = [] if rerun.code == 0 else [f"rerun exit {rerun.code}: {rerun.text[-800:]}"]
        problems += fk.health_problems(arch)
        if problems:
            failed[point] = problems
    assert failed == {}, failed
    assert [p for p, c in outcomes.items() if c == KILLED], f"no point was interrupted: {outcomes}"


# --------------------------------------------------------------------------------------------
# kill -9 of a catalog rebuild (the catalog lost whole)


def test_catalog_rebuild_killed_then_rerun_registers_everything_once(template, tmp_path):
    """docs/durability.md says an interrupted rebuild is simply run again: killed as its first
    catalog record appears, the rerun must leave the catalog as a rebuild that ran through."""
    arch = fresh(template, tmp_path / "a")
    shutil.rmtree(arch.catalog_path)
    bags = arch.catalog_path / "bags"
    code = fk.run_and_kill(arch, ["catalog", "rebuild"], tmp_path / "rebuild.log",
                           when=lambda: bags.is_dir() and any(bags.iterdir()))
    assert code in (KILLED, 0), (tmp_path / "rebuild.log").read_text(errors="replace")
    rerun = fk.inproc(arch, "--json", "catalog", "rebuild")
    assert rerun.code == 0, rerun.text[-2000:]
    assert arch.catalog().bags().column("bag_id").to_pylist() == [template[2]]
    registered = [k for k, n in fk.success_counts(arch).items() if k[0] == "metadata extraction" for _ in range(n)]
    assert len(registered) == 1, registered
    assert fk.health_problems(arch) == []


# --------------------------------------------------------------------------------------------
# Disk full: under a replica root, under staging, under the catalog


@pytest.fixture(scope="module")
def mount_kind(tmp_path_factory):
    """tmpfs if this machine lets root mount one, else the loop-image fallback (said, not skipped)."""
    why_not = fk.can_mount_tmpfs(tmp_path_factory.mktemp("probe") / "p")
    if why_not is not None:
        print(f"tmpfs mounts refused ({why_not}): using loop-mounted ext4 images instead")
    return "tmpfs" if why_not is None else "loop"


def _deposit(arch: fk.FaultArchive, source: Path, collection: str) -> fk.Result:
    return fk.inproc(arch, "--json", "deposit", source, "--library", fk.LIB, "--collection", collection,
                     "--type", "self-built")


def _no_space_named(res: fk.Result, *names: str) -> List[str]:
    """What is wrong with the failure: exit 1 or 2, 'no space left' (ENOSPC's words) or 'the disk
    is full', each name, no traceback."""
    problems = []
    if res.code not in (1, 2):
        problems.append(f"exit {res.code}")
    text = res.text
    if "no space left" not in text.lower() and "disk is full" not in text.lower():
        problems.append("neither 'no space left' nor 'disk is full' is said")
    problems += [f"{n!r} not named" for n in names if n not in text]
    if "Traceback" in text:
        problems.append("a traceback")
    return problems + ([text[-1500:]] if problems else [])


def _verified_nowhere(arch: fk.FaultArchive) -> List[str]:
    return [f"{r['bag_id']} on {r['target']} is {r['state']}" for r in arch.catalog().replicas().to_pylist()
            if r["state"] in ("verified", "repaired")]


def test_full_staging_fails_naming_it_and_the_rerun_completes_after_room_is_made(tmp_path, mount_kind):
    arch = fk.new_archive(tmp_path / "archive")
    source = fk.make_files(tmp_path / "source", 12, 256 * KiB)
    with fk.small_fs(arch.staging, 16 << 20, scratch=tmp_path):
        filler = fk.fill(arch.staging, leave=768 * KiB)
        res = _deposit(arch, source, "fullstaging")
        assert _no_space_named(res, str(arch.staging)) == []
        assert _verified_nowhere(arch) == []
        filler.unlink()
        rerun = _deposit(arch, source, "fullstaging")
        assert rerun.code == 0, rerun.text[-2000:]
        assert rerun.data["state"] == "preserved"
        assert fk.health_problems(arch, deep=False) == []


def test_full_catalog_fails_naming_it_and_the_rerun_completes_after_room_is_made(tmp_path, mount_kind):
    arch = fk.new_archive(tmp_path / "archive")
    source = fk.make_files(tmp_path / "source", 12, 256 * KiB)
    with fk.small_fs(arch.catalog_path, 1 << 20, scratch=tmp_path):
        filler = fk.fill(arch.catalog_path)
        res = _deposit(arch, source, "fullcatalog")
        assert _no_space_named(res, "catalog") == []
        filler.unlink()
        assert fk.falsely_verified(arch) == []
        rerun = _deposit(arch, source, "fullcatalog")
        assert rerun.code == 0, rerun.text[-2000:]
        assert rerun.data["state"] == "preserved"
        assert fk.health_problems(arch, deep=False) == []


def test_full_replica_fails_that_target_only_and_the_rerun_completes_after_room_is_made(tmp_path, mount_kind):
    arch = fk.new_archive(tmp_path / "archive")
    source = fk.make_files(tmp_path / "source", 12, 256 * KiB)
    site_b = arch.roots["site-b"]
    with fk.small_fs(site_b, 16 << 20, scratch=tmp_path):
        filler = fk.fill(site_b, leave=512 * KiB)
        res = _deposit(arch, source, "fullreplica")
        assert _no_space_named(res, "site-b") == []
        (bag,) = res.data["bags"]
        assert bag["replicas"]["site-a"]["state"] == "verified"
        assert bag["replicas"]["site-b"]["state"] != "verified"
        assert fk.falsely_verified(arch) == []
        assert fk.leftovers(site_b) == []
        filler.unlink()
        rerun = _deposit(arch, source, "fullreplica")
        assert rerun.code == 0, rerun.text[-2000:]
        assert fk.health_problems(arch) == []


def test_full_replica_during_repair_fails_naming_it_marks_nothing_verified_and_the_rerun_repairs(
        template, tmp_path, mount_kind):
    arch = fresh(template, tmp_path / "a")
    bag_id = template[2]
    site_b = arch.roots["site-b"]
    with fk.small_fs(site_b, 16 << 20, scratch=tmp_path):
        damage(arch, bag_id)
        filler = fk.fill(site_b)
        res = fk.inproc(arch, "--json", "audit", "--all", "--deep")
        assert _no_space_named(res, "site-b") == []
        states = {r["target"]: r["state"] for r in arch.catalog().replicas(bag_id=bag_id).to_pylist()}
        assert states["site-b"] not in ("verified", "repaired"), states
        assert fk.falsely_verified(arch) == []
        assert fk.leftovers(site_b) == []
        filler.unlink()
        rerun = fk.inproc(arch, "--json", "audit", "--all", "--deep")
        assert rerun.code == 0, rerun.text[-2000:]
        assert fk.health_problems(arch) == []


def test_full_catalog_during_an_audit_fails_naming_it_and_the_rerun_records_the_repairs(
        template, tmp_path, mount_kind):
    """The audit repairs a damaged copy but cannot record anything: it must say so (the catalog,
    no space), and after room is made the rerun leaves the copy repaired and recorded."""
    arch = fresh(template, tmp_path / "a")
    bag_id = template[2]
    hurt = damage(arch, bag_id)
    with fk.small_fs(arch.catalog_path, 4 << 20, scratch=tmp_path):
        filler = fk.fill(arch.catalog_path)
        res = fk.inproc(arch, "--json", "audit", "--all", "--deep")
        assert _no_space_named(res, "catalog") == []
        filler.unlink()
        rerun = fk.inproc(arch, "--json", "audit", "--all", "--deep")
        assert rerun.code == 0, rerun.text[-2000:]
        assert fk.health_problems(arch) == []
        # what the first run repaired without being able to record it is recorded by the rerun, once
        assert repairs_recorded(arch, bag_id) == {p: 1 for p in hurt["relpaths"]}


# --------------------------------------------------------------------------------------------
# A target made read-only while a deposit runs


def test_target_made_read_only_mid_deposit_fails_it_alone_and_the_rerun_completes(template, tmp_path):
    """The deposit has started and written its first copy when the other target turns read-only
    (a read-only bind remount: chmod does not stop root). A mount with a file open for writing
    cannot turn read-only (EBUSY), so the switch happens between the two targets' copies."""
    _, source, _ = template
    arch = fk.new_archive(tmp_path / "archive")
    with fk.bind_mounted(arch.roots["site-a"]), fk.bind_mounted(arch.roots["site-b"]):
        made_ro: List[str] = []

        def first_copy_done() -> bool:
            for d in (arch.staging / ".state").glob("*"):
                for p in d.glob("*.copied.json"):
                    done = p.name.rsplit(".", 3)[-3]
                    other = next(t for t in fk.TARGETS if t != done)
                    deadline = time.monotonic() + 10
                    while True:
                        try:
                            fk.remount(arch.roots[other], read_only=True)
                            break
                        except RuntimeError:
                            if time.monotonic() > deadline:
                                raise
                            time.sleep(0.002)
                    late = any(d.glob(f"*.{other}.copied.json"))
                    assert not late, f"{other} was copied before it could be made read-only (timing)"
                    made_ro.append(other)
                    return True
            return False

        log = tmp_path / "deposit.log"
        argv = ["deposit", source, "--library", fk.LIB, "--collection", "readonly", "--type", "self-built"]
        proc = fk.spawn(arch, *argv, log=log)
        try:
            while proc.poll() is None and not first_copy_done():
                time.sleep(0.001)
            proc.wait(timeout=300)
        finally:
            fk.kill_session(proc)
        text = log.read_text(errors="replace")
        assert made_ro, "the deposit finished before a target could be made read-only: " + text
        (ro,) = made_ro
        ok = next(t for t in fk.TARGETS if t != ro)
        assert proc.returncode == 1, text
        assert ro in text and "read-only" in text.lower(), text
        assert "Traceback" not in text, text
        states = {r["target"]: r["state"] for r in arch.catalog().replicas().to_pylist()}
        assert states.get(ok) == "verified" and states.get(ro) != "verified", states
        assert fk.falsely_verified(arch) == []
        fk.remount(arch.roots[ro], read_only=False)
        rerun = _deposit(arch, source, "readonly")
        assert rerun.code == 0, rerun.text[-2000:]
        assert rerun.data["state"] == "preserved"
        assert fk.health_problems(arch) == []
