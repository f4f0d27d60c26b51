"""Format identification: the same answers as the `fido` command, file by file.

The reference is always the real `fido` console script (run once per folder, not per file);
nothing here hard-codes what FIDO "should" say except a few PRONOM facts about our generated
samples (PNG is fmt/11, a DOCX is found by container signature...), which guard against both
sides being wrong in the same way (no signatures loaded, say).
"""

from __future__ import annotations

import csv
import io
import json
import os
import random
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from fido.fido import Fido
from fido.versions import get_local_versions

import fido as fido_pkg
from ingest.fido_matcher import FastFido, LiteralCondition, literal_conditions
from ingest.identify import Identification, Identifier, identify_paths
from pipelines import cli
from tests import formatgen
from tests.conftest import REPO, SHARED

CORPUS = SHARED / "format-corpus"
METHOD = {"signature": "signature", "container": "container", "extension": "extension", "fail": "none"}


def unique(puids):
    out = []
    for puid in puids:
        if puid not in out:
            out.append(puid)
    return tuple(out)


def fido_view(answers):
    """fido CLI answers as (PUIDs without repeats, our method name)."""
    return {path: (unique(puids), METHOD[matchtype]) for path, (puids, matchtype) in answers.items()}


def corpus_files():
    files = sorted(str(p) for p in CORPUS.rglob("*") if p.is_file() and not p.is_symlink())
    assert len(files) > 2500, f"format corpus missing or incomplete at {CORPUS}"
    return files


@pytest.fixture(scope="module")
def samples(tmp_path_factory, identifier):
    folder = tmp_path_factory.mktemp("samples")
    return formatgen.write_samples(folder, bufsize=identifier.bufsize)


@pytest.fixture(scope="module")
def plain_fido():
    """FIDO's own class, configured as the command line configures it."""
    versions = get_local_versions(fido_pkg.CONFIG_DIR)
    return Fido(quiet=True, format_files=[versions.pronom_signature, versions.fido_extension_signature])


def buffers(fido, path):
    size = os.path.getsize(path)
    with open(path, "rb") as handle:
        head, tail, _ = fido.get_buffers(handle, size, seekable=True)
    return size, head, tail


# ---- parity with the `fido` command ------------------------------------------------------------
def test_generated_samples_match_fido_command(samples, identifier):
    expected = fido_view(formatgen.fido_cli_answers(samples))
    assert len(expected) == len(samples)
    ours = {}
    for path in samples:
        ident = identifier.identify_path(path)
        ours[os.path.normpath(str(path))] = (ident.puids, ident.method)
    assert ours == expected

    by_name = {Path(p).name: answer for p, answer in ours.items()}
    assert by_name["image.png"] == (("fmt/11",), "signature")
    assert by_name["doc.pdf"][0][0] == "fmt/18" and by_name["big.pdf"][0][0] == "fmt/18"
    assert by_name["edge-plus-one.pdf"][0][0] == "fmt/18"
    assert by_name["letter.docx"] == (("fmt/412",), "container")
    assert by_name["letter-named.zip"] == (("fmt/412",), "container")
    assert by_name["archive.zip"] == (("x-fmt/263",), "signature")
    assert by_name["broken-directory.zip"] == (("x-fmt/263",), "signature")
    assert by_name["png-named.txt"] == (("fmt/11",), "signature")
    assert by_name["empty.txt"][1] == "extension" and "x-fmt/111" in by_name["empty.txt"][0]
    for name in ("empty", "unknown", "unknown.qqq"):
        assert by_name[name] == ((), "none")


def test_format_corpus_matches_fido_command():
    """All real files of the shared corpus and every second DROID skeleton (one file per PRONOM
    signature); bench/bench_identify.py --shared compares every file."""
    everything = corpus_files()
    skeletons = [p for p in everything if "droid-test-skeletons" + os.sep in p]
    files = sorted(set(everything) - set(skeletons)) + skeletons[::2]
    expected = fido_view(formatgen.fido_cli_answers(files, processes=2))
    ours = {os.path.normpath(p): (ident.puids, ident.method) for p, ident in identify_paths(files, workers=2)}
    assert len(files) > 1500
    assert set(ours) == set(expected) == {os.path.normpath(p) for p in files}
    differ = {p: (expected[p], ours[p]) for p in expected if expected[p] != ours[p]}
    assert differ == {}
    methods = {method for _, method in ours.values()}
    assert methods == {"signature", "container", "extension", "none"}


# ---- the fast matcher is FIDO's matcher ----------------------------------------------------------
def test_fast_match_formats_equals_fido_match_formats(plain_fido, samples):
    """Full match lists (format and signature name, repeats included) on varied buffers."""
    fast = FastFido(cache_dir=None)
    rng = random.Random(7)
    skeletons = sorted((CORPUS / "droid-test-skeletons").rglob("*.*"))
    chosen = [str(p) for p in skeletons[1::20]] + [str(p) for p in samples]
    cases = []
    for path in chosen:
        _, head, tail = buffers(plain_fido, path)
        cases.append((head, tail))
        cut = rng.randint(0, len(head))
        cases.append((head[:cut], tail[len(tail) - cut:]))  # shortened: conditions near the edges
        cases.append((b"\x00" * 7 + head, tail + b"\x00"))  # shifted: anchored literals move
    cases += [(b"", b""), (b"\x89PNG", b"\x89PNG"), (b"%PDF-1.4", b"%%EOF")]

    def view(fido, matches):
        return [(fido.get_puid(fmt), name) for fmt, name in matches]

    for head, tail in cases:
        assert view(fast, fast.match_formats(head, tail)) == view(plain_fido, plain_fido.match_formats(head, tail))


def test_extension_matching_equals_fido(plain_fido):
    fast = FastFido(cache_dir=None)
    names = ["a.txt", "b.TXT", "c.pdf", "d.tar.gz", ".bashrc", "noext", "e.", "f.docx", "g.JPG",
             "folder.d/h", "x.zzzz", "y.htm"]
    for name in names:
        got = [(fast.get_puid(f), s) for f, s in fast.match_extensions(name)]
        want = [(plain_fido.get_puid(f), s) for f, s in plain_fido.match_extensions(name)]
        assert got == want, name


def test_literal_conditions_are_necessary_and_found():
    start = literal_conditions(rb"(?s)\A.{4}STAK\xff", "BOF")
    assert LiteralCondition("bof", "start", b"STAK\xff", 4, 4) in start
    ranged = literal_conditions(rb"(?s)\A.{0,128}<%@ Control", "BOF")
    assert LiteralCondition("bof", "start", b"<%@ Control", 0, 128) in ranged
    end = literal_conditions(rb"(?s)%%EOF.{0,16}\Z", "EOF")
    assert LiteralCondition("eof", "end", b"%%EOF", 0, 16) in end
    floating = literal_conditions(rb"(?s)abc.*def", "VAR")
    assert {c.run for c in floating} == {b"abc", b"def"} and {c.anchor for c in floating} == {"float"}
    # Nothing cheap is claimed where a literal is not required or not exact.
    assert literal_conditions(rb"(?s)\A(?:ab|cd)", "BOF") == []
    assert literal_conditions(rb"(?i)\Aabc", "BOF") == []
    assert literal_conditions(rb"(?s)\Aabc", "XYZ") == []


def test_prefilter_cache_gives_the_same_index(tmp_path):
    built = FastFido(cache_dir=str(tmp_path))
    written = list(tmp_path.glob("fido-prefilter-*.json"))
    assert len(written) == 1
    cached = FastFido(cache_dir=str(tmp_path))
    uncached = FastFido(cache_dir=None)
    for fido in (cached, uncached):
        assert fido._bof_exact == built._bof_exact
        assert fido._eof_exact == built._eof_exact
        assert fido._ranged_checks == built._ranged_checks
        assert fido._always == built._always
    written[0].write_text("[1, 2, 3]")  # damaged: ignored and rewritten
    again = FastFido(cache_dir=str(tmp_path))
    assert again._ranged_checks == built._ranged_checks
    assert json.loads(written[0].read_text()) != [1, 2, 3]


# ---- identify_buffers == identify_path -----------------------------------------------------------
def streamed_head_tail(path, keep, chunk=65536 + 3):
    """Head and tail as ingest builds them while copying: one pass, odd-sized chunks."""
    head, tail = b"", b""
    with open(path, "rb") as handle:
        while True:
            data = handle.read(chunk)
            if not data:
                break
            if len(head) < keep:
                head += data[: keep - len(head)]
            tail = (tail + data)[-keep:]
    return head, tail


def test_identify_buffers_equals_identify_path(samples, identifier):
    files = [str(p) for p in samples] + corpus_files()[::9]
    for path in files:
        head, tail = streamed_head_tail(path, identifier.bufsize)
        size = os.path.getsize(path)
        by_buffers = identifier.identify_buffers(os.path.basename(path), size, head, tail, path=path)
        assert by_buffers == identifier.identify_path(path), path


def test_identify_buffers_needs_path_only_for_containers(samples, identifier):
    docx = next(p for p in samples if p.name == "letter.docx")
    data = docx.read_bytes()
    with pytest.raises(ValueError, match="letter.docx"):
        identifier.identify_buffers("letter.docx", len(data), data, data)
    png = next(p for p in samples if p.name == "image.png").read_bytes()
    assert identifier.identify_buffers("x.png", len(png), png, png).puid == "fmt/11"
    with pytest.raises(ValueError, match="x.png"):  # head/tail not what fido would read
        identifier.identify_buffers("x.png", len(png) + 1, png, png)


def test_unreadable_container_falls_back_to_the_signature(tmp_path, identifier, caplog):
    """zipfile raises OSError here; `fido` prints an error and no answer, we keep the signature."""
    path = tmp_path / "odd.docx"
    path.write_bytes(formatgen.unreadable_directory_zip())
    ident = identifier.identify_path(path)
    assert (ident.puid, ident.method) == ("x-fmt/263", "signature")
    assert "odd.docx" in caplog.text
    assert formatgen.fido_cli_answers([path], processes=1) == {}


def test_versions_come_from_fido(identifier):
    conf = ET.parse(os.path.join(fido_pkg.CONFIG_DIR, "versions.xml")).getroot()
    assert identifier.signature_version == "v" + conf.findtext("pronomVersion")
    assert identifier.fido_version == fido_pkg.__version__
    banner = subprocess.run([formatgen.fido_command(), "-v"], capture_output=True, text=True).stdout
    assert f"FIDO v{identifier.fido_version} (" in banner
    assert identifier.signature_file in banner and identifier.container_signature_file in banner


def test_identify_paths_keeps_order_with_workers(samples):
    files = [str(p) for p in samples] * 3
    one = list(identify_paths(files, workers=1))
    two = list(identify_paths(files, workers=2))
    assert [p for p, _ in two] == files
    assert one == two


def test_identification_as_dict():
    ident = Identification("fmt/1", "n", "v", "m", "signature", ("fmt/2",), "1", "v1")
    row = ident.as_dict()
    assert row == {"puid": "fmt/1", "format_name": "n", "format_version": "v", "mime": "m",
                   "method": "signature", "alternatives": ["fmt/2"], "fido_version": "1",
                   "signature_version": "v1"}
    assert ident.puids == ("fmt/1", "fmt/2")


# ---- the command -----------------------------------------------------------------------------------
@pytest.fixture
def no_config(tmp_path, monkeypatch):
    """identify must work with no config file anywhere."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("STRONGROOM_CONFIG", str(tmp_path / "missing.yaml"))


def test_command_csv_rows(samples, no_config, capsys):
    folder = samples[0].parent
    assert cli.main(["identify", str(folder)]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert list(rows[0]) == ["path", "puid", "format_name", "format_version", "mime", "method",
                             "alternatives", "fido_version", "signature_version"]
    assert [r["path"] for r in rows] == sorted(str(p) for p in samples)
    expected = fido_view(formatgen.fido_cli_answers(samples))
    for row in rows:
        puids = ((row["puid"],) if row["puid"] else ()) + tuple(a for a in row["alternatives"].split(";") if a)
        assert (puids, row["method"]) == expected[os.path.normpath(row["path"])]
        assert row["fido_version"] == fido_pkg.__version__ and row["signature_version"].startswith("v")
    png = next(r for r in rows if r["path"].endswith("image.png"))
    assert (png["format_name"], png["mime"]) == ("Portable Network Graphics", "image/png")


def test_command_json_and_workers(samples, no_config, capsys):
    files = [str(p) for p in samples[:5]]
    assert cli.main(["--json", "--workers", "2", "identify", *files]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["path"] for r in rows] == files
    assert all(isinstance(r["alternatives"], list) for r in rows)
    assert rows[0]["puid"] == Identifier().identify_path(files[0]).puid


def test_command_options_after_the_command(samples, no_config, capsys):
    files = [str(p) for p in samples[:3]]
    assert cli.main(["identify", *files, "--json", "--workers", "2"]) == 0
    assert [r["path"] for r in json.loads(capsys.readouterr().out)] == files
    assert cli.main(["identify", files[0]]) == 0  # without them: CSV
    assert capsys.readouterr().out.startswith("path,puid,")


def test_command_missing_path_exits_2(tmp_path, no_config, capsys):
    missing = tmp_path / "not-there.pdf"
    assert cli.main(["identify", str(missing)]) == 2
    assert str(missing) in capsys.readouterr().err


def test_command_entry_point_with_awkward_names(samples, tmp_path):
    """The real entry point (`python -m pipelines`), from a folder without any config, on names
    with CSV metacharacters, Chinese, and bytes that are not UTF-8 (written back unchanged)."""
    png = next(p for p in samples if p.name == "image.png").read_bytes()
    folder = tmp_path / "in"
    folder.mkdir()
    names = [b'a,"b".png', "善本 1.png".encode("utf-8"), b"caf\xe9.png"]
    for name in names:
        with open(os.path.join(os.fsencode(folder), name), "wb") as out:
            out.write(png)
    done = subprocess.run([sys.executable, "-m", "pipelines", "identify", str(folder)], cwd=tmp_path,
                          capture_output=True,
                          env={**os.environ, "PYTHONPATH": str(REPO), "STRONGROOM_CONFIG": ""})
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(io.StringIO(done.stdout.decode("utf-8", "surrogateescape"))))
    assert sorted(os.fsencode(r["path"]) for r in rows) == sorted(
        os.path.join(os.fsencode(folder), n) for n in names)
    assert {r["puid"] for r in rows} == {"fmt/11"}


def test_worker_choice():
    from pipelines.commands.identify import PARALLEL_THRESHOLD, _usable_cpus, choose_workers

    assert choose_workers(3, 5) == 3  # an explicit --workers above 1 is obeyed
    assert choose_workers(1, PARALLEL_THRESHOLD - 1) == 1
    assert choose_workers(1, PARALLEL_THRESHOLD) == min(2, _usable_cpus())
