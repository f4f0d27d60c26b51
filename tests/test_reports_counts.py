"""The reports' figures add up and read well (issue 18, item 7).

A file of one copy is corrupted; `audit --no-repair` finds it twice (two audits), then an audit
repairs it. The audits record each damaged file twice per run (the copy's summary event and the
file's event), so counting failed events said "2 / 4 damage repaired / found" beside "1
repairs". The fixity report must count that damage once, repaired once, by one repair, in the
cards, the damage table and the JSON alike, and define the terms on the page. Sizes are in one
unit system on every page (decimal, about three figures: policies.units.display_size). The
Attention column of a damaged copy names its open findings; every collection has its bar in
every chart; the Chinese reports render the details Strongroom writes in Chinese; events name
their agent (operator, library acted for, software: contract C3).

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
    # "failed" counts check events (3 audits x the copy and the file), and the summary says so.
    assert number(c["failed"]) == s["failed"] >= 4 and "check events" in doc.xpath('string(//p[@id="fixity-terms"])')


def test_display_size_is_decimal_with_about_three_figures():
    from policies.units import display_size

    assert [display_size(n) for n in (512, 1234, 22_862_700, 342_939_392, 2_831_155_200, 999_600, 3 * 2**39)] == \
        ["512 B", "1.23 KB", "22.9 MB", "343 MB", "2.83 GB", "1 MB", "1.65 TB"]


def test_sizes_use_one_decimal_unit_system_on_every_page(arch, tmp_path):
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


def test_the_attention_column_names_a_damaged_copys_open_findings(arch, tmp_path):
    bag = damage(arch)
    for kind, section, word in (("fixity", "per-copy", "corrupted"), ("preservation", "attention", "corrupted")):
        for lang in ("en", "zh"):
            doc = lxml_html.fromstring(report(arch, kind, "html", tmp_path, lang=lang).read_bytes())
            cells = doc.xpath(f'//section[@id="{section}"]//tr[td[1][normalize-space()="{bag}"]]'
                              '/td[contains(@class, "attention")]')
            texts = [" ".join(c.text_content().split()) for c in cells]
            (damaged,) = [t for t in texts if FILE in t]
            assert ("1 open finding" if lang == "en" else "1 个未解决的问题") in damaged, damaged
            assert (word if lang == "en" else "内容已损坏") in damaged, damaged
            assert cells[texts.index(damaged)].xpath('.//a[@href="#findings"]')


def test_every_collection_is_in_every_chart():
    from types import SimpleNamespace

    from reports import charts
    from reports.i18n import Translator
    from reports.render import _charts

    tr = Translator("en")
    names = [f"LIB/collection-{i:02d}" for i in range(20)]
    svg = charts.levels(names, ["storage", "integrity"], [[i % 5, 4 - i % 5] for i in range(20)],
                        ["Storage", "Integrity"], "NDSA levels", "level", tr)
    assert [n for n in names if f">{n}<" not in str(svg)] == []
    report = SimpleNamespace(kind="preservation", copies_by_site=[], ndsa=[],
                             collections=[{"library": "LIB", "collection": n.split("/")[1], "bytes": 1000 * (i + 1)}
                                          for i, n in enumerate(names)])
    holdings = str(_charts(report, tr)["holdings"])
    assert [n for n in names if f">{n}<" not in holdings] == []


def test_chinese_reports_render_strongroom_details_in_chinese(arch, tmp_path, monkeypatch):
    monkeypatch.setenv("STRONGROOM_OPERATOR", "alice")
    bag = damage(arch)
    assert cli(arch, "audit", "--bag", bag, "--deep") in (0, 1)          # repaired from site-a
    data = read_json(report(arch, "fixity", "json", tmp_path))
    names = {bag, "site-a", "site-b", "sha256", "md5", "PKU", "THU", "virus_check", "Strongroom", "ClamAV"}
    names |= {e["path"] for e in data["events"] if e["path"]}
    from reports.i18n import MESSAGES

    for kind, sections in (("fixity", ("events", "damage")), ("preservation", ("repairs",))):
        doc = lxml_html.fromstring(report(arch, kind, "html", tmp_path, lang="zh").read_bytes())
        details = []
        for s in sections:                      # the cells under each table's Detail heading
            table = doc.xpath(f'//section[@id="{s}"]//table')[0]
            heads = [" ".join(th.text_content().split()) for th in table.xpath("./thead/tr/th")]
            column = heads.index(MESSAGES["col.detail"][1]) + 1
            details += [" ".join(td.text_content().split()) for td in table.xpath(f"./tbody/tr/td[{column}]")]
        assert len(details) >= (5 if kind == "fixity" else 1), (kind, details)
        for text in details:
            rest = re.sub(r"\S*/\S*|\b[0-9a-f]{16,}\b", " ", text)      # paths, bag ids, digests
            for name in sorted(names, key=len, reverse=True):
                rest = rest.replace(name, " ")
            assert not re.findall(r"[A-Za-z]{3,}", rest), f"{kind}: English left in {text!r}"
    # The English report shows the same details as written.
    en = lxml_html.fromstring(report(arch, "fixity", "html", tmp_path).read_bytes())
    assert "repair: replaced with the copy from site-a" in en.xpath('string(//section[@id="events"])')


def test_events_name_their_agent(arch, tmp_path, monkeypatch):
    monkeypatch.setenv("STRONGROOM_OPERATOR", "alice")
    bag = damage(arch)
    assert cli(arch, "audit", "--bag", bag, "--deep") in (0, 1)
    data = read_json(report(arch, "fixity", "json", tmp_path))
    repair = next(e for e in data["events"] if e["repair"])
    assert (repair["operator"], repair["agent_library"]) == ("alice", "PKU") and repair["software"]
    for kind, section in (("fixity", "events"), ("preservation", "repairs")):
        for lang, word in (("en", "alice for PKU"), ("zh", "alice")):
            doc = lxml_html.fromstring(report(arch, kind, "html", tmp_path, lang=lang).read_bytes())
            text = doc.xpath(f'string(//section[@id="{section}"]//table[1])')
            assert word in text and repair["software"] in text, f"{kind}-{lang}"


GENERATED = [  # details as fixity.restore, ingest.virus, pipelines.flow write them (data: paths, names)
    "restored whole bag to /tmp/d: 3 files, 1234 bytes, verified against the catalog while streaming; payload "
    "from site-a (3 files); tag files from site-a",
    "partial restore: 2 of 3 files written, 1 left out (no good copy on any verified replica: data/x); restored "
    "payload (source tree) to /tmp/d: 2 files, 99 bytes, verified against the catalog while streaming; payload "
    "from site-a (2 files); tag files from site-b; 1 file(s) taken from a fallback replica",
    "audit --virus of the copy on site-a: 3 of 3 file(s) scanned, 0 infected, 0 skipped as too large, 0 not scanned",
    "deposit K-1 of /src into PKU/c abandoned by alice: 理由; its state and staged files are kept, nothing stored "
    "was deleted",
    "restore: the copy on site-b was refused; this good copy (size and md5, sha256 match the catalog) was used "
    "instead",
    "audit (quick): success: 4 files present with the expected sizes checked (a quick check cannot clear damage it "
    "cannot see). Still open: audit (deep): failure: 4 files, 3733 bytes re-read. 1 damaged: corrupted: site-b "
    "data/img.png: checksum mismatch (sha256 expected 2574d969, found b4d06ed5). Open since 2026-12-02T19:04:33Z.",
    "missing: data/web/index.html is not stored",
    "12 files, 21516 bytes re-read and matched",
]


def test_generated_details_have_a_chinese_rendering():
    from reports.details import zh_detail

    for text in GENERATED:
        zh = zh_detail(text)
        rest = re.sub(r"\S*/\S*|\b[0-9a-f]{8,}\b|site-[ab]|sha256|md5|alice|\d{4}-\d\d-\d\dT[\d:.]+Z", " ", zh)
        assert not re.findall(r"[A-Za-z]{3,}", rest), f"{text!r} -> {zh!r}"
        assert re.search(r"[\u4e00-\u9fff]", zh), zh
