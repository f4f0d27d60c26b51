"""The stdlib-only verifier (strongroom/offline_verify.py), run as an auditor would run it.

It must need nothing but a bare interpreter: every check that matters runs it as
`/usr/bin/python3 -I SCRIPT` (isolated: no site-packages of the venv, no PYTHONPATH, the
script's own folder not on sys.path), from a scratch folder, on real copies written by a real
deposit. Its BagIt verdicts are held to the Library of Congress conformance suite case by case,
as the project's own validator is, so the two are independent implementations that agree.
"""

from __future__ import annotations

import ast
import base64
import csv
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from catalog.catalog import Catalog
from pipelines.cli import main
from policies.config import load_config, write_default_config
from strongroom import offline_verify

SCRIPT = Path(offline_verify.__file__).resolve()
CONFORMANCE = Path(__file__).resolve().parents[2] / "shared" / "conformance"
BARE_PYTHON = shutil.which("python3", path="/usr/bin:/bin") or sys.executable


def run_bare(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([BARE_PYTHON, "-I", str(SCRIPT), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120, env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"})


def test_the_script_imports_the_standard_library_only():
    tree = ast.parse(SCRIPT.read_text(encoding="utf-8"))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "no relative imports"
            imported.add(node.module.split(".")[0])
    assert imported and imported <= set(sys.stdlib_module_names) | {"__future__"}, imported - set(sys.stdlib_module_names)


def _cases():
    with open(CONFORMANCE / "bagit-conformance-expectations.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize("case", _cases(), ids=lambda c: f"{c['suite_version_dir']}/{c['category']}/{c['bag']}")
def test_conformance_verdicts(case, capsys):
    bag = CONFORMANCE / "bagit-conformance-suite" / case["suite_version_dir"] / case["category"] / case["bag"]
    code = offline_verify.main(["bag", str(bag)])
    out = capsys.readouterr().out
    expected_valid = case["expected"].startswith("valid")
    assert code == (0 if expected_valid else 1), f"{case['note']}\n{out}"
    if not expected_valid:
        assert "PROBLEM " in out
    if case["expected"] == "valid-with-warning":
        assert "warning " in out, out


@pytest.fixture(scope="module")
def deposited(tmp_path_factory):
    base = tmp_path_factory.mktemp("offline")
    src = base / "source"
    (src / "sub dir").mkdir(parents=True)
    (src / "sub dir" / "a b.txt").write_bytes(b"hello\n")
    (src / "中文.txt").write_bytes("善本\n".encode("utf-8") * 100)
    (src / "pct%41.txt").write_bytes(b"100%")
    cfg = write_default_config(base / "archive")
    assert main(["--config", str(cfg), "deposit", str(src), "--library", "LIB", "--collection", "COLL",
                 "--type", "self-built"]) == 0
    assert main(["--config", str(cfg), "audit", "--all", "--deep"]) == 0  # a second checkpoint
    config = load_config(cfg)
    bag = Catalog(config.catalog).bags().column("bag_id").to_pylist()[0]
    return config, bag


@pytest.fixture
def copy_of_target(deposited, tmp_path):
    """A copy of site-a's folder, as an auditor would have it (writable, so it can be damaged)."""
    config, bag = deposited
    dest = tmp_path / "site-a"
    shutil.copytree(config.target("site-a").root, dest, symlinks=True)
    for p in dest.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    return dest, bag


def test_bare_python_finds_a_real_deposit_intact(copy_of_target, tmp_path):
    root, bag = copy_of_target
    done = run_bare("target", str(root), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "INTACT: target" in done.stdout and "1 bag(s)" in done.stdout
    one = run_bare("bag", str(root.joinpath(*bag.split("/"))), cwd=tmp_path)
    assert one.returncode == 0 and "3 file(s)" in one.stdout, one.stdout


@pytest.mark.parametrize("how", ["flip", "truncate", "delete", "extra", "symlink", "manifest"])
def test_bare_python_names_the_damage(copy_of_target, tmp_path, how):
    root, bag = copy_of_target
    bag_dir = root.joinpath(*bag.split("/"))
    victim = bag_dir / "data" / "中文.txt"
    if how == "flip":
        data = bytearray(victim.read_bytes())
        data[5] ^= 1
        victim.write_bytes(bytes(data))
    elif how == "truncate":
        victim.write_bytes(victim.read_bytes()[:-1])
    elif how == "delete":
        victim.unlink()
    elif how == "extra":
        (bag_dir / "data" / "stowaway.txt").write_bytes(b"x")
    elif how == "symlink":
        victim.unlink()
        victim.symlink_to("/etc/hostname")
    else:
        manifest = bag_dir / "manifest-sha256.txt"
        manifest.write_text(manifest.read_text(encoding="utf-8").replace("a", "b", 1), encoding="utf-8")
    done = run_bare("target", str(root), cwd=tmp_path)
    assert done.returncode == 1, done.stdout
    wanted = {"flip": "data/中文.txt: sha256 mismatch", "truncate": "data/中文.txt: sha256 mismatch",
              "delete": "data/中文.txt: is listed in the manifest but is not in the bag",
              "extra": "data/stowaway.txt: is in the bag but not listed",
              "symlink": "data/中文.txt: is a symbolic link",
              "manifest": "manifest-sha256.txt: sha256 mismatch"}[how]
    assert f"PROBLEM {bag}/{wanted}" in done.stdout, done.stdout


def test_usage_errors_exit_2(tmp_path):
    done = run_bare("target", str(tmp_path / "absent"), cwd=tmp_path)
    assert done.returncode == 2 and "not a folder" in done.stderr
    assert run_bare("frobnicate", cwd=tmp_path).returncode == 2


def _checkpoints(root: Path):
    return sorted((root / ".strongroom" / "ledger" / "checkpoints").glob("*.json"))


def test_each_target_carries_this_script_and_a_readme(copy_of_target, tmp_path):
    root, _ = copy_of_target
    data = SCRIPT.read_bytes()
    copy = root / ".strongroom" / "verifier" / f"strongroom-verify-{hashlib.sha256(data).hexdigest()[:16]}.py"
    assert copy.read_bytes() == data
    readme = next((root / ".strongroom" / "verifier").glob("README-*.txt")).read_text(encoding="utf-8")
    assert "python3 -I" in readme and "校验" in readme
    # The copy in storage runs by itself, from the target, and re-checks the ledger there.
    done = subprocess.run([BARE_PYTHON, "-I", str(copy.relative_to(root)), "target", "."], cwd=root,
                          capture_output=True, text=True, timeout=120, env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(_checkpoints(root)) >= 2 and f"{len(_checkpoints(root))} ledger checkpoint(s)" in done.stdout
    assert "ledger head on .: segment" in done.stdout


def _rewrite(path: Path, change) -> None:
    doc = json.loads(path.read_text(encoding="utf-8"))
    change(doc)
    path.write_text(json.dumps(doc, ensure_ascii=False, sort_keys=True, separators=(",", ":")) + "\n", encoding="utf-8")


def _alter_first_event(doc, recompute: bool) -> None:
    seg = doc["segments"][0]
    events = json.loads(seg["canonical_events"])
    column = events["columns"].index("outcome")
    events["values"][column][0] = "failure" if events["values"][column][0] != "failure" else "success"
    seg["canonical_events"] = json.dumps(events, ensure_ascii=False, separators=(",", ":"))
    if recompute:  # a forger who recomputes every hash the JSON carries
        seg["content_sha256"] = hashlib.sha256(seg["canonical_events"].encode("utf-8")).hexdigest()


@pytest.mark.parametrize("how, phrase", [
    ("event", "its events do not hash to its content_sha256"),
    ("event-recomputed", "the segment's own bytes record content_sha256"),
    ("segment-bytes", "do not hash to its file_sha256"),
    ("drop-first", "names a previous checkpoint"),
    ("drop-segment", "where segment 0 was expected"),
])
def test_bare_python_catches_ledger_tampering(copy_of_target, tmp_path, how, phrase):
    root, _ = copy_of_target
    first = _checkpoints(root)[0]
    if how == "event":
        _rewrite(first, lambda d: _alter_first_event(d, recompute=False))
    elif how == "event-recomputed":
        _rewrite(first, lambda d: _alter_first_event(d, recompute=True))
    elif how == "segment-bytes":
        def flip(doc):
            raw = bytearray(base64.b64decode(doc["segments"][0]["parquet_base64"]))
            raw[len(raw) // 2] ^= 1
            doc["segments"][0]["parquet_base64"] = base64.b64encode(bytes(raw)).decode("ascii")
        _rewrite(first, flip)
    elif how == "drop-first":
        first.unlink()
    else:
        def drop(doc):
            doc["events"] -= doc["segments"][0]["events"]
            del doc["segments"][0]
        _rewrite(first, drop)
    done = run_bare("ledger", str(root), cwd=tmp_path)
    assert done.returncode == 1, done.stdout
    assert phrase in done.stdout, done.stdout


def test_two_targets_compared(deposited, tmp_path):
    config, _ = deposited
    roots = [config.target(name).root for name in ("site-a", "site-b")]
    done = run_bare("ledger", *map(str, roots), cwd=tmp_path)
    assert done.returncode == 0, done.stdout
    heads = [line.rsplit(" ", 1)[1] for line in done.stdout.splitlines() if line.startswith("ledger head on")]
    assert len(heads) == 2 and heads[0] == heads[1]


def test_overlapping_checkpoints_of_two_commands_that_finished_at_once_are_fine(copy_of_target, tmp_path):
    """Two commands that both continued the same (here: no) checkpoint leave overlapping ones;
    the verifier accepts that while every checkpoint carrying a segment carries the same one."""
    root, _ = copy_of_target
    first, second = _checkpoints(root)[:2]
    one, two = (json.loads(p.read_text(encoding="utf-8")) for p in (first, second))

    def merged(doc):
        doc["segments"] = one["segments"] + two["segments"]
        doc["first_seq"], doc["previous"] = 0, None
        doc["events"] = one["events"] + two["events"]
    _rewrite(second, merged)
    done = run_bare("ledger", str(root), cwd=tmp_path)
    assert done.returncode == 0, done.stdout

    def other_segment_zero(doc):
        seg = doc["segments"][0]
        seg["canonical_events"] = seg["canonical_events"].replace('"success"', '"warning"', 1)
        seg["content_sha256"] = hashlib.sha256(seg["canonical_events"].encode("utf-8")).hexdigest()
    _rewrite(second, other_segment_zero)
    done = run_bare("ledger", str(root), cwd=tmp_path)
    assert done.returncode == 1 and "segment 0" in done.stdout, done.stdout
