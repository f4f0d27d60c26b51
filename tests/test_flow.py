"""Workflow bookkeeping that makes reruns safe: events are recorded once per step."""

from catalog.catalog import Catalog
from catalog.schema import EventRecord
from pipelines.flow import append_once


def _events(ids):
    return [EventRecord(type="replication", outcome="success", bag_id="L/C/20260101T000000Z-1",
                        target="site-a", event_id=i) for i in ids]


def test_a_step_rerun_records_its_events_once(tmp_path):
    catalog = Catalog(str(tmp_path / "catalog"))
    journal = tmp_path / "journal"
    append_once(catalog, _events(["e1", "e2"]), journal)
    append_once(catalog, _events(["e1", "e2"]), journal)
    assert catalog.events().column("event_id").to_pylist() == ["e1", "e2"]


def test_crash_between_append_and_journal_is_resolved_from_the_ledger(tmp_path):
    catalog = Catalog(str(tmp_path / "catalog"))
    journal = tmp_path / "journal"
    append_once(catalog, _events(["e1", "e2"]), journal)
    for done in journal.glob("*.done"):
        done.unlink()  # as if killed after appending, before the journal was written
    append_once(catalog, _events(["e1", "e2"]), journal)
    assert catalog.events().column("event_id").to_pylist() == ["e1", "e2"]
    # A crash before the append (intent written, nothing appended) still appends them.
    catalog2 = Catalog(str(tmp_path / "catalog2"))
    journal2 = tmp_path / "journal2"
    append_once(catalog, _events(["x1"]), journal2)  # writes intent + done for x1 in journal2
    for done in journal2.glob("*.done"):
        done.unlink()
    append_once(catalog2, _events(["x1"]), journal2)
    assert catalog2.events().column("event_id").to_pylist() == ["x1"]
