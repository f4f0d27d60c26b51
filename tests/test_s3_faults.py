"""Faults on the way to a real SeaweedFS server: throttling, 5xx, resets, bodies cut off, a server
killed in the middle of a replication, a deposit killed with -9. No mocks of S3 behaviour: the
server is real, and a loopback proxy (tests/s3proxy.py) makes the transport misbehave and
keeps a log of every request, which is how these tests see what the adapter asked for.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from strongroom.bag_id import BagId
from pipelines.cli import main
from policies.config import Credentials
from storage_adapters.base import PutItem, PutOutcome, StorageError
from storage_adapters.replicate import verify_replica
from storage_adapters.s3 import S3Adapter
from tests.s3proxy import S3Proxy
from tests.seaweed import SeaweedServer

REPO = Path(__file__).resolve().parents[1]
BAG = BagId.parse("LIB/COLL/20240102T030405Z-1")
MiB = 1 << 20
KEY_ENV, SECRET_ENV = "SR_FAULT_S3_KEY", "SR_FAULT_S3_SECRET"


def digests(data: bytes) -> dict:
    return {a: hashlib.new(a, data).hexdigest() for a in ("sha256", "md5")}


@pytest.fixture
def proxy(seaweed):
    with S3Proxy(seaweed.ports["s3"]) as p:
        yield p


@pytest.fixture(scope="module")
def bucket(seaweed):
    return seaweed.make_bucket()


def through(proxy, seaweed, bucket, **kw) -> S3Adapter:
    """An adapter whose requests go through the proxy; short backoffs keep the tests quick."""
    kw.setdefault("retry_delay", 0.05)
    return S3Adapter("s3-proxied", "site-p", bucket=bucket, endpoint=proxy.endpoint, region="us-east-1",
                     prefix="f-" + uuid.uuid4().hex[:10], addressing_style="path",
                     credentials=Credentials(access_key=seaweed.access_key, secret_key=seaweed.secret_key), **kw)


def key_path(adapter, relpath, bag=BAG) -> str:
    return f"/{adapter.bucket}/{adapter.prefix}/{bag}/{relpath}"


def outcomes(proxy, method, path) -> list:
    return [r.outcome for r in proxy.requests(method) if r.path == path]


def uploads(raw, bucket, prefix):
    return raw.list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads", [])


# --------------------------------------------------------------------------------------------
# Retried until it works


def test_slowdown_5xx_and_resets_are_retried_until_the_object_is_stored(seaweed, proxy, bucket):
    a = through(proxy, seaweed, bucket)
    data = b"retry me " * 1000
    path = key_path(a, "data/x.txt")
    proxy.fail("slowdown", method="PUT", path=path, times=2)
    proxy.fail("reset", method="PUT", path=path, times=1)
    proxy.fail("internal", method="HEAD", path=path, times=2)
    assert a.put_file(BAG, "data/x.txt", io.BytesIO(data), size=len(data), digests=digests(data)) is PutOutcome.WRITTEN
    assert outcomes(proxy, "PUT", path) == ["slowdown", "slowdown", "reset", "200"]
    raw = seaweed.client()
    assert raw.get_object(Bucket=bucket, Key=path.split("/", 2)[2])["Body"].read() == data
    assert a.stat_file(BAG, "data/x.txt").stored_digests == digests(data)


def test_a_failure_is_retried_within_the_objects_budget(seaweed, proxy, bucket):
    a = through(proxy, seaweed, bucket, max_attempts=4)
    data = b"object level"
    path = key_path(a, "data/o.txt")
    proxy.fail("internal", method="PUT", path=path, times=3)  # 3 x 500 spend 3 of the 4 attempts, then 200
    assert a.put_file(BAG, "data/o.txt", io.BytesIO(data), size=len(data), digests=digests(data)) is PutOutcome.WRITTEN
    assert outcomes(proxy, "PUT", path) == ["internal", "internal", "internal", "200"]
    # each new attempt starts with a HEAD: an upload whose answer was lost would be found there
    assert len(proxy.requests("HEAD", path)) >= 2


def test_a_target_that_keeps_failing_gives_a_clear_error_and_stores_nothing(seaweed, proxy, bucket):
    a = through(proxy, seaweed, bucket, max_attempts=2)
    data = b"never"
    proxy.fail("internal", method="PUT", path=f"/{bucket}/{a.prefix}/")
    with pytest.raises(StorageError) as info:
        a.put_file(BAG, "data/n.txt", io.BytesIO(data), size=len(data), digests=digests(data))
    text = str(info.value)
    assert text.startswith(f"s3-proxied: s3://{bucket}/{a.prefix}/{BAG}/data/n.txt")
    assert "InternalError" in text and "HTTP 500" in text and "gave up after 2 attempts" in text
    assert info.value.exit_code == 1
    assert seaweed.client().list_objects_v2(Bucket=bucket, Prefix=a.prefix + "/").get("KeyCount") == 0


def test_a_get_that_dies_half_way_is_resumed_at_the_byte_it_reached(seaweed, proxy, bucket):
    a = through(proxy, seaweed, bucket)
    data = random.Random(7).randbytes(3 * MiB + 5)
    assert a.put_file(BAG, "data/big.bin", io.BytesIO(data), size=len(data), digests=digests(data)) \
        is PutOutcome.WRITTEN
    path = key_path(a, "data/big.bin")
    proxy.clear()
    proxy.fail("truncate", method="GET", path=path, times=2, keep_bytes=MiB)
    with a.open_file(BAG, "data/big.bin") as fh:
        assert fh.read() == data
    gets = proxy.requests("GET", path)
    assert [(g.outcome, g.range) for g in gets] == [
        ("truncate", None), ("truncate", f"bytes={MiB}-"), ("206", f"bytes={2 * MiB}-")]

    # a deep verification reads through the same failures and still proves every byte
    proxy.fail("truncate", method="GET", path=path, times=1, keep_bytes=100_000)
    result = verify_replica(a, BAG, {"data/big.bin": digests(data)}, {"data/big.bin": len(data)}, deep=True)
    assert result.ok and result.bytes_checked == len(data), result.problems

    # a body that keeps dying: reported as a problem of that file, naming it
    proxy.fail("truncate", method="GET", path=path, keep_bytes=10)
    result = verify_replica(a, BAG, {"data/big.bin": digests(data)}, {"data/big.bin": len(data)}, deep=True)
    assert not result.ok and result.damaged == ["data/big.bin"]


def test_a_get_resumed_on_a_changed_object_is_refused(seaweed, proxy, bucket):
    a = through(proxy, seaweed, bucket)
    data = random.Random(8).randbytes(2 * MiB)
    a.put_file(BAG, "data/c.bin", io.BytesIO(data), size=len(data), digests=digests(data))
    raw = seaweed.client()
    key = key_path(a, "data/c.bin").split("/", 2)[2]
    proxy.fail("truncate", method="GET", path=key_path(a, "data/c.bin"), times=1, keep_bytes=MiB)
    fh = a.open_file(BAG, "data/c.bin")
    first = fh.read(MiB // 2)
    raw.put_object(Bucket=bucket, Key=key, Body=b"replaced behind the reader's back")
    with pytest.raises(StorageError, match="changed while being read"):
        while fh.read(MiB):
            pass
    fh.close()
    assert first == data[: MiB // 2]


# --------------------------------------------------------------------------------------------
# Multipart: parts retried, interrupted uploads resumed or aborted, never left dangling


def test_a_failing_part_is_retried_alone(seaweed, proxy, bucket):
    a = through(proxy, seaweed, bucket, multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB, max_attempts=4)
    data = random.Random(9).randbytes(12 * MiB)
    path = key_path(a, "data/m.bin")
    proxy.fail("internal", method="PUT", path=path, query=r"partNumber=2(&|$)", times=3)
    assert a.put_file(BAG, "data/m.bin", io.BytesIO(data), size=len(data), digests=digests(data)) \
        is PutOutcome.WRITTEN
    parts = [r.query["partNumber"] for r in proxy.requests("PUT", path)]
    assert sorted(parts) == ["1", "2", "2", "2", "2", "3"]
    assert len([r for r in proxy.requests("POST", path) if "uploads" in r.query]) == 1  # one upload, not restarted
    raw = seaweed.client()
    assert hashlib.sha256(raw.get_object(Bucket=bucket, Key=path.split("/", 2)[2])["Body"].read()).hexdigest() \
        == digests(data)["sha256"]
    assert uploads(raw, bucket, a.prefix) == []


def test_an_interrupted_multipart_upload_is_resumed_reusing_only_parts_that_match(seaweed, proxy, bucket):
    """As a run killed with -9 leaves it: an open upload with some parts, one of them wrong."""
    a = through(proxy, seaweed, bucket, multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB)
    data = random.Random(10).randbytes(12 * MiB + 77)
    raw = seaweed.client()
    key = key_path(a, "data/r.bin").split("/", 2)[2]
    up = raw.create_multipart_upload(Bucket=bucket, Key=key, ChecksumAlgorithm="SHA256",
                                     Metadata=digests(data), ContentType="application/octet-stream")
    for number, chunk in ((1, data[:5 * MiB]), (2, b"\0" * 5 * MiB)):  # part 2 holds the wrong bytes
        raw.upload_part(Bucket=bucket, Key=key, UploadId=up["UploadId"], PartNumber=number, Body=chunk,
                        ChecksumSHA256=base64.b64encode(hashlib.sha256(chunk).digest()).decode())
    assert a.put_file(BAG, "data/r.bin", io.BytesIO(data), size=len(data), digests=digests(data)) \
        is PutOutcome.WRITTEN
    path = key_path(a, "data/r.bin")
    assert sorted(r.query["partNumber"] for r in proxy.requests("PUT", path)) == ["2", "3"]  # part 1 reused
    assert [r for r in proxy.requests("POST", path) if "uploads" in r.query and "uploadId" not in r.query] == []
    assert raw.get_object(Bucket=bucket, Key=key)["Body"].read() == data
    assert uploads(raw, bucket, a.prefix) == []


def test_a_multipart_upload_that_finally_fails_is_aborted(seaweed, proxy, bucket):
    a = through(proxy, seaweed, bucket, multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB,
                max_attempts=2)
    data = random.Random(11).randbytes(11 * MiB)
    proxy.fail("slowdown", method="PUT", path=key_path(a, "data/f.bin"), query="partNumber=3")
    with pytest.raises(StorageError, match="SlowDown"):
        a.put_file(BAG, "data/f.bin", io.BytesIO(data), size=len(data), digests=digests(data))
    raw = seaweed.client()
    assert uploads(raw, bucket, a.prefix) == []
    assert raw.list_objects_v2(Bucket=bucket, Prefix=a.prefix + "/").get("KeyCount") == 0


# --------------------------------------------------------------------------------------------
# Cost per bag: only the bag's own prefix is ever listed or touched


def test_writing_and_verifying_a_bag_never_lists_or_touches_other_bags(seaweed, proxy, bucket):
    a = through(proxy, seaweed, bucket)
    raw = seaweed.client()
    others = [BagId.parse("LIB/COLL/20240102T030405Z-10"), BagId.parse("LIB/COLL/20240102T030405Z-2"),
              BagId.parse("LIB/OTHER/20240102T030405Z-1")]
    for other in others:  # other bags' objects around ours, one of them a string-prefix look-alike
        for n in range(40):
            raw.put_object(Bucket=bucket, Key=f"{a.prefix}/{other}/data/{n:03d}.txt", Body=b"x")
    files = {f"data/{n:03d}.txt": f"file {n}".encode() for n in range(60)}
    files["bagit.txt"] = b"BagIt-Version: 1.0\nTag-File-Character-Encoding: UTF-8\n"
    mine = f"{a.prefix}/{BAG}/"
    seen = []

    def phase(action):
        proxy.clear()
        action()
        seen.extend(proxy.log)
        return list(proxy.log)

    def put_all():
        items = [PutItem(rel, io.BytesIO(d), len(d), digests(d)) for rel, d in sorted(files.items())]
        return a.put_files(BAG, items)

    first = phase(lambda: assert_all(put_all(), PutOutcome.WRITTEN))
    # a fresh bag: one PUT per file, no HEAD (two listings of the run's key range say absent / stored)
    assert count(first, "PUT") == len(files) and count(first, "HEAD") == 0
    assert len([r for r in first if r.is_list]) == 2
    verify = phase(lambda: check_ok(verify_replica(a, BAG, {r: digests(d) for r, d in files.items()},
                                                   {r: len(d) for r, d in files.items()}, deep=True, workers=4)))
    assert len([r for r in verify if r.is_list]) == 1 and count(verify, "GET") >= len(files)
    rerun = phase(lambda: assert_all(put_all(), PutOutcome.ALREADY_PRESENT))
    # a rerun sends nothing: the listing shows every key, a HEAD each compares the stored digests
    assert count(rerun, "PUT") == 0 and count(rerun, "HEAD") == len(files)
    phase(lambda: a.cleanup_temp(BAG))

    lists = [r for r in seen if r.is_list]
    assert lists and all(r.query.get("prefix", "").startswith(mine) for r in lists), \
        [r.raw_query for r in lists if not r.query.get("prefix", "").startswith(mine)]
    objects = [r for r in seen if not r.is_list and r.path != f"/{bucket}"]
    assert objects and all(r.path.startswith(f"/{bucket}/{mine}") for r in objects)


def count(log, method: str) -> int:
    """Requests on objects (not on the bucket itself, such as the HEAD that checks it exists)."""
    return len([r for r in log if r.method == method and not r.is_list and r.path.count("/") > 1])


def assert_all(outcomes, expected) -> None:
    assert set(outcomes) == {expected}


def check_ok(result) -> None:
    assert result.ok, result.problems


# --------------------------------------------------------------------------------------------
# Whole deposits: a failing target, a server killed mid-replication, a deposit killed with -9


def write_archive(folder: Path, targets: dict, *, threshold: str = "64MiB") -> Path:
    """strongroom.yaml with a local folder and the given S3 targets {name: (endpoint, bucket)}."""
    (folder / "policies").mkdir(parents=True)
    (folder / "replicas" / "local").mkdir(parents=True)
    lines = ["catalog: ./catalog", "staging: ./staging", "policies: ./policies", "storage:",
             "  local: {type: filesystem, root: ./replicas/local, site: beijing}"]
    for i, (name, (endpoint, bucket_name)) in enumerate(targets.items()):
        lines += [f"  {name}:", "    type: s3", f"    endpoint: {endpoint}", f"    bucket: {bucket_name}",
                  "    region: us-east-1", "    prefix: pres", "    addressing_style: path",
                  f"    multipart_threshold: {threshold}", "    multipart_chunksize: 5MiB",
                  f"    site: site-{i}", f"    credentials: {{access_key_env: {KEY_ENV}, secret_key_env: {SECRET_ENV}}}"]
    (folder / "strongroom.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (folder / "policies" / "p.yaml").write_text(
        f"name: p\nchecksums: [sha256, md5]\nreplicas: [local, {', '.join(targets)}]\n", encoding="utf-8")
    return folder / "strongroom.yaml"


def make_source(root: Path, count: int, big: int = 0) -> Path:
    rng = random.Random(count)
    for n in range(count):
        p = root / f"d{n % 7}" / f"f{n:04d}.txt"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(rng.randbytes(rng.randint(10, 3000)))
    if big:
        (root / "big.bin").write_bytes(rng.randbytes(big))
    return root


def deposit_args(cfg: Path, src: Path, collection: str) -> list:
    return ["--config", str(cfg), "--json", "deposit", str(src), "--library", "PKU", "--collection", collection,
            "--type", "self-built", "--policy", "p"]


def run(capsys, *argv):
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def s3_env(seaweed, monkeypatch):
    monkeypatch.setenv(KEY_ENV, seaweed.access_key)
    monkeypatch.setenv(SECRET_ENV, seaweed.secret_key)


def test_a_failing_target_is_reported_not_verified_and_other_targets_are_unaffected(
        seaweed, proxy, s3_env, tmp_path, capsys):
    good, bad = seaweed.make_bucket(), seaweed.make_bucket()
    cfg = write_archive(tmp_path / "archive", {"s3-good": (seaweed.endpoint, good), "s3-bad": (proxy.endpoint, bad)})
    src = make_source(tmp_path / "source", 12)
    proxy.fail("internal", method="PUT", path=f"/{bad}/")
    code, out, err = run(capsys, *deposit_args(cfg, src, "FAIL"))
    assert code == 1, out + err
    result = json.loads(out)
    (bag,) = result["bags"]
    states = {t: r["state"] for t, r in bag["replicas"].items()}
    assert states["local"] == "verified" and states["s3-good"] == "verified" and states["s3-bad"] != "verified"
    (failure,) = [f for f in result["failures"] if "s3-bad" in f["message"]]
    assert "InternalError" in failure["message"] and f"s3://{bad}/" in failure["message"]
    assert seaweed.client().list_objects_v2(Bucket=bad).get("KeyCount") == 0

    code, out, err = run(capsys, "--config", cfg, "--json", "status")
    listed = {r["target"]: r["state"] for bb in json.loads(out)["bags"] for r in bb["replicas"]}
    assert listed.get("s3-bad") != "verified"

    # the server recovers: the same command finishes the deposit, the good copies untouched
    proxy.clear()
    code, out, err = run(capsys, *deposit_args(cfg, src, "FAIL"))
    assert code == 0, out + err
    assert {r["state"] for r in json.loads(out)["bags"][0]["replicas"].values()} == {"verified"}


def _wait(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def _versions(raw, bucket: str) -> dict:
    found = {}
    for page in raw.get_paginator("list_object_versions").paginate(Bucket=bucket):
        for v in page.get("Versions", []):
            found.setdefault(v["Key"], []).append(v["VersionId"])
    return found


def _cli(cfg: Path, src: Path, collection: str, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pipelines", *deposit_args(cfg, src, collection)], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture
def own_server(tmp_path):
    """A server of its own, to be killed with SIGKILL and started again on the same data folder."""
    server = SeaweedServer(tmp_path / "weed").start()
    try:
        yield server
    finally:
        server.stop()


def test_server_killed_mid_replication_then_a_rerun_completes(own_server, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(KEY_ENV, own_server.access_key)
    monkeypatch.setenv(SECRET_ENV, own_server.secret_key)
    bucket_name = own_server.make_bucket(versioning=True)
    with S3Proxy(own_server.ports["s3"]) as proxy:
        cfg = write_archive(tmp_path / "archive", {"s3": (proxy.endpoint, bucket_name)})
        src = make_source(tmp_path / "source", 240)
        proxy.fail("delay", method="PUT", seconds=0.05)  # a slow server: the kill lands mid-replication
        first = _cli(cfg, src, "KILL", dict(os.environ))
        _wait(lambda: len([r for r in proxy.requests("PUT") if r.outcome == "200"]) >= 30 or first.poll() is not None,
              120, "the first uploads")
        own_server.stop()                                 # SIGKILL, mid-replication
        out, err = first.communicate(timeout=180)
        assert first.returncode == 1, out + err
        assert "s3" in out and "cannot be reached" in out + err

        own_server.start()                                # same data folder, same ports
        raw = own_server.client()
        before = {o["Key"] for page in raw.get_paginator("list_objects_v2").paginate(Bucket=bucket_name)
                  for o in page.get("Contents", [])}
        assert before  # some objects made it before the kill
        proxy.clear()
        code, out, err = run(capsys, *deposit_args(cfg, src, "KILL"))
        assert code == 0, out + err
        assert {r["state"] for r in json.loads(out)["bags"][0]["replicas"].values()} == {"verified"}
        sent_again = {r.path.split("/", 2)[2] for r in proxy.requests("PUT")} & before
        assert not sent_again                             # present and identical: HEAD/listing, not re-sent
        assert all(len(v) == 1 for v in _versions(raw, bucket_name).values())  # nothing stored twice
        assert uploads(raw, bucket_name, "") == []


def test_deposit_killed_with_sigkill_mid_multipart_then_rerun_resumes_and_sends_nothing_twice(
        seaweed, tmp_path, capsys, s3_env):
    bucket_name = seaweed.make_bucket(versioning=True)
    with S3Proxy(seaweed.ports["s3"]) as proxy:
        cfg = write_archive(tmp_path / "archive", {"s3": (proxy.endpoint, bucket_name)}, threshold="5MiB")
        src = make_source(tmp_path / "source", 40, big=12 * MiB)
        proxy.fail("delay", method="PUT", query=r"partNumber=2(&|$)", seconds=30, times=1)  # holds the upload open
        first = _cli(cfg, src, "KILL9", dict(os.environ))
        part1 = lambda: [r for r in proxy.requests("PUT") if r.query.get("partNumber") == "1" and r.outcome == "200"]
        _wait(lambda: part1() or first.poll() is not None, 120, "the first part of the big file")
        os.kill(first.pid, signal.SIGKILL)
        first.communicate(timeout=60)
        raw = seaweed.client()
        (left,) = uploads(raw, bucket_name, "")           # the killed run's upload is still open
        proxy.clear()
        before = {o["Key"] for page in raw.get_paginator("list_objects_v2").paginate(Bucket=bucket_name)
                  for o in page.get("Contents", [])}

        code, out, err = run(capsys, *deposit_args(cfg, src, "KILL9"))
        assert code == 0, out + err
        assert {r["state"] for r in json.loads(out)["bags"][0]["replicas"].values()} == {"verified"}
        big = [r for r in proxy.requests("PUT") if r.path.endswith("/data/big.bin")]
        sent = {r.query["partNumber"] for r in big}
        assert "2" in sent and "1" not in sent            # part 1 (and 3, if it got there) reused
        assert {r.query.get("uploadId") for r in big} == {left["UploadId"]}   # the same upload, resumed
        assert not {r.path.split("/", 2)[2] for r in proxy.requests("PUT") if "partNumber" not in r.query} & before
        assert all(len(v) == 1 for v in _versions(raw, bucket_name).values())
        assert uploads(raw, bucket_name, "") == []
