"""The agent of every ledger event (issue 12 item 5): operator, library acted for, software.

Stamped by Catalog.append_events; catalogs written before agents were recorded must stay
readable and their hash chain must still verify, before and after new events and compaction.
"""

import datetime as dt
import hashlib
import json
import os
from pathlib import Path

import pyarrow as pa

from catalog.catalog import BagRecord, Catalog, EventRecord, FileRecord
from catalog.ledger import (GENESIS, KEY_CONTENT, KEY_COUNT, KEY_PREV, KEY_SEQ, segment_name, sha256_hex,
                            verify_ledger)
from strongroom import __version__, agent

T0 = dt.datetime(2024, 3, 1, 8, 0, tzinfo=dt.timezone.utc)
OLD_COLUMNS = [("event_id", pa.string(), False), ("type", pa.string(), False),
               ("datetime", pa.timestamp("us", tz="UTC"), False), ("outcome", pa.string(), False),
               ("detail", pa.string(), True), ("agent", pa.string(), True), ("object_type", pa.string(), False),
               ("bag_id", pa.string(), True), ("target", pa.string(), True), ("path", pa.string(), True)]
OLD_SCHEMA = pa.schema([pa.field(n, t, nullable=nullable) for n, t, nullable in OLD_COLUMNS])


def _bag(bag_id: str, library: str) -> BagRecord:
    return BagRecord(bag_id=bag_id, library=library, collection="C", collection_type="purchased", title=None,
                     policy="default", external_identifier=bag_id, group_id=bag_id, part=1, part_count=1,
                     file_count=1, byte_count=3, created_at=T0)


def _old_segment(root: Path, seq: int, prev: str, rows: list) -> str:
    """Write a segment exactly as the code before agents did (10 columns, digest over them)."""
    table = pa.Table.from_pylist(rows, schema=OLD_SCHEMA)
    values = [table.column(n).cast(pa.int64()).to_pylist() if n == "datetime" else table.column(n).to_pylist()
              for n in OLD_SCHEMA.names]
    text = json.dumps({"columns": OLD_SCHEMA.names, "values": values}, ensure_ascii=False, separators=(",", ":"))
    meta = {KEY_SEQ: str(seq).encode(), KEY_PREV: prev.encode(),
            KEY_CONTENT: hashlib.sha256(text.encode()).hexdigest().encode(), KEY_COUNT: str(len(rows)).encode(),
            b"strongroom.schema_version": b"1"}
    path = root / "events" / segment_name(seq)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq_write(table.replace_schema_metadata(meta), path)
    return sha256_hex(path.read_bytes())


def pq_write(table: pa.Table, path: Path) -> None:
    import pyarrow.parquet as pq
    pq.write_table(table, str(path), compression="zstd")


def test_operator_from_environment_else_os_user(monkeypatch):
    monkeypatch.setenv("STRONGROOM_OPERATOR", "  Wang\nLi\x1b  ")
    assert agent.operator() == "Wang Li"
    monkeypatch.setenv("STRONGROOM_OPERATOR", "   ")
    assert agent.operator() == agent.os_user() != ""
    monkeypatch.delenv("STRONGROOM_OPERATOR")
    assert agent.current() == agent.Agent(agent.os_user(), f"Strongroom {__version__}")


def test_os_user_never_fails(monkeypatch):
    """A container with no passwd entry and no LOGNAME/USER still names someone."""
    import getpass
    import pwd

    def no_user():
        raise KeyError("getpwuid(): uid not found")
    monkeypatch.setattr(getpass, "getuser", no_user)
    monkeypatch.setattr(pwd, "getpwuid", no_user)
    assert agent.os_user() == f"uid {os.getuid()}"


def test_every_appended_event_names_operator_library_and_software(tmp_path, monkeypatch):
    monkeypatch.setenv("STRONGROOM_OPERATOR", "zhang")
    cat = Catalog(str(tmp_path / "cat"))
    cat.add_bag(_bag("PKU/C/b1", "PKU"), [FileRecord("PKU/C/b1", "data/a.txt", 3, sha256="00" * 32)])
    cat.append_events([EventRecord("fixity check", "success", bag_id="PKU/C/b1"),
                       EventRecord("receive", "success", object_type="bag", agent_library="THU"),
                       EventRecord("catalog compaction", "success")])
    rows = cat.events().select(["operator", "agent_library", "software"]).to_pylist()
    software = f"Strongroom {__version__}"
    assert rows == [{"operator": "zhang", "agent_library": "PKU", "software": software},
                    {"operator": "zhang", "agent_library": "THU", "software": software},
                    {"operator": "zhang", "agent_library": None, "software": software}]
    assert verify_ledger(str(tmp_path / "cat")).ok
    assert agent.describe("zhang", "PKU", software) == f"zhang for PKU ({software})"
    assert agent.describe(None, None, None, lang="zh") == "未记录"


def test_catalog_written_before_agents_stays_readable_and_verifiable(tmp_path, monkeypatch):
    monkeypatch.setenv("STRONGROOM_OPERATOR", "li")
    root = tmp_path / "cat"
    prev = GENESIS
    for seq in range(2):
        prev = _old_segment(root, seq, prev, [
            {"event_id": f"old-{seq}-{i}", "type": "fixity check", "datetime": T0 + dt.timedelta(minutes=seq * 3 + i),
             "outcome": "success", "detail": "old", "agent": "Strongroom 0.0.9", "object_type": "bag",
             "bag_id": "PKU/C/b1", "target": None, "path": None} for i in range(2)])
    assert verify_ledger(str(root)).ok
    cat = Catalog(str(root))
    cat.compact()  # a query cache holding only old segments
    cat.append_events([EventRecord("repair", "success", bag_id="PKU/C/b1")])
    report = verify_ledger(str(root))
    assert report.ok, report.problems
    assert report.events == 5
    events = cat.events()
    assert events.column("operator").to_pylist() == [None] * 4 + ["li"]
    assert events.column("detail").to_pylist()[:4] == ["old"] * 4
    cat.compact()  # the cache now mixes old and new segments
    assert verify_ledger(str(root)).ok
    assert Catalog(str(root)).events().equals(events)
    # tampering with an old segment is still caught, and named
    seg0 = root / "events" / segment_name(0)
    import pyarrow.parquet as pq
    table = pq.read_table(str(seg0))
    edited = table.set_column(table.schema.get_field_index("detail"), "detail", pa.array(["forged", "old"]))
    pq.write_table(edited.replace_schema_metadata(table.schema.metadata), str(seg0))
    bad = verify_ledger(str(root))
    assert not bad.ok and any(segment_name(0) in p for p in bad.problems)


def test_bag_premis_names_the_operator_as_a_linking_agent_of_the_ingestion(monkeypatch):
    from ingest import metadata, premis

    monkeypatch.setenv("STRONGROOM_OPERATOR", "Zhao Qian")
    prov = metadata.Provenance(library="PKU", fido_version="1.6", signature_version="v109", when=T0)
    objects, events, agents = metadata.premis_for_bag("PKU/C/20240301T080000Z-1", [], ["sha256"], prov,
                                                      supplied_count=0, validated_at=T0, unidentified=0)
    (ingestion,) = [e for e in events if e.type == "ingestion"]
    assert ("local", "operator:Zhao Qian", "implementer") in ingestion.agents
    xml = premis.premis_xml(objects, events, agents)
    assert "<premis:agentName>Zhao Qian</premis:agentName>" in xml or ">Zhao Qian<" in xml
