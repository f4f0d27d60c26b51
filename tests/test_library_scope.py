"""`--library L`: status, report, restore and audit show and touch nothing of another library.

Two libraries (ALPHA and BRAVO) deposit through the real pipeline into one archive; BRAVO's copy
on one target is then damaged and audited (so the ledger holds damage and repair events of
BRAVO's), and BRAVO has a failed deposit in staging. Every output a member library might be
handed (status text and --json, every report kind in every format and both languages, audit
and restore) is produced with `--library ALPHA` and searched for anything of BRAVO's: its code,
collection, bag id, file names, title, and the figures (files, bytes) that only exist once
BRAVO's holdings are counted in.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List

import pytest

A, B = "ALPHA", "BRAVO"
SOURCES = {
    A: ("apples", "Orchard letters", {"alpha-note.txt": b"an apple a day\n" * 31, "pips/seed.txt": b"pip" * 77}),
    B: ("bananas", "Zanzibar ledgers", {"bravo-secret.txt": b"banana republic\n" * 53,
                                        **{f"peel/skin-{i}.txt": b"yellow" * (40 + i) for i in range(7)}}),
}


@dataclass
class Arch:
    root: Path
    config: Path
    bags: Dict[str, str]            # library -> bag id
    files: Dict[str, int]           # library -> payload files
    bytes: Dict[str, int]           # library -> payload bytes


def cli(*argv) -> "tuple[int, str, str]":
    from pipelines.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exc:  # argparse
            code = exc.code
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def deposited(tmp_path_factory) -> Arch:
    from policies.config import write_default_config

    root = tmp_path_factory.mktemp("scope")
    config = Path(write_default_config(root / "archive"))
    bags, files, sizes = {}, {}, {}
    for lib, (coll, title, content) in SOURCES.items():
        src = root / "src" / lib
        for rel, data in content.items():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            (src / rel).write_bytes(data)
        code, out, err = cli("--config", config, "--json", "deposit", src, "--library", lib, "--collection", coll,
                             "--type", "self-built", "--title", title)
        assert code == 0, out + err
        (bag,) = json.loads(out)["bags"]
        bags[lib], files[lib], sizes[lib] = bag["id"], len(content), sum(len(d) for d in content.values())
    arch = Arch(root, config, bags, files, sizes)
    _damage_and_audit(arch)
    return arch


def _damage_and_audit(arch: Arch) -> None:
    """BRAVO's copy on the first target has a damaged file; an audit of BRAVO finds it and (with
    --no-repair) leaves it open, so BRAVO's damage is in the ledger and in the state."""
    from catalog.catalog import Catalog
    from policies.config import load_config

    config = load_config(arch.config)
    catalog = Catalog(config.catalog)
    target = sorted(catalog.replicas(arch.bags[B]).column("target").to_pylist())[0]
    root = Path(config.target(target).root)
    victim = next(p for p in root.rglob("bravo-secret.txt") if p.is_file())
    victim.write_bytes(b"rotten" * 3)
    code, out, err = cli("--config", arch.config, "audit", "--all", "--deep", "--no-repair", "--library", B)
    assert code == 1, out + err
    # and a deposit of BRAVO's fails (a file where its new collection's folder should be): staging keeps it
    (Path(config.target("site-b").root) / B / "plantains").write_text("not a folder\n")
    src = arch.root / "src" / f"{B}-late"
    src.mkdir()
    (src / "plantain-list.txt").write_bytes(b"green\n")
    code, out, err = cli("--config", arch.config, "deposit", src, "--library", B, "--collection", "plantains",
                         "--type", "self-built")
    assert code != 0, out + err


@pytest.fixture
def arch(deposited, tmp_path) -> Arch:
    shutil.copytree(deposited.root / "archive", tmp_path / "archive", symlinks=True)
    return Arch(tmp_path, tmp_path / "archive" / deposited.config.name, deposited.bags, deposited.files,
                deposited.bytes)


def forbidden(arch: Arch) -> List[str]:
    """Strings of BRAVO's that must never appear in ALPHA's outputs."""
    coll, title, content = SOURCES[B]
    bag = arch.bags[B]
    words = [B, B.lower(), coll, "plantain", title, bag, *(Path(p).name for p in content)]
    return words + [w.replace("/", "%2F") for w in words if "/" in w]


def forbidden_figures(arch: Arch) -> Dict[str, int]:
    """Byte totals that can only be reached by counting BRAVO's holdings."""
    return {"consortium bytes": arch.bytes[A] + arch.bytes[B], "BRAVO bytes": arch.bytes[B]}


def assert_nothing_of_bravo(arch: Arch, text: str, where: str) -> None:
    from policies.units import display_size, format_size

    text = text + "\n" + text.replace("<wbr>", "")   # HTML breaks ids and paths at separators
    for word in forbidden(arch):
        assert word not in text, f"{where} names {word!r} of library {B}"
    for what, n in forbidden_figures(arch).items():
        for shown in {str(n), f"{n:,}", display_size(n), format_size(n)}:
            assert not re.search(rf"(?<![\d.,]){re.escape(shown)}(?![\d,]|\.\d)", text), \
                f"{where} shows {what} {shown}"
    for doc in _json_documents(text):
        for key, value in _numbers(doc):
            if "file" in key:
                assert value != arch.files[A] + arch.files[B], f"{where}: {key} counts {B}'s files"


def _json_documents(text: str):
    for chunk in (text, *text.split("\n\n")):
        try:
            yield json.loads(chunk)
        except ValueError:
            continue


def _numbers(doc, key: str = ""):
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _numbers(v, str(k))
    elif isinstance(doc, list):
        for v in doc:
            yield from _numbers(v, key)
    elif isinstance(doc, int) and not isinstance(doc, bool):
        yield key, doc


def test_the_fixture_really_has_bravo_everywhere(arch):
    """Without --library, the outputs hold BRAVO's strings: the searches below can fail."""
    code, out, _ = cli("--config", arch.config, "--json", "status")
    assert B in out and SOURCES[B][0] in out and arch.bags[B] in out
    assert f'"bytes": {arch.bytes[A] + arch.bytes[B]}' in out
    _, out, _ = cli("--config", arch.config, "status")
    assert B in out and "plantains" in out
    path = arch.root / "fixity.json"
    assert cli("--config", arch.config, "report", "fixity", "--format", "json", "-o", path)[0] == 0
    assert "bravo-secret.txt" in path.read_text(encoding="utf-8")


def test_status_of_one_library_shows_nothing_of_another(arch):
    assert cli("--config", arch.config, "status")[0] == 1          # BRAVO's damage and failed deposit
    for argv in (["--json", "status", "--library", A], ["status", "--library", A]):
        code, out, err = cli("--config", arch.config, *argv)
        assert code == 0, out + err                                  # ALPHA's own copies are all well
        assert A in out and arch.bags[A] in out
        assert_nothing_of_bravo(arch, out + err, " ".join(argv))
    data = json.loads(cli("--config", arch.config, "--json", "status", "--library", A)[1])
    assert data["totals"]["bytes"] == arch.bytes[A] and data["totals"]["files"] == arch.files[A]
    assert [lib["library"] for lib in data["libraries"]] == [A]


@pytest.mark.parametrize("kind", ["preservation", "fixity", "formats"])
def test_reports_of_one_library_show_nothing_of_another(arch, kind):
    for fmt, suffix in (("html", "html"), ("csv", "csv"), ("json", "json"), ("premis", "xml")):
        for lang in ("en", "zh"):
            path = arch.root / f"{kind}-{lang}.{suffix}"
            code, out, err = cli("--config", arch.config, "--json", "report", kind, "--library", A,
                                 "--format", fmt, "--lang", lang, "-o", path)
            assert code == 0, out + err
            text = path.read_text(encoding="utf-8")
            assert A in text or fmt == "csv", f"{kind} {fmt} {lang} does not name {A}"
            assert_nothing_of_bravo(arch, text + out + err, f"{kind} report ({fmt}, {lang})")


def test_report_ledger_counts_only_the_librarys_events(arch):
    from catalog.catalog import Catalog
    from policies.config import load_config

    catalog = Catalog(load_config(arch.config).catalog)
    events = catalog.events().to_pylist()
    own = sum(1 for e in events if (e["bag_id"] or "").startswith(f"{A}/"))
    assert 0 < own < len(events)
    for kind in ("preservation", "fixity"):
        path = arch.root / f"{kind}.json"
        assert cli("--config", arch.config, "report", kind, "--library", A, "--format", "json", "-o", path)[0] == 0
        ledger = json.loads(path.read_text(encoding="utf-8"))["ledger"]
        assert ledger["ok"] is True and ledger["events"] == own, kind
        assert cli("--config", arch.config, "report", kind, "--format", "json", "-o", path)[0] == 0
        assert json.loads(path.read_text(encoding="utf-8"))["ledger"]["events"] == len(events), kind


def test_audit_of_one_library_checks_and_shows_nothing_of_another(arch):
    from catalog.catalog import Catalog
    from policies.config import load_config

    catalog = Catalog(load_config(arch.config).catalog)
    before = catalog.replicas(arch.bags[B]).to_pylist()
    for argv in (["--json", "audit", "--all", "--library", A], ["audit", "--all", "--deep", "--library", A],
                 ["--json", "audit", "--virus", "--library", A], ["audit", "--virus", "--library", A]):
        code, out, err = cli("--config", arch.config, *argv)
        assert code == 0, out + err
        assert arch.bags[A] in out or "--deep" in argv
        assert_nothing_of_bravo(arch, out + err, " ".join(argv))
    assert catalog.replicas(arch.bags[B]).to_pylist() == before  # BRAVO's copies were not touched


def test_restore_for_one_library_refuses_another_librarys_bag_without_saying_what_it_is(arch, tmp_path):
    other, missing = arch.bags[B], arch.bags[B].replace("bananas", "cherries")
    errors = []
    for bag in (other, missing):
        dest = tmp_path / f"dest-{len(errors)}"
        code, out, err = cli("--config", arch.config, "restore", bag, dest, "--library", A)
        assert code == 2, out + err
        assert not dest.exists()
        errors.append([line for line in err.replace(bag, "BAG").splitlines() if "error" in line])
    assert errors[0] == errors[1]                 # another library's bag reads like no bag at all
    assert len(errors[0]) == 1 and A in errors[0][0] and "Traceback" not in errors[0][0]
    for argv in (["--deposit", other.rsplit("-", 1)[0]], ["--collection", f"{B}/{SOURCES[B][0]}"]):
        code, out, err = cli("--config", arch.config, "restore", *argv, tmp_path / "dest-g", "--library", A)
        assert code == 2 and not (tmp_path / "dest-g").exists(), out + err
    code, out, err = cli("--config", arch.config, "restore", arch.bags[A], tmp_path / "mine", "--library", A)
    assert code == 0, out + err
    assert (tmp_path / "mine" / "data" / "alpha-note.txt").read_bytes() == SOURCES[A][2]["alpha-note.txt"]


def test_a_damaged_catalog_is_said_to_a_library_without_naming_another_librarys_bags(arch):
    from catalog.compact import bag_file_prefix
    from policies.config import load_config

    files = Path(load_config(arch.config).catalog) / "files"
    for part in files.glob(f"{bag_file_prefix(arch.bags[B])}-*.parquet"):
        part.unlink()
    code, out, _ = cli("--config", arch.config, "--json", "status")
    assert code == 1 and arch.bags[B] in out          # the consortium's view names the damage
    for argv in (["--json", "status", "--library", A], ["status", "--library", A]):
        code, out, err = cli("--config", arch.config, *argv)
        assert code == 1 and "damaged" in out.lower(), out + err
        assert_nothing_of_bravo(arch, out + err, " ".join(argv))


# --------------------------------------------------------------------------------------------
# Publishing into the library's receiving area


def with_areas(arch: Arch, areas: Dict[str, Path], publish: bool = False):
    """The archive's strongroom.yaml with a `libraries:` registry whose receiving areas are these
    folders (replacing any registry an earlier call wrote); returns a loader of the config."""
    from policies.config import load_config

    original = arch.config.with_name("strongroom.yaml.before-registry")
    if not original.exists():
        original.write_text(arch.config.read_text(encoding="utf-8"), encoding="utf-8")
    entries = "".join(f"  {code}:\n    name: {{en: {code} Library, zh: {code}图书馆}}\n"
                      f"    receiving: {{type: filesystem, root: {root}, publish_reports: {str(publish).lower()}}}\n"
                      for code, root in areas.items())
    arch.config.write_text(original.read_text(encoding="utf-8") + "\nlibraries:\n" + entries, encoding="utf-8")
    for root in areas.values():
        root.mkdir(parents=True, exist_ok=True)
    return load_config


PUBLISHED = [f"{kind}{tag}.html" for kind in ("preservation", "fixity", "formats") for tag in ("", "-zh")]


def test_publish_writes_the_librarys_reports_into_its_own_receiving_area(arch, tmp_path):
    areas = {A: tmp_path / "recv-alpha", B: tmp_path / "recv-bravo"}
    with_areas(arch, areas)
    code, out, err = cli("--config", arch.config, "--json", "report", "fixity", "--library", A, "--publish")
    assert code == 0, out + err
    assert json.loads(out)["published"]["keys"] == [f"reports/{name}" for name in PUBLISHED]
    assert sorted(p.name for p in (areas[A] / "reports").iterdir()) == sorted(PUBLISHED)
    assert list(areas[B].iterdir()) == []                  # nothing in the other library's area
    for name in PUBLISHED:
        text = (areas[A] / "reports" / name).read_text(encoding="utf-8")
        assert A in text and SOURCES[A][0] in text, name
        assert ("报告" in text) == name.endswith("-zh.html"), name
        assert_nothing_of_bravo(arch, text, f"published {name}")
    first = (areas[A] / "reports" / "fixity.html").read_bytes()
    assert cli("--config", arch.config, "audit", "--all", "--quick", "--library", A)[0] == 0
    assert cli("--config", arch.config, "report", "formats", "--library", A, "--publish")[0] == 0
    assert (areas[A] / "reports" / "fixity.html").read_bytes() != first          # replaced by the newer one
    assert sorted(p.name for p in (areas[A] / "reports").iterdir()) == sorted(PUBLISHED)  # no temp files left


def test_publish_refuses_without_a_library_or_an_area(arch, tmp_path):
    with_areas(arch, {A: tmp_path / "recv-alpha"})
    for argv, needle in ((["--publish"], "--library"), (["--library", A, "--publish", "--since", "2026-01-01"],
                                                         "--publish"),
                         (["--library", B, "--publish"], B), (["--library", A], "-o")):
        code, out, err = cli("--config", arch.config, "report", "preservation", *argv)
        assert code == 2, (argv, out + err)
        assert needle in err and "Traceback" not in err, (argv, err)
    assert not (tmp_path / "recv-alpha" / "reports").exists()


def test_a_listed_library_with_no_bags_gets_empty_reports(arch, tmp_path):
    from reports.publish import publish_reports

    load = with_areas(arch, {"CHARLIE": tmp_path / "recv-charlie"})
    keys = publish_reports(load(arch.config), "CHARLIE")
    assert len(keys) == 6
    for key in keys:
        text = (tmp_path / "recv-charlie" / key).read_text(encoding="utf-8")
        assert "CHARLIE" in text and A not in text
        assert_nothing_of_bravo(arch, text, key)
    # an unlisted code is still a usage error naming what the catalog knows
    code, _, err = cli("--config", arch.config, "report", "formats", "--library", "DELTA", "-o", tmp_path / "x.html")
    assert code == 2 and "DELTA" in err


def test_audit_budget_of_one_library_shows_its_own_reads_not_the_consortiums(arch, monkeypatch):
    """Both libraries' copies fall due (91 days on); BRAVO's are deep-audited first. ALPHA's --due
    run still counts BRAVO's reads against the shared daily budget, but shows only its own."""
    import datetime as dt

    import fixity.audit

    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=91)
    monkeypatch.setattr(fixity.audit, "utcnow", lambda: later)
    code, out, err = cli("--config", arch.config, "--json", "audit", "--due", "--deep", "--library", B)
    assert code in (0, 1), out + err
    read_by_bravo = json.loads(out)["bytes_checked"]
    assert read_by_bravo >= arch.bytes[B]
    code, out, err = cli("--config", arch.config, "--json", "audit", "--due", "--library", A)
    assert code == 0, out + err
    (budget,) = json.loads(out)["budgets"].values()
    assert budget["read_today"] == 0 and budget["shared"] is True
    assert str(read_by_bravo) not in out
    code, out, err = cli("--config", arch.config, "--json", "audit", "--due", "--library", A)
    assert json.loads(out)["budgets"] == {}  # nothing left due


def test_audit_due_refreshes_the_published_reports_of_libraries_that_ask(arch, tmp_path, monkeypatch):
    import datetime as dt

    import fixity.audit

    areas = {A: tmp_path / "recv-alpha", B: tmp_path / "recv-bravo"}
    load = with_areas(arch, areas, publish=True)
    from reports.publish import publishes_reports

    assert publishes_reports(load(arch.config), A)
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=91)
    monkeypatch.setattr(fixity.audit, "utcnow", lambda: later)
    code, out, err = cli("--config", arch.config, "--json", "audit", "--due", "--library", A)
    assert code == 0, out + err
    assert list(json.loads(out)["published"]) == [A]
    assert sorted(p.name for p in (areas[A] / "reports").iterdir()) == sorted(PUBLISHED)
    assert list(areas[B].iterdir()) == []                 # BRAVO was not audited: nothing written there
    assert_nothing_of_bravo(arch, (areas[A] / "reports" / "fixity.html").read_text(encoding="utf-8"), "refresh")
    with_areas(arch, {B: tmp_path / "quiet-bravo"}, publish=False)   # switch off: nothing
    code, out, err = cli("--config", arch.config, "--json", "audit", "--due", "--library", B)
    assert code in (0, 1) and json.loads(out)["replicas"], out + err
    assert "published" not in json.loads(out) and list((tmp_path / "quiet-bravo").iterdir()) == []


def test_events_without_a_bag_belong_to_the_library_they_acted_for(arch):
    from catalog.catalog import Catalog
    from catalog.scope import LibraryScope
    from catalog.schema import EventRecord
    from policies.config import load_config

    catalog = Catalog(load_config(arch.config).catalog)
    catalog.append_events([
        EventRecord(type="ingestion", outcome="success", detail="batch orchard-1 received", agent_library=A),
        EventRecord(type="ingestion", outcome="failure", detail="batch bananas-9 refused", agent_library=B),
        EventRecord(type="validation", outcome="success", detail="catalog-wide check"),
    ])
    mine = LibraryScope(A).events(catalog).to_pylist()
    details = [e["detail"] for e in mine]
    assert "batch orchard-1 received" in details
    assert not any("bananas" in (d or "") or d == "catalog-wide check" for d in details)
    assert {e["bag_id"] for e in mine} == {None, arch.bags[A]}
    assert len(LibraryScope().events(catalog)) == len(catalog.events())
    assert LibraryScope(A).allows({"library": A}) and not LibraryScope(A).allows({"library": B})
    assert LibraryScope(A).bag_ids(catalog) == {arch.bags[A]}


def test_status_of_a_listed_library_with_no_bags_is_empty_not_an_error(arch, tmp_path):
    code, _, err = cli("--config", arch.config, "status", "--library", "CHARLIE")
    assert code == 2 and "CHARLIE" in err                     # not listed: a typo, said as one
    with_areas(arch, {"CHARLIE": tmp_path / "recv-charlie"})
    code, out, err = cli("--config", arch.config, "--json", "status", "--library", "CHARLIE")
    assert code == 0, out + err
    data = json.loads(out)
    assert data["bags"] == [] and data["totals"]["bags"] == 0 and data["libraries"] == []
    assert A not in out
    assert_nothing_of_bravo(arch, out, "status of CHARLIE")


def test_receive_refreshes_the_reports_of_a_library_that_asks(arch, tmp_path):
    areas = {A: tmp_path / "recv-alpha", B: tmp_path / "recv-bravo"}
    with_areas(arch, areas, publish=True)
    batch = areas[A] / SOURCES[A][0] / "b2"
    batch.mkdir(parents=True)
    (batch / "orchard-map.txt").write_bytes(b"rows of trees\n" * 9)
    (areas[A] / SOURCES[A][0] / "b2.ready").write_text("type: self-built\ntitle: Orchard maps\n", encoding="utf-8")
    code, out, err = cli("--config", arch.config, "--json", "receive")
    assert code == 0, out + err
    data = json.loads(out)
    published = [o["library"] for o in data["batches"] if o["state"] == "reports published"]
    assert published == [A]                                   # BRAVO received nothing: not republished
    (received,) = [b for o in data["batches"] for b in o["bags"]]
    assert sorted(p.name for p in (areas[A] / "reports").iterdir()) == sorted(PUBLISHED)
    assert not (areas[B] / "reports").exists()
    text = (areas[A] / "reports" / "preservation.html").read_text(encoding="utf-8")
    assert received in text.replace("<wbr>", "")              # the new bag is in the refreshed report
    assert_nothing_of_bravo(arch, text, "reports published by receive")
