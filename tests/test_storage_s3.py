"""The S3 storage adapter against a real SeaweedFS server (`weed server -s3`, tests/seaweed.py).

Every check here is made by the server: signed requests with a real access key, checksums it
verifies, If-None-Match it enforces, Object Lock it applies. What the adapter stored is read
back with a plain boto3 client, not through the adapter, so the adapter cannot vouch for itself.
Buckets are shared per module (a SeaweedFS bucket costs several volumes); every test writes
under its own prefix.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import uuid
from pathlib import Path

import pytest

from strongroom.bag_id import BagId
from policies.config import Credentials, StorageTarget
from storage_adapters.base import (
    FileStat,
    NotFound,
    PutOutcome,
    ReplicaConflict,
    SourceMismatch,
    StorageError,
    UnsafePath,
)
from storage_adapters.replicate import verify_replica
from storage_adapters.s3 import S3Adapter
from strongroom.errors import ConfigError

BAG = BagId.parse("LIB/COLL/20240102T030405Z-1")
OTHER = BagId.parse("LIB/COLL/20240102T030405Z-10")  # shares BAG's name as a string prefix
MiB = 1 << 20


def digests(data: bytes, algs=("sha256", "md5")) -> dict:
    return {a: hashlib.new(a, data).hexdigest() for a in algs}


def put(adapter, relpath, data, bag=BAG, algs=("sha256", "md5"), **kw):
    return adapter.put_file(bag, relpath, io.BytesIO(data), size=len(data), digests=digests(data, algs), **kw)


@pytest.fixture(scope="module")
def buckets(seaweed):
    """Two plain buckets (two 'sites'), a versioned one and an Object-Locked one."""
    return {
        "a": seaweed.make_bucket(),
        "b": seaweed.make_bucket(),
        "versioned": seaweed.make_bucket(versioning=True),
        "locked": seaweed.make_bucket(object_lock=True),
    }


@pytest.fixture
def make(seaweed):
    """S3Adapter factory: this server, its credentials, a fresh prefix per adapter unless given."""

    def factory(bucket, name="s3-a", site="site-a", prefix=None, **kw):
        kw.setdefault("credentials", Credentials(access_key=seaweed.access_key, secret_key=seaweed.secret_key))
        return S3Adapter(name, site, bucket=bucket, endpoint=seaweed.endpoint, region="us-east-1",
                         prefix=prefix if prefix is not None else "t-" + uuid.uuid4().hex[:10],
                         addressing_style="path", **kw)

    return factory


@pytest.fixture
def raw(seaweed):
    return seaweed.client()


def key_of(adapter, relpath, bag=BAG):
    return f"{adapter.prefix}/{bag}/{relpath}"


def stored_bytes(raw, adapter, relpath, bag=BAG) -> bytes:
    return raw.get_object(Bucket=adapter.bucket, Key=key_of(adapter, relpath, bag))["Body"].read()


def uploads(raw, bucket, prefix=""):
    return raw.list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads", [])


# --------------------------------------------------------------------------------------------
# Basics on two sites


def test_put_get_stat_list_on_two_buckets_as_two_sites(make, buckets, raw):
    files = {"data/a b.txt": b"hello, world\n", "data/中文/善本 第1卷.tif": "善本".encode() * 999,
             "data/pct%41.txt": b"100% literal", "data/empty.dat": b"", "bagit.txt": b"BagIt-Version: 1.0\n"}
    a = make(buckets["a"], "s3-a", "beijing")
    b = make(buckets["b"], "s3-b", "wuhan", prefix=a.prefix)  # same keys, other bucket
    for adapter in (a, b):
        for rel, data in files.items():
            assert put(adapter, rel, data, mtime=1_600_000_000.25) is PutOutcome.WRITTEN
        put(adapter, "data/x.txt", b"other bag", bag=OTHER)
    for adapter in (a, b):
        assert list(adapter.list_bag_files(BAG)) == sorted(files)
        assert list(adapter.list_bag_files(OTHER)) == ["data/x.txt"]
        assert [str(x) for x in adapter.list_bags()] == [str(BAG), str(OTHER)]
        for rel, data in files.items():
            assert stored_bytes(raw, adapter, rel) == data  # read back without the adapter
            with adapter.open_file(BAG, rel) as fh:
                assert fh.read() == data
            st = adapter.stat_file(BAG, rel)
            assert st == FileStat(size=len(data), mtime=1_600_000_000.25, stored_digests=digests(data))
        assert adapter.stat_file(BAG, "data/nope") is None
        assert adapter.location(BAG, "data/a b.txt") == f"s3://{adapter.bucket}/{adapter.prefix}/{BAG}/data/a b.txt"
    assert raw.head_object(Bucket=buckets["b"], Key=key_of(b, "data/a b.txt"))["ContentLength"] == 13
    result = verify_replica(b, BAG, {r: digests(d) for r, d in files.items()}, {r: len(d) for r, d in files.items()})
    assert result.ok, result.problems


def test_describe_names_the_place_and_never_credentials(make, buckets, seaweed):
    a = make(buckets["a"], retention=("governance", 3), object_lock=True)
    d = a.describe()
    assert (d["type"], d["bucket"], d["prefix"], d["endpoint"], d["site"]) == \
        ("s3", buckets["a"], a.prefix, seaweed.endpoint, "site-a")
    assert d["retention"] == {"mode": "governance", "years": 3}
    text = repr(d) + repr(a) + repr(a._credentials)
    assert seaweed.secret_key not in text and seaweed.access_key not in text


def test_objects_carry_server_checksum_and_digest_metadata(make, buckets, raw):
    a = make(buckets["a"])
    data = b"fixity matters\n" * 100
    put(a, "data/f.txt", data, algs=("sha256", "md5", "sha512"), mtime=1234.5)
    head = raw.head_object(Bucket=a.bucket, Key=key_of(a, "data/f.txt"), ChecksumMode="ENABLED")
    assert bytes.fromhex(digests(data)["sha256"]) == __import__("base64").b64decode(head["ChecksumSHA256"])
    assert head["Metadata"] == {**digests(data, ("sha256", "md5", "sha512")), "mtime": "1234.5"}
    st = a.stat_file(BAG, "data/f.txt")
    assert st.stored_digests == digests(data, ("sha256", "md5", "sha512")) and st.mtime == 1234.5


def test_identical_reput_is_a_no_op(make, buckets, raw):
    v = make(buckets["versioned"])
    data = b"same bytes"
    assert put(v, "data/x", data) is PutOutcome.WRITTEN
    before = raw.head_object(Bucket=v.bucket, Key=key_of(v, "data/x"))
    assert put(v, "data/x", data) is PutOutcome.ALREADY_PRESENT
    versions = raw.list_object_versions(Bucket=v.bucket, Prefix=key_of(v, "data/x"))["Versions"]
    assert [x["VersionId"] for x in versions] == [before["VersionId"]]  # nothing new was written


def test_different_content_is_a_conflict_and_the_stored_object_is_unchanged(make, buckets, raw):
    a = make(buckets["a"])
    put(a, "data/x", b"original")
    for other in (b"changed!", b"a different length"):
        with pytest.raises(ReplicaConflict, match="not overwriting") as info:
            put(a, "data/x", other)
        assert str(info.value).startswith(f"s3-a: s3://{a.bucket}/")
        assert stored_bytes(raw, a, "data/x") == b"original"


def test_if_none_match_guards_a_writer_that_raced_past_the_head(make, buckets, raw, monkeypatch):
    """The object appears between our HEAD and our PUT (another writer): the server's
    If-None-Match refuses the PUT; identical -> ALREADY_PRESENT, different -> conflict."""
    a = make(buckets["a"])
    key = key_of(a, "data/raced")
    raw.put_object(Bucket=a.bucket, Key=key, Body=b"theirs", Metadata=digests(b"theirs"))
    real_head = a._head
    calls = []

    def head_missing_once(k, loc):
        calls.append(k)
        return None if len(calls) == 1 else real_head(k, loc)

    monkeypatch.setattr(a, "_head", head_missing_once)
    with pytest.raises(ReplicaConflict):
        put(a, "data/raced", b"ours!!")
    assert stored_bytes(raw, a, "data/raced") == b"theirs"
    calls.clear()
    assert put(a, "data/raced", b"theirs") is PutOutcome.ALREADY_PRESENT


def test_object_written_by_another_tool_without_metadata_is_compared_by_reading_it(make, buckets, raw):
    a = make(buckets["a"])
    raw.put_object(Bucket=a.bucket, Key=key_of(a, "data/foreign"), Body=b"foreign bytes")
    assert put(a, "data/foreign", b"foreign bytes", algs=("sha1",)) is PutOutcome.ALREADY_PRESENT
    with pytest.raises(ReplicaConflict):
        put(a, "data/foreign", b"foreign BYTES", algs=("sha1",))


# --------------------------------------------------------------------------------------------
# Checked uploads


def test_source_that_does_not_match_its_digests_stores_nothing(make, buckets, raw, tmp_path):
    a = make(buckets["a"])
    good, bad = b"the staged bytes", b"the staged bytez"
    # sha256+md5 in the manifest: sent as headers, the server refuses (BadDigest)
    with pytest.raises(SourceMismatch, match="nothing was stored"):
        a.put_file(BAG, "data/one", io.BytesIO(bad), size=len(bad), digests=digests(good))
    # sha512 only: checked locally before anything is sent
    with pytest.raises(SourceMismatch):
        a.put_file(BAG, "data/two", io.BytesIO(bad), size=len(bad), digests=digests(good, ("sha512",)))
    # wrong size announced
    with pytest.raises(SourceMismatch):
        a.put_file(BAG, "data/three", io.BytesIO(good), size=len(good) + 1, digests=digests(good))
    assert list(a.list_bag_files(BAG)) == []
    assert raw.list_objects_v2(Bucket=a.bucket, Prefix=a.prefix + "/").get("KeyCount") == 0


def test_unseekable_source_is_spooled_and_checked(make, buckets):
    a = make(buckets["a"])
    data = bytes(range(256)) * 50

    class Pipe(io.RawIOBase):
        def __init__(self, payload):
            self._b = io.BytesIO(payload)

        def readable(self):
            return True

        def readinto(self, buf):
            return self._b.readinto(buf)

    assert a.put_file(BAG, "data/p", Pipe(data), size=len(data), digests=digests(data)) is PutOutcome.WRITTEN
    with pytest.raises(SourceMismatch):
        a.put_file(BAG, "data/q", Pipe(data + b"x"), size=len(data), digests=digests(data))
    assert a.stat_file(BAG, "data/q") is None


def test_multipart_upload_with_small_parts_is_verified(make, buckets, raw, tmp_path):
    a = make(buckets["a"], multipart_threshold=6 * MiB, multipart_chunksize=5 * MiB)
    data = __import__("random").Random(4).randbytes(12 * MiB + 123)
    src = tmp_path / "big.bin"
    src.write_bytes(data)
    assert a.put_file(BAG, "data/big.bin", src, size=len(data), digests=digests(data)) is PutOutcome.WRITTEN
    head = raw.head_object(Bucket=a.bucket, Key=key_of(a, "data/big.bin"), ChecksumMode="ENABLED")
    assert head["ContentLength"] == len(data)
    assert head["ChecksumSHA256"].endswith("-3")  # three parts, each checked by the server
    assert head["Metadata"]["sha256"] == digests(data)["sha256"]
    assert hashlib.sha256(stored_bytes(raw, a, "data/big.bin")).hexdigest() == digests(data)["sha256"]
    assert a.stat_file(BAG, "data/big.bin").stored_digests == digests(data)
    assert put(a, "data/big.bin", data) is PutOutcome.ALREADY_PRESENT
    assert uploads(raw, a.bucket, a.prefix) == []


def test_failed_multipart_uploads_are_aborted_never_left_dangling(make, buckets, raw, tmp_path):
    a = make(buckets["a"], multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB)
    data = __import__("random").Random(5).randbytes(11 * MiB)
    # 1. the bytes do not match the manifest: found after all parts went up, before completing
    with pytest.raises(SourceMismatch):
        a.put_file(BAG, "data/m1", io.BytesIO(data), size=len(data), digests=digests(data[:-1] + b"!"))

    # 2. the source breaks in the middle of the second part
    class Breaks(io.RawIOBase):
        def __init__(self):
            self._b = io.BytesIO(data)

        def readable(self):
            return True

        def readinto(self, buf):
            if self._b.tell() >= 7 * MiB:
                raise OSError(5, "Input/output error")
            return self._b.readinto(memoryview(buf)[: 1 * MiB])

    with pytest.raises(StorageError, match="cannot read the source"):
        a.put_file(BAG, "data/m2", Breaks(), size=len(data), digests=digests(data))

    # 3. the server refuses the upload (the key exists): the completed parts are aborted too
    raw.put_object(Bucket=a.bucket, Key=key_of(a, "data/m3"), Body=b"x")
    real_head, calls = a._head, []
    a._head = lambda k, loc: (calls.append(k), None if len(calls) == 1 else real_head(k, loc))[1]
    with pytest.raises(ReplicaConflict):
        a.put_file(BAG, "data/m3", io.BytesIO(data), size=len(data), digests=digests(data))

    assert uploads(raw, a.bucket) == []
    assert list(a.list_bag_files(BAG)) == ["data/m3"]
    assert stored_bytes(raw, a, "data/m3") == b"x"


def test_cleanup_temp_aborts_only_this_bags_unfinished_uploads(make, buckets, raw):
    a = make(buckets["a"])
    mine = raw.create_multipart_upload(Bucket=a.bucket, Key=key_of(a, "data/killed.bin"))
    theirs = raw.create_multipart_upload(Bucket=a.bucket, Key=key_of(a, "data/other.bin", OTHER))
    assert a.cleanup_temp(BAG) == 1
    left = uploads(raw, a.bucket, a.prefix)
    assert [(u["Key"], u["UploadId"]) for u in left] == [(key_of(a, "data/other.bin", OTHER), theirs["UploadId"])]
    assert mine["UploadId"] not in {u["UploadId"] for u in left}
    assert a.cleanup_temp(OTHER) == 1 and uploads(raw, a.bucket, a.prefix) == []


# --------------------------------------------------------------------------------------------
# Many files at once: put_files


def items_of(files: dict, paths=False, tmp_path=None):
    from storage_adapters.base import PutItem

    out = []
    for rel, data in sorted(files.items()):
        src = io.BytesIO(data)
        if paths:
            src = tmp_path / rel.replace("/", "_")
            src.write_bytes(data)
        out.append(PutItem(rel, src, len(data), digests(data), 1_600_000_000.5))
    return out


def test_put_files_stores_a_batch_in_parallel_each_checked_and_reported(make, buckets, raw, tmp_path):
    a = make(buckets["a"], concurrency=8, multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB)
    rng = __import__("random").Random(12)
    files = {f"data/{n:03d}.bin": rng.randbytes(rng.randint(0, 5000)) for n in range(150)}
    files["data/big.bin"] = rng.randbytes(11 * MiB)                    # multipart, among the small ones
    files["data/中文 名.txt"] = "善本".encode()
    done = []
    outcomes = a.put_files(BAG, items_of(files, paths=True, tmp_path=tmp_path),
                           on_done=lambda i, o: done.append((i, o)))
    assert outcomes == [PutOutcome.WRITTEN] * len(files)
    assert sorted(i for i, _ in done) == list(range(len(files)))       # each reported once
    for rel, data in files.items():
        assert stored_bytes(raw, a, rel) == data
        head = raw.head_object(Bucket=a.bucket, Key=key_of(a, rel))
        assert head["Metadata"] == {**digests(data), "mtime": "1600000000.5"}
    # the same batch again: nothing is sent, everything is found identical
    again = a.put_files(BAG, items_of(files))
    assert again == [PutOutcome.ALREADY_PRESENT] * len(files)
    assert uploads(raw, a.bucket, a.prefix) == []


def test_put_files_stops_at_a_conflict_and_reports_exactly_what_it_stored(make, buckets, raw):
    a = make(buckets["a"], concurrency=4)
    files = {f"data/{n:03d}.txt": f"new {n}".encode() for n in range(40)}
    raw.put_object(Bucket=a.bucket, Key=key_of(a, "data/020.txt"), Body=b"someone else's",
                   Metadata=digests(b"someone else's"))
    done = {}
    with pytest.raises(ReplicaConflict, match="not overwriting"):
        a.put_files(BAG, items_of(files), on_done=lambda i, o: done.setdefault(i, o))
    assert stored_bytes(raw, a, "data/020.txt") == b"someone else's"
    names = sorted(files)
    stored = set(a.list_bag_files(BAG)) - {"data/020.txt"}
    assert stored == {names[i] for i in done}                             # reported == given a key
    assert all(o is PutOutcome.WRITTEN for o in done.values())


def test_put_files_refuses_bad_input_before_writing_anything(make, buckets):
    from storage_adapters.base import PutItem

    a = make(buckets["a"])
    good = PutItem("data/a", io.BytesIO(b"a"), 1, digests(b"a"))
    for bad in ([good, PutItem("data/a", io.BytesIO(b"a"), 1, digests(b"a"))],      # same path twice
                [good, PutItem("data/b", io.BytesIO(b"b"), 1, {"sha256": "00"})]):    # malformed digest
        with pytest.raises(ValueError):
            a.put_files(BAG, bad)
    with pytest.raises(UnsafePath):
        a.put_files(BAG, [good, PutItem("../escape", io.BytesIO(b"x"), 1, digests(b"x"))])
    assert list(a.list_bag_files(BAG)) == []
    # a source that does not match its digests: refused by the server, nothing under its key
    wrong = PutItem("data/w", io.BytesIO(b"bytes on disk"), 13, digests(b"bytes in manifest"[:13]))
    with pytest.raises(SourceMismatch):
        a.put_files(BAG, [wrong])
    assert a.stat_file(BAG, "data/w") is None


def test_put_files_applies_retention_to_every_object(make, buckets, raw):
    lk = make(buckets["locked"], object_lock=True, retention=("governance", 1), concurrency=4)
    files = {f"data/{n}.txt": f"locked {n}".encode() for n in range(12)}
    assert set(lk.put_files(BAG, items_of(files))) == {PutOutcome.WRITTEN}
    for rel in files:
        assert raw.head_object(Bucket=lk.bucket, Key=key_of(lk, rel))["ObjectLockMode"] == "GOVERNANCE"


def test_the_direct_put_path_stores_what_the_boto3_path_stores(make, buckets, raw):
    """Small PUTs skip the boto3 client's per-call work (see _Direct): same object, same headers."""
    data = "同じ bytes\n".encode() * 50
    heads = []
    for direct in (True, False):
        a = make(buckets["versioned"], direct_put=direct, object_lock=False)
        a.ensure_bucket()
        assert (a._direct is not None) is direct
        assert put(a, "data/p q~r.txt", data, mtime=12.25) is PutOutcome.WRITTEN
        head = raw.head_object(Bucket=a.bucket, Key=key_of(a, "data/p q~r.txt"), ChecksumMode="ENABLED")
        heads.append({k: head.get(k) for k in ("ContentLength", "ContentType", "Metadata", "ChecksumSHA256", "ETag")})
        assert put(a, "data/p q~r.txt", data) is PutOutcome.ALREADY_PRESENT
        with pytest.raises(ReplicaConflict):
            put(a, "data/p q~r.txt", data + b"!")
    assert heads[0] == heads[1]


def test_mtime_falls_back_to_last_modified_for_foreign_objects(make, buckets, raw):
    a = make(buckets["a"])
    raw.put_object(Bucket=a.bucket, Key=key_of(a, "data/foreign"), Body=b"f")
    head = raw.head_object(Bucket=a.bucket, Key=key_of(a, "data/foreign"))
    assert a.stat_file(BAG, "data/foreign").mtime == head["LastModified"].timestamp()


# --------------------------------------------------------------------------------------------
# Listing cost: only the bag's own prefix


def test_a_bag_is_written_and_verified_listing_only_its_own_prefix(make, buckets):
    a = make(buckets["b"])
    for n in range(30):  # other bags' objects in the same bucket
        put(a, f"data/{n}.txt", b"x" * n, bag=OTHER)
    listed = []
    a.client.meta.events.register("before-parameter-build.s3.ListObjectsV2",
                                  lambda params, **kw: listed.append((params.get("Prefix"), params.get("Delimiter"))))
    files = {"data/1.txt": b"one", "bagit.txt": b"BagIt-Version: 1.0\n"}
    for rel, data in files.items():
        put(a, rel, data)
    result = verify_replica(a, BAG, {r: digests(d) for r, d in files.items()}, {r: len(d) for r, d in files.items()})
    assert result.ok and sorted(a.list_bag_files(BAG)) == sorted(files)
    assert listed and set(listed) == {(f"{a.prefix}/{BAG}/", None)}


def test_list_bags_walks_levels_with_a_delimiter_and_ignores_strays(make, buckets, raw):
    a = make(buckets["b"])
    put(a, "bagit.txt", b"x", bag=BAG)
    put(a, "bagit.txt", b"x", bag=BagId.parse("LIB2/C-2/20240101T000000Z-3"))
    for stray in ("README", "LIB/notes.txt", "LIB/COLL/not-a-bag/x", "LIB/COLL/20240102T030405Z-1x/y"):
        raw.put_object(Bucket=a.bucket, Key=f"{a.prefix}/{stray}", Body=b"s")
    listed = []
    a.client.meta.events.register("before-parameter-build.s3.ListObjectsV2",
                                  lambda params, **kw: listed.append(params.get("Delimiter")))
    assert [str(b) for b in a.list_bags()] == [str(BAG), "LIB2/C-2/20240101T000000Z-3"]
    assert listed and set(listed) == {"/"}


# --------------------------------------------------------------------------------------------
# Repair, versions and Object Lock


def test_replace_file_on_a_versioned_bucket_keeps_the_old_version(make, buckets, raw):
    v = make(buckets["versioned"])
    put(v, "data/r", b"damaged copy")
    good = b"good copy"
    src = make(buckets["a"])
    put(src, "data/r", good)
    with src.open_file(BAG, "data/r") as stream:  # a stream from another replica, as repair does
        assert v.replace_file(BAG, "data/r", stream, size=len(good), digests=digests(good)) is PutOutcome.WRITTEN
    assert stored_bytes(raw, v, "data/r") == good
    versions = raw.list_object_versions(Bucket=v.bucket, Prefix=key_of(v, "data/r"))["Versions"]
    assert sorted(x["Size"] for x in versions) == sorted([len(good), len(b"damaged copy")])
    v.delete_file(BAG, "data/r")
    assert v.stat_file(BAG, "data/r") is None
    with pytest.raises(NotFound):
        v.delete_file(BAG, "data/r")
    with pytest.raises(NotFound):
        v.open_file(BAG, "data/r")


@pytest.mark.parametrize("mode", ["governance", "compliance"])
def test_retention_is_applied_to_every_object_on_a_locked_bucket(make, buckets, raw, mode, tmp_path):
    lk = make(buckets["locked"], object_lock=True, retention=(mode, 2),
              multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB)
    lk.check_retention_supported()
    small = b"locked"
    big = b"L" * (5 * MiB + 7)
    put(lk, "data/small", small)
    put(lk, "data/big", big)
    today = dt.datetime.now(dt.timezone.utc)
    for rel in ("data/small", "data/big"):
        head = raw.head_object(Bucket=lk.bucket, Key=key_of(lk, rel))
        assert head["ObjectLockMode"] == mode.upper()
        until = head["ObjectLockRetainUntilDate"].astimezone(dt.timezone.utc)
        assert (until - today).days in range(2 * 365 - 1, 2 * 366 + 1)
        version = head["VersionId"]
        with pytest.raises(Exception) as info:  # the server itself refuses to delete the locked version
            raw.delete_object(Bucket=lk.bucket, Key=key_of(lk, rel), VersionId=version)
        assert "AccessDenied" in str(info.value)
    # a repair writes a new locked version, the old one stays
    assert lk.replace_file(BAG, "data/small", io.BytesIO(small), size=len(small), digests=digests(small)) \
        is PutOutcome.WRITTEN
    versions = raw.list_object_versions(Bucket=lk.bucket, Prefix=key_of(lk, "data/small"))["Versions"]
    assert len(versions) == 2
    assert lk.describe()["retention"] == {"mode": mode, "years": 2}


def test_retention_refused_before_any_upload_where_the_bucket_cannot_lock(make, buckets, raw):
    for bucket, object_lock, reason in ((buckets["a"], True, "has no Object Lock"),
                                        (buckets["versioned"], True, "has no Object Lock"),
                                        (buckets["locked"], False, "object_lock: true")):
        t = make(bucket, object_lock=object_lock, retention=("compliance", 10))
        with pytest.raises(StorageError, match=reason) as info:
            t.check_retention_supported()
        assert "compliance, 10 years" in str(info.value)
        with pytest.raises(StorageError, match=reason):
            put(t, "data/x", b"never stored")
        assert raw.list_objects_v2(Bucket=bucket, Prefix=t.prefix + "/").get("KeyCount") == 0
    # no retention asked: any bucket will do, nothing checked
    make(buckets["a"], retention=("none", 0)).check_retention_supported()
    make(buckets["a"], retention=None).check_retention_supported()


# --------------------------------------------------------------------------------------------
# Errors


def test_missing_bucket_is_a_clear_error_and_is_not_created(make, raw):
    t = make("no-such-bucket-" + uuid.uuid4().hex[:8])
    for action in (lambda: put(t, "data/x", b"x"), lambda: list(t.list_bag_files(BAG)), lambda: list(t.list_bags()),
                   lambda: t.stat_file(BAG, "data/x")):
        with pytest.raises(StorageError, match="does not exist") as info:
            action()
        assert info.value.exit_code == 1 and t.bucket in str(info.value)
    assert t.bucket not in {b["Name"] for b in raw.list_buckets()["Buckets"]}


def test_wrong_credentials_are_refused_without_showing_them(make, buckets, seaweed):
    wrong_secret = "not-the-secret-" + uuid.uuid4().hex
    t = make(buckets["a"], credentials=Credentials(access_key=seaweed.access_key, secret_key=wrong_secret))
    with pytest.raises(StorageError) as info:
        put(t, "data/x", b"x")
    text = str(info.value) + repr(info.value.__dict__)
    assert "access denied" in text or "403" in text
    assert wrong_secret not in text and seaweed.access_key not in text and seaweed.secret_key not in text


def test_unreachable_endpoint_names_it(seaweed):
    from tests.seaweed import free_ports

    (port,) = free_ports(1)
    t = S3Adapter("s3-down", "x", bucket="strongroom", endpoint=f"http://127.0.0.1:{port}", region="us-east-1",
                  credentials=Credentials(access_key="AKIDEXAMPLE", secret_key="s" * 40), max_attempts=1,
                  connect_timeout=2)
    with pytest.raises(StorageError, match=f"127.0.0.1:{port} cannot be reached") as info:
        t.stat_file(BAG, "data/x")
    assert "s" * 40 not in str(info.value)


def test_unsafe_bag_paths_are_refused(make, buckets):
    a = make(buckets["a"])
    for rel in ("../x", "/abs", "data/../../x", "data//x", "data/./x", "a\\b"):
        with pytest.raises(UnsafePath):
            put(a, rel, b"x")
        with pytest.raises(UnsafePath):
            a.stat_file(BAG, rel)


# --------------------------------------------------------------------------------------------
# Registry


def _target(seaweed, bucket, **options) -> StorageTarget:
    base = {"endpoint": seaweed.endpoint, "bucket": bucket, "region": "us-east-1", "prefix": "reg/" + uuid.uuid4().hex[:6],
            "addressing_style": "path", "storage_class": None, "multipart_threshold": 64 * MiB,
            "multipart_chunksize": 16 * MiB, "object_lock": False, "verify_tls": True, "ca_bundle": None,
            "credentials": {"access_key_env": "SR_TEST_REG_KEY", "secret_key_env": "SR_TEST_REG_SECRET"}}
    base.update(options)
    return StorageTarget(name="s3-reg", type="s3", site="hangzhou", root=None, options=base,
                         source=Path("/x/strongroom.yaml"))


def test_registry_opens_s3_targets_with_credentials_from_named_variables(seaweed, buckets, monkeypatch):
    from storage_adapters.registry import open_target

    monkeypatch.setenv("SR_TEST_REG_KEY", seaweed.access_key)
    monkeypatch.setenv("SR_TEST_REG_SECRET", seaweed.secret_key)
    adapter = open_target(_target(seaweed, buckets["a"]), retention=None)
    assert isinstance(adapter, S3Adapter) and adapter.site == "hangzhou"
    assert put(adapter, "data/r.txt", b"via registry") is PutOutcome.WRITTEN
    assert adapter.stat_file(BAG, "data/r.txt").size == len(b"via registry")

    from policies.model import Retention

    locked = open_target(_target(seaweed, buckets["locked"], object_lock=True),
                         retention=Retention(mode="governance", years=1))
    assert locked.retention is not None and locked.retention.mode == "governance"
    locked.check_retention_supported()

    monkeypatch.delenv("SR_TEST_REG_SECRET")
    with pytest.raises(ConfigError, match="SR_TEST_REG_SECRET") as info:
        open_target(_target(seaweed, buckets["a"]))
    assert info.value.exit_code == 2 and seaweed.access_key not in str(info.value)


def test_check_retention_refuses_the_first_target_that_cannot_lock(seaweed, buckets, monkeypatch, tmp_path):
    from policies.model import Retention
    from storage_adapters.registry import check_retention

    monkeypatch.setenv("SR_TEST_REG_KEY", seaweed.access_key)
    monkeypatch.setenv("SR_TEST_REG_SECRET", seaweed.secret_key)
    folder = StorageTarget(name="local", type="filesystem", site="beijing", root=tmp_path, options={})
    locked = _target(seaweed, buckets["locked"], object_lock=True)
    plain = _target(seaweed, buckets["a"], object_lock=True)
    wants = Retention(mode="compliance", years=7)
    check_retention([folder, locked], wants)                  # folders ignore it, the locked bucket can
    check_retention([folder, locked, plain], None)            # nothing asked, nothing refused
    with pytest.raises(StorageError, match="has no Object Lock") as info:
        check_retention([folder, locked, plain], wants)
    assert str(info.value).startswith(f"s3-reg: s3://{buckets['a']}")


# --------------------------------------------------------------------------------------------
# Deep checks: one GET per object, damage of every kind named


def test_deep_verify_reads_each_object_once_and_names_every_kind_of_damage(make, buckets, raw):
    a = make(buckets["a"])
    files = {f"data/f{n}.bin": bytes([n]) * (1000 + n) for n in range(6)}
    for rel, data in files.items():
        put(a, rel, data, mtime=1_700_000_000.5)
    # the same through the adapter: a stat and a stream from one answer
    st, stream = a.open_with_stat(BAG, "data/f1.bin")
    with stream:
        assert stream.read() == files["data/f1.bin"]
    assert st == FileStat(size=1001, mtime=1_700_000_000.5, stored_digests=digests(files["data/f1.bin"]))
    assert a.open_with_stat(BAG, "data/nope") is None

    # damage behind Strongroom's back: other bytes of the same size (metadata kept), other bytes
    # with metadata claiming the old digests, shorter bytes, a deleted object
    key = lambda rel: key_of(a, rel)  # noqa: E731
    old_meta = raw.head_object(Bucket=a.bucket, Key=key("data/f1.bin"))["Metadata"]
    raw.put_object(Bucket=a.bucket, Key=key("data/f1.bin"), Body=b"\xff" * 1001, Metadata=old_meta)
    raw.put_object(Bucket=a.bucket, Key=key("data/f2.bin"), Body=b"\xfe" * 1002,
                   Metadata={"sha256": hashlib.sha256(b"\xfe" * 1002).hexdigest()})
    raw.put_object(Bucket=a.bucket, Key=key("data/f3.bin"), Body=b"\x03" * 10)
    raw.delete_object(Bucket=a.bucket, Key=key("data/f4.bin"))

    heads, gets = [], []
    a.client.meta.events.register("before-call.s3.HeadObject", lambda **kw: heads.append(1))
    a.client.meta.events.register("before-call.s3.GetObject", lambda params, **kw: gets.append(params["Key"]))
    assert a._direct is not None  # a custom endpoint: GETs skip the boto3 client (counted here)
    real = a._direct.get_object
    a._direct.get_object = lambda **kw: gets.append(kw["Key"]) or real(**kw)
    result = verify_replica(a, BAG, {r: digests(d) for r, d in files.items()}, {r: len(d) for r, d in files.items()},
                            deep=True, workers=3)
    assert not result.ok
    text = "\n".join(result.problems)
    assert "data/f1.bin: checksum mismatch" in text and "data/f2.bin: checksum mismatch" in text
    assert "data/f3.bin: size differs (truncated: 10 bytes stored, 1003 expected)" in text
    assert "data/f4.bin: missing" in text
    assert sorted(result.damaged) == ["data/f1.bin", "data/f2.bin", "data/f3.bin"] and result.missing == ["data/f4.bin"]
    assert "data/f0.bin" not in text and "data/f5.bin" not in text
    assert heads == [] and sorted(gets) == sorted(key(r) for r in files if r != "data/f4.bin")
