"""Adaptive cadence (issue 17 part 4): a finding on a target brings its other copies' deep audits
forward (never later than the policy), and `tier: cold` targets get quick checks plus a random
deep sample under the policy's byte budget. Hand-made replica histories with a fixed clock."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest

from catalog.catalog import Catalog
from fixity import audit as A
from fixity.due import cold_samples, select
from pipelines.cli import main
from policies.config import load_config
from policies.model import load_policy
from reports.status import replica_table
from strongroom.errors import ConfigError
from tests.test_audit import Archive, make_source, write_archive
from tests.test_due import DAY, SITES, T0, Fake, days


def archive(root: Path, *, policy_fixity: str = "deep_every: 90d, quick_every: 7d",
            site_c: str = "") -> Path:
    """test_audit's three-target archive with this policy `fixity:` and extra keys on site-c."""
    cfg = write_archive(root)
    cfg.write_text(cfg.read_text("utf-8").replace("site: shanghai}", f"site: shanghai{site_c}}}"), "utf-8")
    policy = root / "policies" / "self-built.yaml"
    policy.write_text(re.sub(r"(?m)^fixity: .*$", f"fixity: {{{policy_fixity}}}", policy.read_text("utf-8")), "utf-8")
    return cfg


class Hist(Fake):
    def __init__(self, root: Path, **kw):
        self.cfg = archive(root, **kw)
        self.config = load_config(self.cfg)
        self.catalog = Catalog(self.config.catalog)
        self.n = 0

    def deep_due(self):
        rows = replica_table(self.config, self.catalog, self.catalog.bags(), now=T0).to_pylist()
        return {(r["bag_id"], r["target"]): r for r in rows}


def _bags(h: Hist, n: int, deposited: float = 20, size: int = 1000):
    bags = [h.bag(size) for _ in range(n)]
    for b in bags:
        for t in SITES:
            h.deposited(b, t, days(deposited))
    return bags


def test_a_damaged_finding_makes_the_targets_other_bags_due_sooner(tmp_path):
    h = Hist(tmp_path / "a")
    x, y, z = _bags(h, 3)
    assert [c for c in h.chosen() if c[2] == "deep"] == []          # deep every 90d: nothing due at 20 days
    h.record(x, "site-b", "damaged", days(8), kind="deep", outcome="failure", detail="audit (deep): failure")
    chosen = select(h.config, h.catalog, now=T0).chosen
    deep = {(c.bag_id, c.target) for c in chosen if c.kind == "deep"}
    # The damaged copy itself (repair) and every other copy on site-b, nothing elsewhere.
    assert deep == {(x, "site-b"), (y, "site-b"), (z, "site-b")}
    why = next(c.reason for c in chosen if c.bag_id == y and c.target == "site-b")
    assert "brought forward" in why and "damaged finding on site-b" in why and x in why and "7d" in why
    rows = h.deep_due()
    assert rows[(y, "site-b")]["deep_due_at"] == days(8) + 7 * DAY and rows[(y, "site-b")]["overdue_deep"]
    assert rows[(y, "site-a")]["deep_due_at"] == days(20) + 90 * DAY and not rows[(y, "site-a")]["overdue_deep"]
    # Deep-audited since the finding: back to the policy's cadence.
    h.record(y, "site-b", "verified", days(1), kind="deep", outcome="success", verified_at=days(1))
    assert (y, "site-b") not in {(c.bag_id, c.target) for c in select(h.config, h.catalog, now=T0).chosen}


def test_an_inconclusive_finding_counts_and_the_due_date_waits_for_deep_within(tmp_path):
    h = Hist(tmp_path / "a", policy_fixity="deep_every: 90d, quick_every: 7d, "
                                           "after_finding: {deep_within: 5d, window: 10d}")
    x, y = _bags(h, 2)
    h.record(x, "site-c", "verified", days(2), kind="quick", outcome="inconclusive")
    rows = h.deep_due()
    assert rows[(y, "site-c")]["deep_due_at"] == days(2) + 5 * DAY and not rows[(y, "site-c")]["overdue_deep"]
    assert "inconclusive finding on site-c" in rows[(y, "site-c")]["early_reason"]
    # Older than the window: no effect.
    h2 = Hist(tmp_path / "b", policy_fixity="deep_every: 90d, quick_every: 7d, "
                                            "after_finding: {deep_within: 5d, window: 10d}")
    x2, y2 = _bags(h2, 2)
    h2.record(x2, "site-c", "damaged", days(11), kind="deep", outcome="failure")
    assert h2.deep_due()[(y2, "site-c")]["deep_due_at"] == days(20) + 90 * DAY


def test_a_clean_history_never_relaxes_below_the_policy(tmp_path):
    h = Hist(tmp_path / "a")
    old = _bags(h, 2, deposited=85)          # policy due in 5 days: sooner than a finding would make it
    h.record(old[0], "site-a", "damaged", days(1), kind="deep", outcome="failure")
    rows = h.deep_due()
    assert rows[(old[1], "site-a")]["deep_due_at"] == days(85) + 90 * DAY
    assert rows[(old[1], "site-a")]["early_reason"] is None
    # Many clean audits: the due date is exactly last deep + deep_every, never later.
    fresh = _bags(h, 1, deposited=200)[0]
    for n in (150, 100, 60, 30):
        h.record(fresh, "site-b", "verified", days(n), kind="deep", outcome="success", verified_at=days(n))
    assert h.deep_due()[(fresh, "site-b")]["deep_due_at"] == days(30) + 90 * DAY


def test_a_later_finding_never_pushes_back_an_earlier_one(tmp_path):
    h = Hist(tmp_path / "a")
    x, y, z = _bags(h, 3)
    h.record(x, "site-b", "damaged", days(9), kind="deep", outcome="failure")
    h.record(z, "site-b", "verified", days(2), kind="quick", outcome="inconclusive")
    rows = h.deep_due()
    assert rows[(y, "site-b")]["deep_due_at"] == days(9) + 7 * DAY and rows[(y, "site-b")]["overdue_deep"]
    assert x in rows[(y, "site-b")]["early_reason"]
    # z's own finding does not count for z; x's earlier one does.
    assert rows[(z, "site-b")]["deep_due_at"] == days(9) + 7 * DAY
    # Deep-verified after the first finding: the second one (z's, 2 days ago) sets its due date.
    h.record(y, "site-b", "verified", days(5), kind="deep", outcome="success", verified_at=days(5))
    rows = h.deep_due()
    assert rows[(y, "site-b")]["deep_due_at"] == days(2) + 7 * DAY and not rows[(y, "site-b")]["overdue_deep"]
    assert z in rows[(y, "site-b")]["early_reason"] and "inconclusive finding" in rows[(y, "site-b")]["early_reason"]


def test_after_finding_off(tmp_path):
    h = Hist(tmp_path / "a", policy_fixity="deep_every: 90d, after_finding: off")
    x, y = _bags(h, 2)
    h.record(x, "site-b", "damaged", days(8), kind="deep", outcome="failure")
    assert not h.deep_due()[(y, "site-b")]["overdue_deep"]
    assert h.config.policy("self-built").as_dict()["fixity"]["after_finding"] is None


@pytest.mark.parametrize("fixity, key, text", [
    ("deep_every: 30d, after_finding: {deep_within: 30d}", "fixity.after_finding.deep_within",
     "must be shorter than fixity.deep_every"),
    ("after_finding: {deep_within: 7d, window: 2d}", "fixity.after_finding.window", "must not be shorter"),
    ("after_finding: {deep_within: soon}", "fixity.after_finding.deep_within", "must be"),
    ("after_finding: {within: 7d}", "fixity.after_finding.within", "unknown key"),
    ("after_finding: yes", "fixity.after_finding", "must be off, or a mapping"),
    ("cold: {sample_bytes: lots}", "fixity.cold.sample_bytes", "must be"),
    ("cold: {every: 0d}", "fixity.cold.every", "positive"),
])
def test_bad_fixity_rules_are_refused_naming_file_and_key(tmp_path, fixity, key, text):
    cfg = archive(tmp_path / "a", policy_fixity=fixity)
    with pytest.raises(ConfigError) as info:
        load_policy(cfg.parent / "policies" / "self-built.yaml")
    assert info.value.key == key and text in info.value.message and "self-built.yaml" in str(info.value.path)


def test_bad_tier_is_refused(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(archive(tmp_path / "a", site_c=", tier: frozen"))
    assert info.value.key == "storage.site-c.tier" and "hot, cold" in info.value.message


def test_cold_target_gets_quick_checks_and_a_random_deep_sample_within_budget(tmp_path):
    h = Hist(tmp_path / "a", site_c=", tier: cold",
             policy_fixity="deep_every: 90d, quick_every: 7d, cold: {sample_bytes: 3500B, every: 30d}")
    bags = _bags(h, 8, deposited=100)
    assert h.config.storage["site-c"].tier == "cold" and h.config.storage["site-a"].tier == "hot"
    rows = h.deep_due()
    assert all(not rows[(b, "site-c")]["overdue_deep"] and rows[(b, "site-c")]["deep_due_at"] is None for b in bags)
    assert all(rows[(b, "site-a")]["overdue_deep"] for b in bags)

    sel = select(h.config, h.catalog, now=T0, rng=random.Random(7))
    on_c = [c for c in sel.chosen if c.target == "site-c"]
    deep_c = [c for c in on_c if c.kind == "deep"]
    assert len(deep_c) == 3 and sum(c.bytes for c in deep_c) <= 3500            # 3 x 1000 B within 3500 B
    assert all("cold-tier random sample" in c.reason for c in deep_c)
    assert {c.bag_id for c in on_c} == set(bags)                                # the others: quick checks
    assert all(c.kind == "quick" for c in on_c if c not in deep_c)
    assert all(c.kind == "deep" for c in sel.chosen if c.target != "site-c")   # hot targets: full cadence
    other = {c.bag_id for c in select(h.config, h.catalog, now=T0, rng=random.Random(8)).chosen
             if c.target == "site-c" and c.kind == "deep"}
    draws = {frozenset(k[0] for k in cold_samples(h.config, list(rows.values()), _facts(h), T0,
                                                   random.Random(seed))) for seed in range(20)}
    assert len(draws) > 1 and len(other) == 3                                   # random, not a fixed order

    # Re-read the sample: within the same period the budget is spent, nothing more is drawn.
    for c in deep_c:
        h.record(c.bag_id, "site-c", "verified", T0 - DAY, kind="deep", outcome="success", verified_at=T0 - DAY)
    again = select(h.config, h.catalog, now=T0, rng=random.Random(7)).chosen
    assert not [c for c in again if c.target == "site-c" and c.kind == "deep"]


def test_cold_sample_takes_one_bag_larger_than_the_budget(tmp_path):
    h = Hist(tmp_path / "a", site_c=", tier: cold", policy_fixity="cold: {sample_bytes: 500B, every: 30d}")
    bags = _bags(h, 2, deposited=100, size=2000)
    sample = cold_samples(h.config, list(h.deep_due().values()), _facts(h), T0, random.Random(1))
    assert len(sample) == 1 and next(iter(sample))[0] in bags


def _facts(h: Hist):
    return {r["bag_id"]: r for r in h.catalog.bags().select(["bag_id", "policy", "byte_count", "file_count"]).to_pylist()}


@pytest.fixture
def real(tmp_path) -> Archive:
    """Two small bags really deposited on three filesystem targets."""
    cfg = write_archive(tmp_path / "archive")
    for n in range(2):
        src = make_source(tmp_path / f"src{n}", {"a.txt": bytes([65 + n]) * (1000 * (n + 1)), "b.txt": b"b" * 10})
        assert main(["--config", str(cfg), "deposit", str(src), "--library", "LIB", "--collection", f"C{n}",
                     "--type", "self-built"]) == 0
    return Archive(cfg.parent, Catalog(load_config(cfg).catalog).bags().column("bag_id").to_pylist())


def test_audit_due_after_real_damage_audits_the_targets_other_bags_and_says_why(real, capsys, monkeypatch):
    damaged, other = real.bags
    real.flip("site-b", "data/a.txt", bag=damaged)
    start = A.utcnow()
    monkeypatch.setattr(A, "utcnow", lambda: start + DAY)
    code, found, _ = real.audit(capsys, "--bag", damaged, "--deep", "--no-repair")
    assert code == 1 and any(r["target"] == "site-b" and r["outcome"] == "failure" for r in found["replicas"])
    monkeypatch.setattr(A, "utcnow", lambda: start + 3 * DAY)       # within deep_within (7d): not yet
    assert main(["--config", str(real.cfg), "--json", "audit", "--due", "--no-repair"]) in (0, 1)
    early = json.loads(capsys.readouterr().out)
    assert "due_early" not in early and not any(r["bag"] == other for r in early["replicas"])
    monkeypatch.setattr(A, "utcnow", lambda: start + 9 * DAY)
    assert main(["--config", str(real.cfg), "audit", "--due", "--no-repair"]) == 1   # the damage is still open
    text = capsys.readouterr().out
    assert "Deep audits due early or sampled (1):" in text
    line = next(line for line in text.splitlines() if line.startswith(f"  {other} site-b: "))
    assert "damaged finding on site-b" in line and damaged in line and "after_finding.deep_within 7d" in line
    copy = real.catalog.replica(other, "site-b")
    assert copy.last_audit_kind == "deep" and copy.last_audit_at == start + 9 * DAY
    assert real.catalog.replica(other, "site-a").last_audit_kind == "quick"   # other targets: the cadence (7d quick)
