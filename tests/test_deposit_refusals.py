"""Deposits that can only fail are refused up front; concurrent deposits never clash (issue 10).

* Two deposits of different sources into one collection in the same second get distinct bag
  ids (real processes, clock forced to one second, the old race window held open), and a
  deposit whose bag ids turn out to be another deposit's never records anything about that
  deposit's copies: it is set aside and the same command starts it anew.
* A config or source that can only fail (a replica root that is a file, inside the source; a
  source that is a replica root, inside one, holds an archive's bags, holds staging or the
  catalog; an empty source) exits 2, names the path and the problem, and writes nothing.
* A supplied bag declaring `BagIt-Version: 1.0.0` is an input error naming bagit.txt.
* A premis temp file left by a deposit killed while bagging is removed by the rerun.
* An md5-only policy is warned about at load; "rerun" advice only when a rerun can help.
* A --title bag-info.txt cannot carry back unchanged (over 8 KiB, CR, control characters,
  indented continuation lines) exits 2 naming --title; a multi-line one round-trips through
  validate and catalog rebuild. Bag ids, codes and PUIDs take ASCII digits only.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from tests.test_deposit_pipeline import (
    LIB,
    TARGETS,
    check_preserved,
    deposit_argv,
    ledger_problems,
    make_archive,
    make_source,
    strongroom,
)

FIXED = datetime(2026, 3, 4, 5, 6, 7, tzinfo=timezone.utc)


def _forced_clock(monkeypatch, when: datetime = FIXED) -> None:
    """Every deposit opened in this process believes it is `when` (to the second)."""
    from pipelines import flow

    real = flow.open_deposit
    monkeypatch.setattr(flow, "open_deposit", lambda *a, **k: real(*a, **{"now": when, **k}))


def _nothing_written(arch, before: dict) -> None:
    assert _snapshot(arch) == before, "the refused deposit wrote something"


def _snapshot(arch) -> dict:
    def listing(root: Path):
        return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else None

    return {"staging": listing(arch.staging), "catalog": listing(Path(arch.catalog_path)),
            **{t: listing(arch.target_root(t)) for t in TARGETS}}


# --------------------------------------------------------------------------------------------
# 1. Concurrency: one collection, one second, two sources


_RACER = r"""
import sys, time
from pathlib import Path
from datetime import datetime, timezone
import pipelines.flow as flow

fixed = datetime(2026, 3, 4, 5, 6, 7, tzinfo=timezone.utc)
real_open, real_write = flow.open_deposit, flow.write_json_atomic

def open_at_fixed_time(*a, **k):
    k.setdefault("now", fixed)
    return real_open(*a, **k)

def slow_write(path, data, **kw):
    # Hold open the window between choosing a stamp and recording it, so that the two
    # processes are in it together (as two deposits started in the same second can be).
    if str(path).endswith("deposit.json"):
        time.sleep(1.0)
    return real_write(path, data, **kw)

flow.open_deposit, flow.write_json_atomic = open_at_fixed_time, slow_write
ready, go = Path(sys.argv[1]), Path(sys.argv[2])
from pipelines.cli import main   # imports done before the start line
ready.write_text("ready")
while not go.exists():
    time.sleep(0.005)
sys.exit(main(sys.argv[3:]))
"""


def test_two_sources_into_one_collection_in_the_same_second_both_succeed(tmp_path):
    arch = make_archive(tmp_path)
    sources = [make_source(tmp_path / f"source-{i}", small=3, seed=f"racer-{i}") for i in range(2)]
    script = tmp_path / "racer.py"
    script.write_text(_RACER, "utf-8")
    go = tmp_path / "go"
    procs = []
    for i, source in enumerate(sources):
        out = open(tmp_path / f"out-{i}.json", "wb")
        err = open(tmp_path / f"err-{i}.txt", "wb")
        procs.append((subprocess.Popen([sys.executable, str(script), str(tmp_path / f"ready-{i}"), str(go),
                                        *deposit_argv(arch, source, "race")], stdout=out, stderr=err,
                                       cwd=tmp_path), out, err))
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"ready-{i}").exists() for i in range(2)):
        assert time.monotonic() < deadline and all(p.poll() is None for p, _, _ in procs), "a racer died"
        time.sleep(0.01)
    go.write_text("go")
    outcomes = []
    for i, (proc, out, err) in enumerate(procs):
        code = proc.wait(timeout=300)
        out.close()
        err.close()
        text = (tmp_path / f"err-{i}.txt").read_text("utf-8", "replace")
        assert code == 0, text + (tmp_path / f"out-{i}.json").read_text("utf-8", "replace")
        outcomes.append(json.loads((tmp_path / f"out-{i}.json").read_text("utf-8")))

    ids = [b["id"] for o in outcomes for b in o["bags"]]
    assert len(ids) == len(set(ids)) == 2, ids
    assert all(i.startswith(f"{LIB}/race/20260304T0506") for i in ids), ids  # the contract format, same moment
    for source, outcome in zip(sources, outcomes):
        check_preserved(arch, source, outcome)
    catalog = arch.catalog()
    assert sorted(catalog.bags().column("bag_id").to_pylist()) == sorted(ids)
    assert "failure" not in catalog.events().column("outcome").to_pylist()
    assert "failed" not in catalog.replicas(current=False).column("state").to_pylist()


@pytest.mark.parametrize("history", ["claimed by the other deposit", "made before claims existed"])
def test_a_deposit_holding_another_deposits_bag_ids_never_touches_its_copies(tmp_path, capsys, monkeypatch,
                                                                              history):
    """What the old race left behind: an unfinished deposit (source B) whose stamp is that of a
    finished deposit (source A). Resuming it used to fail for ever ("Directory not empty", then a
    conflict on every target) and record A's good copies as failed. Now it is set aside, the same
    command deposits B under a fresh bag id, and A's records are exactly as they were."""
    arch = make_archive(tmp_path)
    _forced_clock(monkeypatch)
    a_src = make_source(tmp_path / "a", small=3, seed="A")
    b_src = make_source(tmp_path / "b", small=3, seed="B")
    first = strongroom(capsys, *deposit_argv(arch, a_src, "clash"))
    assert first.code == 0, first.err
    a_id = first.data["bags"][0]["id"]
    (a_state,) = arch.state_dirs()
    state = json.loads((a_state / "deposit.json").read_text("utf-8"))
    b_key = state["key"][:-4] + "beef"
    (arch.staging / ".state" / b_key).mkdir()
    (arch.staging / ".state" / b_key / "deposit.json").write_text(
        json.dumps({**state, "key": b_key, "source": os.path.realpath(b_src)}), "utf-8")
    if history == "made before claims existed":
        shutil.rmtree(arch.staging / ".claims")
    catalog = arch.catalog()
    replicas_before = catalog.replicas(current=False).to_pylist()
    events_before = catalog.events().num_rows

    second = strongroom(capsys, *deposit_argv(arch, b_src, "clash"))
    assert second.code == 0, second.out + second.err
    b_id = second.data["bags"][0]["id"]
    assert b_id != a_id and b_id.startswith(f"{LIB}/clash/"), (a_id, b_id)
    check_preserved(arch, b_src, second.data)
    assert any("set aside" in w for w in second.data["warnings"]), second.data["warnings"]

    catalog = arch.catalog()
    assert [r for r in catalog.replicas(current=False).to_pylist() if r["bag_id"] == a_id] == \
        [r for r in replicas_before if r["bag_id"] == a_id], "the first deposit's copies were recorded again"
    events = catalog.events().to_pylist()
    assert not [e for e in events[events_before:] if e["bag_id"] == a_id], "events about the other's bag"
    assert "failure" not in [e["outcome"] for e in events]
    assert ledger_problems(arch) == []
    # and the set-aside deposit is history: a third deposit of B is a new one, not a resume of it
    assert (arch.staging / ".state" / b_key / "abandoned.json").is_file()


def test_ingest_alone_claims_its_stamp_too(archive, tmp_path, identifier):
    """Without the workflow (ingest.deposit.ingest called directly), two ingests in one second of
    different sources into one collection get distinct stamps."""
    from ingest.deposit import DepositRequest, ingest

    ids = []
    for name in ("x", "y"):
        src = tmp_path / name
        src.mkdir()
        (src / "f.txt").write_text(name)
        req = DepositRequest(source=src, library="PKU", collection="same", collection_type="purchased",
                             policy=archive.policy_for_type("purchased", None), staging=Path(archive.staging),
                             now=FIXED)
        ids.append(str(ingest(req, identifier=identifier).bags[0].bag_id))
    assert ids == ["PKU/same/20260304T050607Z-1", "PKU/same/20260304T050608Z-1"]


# --------------------------------------------------------------------------------------------
# 2. Configs and sources that can only fail: exit 2, nothing written


def _refused(capsys, arch, source, *expected: str, collection: str = "refuse"):
    before = _snapshot(arch)
    res = strongroom(capsys, *deposit_argv(arch, source, collection))
    assert res.code == 2, (res.code, res.out, res.err)
    assert "Traceback" not in res.err
    for word in expected:
        assert word in res.err, f"{word!r} not in: {res.err}"
    _nothing_written(arch, before)
    assert arch.state_dirs() == []
    assert arch.catalog().events().num_rows == 0
    return res


@pytest.mark.parametrize("how", ["a file", "a symbolic link to a file"])
def test_replica_root_that_is_a_file_is_refused_before_anything_is_written(tmp_path, capsys, how):
    arch = make_archive(tmp_path)
    source = make_source(tmp_path / "source", small=2)
    root = arch.target_root("site-b")
    root.rmdir()
    if how == "a file":
        root.write_bytes(b"not a folder\n")
    else:
        (tmp_path / "elsewhere").write_bytes(b"x")
        root.symlink_to(tmp_path / "elsewhere")
    _refused(capsys, arch, source, str(root), "storage.site-b.root", "not a folder")


def test_replica_root_inside_the_source_is_refused(tmp_path, capsys):
    """Through a symbolic link: site-b's root is a link to a folder inside the source."""
    arch = make_archive(tmp_path)
    source = make_source(tmp_path / "source", small=2)
    (source / "backup").mkdir()
    root = arch.target_root("site-b")
    root.rmdir()
    root.symlink_to(source / "backup")
    _refused(capsys, arch, source, "the replica root of storage.site-b", str(root), "is inside the source")


def test_source_that_is_or_holds_the_archive_is_refused(tmp_path, capsys):
    arch = make_archive(tmp_path)
    real = make_source(tmp_path / "collection", small=2)
    done = strongroom(capsys, *deposit_argv(arch, real, "first"))
    assert done.code == 0, done.err
    bag_id = done.data["bags"][0]["id"]
    site_a = arch.target_root("site-a")
    link = tmp_path / "via-link"
    link.symlink_to(site_a.parent)
    copy = tmp_path / "copied-replica"
    shutil.copytree(site_a, copy)

    cases = [
        (site_a, ["the source is the replica root of storage.site-a"]),
        (site_a / LIB, ["the source is inside the replica root of storage.site-a"]),
        (link / "site-a" / LIB, ["the source is inside the replica root of storage.site-a"]),  # a linked parent
        (site_a.parent, ["the replica root of storage.site-a", "is inside the source"]),
        (arch.staging.parent, ["the staging folder", "the catalog folder", "is inside the source"]),
        (copy, [bag_id, "of a Strongroom archive"]),
    ]
    staging_sub = arch.staging / "mine"
    staging_sub.mkdir()
    (staging_sub / "f.txt").write_text("x")
    cases.append((staging_sub, ["the source is inside the staging folder"]))
    catalog_sub = Path(arch.catalog_path) / "mine"
    catalog_sub.mkdir()
    (catalog_sub / "f.txt").write_text("x")
    cases.append((catalog_sub, ["the source is inside the catalog folder"]))
    for source, expected in cases:
        before = _snapshot(arch)
        events = arch.catalog().events().num_rows
        states = arch.state_dirs()
        res = strongroom(capsys, *deposit_argv(arch, source, "again"))
        assert res.code == 2, (source, res.code, res.out, res.err)
        assert "Traceback" not in res.err
        for word in expected:
            assert word in res.err, f"{source}: {word!r} not in: {res.err}"
        assert _snapshot(arch) == before and arch.catalog().events().num_rows == events, source
        assert arch.state_dirs() == states, source


@pytest.mark.parametrize("layout", ["empty", "only empty folders"])
def test_empty_source_is_refused_before_anything_is_written(tmp_path, capsys, layout):
    arch = make_archive(tmp_path)
    source = tmp_path / "source"
    source.mkdir()
    if layout == "only empty folders":
        (source / "a" / "b").mkdir(parents=True)
        (source / "c").mkdir()
    _refused(capsys, arch, source, str(source), "holds no file")


def test_empty_source_is_refused_by_ingest_itself(archive, tmp_path, identifier):
    from ingest.deposit import DepositRequest, ingest
    from strongroom.errors import InputError

    src = tmp_path / "hollow"
    (src / "x").mkdir(parents=True)
    with pytest.raises(InputError) as err:
        ingest(DepositRequest(source=src, library="PKU", collection="c", collection_type="purchased",
                              policy=archive.policy_for_type("purchased", None), staging=Path(archive.staging)),
               identifier=identifier)
    assert err.value.exit_code == 2 and "holds no file" in str(err.value)
    assert not list(Path(archive.staging).glob("PKU/*/*"))


# --------------------------------------------------------------------------------------------
# 3. A supplied bag declaring BagIt-Version 1.0.0


def test_supplied_bag_with_version_1_0_0_is_an_input_error_naming_bagit_txt(tmp_path, capsys):
    import hashlib

    arch = make_archive(tmp_path)
    source = tmp_path / "vendor"
    (source / "data").mkdir(parents=True)
    (source / "data" / "page.txt").write_bytes(b"page\n")
    (source / "bagit.txt").write_text("BagIt-Version: 1.0.0\nTag-File-Character-Encoding: UTF-8\n", "utf-8")
    (source / "manifest-sha256.txt").write_text(f"{hashlib.sha256(b'page' + bytes([10])).hexdigest()}  "
                                                "data/page.txt\n", "utf-8")
    res = _refused(capsys, arch, source, "bagit.txt", "1.0.0", "1.0", "0.97")
    assert "rerun" not in res.err


def test_supplied_bag_with_version_1_0_0_fails_ingest_clearly(archive, tmp_path, identifier):
    from ingest.deposit import DepositRequest, ingest
    from strongroom.errors import InputError

    src = tmp_path / "vendor"
    (src / "data").mkdir(parents=True)
    (src / "data" / "a.txt").write_bytes(b"a")
    (src / "bagit.txt").write_text("BagIt-Version: 1.0.0\n", "utf-8")
    (src / "manifest-md5.txt").write_text("0cc175b9c0f1b6a831c399e269772661  data/a.txt\n", "utf-8")
    with pytest.raises(InputError) as err:
        ingest(DepositRequest(source=src, library="PKU", collection="c", collection_type="purchased",
                              policy=archive.policy_for_type("purchased", None), staging=Path(archive.staging)),
               identifier=identifier)
    assert any("bagit.txt" in p and "1.0.0" in p for p in err.value.problems), err.value.problems
    assert not list(Path(archive.staging).glob("PKU/*/*")) and not list((Path(archive.staging) / ".incomplete").iterdir())


# --------------------------------------------------------------------------------------------
# 4. A premis temp file left by a deposit killed while bagging


def test_rerun_removes_the_premis_temp_file_of_a_deposit_killed_while_bagging(tmp_path, capsys):
    from ingest.deposit import INCOMPLETE, work_dir_prefix
    from pipelines import flow

    arch = make_archive(tmp_path)
    source = make_source(tmp_path / "source", small=2)
    state = flow.open_deposit(arch.config, source=source, library=LIB, collection="killed",
                              collection_type="self-built", policy="self-built")
    incomplete = arch.staging / INCOMPLETE
    incomplete.mkdir(parents=True)
    work = f"{work_dir_prefix(LIB, 'killed', state.stamp)}1-0123abcd"
    # what write_premis leaves when killed mid-write: .<bag work dir>.premis.xml.<random>.tmp
    (incomplete / f".{work}.premis.xml.5eed5eed5eed5eed.tmp").write_bytes(b"<premis")
    (incomplete / work / "data").mkdir(parents=True)
    other = incomplete / ".OTHER+coll+20200101T000000Z-1-ffffffff.premis.xml.0000000000000000.tmp"
    other.write_bytes(b"another deposit's")  # not this deposit's: left alone

    res = strongroom(capsys, *deposit_argv(arch, source, "killed"))
    assert res.code == 0, res.err
    assert res.data["deposit"] == state.key
    other.unlink()  # (check_preserved wants .incomplete empty)
    check_preserved(arch, source, res.data)


def test_discarding_a_bag_under_construction_removes_its_premis_temp_file(tmp_path):
    from ingest.bag import discard, pending_premis_path

    work = tmp_path / "PKU+c+20260101T000000Z-1-abcd0123"
    (work / "data").mkdir(parents=True)
    temp = tmp_path / f".{pending_premis_path(work).name}.0011223344556677.tmp"
    temp.write_bytes(b"<premis")
    neighbour = tmp_path / ".PKU+c+20260101T000000Z-2-abcd0123.premis.xml.0011223344556677.tmp"
    neighbour.write_bytes(b"<premis")
    discard(work)
    assert not work.exists() and not temp.exists()
    assert neighbour.exists()


# --------------------------------------------------------------------------------------------
# 5. An md5-only policy


@pytest.mark.parametrize("sums, warned", [("[md5]", True), ("[md5, sha1]", True), ("[md5, sha256]", False),
                                          ("[sha512]", False)])
def test_a_policy_whose_only_checksums_are_weak_is_warned_about_at_load(tmp_path, capsys, sums, warned):
    from policies.config import load_config, write_default_config

    path = Path(write_default_config(tmp_path / "archive"))
    policy = tmp_path / "archive" / "policies" / "weak.yaml"
    policy.write_text(f"name: weak\nchecksums: {sums}\nreplicas: [site-a, site-b]\n", "utf-8")
    capsys.readouterr()
    config = load_config(path)
    err = capsys.readouterr().err
    assert config.policy("weak").checksums
    if warned:
        assert str(policy) in err and "checksums" in err and "not collision-resistant" in err, err
        assert "add sha256 or sha512" in err
    else:
        assert "weak.yaml" not in err, err


# --------------------------------------------------------------------------------------------
# 7. "rerun" advice only when a rerun can help


def test_a_deposit_failing_on_its_source_does_not_advise_a_rerun(tmp_path, capsys):
    import hashlib

    arch = make_archive(tmp_path)
    source = make_source(tmp_path / "source", small=2)
    (source / "MD5SUMS").write_text(f"{hashlib.md5(b'other').hexdigest()}  readme 100% done.txt\n", "utf-8")
    res = strongroom(capsys, *deposit_argv(arch, source, "nope", json_out=False))
    assert res.code == 1, res.out + res.err
    assert "readme 100% done.txt" in res.out
    assert "rerun the same command to resume" not in res.out, res.out
    assert "would fail the same way" in res.out, res.out
    as_json = strongroom(capsys, *deposit_argv(arch, source, "nope"))
    assert as_json.code == 1 and as_json.data["rerun_helps"] is False


# --------------------------------------------------------------------------------------------
# 4. Titles bag-info.txt cannot carry back, bag ids with non-ASCII digits


@pytest.mark.parametrize("title, expected", [
    ("x" * 8193, "8,193 bytes"),
    ("卷" * 2731, "8,193 bytes"),  # 2,731 characters, 3 bytes each: counted in UTF-8 bytes
    ("two\r\nlines", "carriage return"),
    ("old\rmac", "carriage return"),
    ("nul\x00here", "U+0000"),
    ("tab\there", "U+0009"),
    ("escape \x1b[31mred", "U+001B"),
    ("next line\x85", "U+0085"),
    ("line\u2028separator", "U+2028"),
    ("first\n  indented second", "line 2 starts with a space"),
    ("bad \udcff byte", "not valid UTF-8"),
])
def test_a_title_bag_info_cannot_carry_back_is_refused(tmp_path, capsys, title, expected):
    """bag-info.txt lines over 64 KiB are refused on read, CR and indentation do not come back
    as given: such a title is refused up front, exit 2, naming --title, nothing written."""
    arch = make_archive(tmp_path)
    source = make_source(tmp_path / "source", small=1)
    before = _snapshot(arch)
    res = strongroom(capsys, *deposit_argv(arch, source, "titled", "--title", title))
    assert res.code == 2, (res.code, res.out[:500], res.err[:500])
    assert "Traceback" not in res.err and "--title" in res.err and expected in res.err, res.err[:500]
    _nothing_written(arch, before)
    assert arch.state_dirs() == [] and arch.catalog().events().num_rows == 0


def test_a_title_is_checked_by_ingest_itself(archive, tmp_path, identifier):
    from ingest.deposit import DepositRequest, ingest
    from strongroom.errors import UsageError

    src = make_source(tmp_path / "src", small=1)
    with pytest.raises(UsageError) as err:
        ingest(DepositRequest(source=src, library="PKU", collection="c", collection_type="purchased",
                              policy=archive.policy_for_type("purchased", None), staging=Path(archive.staging),
                              title="a\rb"), identifier=identifier)
    assert err.value.exit_code == 2 and "--title" in str(err.value)
    assert not list(Path(archive.staging).glob("PKU/*/*"))


def test_a_multi_line_title_of_8_KiB_round_trips_through_validate_and_rebuild(tmp_path, capsys):
    """LF line breaks, a blank line, leading space on the first line, any script: kept as given
    in bag-info.txt (continuation lines), the catalog, `validate` and `catalog rebuild`."""
    from strongroom.bagit_spec import read_tag_file
    from strongroom.bag_id import MAX_TITLE_BYTES

    head = " 善本書目 — première ligne\n\nthird line, after a blank one\n"
    title = head + "x" * (MAX_TITLE_BYTES - len(head.encode("utf-8")))
    assert len(title.encode("utf-8")) == MAX_TITLE_BYTES
    arch = make_archive(tmp_path)
    source = make_source(tmp_path / "source", small=1)
    done = strongroom(capsys, *deposit_argv(arch, source, "titled", "--title", title))
    assert done.code == 0, done.err
    (bag,) = done.data["bags"]
    for target in TARGETS:
        folder = arch.bag_folder(target, bag["id"])
        info = dict(read_tag_file(folder / "bag-info.txt"))
        assert info["Strongroom-Collection-Title"] == title and info["External-Description"] == title
        checked = strongroom(capsys, "--config", arch.config_path, "validate", folder)
        assert checked.code == 0, (checked.out, checked.err)

    def catalogued() -> list:
        return [b["title"] for b in arch.catalog().bags().to_pylist()]

    assert catalogued() == [title]
    shutil.rmtree(arch.catalog_path)
    rebuilt = strongroom(capsys, "--config", arch.config_path, "catalog", "rebuild")
    assert rebuilt.code == 0, (rebuilt.out, rebuilt.err)
    assert catalogued() == [title]


@pytest.mark.parametrize("text", [
    "PKU/c/٢٠٢٦٠٣٠٤T050607Z-1",  # Arabic-Indic digits in the stamp
    "PKU/c/20260304T050607Z-١",  # ... in the part number
    "PKU/c/20260304T050607Z-𝟏",  # a mathematical digit
    "PKU/c/20260304T050607Z-1\n",  # '$' matched before a trailing newline
])
def test_a_bag_id_takes_ascii_digits_only(text):
    from strongroom.bag_id import BagId
    from strongroom.errors import UsageError

    assert str(BagId.parse("PKU/c/20260304T050607Z-1")) == "PKU/c/20260304T050607Z-1"
    with pytest.raises(UsageError):
        BagId.parse(text)


def test_codes_and_puids_take_ascii_only_and_no_trailing_newline():
    from strongroom.bag_id import check_code
    from policies.model import NAME_PATTERN, PUID_PATTERN
    from strongroom.errors import UsageError

    assert check_code("rare-books", "collection") == "rare-books"
    with pytest.raises(UsageError):
        check_code("rare-books\n", "collection")
    assert NAME_PATTERN.match("site-a") and not NAME_PATTERN.match("site-a\n")
    assert PUID_PATTERN.match("fmt/12") and PUID_PATTERN.match("x-fmt/111")
    assert not PUID_PATTERN.match("fmt/١٢") and not PUID_PATTERN.match("fmt/12\n")


def test_a_copied_replica_with_non_ascii_digits_is_not_taken_for_an_archive_bag():
    from ingest.preflight import _ARCHIVE_BAG

    assert _ARCHIVE_BAG.search("PKU/c/20260304T050607Z-1/bagit.txt")
    assert not _ARCHIVE_BAG.search("PKU/c/٢٠٢٦٠٣٠٤T050607Z-1/bagit.txt")
