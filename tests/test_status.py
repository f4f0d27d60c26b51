"""`strongroom status`: counts, replica states, flags and exit codes over real deposits.

Two small collections are deposited once per module through the real pipeline (`strongroom
deposit`, Luigi, filesystem targets); every test works on its own copy of that archive folder
(all its paths are relative to its config file), so tests can damage it freely. Expected
numbers are computed from the source folders, never written in.

The helpers at the top are shared with test_rebuild.py.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Dict

import pytest

LIB = "PKU"


# --------------------------------------------------------------------------------------------
# Helpers


@dataclass
class Run:
    code: int
    out: str
    err: str

    @property
    def data(self) -> dict:
        return json.loads(self.out)


def cli(capsys, *argv) -> Run:
    from pipelines.cli import main

    capsys.readouterr()
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return Run(code, captured.out, captured.err)


def make_source(folder: Path, files: Dict[str, bytes]) -> Path:
    for rel, data in files.items():
        p = folder / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return folder


def source_totals(folder: Path):
    files = [p for p in folder.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


SOURCES = {
    "books": {"vol 1.txt": b"first volume\n" * 40, "sub/vol2.txt": b"second" * 333, "sub/deep/empty.dat": b"",
              "scan.bin": bytes(range(256)) * 9},
    "maps": {"map-01.txt": b"a map of somewhere\n", "map-02.txt": b"another map\n" * 7},
}


@dataclass
class Deposited:
    root: Path
    config: Path
    sources: Dict[str, Path]
    bags: Dict[str, str]        # collection -> bag id


def clone(dep: Deposited, dest: Path) -> Deposited:
    """A private copy of a deposited archive (its config uses paths relative to itself)."""
    shutil.copytree(dep.root / "archive", dest / "archive", symlinks=True)
    return Deposited(dest, dest / "archive" / dep.config.name, dep.sources, dep.bags)


def load(dep: Deposited):
    from policies.config import load_config

    return load_config(dep.config)


def catalog_of(dep: Deposited):
    from catalog.catalog import Catalog

    return Catalog(load(dep).catalog)


def status(capsys, dep: Deposited, *args) -> Run:
    return cli(capsys, "--config", dep.config, "--json", "status", *args)


def status_text(capsys, dep: Deposited, *args) -> Run:
    return cli(capsys, "--config", dep.config, "status", *args)


def replicas_by_bag(data: dict) -> Dict[str, Dict[str, dict]]:
    return {b["bag_id"]: {r["target"]: r for r in b["replicas"]} for b in data["bags"]}


@pytest.fixture(scope="module")
def deposited(tmp_path_factory):
    """Deposited once per module (capsys is per test, so output is captured by hand); tests `clone` it."""
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        return _deposit_quietly(tmp_path_factory.mktemp("deposited"), out)


def _deposit_quietly(root: Path, out) -> Deposited:
    from pipelines.cli import main
    from policies.config import write_default_config

    config = Path(write_default_config(root / "archive"))
    sources, bags = {}, {}
    for coll, files in SOURCES.items():
        src = make_source(root / "src" / coll, files)
        start = out.tell()
        code = main(["--config", str(config), "--json", "deposit", str(src), "--library", LIB,
                     "--collection", coll, "--type", "self-built"])
        text = out.getvalue()[start:]
        assert code == 0, text
        (bag,) = json.loads(text)["bags"]
        sources[coll], bags[coll] = src, bag["id"]
    return Deposited(root, config, sources, bags)


@pytest.fixture
def arch(deposited, tmp_path) -> Deposited:
    return clone(deposited, tmp_path)


def record(dep: Deposited, bag_id: str, target: str, state: str, **kw):
    from catalog.schema import ReplicaRecord

    config = load(dep)
    catalog_of(dep).record_replica(ReplicaRecord(bag_id=bag_id, target=target, site=config.target(target).site,
                                                 state=state, **kw))


# --------------------------------------------------------------------------------------------
# All well


def test_json_counts_states_and_ledger_head(capsys, arch):
    run = status(capsys, arch)
    assert run.code == 0, run.out + run.err
    data = run.data
    expected_files = expected_bytes = 0
    for coll, src in arch.sources.items():
        n, size = source_totals(src)
        expected_files += n
        expected_bytes += size
        (c,) = [c for c in data["collections"] if c["collection"] == coll]
        assert (c["library"], c["totals"]["bags"], c["totals"]["files"], c["totals"]["bytes"]) == (LIB, 1, n, size)
        assert c["totals"]["replicas"] == {"verified": 2}
        assert c["policies"] == ["self-built"]
        (bag,) = [b for b in data["bags"] if b["collection"] == coll]
        assert (bag["bag_id"], bag["files"], bag["bytes"], bag["ok"], bag["flags"]) == (arch.bags[coll], n, size,
                                                                                       True, [])
    assert data["totals"]["bags"] == 2
    assert (data["totals"]["files"], data["totals"]["bytes"]) == (expected_files, expected_bytes)
    assert data["totals"]["replicas"] == {"verified": 4}
    assert data["libraries"] == [{"library": LIB, "totals": data["totals"]}]

    config = load(arch)
    for bag_id, reps in replicas_by_bag(data).items():
        assert list(reps) == ["site-a", "site-b"]
        for target, r in reps.items():
            assert (r["state"], r["site"], r["in_policy"], r["flags"]) == ("verified", config.target(target).site,
                                                                           True, [])
            assert (r["last_audit_kind"], r["last_audit_outcome"]) == ("deep", "success")
            verified = datetime.fromisoformat(r["verified_at"].replace("Z", "+00:00"))
            due = datetime.fromisoformat(r["deep_due_at"].replace("Z", "+00:00"))
            assert due - verified == config.cadence_for(config.policy("self-built"), target).deep_every

    seq, head = catalog_of(arch).ledger_head()
    assert seq >= 0 and data["ledger_head"] == {"seq": seq, "hash": head}
    assert (data["ok"], data["exit_code"], data["problems"], data["warnings"], data["deposits"]) == \
        (True, 0, [], [], [])


def test_json_keys_are_stable(capsys, arch):
    data = status(capsys, arch).data
    assert set(data) == {"catalog", "generated_at", "ok", "exit_code", "ledger_head", "filters", "totals",
                         "libraries", "collections", "bags", "deposits", "problems", "warnings", "open_findings",
                         "targets", "locations", "notes", "coverage", "withdrawn"}
    assert set(data["totals"]) == {"bags", "files", "bytes", "replicas", "problems", "warnings"}
    bag = data["bags"][0]
    assert set(bag) == {"bag_id", "library", "collection", "title", "policy", "part", "part_count", "files", "bytes",
                        "created_at", "replicas", "flags", "ok", "locations"}
    assert set(bag["replicas"][0]) == {
        "target", "site", "state", "in_policy", "verified_at", "last_audit_kind", "last_audit_at",
        "last_audit_outcome", "last_deep_at", "last_check_at", "deep_due_at", "quick_due_at", "detail",
        "recorded_at", "flags", "retention", "location", "since", "findings"}
    assert set(data["targets"][0]) == {"name", "type", "site", "location", "copies", "reachable", "reason"}


def test_text_is_aligned_and_shows_what_is_held(capsys, arch):
    run = status_text(capsys, arch)
    assert run.code == 0, run.err
    lines = run.out.splitlines()
    _, head = catalog_of(arch).ledger_head()
    assert any(head in line for line in lines)
    for coll, src in arch.sources.items():
        n, _ = source_totals(src)
        (row,) = [line for line in lines if line.startswith(f"{LIB}/{coll} ")]
        assert row.split()[1:4] == ["self-built", "1", str(n)]
        (bag_row,) = [line for line in lines if line.startswith(arch.bags[coll])]
        assert "site-a" in bag_row and "verified" in bag_row
    header = next(line for line in lines if line.startswith("BAG "))
    bag_rows = [line for line in lines if line.startswith(tuple(arch.bags.values()))]
    # aligned: every row's STATE column starts where the header's does
    col = header.index("STATE")
    assert all(line[col:].startswith("verified") for line in bag_rows)
    assert len(lines) < 40
    assert "All well" in lines[-1]


def test_filters_narrow_and_unknown_names_are_usage_errors(capsys, arch):
    books = status(capsys, arch, "--collection", "books").data
    assert [b["bag_id"] for b in books["bags"]] == [arch.bags["books"]]
    assert books["totals"]["files"] == source_totals(arch.sources["books"])[0]
    one = status(capsys, arch, "--bag", arch.bags["maps"]).data
    assert [b["bag_id"] for b in one["bags"]] == [arch.bags["maps"]]
    assert one["filters"]["bag"] == arch.bags["maps"]
    assert len(status(capsys, arch, "--library", LIB).data["bags"]) == 2

    run = status(capsys, arch, "--bag", "PKU/nope/20200101T000000Z-1")
    # --json: the error is also the one JSON document on stdout (issue 18)
    doc = json.loads(run.out)
    assert run.code == 2 and doc["ok"] is False and doc["exit_code"] == 2 and "--bag" in doc["error"]
    assert "PKU/nope/20200101T000000Z-1" in run.err and "--bag" in run.err
    run = status(capsys, arch, "--library", "NOPE")
    assert run.code == 2 and "NOPE" in run.err and LIB in run.err


# --------------------------------------------------------------------------------------------
# Problems


def test_damaged_and_missing_copies_exit_1_and_are_flagged(capsys, arch):
    books, maps = arch.bags["books"], arch.bags["maps"]
    record(arch, books, "site-b", "damaged", detail="data/scan.bin: checksum mismatch")
    record(arch, maps, "site-a", "missing", detail="bag not found")
    run = status(capsys, arch)
    assert run.code == 1
    data = run.data
    reps = replicas_by_bag(data)
    assert reps[books]["site-b"]["state"] == "damaged" and reps[books]["site-b"]["flags"] == ["damaged"]
    assert reps[books]["site-a"]["state"] == "verified" and reps[books]["site-a"]["flags"] == []
    assert reps[maps]["site-a"]["flags"] == ["missing"]
    assert {(p["flag"], p["bag_id"], p["target"]) for p in data["problems"]} == {
        ("damaged", books, "site-b"), ("missing", maps, "site-a")}
    assert data["totals"]["replicas"] == {"damaged": 1, "missing": 1, "verified": 2}
    assert data["totals"]["problems"] == 2 and not data["ok"]

    text = status_text(capsys, arch)
    assert text.code == 1
    assert "DAMAGED" in text.out and "MISSING" in text.out and "checksum mismatch" in text.out
    assert "ATTENTION" in text.out
    # narrowed to the healthy bag: nothing wrong there
    assert status(capsys, arch, "--bag", maps, "--collection", "maps").code == 1
    record(arch, maps, "site-a", "verified", verified_at=datetime.now(timezone.utc), last_audit_kind="deep",
           last_audit_at=datetime.now(timezone.utc), last_audit_outcome="success")
    assert status(capsys, arch, "--collection", "maps").code == 0


def test_unverified_and_absent_copies_are_problems(capsys, arch):
    from catalog.schema import BagRecord, FileRecord

    record(arch, arch.bags["maps"], "site-b", "copied")
    # A bag the policy wants on site-a and site-b, recorded only on site-a.
    bag_id = "PKU/maps/20200101T000000Z-1"
    files = [FileRecord(bag_id=bag_id, path="data/x.txt", size=5, sha256="ab" * 32)]
    catalog_of(arch).add_bag(BagRecord(bag_id=bag_id, library=LIB, collection="maps", collection_type="self-built",
                                       title=None, policy="self-built", external_identifier="urn:uuid:x",
                                       group_id="PKU/maps/20200101T000000Z", part=1, part_count=1, file_count=1,
                                       byte_count=5, created_at=datetime(2020, 1, 1, tzinfo=timezone.utc)), files)
    now = datetime.now(timezone.utc)
    record(arch, bag_id, "site-a", "verified", verified_at=now, last_audit_at=now, last_audit_kind="deep",
           last_audit_outcome="success")
    run = status(capsys, arch, "--collection", "maps")
    assert run.code == 1
    reps = replicas_by_bag(run.data)
    assert reps[arch.bags["maps"]]["site-b"]["flags"] == ["unverified"]
    assert reps[bag_id]["site-b"]["state"] == "absent" and reps[bag_id]["site-b"]["flags"] == ["absent"]
    assert reps[bag_id]["site-b"]["site"] == load(arch).target("site-b").site
    assert run.data["collections"][0]["totals"]["files"] == source_totals(arch.sources["maps"])[0] + 1
    assert {p["flag"] for p in run.data["problems"]} == {"unverified", "absent"}


@pytest.mark.parametrize("how", ["renamed", "emptied", "a-file"])
def test_unreachable_target_is_a_problem_not_a_list_of_verified_copies(capsys, arch, how):
    """A target's root unmounted (renamed away, an empty mount point, something else in its place):
    status flags the target unreachable and every copy there, exit 1, instead of "verified"."""
    root = Path(load(arch).target("site-b").root)
    if how == "renamed":
        root.rename(root.with_name("site-b-away"))
    elif how == "emptied":
        shutil.move(str(root), str(root.with_name("site-b-away")))
        root.mkdir()
    else:
        shutil.rmtree(root)
        root.write_text("not a folder\n")
    run = status(capsys, arch)
    assert run.code == 1
    data = run.data
    (t,) = [t for t in data["targets"] if t["name"] == "site-b"]
    assert t["reachable"] is False and t["copies"] == 2 and str(root) in t["reason"]
    assert [t["reachable"] for t in data["targets"] if t["name"] == "site-a"] == [True]
    assert ("unreachable", "site-b") in {(p["flag"], p["target"]) for p in data["problems"]}
    for bag in data["bags"]:
        reps = {r["target"]: r for r in bag["replicas"]}
        assert "unreachable" in reps["site-b"]["flags"] and reps["site-a"]["flags"] == []
        assert not bag["ok"]
    text = status_text(capsys, arch)
    assert text.code == 1 and "site-b is unreachable" in text.out and "All well" not in text.out


def test_unreachable_s3_target_is_found_with_one_quick_request(capsys, arch, monkeypatch):
    """An S3 target the catalog records a copy on, whose endpoint does not answer (a closed port):
    flagged unreachable after one request without retries, in a few seconds at most."""
    import socket
    import time

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]      # closed again when the block ends: nothing listens there
    monkeypatch.setenv("SR_TEST_KEY", "AKIDEXAMPLE")
    monkeypatch.setenv("SR_TEST_SECRET", "not-a-real-secret")
    cfg = arch.config.read_text("utf-8")
    arch.config.write_text(cfg.replace("\nstorage:\n", "\nstorage:\n  s3-far:\n    type: s3\n"
                                       f"    endpoint: http://127.0.0.1:{port}\n    bucket: strongroom-far\n"
                                       "    site: far-away\n    credentials: {access_key_env: SR_TEST_KEY, "
                                       "secret_key_env: SR_TEST_SECRET}\n", 1), "utf-8")
    now = datetime.now(timezone.utc)
    record(arch, arch.bags["maps"], "s3-far", "verified", verified_at=now, last_audit_at=now,
           last_audit_kind="deep", last_audit_outcome="success")
    started = time.monotonic()
    run = status(capsys, arch)
    assert time.monotonic() - started < 15
    assert run.code == 1
    (t,) = [t for t in run.data["targets"] if t["name"] == "s3-far"]
    assert t["reachable"] is False and t["copies"] == 1 and "does not answer" in t["reason"]
    assert "not-a-real-secret" not in run.out + run.err
    assert [t["reachable"] for t in run.data["targets"] if t["type"] == "filesystem"] == [True, True]


def test_repaired_counts_as_good_and_disputed_is_a_problem(capsys, arch):
    books = arch.bags["books"]
    now = datetime.now(timezone.utc)
    record(arch, books, "site-b", "repaired", verified_at=now, last_audit_at=now, last_audit_kind="deep",
           last_audit_outcome="success", detail="audit (deep): 1 repair(s) made from good copies and re-verified")
    run = status(capsys, arch)
    assert run.code == 0, run.out
    reps = replicas_by_bag(run.data)[books]
    assert reps["site-b"]["state"] == "repaired" and reps["site-b"]["flags"] == []
    assert run.data["problems"] == []

    from catalog.schema import REPLICA_STATES

    assert "disputed" in REPLICA_STATES       # added to the catalog schema by H1
    record(arch, books, "site-b", "disputed", verified_at=now, last_audit_at=now, last_audit_kind="deep",
           last_audit_outcome="failure", detail="copies disagree on data/scan.bin")
    run = status(capsys, arch)
    assert run.code == 1
    assert {(p["flag"], p["target"]) for p in run.data["problems"]} == {("disputed", "site-b")}


def test_two_folders_on_one_disk_are_one_location(capsys, arch):
    """The default init layout: two targets on one file system count as one location."""
    run = status(capsys, arch)
    assert run.code == 0
    data = run.data
    assert [g["targets"] for g in data["locations"]] == [["site-a", "site-b"]]
    assert all(b["locations"] == 1 for b in data["bags"])
    assert any("site-a and site-b are on one file system" in n for n in data["notes"])
    assert "one file system" in run.err
    text = status_text(capsys, arch)
    assert "Locations:" in text.out and "in 1 location(s)" in text.out.splitlines()[-1]


# --------------------------------------------------------------------------------------------
# Overdue


def test_overdue_is_a_warning_per_target_cadence(capsys, arch, monkeypatch):
    """Old verification dates: deep and quick audits overdue (exit 0, warnings); a recent quick
    audit clears only the quick one; a target's own longer cadence clears it for that target."""
    import reports.status as rs

    config = load(arch)
    policy = config.policy("self-built")
    deep = config.cadence_for(policy, "site-a").deep_every
    books = arch.bags["books"]
    old = datetime.now(timezone.utc) - deep - timedelta(days=3)
    for target in ("site-a", "site-b"):
        # a newer record carrying the old date (as an audit's dataclasses.replace might write)
        record(arch, books, target, "verified", verified_at=old)
    run = status(capsys, arch, "--bag", books)
    reps = replicas_by_bag(run.data)[books]
    # The deposit's deep verification is still in the replica log: nothing is overdue.
    assert all(r["flags"] == [] for r in reps.values()), reps
    deposit_verified = {t: r["last_deep_at"] for t, r in reps.items()}

    # The clock moved past the cadence: every record of this bag is old now.
    future = datetime.now(timezone.utc) + deep + timedelta(days=3)
    monkeypatch.setattr(rs, "utc_now", lambda: future)
    run = status(capsys, arch, "--bag", books)
    assert run.code == 0, run.out
    reps = replicas_by_bag(run.data)[books]
    for r in reps.values():
        assert r["flags"] == ["overdue-deep", "overdue-quick"]
    assert {(w["flag"], w["target"]) for w in run.data["warnings"]} == {
        (f, t) for f in ("overdue-deep", "overdue-quick") for t in ("site-a", "site-b")}
    assert run.data["problems"] == [] and run.data["ok"]
    assert "overdue" in run.err  # a warning on stderr for scripts reading JSON

    # A quick audit yesterday on site-a: its quick cadence is met, the deep one still is not.
    yesterday = future - timedelta(days=1)
    record(arch, books, "site-a", "verified", verified_at=old, last_audit_at=yesterday, last_audit_kind="quick",
           last_audit_outcome="success", recorded_at=yesterday)
    reps = replicas_by_bag(status(capsys, arch, "--bag", books).data)[books]
    assert reps["site-a"]["flags"] == ["overdue-deep"]
    assert reps["site-a"]["last_deep_at"] == deposit_verified["site-a"]   # a quick check is not a deep audit
    assert reps["site-b"]["flags"] == ["overdue-deep", "overdue-quick"]
    text = status_text(capsys, arch, "--bag", books)
    assert text.code == 0 and "overdue-deep" in text.out and "strongroom audit --due" in text.out

    # site-b gets its own, longer cadence in the config: no longer overdue there.
    cfg = arch.config.read_text("utf-8")
    longer = (deep + timedelta(days=30)).days
    marker = "    root: ./archive/replicas/site-b"
    assert marker in cfg
    arch.config.write_text(cfg.replace(marker, marker + f"\n    fixity: {{deep_every: {longer}d, quick_every: {longer}d}}"),
                           "utf-8")
    reps = replicas_by_bag(status(capsys, arch, "--bag", books).data)[books]
    assert reps["site-b"]["flags"] == []
    assert reps["site-a"]["flags"] == ["overdue-deep"]


def test_inconclusive_audit_does_not_reset_the_clock(capsys, arch, monkeypatch):
    """An inconclusive audit is a problem (the copy could not be read) and does not count as an
    audit: the copy stays overdue; a conclusive one on the other copy resets its clock."""
    import reports.status as rs

    config = load(arch)
    maps = arch.bags["maps"]
    deep = config.cadence_for(config.policy("self-built"), "site-a").deep_every
    future = datetime.now(timezone.utc) + deep + timedelta(days=1)
    monkeypatch.setattr(rs, "utc_now", lambda: future)
    then = future - timedelta(hours=1)
    record(arch, maps, "site-a", "verified", last_audit_at=then, last_audit_kind="deep",
           last_audit_outcome="inconclusive", recorded_at=then, detail="audit (deep): inconclusive: timeout")
    record(arch, maps, "site-b", "verified", verified_at=then, last_audit_at=then, last_audit_kind="deep",
           last_audit_outcome="success", recorded_at=then)
    run = status(capsys, arch, "--bag", maps)
    reps = replicas_by_bag(run.data)[maps]
    assert reps["site-a"]["flags"] == ["inconclusive", "overdue-deep", "overdue-quick"]
    assert reps["site-b"]["flags"] == []
    assert run.code == 1 and {(p["flag"], p["target"]) for p in run.data["problems"]} == {("inconclusive", "site-a")}


# --------------------------------------------------------------------------------------------
# Unfinished deposits


def test_failed_deposit_is_listed_with_its_failure(capsys, arch, tmp_path):
    config = load(arch)
    site_b = Path(config.target("site-b").root)
    (site_b / LIB / "news").write_text("not a folder\n")  # ENOTDIR for the new collection's folder on site-b
    src = make_source(tmp_path / "src-new", {"new.txt": b"new material\n"})
    run = cli(capsys, "--config", arch.config, "--json", "deposit", src, "--library", LIB, "--collection", "news",
              "--type", "self-built")
    assert run.code != 0
    st = status(capsys, arch)
    assert st.code == 1
    (dep,) = st.data["deposits"]
    assert (dep["library"], dep["collection"], dep["source"]) == (LIB, "news", str(src.resolve()))
    assert dep["flags"] == ["deposit-failed"] and dep["failures"]
    assert any("site-b" in f["message"] for f in dep["failures"])
    assert any(p["flag"] == "deposit-failed" and p["deposit"] == dep["key"] for p in st.data["problems"])
    # the failed deposit's bag is not registered: totals are those of the two good deposits
    assert st.data["totals"]["bags"] == 2
    # the filter finds the deposit even though the catalog has no bag in that collection
    assert status(capsys, arch, "--collection", "news").code == 1
    text = status_text(capsys, arch)
    assert "Unfinished deposits (1)" in text.out and "FAILED" in text.out


def test_missing_catalog_folder_is_a_problem_naming_the_rebuild(capsys, arch):
    """A catalog deleted whole: status says so and exits 1 (issue 10: a missing or damaged
    catalog is a preservation problem, not a usage error), pointing at `catalog rebuild`."""
    shutil.rmtree(load(arch).catalog)
    run = status(capsys, arch)
    assert run.code == 1 and "catalog rebuild" in run.out + run.err
