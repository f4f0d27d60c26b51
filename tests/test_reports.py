"""`strongroom report`: every figure agrees across HTML, CSV, JSON and PREMIS and with the catalog.

Three small collections are deposited once per module through the real pipeline (`strongroom
deposit`, filesystem targets): PKU/books (self-built, untitled, with a file no format matches),
PKU/maps (purchased) and THU/theses (a titled deposit under a policy that lists PNG as at risk).
Audit history (failures, repairs, inconclusive checks, lost copies, old audits) is written
straight into the catalog as replica and event records. Tests that change the archive work on a
private copy. Expected figures are computed from the source folders or by plain Python counts
over the catalog's rows, never by the report code under test.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import io
import json
import os
import re
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Dict

import pytest
from lxml import html as lxml_html

from tests import formatgen
from tests.schema import assert_valid

UTC = dt.timezone.utc

SOURCES = {
    ("PKU", "books", "self-built", None, None): {
        "vol 1.txt": formatgen.text(), "img.png": formatgen.png(), "doc.pdf": formatgen.pdf(),
        "sub/noise.qqq": formatgen.random_bytes(3000, seed=7)},
    ("PKU", "maps", "purchased", None, None): {
        "map.gif": formatgen.gif(), "map.tif": formatgen.tiff(), "old/map2.gif": formatgen.gif()},
    ("THU", "theses", "self-built", "watch-png", "学位论文 Theses"): {
        "a.png": formatgen.png(3, 3), "b.png": formatgen.png(4, 4), "c.xml": formatgen.xml()},
}
WATCH_PNG = """name: watch-png
checksums: [sha256, md5]
replicas: [site-a, site-b]
formats: {at_risk: [fmt/11]}
"""


@dataclass
class Arch:
    root: Path
    config_path: Path
    sources: Dict[tuple, Path]     # (library, collection) -> source folder
    bags: Dict[tuple, str]         # (library, collection) -> bag id

    @property
    def config(self):
        from policies.config import load_config

        return load_config(self.config_path)

    @property
    def catalog(self):
        from catalog.catalog import Catalog

        return Catalog(self.config.catalog)


@pytest.fixture(scope="module")
def deposited(tmp_path_factory) -> Arch:
    from pipelines.cli import main
    from policies.config import write_default_config

    root = tmp_path_factory.mktemp("reports")
    config_path = Path(write_default_config(root / "archive"))
    (config_path.parent / "policies" / "watch-png.yaml").write_text(WATCH_PNG, encoding="utf-8")
    sources, bags = {}, {}
    for (lib, coll, ctype, policy, title), files in SOURCES.items():
        src = root / "src" / coll
        for rel, data in files.items():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            (src / rel).write_bytes(data)
        argv = ["--config", str(config_path), "--json", "deposit", str(src), "--library", lib, "--collection", coll,
                "--type", ctype]
        argv += ["--policy", policy] if policy else []
        argv += ["--title", title] if title else []
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
            code = main(argv)
        assert code == 0, out.getvalue()
        (bag,) = json.loads(out.getvalue())["bags"]
        sources[(lib, coll)], bags[(lib, coll)] = src, bag["id"]
    return Arch(root, config_path, sources, bags)


@pytest.fixture
def two_disks(monkeypatch):
    """As if site-b's folder were another disk: the default layout's two folders share one file
    system, which is one location (see test_the_demo_layout_is_not_two_locations)."""
    import policies.locations as pc

    real = pc._device
    monkeypatch.setattr(pc, "_device", lambda p: -1 if "site-b" in Path(p).parts else real(p))


@pytest.fixture
def arch(deposited, tmp_path) -> Arch:
    """A private copy of the deposited archive (its config's paths are relative to itself)."""
    shutil.copytree(deposited.root / "archive", tmp_path / "archive", symlinks=True)
    return Arch(tmp_path, tmp_path / "archive" / deposited.config_path.name, deposited.sources, deposited.bags)


def report(arch: Arch, kind: str, fmt: str, tmp: Path, lang: str = "en", **kw) -> Path:
    from reports.write import write_report

    suffix = {"html": "html", "csv": "csv", "json": "json", "premis": "xml"}[fmt]
    return write_report(arch.config, kind, tmp / f"{kind}-{lang}.{suffix}", fmt=fmt, lang=lang, **kw)


def read_csv(path: Path):
    with open(path, encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def read_json(path: Path):
    return json.loads(path.read_text(encoding="utf-8"))


def number(text: str) -> int:
    return int(text.replace(",", "").strip())


def section_table(doc, section_id: str, index: int = 0):
    """Rows (lists of cell elements) of the index-th table of a section of the HTML report."""
    table = doc.xpath(f'//section[@id="{section_id}"]//table')[index]
    return [row.xpath("./td|./th") for row in table.xpath("./tbody/tr")]


def source_figures(arch: Arch):
    out = {}
    for key, folder in arch.sources.items():
        files = [p for p in folder.rglob("*") if p.is_file()]
        out[key] = (len(files), sum(p.stat().st_size for p in files))
    return out


def record_replica(arch: Arch, bag_id: str, target: str, state: str, **kw):
    from catalog.schema import ReplicaRecord

    arch.catalog.record_replica(ReplicaRecord(bag_id=bag_id, target=target, site=arch.config.target(target).site,
                                              state=state, **kw))


def levels(data: dict) -> Dict[tuple, Dict[str, int]]:
    return {(c["library"], c["collection"]): c["levels"] for c in data["ndsa"]}


# --------------------------------------------------------------------------------------------
# Preservation


def test_preservation_figures_agree_across_forms_and_with_the_sources(deposited, tmp_path):
    arch = deposited
    data = read_json(report(arch, "preservation", "json", tmp_path))
    rows = read_csv(report(arch, "preservation", "csv", tmp_path))
    doc = lxml_html.fromstring(report(arch, "preservation", "html", tmp_path).read_bytes())
    expected = source_figures(arch)

    # JSON against the sources: one bag per deposit, both policy copies verified.
    by_coll = {(c["library"], c["collection"]): c for c in data["collections"]}
    assert set(by_coll) == set(expected)
    for key, (n, size) in expected.items():
        assert (by_coll[key]["bags"], by_coll[key]["files"], by_coll[key]["bytes"]) == (1, n, size)
        assert by_coll[key]["copies"] == {"verified": 2}
    assert data["totals"]["files"] == sum(n for n, _ in expected.values())
    assert data["totals"]["bytes"] == sum(s for _, s in expected.values())
    assert (data["totals"]["bags"], data["totals"]["copies"], data["totals"]["verified_copies"]) == (3, 6, 6)
    seq, head = arch.catalog.ledger_head()
    assert data["ledger"]["ok"] and (data["ledger"]["head_seq"], data["ledger"]["head_hash"]) == (seq, head)
    assert len(data["replicas"]) == 6 and not data["open_damage"] and not data["overdue"]
    events = arch.catalog.events().to_pylist()
    assert sum(r["events"] for r in data["events_by_type"]) == len(events)
    assert {(r["type"], r["outcome"]): r["events"] for r in data["events_by_type"]} == \
        Counter((e["type"], e["outcome"]) for e in events)

    # CSV: the same figures, one per row.
    def csv_value(section, item, library="", collection="", key=""):
        (row,) = [r for r in rows if (r["section"], r["item"], r["library"], r["collection"], r["key"]) ==
                  (section, item, library, collection, key)]
        return row["value"]

    for (lib, coll), c in by_coll.items():
        for item in ("bags", "files", "bytes"):
            assert int(csv_value("holdings", item, lib, coll)) == c[item]
        assert int(csv_value("holdings", "copies", lib, coll, "verified")) == 2
        for area, level in levels(data)[(lib, coll)].items():
            assert int(csv_value("ndsa", "level", lib, coll, area)) == level
    for item, value in data["totals"].items():
        assert int(csv_value("totals", item)) == value
    assert csv_value("ledger", "head_hash") == head
    assert sum(int(r["value"]) for r in rows if r["section"] == "copies") == 6

    # HTML: the holdings table and the NDSA matrix show the same numbers.
    html_rows = {(r[0].text_content(), r[1].text_content()): r for r in section_table(doc, "holdings")}
    for key, c in by_coll.items():
        cells = html_rows[key]
        assert (number(cells[4].text_content()), number(cells[5].text_content())) == (c["bags"], c["files"])
        assert int(cells[6].get("title")) == c["bytes"]
    matrix = section_table(doc, "ndsa")
    shown = {tuple(r[0].text_content().split("/")): [int(re.search(r"\d", td.text_content()).group())
                                                     for td in r[1:]] for r in matrix}
    assert shown == {k: list(v.values()) for k, v in levels(data).items()}
    assert head in doc.xpath("string(//header)")


def test_the_demo_layout_is_not_two_locations(deposited, tmp_path):
    """Two folders on one disk (the default `init` layout): one location, so NDSA storage level 1
    ("two complete copies in separate locations") is not reached, and the report says why."""
    data = read_json(report(deposited, "preservation", "json", tmp_path))
    assert {k: v["storage"] for k, v in levels(data).items()} == {k: 0 for k in levels(data)}
    (books,) = [c for c in data["ndsa"] if c["collection"] == "books"]
    storage = next(a for a in books["areas"] if a["area"] == "storage")
    (rule,) = [r for r in storage["rules"] if r["key"] == "storage.two_copies"]
    assert rule["met"] is False and rule["params"]["copies"] == "2" and rule["params"]["locations"] == "1"
    assert [g["targets"] for g in data["locations"]] == [["site-a", "site-b"]]


def test_ndsa_baseline_levels_follow_from_what_was_deposited(deposited, tmp_path, two_disks):
    data = read_json(report(deposited, "preservation", "json", tmp_path))
    lv = levels(data)
    # Two filesystem copies on two sites: level 1 storage everywhere (not 3 copies).
    assert {k: v["storage"] for k, v in lv.items()} == {k: 1 for k in lv}
    # Digests, verification after copying, fresh deep audits, no damage, intact ledger.
    assert {k: v["integrity"] for k, v in lv.items()} == {k: 4 for k in lv}
    # Control stops at 3: log review is not evidenced by Strongroom.
    assert {k: v["control"] for k, v in lv.items()} == {k: 3 for k in lv}
    # books: untitled (metadata 1) and holds an unidentified file (content 1).
    assert (lv[("PKU", "books")]["metadata"], lv[("PKU", "books")]["content"]) == (1, 1)
    # theses: titled, all identified, watched formats, but two PNGs its policy lists as at risk.
    assert (lv[("THU", "theses")]["metadata"], lv[("THU", "theses")]["content"]) == (4, 3)
    # maps: untitled; all identified; the purchased policy watches formats and none is at risk.
    assert (lv[("PKU", "maps")]["metadata"], lv[("PKU", "maps")]["content"]) == (1, 4)

    (theses,) = [c for c in data["ndsa"] if c["collection"] == "theses"]
    content = next(a for a in theses["areas"] if a["area"] == "content")
    (missing,) = [r for r in content["rules"] if r["level"] == 4]
    assert missing["met"] is False and missing["params"]["files"] == 2
    assert content["missing"] == [missing["rule"]]
    control = next(a for a in theses["areas"] if a["area"] == "control")
    assert [r["met"] for r in control["rules"] if r["level"] == 4] == [None]  # not evidenced


def test_ndsa_levels_drop_when_a_collection_loses_a_copy(arch, tmp_path, two_disks):
    books = arch.bags[("PKU", "books")]
    before = levels(read_json(report(arch, "preservation", "json", tmp_path)))
    record_replica(arch, books, "site-b", "missing", detail="bag not found on site-b")
    data = read_json(report(arch, "preservation", "json", tmp_path))
    after = levels(data)
    assert before[("PKU", "books")]["storage"] == 1 and after[("PKU", "books")]["storage"] == 0
    assert before[("PKU", "books")]["integrity"] == 4 and after[("PKU", "books")]["integrity"] == 3
    assert after[("PKU", "maps")] == before[("PKU", "maps")]  # other collections are unaffected
    (books_ndsa,) = [c for c in data["ndsa"] if c["collection"] == "books"]
    storage = next(a for a in books_ndsa["areas"] if a["area"] == "storage")
    assert storage["evidence"] == [] and len(storage["missing"]) == 1
    (open_damage,) = data["open_damage"]
    assert (open_damage["bag_id"], open_damage["target"], open_damage["state"]) == (books, "site-b", "missing")
    (finding,) = data["open_findings"]       # shown until a later check resolves it
    assert (finding["bag"], finding["target"], finding["kind"], finding["detail"]) == \
        (books, "site-b", "missing", "bag not found on site-b")

    # A damaged copy counts the same; repairing it brings the levels back.
    now = dt.datetime.now(UTC)
    record_replica(arch, books, "site-b", "damaged", detail="data/img.png: checksum mismatch")
    assert levels(read_json(report(arch, "preservation", "json", tmp_path)))[("PKU", "books")]["storage"] == 0
    record_replica(arch, books, "site-b", "repaired", verified_at=now, last_audit_at=now, last_audit_kind="deep",
                   last_audit_outcome="success")
    assert levels(read_json(report(arch, "preservation", "json", tmp_path)))[("PKU", "books")] == \
        before[("PKU", "books")]


def test_ndsa_integrity_drops_when_the_audit_cadence_is_missed(arch, tmp_path, two_disks):
    config = arch.config
    deep = config.cadence_for(config.policy("self-built"), "site-a").deep_every
    old = dt.datetime.now(UTC) - deep - dt.timedelta(days=5)
    # A replica log whose only records are old (as if no audit ran since then).
    shutil.rmtree(Path(config.catalog) / "replicas")
    for bag_id in arch.bags.values():
        for target in ("site-a", "site-b"):
            record_replica(arch, bag_id, target, "verified", verified_at=old, last_audit_at=old,
                           last_audit_kind="deep", last_audit_outcome="success", recorded_at=old)
    data = read_json(report(arch, "preservation", "json", tmp_path))
    for key, lv in levels(data).items():
        assert lv["integrity"] == 2, key  # deep audits overdue: level 3 is not reached
        assert lv["storage"] == 1  # the copies are still there
    assert len(data["overdue"]) == 6 and all(r["overdue_deep"] and r["overdue_quick"] for r in data["overdue"])
    (books,) = [c for c in data["ndsa"] if c["collection"] == "books"]
    integrity = next(a for a in books["areas"] if a["area"] == "integrity")
    deep_rule = next(r for r in integrity["rules"] if r["key"] == "integrity.deep_cadence")
    assert deep_rule["met"] is False and deep_rule["params"]["overdue"] == 2
    assert deep_rule["rule"] in integrity["missing"]
    # The same archive seen before the cadence ran out: level 4 again.
    early = read_json(report(arch, "preservation", "json", tmp_path, now=old + dt.timedelta(days=1)))
    assert {k: v["integrity"] for k, v in levels(early).items()} == {k: 4 for k in arch.bags}


def test_ndsa_storage_reaches_level_4_with_three_sites_on_two_kinds_of_storage(arch, tmp_path, two_disks):
    """A third copy on an S3 target at another site (recorded directly: the report reads only the
    catalog and config) lifts storage to level 4 for the collection whose policy asks for it."""
    cfg = arch.config_path
    text = cfg.read_text(encoding="utf-8")
    text = text.replace("\nstorage:\n", "\nstorage:\n  s3-east:\n    type: s3\n    bucket: strongroom-test\n"
                                        "    site: shanghai\n", 1)
    cfg.write_text(text, encoding="utf-8")
    policy = cfg.parent / "policies" / "watch-png.yaml"
    policy.write_text(WATCH_PNG.replace("[site-a, site-b]", "[site-a, site-b, s3-east]"), encoding="utf-8")
    theses = arch.bags[("THU", "theses")]
    data = read_json(report(arch, "preservation", "json", tmp_path))
    assert levels(data)[("THU", "theses")]["storage"] == 1
    (absent,) = data["open_damage"]  # the policy's third copy is not there yet
    assert (absent["bag_id"], absent["target"], absent["state"]) == (theses, "s3-east", "absent")
    now = dt.datetime.now(UTC)
    record_replica(arch, theses, "s3-east", "verified", verified_at=now, last_audit_at=now, last_audit_kind="deep",
                   last_audit_outcome="success")
    data = read_json(report(arch, "preservation", "json", tmp_path))
    after = levels(data)[("THU", "theses")]
    assert after["storage"] == 4 and after["integrity"] == 4
    assert levels(data)[("PKU", "books")]["storage"] == 1
    sites = {r["site"] for r in data["copies_by_site"]}
    assert sites == {"site-a", "site-b", "shanghai"}


# --------------------------------------------------------------------------------------------
# Formats


def test_formats_figures_agree_across_forms_and_with_the_catalog(deposited, tmp_path):
    arch = deposited
    config, catalog = arch.config, arch.catalog
    files = catalog.files().to_pylist()
    policy_of = {b["bag_id"]: b["policy"] for b in catalog.bags().to_pylist()}
    coll_of = {b["bag_id"]: (b["library"], b["collection"]) for b in catalog.bags().to_pylist()}
    per_format = Counter((f["puid"], f["format_name"], f["format_version"]) for f in files)
    bytes_per_format = Counter()
    for f in files:
        bytes_per_format[(f["puid"], f["format_name"], f["format_version"])] += f["size"]
    at_risk = [f for f in files if f["puid"] in config.policy(policy_of[f["bag_id"]]).formats.at_risk]
    unidentified = [f for f in files if f["puid"] is None]
    assert at_risk and unidentified  # the setup has both

    data = read_json(report(arch, "formats", "json", tmp_path))
    got = {(r["puid"], r["format_name"], r["format_version"]): (r["files"], r["bytes"]) for r in data["formats"]}
    assert got == {k: (n, bytes_per_format[k]) for k, n in per_format.items()}
    t = data["totals"]
    assert (t["files"], t["bytes"]) == (len(files), sum(f["size"] for f in files))
    assert (t["unidentified_files"], t["at_risk_files"]) == (len(unidentified), len(at_risk))
    assert t["at_risk_bytes"] == sum(f["size"] for f in at_risk)
    assert {(r["library"], r["collection"], r["puid"]): r["files"] for r in data["at_risk"]} == \
        Counter(coll_of[f["bag_id"]] + (f["puid"],) for f in at_risk)
    assert {(r["library"], r["collection"]): r["files"] for r in data["unidentified"]} == \
        Counter(coll_of[f["bag_id"]] for f in unidentified)
    for key, (n, size) in source_figures(arch).items():
        (c,) = [c for c in data["collections"] if (c["library"], c["collection"]) == key]
        assert (c["files"], c["bytes"]) == (n, size)
    assert sum(r["files"] for r in data["methods"]) == len(files)

    rows = read_csv(report(arch, "formats", "csv", tmp_path))
    overall = [r for r in rows if r["scope"] == "all"]
    assert {(r["puid"] or None, r["format_name"] or None, r["format_version"] or None): (int(r["files"]),
                                                                                        int(r["bytes"]))
            for r in overall} == got
    per_coll = [r for r in rows if r["scope"] == "collection"]
    assert sum(int(r["files"]) for r in per_coll) == len(files)
    assert sum(int(r["at_risk_files"]) for r in per_coll) == len(at_risk)

    doc = lxml_html.fromstring(report(arch, "formats", "html", tmp_path).read_bytes())
    table = section_table(doc, "formats")
    assert sum(number(r[3].text_content()) for r in table) == len(files)
    assert sum(int(r[5].get("title")) for r in table) == t["bytes"]
    assert sum(number(r[7].text_content()) for r in table) == len(at_risk)
    assert len(doc.xpath('//section[@id="summary"]//svg')) == 2

    # PREMIS: the files that need attention, as file objects, valid against the schema.
    premis = report(arch, "formats", "premis", tmp_path)
    assert_valid(premis, "premis")
    tree = lxml_etree_parse(premis)
    ns = {"p": "http://www.loc.gov/premis/v3"}
    file_objects = tree.xpath('//p:object[@xsi:type="file"]',
                              namespaces={**ns, "xsi": "http://www.w3.org/2001/XMLSchema-instance"})
    assert len(file_objects) == len(at_risk) + len(unidentified)
    keys = sorted(o.xpath("string(p:objectIdentifier/p:objectIdentifierValue)", namespaces=ns)
                  for o in file_objects)
    assert keys == sorted(f"{f['bag_id']}/{f['path']}" for f in at_risk + unidentified)


def lxml_etree_parse(path: Path):
    from lxml import etree

    return etree.parse(str(path))


# --------------------------------------------------------------------------------------------
# Fixity


def test_fixity_report_one_row_per_event_with_repairs_and_ledger(arch, tmp_path):
    from catalog.schema import EventRecord

    now = dt.datetime.now(UTC)
    books = arch.bags[("PKU", "books")]
    maps = arch.bags[("PKU", "maps")]
    at = lambda days: now - dt.timedelta(days=days)  # noqa: E731
    arch.catalog.append_events([
        EventRecord("fixity check", "success", detail="deep audit: all files match", agent="strongroom audit",
                    bag_id=books, target="site-a", object_type="replica", datetime=at(400)),
        EventRecord("fixity check", "failure", detail="checksum mismatch", agent="strongroom audit",
                    object_type="file", bag_id=books, target="site-b", path="data/img.png", datetime=at(10)),
        # as fixity.repair records a repair: a "replication" whose detail starts "repair:"
        EventRecord("replication", "success", detail="repair: replaced with the copy from site-a",
                    agent="strongroom audit", object_type="file", bag_id=books, target="site-b", path="data/img.png",
                    datetime=at(9)),
        EventRecord("recovery", "success", detail="restore took data/doc.pdf from site-b", agent="strongroom restore",
                    object_type="file", bag_id=books, target="site-b", path="data/doc.pdf", datetime=at(8)),
        EventRecord("fixity check", "failure", detail="file missing", agent="strongroom audit",
                    object_type="file", bag_id=maps, target="site-a", path="data/map.tif", datetime=at(6)),
        EventRecord("fixity check", "inconclusive", detail="read timeout", agent="strongroom audit",
                    object_type="replica", bag_id=maps, target="site-b", datetime=at(5)),
        EventRecord("replication", "success", detail="not an audit event", agent="strongroom",
                    bag_id=maps, target="site-b", object_type="replica", datetime=at(4)),
    ])
    record_replica(arch, maps, "site-a", "damaged", detail="data/map.tif missing", last_audit_at=at(6),
                   last_audit_kind="deep", last_audit_outcome="failure")
    since = at(30)
    data = read_json(report(arch, "fixity", "json", tmp_path, since=since))
    rows = read_csv(report(arch, "fixity", "csv", tmp_path, since=since))

    def audit_or_repair(e):
        return e["type"] in ("fixity check", "repair", "recovery") or \
            e["type"] in ("replication", "deletion") and (e["detail"] or "").startswith("repair:")

    expected = [e for e in arch.catalog.events().to_pylist() if audit_or_repair(e) and e["datetime"] >= since]
    assert sorted(r["event_id"] for r in rows) == sorted(e["event_id"] for e in expected)
    assert [r["event_id"] for r in rows] == [e["event_id"] for e in data["events"]]
    assert len(rows) == data["summary"]["events"] == 6 + 5  # 6 deposit checks (3 bags x 2) + 5 written
    # Totals re-counted from the rows.
    s = data["summary"]
    checks = [r for r in rows if r["type"] == "fixity check"]
    assert s["fixity_checks"] == len(checks)
    assert s["passed"] == sum(r["outcome"] == "success" for r in checks)
    assert (s["failed"], s["inconclusive"]) == (2, 1) == (sum(r["outcome"] == "failure" for r in checks),
                                                         sum(r["outcome"] == "inconclusive" for r in checks))
    assert s["repairs"] == sum(r["repair"] == "true" for r in rows) == 2
    assert {r["type"] for r in rows if r["repair"] == "true"} == {"replication", "recovery"}
    assert {(r["type"], r["outcome"]): r["events"] for r in data["by_type"]} == \
        Counter((r["type"], r["outcome"]) for r in rows)
    # Damage and how it was repaired.
    damage = {r["path"]: r for r in rows if r["damage"] == "true"}
    assert set(damage) == {"data/img.png", "data/map.tif"}
    repair = next(r for r in rows if r["type"] == "replication")
    assert damage["data/img.png"]["repaired_at"] == repair["datetime"]
    assert damage["data/img.png"]["repair_event_id"] == repair["event_id"]
    assert damage["data/map.tif"]["repaired_at"] == "" and s["damage_found"] == 2 and s["damage_repaired"] == 1
    assert all(r["library"] and r["collection"] and r["site"] for r in rows)
    # Copies not recently audited: the damaged one is a problem now; everything else passed.
    assert s["copies_damaged_now"] == 1
    assert {(r["bag_id"], r["target"]) for r in data["per_copy"] if r["failed"]} == {(books, "site-b"),
                                                                                       (maps, "site-a")}
    # The ledger verified at report time, with the head hash of the catalog.
    seq, head = arch.catalog.ledger_head()
    assert data["ledger"]["ok"] and (data["ledger"]["head_seq"], data["ledger"]["head_hash"]) == (seq, head)

    # The old event is inside a period that reaches back to it, and nothing else changes.
    everything = read_json(report(arch, "fixity", "json", tmp_path))
    assert everything["summary"]["events"] == len(rows) + 1
    # HTML shows the same totals and the head hash; PREMIS has one event per row plus the ledger check.
    doc = lxml_html.fromstring(report(arch, "fixity", "html", tmp_path, since=since).read_bytes())
    cards = {c.xpath("string(.//div[@class='label'])"): c.xpath("string(.//div[@class='value'])")
             for c in doc.xpath('//section[@id="summary"]//div[contains(@class, "card")]')}
    assert number(cards["fixity checks"]) == s["fixity_checks"] and number(cards["failed"]) == 2
    assert head in doc.xpath('string(//section[@id="ledger"])')
    assert len(doc.xpath('//section[@id="events"]//tbody/tr')) == len(rows)
    premis = report(arch, "fixity", "premis", tmp_path, since=since)
    assert_valid(premis, "premis")
    tree = lxml_etree_parse(premis)
    ns = {"p": "http://www.loc.gov/premis/v3"}
    ids = tree.xpath("//p:event/p:eventIdentifier/p:eventIdentifierValue/text()", namespaces=ns)
    assert len(ids) == len(rows) + 1 and set(r["event_id"] for r in rows) <= set(ids)
    assert head in tree.xpath("string(//p:event[last()]/p:eventDetailInformation/p:eventDetail)", namespaces=ns)


def test_fixity_report_shows_an_altered_ledger(arch, tmp_path):
    events = Path(arch.config.catalog) / "events"
    first = sorted(events.glob("seg-*.parquet"))[0]
    # Tampered with, as someone editing the history would: one event's detail rewritten in a
    # still-readable segment (its metadata, and so its recorded hash, kept). A segment that
    # cannot be read at all stops the report (catalog.events() cannot list the events).
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(first)
    details = table.column("detail").to_pylist()
    details[0] = (details[0] or "") + " (edited)"
    table = table.set_column(table.schema.get_field_index("detail"), table.schema.field("detail"),
                             pa.array(details, table.schema.field("detail").type))
    pq.write_table(table, first, compression="zstd")
    from pipelines.cli import main

    out = tmp_path / "fixity.json"
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        code = main(["--config", str(arch.config_path), "report", "fixity", "--format", "json", "-o", str(out)])
    assert code == 0  # the report is written: the altered ledger is its finding
    ledger = read_json(out)["ledger"]
    assert ledger["ok"] is False and any(first.name in p for p in ledger["problems"])


# --------------------------------------------------------------------------------------------
# PREMIS, CLI, languages


def test_preservation_premis_validates_and_lists_the_period_events(deposited, tmp_path):
    premis = report(deposited, "preservation", "premis", tmp_path, library="PKU")
    assert_valid(premis, "premis")
    tree = lxml_etree_parse(premis)
    ns = {"p": "http://www.loc.gov/premis/v3"}
    entities = tree.xpath("//p:object/p:objectIdentifier[p:objectIdentifierType='strongroom-bag']/"
                          "p:objectIdentifierValue/text()", namespaces=ns)
    pku = sorted(b for (lib, _), b in deposited.bags.items() if lib == "PKU")
    assert sorted(entities) == pku
    expected = [e for e in deposited.catalog.events().to_pylist() if e["bag_id"] in pku]
    assert sorted(tree.xpath("//p:event/p:eventIdentifier/p:eventIdentifierValue/text()", namespaces=ns)) == \
        sorted(e["event_id"] for e in expected)


def test_cli_writes_every_form_and_refuses_bad_options(deposited, tmp_path, capsys):
    from pipelines.cli import main

    cfg = str(deposited.config_path)
    out = tmp_path / "out"
    out.mkdir()
    for kind in ("preservation", "fixity", "formats"):
        for fmt in ("html", "csv", "json", "premis"):
            path = out / f"{kind}.{fmt}"
            assert main(["--config", cfg, "report", kind, "--format", fmt, "--lang", "zh", "--library", "PKU",
                         "--since", "2000-01-01", "-o", str(path)]) == 0
            assert path.stat().st_size > 0
    assert sorted(os.listdir(out)) == sorted([f"{k}.{f}" for k in ("preservation", "fixity", "formats")
                                              for f in ("html", "csv", "json", "premis")]
                                             + ["fixity-coverage.csv"])  # its coverage table; no temp files left
    capsys.readouterr()
    for argv, needle in ((["--since", "2026-02-30"], "--since"), (["--until", "yesterday"], "--until"),
                         (["--library", "NOPE"], "PKU"), (["--collection", "nope"], "books"),
                         (["--since", "2026-03-01", "--until", "2026-02-01"], "empty"),
                         (["--format", "pdf"], "--format"), (["--lang", "fr"], "--lang")):
        target = tmp_path / "refused.html"
        with pytest.raises(SystemExit) if argv[0] in ("--format", "--lang") else contextlib.nullcontext() as exc:
            code = main(["--config", cfg, "report", "preservation", *argv, "-o", str(target)])
        code = exc.value.code if exc is not None and hasattr(exc, "value") else code
        assert code == 2, argv
        assert needle in capsys.readouterr().err, argv
        assert not target.exists()
    assert main(["--config", cfg, "report", "formats", "-o", str(tmp_path / "missing" / "x.html")]) == 2


def test_output_is_atomic_a_failed_write_keeps_the_old_report(deposited, tmp_path, monkeypatch):
    import reports.render as render

    path = tmp_path / "formats.html"
    path.write_text("the previous report", encoding="utf-8")

    def broken_csv(report, tr, fh):
        fh.write("half a report")
        fh.flush()
        raise OSError("disk full")

    monkeypatch.setattr(render, "write_csv", broken_csv)
    from reports.write import write_report

    with pytest.raises(OSError, match="disk full"):
        write_report(deposited.config, "formats", path, fmt="csv")
    assert path.read_text(encoding="utf-8") == "the previous report"
    assert os.listdir(tmp_path) == ["formats.html"]


def test_translation_table_is_complete_and_chinese_json_carries_chinese_evidence(deposited, tmp_path):
    from reports.i18n import MESSAGES

    cjk = re.compile(r"[\u4e00-\u9fff]")
    for key, (en, zh) in MESSAGES.items():
        assert en and zh and en != zh, key
        assert cjk.search(zh), key
        assert re.findall(r"{(\w+)}", en) == re.findall(r"{(\w+)}", zh) or \
            sorted(re.findall(r"{(\w+)}", en)) == sorted(re.findall(r"{(\w+)}", zh)), key
    data = read_json(report(deposited, "preservation", "json", tmp_path, lang="zh"))
    for c in data["ndsa"]:
        for a in c["areas"]:
            for text in a["evidence"] + a["missing"] + [a["level_name"]] + [r["rule"] for r in a["rules"]]:
                assert cjk.search(text), text


def test_empty_archive_reports_are_written_and_valid(tmp_path):
    from policies.config import load_config, write_default_config
    from reports import write_all
    from reports.write import write_report

    config = load_config(write_default_config(tmp_path / "archive"))
    paths = write_all(config, tmp_path / "reports", lang="zh")
    assert [p.name for p in paths] == ["preservation-zh.html", "fixity-zh.html", "formats-zh.html"]
    for kind in ("preservation", "fixity", "formats"):
        premis = write_report(config, kind, tmp_path / f"{kind}.xml", fmt="premis")
        assert_valid(premis, "premis")
        data = read_json(write_report(config, kind, tmp_path / f"{kind}.json", fmt="json"))
        assert data["report"] == kind and data["scope"]["library"] is None
