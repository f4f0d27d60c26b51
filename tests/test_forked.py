"""strongroom.forked: work done by a forked child reports back exactly, and never outlives its parent."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from strongroom.forked import Forked, ForkedFailure
from tests.conftest import REPO


def test_the_work_runs_in_another_process_and_wait_returns_when_it_is_done(tmp_path):
    out = tmp_path / "pid"

    def work():
        time.sleep(0.2)
        out.write_text(str(os.getpid()))

    job = Forked.start("writing pid", work)
    job.wait()
    assert out.read_text() != str(os.getpid())  # done, and not by this process


def test_inline_work_runs_here_and_keeps_its_error_for_wait(tmp_path):
    seen = []

    def work():
        seen.append(os.getpid())
        raise OSError(errno.EACCES, "Permission denied", str(tmp_path / "x"))

    job = Forked.start("writing x", work, inline=True)
    assert seen == [os.getpid()]
    with pytest.raises(PermissionError) as caught:
        job.wait()
    assert caught.value.filename == str(tmp_path / "x")


def test_an_interrupt_of_inline_work_stops_the_caller_at_once():
    def work():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Forked.start("writing x", work, inline=True)


def test_an_oserror_in_the_child_is_raised_in_the_parent_with_its_errno_and_file(tmp_path):
    missing = tmp_path / "no" / "such" / "file"

    job = Forked.start("reading", lambda: missing.read_bytes())
    with pytest.raises(FileNotFoundError) as caught:
        job.wait()
    assert caught.value.errno == errno.ENOENT
    assert caught.value.filename == str(missing)


def test_an_oserror_without_errno_keeps_its_text():
    def work():
        raise OSError("the spill file ends early")

    with pytest.raises(OSError, match="the spill file ends early"):
        Forked.start("reading", work).wait()


def test_any_other_error_is_a_forked_failure_naming_the_work_the_type_and_the_message():
    def work():
        raise ValueError("bad record 7")

    with pytest.raises(ForkedFailure) as caught:
        Forked.start("writing premis.xml", work).wait()
    assert str(caught.value) == "writing premis.xml: ValueError: bad record 7"
    assert caught.value.exit_code == 1 and caught.value.rerun_helps is False


def test_a_child_killed_before_it_reported_is_a_failure_never_a_success():
    job = Forked.start("writing premis.xml", lambda: os.kill(os.getpid(), signal.SIGKILL))
    with pytest.raises(ForkedFailure, match="killed by signal 9 before it said it was done") as caught:
        job.wait()
    assert caught.value.rerun_helps is True


def test_a_child_that_exits_early_is_a_failure_too():
    with pytest.raises(ForkedFailure, match="ended with exit status 3"):
        Forked.start("writing premis.xml", lambda: os._exit(3)).wait()


def test_stop_kills_the_child_at_once(tmp_path):
    out = tmp_path / "late"

    def work():
        time.sleep(5)
        out.write_text("written after stop")

    job = Forked.start("slow work", work)
    began = time.monotonic()
    job.stop()
    assert time.monotonic() - began < 2
    time.sleep(0.2)
    assert not out.exists()
    job.wait()  # already reaped: nothing to wait for


def _gone_or_zombie(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "State:\tZ" in state


def test_the_child_dies_with_its_parent(tmp_path):
    """A killed command (kill -9) leaves no writer behind that could write after its rerun."""
    pid_file, late = tmp_path / "child.pid", tmp_path / "late"
    script = textwrap.dedent(f"""
        import os, sys, time
        sys.path.insert(0, {str(REPO)!r})
        from strongroom.forked import Forked

        def work():
            open({str(pid_file)!r}, "w").write(str(os.getpid()))
            time.sleep(1.5)
            open({str(late)!r}, "w").write("the orphan wrote")

        Forked.start("orphan test", work)
        time.sleep(60)
    """)
    parent = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 20
        while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
            time.sleep(0.05)
        child = int(pid_file.read_text())
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 5
        while not _gone_or_zombie(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _gone_or_zombie(child)
        time.sleep(2)
        assert not late.exists()
    finally:
        parent.kill()


def test_outcomes_still_arrive_where_sigchld_is_ignored(tmp_path):
    """With SIGCHLD ignored the kernel reaps children itself (waitpid: ECHILD): the outcome
    read from the pipe still decides, and a silent child is still a failure."""
    previous = signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    try:
        out = tmp_path / "done"
        Forked.start("writing", lambda: out.write_text("yes")).wait()
        assert out.read_text() == "yes"
        with pytest.raises(FileNotFoundError):
            Forked.start("reading", lambda: (tmp_path / "missing").read_bytes()).wait()
        with pytest.raises(ForkedFailure, match="before it said it was done"):
            Forked.start("writing", lambda: os._exit(0)).wait()
    finally:
        signal.signal(signal.SIGCHLD, previous)
