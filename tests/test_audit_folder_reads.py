"""A deep audit of a folder target reads its payload files through the folder descriptors the
adapter keeps for a whole-bag check (`StorageAdapter.reading`, fs_read.FolderReads; issue 11),
not by opening the root and resolving each file's whole path again; with the same refusals,
and a folder replaced while its files were read is never taken for the stored bag.
"""

from __future__ import annotations

import os
import shutil

import pytest

from fixity import audit as A
from storage_adapters import fs_read, safe_open
from storage_adapters.registry import open_target
from tests.test_audit import Archive, copy_archive, deposit, make_source, write_archive

FILES = {**{f"x/f{i:02d}.txt": f"file x {i}\n".encode() * (i + 1) for i in range(20)},
         **{f"y/g{i:02d}.txt": f"file y {i}\n".encode() * (i + 3) for i in range(20)},
         "top.bin": b"\x07" * 900}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    base = tmp_path_factory.mktemp("folder-reads")
    cfg = write_archive(base / "archive")
    return base / "archive", deposit(cfg, make_source(base / "source", FILES))


@pytest.fixture
def arch(built, tmp_path) -> Archive:
    folder, bags = built
    A._EXPECTED_CACHE.clear()
    return copy_archive(folder, tmp_path / "archive", bags)


def _check(arch: Archive, target: str = "site-a") -> A.ReplicaCheck:
    expected = A.ExpectedBag.from_catalog(arch.catalog, arch.bag, arch.config.policy("self-built"))
    return A.check_replica(open_target(arch.config.target(target)), expected, kind=A.DEEP)


def test_payload_files_are_opened_in_kept_folders_not_from_the_root(arch, monkeypatch):
    """No payload file's whole path is resolved from the root; the openat2 calls of the whole
    check (listing, tag files, the folders reached once each) are fewer than its files."""
    assert safe_open.available()   # this kernel has openat2: what the folder target uses
    calls = []
    real = safe_open.openat2

    def counting(dirfd, path, *a, **k):
        calls.append(path)
        return real(dirfd, path, *a, **k)

    monkeypatch.setattr(safe_open, "openat2", counting)
    check = _check(arch)
    assert check.findings == [] and check.files_checked == len(FILES)
    payload = {f"data/{p}" for p in FILES}
    assert [c for c in calls if any(c.endswith("/" + p) for p in payload)] == []
    assert len(calls) < len(FILES)


def test_a_folder_replaced_while_its_files_are_read_is_not_taken_for_the_stored_bag(arch, monkeypatch, tmp_path):
    """data/x is swapped, after its first file was read through the kept descriptor, for a copy
    in which that file is damaged: what is stored now is damaged, and the audit says so."""
    stored = arch.path("site-a", "data/x")
    real = fs_read.FolderReads.open_with_stat
    swapped = []

    def open_with_stat(self, relpath):
        got = real(self, relpath)
        if relpath == "data/x/f00.txt" and not swapped:
            aside = tmp_path / "aside"
            os.rename(stored, aside)
            shutil.copytree(aside, stored)
            damaged = bytearray((stored / "f00.txt").read_bytes())
            damaged[0] ^= 1
            (stored / "f00.txt").write_bytes(bytes(damaged))
            swapped.append(relpath)
        return got

    monkeypatch.setattr(fs_read.FolderReads, "open_with_stat", open_with_stat)
    check = _check(arch)
    assert swapped
    assert [(f.kind, f.path) for f in check.findings] == [(A.CORRUPTED, "data/x/f00.txt")]
    assert check.files_checked == len(FILES)


def test_links_and_special_files_are_still_refused(arch):
    """The single name opened in a kept folder is opened without following it: a link (even to
    the right bytes) and a FIFO are not regular files, and the check never blocks on the FIFO."""
    link = arch.path("site-a", "data/x/f01.txt")
    good = link.read_bytes()
    (arch.folder / "outside.txt").write_bytes(good)
    link.unlink()
    link.symlink_to(arch.folder / "outside.txt")
    fifo = arch.path("site-a", "data/y/g02.txt")
    fifo.unlink()
    os.mkfifo(fifo)
    check = _check(arch)
    assert sorted((f.kind, f.path) for f in check.findings) == [(A.NOT_A_FILE, "data/x/f01.txt"),
                                                                (A.NOT_A_FILE, "data/y/g02.txt")]
