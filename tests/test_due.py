"""`audit --due`: which copies are due, with a fake clock, per-target cadence and the daily byte budget.

Most tests build a catalog directly (bags and replica histories with chosen times) so the clock
can be anything; the last one runs the real command on a real deposit with the clock moved on.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from pathlib import Path
from typing import List, Optional, Tuple

import pytest

from catalog.catalog import Catalog
from catalog.schema import BagRecord, FileRecord, ReplicaRecord
from fixity import audit as A
from fixity.due import bytes_read_today, select
from fixity.repair import DETAIL_PREFIX
from pipelines.cli import main
from policies.config import load_config
from reports.status import GOOD_STATES, replica_table
from tests.test_audit import deposit, make_source, write_archive

T0 = dt.datetime(2031, 6, 15, 12, 0, tzinfo=dt.timezone.utc)
DAY = dt.timedelta(days=1)
SITES = {"site-a": "beijing", "site-b": "wuhan", "site-c": "shanghai"}


def days(n: float) -> dt.datetime:
    return T0 - n * DAY


class Fake:
    """A catalog of bags whose copies have hand-made histories (no storage is touched)."""

    def __init__(self, root: Path, budget: str = "500GB"):
        self.cfg = write_archive(root, site_c_fixity="{deep_every: 180d, quick_every: 30d}", budget=budget)
        self.config = load_config(self.cfg)
        self.catalog = Catalog(self.config.catalog)
        self.n = 0

    def bag(self, size: int = 1000) -> str:
        self.n += 1
        bag_id = f"LIB/COLL/20300101T0000{self.n:02d}Z-1"
        self.catalog.add_bag(
            BagRecord(bag_id=bag_id, library="LIB", collection="COLL", collection_type="self-built", title=None,
                      policy="self-built", external_identifier=f"urn:uuid:{uuid.uuid4()}", group_id=bag_id[:-2],
                      part=1, part_count=1, file_count=1, byte_count=size, created_at=days(400)),
            [FileRecord(bag_id=bag_id, path="data/x.bin", size=size, sha256="0" * 64)])
        return bag_id

    def record(self, bag: str, target: str, state: str, at: dt.datetime, *, kind: Optional[str] = None,
               outcome: Optional[str] = None, verified_at: Optional[dt.datetime] = None,
               audit_at: Optional[dt.datetime] = None, detail: Optional[str] = None) -> None:
        self.catalog.record_replica(ReplicaRecord(
            bag_id=bag, target=target, site=SITES[target], state=state, verified_at=verified_at,
            last_audit_at=audit_at if audit_at is not None else (at if kind else None), last_audit_kind=kind,
            last_audit_outcome=outcome, detail=detail, recorded_at=at))

    def deposited(self, bag: str, target: str, at: dt.datetime) -> None:
        """What a deposit records: verified, deep verification."""
        self.record(bag, target, "verified", at, kind="deep", outcome="success", verified_at=at)

    def chosen(self, **kw) -> List[Tuple[str, str, str]]:
        return [(c.bag_id, c.target, c.kind) for c in select(self.config, self.catalog, now=T0, **kw).chosen]


@pytest.fixture
def fake(tmp_path) -> Fake:
    return Fake(tmp_path / "archive")


def test_due_picks_exactly_the_overdue_copies(fake):
    old, recent, fresh, never, mixed, bad, absent = (fake.bag() for _ in range(7))
    for t in SITES:
        fake.deposited(old, t, days(100))      # deep every 90d; site-c: deep 180d, quick 30d
        fake.deposited(recent, t, days(10))    # quick every 7d; site-c 30d
        fake.deposited(fresh, t, days(3))
    fake.record(never, "site-a", "verified", days(50))                    # a copy never audited
    fake.deposited(never, "site-b", days(1))
    fake.deposited(never, "site-c", days(1))
    # A quick audit does not reset the deep clock; an inconclusive deep audit does not count.
    fake.deposited(mixed, "site-a", days(100))
    fake.record(mixed, "site-a", "verified", days(1), kind="quick", outcome="success", verified_at=days(100))
    fake.deposited(mixed, "site-b", days(100))
    fake.record(mixed, "site-b", "verified", days(1), kind="deep", outcome="inconclusive", verified_at=days(100))
    fake.deposited(mixed, "site-c", days(5))
    fake.record(mixed, "site-c", "damaged", days(2), detail="restore refused data/x.bin")  # marked by a restore
    # Damaged by an audit: retried a quick_every after that audit; a deposit still running is left alone.
    fake.record(bad, "site-a", "damaged", days(2), kind="deep", outcome="failure", verified_at=days(50))
    fake.record(bad, "site-b", "damaged", days(10), kind="deep", outcome="failure", verified_at=days(50))
    fake.record(bad, "site-c", "pending", days(1))
    fake.deposited(absent, "site-a", days(1))   # the policy also asks for site-b and site-c: no record there
    fake.deposited(absent, "site-b", days(1))

    chosen = fake.chosen()
    assert sorted(chosen) == sorted([
        (old, "site-a", "deep"), (old, "site-b", "deep"), (old, "site-c", "quick"),
        (recent, "site-a", "quick"), (recent, "site-b", "quick"),
        (never, "site-a", "deep"),
        (mixed, "site-a", "deep"), (mixed, "site-b", "deep"), (mixed, "site-c", "deep"),
        (bad, "site-b", "deep"),
        (absent, "site-c", "deep"),
    ])
    # Order: copies in a bad or absent state first, then never deep-audited, then most overdue.
    deep = [(b, t) for b, t, k in chosen if k == "deep"]
    assert set(deep[:3]) == {(mixed, "site-c"), (bad, "site-b"), (absent, "site-c")}
    assert deep[3] == (never, "site-a")
    assert chosen.index((old, "site-c", "quick")) > len(deep) - 1
    sel = select(fake.config, fake.catalog, now=T0)
    assert [(n["bag_id"], n["target"], n["blocking"]) for n in sel.not_audited] == [(bad, "site-c", False)]


def test_due_agrees_with_status(fake):
    """Every good copy status calls overdue is selected, and nothing else of the good copies."""
    bags = [fake.bag() for _ in range(6)]
    for i, bag in enumerate(bags):
        for j, t in enumerate(SITES):
            fake.deposited(bag, t, days(3 + 37 * i + 11 * j))
    rows = replica_table(fake.config, fake.catalog, fake.catalog.bags(), now=T0).to_pylist()
    overdue = {(r["bag_id"], r["target"]): "deep" if r["overdue_deep"] else "quick"
               for r in rows if r["state"] in GOOD_STATES and (r["overdue_deep"] or r["overdue_quick"])}
    assert 0 < len(overdue) < 18
    assert {(b, t): k for b, t, k in fake.chosen()} == overdue


def test_per_target_cadence_clock_moves(fake):
    bag = fake.bag()
    for t in SITES:
        fake.deposited(bag, t, days(0))
    at = lambda n: [(t, k) for _, t, k in  # noqa: E731
                    ((c.bag_id, c.target, c.kind) for c in select(fake.config, fake.catalog, now=days(-n)).chosen)]
    assert at(6) == []
    assert sorted(at(8)) == [("site-a", "quick"), ("site-b", "quick")]
    assert sorted(at(31)) == [("site-a", "quick"), ("site-b", "quick"), ("site-c", "quick")]
    assert sorted(at(91)) == [("site-a", "deep"), ("site-b", "deep"), ("site-c", "quick")]
    assert sorted(at(181)) == [("site-a", "deep"), ("site-b", "deep"), ("site-c", "deep")]


def test_daily_byte_budget_spreads_deep_audits(tmp_path):
    fake = Fake(tmp_path / "archive", budget="1MB")
    bags = [fake.bag(400_000) for _ in range(5)]
    for i, bag in enumerate(bags):
        fake.deposited(bag, "site-a", days(100 + 10 * i))    # the last bag is the most overdue
        fake.deposited(bag, "site-b", days(1))
        fake.deposited(bag, "site-c", days(1))
    sel = select(fake.config, fake.catalog, now=T0)
    deep = [c.bag_id for c in sel.chosen if c.kind == "deep"]
    assert deep == [bags[4], bags[3]]                         # 800 kB of the 1 MB budget, most overdue first
    assert [c.bag_id for c in sel.deferred] == [bags[2], bags[1], bags[0]]
    assert sorted(c.bag_id for c in sel.chosen if c.kind == "quick") == sorted(bags[:3])   # checked quickly meanwhile
    assert sel.budgets["self-built"] == {"budget": 1_000_000, "read_today": 0, "chosen": 800_000}

    # Bytes earlier runs read today count against the budget (yesterday's do not).
    fake.record(bags[4], "site-a", "verified", T0 - dt.timedelta(hours=2), kind="deep", outcome="success",
                verified_at=T0 - dt.timedelta(hours=2), detail=f"{DETAIL_PREFIX}(deep): success")
    fake.record(bags[3], "site-a", "verified", T0 - dt.timedelta(hours=20), kind="deep", outcome="success",
                verified_at=T0 - dt.timedelta(hours=20), detail=f"{DETAIL_PREFIX}(deep): success")
    assert bytes_read_today(fake.catalog, T0) == {"self-built": 400_000}
    sel = select(fake.config, fake.catalog, now=T0)
    assert [c.bag_id for c in sel.chosen if c.kind == "deep"] == [bags[2]]

    # A bag bigger than the whole budget is still audited, alone, on a day nothing else was read.
    big = fake.bag(5_000_000)
    fake.deposited(big, "site-a", days(300))
    fake.deposited(big, "site-b", days(1))
    fake.deposited(big, "site-c", days(1))
    sel = select(fake.config, fake.catalog, now=T0 + 2 * DAY)
    assert [c.bag_id for c in sel.chosen if c.kind == "deep"] == [big]


def test_all_ignores_cadence_and_budget(fake):
    bag = fake.bag()
    for t in SITES:
        fake.deposited(bag, t, days(0))
    assert fake.chosen() == []
    assert sorted(fake.chosen(mode="all")) == [(bag, t, "deep") for t in SITES]
    assert sorted(fake.chosen(mode="all", kind="quick")) == [(bag, t, "quick") for t in SITES]


def test_due_with_a_real_deposit_and_a_moved_clock(capsys, tmp_path, monkeypatch):
    cfg = write_archive(tmp_path / "archive", site_c_fixity="{deep_every: 180d, quick_every: 30d}")
    [bag] = deposit(cfg, make_source(tmp_path / "src", {"a.txt": b"a" * 1000, "b/c.txt": b"c" * 10}))
    capsys.readouterr()

    def audit_at(when: dt.datetime) -> dict:
        monkeypatch.setattr(A, "utcnow", lambda: when)
        assert main(["--config", str(cfg), "--json", "audit", "--due"]) == 0
        return json.loads(capsys.readouterr().out)

    now = A.utcnow()
    assert audit_at(now)["replicas"] == []
    later = now + 100 * DAY
    s = audit_at(later)
    assert sorted((r["target"], r["kind"], r["outcome"]) for r in s["replicas"]) == [
        ("site-a", "deep", "success"), ("site-b", "deep", "success"), ("site-c", "quick", "success")]
    catalog = Catalog(load_config(cfg).catalog)
    assert catalog.replica(bag, "site-a").last_audit_at == later
    assert audit_at(later + dt.timedelta(minutes=5))["replicas"] == []         # nothing is due twice
    rows = replica_table(load_config(cfg), catalog, catalog.bags(), now=later + DAY).to_pylist()
    assert not any(r["overdue_deep"] or r["overdue_quick"] for r in rows)      # status agrees


def test_an_inconclusive_audit_is_retried_within_a_day(fake):
    """A good copy whose last audit could not read it is an open finding (status and audit exit 1):
    the cron job checks it again, the same kind of audit, a day later at the latest."""
    deep_then, quick_then, just_now = fake.bag(), fake.bag(), fake.bag()
    for bag in (deep_then, quick_then, just_now):
        for t in SITES:
            fake.deposited(bag, t, days(3))
    fake.record(deep_then, "site-a", "verified", days(1.5), kind="deep", outcome="inconclusive",
                verified_at=days(3))
    fake.record(quick_then, "site-b", "verified", days(1.2), kind="quick", outcome="inconclusive",
                verified_at=days(3))
    fake.record(just_now, "site-a", "verified", days(0.5), kind="deep", outcome="inconclusive",
                verified_at=days(3))
    assert sorted(fake.chosen()) == sorted([(deep_then, "site-a", "deep"), (quick_then, "site-b", "quick")])
