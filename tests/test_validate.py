"""The BagIt validator (ingest.validate) and `strongroom validate`.

Part 1 walks the Library of Congress BagIt conformance suite (../shared/conformance) case by
case. The expectation comes from bagit-conformance-expectations.csv (`expected`, `note`); the
suite encodes it only by folder name (PROVENANCE.md). What each category means here, on Linux:

  valid         the bag must be valid (warnings allowed: e.g. a './data/x' manifest path is
                tolerated with a warning, and the same spelling is a 'warning' case elsewhere).
  invalid       the bag must be invalid.
  warning       'valid-with-warning': valid, with at least one warning about the very thing
                the case is about (WHY below), e.g. a file listed twice with the same checksum
                in a 0.97 bag, an md5sum '*' marker, or - per the CSV note - a .DS_Store the
                manifest lists but git never kept (empty, so nothing is lost).
  linux-only    paths that escape the bag on POSIX ('/tmp/foo', '~/foo'): invalid here.
  windows-only  paths that escape the bag on Windows ('C:\\...', '%HomeDrive%\\...', UNC). On Linux
                they would merely be odd names, but bags travel between systems, so Strongroom
                refuses them everywhere: invalid here too (the CSV expects invalid).

Every invalid and warning case must also fail (or warn) for its own reason: WHY maps each to
the file and a phrase the problem must contain, so a case cannot pass by accident.

Part 2 builds bags with the project's own writer rules (strongroom.bagit_spec) and breaks them one
way at a time. Part 3 drives the CLI through pipelines.cli.main for exit codes 0/1/2.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import socket
import unicodedata
from pathlib import Path
from typing import Dict, Iterable

import bagit
import pytest

import ingest.validate as validate_module
from strongroom import bagit_spec as spec
from ingest.validate import Problem, require_valid, validate_bag
from pipelines.cli import main
from strongroom.errors import InputError, PreservationError

CONFORMANCE = Path(__file__).resolve().parents[2] / "shared" / "conformance"
SUITE = CONFORMANCE / "bagit-conformance-suite"

WHY: Dict[str, tuple] = {
    "v0.97/invalid/baginfo-missing-encoding": ("bagit.txt", "Tag-File-Character-Encoding"),
    "v0.97/invalid/bom-in-bagit.txt": ("bagit.txt", "byte-order mark"),
    "v0.97/invalid/corrupt-data-file": ("data/bare-filename", "md5 mismatch"),
    "v0.97/invalid/corrupt-tag-file": ("bag-info.txt", "md5 mismatch"),
    "v0.97/invalid/extra-file-in-bag": ("data/bar", "not listed in any payload manifest"),
    "v0.97/invalid/invalid-version-number": ("bagit.txt", "'.97' is not of the form M.N"),
    "v0.97/invalid/missing-baginfo": ("bag-info.txt", "is listed in tagmanifest-md5.txt but is not in the bag"),
    "v0.97/invalid/missing-bagit.txt": ("bagit.txt", "is missing"),
    "v0.97/invalid/out-of-scope-file-paths-using-dot-notation": ("manifest-md5.txt", "unsafe path '../../../README.md'"),
    "v0.97/invalid/out-of-scope-file-paths-using-dot-notation-for-fetch": ("fetch.txt", "unsafe path '../../../README.md'"),
    "v0.97/invalid/same-filename-listed-twice-with-different-hashes": ("manifest-sha256.txt", "different checksums"),
    "v0.97/linux-only/out-of-scope-file-paths-using-absolute-path": ("manifest-md5.txt", "absolute path"),
    "v0.97/linux-only/out-of-scope-file-paths-using-absolute-path-for-fetch": ("fetch.txt", "absolute path"),
    "v0.97/linux-only/out-of-scope-file-paths-using-shortcut": ("manifest-md5.txt", "'~/foo': starts with '~'"),
    "v0.97/linux-only/out-of-scope-file-paths-using-shortcut-for-fetch": ("fetch.txt", "starts with '~'"),
    "v0.97/linux-only/out-of-scope-file-paths-using-shortcut-username": ("manifest-md5.txt", "'~root/foo'"),
    "v0.97/linux-only/out-of-scope-file-paths-using-shortcut-username-for-fetch": ("fetch.txt", "'~root/foo'"),
    "v0.97/windows-only/out-of-scope-file-paths-using-absolute-path": ("manifest-md5.txt", "backslash"),
    "v0.97/windows-only/out-of-scope-file-paths-using-absolute-path-for-fetch": ("fetch.txt", "backslash"),
    "v0.97/windows-only/out-of-scope-file-paths-using-shortcut": ("manifest-md5.txt", "%HomeDrive%"),
    "v0.97/windows-only/out-of-scope-file-paths-using-shortcut-for-fetch": ("fetch.txt", "%HomeDrive%"),
    "v0.97/windows-only/out-of-scope-file-paths-using-unc": ("manifest-md5.txt", "UNC"),
    "v0.97/windows-only/out-of-scope-file-paths-using-unc-for-fetch": ("fetch.txt", "UNC"),
    "v0.97/warning/duplicate-file-with-different-case": ("manifest-sha512.txt", "differ only in letter case"),
    "v0.97/warning/made-with-md5sum-tools": ("manifest-md5.txt", "md5sum-style '*'"),
    "v0.97/warning/relative-path": ("manifest-sha512.txt", "'./data/hello.txt' is not in canonical form"),
    "v0.97/warning/same-filename-listed-twice-with-different-normalization":
        ("manifest-sha512.txt", "differ only in Unicode normalization"),
    "v0.97/warning/same-filename-listed-twice-with-the-same-hash": ("manifest-sha256.txt", "listed twice"),
    "v0.97/warning/special-system-files": ("data/.DS_Store", "operating-system metadata file"),
    "v1.0/invalid/bagit-with-invalid-whitespace": ("bagit.txt", "must read exactly 'BagIt-Version: 1.0'"),
    "v1.0/invalid/notAllManifestsListAllFiles": ("data/missingFromManifest.txt", "not listed"),
    "v1.0/invalid/same-filename-listed-twice-with-different-hashes": ("manifest-sha256.txt", "different checksums"),
    "v1.0/invalid/same-filename-listed-twice-with-the-same-hash":
        ("manifest-sha256.txt", "a BagIt 1.0 manifest lists each file once"),
}


def _cases():
    with open(CONFORMANCE / "bagit-conformance-expectations.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


CASES = _cases()


def test_expectations_cover_every_bag_in_the_suite():
    on_disk = {f"{p.parent.parent.name}/{p.parent.name}/{p.name}"
               for p in SUITE.glob("v*/*/*") if p.is_dir()}
    listed = {f"{c['suite_version_dir']}/{c['category']}/{c['bag']}" for c in CASES}
    assert on_disk == listed and len(listed) == 60


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c['suite_version_dir']}/{c['category']}/{c['bag']}")
def test_conformance_case(case):
    key = f"{case['suite_version_dir']}/{case['category']}/{case['bag']}"
    report = validate_bag(SUITE / key)
    expected, category = case["expected"], case["category"]
    assert category in ("valid", "invalid", "warning", "linux-only", "windows-only")
    if expected == "valid":
        assert report.valid, f"{key} ({case['note']}): {[str(p) for p in report.problems]}"
        return
    if expected == "valid-with-warning":
        assert report.valid, f"{key} ({case['note']}): {[str(p) for p in report.problems]}"
        findings = report.warnings
    else:
        assert expected.startswith("invalid"), expected
        assert not report.valid, f"{key} ({case['note']}) was accepted"
        findings = report.problems
    path, phrase = WHY[key]
    assert any(f.path == path and phrase in f.message for f in findings), \
        f"{key}: expected {path}: ...{phrase}... in {[str(f) for f in findings]}"
    if case["declared_BagIt-Version"] and not case["declared_BagIt-Version"].startswith("."):
        assert report.version == case["declared_BagIt-Version"].strip()


# ------------------------------------------------------------------ bags of our own

ALGS = ("sha256", "md5")


def build_bag(root: Path, files: Dict[str, bytes], algorithms: Iterable[str] = ALGS, version: str = "1.0",
              tag_manifests: bool = True) -> Path:
    """A bag written with the writer's rules (bagit_spec), digests computed here."""
    algorithms = list(algorithms)
    (root / "data").mkdir(parents=True)
    for rel, content in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(content)
    spec.write_bagit_txt(root, version)
    for alg in algorithms:
        spec.write_manifest(root / f"manifest-{alg}.txt",
                            [(rel, hashlib.new(alg, c).hexdigest()) for rel, c in files.items()], version)
    total = sum(len(c) for c in files.values())
    spec.write_tag_file(root / "bag-info.txt", [("Payload-Oxum", spec.payload_oxum(total, len(files))),
                                                ("Source-Organization", "测试图书馆")])
    if tag_manifests:
        spec.write_tag_manifests(root, algorithms, version)
    return root


def retag(bag: Path, algorithms=ALGS) -> None:
    """Refresh tag manifests after editing a tag file on purpose, so one break is tested at a time."""
    spec.write_tag_manifests(bag, algorithms)


def append_manifest_line(bag: Path, alg: str, line: str) -> None:
    with open(bag / f"manifest-{alg}.txt", "a", encoding="utf-8") as fh:
        fh.write(line)
    retag(bag)


def problems_of(report) -> Dict[str, list]:
    out: Dict[str, list] = {}
    for p in report.problems:
        out.setdefault(p.path, []).append(p.message)
    return out


@pytest.fixture
def hashed(monkeypatch):
    """Every path the validator opens to hash, so tests can prove what it never touched."""
    seen = []
    real = validate_module._digest_file

    def spy(path, algorithms):
        seen.append(Path(path))
        return real(path, algorithms)

    monkeypatch.setattr(validate_module, "_digest_file", spy)
    return seen


UNUSUAL = {
    "data/100% cotton.txt": b"cotton",
    "data/50%25 off.txt": b"literal percent-two-five",
    "data/line\nbreak.txt": b"LF",
    "data/carriage\rreturn.txt": b"CR",
    "data/古籍/善本 第1卷.tif": b"II*\x00 tiff bytes",
    "data/literal%0A.txt": b"not a newline",
}


def test_unusual_names_round_trip_as_rfc_8493_requires(tmp_path):
    bag = build_bag(tmp_path / "bag", UNUSUAL)
    report = validate_bag(bag)
    assert report.valid, report.problems
    assert report.warnings == []
    assert (report.version, report.encoding, report.algorithms) == ("1.0", "UTF-8", ["md5", "sha256"])
    assert (report.payload_files, report.payload_bytes) == (6, sum(map(len, UNUSUAL.values())))
    assert report.files_hashed == 6 + 4          # payload + bagit.txt, bag-info.txt, 2 manifests
    text = (bag / "manifest-sha256.txt").read_text("utf-8")
    for written in ("data/100%25 cotton.txt", "data/50%2525 off.txt", "data/line%0Abreak.txt",
                    "data/carriage%0Dreturn.txt", "data/古籍/善本 第1卷.tif", "data/literal%250A.txt"):
        assert f"  {written}\n" in text


def test_percent_written_unescaped_in_a_v1_bag_is_caught(tmp_path):
    """What bagit-python 1.9 writes: '%25' taken literally; RFC 8493 reads it as '%'."""
    bag = build_bag(tmp_path / "bag", {"data/ok.txt": b"ok"})
    (bag / "data" / "50%25 off.txt").write_bytes(b"x")
    digest = hashlib.sha256(b"x").hexdigest()
    append_manifest_line(bag, "sha256", f"{digest}  data/50%25 off.txt\n")
    found = problems_of(validate_bag(bag))
    assert any("is not in the bag" in m for m in found["data/50% off.txt"])
    assert any("not listed" in m for m in found["data/50%25 off.txt"])


def test_corrupted_file_names_file_and_each_algorithm(tmp_path):
    bag = build_bag(tmp_path / "bag", {"data/x.txt": b"original", "data/y.txt": b"fine"})
    (bag / "data" / "x.txt").write_bytes(b"ORIGINAL")          # same size: only digests can tell
    report = validate_bag(bag)
    assert not report.valid
    assert [p.path for p in report.problems] == ["data/x.txt", "data/x.txt"]
    good = hashlib.sha256(b"original").hexdigest()
    bad = hashlib.sha256(b"ORIGINAL").hexdigest()
    assert str(report.problems[1]) == \
        f"data/x.txt: sha256 mismatch (manifest-sha256.txt says {good}, file is {bad})"
    assert report.problems[0].message.startswith("md5 mismatch (manifest-md5.txt says")


def test_missing_extra_and_oxum(tmp_path):
    bag = build_bag(tmp_path / "bag", {"data/gone.txt": b"gone", "data/kept.txt": b"kept"})
    (bag / "data" / "gone.txt").unlink()
    (bag / "data" / "new.txt").write_bytes(b"surprise!")
    found = problems_of(validate_bag(bag))
    assert found["data/gone.txt"] == ["is listed in manifest-md5.txt, manifest-sha256.txt but is not in the bag"]
    assert found["data/new.txt"] == ["is in the payload but not listed in any payload manifest"]
    assert found["bag-info.txt"] == ["Payload-Oxum says 8 bytes in 2 files; the payload holds 13 bytes in 2 files"]
    assert set(found) == {"data/gone.txt", "data/new.txt", "bag-info.txt"}


def test_bad_payload_oxum_alone(tmp_path):
    bag = build_bag(tmp_path / "bag", {"data/a": b"abc"})
    spec.write_tag_file(bag / "bag-info.txt", [("Payload-Oxum", "4.1")])
    retag(bag)
    report = validate_bag(bag)
    assert [str(p) for p in report.problems] == \
        ["bag-info.txt: Payload-Oxum says 4 bytes in 1 files; the payload holds 3 bytes in 1 files"]
    spec.write_tag_file(bag / "bag-info.txt", [("Payload-Oxum", "three.1")])
    retag(bag)
    assert "not OctetCount.StreamCount" in str(validate_bag(bag).problems)


def test_every_problem_is_reported_not_only_the_first(tmp_path, hashed):
    outside = tmp_path / "secret.txt"
    outside.write_bytes(b"outside the bag")
    bag = build_bag(tmp_path / "bag", {"data/a": b"a", "data/b": b"b", "data/c": b"c"})
    (bag / "data" / "a").write_bytes(b"A")
    (bag / "data" / "b").unlink()
    (bag / "data" / "d").write_bytes(b"d")
    good = hashlib.sha256(b"outside the bag").hexdigest()
    append_manifest_line(bag, "sha256", f"{good}  data/../../secret.txt\n{good}  {outside}\n")
    report = validate_bag(bag)
    found = problems_of(report)
    assert {"data/a", "data/b", "data/d", "manifest-sha256.txt"} <= set(found)
    unsafe = found["manifest-sha256.txt"]
    assert any("line 4: unsafe path 'data/../../secret.txt'" in m and "'..'" in m for m in unsafe)
    assert any(f"line 5: unsafe path '{outside}': is an absolute path" in m for m in unsafe)
    assert all(bag in p.parents for p in hashed), hashed          # nothing outside was opened
    assert outside not in hashed


def test_fetch_txt_missing_file_is_reported_without_any_network(tmp_path, monkeypatch):
    def no_network(*a, **k):
        raise AssertionError("the validator tried to use the network")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    bag = build_bag(tmp_path / "bag", {"data/here.txt": b"here", "data/remote.bin": b"remote"})
    (bag / "data" / "remote.bin").unlink()
    (bag / "fetch.txt").write_text("http://example.org/remote.bin 6 data/remote.bin\n"
                                   "http://example.org/here.txt - data/here.txt\n", encoding="utf-8")
    retag(bag)
    report = validate_bag(bag)
    assert problems_of(report)["data/remote.bin"] == [
        "is not in the bag: fetch.txt lists it at http://example.org/remote.bin; "
        "Strongroom never fetches, so the bag is incomplete"]
    assert set(problems_of(report)) == {"data/remote.bin", "bag-info.txt"}   # + the Oxum it breaks
    (bag / "data" / "remote.bin").write_bytes(b"remote")                      # fetched by someone else
    assert validate_bag(bag).valid


def test_fetch_txt_entries_must_be_payload_files_in_every_manifest(tmp_path):
    bag = build_bag(tmp_path / "bag", {"data/a": b"a"})
    (bag / "fetch.txt").write_text("https://x.org/b 1 data/b\nhttps://x.org/i 1 bag-info.txt\n"
                                   "not-a-url 1 data/a\nhttps://x.org/a ten data/a\n", encoding="utf-8")
    retag(bag)
    messages = problems_of(validate_bag(bag))["fetch.txt"]
    assert any("line 2: 'bag-info.txt' is not a payload file" in m for m in messages)
    assert any("line 3: 'not-a-url' is not an absolute URL" in m for m in messages)
    assert any("line 4: length 'ten'" in m for m in messages)
    assert any("line 1: data/b is not listed in manifest-md5.txt" in m for m in messages)


def test_symlink_in_payload_is_reported_and_not_followed(tmp_path, hashed):
    secret = tmp_path / "outside.txt"
    secret.write_bytes(b"top secret")
    (tmp_path / "outside-dir").mkdir()
    (tmp_path / "outside-dir" / "f").write_bytes(b"f")
    # The manifest even has the right digest for the target: following the link would "pass".
    bag = build_bag(tmp_path / "bag", {"data/real.txt": b"real", "data/link.txt": b"top secret"})
    (bag / "data" / "link.txt").unlink()
    (bag / "data" / "link.txt").symlink_to(secret)
    (bag / "data" / "linkdir").symlink_to(tmp_path / "outside-dir", target_is_directory=True)
    report = validate_bag(bag)
    found = problems_of(report)
    assert found["data/link.txt"] == [f"is a symbolic link (to '{secret}'); a bag holds regular files only; "
                                      "not followed"]
    assert "data/linkdir" in found and "data/linkdir/f" not in found
    assert bag / "data" / "link.txt" not in hashed and secret not in hashed
    assert bag / "data" / "real.txt" in hashed


def test_special_file_in_payload_is_reported_not_read(tmp_path):
    bag = build_bag(tmp_path / "bag", {"data/a": b"a"})
    os.mkfifo(bag / "data" / "pipe")                # opening it for reading would block forever
    assert problems_of(validate_bag(bag))["data/pipe"] == [
        "is a special file (device, FIFO or socket), not a regular file"]


def test_tag_file_damage_and_missing_tag_file(tmp_path):
    bag = build_bag(tmp_path / "bag", {"data/a": b"a"})
    (bag / "metadata").mkdir()
    (bag / "metadata" / "premis.xml").write_bytes(b"<premis/>")
    retag(bag)
    (bag / "metadata" / "premis.xml").write_bytes(b"<premis>changed</premis>")
    found = problems_of(validate_bag(bag))
    assert [m.split(" (")[0] for m in found["metadata/premis.xml"]] == ["md5 mismatch", "sha256 mismatch"]
    (bag / "metadata" / "premis.xml").unlink()
    assert problems_of(validate_bag(bag))["metadata/premis.xml"] == [
        "is listed in tagmanifest-md5.txt, tagmanifest-sha256.txt but is not in the bag"]


def test_completeness_only_skips_payload_digests_but_not_tag_digests(tmp_path, hashed):
    bag = build_bag(tmp_path / "bag", {"data/a": b"aaaa", "data/b": b"bbbb"})
    (bag / "data" / "a").write_bytes(b"AAAA")
    fast = validate_bag(bag, completeness_only=True)
    assert fast.valid and fast.completeness_only
    assert all(p.parent == bag for p in hashed) and fast.files_hashed == 4    # tag files only
    assert problems_of(validate_bag(bag)).keys() == {"data/a"}
    with open(bag / "bag-info.txt", "a", encoding="utf-8") as fh:
        fh.write("Note: edited after tagging\n")
    assert "bag-info.txt" in problems_of(validate_bag(bag, completeness_only=True))
    (bag / "data" / "b").unlink()
    assert "data/b" in problems_of(validate_bag(bag, completeness_only=True))


def test_two_workers_find_the_same_problems(tmp_path):
    files = {f"data/d{i % 5}/f{i:03d}.bin": os.urandom(i * 37 % 5000) for i in range(60)}
    bag = build_bag(tmp_path / "bag", files)
    for rel in ("data/d0/f005.bin", "data/d3/f033.bin", "data/d4/f059.bin"):
        (bag / rel).write_bytes(b"damaged")
    one = validate_bag(bag, processes=1)
    two = validate_bag(bag, processes=2)
    assert one.problems == two.problems and len(one.problems) > 3
    assert {p.path for p in one.problems} >= {"data/d0/f005.bin", "data/d3/f033.bin", "data/d4/f059.bin"}
    assert (one.files_hashed, one.bytes_hashed) == (two.files_hashed, two.bytes_hashed)


def test_duplicate_entries_invalid_in_v1_warning_before(tmp_path):
    for version, valid in (("1.0", False), ("0.97", True)):
        bag = build_bag(tmp_path / version, {"data/a": b"a"}, version=version)
        append_manifest_line(bag, "md5", f"{hashlib.md5(b'a').hexdigest()}  data/a\n")
        report = validate_bag(bag)
        assert report.valid is valid
        findings = report.warnings if valid else report.problems
        assert any(f.path == "manifest-md5.txt" and "listed twice" in f.message for f in findings)


def test_unicode_normalization_difference_is_matched_with_a_warning(tmp_path):
    nfc = unicodedata.normalize("NFC", "data/Núñez.txt")
    nfd = unicodedata.normalize("NFD", nfc)
    bag = build_bag(tmp_path / "bag", {nfc: b"n"})
    os.rename(bag / nfc, bag / nfd)                  # what a copy onto a normalizing file system does
    report = validate_bag(bag)
    assert report.valid, report.problems
    assert [w.path for w in report.warnings] == [nfd]
    assert "Unicode normalization" in report.warnings[0].message


def test_case_variant_missing_in_v1_is_a_problem(tmp_path):
    bag = build_bag(tmp_path / "bag", {"data/hello.txt": b"hi"})
    for alg in ALGS:
        append_manifest_line(bag, alg, f"{hashlib.new(alg, b'hi').hexdigest()}  data/HELLO.txt\n")
    found = problems_of(validate_bag(bag))
    assert any("differ only in letter case" in m for m in found["manifest-md5.txt"])


def test_pre_v1_literal_percent_names_still_match(tmp_path):
    """0.97 escaped nothing: 'data/a%0Ab' in its manifest may be that literal name."""
    bag = build_bag(tmp_path / "bag", {"data/a%0Ab": b"x"}, version="0.97")
    assert (bag / "manifest-md5.txt").read_text().endswith("  data/a%0Ab\n")
    assert validate_bag(bag).valid


def test_name_that_is_not_utf8_is_a_problem(tmp_path):
    bag = build_bag(tmp_path / "bag", {"data/a": b"a"})
    with open(os.path.join(os.fsencode(bag / "data"), b"caf\xe9.txt"), "wb") as fh:
        fh.write(b"latin-1 name")
    found = problems_of(validate_bag(bag))
    assert found["data/caf\\xe9.txt"] == ["the name is not valid UTF-8, so no manifest can list it"]


def test_bom_and_blank_lines_are_warnings(tmp_path):
    bag = build_bag(tmp_path / "bag", {"data/a": b"a"})
    info = bag / "bag-info.txt"
    info.write_bytes(b"\xef\xbb\xbf" + info.read_bytes() + b"\n")
    retag(bag)
    report = validate_bag(bag)
    assert report.valid, report.problems
    assert {w.path for w in report.warnings} == {"bag-info.txt"}
    assert any("byte-order mark" in w.message for w in report.warnings)


def test_structure_problems(tmp_path):
    bag = tmp_path / "empty"
    bag.mkdir()
    found = problems_of(validate_bag(bag))
    assert set(found) == {"bagit.txt", "data/", "manifest-<algorithm>.txt"}


def test_bag_made_by_bagit_python_is_valid(tmp_path):
    src = tmp_path / "bp"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "x.txt").write_bytes(b"x" * 1000)
    (src / "古籍.txt").write_bytes("善本".encode())
    bagit.make_bag(str(src), checksums=["sha256", "sha512"])
    report = validate_bag(src, processes=2)
    assert report.valid, report.problems
    assert report.version == "0.97" and report.payload_files == 2


def test_not_a_bag_folder_is_an_input_error(tmp_path):
    with pytest.raises(InputError) as info:
        validate_bag(tmp_path / "nope")
    assert info.value.exit_code == 2 and "nope" in str(info.value)
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(InputError, match="not a directory"):
        validate_bag(tmp_path / "file")


def test_require_valid(tmp_path):
    bag = build_bag(tmp_path / "bag", {"data/a": b"a"})
    assert require_valid(bag).valid
    (bag / "data" / "a").write_bytes(b"b")
    with pytest.raises(PreservationError) as info:
        require_valid(bag, processes=2)
    assert info.value.exit_code == 1
    assert all(isinstance(p, Problem) and p.path == "data/a" for p in info.value.problems)
    assert len(info.value.problems) == 2


# ------------------------------------------------------------------ the command line

def test_cli_exit_codes_and_output(tmp_path, capsys):
    bag = build_bag(tmp_path / "bag", UNUSUAL)
    assert main(["validate", str(bag)]) == 0
    assert capsys.readouterr().out.startswith(f"valid: {bag} (BagIt 1.0")

    (bag / "data" / "100% cotton.txt").write_bytes(b"COTTON")
    (bag / "data" / "line\nbreak.txt").unlink()
    assert main(["validate", str(bag)]) == 1
    out = capsys.readouterr().out
    assert out.startswith(f"INVALID: {bag}")
    assert "  - data/100% cotton.txt: md5 mismatch" in out
    assert "  - data/100% cotton.txt: sha256 mismatch" in out
    assert "  - data/line\\nbreak.txt: is listed in manifest-md5.txt, manifest-sha256.txt but is not in the bag" in out

    assert main(["validate", str(tmp_path / "no-such-bag")]) == 2
    assert "no-such-bag: does not exist" in capsys.readouterr().err
    assert main(["validate", str(bag / "bagit.txt")]) == 2
    assert "not a directory" in capsys.readouterr().err


def test_cli_json_and_fast(tmp_path, capsys):
    bag = build_bag(tmp_path / "bag", {"data/a.txt": b"aaaa"})
    (bag / "data" / "a.txt").write_bytes(b"AAAA")
    for argv in (["validate", str(bag), "--json"], ["--json", "validate", str(bag)]):
        assert main(argv) == 1
        doc = json.loads(capsys.readouterr().out)
        assert doc["valid"] is False and doc["version"] == "1.0" and doc["bag"] == str(bag)
        assert {p["path"] for p in doc["problems"]} == {"data/a.txt"}
        assert all("mismatch" in p["message"] for p in doc["problems"])
    assert main(["validate", "--fast", str(bag)]) == 0
    assert "completeness only" in capsys.readouterr().out
    assert main(["--workers", "2", "validate", "--completeness-only", "--json", str(bag)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["valid"] is True and doc["completeness_only"] is True and doc["problems"] == []
