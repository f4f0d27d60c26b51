"""A deposit in flat memory (issues 11 and 16): the scan's file list lives on disk, bags are
staged and built one part after the other, and nothing of that changes what is built.

* the split into bags is the same as the whole-list greedy split of before (same bag ids, same
  files in each bag, in the same order);
* the scan's list is an unlinked temporary file, read back identically as often as needed;
* each part is staged only after the bag before it is built (never every bag's files at once);
* the duplicate check still finds a deposit identical to an earlier multi-bag group, and a
  deposit differing only in its last bag is stored;
* a deposit killed while a later part is staged, its first bag already built, resumes.
"""

from __future__ import annotations

import os
import random
import unicodedata
from pathlib import Path
from typing import List

import pytest

from ingest import deposit as deposit_mod
from ingest.scan import scan_source
from ingest.spill import SpilledFiles
from strongroom.bagit_spec import decode_path
from tests.test_deposit_crash import _check_after_kill, _rerun_and_check, run_until_killed
from tests.test_deposit_pipeline import LIB, deposit_argv, make_archive, make_source, strongroom


def _old_plan_parts(files, *, max_bytes: int, max_files: int) -> List[list]:
    """The split as it was before the deposit streamed (a whole list, then cut): the reference."""
    parts: List[list] = [[]]
    used = 0
    for f in files:
        current = parts[-1]
        if current and (used + f.size > max_bytes or len(current) >= max_files):
            parts.append([])
            current = parts[-1]
            used = 0
        current.append(f)
        used += f.size
    return parts


def _sample_tree(root: Path, count: int = 60) -> Path:
    rng = random.Random(7)
    for i in range(count):
        folder = root / f"d{i % 7}" / ("deep" if i % 3 else "")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{i:03d} ü.bin").write_bytes(rng.randbytes(rng.choice([0, 10, 300, 2000])))
    return root


def _walk_reference(root: Path) -> List[tuple]:
    """(relpath, size) of every file, depth first with names sorted (the scan's documented order)."""
    out = []

    def visit(folder: Path, rel: str) -> None:
        for entry in sorted(os.scandir(folder), key=lambda e: e.name):
            r = f"{rel}/{entry.name}" if rel else entry.name
            if entry.is_dir(follow_symlinks=False):
                visit(Path(entry.path), r)
            else:
                out.append((r, entry.stat().st_size))
    visit(root, "")
    return out


def test_the_scan_is_spilled_unlinked_and_reads_back_the_same(tmp_path):
    src = _sample_tree(tmp_path / "src")
    spill_dir = tmp_path / "spill"
    spill_dir.mkdir()
    scan = scan_source(src, spill_dir=str(spill_dir))
    assert isinstance(scan.files, SpilledFiles)          # not a list held in memory
    assert os.listdir(spill_dir) == []                   # unlinked: a killed run leaves nothing
    first = [(f.relpath, f.size) for f in scan.files]
    assert first == _walk_reference(src)
    again = list(scan.files)
    assert [(f.relpath, f.size) for f in again] == first  # every pass reads the same records
    one = again[5]
    st = os.stat(one.abspath)
    assert (one.abspath, one.mtime_ns, one.inode) == (os.fsencode(src) + b"/" + one.relpath.encode(), st.st_mtime_ns,
                                                       (st.st_dev, st.st_ino))
    assert len(scan.files) == len(first) and scan.total_bytes == sum(s for _, s in first)
    scan.files.close()


def test_names_differing_only_in_normalisation_are_found_without_a_list_of_names(tmp_path):
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    nfc, nfd = unicodedata.normalize("NFC", "é.txt"), unicodedata.normalize("NFD", "é.txt")
    (src / "a" / nfc).write_bytes(b"1")
    (src / "a" / nfd).write_bytes(b"2")
    (src / unicodedata.normalize("NFD", "dé")).mkdir()     # no clash: other names in another folder
    (src / unicodedata.normalize("NFD", "dé") / "x").write_bytes(b"3")
    from strongroom.errors import InputError

    with pytest.raises(InputError) as err:
        scan_source(src)
    clashes = [p for p in err.value.problems if "Unicode normalisation" in p]
    assert clashes == [f"{'a/' + nfd!r} and {'a/' + nfc!r}: names differ only in Unicode normalisation (NFC/NFD); "
                       "rename one of them, BagIt treats them as the same file"]


@pytest.mark.parametrize("max_files,max_bytes", [(7, 10 ** 9), (1000, 5000), (4, 2500)])
def test_the_bag_split_is_the_old_one(tmp_path, max_files, max_bytes):
    from ingest.split import count_parts, iter_parts

    src = _sample_tree(tmp_path / "src")
    scan = scan_source(src)
    old = [[f.relpath for f in part] for part in _old_plan_parts(list(scan.files), max_bytes=max_bytes,
                                                                 max_files=max_files)]
    new = [[f.relpath for f in part] for part in iter_parts(scan.files, max_bytes=max_bytes, max_files=max_files)]
    assert new == old and len(old) > 1
    assert count_parts(scan.files, max_bytes=max_bytes, max_files=max_files) == len(old)


def _policy_with(arch, max_files: int) -> None:
    path = arch.config_path.parent / "policies" / "self-built.yaml"
    text = path.read_text("utf-8")
    assert "max_files: 100000" in text
    path.write_text(text.replace("max_files: 100000", f"max_files: {max_files}"), "utf-8")


def _bag_listing(arch, collection: str) -> List[List[str]]:
    """Each final bag's manifest paths, in manifest order (the files of each bag, as bagged)."""
    out = []
    root = arch.target_root("site-a") / LIB / collection
    for bag in sorted(root.iterdir(), key=lambda p: int(p.name.rsplit("-", 1)[1])):
        lines = (bag / "manifest-sha256.txt").read_text("utf-8").splitlines()
        out.append([decode_path(line.split(None, 1)[1], "1.0") for line in lines])
    return out


def test_each_part_is_staged_after_the_bag_before_it_is_built(tmp_path, capsys, monkeypatch):
    arch = make_archive(tmp_path)
    _policy_with(arch, 5)
    source = make_source(tmp_path / "source", small=17, small_size=2048)
    calls = []
    real = deposit_mod.stage_files

    def staged(tasks, *args, **kwargs):
        built = sorted(p.name for p in (arch.staging / LIB / "flat").glob("*")) \
            if (arch.staging / LIB / "flat").is_dir() else []
        calls.append((len(tasks), built))
        return real(tasks, *args, **kwargs)

    monkeypatch.setattr(deposit_mod, "stage_files", staged)
    res = strongroom(capsys, *deposit_argv(arch, source, "flat"))
    assert res.code == 0, res.out + res.err
    bags = [b["id"] for b in res.data["bags"]]
    assert len(bags) == -(-len(_walk_reference(source)) // 5) >= 3
    payload_calls = calls[1:]  # the first stages the (here no) checksum files of the whole deposit
    assert len(payload_calls) == len(bags), calls
    assert all(n <= 5 for n, _ in payload_calls), calls
    # part k is staged when exactly the k bags before it are final in staging
    assert [len(built) for _, built in payload_calls] == list(range(len(bags))), calls
    # the files of each bag are the old whole-list split of the walk, in walk order
    walk = _walk_reference(source)
    old = _old_plan_parts([type("F", (), {"relpath": r, "size": s})() for r, s in walk], max_bytes=10 ** 11,
                          max_files=5)
    assert _bag_listing(arch, "flat") == [["data/" + f.relpath for f in part] for part in old]


def test_a_duplicate_of_a_multi_bag_group_is_still_found(tmp_path, capsys):
    arch = make_archive(tmp_path)
    _policy_with(arch, 4)
    source = make_source(tmp_path / "source", small=10, small_size=512)
    first = strongroom(capsys, *deposit_argv(arch, source, "dup"))
    assert first.code == 0 and len(first.data["bags"]) >= 3, first.out + first.err
    again = strongroom(capsys, *deposit_argv(arch, source, "dup"))
    assert again.code == 0, again.out + again.err
    assert again.data["bags"] == [] and "identical to bag group" in again.out, again.out
    # the same source with its last file changed: not a duplicate, stored as a new group
    last = _walk_reference(source)[-1][0]
    (source / last).write_bytes(b"changed")
    third = strongroom(capsys, *deposit_argv(arch, source, "dup"))
    assert third.code == 0 and len(third.data["bags"]) == len(first.data["bags"]), third.out + third.err
    assert {b["id"] for b in third.data["bags"]}.isdisjoint(b["id"] for b in first.data["bags"])


BOOTSTRAP_SECOND_PART = r'''
import os, signal, sys
import ingest.deposit as m
real = m.stage_files
calls = [0]

def stage_files(tasks, *args, **kwargs):
    calls[0] += 1
    if calls[0] == 3:  # 1: checksum files, 2: part 1, 3: part 2 -- bag 1 is already built
        os.killpg(os.getpgrp(), signal.SIGKILL)
    return real(tasks, *args, **kwargs)

m.stage_files = stage_files
from pipelines.cli import main
sys.exit(main(sys.argv[1:]))
'''


def test_killed_while_a_later_part_is_staged_then_rerun(tmp_path, capsys):
    arch = make_archive(tmp_path)
    _policy_with(arch, 4)
    source = make_source(tmp_path / "source", small=10, small_size=512)
    run_until_killed(arch, source, "killed", tmp_path / "child.log", kill_at="a later part staged",
                     bootstrap=BOOTSTRAP_SECOND_PART)
    assert [p.name for p in (arch.staging / LIB / "killed").iterdir()][0].endswith("-1")  # bag 1 was built
    _check_after_kill(arch, source, "killed")
    data = _rerun_and_check(arch, source, "killed", capsys)
    assert len(data["bags"]) == -(-len(_walk_reference(source)) // 4) >= 3


def test_a_deposit_reads_no_earlier_files_unless_a_group_may_be_its_duplicate(tmp_path, capsys, monkeypatch):
    """earlier_bags: the collection's earlier files are read per group, and only for a group of
    the deposit's exact file count and bytes (a collection of a million files is not loaded
    into every later deposit's memory)."""
    from catalog.catalog import Catalog

    arch = make_archive(tmp_path)
    _policy_with(arch, 4)
    first = strongroom(capsys, *deposit_argv(arch, make_source(tmp_path / "a", small=10, small_size=512), "grow"))
    assert first.code == 0, first.out + first.err
    earlier = {b["id"] for b in first.data["bags"]}
    read = []
    real = Catalog.files

    def files(self, bag_id, *args, **kwargs):
        read.append(bag_id)
        return real(self, bag_id, *args, **kwargs)

    monkeypatch.setattr(Catalog, "files", files)
    other = make_source(tmp_path / "b", small=6, small_size=700, seed="other")
    second = strongroom(capsys, *deposit_argv(arch, other, "grow"))
    assert second.code == 0, second.out + second.err
    assert earlier.isdisjoint(read), read
    again = strongroom(capsys, *deposit_argv(arch, other, "grow"))  # a duplicate of the second group
    assert again.code == 0 and again.data["bags"] == [], again.out
    assert earlier.isdisjoint(read), read
    assert {b["id"] for b in second.data["bags"]} <= set(read)
