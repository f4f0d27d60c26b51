"""Integration fixes (issue 10, H12): the audit summary's words for each repair, stale ledger
temps of a killed writer, the manifest line splitter in the audit, strict replica folder names,
and deep folders replicated without recursion."""

from __future__ import annotations

import datetime as _dt
import os
import subprocess
import sys
import uuid

from fixity.due import Selection
from fixity.repair import REPAIRED, BagAudit, RepairAction, ReplicaOutcome
from fixity.summary import AuditSummary


def _summary(actions):
    now = _dt.datetime(2026, 1, 2, tzinfo=_dt.timezone.utc)
    rep = ReplicaOutcome("site-a", "a", "deep", True, REPAIRED, "damaged", "verified", repairs=actions)
    bag = BagAudit("lib/col/bag-1", "default", now.isoformat(), replicas=[rep])
    return AuditSummary("run-1", now, now, "due", None, True, {}, Selection("due", None, now), bags=[bag])


def test_summary_names_what_each_repair_did():
    """A move aside is not a removal and a delete says what was recorded first (was: every repair
    without a source printed "(extra file removed)")."""
    actions = [
        RepairAction("site-a", "data/a.txt", "replace", "success", "repair: replaced", "site-b"),
        RepairAction("site-a", "data/extra.txt", "move-aside", "success",
                     "repair: extra file moved aside to .aside/20260102T000000Z/data/extra.txt (3 bytes, sha256 ab); "
                     "nothing was deleted"),
        RepairAction("site-a", "data/link", "move-aside", "success",
                     "repair: a symbolic link found at lib/col/bag-1/data/link (never followed) was moved aside to "
                     ".aside/X/data/link"),
        RepairAction("site-a", "data/gone.txt", "delete", "success", "repair: extra file removed (3 bytes, sha256 cd)"),
    ]
    text = _summary(actions).text()
    assert "extra file removed" not in text
    assert "data/a.txt from site-b" in text
    assert "data/extra.txt (moved aside, kept at .aside/20260102T000000Z/data/extra.txt)" in text
    assert "data/link (moved aside, kept at .aside/X/data/link)" in text
    assert "data/gone.txt (deleted, size and sha256 recorded first)" in text


# ------------------------------------------------------------------------------------------
# 2. a killed writer's temp in the catalog is removed by the next writer, a live one's never


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_next_writer_removes_a_killed_writers_ledger_temp(tmp_path):
    """A kill -9 between writing a ledger temp and linking it left `.tmp-<host>-<pid>-<uuid>` in
    events/ for ever (no rerun removed it); the next append now does, and leaves a live
    writer's temp alone."""
    from catalog.catalog import Catalog
    from catalog.schema import EventRecord
    from catalog.store import TEMP_PREFIX, _HOST

    cat = Catalog(str(tmp_path / "catalog"))
    cat.append_events([EventRecord("ingestion", "success")])
    events = tmp_path / "catalog" / "events"
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dead = events / f"{TEMP_PREFIX}{_HOST}-{_dead_pid()}-{uuid.uuid4().hex}"
        alive = events / f"{TEMP_PREFIX}{_HOST}-{live.pid}-{uuid.uuid4().hex}"
        mine = events / f"{TEMP_PREFIX}{_HOST}-{os.getpid()}-{uuid.uuid4().hex}"
        for p in (dead, alive, mine):
            p.write_bytes(b"half a segment")
        again = Catalog(str(tmp_path / "catalog"))     # the rerun opens the catalog anew
        assert again.append_events([EventRecord("fixity check", "success")]) == "seg-000000000001"
        assert not dead.exists()
        assert alive.exists() and mine.exists()
        # a second append of the same run lists events/ no more (one sweep per folder)
        dead2 = events / f"{TEMP_PREFIX}{_HOST}-{_dead_pid()}-{uuid.uuid4().hex}"
        dead2.write_bytes(b"x")
        again.append_events([EventRecord("fixity check", "success")])
        assert dead2.exists()
    finally:
        live.kill()
        live.wait()


def test_next_writer_removes_a_killed_writers_table_temp(tmp_path):
    from catalog.catalog import Catalog
    from catalog.schema import ReplicaRecord
    from catalog.store import TEMP_PREFIX, _HOST

    cat = Catalog(str(tmp_path / "catalog"))
    (tmp_path / "catalog" / "replicas").mkdir(parents=True)
    dead = tmp_path / "catalog" / "replicas" / f"{TEMP_PREFIX}{_HOST}-{_dead_pid()}-{uuid.uuid4().hex}"
    dead.write_bytes(b"half a record")
    cat.record_replica(ReplicaRecord(bag_id="lib/col/bag-1", target="site-a", site="a", state="pending"))
    assert not dead.exists()


# ------------------------------------------------------------------------------------------
# 3. the audit splits tag files with bagit_spec.split_lines


def test_audit_lines_number_cr_only_lines():
    """CR-only files were all "line 1" (`_lines(b"a\\rb\\rc")` gave [(1,'a'),(1,'b'),(1,'c')])."""
    from fixity import audit as A

    assert list(A._lines(b"a\rb\rc")) == [(1, "a"), (2, "b"), (3, "c")]
    assert list(A._lines(b"\xef\xbb\xbfa\r\nb\n\nc\r")) == [(1, "a"), (2, "b"), (3, ""), (4, "c")]


def test_audit_manifest_not_utf8_or_overlong_is_a_named_problem_not_an_exception():
    """A manifest with bytes that are not UTF-8 raised a bare UnicodeDecodeError (the caller
    said "not UTF-8" without file or line) and a line of any length was accepted."""
    import pytest

    from fixity import audit as A
    from strongroom import bagit_spec

    digest = "0" * 64
    bad = f"{digest}  data/a.txt\r{digest}  data/b\xff.txt\r".encode("latin-1")
    with pytest.raises(bagit_spec.TagFileError) as err:
        A.parse_manifest(bad, "1.0", "sha256")
    assert err.value.file == "manifest-sha256.txt" and err.value.line == 2
    long = f"{digest}  data/{'x' * (bagit_spec.MAX_LINE_CHARS + 10)}\n".encode()
    with pytest.raises(bagit_spec.TagFileError) as err:
        A.parse_manifest(long, "1.0", "sha256", "tagmanifest-sha256.txt")
    assert err.value.file == "tagmanifest-sha256.txt" and "characters long" in err.value.problem
    problems = A._bag_info_issues(b"Payload-Oxum: 1.1\rBad: \xff\r", "1.0", None)
    assert problems == ["bag-info.txt line 2: is not valid UTF-8 (byte 23: invalid start byte)"]


# ------------------------------------------------------------------------------------------
# 4. replica folder names and ledger file names: ASCII digits, no trailing newline


def test_list_bags_takes_only_ascii_bag_folder_names(tmp_path):
    """`list_bags` (rebuild reads it) took "...Z-١" (an Arabic-Indic 1) and "...Z-1\\n" for bag
    folders: BagId.parse then refused them with an exception, stopping the listing."""
    from strongroom.bag_id import BagId
    from storage_adapters.filesystem import FilesystemAdapter

    root = tmp_path / "site-a"
    for name in ("20260102T030405Z-1", "20260102T030405Z-\u0661", "20260102T030405Z-2\n",
                 "\u0662\u0660260102T030405Z-3"):
        (root / "lib" / "coll" / name).mkdir(parents=True)
    (root / "lib\n" / "coll" / "20260102T030405Z-4").mkdir(parents=True)
    adapter = FilesystemAdapter("site-a", "here", root)
    assert [str(b) for b in adapter.list_bags()] == [str(BagId.parse("lib/coll/20260102T030405Z-1"))]


def test_aside_stamp_is_ascii_digits_without_newline(tmp_path):
    import pytest

    from strongroom.bag_id import BagId
    from storage_adapters.filesystem import FilesystemAdapter

    root = tmp_path / "site-a"
    bag = BagId.parse("lib/coll/20260102T030405Z-1")
    (root / "lib" / "coll" / "20260102T030405Z-1" / "data").mkdir(parents=True)
    (root / "lib" / "coll" / "20260102T030405Z-1" / "data" / "x.txt").write_bytes(b"x")
    adapter = FilesystemAdapter("site-a", "here", root)
    for stamp in ("20260102T030405Z\n", "2026010\u0662T030405Z"):
        with pytest.raises(ValueError):
            adapter.move_aside(bag, "lib/coll/20260102T030405Z-1/data/x.txt", stamp)
    assert (root / "lib" / "coll" / "20260102T030405Z-1" / "data" / "x.txt").exists()


def test_ledger_takes_only_ascii_segment_names():
    from catalog.ledger import CACHE_RE, SEGMENT_RE

    assert SEGMENT_RE.match("seg-000000000001.parquet")
    assert not SEGMENT_RE.match("seg-000000000001.parquet\n")
    assert not SEGMENT_RE.match("seg-00000000000\u0661.parquet")
    assert not CACHE_RE.match(f"upto-00000000000\u0661-{'0' * 32}.parquet")
    assert not CACHE_RE.match(f"upto-000000000001-{'0' * 32}.parquet\n")


# ------------------------------------------------------------------------------------------
# 5. the replicator's bag walk is iterative, in the order the recursive one had


def _recursive_walk(bag_dir, problems):
    """The recursive walk `_walk_bag` had (the reference order)."""
    found = []

    def walk(folder, prefix):
        with os.scandir(folder) as it:
            for entry in sorted(it, key=lambda e: e.name):
                rel = prefix + entry.name
                if entry.is_symlink():
                    problems.append(f"{rel}: is a symbolic link; a bag to be stored holds regular files only")
                elif entry.is_dir(follow_symlinks=False):
                    walk(entry.path, rel + "/")
                elif entry.is_file(follow_symlinks=False):
                    found.append(rel)
                else:
                    problems.append(f"{rel}: is not a regular file")

    walk(bag_dir, "")
    return found


def test_walk_bag_order_and_problems_match_the_recursive_walk(tmp_path):
    from storage_adapters.replicate import _walk_bag

    for rel in ("b.txt", "a/z.txt", "a/b/c.txt", "a/b/a.txt", "a-b.txt", "a.b/x", "data/é.txt", "data/E/1"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(rel.encode())
    (tmp_path / "a" / "empty").mkdir()
    os.symlink("b.txt", tmp_path / "a" / "link")
    os.mkfifo(tmp_path / "data" / "fifo")
    want_problems, got_problems = [], []
    want = _recursive_walk(tmp_path, want_problems)
    assert _walk_bag(tmp_path, got_problems) == want and got_problems == want_problems
    assert len(want) == 8 and len(want_problems) == 2


def test_walk_bag_takes_a_bag_deeper_than_the_recursion_limit(tmp_path):
    """1,100 folders deep: the recursive walk died with RecursionError."""
    from strongroom.fstree import remove_tree
    from storage_adapters.replicate import _walk_bag
    from tests.test_deposit_deep import _deep_rel, _deep_source

    bag = _deep_source(tmp_path / "bag", 1100)
    try:
        problems = []
        assert _walk_bag(bag, problems) == [_deep_rel(1100), "top.txt"] and problems == []
    finally:
        remove_tree(bag)


def test_summary_says_why_a_repair_did_not_take():
    """A repair that failed (the target's disk full) left only "missing: not stored on this
    target" in the summary: why it was not repaired was in no output (H7's full-replica case)."""
    from fixity import audit as A
    from fixity.repair import FAILURE

    now = _dt.datetime(2026, 1, 2, tzinfo=_dt.timezone.utc)
    finding = A.Finding(A.MISSING, "site-b", "data/a.txt", "missing: not stored on this target")
    failed = RepairAction("site-b", "data/a.txt", "replace", "failure",
                          "repair: cannot write the good copy from site-a: cannot write: no space left on device")
    rep = ReplicaOutcome("site-b", "b", "deep", True, FAILURE, "verified", "damaged", findings=[finding],
                         repairs=[failed], remaining=[finding])
    summary = AuditSummary("run-1", now, now, "all", "deep", True, {}, Selection("all", "deep", now),
                           bags=[BagAudit("lib/col/bag-1", "default", now.isoformat(), replicas=[rep])])
    assert "no space left on device" in summary.text()
    (entry,) = summary.to_dict()["remaining"]
    assert entry["repair"] == failed.detail and summary.exit_code == 1
