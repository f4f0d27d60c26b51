"""`strongroom identify` as a whole process: what it imports and how it ends (pipelines.entry).

A short identify run used to spend most of its time importing every command (config, storage,
yaml, urllib3), FIDO's `requests` and freeing FIDO's signature tree at exit. These tests hold
the process to what it needs, and prove that skipping the teardown loses no output.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines import cli
from pipelines.entry import STANDALONE, standalone_command
from tests.conftest import REPO


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("startup")
    (folder / "a.pdf").write_bytes(b"%PDF-1.4\n1 0 obj\n<<>>\nendobj\ntrailer\n<<>>\n%%EOF\n")
    (folder / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    (folder / "c.txt").write_text("plain words\n" * 20)
    for i in range(40):
        (folder / f"r{i:02d}.bin").write_bytes(bytes([i]) * (i + 1))
    return folder


@pytest.mark.parametrize("argv, expected", [
    (["identify", "x"], "identify"),
    (["--json", "identify", "x"], "identify"),
    (["--workers", "2", "identify", "x"], "identify"),
    (["--workers=2", "-vv", "--config", "c.yaml", "identify", "x"], "identify"),
    (["--config", "identify", "status"], None),      # "identify" is the config file's name here
    (["--conf", "identify", "status"], None),        # abbreviations: the full parser decides
    (["--help", "identify"], None),
    (["--version"], None),
    (["status"], None),
    (["deposit", "identify"], None),
    ([], None),
])
def test_standalone_command(argv, expected):
    assert standalone_command(argv) == expected


def test_standalone_parser_parses_like_the_full_one(files):
    argv = ["--workers", "2", "-v", "identify", str(files), "--json"]
    lone = vars(cli.build_parser("identify").parse_args(argv))
    full = vars(cli.build_parser().parse_args(argv))
    assert {k: v for k, v in lone.items() if k != "run"} == {k: v for k, v in full.items() if k != "run"}
    assert STANDALONE == ("identify",)


_PROBE = """
import atexit, sys
atexit.register(lambda: sys.stderr.write("TEARDOWN\\n"))
sys.argv = ["strongroom"] + sys.argv[1:]
from pipelines.entry import main
import pipelines.cli
real = pipelines.cli.main
def spy(argv=None):
    code = real(argv)
    heavy = sorted(m for m in sys.modules
                   if m.split(".")[0] in ("requests", "urllib3", "yaml", "catalog", "luigi", "pyarrow")
                   or m in ("policies.config", "policies.model", "pipelines.commands.deposit",
                            "pipelines.commands.audit"))
    sys.stderr.write("HEAVY " + ",".join(heavy) + "\\n")
    return code
pipelines.cli.main = spy
main()
"""


def _probe(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _PROBE, *argv], cwd=REPO, capture_output=True, text=True,
                          timeout=120)


def test_identify_process_imports_only_what_it_needs_and_skips_teardown(files):
    done = _probe("identify", str(files))
    assert done.returncode == 0, done.stderr
    assert "HEAVY \n" in done.stderr          # no config, storage, catalog, yaml, urllib3 or requests
    assert "TEARDOWN" not in done.stderr      # ended by os._exit once everything was flushed
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert len(rows) == 43                    # every row reached the pipe before the process ended
    assert {r["path"].rsplit("/", 1)[-1]: r["puid"] for r in rows}["b.png"].startswith("fmt/")


def test_identify_json_is_complete_without_teardown(files):
    done = _probe("identify", str(files), "--json", "--workers", "2")
    assert done.returncode == 0, done.stderr
    assert "TEARDOWN" not in done.stderr
    assert len(json.loads(done.stdout)) == 43


def test_a_failing_identify_and_other_commands_end_as_usual(files, tmp_path):
    done = _probe("identify", str(tmp_path / "absent"))
    assert done.returncode == 2
    assert "no such file or folder" in done.stderr and "TEARDOWN" in done.stderr
    done = _probe("--version")
    assert done.returncode == 0 and "TEARDOWN" in done.stderr
