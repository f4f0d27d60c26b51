"""The filesystem storage adapter on real files: atomic never-overwrite puts, crash leftovers,
unwritable and full targets, symbolic links planted inside a target, and the registry."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import multiprocessing
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from ingest.naming import BagId
from storage_adapters.base import (
    FileStat,
    NotFound,
    PutOutcome,
    ReplicaConflict,
    SourceMismatch,
    StorageError,
    UnsafePath,
)
from storage_adapters.filesystem import TEMP_SUFFIX, FilesystemAdapter, temp_name
from strongroom.errors import PreservationError

REPO = Path(__file__).resolve().parents[1]
BAG = BagId.parse("LIB/COLL/20240102T030405Z-1")
OTHER = BagId.parse("LIB/COLL/20240102T030405Z-10")  # shares BAG's name as a string prefix


def digests(data: bytes, algs=("sha256", "md5")) -> dict:
    return {a: hashlib.new(a, data).hexdigest() for a in algs}


def src_file(tmp_path: Path, data: bytes, name: str = "src.bin") -> Path:
    path = tmp_path / "sources" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def put(adapter, tmp_path, relpath, data, bag=BAG, **kw):
    return adapter.put_file(bag, relpath, src_file(tmp_path, data), size=len(data), digests=digests(data), **kw)


def tree(root: Path) -> dict:
    """Every entry under root (names including hidden ones) with its bytes, for before/after checks."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            rel = str(p.relative_to(root))
            out[rel] = None if p.is_dir() or p.is_symlink() else p.read_bytes()
    return out


@pytest.fixture
def root(tmp_path):
    path = tmp_path / "replicas" / "site-a"
    path.mkdir(parents=True)
    return path


@pytest.fixture
def adapter(root):
    return FilesystemAdapter("site-a", "beijing", root)


# ------------------------------------------------------------------------------ basics


def test_put_read_stat_list_round_trip(adapter, root, tmp_path):
    files = {
        "bagit.txt": b"BagIt-Version: 1.0\nTag-File-Character-Encoding: UTF-8\n",
        "data/a.txt": b"alpha\n",
        "data/sub dir/100% cotton.txt": b"percent",
        "data/\u53e4\u7c4d/\u5584\u672c.tif": os.urandom(3 * 2**20 + 17),  # > one copy chunk
        "data/empty": b"",
        "data/.hidden": b"dot files are bag files too",
    }
    for i, (rel, data) in enumerate(sorted(files.items())):
        assert put(adapter, tmp_path, rel, data, mtime=1_600_000_000.25 + i) is PutOutcome.WRITTEN

    for i, (rel, data) in enumerate(sorted(files.items())):
        path = root / "LIB" / "COLL" / BAG.name / rel
        assert path.read_bytes() == data
        assert stat.S_IMODE(path.stat().st_mode) == 0o444  # a stored copy is read-only
        st = adapter.stat_file(BAG, rel)
        assert st == FileStat(size=len(data), mtime=1_600_000_000.25 + i, stored_digests={})
        with adapter.open_file(BAG, rel) as fh:
            assert fh.read() == data
    assert sorted(adapter.list_bag_files(BAG)) == sorted(files)
    assert list(adapter.list_bags()) == [BAG]
    assert adapter.has_bag(BAG) and not adapter.has_bag(OTHER)
    assert adapter.stat_file(BAG, "data/nope") is None
    assert adapter.stat_file(OTHER, "data/a.txt") is None
    with pytest.raises(NotFound, match="not stored here"):
        adapter.open_file(BAG, "data/nope")
    assert adapter.location(BAG, "data/a.txt") == f"{root}/LIB/COLL/{BAG.name}/data/a.txt"


def test_identical_reput_is_a_no_op(adapter, root, tmp_path):
    data = os.urandom(5000)
    assert put(adapter, tmp_path, "data/x.bin", data, mtime=1_500_000_000) is PutOutcome.WRITTEN
    stored = root / "LIB/COLL" / BAG.name / "data/x.bin"
    before = os.stat(stored)
    assert put(adapter, tmp_path, "data/x.bin", data, mtime=1_700_000_000) is PutOutcome.ALREADY_PRESENT
    after = os.stat(stored)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert os.listdir(stored.parent) == ["x.bin"]


@pytest.mark.parametrize("new", [b"same size, other bytes!", b"a different length"])
def test_different_content_under_a_key_is_a_conflict_and_the_stored_file_is_untouched(adapter, root, tmp_path, new):
    old = b"same size, original one"
    put(adapter, tmp_path, "data/x.txt", old)
    stored = root / "LIB/COLL" / BAG.name / "data/x.txt"
    ino = stored.stat().st_ino
    with pytest.raises(ReplicaConflict) as info:
        put(adapter, tmp_path, "data/x.txt", new)
    assert info.value.exit_code == 1
    assert str(info.value).startswith(f"site-a: {stored}: a different file is already stored here")
    assert "not overwriting" in str(info.value)
    assert stored.read_bytes() == old and stored.stat().st_ino == ino
    assert os.listdir(stored.parent) == ["x.txt"]
    # replace_file is the repair path: it does replace, atomically.
    assert adapter.replace_file(BAG, "data/x.txt", src_file(tmp_path, new), size=len(new),
                                digests=digests(new)) is PutOutcome.WRITTEN
    assert stored.read_bytes() == new and os.listdir(stored.parent) == ["x.txt"]


class AppearsMidway:
    """A source stream that, half-way through, makes another file appear under the final name
    (another writer, an rsync): the put must not replace it."""

    def __init__(self, data: bytes, final: Path, other: bytes):
        self.data, self.final, self.other, self.pos = data, final, other, 0

    def read(self, n):
        if self.pos and not self.final.exists():
            self.final.write_bytes(self.other)
        chunk = self.data[self.pos:self.pos + min(n, 1000)]
        self.pos += len(chunk)
        return chunk


@pytest.mark.parametrize("same", [False, True])
def test_a_file_that_appears_during_the_put_is_never_replaced(adapter, root, tmp_path, same):
    data = os.urandom(10_000)
    other = data if same else os.urandom(10_000)
    final = root / "LIB/COLL" / BAG.name / "data/x.bin"
    final.parent.mkdir(parents=True)
    stream = AppearsMidway(data, final, other)
    if same:
        assert adapter.put_file(BAG, "data/x.bin", stream, size=len(data),
                                digests=digests(data)) is PutOutcome.ALREADY_PRESENT
    else:
        with pytest.raises(ReplicaConflict, match="not overwriting"):
            adapter.put_file(BAG, "data/x.bin", stream, size=len(data), digests=digests(data))
    assert stream.pos == len(data)  # the file appeared after the existence check, while copying
    assert final.read_bytes() == other
    assert os.listdir(final.parent) == ["x.bin"]


def test_file_systems_without_hard_links_still_get_atomic_never_overwrite_puts(adapter, root, tmp_path, monkeypatch):
    def no_links(*args, **kwargs):
        raise OSError(errno.EPERM, "Operation not permitted")  # what vfat/exfat answer to link()

    monkeypatch.setattr(os, "link", no_links)
    data = os.urandom(3000)
    assert put(adapter, tmp_path, "data/x.bin", data) is PutOutcome.WRITTEN
    folder = root / "LIB/COLL" / BAG.name / "data"
    assert os.listdir(folder) == ["x.bin"] and (folder / "x.bin").read_bytes() == data
    assert put(adapter, tmp_path, "data/x.bin", data) is PutOutcome.ALREADY_PRESENT
    with pytest.raises(ReplicaConflict):
        put(adapter, tmp_path, "data/x.bin", os.urandom(3000))
    assert (folder / "x.bin").read_bytes() == data and os.listdir(folder) == ["x.bin"]


def test_source_not_matching_its_digests_stores_nothing(adapter, root, tmp_path):
    data = b"what the manifest says"
    bad = src_file(tmp_path, b"what the staged copy has")
    with pytest.raises(SourceMismatch, match="does not match its checksums"):
        adapter.put_file(BAG, "data/x.txt", bad, size=len(b"what the staged copy has"), digests=digests(data))
    with pytest.raises(SourceMismatch, match="not the expected 22"):
        adapter.put_file(BAG, "data/x.txt", bad, size=len(data), digests=digests(data))
    assert list(adapter.list_bag_files(BAG)) == []
    assert os.listdir(root / "LIB/COLL" / BAG.name / "data") == []  # no temp file left either


def test_replace_file_with_bad_bytes_keeps_the_old_copy(adapter, root, tmp_path):
    put(adapter, tmp_path, "data/x.txt", b"good copy")
    with pytest.raises(SourceMismatch):
        adapter.replace_file(BAG, "data/x.txt", src_file(tmp_path, b"bad  copy"), size=9, digests=digests(b"good copy"))
    assert (root / "LIB/COLL" / BAG.name / "data/x.txt").read_bytes() == b"good copy"


def test_streams_are_accepted_as_sources(adapter, tmp_path):
    """Repair copies from another target's open_file stream."""
    data = os.urandom(2 * 2**20 + 3)
    other = FilesystemAdapter("site-b", "wuhan", tmp_path / "b")
    (tmp_path / "b").mkdir()
    other.put_file(BAG, "data/big", src_file(tmp_path, data), size=len(data), digests=digests(data))
    with other.open_file(BAG, "data/big") as stream:
        assert adapter.put_file(BAG, "data/big", stream, size=len(data), digests=digests(data)) is PutOutcome.WRITTEN
    with adapter.open_file(BAG, "data/big") as fh:
        assert hashlib.sha256(fh.read()).hexdigest() == digests(data)["sha256"]


def test_delete_file(adapter, tmp_path):
    put(adapter, tmp_path, "data/extra.txt", b"planted")
    adapter.delete_file(BAG, "data/extra.txt")
    assert adapter.stat_file(BAG, "data/extra.txt") is None
    with pytest.raises(NotFound):
        adapter.delete_file(BAG, "data/extra.txt")


def test_digests_are_required_and_checked(adapter, tmp_path):
    src = src_file(tmp_path, b"x")
    for bad in ({}, {"crc32": "00000000"}, {"sha256": "abc"}):
        with pytest.raises(ValueError):
            adapter.put_file(BAG, "data/x", src, size=1, digests=bad)


# ------------------------------------------------------------------------------ untrusted paths


@pytest.mark.parametrize("relpath", [
    "data/../../../escape.txt", "../escape.txt", "/etc/passwd", "data/a\x00b", "data//x", "data/./x",
    "data/x/", "", "data\\..\\x", "data/.x" + TEMP_SUFFIX,
])
def test_unsafe_bag_paths_are_refused(adapter, root, tmp_path, relpath):
    src = src_file(tmp_path, b"x")
    before = tree(tmp_path)
    with pytest.raises(UnsafePath, match="refused bag path") as info:
        adapter.put_file(BAG, relpath, src, size=1, digests=digests(b"x"))
    assert info.value.exit_code == 1 and "site-a" in str(info.value)
    assert tree(tmp_path) == before
    for call in (adapter.stat_file, adapter.open_file, adapter.delete_file):
        with pytest.raises(UnsafePath):
            call(BAG, relpath)


def test_symlinks_planted_in_the_target_are_never_followed(adapter, root, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(b"not archive content")
    # 1. the bag's data folder is a link to a folder outside the root
    bag_dir = root / "LIB" / "COLL" / BAG.name
    bag_dir.mkdir(parents=True)
    (bag_dir / "data").symlink_to(outside)
    with pytest.raises(UnsafePath, match="symbolic link") as info:
        put(adapter, tmp_path, "data/new.txt", b"payload")
    assert f"{bag_dir}/data" in str(info.value)
    assert sorted(os.listdir(outside)) == ["secret.txt"]
    with pytest.raises(UnsafePath):
        adapter.open_file(BAG, "data/secret.txt")
    with pytest.raises(UnsafePath):
        adapter.stat_file(BAG, "data/secret.txt")
    # the link is listed (so verification names it) but never descended into
    assert list(adapter.list_bag_files(BAG)) == ["data"]
    # 2. a file that is a link to a file outside
    (bag_dir / "data").unlink()
    (bag_dir / "data").mkdir()
    (bag_dir / "data" / "secret.txt").symlink_to(outside / "secret.txt")
    with pytest.raises(UnsafePath):
        adapter.open_file(BAG, "data/secret.txt")
    with pytest.raises(UnsafePath):
        adapter.stat_file(BAG, "data/secret.txt")
    with pytest.raises(UnsafePath):
        put(adapter, tmp_path, "data/secret.txt", b"not archive content")
    assert (outside / "secret.txt").read_bytes() == b"not archive content"
    # 3. a library folder that is a link
    (root / "EVIL").symlink_to(outside)
    evil = BagId.parse("EVIL/COLL/20240102T030405Z-1")
    with pytest.raises(UnsafePath):
        put(adapter, tmp_path, "data/x.txt", b"x", bag=evil)
    assert sorted(os.listdir(outside)) == ["secret.txt"]
    assert list(adapter.list_bags()) == [BAG]  # the linked library is not walked


def test_missing_root_is_an_error_and_is_not_created(tmp_path):
    adapter = FilesystemAdapter("site-c", "shanghai", tmp_path / "not-mounted")
    with pytest.raises(StorageError, match="does not exist") as info:
        put(adapter, tmp_path, "data/x", b"x")
    assert str(info.value).startswith(f"site-c: {tmp_path / 'not-mounted'}: ")
    assert not (tmp_path / "not-mounted").exists()
    with pytest.raises(StorageError):
        list(adapter.list_bags())


# ------------------------------------------------------------------------------ listing


def test_listing_sees_only_the_asked_bag_and_ignores_junk(adapter, root, tmp_path):
    put(adapter, tmp_path, "data/mine.txt", b"1")
    put(adapter, tmp_path, "data/theirs.txt", b"2", bag=OTHER)
    third = BagId.parse("LIB/OTHERCOLL/20240102T030405Z-1")
    put(adapter, tmp_path, "data/third.txt", b"3", bag=third)
    (root / "LIB" / "COLL" / "not-a-bag").mkdir()
    (root / "LIB" / "COLL" / ".20240102T030405Z-2").mkdir()
    (root / "LIB" / "stray-file.txt").write_text("x")
    (root / ".trash").mkdir()
    (root / "LIB" / "COLL" / BAG.name / "data" / (".mine.txt" + TEMP_SUFFIX)).write_text("partial")
    assert list(adapter.list_bag_files(BAG)) == ["data/mine.txt"]
    assert list(adapter.list_bag_files(OTHER)) == ["data/theirs.txt"]
    assert sorted(map(str, adapter.list_bags())) == sorted(map(str, [BAG, OTHER, third]))


# ------------------------------------------------------------------------------ crashes


CRASH_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, sys.argv[1])
    from pathlib import Path
    from ingest.naming import BagId
    from storage_adapters.filesystem import FilesystemAdapter

    class DiesMidway:
        # Gives two 1 MiB chunks, then the process is killed with SIGKILL (kill -9).
        def __init__(self): self.calls = 0
        def read(self, n):
            self.calls += 1
            if self.calls > 2:
                os.kill(os.getpid(), signal.SIGKILL)
            return b"x" * n
    adapter = FilesystemAdapter("site-a", "beijing", Path(sys.argv[2]))
    adapter.put_file(BagId.parse(sys.argv[3]), sys.argv[4], DiesMidway(), size=10 * 2**20,
                     digests={"sha256": "0" * 64})
""")


def crash_while_putting(root: Path, relpath: str) -> None:
    proc = subprocess.run([sys.executable, "-c", CRASH_SCRIPT, str(REPO), str(root), str(BAG), relpath],
                          capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr


def test_leftover_of_a_killed_writer_is_not_listed_and_does_not_block_a_rerun(adapter, root, tmp_path):
    crash_while_putting(root, "data/big.bin")
    folder = root / "LIB/COLL" / BAG.name / "data"
    leftover = folder / temp_name("big.bin")
    assert os.listdir(folder) == [leftover.name]  # the partial bytes never got the final name
    assert leftover.stat().st_size == 2 * 2**20
    assert list(adapter.list_bag_files(BAG)) == []
    assert adapter.stat_file(BAG, "data/big.bin") is None
    assert not adapter.has_bag(BAG)

    data = os.urandom(3 * 2**20)
    assert put(adapter, tmp_path, "data/big.bin", data) is PutOutcome.WRITTEN  # the rerun
    assert os.listdir(folder) == ["big.bin"]
    assert (folder / "big.bin").read_bytes() == data


def test_cleanup_temp_removes_dead_writers_leftovers_only(adapter, root, tmp_path):
    crash_while_putting(root, "data/one.bin")
    crash_while_putting(root, "data/sub/two.bin")
    put(adapter, tmp_path, "data/kept.txt", b"kept")
    folder = root / "LIB/COLL" / BAG.name / "data"
    # A live writer's temp file: locked, as the adapter locks its own.
    live = folder / temp_name("live.bin")
    fd = os.open(live, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert adapter.cleanup_temp(BAG) == 2
        assert sorted(os.listdir(folder)) == sorted([live.name, "kept.txt", "sub"])
        assert os.listdir(folder / "sub") == []
        with pytest.raises(StorageError, match="being written by another process"):
            put(adapter, tmp_path, "data/live.bin", b"late")
        assert live.exists()
    finally:
        os.close(fd)
    assert adapter.cleanup_temp(BAG) == 1  # its writer is gone now
    assert list(adapter.list_bag_files(BAG)) == ["data/kept.txt"]


# ------------------------------------------------------------------------------ unwritable, full


def _mount(*args) -> bool:
    try:
        return subprocess.run(["mount", *args], capture_output=True).returncode == 0
    except FileNotFoundError:
        return False


def _umount(path: Path) -> None:
    subprocess.run(["umount", str(path)], check=True, capture_output=True)


def _put_as_nobody(root: Path, src: Path, relpath: str, size: int, sums: dict, queue) -> None:
    try:
        os.setgid(65534)
        os.setuid(65534)
        FilesystemAdapter("site-a", "beijing", root).put_file(BAG, relpath, src, size=size, digests=sums)
        queue.put(("ok", ""))
    except BaseException as exc:  # report anything: the parent asserts on it
        queue.put((type(exc).__name__, str(exc)))


def test_read_only_target_fails_naming_target_and_path():
    # A world-traversable folder (pytest's own are 0700), so the 'nobody' fallback below can reach it.
    base = Path(tempfile.mkdtemp(prefix="strongroom-ro-"))
    try:
        os.chmod(base, 0o755)
        root = base / "site-a"
        root.mkdir(mode=0o755)
        adapter = FilesystemAdapter("site-a", "beijing", root)
        first = b"stored before the target became read-only"
        (base / "first.txt").write_bytes(first)
        adapter.put_file(BAG, "data/first.txt", base / "first.txt", size=len(first), digests=digests(first))
        data = os.urandom(100_000)
        src = base / "src.bin"
        src.write_bytes(data)
        os.chmod(src, 0o644)
        before = tree(root)
        if os.geteuid() != 0:
            os.chmod(root, 0o555)  # permissions do stop a non-root user
            try:
                with pytest.raises(StorageError) as info:
                    adapter.put_file(OTHER, "data/second.bin", src, size=len(data), digests=digests(data))
                message = str(info.value)
            finally:
                os.chmod(root, 0o755)
        elif _mount("--bind", str(root), str(root)):
            try:
                assert _mount("-o", "remount,ro,bind", str(root)), "cannot remount read-only"
                with pytest.raises(StorageError) as info:
                    adapter.put_file(BAG, "data/second.bin", src, size=len(data), digests=digests(data))
                message = str(info.value)
                assert "read-only file system" in message
            finally:
                _umount(root)
        else:
            # Root ignores permissions: write as 'nobody' into root-owned 0755 folders instead.
            ctx = multiprocessing.get_context("fork")
            queue = ctx.Queue()
            child = ctx.Process(target=_put_as_nobody,
                                args=(root, src, "data/second.bin", len(data), digests(data), queue))
            child.start()
            kind, message = queue.get(timeout=60)
            child.join()
            assert kind == "StorageError", message
        assert message.startswith(f"site-a: {root}"), message
        assert "not writable" in message
        assert tree(root) == before  # nothing half-written, not even a temp file
    finally:
        shutil.rmtree(base)


def test_full_disk_fails_with_no_space_left_and_leaves_no_partial_file(adapter, root, tmp_path, monkeypatch):
    small = tmp_path / "small"
    small.mkdir()
    mounted = _mount("-t", "tmpfs", "-o", "size=64k", "tmpfs", str(small))
    try:
        if not mounted:
            # No mount privilege here: make every write to the temp file fail the way a full disk does.
            real_write = os.write

            def full_write(fd, data):
                if Path(os.readlink(f"/proc/self/fd/{fd}")).name.endswith(TEMP_SUFFIX):
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                return real_write(fd, data)

            monkeypatch.setattr(os, "write", full_write)
        full = FilesystemAdapter("site-small", "here", small)
        data = os.urandom(256 * 1024)  # four times the file system's size
        with pytest.raises(StorageError) as info:
            full.put_file(BAG, "data/huge.bin", src_file(tmp_path, data), size=len(data), digests=digests(data))
        message = str(info.value)
        assert message == f"site-small: {small}/LIB/COLL/{BAG.name}/data/huge.bin: cannot write: no space left on device"
        assert info.value.exit_code == 1
        assert os.listdir(small / "LIB/COLL" / BAG.name / "data") == []  # neither final nor temp name
        assert list(full.list_bag_files(BAG)) == []
        if mounted:
            # The failed put gave its space back: a small file still fits.
            assert full.put_file(BAG, "data/small.txt", src_file(tmp_path, b"fits", "s"), size=4,
                                 digests=digests(b"fits")) is PutOutcome.WRITTEN
    finally:
        if mounted:
            _umount(small)


# ------------------------------------------------------------------------------ registry


def test_registry_builds_adapters_from_config_targets(archive):
    from storage_adapters.registry import open_target

    targets = list(archive.storage.values())
    adapters = [open_target(t) for t in targets]
    assert [a.name for a in adapters] == [t.name for t in targets]
    for adapter, target in zip(adapters, targets):
        assert isinstance(adapter, FilesystemAdapter)
        assert adapter.root == target.root and adapter.site == target.site
        assert adapter.describe() == {"name": target.name, "type": "filesystem", "site": target.site,
                                      "root": str(target.root), "available": True}


def test_registry_s3_is_not_available_yet():
    from policies.config import StorageTarget
    from storage_adapters.registry import open_target

    target = StorageTarget(name="s3-east", type="s3", site="shanghai", root=None,
                           options={"bucket": "strongroom", "credentials": {"access_key_env": "K"}})
    with pytest.raises(StorageError, match="not available yet") as info:
        open_target(target)
    assert str(info.value).startswith("s3-east: ")
    assert isinstance(info.value, PreservationError) and info.value.exit_code == 1
