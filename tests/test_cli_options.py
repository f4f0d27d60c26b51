"""Issue 18 item 2 and the `validate` exit code: global options anywhere on the line, `--json`
always one JSON document on stdout (errors included), `validate` on a folder that is no bag -> 2.

Before the fix the global options were only known to the top parser (`status --json` was exit 2
"unrecognized arguments"), errors under `--json` printed nothing on stdout, and `validate` on a
plain folder was an "invalid bag" (exit 1).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines.cli import build_parser, main, verbosity

CONFORMANCE = Path(__file__).resolve().parents[2] / "shared" / "conformance" / "bagit-conformance-suite"


def run_cli(argv, capsys):
    """main(argv) as the shell sees it: (exit code, stdout, stderr), argparse's SystemExit included."""
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def one_json_document(out: str) -> dict:
    """stdout must be exactly one JSON document (json.loads refuses trailing text)."""
    return json.loads(out)


# ------------------------------------------------------------------ global options anywhere

# Every command and nested action, with the arguments it needs to parse.
COMMANDS = [
    ["status"],
    ["deposit", "SRC", "--library", "PKU", "--collection", "c", "--type", "purchased"],
    ["audit"],
    ["restore", "BAG", "DEST"],
    ["report", "preservation", "-o", "out.html"],
    ["validate", "BAG"],
    ["identify", "PATH"],
    ["ledger", "verify"],
    ["catalog", "check"],
    ["catalog", "compact"],
    ["catalog", "rebuild"],
    ["init"],
    ["demo"],
]


def _parses(argv):
    try:
        return build_parser().parse_args(argv)
    except SystemExit as exc:  # the failure we test against: "unrecognized arguments"
        pytest.fail(f"{argv}: exit {exc.code}")


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_global_options_after_the_command(command):
    args = _parses(command + ["--json", "--config", "X.yaml", "--workers", "3",
                              "--scheduler-url", "http://luigid:8082", "-v"])
    assert args.json is True and args.config == "X.yaml" and args.workers == 3
    assert args.scheduler_url == "http://luigid:8082" and verbosity(args) == 1


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_global_options_before_the_command_are_kept(command):
    # a sub-parser's default must not overwrite the value given before the command
    args = _parses(["--json", "--config", "X.yaml", "--workers", "4", "--scheduler-url", "u", "-vv"] + command)
    assert args.json is True and args.config == "X.yaml" and args.workers == 4
    assert args.scheduler_url == "u" and verbosity(args) == 2


def test_defaults_unchanged():
    args = _parses(["status"])
    assert (args.json, args.config, args.workers, args.scheduler_url, verbosity(args)) == (False, None, 1, None, 0)
    args = _parses(["catalog", "check"])
    assert (args.json, args.config, args.workers, args.scheduler_url, verbosity(args)) == (False, None, 1, None, 0)


def test_after_wins_and_verbose_adds_up():
    args = _parses(["--workers", "2", "-v", "ledger", "-v", "verify", "--workers", "5", "-v"])
    assert args.workers == 5 and verbosity(args) == 3
    assert not [k for k in vars(args) if k.startswith("_verbose_")]  # folded into args.verbose


def test_workers_after_command_still_checked(capsys):
    code, out, err = run_cli(["deposit", "SRC", "--library", "L", "--collection", "c",
                              "--type", "purchased", "--workers", "0"], capsys)
    assert code == 2 and "--workers" in err and "must be 1 or more" in err


def test_status_json_and_config_after_the_command(tmp_path, capsys):
    assert main(["init", str(tmp_path / "arch")]) == 0
    capsys.readouterr()
    config = str(tmp_path / "arch" / "strongroom.yaml")
    code, out, err = run_cli(["status", "--config", config, "--json"], capsys)
    assert code == 0, err
    doc = one_json_document(out)
    assert doc["ok"] is True and doc["catalog"] == str(tmp_path / "arch" / "archive" / "catalog")


# ------------------------------------------------------------------ --json errors

def test_json_config_error_is_one_document(tmp_path, capsys):
    missing = tmp_path / "nope.yaml"
    for argv in (["status", "--config", str(missing), "--json"], ["--json", "--config", str(missing), "status"]):
        code, out, err = run_cli(argv, capsys)
        assert code == 2
        doc = one_json_document(out)
        assert doc["ok"] is False and doc["exit_code"] == 2 and doc["problems"] == []
        assert str(missing) in doc["error"] and "does not exist" in doc["error"]
        assert "error:" in err and str(missing) in err          # people still read stderr
        assert "Traceback" not in out + err


def test_json_config_error_lists_every_problem(tmp_path, capsys):
    bad = tmp_path / "strongroom.yaml"
    bad.write_text("targets: 5\nfoo: 1\n", encoding="utf-8")
    code, out, err = run_cli(["status", "--json", "--config", str(bad)], capsys)
    assert code == 2
    doc = one_json_document(out)
    assert doc["ok"] is False and doc["exit_code"] == 2 and "\n" not in doc["error"]
    assert "targets" in doc["error"] and len(doc["problems"]) >= 3
    assert all(p.startswith(str(bad)) for p in doc["problems"])
    assert any("foo: unknown key" in p for p in doc["problems"])


def test_json_usage_error_is_one_document(capsys):
    for argv in (["status", "--json", "--no-such-option"], ["--json", "no-such-command"],
                 ["deposit", "SRC", "--json"]):
        code, out, err = run_cli(argv, capsys)
        assert code == 2, argv
        doc = one_json_document(out)
        assert doc["ok"] is False and doc["exit_code"] == 2 and "error:" in doc["error"], argv
        assert "usage:" in err and "error:" in err


def test_usage_error_without_json_prints_nothing_on_stdout(capsys):
    code, out, err = run_cli(["status", "--no-such-option"], capsys)
    assert code == 2 and out == "" and "unrecognized arguments: --no-such-option" in err


def test_json_input_error_names_the_path(tmp_path, capsys):
    code, out, err = run_cli(["identify", str(tmp_path / "absent"), "--json"], capsys)
    assert code == 2
    doc = one_json_document(out)
    assert doc["ok"] is False and doc["exit_code"] == 2 and "absent" in doc["error"]


# ------------------------------------------------------------------ validate: a folder that is no bag

def test_validate_plain_folder_is_an_input_error(tmp_path, capsys):
    plain = tmp_path / "photos"
    plain.mkdir()
    (plain / "a.jpg").write_bytes(b"not a bag")
    code, out, err = run_cli(["validate", str(plain)], capsys)
    assert code == 2 and out == ""
    assert f"{plain}: not a BagIt bag: no bagit.txt" in err
    code, out, err = run_cli(["validate", str(plain), "--json"], capsys)
    doc = one_json_document(out)
    assert code == 2 and doc == {"ok": False, "exit_code": 2, "error": doc["error"], "problems": []}
    assert "not a BagIt bag: no bagit.txt" in doc["error"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run_cli(["validate", str(empty)], capsys)[0] == 2


def test_validate_bag_lacking_bagit_txt_stays_invalid(capsys):
    # The LoC suite's v0.97/invalid/missing-bagit.txt has manifest and data/: a damaged bag, exit 1.
    case = CONFORMANCE / "v0.97" / "invalid" / "missing-bagit.txt"
    assert case.is_dir(), case
    code, out, err = run_cli(["validate", str(case), "--json"], capsys)
    assert code == 1
    doc = one_json_document(out)
    assert doc["valid"] is False and any(p["path"] == "bagit.txt" for p in doc["problems"])


def test_validate_folder_with_data_but_no_bagit_txt_is_invalid(tmp_path, capsys):
    bag = tmp_path / "half"
    (bag / "data").mkdir(parents=True)
    (bag / "data" / "a.txt").write_bytes(b"a")
    code, out, err = run_cli(["validate", str(bag)], capsys)
    assert code == 1 and out.startswith("INVALID:") and "bagit.txt: is missing" in out
