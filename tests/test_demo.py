"""The README's main-job command, end to end, on the embedded default."""

import json
from pathlib import Path

from pipelines.cli import main


def test_demo_deposits_restores_and_proves_identity(tmp_path, capsys):
    target = tmp_path / "demo"
    assert main(["--json", "demo", str(target)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["deposit"]["state"] == "preserved"
    bag = out["deposit"]["bags"][0]
    assert {t: r["state"] for t, r in bag["replicas"].items()} == {"site-a": "verified", "site-b": "verified"}
    assert out["restore"] and all(r["identical"] for r in out["restore"])
    assert out["restore"][0]["files"] == bag["files"] == 10
    assert out["status"]["totals"]
    reports = [Path(p) for p in out["reports"]]
    assert sorted(p.name for p in reports) == sorted(
        f"{kind}{lang}.html" for kind in ("preservation", "fixity", "formats") for lang in ("", "-zh"))
    assert all(p.is_file() and p.stat().st_size > 1000 for p in reports)
    # A second run reuses the archive; the same sample again is a duplicate: nothing stored.
    assert main(["--json", "demo", str(target)]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["config_created"] is False
    assert again["deposit"]["state"] == "duplicate" and again["deposit"]["duplicate"]["bags"] == [bag["id"]]


def test_demo_detects_a_restore_that_differs(tmp_path):
    from pipelines.commands.demo import compare_trees

    a, b = tmp_path / "a", tmp_path / "b"
    (a / "x").mkdir(parents=True)
    (b / "x").mkdir(parents=True)
    (a / "x" / "f.txt").write_bytes(b"one")
    (b / "x" / "f.txt").write_bytes(b"two")
    (a / "empty").mkdir()
    assert compare_trees(a, b) == ["empty/: missing from the restore", "x/f.txt: bytes differ"]
