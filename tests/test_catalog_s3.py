"""The catalog in object storage (`catalog: s3://bucket/prefix`) on a real SeaweedFS server.

A librarian's whole round (deposit, status, audit, ledger verify, compaction, restore, rebuild)
runs with nothing on local disk but staging; writers on "different machines" (separate catalog
objects in threads) share the ledger, whose segments are claimed with a conditional PUT; and a
catalog bucket that is missing or refuses the credentials is a clear error, never a new bucket.
"""

from __future__ import annotations

import json
import shutil
import threading
import uuid

from catalog.access import open_catalog
from catalog.ledger import verify_store
from catalog.schema import EventRecord
from policies.config import load_config
from tests.test_deposit_s3 import (KEY_ENV, SECRET_ENV, buckets, comparable, make_source, run,  # noqa: F401
                                   s3_env, tree, write_archive)  # buckets, s3_env: fixtures


def catalog_keys(seaweed, bucket: str, prefix: str) -> list:
    pages = seaweed.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/")
    return [o["Key"][len(prefix) + 1:] for page in pages for o in page.get("Contents", [])]


def test_deposit_status_audit_restore_and_rebuild_with_the_catalog_in_s3(seaweed, buckets, s3_env, tmp_path, capsys):
    east, west = buckets
    tag = uuid.uuid4().hex[:6]
    cat_prefix = f"catalog-{tag}"
    # the catalog shares s3-east's bucket under its own prefix: s3-east's endpoint and credentials reach it
    cfg = write_archive(tmp_path / "archive", seaweed, east, west, prefix=f"rep-{tag}",
                        catalog=f"s3://{east}/{cat_prefix}")
    assert load_config(cfg).catalog_access == "s3-east"
    src = make_source(tmp_path / "source")

    code, out, err = run(capsys, "--config", cfg, "--json", "deposit", src, "--library", "PKU", "--collection",
                         "CAT", "--type", "self-built", "--policy", "mixed")
    assert code == 0, out + err
    (bag,) = json.loads(out)["bags"]
    bag_id = bag["id"]
    assert not (cfg.parent / "catalog").exists()  # nothing local pretends to be the catalog
    keys = catalog_keys(seaweed, east, cat_prefix)
    for table in ("bags/", "files/", "replicas/", "events/seg-"):
        assert any(k.startswith(table) for k in keys), (table, keys)

    code, out, err = run(capsys, "--config", cfg, "--json", "status")
    assert code == 0, out + err
    before = json.loads(out)
    assert {r["target"]: r["state"] for b in before["bags"] for r in b["replicas"]} == {
        "local": "verified", "s3-east": "verified", "s3-west": "verified"}

    code, out, err = run(capsys, "--config", cfg, "--json", "audit", "--all", "--deep")
    assert code == 0, out + err
    code, out, err = run(capsys, "--config", cfg, "--json", "ledger", "verify")
    assert code == 0, out + err
    ledger = json.loads(out)
    assert ledger["ok"] and ledger["events"] > 0

    # compaction on S3 deletes only what it merged: the state reads the same afterwards
    code, out, err = run(capsys, "--config", cfg, "--json", "catalog", "compact")
    assert code == 0, out + err
    code, out, err = run(capsys, "--config", cfg, "--json", "status")
    assert comparable(json.loads(out)) == comparable(before)
    # the audit's results were recorded in the S3 catalog (and survived compaction)
    first = {r["target"]: r["last_audit_at"] for b in before["bags"] for r in b["replicas"]}
    audited = {r["target"]: r for b in json.loads(out)["bags"] for r in b["replicas"]}
    for target, r in audited.items():
        assert (r["last_audit_kind"], r["last_audit_outcome"]) == ("deep", "success"), r
        assert r["last_audit_at"] > first[target], (r, first)

    dest = tmp_path / "restored"
    code, out, err = run(capsys, "--config", cfg, "--json", "restore", bag_id, dest, "--from", "s3-west",
                         "--payload-only")
    assert code == 0, out + err
    assert tree(dest) == tree(src)

    # the S3 catalog is lost: rebuilt into the same place from the targets
    raw = seaweed.client()
    for key in catalog_keys(seaweed, east, cat_prefix):
        raw.delete_object(Bucket=east, Key=f"{cat_prefix}/{key}")
    code, out, err = run(capsys, "--config", cfg, "--json", "catalog", "rebuild")
    assert code == 0, out + err
    code, out, err = run(capsys, "--config", cfg, "--json", "status")
    assert comparable(json.loads(out)) == comparable(before)


def test_writers_sharing_an_s3_catalog_claim_ledger_segments_atomically(seaweed, buckets, s3_env, tmp_path):
    east, west = buckets
    cfg = write_archive(tmp_path / "archive", seaweed, east, west, prefix=f"rep-{uuid.uuid4().hex[:6]}",
                        catalog=f"s3://{east}/shared-{uuid.uuid4().hex[:6]}")
    config = load_config(cfg)
    writers, appends = 4, 6
    start = threading.Barrier(writers)
    errors: list = []

    def writer(n: int) -> None:
        catalog = open_catalog(config)  # one per "machine": no state shared but the bucket
        try:
            start.wait()
            for i in range(appends):
                catalog.append_events([EventRecord(type="test", outcome="success", detail=f"w{n}-{i}")])
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    catalog = open_catalog(config)
    report = verify_store(catalog.store)
    assert report.ok, report.problems
    assert (report.segments, report.events) == (writers * appends, writers * appends)
    details = sorted(catalog.events()["detail"].to_pylist())
    assert details == sorted(f"w{n}-{i}" for n in range(writers) for i in range(appends))


def test_a_missing_catalog_bucket_is_a_config_error_and_is_not_created(seaweed, buckets, s3_env, tmp_path, capsys):
    east, west = buckets
    missing = "nocat-" + uuid.uuid4().hex[:10]
    cfg = write_archive(tmp_path / "archive", seaweed, east, west, prefix=f"rep-{uuid.uuid4().hex[:6]}",
                        catalog=f"s3://{missing}/catalog", extra="catalog_access: s3-west\n")
    for argv in (("status",), ("ledger", "verify"), ("audit", "--all")):
        code, out, err = run(capsys, "--config", cfg, *argv)
        assert code == 2, (argv, out + err)
        assert missing in err and "does not exist" in err and "strongroom.yaml" in err, err
    src = make_source(tmp_path / "source")
    code, out, err = run(capsys, "--config", cfg, "deposit", src, "--library", "PKU", "--collection", "NOCAT",
                         "--type", "self-built", "--policy", "mixed")
    assert code == 2, out + err
    assert missing not in {b["Name"] for b in seaweed.client().list_buckets()["Buckets"]}
    # nothing was replicated for a deposit that could not be registered
    local = cfg.parent / "replicas" / "local"
    assert not any(p.is_file() for p in local.rglob("*"))


def test_wrong_catalog_credentials_are_reported_without_the_secret(seaweed, buckets, tmp_path, capsys, monkeypatch):
    east, west = buckets
    wrong = "wrong-" + uuid.uuid4().hex
    monkeypatch.setenv(KEY_ENV, seaweed.access_key)
    monkeypatch.setenv(SECRET_ENV, wrong)
    cfg = write_archive(tmp_path / "archive", seaweed, east, west, prefix=f"rep-{uuid.uuid4().hex[:6]}",
                        catalog=f"s3://{east}/catalog-{uuid.uuid4().hex[:6]}")
    code, out, err = run(capsys, "--config", cfg, "--json", "status")
    assert code != 0
    assert "access denied" in (out + err).lower()
    for secret in (wrong, seaweed.secret_key, seaweed.access_key):
        assert secret not in out + err
    shutil.rmtree(tmp_path / "archive")
