"""Unpacking an uploaded batch archive: what a hostile tar or zip tries is refused, every problem
named, and nothing is written outside the folder (no server needed: ingest.receive_archive)."""

from __future__ import annotations

import io
import os
import struct
import tarfile
import zipfile
from pathlib import Path

import pytest

from ingest.receive_archive import ArchiveRefused, unpack_tar, unpack_zip


def tar_of(members) -> io.BytesIO:
    """A tar built from (name, bytes | None for a folder | ('sym'|'hard'|'fifo'|'chr', target))."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif isinstance(data, tuple):
                info.type = {"sym": tarfile.SYMTYPE, "hard": tarfile.LNKTYPE, "fifo": tarfile.FIFOTYPE,
                             "chr": tarfile.CHRTYPE}[data[0]]
                info.linkname = data[1]
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    return buf


def test_a_plain_tar_unpacks_with_its_folders(tmp_path):
    dest = tmp_path / "out"
    dest.mkdir()
    got = unpack_tar(tar_of([("./", None), ("./scans/", None), ("./scans/p1.tif", b"x" * 100),
                             ("目录.csv", "题名".encode())]), dest, max_bytes=10_000)
    assert (got.files, got.bytes) == (2, 100 + len("题名".encode()))
    assert (dest / "scans" / "p1.tif").read_bytes() == b"x" * 100
    assert (dest / "目录.csv").exists()


@pytest.mark.parametrize("name,data,needle", [
    ("../escape.txt", b"x", "'..'"),
    ("a/../../escape.txt", b"x", "'..'"),
    ("/etc/cron.d/evil", b"x", "absolute"),
    ("C:/windows/evil", b"x", "drive letter"),
    ("dir\\evil", b"x", "backslash"),
    ("link", ("sym", "/etc/passwd"), "symbolic link"),
    ("hard", ("hard", "../../etc/passwd"), "hard link"),
    ("pipe", ("fifo", ""), "special file"),
    ("tty", ("chr", ""), "special file"),
])
def test_hostile_tar_members_are_refused(tmp_path, name, data, needle):
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(ArchiveRefused) as caught:
        unpack_tar(tar_of([("ok.txt", b"fine"), (name, data)]), dest, max_bytes=10_000)
    assert any(needle in p for p in caught.value.problems), caught.value.problems
    assert not (tmp_path / "escape.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_every_problem_of_a_tar_is_named_and_duplicates_refused(tmp_path):
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(ArchiveRefused) as caught:
        unpack_tar(tar_of([("a.txt", b"1"), ("a.txt", b"2"), ("f", b"file"), ("f/inside", b"x"),
                           ("../x", b"x")]), dest, max_bytes=10_000)
    problems = caught.value.problems
    assert len(problems) == 3, problems
    assert any("more than once" in p for p in problems)
    assert any("also a file" in p for p in problems)


def test_tar_over_the_size_cap_is_refused(tmp_path):
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(ArchiveRefused, match="cannot be unpacked") as caught:
        unpack_tar(tar_of([("a", b"x" * 600), ("b", b"x" * 600)]), dest, max_bytes=1000)
    assert any("1,000 bytes allowed" in p for p in caught.value.problems)
    assert not (dest / "b").exists()


def test_not_a_tar_is_refused(tmp_path):
    with pytest.raises(ArchiveRefused, match="cannot be unpacked"):
        unpack_tar(io.BytesIO(b"this is not a tar file at all" * 40), tmp_path, max_bytes=10_000)


def zip_with(tmp_path, entries, *, mode_of=None) -> Path:
    path = tmp_path / "up.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries:
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            if mode_of and name in mode_of:
                info.external_attr = mode_of[name] << 16
            zf.writestr(info, data)
    return path


def test_a_zip_unpacks(tmp_path):
    dest = tmp_path / "out"
    dest.mkdir()
    got = unpack_zip(zip_with(tmp_path, [("a/b.txt", b"hello"), ("c", b"\0" * 5000)]), dest, max_bytes=10**6)
    assert (got.files, got.bytes) == (2, 5005)
    assert (dest / "a" / "b.txt").read_bytes() == b"hello"


def test_zip_bomb_by_total_declared_size_is_refused_before_writing(tmp_path):
    dest = tmp_path / "out"
    dest.mkdir()
    path = zip_with(tmp_path, [(f"zeros{i}", b"\0" * 200_000) for i in range(5)])
    assert path.stat().st_size < 10_000  # a thousand-fold compression
    with pytest.raises(ArchiveRefused) as caught:
        unpack_zip(path, dest, max_bytes=500_000)
    assert any("declares 1,000,000 bytes" in p for p in caught.value.problems)
    assert list(dest.iterdir()) == []


def test_zip_member_lying_about_its_size_is_refused(tmp_path):
    """A central directory declaring 10 bytes for a member that inflates to 100,000."""
    path = zip_with(tmp_path, [("liar", b"A" * 100_000)])
    raw = bytearray(path.read_bytes())
    cd = raw.rindex(b"PK\x01\x02")
    struct.pack_into("<I", raw, cd + 24, 10)       # uncompressed size in the central directory
    local = raw.index(b"PK\x03\x04")
    struct.pack_into("<I", raw, local + 22, 10)    # and in the local header
    path.write_bytes(bytes(raw))
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(ArchiveRefused):
        unpack_zip(path, dest, max_bytes=10**9)
    assert not (dest / "liar").exists() or (dest / "liar").stat().st_size <= 10


def test_zip_overlapping_entries_are_refused(tmp_path):
    """Two directory entries pointing at the same stored data (the overlapping-file zip bomb)."""
    path = zip_with(tmp_path, [("one", b"B" * 1000), ("two", b"C" * 1000)])
    raw = bytearray(path.read_bytes())
    first = raw.index(b"PK\x01\x02")
    second = raw.index(b"PK\x01\x02", first + 4)
    struct.pack_into("<I", raw, second + 42, struct.unpack_from("<I", raw, first + 42)[0])
    path.write_bytes(bytes(raw))
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(ArchiveRefused) as caught:
        unpack_zip(path, dest, max_bytes=10**9)
    assert any("overlaps" in p for p in caught.value.problems)


@pytest.mark.parametrize("name,mode,needle", [
    ("../../evil", None, "'..'"),
    ("/abs", None, "absolute"),
    ("link", 0o120777, "symbolic link"),
    ("fifo", 0o010644, "special file"),
])
def test_hostile_zip_members_are_refused(tmp_path, name, mode, needle):
    path = zip_with(tmp_path, [("ok", b"x"), (name, b"/etc/passwd")], mode_of={name: mode} if mode else None)
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(ArchiveRefused) as caught:
        unpack_zip(path, dest, max_bytes=10**6)
    assert any(needle in p for p in caught.value.problems), caught.value.problems
    assert list(dest.iterdir()) == []
    assert sorted(os.listdir(tmp_path)) == ["out", "up.zip"]


def test_zip_duplicate_names_are_refused(tmp_path):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate it is told to write
        path = zip_with(tmp_path, [("same", b"1"), ("same", b"2")])
    with pytest.raises(ArchiveRefused) as caught:
        unpack_zip(path, tmp_path, max_bytes=10**6)
    assert any("more than once" in p for p in caught.value.problems)
