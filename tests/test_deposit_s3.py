"""Deposit, status, restore and `catalog rebuild` with a policy mixing one filesystem target and
two S3 buckets (two sites) on a real SeaweedFS server; and credentials never leak.

The archive is built from a YAML config written here, with the S3 credentials referenced by
environment variable names set for the test, as a librarian would. What the S3 targets hold is
checked with a plain boto3 client; what the CLI says is checked through its --json output.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from pipelines.cli import main

REPO = Path(__file__).resolve().parents[1]
KEY_ENV, SECRET_ENV = "SR_E2E_S3_KEY", "SR_E2E_S3_SECRET"
MiB = 1 << 20

FILES = {
    "scans/page 001.tif": random.Random(1).randbytes(6 * MiB + 321),   # multipart on s3-east (5 MiB parts)
    "目录/catalogue.csv": "题名,年份\n善本,1644\n".encode("utf-8") * 20,
    "pct%41.txt": b"100% literal",
    "empty.dat": b"",
}


def make_source(root: Path) -> Path:
    for i, (rel, data) in enumerate(FILES.items()):
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        os.utime(p, ns=(1_600_000_000_000_000_000 + i, 1_600_000_000_000_000_000 + i))
    return root


def write_archive(folder: Path, seaweed, bucket_east: str, bucket_west: str, *, prefix: str = "preservation",
                  west_bucket_override: str = None, catalog: str = "./catalog", extra: str = "") -> Path:
    """strongroom.yaml + policies/mixed.yaml: local folder + two S3 buckets, credentials by env name.
    `catalog` may be s3://...; `extra` is appended to the config as top-level YAML."""
    (folder / "policies").mkdir(parents=True)
    (folder / "replicas" / "local").mkdir(parents=True)
    creds = f"{{access_key_env: {KEY_ENV}, secret_key_env: {SECRET_ENV}}}"
    (folder / "strongroom.yaml").write_text(f"""\
catalog: {catalog}
staging: ./staging
policies: ./policies
storage:
  local: {{type: filesystem, root: ./replicas/local, site: beijing}}
  s3-east:
    type: s3
    endpoint: {seaweed.endpoint}
    bucket: {bucket_east}
    region: us-east-1
    prefix: {prefix}
    addressing_style: path
    multipart_threshold: 5MiB
    multipart_chunksize: 5MiB
    site: shanghai
    credentials: {creds}
  s3-west:
    type: s3
    endpoint: {seaweed.endpoint}
    bucket: {west_bucket_override or bucket_west}
    region: us-east-1
    prefix: {prefix}/west
    site: chengdu
    credentials: {creds}
{extra}""", encoding="utf-8")
    (folder / "policies" / "mixed.yaml").write_text(
        "name: mixed\nchecksums: [sha256, md5]\nreplicas: [local, s3-east, s3-west]\n", encoding="utf-8")
    return folder / "strongroom.yaml"


def tree(root: Path) -> dict:
    out = {}
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            p = os.path.join(dirpath, name)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, root)] = (hashlib.sha256(fh.read()).hexdigest(), os.path.getsize(p),
                                                  os.stat(p).st_mtime_ns)
    return out


def run(capsys, *argv):
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def comparable(status: dict) -> list:
    return [(b["bag_id"], b["policy"], b["files"], b["bytes"],
             sorted((r["target"], r["site"], r["state"]) for r in b["replicas"])) for b in status["bags"]]


@pytest.fixture(scope="module")
def buckets(seaweed):
    return seaweed.make_bucket(), seaweed.make_bucket()


@pytest.fixture
def s3_env(seaweed, monkeypatch):
    monkeypatch.setenv(KEY_ENV, seaweed.access_key)
    monkeypatch.setenv(SECRET_ENV, seaweed.secret_key)


def test_mixed_policy_deposit_status_restore_and_rebuild(seaweed, buckets, s3_env, tmp_path, capsys):
    east, west = buckets
    cfg = write_archive(tmp_path / "archive", seaweed, east, west, prefix="e2e-" + uuid.uuid4().hex[:6])
    src = make_source(tmp_path / "source")

    code, out, err = run(capsys, "--config", cfg, "--json", "deposit", src, "--library", "PKU", "--collection",
                         "RARE", "--type", "self-built", "--policy", "mixed", "--title", "善本 on S3")
    assert code == 0, out + err
    (bag,) = json.loads(out)["bags"]
    bag_id = bag["id"]

    # every S3 object is there, read back without Strongroom, and carries the manifest digests
    raw = seaweed.client()
    conf = yaml.safe_load(cfg.read_text())["storage"]
    for target in ("s3-east", "s3-west"):
        t = conf[target]
        base = f"{t['prefix']}/{bag_id}/"
        listed = raw.list_objects_v2(Bucket=t["bucket"], Prefix=base)["Contents"]
        keys = {o["Key"][len(base):] for o in listed}
        for rel, data in FILES.items():
            assert "data/" + rel in keys
            got = raw.get_object(Bucket=t["bucket"], Key=base + "data/" + rel)
            assert got["Body"].read() == data
            assert got["Metadata"]["sha256"] == hashlib.sha256(data).hexdigest()
            assert got["Metadata"]["md5"] == hashlib.md5(data).hexdigest()
        assert "bagit.txt" in keys and "manifest-sha256.txt" in keys
    big = raw.head_object(Bucket=east, Key=f"{conf['s3-east']['prefix']}/{bag_id}/data/scans/page 001.tif",
                          ChecksumMode="ENABLED")
    assert big["ChecksumSHA256"].endswith("-2")  # went up in two 5 MiB parts
    assert raw.list_multipart_uploads(Bucket=east).get("Uploads", []) == []

    code, out, err = run(capsys, "--config", cfg, "--json", "status")
    assert code == 0, out + err
    before = json.loads(out)
    (b,) = before["bags"]
    assert {r["target"]: (r["site"], r["state"]) for r in b["replicas"]} == {
        "local": ("beijing", "verified"), "s3-east": ("shanghai", "verified"), "s3-west": ("chengdu", "verified")}

    # restore from each S3 replica: the source tree comes back identical (bytes and mtimes)
    for target in ("s3-east", "s3-west"):
        dest = tmp_path / f"restored-{target}"
        code, out, err = run(capsys, "--config", cfg, "--json", "restore", bag_id, dest, "--from", target,
                             "--payload-only")
        assert code == 0, out + err
        assert list(json.loads(out)["sources"]) == [target]
        assert tree(dest) == tree(src)

    # the catalog is lost: rebuilt from what the three targets hold, S3 listed bag by bag
    shutil.rmtree(cfg.parent / "catalog")
    code, out, err = run(capsys, "--config", cfg, "--json", "catalog", "rebuild")
    assert code == 0, out + err
    summary = json.loads(out)["summary"]
    assert (summary["bags_found"], summary["bags_added"], summary["copies_verified"]) == (1, 1, 3)
    code, out, err = run(capsys, "--config", cfg, "--json", "status")
    assert code == 0, out + err
    assert comparable(json.loads(out)) == comparable(before)

    # with the local copy gone, a whole-bag restore is served by the S3 replicas
    shutil.rmtree(cfg.parent / "replicas" / "local" / "PKU")
    code, out, err = run(capsys, "--config", cfg, "--json", "restore", bag_id, tmp_path / "whole")
    assert code == 0, out + err
    assert set(json.loads(out)["sources"]) <= {"s3-east", "s3-west"}
    assert tree(tmp_path / "whole" / "data") == tree(src)


def test_a_wrong_bucket_fails_the_deposit_naming_it(seaweed, buckets, s3_env, tmp_path, capsys):
    east, west = buckets
    missing = "missing-" + uuid.uuid4().hex[:10]
    cfg = write_archive(tmp_path / "archive", seaweed, east, west, prefix="wrong-" + uuid.uuid4().hex[:6],
                        west_bucket_override=missing)
    src = make_source(tmp_path / "source")
    code, out, err = run(capsys, "--config", cfg, "--json", "deposit", src, "--library", "PKU", "--collection",
                         "RARE", "--type", "self-built", "--policy", "mixed")
    assert code == 1, out + err
    assert missing in out + err and "does not exist" in out + err
    assert missing not in {b["Name"] for b in seaweed.client().list_buckets()["Buckets"]}  # not created
    code, out, err = run(capsys, "--config", cfg, "--json", "status")
    states = {r["target"]: r["state"] for b in json.loads(out)["bags"] for r in b["replicas"]}
    assert states.get("s3-west") != "verified"


# --------------------------------------------------------------------------------------------
# Credentials never leak


def _cli(cfg: Path, env: dict, *argv) -> subprocess.CompletedProcess:
    """The real command line in its own process, so -vv sets up logging exactly as for a user."""
    return subprocess.run([sys.executable, "-m", "pipelines", "--config", str(cfg), *map(str, argv)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_credentials_never_appear_in_output_logs_errors_or_the_archive(seaweed, buckets, tmp_path):
    east, west = buckets
    cfg = write_archive(tmp_path / "archive", seaweed, east, west, prefix="leak-" + uuid.uuid4().hex[:6])
    src = make_source(tmp_path / "source")
    env = {**os.environ, KEY_ENV: seaweed.access_key, SECRET_ENV: seaweed.secret_key}
    secrets = [seaweed.access_key, seaweed.secret_key]
    outputs = []

    dep = _cli(cfg, env, "--json", "-vv", "deposit", src, "--library", "PKU", "--collection", "LEAK",
               "--type", "self-built", "--policy", "mixed")
    assert dep.returncode == 0, dep.stdout + dep.stderr
    assert "DEBUG" in dep.stderr  # -vv really logged at debug level
    bag_id = json.loads(dep.stdout)["bags"][0]["id"]
    outputs.append(dep)
    for argv in (("--json", "-vv", "status"), ("-vv", "status"),
                 ("--json", "-vv", "restore", bag_id, tmp_path / "r1", "--from", "s3-west"),
                 ("-vv", "restore", bag_id, tmp_path / "r2", "--from", "s3-east")):
        p = _cli(cfg, env, *argv)
        assert p.returncode == 0, p.stdout + p.stderr
        outputs.append(p)

    # errors: a wrong secret (access denied) and a bucket that does not exist
    wrong = "wrong-" + uuid.uuid4().hex
    bad = _cli(cfg, {**env, SECRET_ENV: wrong}, "--json", "-vv", "restore", bag_id, tmp_path / "r3",
               "--from", "s3-east")
    # (the local copy serves the restore; the refusal is reported)
    assert "access denied" in bad.stdout + bad.stderr
    outputs.append(bad)
    bad2 = _cli(cfg, {**env, SECRET_ENV: wrong}, "-vv", "deposit", src, "--library", "PKU", "--collection",
                "LEAK2", "--type", "self-built", "--policy", "mixed")
    assert bad2.returncode == 1 and "access denied" in bad2.stdout + bad2.stderr
    outputs.append(bad2)
    cfg2 = write_archive(tmp_path / "archive2", seaweed, east, west, west_bucket_override="nope-" + uuid.uuid4().hex[:8])
    bad3 = _cli(cfg2, env, "--json", "-vv", "deposit", src, "--library", "PKU", "--collection", "LEAK",
                "--type", "self-built", "--policy", "mixed")
    assert bad3.returncode == 1 and "does not exist" in bad3.stdout + bad3.stderr
    outputs.append(bad3)

    for p in outputs:
        for secret in secrets + [wrong]:
            assert secret not in p.stdout and secret not in p.stderr, p.args
    # nor anywhere in what the archive keeps: catalog, ledger, staging state, failure records
    for folder in (tmp_path / "archive", tmp_path / "archive2"):
        for path in folder.rglob("*"):
            if path.is_file() and "replicas" not in path.parts:
                data = path.read_bytes()
                for secret in secrets + [wrong]:
                    assert secret.encode() not in data, path


# --------------------------------------------------------------------------------------------
# Retention (S3 Object Lock) through a policy


def write_locked_archive(folder: Path, seaweed, bucket: str, *, object_lock: bool, prefix: str) -> Path:
    (folder / "policies").mkdir(parents=True)
    creds = f"{{access_key_env: {KEY_ENV}, secret_key_env: {SECRET_ENV}}}"
    (folder / "strongroom.yaml").write_text(f"""\
storage:
  local: {{type: filesystem, root: ./replicas/local, site: beijing}}
  vault:
    type: s3
    endpoint: {seaweed.endpoint}
    bucket: {bucket}
    prefix: {prefix}
    object_lock: {str(object_lock).lower()}
    site: shanghai
    credentials: {creds}
""", encoding="utf-8")
    (folder / "replicas" / "local").mkdir(parents=True)
    (folder / "policies" / "kept.yaml").write_text(
        "name: kept\nchecksums: [sha256]\nreplicas: [local, vault]\n"
        "retention: {mode: governance, years: 2}\n", encoding="utf-8")
    return folder / "strongroom.yaml"


def test_policy_retention_locks_every_object_and_status_shows_it(seaweed, s3_env, tmp_path, capsys):
    import datetime as dt

    bucket = seaweed.make_bucket(object_lock=True)
    prefix = "kept-" + uuid.uuid4().hex[:6]
    cfg = write_locked_archive(tmp_path / "archive", seaweed, bucket, object_lock=True, prefix=prefix)
    src = make_source(tmp_path / "source")
    code, out, err = run(capsys, "--config", cfg, "--json", "deposit", src, "--library", "PKU", "--collection",
                         "KEPT", "--type", "self-built", "--policy", "kept")
    assert code == 0, out + err
    bag_id = json.loads(out)["bags"][0]["id"]

    raw = seaweed.client()
    listed = raw.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/{bag_id}/")["Contents"]
    assert len(listed) >= len(FILES)
    soonest = None
    for obj in listed:
        head = raw.head_object(Bucket=bucket, Key=obj["Key"])
        assert head["ObjectLockMode"] == "GOVERNANCE", obj["Key"]
        until = head["ObjectLockRetainUntilDate"]
        soonest = until if soonest is None else min(soonest, until)

    code, out, err = run(capsys, "--config", cfg, "--json", "status")
    assert code == 0, out + err
    (bag,) = json.loads(out)["bags"]
    ret = {r["target"]: r["retention"] for r in bag["replicas"]}
    assert ret["local"] == {"mode": "governance", "years": 2, "locked": False, "until_at_least": None,
                            "why_not": "a folder cannot lock files"}
    assert (ret["vault"]["mode"], ret["vault"]["years"], ret["vault"]["locked"]) == ("governance", 2, True)
    shown = dt.datetime.fromisoformat(ret["vault"]["until_at_least"].replace("Z", "+00:00"))
    # a lower bound of what the server holds, and a close one (objects go up right after bagging)
    assert shown <= soonest and soonest - shown < dt.timedelta(minutes=10)

    code, out, err = run(capsys, "--config", cfg, "status")
    assert code == 0, out + err
    assert "RETENTION" in out and f"governance to {shown:%Y-%m-%d}+" in out and "not locked" in out


def test_retention_on_a_bucket_without_object_lock_is_refused_before_any_upload(seaweed, s3_env, tmp_path, capsys):
    bucket = seaweed.make_bucket()
    prefix = "unlocked-" + uuid.uuid4().hex[:6]
    for declared in (False, True):  # not declared, and declared but the bucket cannot lock
        cfg = write_locked_archive(tmp_path / f"archive-{declared}", seaweed, bucket, object_lock=declared,
                                   prefix=prefix)
        src = make_source(tmp_path / f"source-{declared}")
        code, out, err = run(capsys, "--config", cfg, "deposit", src, "--library", "PKU", "--collection",
                             "KEPT", "--type", "self-built", "--policy", "kept")
        assert code == 2, out + err  # a configuration error (exit 2), not a damaged copy
        assert "vault" in err and ("object lock" in err.lower() or "object_lock" in err), err
        assert seaweed.client().list_objects_v2(Bucket=bucket, Prefix=prefix + "/").get("KeyCount", 0) == 0
        assert not any(p.is_file() for p in (cfg.parent / "replicas" / "local").rglob("*"))


def test_restore_from_s3_reads_files_in_parallel_and_from_a_folder_one_at_a_time(
        seaweed, buckets, s3_env, tmp_path, capsys, monkeypatch):
    import threading
    import time

    from storage_adapters.filesystem import FilesystemAdapter
    from storage_adapters.s3 import S3Adapter

    east, west = buckets
    cfg = write_archive(tmp_path / "archive", seaweed, east, west, prefix="par-" + uuid.uuid4().hex[:6])
    src = tmp_path / "many"
    for n in range(40):
        (src / f"d{n % 4}").mkdir(parents=True, exist_ok=True)
        (src / f"d{n % 4}" / f"f{n}.txt").write_bytes(f"file {n}\n".encode() * (n + 1))
    code, out, err = run(capsys, "--config", cfg, "--json", "deposit", src, "--library", "PKU", "--collection",
                         "PAR", "--type", "self-built", "--policy", "mixed")
    assert code == 0, out + err
    bag_id = json.loads(out)["bags"][0]["id"]

    lock = threading.Lock()
    seen = {}
    for cls in (S3Adapter, FilesystemAdapter):
        state = {"now": 0, "most": 0}
        real = cls.open_file

        def tracked(self, *a, real=real, state=state, **kw):
            with lock:
                state["now"] += 1
                state["most"] = max(state["most"], state["now"])
            try:
                time.sleep(0.02)
                return real(self, *a, **kw)
            finally:
                with lock:
                    state["now"] -= 1

        monkeypatch.setattr(cls, "open_file", tracked)
        seen[cls] = state
    for target, adapter_cls, parallel in (("s3-east", S3Adapter, True), ("local", FilesystemAdapter, False)):
        code, out, err = run(capsys, "--config", cfg, "restore", bag_id, tmp_path / f"r-{target}", "--from", target,
                             "--payload-only")
        assert code == 0, out + err
        assert tree(tmp_path / f"r-{target}") == tree(src)
        most = seen[adapter_cls]["most"]
        assert (most > 1) if parallel else (most == 1), (target, most)
