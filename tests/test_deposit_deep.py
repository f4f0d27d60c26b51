"""Sources nested deeper than Python's recursion limit (issue 10 follow-up, found by H4).

A source with a file 1,100 folders deep used to kill `deposit` with RecursionError: the scan
walked recursively, staging made folders with os.makedirs and cleaned up with shutil.rmtree,
which all recurse once per level on Python 3.11. Now scanning, staging, bagging, validating
and cleaning up take any depth; the deposit command refuses (exit 2, naming the depth limit,
nothing written) a source deeper than what the storage adapters' walks take today
(`ingest.preflight.MAX_FOLDER_DEPTH`), and one at that limit is preserved end to end:
deposit -> status -> restore.

Every deep tree is removed by the test itself with `strongroom.fstree.remove_tree` (no
recursion): pytest's own tmp cleanup uses shutil.rmtree, which would fail on it in a later
session. None of the helpers used on deep trees here recurse (no os.walk, no rglob).
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import Dict, List

import pytest

from strongroom.fstree import make_dirs, remove_tree
from tests.test_deposit_pipeline import deposit_argv, make_archive, strongroom

DEEP = 1100  # the depth H4's reproduction used; beyond the recursion limit of 1,000


@pytest.fixture
def deep_tmp(tmp_path):
    """tmp_path, emptied without recursion after the test (before pytest's rmtree sees it)."""
    yield tmp_path
    for entry in os.scandir(tmp_path):
        remove_tree(entry.path)


def _deep_source(folder: Path, depth: int) -> Path:
    """top.txt, then `depth` folders named 'd' one inside the other, deep.txt in the last."""
    folder.mkdir()
    (folder / "top.txt").write_bytes(b"top\n")
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):  # by descriptor: no path grows past PATH_MAX while building it
            os.mkdir("d", dir_fd=fd)
            inner = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = inner
        leaf = os.open("deep.txt", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644, dir_fd=fd)
        os.write(leaf, b"deep\n")
        os.close(leaf)
    finally:
        os.close(fd)
    return folder


def _digests(root: Path) -> Dict[str, str]:
    """{relative path: sha256} of every regular file below root, walked with an explicit stack."""
    out: Dict[str, str] = {}
    stack: List[str] = [""]
    while stack:
        rel = stack.pop()
        with os.scandir(os.path.join(root, rel) if rel else root) as it:
            for e in it:
                sub = f"{rel}/{e.name}" if rel else e.name
                if e.is_dir(follow_symlinks=False):
                    stack.append(sub)
                elif e.is_file(follow_symlinks=False):
                    with open(e.path, "rb") as fh:
                        out[sub] = hashlib.sha256(fh.read()).hexdigest()
    return out


def _deep_rel(depth: int) -> str:
    return "/".join(["d"] * depth + ["deep.txt"])


def test_scan_order_and_refusals_match_a_depth_first_walk(tmp_path):
    """The iterative walk lists what the recursive one did, in the same order (bagging order)."""
    from ingest.scan import scan_source

    src = tmp_path / "src"
    for rel in ["b/z.txt", "b/a/x.txt", "a.txt", "c/c/c.txt", "b0.txt", "e/f/g/h.txt"]:
        make_dirs(src / os.path.dirname(rel))
        (src / rel).write_text(rel)
    make_dirs(src / "b" / "empty")
    make_dirs(src / "zz" / "empty too")
    assert [f.relpath for f in scan_source(src).files] == [
        "a.txt", "b/a/x.txt", "b/z.txt", "b0.txt", "c/c/c.txt", "e/f/g/h.txt"]
    assert scan_source(src).empty_dirs == ["b/empty", "zz/empty too"]
    os.symlink("../a.txt", src / "c" / "c" / "link")
    os.mkdir(src / os.fsdecode(b"bad-\xff"))
    (src / "e" / "f" / "unreadable").mkdir()
    os.chmod(src / "e" / "f" / "unreadable", 0)
    try:
        with pytest.raises(Exception) as err:
            scan_source(src)
        problems = err.value.problems
        assert problems[0].startswith("b") and "not valid UTF-8" in problems[0], problems
        assert problems[1].startswith("c/c/link: symbolic link"), problems
        if os.geteuid() != 0:  # root reads any folder
            assert problems[2].startswith("e/f/unreadable: folder cannot be read"), problems
    finally:
        os.chmod(src / "e" / "f" / "unreadable", stat.S_IRWXU)


def test_scan_stage_bag_and_clean_up_a_source_1100_folders_deep(deep_tmp, identifier):
    """The scan (refusals included), staging's mkdir -p, the bag's validation and its discard
    take any depth: each died with RecursionError before."""
    from ingest.bag import discard
    from ingest.deposit import DepositRequest, ingest
    from ingest.scan import scan_source
    from strongroom.errors import InputError

    arch = make_archive(deep_tmp)
    src = _deep_source(deep_tmp / "src", DEEP)
    os.mkfifo(src / "d" / "pipe")  # the refusals still apply below a deep folder
    with pytest.raises(InputError) as err:
        scan_source(src)
    assert any(p.startswith("d/pipe: FIFO") for p in err.value.problems), err.value.problems
    os.unlink(src / "d" / "pipe")
    assert [f.relpath for f in scan_source(src).files] == [_deep_rel(DEEP), "top.txt"]  # sorted, depth first

    config = arch.config
    result = ingest(DepositRequest(source=src, library="PKU", collection="deep", collection_type="self-built",
                                   policy=config.policy_for_type("self-built", None), staging=arch.staging),
                    identifier=identifier)
    (bag,) = result.bags
    assert _digests(bag.path / "data") == _digests(src)
    discard(bag.path)
    assert not bag.path.exists()


def test_deposit_deeper_than_the_limit_is_refused_before_anything_is_written(deep_tmp, capsys):
    from ingest.preflight import MAX_FOLDER_DEPTH
    from tests.test_deposit_refusals import _refused

    arch = make_archive(deep_tmp)
    src = _deep_source(deep_tmp / "src", MAX_FOLDER_DEPTH + 1)
    res = _refused(capsys, arch, src, "depth limit", f"more than {MAX_FOLDER_DEPTH} folders deep", "deep.txt")
    assert len(res.err) < 1500, "the error names the deepest file shortened, not 1,000 characters of path"


def test_deposit_at_the_depth_limit_is_preserved_then_restored(deep_tmp, capsys):
    from ingest.preflight import MAX_FOLDER_DEPTH

    arch = make_archive(deep_tmp)
    src = _deep_source(deep_tmp / "src", MAX_FOLDER_DEPTH)
    done = strongroom(capsys, *deposit_argv(arch, src, "deep"))
    assert done.code == 0, (done.out, done.err)
    (bag,) = done.data["bags"]
    assert bag["preserved"] and bag["files"] == 2, bag
    status = strongroom(capsys, "--config", arch.config_path, "status")
    assert status.code == 0 and "All well" in status.out, (status.out, status.err)
    out = deep_tmp / "restored"
    restored = strongroom(capsys, "--config", arch.config_path, "restore", bag["id"], out)
    assert restored.code == 0, (restored.out, restored.err)
    assert _digests(out / "data") == _digests(src)
