"""The damage campaign: two bags deposited through the real pipeline on three filesystem targets
(three sites), damaged at random in every way the audit must find; then damage no good copy can
fix, the majority rule when the catalog is in doubt, and tampering with the audit's ledger.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Dict, List, Set, Tuple

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fixity import audit as A
from pipelines.cli import main
from tests.test_audit import Archive, copy_archive, deposit, make_source, write_archive

TARGETS = ("site-a", "site-b", "site-c")


def _source_files(seed: int) -> Dict[str, bytes]:
    rng = random.Random(seed)
    files = {f"part {i:02d}/file-{i:02d}.bin": rng.randbytes(rng.randint(1, 120_000)) for i in range(14)}
    files["twins/left.bin"] = rng.randbytes(7777)    # two files of one size, for a same-size swap
    files["twins/right.bin"] = rng.randbytes(7777)
    files["名前 with space/%41.txt"] = "档案\n".encode("utf-8") * 100
    return files


@pytest.fixture(scope="module")
def campaign(tmp_path_factory):
    base = tmp_path_factory.mktemp("campaign")
    cfg = write_archive(base / "archive")
    main_bag = deposit(cfg, make_source(base / "src-main", _source_files(1)), collection="MAIN")
    second = deposit(cfg, make_source(base / "src-second", {"one.txt": b"1\n", "two/three.txt": b"3\n" * 999}),
                     collection="SECOND")
    return base / "archive", main_bag + second


@pytest.fixture
def arch(campaign, tmp_path) -> Archive:
    folder, bags = campaign
    return copy_archive(folder, tmp_path / "archive", bags)


def audit(arch: Archive, capsys, *args: str) -> Tuple[int, dict]:
    code = main(["--config", str(arch.cfg), "--json", "audit", *args])
    out = capsys.readouterr().out
    return code, json.loads(out)


def trees(arch: Archive) -> Dict[Tuple[str, str], Dict[str, bytes]]:
    return {(t, b): arch.tree(t, b) for t in TARGETS for b in arch.bags if arch.path(t, bag=b).exists()}


# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_damage_campaign_every_damage_found_named_repaired(capsys, arch, seed):
    rng = random.Random(seed)
    bag, second = arch.bags
    originals = {b: arch.tree("site-a", b) for b in arch.bags}
    payload = sorted(p for p in originals[bag] if p.startswith("data/") and "twins" not in p)
    rng.shuffle(payload)
    tags = ["bag-info.txt", "metadata/formats.csv", "metadata/file-attributes.csv", "metadata/premis.xml",
            "tagmanifest-md5.txt", "manifest-md5.txt", "manifest-sha256.txt", "tagmanifest-sha256.txt", "bagit.txt"]
    rng.shuffle(tags)
    expected: Set[Tuple[str, str, str, str]] = set()     # (bag, target, path, kind)

    def where() -> str:
        return rng.choice(TARGETS)

    for how, kind in (("flip", A.CORRUPTED), ("truncate", A.TRUNCATED), ("append", A.GROWN),
                      ("delete", A.MISSING), ("flip", A.CORRUPTED)):
        t, p = where(), payload.pop()
        getattr(arch, how)(t, p, bag)
        expected.add((bag, t, p, kind))
    t = where()                                            # another file of the same size
    arch.put(t, "data/twins/left.bin", originals[bag]["data/twins/right.bin"], bag)
    expected.add((bag, t, "data/twins/left.bin", A.CORRUPTED))
    for rel in ("data/part 03/stray.bin", "stray-note.txt", "metadata/stray.csv"):
        t = where()
        arch.put(t, rel, rng.randbytes(100), bag)
        expected.add((bag, t, rel, A.EXTRA))
    t, p = where(), tags.pop()                             # a tag file deleted
    arch.delete(t, p, bag)
    expected.add((bag, t, p, A.TAG_MISSING))
    t, p = where(), tags.pop()                             # a tag file damaged
    arch.flip(t, p, bag)
    expected.add((bag, t, p, A.TAG_DAMAGED))
    t = where()                                            # a whole bag gone from one target
    import shutil

    shutil.rmtree(arch.path(t, bag=second))
    expected.add((second, t, "", A.BAG_MISSING))

    code, s = audit(arch, capsys, "--all")
    assert code == 0, s["remaining"]
    found = {(b["bag_id"], f["target"], f["path"] or "", f["kind"])
             for b in arch.bag_results(s) for r in b["replicas"] for f in r["findings"]}
    assert found == expected, (found - expected, expected - found)
    assert not s["remaining"] and s["counts"]["failure"] == 0
    assert s["counts"]["repaired"] == len({(b, t) for b, t, _, _ in expected})
    repaired = {(r["bag"], r["target"], r["path"]) for r in s["repaired"]}
    for b, t, p, kind in expected:
        if kind == A.BAG_MISSING:
            assert {(b, t, f) for f in originals[b]} <= repaired
        else:
            assert (b, t, p) in repaired
    # Every copy is byte for byte the deposited bag again, and a second audit passes.
    for (t, b), tree in trees(arch).items():
        assert tree == originals[b], (t, b)
    code, s = audit(arch, capsys, "--all")
    assert code == 0 and s["counts"]["success"] == 6 and not s["repaired"]
    assert main(["--config", str(arch.cfg), "ledger", "verify"]) == 0
    capsys.readouterr()
    for t in TARGETS:
        assert arch.replica(t).state == "verified"


def test_damage_on_every_copy_is_reported_and_nothing_is_overwritten(capsys, arch):
    bag = arch.bags[0]
    victim = "data/part 05/file-05.bin"
    for i, t in enumerate(TARGETS):                        # each copy damaged differently
        p = arch.writable(arch.path(t, victim, bag))
        data = bytearray(p.read_bytes())
        data[i] ^= 0xFF
        p.write_bytes(bytes(data))
    for t in TARGETS:                                      # a tag file gone everywhere
        arch.delete(t, "metadata/formats.csv", bag)
    arch.delete("site-b", "data/part 06/file-06.bin", bag)  # and damage that can be repaired
    damaged = {t: arch.path(t, victim, bag).read_bytes() for t in TARGETS}

    code, s = audit(arch, capsys, "--bag", bag)
    assert code == 1
    kinds = {(r["kind"], r["path"]) for r in s["remaining"] if r["target"] is None}
    assert (A.NO_GOOD_COPY, victim) in kinds
    assert (A.NO_GOOD_COPY, "metadata/formats.csv") in kinds
    assert len(kinds) == 2                                 # nothing else is in doubt
    assert {t: arch.path(t, victim, bag).read_bytes() for t in TARGETS} == damaged   # nothing overwritten
    assert not any(r["path"] == victim for r in s["repaired"])
    assert ("site-b", "data/part 06/file-06.bin") in {(r["target"], r["path"]) for r in s["repaired"]}
    events = arch.catalog.events(bag_id=bag, type="fixity check").to_pylist()
    assert any(e["object_type"] == "bag" and e["path"] == victim and e["outcome"] == "failure"
               and e["detail"].startswith(A.NO_GOOD_COPY) for e in events)
    assert {arch.replica(t, bag).state for t in TARGETS} == {"damaged"}
    assert "DAMAGE REMAINS" in _text(arch, capsys, bag)


def _text(arch: Archive, capsys, bag: str) -> str:
    main(["--config", str(arch.cfg), "audit", "--bag", bag, "--no-repair"])
    return capsys.readouterr().out


def _forge(arch: Archive, target: str, bag: str, relpath: str, data: bytes) -> None:
    """Replace a file and rewrite the copy's manifests and tag manifests to match (a consistent copy)."""
    arch.put(target, relpath, data, bag)
    for alg in ("sha256", "md5"):
        man = arch.path(target, f"manifest-{alg}.txt", bag)
        digest = hashlib.new(alg, data).hexdigest()
        lines = [f"{digest}  {relpath}" if ln.split("  ", 1)[1] == relpath else ln
                 for ln in man.read_text("utf-8").splitlines()]
        arch.put(target, f"manifest-{alg}.txt", ("\n".join(lines) + "\n").encode(), bag)
    for alg in ("sha256", "md5"):
        tm = arch.path(target, f"tagmanifest-{alg}.txt", bag)
        out = []
        for ln in tm.read_text("utf-8").splitlines():
            d, name = ln.split("  ", 1)
            if name.startswith("manifest-"):
                d = hashlib.new(alg, arch.path(target, name, bag).read_bytes()).hexdigest()
            out.append(f"{d}  {name}")
        arch.put(target, f"tagmanifest-{alg}.txt", ("\n".join(out) + "\n").encode(), bag)


def test_majority_of_three_copies_wins_when_the_catalog_is_in_doubt(capsys, arch):
    """No copy matches the catalog, and no copy's own manifest agrees with it either; two of three
    copies, and their own manifests, agree: they win."""
    bag = arch.bags[0]
    path = "data/part 07/file-07.bin"
    size = len(arch.path("site-a", path, bag).read_bytes())
    majority = random.Random(5).randbytes(size)
    for t in ("site-a", "site-c"):
        _forge(arch, t, bag, path, majority)
    _forge(arch, "site-b", bag, path, random.Random(6).randbytes(size))
    untouched = {t: arch.tree(t, bag) for t in ("site-a", "site-c")}

    code, s = audit(arch, capsys, "--bag", bag, "--no-repair")
    assert code == 1
    assert arch.path("site-b", path, bag).read_bytes() != majority        # --no-repair: left alone

    code, s = audit(arch, capsys, "--bag", bag)
    assert code == 1                                                     # the catalog still disagrees
    assert [(r["kind"], r["path"]) for r in s["remaining"]] == [(A.CATALOG_DISAGREES, path)]
    assert "2 of 3 copies" in s["remaining"][0]["detail"]
    assert arch.path("site-b", path, bag).read_bytes() == majority
    assert arch.tree("site-b", bag) == untouched["site-a"]               # its manifests follow the majority
    assert {t: arch.tree(t, bag) for t in ("site-a", "site-c")} == untouched
    assert ("site-b", path) in {(r["target"], r["path"]) for r in s["repaired"]}


def test_a_copy_whose_manifest_agrees_with_the_catalog_is_never_outvoted(capsys, arch):
    """Two copies forged consistently (file, manifests, tag manifests), the third's file damaged
    but its manifests intact: the catalog and that copy's own manifest agree, so the catalog is
    not in doubt. No count of copies overwrites that evidence: the file is reported with no good
    copy, the intact manifests survive (the forged ones are repaired to them)."""
    bag = arch.bags[0]
    path = "data/part 07/file-07.bin"
    size = len(arch.path("site-a", path, bag).read_bytes())
    original = {n: arch.path("site-b", n, bag).read_bytes() for n in
                ("manifest-sha256.txt", "manifest-md5.txt", "tagmanifest-sha256.txt", "tagmanifest-md5.txt")}
    forged = random.Random(5).randbytes(size)
    for t in ("site-a", "site-c"):
        _forge(arch, t, bag, path, forged)
    arch.put("site-b", path, random.Random(6).randbytes(size), bag)
    payload = {t: arch.path(t, path, bag).read_bytes() for t in ("site-a", "site-b", "site-c")}

    code, s = audit(arch, capsys, "--bag", bag)
    assert code == 1
    assert (A.NO_GOOD_COPY, path) in {(r["kind"], r["path"]) for r in s["remaining"]}
    assert not any(r["kind"] == A.CATALOG_DISAGREES for r in s["remaining"])
    assert {t: arch.path(t, path, bag).read_bytes() for t in payload} == payload   # no copy overwritten
    for t in ("site-a", "site-b", "site-c"):
        for name, data in original.items():
            assert arch.path(t, name, bag).read_bytes() == data, (t, name)


# --------------------------------------------------------------------------------------------
# The ledger the audit wrote cannot be edited unnoticed


@pytest.fixture
def audited(capsys, arch) -> Archive:
    arch.flip("site-b", "data/part 01/file-01.bin", arch.bags[0])
    code, _ = audit(arch, capsys, "--all")
    assert code == 0
    assert main(["--config", str(arch.cfg), "ledger", "verify"]) == 0
    capsys.readouterr()
    return arch


def _segments(arch: Archive) -> List[Path]:
    return sorted((Path(arch.config.catalog) / "events").glob("seg-*.parquet"))


def _audit_segment(arch: Archive) -> Path:
    """The segment holding the repair of the flipped file."""
    for seg in _segments(arch):
        t = pq.read_table(seg)
        if "replication" in t.column("type").to_pylist() and any(
                (d or "").startswith("repair:") for d in t.column("detail").to_pylist()):
            return seg
    raise AssertionError("no audit segment with a repair")


def _verify(arch: Archive, capsys) -> Tuple[int, str]:
    code = main(["--config", str(arch.cfg), "ledger", "verify"])
    return code, capsys.readouterr().out


def test_edited_outcome_in_the_audit_ledger_is_detected(capsys, audited):
    seg = _audit_segment(audited)
    table = pq.read_table(seg)
    outcomes = table.column("outcome").to_pylist()
    i = outcomes.index("failure")
    outcomes[i] = "success"                                  # hide the damage that was found
    table = table.set_column(table.schema.get_field_index("outcome"), "outcome", pa.array(outcomes, pa.string()))
    pq.write_table(table, seg)
    code, out = _verify(audited, capsys)
    assert code == 1 and "LEDGER ALTERED" in out and seg.name in out


def test_deleted_audit_segment_is_detected(capsys, audited):
    seg = _audit_segment(audited)
    assert seg != _segments(audited)[-1]
    seg.unlink()
    code, out = _verify(audited, capsys)
    assert code == 1 and seg.name in out


def test_reordered_audit_segments_are_detected(capsys, audited):
    segs = _segments(audited)
    a, b = _audit_segment(audited), segs[0]
    tmp = a.with_name("swap.tmp")
    a.rename(tmp)
    b.rename(a)
    tmp.rename(b)
    code, out = _verify(audited, capsys)
    assert code == 1 and a.name in out and b.name in out
