"""What a deposit reads and rebuilds (issue 11): the staged payload is hashed only where it counts,
the bag inventory is taken once, and the guarantees the skipped work used to back still hold.

* The staged payload is not re-hashed by the validator in staging: every payload byte is hashed
  once from the source and once per replica, when a folder target re-reads it after its flush
  (checked against the manifests before the file gets its name); Verify takes each file by its
  stamp since that check (tests/test_checked_after_flush.py), never hashing it a second time.
* The inventory of the staged bag is never rebuilt (`bag_inventory`): the bag's one check keeps
  it (`ingest.bag_check`, tests/test_deposit_check_once.py) for Replicate and Verify of every
  target (it was rebuilt 8 times with two targets, then once by ValidateBag).
* A staged file damaged after the bag was built is still never stored under its name: the copy
  to the replica refuses it, the deposit fails (exit 1), nothing of it is marked verified.
"""

from __future__ import annotations

import os
from pathlib import Path

from strongroom import checksums
from tests.test_deposit_pipeline import (TARGETS, check_preserved, deposit_argv, make_archive, make_source,
                                         strongroom)


def _hashed_bytes(monkeypatch):
    """Bytes fed to every MultiHasher (stage, put, verify) and the paths the validator hashes."""
    counts = {"bytes": 0}
    validator_paths = []
    original = checksums.MultiHasher.update

    def update(self, data):
        counts["bytes"] += len(data)
        return original(self, data)

    monkeypatch.setattr(checksums.MultiHasher, "update", update)
    import ingest.validate as validate

    digest = validate._digest_file

    def recording(path, algorithms):
        validator_paths.append(Path(path))
        return digest(path, algorithms)

    monkeypatch.setattr(validate, "_digest_file", recording)
    return counts, validator_paths


def test_each_payload_byte_is_hashed_once_from_the_source_and_once_per_replica(tmp_path, capsys, monkeypatch):
    arch = make_archive(tmp_path)
    source = make_source(tmp_path / "source", small=6, small_size=200_000)
    payload = sum(p.stat().st_size for p in source.rglob("*") if p.is_file())
    counts, validator_paths = _hashed_bytes(monkeypatch)

    res = strongroom(capsys, *deposit_argv(arch, source, "counted"))
    assert res.code == 0, res.err
    check_preserved(arch, source, res.data)
    staged_payload = [p for p in validator_paths if "data" in p.parts]
    assert staged_payload == [], f"the validator re-hashed staged payload files: {staged_payload[:3]}"
    per_byte = counts["bytes"] / payload
    # 1 (source) + 1 per target (the check after the flush); tag files add a little on top.
    assert 1 + len(TARGETS) <= per_byte < 1 + len(TARGETS) + 0.5, per_byte


def test_the_bag_inventory_is_never_rebuilt(tmp_path, capsys, monkeypatch):
    import storage_adapters.replicate as replicate

    arch = make_archive(tmp_path)
    source = make_source(tmp_path / "source", small=4)
    calls = []
    original = replicate.bag_inventory

    def counted(bag_dir):
        calls.append(str(bag_dir))
        return original(bag_dir)

    monkeypatch.setattr(replicate, "bag_inventory", counted)
    res = strongroom(capsys, *deposit_argv(arch, source, "inventory"))
    assert res.code == 0, res.err
    check_preserved(arch, source, res.data)
    assert calls == [], calls


def test_a_staged_file_damaged_after_building_is_never_stored_under_its_name(tmp_path, capsys, monkeypatch):
    """The validator no longer re-hashes the staged copy: the copy to each replica is what
    refuses a staged file that differs from its manifest entry."""
    import ingest.bag as bag_mod

    arch = make_archive(tmp_path)
    source = make_source(tmp_path / "source", small=3)
    finish = bag_mod.finish_bag

    def damaging(plan, provenance, final_dir, **kw):
        built = finish(plan, provenance, final_dir, **kw)
        victim = final_dir / "data" / "nested" / "part-001.bin"
        data = bytearray(victim.read_bytes())
        data[100] ^= 1  # bit rot, same size
        victim.write_bytes(bytes(data))
        return built

    monkeypatch.setattr("ingest.deposit.finish_bag", damaging)
    res = strongroom(capsys, *deposit_argv(arch, source, "damaged"))
    assert res.code == 1, res.out + res.err
    assert "part-001.bin" in res.out + res.err
    for target in TARGETS:
        stored = [Path(d) / f for d, _, fs in os.walk(arch.target_root(target)) for f in fs]
        assert not [p for p in stored if p.name == "part-001.bin"], stored
    replicas = arch.catalog().replicas().to_pylist()
    assert not [r for r in replicas if r.get("state") == "verified"], replicas
