"""The HTML reports in a real browser: Debian's headless Chromium opens each report (en and zh)
from a file URL with no network; the page must load without a console message (the report's
Content-Security-Policy turns any attempt to fetch something into one), its DOM must hold the
report's sections, and its screenshot must not be blank. The Chinese reports must have no English
headings left untranslated.

Chromium is required: the test fails, never skips, when it is missing (CI installs it with
`apt-get install chromium`). With STRONGROOM_SCREENSHOTS=DIR set, the screenshots are also
written to DIR (that is how docs/img/report-*.png are made).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from lxml import html as lxml_html

SAMPLE = Path(__file__).resolve().parents[1] / "pipelines" / "sample"
KINDS = ("preservation", "fixity", "formats")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--enable-logging=stderr", "--v=0"]
SECTIONS = {"preservation": ["summary", "findings", "holdings", "copies", "locations", "retention", "audits",
                             "attention", "repairs", "deposits", "governance", "ndsa", "method"],
            "fixity": ["summary", "findings", "coverage", "drills", "ledger", "outcomes", "damage", "not-audited", "per-copy", "events"],
            "formats": ["summary", "formats", "unidentified", "at-risk", "methods", "by-collection"]}


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("Chromium is not installed: the HTML report tests need Debian's `chromium` on PATH "
                    "(apt-get install -y chromium); they do not skip")
    return path


@pytest.fixture(scope="module")
def reports_dir(tmp_path_factory):
    """The sample collection deposited twice (a self-built and a purchased collection), some audit
    history (a repaired failure, an open one, an inconclusive check), then all six HTML reports."""
    import datetime as dt

    from catalog.catalog import Catalog
    from catalog.schema import EventRecord, ReplicaRecord
    from pipelines.cli import main
    from policies.config import load_config, write_default_config
    from reports.write import write_report

    root = tmp_path_factory.mktemp("html")
    cfg = write_default_config(root / "archive")
    bags = []
    for coll, ctype, title in (("special", "self-built", "示例特藏 Sample special collection"),
                               ("ejournals", "purchased", None)):
        out = io.StringIO()
        argv = ["--config", str(cfg), "--json", "deposit", str(SAMPLE), "--library", "DEMO", "--collection", coll,
                "--type", ctype] + (["--title", title] if title else [])
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
            assert main(argv) == 0, out.getvalue()
        bags.append(json.loads(out.getvalue())["bags"][0]["id"])
    config = load_config(cfg)
    catalog = Catalog(config.catalog)
    now = dt.datetime.now(dt.timezone.utc)
    ago = lambda days: now - dt.timedelta(days=days)  # noqa: E731
    catalog.append_events([
        EventRecord("fixity check", "success", detail="deep audit: 10 files match", agent="strongroom audit",
                    object_type="replica", bag_id=bags[0], target="site-a", datetime=ago(40)),
        EventRecord("fixity check", "failure", detail="sha256 mismatch", agent="strongroom audit", object_type="file",
                    bag_id=bags[0], target="site-b", path="data/README.txt", datetime=ago(3)),
        EventRecord("replication", "success", detail="repair: replaced with the copy from site-a",
                    agent="strongroom audit",
                    object_type="file", bag_id=bags[0], target="site-b", path="data/README.txt", datetime=ago(3)),
        EventRecord("fixity check", "inconclusive", detail="read timeout", agent="strongroom audit",
                    object_type="replica", bag_id=bags[1], target="site-a", datetime=ago(2)),
        # An open finding as an audit records it (kind: text), after the copy was last verified.
        EventRecord("fixity check", "failure", agent="strongroom audit",
                    detail="missing: data/web/index.html is not stored", object_type="file", bag_id=bags[1],
                    target="site-b", path="data/web/index.html", datetime=now),
        # Details are untrusted text: escaped by the templates, or the page's CSP would log the
        # blocked image and script as console messages (an old event: at the end of the event list).
        EventRecord("fixity check", "inconclusive", agent="strongroom audit", object_type="replica",
                    detail="read error <img src=http://127.0.0.1:9/x.png><script>alert(1)</script>",
                    bag_id=bags[1], target="site-a", datetime=ago(400)),
    ])
    catalog.record_replica(ReplicaRecord(bags[1], "site-b", config.target("site-b").site, "damaged",
                                         last_audit_at=now, last_audit_kind="deep", last_audit_outcome="failure",
                                         detail="1 of 10 files damaged: data/web/index.html missing"))
    out_dir = root / "reports"
    out_dir.mkdir()
    for kind in KINDS:
        for lang in ("en", "zh"):
            write_report(config, kind, out_dir / f"{kind}-{lang}.html", lang=lang)
            write_report(config, kind, out_dir / f"{kind}-{lang}.json", fmt="json", lang=lang)
    return out_dir


def run_chromium(html_path: Path, *extra: str) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="strongroom-chromium-") as profile:
        return subprocess.run([chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *extra,
                               html_path.resolve().as_uri()],
                              capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


def open_in_browser(html_path: Path, png: Path):
    shot = run_chromium(html_path, f"--screenshot={png}", "--window-size=1280,2000")
    dom = run_chromium(html_path, "--dump-dom")
    return shot, dom


def console_messages(stderr: str):
    return [line for line in stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]


def assert_not_blank(png: Path) -> None:
    import matplotlib.image as mpimg
    import numpy as np

    pixels = mpimg.imread(str(png))
    assert pixels.ndim == 3 and pixels.shape[0] >= 1000 and pixels.shape[1] >= 1000, pixels.shape
    flat = pixels[..., :3].reshape(-1, 3)
    background = np.median(flat, axis=0)
    differing = np.abs(flat - background).sum(axis=1) > 0.05
    assert differing.mean() > 0.02, f"{png} is (nearly) blank: {differing.mean():.4f} of pixels differ"
    rgb = (flat * 255).astype(np.uint32)
    colours = np.unique((rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2])
    assert len(colours) > 20, f"{png} has almost no colours"


def keep_small(png: Path, dest: Path) -> None:
    """A palette PNG at 3/4 size for the docs (Pillow comes with matplotlib)."""
    from PIL import Image

    dest.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(png) as image:
        image = image.convert("RGB").resize((960, 1500), Image.LANCZOS)
        image.quantize(colors=96, method=Image.Quantize.MEDIANCUT).save(dest, optimize=True)


def test_reports_open_in_headless_chromium_without_errors(reports_dir, tmp_path):
    chromium()
    save = os.environ.get("STRONGROOM_SCREENSHOTS")
    jobs = [(kind, lang) for kind in KINDS for lang in ("en", "zh")]
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = dict(zip(jobs, pool.map(lambda job: open_in_browser(
            reports_dir / f"{job[0]}-{job[1]}.html", tmp_path / f"report-{job[0]}-{job[1]}.png"), jobs)))
    for (kind, lang), (shot, dom) in results.items():
        png = tmp_path / f"report-{kind}-{lang}.png"
        assert shot.returncode == 0 and png.exists(), shot.stderr[-2000:]
        assert console_messages(shot.stderr) == [], f"{kind}-{lang}: {console_messages(shot.stderr)}"
        assert console_messages(dom.stderr) == [], f"{kind}-{lang}: {console_messages(dom.stderr)}"
        assert_not_blank(png)
        # The DOM Chromium built holds the report: its title, every section, inline SVG charts.
        data = json.loads((reports_dir / f"{kind}-{lang}.json").read_text(encoding="utf-8"))
        doc = lxml_html.fromstring(dom.stdout)
        assert doc.xpath("string(//h1)") == data["title"]
        assert [s.get("id") for s in doc.xpath("//main/section")] == SECTIONS[kind]
        assert doc.xpath("//figure[@class='chart']/*[local-name()='svg']"), f"{kind}-{lang}: no chart"
        assert not doc.xpath("//script|//link|//iframe|//img[not(starts-with(@src, 'data:'))]")
        if kind == "fixity":
            assert "<script>alert(1)</script>" in doc.xpath("string(//section[@id='events'])")  # shown as text
            # Coverage (issue 17): one row per target holding copies, as the JSON says.
            assert doc.xpath("//section[@id='coverage']//tr/@data-target") == \
                [t["target"] for t in data["coverage"]["targets"]] + ["*"]
        if kind in ("preservation", "fixity"):
            # The open damage (bags[1] on site-b) is listed right after the summary, which points to it.
            (finding,) = data["open_findings"]
            assert finding["bag"].startswith("DEMO/ejournals/") and \
                (finding["target"], finding["path"], finding["kind"]) == ("site-b", "data/web/index.html", "missing")
            (row,) = doc.xpath("//section[@id='findings']//tbody/tr[td[@data-kind='missing']]")
            assert finding["bag"] in row.text_content() and "data/web/index.html" in row.text_content()
            assert doc.xpath("//section[@id='summary']//p[contains(@class, 'alert')]/a[@href='#findings']")
        if save:
            keep_small(png, Path(save) / png.name)


def test_html_is_self_contained_and_printable(reports_dir):
    for kind in KINDS:
        text = (reports_dir / f"{kind}-en.html").read_text(encoding="utf-8")
        assert "default-src 'none'" in text and "@media print" in text
        # Nothing is fetched: no URL in src/href other than fragments; SVG namespaces are not fetches.
        for url in re.findall(r'(?:src|href)="([^"#][^"]*)"', text):
            pytest.fail(f"{kind}: external reference {url!r}")


def test_chinese_reports_have_no_untranslated_english_headings(reports_dir):
    from reports.i18n import ACRONYMS, MESSAGES

    english = {en for en, _ in MESSAGES.values()}
    for kind in KINDS:
        data = json.loads((reports_dir / f"{kind}-zh.json").read_text(encoding="utf-8"))
        names = sorted(_data_names(data), key=len, reverse=True)
        doc = lxml_html.fromstring((reports_dir / f"{kind}-zh.html").read_bytes())
        assert doc.get("lang") == "zh-Hans"
        headings = doc.xpath("//title|//h1|//h2|//h3|//h4|//th|//caption|//nav//a|//dt|//figcaption"
                             "|//div[@class='label']")
        texts = [" ".join(h.text_content().split()) for h in headings]
        texts += [svg.get("aria-label") for svg in doc.xpath("//*[local-name()='svg']")]
        assert len(texts) > 30
        for text in texts:
            assert text not in english, f"{kind}: untranslated heading {text!r}"
            rest = text
            for name in names + list(ACRONYMS):
                rest = rest.replace(name, " ")
            words = re.findall(r"[A-Za-z]{2,}", rest)
            assert not words, f"{kind}: English left in the zh heading {text!r}: {words}"
        # And the English report's headings are English (the check above is not vacuous).
        en_doc = lxml_html.fromstring((reports_dir / f"{kind}-en.html").read_bytes())
        assert all(re.search(r"[A-Za-z]{3,}", h.text_content()) for h in en_doc.xpath("//h2"))


def _data_names(data) -> set:
    """Strings that are data, not words of the report: names from the catalog and config."""
    keys = {"library", "collection", "site", "target", "policy", "policies", "bag_id", "puid", "format_name",
            "format_version", "catalog", "storage_type"}
    found: set = set()

    def walk(value, key=None):
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, k)
        elif isinstance(value, list):
            for v in value:
                walk(v, key)
        elif isinstance(value, str) and key in keys:
            found.add(value)

    walk(data)
    return {n for n in found if n}


# Counts, per id cell (text longer than 20 characters), the characters on its shortest line.
WRAP_PROBE = """<script>
const out = [];
for (const td of document.querySelectorAll("td.mono")) {
  const text = td.textContent.replace(/\\s+/g, "");
  if (text.length < 20) continue;
  const range = document.createRange();
  range.selectNodeContents(td);
  const tops = new Set([...range.getClientRects()].map(r => Math.round(r.top)));
  out.push([text, tops.size, Math.floor(text.length / tops.size)]);
}
document.body.setAttribute("data-wrap", JSON.stringify(out));
</script>"""


def wrap_measure(html_path: Path, tmp_path: Path, width: int):
    """Open a copy of the page (its CSP removed so the probe may run) at `width` pixels; per id
    cell: text, lines, characters per line."""
    page = re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", html_path.read_text(encoding="utf-8"))
    probe = tmp_path / f"probe-{html_path.name}"
    probe.write_text(page.replace("</body>", WRAP_PROBE + "</body>"), encoding="utf-8")
    dom = run_chromium(probe, "--dump-dom", f"--window-size={width},1500")
    return json.loads(lxml_html.fromstring(dom.stdout).xpath("string(//body/@data-wrap)"))


def test_bag_ids_wrap_at_separators_never_a_character_per_line(reports_dir, tmp_path):
    """On a narrow screen the many-column tables squeeze their id columns: ids must then wrap
    between their parts (after - _ / .), never one character per line (CSS break-all did that)."""
    chromium()
    for kind in ("preservation", "fixity"):
        cells = wrap_measure(reports_dir / f"{kind}-en.html", tmp_path, 480)
        assert cells, kind
        assert any(lines > 1 for _, lines, _ in cells), f"{kind}: nothing wrapped at 480 px, the test shows nothing"
        for text, lines, per_line in cells:
            assert per_line >= 5, f"{kind}: {text!r} wrapped into {lines} lines"


def test_a_cjk_font_is_installed_for_the_chinese_reports():
    """Without a CJK font Chromium draws the zh reports (and their screenshots) as boxes: CI
    installs Debian's fonts-wqy-microhei (.ci/run); fail, never skip, when there is none."""
    found = subprocess.run(["fc-list", ":lang=zh", "family"], capture_output=True, text=True).stdout.strip()
    assert found, "no CJK font: apt-get install -y fonts-wqy-microhei (or fonts-noto-cjk)"
