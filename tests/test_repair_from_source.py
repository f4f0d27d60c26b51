"""`strongroom audit --bag B --repair-from SOURCE` (issue 18 item 1): copies no good copy can mend
are repaired from the original folder, only after every digest of the bag's manifests matches.

One collection is deposited once per module on three filesystem targets (tests.test_audit's
archive); each test damages its own copy of the archive so that no copy of some file is good.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Dict

import pytest

from pipelines.cli import main
from tests.test_audit import FILES, Archive, copy_archive, deposit, make_source, write_archive

TARGETS = ("site-a", "site-b", "site-c")
FILE = "data/a.txt"


@pytest.fixture(scope="module")
def deposited(tmp_path_factory):
    base = tmp_path_factory.mktemp("repair-src")
    cfg = write_archive(base / "archive")
    src = make_source(base / "source", FILES)
    bags = deposit(cfg, src)
    return base / "archive", bags


@pytest.fixture
def arch(deposited, tmp_path) -> Archive:
    folder, bags = deposited
    return copy_archive(folder, tmp_path / "archive", bags)


@pytest.fixture
def source(tmp_path) -> Path:
    return make_source(tmp_path / "original", FILES)


def tree_digest(folder: Path) -> Dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() or p.is_symlink()}


def run(arch: Archive, capsys, *args: str):
    code = main(["--config", str(arch.cfg), "--json", "audit", *args])
    out, err = capsys.readouterr()
    return code, json.loads(out), err


def damage_everywhere(arch: Archive) -> None:
    """No good copy of a.txt: flipped on two copies, gone from the third."""
    arch.flip("site-a", FILE)
    arch.truncate("site-b", FILE)
    arch.delete("site-c", FILE)


def test_plain_audit_cannot_repair_when_every_copy_is_damaged(arch, capsys):
    damage_everywhere(arch)
    code, summary, _ = arch.audit(capsys, "--all", "--bag", arch.bag)
    assert code == 1
    assert arch.path("site-a", FILE).read_bytes() != FILES["a.txt"]


def test_repair_from_source_mends_every_copy_and_records_it(arch, capsys, source, monkeypatch):
    monkeypatch.setenv("STRONGROOM_OPERATOR", "curator-wang")
    damage_everywhere(arch)
    before = tree_digest(source)
    code, doc, err = run(arch, capsys, "--bag", arch.bag, "--repair-from", str(source))
    assert code == 0, (doc, err)
    assert doc["ok"] is True and doc["refused"] == [] and doc["remaining"] == {}
    assert {t: sorted(p) for t, p in doc["repaired"].items()} == {t: [FILE] for t in TARGETS}
    for t in TARGETS:
        assert arch.path(t, FILE).read_bytes() == FILES["a.txt"]
        assert arch.replica(t).state in ("verified", "repaired")
    assert tree_digest(source) == before                     # the source is only read
    repairs = [e for e in arch.events(["replication"]) if str(source) in (e["detail"] or "")]
    assert sorted(e["target"] for e in repairs) == list(TARGETS)
    assert all(e["outcome"] == "success" and e["path"] == FILE and "sha256" in e["detail"] and "md5" in e["detail"]
               and e["operator"] == "curator-wang" and e["agent_library"] == "LIB" for e in repairs)
    # a plain audit afterwards finds every copy intact
    code, _, _ = arch.audit(capsys, "--all", "--bag", arch.bag)
    assert code == 0


def test_a_source_file_that_differs_is_refused_and_nothing_written(arch, capsys, source):
    damage_everywhere(arch)
    (source / "a.txt").write_bytes(FILES["a.txt"][:-1] + b"!")       # same size, other bytes
    damaged = arch.path("site-a", FILE).read_bytes()
    code, doc, _ = run(arch, capsys, "--bag", arch.bag, "--repair-from", str(source))
    assert code == 1 and doc["ok"] is False
    (refused,) = doc["refused"]
    assert refused["path"] == FILE and sorted(refused["targets"]) == list(TARGETS)
    assert "differs" in refused["reason"] and "sha256" in refused["reason"]
    assert doc["repaired"] == {}
    assert arch.path("site-a", FILE).read_bytes() == damaged
    assert not arch.path("site-c", FILE).exists()
    assert set(doc["remaining"]) == set(TARGETS)
    text_code = main(["--config", str(arch.cfg), "audit", "--bag", arch.bag, "--repair-from", str(source)])
    out = capsys.readouterr().out
    assert text_code == 1 and f"REFUSED {FILE}" in out


def test_a_linked_source_file_is_never_followed(arch, capsys, source, tmp_path):
    damage_everywhere(arch)
    elsewhere = tmp_path / "elsewhere.txt"
    elsewhere.write_bytes(FILES["a.txt"])                           # the right bytes, behind a link
    (source / "a.txt").unlink()
    os.symlink(elsewhere, source / "a.txt")
    code, doc, _ = run(arch, capsys, "--bag", arch.bag, "--repair-from", str(source))
    assert code == 1
    (refused,) = doc["refused"]
    assert refused["path"] == FILE and "link" in refused["reason"]
    assert not arch.path("site-c", FILE).exists()


def test_only_vouched_manifests_count_not_the_catalog_alone(arch, capsys, source):
    """Every copy's manifest-md5.txt altered (its tag manifest no longer vouches for it): the
    source file matches the catalog, but not every manifest algorithm can be checked: refused."""
    damage_everywhere(arch)
    for t in TARGETS:
        p = arch.writable(arch.path(t, "manifest-md5.txt"))
        p.write_bytes(p.read_bytes() + b"0" * 32 + b"  data/planted.txt\n")
    code, doc, _ = run(arch, capsys, "--bag", arch.bag, "--repair-from", str(source))
    assert code == 1
    assert [r["path"] for r in doc["refused"]] == [FILE]
    assert "manifest-md5.txt" in doc["refused"][0]["reason"]
    assert not arch.path("site-c", FILE).exists()


def test_only_damaged_copies_are_written(arch, capsys, source):
    """One good copy left: the audit repairs from it; the source is needed for nothing."""
    arch.flip("site-a", FILE)
    arch.delete("site-b", FILE)
    intact = arch.path("site-c", FILE)
    stamp = intact.stat().st_mtime_ns, intact.stat().st_ino
    code, doc, _ = run(arch, capsys, "--bag", arch.bag, "--repair-from", str(source))
    assert code == 0
    assert doc["repaired"] == {}
    assert {t: p for t, p in doc["repaired_from_copies"].items()} == {"site-a": [FILE], "site-b": [FILE]}
    assert (intact.stat().st_mtime_ns, intact.stat().st_ino) == stamp


def test_usage_errors_exit_2(arch, capsys, source, tmp_path):
    code = main(["--config", str(arch.cfg), "audit", "--repair-from", str(source)])
    assert code == 2 and "--bag" in capsys.readouterr().err
    code = main(["--config", str(arch.cfg), "audit", "--bag", arch.bag, "--repair-from", str(tmp_path / "nope")])
    err = capsys.readouterr().err
    assert code == 2 and "nope" in err and "Traceback" not in err
    code = main(["--config", str(arch.cfg), "audit", "--bag", "LIB/COLL/20200101T000000Z-1", "--repair-from",
                 str(source)])
    assert code == 2 and "not in the catalog" in capsys.readouterr().err
    damage_everywhere(arch)
    code = main(["--config", str(arch.cfg), "audit", "--library", "OTHERLIB", "--bag", arch.bag, "--repair-from",
                 str(source)])
    assert code == 2 and "not a bag of library OTHERLIB" in capsys.readouterr().err
    assert not arch.path("site-c", FILE).exists()


def test_repair_from_source_on_s3_targets(seaweed, tmp_path, capsys, monkeypatch):
    """Object stores too (real SeaweedFS): the same replace_file, verified, then re-audited."""
    from tests.test_audit import s3_archive

    arch, bag, east, west, prefix = s3_archive(seaweed, tmp_path, monkeypatch, "rfs")
    capsys.readouterr()
    src = tmp_path / "src"          # the folder the bag was deposited from
    client = seaweed.client()
    key = f"{prefix}/{bag}/{FILE}"
    client.put_object(Bucket=east, Key=key, Body=b"X" * len(FILES["a.txt"]))
    client.delete_object(Bucket=west, Key=key)
    arch.delete("local", FILE)
    code, doc, err = run(arch, capsys, "--bag", bag, "--repair-from", str(src))
    assert code == 0, (doc, err)
    assert sorted(doc["repaired"]) == ["local", "s3-east", "s3-west"]
    for bucket in (east, west):
        assert client.get_object(Bucket=bucket, Key=key)["Body"].read() == FILES["a.txt"]
    assert arch.path("local", FILE).read_bytes() == FILES["a.txt"]
    assert [arch.replica(t).state in ("verified", "repaired") for t in ("local", "s3-east", "s3-west")] == [True] * 3
