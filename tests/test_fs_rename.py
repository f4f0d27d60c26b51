"""storage_adapters.fs_rename: one renameat2(RENAME_NOREPLACE) names a stored file, never replacing one."""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os

import pytest

from storage_adapters import fs_rename
from storage_adapters import filesystem as fs_module
from storage_adapters.base import PutItem, PutOutcome
from storage_adapters.filesystem import FilesystemAdapter
from strongroom.bag_id import BagId


@pytest.fixture
def folder(tmp_path):
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    yield tmp_path, fd
    os.close(fd)


def test_renames_when_the_name_is_free_and_never_replaces(folder):
    path, fd = folder
    (path / "tmp").write_bytes(b"new")
    assert fs_rename.rename_noreplace(fd, "tmp", "name") is True
    assert sorted(os.listdir(path)) == ["name"] and (path / "name").read_bytes() == b"new"
    (path / "tmp2").write_bytes(b"other")
    with pytest.raises(FileExistsError):
        fs_rename.rename_noreplace(fd, "tmp2", "name")
    assert (path / "name").read_bytes() == b"new" and (path / "tmp2").read_bytes() == b"other"


def test_says_so_where_the_file_system_does_not_offer_it(folder, monkeypatch):
    path, fd = folder
    (path / "tmp").write_bytes(b"x")

    def unsupported(*args):
        ctypes.set_errno(errno.EINVAL)
        return -1

    monkeypatch.setattr(fs_rename, "_renameat2", unsupported)
    monkeypatch.setattr(fs_rename, "_offered", None)
    assert fs_rename.rename_noreplace(fd, "tmp", "name") is False
    assert os.listdir(path) == ["tmp"]


def test_put_files_names_each_file_by_one_rename_and_leaves_no_temp(tmp_path, monkeypatch):
    links = []
    real_link = os.link
    monkeypatch.setattr(os, "link", lambda *a, **kw: (links.append(a), real_link(*a, **kw))[1])
    (tmp_path / "src").mkdir()
    items = []
    for i in range(5):
        data = os.urandom(100 + i)
        src = tmp_path / "src" / f"f{i}"
        src.write_bytes(data)
        items.append(PutItem(f"data/f{i}.bin", src, len(data), {"sha256": hashlib.sha256(data).hexdigest()},
                             None))
    (tmp_path / "root").mkdir()
    adapter = FilesystemAdapter("t", "site", tmp_path / "root")
    bag = BagId.parse("LIB/COLL/20260101T000000Z-1")
    assert adapter.put_files(bag, items) == [PutOutcome.WRITTEN] * 5
    stored = tmp_path / "root" / "LIB" / "COLL" / bag.name / "data"
    assert sorted(os.listdir(stored)) == [f"f{i}.bin" for i in range(5)]
    assert links == [] and fs_module.rename_noreplace is fs_rename.rename_noreplace
