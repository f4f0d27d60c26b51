"""Hostile tag files: restore, catalog rebuild and validate never crash, and say where the problem is.

A stored bag is untrusted input by the time it is read back. Every field of its tag files is
parsed strictly (strongroom.bagit_spec's field parsers: ASCII digits only - Python's int() also
takes Arabic-Indic digits -, ranges checked, lines <= 64 KiB, CSV fields <= 8 KiB); a field
that breaks that is a TagFileError (a PreservationError, exit 1) naming the bag, the file and
the line. A hostile tag file on one replica makes restore take the next replica's tag files.
`validate` reports unknown or non-text encodings, UTF-16 without BOM, '1.0.0' versions and
folders nested 1,100 deep as problems of the bag, never as tracebacks.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from catalog.bag_records import folder_reader, records_from_bag
from catalog.catalog import Catalog
from ingest import metadata
from strongroom import bagit_spec
from strongroom.bagit_spec import FieldError, TagFileError
from strongroom.bag_id import BagId
from pipelines.cli import main
from policies.config import load_config, write_default_config
from strongroom.errors import PreservationError

ATTR = "metadata/file-attributes.csv"
HEADER = "path,size,mtime_ns,mtime_utc\r\n"
ARABIC_123 = "\u0661\u0662\u0663"            # '١٢٣': int() reads it as 123
GOOD_ROW = "data/b.txt,3,1600000000000000000,2020-09-13T12:26:40Z\r\n"

#: name -> (file-attributes.csv content, phrase the error must hold, line it must name)
HOSTILE = {
    "arabic-digits": (HEADER + f"data/a.txt,5,{ARABIC_123},x\r\n" + GOOD_ROW, "ASCII digits", 2),
    "beyond-time_t": (HEADER + GOOD_ROW + f"data/a.txt,5,{2 ** 63 * 10 ** 9},x\r\n", "out of range", 3),
    "200-KB-field": (HEADER + "data/a.txt,5,1," + "x" * 200_000 + "\r\n" + GOOD_ROW, "characters long", 2),
}


def _hostile_bytes(kind: str) -> bytes:
    return HOSTILE[kind][0].encode("utf-8")


# ------------------------------------------------------------------ the strict field parsers


@pytest.mark.parametrize("text", [ARABIC_123, "\u0663", "\uff11", "+1", "1_000", " 1", "1 ", "", "0x10", "1e3",
                                  "1" * 65, "²"])
def test_whole_numbers_are_ascii_digits_only(text):
    with pytest.raises(FieldError):
        bagit_spec.parse_int(text, "size")
    with pytest.raises(FieldError):
        bagit_spec.parse_uint(text, "size")


def test_whole_numbers_are_range_checked():
    assert bagit_spec.parse_int("-5", "t") == -5 and bagit_spec.parse_uint("0", "s") == 0
    assert bagit_spec.parse_uint(str(2 ** 63 - 1), "s") == 2 ** 63 - 1
    for bad in (str(2 ** 63), "-1"):
        with pytest.raises(FieldError, match="out of range|negative"):
            bagit_spec.parse_uint(bad, "size")
    with pytest.raises(FieldError, match="out of range"):
        bagit_spec.parse_int(str(-(2 ** 63) - 1), "mtime_ns")


def test_payload_oxum_bag_count_and_version_take_ascii_digits_only():
    assert bagit_spec.parse_payload_oxum("12.3") == (12, 3)
    for bad in (f"{ARABIC_123}.1", "1.\u0661", f"{2 ** 63}.1", "1" * 70 + ".1"):
        with pytest.raises(ValueError):
            bagit_spec.parse_payload_oxum(bad)
    assert bagit_spec.parse_bag_count("2 of 3") == (2, 3) and bagit_spec.parse_bag_count("1 of ?") == (1, None)
    for bad in ("\u0661 of \u0662", "3 of 2", "0 of 1", "one of two", "1of2"):
        with pytest.raises(FieldError):
            bagit_spec.parse_bag_count(bad)
    with pytest.raises(ValueError):
        bagit_spec.parse_version("\u0661.\u0660")


def test_only_text_encodings_are_tag_file_encodings():
    assert bagit_spec.is_text_encoding("UTF-8") and bagit_spec.is_text_encoding("ISO-8859-1")
    assert bagit_spec.is_text_encoding("utf-16")
    for name in ("base64", "rot13", "zlib", "hex", "no-such-codec"):
        assert not bagit_spec.is_text_encoding(name)


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_file_attributes_csv_is_read_strictly_naming_file_and_line(kind):
    content, phrase, line = HOSTILE[kind]
    with pytest.raises(TagFileError) as caught:
        metadata.read_file_attributes(content.encode("utf-8"), where="LIB/COLL/X-1 on site-a")
    err = caught.value
    assert isinstance(err, PreservationError) and not isinstance(err, ValueError)
    assert err.file == ATTR and err.line == line and phrase in str(err)
    assert str(err).startswith(f"LIB/COLL/X-1 on site-a: {ATTR} line {line}: ")


@pytest.mark.parametrize("content, phrase, line", [
    # a quoted field spanning many short lines: csv's own field_size_limit (128 KiB) raises csv.Error
    (HEADER + 'data/a.txt,5,1,"' + ("y" * 1000 + "\n") * 200 + '"\r\n', "not valid CSV", 2),
    (HEADER + "data/a.txt,5,1," + "z" * 9000 + "\r\n", "9000 characters long", 2),
    (HEADER + "data/a.txt,5\r\n", "has 2 fields", 2),
    (HEADER + "data/a.txt,5,1,x\r\ndata/a.txt,5,1,x\r\n", "listed again", 3),
    (HEADER + "../../etc/passwd,5,1,x\r\n", "'..'", 2),
    ("path,size\r\n", "lacks mtime_ns", 1),
])
def test_other_malformed_csv_is_a_tag_file_error(content, phrase, line):
    with pytest.raises(TagFileError) as caught:
        metadata.read_file_attributes(content.encode("utf-8"))
    assert caught.value.line == line and phrase in str(caught.value)


def test_bytes_that_are_not_utf8_name_their_line():
    with pytest.raises(TagFileError, match=r"line 3: is not valid UTF-8"):
        metadata.read_formats(b"path,size\r\ndata/a,1\r\ndata/\xff,2\r\n")


# ------------------------------------------------------------------ an archive with two bags


@pytest.fixture(scope="module")
def deposited(tmp_path_factory):
    base = tmp_path_factory.mktemp("hostile")
    cfg = write_default_config(base / "archive")
    for coll in ("ONE", "TWO"):
        src = base / f"source-{coll}"
        src.mkdir()
        (src / "a.txt").write_bytes(b"alpha")
        (src / "b.txt").write_bytes(b"bee")
        assert main(["--config", str(cfg), "deposit", str(src), "--library", "LIB", "--collection", coll,
                     "--type", "self-built"]) == 0
    bags = sorted(Catalog(load_config(cfg).catalog).bags().column("bag_id").to_pylist())
    assert len(bags) == 2
    return base / "archive", bags


class Archive:
    def __init__(self, folder: Path, bags):
        self.folder = folder
        self.cfg = folder / "strongroom.yaml"
        self.config = load_config(self.cfg)
        self.bags = bags

    @property
    def catalog(self) -> Catalog:
        return Catalog(self.config.catalog)

    def bag_dir(self, target: str, bag: str) -> Path:
        return Path(self.config.target(target).root).joinpath(*bag.split("/"))

    def rewrite(self, target: str, bag: str, relpath: str, data: bytes) -> None:
        """Replace a tag file on a replica and mend its tag manifests, so only the content is hostile."""
        bag_dir = self.bag_dir(target, bag)
        p = bag_dir / relpath
        p.chmod(0o644)
        p.write_bytes(data)
        for alg in ("sha256", "md5"):
            m = bag_dir / f"tagmanifest-{alg}.txt"
            if not m.exists():
                continue
            m.chmod(0o644)
            digest = hashlib.new(alg, data).hexdigest()
            m.write_text("".join(f"{digest}  {relpath}\n" if line.endswith("  " + relpath) else line + "\n"
                                 for line in m.read_text("utf-8").splitlines()), "utf-8")

    def run(self, capsys, *argv):
        code = main(["--config", str(self.cfg), "--json", *argv])
        out, err = capsys.readouterr()
        return code, (json.loads(out) if out.strip() else None), err


@pytest.fixture
def archive(deposited, tmp_path):
    folder, bags = deposited
    copy = tmp_path / "archive"
    shutil.copytree(folder, copy, symlinks=True)
    return Archive(copy, bags)


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_records_from_a_hostile_bag_raise_a_tag_file_error(archive, kind):
    bag = archive.bags[0]
    archive.rewrite("site-a", bag, ATTR, _hostile_bytes(kind))
    where = str(archive.bag_dir("site-a", bag))
    with pytest.raises(TagFileError) as caught:
        records_from_bag(folder_reader(where), BagId.parse(bag), where)
    assert str(caught.value).startswith(f"{where}: {ATTR} line {HOSTILE[kind][2]}: ")


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_restore_takes_the_tag_files_of_the_next_good_replica(archive, tmp_path, capsys, kind):
    bag = archive.bags[0]
    archive.rewrite("site-a", bag, ATTR, _hostile_bytes(kind))
    dest = tmp_path / "restored"
    code, out, err = archive.run(capsys, "restore", bag, str(dest))
    assert code == 0, err
    assert out["tag_source"] == "site-b"
    assert (dest / ATTR).read_bytes() == (archive.bag_dir("site-b", bag) / ATTR).read_bytes()
    assert any(ATTR in p and f"line {HOSTILE[kind][2]}" in p for p in out["damaged_replicas"]["site-a"])
    assert archive.catalog.replica(bag, "site-a").state == "damaged"
    assert archive.catalog.replica(bag, "site-b").state == "verified"
    assert os.stat(dest / "data" / "b.txt").st_mtime_ns == \
        metadata.read_file_attributes((dest / ATTR).read_bytes())["data/b.txt"].mtime_ns


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_restore_with_hostile_tag_files_everywhere_fails_cleanly(archive, tmp_path, capsys, kind):
    bag = archive.bags[0]
    for target in ("site-a", "site-b"):
        archive.rewrite(target, bag, ATTR, _hostile_bytes(kind))
    dest = tmp_path / "never"
    code = main(["--config", str(archive.cfg), "restore", bag, str(dest)])
    out, err = capsys.readouterr()
    assert code == 1
    assert "Traceback" not in err and ATTR in err and f"line {HOSTILE[kind][2]}" in err
    assert sorted(os.listdir(tmp_path)) == ["archive"]   # no DEST, no temporary folder, no lock


def test_catalog_rebuild_registers_the_good_bag_and_names_the_hostile_one(archive, capsys):
    hostile, good = archive.bags
    for target in ("site-a", "site-b"):
        archive.rewrite(target, hostile, ATTR, _hostile_bytes("200-KB-field"))
    shutil.rmtree(archive.config.catalog)
    code = main(["--config", str(archive.cfg), "catalog", "rebuild"])
    out, err = capsys.readouterr()
    assert code == 1, out + err
    assert "Traceback" not in err and f"{ATTR} line 2" in out + err
    catalog = archive.catalog
    assert catalog.bag(good) is not None and len(catalog.file_records(good)) == 2


@pytest.mark.parametrize("kind", ["arabic-digits", "beyond-time_t"])
def test_catalog_rebuild_never_dies_on_hostile_numbers(archive, capsys, kind):
    bag = archive.bags[0]
    for target in ("site-a", "site-b"):
        archive.rewrite(target, bag, ATTR, _hostile_bytes(kind))
    shutil.rmtree(archive.config.catalog)
    code = main(["--config", str(archive.cfg), "catalog", "rebuild"])
    out, err = capsys.readouterr()
    assert code == 1 and "Traceback" not in err
    assert f"{ATTR} line {HOSTILE[kind][2]}" in out + err


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_validate_checks_the_metadata_of_a_strongroom_bag_strictly(archive, capsys, kind):
    bag = archive.bags[0]
    archive.rewrite("site-a", bag, ATTR, _hostile_bytes(kind))
    code, report, err = _validate(capsys, archive.bag_dir("site-a", bag))
    assert code == 1
    assert [p["message"].split(":")[0] for p in report["problems"] if p["path"] == ATTR] == \
        [f"line {HOSTILE[kind][2]}"]
    assert report["problems"][0]["path"] == ATTR and len(report["problems"]) == 1
    assert _validate(capsys, archive.bag_dir("site-b", bag))[0] == 0


# ------------------------------------------------------------------ validate


def _bag(root: Path, *, encoding: str = "UTF-8", version: str = "1.0", depth: int = 0,
         info: str = "Payload-Oxum: 2.1\n", fetch: str = "") -> Path:
    """A small bag; `depth` nests its one payload file that many folders deep (made without recursion)."""
    (root / "data").mkdir(parents=True)
    fd = os.open(root / "data", os.O_RDONLY)
    for _ in range(depth):
        os.mkdir("d", dir_fd=fd)
        inner = os.open("d", os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = inner
    out = os.open("f.txt", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
    os.write(out, b"x\n")
    os.close(out)
    os.close(fd)
    rel = "data/" + "d/" * depth + "f.txt"
    (root / "bagit.txt").write_text(f"BagIt-Version: {version}\nTag-File-Character-Encoding: {encoding}\n")
    (root / "manifest-sha256.txt").write_text(f"{hashlib.sha256(b'x' + bytes([10])).hexdigest()}  {rel}\n")
    (root / "bag-info.txt").write_text(info, "utf-8")
    if fetch:
        (root / "fetch.txt").write_text(fetch, "utf-8")
    return root


def _validate(capsys, bag: Path):
    code = main(["validate", "--json", str(bag)])
    out, err = capsys.readouterr()
    return code, json.loads(out), err


@pytest.mark.parametrize("encoding", ["base64", "rot13", "zlib", "no-such-codec"])
def test_validate_an_encoding_that_is_not_text_is_an_invalid_bag(tmp_path, capsys, encoding):
    code, report, err = _validate(capsys, _bag(tmp_path / "b", encoding=encoding))
    assert code == 1 and not report["valid"]
    assert any(p["path"] == "bagit.txt" and encoding in p["message"] for p in report["problems"]), report


def test_validate_utf16_without_byte_order_mark_is_an_invalid_bag(tmp_path, capsys):
    code, report, err = _validate(capsys, _bag(tmp_path / "b", encoding="utf-16"))
    assert code == 1
    assert any(p["path"] == "manifest-sha256.txt" and "utf-16" in p["message"] and "BOM" in p["message"]
               for p in report["problems"]), report


@pytest.fixture
def deep_tmp(tmp_path):
    """tmp_path, emptied afterwards by rm -rf: pytest's own clean-up (shutil.rmtree on Python 3.11)
    dies with RecursionError on a tree 1,100 folders deep, in a later session."""
    yield tmp_path
    subprocess.run(["rm", "-rf", "--", str(tmp_path / "b")], check=False)
    assert not (tmp_path / "b").exists()


def test_validate_walks_1100_nested_folders(deep_tmp, capsys):
    tmp_path = deep_tmp
    code, report, err = _validate(capsys, _bag(tmp_path / "b", depth=1100))
    assert code == 0, report["problems"]
    assert report["payload_files"] == 1 and report["files_hashed"] == 1


def test_validate_tag_files_nested_deep_are_walked_too(deep_tmp):
    tmp_path = deep_tmp
    bag = _bag(tmp_path / "b")
    deep = bag / "metadata"
    deep.mkdir()
    fd = os.open(deep, os.O_RDONLY)
    for _ in range(1100):
        os.mkdir("m", dir_fd=fd)
        inner = os.open("m", os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = inner
    out = os.open("note.txt", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
    os.write(out, b"n")
    os.close(out)
    os.close(fd)
    files = bagit_spec.tag_files(bag)
    assert len(files) == 4 and files[-1].endswith("/note.txt")


def test_validate_bagit_version_1_0_0_is_refused_with_a_clear_message(tmp_path, capsys):
    code, report, err = _validate(capsys, _bag(tmp_path / "b", version="1.0.0"))
    assert code == 1
    (problem,) = [p for p in report["problems"] if p["path"] == "bagit.txt"]
    assert "'1.0.0'" in problem["message"] and "BagIt-Version: 1.0" in problem["message"]


def test_validate_payload_oxum_in_arabic_indic_digits_is_a_problem(tmp_path, capsys):
    code, report, err = _validate(capsys, _bag(tmp_path / "b", info="Payload-Oxum: \u0662.\u0661\n"))
    assert code == 1
    assert any(p["path"] == "bag-info.txt" and "Payload-Oxum" in p["message"] for p in report["problems"])


def test_validate_fetch_length_in_other_digits_is_a_problem_not_a_crash(tmp_path, capsys):
    bag = _bag(tmp_path / "b", fetch="https://example.org/f \u00b2 data/f.txt\n")
    code, report, err = _validate(capsys, bag)
    assert code == 1
    assert any(p["path"] == "fetch.txt" and "length" in p["message"] for p in report["problems"])


def test_validate_a_line_longer_than_64_KiB_is_a_problem(tmp_path, capsys):
    bag = _bag(tmp_path / "b", info="Payload-Oxum: 2.1\nExternal-Description: " + "w" * 70_000 + "\n")
    code, report, err = _validate(capsys, bag)
    assert code == 1
    assert any(p["path"] == "bag-info.txt" and "longer than 65536" in p["message"] for p in report["problems"])


def test_remove_tree_needs_no_recursion(tmp_path):
    """What restore cleans up with: a tree 1,100 folders deep, a symlink that must not be followed."""
    from fixity.restore import remove_tree

    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("keep")
    top = tmp_path / "b"
    top.mkdir()
    fd = os.open(top, os.O_RDONLY)
    for _ in range(1100):
        os.mkdir("d", dir_fd=fd)
        inner = os.open("d", os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = inner
    os.symlink(outside, "link", dir_fd=fd)
    os.close(fd)
    remove_tree(top)
    assert not top.exists() and (outside / "keep.txt").read_text() == "keep"


# ------------------------------------------------------------------ line ends, bagit.txt, required fields
# (found by tests/test_properties.py and tests/test_fuzz_parsers.py)

def _cr_only(data: bytes) -> bytes:
    """The same text with bare CR line ends (RFC 8493 allows LF, CRLF and CR)."""
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r")


@pytest.mark.parametrize("raw", [b"", b"a", b"a\n", b"a\n\n", b"a\rb\r\nc\n\nd", b"\xef\xbb\xbfa\r\r",
                                 b"X: 1\r  two\r\n  three\rY: 2\r", "善本\u2028x\x0cy\r".encode()])
def test_split_lines_gives_the_lines_the_validator_reads(tmp_path, raw):
    """Readers of bytes (bag_records, rebuild) and the validator (iter_lines, on a path) split alike."""
    p = tmp_path / "t.txt"
    p.write_bytes(raw)
    assert list(bagit_spec.split_lines(raw, "t.txt")) == list(bagit_spec.iter_lines(p))


def test_split_lines_names_the_line_of_bad_bytes_and_of_a_long_line():
    with pytest.raises(TagFileError) as caught:
        list(bagit_spec.split_lines(b"a\rb\r\xff", "bag-info.txt", "BAG"))
    assert str(caught.value).startswith("BAG: bag-info.txt line 3: is not valid UTF-8")
    with pytest.raises(TagFileError, match="line 2: the line is 65537 characters long"):
        list(bagit_spec.split_lines(b"a\r" + b"x" * (bagit_spec.MAX_LINE_CHARS + 1), "m.txt"))


CR_FILES = ("bagit.txt", "bag-info.txt", "manifest-sha256.txt", "manifest-md5.txt", ATTR, "metadata/formats.csv")


def _make_cr_only(archive, target: str, bag: str) -> None:
    """Every tag file of the copy with CR line ends, tag manifests included (and agreeing)."""
    bag_dir = archive.bag_dir(target, bag)
    for rel in CR_FILES:
        if (bag_dir / rel).exists():
            archive.rewrite(target, bag, rel, _cr_only((bag_dir / rel).read_bytes()))
    for m in bag_dir.glob("tagmanifest-*.txt"):
        m.write_bytes(_cr_only(m.read_bytes()))


def test_records_from_a_bag_with_cr_only_line_ends_are_those_with_lf(archive):
    """A CR-only manifest or bag-info.txt was read as one line (a wrong digest for a path holding
    the rest of the file) or refused; now every reader sees the same lines, the validator too."""
    from fixity.audit import parse_manifest
    from ingest.validate import validate_bag

    bag = archive.bags[0]
    where = str(archive.bag_dir("site-a", bag))
    before = records_from_bag(folder_reader(where), BagId.parse(bag), where)
    _make_cr_only(archive, "site-a", bag)
    raw = (Path(where) / "manifest-sha256.txt").read_bytes()
    assert b"\n" not in raw and raw.count(b"\r") == 2
    assert records_from_bag(folder_reader(where), BagId.parse(bag), where) == before
    assert validate_bag(Path(where)).valid
    table, errors = parse_manifest(raw, "1.0", "sha256")
    assert errors == [] and sorted(table.column("path").to_pylist()) == ["data/a.txt", "data/b.txt"]


def test_catalog_rebuild_reads_cr_only_manifests_and_tag_manifests(archive, capsys):
    bag = archive.bags[0]
    want = sorted((f.path, f.sha256) for f in archive.catalog.file_records(bag))
    for target in ("site-a", "site-b"):
        _make_cr_only(archive, target, bag)
    shutil.rmtree(archive.config.catalog)
    code = main(["--config", str(archive.cfg), "catalog", "rebuild"])
    out, err = capsys.readouterr()
    assert code == 0, out + err
    catalog = archive.catalog
    assert sorted((f.path, f.sha256) for f in catalog.file_records(bag)) == want
    assert {catalog.replica(bag, t).state for t in ("site-a", "site-b")} == {"verified"}


NUL_BAGIT = b"BagIt-Version: 1.0\nTag-File-Character-Encoding: UTF-8\x00\n"


def test_an_encoding_name_holding_nul_is_a_problem_of_bagit_txt(archive, capsys):
    """codecs.lookup('UTF-8\\x00') raises ValueError ('embedded null character'), not LookupError:
    it crashed validate_bag and records_from_bag."""
    decl = bagit_spec.parse_bagit_txt(NUL_BAGIT)
    assert decl.encoding is None
    assert [(i.line, i.error) for i in decl.issues] == [(2, True)] and "not a known" in decl.issues[0].message
    bag = archive.bags[0]
    archive.rewrite("site-a", bag, "bagit.txt", NUL_BAGIT)
    where = str(archive.bag_dir("site-a", bag))
    with pytest.raises(TagFileError) as caught:
        records_from_bag(folder_reader(where), BagId.parse(bag), where)
    assert str(caught.value).startswith(f"{where}: bagit.txt line 2: ")
    code, report, err = _validate(capsys, Path(where))
    assert code == 1 and not report["valid"] and "Traceback" not in err
    assert any(p["path"] == "bagit.txt" and "\\x00" in p["message"] for p in report["problems"]), report


def _bag_info_without(archive, bag: str, label: str, value=None) -> bytes:
    """site-a's bag-info.txt with `label`'s line dropped (value None) or its value replaced."""
    lines = (archive.bag_dir("site-a", bag) / "bag-info.txt").read_text("utf-8").splitlines(keepends=True)
    out = []
    for line in lines:
        if line.startswith(label + ":"):
            if value is None:
                continue
            line = f"{label}:{' ' if value else ''}{value}\n"
        out.append(line)
    return "".join(out).encode("utf-8")


#: name -> (how site-a's bag-info.txt is made, phrase the TagFileError must hold)
INCOMPLETE_INFO = {
    "empty": (lambda a, b: b"", "bag-info.txt: has no Strongroom-Collection-Type"),
    "no-policy": (lambda a, b: _bag_info_without(a, b, "Strongroom-Policy"), "bag-info.txt: has no Strongroom-Policy"),
    "empty-policy": (lambda a, b: _bag_info_without(a, b, "Strongroom-Policy", ""), "Strongroom-Policy is empty"),
    "no-identifier": (lambda a, b: _bag_info_without(a, b, "External-Identifier"), "has no External-Identifier"),
    "unknown-type": (lambda a, b: _bag_info_without(a, b, "Strongroom-Collection-Type", "stolen"),
                     "bag-info.txt: does not describe a bag the catalog can hold: collection_type 'stolen'"),
}


@pytest.mark.parametrize("kind", sorted(INCOMPLETE_INFO))
def test_a_bag_info_lacking_what_a_bag_record_needs_is_a_tag_file_error(archive, kind):
    """It raised a bare ValueError from BagRecord.__post_init__, naming neither bag nor file."""
    make, phrase = INCOMPLETE_INFO[kind]
    bag = archive.bags[0]
    archive.rewrite("site-a", bag, "bag-info.txt", make(archive, bag))
    where = str(archive.bag_dir("site-a", bag))
    with pytest.raises(TagFileError) as caught:
        records_from_bag(folder_reader(where), BagId.parse(bag), where)
    assert str(caught.value).startswith(f"{where}: bag-info.txt") and phrase in str(caught.value)


@pytest.mark.parametrize("kind", ["empty", "no-policy", "unknown-type", "nul-encoding"])
def test_restore_uses_site_b_when_site_a_has_an_incomplete_bag_info_or_bagit_txt(archive, tmp_path, capsys, kind):
    bag = archive.bags[0]
    if kind == "nul-encoding":
        name, data = "bagit.txt", NUL_BAGIT
    else:
        name, data = "bag-info.txt", INCOMPLETE_INFO[kind][0](archive, bag)
    archive.rewrite("site-a", bag, name, data)
    dest = tmp_path / "restored"
    code, out, err = archive.run(capsys, "restore", bag, str(dest))
    assert code == 0, err
    assert out["tag_source"] == "site-b"
    assert (dest / name).read_bytes() == (archive.bag_dir("site-b", bag) / name).read_bytes()
    assert (dest / "data" / "a.txt").read_bytes() == b"alpha"
    assert any(name in p for p in out["damaged_replicas"]["site-a"])
    assert archive.catalog.replica(bag, "site-a").state == "damaged"
