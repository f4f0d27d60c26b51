"""Staging that fills up while a deposit writes its own state is a staging error, not a traceback.

A deposit keeps its progress under staging/.state/<deposit>/ (deposit.json, bags.json, one
marker per finished step, the event journal, done.json). When staging was full at one of those
writes, the deposit stopped with a raw `OSError: [Errno 28] No space left on device: '<path>'`.
Now every state write (pipelines.flow.write_json_atomic) raises the same StagingError the staging
phase raises: exit 1, naming the staging folder, "free space and rerun", rerun_helps true; and the
same command, once room is made, resumes and completes.

The fault is injected (OSError(ENOSPC) from the atomic write, via monkeypatch) on one chosen
state file; test_faults.py fills a real tmpfs.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from strongroom import durable
from tests import faultkit as fk

KiB = 1024


def _deposit(arch: fk.FaultArchive, source: Path) -> fk.Result:
    return fk.inproc(arch, "--json", "deposit", source, "--library", fk.LIB, "--collection", "statefull",
                     "--type", "self-built")


def _fail_state_write(monkeypatch, arch: fk.FaultArchive, name_ends: str) -> dict:
    """The atomic write of the state file whose name ends with `name_ends` fails with ENOSPC."""
    real = durable.atomic_write_bytes
    state = os.path.abspath(arch.staging / ".state")
    hits = {"n": 0}

    def atomic_write_bytes(path, data):
        where = os.path.abspath(os.fspath(path))
        if where.startswith(state + os.sep) and where.endswith(name_ends):
            hits["n"] += 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), where)
        return real(path, data)

    monkeypatch.setattr(durable, "atomic_write_bytes", atomic_write_bytes)
    return hits


@pytest.mark.parametrize("state_file,in_task", [
    ("deposit.json", False),        # written while the deposit is opened, before any task runs
    ("bags.json", True),            # a step's marker, written inside a Luigi task
    (".done", True),                # the event journal (pipelines.flow.append_once)
    (os.sep + "done.json", True),   # the last marker, after every replica is verified and registered
])
def test_enospc_writing_the_deposit_state_is_a_staging_error_and_the_rerun_completes(tmp_path, monkeypatch,
                                                                                      state_file, in_task):
    arch = fk.new_archive(tmp_path / "archive")
    source = fk.make_files(tmp_path / "source", 3, 4 * KiB)
    hits = _fail_state_write(monkeypatch, arch, state_file)
    res = _deposit(arch, source)
    assert hits["n"] >= 1, "the fault was never hit"
    assert res.code == 1, res.text[-2000:]
    staging = os.path.abspath(arch.staging)
    assert f"no space left under staging {staging} (ENOSPC)" in res.text, res.text[-2000:]
    assert "free space and rerun" in res.text
    assert "Errno 28" not in res.text and "OSError" not in res.text
    assert "nothing of this deposit was kept" not in res.text  # its state so far is kept: the rerun resumes
    assert "Traceback" not in res.text
    if in_task:   # the task's failure record, reported as the deposit's outcome
        assert res.data["rerun_helps"] is True, res.data
        assert res.data["state"] == "incomplete"
    else:         # raised before any task: the CLI's one error line
        doc = json.loads(res.out)   # --json: the error is the one JSON document on stdout (issue 18)
        assert doc["ok"] is False and doc["exit_code"] == 1 and "no space left under staging" in doc["error"]
        assert res.err.startswith(f"strongroom deposit: error: no space left under staging {staging} "), res.err

    monkeypatch.undo()  # room is made
    rerun = _deposit(arch, source)
    assert rerun.code == 0, rerun.text[-2000:]
    assert rerun.data["state"] == "preserved"
    assert fk.health_problems(arch, deep=False) == []


def test_a_failed_state_write_is_a_staging_error_only_under_the_state_folder(tmp_path, monkeypatch):
    from pipelines import flow
    from strongroom.errors import StagingError

    def full(path, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.fspath(path))

    monkeypatch.setattr(durable, "atomic_write_bytes", full)
    staging = tmp_path / "staging"
    with pytest.raises(StagingError) as caught:
        flow.write_json_atomic(staging / flow.STATE_DIR / "KEY" / "bags.json", {"bags": []})
    err = caught.value
    assert (err.exit_code, err.rerun_helps) == (1, True)
    assert str(err) == (f"no space left under staging {staging} (ENOSPC) (writing the deposit's state "
                        f"{os.path.join(flow.STATE_DIR, 'KEY', 'bags.json')}): free space and rerun; the deposit's "
                        "state so far is kept and the rerun resumes from it")
    with pytest.raises(OSError) as other:   # not a deposit's state: left as it is
        flow.write_json_atomic(tmp_path / "elsewhere" / "x.json", {})
    assert not isinstance(other.value, StagingError) and other.value.errno == errno.ENOSPC
