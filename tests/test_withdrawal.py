"""Governed withdrawal, tombstones, Object Lock and legal holds (issue 13 part 5) on a filesystem
target and real SeaweedFS buckets (plain versioned, Object Lock compliance and governance).

The executors are called as G1's `strongroom approve` calls them at quorum: with the request
and its approvals. What the targets hold afterwards is checked with plain boto3 and os calls.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import subprocess
import types
import uuid
from pathlib import Path

import pytest

from catalog.access import open_catalog
from catalog.requests import Request
from catalog.tombstones import COMPLETE, STARTED, held_bags, withdrawn_bags
from fixity import withdraw as withdraw_mod
from fixity.withdraw import WithdrawalRefused, execute_legal_hold, execute_release_hold, execute_withdraw
from policies.config import load_config
from storage_adapters.withdrawal import tombstone_key
from strongroom.bag_id import BagId
# the CLI runner and credential variables of the other SeaweedFS end-to-end tests (s3_env: a fixture)
from tests.test_deposit_s3 import KEY_ENV, SECRET_ENV, run, s3_env  # noqa: F401


def make_archive(folder: Path, seaweed, bucket: str, *, object_lock: bool = False, retention: str = "") -> Path:
    """A filesystem target `local` and one S3 target `s3`, one policy using both, governance on."""
    (folder / "policies").mkdir(parents=True)
    (folder / "replicas" / "local").mkdir(parents=True)
    (folder / "allowed_signers").write_text("")
    creds = f"{{access_key_env: {KEY_ENV}, secret_key_env: {SECRET_ENV}}}"
    (folder / "strongroom.yaml").write_text(f"""\
catalog: ./catalog
staging: ./staging
policies: ./policies
storage:
  local: {{type: filesystem, root: ./replicas/local, site: beijing}}
  s3:
    type: s3
    endpoint: {seaweed.endpoint}
    bucket: {bucket}
    region: us-east-1
    prefix: wd-{uuid.uuid4().hex[:6]}
    addressing_style: path
    object_lock: {str(object_lock).lower()}
    site: shanghai
    credentials: {creds}
governance:
  allowed_signers: ./allowed_signers
  quorum: {{withdraw: 2, legal-hold: 2, release-hold: 2, governance-bypass: 3}}
""", encoding="utf-8")
    (folder / "policies" / "mixed.yaml").write_text(
        f"name: mixed\nchecksums: [sha256]\nreplicas: [local, s3]\n{retention}", encoding="utf-8")
    return folder / "strongroom.yaml"


def deposit(capsys, cfg: Path, tmp_path: Path, name: str = "src") -> str:
    src = tmp_path / name
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_bytes(b"alpha " * 100)
    (src / "sub" / "b.bin").write_bytes(os.urandom(3000))
    code, out, err = run(capsys, "--config", cfg, "--json", "deposit", src, "--library", "PKU", "--collection",
                         "TAKE", "--type", "self-built", "--policy", "mixed")
    assert code == 0, out + err
    (bag,) = json.loads(out)["bags"]
    return bag["id"]


def request(kind: str, bag_id: str) -> Request:
    now = _dt.datetime.now(_dt.timezone.utc)
    return Request(id=f"REQ-{uuid.uuid4().hex[:8]}", kind=kind, target=bag_id, bag_ids=(bag_id,), reason="court order",
                   evidence=None, requester="carol", created=now, expires=now + _dt.timedelta(days=30))


def approvals(*names: str):
    return [types.SimpleNamespace(principal=n) for n in names]


def s3_versions(seaweed, cfg: Path, bag_id: str) -> list:
    import yaml

    t = yaml.safe_load(cfg.read_text())["storage"]["s3"]
    got = seaweed.client().list_object_versions(Bucket=t["bucket"], Prefix=f"{t['prefix']}/{bag_id}/")
    # what identifies a version and its bytes (SeaweedFS moves LastModified when a legal hold is set)
    return [{k: v[k] for k in ("Key", "VersionId", "ETag", "Size") if k in v}
            for v in got.get("Versions", []) + got.get("DeleteMarkers", [])]


def open_all(cfg: Path):
    config = load_config(cfg)
    return config, open_catalog(config)


def test_withdrawal_removes_every_object_leaves_tombstones_audit_and_rebuild_respect_it_crash_resumes(
        seaweed, s3_env, tmp_path, capsys, monkeypatch):
    bucket = seaweed.make_bucket(versioning=True)
    cfg = make_archive(tmp_path / "archive", seaweed, bucket)
    bag_id = deposit(capsys, cfg, tmp_path)
    keep = deposit(capsys, cfg, tmp_path, "other")       # another bag: untouched (until its own withdrawal below)
    bag_dir = cfg.parent / "replicas" / "local" / bag_id
    assert bag_dir.is_dir() and s3_versions(seaweed, cfg, bag_id)

    # what a repair moved aside is the bag's bytes too; a planted link is removed, never followed
    from storage_adapters.registry import open_target

    local = open_target(load_config(cfg).target("local"))
    bag = BagId.parse(bag_id)
    local.move_aside(bag, f"{bag_id}/data/a.txt", "20260101T000000Z")
    assert local.find_aside(bag, f"{bag_id}/data/a.txt")
    outside = tmp_path / "outside.txt"
    outside.write_text("not the archive's")
    (bag_dir / "data" / "link").symlink_to(outside)

    config, catalog = open_all(cfg)
    req = request("withdraw", bag_id)
    result = execute_withdraw(config, catalog, req, approvals("alice", "bob"))
    assert bag_id in result.summary
    assert local.find_aside(bag, f"{bag_id}/data/a.txt") == [] and outside.read_text() == "not the archive's"

    # every object gone: the bag folder, every S3 version (no delete marker hiding old versions)
    assert not bag_dir.exists() and (cfg.parent / "replicas" / "local" / "PKU" / "TAKE").is_dir()
    assert s3_versions(seaweed, cfg, bag_id) == []
    assert s3_versions(seaweed, cfg, keep) and (cfg.parent / "replicas" / "local" / keep).is_dir()
    # a tombstone where the bag was, on every target, naming request, approvers and manifests
    for name in ("local", "s3"):
        stone = json.loads(open_target(config.target(name)).read_record(tombstone_key(bag, COMPLETE)))
        assert (stone["bag_id"], stone["request_id"], stone["approvers"]) == (bag_id, req.id, ["alice", "bob"])
        assert set(stone["manifest_digests"]) >= {"manifest-sha256.txt", "tagmanifest-sha256.txt"}
    t = withdrawn_bags(catalog)[bag_id]
    assert (t.state, t.request_id) == (COMPLETE, req.id)
    events = catalog.events(bag_id).to_pylist()
    assert [e["type"] for e in events if e["type"] in ("deaccession", "deletion")] == \
        ["deaccession", "deletion", "deletion", "deaccession"]
    assert {e["target"] for e in events if e["type"] == "deletion"} == {"local", "s3"}
    assert all(json.loads(e["detail"])["approvers"] == ["alice", "bob"] for e in events if e["type"] == "deletion")

    # a second execution finds nothing left to do and writes nothing new
    again = execute_withdraw(config, catalog, req, approvals("alice", "bob"))
    assert "nothing left" in again.summary
    assert len(catalog.events(bag_id).to_pylist()) == len(events)

    # audit: withdrawn, not missing; status says WITHDRAWN with the request id
    code, out, err = run(capsys, "--config", cfg, "--json", "audit", "--all", "--quick")
    assert code == 0, out + err
    audit = json.loads(out)
    assert audit["bags"] == 1 and bag_id not in json.dumps(audit["replicas"] + audit["not_audited"])
    code, out, err = run(capsys, "--config", cfg, "--json", "status")
    assert code == 0, out + err
    status = json.loads(out)
    assert [b["bag_id"] for b in status["bags"]] == [keep]            # its copies are not listed as missing
    assert [(w["bag_id"], w["request_id"], w["state"]) for w in status["withdrawn"]] == [(bag_id, req.id, COMPLETE)]
    code, out, err = run(capsys, "--config", cfg, "status")
    assert "WITHDRAWN" in out and req.id in out

    # the other bag's withdrawal dies after its local copy went, before the S3 one
    real = withdraw_mod.remove_bag

    def dies_on_s3(adapter, bag, **kw):
        if adapter.name == "s3":
            raise KeyboardInterrupt("killed")
        return real(adapter, bag, **kw)

    monkeypatch.setattr(withdraw_mod, "remove_bag", dies_on_s3)
    second = request("withdraw", keep)
    with pytest.raises(KeyboardInterrupt):
        execute_withdraw(config, catalog, second, approvals("alice", "bob"))
    assert withdrawn_bags(catalog)[keep].state == STARTED          # said so before any deletion
    assert not (cfg.parent / "replicas" / "local" / keep).exists() and s3_versions(seaweed, cfg, keep)

    # the catalog is lost: the rebuild reads the tombstones and brings back neither bag, not
    # even the half-withdrawn one still on s3
    shutil.rmtree(cfg.parent / "catalog")
    code, out, err = run(capsys, "--config", cfg, "--json", "catalog", "rebuild")
    assert code == 0, out + err
    config, catalog = open_all(cfg)
    assert not catalog.has_bag(bag_id) and not catalog.has_bag(keep)
    assert {b: (t.request_id, t.state) for b, t in withdrawn_bags(catalog).items()} == \
        {bag_id: (req.id, COMPLETE), keep: (second.id, STARTED)}

    # the rerun finishes it
    monkeypatch.setattr(withdraw_mod, "remove_bag", real)
    execute_withdraw(config, catalog, second, approvals("alice", "bob"))
    assert s3_versions(seaweed, cfg, keep) == []
    assert withdrawn_bags(catalog)[keep].state == COMPLETE


def test_object_lock_compliance_refuses_early_withdrawal_nothing_deleted_anywhere(seaweed, s3_env, tmp_path, capsys):
    cfg = make_archive(tmp_path / "archive", seaweed, seaweed.make_bucket(object_lock=True), object_lock=True,
                       retention="retention: {mode: compliance, years: 1}\n")
    bag_id = deposit(capsys, cfg, tmp_path)
    local = cfg.parent / "replicas" / "local" / bag_id
    before_local = sorted(p.relative_to(local) for p in local.rglob("*"))
    before_s3 = s3_versions(seaweed, cfg, bag_id)
    config, catalog = open_all(cfg)
    # the local target comes first and has no lock: still nothing may go before all are checked
    with pytest.raises(WithdrawalRefused) as info:
        execute_withdraw(config, catalog, request("withdraw", bag_id), approvals("alice", "bob", "dave"))
    assert "compliance" in str(info.value) and info.value.exit_code == 1
    assert sorted(p.relative_to(local) for p in local.rglob("*")) == before_local
    assert s3_versions(seaweed, cfg, bag_id) == before_s3
    assert withdrawn_bags(catalog) == {}


def test_governance_lock_needs_the_bypass_quorum_and_a_legal_hold_blocks_until_released(
        seaweed, s3_env, tmp_path, capsys):
    bucket = seaweed.make_bucket(object_lock=True)
    cfg = make_archive(tmp_path / "archive", seaweed, bucket, object_lock=True,
                       retention="retention: {mode: governance, years: 1}\n")
    bag_id = deposit(capsys, cfg, tmp_path)
    config, catalog = open_all(cfg)
    versions = s3_versions(seaweed, cfg, bag_id)
    with pytest.raises(WithdrawalRefused, match="governance-bypass quorum"):
        execute_withdraw(config, catalog, request("withdraw", bag_id), approvals("alice", "bob"))
    assert s3_versions(seaweed, cfg, bag_id) == versions

    execute_legal_hold(config, catalog, request("legal-hold", bag_id), approvals("alice", "bob"))
    assert bag_id in held_bags(catalog)
    raw = seaweed.client()
    assert all(raw.get_object_legal_hold(Bucket=bucket, Key=v["Key"], VersionId=v["VersionId"])["LegalHold"]["Status"]
               == "ON" for v in versions)
    # the hold outlives the catalog: a rebuilt one reads it back from the targets' markers
    shutil.rmtree(cfg.parent / "catalog")
    code, out, err = run(capsys, "--config", cfg, "--json", "catalog", "rebuild")
    assert code == 0, out + err
    config, catalog = open_all(cfg)
    assert bag_id in held_bags(catalog) and catalog.has_bag(bag_id)
    with pytest.raises(WithdrawalRefused, match="legal hold"):    # even at the bypass quorum
        execute_withdraw(config, catalog, request("withdraw", bag_id), approvals("alice", "bob", "dave"))
    assert (cfg.parent / "replicas" / "local" / bag_id).is_dir() and s3_versions(seaweed, cfg, bag_id) == versions

    execute_release_hold(config, catalog, request("release-hold", bag_id), approvals("alice", "bob"))
    assert bag_id not in held_bags(catalog)
    assert raw.get_object_legal_hold(Bucket=bucket, Key=versions[0]["Key"],
                                     VersionId=versions[0]["VersionId"])["LegalHold"]["Status"] == "OFF"
    execute_withdraw(config, catalog, request("withdraw", bag_id), approvals("alice", "bob", "dave"))
    assert s3_versions(seaweed, cfg, bag_id) == []
    assert withdrawn_bags(catalog)[bag_id].bypass_governance is True


# ------------------------------------------------------------------------------------ through the CLI

def _keygen(folder: Path, name: str) -> Path:
    key = folder / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)], check=True)
    return key


def test_cli_hold_blocks_an_approved_withdrawal_until_released_then_approve_retries_it(tmp_path, capsys,
                                                                                       monkeypatch):
    from policies.config import write_default_config

    cfg = write_default_config(tmp_path / "archive")
    keys = {n: _keygen(tmp_path, n) for n in ("alice", "bob")}
    signers = tmp_path / "allowed_signers"
    signers.write_text("".join(f"{n} {' '.join(k.with_suffix('.pub').read_text().split()[:2])}\n"
                               for n, k in keys.items()))
    with open(cfg, "a") as fh:
        fh.write(f"governance:\n  allowed_signers: {signers}\n"
                 "  quorum: {withdraw: 2, legal-hold: 2, release-hold: 2}\n")
    monkeypatch.setenv("STRONGROOM_OPERATOR", "op1")
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("to be taken down\n")
    assert run(capsys, "--config", cfg, "deposit", src, "--library", "LIB", "--collection", "own",
               "--type", "self-built")[0] == 0
    config, catalog = open_all(cfg)
    (bag_id,) = catalog.bags().column("bag_id").to_pylist()
    folders = [Path(t.root) / bag_id for t in config.storage.values()]
    assert all(f.is_dir() for f in folders)

    def decide(kind: str):
        code, out, err = run(capsys, "--config", cfg, "--json", "request", kind, bag_id, "--reason", "court order")
        assert code == 0, out + err
        req = json.loads(out)["id"]
        code, text, err = run(capsys, "--config", cfg, "requests", "show", req, "--signable")
        (tmp_path / f"{req}.txt").write_text(text)
        last = None
        for who in ("alice", "bob"):
            subprocess.run(["ssh-keygen", "-q", "-Y", "sign", "-f", str(keys[who]), "-n", "strongroom",
                            str(tmp_path / f"{req}.txt")], check=True, capture_output=True)
            sig = tmp_path / f"{req}.{who}.sig"
            (tmp_path / f"{req}.txt.sig").rename(sig)
            last = run(capsys, "--config", cfg, "--json", "approve", req, sig)
        return req, last

    _, (code, out, err) = decide("legal-hold")
    assert code == 0, out + err
    wd, (code, out, err) = decide("withdraw")
    assert code == 1 and "legal hold" in out + err           # approved, refused, nothing removed
    assert all(f.is_dir() for f in folders)
    _, (code, out, err) = decide("release-hold")
    assert code == 0, out + err
    code, out, err = run(capsys, "--config", cfg, "--json", "approve", wd)   # retry the approved withdrawal
    assert code == 0, out + err
    assert not any(f.exists() for f in folders)
    assert withdrawn_bags(open_all(cfg)[1])[bag_id].request_id == wd
    code, out, err = run(capsys, "--config", cfg, "catalog", "check")
    assert code == 0, out + err
    code, out, err = run(capsys, "--config", cfg, "restore", bag_id, tmp_path / "back", "--library", "LIB")
    assert code == 2 and f"withdrawn by request {wd}" in err and not (tmp_path / "back").exists()

    # reports: no longer a holding; the fixity report keeps its history; the decision is listed
    code, out, err = run(capsys, "--config", cfg, "report", "fixity", "--format", "json", "-o", tmp_path / "f.json")
    assert code == 0, out + err
    fixity = json.loads((tmp_path / "f.json").read_text())
    assert bag_id not in json.dumps(fixity["per_copy"]) and bag_id in json.dumps(fixity["events"])
    code, out, err = run(capsys, "--config", cfg, "report", "preservation", "--format", "json", "-o",
                         tmp_path / "p.json")
    assert code == 0, out + err
    pres = json.loads((tmp_path / "p.json").read_text())
    assert bag_id not in json.dumps(pres["replicas"]) and pres["totals"]["bags"] == 0
    assert [(r["id"], r["state"]) for r in pres["governance"]["requests"] if r["kind"] == "withdraw"] == \
        [(wd, "executed")]
