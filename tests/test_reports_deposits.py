"""Failed and abandoned deposits are in the preservation report (issue 18, item 7).

Two deposits fail on their source (a supplied MD5SUMS that disagrees with the file), one of them
is then given up with `deposit --abandon KEY --reason TEXT`. Neither ever reached the archive,
and the report used to say nothing of them. Now every form lists both, with their state and
reason, in English and Chinese.

Uses the module-deposited archive of tests/test_reports.py, copied per test.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from lxml import html as lxml_html

from tests.test_reports import arch, deposited, read_csv, read_json, report  # noqa: F401
from tests.test_reports_findings import cli


def failing_source(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "page.txt").write_text("the real text\n", encoding="utf-8")
    (folder / "MD5SUMS").write_text(f"{hashlib.md5(b'other').hexdigest()}  page.txt\n", encoding="utf-8")
    return folder


def test_failed_and_abandoned_deposits_are_listed(arch, tmp_path):
    from ingest.deposit_states import unfinished_deposits

    for name in ("first", "second"):
        src = failing_source(tmp_path / name)
        assert cli(arch, "deposit", str(src), "--library", "PKU", "--collection", name, "--type", "purchased") == 1
    keys = {d.collection: d.key for d in unfinished_deposits(Path(arch.config.staging))}
    assert set(keys) == {"first", "second"}
    assert cli(arch, "deposit", "--abandon", keys["second"], "--reason", "wrong MD5SUMS from the vendor") == 0

    data = read_json(report(arch, "preservation", "json", tmp_path))
    by_key = {d["key"]: d for d in data["deposits"]}
    assert set(by_key) == set(keys.values())
    failed, abandoned = by_key[keys["first"]], by_key[keys["second"]]
    assert (failed["state"], failed["library"], failed["collection"]) == ("failed", "PKU", "first")
    assert "do not match the checksums" in failed["reason"]
    assert abandoned["state"] == "abandoned" and abandoned["reason"] == "wrong MD5SUMS from the vendor"
    assert (data["totals"]["deposits_failed"], data["totals"]["deposits_abandoned"]) == (1, 1)

    rows = read_csv(report(arch, "preservation", "csv", tmp_path))
    states = {r["key"]: r["value"] for r in rows if (r["section"], r["item"]) == ("deposit", "state")}
    assert states == {keys["first"]: "failed", keys["second"]: "abandoned"}

    for lang, words in (("en", ("failed", "abandoned")), ("zh", ("失败", "已放弃"))):
        doc = lxml_html.fromstring(report(arch, "preservation", "html", tmp_path, lang=lang).read_bytes())
        rows = doc.xpath('//section[@id="deposits"]//tbody/tr')
        text = {r.get("class"): " ".join(r.text_content().split()) for r in rows}
        assert set(text) == {"deposit-failed", "deposit-abandoned"}, text
        assert words[0] in text["deposit-failed"] and "PKU/first" in text["deposit-failed"]
        assert words[1] in text["deposit-abandoned"] and "wrong MD5SUMS from the vendor" in text["deposit-abandoned"]


def test_a_report_of_another_collection_leaves_them_out(arch, tmp_path):
    src = failing_source(tmp_path / "first")
    assert cli(arch, "deposit", str(src), "--library", "PKU", "--collection", "first", "--type", "purchased") == 1
    data = read_json(report(arch, "preservation", "json", tmp_path, library="THU"))
    assert data["deposits"] == [] and data["totals"]["deposits_failed"] == 0
