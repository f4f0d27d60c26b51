"""The event ledger: hash chain, tamper detection naming the segment, concurrent appenders, CLI."""

import argparse
import datetime as dt
import json
import multiprocessing as mp
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from catalog.catalog import Catalog, EventRecord
from catalog.ledger import GENESIS, KEY_PREV, build_segment, segment_name, sha256_hex, verify_ledger

T0 = dt.datetime(2024, 3, 1, 8, 0, tzinfo=dt.timezone.utc)


def seg_path(root, seq) -> Path:
    return Path(root) / "events" / segment_name(seq)


@pytest.fixture
def ledger(tmp_path):
    """A catalog with 5 segments of 3 events each."""
    root = tmp_path / "cat"
    cat = Catalog(str(root))
    for s in range(5):
        cat.append_events([EventRecord("fixity check", "success", detail=f"s{s} e{e}", agent="test",
                                       bag_id=f"L/C/B{s}", datetime=T0 + dt.timedelta(minutes=10 * s + e))
                           for e in range(3)])
    return root, cat


def problems_text(report) -> str:
    return "\n".join(report.problems)


def test_intact_ledger_verifies_and_head_matches(ledger):
    root, cat = ledger
    report = verify_ledger(str(root))
    assert report.ok, report.problems
    assert (report.segments, report.events) == (5, 15)
    seq, head = cat.ledger_head()
    assert seq == 4 and report.head_seq == 4
    assert head == report.head_hash == sha256_hex(seg_path(root, 4).read_bytes())
    # each segment chains onto the bytes of the one before it
    for s in range(1, 5):
        meta = pq.read_schema(seg_path(root, s)).metadata
        assert meta[KEY_PREV].decode() == sha256_hex(seg_path(root, s - 1).read_bytes())
    assert pq.read_schema(seg_path(root, 0)).metadata[KEY_PREV].decode() == GENESIS


def test_append_returns_segment_id_in_sequence(tmp_path):
    cat = Catalog(str(tmp_path / "c"))
    assert cat.ledger_head() == (-1, GENESIS)
    ids = [cat.append_events([EventRecord("ingestion", "success")]) for _ in range(3)]
    assert ids == ["seg-000000000000", "seg-000000000001", "seg-000000000002"]
    # a second Catalog object (another worker) continues the same chain
    other = Catalog(str(tmp_path / "c"))
    assert other.append_events([EventRecord("ingestion", "success")]) == "seg-000000000003"
    assert cat.append_events([EventRecord("ingestion", "success")]) == "seg-000000000004"
    assert verify_ledger(str(tmp_path / "c")).ok


def test_append_rejects_empty_and_duplicate_ids(tmp_path):
    cat = Catalog(str(tmp_path / "c"))
    with pytest.raises(ValueError):
        cat.append_events([])
    e = EventRecord("ingestion", "success")
    with pytest.raises(ValueError, match="duplicate"):
        cat.append_events([e, e])
    assert not (tmp_path / "c" / "events").exists() or not os.listdir(tmp_path / "c" / "events")


def _rewrite_with_edit(path: Path) -> None:
    """What a careless editor does: read the table (metadata and all), change a value, write it back."""
    table = pq.read_table(path)
    details = table.column("detail").to_pylist()
    details[1] = details[1] + " (edited)"
    table = table.set_column(table.schema.get_field_index("detail"), "detail", pa.array(details, pa.string()))
    pq.write_table(table, path)


def test_edited_event_in_middle_segment_is_named(ledger):
    root, _ = ledger
    _rewrite_with_edit(seg_path(root, 2))
    report = verify_ledger(str(root))
    assert not report.ok
    text = problems_text(report)
    assert "seg-000000000002.parquet: its events do not match" in text
    assert "seg-000000000003.parquet: chain broken" in text and "seg-000000000002.parquet altered" in text


def test_edited_event_in_last_segment_is_detected_without_expected_head(ledger):
    root, _ = ledger
    _rewrite_with_edit(seg_path(root, 4))
    report = verify_ledger(str(root))
    assert not report.ok
    assert any(p.startswith("seg-000000000004.parquet") for p in report.problems)


def test_forged_rewrite_with_recomputed_digest_breaks_the_chain(ledger):
    """A forger who rebuilds segment 2 properly (new content digest, correct prev hash) still
    changes its bytes, so segment 3 no longer chains onto it."""
    root, _ = ledger
    table = pq.read_table(seg_path(root, 2)).replace_schema_metadata(None)
    table = table.filter(pc.not_equal(table.column("detail"), "s2 e1"))  # drop an event
    prev = sha256_hex(seg_path(root, 1).read_bytes())
    seg_path(root, 2).write_bytes(build_segment(table, 2, prev))
    report = verify_ledger(str(root))
    assert not report.ok
    assert report.events == 14
    assert len(report.problems) == 1
    assert report.problems[0].startswith("seg-000000000003.parquet: chain broken")
    assert "seg-000000000002.parquet altered" in report.problems[0]


def test_deleted_middle_segment_is_named(ledger):
    root, _ = ledger
    seg_path(root, 2).unlink()
    report = verify_ledger(str(root))
    assert not report.ok
    assert any(p.startswith("seg-000000000002.parquet: missing") for p in report.problems)


def test_swapped_segments_are_named(ledger):
    root, _ = ledger
    a, b = seg_path(root, 1), seg_path(root, 3)
    tmp = a.with_name("x")
    a.rename(tmp)
    b.rename(a)
    tmp.rename(b)
    report = verify_ledger(str(root))
    assert not report.ok
    text = problems_text(report)
    assert "seg-000000000001.parquet: records sequence number 3" in text
    assert "seg-000000000003.parquet: records sequence number 1" in text


def test_inserted_forged_segment_is_named(ledger):
    """Insert a forged segment at 2, shifting 2..4 up by one (as a forger must to make room)."""
    root, _ = ledger
    for s in (4, 3, 2):
        seg_path(root, s).rename(seg_path(root, s + 1))
    forged = EventRecord("deletion", "success", detail="forged", bag_id="L/C/B1", datetime=T0)
    from catalog.ledger import events_table
    prev = sha256_hex(seg_path(root, 1).read_bytes())
    seg_path(root, 2).write_bytes(build_segment(events_table([forged]), 2, prev))
    report = verify_ledger(str(root))
    assert not report.ok
    text = problems_text(report)
    assert "seg-000000000003.parquet: records sequence number 2" in text
    assert "seg-000000000003.parquet: chain broken" in text


def test_stray_file_in_ledger_folder_is_reported(ledger):
    root, _ = ledger
    (root / "events" / "seg-5.parquet").write_bytes(seg_path(root, 4).read_bytes())
    report = verify_ledger(str(root))
    assert not report.ok and "seg-5.parquet: not a ledger segment name" in problems_text(report)


def test_copied_event_is_reported(ledger):
    root, cat = ledger
    first = cat.events().slice(0, 1).to_pylist()[0]
    cat.append_events([EventRecord(**first)])
    report = verify_ledger(str(root))
    assert not report.ok
    assert "seg-000000000005.parquet: event" in problems_text(report)
    assert "already appears in seg-000000000000.parquet" in problems_text(report)


def test_deleted_last_segment_needs_expected_head(ledger):
    root, cat = ledger
    _, head = cat.ledger_head()
    seg_path(root, 4).unlink()
    assert verify_ledger(str(root)).ok  # a shorter chain is consistent: the limit of a bare chain
    report = verify_ledger(str(root), expected_head=head)
    assert not report.ok
    assert report.problems[0].startswith("seg-000000000004.parquet: the expected head")


def test_expected_head_survives_later_appends(ledger):
    root, cat = ledger
    _, head = cat.ledger_head()
    cat.append_events([EventRecord("replication", "success")])
    assert verify_ledger(str(root), expected_head="sha256:" + head.upper()).ok
    assert not verify_ledger(str(root), expected_head="ab" * 32).ok


def test_crash_leftover_temp_file_is_ignored(ledger):
    root, cat = ledger
    (root / "events" / ".tmp-0123456789abcdef").write_bytes(b"half a segment")
    assert verify_ledger(str(root)).ok
    assert cat.events().num_rows == 15
    assert cat.append_events([EventRecord("ingestion", "success")]) == "seg-000000000005"
    assert verify_ledger(str(root)).ok


def _append_many(root: str, worker: int, count: int, start) -> None:
    cat = Catalog(root)
    start.wait()
    for i in range(count):
        cat.append_events([EventRecord("fixity check", "success", detail=f"w{worker} #{i}/{k}") for k in range(2)])


def test_two_processes_appending_at_once(tmp_path):
    root = str(tmp_path / "cat")
    Catalog(root).append_events([EventRecord("ingestion", "success", detail="first")])
    ctx = mp.get_context("spawn")
    start = ctx.Barrier(2)
    procs = [ctx.Process(target=_append_many, args=(root, w, 25, start)) for w in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    report = verify_ledger(root)
    assert report.ok, report.problems
    assert (report.segments, report.events) == (51, 101)
    details = set(Catalog(root).events().column("detail").to_pylist())
    assert details == {"first"} | {f"w{w} #{i}/{k}" for w in range(2) for i in range(25) for k in range(2)}
    # every segment holds one call's events together: never split or merged across callers
    for s in range(1, 51):
        seg = pq.read_table(seg_path(root, s)).column("detail").to_pylist()
        assert len(seg) == 2 and seg[0].split("/")[0] == seg[1].split("/")[0]


# ----------------------------------------------------------------------------------------
# CLI: `strongroom ledger verify`

def _cli(config_file, *argv, as_json=False):
    from pipelines.commands import ledger as ledger_cmd

    parser = argparse.ArgumentParser()
    parser.add_argument("--config")
    parser.add_argument("--json", action="store_true")
    sub = parser.add_subparsers(dest="command")
    ledger_cmd.register(sub)
    args = parser.parse_args(["--config", str(config_file)] + (["--json"] if as_json else []) + list(argv))
    return args.run(args)


def test_cli_ledger_verify(archive, capsys):
    cat = Catalog(archive.catalog)
    for i in range(3):
        cat.append_events([EventRecord("ingestion", "success", detail=str(i))])
    _, head = cat.ledger_head()
    assert _cli(archive.path, "ledger", "verify") == 0
    out = capsys.readouterr().out
    assert "ledger intact: 3 segment(s), 3 event(s)" in out and head in out

    assert _cli(archive.path, "ledger", "verify", "--expected-head", head, as_json=True) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is True and data["head_hash"] == head and data["events"] == 3

    seg_path(archive.catalog, 2).unlink()
    assert _cli(archive.path, "ledger", "verify", "--expected-head", head) == 1
    captured = capsys.readouterr().out
    assert "LEDGER ALTERED" in captured and "seg-000000000002.parquet" in captured

    seg_path(archive.catalog, 1).unlink()
    seg_path(archive.catalog, 0).write_bytes(b"not parquet")
    assert _cli(archive.path, "ledger", "verify", as_json=True) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is False and any("seg-000000000000.parquet" in p for p in data["problems"])


def test_cli_ledger_verify_rejects_bad_hash(archive):
    from strongroom.errors import UsageError

    with pytest.raises(UsageError) as err:
        _cli(archive.path, "ledger", "verify", "--expected-head", "abc")
    assert err.value.exit_code == 2


# ----------------------------------------------------------------------------------------
# The query cache that compaction builds (segments themselves are never merged)

def _cache_files(root):
    folder = Path(root) / "ledger-cache"
    return sorted(folder.iterdir()) if folder.exists() else []


def test_compaction_caches_events_without_touching_segments(ledger):
    root, cat = ledger
    before = cat.events()
    segments = {p.name: p.read_bytes() for p in (root / "events").iterdir()}
    assert cat.compact().events_cached == 15
    assert {p.name: p.read_bytes() for p in (root / "events").iterdir()} == segments
    (cache,) = _cache_files(root)
    assert cache.name.startswith("upto-000000000004-")
    assert Catalog(str(root)).events().equals(before)
    assert cat.events(bag_id="L/C/B2").num_rows == 3
    # appends after the cache are read from their segments, after the cached ones
    cat.append_events([EventRecord("repair", "success", bag_id="L/C/B2")])
    assert cat.events().column("type").to_pylist() == ["fixity check"] * 15 + ["repair"]
    assert cat.compact().events_cached == 16
    (newer,) = _cache_files(root)
    assert newer.name.startswith("upto-000000000005-")
    assert cat.events(bag_id="L/C/B2").column("type").to_pylist() == ["fixity check"] * 3 + ["repair"]
    assert verify_ledger(str(root)).ok


def test_altered_cache_is_reported(ledger):
    root, cat = ledger
    cat.compact()
    (cache,) = _cache_files(root)
    _rewrite_with_edit(cache)
    report = verify_ledger(str(root))
    assert not report.ok
    assert report.problems == [f"ledger-cache/{cache.name}: its copy of seg-000000000000.parquet differs "
                               f"from the segment (the cache or the segment was altered); queries read the cache"]


def test_cache_is_not_used_once_its_last_segment_changed(ledger):
    root, cat = ledger
    cat.compact()
    _rewrite_with_edit(seg_path(root, 4))
    details = cat.events().column("detail").to_pylist()
    assert "s4 e1 (edited)" in details  # queries read the segments, not the stale cache
    assert not verify_ledger(str(root)).ok
