"""Open findings stay open: every audit run (and latest.json) and `status` report all outstanding
damage in the copies' current catalog records until a later check resolves it, whatever the run
selected; and two audits at once, or an audit during a deposit, do not corrupt each other.

Uses the three-target archive of test_audit (deposited once per module, copied per test).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from pipelines.cli import main
from tests.test_audit import REPO, Archive, copy_archive, deposited, make_source  # noqa: F401


@pytest.fixture
def arch(deposited, tmp_path) -> Archive:  # noqa: F811
    folder, bags = deposited
    return copy_archive(folder, tmp_path / "archive", bags)


def latest(arch: Archive) -> dict:
    return json.loads((Path(arch.config.staging) / ".audit" / "summaries" / "latest.json").read_text("utf-8"))


def status(capsys, arch: Archive, *args: str):
    code = main(["--config", str(arch.cfg), "--json", "status", *args])
    out, err = capsys.readouterr()
    return code, json.loads(out), err


def text_audit(capsys, arch: Archive, *args: str):
    code = main(["--config", str(arch.cfg), "audit", *args])
    out, _ = capsys.readouterr()
    return code, out


def keys(findings) -> set:
    return {(f["bag"], f["target"], f["kind"], f["path"]) for f in findings}


# --------------------------------------------------------------------------------------------
# The next `audit --due` does not go green


def test_no_repair_damage_stays_open_in_the_next_due_run(capsys, arch):
    arch.flip("site-a", "data/a.txt")
    code, s, _ = arch.audit(capsys, "--bag", arch.bag, "--no-repair")
    assert code == 1
    found_at = s["finished_at"]

    code, s, _ = arch.audit(capsys)                     # the cron job: nothing is due
    assert s["counts"]["success"] == 0 and s["counts"]["failure"] == 0
    assert code == 1 and s["exit_code"] == 1 and not s["ok"]
    assert keys(s["open_findings"]) == {(arch.bag, "site-a", "corrupted", "data/a.txt")}
    (f,) = s["open_findings"]
    assert f["state"] == "damaged" and f["site"] == "beijing" and f["since"] <= found_at
    assert s["open_findings_total"] == 1 and s["open_copies"] == 1
    on_disk = latest(arch)
    assert on_disk["exit_code"] == 1 and keys(on_disk["open_findings"]) == keys(s["open_findings"])

    code, out = text_audit(capsys, arch)
    assert code == 1
    assert "STILL OPEN" in out and "corrupted data/a.txt" in out and "Nothing is due.\n" not in out

    # Another collection's audit is not blamed for it (the filter applies to open findings too).
    other = arch.bags[1].split("/")[1]
    code, s, _ = arch.audit(capsys, "--collection", other)
    assert code == 0 and s["open_findings"] == []

    # Repaired and re-verified: resolved, the next run is green again.
    code, s, _ = arch.audit(capsys, "--bag", arch.bag)
    assert code == 0 and s["open_findings"] == []
    code, s, _ = arch.audit(capsys)
    assert code == 0 and s["open_findings"] == [] and latest(arch)["exit_code"] == 0


def test_unrepairable_damage_stays_open(capsys, arch):
    for target in ("site-a", "site-b", "site-c"):       # no good copy anywhere
        arch.flip(target, "data/same-1.bin")
    code, s, _ = arch.audit(capsys, "--bag", arch.bag)
    assert code == 1
    code, s, _ = arch.audit(capsys, "--due")
    assert code == 1
    assert keys(s["open_findings"]) == {(arch.bag, t, "corrupted", "data/same-1.bin")
                                        for t in ("site-a", "site-b", "site-c")}
    assert all(f["no_good_copy"] for f in s["open_findings"])
    assert latest(arch)["exit_code"] == 1


def test_a_later_quick_check_keeps_the_finding_and_status_shows_it(capsys, arch):
    arch.flip("site-b", "data/a.txt")                   # same size: a quick check cannot see it
    code, s, _ = arch.audit(capsys, "--bag", arch.bag, "--no-repair", "--deep")
    assert code == 1
    found = {f["target"]: f for f in s["replicas"]}["site-b"]
    assert found["state"] == "damaged"
    code, s, _ = arch.audit(capsys, "--bag", arch.bag, "--quick", "--no-repair")
    assert code == 1
    assert keys(s["open_findings"]) == {(arch.bag, "site-b", "corrupted", "data/a.txt")}
    since = s["open_findings"][0]["since"]

    code, data, _ = status(capsys, arch)
    assert code == 1
    (bag,) = [b for b in data["bags"] if b["bag_id"] == arch.bag]
    rep = {r["target"]: r for r in bag["replicas"]}["site-b"]
    assert rep["state"] == "damaged" and rep["flags"] == ["damaged"]
    assert rep["since"] == since
    assert [(f["kind"], f["path"]) for f in rep["findings"]] == [("corrupted", "data/a.txt")]
    assert "audit (quick): success" not in rep["detail"] and "corrupted" in rep["detail"]
    (problem,) = [p for p in data["problems"] if p["target"] == "site-b"]
    assert "corrupted data/a.txt" in problem["message"] and since[:10] in problem["message"]
    assert keys(data["open_findings"]) == keys(s["open_findings"])

    code = main(["--config", str(arch.cfg), "status"])
    out, _ = capsys.readouterr()
    assert code == 1 and "corrupted data/a.txt" in out


def test_a_later_deep_audit_closes_what_it_no_longer_finds_and_a_lost_bag_is_one_finding(capsys, arch):
    good = arch.path("site-a", "data/a.txt").read_bytes()
    arch.flip("site-a", "data/a.txt")
    arch.truncate("site-a", "data/same-2.bin")
    shutil.rmtree(arch.path("site-b"))
    code, s, _ = arch.audit(capsys, "--bag", arch.bag, "--no-repair")
    assert code == 1
    assert keys(s["open_findings"]) == {(arch.bag, "site-a", "corrupted", "data/a.txt"),
                                        (arch.bag, "site-a", "truncated", "data/same-2.bin"),
                                        (arch.bag, "site-b", "bag-missing", None)}
    arch.put("site-a", "data/a.txt", good)              # put right by hand, outside Strongroom
    code, s, _ = arch.audit(capsys, "--bag", arch.bag, "--no-repair", "--deep")
    assert code == 1
    assert keys(s["open_findings"]) == {(arch.bag, "site-a", "truncated", "data/same-2.bin"),
                                        (arch.bag, "site-b", "bag-missing", None)}


def test_inconclusive_copy_stays_open_until_checked(capsys, arch):
    root = Path(arch.config.target("site-c").root)
    root.rename(root.with_name("c-away"))
    code, s, _ = arch.audit(capsys, "--bag", arch.bag)
    assert code == 1 and s["counts"]["inconclusive"] == 1
    root.with_name("c-away").rename(root)
    code, s, _ = arch.audit(capsys)
    assert code == 1
    assert {(f["target"], f["state"]) for f in s["open_findings"]} == {("site-c", "verified")}
    assert s["open_findings"][0]["kind"] in ("unreachable", "inconclusive")
    code, s, _ = arch.audit(capsys, "--bag", arch.bag)  # checked again, now readable
    assert code == 0 and s["open_findings"] == []


def test_disputed_copy_is_a_problem_for_status_and_audit(capsys, arch):
    from catalog.schema import REPLICA_STATES, ReplicaRecord

    assert "disputed" in REPLICA_STATES                 # added by the catalog (H1)
    now = datetime.now(timezone.utc)
    arch.catalog.record_replica(ReplicaRecord(bag_id=arch.bag, target="site-a", site="beijing", state="disputed",
                                              verified_at=now, last_audit_at=now, last_audit_kind="deep",
                                              last_audit_outcome="failure", recorded_at=now,
                                              detail="two copies disagree on data/a.txt; nothing decides"))
    code, data, _ = status(capsys, arch)
    assert code == 1
    assert ("disputed", arch.bag, "site-a") in {(p["flag"], p["bag_id"], p["target"]) for p in data["problems"]}
    code, s, _ = arch.audit(capsys, "--collection", arch.bag.split("/")[1], "--no-repair", "--quick")
    assert code == 1 and ("site-a", "disputed") in {(f["target"], f["state"]) for f in s["open_findings"]}


# --------------------------------------------------------------------------------------------
# Concurrency: two audits at once, an audit during a deposit


_AUDIT = """
import json, sys
sys.path.insert(0, {repo!r})
from pipelines.cli import main
sys.exit(main(["--config", sys.argv[1], "--json", "audit", *sys.argv[2:]]))
"""


def _spawn(script: Path, cfg: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, str(script), str(cfg), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)


def _ledger_ok(capsys, arch: Archive) -> None:
    code = main(["--config", str(arch.cfg), "--json", "ledger", "verify"])
    out, err = capsys.readouterr()
    assert code == 0, out + err


def test_two_audits_at_once_and_an_audit_during_a_deposit(capsys, arch, tmp_path):
    arch.flip("site-a", "data/a.txt")
    script = tmp_path / "audit.py"
    script.write_text(_AUDIT.format(repo=str(REPO)), encoding="utf-8")
    procs = [_spawn(script, arch.cfg, "--all"), _spawn(script, arch.cfg, "--all")]
    outs = [p.communicate(timeout=300) for p in procs]
    codes = [p.returncode for p in procs]
    assert all(c in (0, 1) for c in codes), [e.decode()[-2000:] for _, e in outs]
    summaries = [json.loads(o) for o, _ in outs]
    # One of them repaired the copy (the other saw it repaired or skipped it): it ends repaired.
    assert arch.catalog.replica(arch.bag, "site-a").state in ("repaired", "verified")
    assert sum(s["counts"]["repaired"] for s in summaries) >= 1
    _ledger_ok(capsys, arch)
    code, s, _ = arch.audit(capsys, "--bag", arch.bag)
    assert code == 0, s["open_findings"]

    # An audit while a deposit of a new collection is running.
    src = make_source(tmp_path / "new-src", {f"f{i}.bin": os.urandom(20000) for i in range(30)})
    dep_script = tmp_path / "deposit.py"
    dep_script.write_text(_AUDIT.format(repo=str(REPO)).replace('"audit"', '"deposit"'), encoding="utf-8")
    dep = _spawn(dep_script, arch.cfg, str(src), "--library", "LIB", "--collection", "NEW", "--type", "self-built")
    aud = _spawn(script, arch.cfg, "--all")
    dep_out, dep_err = dep.communicate(timeout=300)
    aud_out, aud_err = aud.communicate(timeout=300)
    assert dep.returncode == 0, dep_err.decode()[-2000:]
    assert aud.returncode in (0, 1), aud_err.decode()[-2000:]
    if aud.returncode == 1:   # only for something real: a copy of the new bag caught mid-deposit is not damage
        s = json.loads(aud_out)
        assert s["open_findings"] == [] and s["counts"]["failure"] == 0, s
    _ledger_ok(capsys, arch)
    code, s, _ = arch.audit(capsys, "--all")
    assert code == 0, (s["remaining"], s["open_findings"], s["not_audited"])
