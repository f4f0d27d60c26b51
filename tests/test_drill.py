"""`strongroom drill`: restore drills through the real pipeline (deposit, two filesystem targets).

Two collections are deposited once per module; each test works on its own copy of the archive
folder (config paths are relative), so damaging a copy in one test cannot leak into another.
"""

import datetime as dt
import fcntl
import json
import os
import random
import shutil
from pathlib import Path

import pytest

from catalog.catalog import Catalog
from catalog.drills import is_drill_detail, last_drills
from fixity.drill import choose, run_drill
from fixity.drill_scratch import LOCK_MARKER
from pipelines.cli import main
from policies.config import load_config, write_default_config

FILES = {"a.txt": b"alpha\n" * 100, "sub/中文.txt": "善本\n".encode("utf-8") * 40,
         "big.bin": random.Random(3).randbytes(300_000)}


@pytest.fixture(scope="module")
def deposited(tmp_path_factory):
    base = tmp_path_factory.mktemp("drill")
    cfg = write_default_config(base / "archive")
    for lib, coll in (("PKU", "rare"), ("WHU", "maps")):
        src = base / f"src-{lib}"
        for rel, data in FILES.items():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            (src / rel).write_bytes(data + lib.encode())
        assert main(["--config", str(cfg), "deposit", str(src), "--library", lib, "--collection", coll,
                     "--type", "self-built"]) == 0
    return base / "archive"


class Archive:
    def __init__(self, folder: Path):
        self.cfg = folder / "strongroom.yaml"
        self.config = load_config(self.cfg)
        self.catalog = Catalog(self.config.catalog)
        self.bags = self.catalog.bags().column("bag_id").to_pylist()
        self.scratch = self.config.staging / "drills"

    def drill(self, capsys, *extra):
        code = main(["--config", str(self.cfg), "--json", "drill", *extra])
        out, err = capsys.readouterr()
        return code, (json.loads(out) if out.strip() else None), err

    def stored(self, target: str, bag: str, relpath: str) -> Path:
        return Path(self.config.target(target).root).joinpath(*bag.split("/"), relpath)

    def drill_events(self):
        return [e for e in self.catalog.events(type="fixity check").to_pylist() if is_drill_detail(e["detail"])]


@pytest.fixture
def archive(deposited, tmp_path):
    copy = tmp_path / "archive"
    shutil.copytree(deposited, copy, symlinks=True)
    return Archive(copy)


def _scratch_left(archive: Archive) -> list:
    return sorted(os.listdir(archive.scratch)) if archive.scratch.exists() else []


def test_every_bag_restored_from_each_target_verified_recorded_and_cleaned_up(archive, capsys):
    before = archive.catalog.events().num_rows
    code, out, err = archive.drill(capsys, "--sample", "5", "--seed", "42")
    assert code == 0, err
    assert out["ok"] and out["seed"] == 42 and out["run"].startswith("drill-")
    assert [t["target"] for t in out["targets"]] == ["site-a", "site-b"]
    for t in out["targets"]:
        assert t["drilled"] == 2 and t["failed"] == 0
        # the recorded seed reproduces the draw, order included
        assert [b["bag"] for b in t["bags"]] == choose(archive.bags, {}, random.Random(f"42/{t['target']}"), 5, None)
        assert sorted(b["bag"] for b in t["bags"]) == sorted(archive.bags)
        for b in t["bags"]:
            assert b["files"] == 3 and b["bytes"] == sum(len(d) + 3 for d in FILES.values())
    events = archive.drill_events()
    assert sorted((e["bag_id"], e["target"], e["outcome"], e["object_type"]) for e in events) == \
        sorted((b, t, "success", "replica") for b in archive.bags for t in ("site-a", "site-b"))
    assert all(f"{out['run']} (seed 42): restored from {e['target']}" in e["detail"] for e in events)
    assert {e["event_id"] for e in events} == {b["event"] for t in out["targets"] for b in t["bags"]}
    # nothing but the drill events was recorded: no dissemination (nothing left the archive)
    assert archive.catalog.events().num_rows == before + 4
    assert archive.catalog.events(type="dissemination").num_rows == 0
    assert _scratch_left(archive) == []
    last = last_drills(archive.catalog)
    assert set(last) == {"site-a", "site-b"}
    assert all(d.outcome == "success" and d.bags == 2 and d.failed == 0 and d.run_id == out["run"]
               and d.seed == 42 and d.files == 6 for d in last.values())


def test_a_damaged_copy_fails_its_drill_without_falling_back_to_the_other_target(archive, capsys):
    bag = archive.bags[0]
    p = archive.stored("site-a", bag, "data/sub/中文.txt")
    p.chmod(0o644)
    data = bytearray(p.read_bytes())
    data[5] ^= 0x01
    p.write_bytes(bytes(data))
    code, out, err = archive.drill(capsys, "--target", "site-a", "--sample", "5")
    assert code == 1, err
    (t,) = out["targets"]
    assert t["target"] == "site-a" and t["failed"] == 1
    failed = [b for b in t["bags"] if b["outcome"] == "failure"]
    assert [b["bag"] for b in failed] == [bag] and failed[0]["damaged"]
    assert any("data/sub/中文.txt" in p and "checksum mismatch" in p for p in failed[0]["problems"])
    (event,) = [e for e in archive.drill_events() if e["outcome"] == "failure"]
    assert (event["bag_id"], event["target"], event["event_id"]) == (bag, "site-a", failed[0]["event"])
    assert "FAILED on site-a" in event["detail"]
    # the finding is recorded as a restore records it, and the copy waits for the audit's repair
    bad = [e for e in archive.catalog.events(bag_id=bag, type="fixity check").to_pylist()
           if e["object_type"] == "file" and e["outcome"] == "failure"]
    assert [(e["target"], e["path"]) for e in bad] == [("site-a", "data/sub/中文.txt")]
    assert archive.catalog.replica(bag, "site-a").state == "damaged"
    assert archive.catalog.replica(bag, "site-b").state == "verified"
    assert archive.catalog.events(type="recovery").num_rows == 0    # site-b was never read
    assert _scratch_left(archive) == []
    assert last_drills(archive.catalog)["site-a"].outcome == "failure"
    # text output says so, and exit 1 again
    code = main(["--config", str(archive.cfg), "drill", "--target", "site-a", "--sample", "5"])
    out_text = capsys.readouterr().out
    assert code == 0 or "FAILED" not in out_text   # the damaged copy is no longer drawn: audit repairs it first
    assert "site-a" in out_text


def test_a_killed_drills_scratch_is_removed_by_the_next_drill_a_live_ones_is_not(archive, capsys):
    archive.scratch.mkdir(parents=True)
    dead, live = "drill-20260101T000000Z-0badf00d", "drill-20260101T000001Z-0000beef"
    for run in (dead, live):
        (archive.scratch / run / "bag-0" / "data").mkdir(parents=True)
        (archive.scratch / run / "bag-0" / "data" / "x").write_bytes(b"half restored")
        (archive.scratch / f"{run}.lock").write_bytes(LOCK_MARKER + f"folder: {run}\n".encode())
    (archive.scratch / "notes.txt").write_text("not a drill's")
    fd = os.open(archive.scratch / f"{live}.lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        code, out, err = archive.drill(capsys)
        assert code == 0, err
        assert out["removed_stale_scratch"] == [str(archive.scratch / dead)]
        assert _scratch_left(archive) == sorted([live, f"{live}.lock", "notes.txt"])
    finally:
        os.close(fd)


def test_due_drills_only_targets_not_drilled_within_the_cadence(archive, capsys):
    code, out, _ = archive.drill(capsys, "--target", "site-b")
    assert code == 0 and out["targets"][0]["drilled"] == 1
    code, out, err = archive.drill(capsys, "--due")
    assert code == 0, err
    by = {t["target"]: t for t in out["targets"]}
    assert by["site-a"]["drilled"] == 1 and by["site-b"]["drilled"] == 0
    assert by["site-b"]["skipped"].startswith("not due: last drilled")
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=181)
    report = run_drill(archive.config, archive.catalog, due=True, now=later)
    assert [len(t.bags) for t in report.targets] == [1, 1]
    report = run_drill(archive.config, archive.catalog, due=True, now=later, every=dt.timedelta(days=365))
    assert [len(t.bags) for t in report.targets] == [0, 0]
    # the policy's own cadence, fixity.drill_every (180d by default)
    policy = archive.config.policies_dir / "self-built.yaml"
    text = policy.read_text()
    policy.write_text(text.replace("  drill_every: 180d", "  drill_every: 30d"))
    sooner = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=31)
    report = run_drill(load_config(archive.cfg), archive.catalog, due=True, now=sooner)
    assert [len(t.bags) for t in report.targets] == [1, 1]
    policy.write_text(text.replace("  drill_every: 180d", "  drill_every: soon"))
    code = main(["--config", str(archive.cfg), "drill", "--due"])
    assert code == 2 and "fixity.drill_every" in capsys.readouterr().err


def test_library_scope_and_seed(archive, capsys):
    code, out, err = archive.drill(capsys, "--library", "WHU", "--sample", "5", "--seed", "7")
    assert code == 0, err
    assert {b["bag"] for t in out["targets"] for b in t["bags"]} == {b for b in archive.bags if b.startswith("WHU/")}
    assert set(last_drills(archive.catalog, "PKU")) == set()
    assert set(last_drills(archive.catalog, "WHU")) == {"site-a", "site-b"}
    # the recorded seed reproduces the draw: the same bags in the same order, target by target
    whu = [b for b in archive.bags if b.startswith("WHU/")]
    sizes = {b: 1 for b in whu}
    for t in out["targets"]:
        again = choose(whu, sizes, random.Random(f"{out['seed']}/{t['target']}"), 5, None)
        assert [b["bag"] for b in t["bags"]] == again


def test_choose_draws_at_random_within_the_budget():
    bags = [f"L/C/20260101T00000{i}Z-1" for i in range(8)]
    sizes = {b: 100 * (i + 1) for i, b in enumerate(bags)}
    picks = {frozenset(choose(bags, sizes, random.Random(s), None, 1000)) for s in range(30)}
    assert len(picks) > 5                                              # random, not always the same
    assert all(sum(sizes[b] for b in p) <= 1000 and p for p in picks)
    assert choose(bags, sizes, random.Random(1), None, 50) == [bags[0]]   # nothing fits: the smallest
    assert choose(bags, sizes, random.Random(5), 3, None) == choose(list(reversed(bags)), sizes, random.Random(5), 3, None)
    assert choose([], sizes, random.Random(1), 2, None) == []


def test_bad_options_are_usage_errors(archive, capsys):
    for argv, words in ((["--sample", "0"], "--sample"), (["--bytes", "lots"], "--bytes"),
                        (["--target", "nowhere"], "nowhere"), (["--every", "30d"], "--due"),
                        (["--library", "NOPE"], "NOPE")):
        code = main(["--config", str(archive.cfg), "drill", *argv])
        _, err = capsys.readouterr()
        assert code == 2 and words in err and "Traceback" not in err, (argv, err)
    with pytest.raises(SystemExit) as exc:
        main(["--config", str(archive.cfg), "drill", "--sample", "1", "--bytes", "1GB"])
    assert exc.value.code == 2 and "not allowed" in capsys.readouterr().err
    assert archive.drill_events() == []


def test_drills_on_s3_targets_read_each_bucket_alone(seaweed, tmp_path, capsys, monkeypatch):
    from tests.test_audit import FILES as AUDIT_FILES, s3_archive

    arch, bag, east, west, prefix = s3_archive(seaweed, tmp_path, monkeypatch, name="drill")
    cfg = arch.cfg
    capsys.readouterr()
    original = AUDIT_FILES["a.txt"]
    seaweed.client().put_object(Bucket=east, Key=f"{prefix}/{bag}/data/a.txt", Body=b"X" * len(original))
    code = main(["--config", str(cfg), "--json", "drill", "--sample", "3"])
    out = json.loads(capsys.readouterr().out)
    assert code == 1
    by = {t["target"]: t for t in out["targets"]}
    assert by["local"]["failed"] == 0 and by["s3-west"]["failed"] == 0 and by["local"]["drilled"] == 1
    (failed,) = by["s3-east"]["bags"]
    assert failed["outcome"] == "failure" and failed["damaged"]
    assert any("data/a.txt" in p and "checksum mismatch" in p for p in failed["problems"])
    catalog = Catalog(load_config(cfg).catalog)
    assert catalog.replica(bag, "s3-east").state == "damaged" and catalog.replica(bag, "s3-west").state == "verified"
    assert os.listdir(arch.config.staging / "drills") == []
