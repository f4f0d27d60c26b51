"""BagIt rules (strongroom.bagit_spec): path encoding, tag files, manifests, safe paths, writers."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import bagit
import pytest

from strongroom import bagit_spec as spec

TRICKY_NAMES = [
    "data/100% cotton.txt",
    "data/literal%0Aescape.txt",      # a real name containing the three characters '%0A'
    "data/already%25encoded",
    "data/line\nbreak.txt",
    "data/carriage\rreturn.txt",
    "data/crlf\r\nname",
    "data/古籍/善本 第1卷.tif",
    "data/dir with space/ trailing space ",
    "data/%7Etilde-escape",
]


# ---------------------------------------------------------------- path encoding

def test_v1_encodes_percent_cr_lf_and_nothing_else():
    assert spec.encode_path("data/100% cotton.txt") == "data/100%25 cotton.txt"
    assert spec.encode_path("data/a\nb\rc", "1.0") == "data/a%0Ab%0Dc"
    assert spec.encode_path("data/literal%0A") == "data/literal%250A"
    assert spec.encode_path("data/古籍/善本 第1卷.tif") == "data/古籍/善本 第1卷.tif"
    assert spec.encode_path("data/~x#y?z") == "data/~x#y?z"


@pytest.mark.parametrize("name", TRICKY_NAMES)
@pytest.mark.parametrize("version", ["1.0", "0.97"])
def test_encode_decode_round_trip(name, version):
    encoded = spec.encode_path(name, version)
    assert "\n" not in encoded and "\r" not in encoded
    if version == "1.0" or not any(s in name.upper() for s in ("%0A", "%0D")):
        assert spec.decode_path(encoded, version) == name
    else:
        # Before 1.0 '%' was never escaped, so a literal '%0A' in a name reads back as LF:
        # that is why the validator also tries the literal name for pre-1.0 bags.
        assert spec.decode_path(encoded, version) != name


def test_v1_decoding_is_one_pass_and_case_insensitive():
    assert spec.decode_path("data/a%250Ab", "1.0") == "data/a%0Ab"     # never a LF
    assert spec.decode_path("data/a%0ab%0dc%25", "1.0") == "data/a\nb\rc%"
    assert spec.decode_path("data/%7Etest%41", "1.0") == "data/%7Etest%41"  # other escapes are literal


def test_old_versions_decode_only_cr_lf_all_of_them_any_case():
    # bagit 1.9 passes re.IGNORECASE as re.sub's count: case-sensitive and at most 2 replacements.
    assert spec.decode_path("data/a%0Ab%0ac%0Ad%0De", "0.97") == "data/a\nb\nc\nd\re"
    assert spec.decode_path("data/100%25 cotton", "0.97") == "data/100%25 cotton"
    assert spec.encode_path("data/100% cotton\n", "0.96") == "data/100% cotton%0A"


# ---------------------------------------------------------------- safe paths

@pytest.mark.parametrize("path", [
    "../x", "data/../../etc/passwd", "data/a/../../b", "/etc/passwd", "C:\\Windows\\x", "C:/Windows/x",
    "data\\..\\x", "\\\\?\\UNC\\server\\x", "%HomeDrive%\\x", "~/foo", "~root/foo", "data/a\x00b", "",
])
def test_unsafe_paths_are_refused(path):
    assert not spec.safe_relpath(path)
    assert spec.path_problem(path)


@pytest.mark.parametrize("path", [
    "data/x", "data/dir1/~test3.txt", "data/..hidden", "data/a..b", "data/.x", "bag-info.txt",
    "metadata/premis.xml", "data/古籍/善本 第1卷.tif", "data/100% cotton.txt", "./data/x",
])
def test_safe_paths_are_accepted(path):
    assert spec.safe_relpath(path), spec.path_problem(path)


def test_canonical_path():
    assert spec.canonical_path("./data//a/./b") == "data/a/b"
    assert spec.canonical_path("data/a") == "data/a"


# ---------------------------------------------------------------- manifests

def test_manifest_line_format():
    assert spec.manifest_line("ABCDEF01", "data/100% cotton.txt") == "abcdef01  data/100%25 cotton.txt\n"
    assert spec.manifest_line("ab", "data/x\ny", version="0.97") == "ab  data/x%0Ay\n"
    for bad_path in ("../x", "/abs", "data/a\\b", "./data/x", "data/x/"):
        with pytest.raises(ValueError):
            spec.manifest_line("ab", bad_path)
    with pytest.raises(ValueError):
        spec.manifest_line("not-hex", "data/x")


def test_write_manifest_sorted_atomic_and_round_trips(tmp_path):
    digests = {name: hashlib.sha256(name.encode()).hexdigest() for name in TRICKY_NAMES}
    target = tmp_path / "manifest-sha256.txt"
    spec.write_manifest(target, reversed(list(digests.items())))
    first = target.read_bytes()
    spec.write_manifest(target, digests.items())
    assert target.read_bytes() == first                       # deterministic whatever the input order
    lines = first.decode("utf-8").split("\n")
    assert lines[-1] == "" and len(lines) == len(TRICKY_NAMES) + 1
    assert f"{digests['data/100% cotton.txt']}  data/100%25 cotton.txt" in lines
    assert f"{digests['data/line' + chr(10) + 'break.txt']}  data/line%0Abreak.txt" in lines
    assert [p for p, _ in spec.read_manifest(target, "1.0")] == sorted(TRICKY_NAMES)
    assert dict(spec.read_manifest(target, "1.0")) == digests
    assert sorted(os.listdir(tmp_path)) == ["manifest-sha256.txt"]   # no temp file left
    assert stat.S_IMODE(target.stat().st_mode) == 0o644


def test_write_manifest_refuses_duplicates_and_unsafe_paths_leaving_old_file(tmp_path):
    target = tmp_path / "manifest-md5.txt"
    spec.write_manifest(target, [("data/a", "00")])
    before = target.read_bytes()
    with pytest.raises(ValueError, match="twice"):
        spec.write_manifest(target, [("data/a", "00"), ("data/a", "11")])
    with pytest.raises(ValueError, match=r"\.\."):
        spec.write_manifest(target, [("data/../x", "00")])
    assert target.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["manifest-md5.txt"]


def test_read_manifest_reports_every_bad_line(tmp_path):
    m = tmp_path / "manifest-md5.txt"
    good = hashlib.md5(b"").hexdigest()
    m.write_bytes(f"{good}  data/ok\r\nnot a line\n{good}  ../../etc/passwd\rabc  data/short\n"
                  f"{good} *data/star\n{good}\t./data/dot\n".encode())
    with pytest.raises(spec.BagItSyntaxError) as info:
        spec.read_manifest(m, "1.0")
    lines = sorted(i.line for i in info.value.issues)
    assert lines == [2, 3, 4], info.value.issues           # CR, LF and CRLF all end lines
    assert "manifest-md5.txt" in str(info.value) and ".." in str(info.value)
    entries, issues = spec.parse_manifest_lines(spec.iter_lines(m), "1.0", "md5")
    assert [e.path for e in entries] == ["data/ok", "data/star", "data/dot"]
    warnings = [i.message for i in issues if not i.error]
    assert any("md5sum-style" in w for w in warnings) and any("canonical" in w for w in warnings)


def test_manifest_lines_split_only_at_cr_lf(tmp_path):
    m = tmp_path / "manifest-md5.txt"
    d = hashlib.md5(b"x").hexdigest()
    m.write_text(f"{d}  data/a\u2028b\x85c\x0cd\n", encoding="utf-8")
    assert spec.read_manifest(m, "1.0") == [("data/a\u2028b\x85c\x0cd", d)]


# ---------------------------------------------------------------- bagit.txt

def test_write_bagit_txt_exact_bytes(tmp_path):
    path = spec.write_bagit_txt(tmp_path)
    assert path.read_bytes() == b"BagIt-Version: 1.0\nTag-File-Character-Encoding: UTF-8\n"
    decl = spec.parse_bagit_txt(path.read_bytes())
    assert (decl.version, decl.encoding, decl.rules, decl.issues) == ("1.0", "UTF-8", "1.0", [])


@pytest.mark.parametrize("raw, message", [
    (b"\xef\xbb\xbfBagIt-Version: 1.0\nTag-File-Character-Encoding: UTF-8\n", "byte-order mark"),
    (b"BagIt-Version : 1.0\nTag-File-Character-Encoding: UTF-8\n", "must read exactly"),
    (b"BagIt-Version: 1.0 \nTag-File-Character-Encoding: UTF-8\n", "must read exactly"),
    (b"BagIt-Version:  1.0\nTag-File-Character-Encoding: UTF-8\n", "must read exactly"),
    (b"Tag-File-Character-Encoding: UTF-8\nBagIt-Version: 1.0\n", "must read exactly"),
    (b"BagIt-Version: 1.0\nTag-File-Character-Encoding: UTF-8\n\n", "unexpected line ''"),
    (b"BagIt-Version: 1.0\n", "Tag-File-Character-Encoding"),
    (b"BagIt-Version: .97\nTag-File-Character-Encoding: UTF-8\n", "M.N"),
    (b"BagIt-Version: 3.0\nTag-File-Character-Encoding: UTF-8\n", "not supported"),
    (b"BagIt-Version: 1.0\nTag-File-Character-Encoding: KLINGON-8\n", "not a known character encoding"),
    (b"BagIt-Version: 1.0\nTag-File-Character-Encoding: UTF-8\nColour: blue\n", "unexpected line"),
    (b"BagIt-Version: 1.0\nBagIt-Version: 1.0\nTag-File-Character-Encoding: UTF-8\n", "twice"),
])
def test_bad_bagit_txt(raw, message):
    errors = [str(i) for i in spec.parse_bagit_txt(raw).issues if i.error]
    assert any(message in e for e in errors), errors


def test_old_bagit_txt_is_read_tolerantly():
    decl = spec.parse_bagit_txt(b"BagIt-Version : 0.97\r\nTag-File-Character-Encoding:ISO-8859-1")
    assert (decl.version, decl.encoding, decl.rules) == ("0.97", "ISO-8859-1", "0.97")
    assert not [i for i in decl.issues if i.error]
    decl = spec.parse_bagit_txt(b"BagIt-Version: 0.98\nTag-File-Character-Encoding: UTF-8\n")
    assert decl.rules == "0.97" and decl.issues and not decl.issues[0].error


def test_version_helpers():
    assert spec.parse_version("0.97") == (0, 97)
    with pytest.raises(ValueError):
        spec.parse_version(".97")
    assert spec.bag_info_name("0.95") == "package-info.txt"
    assert spec.bag_info_name("0.96") == spec.bag_info_name("1.0") == "bag-info.txt"


# ---------------------------------------------------------------- bag-info style tag files

def test_tag_file_round_trip_with_folding(tmp_path):
    items = [
        ("Source-Organization", "国家图书馆 National Library"),
        ("External-Description", "first line\r\nsecond line\rthird\n  indented fourth"),
        ("Contact-Name", "A"),
        ("Contact-Name", "B"),                        # repeated labels are allowed and kept in order
        ("Payload-Oxum", spec.payload_oxum(1234, 5)),
        ("Empty", ""),
        ("Internal Label With Spaces", "x: y"),
    ]
    target = tmp_path / "bag-info.txt"
    spec.write_tag_file(target, items)
    text = target.read_text("utf-8")
    assert "External-Description: first line\n  second line\n  third\n  indented fourth\n" in text
    expected = [(k, v.replace("\r\n", "\n").replace("\r", "\n").replace("\n  ", "\n")) for k, v in items]
    assert spec.read_tag_file(target) == expected
    assert sorted(os.listdir(tmp_path)) == ["bag-info.txt"]


@pytest.mark.parametrize("label", ["", "Has:Colon", "New\nLine", " Leading", "Trailing ", "Tab\t"])
def test_tag_file_refuses_bad_labels(tmp_path, label):
    with pytest.raises(ValueError):
        spec.write_tag_file(tmp_path / "bag-info.txt", [(label, "v")])
    assert not (tmp_path / "bag-info.txt").exists()


def test_read_tag_file_version_rules(tmp_path):
    f = tmp_path / "bag-info.txt"
    f.write_bytes(b"Test-Tag : 3\nTest-Tag    :   5\nOk:   padded\n")
    assert spec.read_tag_file(f, version="0.97") == [("Test-Tag", "3"), ("Test-Tag", "5"), ("Ok", "padded")]
    with pytest.raises(spec.BagItSyntaxError) as info:
        spec.read_tag_file(f, version="1.0")
    assert [i.line for i in info.value.issues] == [1, 2]
    f.write_bytes(b"No colon here\n  continuation first\n")
    with pytest.raises(spec.BagItSyntaxError) as info:
        spec.read_tag_file(f, version="0.97")
    assert [i.line for i in info.value.issues] == [1, 2]   # line 2 has nothing to continue


def test_read_tag_file_encodings_and_bom(tmp_path):
    f = tmp_path / "bag-info.txt"
    f.write_bytes("\ufeffContact-Name: Zoë\nNote: a\u2028b\n".encode("utf-8"))
    assert spec.read_tag_file(f) == [("Contact-Name", "Zoë"), ("Note", "a\u2028b")]
    assert spec.bom_issue(f, "UTF-8") is not None and not spec.bom_issue(f, "UTF-8").error
    f.write_bytes("Contact-Name: Zoë\r\n".encode("latin-1"))
    assert spec.read_tag_file(f, encoding="ISO-8859-1") == [("Contact-Name", "Zoë")]
    f.write_bytes("Contact-Name: 张三\n".encode("utf-16"))
    assert spec.read_tag_file(f, encoding="UTF-16") == [("Contact-Name", "张三")]
    assert spec.bom_issue(f, "UTF-16") is None
    f.write_bytes(b"Contact-Name: \xff\xfe\n")
    with pytest.raises(UnicodeDecodeError):
        spec.read_tag_file(f)


# ---------------------------------------------------------------- Payload-Oxum

def test_payload_oxum():
    assert spec.payload_oxum(0, 0) == "0.0"
    assert spec.payload_oxum(123456789012, 3) == "123456789012.3"
    assert spec.parse_payload_oxum("58.2") == (58, 2)
    for bad in ((-1, 1), (1, -1), (1.5, 1), (True, 1)):
        with pytest.raises(ValueError):
            spec.payload_oxum(*bad)
    for bad in ("58", "58.2.1", "a.b", "-1.2", ""):
        with pytest.raises(ValueError):
            spec.parse_payload_oxum(bad)


# ---------------------------------------------------------------- tag manifests

def _tiny_bag(root: Path) -> Path:
    (root / "data" / "sub").mkdir(parents=True)
    (root / "metadata").mkdir()
    payload = {"data/a.txt": b"alpha", "data/sub/100% b.txt": b"beta"}
    for rel, content in payload.items():
        (root / rel).write_bytes(content)
    spec.write_bagit_txt(root)
    for alg in ("sha256", "md5"):
        spec.write_manifest(root / f"manifest-{alg}.txt",
                            [(rel, hashlib.new(alg, c).hexdigest()) for rel, c in payload.items()])
    spec.write_tag_file(root / "bag-info.txt", [("Payload-Oxum", spec.payload_oxum(9, 2))])
    (root / "metadata" / "premis.xml").write_bytes(b"<premis/>")
    return root


def test_tag_manifests_cover_every_tag_file_including_subfolders(tmp_path):
    bag = _tiny_bag(tmp_path / "bag")
    (bag / "tagmanifest-sha1.txt").write_text("stale\n")      # an old tag manifest is not a tag file
    entries = spec.tag_manifest_entries(bag, ["sha256", "md5"])
    names = ["bag-info.txt", "bagit.txt", "manifest-md5.txt", "manifest-sha256.txt", "metadata/premis.xml"]
    assert [rel for rel, _ in entries["sha256"]] == names
    for alg in ("sha256", "md5"):
        for rel, digest in entries[alg]:
            assert digest == hashlib.new(alg, (bag / rel).read_bytes()).hexdigest()
    written = spec.write_tag_manifests(bag, ["sha256", "md5"])
    assert [p.name for p in written] == ["tagmanifest-sha256.txt", "tagmanifest-md5.txt"]
    assert [rel for rel, _ in spec.read_manifest(bag / "tagmanifest-md5.txt")] == names


def test_tag_files_refuse_symlinks(tmp_path):
    bag = _tiny_bag(tmp_path / "bag")
    (bag / "metadata" / "evil.txt").symlink_to("/etc/hostname")
    with pytest.raises(ValueError, match="metadata/evil.txt"):
        spec.tag_files(bag)


def test_bag_written_with_these_rules_passes_bagit_python(tmp_path):
    """Interoperability: bagit-python (without '%' names, which it mishandles) accepts our bags."""
    root = tmp_path / "bag"
    (root / "data" / "古籍").mkdir(parents=True)
    payload = {"data/古籍/善本 第1卷.tif": b"\x00tiff", "data/plain.txt": b"text\n"}
    for rel, content in payload.items():
        (root / rel).write_bytes(content)
    spec.write_bagit_txt(root)
    for alg in ("sha256", "sha512"):
        spec.write_manifest(root / f"manifest-{alg}.txt",
                            [(rel, hashlib.new(alg, c).hexdigest()) for rel, c in payload.items()])
    spec.write_tag_file(root / "bag-info.txt", [("Payload-Oxum", spec.payload_oxum(10, 2)),
                                                ("External-Description", "two\nlines")])
    spec.write_tag_manifests(root, ["sha256", "sha512"])
    bag = bagit.Bag(str(root))
    bag.validate()
    assert bag.info["Payload-Oxum"] == "10.2"


@pytest.mark.parametrize("ending", ["\r", "\r\n", "\n"])
def test_large_manifests_keep_every_line_whatever_the_line_ending(tmp_path, ending):
    """Streaming reads in chunks: a CR at the end of one chunk and LF at the start of the next
    must still be one line break (20,000 lines cross many read buffers)."""
    m = tmp_path / "manifest-md5.txt"
    rows = [(f"data/{i:05d}-文件.txt", hashlib.md5(str(i).encode()).hexdigest()) for i in range(20000)]
    m.write_bytes("".join(f"{d}  {p}{ending}" for p, d in rows).encode("utf-8"))
    assert spec.read_manifest(m, "1.0") == rows
