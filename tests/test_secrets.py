"""Credentials never leak: every command, the failing ones too, with -v/-vv and with --json,
against an archive with an S3 target (a real SeaweedFS), with known credentials in the
environment; then every byte the commands printed or logged, every file written under the
archive (the catalog's Parquet tables read value by value with pyarrow, since the raw files
are compressed), the reports, the restored bags, every object the bucket holds, and the
parameters of every Luigi task the runs created are searched for the secret and the access
key id. None may appear anywhere.

Why the access key id too: it is not a secret by itself, but it names the account, it is half
of what a leak needs, and nothing in an archive's records has any use for it.

The commands run mostly in this process (cheap; logging captured at DEBUG, every logger, so
botocore's and Luigi's debug output is searched too; for the failing runs the audit's read
retries and the S3 adapter's backoff are made instant),
and a -vv audit and a failing -vv deposit as real child processes, so logging is
set up exactly as for a user.
"""

from __future__ import annotations

import json
import logging
import shutil
import socket
import uuid
from pathlib import Path
from typing import Dict, List, Tuple

import yaml

from tests import faultkit as fk

KEY_ENV, SECRET_ENV = "SR_SECRETS_TEST_KEY", "SR_SECRETS_TEST_SECRET"
# Distinctive fake credentials for the failing runs (wrong key, wrong secret).
FAKE_KEY = "AKIAH7CANARYFAKEKEY9"
FAKE_SECRET = "h7/Canary+Fake-Secret_0123456789abcdefXYZ"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _with_s3(folder: Path, seaweed, bucket: str, prefix: str, *, name: str = "strongroom.yaml",
             endpoint: str = "", bucket_override: str = "") -> Path:
    """`strongroom init`'s config with an S3 target added (credentials by env name) and a policy
    keeping a copy on site-a and one in the bucket. Variants (another endpoint or bucket) go to
    another file name in the same folder, so they share the archive's catalog and staging."""
    base = yaml.safe_load((folder / "strongroom.yaml").read_text("utf-8"))
    base["storage"]["vault"] = {
        "type": "s3", "endpoint": endpoint or seaweed.endpoint, "bucket": bucket_override or bucket,
        "region": "us-east-1", "prefix": prefix, "addressing_style": "path", "site": "elsewhere",
        "max_attempts": 1, "connect_timeout": "2s", "read_timeout": "10s",
        "credentials": {"access_key_env": KEY_ENV, "secret_key_env": SECRET_ENV},
    }
    path = folder / name
    path.write_text(yaml.safe_dump(base, allow_unicode=True), "utf-8")
    (folder / "policies" / "vaulted.yaml").write_text(
        "name: vaulted\nchecksums: [sha256, md5]\nreplicas: [site-a, vault]\ndistinct_sites: false\n", "utf-8")
    return path


def _all_loggers_at_debug(monkeypatch) -> None:
    """Luigi's loggers let DEBUG through to caplog again: an earlier in-process command without
    -v set them to CRITICAL (pipelines/runner.py; one process per command in real use). The
    levels Strongroom itself sets on purpose (botocore & co. capped at INFO by
    storage_adapters/s3.py, because botocore's DEBUG lines carry the access key id) stay."""
    for name, logger in list(logging.Logger.manager.loggerDict.items()):
        if isinstance(logger, logging.Logger) and name.startswith("luigi") and logger.level > logging.DEBUG:
            monkeypatch.setattr(logger, "level", logging.NOTSET)
    logging.getLogger().manager._clear_cache()


def _bucket_needles(client, bucket: str, prefix: str, needles: List[str]) -> List[str]:
    """Every object key, user metadata and (small) body under the prefix, searched."""
    hits = []
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix + "/"):
        for obj in page.get("Contents", []):
            got = client.get_object(Bucket=bucket, Key=obj["Key"])
            body = got["Body"].read() if obj["Size"] < (1 << 20) else b""
            text = obj["Key"] + json.dumps(got.get("Metadata", {}))
            if body[:4] == b"PAR1":  # a catalog table or ledger segment: its values, decoded
                text += "\n".join(fk.parquet_strings(body))
            for n in needles:
                if n in text or n.encode() in body:
                    hits.append(f"s3://{bucket}/{obj['Key']}: {n[:6]}...")
    return hits


def _credentials_in_env(seaweed, monkeypatch, caplog):
    """A fresh bucket and prefix, the server's real credentials in the environment the config
    names, every logger at DEBUG: (bucket, prefix, key, secret, the strings no output may hold)."""
    bucket = seaweed.make_bucket()
    prefix = "secrets-" + uuid.uuid4().hex[:6]
    key, secret = seaweed.access_key, seaweed.secret_key
    monkeypatch.setenv(KEY_ENV, key)
    monkeypatch.setenv(SECRET_ENV, secret)
    caplog.set_level(logging.DEBUG)
    _all_loggers_at_debug(monkeypatch)
    return bucket, prefix, key, secret, [key, secret, secret[:16], FAKE_KEY, FAKE_SECRET, FAKE_SECRET[:16]]


def test_no_command_leaks_the_credentials_anywhere(seaweed, tmp_path, monkeypatch, caplog):
    import luigi

    bucket, prefix, key, secret, needles = _credentials_in_env(seaweed, monkeypatch, caplog)

    # Every Luigi task made in this process: its parameters are logged by Luigi and shown by a
    # central scheduler, so they must never carry a credential.
    task_params: List[str] = []
    real_init = luigi.Task.__init__

    def recording_init(self, *a, **kw):
        real_init(self, *a, **kw)
        task_params.append(f"{type(self).__name__}{self.param_kwargs!r}")

    monkeypatch.setattr(luigi.Task, "__init__", recording_init)

    seen: List[Tuple[str, str]] = []   # (what ran, everything it printed)
    root = tmp_path / "archive"

    def run(cfg: Path, *argv, expect=(0,)) -> fk.Result:
        arch = fk.FaultArchive(root, cfg, root / "archive" / "staging", root / "archive" / "catalog", {})
        caplog.clear()
        r = fk.inproc(arch, *argv)
        seen.append((" ".join(map(str, argv)), r.out + r.err + caplog.text))
        assert r.code in expect, f"{argv}: exit {r.code}: {r.text[-1500:]}"
        return r

    def child(cfg: Path, *argv, env: Dict[str, str] = None, expect=(0,)) -> fk.Result:
        arch = fk.FaultArchive(root, cfg, root / "archive" / "staging", root / "archive" / "catalog", {},
                               env={KEY_ENV: key, SECRET_ENV: secret, **(env or {})})
        r = fk.cli(arch, *argv)
        seen.append(("child: " + " ".join(map(str, argv)), r.out + r.err))
        assert r.code in expect, f"{argv}: exit {r.code}: {r.text[-1500:]}"
        return r

    # init, then the S3 target added as a librarian would
    init = fk.inproc(fk.FaultArchive(root, root / "strongroom.yaml", root, root, {}), "--json", "init", root)
    assert init.code == 0, init.text
    seen.append(("init", init.out + init.err))
    cfg = _with_s3(root, seaweed, bucket, prefix)
    source = fk.make_files(tmp_path / "source", 6, 40_000, seed="secrets")
    (source / "notes.csv").write_text("title,year\nrare,1644\n", "utf-8")

    dep = run(cfg, "--json", "-vv", "deposit", source, "--library", "PKU", "--collection", "LEAK",
              "--type", "self-built", "--policy", "vaulted")
    bag_id = dep.data["bags"][0]["id"]
    assert any(r.levelno == logging.DEBUG for r in caplog.records), "-vv: no debug record was captured"
    audit = child(cfg, "-vv", "audit", "--all", "--deep")
    assert "DEBUG" in audit.err  # -vv really logged at debug level
    run(cfg, "--json", "-v", "audit", "--all", "--quick")
    run(cfg, "-v", "audit", "--due")
    run(cfg, "status")
    run(cfg, "--json", "-v", "status")
    run(cfg, "--json", "status", "--bag", bag_id)
    run(cfg, "-v", "restore", bag_id, tmp_path / "restored", "--from", "vault")
    run(cfg, "--json", "restore", bag_id, tmp_path / "restored-payload", "--from", "vault", "--payload-only")
    reports = tmp_path / "reports"
    reports.mkdir()
    for kind, fmt in (("preservation", "html"), ("preservation", "premis"), ("fixity", "csv"),
                      ("formats", "json")):
        run(cfg, "-v", "report", kind, "--format", fmt, "-o", reports / f"{kind}.{fmt}")
    run(cfg, "ledger", "verify")
    run(cfg, "--json", "ledger", "verify")
    run(cfg, "--json", "-v", "catalog", "compact")
    run(cfg, "-v", "validate", tmp_path / "restored")
    run(cfg, "--json", "validate", tmp_path / "restored")
    run(cfg, "--json", "identify", tmp_path / "restored" / "data")
    run(cfg, "identify", source / "notes.csv")

    # failing runs: a wrong secret, an unknown key, an endpoint nobody answers, a wrong bucket
    src3 = fk.make_files(tmp_path / "source3", 2, 1000, seed="three")
    wrong_secret = {SECRET_ENV: FAKE_SECRET}
    bad = child(cfg, "-vv", "deposit", src3, "--library", "PKU", "--collection", "LEAK3", "--type", "self-built",
                "--policy", "vaulted", env=wrong_secret, expect=(1,))
    assert "vault" in bad.text and "access denied" in bad.text, bad.text[-1500:]  # failed for the right reason
    # (in this process the audit's own read retries are made instant, as test_audit.py does)
    from fixity import audit as A

    from storage_adapters.s3 import S3Adapter

    monkeypatch.setattr(A, "DEFAULT_RETRY", A.Retry(attempts=2, delays=(0.0,)))
    monkeypatch.setattr(S3Adapter, "_backoff", lambda self, attempt: 0.0)
    monkeypatch.setenv(KEY_ENV, FAKE_KEY)
    monkeypatch.setenv(SECRET_ENV, FAKE_SECRET)
    bad = run(cfg, "--json", "-vv", "audit", "--all", "--deep", expect=(1,))
    assert "vault" in bad.text, bad.text[-1500:]
    monkeypatch.setenv(KEY_ENV, key)
    run(cfg, "--json", "-v", "restore", bag_id, tmp_path / "r-bad", "--from", "vault", expect=(0, 1))
    run(cfg, "-v", "status", expect=(0, 1))
    monkeypatch.setenv(SECRET_ENV, secret)
    unreachable = _with_s3(root, seaweed, bucket, prefix, name="unreachable.yaml",
                           endpoint=f"http://127.0.0.1:{_free_port()}")
    run(unreachable, "-vv", "audit", "--all", "--quick", expect=(1,))
    bad = run(unreachable, "--json", "-v", "status", expect=(1,))
    assert "vault" in bad.text, bad.text[-1500:]
    nobucket = _with_s3(root, seaweed, bucket, prefix, name="nobucket.yaml",
                        bucket_override="nope-" + uuid.uuid4().hex[:10])
    bad = run(nobucket, "-v", "deposit", src3, "--library", "PKU", "--collection", "LEAK5", "--type", "self-built",
              "--policy", "vaulted", expect=(1,))
    assert "does not exist" in bad.text, bad.text[-1500:]
    run(nobucket, "--json", "-vv", "audit", "--all", "--deep", expect=(1,))
    # the catalog lost and rebuilt from the copies (the S3 one listed with the credentials)
    shutil.rmtree(root / "archive" / "catalog")
    run(cfg, "--json", "-v", "catalog", "rebuild", expect=(0, 1))
    run(cfg, "-v", "catalog", "rebuild", expect=(0, 1))

    leaks = [f"output of `{what}`: {n[:6]}..." for what, text in seen for n in needles if n in text]
    leaks += fk.files_holding([tmp_path], needles)
    leaks += _bucket_needles(seaweed.client(), bucket, prefix, needles)
    leaks += [f"Luigi task {p[:80]}: {n[:6]}..." for p in task_params for n in needles if n in p]
    assert leaks == [], leaks
    assert task_params, "no Luigi task was created in this process: the parameter check proved nothing"
    # the credentials were really used: the deposit reached the bucket through them
    assert seaweed.client().list_objects_v2(Bucket=bucket, Prefix=prefix + "/")["KeyCount"] > 0


def test_the_search_finds_a_planted_secret_in_compressed_parquet_and_plain_files(tmp_path):
    """The leak search above proves something only if it would see a leak: a secret in a
    zstd-compressed Parquet value (invisible to a byte search) and in a plain file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    needle = FAKE_SECRET
    # Rows sharing the secret's first part, so the compressor stores the one full occurrence as
    # a back-reference plus a tail: the whole string is nowhere in the file's bytes.
    rows = [f"first {needle[:30]}{i}" for i in range(500)] + [f"then {needle} end"]
    pq.write_table(pa.table({"detail": rows}), tmp_path / "events.parquet", compression="zstd",
                   use_dictionary=False, write_statistics=False)
    assert needle.encode() not in (tmp_path / "events.parquet").read_bytes()  # hidden from a byte search
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "state.json").write_text(json.dumps({"key": FAKE_KEY}), "utf-8")
    (tmp_path / "clean.txt").write_text("nothing here", "utf-8")
    hits = fk.files_holding([tmp_path], [needle, FAKE_KEY])
    assert sorted(Path(h.split(": ")[0]).name for h in hits) == ["events.parquet", "state.json"], hits


def test_no_command_leaks_the_credentials_with_the_catalog_in_s3(seaweed, tmp_path, monkeypatch, caplog):
    """The catalog in the bucket (`catalog: s3://...`, reached with the vault target's
    credentials): pyarrow's S3 file system and the conditional PUTs of ledger segments are other
    paths the credentials take; the catalog's objects are searched value by value."""
    bucket, prefix, key, secret, needles = _credentials_in_env(seaweed, monkeypatch, caplog)
    from fixity import audit as A
    from storage_adapters.s3 import S3Adapter

    monkeypatch.setattr(A, "DEFAULT_RETRY", A.Retry(attempts=2, delays=(0.0,)))
    monkeypatch.setattr(S3Adapter, "_backoff", lambda self, attempt: 0.0)

    root = tmp_path / "archive"
    from policies.config import write_default_config

    write_default_config(root)
    cfg = _with_s3(root, seaweed, bucket, prefix)
    data = yaml.safe_load(cfg.read_text("utf-8"))
    data["catalog"] = f"s3://{bucket}/catalog-{prefix}"
    cfg.write_text(yaml.safe_dump(data, allow_unicode=True), "utf-8")
    arch = fk.FaultArchive(root, cfg, root / "archive" / "staging", root / "archive" / "catalog", {})
    seen: List[Tuple[str, str]] = []

    def run(*argv, expect=(0,)) -> fk.Result:
        caplog.clear()
        r = fk.inproc(arch, *argv)
        seen.append((" ".join(map(str, argv)), r.out + r.err + caplog.text))
        assert r.code in expect, f"{argv}: exit {r.code}: {r.text[-1500:]}"
        return r

    def child(*argv, expect=(0,)) -> fk.Result:
        r = fk.cli(fk.FaultArchive(root, cfg, arch.staging, arch.catalog_path, {},
                                   env={KEY_ENV: key, SECRET_ENV: secret}), *argv)
        seen.append(("child: " + " ".join(map(str, argv)), r.out + r.err))
        assert r.code in expect, f"{argv}: exit {r.code}: {r.text[-1500:]}"
        return r

    source = fk.make_files(tmp_path / "source", 3, 20_000, seed="s3-catalog")
    bag_id = run("--json", "-vv", "deposit", source, "--library", "PKU", "--collection", "CAT", "--type",
                 "self-built", "--policy", "vaulted").data["bags"][0]["id"]
    run("--json", "-v", "status")
    run("-v", "audit", "--all", "--quick")
    # real processes, logging set up as for a user: commands that reach S3 only for the catalog
    child("-vv", "ledger", "verify")
    child("--json", "-vv", "status")
    child("-vv", "catalog", "compact")
    run("-v", "report", "preservation", "--format", "json", "-o", tmp_path / "report.json")
    run("-v", "restore", bag_id, tmp_path / "restored", "--from", "vault")
    monkeypatch.setenv(SECRET_ENV, FAKE_SECRET)
    bad = run("--json", "-vv", "status", expect=(1, 2))
    assert "access denied" in bad.text.lower(), bad.text[-1500:]
    run("-vv", "audit", "--all", "--quick", expect=(1, 2))
    run("-v", "deposit", source, "--library", "PKU", "--collection", "CAT2", "--type", "self-built",
        "--policy", "vaulted", expect=(1, 2))
    monkeypatch.setenv(KEY_ENV, FAKE_KEY)
    run("-vv", "ledger", "verify", expect=(1, 2))
    monkeypatch.setenv(KEY_ENV, key)
    monkeypatch.setenv(SECRET_ENV, secret)

    leaks = [f"output of `{what}`: {n[:6]}..." for what, text in seen for n in needles if n in text]
    leaks += fk.files_holding([tmp_path], needles)
    leaks += _bucket_needles(seaweed.client(), bucket, f"catalog-{prefix}", needles)
    leaks += _bucket_needles(seaweed.client(), bucket, prefix, needles)
    assert leaks == [], leaks
    # the catalog really is in the bucket (and nothing local pretends to be it)
    assert seaweed.client().list_objects_v2(Bucket=bucket, Prefix=f"catalog-{prefix}/")["KeyCount"] > 0
    assert not (root / "archive" / "catalog").exists() or not any((root / "archive" / "catalog").rglob("*.parquet"))
