"""`report --library L --publish` into a real S3 receiving bucket (SeaweedFS with one identity per
library, each allowed only its own bucket): L's reports land under `reports/` in L's bucket,
written with L's own keys (the service's keys are not even set), and nothing reaches the other
library's bucket; the library reads them back with its own keys, as it would with rclone.
"""

from __future__ import annotations

import contextlib
import io
import json
import uuid
from pathlib import Path

import pytest

from tests.seaweed import SeaweedServer

SUFFIX = uuid.uuid4().hex[:8]
BUCKETS = {"PKU": f"pub-pku-{SUFFIX}", "THU": f"pub-thu-{SUFFIX}"}
ENV = {"PKU": ("SR_PUB_PKU_KEY", "SR_PUB_PKU_SECRET"), "THU": ("SR_PUB_THU_KEY", "SR_PUB_THU_SECRET")}
PUBLISHED = sorted(f"reports/{kind}{tag}.html" for kind in ("preservation", "fixity", "formats") for tag in ("", "-zh"))


def cli(*argv):
    from pipelines.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = SeaweedServer(tmp_path_factory.mktemp("seaweed-publish"))
    srv.keys = {who: srv.add_identity(f"pub{who.lower()}", [f"{a}:{bucket}" for a in ("Read", "Write", "List")])
                for who, bucket in BUCKETS.items()}
    srv.start()
    try:
        for bucket in BUCKETS.values():
            srv.make_bucket(bucket)
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def archive(server, tmp_path, monkeypatch):
    """The default archive (filesystem targets) with PKU and THU listed, each with an S3 receiving
    bucket; one PKU and one THU deposit."""
    from policies.config import write_default_config

    for who, (k, s) in ENV.items():
        monkeypatch.setenv(k, server.keys[who][0])
        monkeypatch.setenv(s, server.keys[who][1])
    config = Path(write_default_config(tmp_path / "archive"))
    areas = "".join(
        f"  {who}:\n    name: {{en: {who} Library, zh: {who}图书馆}}\n    receiving:\n      type: s3\n"
        f"      endpoint: {server.endpoint}\n      bucket: {BUCKETS[who]}\n      region: us-east-1\n"
        f"      credentials: {{access_key_env: {ENV[who][0]}, secret_key_env: {ENV[who][1]}}}\n"
        for who in BUCKETS)
    with open(config, "a", encoding="utf-8") as fh:
        fh.write("\nlibraries:\n" + areas)
    for who, coll in (("PKU", "rare-books"), ("THU", "theses")):
        src = tmp_path / "src" / who
        src.mkdir(parents=True)
        (src / f"{coll}-item.txt").write_bytes(f"{who} {coll}\n".encode() * 20)
        code, out, err = cli("--config", config, "deposit", src, "--library", who, "--collection", coll,
                             "--type", "self-built")
        assert code == 0, out + err
    return config


def objects(server, who, keys=None):
    client = server.client(keys=keys, retries=0) if keys else server.client()
    listing = client.list_objects_v2(Bucket=BUCKETS[who]).get("Contents") or []
    return client, sorted(o["Key"] for o in listing)


def test_publish_writes_into_the_librarys_own_bucket_with_its_own_keys(server, archive, monkeypatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    code, out, err = cli("--config", archive, "--json", "report", "preservation", "--library", "PKU", "--publish")
    assert code == 0, out + err
    assert sorted(json.loads(out)["published"]["keys"]) == PUBLISHED
    client, keys = objects(server, "PKU", server.keys["PKU"])        # PKU reads them with its own keys
    assert keys == PUBLISHED
    for key in keys:
        text = client.get_object(Bucket=BUCKETS["PKU"], Key=key)["Body"].read().decode("utf-8")
        assert "PKU" in text and "rare-books" in text.replace("<wbr>", "")
        assert "THU" not in text and "theses" not in text.replace("<wbr>", "")
    assert objects(server, "THU")[1] == []                           # nothing in THU's bucket
    for secret in (server.keys["PKU"][1], server.keys["THU"][1]):
        assert secret not in out + err


def test_publish_with_the_librarys_keys_unset_is_a_config_error_naming_the_variable(server, archive, monkeypatch):
    monkeypatch.delenv(ENV["THU"][1])
    code, out, err = cli("--config", archive, "report", "fixity", "--library", "THU", "--publish")
    assert code == 2 and ENV["THU"][1] in err and "Traceback" not in err, out + err
    assert objects(server, "THU")[1] == []
