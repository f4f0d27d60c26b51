"""Coverage (issue 17 part 3): files and bytes re-read in full by a deep check in the last 90 and
365 days per target, as % of what is held, beside the cadence target; in status (text, --json)
and the fixity report (html, csv, json; en, zh), and through real deposits and audits."""

from __future__ import annotations

import csv
import json
from concurrent.futures import ThreadPoolExecutor


from catalog.coverage import copy_coverage, coverage
from fixity import audit as A
from pipelines.cli import main
from reports.status import build_status, status_text
from reports.write import write_report
from tests.test_cadence import Hist, _bags, real  # noqa: F401 - real: a fixture
from tests.test_due import DAY, SITES, T0, days
from tests.test_reports_html import console_messages, run_chromium


def _fig(cov, target, window):
    t = next(t for t in cov.targets if t.target == target)
    w = t.windows[window]
    return t, (w.files, w.bytes, w.files_pct, w.bytes_pct, w.expected_pct)


def test_coverage_after_partial_audits(tmp_path):
    h = Hist(tmp_path / "a", policy_fixity="deep_every: 180d, quick_every: 7d")
    deep, quick, never, damaged, old = _bags(h, 5, deposited=400)
    h.record(deep, "site-a", "verified", days(10), kind="deep", outcome="success", verified_at=days(10))
    h.record(deep, "site-b", "verified", days(200), kind="deep", outcome="success", verified_at=days(200))
    for n in (3, 2, 1):                      # quick checks re-read nothing: never counted
        h.record(quick, "site-a", "verified", days(n), kind="quick", outcome="success")
    h.record(damaged, "site-a", "verified", days(20), kind="deep", outcome="success", verified_at=days(20))
    h.record(damaged, "site-a", "damaged", days(5), kind="quick", outcome="failure")   # found damaged since
    h.record(old, "site-a", "repaired", days(100), kind="deep", outcome="success", verified_at=days(100))
    extra = h.bag(5000)                      # registered only by a quick rebuild: never re-read
    h.record(extra, "site-a", "verified", days(30), kind="quick", outcome="success", verified_at=days(30))
    h.record(extra, "site-b", "pending", days(30))   # a deposit not finished: not held yet

    cov = coverage(h.config, h.catalog, now=T0)
    a, in90 = _fig(cov, "site-a", 90)
    assert (a.held_copies, a.held_files, a.held_bytes, a.good_copies, a.never_deep) == (6, 6, 10000, 5, 1)
    assert in90 == (1, 1000, 16.6, 10.0, 50.0)          # only `deep`; 180d cadence: 50 % expected in 90 days
    _, in365 = _fig(cov, "site-a", 365)
    assert in365 == (2, 2000, 33.3, 20.0, 100.0)        # + `old` (repaired, re-verified deep 100 days ago)
    b, b365 = _fig(cov, "site-b", 365)
    assert b.held_copies == 5 and b365[:2] == (1, 1000)  # `deep` on site-b 200 days ago
    assert a.cadence == "deep every 180d" and a.cadences == ({"kind": "deep", "every": "180d"},)
    assert (cov.total.held_copies, cov.total.windows[90].bytes, cov.total.windows[365].bytes) == (16, 1000, 3000)

    rows = {(c.bag_id, c.target): c for c in copy_coverage(h.config, h.catalog, now=T0)}
    assert rows[(deep, "site-a")].within == {90: True, 365: True}
    assert rows[(damaged, "site-a")].within == {90: False, 365: False}   # verified 20 days ago, damaged now
    assert rows[(quick, "site-a")].last_deep_at == days(400)              # the deposit's read-back
    assert (extra, "site-b") not in rows and rows[(extra, "site-a")].last_deep_at is None
    # Per library: another library's copies are neither held nor counted.
    assert coverage(h.config, h.catalog, library="OTHER", now=T0).targets == []


def test_cold_coverage_says_what_fraction_was_truly_re_read(tmp_path):
    h = Hist(tmp_path / "a", site_c=", tier: cold",
             policy_fixity="deep_every: 90d, cold: {sample_bytes: 1000B, every: 30d}")
    bags = _bags(h, 10, deposited=400)
    h.record(bags[0], "site-c", "verified", days(3), kind="deep", outcome="success", verified_at=days(3))
    c, in90 = _fig(coverage(h.config, h.catalog, now=T0), "site-c", 90)
    assert c.tier == "cold" and c.cadences == ({"kind": "cold", "sample_bytes": 1000, "every": "30d"},)
    assert in90 == (1, 1000, 10.0, 10.0, 30.0)       # 1000 B per 30 days over 90 days = 3000 of 10000 B


def test_status_and_fixity_report_show_coverage(tmp_path):
    h = Hist(tmp_path / "a")
    deep, other = _bags(h, 2, deposited=400)
    h.record(deep, "site-a", "verified", days(10), kind="deep", outcome="success", verified_at=days(10))
    status = build_status(h.config, h.catalog, now=T0)
    data = status.to_dict()["coverage"]
    site_a = next(t for t in data["targets"] if t["target"] == "site-a")
    assert site_a["windows"]["90"]["bytes_pct"] == 50.0 and site_a["windows"]["90"]["expected_pct"] == 100.0
    text = status_text(status)
    assert "Coverage: held copies re-read in full" in text
    assert any(line.startswith("site-a") and "50 % of bytes" in line and "deep every 90d" in line
               for line in text.splitlines())

    out = tmp_path / "r"
    out.mkdir()
    pages = {}
    for lang in ("en", "zh"):
        write_report(h.config, "fixity", out / f"f-{lang}.json", fmt="json", lang=lang, now=T0)
        j = json.loads((out / f"f-{lang}.json").read_text("utf-8"))["coverage"]
        assert j["targets"] == data["targets"]                      # the same figures as status
        pages[lang] = write_report(h.config, "fixity", out / f"f-{lang}.html", lang=lang, now=T0)
        page = pages[lang].read_text("utf-8")
        assert 'id="coverage"' in page and 'data-target="site-a"' in page
        assert ("覆盖率" in page and "每 90 天深度审计一次" in page) if lang == "zh" else "deep audit every 90 days" in page
    with ThreadPoolExecutor(max_workers=2) as pool:
        for dom in pool.map(lambda p: run_chromium(p, "--dump-dom"), pages.values()):
            assert dom.returncode == 0 and 'data-target="site-a"' in dom.stdout
            assert console_messages(dom.stderr) == [], console_messages(dom.stderr)
    write_report(h.config, "fixity", out / "f.csv", fmt="csv", now=T0)
    with open(out / "f-coverage.csv", encoding="utf-8", newline="") as fh:
        rows = {r["target"]: r for r in csv.DictReader(fh)}
    assert float(rows["site-a"]["bytes_pct_90d"]) == 50.0 and rows["site-a"]["held_copies"] == "2"
    assert rows["*"]["held_copies"] == "6" and rows["site-c"]["cadence"] == "deep every 90d"


def test_real_deposits_and_audits(real, capsys, monkeypatch):
    capsys.readouterr()
    assert main(["--config", str(real.cfg), "--json", "status"]) == 0
    cov = json.loads(capsys.readouterr().out)["coverage"]
    assert all(t["windows"]["90"]["bytes_pct"] == 100.0 for t in cov["targets"])   # the deposit's read-back
    later = A.utcnow() + 100 * DAY
    monkeypatch.setattr(A, "utcnow", lambda: later)
    first, second = real.bags
    assert main(["--config", str(real.cfg), "--json", "audit", "--bag", first, "--deep"]) == 0
    assert main(["--config", str(real.cfg), "--json", "audit", "--bag", second, "--quick"]) == 0
    capsys.readouterr()
    c = coverage(real.config, real.catalog, now=later + DAY)
    sizes = {b: real.catalog.bag(b).byte_count for b in real.bags}
    for t in c.targets:
        assert (t.windows[90].files, t.windows[90].bytes) == (2, sizes[first])
        assert t.windows[365].bytes == sum(sizes.values()) and t.windows[365].bytes_pct == 100.0
        assert t.windows[90].bytes_pct == int(sizes[first] * 1000 / sum(sizes.values())) / 10
    assert {t.target for t in c.targets} == set(SITES)
