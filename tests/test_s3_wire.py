"""The hand-written S3 request path (storage_adapters/s3_wire.py) against botocore and a real server.

The signer must produce exactly botocore's SigV4 signature for the same request, and the
connection handling must never hand a half-read connection to the next request.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import uuid

import pytest

from strongroom.bag_id import BagId
from policies.config import Credentials
from storage_adapters.s3 import S3Adapter
from storage_adapters.s3_wire import Signer

BAG = BagId.parse("LIB/COLL/20240101T000000Z-1")
NOW = dt.datetime(2026, 11, 26, 14, 3, 7, tzinfo=dt.timezone.utc)


@pytest.mark.parametrize("method, key, params, extra, token", [
    ("PUT", "pres/LIB/COLL/20240101T000000Z-1/data/a b/善本 %41.tif", {},
     {"Content-MD5": "1B2M2Y8AsgTpgAmY7PhCfg==", "x-amz-checksum-sha256": "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
      "x-amz-meta-sha256": "e3b0c442", "If-None-Match": "*", "Content-Type": "application/octet-stream"}, None),
    ("PUT", "pres/x/part", {"partNumber": "3", "uploadId": "a/b+c=="}, {"x-amz-checksum-sha256": "abc="}, "TOKEN/xyz"),
    ("GET", "pres/LIB/COLL/20240101T000000Z-1/manifest-sha256.txt", {}, {}, None),
])
def test_signature_is_botocores(monkeypatch, method, key, params, extra, token):
    import botocore.auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import ReadOnlyCredentials
    from urllib.parse import quote

    body = b"" if method == "GET" else b"hello"
    payload = hashlib.sha256(body).hexdigest()
    base = "http://127.0.0.1:8333/bucket-1/"
    query = "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in params.items())
    path = "/bucket-1/" + quote(key, safe="/~")

    ours = {"host": "127.0.0.1:8333", **{k.lower(): v for k, v in extra.items()}}
    if method == "PUT":
        ours["content-length"] = str(len(body))
    Signer("eu-west-2").sign(method, path, params, ours, payload, "AKID", "SECRET", token, now=NOW)

    class Known(botocore.auth.S3SigV4Auth):
        def payload(self, request):
            return payload

    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: NOW.replace(tzinfo=None))
    request = AWSRequest(method, base + quote(key, safe="/~") + ("?" + query if query else ""), data=body,
                         headers={**extra, **({"Content-Length": str(len(body))} if method == "PUT" else {})})
    Known(ReadOnlyCredentials("AKID", "SECRET", token), "s3", "eu-west-2").add_auth(request)
    theirs = {k.lower(): v for k, v in request.headers.items()}
    assert ours["x-amz-date"] == theirs["x-amz-date"] == "20261126T140307Z"
    assert ours.get("x-amz-security-token") == theirs.get("x-amz-security-token")
    # botocore leaves some headers unsigned (e.g. none of these); the signatures must agree exactly
    assert ours["authorization"].split("Signature=")[1] == theirs["authorization"].split("Signature=")[1]
    assert ours["authorization"] == theirs["authorization"]


def test_half_read_bodies_never_poison_kept_alive_connections(seaweed):
    bucket = seaweed.make_bucket()
    a = S3Adapter("s3-w", "here", bucket=bucket, endpoint=seaweed.endpoint, region="us-east-1",
                  prefix="w-" + uuid.uuid4().hex[:8], addressing_style="path", concurrency=2,
                  credentials=Credentials(access_key=seaweed.access_key, secret_key=seaweed.secret_key))
    data = {f"data/{n}.bin": bytes([n]) * (70_000 + n) for n in range(4)}
    for rel, blob in data.items():
        a.put_file(BAG, rel, io.BytesIO(blob), size=len(blob),
                   digests={"sha256": hashlib.sha256(blob).hexdigest()})
    assert a._direct is not None and a._direct._wire is not None  # plain http: the lean path
    for _ in range(3):
        for rel, blob in data.items():
            with a.open_file(BAG, rel) as fh:
                assert fh.read(10) == blob[:10]  # closed half read: that connection is dropped
        for rel, blob in data.items():
            with a.open_file(BAG, rel) as fh:
                assert fh.read() == blob       # read whole: the next request reuses it
    idle = a._direct._wire._idle
    assert 1 <= len(idle) <= a.max_pool_connections
    assert all(c.sock is not None for c in idle)


def test_connections_the_server_closed_while_idle_are_not_used(seaweed):
    bucket = seaweed.make_bucket()
    a = S3Adapter("s3-w", "here", bucket=bucket, endpoint=seaweed.endpoint, region="us-east-1",
                  prefix="w-" + uuid.uuid4().hex[:8], addressing_style="path", concurrency=2, max_attempts=1,
                  credentials=Credentials(access_key=seaweed.access_key, secret_key=seaweed.secret_key))
    blob = b"kept" * 1000
    a.put_file(BAG, "data/a.bin", io.BytesIO(blob), size=len(blob), digests={"sha256": hashlib.sha256(blob).hexdigest()})
    wire = a._direct._wire
    assert wire._idle
    import socket

    for conn in wire._idle:  # as if the server had timed them out: the peer side is gone
        conn.sock.shutdown(socket.SHUT_RDWR)
    # with one attempt allowed, a dead kept-alive connection must not cost the request
    for _ in range(3):
        with a.open_file(BAG, "data/a.bin") as fh:
            assert fh.read() == blob


def test_idle_connections_are_reused_with_descriptors_numbered_past_1024(seaweed):
    """select() raises ValueError for a descriptor >= 1024 (FD_SETSIZE): a long audit holding
    many files open must still reuse its kept-alive connections."""
    import fcntl
    import os
    import resource
    import socket

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 1400
    if hard != resource.RLIM_INFINITY and hard < want:
        pytest.fail(f"the hard RLIMIT_NOFILE ({hard}) is below {want}: cannot run this test here")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), hard))
    held = []
    try:
        while len(held) < 1100:
            held.append(os.open(os.devnull, os.O_RDONLY))
        bucket = seaweed.make_bucket()
        a = S3Adapter("s3-w", "here", bucket=bucket, endpoint=seaweed.endpoint, region="us-east-1",
                      prefix="w-" + uuid.uuid4().hex[:8], addressing_style="path", concurrency=2, max_attempts=1,
                      credentials=Credentials(access_key=seaweed.access_key, secret_key=seaweed.secret_key))
        blob = b"many descriptors" * 100
        a.put_file(BAG, "data/a.bin", io.BytesIO(blob), size=len(blob),
                   digests={"sha256": hashlib.sha256(blob).hexdigest()})
        wire = a._direct._wire
        assert wire._idle
        for conn in wire._idle:  # descriptors freed by earlier tests may be reused: move them up
            if conn.sock.fileno() < 1024:
                high = socket.socket(fileno=fcntl.fcntl(conn.sock.fileno(), fcntl.F_DUPFD, 1024))
                high.settimeout(conn.sock.gettimeout())
                conn.sock.close()
                conn.sock = high
        assert all(c.sock.fileno() >= 1024 for c in wire._idle)
        before = [id(c) for c in wire._idle]
        for _ in range(3):
            with a.open_file(BAG, "data/a.bin") as fh:
                assert fh.read() == blob
        assert any(id(c) in before for c in wire._idle)  # an idle connection was taken and given back
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
