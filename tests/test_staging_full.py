"""Staging that cannot be written is the archive's storage problem, not a fault of the source.

A full (or read-only, or failing) staging disk used to be reported as "<source>: could not stage
N file(s) of the source ... No space left on device", exit 2, rerun_helps false: the depositor was
sent to look at files that are fine, and told a rerun would not help. Now it is one error naming
the staging folder, exit 1, rerun helps, nothing of the deposit is left behind, and the same
command completes once room is made. Errors READING the source stay source problems (exit 2).

The write failure is injected (OSError from the write side, via monkeypatch); test_faults.py
fills a real tmpfs.
"""

from __future__ import annotations

import errno
import os
import pickle
from pathlib import Path

import pytest

from ingest import stage
from tests import faultkit as fk

KiB = 1024


def _deposit(arch: fk.FaultArchive, source: Path, *extra: str) -> fk.Result:
    return fk.inproc(arch, "--json", *extra, "deposit", source, "--library", fk.LIB, "--collection", "stagingfull",
                     "--type", "self-built")


def _left_in_staging(arch: fk.FaultArchive) -> list:
    """Bag folders or work folders of the failed deposit, anywhere in staging."""
    left = []
    incomplete = arch.staging / ".incomplete"
    if incomplete.is_dir():
        left += [str(p) for p in incomplete.iterdir()]
    lib = arch.staging / fk.LIB / "stagingfull"
    if lib.is_dir():
        left += [str(p) for p in lib.iterdir()]
    return left


def _fail_writes_after(monkeypatch, err: int, after: int) -> None:
    """Every write of a staged copy after the first `after` ones fails with `err`."""
    real = stage.write_all
    calls = {"n": 0}

    def write_all(fd, data):
        calls["n"] += 1
        if calls["n"] > after:
            raise OSError(err, os.strerror(err))
        return real(fd, data)

    monkeypatch.setattr(stage, "write_all", write_all)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_enospc_writing_staging_is_one_staging_error_exit_1_and_the_rerun_completes(tmp_path, monkeypatch, workers):
    arch = fk.new_archive(tmp_path / "archive")
    source = fk.make_files(tmp_path / "source", 6, 64 * KiB)
    _fail_writes_after(monkeypatch, errno.ENOSPC, 2)
    res = _deposit(arch, source, "--workers", workers)
    assert res.code == 1, res.text[-2000:]
    staging = os.path.abspath(arch.staging)
    assert f"no space left under staging {staging} (ENOSPC)" in res.text, res.text[-2000:]
    assert "free space and rerun" in res.text
    assert "of the source" not in res.text  # not a per-file source problem
    assert "Traceback" not in res.text
    assert res.data["rerun_helps"] is True, res.data
    assert _left_in_staging(arch) == []
    assert not any(r["state"] in ("verified", "repaired") for r in arch.catalog().replicas().to_pylist())

    monkeypatch.undo()  # room is made
    rerun = _deposit(arch, source, "--workers", workers)
    assert rerun.code == 0, rerun.text[-2000:]
    assert rerun.data["state"] == "preserved"
    assert fk.health_problems(arch, deep=False) == []


def test_read_only_staging_folder_is_a_staging_error_too(tmp_path, monkeypatch):
    arch = fk.new_archive(tmp_path / "archive")
    source = fk.make_files(tmp_path / "source", 2, 4 * KiB)
    real_mkdir = os.mkdir

    def mkdir(path, *a, **kw):
        if os.path.abspath(os.fsdecode(path)).startswith(str(os.path.abspath(arch.staging / ".incomplete"))):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), path)
        return real_mkdir(path, *a, **kw)

    monkeypatch.setattr(os, "mkdir", mkdir)
    res = _deposit(arch, source)
    assert res.code == 1, res.text[-2000:]
    assert f"staging {os.path.abspath(arch.staging)} is read-only (EROFS)" in res.text, res.text[-2000:]
    assert res.data["rerun_helps"] is True
    assert "Traceback" not in res.text


def test_an_error_reading_the_source_stays_a_source_problem(tmp_path, monkeypatch):
    arch = fk.new_archive(tmp_path / "archive")
    source = fk.make_files(tmp_path / "source", 2, 4 * KiB)
    real_readv = os.readv

    def readv(fd, buffers):
        if os.readlink(f"/proc/self/fd/{fd}").endswith("page-001.bin"):
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return real_readv(fd, buffers)

    monkeypatch.setattr(os, "readv", readv)
    res = _deposit(arch, source)
    assert res.code == 2, res.text[-2000:]
    assert "scans/page-001.bin: read error (Input/output error)" in res.text, res.text[-2000:]
    assert "under staging" not in res.text
    assert res.data["rerun_helps"] is False


def test_a_staging_problem_survives_the_trip_from_a_worker_process():
    p = stage.StagingProblem("a/b.tif", errno.EDQUOT, "Disk quota exceeded")
    q = pickle.loads(pickle.dumps(p))
    assert isinstance(q, stage.StagingProblem)
    assert (q.relpath, q.errno, q.strerror, str(q)) == (p.relpath, p.errno, p.strerror, str(p))
    assert "no space left under staging /s (EDQUOT)" in str(stage.staging_error("/s", q.errno, q.strerror))


@pytest.mark.parametrize("forked", [True, False])
def test_enospc_writing_premis_is_the_same_staging_error_forked_or_not(tmp_path, monkeypatch, forked):
    """premis.xml is written by a forked child (strongroom.forked) for big bags: its failure
    reaches the deposit exactly as the inline write's does, and nothing is left behind."""
    from ingest import bag, premis

    monkeypatch.setattr(bag, "PREMIS_FORK_FILES", 0 if forked else 10 ** 9)
    parent = os.getpid()
    writers = []

    def write_premis(path, *args, **kwargs):
        writers.append(os.getpid())  # seen by the test only inline: a child's list is its own
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(premis, "write_premis", write_premis)
    arch = fk.new_archive(tmp_path / "archive")
    source = fk.make_files(tmp_path / "source", 3, 4 * KiB)
    res = _deposit(arch, source)
    assert res.code == 1, res.text[-2000:]
    assert f"no space left under staging {os.path.abspath(arch.staging)} (ENOSPC)" in res.text, res.text[-2000:]
    assert "Traceback" not in res.text
    assert res.data["rerun_helps"] is True
    assert writers == ([] if forked else [parent])
    assert _left_in_staging(arch) == []

    monkeypatch.undo()
    rerun = _deposit(arch, source)
    assert rerun.code == 0, rerun.text[-2000:]
    assert fk.health_problems(arch, deep=False) == []


def _tasks(sizes):
    from ingest.scan import SourceFile

    return [stage.StageTask(SourceFile(f"f{i}", b"/src/f%d" % i, size, 0, 0o644, (1, i)), b"/dst/f%d" % i)
            for i, size in enumerate(sizes)]


def test_chunks_of_staging_work_are_big_for_small_files_and_single_for_large_ones():
    """Small files go to the workers in big chunks (each chunk costs the parent ~1.4 ms), large
    ones one at a time (a worker's last chunk is work the other may wait for)."""
    assert stage.chunk_size(_tasks([16 * KiB] * 20000), 2) == stage.MAX_CHUNK_FILES
    assert stage.chunk_size(_tasks([16 * KiB] * 1000), 2) == 1000 // 16  # an eighth of each worker's share
    assert stage.chunk_size(_tasks([1 << 20] * 20000), 2) == 8  # ~CHUNK_BYTES of reading
    assert stage.chunk_size(_tasks([512 << 20] * 40), 2) == 1
    assert stage.chunk_size(_tasks([0] * 2000), 2) == 2000 // 16  # empty files: no division by zero
    assert stage.chunk_size(_tasks([1]), 4) == 1 and stage.chunk_size([], 2) == 1
