"""Progress people can read (issue 18, item 5): the model of a phase line, bytes within a file,
one display for several processes, and a real deposit under a pseudo-terminal."""

from __future__ import annotations

import fcntl
import io
import multiprocessing
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from pipelines.progress import PROGRESS_MODE, PROGRESS_SOCKET, PhaseLine, describe, phase
from pipelines.progress_display import Hub
from strongroom import byte_ticks
from strongroom.checksums import MultiHasher
from tests.test_deposit_pipeline import LIB, make_archive, make_source

REPO = Path(__file__).resolve().parents[1]
COUNTS = re.compile(r"(\d[\d,]*)/(\d[\d,]*) files")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][0-9A-B]")


def _pairs(text: str):
    return [(int(a.replace(",", "")), int(b.replace(",", ""))) for a, b in COUNTS.findall(text)]


def _wait_for(condition, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "the display never got there"
        time.sleep(0.02)


def test_counters_never_exceed_totals():
    line = PhaseLine("replicate site-a", total_bytes=1000, total_files=2, started=0.0)
    line.tick(5000)                    # a file read twice (a stored copy compared first)
    line.files_done(3, 1400)           # a callback counting more than it was told (tag files)
    assert line.shown_bytes == 1000 and line.shown_files == 2
    text = describe(line, now=2.0)
    assert all(a <= b for a, b in _pairs(text)), text
    assert "100%" in text


def test_finished_file_bytes_leave_the_partial_count():
    line = PhaseLine("stage", total_bytes=300, total_files=3, started=0.0)
    line.tick(80)                      # inside the first file
    assert line.shown_bytes == 80
    line.files_done(1, 100)            # the first file done: its 80 ticked bytes are not counted twice
    assert line.shown_bytes == 100
    line.tick(50)
    assert line.shown_bytes == 150
    line.finish(True, now=3.0)
    assert (line.shown_files, line.shown_bytes) == (3, 300)
    assert "done in 0:03: 3/3 files, 300 B" in describe(line, now=9.0)


def test_units_are_the_summaries_decimal_three_figures():
    line = PhaseLine("verify site-b", total_bytes=1_500_000_000, total_files=3045, started=0.0)
    line.files_done(1200, 451_000_000)
    text = describe(line, now=10.0)
    assert "451 MB / 1.5 GB" in text and "45.1 MB/s" in text, text
    assert "1,200/3,045 files" in text and "30%" in text
    assert "ETA 0:23" in text
    assert not re.search(r"[KMGT]iB|\d{4,}\s?[KMG]?B\b", text), text


def test_bytes_within_one_file_move_the_line():
    """Hashing one 24 MiB 'file' moves its line long before the file is done (old: 0 % until the end)."""
    with Hub(stream=io.StringIO()) as hub:
        with phase("stage", 30 << 20, 1) as update:
            hasher = MultiHasher(["sha256"])
            chunk = bytes(1 << 20)
            for _ in range(24):
                hasher.update(chunk)
            _wait_for(lambda: hub.display.lines() and hub.display.lines()[0].shown_bytes >= 20 << 20)
            line = hub.display.lines()[0]
            assert line.files == 0 and line.finished is None
            update(1, 30 << 20)
        _wait_for(lambda: hub.display.lines()[0].finished is not None)
    assert byte_ticks._sink is None and PROGRESS_SOCKET not in os.environ


def _child_phase(label: str) -> None:
    with phase(label, 8 << 20, 2) as update:
        MultiHasher(["md5"]).update(bytes(8 << 20))
        update(2, 8 << 20)


def test_phases_of_other_processes_draw_on_one_display():
    """Two worker processes (as Luigi's --workers 2 forks) each get their own line, drawn by the parent."""
    out = io.StringIO()
    with Hub(stream=out) as hub:
        ctx = multiprocessing.get_context("fork")
        children = [ctx.Process(target=_child_phase, args=(f"replicate site-{x}",)) for x in "ab"]
        for child in children:
            child.start()
        for child in children:
            child.join(20)
            assert child.exitcode == 0
        _wait_for(lambda: len(hub.display.lines()) == 2 and all(x.finished for x in hub.display.lines()))
        rendered = hub.display.render()
    assert sorted(x.split()[0] + " " + x.split()[1] for x in rendered) == ["replicate site-a", "replicate site-b"]
    assert all("done in" in x and "2/2 files, 8.39 MB" in x for x in rendered), rendered


def _env() -> dict:
    """The test's environment without any progress setting of its own: the CLI decides."""
    return {k: v for k, v in os.environ.items() if k not in (PROGRESS_SOCKET, PROGRESS_MODE)}


def _run_under_pty(argv, env) -> tuple:
    """Run the CLI with stderr on a pseudo-terminal (160 columns); (exit code, stdout, all stderr output)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 160, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "pipelines", *argv], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=slave, cwd=str(REPO), env=env)
    os.close(slave)
    seen = b""
    try:
        while True:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not data:
                    break
                seen += data
            elif proc.poll() is not None:
                break
        out = proc.stdout.read().decode("utf-8")
        return proc.wait(60), out, seen.decode("utf-8", "replace")
    finally:
        os.close(master)


def test_deposit_at_a_terminal_shows_each_phase_once_and_no_overflow(tmp_path):
    arch = make_archive(tmp_path)
    source = make_source(tmp_path / "src", small=4, small_size=4096, big=(3 << 20,))
    argv = ["--config", str(arch.config_path), "--workers", "2", "deposit", str(source), "--library", LIB,
            "--collection", "progress", "--type", "self-built"]
    env = _env()
    code, out, err = _run_under_pty(argv, env)
    assert code == 0, out + err
    text = ANSI.sub("\n", err)
    final = {}
    for row in text.splitlines():
        words = row.split()
        if "done in" in row:
            final[" ".join(words[:2]) if words[0] in ("replicate", "verify") else words[0]] = row
    assert set(final) == {"stage", "validate", "replicate site-a", "replicate site-b", "verify site-a",
                          "verify site-b"}, text[-2000:]
    pairs = _pairs(text)
    assert pairs and all(done <= total for done, total in pairs), [p for p in pairs if p[0] > p[1]]
    # replicate and verify count the bag's tag files too: their totals are above the 8 payload files
    assert _pairs(final["replicate site-a"])[0][1] > 8 and _pairs(final["verify site-b"])[0][1] > 8
    assert not re.search(r"[KMGT]iB", text)


@pytest.mark.parametrize("flag, shown", [(None, False), ("--progress", True)])
def test_deposit_not_at_a_terminal_is_quiet_unless_asked(tmp_path, flag, shown):
    arch = make_archive(tmp_path)
    source = make_source(tmp_path / "src", small=2, small_size=1024)
    env = _env()
    proc = subprocess.run([sys.executable, "-m", "pipelines", "--config", str(arch.config_path), "deposit",
                           str(source), "--library", LIB, "--collection", "quiet", "--type", "self-built",
                           *([flag] if flag else [])], capture_output=True, text=True, cwd=str(REPO), env=env,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert ("verify site-b" in proc.stderr and "done in" in proc.stderr) is shown, proc.stderr
    if not shown:
        assert "files" not in proc.stderr and "\x1b[" not in proc.stderr


def test_no_progress_at_a_terminal(tmp_path):
    arch = make_archive(tmp_path)
    source = make_source(tmp_path / "src", small=2, small_size=1024)
    env = _env()
    code, out, err = _run_under_pty(["--no-progress", "--config", str(arch.config_path), "deposit", str(source),
                                     "--library", LIB, "--collection", "quiet", "--type", "self-built"], env)
    assert code == 0, out + err
    assert "done in" not in err and "files" not in err, err


def test_deposit_with_stderr_to_a_file_ends_with_every_phase_and_its_rate(tmp_path):
    """`deposit --progress 2> log` (issue 18, note K): every phase's final line is a whole line (the
    last one, verify of the last target, was left without its newline, so line tools lost it) and
    every phase that moves bytes says its rate, a phase shorter than a second too."""
    arch = make_archive(tmp_path)
    source = make_source(tmp_path / "src", small=4, small_size=4096, big=(2 << 20,))
    log = tmp_path / "log"
    with open(log, "w") as err:
        proc = subprocess.run([sys.executable, "-m", "pipelines", "--config", str(arch.config_path), "deposit",
                               str(source), "--library", LIB, "--collection", "logged", "--type", "self-built",
                               "--progress"], stderr=err, stdout=subprocess.PIPE, cwd=str(REPO), env=_env(),
                              timeout=120)
    text = log.read_text("utf-8")
    assert proc.returncode == 0, text
    whole = [row[:-1] for row in text.splitlines(keepends=True) if row.endswith("\n")]
    final = {}
    for row in whole:
        words = row.split()
        if "done in" in row:
            final[" ".join(words[:2]) if words[0] in ("replicate", "verify") else words[0]] = row
    assert set(final) == {"stage", "validate", "replicate site-a", "replicate site-b", "verify site-a",
                          "verify site-b"}, text
    for name, row in final.items():
        if name != "validate":  # validate counts files only
            assert re.search(r"\(\d[\d.]* [kMGT]?B/s\)$", row), row
    assert "\x1b[" not in text


def _late_phase(ready) -> None:
    with phase("verify site-b", 1000, 1) as update:
        ready.set()
        time.sleep(0.4)
        update(1, 1000)


def test_the_display_waits_for_a_phase_ending_as_the_run_ends():
    """A worker's phase still ending when the run returns is drained, not cut off."""
    ctx = multiprocessing.get_context("fork")
    out = io.StringIO()
    with Hub(stream=out) as hub:
        ready = ctx.Event()
        child = ctx.Process(target=_late_phase, args=(ready,))
        child.start()
        assert ready.wait(10)
    child.join(10)
    assert [x.finished is not None and x.ok for x in hub.display.lines()] == [True]
    assert out.getvalue().startswith("verify site-b") and out.getvalue().endswith("/s)\n"), out.getvalue()
