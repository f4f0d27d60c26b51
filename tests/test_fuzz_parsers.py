"""A bounded fuzz run (hypothesis) of every reader of a bag's tag files.

Each example takes a valid bag (made by the deposit's own writer), replaces one tag file -
bagit.txt, bag-info.txt, a manifest or tag manifest, fetch.txt, metadata/formats.csv,
metadata/file-attributes.csv, metadata/supplied-checksums.csv, metadata/empty-directories.txt -
with hostile content (random bytes, or near-valid text with the fields that break parsers:
non-ASCII digits, numbers beyond int64 and time_t, 200 KB fields, stray quotes, NUL, odd
encodings, BOMs, bare CRs) and hands it to:

  * the validator (ingest.validate.validate_bag) and `strongroom validate` (pipelines.cli.main),
  * the catalog's record reader (catalog.bag_records.records_from_bag, used by registration
    and `catalog rebuild`), and `strongroom catalog rebuild` itself,
  * `restore` (fixity.restore.restore_bag), with the hostile file on every copy and the tag
    manifests made to agree, so restore's own tag reading is reached.

The only outcomes allowed: a result (valid or not), or one of the project's own errors
(strongroom.errors.StrongroomError and its subclasses); for the CLI, exit 0, 1 or 2 and no
traceback. Never ValueError, UnicodeDecodeError, LookupError, RecursionError, csv.Error,
OverflowError, KeyError, IndexError...

Bounded twice: a fixed number of derandomized examples (the same on every run), and a time
box (STRONGROOM_FUZZ_SECONDS per test, default 8 s; examples past it return at once) so a slow
CI machine cannot blow the suite's budget. STRONGROOM_PROPERTY_SCALE=20 runs a longer hunt.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import os
import shutil
import tempfile
import time
import traceback
from pathlib import Path
from typing import Callable, Dict, Optional

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from strongroom import bagit_spec as spec
from strongroom.errors import StrongroomError
from tests import strategies as S

FUZZ_SECONDS = float(os.environ.get("STRONGROOM_FUZZ_SECONDS", "8") or 8) * S.SCALE

PAYLOAD = {"a.txt": b"hello\n" * 5, "sub dir/100% b.bin": bytes(range(40)), "善本/第1卷.txt": "书".encode() * 9}
PAYLOAD_PATHS = ["data/" + p for p in sorted(PAYLOAD)]


class TimeBox:
    """Examples after `seconds` of a test return at once: the run stays bounded on a slow machine.

    Once an example has failed the box never closes again, so hypothesis can replay and shrink
    the failure (an example that passed only because time ran out would be reported as flaky)."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.started: Optional[float] = None
        self.failed = False

    def over(self) -> bool:
        now = time.monotonic()
        if self.started is None:
            self.started = now
        return not self.failed and now - self.started > self.seconds

    def __call__(self, test):
        """Decorate a test (below @given): skip it when the box is over, note its failures."""
        @functools.wraps(test)
        def boxed(*args, **kwargs):
            if self.over():
                return None
            try:
                return test(*args, **kwargs)
            except BaseException:
                self.failed = True
                raise
        return boxed


# ============================================================================================
# Hostile content

NUMBERS = ["0", "1", "12", "-1", "+5", " 7 ", "1.5", "1e3", "0x10", "١٢٣", "１２", "٣", "²", "9" * 25,
           "9" * 400, "-" + "9" * 30, "18446744073709551616", "9223372036854775808", "253402300800000000000",
           "-62135596800000000001", "", " ", "NaN", "inf", "1_000", "٠"]
TEXTS = ["", " ", "x", "善本", "a\x00b", "\ufeff", "\u2028", "é" * 3, "\x1b[31m", "%0A", "../..", "/etc/passwd",
         "data/../../x", "~root", "C:\\x", "data/" + "é" * 10]
ENCODINGS = ["UTF-8", "utf-8", "UTF-16", "utf-16-le", "utf-32", "latin-1", "ascii", "base64", "rot13", "hex",
             "zlib", "bz2", "uu", "quopri", "idna", "punycode", "utf-7", "unicode_escape", "cp500", "mbcs",
             "undefined", "", "UTF-8\x00", "x" * 300]
VERSIONS = ["1.0", "0.97", "0.93", "1.0.0", "١.٠", "1.", ".97", "2.0", "99999999999999999999.1", "0.96", "1.01",
            "-1.0", " 1.0", ""]
EOLS = ["\n", "\r\n", "\r"]


def _pieces() -> st.SearchStrategy:
    return st.one_of(st.sampled_from(NUMBERS), st.sampled_from(TEXTS), st.text(S.UNICODE, max_size=12))


def huge() -> st.SearchStrategy:
    """A 200 KB field (beyond csv's default field_size_limit of 131072) or line."""
    return st.sampled_from(["x" * 200_000, "9" * 200_000, '"' + "y" * 140_000 + '"'])


def _join_lines(lines, eol: str, bom: bool) -> bytes:
    text = eol.join(lines) + eol
    return (b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8", "surrogatepass")


@st.composite
def bagit_txt(draw) -> bytes:
    v = draw(st.one_of(st.sampled_from(VERSIONS), st.text(S.UNICODE, max_size=8)))
    e = draw(st.one_of(st.sampled_from(ENCODINGS), st.text(S.UNICODE, max_size=8)))
    sep = draw(st.sampled_from([": ", ":", " : ", ":\t"]))
    lines = [f"BagIt-Version{sep}{v}", f"Tag-File-Character-Encoding{sep}{e}"]
    if draw(st.booleans()):
        lines.append(draw(st.sampled_from(["extra: line", "BagIt-Version: 1.0", "  folded"])))
    return _join_lines(draw(st.permutations(lines)), draw(st.sampled_from(EOLS)), draw(st.booleans()))


@st.composite
def bag_info(draw) -> bytes:
    labels = ["Payload-Oxum", "Bag-Count", "Bagging-Date", "External-Identifier", "Strongroom-Policy",
              "Strongroom-Collection-Type", "Strongroom-Collection-Title", "Bag-Group-Identifier",
              "Strongroom-Bag-Id", "Source-Organization"]
    lines = []
    for _ in range(draw(st.integers(1, 6))):
        label = draw(st.one_of(st.sampled_from(labels), st.text(S.UNICODE, max_size=6)))
        kind = draw(st.sampled_from(["number", "oxum", "count", "text", "huge", "fold"]))
        if kind == "oxum":
            value = f"{draw(st.sampled_from(NUMBERS))}.{draw(st.sampled_from(NUMBERS))}"
        elif kind == "count":
            value = f"{draw(st.sampled_from(NUMBERS + ['?']))} of {draw(st.sampled_from(NUMBERS + ['?']))}"
        elif kind == "huge":
            value = draw(huge())
        elif kind == "fold":
            value = draw(_pieces()) + "\n  " + draw(_pieces())
        else:
            value = draw(_pieces())
        lines.append(f"{label}{draw(st.sampled_from([': ', ':', ' : ']))}{value}")
    if draw(st.booleans()):
        odd = draw(st.sampled_from(["   orphan continuation", "", "no colon"]))
        lines.insert(draw(st.integers(0, len(lines))), odd)
    return _join_lines(lines, draw(st.sampled_from(EOLS)), draw(st.booleans()))


@st.composite
def manifest(draw) -> bytes:
    lines = []
    for _ in range(draw(st.integers(0, 5))):
        digest = draw(st.one_of(st.sampled_from([hashlib.sha256(b"x").hexdigest(), "0" * 63, "g" * 64, "٠" * 64,
                                                 "０" * 64, "A" * 64, "", "f" * 2000]),
                                S.hex_digest()))
        sep = draw(st.sampled_from(["  ", " ", "\t", "", " *"]))
        path = draw(st.one_of(st.sampled_from(PAYLOAD_PATHS + ["data/%2e%2e/x", "data/a%00b", "data/x%0",
                                                               "data", "data/", "./data/a.txt", "bagit.txt"]),
                              st.sampled_from(TEXTS), S.payload_paths(), huge()))
        lines.append(f"{digest}{sep}{path}")
    return _join_lines(lines, draw(st.sampled_from(EOLS)), draw(st.booleans()))


@st.composite
def fetch_txt(draw) -> bytes:
    lines = [f"{draw(st.sampled_from(['http://x/y', 'ftp:', '::', 'http://[::1', '', 'x' * 300]))} "
             f"{draw(st.sampled_from(NUMBERS + ['-']))} {draw(st.sampled_from(PAYLOAD_PATHS + TEXTS))}"
             for _ in range(draw(st.integers(0, 3)))]
    return _join_lines(lines, draw(st.sampled_from(EOLS)), draw(st.booleans()))


CSV_COLUMNS = {
    "metadata/formats.csv": ["path", "size", "puid", "format_name", "format_version", "mime", "method",
                             "alternatives", "fido_version", "signature_version"],
    "metadata/file-attributes.csv": ["path", "size", "mtime_ns", "mtime_utc"],
    "metadata/supplied-checksums.csv": ["path", "algorithm", "digest", "listed_in", "line", "outcome"],
}


def _csv_field(value: str, quote: bool) -> str:
    return '"' + value.replace('"', '""') + '"' if quote else value


@st.composite
def metadata_csv(draw, name: str) -> bytes:
    columns = list(CSV_COLUMNS[name])
    header = draw(st.one_of(st.just(columns), st.permutations(columns),
                            st.lists(st.sampled_from(columns + ["", "extra"]), max_size=5)))
    rows = [",".join(header)]
    for _ in range(draw(st.integers(0, 4))):
        fields = []
        for col in header:
            if col == "path":
                v = draw(st.one_of(st.sampled_from(PAYLOAD_PATHS), st.sampled_from(TEXTS)))
            elif col in ("size", "mtime_ns", "line"):
                v = draw(st.sampled_from(NUMBERS))
            elif col == "algorithm":
                v = draw(st.sampled_from(["sha256", "md5", "SHA-256", "shake_128", "", "x"]))
            elif col == "digest":
                v = draw(st.one_of(S.hex_digest(), st.sampled_from(["", "z" * 64, "٠" * 64])))
            else:
                v = draw(_pieces())
            if draw(st.integers(0, 9)) == 0:
                v = draw(huge())
            fields.append(_csv_field(v, draw(st.booleans())))
        if draw(st.integers(0, 5)) == 0:
            fields = fields[: draw(st.integers(0, len(fields)))] + [draw(st.sampled_from(['"open', 'a"b', '\x00',
                                                                                         '"x"y', ',,,']))]
        rows.append(",".join(fields))
    return _join_lines(rows, draw(st.sampled_from(["\r\n", "\n", "\r"])), draw(st.booleans()))


@st.composite
def empty_dirs(draw) -> bytes:
    lines = [draw(st.one_of(st.sampled_from(["data/empty", "data/../x", "/tmp/x", "data/%0Anl", "data", "bagit.txt",
                                             "data/a.txt", "data/a.txt/x"]), st.sampled_from(TEXTS)))
             for _ in range(draw(st.integers(0, 3)))]
    return _join_lines(lines, draw(st.sampled_from(EOLS)), draw(st.booleans()))


def _mangle(data: bytes, how: int) -> bytes:
    """A few generic ways parsers break: invalid UTF-8, UTF-16, NUL, truncation."""
    if how == 1:
        return data[: len(data) // 2] + b"\xff\xfe\xc3" + data[len(data) // 2:]
    if how == 2:
        return data.decode("utf-8", "replace").encode("utf-16")
    if how == 3:
        return data.replace(b"\n", b"\x00\n", 1)
    if how == 4:
        return data[: len(data) * 2 // 3]
    return data


GENERATORS: Dict[str, Callable[[], st.SearchStrategy]] = {
    "bagit.txt": bagit_txt,
    "bag-info.txt": bag_info,
    "manifest-sha256.txt": manifest,
    "manifest-md5.txt": manifest,
    "tagmanifest-sha256.txt": manifest,
    "fetch.txt": fetch_txt,
    "metadata/formats.csv": lambda: metadata_csv("metadata/formats.csv"),
    "metadata/file-attributes.csv": lambda: metadata_csv("metadata/file-attributes.csv"),
    "metadata/supplied-checksums.csv": lambda: metadata_csv("metadata/supplied-checksums.csv"),
    "metadata/empty-directories.txt": empty_dirs,
}


@st.composite
def hostile_file(draw, names=tuple(GENERATORS)) -> tuple:
    """(tag file name, content): near-valid text most of the time, random bytes otherwise."""
    name = draw(st.sampled_from(list(names)))
    if draw(st.integers(0, 4)) == 0:
        return name, draw(st.binary(max_size=300))
    return name, _mangle(draw(GENERATORS[name]()), draw(st.integers(0, 8)))


# ============================================================================================
# The base bag


@pytest.fixture(scope="module")
def base_bag(tmp_path_factory) -> Path:
    return S.build_bag(tmp_path_factory.mktemp("fuzz-bag"), PAYLOAD)


def _allowed(exc: BaseException) -> bool:
    return isinstance(exc, StrongroomError)


def _crash(where: str, name: str, content: bytes, exc: BaseException) -> AssertionError:
    shown = content if len(content) <= 300 else content[:300] + b"...(%d bytes)" % len(content)
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)[-3:])
    return AssertionError(f"{where} crashed on {name} = {shown!r}: {type(exc).__name__}: {exc}\n{tb}")


def _retag(bag: Path) -> None:
    """Rewrite the tag manifests so they agree with the (hostile) tag files: the bag is then
    consistent, and readers past the tag-manifest check meet the hostile content."""
    algs = [spec.manifest_algorithm(p.name) for p in bag.glob("tagmanifest-*.txt")]
    for p in bag.glob("tagmanifest-*.txt"):
        p.chmod(0o644)
    spec.write_tag_manifests(bag, algs)


def _put(bag: Path, name: str, content: bytes) -> None:
    p = bag / name
    p.parent.mkdir(parents=True, exist_ok=True)
    if p.exists():
        p.chmod(0o644)
    p.write_bytes(content)


# ============================================================================================
# The validator and the catalog's record reader

VALIDATE_BOX = TimeBox(FUZZ_SECONDS)


@S.quick(150)
@given(hostile=hostile_file(), retag=st.booleans())
@example(hostile=("bagit.txt", b"BagIt-Version: 1.0\nTag-File-Character-Encoding: base64\n"), retag=False)
@example(hostile=("bagit.txt", b"BagIt-Version: 1.0\nTag-File-Character-Encoding: rot13\n"), retag=False)
@example(hostile=("bagit.txt", b"BagIt-Version: 1.0\nTag-File-Character-Encoding: utf-16\n"), retag=False)
@example(hostile=("bag-info.txt", b"Payload-Oxum: \xd9\xa1\xd9\xa2.3\n"), retag=True)
@example(hostile=("bagit.txt", b"BagIt-Version: 1.0\nTag-File-Character-Encoding: UTF-8\x00\n"), retag=False)
@VALIDATE_BOX
def test_validator_never_crashes_on_a_hostile_tag_file(base_bag, hostile, retag):
    """validate_bag returns a report (valid or not) or raises a StrongroomError; nothing else."""
    from ingest.validate import validate_bag

    name, content = hostile
    with tempfile.TemporaryDirectory() as tmp:
        bag = Path(tmp) / "bag"
        shutil.copytree(base_bag, bag)
        _put(bag, name, content)
        if retag and name != "tagmanifest-sha256.txt":
            _retag(bag)
        try:
            report = validate_bag(bag)
        except BaseException as exc:   # noqa: BLE001 - the assertion is on its type
            if not _allowed(exc):
                raise _crash("validate_bag", name, content, exc) from exc
            return
        assert report.valid in (True, False)
        if name in ("bagit.txt", "manifest-sha256.txt", "bag-info.txt") and report.valid:
            # a hostile file may only pass if it still says what the bag is: re-check its facts
            assert report.payload_files == len(PAYLOAD)


RECORDS_BOX = TimeBox(FUZZ_SECONDS)


@S.quick(250)
@given(hostile=hostile_file(names=("bag-info.txt", "manifest-sha256.txt", "manifest-md5.txt", "bagit.txt",
                                   "metadata/formats.csv", "metadata/file-attributes.csv")))
@example(hostile=("metadata/file-attributes.csv",
                  "path,size,mtime_ns,mtime_utc\r\ndata/a.txt,\u0661\u0662,1,x\r\n".encode()))
@example(hostile=("metadata/file-attributes.csv",
                  b"path,size,mtime_ns,mtime_utc\r\ndata/a.txt,30,99999999999999999999999999,x\r\n"))
@example(hostile=("metadata/formats.csv", b"path,size\r\ndata/a.txt,\"" + b"x" * 200_000 + b"\"\r\n"))
@example(hostile=("bag-info.txt", b"Bag-Count: 1 of \xd9\xa3\nPayload-Oxum: 1.2\n"))
@example(hostile=("bag-info.txt", b""))
@example(hostile=("bagit.txt", b"BagIt-Version: 1.0\nTag-File-Character-Encoding: UTF-8\x00\n"))
@RECORDS_BOX
def test_catalog_record_reader_never_crashes_on_a_hostile_tag_file(base_bag, hostile):
    """records_from_bag (registration and `catalog rebuild`) returns records or raises a
    StrongroomError naming the bag; nothing else."""
    from catalog.bag_records import records_from_bag
    from strongroom.bag_id import BagId

    name, content = hostile
    files = {str(p.relative_to(base_bag)): p.read_bytes() for p in base_bag.rglob("*") if p.is_file()}
    files[name] = content
    try:
        bag, rows = records_from_bag(files.get, BagId.parse(S.BAG_ID_TEXT), "fuzz-bag")
    except BaseException as exc:   # noqa: BLE001
        if not _allowed(exc):
            raise _crash("records_from_bag", name, content, exc) from exc
        return
    assert bag.file_count == len(rows)


# ============================================================================================
# The CLI, `catalog rebuild` and `restore` on a real deposit


def _cli(argv) -> tuple:
    from pipelines.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:   # argparse
            code = exc.code
    return code, out.getvalue(), err.getvalue()


CLI_BOX = TimeBox(FUZZ_SECONDS / 2)


@S.quick(8)
@given(hostile=hostile_file(names=("bagit.txt", "bag-info.txt", "manifest-sha256.txt", "fetch.txt")),
       fast=st.booleans(), as_json=st.booleans())
@example(hostile=("bagit.txt", b"BagIt-Version: 1.0\nTag-File-Character-Encoding: base64\n"), fast=False,
         as_json=True)
@CLI_BOX
def test_validate_cli_exits_0_1_or_2_without_a_traceback(base_bag, hostile, fast, as_json):
    name, content = hostile
    with tempfile.TemporaryDirectory() as tmp:
        bag = Path(tmp) / "bag"
        shutil.copytree(base_bag, bag)
        _put(bag, name, content)
        argv = ["validate", str(bag)] + (["--fast"] if fast else []) + (["--json"] if as_json else [])
        try:
            code, out, err = _cli(argv)
        except BaseException as exc:   # noqa: BLE001
            raise _crash("strongroom validate", name, content, exc) from exc
    assert code in (0, 1, 2), (code, err)
    assert "Traceback" not in err and "Traceback" not in out


@pytest.fixture(scope="module")
def deposited(tmp_path_factory):
    """A real deposit (the fuzzed bag's payload) on two filesystem replicas."""
    from tests.test_properties import _make_template

    return _make_template(tmp_path_factory.mktemp("fuzz-archive"), 2)


def _copy_with_hostile(t, name: str, content: bytes, targets) -> Path:
    archive = Path(tempfile.mkdtemp(prefix="h6-fuzz-")) / "archive"
    shutil.copytree(t.folder, archive, symlinks=True)
    for target in targets:
        bag = t.bag_dir(archive, target)
        for dirpath, _, _ in os.walk(bag):
            os.chmod(dirpath, 0o755)
        _put(bag, name, content)
        if name != "tagmanifest-sha256.txt":
            _retag(bag)
    return archive


def _remove(archive: Path) -> None:
    for dirpath, dirnames, filenames in os.walk(archive.parent):
        os.chmod(dirpath, 0o755)
    shutil.rmtree(archive.parent, ignore_errors=True)


RESTORE_BOX = TimeBox(FUZZ_SECONDS)
RESTORE_FILES = ("metadata/file-attributes.csv", "metadata/formats.csv", "metadata/empty-directories.txt",
                 "bag-info.txt", "manifest-sha256.txt", "bagit.txt")


@S.quick(10)
@given(hostile=hostile_file(names=RESTORE_FILES), both=st.booleans(), payload_only=st.booleans())
@example(hostile=("metadata/file-attributes.csv",
                  "path,size,mtime_ns,mtime_utc\r\ndata/a.txt,104,\u0661\u0662,x\r\n".encode()),
         both=True, payload_only=False)
@example(hostile=("metadata/file-attributes.csv",
                  b"path,size,mtime_ns,mtime_utc\r\ndata/a.txt,104,99999999999999999999999,x\r\n"),
         both=False, payload_only=False)
@example(hostile=("metadata/empty-directories.txt", b"data/../../escape\n/tmp/x\ndata/a.txt/x\n"), both=True,
         payload_only=True)
@example(hostile=("bag-info.txt", b""), both=False, payload_only=False)   # site-b's tag files are intact
@RESTORE_BOX
def test_restore_never_crashes_on_hostile_tag_files(deposited, hostile, both, payload_only):
    """restore_bag with a hostile tag file on the first copy (or on both, tag manifests agreeing):
    it restores (from the other copy, or ignoring a field it cannot use) or raises a
    StrongroomError; the destination is then complete or absent, never half-written."""
    from fixity.restore import restore_bag
    from policies.config import load_config

    name, content = hostile
    archive = _copy_with_hostile(deposited, name, content, deposited.targets if both else deposited.targets[:1])
    dest = archive.parent / "restored"
    try:
        config = load_config(archive / "strongroom.yaml")
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            try:
                restore_bag(config, deposited.bag, dest, payload_only=payload_only)
            except BaseException as exc:   # noqa: BLE001
                if not _allowed(exc):
                    raise _crash("restore_bag", name, content, exc) from exc
                assert not dest.exists() or not any(dest.iterdir()), "a failed restore left files in DEST"
                return
        restored = {str(p.relative_to(dest)): p.read_bytes() for p in dest.rglob("*") if p.is_file()}
        prefix = "" if payload_only else "data/"
        for rel, data in PAYLOAD_FOR(deposited).items():
            assert restored.get(prefix + rel[len("data/"):]) == data, rel
    finally:
        _remove(archive)


def PAYLOAD_FOR(t) -> Dict[str, bytes]:   # noqa: N802 - reads like a constant at the call site
    return {p: t.originals[p] for p in t.payload}


REBUILD_BOX = TimeBox(FUZZ_SECONDS)


@S.quick(8)
@given(hostile=hostile_file(names=("bag-info.txt", "manifest-sha256.txt", "metadata/file-attributes.csv",
                                   "metadata/formats.csv", "metadata/supplied-checksums.csv", "bagit.txt",
                                   "tagmanifest-sha256.txt")),
       both=st.booleans())
@example(hostile=("metadata/formats.csv", b"path,size\r\ndata/a.txt,\"" + b"x" * 200_000 + b"\"\r\n"), both=False)
@example(hostile=("metadata/supplied-checksums.csv",
                  b"path,algorithm,digest,listed_in,line,outcome\r\ndata/a.txt,sha256,zz,x,\xd9\xa1,verified\r\n"),
         both=False)
@REBUILD_BOX
def test_catalog_rebuild_never_crashes_on_hostile_tag_files(deposited, hostile, both):
    """`strongroom catalog rebuild` into a lost catalog, with a hostile tag file on one copy (the
    copies then disagree, so the dispute rules read supplied-checksums.csv) or on both: exit 0,
    1 or 2 and no traceback, never a crash."""
    name, content = hostile
    archive = _copy_with_hostile(deposited, name, content, deposited.targets if both else deposited.targets[:1])
    try:
        shutil.rmtree(archive / "catalog")
        try:
            code, out, err = _cli(["--config", str(archive / "strongroom.yaml"), "catalog", "rebuild"])
        except BaseException as exc:   # noqa: BLE001
            raise _crash("strongroom catalog rebuild", name, content, exc) from exc
        assert code in (0, 1, 2), (code, err)
        assert "Traceback" not in err and "Traceback" not in out
    finally:
        _remove(archive)
