"""S3 over https as users run it: a private CA, bad certificates, an HTTP CONNECT proxy, a
skewed clock, and the `transport: auto | boto3` switch, against a real SeaweedFS server.

The server here serves S3 over TLS with a certificate signed by a CA made for the test
(tests/tls.py), so nothing trusts it unless told to: every request path the adapter has (the
boto3 client, the lean `_Direct` path over urllib3, and `s3_wire` on plain http) must take the
CA from the target's `ca_bundle:` or from `AWS_CA_BUNDLE`, and a request path that ignores it
fails the test. The proxy (tests/connect_proxy.py) counts the tunnels it opened, so "went
through the proxy" and "bypassed it for NO_PROXY" are facts the test reads, not assumptions.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import subprocess
import sys
import types
import uuid
from pathlib import Path

import pytest
import yaml

from strongroom.bag_id import BagId
from policies.config import Credentials, StorageTarget, load_config
from storage_adapters.base import StorageError
from storage_adapters.s3 import S3Adapter
from strongroom.errors import ConfigError
from tests.connect_proxy import ConnectProxy
from tests.seaweed import SeaweedServer
from tests.tls import CertificateAuthority

BAG = BagId.parse("LIB/COLL/20240102T030405Z-1")
MiB = 1 << 20
PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY",
              "all_proxy")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    """No proxy and no CA bundle from the machine running the tests: each test sets its own."""
    for name in PROXY_VARS + ("AWS_CA_BUNDLE", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def ca(tmp_path_factory) -> CertificateAuthority:
    return CertificateAuthority.create(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory, ca):
    """SeaweedFS serving S3 on https://127.0.0.1:PORT with a certificate for 127.0.0.1 only."""
    server = SeaweedServer(tmp_path_factory.mktemp("seaweed-tls"), tls=ca.issue("server"), ca_file=ca.cert)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def bucket(tls_server) -> str:
    return tls_server.make_bucket()


def adapter(server: SeaweedServer, bucket: str, *, endpoint: str | None = None, **kw) -> S3Adapter:
    """An adapter on its own prefix; small multipart settings so a 6 MiB file has two parts."""
    kw.setdefault("credentials", Credentials(access_key=server.access_key, secret_key=server.secret_key))
    kw.setdefault("max_attempts", 1)
    return S3Adapter("s3-tls", "site-a", bucket=bucket, endpoint=endpoint or server.endpoint, region="us-east-1",
                     prefix="t-" + uuid.uuid4().hex[:10], addressing_style="path", multipart_threshold=5 * MiB,
                     multipart_chunksize=5 * MiB, **kw)


def put(a: S3Adapter, relpath: str, data: bytes) -> None:
    a.put_file(BAG, relpath, io.BytesIO(data), size=len(data),
               digests={alg: hashlib.new(alg, data).hexdigest() for alg in ("sha256", "md5")})


def round_trip(a: S3Adapter) -> None:
    """Every request path: a small PUT and an UploadPart (lean path in auto), HEAD and listing
    (boto3), and GET (lean path in auto); what is read back is what was written."""
    small, big = b"small object over https", bytes(range(256)) * (6 * MiB // 256)
    put(a, "data/small.txt", small)
    put(a, "data/big.bin", big)
    assert sorted(a.list_bag_files(BAG)) == ["data/big.bin", "data/small.txt"]
    assert a.stat_file(BAG, "data/small.txt").size == len(small)
    for rel, data in (("data/small.txt", small), ("data/big.bin", big)):
        with a.open_file(BAG, rel) as fh:
            assert fh.read() == data


class LeanCalls:
    """Counts requests sent by the lean path (`_Direct._once`), whatever sends them below it."""

    def __init__(self, monkeypatch):
        from storage_adapters import s3_transport

        self.calls: list = []
        real = s3_transport._Direct._once

        def counting(direct, method, key, *rest, **kw):
            self.calls.append((method, key))
            return real(direct, method, key, *rest, **kw)

        monkeypatch.setattr(s3_transport._Direct, "_once", counting)


def boto3_requests(a: S3Adapter) -> list:
    """The operations the adapter's boto3 client sends from now on."""
    seen: list = []
    a.client.meta.events.register("before-send.s3", lambda request, **kw: seen.append(request.method))
    return seen


# ---------------------------------------------------------------------------------------------
# trust: ca_bundle and AWS_CA_BUNDLE, on every request path


def test_target_ca_bundle_is_trusted_by_boto3_and_the_lean_path(tls_server, bucket, ca, monkeypatch):
    lean = LeanCalls(monkeypatch)
    a = adapter(tls_server, bucket, ca_bundle=str(ca.cert))
    round_trip(a)
    assert {m for m, _ in lean.calls} == {"PUT", "GET"}  # the lean path did run, over https


def test_aws_ca_bundle_is_trusted_by_boto3_and_the_lean_path(tls_server, bucket, ca, monkeypatch):
    monkeypatch.setenv("AWS_CA_BUNDLE", str(ca.cert))
    lean = LeanCalls(monkeypatch)
    round_trip(adapter(tls_server, bucket))
    assert {m for m, _ in lean.calls} == {"PUT", "GET"}


def test_target_ca_bundle_wins_over_aws_ca_bundle(tls_server, bucket, ca, tmp_path, monkeypatch):
    other = CertificateAuthority.create(tmp_path / "other", name="Some Other CA")
    monkeypatch.setenv("AWS_CA_BUNDLE", str(other.cert))
    round_trip(adapter(tls_server, bucket, ca_bundle=str(ca.cert)))


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")  # boto3's, as asked
def test_verify_tls_false_checks_no_certificate_on_any_path(tls_server, bucket, monkeypatch):
    lean = LeanCalls(monkeypatch)
    a = adapter(tls_server, bucket, verify_tls=False)  # no CA given anywhere
    round_trip(a)
    assert lean.calls and a._direct._wire is not None


# ---------------------------------------------------------------------------------------------
# refused certificates: one clear line naming the endpoint


def refused(a: S3Adapter) -> StorageError:
    with pytest.raises(StorageError) as info:
        put(a, "data/x.txt", b"x")
    return info.value


def test_unknown_ca_is_refused_naming_the_endpoint(tls_server, bucket, tmp_path, monkeypatch):
    other = CertificateAuthority.create(tmp_path / "other", name="Some Other CA")
    for a in (adapter(tls_server, bucket), adapter(tls_server, bucket, ca_bundle=str(other.cert))):
        err = refused(a)
        text = str(err)
        assert "\n" not in text
        assert f"endpoint {tls_server.endpoint}" in text and "not trusted" in text, text
        assert "ca_bundle" in text and "AWS_CA_BUNDLE" in text, text
        assert not err.transient  # no retries for a certificate that will not change


def test_certificate_for_another_host_name_is_refused(tls_server, bucket, ca):
    endpoint = f"https://localhost:{tls_server.ports['s3']}"  # the certificate names 127.0.0.1 only
    err = refused(adapter(tls_server, bucket, endpoint=endpoint, ca_bundle=str(ca.cert)))
    text = str(err)
    assert "\n" not in text and f"endpoint {endpoint}" in text and "localhost" in text, text
    assert "does not match" in text, text


def test_cli_with_an_untrusted_certificate_says_one_line_and_exits_1(tls_server, bucket, tmp_path):
    archive = tmp_path / "archive"
    (archive / "policies").mkdir(parents=True)
    (archive / "strongroom.yaml").write_text(yaml.safe_dump({
        "catalog": "./catalog", "staging": "./staging", "policies": "./policies",
        "storage": {"tls": {"type": "s3", "endpoint": tls_server.endpoint, "bucket": bucket, "site": "x",
                            "region": "us-east-1", "addressing_style": "path", "max_attempts": 1,
                            "credentials": {"access_key_env": "SR_TLS_KEY", "secret_key_env": "SR_TLS_SECRET"}}},
    }))
    (archive / "policies" / "p.yaml").write_text("name: p\nchecksums: [sha256]\nreplicas: [tls]\nvirus_check: off\n")
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("hello")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "SR_TLS_KEY": tls_server.access_key,
           "SR_TLS_SECRET": tls_server.secret_key}
    proc = subprocess.run([sys.executable, "-m", "pipelines.cli", "--config", str(archive / "strongroom.yaml"),
                           "deposit", str(src), "--library", "PKU", "--collection", "TLS", "--type", "self-built",
                           "--policy", "p"], capture_output=True, text=True, env=env,
                          cwd=Path(__file__).resolve().parents[1], timeout=240)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out
    assert f"endpoint {tls_server.endpoint}" in out and "not trusted" in out, out
    assert tls_server.secret_key not in out


# ---------------------------------------------------------------------------------------------
# proxies


def test_https_goes_through_the_connect_proxy_of_https_proxy(tls_server, bucket, ca, monkeypatch):
    with ConnectProxy() as proxy:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        lean = LeanCalls(monkeypatch)
        a = adapter(tls_server, bucket, ca_bundle=str(ca.cert))
        round_trip(a)
        assert lean.calls  # the lean path too, not only boto3 (through urllib3: s3_wire has no proxy)
        assert a._direct is not None and a._direct._wire is None
        assert proxy.tunnels >= 1 and proxy.refused == 0
        assert set(proxy.targets) == {f"127.0.0.1:{tls_server.ports['s3']}"}


def test_no_proxy_bypasses_the_proxy(tls_server, bucket, ca, monkeypatch):
    with ConnectProxy() as proxy:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        a = adapter(tls_server, bucket, ca_bundle=str(ca.cert))
        round_trip(a)
        assert proxy.tunnels == 0 and proxy.refused == 0
        assert a._direct is not None and a._direct._wire is not None  # direct: s3_wire over TLS


# ---------------------------------------------------------------------------------------------
# clock skew: the signer's clock is faked (the system clock is left alone)


def test_request_signed_with_a_skewed_clock_names_the_local_clock(tls_server, bucket, ca, monkeypatch):
    import botocore.auth

    real = botocore.auth.get_current_datetime
    monkeypatch.setattr(botocore.auth, "get_current_datetime",
                        lambda *a, **kw: real(*a, **kw) - dt.timedelta(hours=2))
    for transport in ("auto", "boto3"):
        err = refused(adapter(tls_server, bucket, ca_bundle=str(ca.cert), direct_put=transport == "auto"))
        text = str(err)
        assert "\n" not in text and "RequestTimeTooSkewed" in text, text
        assert "clock" in text and "UTC" in text and "NTP" in text, text
        assert not err.transient


def test_skewed_clock_on_the_plain_http_lean_path(seaweed, monkeypatch):
    from storage_adapters import s3_wire

    class Slow(dt.datetime):
        @classmethod
        def now(cls, tz=None):
            return dt.datetime.now(tz) - dt.timedelta(hours=2)

    # only s3_wire's view of the datetime module: the process's clock stays true
    monkeypatch.setattr(s3_wire, "_dt", types.SimpleNamespace(datetime=Slow, timezone=dt.timezone))
    lean = LeanCalls(monkeypatch)
    err = refused(adapter(seaweed, seaweed.make_bucket()))
    assert lean.calls and "RequestTimeTooSkewed" in str(err) and "clock" in str(err), str(err)


# ---------------------------------------------------------------------------------------------
# transport: auto | boto3


def stored(server: SeaweedServer, bucket: str, a: S3Adapter) -> dict:
    """What the server holds under the adapter's prefix, read with a plain client: per key
    (relative to the prefix) size, ETag, checksum, content type, storage class, metadata."""
    raw = server.client()
    out = {}
    for page in raw.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=a.prefix + "/"):
        for item in page.get("Contents", []):
            head = raw.head_object(Bucket=bucket, Key=item["Key"], ChecksumMode="ENABLED")
            out[item["Key"][len(a.prefix):]] = (head["ContentLength"], head["ETag"], head.get("ChecksumSHA256"),
                                                head.get("ContentType"), head.get("StorageClass"),
                                                head.get("Metadata"))
    return out


def target(server: SeaweedServer, bucket: str, **options) -> StorageTarget:
    base = {"endpoint": server.endpoint, "bucket": bucket, "region": "us-east-1", "addressing_style": "path",
            "prefix": "tr-" + uuid.uuid4().hex[:8], "multipart_threshold": 5 * MiB, "multipart_chunksize": 5 * MiB,
            "credentials": {"access_key_env": "SR_TR_KEY", "secret_key_env": "SR_TR_SECRET"}}
    base.update(options)
    return StorageTarget(name="s3-tr", type="s3", site="x", root=None, options=base, source=Path("/x/strongroom.yaml"))


@pytest.mark.parametrize("https", [True, False], ids=["https", "http"])
def test_transport_boto3_avoids_the_lean_path_and_stores_the_same(https, tls_server, bucket, ca, seaweed,
                                                                    monkeypatch):
    server = tls_server if https else seaweed
    where = bucket if https else seaweed.make_bucket()
    monkeypatch.setenv("SR_TR_KEY", server.access_key)
    monkeypatch.setenv("SR_TR_SECRET", server.secret_key)
    extra = {"ca_bundle": str(ca.cert)} if https else {}
    results = {}
    for transport in ("auto", "boto3"):
        lean = LeanCalls(monkeypatch)
        a = S3Adapter.from_target(target(server, where, transport=transport, **extra))
        sent = boto3_requests(a)
        round_trip(a)
        results[transport] = stored(server, where, a)
        if transport == "auto":
            assert {m for m, _ in lean.calls} == {"PUT", "GET"}
        else:
            assert lean.calls == []
            assert sent.count("PUT") >= 3 and "GET" in sent  # PutObject, two UploadParts, GetObject
    assert results["auto"] == results["boto3"]
    assert len(results["auto"]) == 2


def test_transport_key_is_validated(tmp_path):
    (tmp_path / "policies").mkdir()
    config = {"catalog": "./catalog", "staging": "./staging", "policies": "./policies",
              "storage": {"s3": {"type": "s3", "endpoint": "https://s3.example.org", "bucket": "keep",
                                 "site": "x", "transport": "boto3"}}}
    path = tmp_path / "strongroom.yaml"
    path.write_text(yaml.safe_dump(config))
    assert load_config(path).storage["s3"].options["transport"] == "boto3"
    del config["storage"]["s3"]["transport"]
    path.write_text(yaml.safe_dump(config))
    assert load_config(path).storage["s3"].options["transport"] == "auto"
    config["storage"]["s3"]["transport"] = "fast"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    text = str(info.value)
    assert "storage.s3.transport" in text and "auto, boto3" in text and str(path) in text, text


# ---------------------------------------------------------------------------------------------
# the catalog's S3 access (pyarrow) sees what boto3 sees


def test_catalog_on_s3_trusts_aws_ca_bundle_and_goes_through_the_proxy(tls_server, bucket, ca, monkeypatch):
    from storage_adapters.s3_catalog import open_catalog_s3

    monkeypatch.setenv("SR_TR_KEY", tls_server.access_key)
    monkeypatch.setenv("SR_TR_SECRET", tls_server.secret_key)
    monkeypatch.setenv("AWS_CA_BUNDLE", str(ca.cert))
    root = f"{bucket}/cat-{uuid.uuid4().hex[:8]}"
    with ConnectProxy() as proxy:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        catalog = open_catalog_s3(f"s3://{root}", target(tls_server, bucket))
        with catalog.filesystem.open_output_stream(f"{root}/part-0.parquet") as fh:
            fh.write(b"written by pyarrow")
        assert proxy.tunnels >= 1 and proxy.refused == 0
    monkeypatch.delenv("HTTPS_PROXY")
    raw = tls_server.client().get_object(Bucket=bucket, Key=root.split("/", 1)[1] + "/part-0.parquet")
    assert raw["Body"].read() == b"written by pyarrow"


def test_s3_wire_over_tls_refuses_an_unknown_ca_with_ssls_reason(tls_server, ca):
    import ssl

    from storage_adapters.s3_connection_faults import explain_connection_fault
    from storage_adapters.s3_wire import Wire

    wire = Wire(tls_server.endpoint + "/", connect_timeout=5, read_timeout=5, max_idle=2,
                ssl_context=ssl.create_default_context())  # the system's CAs: not the test's
    with pytest.raises(ssl.SSLCertVerificationError) as info:
        wire.request("GET", "/", "", {"host": wire.netloc}, b"", stream=False)
    text = explain_connection_fault(info.value, tls_server.endpoint, None)
    assert text and "not trusted" in text and tls_server.endpoint in text, text
    trusted = Wire(tls_server.endpoint + "/", connect_timeout=5, read_timeout=5, max_idle=2,
                   ssl_context=ssl.create_default_context(cafile=str(ca.cert)))
    status, _, _ = trusted.request("GET", "/", "", {"host": trusted.netloc}, b"", stream=False)
    assert status == 403  # unsigned, refused by S3: but the TLS connection was made and trusted
