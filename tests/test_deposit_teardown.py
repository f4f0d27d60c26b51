"""A deposit ends without interpreter teardown (issue 11, `pipelines.entry.skip_teardown`), and
loses nothing by it: run as a whole process, its --json document is complete, every replica
is verified and the rerun finds the deposit finished."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.test_deposit_pipeline import REPO, check_preserved, deposit_argv, make_archive, make_source, strongroom


def test_a_deposit_skips_teardown_in_process(tmp_path, capsys, monkeypatch):
    from pipelines import entry

    monkeypatch.setattr(entry, "_skip_teardown", False)
    arch = make_archive(tmp_path)
    res = strongroom(capsys, *deposit_argv(arch, make_source(tmp_path / "source", small=3), "td"))
    assert res.code == 0, res.err
    assert entry._skip_teardown is True


def test_a_deposit_process_without_teardown_loses_nothing(tmp_path, capsys):
    arch = make_archive(tmp_path)
    source = make_source(tmp_path / "source", small=5)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    proc = subprocess.run([sys.executable, "-m", "pipelines", *deposit_argv(arch, source, "whole")], cwd=REPO,
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    data = json.loads(proc.stdout)
    check_preserved(arch, source, data)
    again = strongroom(capsys, *deposit_argv(arch, source, "whole"))
    assert again.code == 0, again.err
