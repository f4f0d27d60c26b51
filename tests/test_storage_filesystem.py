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

from strongroom.bag_id import BagId
from storage_adapters import filesystem as fs_module
from storage_adapters.base import (
    FileStat,
    NotFound,
    PutItem,
    PutOutcome,
    ReplicaConflict,
    SourceMismatch,
    StorageError,
    UnsafePath,
)
from storage_adapters.filesystem import TEMP_SUFFIX, FilesystemAdapter, temp_name

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
        assert st == FileStat(size=len(data), mtime=1_600_000_000.25 + i, stored_digests={},
                              identity=(path.stat().st_dev, path.stat().st_ino), links=1)
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
    monkeypatch.setattr(fs_module, "rename_noreplace", lambda *a: False)  # nor renameat2 (fs_rename)
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
    with pytest.raises(SourceMismatch, match="gave more than 22 bytes, not the expected 22"):
        adapter.put_file(BAG, "data/x.txt", bad, size=len(data), digests=digests(data))
    with pytest.raises(SourceMismatch, match="gave 5 bytes, not the expected 22"):
        adapter.put_file(BAG, "data/x.txt", src_file(tmp_path, b"short", "short"), size=len(data),
                         digests=digests(data))
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
    from strongroom.bag_id import BagId
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


def test_registry_refuses_an_s3_target_whose_credentials_are_not_set(monkeypatch):
    """S3 targets open through the registry now (tests/test_storage_s3.py); without the named
    credential variables that is a configuration error naming the variable, before any request."""
    from policies.config import StorageTarget
    from storage_adapters.registry import open_target
    from strongroom.errors import ConfigError

    monkeypatch.delenv("SR_UNSET_KEY", raising=False)
    target = StorageTarget(name="s3-east", type="s3", site="shanghai", root=None,
                           options={"bucket": "strongroom", "credentials": {"access_key_env": "SR_UNSET_KEY"}})
    with pytest.raises(ConfigError, match="SR_UNSET_KEY") as info:
        open_target(target)
    assert "s3-east" in str(info.value) and info.value.exit_code == 2


# ------------------------------------------------------------------------------ batch put (put_files)


def batch_items(tmp_path: Path, files: dict, mtime=None) -> list:
    out = []
    for i, (rel, data) in enumerate(files.items()):
        src = src_file(tmp_path, data, f"batch-{i}.bin")
        out.append(PutItem(rel, src, len(data), digests(data), mtime))
    return out


def temp_leftovers(root: Path) -> list:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*" + TEMP_SUFFIX))


def final_files(root: Path) -> dict:
    """Bag path -> bytes of every stored file of BAG that has its final name."""
    base = root / "LIB/COLL" / BAG.name
    if not base.exists():
        return {}
    return {str(p.relative_to(base)): p.read_bytes() for p in base.rglob("*")
            if p.is_file() and not p.name.endswith(TEMP_SUFFIX)}


BATCH = {
    "data/a.txt": b"alpha\n",
    "data/sub/b.bin": os.urandom(70_000),
    "data/sub/deeper/c.bin": os.urandom(1_500_000),  # more than one copy chunk
    "data/sub/empty": b"",
    "data/\u53e4\u7c4d/100% d.txt": b"percent and CJK",
    "tagmanifest-sha256.txt": b"0" * 64 + b"  bagit.txt\n",
}


def test_put_files_stores_a_batch_and_an_identical_reput_is_already_present(adapter, root, tmp_path):
    items = batch_items(tmp_path, BATCH, mtime=1_600_000_000.5)
    seen = []
    outcomes = adapter.put_files(BAG, items, on_done=lambda i, o: seen.append((i, o)))
    assert outcomes == [PutOutcome.WRITTEN] * len(BATCH)
    assert sorted(seen) == [(i, PutOutcome.WRITTEN) for i in range(len(BATCH))]
    assert final_files(root) == BATCH and temp_leftovers(root) == []
    for rel in BATCH:
        path = root / "LIB/COLL" / BAG.name / rel
        assert stat.S_IMODE(path.stat().st_mode) == 0o444
        assert path.stat().st_mtime == 1_600_000_000.5
    inodes = {rel: (root / "LIB/COLL" / BAG.name / rel).stat().st_ino for rel in BATCH}

    seen.clear()
    again = adapter.put_files(BAG, batch_items(tmp_path, BATCH, mtime=1_700_000_000),
                              on_done=lambda i, o: seen.append((i, o)))
    assert again == [PutOutcome.ALREADY_PRESENT] * len(BATCH)
    assert sorted(seen) == [(i, PutOutcome.ALREADY_PRESENT) for i in range(len(BATCH))]
    assert {rel: (root / "LIB/COLL" / BAG.name / rel).stat().st_ino for rel in BATCH} == inodes
    assert (root / "LIB/COLL" / BAG.name / "data/a.txt").stat().st_mtime == 1_600_000_000.5
    assert final_files(root) == BATCH and temp_leftovers(root) == []


def test_put_files_mixes_new_and_present_files(adapter, root, tmp_path):
    first = dict(list(BATCH.items())[:3])
    adapter.put_files(BAG, batch_items(tmp_path, first))
    outcomes = adapter.put_files(BAG, batch_items(tmp_path, BATCH))
    assert outcomes == [PutOutcome.ALREADY_PRESENT] * 3 + [PutOutcome.WRITTEN] * (len(BATCH) - 3)
    assert final_files(root) == BATCH and temp_leftovers(root) == []


class FlushLog:
    """Records writes to temp files, flushes and links, to check that no file gets its final
    name before its bytes were made durable (by syncfs of its file system or fsync of it)."""

    def __init__(self, monkeypatch):
        self.events = []
        real_write, real_fsync, real_link, real_syncfs = os.write, os.fsync, os.link, fs_module.syncfs

        def write(fd, data):
            self.events.append(("write", os.fstat(fd).st_ino))
            return real_write(fd, data)

        def fsync(fd):
            st = os.fstat(fd)
            self.events.append(("fsync-dir" if stat.S_ISDIR(st.st_mode) else "fsync-file", st.st_ino))
            return real_fsync(fd)

        def syncfs(fd):
            self.events.append(("syncfs", os.fstat(fd).st_dev))
            return real_syncfs(fd)

        def link(src, dst, *, src_dir_fd=None, dst_dir_fd=None, follow_symlinks=True):
            ino = os.stat(src, dir_fd=src_dir_fd, follow_symlinks=False).st_ino
            self.events.append(("link", ino, os.fstat(dst_dir_fd).st_ino))
            return real_link(src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd, follow_symlinks=follow_symlinks)

        real_rename = fs_module.rename_noreplace

        def rename_noreplace(dir_fd, src, dst):  # naming by renameat2 is logged as a link
            ino = os.stat(src, dir_fd=dir_fd, follow_symlinks=False).st_ino
            done = real_rename(dir_fd, src, dst)
            if done:
                self.events.append(("link", ino, os.fstat(dir_fd).st_ino))
            return done

        monkeypatch.setattr(os, "write", write)
        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "link", link)
        monkeypatch.setattr(fs_module, "syncfs", syncfs)
        monkeypatch.setattr(fs_module, "rename_noreplace", rename_noreplace)

    def kinds(self, kind):
        return [e for e in self.events if e[0] == kind]

    def check_flushed_before_named(self):
        for pos, event in enumerate(self.events):
            if event[0] != "link":
                continue
            ino = event[1]
            last_write = max(i for i, e in enumerate(self.events[:pos]) if e == ("write", ino))
            flushes = [e for e in self.events[last_write:pos] if e[0] == "syncfs" or e == ("fsync-file", ino)]
            assert flushes, f"file {ino} was linked without a flush after its last write"


@pytest.mark.parametrize("trusted", [True, False])
def test_put_files_makes_bytes_durable_before_any_name_and_syncs_each_folder_once(adapter, root, tmp_path,
                                                                                 monkeypatch, trusted):
    if not trusted:  # NFS, SMB, FUSE...: syncfs() is not trusted there, every file is fsynced
        monkeypatch.setattr(fs_module, "syncfs_is_durable", lambda fd: False)
    adapter.batch_files = 4  # 10 files: three batches (4, 4, 2)
    files = {f"data/{'x' if i % 2 else 'y'}/f{i}.bin": os.urandom(1000 + i) for i in range(10)}
    items = batch_items(tmp_path, files)
    log = FlushLog(monkeypatch)
    assert adapter.put_files(BAG, items) == [PutOutcome.WRITTEN] * 10
    assert final_files(root) == files and temp_leftovers(root) == []
    assert len(log.kinds("link")) == 10
    log.check_flushed_before_named()
    if trusted:
        assert len(log.kinds("syncfs")) == 3 and log.kinds("fsync-file") == []
    else:
        assert log.kinds("syncfs") == [] and len(log.kinds("fsync-file")) == 10
    # After each batch's links, each folder holding one of its files is fsynced exactly once.
    links = [i for i, e in enumerate(log.events) if e[0] == "link"]
    batches = [links[0:4], links[4:8], links[8:10]]
    for n, batch in enumerate(batches):
        end = batches[n + 1][0] if n + 1 < len(batches) else len(log.events)
        folder_syncs = [e[1] for e in log.events[batch[-1]:end] if e[0] == "fsync-dir"]
        folders = {log.events[i][2] for i in batch}
        assert sorted(folder_syncs) == sorted(folders)


def test_put_files_never_overwrites_and_stores_nothing_of_a_conflicting_batch(adapter, root, tmp_path):
    folder = root / "LIB/COLL" / BAG.name / "data/sub"
    folder.mkdir(parents=True)
    (folder / "b.bin").write_bytes(b"someone else's bytes")
    ino = (folder / "b.bin").stat().st_ino
    seen = []
    with pytest.raises(ReplicaConflict, match="not overwriting") as info:
        adapter.put_files(BAG, batch_items(tmp_path, BATCH), on_done=lambda i, o: seen.append(i))
    assert str(info.value).startswith(f"site-a: {folder}/b.bin: a different file is already stored here")
    assert (folder / "b.bin").read_bytes() == b"someone else's bytes" and (folder / "b.bin").stat().st_ino == ino
    assert final_files(root) == {"data/sub/b.bin": b"someone else's bytes"}
    assert temp_leftovers(root) == [] and seen == []


class WritesFinalNameOf:
    """A source stream that, while it is read, makes another file appear under the final name of
    an earlier item of the same batch (after that item's existence check, before its link)."""

    def __init__(self, data: bytes, final: Path, other: bytes):
        self.data, self.final, self.other, self.pos = data, final, other, 0

    def read(self, n):
        if not self.final.exists():
            self.final.write_bytes(self.other)
        chunk = self.data[self.pos:self.pos + n]
        self.pos += len(chunk)
        return chunk


@pytest.mark.parametrize("same", [False, True])
def test_put_files_never_replaces_a_file_that_appears_during_the_batch(adapter, root, tmp_path, same):
    first, second = os.urandom(5000), os.urandom(6000)
    other = first if same else os.urandom(5000)
    final = root / "LIB/COLL" / BAG.name / "data/first.bin"
    items = [PutItem("data/first.bin", src_file(tmp_path, first, "1"), len(first), digests(first)),
             PutItem("data/second.bin", WritesFinalNameOf(second, final, other), len(second), digests(second))]
    if same:
        assert adapter.put_files(BAG, items) == [PutOutcome.ALREADY_PRESENT, PutOutcome.WRITTEN]
        assert final_files(root) == {"data/first.bin": first, "data/second.bin": second}
    else:
        with pytest.raises(ReplicaConflict, match="not overwriting"):
            adapter.put_files(BAG, items)
        assert final_files(root) == {"data/first.bin": other}  # untouched; the rest not stored
    assert temp_leftovers(root) == []


def test_put_files_with_a_bad_source_stores_nothing_of_the_batch(adapter, root, tmp_path):
    items = batch_items(tmp_path, BATCH)
    victim = items[2]
    data = bytearray(Path(victim.src).read_bytes())
    data[1000] ^= 1  # bit rot in the staged copy, same size
    Path(victim.src).write_bytes(bytes(data))
    seen = []
    with pytest.raises(SourceMismatch, match="does not match its checksums") as info:
        adapter.put_files(BAG, items, on_done=lambda i, o: seen.append(i))
    assert "data/sub/deeper/c.bin" in str(info.value)
    assert final_files(root) == {} and temp_leftovers(root) == [] and seen == []
    assert list(adapter.list_bag_files(BAG)) == []


def test_put_files_refuses_bad_input_before_writing_anything(adapter, root, tmp_path):
    items = batch_items(tmp_path, BATCH)
    before = tree(root)
    with pytest.raises(ValueError, match="given twice"):
        adapter.put_files(BAG, items + [items[0]])
    with pytest.raises(ValueError, match="hex digits"):
        adapter.put_files(BAG, items + [PutItem("data/z", items[0].src, 6, {"sha256": "abc"})])
    with pytest.raises(UnsafePath, match="refused bag path"):
        adapter.put_files(BAG, items + [PutItem("data/../../x", items[0].src, 6, digests(b"alpha\n"))])
    assert tree(root) == before


def test_put_files_splits_batches_to_stay_under_the_open_file_limit(adapter, root, tmp_path, monkeypatch):
    monkeypatch.setattr(fs_module, "fd_budget", lambda: 16)
    files = {f"data/f{i:03d}.bin": os.urandom(100) for i in range(40)}
    log = FlushLog(monkeypatch)
    assert adapter.put_files(BAG, batch_items(tmp_path, files)) == [PutOutcome.WRITTEN] * 40
    assert final_files(root) == files and temp_leftovers(root) == []
    assert len(log.kinds("syncfs")) >= 3  # at most ~10 files wait at once with 16 descriptors
    log.check_flushed_before_named()


def test_rerun_reads_each_stored_file_once_and_no_source(adapter, root, tmp_path, monkeypatch):
    adapter.put_files(BAG, batch_items(tmp_path, BATCH))
    items = batch_items(tmp_path, BATCH)
    shutil.rmtree(tmp_path / "sources")  # a source that is opened would now fail the put
    hashed = []
    real = fs_module.hash_stream

    def counting(stream, algorithms, *a, **kw):
        size, found = real(stream, algorithms, *a, **kw)
        hashed.append((size, found["sha256"]))
        return size, found

    monkeypatch.setattr(fs_module, "hash_stream", counting)
    assert adapter.put_files(BAG, items) == [PutOutcome.ALREADY_PRESENT] * len(BATCH)
    assert sorted(hashed) == sorted((len(d), digests(d)["sha256"]) for d in BATCH.values())


BATCH_CRASH_SCRIPT = textwrap.dedent("""
    import hashlib, os, signal, sys
    sys.path.insert(0, sys.argv[1])
    from pathlib import Path
    from strongroom.bag_id import BagId
    from storage_adapters.base import PutItem
    from storage_adapters.filesystem import FilesystemAdapter

    root, src_dir, when = Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[5]

    class DiesWhenRead:
        # The 6th file's source: the writer is killed (kill -9) while copying it.
        def read(self, n):
            os.kill(os.getpid(), signal.SIGKILL)

    items = []
    for i, src in enumerate(sorted(src_dir.iterdir())):
        data = src.read_bytes()
        sums = {"sha256": hashlib.sha256(data).hexdigest(), "md5": hashlib.md5(data).hexdigest()}
        source = DiesWhenRead() if when == "writing" and i == 5 else src
        items.append(PutItem("data/" + src.name, source, len(data), sums))

    def on_done(index, outcome):
        if when == "naming" and index == 3:
            os.kill(os.getpid(), signal.SIGKILL)  # some files have their names, the rest wait

    FilesystemAdapter("site-a", "beijing", root).put_files(BagId.parse(sys.argv[4]), items, on_done=on_done)
""")


@pytest.mark.parametrize("when", ["writing", "naming"])
def test_kill_9_in_the_middle_of_a_batch_leaves_only_complete_files_and_the_rerun_completes(adapter, root,
                                                                                          tmp_path, when):
    src_dir = tmp_path / "batch-sources"
    src_dir.mkdir()
    files = {f"f{i:02d}.bin": os.urandom(200_000 + i) for i in range(10)}
    for name, data in files.items():
        (src_dir / name).write_bytes(data)
    proc = subprocess.run([sys.executable, "-c", BATCH_CRASH_SCRIPT, str(REPO), str(root), str(src_dir), str(BAG),
                           when], capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    expected = {"data/" + name: data for name, data in files.items()}
    stored = final_files(root)
    for rel, data in stored.items():
        assert data == expected[rel], f"{rel} has its final name but not its bytes"
    if when == "writing":
        assert stored == {}  # killed before the flush: no file of the batch has a name
        assert len(temp_leftovers(root)) >= 5  # the written temp files were left behind
    else:
        assert 1 <= len(stored) < len(files) and temp_leftovers(root)
    assert sorted(adapter.list_bag_files(BAG)) == sorted(stored)

    outcomes = adapter.put_files(BAG, batch_items(tmp_path, expected))  # the rerun
    assert outcomes.count(PutOutcome.ALREADY_PRESENT) == len(stored)
    assert outcomes.count(PutOutcome.WRITTEN) == len(files) - len(stored)
    assert final_files(root) == expected and temp_leftovers(root) == []


def test_full_disk_in_the_middle_of_a_batch_leaves_no_partial_file(tmp_path, monkeypatch):
    small = tmp_path / "small"
    small.mkdir()
    mounted = _mount("-t", "tmpfs", "-o", "size=256k", "tmpfs", str(small))
    try:
        if not mounted:
            # No mount privilege: temp file writes fail like a full disk once 256 KiB were written.
            real_write = os.write
            written = [0]

            def full_write(fd, data):
                if Path(os.readlink(f"/proc/self/fd/{fd}")).name.endswith(TEMP_SUFFIX):
                    if written[0] + len(data) > 256 * 1024:
                        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                    written[0] += len(data)
                return real_write(fd, data)

            monkeypatch.setattr(os, "write", full_write)
        full = FilesystemAdapter("site-small", "here", small)
        files = {f"data/f{i}.bin": os.urandom(48 * 1024) for i in range(10)}  # 480 KiB > 256 KiB
        seen = []
        with pytest.raises(StorageError) as info:
            full.put_files(BAG, batch_items(tmp_path, files), on_done=lambda i, o: seen.append(i))
        message = str(info.value)
        assert message.startswith(f"site-small: {small}/LIB/COLL/{BAG.name}/data/f"), message
        assert message.endswith(".bin: cannot write: no space left on device"), message
        assert info.value.exit_code == 1 and seen == []
        assert os.listdir(small / "LIB/COLL" / BAG.name / "data") == []  # neither final nor temp names
        assert list(full.list_bag_files(BAG)) == []
        if mounted:
            # The failed batch gave its space back: a smaller batch fits.
            few = dict(list(files.items())[:3])
            assert full.put_files(BAG, batch_items(tmp_path, few)) == [PutOutcome.WRITTEN] * 3
            assert final_files(small) == few
    finally:
        if mounted:
            _umount(small)


def test_default_put_files_loops_over_put_file(adapter, root, tmp_path):
    """The StorageAdapter default (what an adapter without its own batch put gets)."""
    from storage_adapters.base import StorageAdapter

    seen = []
    outcomes = StorageAdapter.put_files(adapter, BAG, batch_items(tmp_path, BATCH),
                                        on_done=lambda i, o: seen.append((i, o)))
    assert outcomes == [PutOutcome.WRITTEN] * len(BATCH) and seen == [(i, PutOutcome.WRITTEN) for i in range(len(BATCH))]
    assert final_files(root) == BATCH
    assert StorageAdapter.put_files(adapter, BAG, batch_items(tmp_path, BATCH)) == [PutOutcome.ALREADY_PRESENT] * len(BATCH)
    with pytest.raises(ValueError, match="given twice"):
        StorageAdapter.put_files(adapter, BAG, batch_items(tmp_path, BATCH) * 2)


# ------------------------------------------------------------------------------ odd objects, moving aside


@pytest.mark.parametrize("use_openat2", [True, False])
def test_replace_never_replaces_an_odd_object_in_place_and_move_aside_keeps_it(adapter, root, tmp_path, monkeypatch,
                                                                               use_openat2):
    from storage_adapters import safe_open
    from storage_adapters.base import OddObject
    from storage_adapters.filesystem import ASIDE_DIR

    monkeypatch.setattr(safe_open, "_AVAILABLE", None if use_openat2 else False)  # None: openat2 where it works
    data = b"good bytes\n"
    put(adapter, tmp_path, "data/x.bin", data)
    put(adapter, tmp_path, "data/y.bin", data)
    bag = root / "LIB" / "COLL" / BAG.name
    x = bag / "data" / "x.bin"
    (bag / "data").chmod(0o755)
    x.unlink()
    x.mkdir()
    (x / "inside.txt").write_bytes(b"someone's file\n")
    src = src_file(tmp_path, data)
    with pytest.raises(OddObject) as info:
        adapter.replace_file(BAG, "data/x.bin", str(src), size=len(data), digests=digests(data))
    assert info.value.key == f"{BAG}/data/x.bin" and info.value.what == "a folder"
    assert (x / "inside.txt").read_bytes() == b"someone's file\n"       # untouched
    where = adapter.move_aside(BAG, info.value.key, "20260102T030405123456Z")
    assert where == f"{root}/{ASIDE_DIR}/20260102T030405123456Z/{BAG}/data/x.bin"
    assert Path(where, "inside.txt").read_bytes() == b"someone's file\n"
    assert adapter.replace_file(BAG, "data/x.bin", str(src), size=len(data), digests=digests(data)) is PutOutcome.WRITTEN
    # The same name moved aside twice in one run: the second goes beside the first, nothing replaced.
    y = bag / "data" / "y.bin"
    y.chmod(0o644)
    y.unlink()
    y.symlink_to(x)
    with pytest.raises(OddObject):
        adapter.open_file(BAG, "data/y.bin")
    (Path(where).parent / "y.bin").write_bytes(b"earlier\n")
    second = adapter.move_aside(BAG, f"{BAG}/data/y.bin", "20260102T030405123456Z")
    assert second.endswith("/data/y.bin.1") and os.path.islink(second)
    assert (Path(where).parent / "y.bin").read_bytes() == b"earlier\n"
    assert [str(b) for b in adapter.list_bags()] == [str(BAG)]           # the aside folder is no library
    assert sorted(adapter.list_bag_files(BAG)) == ["data/x.bin"]


def test_a_bag_of_any_depth_is_listed_and_read(adapter, root, tmp_path):
    """1,100 nested folders: the listing walks with a stack, not recursion (RecursionError before)."""
    from strongroom.fstree import remove_tree

    deep = "data/" + "/".join(["d"] * 1100) + "/f.txt"
    try:
        put(adapter, tmp_path, "data/a.txt", b"a")
        put(adapter, tmp_path, deep, b"deep")
        put(adapter, tmp_path, "data/z.txt", b"z")
        assert list(adapter.list_bag_files(BAG)) == ["data/a.txt", deep, "data/z.txt"]
        with adapter.open_file(BAG, deep) as fh:
            assert fh.read() == b"deep"
        assert adapter.stat_file(BAG, deep).size == 4
    finally:
        remove_tree(root)   # pytest's own clean-up of old temp folders recurses: leave nothing that deep
