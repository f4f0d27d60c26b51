"""The reports show open findings and locations (issue 10, items 3 and 4).

A file of one copy is corrupted and `audit --no-repair` finds it: the preservation report (HTML
in English and Chinese, CSV, JSON) and the fixity report must list the finding (bag, copy, file,
kind) near the top, the fixity report even for a period that starts after the audit, until a
later audit repairs it; with nothing open, both say so in words. The Locations section says which
targets are one location (the default layout's two folders on one file system) and how many
separate locations each collection's good copies are in, the same figure the NDSA storage level
is assessed on.

Uses the module-deposited archive of tests/test_reports.py (three collections, two filesystem
targets), copied per test that changes it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
from pathlib import Path

from lxml import html as lxml_html

from tests.test_reports import (Arch, arch, deposited, levels, read_csv, read_json, report,  # noqa: F401
                                two_disks)

FILE = "data/img.png"        # a payload file of PKU/books (tests/test_reports.SOURCES)


def cli(arch: Arch, *argv: str) -> int:
    from pipelines.cli import main

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return main(["--config", str(arch.config_path), *argv])


def stored_file(arch: Arch, target: str, bag: str, path: str) -> Path:
    """The file `path` of `bag` on a filesystem target, found by its place in the tree (bag ids
    are LIB/COLL/STAMP, a bag's folder is its id beneath the target's root)."""
    root = Path(arch.config.target(target).root)
    found = root / bag / path
    assert found.is_file(), f"{found} is not where the layout puts it"
    return found


def damage(arch: Arch) -> str:
    """Corrupt FILE on site-b's copy of PKU/books and let `audit --no-repair` find it (exit 1)."""
    bag = arch.bags[("PKU", "books")]
    victim = stored_file(arch, "site-b", bag, FILE)
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    assert cli(arch, "audit", "--bag", bag, "--deep", "--no-repair") == 1
    return bag


def findings_rows(doc):
    return doc.xpath('//section[@id="findings"]//tbody/tr')


def test_an_open_finding_is_in_every_form_of_the_preservation_report(arch, tmp_path):
    bag = damage(arch)
    data = read_json(report(arch, "preservation", "json", tmp_path))
    (finding,) = data["open_findings"]
    assert (finding["bag"], finding["target"], finding["path"], finding["kind"]) == (bag, "site-b", FILE, "corrupted")
    assert (finding["library"], finding["collection"], finding["site"]) == ("PKU", "books", "site-b")
    assert finding["since"].endswith("Z") and data["totals"]["open_findings"] == 1

    for lang in ("en", "zh"):
        path = report(arch, "preservation", "html", tmp_path, lang=lang)
        doc = lxml_html.fromstring(path.read_bytes())
        (row,) = findings_rows(doc)
        cells = [" ".join(td.text_content().split()) for td in row.xpath("./td")]
        assert cells[0] == bag and cells[1] == "site-b" and cells[2] == "site-b" and cells[3] == FILE, cells
        assert "corrupted" in cells[4] and row.xpath("./td[@data-kind='corrupted']"), cells
        assert cells[5] and cells[5] != "—"                         # since when
        # Prominent: the findings section follows the summary, and the summary warns of it.
        sections = [s.get("id") for s in doc.xpath("//main/section")]
        assert sections.index("findings") == sections.index("summary") + 1
        alert = doc.xpath('string(//section[@id="summary"]//p[contains(@class, "alert")]//a[@href="#findings"])')
        assert "1" in alert, alert
        assert not doc.xpath('//*[@id="no-findings"]')
        if lang == "zh":
            assert "未解决的问题" in doc.xpath('string(//section[@id="findings"]/h2)')
            assert "内容已损坏" in cells[4]

    rows = read_csv(report(arch, "preservation", "csv", tmp_path))
    mine = [r for r in rows if r["section"] == "open_finding"]
    assert {r["key"] for r in mine} == {f"{bag}/{FILE}"}
    fields = {r["item"]: r["value"] for r in mine}
    assert (fields["bag"], fields["path"], fields["kind"], fields["state"]) == (bag, FILE, "corrupted", "damaged")
    assert fields["since"] == finding["since"] and fields["no_good_copy"] == "false"
    assert {(r["library"], r["collection"], r["site"], r["target"]) for r in mine} == {("PKU", "books", "site-b",
                                                                                       "site-b")}
    (total,) = [r for r in rows if (r["section"], r["item"]) == ("totals", "open_findings")]
    assert total["value"] == "1"
    # The existing layout is unchanged: the same header, the same first sections.
    assert list(rows[0]) == ["section", "library", "collection", "site", "target", "key", "item", "value"]


def test_the_fixity_report_shows_open_findings_outside_its_period(arch, tmp_path):
    """An auditor's window that starts after the damage was found still shows it: it is open now."""
    bag = damage(arch)
    since = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=1)).isoformat()
    data = read_json(report(arch, "fixity", "json", tmp_path, since=since, until="2999-01-01"))
    assert data["summary"]["damage_found"] == 0                 # nothing found in the window...
    (finding,) = data["open_findings"]                          # ...but it is still open
    assert (finding["bag"], finding["path"], finding["kind"]) == (bag, FILE, "corrupted")
    assert data["summary"]["open_findings"] == 1
    for lang in ("en", "zh"):
        doc = lxml_html.fromstring(report(arch, "fixity", "html", tmp_path, lang=lang, since=since,
                                          until="2999-01-01").read_bytes())
        (row,) = findings_rows(doc)
        text = row.text_content()
        assert bag in text and FILE in text and row.xpath("./td[@data-kind='corrupted']")

    # A later audit that repairs it resolves it: gone from both reports.
    assert cli(arch, "audit", "--bag", bag, "--deep") == 0
    assert read_json(report(arch, "fixity", "json", tmp_path))["open_findings"] == []
    doc = lxml_html.fromstring(report(arch, "preservation", "html", tmp_path).read_bytes())
    assert not findings_rows(doc) and doc.xpath('//*[@id="no-findings"]')


def test_no_open_findings_is_said_in_words(deposited, tmp_path):
    for lang, words in (("en", "No open findings"), ("zh", "没有未解决的问题")):
        for kind in ("preservation", "fixity"):
            doc = lxml_html.fromstring(report(deposited, kind, "html", tmp_path, lang=lang).read_bytes())
            assert words in doc.xpath('string(//section[@id="findings"]//*[@id="no-findings"])'), (kind, lang)
            assert not findings_rows(doc)
            assert not doc.xpath('//section[@id="summary"]//a[@href="#findings"]')   # no alarm
    rows = read_csv(report(deposited, "preservation", "csv", tmp_path))
    assert not [r for r in rows if r["section"] == "open_finding"]
    (total,) = [r for r in rows if (r["section"], r["item"]) == ("totals", "open_findings")]
    assert total["value"] == "0"


def locations_tables(doc):
    group, spread = doc.xpath('//section[@id="locations"]//table')
    return ([[" ".join(td.text_content().split()) for td in tr.xpath("./td")] for tr in group.xpath("./tbody/tr")],
            [[" ".join(td.text_content().split()) for td in tr.xpath("./td")] for tr in spread.xpath("./tbody/tr")])


def test_locations_one_file_system_is_one_location_and_agrees_with_ndsa(deposited, tmp_path):
    """The default layout: site-a and site-b on one file system are one location, so every
    collection's copies are in 1 location and NDSA storage level 1 is not reached; said so."""
    data = read_json(report(deposited, "preservation", "json", tmp_path))
    (group,) = data["locations"]
    assert group["targets"] == ["site-a", "site-b"] and group["shared_by"] == ["file system"]
    spread = {(c["library"], c["collection"]): c for c in data["collection_locations"]}
    assert set(spread) == set(levels(data))
    for key, c in spread.items():
        assert (c["good_copies_min"], c["locations_min"], c["locations_max"]) == (2, 1, 1)
        assert levels(data)[key]["storage"] == 0
    for lang, why in (("en", "on one file system"), ("zh", "位于同一文件系统")):
        doc = lxml_html.fromstring(report(deposited, "preservation", "html", tmp_path, lang=lang).read_bytes())
        groups, per_collection = locations_tables(doc)
        assert groups == [[group["location"], "site-a, site-b" if lang == "en" else "site-a、site-b",
                           "site-a, site-b" if lang == "en" else "site-a、site-b", why]]
        assert sorted(r[0] for r in per_collection) == sorted(f"{lib}/{coll}" for lib, coll in spread)
        assert all(r[2] == "2" and r[3] == "1" and "0" in r[5] for r in per_collection), per_collection
        assert doc.xpath('//section[@id="summary"]//p[contains(@class, "alert")]/a[@href="#locations"]')
    rows = read_csv(report(deposited, "preservation", "csv", tmp_path))
    (shared,) = [r for r in rows if (r["section"], r["item"]) == ("location", "shared_by")]
    assert (shared["key"], shared["value"]) == (group["location"], "file system")
    books = {r["item"]: r["value"] for r in rows if r["section"] == "collection_locations"
             and (r["library"], r["collection"]) == ("PKU", "books")}
    assert (books["locations_min"], books["good_copies_min"]) == ("1", "2")


def test_locations_on_two_disks_are_two_and_ndsa_storage_follows(deposited, tmp_path, two_disks):
    data = read_json(report(deposited, "preservation", "json", tmp_path))
    assert sorted((g["targets"], g["shared_by"]) for g in data["locations"]) == [(["site-a"], []), (["site-b"], [])]
    doc = lxml_html.fromstring(report(deposited, "preservation", "html", tmp_path).read_bytes())
    groups, per_collection = locations_tables(doc)
    assert all(r[3] == "a location of its own" for r in groups), groups
    shown = {tuple(r[0].split("/")): (r[3], r[5]) for r in per_collection}
    for key, lv in levels(data).items():
        assert lv["storage"] >= 1 and shown[key] == ("2", f"Level {lv['storage']}")
    assert not doc.xpath('//section[@id="summary"]//a[@href="#locations"]')
