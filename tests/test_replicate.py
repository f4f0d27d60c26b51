"""Replicating a staged BagIt 1.0 bag to a storage target, and verifying what the target holds."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from strongroom import bagit_spec
from strongroom.bag_id import BagId
from storage_adapters.base import ReplicaConflict, SourceMismatch
from storage_adapters.filesystem import FilesystemAdapter
from storage_adapters.replicate import bag_inventory, replicate_bag, verify_replica
from strongroom.errors import PreservationError

REPO = Path(__file__).resolve().parents[1]
BAG = BagId.parse("LIB/COLL/20240102T030405Z-1")
ALGS = ("sha256", "md5")

PAYLOAD = {
    "a.txt": b"alpha\n",
    "100% cotton.txt": b"a name with a percent sign (written %25 in a 1.0 manifest)",
    "line\nbreak.txt": b"a name with a line feed (written %0A)",
    "\u53e4\u7c4d/\u5584\u672c \u7b2c1\u5377.tif": bytes(range(256)) * 4000,
    "nested/deeper/empty.bin": b"",
    "nested/z.bin": b"z" * 70_000,
}


def make_bag(bag_dir: Path, payload=PAYLOAD) -> Path:
    """A BagIt 1.0 bag written with the project's own BagIt writer, as ingest/bag.py does."""
    for rel, data in payload.items():
        path = bag_dir / "data" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    bagit_spec.write_bagit_txt(bag_dir)
    for alg in ALGS:
        bagit_spec.write_manifest(bag_dir / f"manifest-{alg}.txt",
                                  [("data/" + rel, hashlib.new(alg, data).hexdigest()) for rel, data in payload.items()])
    total = sum(len(d) for d in payload.values())
    bagit_spec.write_tag_file(bag_dir / "bag-info.txt", [("Payload-Oxum", f"{total}.{len(payload)}"),
                                                         ("Strongroom-Bag-Id", str(BAG))])
    (bag_dir / "metadata").mkdir()
    (bag_dir / "metadata" / "premis.xml").write_bytes(b"<premis/>\n")
    bagit_spec.write_tag_manifests(bag_dir, ALGS)
    return bag_dir


def all_files(bag_dir: Path) -> dict:
    return {str(p.relative_to(bag_dir)): p.read_bytes() for p in bag_dir.rglob("*") if p.is_file()}


@pytest.fixture
def bag(tmp_path):
    return make_bag(tmp_path / "staging" / BAG.name)


@pytest.fixture
def adapter(tmp_path):
    root = tmp_path / "replicas" / "site-a"
    root.mkdir(parents=True)
    return FilesystemAdapter("site-a", "beijing", root)


def stored(adapter: FilesystemAdapter, relpath: str) -> Path:
    return adapter.root / "LIB" / "COLL" / BAG.name / relpath


# ------------------------------------------------------------------------------ inventory


def test_inventory_covers_every_file_with_digests_from_the_bag_itself(bag):
    files = all_files(bag)
    assert "data/100% cotton.txt" in files and "data/line\nbreak.txt" in files
    assert "%25" in (bag / "manifest-sha256.txt").read_text()  # the names really are encoded on disk
    digests, sizes = bag_inventory(bag)
    assert sorted(digests) == sorted(files) == sorted(sizes)
    for rel, data in files.items():
        assert digests[rel] == {a: hashlib.new(a, data).hexdigest() for a in ALGS}, rel
        assert sizes[rel] == len(data)
    assert {"bagit.txt", "bag-info.txt", "tagmanifest-sha256.txt", "tagmanifest-md5.txt",
            "metadata/premis.xml"} <= set(digests)


def test_inventory_refuses_a_bag_whose_manifests_do_not_match_its_files(bag):
    (bag / "data" / "unlisted.txt").write_bytes(b"not in any manifest")
    (bag / "data" / "a.txt").unlink()
    with pytest.raises(PreservationError) as info:
        bag_inventory(bag)
    problems = "\n".join(info.value.problems)
    assert "data/unlisted.txt: payload file not listed in any payload manifest" in problems
    assert "data/a.txt: listed in manifest-md5.txt but not in the bag" in problems
    assert "data/a.txt: listed in manifest-sha256.txt but not in the bag" in problems
    assert info.value.exit_code == 1


def test_inventory_refuses_symlinks_in_staging(bag, tmp_path):
    (tmp_path / "outside.txt").write_bytes(b"x")
    (bag / "data" / "link.txt").symlink_to(tmp_path / "outside.txt")
    with pytest.raises(PreservationError) as info:
        bag_inventory(bag)
    assert any(p.startswith("data/link.txt: is a symbolic link") for p in info.value.problems)


# ------------------------------------------------------------------------------ replicate


def test_replicate_stores_every_file_and_a_rerun_copies_nothing(bag, adapter):
    files = all_files(bag)
    seen = []
    result = replicate_bag(adapter, bag, BAG, progress=lambda n, b: seen.append((n, b)))
    assert (result.files_total, result.files_written, result.files_already_present) == (len(files), len(files), 0)
    assert result.bytes_written == result.bytes_total == sum(len(d) for d in files.values())
    assert seen[-1] == (len(files), result.bytes_total) and len(seen) == len(files)
    for rel, data in files.items():
        assert stored(adapter, rel).read_bytes() == data
        assert stored(adapter, rel).stat().st_mtime == (bag / rel).stat().st_mtime
    assert sorted(adapter.list_bag_files(BAG)) == sorted(files)

    again = replicate_bag(adapter, bag, BAG)
    assert (again.files_written, again.bytes_written, again.files_already_present) == (0, 0, len(files))
    digests, sizes = bag_inventory(bag)
    check = verify_replica(adapter, BAG, digests, sizes)
    assert check.ok and check.problems == []
    assert (check.files_checked, check.bytes_checked) == (len(files), result.bytes_total)


def test_parallel_replication_gives_the_same_copy(bag, adapter):
    result = replicate_bag(adapter, bag, BAG, workers=4)
    assert result.files_written == len(all_files(bag))
    digests, sizes = bag_inventory(bag)
    assert verify_replica(adapter, BAG, digests, sizes, workers=4).ok


KILLED_REPLICATION = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, sys.argv[1])
    from pathlib import Path
    from strongroom.bag_id import BagId
    from storage_adapters.filesystem import FilesystemAdapter
    from storage_adapters.replicate import replicate_bag

    def die_after_three(files_done, bytes_done):
        if files_done == 3:
            os.kill(os.getpid(), signal.SIGKILL)  # kill -9 in the middle of the bag
    replicate_bag(FilesystemAdapter("site-a", "beijing", Path(sys.argv[2])), Path(sys.argv[3]),
                  BagId.parse(sys.argv[4]), progress=die_after_three)
""")


def test_rerun_after_kill_9_copies_only_what_is_missing(bag, adapter):
    proc = subprocess.run([sys.executable, "-c", KILLED_REPLICATION, str(REPO), str(adapter.root), str(bag), str(BAG)],
                          capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    files = all_files(bag)
    assert len(list(adapter.list_bag_files(BAG))) == 3
    assert adapter.stat_file(BAG, "bagit.txt") is None  # stored last: the bag is visibly incomplete

    result = replicate_bag(adapter, bag, BAG)
    assert (result.files_already_present, result.files_written) == (3, len(files) - 3)
    digests, sizes = bag_inventory(bag)
    assert verify_replica(adapter, BAG, digests, sizes).ok


def test_staged_copy_that_no_longer_matches_its_manifest_is_not_stored(bag, adapter):
    victim = bag / "data" / "nested" / "z.bin"
    victim.write_bytes(b"y" + b"z" * 69_999)  # bit rot in staging, same size
    with pytest.raises(SourceMismatch) as info:
        replicate_bag(adapter, bag, BAG)
    assert "data/nested/z.bin" in str(info.value) and "does not match its checksums" in str(info.value)
    assert adapter.stat_file(BAG, "data/nested/z.bin") is None
    assert adapter.stat_file(BAG, "bagit.txt") is None


def test_a_different_file_already_on_the_target_stops_replication_untouched(bag, adapter):
    other = b"someone else's bytes under this key"
    stored(adapter, "data/a.txt").parent.mkdir(parents=True)
    stored(adapter, "data/a.txt").write_bytes(other)
    with pytest.raises(ReplicaConflict) as info:
        replicate_bag(adapter, bag, BAG)
    assert "data/a.txt" in str(info.value) and info.value.exit_code == 1
    assert stored(adapter, "data/a.txt").read_bytes() == other


# ------------------------------------------------------------------------------ verify


def test_verify_names_corrupted_truncated_missing_and_extra_files(bag, adapter):
    replicate_bag(adapter, bag, BAG)
    digests, sizes = bag_inventory(bag)

    corrupted = stored(adapter, "data/\u53e4\u7c4d/\u5584\u672c \u7b2c1\u5377.tif")
    data = bytearray(corrupted.read_bytes())
    data[500_000] ^= 0x01  # one flipped bit, size unchanged
    corrupted.chmod(0o644)
    corrupted.write_bytes(bytes(data))
    truncated = stored(adapter, "data/100% cotton.txt")
    truncated.chmod(0o644)
    os.truncate(truncated, 10)
    stored(adapter, "data/line\nbreak.txt").unlink()
    stored(adapter, "data/planted.exe").write_bytes(b"MZ")

    deep = verify_replica(adapter, BAG, digests, sizes, deep=True)
    assert not deep.ok
    text = "\n".join(deep.problems)
    assert len(deep.problems) == 4, text
    tif = [p for p in deep.problems if p.startswith("data/\u53e4\u7c4d/\u5584\u672c \u7b2c1\u5377.tif: checksum mismatch (")]
    assert len(tif) == 1 and "sha256 expected" in tif[0] and "md5 expected" in tif[0]
    assert "data/100% cotton.txt: size differs (truncated: 10 bytes stored," in text
    assert "data/line\nbreak.txt: missing" in text
    assert "data/planted.exe: extra file, not in the bag's manifests" in text
    assert deep.damaged == sorted(["data/\u53e4\u7c4d/\u5584\u672c \u7b2c1\u5377.tif", "data/100% cotton.txt"])
    assert (deep.missing, deep.extra) == (["data/line\nbreak.txt"], ["data/planted.exe"])
    assert deep.files_checked == len(digests) - 1

    quick = verify_replica(adapter, BAG, digests, sizes, deep=False)
    assert quick.bytes_checked == 0
    # A quick check sees sizes only: the same-size corruption is for the deep check to find.
    assert sorted(quick.problems) == sorted(p for p in deep.problems if "checksum mismatch" not in p)

    # Restricting the algorithms still finds the damage.
    md5_only = verify_replica(adapter, BAG, digests, sizes, algorithms=["md5"])
    assert any("checksum mismatch (md5 expected" in p for p in md5_only.problems)


def test_verify_reports_a_symlink_planted_in_the_stored_bag(bag, adapter, tmp_path):
    replicate_bag(adapter, bag, BAG)
    digests, sizes = bag_inventory(bag)
    outside = tmp_path / "outside.txt"
    outside.write_bytes(PAYLOAD["a.txt"])  # same bytes: following the link would hide the swap
    target = stored(adapter, "data/a.txt")
    target.unlink()
    target.symlink_to(outside)
    result = verify_replica(adapter, BAG, digests, sizes)
    assert not result.ok
    assert result.damaged == ["data/a.txt"]
    assert result.problems == ["data/a.txt: is a symbolic link inside the storage target; refused (never followed)"]


def test_verify_of_a_bag_that_is_not_there_lists_every_file_missing(bag, adapter):
    digests, sizes = bag_inventory(bag)
    result = verify_replica(adapter, BAG, digests, sizes)
    assert not result.ok and sorted(result.missing) == sorted(digests)
    assert result.files_checked == 0 and result.bytes_checked == 0


# ------------------------------------------------------------------------------ batches


def many_small_files(n: int) -> dict:
    return {f"d{i // 7}/f{i:03d}.bin": hashlib.sha256(str(i).encode()).digest() * (1 + i % 5) for i in range(n)}


class RecordingAdapter(FilesystemAdapter):
    """Records every put_files call (the bag paths of each batch)."""

    def __init__(self, *args):
        super().__init__(*args)
        self.calls = []

    def put_files(self, bag_id, items, *, on_done=None, on_checked=None):
        self.calls.append([i.relpath for i in items])
        return super().put_files(bag_id, items, on_done=on_done, on_checked=on_checked)


def test_replication_goes_in_batches_with_bagit_txt_last_and_alone(tmp_path, monkeypatch):
    import storage_adapters.replicate as replicate_module

    monkeypatch.setattr(replicate_module, "BATCH_FILES", 10)
    bag = make_bag(tmp_path / "staging" / BAG.name, many_small_files(45))
    (tmp_path / "r").mkdir()
    adapter = RecordingAdapter("site-a", "beijing", tmp_path / "r")
    seen = []
    result = replicate_bag(adapter, bag, BAG, progress=lambda n, b: seen.append((n, b)))
    files = all_files(bag)
    assert result.files_written == len(files)
    assert adapter.calls[-1] == ["bagit.txt"]
    assert all("bagit.txt" not in call for call in adapter.calls[:-1])
    assert all(len(call) <= 10 for call in adapter.calls) and len(adapter.calls) == 1 + -(-(len(files) - 1) // 10)
    assert sorted(p for call in adapter.calls for p in call) == sorted(files)
    # progress once per file, counting up to the totals
    assert [n for n, _ in seen] == list(range(1, len(files) + 1))
    assert seen[-1][1] == result.bytes_total and all(a[1] <= b[1] for a, b in zip(seen, seen[1:]))
    digests, sizes = bag_inventory(bag)
    assert verify_replica(adapter, BAG, digests, sizes).ok


def test_parallel_batches_give_the_same_copy_and_count_every_file_once(tmp_path, monkeypatch):
    import storage_adapters.replicate as replicate_module

    monkeypatch.setattr(replicate_module, "BATCH_FILES", 8)
    bag = make_bag(tmp_path / "staging" / BAG.name, many_small_files(60))
    (tmp_path / "r").mkdir()
    adapter = RecordingAdapter("site-a", "beijing", tmp_path / "r")
    seen = []
    result = replicate_bag(adapter, bag, BAG, workers=3, progress=lambda n, b: seen.append(n))
    files = all_files(bag)
    assert (result.files_written, result.files_already_present) == (len(files), 0)
    assert sorted(seen) == list(range(1, len(files) + 1))
    assert adapter.calls[-1] == ["bagit.txt"] and len(adapter.calls) > 3
    digests, sizes = bag_inventory(bag)
    assert verify_replica(adapter, BAG, digests, sizes, workers=3).ok
    again = replicate_bag(adapter, bag, BAG, workers=3)
    assert (again.files_written, again.files_already_present) == (0, len(files))


KILLED_WHILE_WRITING = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, sys.argv[1])
    from pathlib import Path
    from strongroom.bag_id import BagId
    import storage_adapters.filesystem as fs
    from storage_adapters.filesystem import FilesystemAdapter
    from storage_adapters.replicate import replicate_bag

    real = fs._write_all
    calls = [0]
    def write_then_die(fd, data):
        calls[0] += 1
        if calls[0] == 6:
            os.kill(os.getpid(), signal.SIGKILL)  # kill -9 while the batch is being written
        real(fd, data)
    fs._write_all = write_then_die
    replicate_bag(FilesystemAdapter("site-a", "beijing", Path(sys.argv[2])), Path(sys.argv[3]),
                  BagId.parse(sys.argv[4]))
""")


def test_kill_9_while_a_batch_is_written_leaves_no_named_file_and_the_rerun_completes(bag, adapter):
    proc = subprocess.run([sys.executable, "-c", KILLED_WHILE_WRITING, str(REPO), str(adapter.root), str(bag),
                           str(BAG)], capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert list(adapter.list_bag_files(BAG)) == []  # written, not yet flushed: nothing has a name
    leftovers = [p for p in adapter.root.rglob("*") if p.is_file()]
    assert len(leftovers) >= 5 and all(p.name.endswith(".strongroom-part") for p in leftovers)

    files = all_files(bag)
    result = replicate_bag(adapter, bag, BAG)
    assert (result.files_already_present, result.files_written) == (0, len(files))
    assert {p: stored(adapter, p).read_bytes() for p in files} == files
    assert not [p for p in adapter.root.rglob("*") if p.name.endswith(".strongroom-part")]
    digests, sizes = bag_inventory(bag)
    assert verify_replica(adapter, BAG, digests, sizes).ok


def test_files_stored_before_a_kill_9_are_complete(bag, adapter):
    proc = subprocess.run([sys.executable, "-c", KILLED_REPLICATION, str(REPO), str(adapter.root), str(bag), str(BAG)],
                          capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    files = all_files(bag)
    named = list(adapter.list_bag_files(BAG))
    assert named and {p: stored(adapter, p).read_bytes() for p in named} == {p: files[p] for p in named}
