"""Policies and storage targets bound to libraries (issue 12 item 3), and a broken policy file
that blocks only its own collections (issue 18 item 6). CLI runs on folder targets; the same
isolation against a real S3 server with per-library identities is in test_receive_s3.py.

* `deposit --library THU --policy pku` (the issue's hostile case) exits 2 naming the policy,
  the library and the file, and writes nothing: no replica file, no staging state, no catalog
  row. So does a policy open to everyone whose replicas are targets bound to another library.
* A policy file with a typo: the archive's other policies load; other collections deposit,
  audit and show in `status`; `status` names the broken file and exits 2 (a config problem
  for the operator to fix, see below); a deposit with that policy exits 2 naming the file.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from policies.config import load_config
from strongroom.errors import ConfigError

STORAGE = {
    "pku-a": {"type": "filesystem", "root": "./replicas/pku-a", "site": "beijing", "libraries": ["PKU"]},
    "pku-b": {"type": "filesystem", "root": "./replicas/pku-b", "site": "wuhan", "libraries": ["PKU"]},
    "shared-a": {"type": "filesystem", "root": "./replicas/shared-a", "site": "beijing"},
    "shared-b": {"type": "filesystem", "root": "./replicas/shared-b", "site": "wuhan"},
}
LIBRARIES = {"PKU": {"name": {"en": "Peking University Library", "zh": "北京大学图书馆"}},
             "THU": {"name": {"en": "Tsinghua University Library", "zh": "清华大学图书馆"}}}
POLICIES = {
    "pku": {"name": "pku", "checksums": ["sha256"], "replicas": ["pku-a", "pku-b"], "libraries": ["PKU"]},
    # open to every library, but its replicas are PKU's targets
    "leaky": {"name": "leaky", "checksums": ["sha256"], "replicas": ["pku-a", "shared-b"]},
    "self-built": {"name": "self-built", "checksums": ["sha256"], "replicas": ["shared-a", "shared-b"]},
    "at-risk-purchased": {"name": "at-risk-purchased", "checksums": ["sha256", "md5"],
                          "replicas": ["shared-a", "shared-b"]},
}


def make(root: Path) -> Path:
    (root / "policies").mkdir(parents=True)
    for name in STORAGE:
        (root / "replicas" / name).mkdir(parents=True)
    config = {"catalog": "./catalog", "staging": "./staging", "policies": "./policies", "storage": STORAGE,
              "libraries": LIBRARIES}
    (root / "strongroom.yaml").write_text(yaml.safe_dump(config, allow_unicode=True), "utf-8")
    for name, body in POLICIES.items():
        (root / "policies" / f"{name}.yaml").write_text(yaml.safe_dump(dict(body, virus_check="off")), "utf-8")
    return root / "strongroom.yaml"


def cli(capsys, *argv) -> tuple:
    from pipelines.cli import main

    capsys.readouterr()
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def source(tmp_path: Path, name: str) -> Path:
    folder = tmp_path / name
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / f"{name}.txt").write_text(f"{name}: 古籍\n", "utf-8")
    (folder / "b.bin").write_bytes(name.encode() * 100)
    return folder


def deposit(capsys, config_file, src, library, collection, *extra):
    return cli(capsys, "--config", config_file, "--json", "deposit", src, "--library", library,
               "--collection", collection, "--type", "self-built", *extra)


def files_under(root: Path) -> list:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


def bags(config_file) -> list:
    from catalog.access import open_catalog

    return sorted(open_catalog(load_config(config_file)).bags().column("bag_id").to_pylist())


@pytest.fixture
def arch(tmp_path):
    return make(tmp_path / "archive")


def test_a_library_cannot_deposit_with_another_librarys_policy(arch, tmp_path, capsys):
    root = arch.parent
    code, out, err = deposit(capsys, arch, source(tmp_path, "thu-src"), "THU", "theses", "--policy", "pku")
    assert code == 2, out + err
    error = json.loads(out)["error"]
    assert "policy 'pku' is bound to PKU; library 'THU' may not deposit with it" in error, error
    assert str(root / "policies" / "pku.yaml") in error
    assert files_under(root / "replicas") == [] and bags(arch) == []
    assert not (root / "staging" / "THU").exists()
    assert not any((root / "staging").glob("deposits/*THU*")), files_under(root / "staging")

    code, out, err = deposit(capsys, arch, source(tmp_path, "thu-src2"), "THU", "theses", "--policy", "leaky")
    assert code == 2, out + err
    error = json.loads(out)["error"]
    assert "storage target 'pku-a' (a replica of policy 'leaky') is bound to PKU" in error, error
    assert str(arch) in error and "storage.pku-a.libraries" in error
    assert files_under(root / "replicas") == [] and bags(arch) == []

    # what is bound to a library, or to everyone, works for it
    code, out, err = deposit(capsys, arch, source(tmp_path, "pku-src"), "PKU", "books", "--policy", "pku")
    assert code == 0, out + err
    assert files_under(root / "replicas" / "pku-a") and files_under(root / "replicas" / "pku-b")
    code, out, err = deposit(capsys, arch, source(tmp_path, "thu-src3"), "THU", "theses")
    assert code == 0, out + err
    assert [b.rsplit("/", 1)[0] for b in bags(arch)] == ["PKU/books", "THU/theses"]
    assert not any(p.startswith("THU") for p in files_under(root / "replicas" / "pku-a"))


def test_a_broken_policy_file_blocks_only_its_own_collections(arch, tmp_path, capsys):
    root = arch.parent
    assert deposit(capsys, arch, source(tmp_path, "pku-src"), "PKU", "books", "--policy", "pku")[0] == 0
    assert deposit(capsys, arch, source(tmp_path, "thu-src"), "THU", "theses")[0] == 0
    broken = root / "policies" / "pku.yaml"
    broken.write_text(broken.read_text("utf-8").replace("checksums:", "checksum:"), "utf-8")

    # status: everything still shown, the broken file named, exit 2
    code, out, err = cli(capsys, "--config", arch, "status")
    assert code == 2, out + err
    assert f"policy file {broken} is broken: checksum: unknown key (did you mean 'checksums'?)" in out, out
    assert "PKU/books" in out and "THU/theses" in out
    code, out, err = cli(capsys, "--config", arch, "--json", "status")
    data = json.loads(out)
    assert code == 2 and data["exit_code"] == 2, out + err
    assert [b["file"] for b in data["broken_policies"]] == [str(broken)]
    assert sorted(b["bag_id"].rsplit("/", 1)[0] for b in data["bags"]) == ["PKU/books", "THU/theses"]

    # THU's own view: its policies are fine, so nothing of PKU's broken file and exit 0
    code, out, err = cli(capsys, "--config", arch, "status", "--library", "THU")
    assert code == 0 and "pku.yaml" not in out and "BROKEN" not in out and "THU/theses" in out, out + err

    # the other collections: audited and deposited as before
    code, out, err = cli(capsys, "--config", arch, "--json", "audit", "--all", "--library", "THU")
    assert code == 0, out + err
    code, out, err = cli(capsys, "--config", arch, "--json", "audit", "--all")
    data = json.loads(out)
    assert code == 1 and data["counts"]["success"] == 2 and data["counts"]["not_audited"] == 2, out + err
    assert {n["reason"] for n in data["not_audited"]} == {
        f"the bag's policy 'pku' cannot be read ({broken} is broken): fix the file to audit it"}
    assert deposit(capsys, arch, source(tmp_path, "thu-src2"), "THU", "more")[0] == 0

    # the broken policy's own collections: refused, naming the file
    code, out, err = deposit(capsys, arch, source(tmp_path, "pku-src2"), "PKU", "books", "--policy", "pku")
    assert code == 2, out + err
    error = json.loads(out)["error"]
    assert f"{broken}: checksum: unknown key" in error and "policy 'pku' cannot be used until pku.yaml is fixed" in error

    # fixed: status is well again
    broken.write_text(broken.read_text("utf-8").replace("checksum:", "checksums:"), "utf-8")
    code, out, err = cli(capsys, "--config", arch, "status")
    assert code == 0 and "is broken" not in out, out + err


def test_a_policy_bound_to_libraries_its_targets_shut_out_is_broken(arch):
    policy = arch.parent / "policies" / "pku.yaml"
    policy.write_text(policy.read_text("utf-8").replace("- PKU", "- PKU\n- THU"), "utf-8")
    config = load_config(arch)
    assert "pku" not in config.policies and "self-built" in config.policies
    with pytest.raises(ConfigError) as info:
        config.policy("pku")
    assert f"{policy}: replicas[0]: storage target 'pku-a' is bound to PKU, so THU (in this policy's " \
           f"libraries) could never deposit with it" in str(info.value)
