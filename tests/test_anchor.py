"""The ledger anchored in every storage target (issue 17 part 1): storage records under the
reserved `.strongroom/` namespace, checkpoints after each command that moved the ledger head,
`ledger verify --against-storage`, and `catalog rebuild` restoring the events.

Filesystem targets and a real SeaweedFS (tests/seaweed.py); records written by the adapters are
read back with plain file reads / a plain boto3 client where it matters.
"""

from __future__ import annotations

import uuid

import pytest

from policies.config import Credentials
from storage_adapters.base import NotFound, PutOutcome, ReplicaConflict, UnsafePath
from storage_adapters.filesystem import FilesystemAdapter
from storage_adapters.s3 import S3Adapter


@pytest.fixture(scope="module")
def bucket(seaweed):
    return seaweed.make_bucket()


@pytest.fixture(scope="module")
def locked_bucket(seaweed):
    return seaweed.make_bucket(object_lock=True)


def s3_adapter(seaweed, bucket, **kw) -> S3Adapter:
    return S3Adapter("s3-a", "site-s3", bucket=bucket, endpoint=seaweed.endpoint, region="us-east-1",
                     prefix="t-" + uuid.uuid4().hex[:10], addressing_style="path",
                     credentials=Credentials(access_key=seaweed.access_key, secret_key=seaweed.secret_key), **kw)


@pytest.fixture(params=["filesystem", "s3"])
def adapter(request, tmp_path):
    if request.param == "filesystem":
        (tmp_path / "root").mkdir()
        return FilesystemAdapter("fs-a", "site-fs", tmp_path / "root")
    seaweed = request.getfixturevalue("seaweed")
    return s3_adapter(seaweed, request.getfixturevalue("bucket"))


# --------------------------------------------------------------------------------------------
# K1: records


def test_records_are_written_once_never_overwritten_and_listed(adapter):
    key = "ledger/checkpoints/000000000001-ab.json"
    assert adapter.put_record(key, b"first") is PutOutcome.WRITTEN
    assert adapter.put_record(key, b"first") is PutOutcome.ALREADY_PRESENT
    with pytest.raises(ReplicaConflict):
        adapter.put_record(key, b"second")
    assert adapter.read_record(key) == b"first"
    adapter.put_record("tombstones/LIB/x.json", b"{}")
    assert list(adapter.list_records()) == [key, "tombstones/LIB/x.json"]
    assert list(adapter.list_records("ledger/")) == [key]
    assert list(adapter.list_records("ledger/check")) == [key]
    assert list(adapter.list_records("nothing/")) == []
    with pytest.raises(NotFound):
        adapter.read_record("ledger/none.json")
    assert list(adapter.list_bags()) == []  # the reserved namespace is no library


@pytest.mark.parametrize("key", ["../escape", "/abs", "a//b", "a/./b", "a/../b", "a\\b"])
def test_unsafe_record_keys_are_refused(adapter, key):
    with pytest.raises(UnsafePath):
        adapter.put_record(key, b"x")
    with pytest.raises(UnsafePath):
        adapter.read_record(key)


def test_a_link_in_the_reserved_namespace_is_never_followed(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (root / ".strongroom").symlink_to(elsewhere)
    adapter = FilesystemAdapter("fs-a", "site-fs", root)
    with pytest.raises(UnsafePath):
        adapter.put_record("ledger/x.json", b"x")
    assert list(elsewhere.iterdir()) == []


def test_records_on_a_locked_bucket_get_the_retention(seaweed, locked_bucket):
    adapter = s3_adapter(seaweed, locked_bucket, object_lock=True, retention=("governance", 1))
    adapter.put_record("ledger/checkpoints/x.json", b"evidence")
    head = seaweed.client().head_object(Bucket=locked_bucket, Key=f"{adapter.prefix}/.strongroom/ledger/checkpoints/x.json")
    assert head.get("ObjectLockMode") == "GOVERNANCE"
    assert head.get("ObjectLockRetainUntilDate") is not None
