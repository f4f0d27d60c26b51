"""Ingest: from a source folder to validated bag(s) in staging, with every kind of bad input."""

import csv
import hashlib
import io
import json
import os
import subprocess
import sys
import tempfile
import unicodedata
from dataclasses import replace
from pathlib import Path

import pytest

from ingest.deposit import DepositRequest, ingest
from ingest.scan import scan_source
from ingest.validate import validate_bag
from strongroom.errors import InputError, PreservationError, UsageError
from tests.conftest import SHARED, tree_state


def request(archive, source, **kw):
    kw.setdefault("collection_type", "self-built")
    policy = kw.pop("policy", None) or archive.policy_for_type(kw["collection_type"], None)
    return DepositRequest(source=Path(source), library=kw.pop("library", "PKU"),
                          collection=kw.pop("collection", "rare-books"), policy=policy,
                          staging=archive.staging, **kw)


def write(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def read_manifest(bag: Path, alg: str) -> dict:
    out = {}
    for line in (bag / f"manifest-{alg}.txt").read_text("utf-8").splitlines():
        digest, name = line.split(" ", 1)
        out[name.strip()] = digest
    return out


def bag_info(bag: Path) -> dict:
    info = {}
    for line in (bag / "bag-info.txt").read_text("utf-8").splitlines():
        key, _, value = line.partition(":")
        info[key] = value.strip()
    return info


def staging_leftovers(archive) -> list:
    incomplete = Path(archive.staging) / ".incomplete"
    return sorted(p.name for p in incomplete.iterdir()) if incomplete.exists() else []


@pytest.fixture
def awkward_source(tmp_path):
    """Names that break naive bag writers, plus real formats."""
    src = tmp_path / "source"
    write(src / "古籍" / "善本 第1卷.tif", b"II*\x00" + bytes(200))
    write(src / "100% cotton.txt", "纯棉 100%\n".encode("utf-8"))
    write(src / "two words" / "a b.csv", b"a,b\n1,2\n")
    write(src / "line\nbreak.txt", b"has a line feed in its name\n")
    write(src / "carriage\rreturn.txt", b"has a carriage return in its name\n")
    write(src / "empty.dat", b"")
    (src / "empty folder" / "nested empty").mkdir(parents=True)
    (src / "空目录").mkdir()
    os.utime(src / "100% cotton.txt", ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))
    return src


def test_awkward_names_become_a_valid_bag_and_the_source_is_untouched(archive, awkward_source, identifier):
    before = tree_state(awkward_source)
    result = ingest(request(archive, awkward_source, title="善本特藏 Rare books"), identifier=identifier)
    assert tree_state(awkward_source) == before
    assert len(result.bags) == 1
    bag = result.bags[0].path
    report = validate_bag(bag)
    assert report.valid, report.problems
    manifest = read_manifest(bag, "sha256")
    assert "data/100%25 cotton.txt" in manifest  # RFC 8493: '%' is written as %25
    assert "data/line%0Abreak.txt" in manifest
    assert "data/carriage%0Dreturn.txt" in manifest
    assert "data/古籍/善本 第1卷.tif" in manifest
    assert manifest["data/empty.dat"] == hashlib.sha256(b"").hexdigest()
    assert set(read_manifest(bag, "md5")) == set(manifest)  # every policy algorithm, every file
    assert (bag / "data" / "100% cotton.txt").stat().st_mtime_ns == 1_000_000_000_000_000_000  # mtime kept
    empties = (bag / "metadata" / "empty-directories.txt").read_text("utf-8").splitlines()
    assert sorted(empties) == ["data/empty folder/nested empty", "data/空目录"]
    info = bag_info(bag)
    assert info["Source-Organization"] == "PKU"
    assert info["Internal-Sender-Identifier"] == "rare-books"
    assert info["External-Identifier"].startswith("urn:uuid:")
    assert info["Bag-Group-Identifier"] == str(result.bags[0].bag_id).rsplit("-", 1)[0]
    assert info["Bag-Count"] == "1 of 1"
    assert info["Payload-Oxum"] == f"{sum(len(p.read_bytes()) for p in awkward_source.rglob('*') if p.is_file())}.6"
    assert info["Strongroom-Collection-Type"] == "self-built"
    assert info["Strongroom-Collection-Title"] == "善本特藏 Rare books"
    assert "Bagging-Date" in info
    assert staging_leftovers(archive) == []


def test_formats_csv_and_premis(archive, awkward_source, identifier):
    from tests.schema import assert_valid

    bag = ingest(request(archive, awkward_source), identifier=identifier).bags[0].path
    with open(bag / "metadata" / "formats.csv", encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    by_path = {r["path"]: r for r in rows}
    assert len(rows) == 6
    assert by_path["data/古籍/善本 第1卷.tif"]["puid"].startswith("fmt/")  # TIFF little-endian header
    assert by_path["data/empty.dat"]["size"] == "0"
    assert all(r["fido_version"] and r["signature_version"] for r in rows)
    premis_path = bag / "metadata" / "premis.xml"
    assert_valid(premis_path, "premis")
    text = premis_path.read_text("utf-8")
    for event in ("message digest calculation", "format identification", "validation", "ingestion"):
        assert event in text
    assert "善本 第1卷.tif" in text


def test_premis_written_by_a_forked_child_is_the_inline_document(archive, awkward_source, identifier, monkeypatch):
    """Big bags have premis.xml written by a forked child while the other tag files are written
    (ingest.bag.PREMIS_FORK_FILES): the same document as inline, but for the bag's own ids and times."""
    import re

    from ingest import bag as bag_mod
    from tests.schema import assert_valid

    def premis_of(fork_from: int) -> str:
        monkeypatch.setattr(bag_mod, "PREMIS_FORK_FILES", fork_from)
        built = ingest(request(archive, awkward_source), identifier=identifier).bags[0]
        assert validate_bag(built.path).valid
        path = built.path / "metadata" / "premis.xml"
        assert_valid(path, "premis")
        text = path.read_text("utf-8")
        text = text.replace(str(built.bag_id), "BAG").replace(built.external_id, "EXTERNAL")
        text = re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "UUID", text)
        return re.sub(r"\d{4}-\d\d-\d\dT[0-9:.]+(?:Z|[+-]\d\d:\d\d)", "TIME", text)

    forked, inline = premis_of(0), premis_of(10 ** 9)
    assert forked == inline
    assert forked.count("<object ") >= 7 and "善本 第1卷.tif" in forked


def test_unicode_normalisation_twins_are_refused(archive, tmp_path, identifier):
    src = tmp_path / "src"
    nfc = unicodedata.normalize("NFC", "café.txt")
    nfd = unicodedata.normalize("NFD", "café.txt")
    assert nfc != nfd
    write(src / nfc, b"one")
    write(src / nfd, b"two")
    with pytest.raises(InputError) as err:
        ingest(request(archive, src), identifier=identifier)
    assert any("normalisation" in p and nfc in p for p in err.value.problems)
    assert not list(Path(archive.staging).glob("PKU/*/*"))


def test_symlinks_are_refused_and_named(archive, tmp_path, identifier):
    src = tmp_path / "src"
    write(src / "real.txt", b"real")
    outside = write(tmp_path / "secret.txt", b"outside the source")
    os.symlink(outside, src / "escape.txt")
    os.symlink(src / "real.txt", src / "inside.txt")
    with pytest.raises(InputError) as err:
        ingest(request(archive, src), identifier=identifier)
    named = " ".join(err.value.problems)
    assert "escape.txt" in named and "inside.txt" in named
    # Allowed inside the source on request, but never followed outside it.
    with pytest.raises(InputError) as err:
        ingest(request(archive, src, follow_internal_links=True), identifier=identifier)
    assert [p for p in err.value.problems if "escape.txt" in p]
    assert not [p for p in err.value.problems if "inside.txt" in p]
    os.unlink(src / "escape.txt")
    bag = ingest(request(archive, src, follow_internal_links=True), identifier=identifier).bags[0].path
    assert (bag / "data" / "inside.txt").read_bytes() == b"real"
    assert not (bag / "data" / "inside.txt").is_symlink()


def test_fifo_and_devices_are_refused(archive, tmp_path, identifier):
    src = tmp_path / "src"
    write(src / "ok.txt")
    os.mkfifo(src / "pipe")
    with pytest.raises(InputError) as err:
        ingest(request(archive, src), identifier=identifier)
    assert any("pipe" in p and "FIFO" in p for p in err.value.problems)


def test_names_that_are_not_utf8_are_refused(archive, tmp_path, identifier):
    src = tmp_path / "src"
    write(src / "ok.txt")
    with open(os.path.join(os.fsencode(src), b"latin1-\xe9t\xe9.txt"), "wb") as fh:
        fh.write(b"x")
    with pytest.raises(InputError) as err:
        ingest(request(archive, src), identifier=identifier)
    assert any("not valid UTF-8" in p and "latin1-" in p for p in err.value.problems)


@pytest.mark.parametrize("kind", ["missing", "file"])
def test_source_that_is_missing_or_a_file(archive, tmp_path, identifier, kind):
    src = tmp_path / "nope"
    if kind == "file":
        write(src, b"a file, not a folder")
    with pytest.raises(InputError) as err:
        ingest(request(archive, src), identifier=identifier)
    assert str(src) in str(err.value)
    assert err.value.exit_code == 2


def test_file_changed_between_scan_and_copy_fails_cleanly(archive, tmp_path, identifier):
    src = tmp_path / "src"
    write(src / "stable.txt", b"stable")
    growing = write(src / "growing.log", b"first line\n")
    scan = scan_source(src)
    with open(growing, "ab") as fh:
        fh.write(b"second line\n")
    with pytest.raises(InputError) as err:
        ingest(request(archive, src), identifier=identifier, scan=scan)
    assert any("growing.log" in p and "changed" in p for p in err.value.problems)
    assert not list(Path(archive.staging).glob("PKU/*/*"))
    assert staging_leftovers(archive) == []


def test_file_touched_without_size_change_is_detected(archive, tmp_path, identifier):
    src = tmp_path / "src"
    f = write(src / "edited.txt", b"aaaa")
    scan = scan_source(src)
    f.write_bytes(b"bbbb")
    os.utime(f, ns=(1, 5_000_000_000))
    with pytest.raises(InputError) as err:
        ingest(request(archive, src), identifier=identifier, scan=scan)
    assert any("edited.txt" in p for p in err.value.problems)


def test_unreadable_file_is_named(archive, tmp_path):
    """Run as an unprivileged user (root reads everything), in a child process."""
    base = Path(tempfile.mkdtemp(prefix="strongroom-perm-"))
    try:
        os.chmod(base, 0o777)
        src = base / "src"
        write(src / "open.txt", b"ok")
        secret = write(src / "closed.txt", b"no")
        os.chmod(secret, 0o000)
        for p in (src,):
            os.chmod(p, 0o755)
        staging = base / "staging"
        staging.mkdir()
        os.chmod(staging, 0o777)
        code = (
            "import sys, json\n"
            "from pathlib import Path\n"
            "from ingest.scan import scan_source\n"
            "from strongroom.errors import InputError\n"
            "import os\n"
            "if os.geteuid() == 0:\n"
            "    os.setgid(65534); os.setuid(65534)  # root reads everything: become 'nobody'\n"
            "try:\n"
            f"    scan_source({str(src)!r})\n"
            "    print('NO ERROR')\n"
            "except InputError as e:\n"
            "    print(json.dumps(e.problems))\n"
        )
        env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                             cwd=str(base))
        assert out.returncode == 0, out.stderr
        problems = json.loads(out.stdout)
        assert any("closed.txt" in p and "permission denied" in p for p in problems)
        assert not any("open.txt" in p for p in problems)
    finally:
        subprocess.run(["rm", "-rf", str(base)])


def test_large_deposit_is_split_into_a_group_of_bags(archive, tmp_path, identifier):
    src = tmp_path / "src"
    for i in range(5):
        write(src / f"f{i}.txt", bytes([65 + i]) * 100)
    base = archive.policy_for_type("self-built", None)
    policy = replace(base, bag=replace(base.bag, max_files=2))
    result = ingest(request(archive, src, policy=policy), identifier=identifier)
    assert len(result.bags) == 3
    groups = {bag_info(b.path)["Bag-Group-Identifier"] for b in result.bags}
    assert len(groups) == 1
    assert [bag_info(b.path)["Bag-Count"] for b in result.bags] == ["1 of 3", "2 of 3", "3 of 3"]
    assert sum(b.file_count for b in result.bags) == 5
    for b in result.bags:
        assert validate_bag(b.path).valid
    by_bytes = replace(base, bag=replace(base.bag, max_bytes=250))
    assert len(ingest(request(archive, src, policy=by_bytes), identifier=identifier).bags) == 3


def test_supplied_md5sums_are_verified_and_kept(archive, tmp_path, identifier):
    src = tmp_path / "src"
    a = write(src / "vol1" / "a.pdf", b"%PDF-1.4\n%%EOF\n")
    b = write(src / "vol1" / "b.txt", b"bee\n")
    (src / "vol1" / "MD5SUMS").write_text(
        f"{hashlib.md5(a.read_bytes()).hexdigest()}  a.pdf\n{hashlib.md5(b.read_bytes()).hexdigest()} *b.txt\n")
    write(src / "c.txt", b"sea\n")
    (src / "c.txt.sha1").write_text(f"{hashlib.sha1(b'sea' + bytes([10])).hexdigest()}  c.txt\n")
    bag = ingest(request(archive, src), identifier=identifier).bags[0].path
    rows = list(csv.DictReader(io.StringIO((bag / "metadata" / "supplied-checksums.csv").read_text("utf-8"))))
    assert {(r["path"], r["algorithm"]) for r in rows} == {
        ("data/vol1/a.pdf", "md5"), ("data/vol1/b.txt", "md5"), ("data/c.txt", "sha1")}
    assert validate_bag(bag).valid


def test_supplied_checksum_mismatch_fails_naming_each_file(archive, tmp_path, identifier):
    src = tmp_path / "src"
    write(src / "good.txt", b"good")
    write(src / "bad1.txt", b"damaged in transit")
    write(src / "bad2.txt", b"also damaged")
    (src / "SHA256SUMS").write_text(
        f"{hashlib.sha256(b'good').hexdigest()}  good.txt\n"
        f"{hashlib.sha256(b'original').hexdigest()}  bad1.txt\n"
        f"{hashlib.sha256(b'original 2').hexdigest()}  bad2.txt\n"
        f"{hashlib.sha256(b'gone').hexdigest()}  missing.txt\n")
    with pytest.raises(PreservationError) as err:
        ingest(request(archive, src), identifier=identifier)
    problems = " | ".join(err.value.problems)
    assert "bad1.txt" in problems and "bad2.txt" in problems and "missing.txt" in problems
    assert "good.txt" not in problems
    assert err.value.exit_code == 1
    assert not list(Path(archive.staging).glob("PKU/*/*"))


def test_vendor_bag_as_source_has_its_manifests_checked(archive, tmp_path, identifier):
    import shutil

    src = tmp_path / "vendor-bag"
    shutil.copytree(SHARED / "conformance" / "bagit-conformance-suite" / "v1.0" / "valid" / "basicBag", src)
    bag = ingest(request(archive, src, collection_type="purchased"), identifier=identifier).bags[0].path
    rows = (bag / "metadata" / "supplied-checksums.csv").read_text("utf-8")
    assert "data/data/" in rows  # the vendor's own payload paths, inside ours
    victim = next(p for p in (src / "data").rglob("*") if p.is_file())
    victim.write_bytes(victim.read_bytes() + b"tampered")
    with pytest.raises(PreservationError) as err:
        ingest(request(archive, src, collection_type="purchased"), identifier=identifier)
    assert any(victim.name in p for p in err.value.problems)


def test_unsafe_path_in_a_supplied_checksum_file_is_refused(archive, tmp_path, identifier):
    src = tmp_path / "src"
    write(src / "a.txt", b"a")
    (src / "MD5SUMS").write_text(f"{hashlib.md5(b'x').hexdigest()}  ../../etc/passwd\n")
    with pytest.raises(InputError) as err:
        ingest(request(archive, src), identifier=identifier)
    assert any("MD5SUMS" in p and "unsafe" in p for p in err.value.problems)


def test_bad_library_code_and_nested_staging(archive, tmp_path, identifier):
    src = tmp_path / "src"
    write(src / "a.txt")
    with pytest.raises(UsageError):
        ingest(request(archive, src, library="../etc"), identifier=identifier)
    with pytest.raises(UsageError):
        ingest(DepositRequest(source=src, library="PKU", collection="c", collection_type="purchased",
                              policy=archive.policy_for_type("purchased", None), staging=src / "staging"),
               identifier=identifier)
    assert not (src / "staging").exists()


def test_two_deposits_of_one_source_get_distinct_bag_ids(archive, tmp_path, identifier):
    src = tmp_path / "src"
    write(src / "a.txt")
    first = ingest(request(archive, src), identifier=identifier).bags[0].bag_id
    second = ingest(request(archive, src), identifier=identifier).bags[0].bag_id
    assert str(first) != str(second)


def test_parallel_workers_give_the_same_bag(archive, tmp_path, identifier):
    src = tmp_path / "src"
    for i in range(40):
        write(src / f"d{i % 3}" / f"f{i}.bin", os.urandom(1000 + i * 997))
    one = ingest(request(archive, src, workers=1), identifier=identifier).bags[0].path
    two = ingest(request(archive, src, workers=2), identifier=identifier).bags[0].path
    assert (one / "manifest-sha256.txt").read_text() == (two / "manifest-sha256.txt").read_text()
    assert (one / "metadata" / "formats.csv").read_text() == (two / "metadata" / "formats.csv").read_text()


def test_deposit_cli_exit_codes(archive, tmp_path, capsys):
    from pipelines.cli import main

    src = tmp_path / "src"
    write(src / "a.txt", b"hello")
    code = main(["--config", str(archive.path), "--json", "deposit", str(src), "--library", "PKU",
                 "--collection", "theses", "--type", "self-built"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["bags"][0]["id"].startswith("PKU/theses/")
    assert out["state"] == "preserved"
    assert sum(b["files"] for b in out["bags"]) == 1
    assert main(["--config", str(archive.path), "deposit", str(tmp_path / "missing"), "--library", "PKU",
                 "--collection", "theses", "--type", "self-built"]) == 2
    assert "missing" in capsys.readouterr().err
    assert main(["--config", str(tmp_path / "no.yaml"), "deposit", str(src), "--library", "PKU",
                 "--collection", "theses", "--type", "self-built"]) == 2
