"""The reports' figures add up and read well (issue 18, item 7).

A file of one copy is corrupted; `audit --no-repair` finds it twice (two audits), then an audit
repairs it. The audits record each damaged file twice per run (the copy's summary event and the
file's event), so counting failed events said "2 / 4 damage repaired / found" beside "1
repairs". The fixity report must count that damage once, repaired once, by one repair, in the
cards, the damage table and the JSON alike, and define the terms on the page. Sizes are in one
unit system on every page (decimal, about three figures: policies.units.display_size).

Uses the module-deposited archive of tests/test_reports.py, copied per test.
"""

from __future__ import annotations

import re

from lxml import html as lxml_html

from tests.test_reports import Arch, arch, deposited, number, read_json, report  # noqa: F401
from tests.test_reports_findings import FILE, cli, damage, stored_file  # noqa: F401


def cards(doc) -> dict:
    return {" ".join(c.xpath("string(.//div[@class='label'])").split()): c.xpath("string(.//div[@class='value'])")
            for c in doc.xpath('//section[@id="summary"]//div[contains(@class, "card")]')}


def test_one_damage_found_twice_and_repaired_once_is_counted_once(arch, tmp_path):
    bag = damage(arch)                                                  # found by the first audit
    assert cli(arch, "audit", "--bag", bag, "--deep", "--no-repair") == 1   # and again
    assert cli(arch, "audit", "--bag", bag, "--deep") in (0, 1)         # repaired from site-a
    data = read_json(report(arch, "fixity", "json", tmp_path))
    s = data["summary"]
    assert (s["damage_found"], s["damage_repaired"], s["repairs"]) == (1, 1, 1), s
    (item,) = data["damage"]
    assert (item["bag_id"], item["target"], item["path"]) == (bag, "site-b", FILE)
    assert item["times_found"] >= 2 and item["repaired_at"] and item["first_found"] < item["last_found"]
    # Re-counted from the event rows: distinct (bag, copy, file) among the rows marked damage.
    marked = {(e["bag_id"], e["target"], e["path"]) for e in data["events"] if e["damage"]}
    assert marked == {(bag, "site-b", FILE)}

    doc = lxml_html.fromstring(report(arch, "fixity", "html", tmp_path).read_bytes())
    c = cards(doc)
    assert c["damage repaired / found"].split() == ["1", "/", "1"] and number(c["repairs"]) == 1, c
    assert len(doc.xpath('//section[@id="damage"]//tbody/tr')) == 1
    terms = doc.xpath('string(//p[@id="damage-terms"])')
    assert "counted once" in terms and "repair" in terms


def test_sizes_use_one_decimal_unit_system_on_every_page(arch, tmp_path):
    from policies.units import display_size

    assert [display_size(n) for n in (512, 1234, 22_862_700, 342_939_392, 2_831_155_200, 999_600)] == \
        ["512 B", "1.23 KB", "22.9 MB", "343 MB", "2.83 GB", "1 MB"]
    size = re.compile(r"\b\d[\d.,]*\s?(?:[KMGTP]i?B|B)\b")
    for kind in ("preservation", "fixity", "formats"):
        for lang in ("en", "zh"):
            doc = lxml_html.fromstring(report(arch, kind, "html", tmp_path, lang=lang).read_bytes())
            for svg in doc.xpath("//*[local-name()='svg']"):
                svg.getparent().remove(svg)
            shown = [m for text in doc.xpath("//body//text()") for m in size.findall(str(text))]
            assert shown or kind == "fixity", kind
            for text in shown:
                assert re.fullmatch(r"\d{1,3}(\.\d{1,2})? (B|KB|MB|GB|TB|PB)", text), f"{kind}-{lang}: {text!r}"
                digits = re.sub(r"\D", "", text.split()[0]).lstrip("0")
                assert len(digits) <= 3, f"{kind}-{lang}: {text!r}"
