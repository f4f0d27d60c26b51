"""Deposits that cannot finish: said what to fix, given up with `deposit --abandon KEY --reason`,
and a resumed deposit that succeeds says nothing of the earlier run's failures.

Real deposits (two filesystem targets, the private clamd, Luigi's local scheduler).
"""

from __future__ import annotations

import hashlib
import shutil

from tests.test_deposit_pipeline import LIB, deposit_argv, make_archive, make_source, strongroom


def _status(capsys, arch, *extra):
    return strongroom(capsys, "--config", str(arch.config_path), "status", *extra)


def test_wrong_supplied_checksums_say_fix_the_source_and_the_deposit_can_be_abandoned(tmp_path, capsys):
    arch = make_archive(tmp_path)
    source = make_source(tmp_path / "source", small=2, small_size=1024)
    (source / "MD5SUMS").write_text(f"{hashlib.md5(b'other').hexdigest()}  readme 100% done.txt\n", "utf-8")

    failed = strongroom(capsys, *deposit_argv(arch, source, "sums", json_out=False))
    assert failed.code == 1
    key = arch.state_dirs()[0].name
    assert "Fix the source" in failed.out, failed.out
    assert f"strongroom deposit --abandon {key} --reason" in failed.out, failed.out
    assert "rerun the same command to resume" not in failed.out
    assert _status(capsys, arch).code == 1

    usage = strongroom(capsys, "--config", str(arch.config_path), "deposit", "--abandon", key)
    assert usage.code == 2 and "--reason" in usage.err, usage.err
    unknown = strongroom(capsys, "--config", str(arch.config_path), "deposit", "--abandon", "no-such-key",
                         "--reason", "x")
    assert unknown.code == 2 and "no-such-key" in unknown.err

    gone = strongroom(capsys, "--config", str(arch.config_path), "--json", "deposit", "--abandon", key,
                      "--reason", "the publisher sends a corrected disk")
    assert gone.code == 0, gone.err
    assert gone.data["reason"] == "the publisher sends a corrected disk"
    assert (arch.state_dirs()[0] / "deposit.json").exists()        # the state is kept aside, not deleted
    events = [e for e in arch.catalog().events().to_pylist() if e["type"] == "deposit abandoned"]
    assert len(events) == 1 and "the publisher sends a corrected disk" in events[0]["detail"]

    status = _status(capsys, arch)
    assert status.code == 0, status.out
    assert "ABANDONED" in status.out and "the publisher sends a corrected disk" in status.out, status.out
    again = strongroom(capsys, "--config", str(arch.config_path), "deposit", "--abandon", key, "--reason", "y")
    assert again.code == 0 and "already abandoned" in again.out

    (source / "MD5SUMS").unlink()                                   # fixed: a fresh deposit, not a resume
    fresh = strongroom(capsys, *deposit_argv(arch, source, "sums"))
    assert fresh.code == 0, fresh.err
    assert fresh.data["deposit"] != key


def test_missing_source_of_an_unfinished_deposit_names_the_abandon_command(tmp_path, capsys):
    arch = make_archive(tmp_path)
    source = make_source(tmp_path / "source", small=2, small_size=1024)
    site_b = arch.target_root("site-b")
    site_b.rmdir()                                                  # site-b not mounted: the deposit stays unfinished
    first = strongroom(capsys, *deposit_argv(arch, source, "gone"))
    assert first.code == 1
    key = first.data["deposit"]
    bag_id = first.data["bags"][0]["id"]
    shutil.rmtree(source)

    res = strongroom(capsys, *deposit_argv(arch, source, "gone", json_out=False))
    assert res.code == 2
    assert f"strongroom deposit --abandon {key} --reason" in res.err, res.err
    assert strongroom(capsys, "--config", str(arch.config_path), "deposit", "--abandon", key,
                      "--reason", "source withdrawn").code == 0
    assert arch.bag_folder("site-a", bag_id).is_dir()                # a verified copy is never deleted
    site_b.mkdir()                                                  # mounted again: nothing else needs action
    status = _status(capsys, arch)
    assert status.code == 0, status.out


def test_a_resumed_deposit_that_succeeds_prints_no_earlier_failure(tmp_path, capsys):
    arch = make_archive(tmp_path)
    source = make_source(tmp_path / "source", small=2, small_size=1024)
    site_b = arch.target_root("site-b")
    site_b.rmdir()
    first = strongroom(capsys, *deposit_argv(arch, source, "resume", json_out=False))
    assert first.code == 1 and "failed: Replicate" in first.out
    failures = arch.state_dirs()[0] / "failures"
    stale = sorted(failures.glob("*.json"))[0]
    shutil.copy(stale, failures / "Replicate_stale_left_by_a_killed_worker.json")
    site_b.mkdir()

    rerun = strongroom(capsys, *deposit_argv(arch, source, "resume", json_out=False))
    assert rerun.code == 0, rerun.out
    assert "Preserved" in rerun.out
    assert "failed:" not in rerun.out, rerun.out
    assert strongroom(capsys, *deposit_argv(arch, source, "resume2")).data["failures"] == []
    assert LIB in rerun.out
