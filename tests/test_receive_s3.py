"""`strongroom receive` against a real SeaweedFS started with an identities file: one identity per
library, allowed only its own receiving bucket, and a service identity for the preservation bucket.

Shown here: a library's keys reach its own bucket and nothing else; `receive` for one library
uses only that library's keys and answers only in its area; a `.ready` naming another library
or collection is refused; hostile archives are refused with a `.failed`; a batch is received
exactly once when `receive` is killed (-9) and rerun, and when two runs overlap.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
import uuid
import zipfile
from pathlib import Path

import pytest
import yaml

from pipelines.cli import main
from tests.seaweed import SeaweedServer

REPO = Path(__file__).resolve().parents[1]
SUFFIX = uuid.uuid4().hex[:8]
BUCKETS = {"PKU": f"recv-pku-{SUFFIX}", "THU": f"recv-thu-{SUFFIX}", "service": f"pres-{SUFFIX}"}
ENV = {"PKU": ("SR_PKU_RECV_KEY", "SR_PKU_RECV_SECRET"), "THU": ("SR_THU_RECV_KEY", "SR_THU_RECV_SECRET"),
       "service": ("SR_SVC_KEY", "SR_SVC_SECRET")}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A server of its own: identities are read at start."""
    srv = SeaweedServer(tmp_path_factory.mktemp("seaweed-identities"))
    keys = {who: srv.add_identity(who.lower(), [f"{a}:{bucket}" for a in ("Read", "Write", "List")])
            for who, bucket in BUCKETS.items()}
    srv.start()
    try:
        for bucket in BUCKETS.values():
            srv.make_bucket(bucket)
        srv.keys = keys
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def archive(server, tmp_path, monkeypatch):
    """strongroom.yaml with PKU and THU receiving buckets, a folder and an S3 preservation target;
    the receiving buckets emptied first; every identity's keys in its env vars."""
    admin = server.client()
    for who in ("PKU", "THU"):
        for page in admin.get_paginator("list_objects_v2").paginate(Bucket=BUCKETS[who]):
            for item in page.get("Contents") or ():
                admin.delete_object(Bucket=BUCKETS[who], Key=item["Key"])
    for who, (k, s) in ENV.items():
        monkeypatch.setenv(k, server.keys[who][0])
        monkeypatch.setenv(s, server.keys[who][1])
    (tmp_path / "policies").mkdir()
    (tmp_path / "replicas" / "local").mkdir(parents=True)

    def area(who):
        k, s = ENV[who]
        return (f"    receiving:\n      type: s3\n      endpoint: {server.endpoint}\n      bucket: {BUCKETS[who]}\n"
                f"      region: us-east-1\n      credentials: {{access_key_env: {k}, secret_key_env: {s}}}\n")

    (tmp_path / "strongroom.yaml").write_text(f"""\
catalog: ./catalog
staging: ./staging
policies: ./policies
storage:
  local: {{type: filesystem, root: ./replicas/local, site: beijing}}
  s3-pres:
    type: s3
    endpoint: {server.endpoint}
    bucket: {BUCKETS['service']}
    region: us-east-1
    prefix: preservation-{tmp_path.name}
    addressing_style: path
    site: shanghai
    credentials: {{access_key_env: {ENV['service'][0]}, secret_key_env: {ENV['service'][1]}}}
libraries:
  PKU:
    name: {{en: Peking University Library, zh: 北京大学图书馆}}
{area('PKU')}  THU:
    name: {{en: Tsinghua University Library, zh: 清华大学图书馆}}
{area('THU')}""", encoding="utf-8")
    for name in ("self-built", "at-risk-purchased"):
        (tmp_path / "policies" / f"{name}.yaml").write_text(
            f"name: {name}\nchecksums: [sha256, md5]\nreplicas: [local, s3-pres]\nvirus_check: off\n")
    return tmp_path


def lib_client(server, who):
    return server.client(keys=server.keys[who], retries=0)


def keys_in(server, bucket) -> set:
    out = set()
    for page in server.client().get_paginator("list_objects_v2").paginate(Bucket=bucket):
        out.update(item["Key"] for item in page.get("Contents") or ())
    return out


def upload(server, who, collection, batch, files: dict, ready: dict):
    """As a library would: the files with its own keys, then the .ready."""
    c = lib_client(server, who)
    for rel, data in files.items():
        c.put_object(Bucket=BUCKETS[who], Key=f"{collection}/{batch}/{rel}", Body=data)
    c.put_object(Bucket=BUCKETS[who], Key=f"{collection}/{batch}.ready", Body=yaml.safe_dump(ready).encode())


def receive(capsys, archive, *extra):
    capsys.readouterr()
    code = main(["--config", str(archive / "strongroom.yaml"), "--json", "receive", *extra])
    out = capsys.readouterr().out
    return code, json.loads(out)


def marker(server, who, key) -> dict:
    body = server.client().get_object(Bucket=BUCKETS[who], Key=key)["Body"].read()
    return yaml.safe_load(body.decode("utf-8"))


def catalog_bags(archive, collection):
    from catalog.access import open_catalog
    from policies.config import load_config

    return open_catalog(load_config(archive / "strongroom.yaml")).bags(collection=collection) \
        .column("bag_id").to_pylist()


FILES = {"scans/p001.tif": os.urandom(3000), "目录.csv": "题名,年份\n善本,1644\n".encode(), "pct%41.txt": b"100%"}


# --- the identities themselves ----------------------------------------------------------------

@pytest.mark.parametrize("who,other", [("PKU", "THU"), ("THU", "PKU")])
def test_a_library_key_reaches_only_its_own_receiving_bucket(server, archive, who, other):
    from botocore.exceptions import ClientError

    admin = server.client()
    for bucket in (BUCKETS[other], BUCKETS["service"]):
        admin.put_object(Bucket=bucket, Key="probe/held.txt", Body=b"held")
    c = lib_client(server, who)
    c.put_object(Bucket=BUCKETS[who], Key="own/x", Body=b"mine")
    assert c.get_object(Bucket=BUCKETS[who], Key="own/x")["Body"].read() == b"mine"
    assert [o["Key"] for o in c.list_objects_v2(Bucket=BUCKETS[who])["Contents"]] == ["own/x"]
    c.delete_object(Bucket=BUCKETS[who], Key="own/x")
    for bucket in (BUCKETS[other], BUCKETS["service"]):
        for action in (lambda: c.list_objects_v2(Bucket=bucket),
                       lambda: c.get_object(Bucket=bucket, Key="probe/held.txt"),
                       lambda: c.head_object(Bucket=bucket, Key="probe/held.txt"),
                       lambda: c.put_object(Bucket=bucket, Key="probe/planted.txt", Body=b"x"),
                       lambda: c.delete_object(Bucket=bucket, Key="probe/held.txt")):
            with pytest.raises(ClientError) as caught:
                action()
            assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
        assert keys_in(server, bucket) >= {"probe/held.txt"}
        assert "probe/planted.txt" not in keys_in(server, bucket)
        admin.delete_object(Bucket=bucket, Key="probe/held.txt")


# --- receive ---------------------------------------------------------------------------------

def test_receive_preserves_a_batch_once_with_only_that_librarys_keys(server, archive, capsys, monkeypatch):
    upload(server, "PKU", "rare-books", "b1", FILES, {"type": "self-built", "title": "善本 rare books"})
    upload(server, "THU", "theses", "t1", {"a.pdf": b"%PDF-1.4 thesis"}, {"type": "self-built"})
    upload(server, "PKU", "rare-books", "half", {"x.tif": b"still uploading"}, {"type": "self-built"})
    server.client().delete_object(Bucket=BUCKETS["PKU"], Key="rare-books/half.ready")  # no .ready yet
    thu_before = keys_in(server, BUCKETS["THU"])
    # THU's keys are wrong for this run: had receive --library PKU used them, it would fail
    monkeypatch.setenv(ENV["THU"][0], "AKWRONGWRONGWRONG")
    monkeypatch.setenv(ENV["THU"][1], "not-the-secret")
    code, out = receive(capsys, archive, "--library", "PKU")
    assert code == 0, out
    [batch] = out["batches"]
    assert (batch["library"], batch["batch"], batch["state"], batch["files"]) == ("PKU", "rare-books/b1",
                                                                                  "preserved", 3)
    left = keys_in(server, BUCKETS["PKU"])
    assert left == {"rare-books/b1.done", "rare-books/half/x.tif"}   # uploads removed, the incomplete one untouched
    done = marker(server, "PKU", "rare-books/b1.done")
    assert done["bags"] == batch["bags"] and done["files"] == 3 and done["reports"] == "reports/"
    assert "Preserved" in done["en"] and "已保存" in done["zh"]
    assert keys_in(server, BUCKETS["THU"]) == thu_before      # nothing read away, nothing written
    assert catalog_bags(archive, "rare-books") == batch["bags"]
    assert any(k.startswith(f"preservation-{archive.name}/PKU/rare-books/") for k in keys_in(server, BUCKETS["service"]))
    # again: nothing to do, nothing deposited twice
    code, out = receive(capsys, archive, "--library", "PKU")
    assert code == 0 and out["batches"] == []
    assert catalog_bags(archive, "rare-books") == batch["bags"]
    # every library: THU's wrong keys fail THU alone (reported), PKU has nothing new
    code, out = receive(capsys, archive)
    assert code != 0
    assert [(b["library"], b["state"]) for b in out["batches"]] == [("THU", "unreachable")]
    assert "access denied" in out["batches"][0]["detail"].lower() or "403" in out["batches"][0]["detail"]
    assert "not-the-secret" not in json.dumps(out)
    monkeypatch.setenv(ENV["THU"][0], server.keys["THU"][0])
    monkeypatch.setenv(ENV["THU"][1], server.keys["THU"][1])
    code, out = receive(capsys, archive)
    assert code == 0 and [(b["library"], b["state"]) for b in out["batches"]] == [("THU", "preserved")]
    assert keys_in(server, BUCKETS["THU"]) == {"theses/t1.done"}


@pytest.mark.parametrize("ready,needle_en,needle_zh", [
    ({"type": "self-built", "library": "THU"}, "library 'THU'", "图书馆"),
    ({"type": "self-built", "collection": "other-coll"}, "collection 'other-coll'", "馆藏"),
    ({"type": "bought"}, "type must be", "type 须为"),
])
def test_a_ready_naming_another_library_or_collection_is_refused(server, archive, capsys, ready, needle_en,
                                                                 needle_zh):
    upload(server, "PKU", "maps", "m1", {"m.tif": b"map"}, ready)
    code, out = receive(capsys, archive, "--library", "PKU")
    assert code == 1
    assert out["batches"][0]["state"] == "failed"
    failed = marker(server, "PKU", "maps/m1.failed")
    assert any(needle_en in p["en"] for p in failed["problems"]), failed
    assert any(needle_zh in p["zh"] for p in failed["problems"]), failed
    assert keys_in(server, BUCKETS["PKU"]) == {"maps/m1.failed", "maps/m1/m.tif"}  # uploads kept, .ready consumed
    assert catalog_bags(archive, "maps") == [] and catalog_bags(archive, "other-coll") == []
    assert not any(k.startswith("maps/") for k in keys_in(server, BUCKETS["THU"]))


def hostile_tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in (("ok.txt", b"fine"), ("../../../../tmp/escaped.txt", b"evil")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("passwd")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    return buf.getvalue()


def zip_bomb() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for i in range(4):
            zf.writestr(f"zeros{i}.bin", b"\0" * 3_000_000)
    return buf.getvalue()


@pytest.mark.parametrize("name,data,needle", [("batch.tar", hostile_tar(), "'..'"),
                                              ("batch.zip", zip_bomb(), "declares 12,000,000 bytes")])
def test_a_hostile_tar_or_zip_is_refused_with_a_failed_answer(server, archive, capsys, name, data, needle):
    upload(server, "PKU", "vendor", "v1", {name: data}, {"type": "purchased", "title": "Vendor dump"})
    code, out = receive(capsys, archive, "--library", "PKU", "--max-batch-bytes", "10MB")
    assert code == 1 and out["batches"][0]["state"] == "failed", out
    failed = marker(server, "PKU", "vendor/v1.failed")
    assert "was refused" in failed["en"] or "refused" in json.dumps(failed)
    assert any(needle in p["en"] for p in failed["problems"]), failed["problems"]
    assert all(p["zh"] for p in failed["problems"])
    if name.endswith(".tar"):
        assert any("symbolic link" in p["en"] for p in failed["problems"])
    assert not Path("/tmp/escaped.txt").exists()
    assert catalog_bags(archive, "vendor") == []
    assert keys_in(server, BUCKETS["PKU"]) == {"vendor/v1.failed", f"vendor/v1/{name}"}


def test_a_tar_batch_holding_a_bag_is_deposited_and_its_manifest_checked(server, archive, capsys, tmp_path):
    import bagit

    bag_dir = tmp_path / "supplied" / "vendor-bag"
    bag_dir.mkdir(parents=True)
    (bag_dir / "article.pdf").write_bytes(b"%PDF-1.7 article")
    bagit.make_bag(str(bag_dir), checksums=["sha256"])
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(bag_dir, arcname="vendor-bag")
    upload(server, "PKU", "ejournals", "e1", {"e1.tar.gz": buf.getvalue()}, {"type": "purchased"})
    code, out = receive(capsys, archive, "--library", "PKU")
    assert code == 0 and out["batches"][0]["state"] == "preserved", out
    # a supplied bag whose manifest does not match is refused, not preserved
    (bag_dir / "data" / "article.pdf").write_bytes(b"%PDF-1.7 altered after bagging")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(bag_dir, arcname="vendor-bag")
    upload(server, "PKU", "ejournals", "e2", {"e2.tar": buf.getvalue()}, {"type": "purchased"})
    code, out = receive(capsys, archive, "--library", "PKU")
    assert code == 1 and out["batches"][0]["state"] == "failed", out
    failed = marker(server, "PKU", "ejournals/e2.failed")
    said = json.dumps(failed, ensure_ascii=False)
    assert "vendor-bag/data/article.pdf: sha256 does not match" in said, said
    assert str(archive) not in said and "staging-receiving" not in said   # no folder of the archive's machine
    assert len(catalog_bags(archive, "ejournals")) == 1


# --- exactly once: kill -9 and overlapping runs ----------------------------------------------

def receive_process(archive) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pipelines", "--config", str(archive / "strongroom.yaml"),
                             "--json", "receive", "--library", "PKU"], cwd=REPO, env=dict(os.environ),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)


def many_files(n: int) -> dict:
    return {f"f/{i:04d}.txt": f"file {i}\n".encode() * 20 for i in range(n)}


@pytest.mark.parametrize("when", ["claimed", "depositing"])
def test_receive_killed_then_rerun_preserves_the_batch_exactly_once(server, archive, capsys, when):
    upload(server, "PKU", "killed", "k1", many_files(80), {"type": "self-built"})
    staging_state = archive / "staging" / ".state"
    proc = receive_process(archive)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            keys = keys_in(server, BUCKETS["PKU"])
            if when == "claimed" and "killed/k1.claim" in keys:
                break
            if when == "depositing" and staging_state.is_dir() and any(staging_state.glob("*/deposit.json")):
                break
            time.sleep(0.02)
        assert proc.poll() is None, f"receive ended before it could be killed ({when})"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    code, out = receive(capsys, archive, "--library", "PKU")
    assert code == 0, out
    assert [b["state"] for b in out["batches"]] in (["preserved"], ["cleaned"]), out
    bags = catalog_bags(archive, "killed")
    assert len(bags) == 1, bags
    assert marker(server, "PKU", "killed/k1.done")["bags"] == bags
    assert keys_in(server, BUCKETS["PKU"]) == {"killed/k1.done"}
    code, out = receive(capsys, archive, "--library", "PKU")
    assert code == 0 and out["batches"] == [] and catalog_bags(archive, "killed") == bags


class _Stopped(BaseException):
    """Stands for the process dying at that point (nothing after it runs, no handler catches it)."""


def test_receive_stopped_after_its_answer_is_finished_by_the_rerun(server, archive, capsys, monkeypatch):
    """The window between writing .done and removing the claim is one request long, too short to
    hit with kill -9 reliably: the run is stopped exactly there instead."""
    from pipelines import receive_flow

    upload(server, "PKU", "killed", "k2", many_files(20), {"type": "self-built"})

    def stop(*args, **kwargs):
        raise _Stopped()

    with monkeypatch.context() as patch:
        patch.setattr(receive_flow, "_clean_up", stop)
        with pytest.raises(_Stopped):
            main(["--config", str(archive / "strongroom.yaml"), "receive", "--library", "PKU"])
    keys = keys_in(server, BUCKETS["PKU"])
    assert {"killed/k2.done", "killed/k2.claim", "killed/k2.ready", "killed/k2/f/0000.txt"} <= keys
    bags = catalog_bags(archive, "killed")
    code, out = receive(capsys, archive, "--library", "PKU")
    assert code == 0 and [b["state"] for b in out["batches"]] == ["cleaned"], out
    assert keys_in(server, BUCKETS["PKU"]) == {"killed/k2.done"}
    assert catalog_bags(archive, "killed") == bags and len(bags) == 1
    assert not list((archive / "staging-receiving").glob("PKU/killed/k2.*"))


def test_two_overlapping_receives_preserve_each_batch_once(server, archive):
    upload(server, "PKU", "overlap", "o1", many_files(30), {"type": "self-built"})
    upload(server, "PKU", "overlap", "o2", many_files(30), {"type": "self-built"})
    first, second = receive_process(archive), receive_process(archive)
    outs = [json.loads(p.communicate(timeout=300)[0]) for p in (first, second)]
    assert first.returncode == 0 and second.returncode == 0, outs
    preserved = sorted(b["batch"] for out in outs for b in out["batches"] if b["state"] == "preserved")
    assert preserved == ["overlap/o1", "overlap/o2"], outs
    bags = catalog_bags(archive, "overlap")
    assert len(bags) == 2
    assert keys_in(server, BUCKETS["PKU"]) == {"overlap/o1.done", "overlap/o2.done"}
