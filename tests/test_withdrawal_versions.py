"""What a withdrawal must never break: later deposits compared with a withdrawn bag, and later
versions whose fetch.txt names it (docs/versions.md). Filesystem targets only (fast); the
executors are called as `strongroom approve` calls them at quorum (tests/test_withdrawal.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from catalog.access import open_catalog
from catalog.tombstones import withdrawn_bags
from fixity.withdraw import WithdrawalRefused, execute_withdraw
from pipelines.cli import main
from policies.config import load_config, write_default_config
from tests.test_withdrawal import approvals, request


@pytest.fixture
def arch(tmp_path):
    cfg = write_default_config(tmp_path / "archive")
    (cfg.parent / "allowed_signers").write_text("")
    with open(cfg, "a", encoding="utf-8") as fh:
        fh.write("governance:\n  allowed_signers: ./allowed_signers\n  quorum: {withdraw: 2}\n")
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_bytes(b"alpha\n" * 50)
    (src / "b.txt").write_bytes(b"beta\n" * 50)
    return cfg, src


def deposit(capsys, cfg: Path, src: Path, *extra: str) -> dict:
    code = main(["--config", str(cfg), "--json", "deposit", str(src), "--library", "LIB", "--collection", "C",
                 "--type", "self-built", *extra])
    out, err = capsys.readouterr()
    assert code == 0, out + err
    return json.loads(out)


def withdraw(cfg: Path, *bags: str):
    config = load_config(cfg)
    req = request("withdraw", bags[0])
    if len(bags) > 1:
        import dataclasses
        req = dataclasses.replace(req, bag_ids=tuple(bags))
    return execute_withdraw(config, open_catalog(config), req, approvals("alice", "bob"))


def site_a(cfg: Path, bag: str) -> Path:
    return Path(load_config(cfg).target("site-a").root).joinpath(*bag.split("/"))


def test_the_same_content_deposited_after_a_withdrawal_is_stored_again(arch, capsys):
    cfg, src = arch
    first = deposit(capsys, cfg, src)["bags"][0]["id"]
    withdraw(cfg, first)
    assert not site_a(cfg, first).exists()
    again = deposit(capsys, cfg, src)
    assert again["state"] != "duplicate", again        # the withdrawn bag holds nothing to be a duplicate of
    (bag,) = again["bags"]
    assert (site_a(cfg, bag["id"]) / "data" / "a.txt").read_bytes() == b"alpha\n" * 50
    assert not (site_a(cfg, bag["id"]) / "fetch.txt").exists()


def test_a_new_version_after_a_withdrawal_stores_its_files_instead_of_fetching_them(arch, capsys):
    cfg, src = arch
    first = deposit(capsys, cfg, src)["bags"][0]["id"]
    withdraw(cfg, first)
    (src / "b.txt").write_bytes(b"beta, changed\n")
    (bag,) = deposit(capsys, cfg, src, "--new-version")["bags"]
    stored = site_a(cfg, bag["id"])
    assert (stored / "data" / "a.txt").read_bytes() == b"alpha\n" * 50   # unchanged, yet stored: its source is gone
    assert not (stored / "fetch.txt").exists()


def test_withdrawing_a_bag_a_later_version_fetches_from_is_refused_unless_the_request_covers_both(arch, capsys):
    cfg, src = arch
    first = deposit(capsys, cfg, src)["bags"][0]["id"]
    (src / "b.txt").write_bytes(b"beta, changed\n")
    (version,) = deposit(capsys, cfg, src, "--new-version")["bags"]
    assert f"strongroom://{first}/" in (site_a(cfg, version["id"]) / "fetch.txt").read_text(encoding="utf-8")
    with pytest.raises(WithdrawalRefused) as refused:
        withdraw(cfg, first)
    assert version["id"] in str(refused.value) and "fetch" in str(refused.value)
    assert (site_a(cfg, first) / "data" / "a.txt").exists()          # nothing was removed anywhere
    config = load_config(cfg)
    assert withdrawn_bags(open_catalog(config)) == {}
    withdraw(cfg, first, version["id"])                              # both in one request: allowed
    assert set(withdrawn_bags(open_catalog(config))) == {first, version["id"]}
    assert not site_a(cfg, first).exists() and not site_a(cfg, version["id"]).exists()


# ------------------------------------------------------------------ one execution at a time

def _claims(catalog):
    from catalog.execution_claims import CLAIMS
    return sorted(catalog.store.names(CLAIMS))


def test_a_request_is_carried_out_by_one_run_at_a_time_and_once(arch, capsys, monkeypatch):
    import json as _json
    import subprocess
    import sys

    from catalog.execution_claims import CLAIMS, ExecutionBusy, _claim, execution_claim
    from fixity import withdraw as withdraw_mod
    from pipelines import governance

    cfg, src = arch
    bag = deposit(capsys, cfg, src)["bags"][0]["id"]
    config = load_config(cfg)
    catalog = open_catalog(config)
    req = request("withdraw", bag)
    calls = []
    real = withdraw_mod.execute_withdraw
    monkeypatch.setattr(withdraw_mod, "execute_withdraw", lambda *a: calls.append(1) or real(*a))
    outcome = governance.ApproveOutcome(req, quorum=2, counted=["alice", "bob"])

    with execution_claim(catalog, req.id):               # another run holds it (a live process here)
        with pytest.raises(ExecutionBusy, match=f"request {req.id} is being carried out by"):
            governance._execute(config, catalog, req, outcome)
    assert calls == [] and withdrawn_bags(catalog) == {}

    governance._execute(config, catalog, req, outcome)   # that run released it: this one executes
    assert calls == [1] and outcome.executed_now and bag in withdrawn_bags(catalog)
    again = governance.ApproveOutcome(req, quorum=2, counted=["alice", "bob"])
    governance._execute(config, catalog, req, again)     # done once: never again
    assert calls == [1] and again.already_executed and not again.executed_now

    # A claim whose process died (kill -9 on this host) is superseded by the next run's.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    import socket
    stale = {"host": socket.gethostname(), "pid": dead.pid, "at": "2026-01-01T00:00:00+00:00"}
    catalog.store.create_exclusive(CLAIMS, "REQ-20260101T000000Z-0000dead.000001.json", _json.dumps(stale).encode())
    assert _claim(catalog, "REQ-20260101T000000Z-0000dead").endswith(".000002.json")
    # ... but a fresh claim of another host is never taken over on a guess.
    fresh = {"host": "elsewhere.example", "pid": 1, "at": "2999-01-01T00:00:00+00:00"}
    catalog.store.create_exclusive(CLAIMS, "REQ-20260101T000000Z-0000beef.000001.json", _json.dumps(fresh).encode())
    with pytest.raises(ExecutionBusy, match="elsewhere.example"):
        _claim(catalog, "REQ-20260101T000000Z-0000beef")
    assert any(n.endswith(".released") for n in _claims(catalog))
