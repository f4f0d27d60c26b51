"""Integration fixes (issue 10, H12): the audit summary's words for each repair, stale ledger
temps of a killed writer, the manifest line splitter in the audit, strict replica folder names,
and deep folders replicated without recursion."""

from __future__ import annotations

import datetime as _dt

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
