"""`strongroom report evidence`: the certification evidence pack over a real archive.

One archive per module: two libraries deposited, a copy damaged and repaired by an audit, a
restore drill; then the pack (en, zh; html, json) next to the fixity and preservation reports.
The pack's figures must be theirs, each claim must name the events behind it, and the HTML must
open in headless Chromium without a console message.
"""

import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from lxml import html as lxml_html

from catalog.catalog import Catalog
from catalog.drills import last_drills
from pipelines.cli import main
from policies.config import load_config, write_default_config
from reports.common import make_scope
from reports.evidence import build_evidence, write_evidence
from reports.i18n_evidence import EVIDENCE_MESSAGES, REQUIREMENTS
from reports.write import write_report
from tests.test_reports_html import chromium, console_messages, run_chromium

NUMBERS = [n for _, n in REQUIREMENTS]


def _run(*argv):
    assert main(list(argv)) == 0, argv


@pytest.fixture(scope="module")
def packs(tmp_path_factory):
    base = tmp_path_factory.mktemp("evidence")
    cfg = write_default_config(base / "archive")
    for lib in ("PKU", "WHU"):
        src = base / f"src-{lib}"
        src.mkdir()
        (src / "a.txt").write_text(f"{lib} alpha\n" * 50)
        (src / "b.bin").write_bytes(bytes(range(256)) * 40)
        _run("--config", str(cfg), "deposit", str(src), "--library", lib, "--collection", "coll", "--type",
             "self-built")
    config = load_config(cfg)
    catalog = Catalog(config.catalog)
    pku = [b for b in catalog.bags().column("bag_id").to_pylist() if b.startswith("PKU/")][0]
    stored = Path(config.target("site-b").root).joinpath(*pku.split("/"), "data", "a.txt")
    stored.chmod(0o644)
    stored.write_text("tampered\n")
    main(["--config", str(cfg), "audit", "--all", "--deep"])        # finds the damage and repairs it
    _run("--config", str(cfg), "drill", "--sample", "5", "--seed", "1")
    out = base / "out"
    out.mkdir()
    config = load_config(cfg)   # the pack is built once per scope and written in every form from it (the
    for scope, library in (("all", None), ("PKU", "PKU")):   # command itself: the truncated-ledger test)
        report = build_evidence(config, catalog, make_scope(library=library))
        forms = [("html", "en"), ("html", "zh"), ("json", "zh"), ("json", "en")]
        for fmt, lang in forms:
            write_evidence(report, fmt, lang, out / f"evidence-{scope}-{lang}.{fmt}")
        for kind in ("fixity", "preservation"):
            write_report(config, kind, out / f"{kind}-{scope}-en.json", fmt="json", library=library, catalog=catalog)
    return base, cfg, out, pku


def _load(out: Path, name: str) -> dict:
    return json.loads((out / name).read_text(encoding="utf-8"))


@pytest.mark.parametrize("scope", ["all", "PKU"])
def test_the_packs_figures_are_the_fixity_and_preservation_reports_figures(packs, scope):
    base, cfg, out, pku = packs
    ev, fix, pres = (_load(out, f"{k}-{scope}-en.json") for k in ("evidence", "fixity", "preservation"))
    assert [c["number"] for c in ev["claims"]] == NUMBERS
    claims = {c["number"]: c for c in ev["claims"]}
    s = fix["summary"]
    assert ev["fixity_summary"] == s and ev["totals"] == pres["totals"]
    assert claims["3.3.5"]["figures"]["checks"] == s["fixity_checks"] > 0
    assert (claims["3.3.5"]["figures"]["passed"], claims["3.3.5"]["figures"]["failed"]) == (s["passed"], s["failed"])
    assert claims["5.1.1.3.1"]["figures"] == {"damage": s["damage_found"], "repaired": s["damage_repaired"],
                                              "open": s["open_findings"], "repairs": s["repairs"]}
    assert s["damage_found"] == 1 and s["damage_repaired"] == 1 if scope in ("all", "PKU") else True
    assert claims["4.1.6"]["figures"]["bags"] == pres["totals"]["bags"] == (2 if scope == "all" else 1)
    assert claims["4.1.6"]["figures"]["size"] == pres["totals"]["bytes"]
    assert claims["5.1.2.1"]["figures"]["verified"] == pres["totals"]["verified_copies"]
    cov = fix["coverage"]["total"]["windows"]["365"]
    assert {**ev["coverage"], "now": None} == {**fix["coverage"], "now": None}
    assert claims["3.3.5"]["figures"]["cov365"] == cov["bytes_pct"]
    assert ev["ledger"] == fix["ledger"]
    # the events behind the damage claim are the fixity report's damage and repair events
    damage_ids = {d["event_id"] for d in fix["damage"]} | {d["repair_event_id"] for d in fix["damage"]}
    assert set(claims["5.1.1.3.1"]["events"]) == damage_ids and claims["5.1.1.3.1"]["events_total"] == 2
    fixity_ids = {e["event_id"] for e in fix["events"] if e["type"] == "fixity check"}
    assert set(claims["3.3.5"]["events"]) <= fixity_ids and claims["3.3.5"]["events_total"] == s["fixity_checks"]


def test_drills_and_anchors_per_target(packs):
    base, cfg, out, pku = packs
    ev = _load(out, "evidence-all-en.json")
    drills = last_drills(Catalog(load_config(cfg).catalog))
    targets = {t["target"]: t for t in ev["targets"]}
    assert set(targets) == {"site-a", "site-b"}
    fixity = _load(out, "fixity-all-en.json")      # the fixity report shows the same last drill per target
    for name, t in targets.items():
        assert t["last_drill"] == drills[name].to_dict() == fixity["drills"][name]
        assert t["last_drill"]["outcome"] == "success" and t["last_drill"]["bags"] == 2
        assert t["checkpoints"] >= 1 and t["agrees_with_catalog"]
    page = write_report(load_config(cfg), "fixity", out / "fixity-zh.html", lang="zh")
    rows = lxml_html.fromstring(page.read_text(encoding="utf-8")).xpath("//section[@id='drills']//tbody/tr")
    assert [r.get("data-target") for r in rows] == ["site-a", "site-b"]
    assert all("通过" in r.text_content() and drills[r.get("data-target")].run_id in r.text_content() for r in rows)
    claims = {c["number"]: c for c in ev["claims"]}
    assert claims["5.2.4"]["figures"]["ok"] == 2 and claims["5.2.4"]["figures"]["never"] == 0
    assert set(claims["5.2.4"]["events"]) == {e for d in drills.values() for e in d.event_ids}
    assert claims["4.2.9"]["figures"]["anchored"] == 2 and claims["4.2.9"]["figures"]["agree"] is True
    # every claim says plainly what it cannot evidence, and has a status
    for c in ev["claims"]:
        assert c["cannot"] and c["status"] in ("evidenced", "gaps", "not_evidenced") and c["finding"]
    assert claims["4.6.1.1"]["status"] == "gaps"       # refused restores are not in the ledger: said so
    # the two default targets are folders on one file system: one location, whatever their site labels say
    assert claims["5.1.2"]["figures"]["sites"] == 1 and claims["5.1.2"]["status"] == "gaps"
    assert claims["5.2.4"]["status"] == "gaps" and claims["R14"]["status"] == "gaps"
    assert all(len(c["events"]) == len(set(c["events"])) for c in ev["claims"])
    # only PKU's bags in PKU's pack: its drills name no WHU bag
    pku_pack = _load(out, "evidence-PKU-en.json")
    assert all(t["last_drill"]["bags"] == 1 for t in pku_pack["targets"])


def test_a_never_drilled_target_and_a_truncated_ledger_are_shown_as_gaps(packs, tmp_path):
    base, cfg, out, pku = packs
    copy = tmp_path / "archive"
    shutil.copytree(base / "archive", copy, symlinks=True)
    yaml = copy / "strongroom.yaml"
    text = yaml.read_text()
    anchor = "    site: site-b                     # CHANGE: must differ from site-a's site\n"
    assert anchor in text
    yaml.write_text(text.replace(anchor, anchor + "  site-c:\n    type: filesystem\n"
                                 "    root: ./archive/replicas/site-c\n    site: site-c\n"))
    segments = sorted((copy / "archive" / "catalog" / "events").glob("seg-*.parquet"))
    segments[-1].unlink()              # the catalog's ledger rolled back by one segment: still a valid chain
    assert main(["--config", str(yaml), "report", "evidence", "--format", "json", "-o", str(tmp_path / "ev.json")]) == 0
    ev = json.loads((tmp_path / "ev.json").read_text())
    claims = {c["number"]: c for c in ev["claims"]}
    assert ev["ledger"]["ok"] and not ev["anchors"]["ok"]       # only the checkpoints in storage see it
    assert claims["4.2.9"]["status"] == "gaps" and claims["4.2.9"]["figures"]["agree"] is False
    assert claims["4.4.2"]["status"] == "gaps" and claims["R07"]["status"] == "gaps"
    assert claims["5.2.4"]["status"] == "gaps" and claims["5.2.4"]["figures"] == \
        {"ok": 2, "targets": 3, "never": 1, "sites": 1, "anchored": 2}
    site_c = [t for t in ev["targets"] if t["target"] == "site-c"][0]
    assert site_c["last_drill"] is None and site_c["checkpoints"] == 0


def test_bad_options_are_usage_errors(packs, capsys):
    base, cfg, out, pku = packs
    for argv, words in ((["--format", "csv"], "html or json"), (["--collection", "coll"], "--collection"),
                        (["--since", "2026-01-01"], "--since"), (["--library", "NOPE"], "NOPE"), ([], "-o")):
        dest = [] if argv == [] else ["-o", str(out / "x.html")]
        code = main(["--config", str(cfg), "report", "evidence", *argv, *dest])
        err = capsys.readouterr().err
        assert code == 2 and words in err and "Traceback" not in err, (argv, err)
    assert not (out / "x.html").exists()


def test_every_evidence_word_has_both_languages_and_the_zh_pack_is_chinese(packs):
    base, cfg, out, pku = packs
    assert all(len(v) == 2 and v[0] and v[1] for v in EVIDENCE_MESSAGES.values())
    for n in NUMBERS:
        assert {f"req.{n}", f"find.{n}", f"cannot.{n}"} <= set(EVIDENCE_MESSAGES)
    zh = _load(out, "evidence-all-zh.json")
    en = _load(out, "evidence-all-en.json")
    assert zh["title"] == "认证证据包" and [c["figures"] for c in zh["claims"]] == [c["figures"] for c in en["claims"]]
    assert all(c["finding"] != e["finding"] for c, e in zip(zh["claims"], en["claims"]))


def test_the_pack_opens_in_headless_chromium_without_console_messages(packs):
    chromium()
    base, cfg, out, pku = packs
    pages = [out / "evidence-all-en.html", out / "evidence-all-zh.html"]
    with ThreadPoolExecutor(max_workers=2) as pool:
        doms = list(pool.map(lambda p: run_chromium(p, "--dump-dom"), pages))
    for page, dom in zip(pages, doms):
        assert dom.returncode == 0, dom.stderr[-2000:]
        assert console_messages(dom.stderr) == [], f"{page.name}: {console_messages(dom.stderr)}"
        doc = lxml_html.fromstring(dom.stdout)
        data = _load(out, page.name.replace(".html", ".json"))
        assert doc.xpath("string(//h1)") == data["title"]
        assert [s.get("id") for s in doc.xpath("//main/section")] == ["summary", "claims", "drills", "anchors",
                                                                     "method"]
        rows = doc.xpath("//section[@id='claims']//tbody/tr")
        assert [r.get("data-number") for r in rows] == NUMBERS
        assert [r.get("data-status") for r in rows] == [c["status"] for c in data["claims"]]
        damage = doc.xpath("//tr[@data-number='5.1.1.3.1']")[0].text_content()
        assert all(e in damage for e in data["claims"][NUMBERS.index("5.1.1.3.1")]["events"])
        assert len(doc.xpath("//section[@id='drills']//tbody/tr")) == 2
        assert not doc.xpath("//script|//link|//iframe|//img[not(starts-with(@src, 'data:'))]")
