"""Depositing a collection again: a duplicate stores nothing, `--new-version` stores only what changed.

Real deposits (two filesystem targets, the private clamd, Luigi's local scheduler), then what an
officer would look at: the replicas' folders, fetch.txt and bag-info.txt as stored, the catalog,
the ledger, and an audit of the version bag (docs/versions.md).
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Dict, List

from tests.test_deposit_pipeline import (LIB, TARGETS, Archive, deposit_argv, make_archive, make_source,
                                         strongroom, tree_digests)


def _payload(arch: Archive, target: str, bag_id: str) -> Dict[str, str]:
    """sha256 of every file stored in a replica's data/, by path inside data/."""
    return tree_digests(arch.bag_folder(target, bag_id) / "data")


def _bag_info(arch: Archive, target: str, bag_id: str) -> Dict[str, str]:
    text = (arch.bag_folder(target, bag_id) / "bag-info.txt").read_text("utf-8")
    return dict(line.split(": ", 1) for line in text.splitlines() if ": " in line)


def _audit(capsys, arch: Archive, bag_id: str) -> tuple:
    from pipelines.cli import main

    capsys.readouterr()
    code = main(["--config", str(arch.config_path), "--json", "audit", "--bag", bag_id, "--no-repair"])
    out, _ = capsys.readouterr()
    return code, json.loads(out)


def _findings(summary: dict) -> List[dict]:
    """Every finding of an audit summary, wherever the summary lists it."""
    found: List[dict] = []

    def walk(node):
        if isinstance(node, dict):
            if "kind" in node and "detail" in node:
                found.append(node)
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)
    walk(summary)
    return found


def test_identical_deposit_stores_nothing_and_says_which_bag_it_equals(tmp_path, capsys):
    arch = make_archive(tmp_path)
    source = make_source(tmp_path / "source", small=3, small_size=4096)
    first = strongroom(capsys, *deposit_argv(arch, source, "dup"))
    assert first.code == 0, first.err
    bag_id = first.data["bags"][0]["id"]
    stored = {t: sorted(p.name for p in arch.bag_folder(t, bag_id).parent.iterdir()) for t in TARGETS}

    again = strongroom(capsys, *deposit_argv(arch, source, "dup"))
    assert again.code == 0, again.err
    assert again.data["state"] == "duplicate", again.data
    assert again.data["bags"] == []
    assert again.data["duplicate"]["bags"] == [bag_id]
    assert {t: sorted(p.name for p in arch.bag_folder(t, bag_id).parent.iterdir()) for t in TARGETS} == stored
    assert arch.catalog().bags().column("bag_id").to_pylist() == [bag_id]
    events = [e for e in arch.catalog().events(bag_id=bag_id).to_pylist() if e["type"] == "ingestion"]
    assert [e["outcome"] for e in events] == ["success", "warning"], events
    assert events[1]["detail"].startswith("duplicate deposit:") and bag_id in events[1]["detail"]
    staged = [p for p in (arch.staging / LIB / "dup").rglob("*")] if (arch.staging / LIB / "dup").exists() else []
    assert not [p for p in staged if p.is_file()], "a duplicate left staged files behind"

    text = strongroom(capsys, *deposit_argv(arch, source, "dup", json_out=False))
    assert text.code == 0, text.err
    assert f"identical to bag group {bag_id.rsplit('-', 1)[0]}" in text.out, text.out
    assert "nothing was stored" in text.out and "--new-version" in text.out, text.out
    assert "failed" not in text.out

    anyway = strongroom(capsys, *deposit_argv(arch, source, "dup", "--new-version"))   # a version, no new file
    assert anyway.code == 0, anyway.err
    v2_id = anyway.data["bags"][0]["id"]
    for target in TARGETS:
        assert _payload(arch, target, v2_id) == {}
        assert len((arch.bag_folder(target, v2_id) / "fetch.txt").read_text("utf-8").splitlines()) == \
            len(tree_digests(source))


def test_new_version_stores_only_changed_files_and_references_the_rest(tmp_path, capsys):
    arch = make_archive(tmp_path)
    source = make_source(tmp_path / "source", small=4, small_size=4096)
    v1 = strongroom(capsys, *deposit_argv(arch, source, "ver"))
    assert v1.code == 0, v1.err
    v1_id = v1.data["bags"][0]["id"]

    (source / "nested" / "part-001.bin").write_bytes(b"changed content\n")
    (source / "nested" / "part-002.bin").unlink()
    (source / "新 file.txt").write_text("added in version 2\n", "utf-8")
    v2 = strongroom(capsys, *deposit_argv(arch, source, "ver", "--new-version"))
    assert v2.code == 0, v2.err
    assert v2.data["state"] == "preserved"
    v2_id = v2.data["bags"][0]["id"]
    assert v2_id != v1_id

    changed = {"nested/part-001.bin", "新 file.txt"}
    unchanged = set(tree_digests(source)) - changed
    for target in TARGETS:
        assert set(_payload(arch, target, v2_id)) == changed, target     # only what changed is stored
        folder = arch.bag_folder(target, v2_id)
        lines = (folder / "fetch.txt").read_text("utf-8").splitlines()
        entries = {}
        for line in lines:
            url, length, path = line.split(" ", 2)
            m = re.fullmatch(r"strongroom://(PKU/ver/\d{8}T\d{6}Z-\d+)/(\S+)", url)
            assert m and m.group(1) == v1_id, line
            entries[path] = int(length)
        want = {"data/" + p.replace("%", "%25"): (source / p).stat().st_size for p in unchanged}
        assert entries == want
        manifest = (folder / "manifest-sha256.txt").read_text("utf-8")
        for p, digest in tree_digests(source).items():         # the manifests list the complete version
            assert f"{digest}  data/{p.replace('%', '%25')}\n" in manifest, p
        info = _bag_info(arch, target, v2_id)
        assert info["Strongroom-Version-Of"] == v1_id.rsplit("-", 1)[0]
        total = sum((source / p).stat().st_size for p in tree_digests(source))
        assert info["Payload-Oxum"] == f"{total}.{len(tree_digests(source))}"
        assert info["Strongroom-Fetched-Oxum"] == f"{sum(want.values())}.{len(want)}"
        assert "fetch.txt" in (folder / "tagmanifest-sha256.txt").read_text("utf-8")
    row = arch.catalog().bag(v2_id)
    assert row.file_count == len(tree_digests(source))
    assert set(arch.catalog().files(v2_id).column("path").to_pylist()) == {"data/" + p for p in tree_digests(source)}

    code, summary = _audit(capsys, arch, v2_id)      # fetched files are neither missing nor repaired
    assert code == 0, _findings(summary)
    assert not _findings(summary)


def test_audit_names_a_fetched_file_that_no_registered_bag_holds(tmp_path, capsys):
    """A copy whose fetch.txt (consistent with its tag manifests) points at a bag the catalog
    does not hold: the audit says so for that file, and does not call it missing."""
    arch = make_archive(tmp_path)
    source = make_source(tmp_path / "source", small=2, small_size=1024)
    assert strongroom(capsys, *deposit_argv(arch, source, "bad")).code == 0
    (source / "added.txt").write_text("new\n")
    v2 = strongroom(capsys, *deposit_argv(arch, source, "bad", "--new-version"))
    assert v2.code == 0, v2.err
    v2_id = v2.data["bags"][0]["id"]
    ghost = v2_id.rsplit("/", 1)[0] + "/20000101T000000Z-1"
    for target in TARGETS:
        folder = arch.bag_folder(target, v2_id)
        fetch = folder / "fetch.txt"
        fetch.write_text(re.sub(r"strongroom://PKU/bad/\d{8}T\d{6}Z-\d+/", f"strongroom://{ghost}/",
                                fetch.read_text("utf-8")), "utf-8")
        for alg in ("sha256", "md5", "sha512", "sha1"):
            tm = folder / f"tagmanifest-{alg}.txt"
            if tm.exists():
                new = hashlib.new(alg, fetch.read_bytes()).hexdigest()
                tm.write_text(re.sub(r"^[0-9a-f]+  fetch\.txt$", f"{new}  fetch.txt", tm.read_text("utf-8"),
                                     flags=re.M), "utf-8")
    code, summary = _audit(capsys, arch, v2_id)
    assert code == 1
    found = _findings(summary)
    fetch_findings = [f for f in found if f["kind"] == "fetch-unverified"]
    assert fetch_findings and all(ghost in f["detail"] and "does not hold" in f["detail"] for f in fetch_findings)
    assert not [f for f in found if f["kind"] == "missing"], found


def test_catalog_rebuild_takes_a_version_bag_whole_without_calling_fetched_files_missing(tmp_path, capsys):
    import shutil

    arch = make_archive(tmp_path)
    source = make_source(tmp_path / "source", small=2, small_size=1024)
    v1_id = strongroom(capsys, *deposit_argv(arch, source, "reb")).data["bags"][0]["id"]
    (source / "added.txt").write_text("new\n")
    v2 = strongroom(capsys, *deposit_argv(arch, source, "reb", "--new-version"))
    v2_id = v2.data["bags"][0]["id"]
    before = {b: arch.catalog().files(b).to_pylist() for b in (v1_id, v2_id)}
    shutil.rmtree(arch.catalog_path)

    res = strongroom(capsys, "--config", str(arch.config_path), "--json", "catalog", "rebuild")
    assert res.code == 0, res.out
    assert {b: arch.catalog().files(b).to_pylist() for b in (v1_id, v2_id)} == before
    assert {r["state"] for r in arch.catalog().replicas(bag_id=v2_id).to_pylist()} == {"verified"}
