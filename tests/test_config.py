"""Strict loading of strongroom.yaml and policy files: every bad input names file, key and what is allowed."""

from __future__ import annotations

import copy
import datetime
import os
from pathlib import Path

import pytest
import yaml

from policies.config import (
    Credentials,
    load_config,
    resolve_credentials,
)
from policies.model import DEFAULT_BAG, DEFAULT_FIXITY, load_policy
from policies.units import format_duration, format_size, parse_duration, parse_size
from strongroom.checksums import SUPPORTED
from strongroom.errors import ConfigError, UsageError

GOOD_CONFIG = {
    "catalog": "./archive/catalog",
    "staging": "./archive/staging",
    "policies": "./policies",
    "storage": {
        "site-a": {"type": "filesystem", "root": "./archive/replicas/site-a", "site": "beijing"},
        "site-b": {"type": "filesystem", "root": "./archive/replicas/site-b", "site": "wuhan"},
        "s3-east": {
            "type": "s3", "endpoint": "http://127.0.0.1:8333", "bucket": "strongroom", "region": "us-east-1",
            "prefix": "preservation", "site": "shanghai",
            "credentials": {"access_key_env": "S3_EAST_KEY", "secret_key_env": "S3_EAST_SECRET"},
        },
    },
}
GOOD_POLICY = {"name": "keep", "checksums": ["sha256", "md5"], "replicas": ["site-a", "site-b", "s3-east"]}


def make_archive(root: Path, config=None, policies=None) -> Path:
    """A config folder with the given config mapping and {file name: mapping or raw text} policies."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "policies").mkdir(exist_ok=True)
    data = copy.deepcopy(GOOD_CONFIG) if config is None else config
    (root / "strongroom.yaml").write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    for name, body in (policies if policies is not None else {"keep.yaml": GOOD_POLICY}).items():
        text = body if isinstance(body, str) else yaml.safe_dump(body, sort_keys=False)
        (root / "policies" / name).write_text(text, encoding="utf-8")
    return root / "strongroom.yaml"


def config_error(fn, *args) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        fn(*args)
    return info.value


def policy_error(config_file: Path, name: str = "keep") -> ConfigError:
    """A broken policy file does not stop the config from loading (it blocks only the collections
    that use it): its problems are raised when the policy is asked for."""
    config = load_config(config_file)
    assert name not in config.policies
    return config_error(config.policy, name)


def assert_names(exc: Exception, file: Path, key: str, *allowed: str) -> None:
    text = str(exc)
    assert f"{file}: {key}: " in text, text
    for fragment in allowed:
        assert fragment in text, f"{fragment!r} not in {text!r}"


# ---------------------------------------------------------------------------------- units


@pytest.mark.parametrize("text, expected", [
    ("500GB", 500 * 10**9), ("100GB", 100 * 10**9), ("1.5TiB", 3 * 2**39), ("2GiB", 2 * 2**30),
    ("1KB", 1000), ("1KiB", 1024), ("100 GB", 100 * 10**9), ("500gb", 500 * 10**9), ("7B", 7),
    (1024, 1024), (0, 0), ("1.1KiB", 1126),
])
def test_parse_size(text, expected):
    assert parse_size(text, where="x") == expected


@pytest.mark.parametrize("bad", ["12XB", "-5", -5, True, "1.5", "5G", None, [], "GB", "1e3"])
def test_parse_size_rejects(bad):
    exc = config_error(lambda: parse_size(bad, where="bag.max_bytes"))
    assert "bag.max_bytes: " in str(exc)
    assert "500GB" in str(exc) and "powers of 1000" in str(exc)


@pytest.mark.parametrize("text, expected", [
    ("90d", datetime.timedelta(days=90)), ("7d", datetime.timedelta(days=7)),
    ("12h", datetime.timedelta(hours=12)), ("2w", datetime.timedelta(weeks=2)),
    ("1d12h", datetime.timedelta(hours=36)), ("30min", datetime.timedelta(minutes=30)),
    ("45s", datetime.timedelta(seconds=45)),
])
def test_parse_duration(text, expected):
    assert parse_duration(text, where="x") == expected


@pytest.mark.parametrize("bad, hint", [
    ("6m", "months"), ("1y", "months and years"), ("90", "90d"), (90, "no unit"), ("0d", "positive"),
    ("d", "90d"), ("-1d", "90d"), ("3q", "unknown unit"), (None, "90d"), ("90 days", "unknown unit"),
])
def test_parse_duration_rejects(bad, hint):
    exc = config_error(lambda: parse_duration(bad, where="fixity.deep_every"))
    assert "fixity.deep_every: " in str(exc)
    assert hint in str(exc)


@pytest.mark.parametrize("n", [0, 999, 1000, 1024, 1536, 500 * 10**9, 3 * 2**39, 100 * 10**9, 5 * 2**20, 1500])
def test_format_size_round_trips_exact_values(n):
    assert parse_size(format_size(n), where="x") == n


def test_format_size_readable():
    assert format_size(500 * 10**9) == "500GB"
    assert format_size(3 * 2**39) == "1.5TiB"
    assert format_size(1_234_567) == "1.23MB"


@pytest.mark.parametrize("text", ["90d", "7d", "12h", "30min", "45s", "14d"])
def test_format_duration_round_trips(text):
    assert format_duration(parse_duration(text, where="x")) == text


# ---------------------------------------------------------------------------------- policies


def write_policy(tmp_path: Path, body, name: str = "keep.yaml") -> Path:
    path = tmp_path / name
    path.write_text(body if isinstance(body, str) else yaml.safe_dump(body, sort_keys=False), encoding="utf-8")
    return path


def test_policy_minimal_gets_documented_defaults(tmp_path):
    policy = load_policy(write_policy(tmp_path, {"name": "keep", "checksums": ["sha512", "sha256"],
                                                 "replicas": ["a", "b"]}))
    assert policy.name == "keep"
    assert policy.primary_checksum == "sha512"
    assert policy.checksums == ("sha512", "sha256")
    assert policy.replicas == ("a", "b")
    assert policy.distinct_sites is True
    assert policy.fixity == DEFAULT_FIXITY
    assert policy.fixity.deep_every == datetime.timedelta(days=90)
    assert policy.fixity.quick_every == datetime.timedelta(days=7)
    assert policy.fixity.daily_byte_budget == 500 * 10**9
    assert policy.bag == DEFAULT_BAG and policy.bag.max_bytes == 100 * 10**9 and policy.bag.max_files == 100000
    assert policy.formats.at_risk == () and policy.formats.unidentified == "warn"
    assert policy.retention.mode == "none"
    assert policy.source == tmp_path / "keep.yaml"


def test_policy_full(tmp_path):
    policy = load_policy(write_policy(tmp_path, {
        "name": "keep", "description": " text ", "checksums": ["sha256"], "replicas": ["a"],
        "distinct_sites": False,
        "fixity": {"deep_every": "180d", "quick_every": "2w", "daily_byte_budget": "1.5TiB"},
        "bag": {"max_bytes": "20GiB", "max_files": 5000},
        "formats": {"at_risk": ["fmt/104", "x-fmt/190"], "unidentified": "fail"},
        "retention": {"mode": "compliance", "years": 10},
    }))
    assert policy.distinct_sites is False
    assert policy.fixity.deep_every == datetime.timedelta(days=180)
    assert policy.fixity.quick_every == datetime.timedelta(days=14)
    assert policy.fixity.daily_byte_budget == 3 * 2**39
    assert policy.bag.max_bytes == 20 * 2**30 and policy.bag.max_files == 5000
    assert policy.formats.at_risk == ("fmt/104", "x-fmt/190") and policy.formats.unidentified == "fail"
    assert (policy.retention.mode, policy.retention.years) == ("compliance", 10)
    assert policy.description == "text"
    assert policy.as_dict()["fixity"]["daily_byte_budget"] == "1.5TiB"


ALLOWED_SUMS = ", ".join(SUPPORTED)

BAD_POLICIES = [
    ({"fixty": {}}, "fixty", ["unknown key", "did you mean 'fixity'", "allowed keys here"]),
    ({"checksums": ["sha3"]}, "checksums[0]", [f"must be one of {ALLOWED_SUMS}"]),
    ({"checksums": ["SHA256"]}, "checksums[0]", [f"must be one of {ALLOWED_SUMS}"]),
    ({"checksums": ["sha256", "sha256"]}, "checksums[1]", ["listed twice"]),
    ({"checksums": []}, "checksums", ["must not be empty", ALLOWED_SUMS]),
    ({"checksums": "sha256"}, "checksums", ["must be a list", ALLOWED_SUMS]),
    ({"checksums": None}, "checksums", ["must be a list"]),
    ({"replicas": []}, "replicas", ["must not be empty", "storage target names"]),
    ({"replicas": ["a", "a"]}, "replicas[1]", ["listed twice"]),
    ({"replicas": [3]}, "replicas[0]", ["the name of a storage target"]),
    ({"name": "other"}, "name", ["does not match the file name", "other.yaml"]),
    ({"name": "bad name!"}, "name", ["letters, digits"]),
    ({"distinct_sites": "yes please"}, "distinct_sites", ["true or false"]),
    ({"fixity": {"deep_every": "90x"}}, "fixity.deep_every", ["90d", "12h", "2w"]),
    ({"fixity": {"deep_every": 90}}, "fixity.deep_every", ["no unit", "90d"]),
    ({"fixity": {"deep_every": "7d", "quick_every": "30d"}}, "fixity.quick_every",
     ["must not be longer than fixity.deep_every"]),
    ({"fixity": {"daily_byte_budget": "lots"}}, "fixity.daily_byte_budget", ["500GB", "KiB"]),
    ({"fixity": {"weekly": "1d"}}, "fixity.weekly", ["deep_every, quick_every, daily_byte_budget"]),
    ({"fixity": "90d"}, "fixity", ["must be a mapping", "deep_every"]),
    ({"bag": {"max_bytes": 0}}, "bag.max_bytes", ["at least"]),
    ({"bag": {"max_files": "many"}}, "bag.max_files", ["whole number >= 1"]),
    ({"bag": {"max_files": True}}, "bag.max_files", ["whole number >= 1"]),
    ({"bag": {"max_files": 0}}, "bag.max_files", ["whole number >= 1"]),
    ({"formats": {"at_risk": ["fmt/abc"]}}, "formats.at_risk[0]", ["fmt/N or x-fmt/N"]),
    ({"formats": {"at_risk": "fmt/1"}}, "formats.at_risk", ["must be a list", "PUID"]),
    ({"formats": {"unidentified": "ignore"}}, "formats.unidentified", ["must be one of warn, fail"]),
    ({"retention": {"mode": "forever"}}, "retention.mode", ["must be one of none, governance, compliance"]),
    ({"retention": {"mode": "compliance"}}, "retention.years", ["required", "1 to 100"]),
    ({"retention": {"mode": "governance", "years": 0}}, "retention.years", [">= 1"]),
    ({"retention": {"mode": "governance", "years": "ten"}}, "retention.years", ["whole number"]),
    ({"retention": {"years": 5}}, "retention.years", ["governance or compliance"]),
    ({"description": 5}, "description", ["must be text"]),
]


@pytest.mark.parametrize("change, key, allowed", BAD_POLICIES, ids=[c[1] + "-" + str(i) for i, c in enumerate(BAD_POLICIES)])
def test_policy_bad_values(tmp_path, change, key, allowed):
    body = {"name": "keep", "checksums": ["sha256"], "replicas": ["a", "b"]}
    body.update(change)
    path = write_policy(tmp_path, body)
    exc = config_error(load_policy, path)
    assert_names(exc, path, key, *allowed)
    assert exc.path == str(path) and exc.key == key


@pytest.mark.parametrize("missing", ["name", "checksums", "replicas"])
def test_policy_missing_required(tmp_path, missing):
    body = {"name": "keep", "checksums": ["sha256"], "replicas": ["a"]}
    del body[missing]
    path = write_policy(tmp_path, body)
    assert_names(config_error(load_policy, path), path, missing, "required", "allowed keys here")


def test_policy_collects_every_problem(tmp_path):
    path = write_policy(tmp_path, {"name": "keep", "checksums": ["crc32"], "replicas": ["a"],
                                   "fixity": {"deep_every": "soon"}, "bag": {"max_files": -1}, "colour": 1})
    exc = config_error(load_policy, path)
    keys = [issue.key for issue in exc.issues]
    assert keys == ["colour", "checksums[0]", "fixity.deep_every", "bag.max_files"]
    for key in keys:
        assert f"{path}: {key}: " in str(exc)
    assert "and 3 more problems" in str(exc)


@pytest.mark.parametrize("text, fragment", [
    ("", "is empty"),
    ("# only a comment\n", "is empty"),
    ("name: keep\nchecksums: [sha256\nreplicas: [a]\n", "YAML syntax error at line 3"),
    ("name: keep\n\tchecksums: [sha256]\n", "YAML syntax error at line 2"),
    ("name: keep\nchecksums: [sha256]\nreplicas: [a]\nname: keep\n", "written twice (first on line 1)"),
    ("- name: keep\n", "must be a policy"),
    ("just text\n", "must be a policy"),
])
def test_policy_whole_file_problems(tmp_path, text, fragment):
    path = write_policy(tmp_path, text)
    exc = config_error(load_policy, path)
    assert str(exc).startswith(f"{path}: ")
    assert fragment in str(exc)


def test_duplicate_key_error_gives_its_line(tmp_path):
    path = write_policy(tmp_path, "name: keep\nchecksums: [sha256]\nreplicas: [a]\nreplicas: [b]\n")
    assert "line 4" in str(config_error(load_policy, path))


def test_policy_not_utf8_or_missing(tmp_path):
    path = tmp_path / "keep.yaml"
    path.write_bytes(b"name: k\xffeep\n")
    assert "not UTF-8" in str(config_error(load_policy, path))
    missing = tmp_path / "nope.yaml"
    exc = config_error(load_policy, missing)
    assert str(missing) in str(exc) and "does not exist" in str(exc)


# ---------------------------------------------------------------------------------- config


def test_config_loads_and_resolves_relative_paths(tmp_path, monkeypatch):
    config_file = make_archive(tmp_path / "conf")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_config(os.path.relpath(config_file, elsewhere))
    base = tmp_path / "conf"
    assert config.path == config_file and config.base_dir == base
    assert config.catalog == str(base / "archive" / "catalog")
    assert config.staging == base / "archive" / "staging"
    assert config.policies_dir == base / "policies"
    assert config.storage["site-a"].root == base / "archive" / "replicas" / "site-a"
    assert config.storage["site-a"].type == "filesystem" and config.storage["site-a"].site == "beijing"
    s3 = config.storage["s3-east"]
    assert s3.root is None and s3.type == "s3"
    assert s3.options["bucket"] == "strongroom" and s3.options["endpoint"] == "http://127.0.0.1:8333"
    assert s3.options["prefix"] == "preservation" and s3.options["addressing_style"] == "auto"
    assert s3.options["verify_tls"] is True and s3.options["object_lock"] is False
    assert dict(s3.options["credentials"]) == {"access_key_env": "S3_EAST_KEY", "secret_key_env": "S3_EAST_SECRET"}
    assert list(config.policies) == ["keep"]
    assert config.policy("keep").replicas == ("site-a", "site-b", "s3-east")


def test_config_absolute_paths_and_s3_catalog(tmp_path):
    data = copy.deepcopy(GOOD_CONFIG)
    data["catalog"] = "s3://strongroom-catalog/cat/"
    data["staging"] = str(tmp_path / "stage-abs")
    data["storage"]["s3-east"].update({"multipart_threshold": "128MiB", "multipart_chunksize": "8MiB",
                                       "prefix": "/a/b/", "addressing_style": "path", "object_lock": True})
    config = load_config(make_archive(tmp_path / "conf", data))
    assert config.catalog == "s3://strongroom-catalog/cat" and config.catalog_is_s3
    assert config.staging == tmp_path / "stage-abs"
    opts = config.storage["s3-east"].options
    assert opts["multipart_threshold"] == 128 * 2**20 and opts["multipart_chunksize"] == 8 * 2**20
    assert opts["prefix"] == "a/b" and opts["addressing_style"] == "path" and opts["object_lock"] is True


def test_s3_tuning_keys_and_catalog_access(tmp_path):
    data = copy.deepcopy(GOOD_CONFIG)
    data["catalog"] = "s3://strongroom/catalog"
    data["storage"]["s3-east"].update({"retry_mode": "adaptive", "max_attempts": 8, "connect_timeout": "5s",
                                       "read_timeout": "2min", "concurrency": 32})
    config = load_config(make_archive(tmp_path / "conf", data))
    opts = config.storage["s3-east"].options
    assert (opts["retry_mode"], opts["max_attempts"], opts["connect_timeout"], opts["read_timeout"],
            opts["concurrency"]) == ("adaptive", 8, 5.0, 120.0, 32)
    # the catalog's bucket is s3-east's: its endpoint and credentials reach it
    assert config.catalog_access == "s3-east" and config.catalog_target is config.storage["s3-east"]
    from storage_adapters.s3 import S3Adapter

    adapter = S3Adapter.from_target(config.storage["s3-east"], environ={"S3_EAST_KEY": "k", "S3_EAST_SECRET": "s"})
    assert (adapter.retry_mode, adapter.max_attempts, adapter.connect_timeout, adapter.read_timeout,
            adapter.concurrency) == ("adaptive", 8, 5.0, 120.0, 32)

    # another bucket: the AWS defaults, unless catalog_access names the target that reaches it
    data["catalog"] = "s3://elsewhere/catalog"
    assert load_config(make_archive(tmp_path / "conf2", data)).catalog_access is None
    data["catalog_access"] = "s3-east"
    assert load_config(make_archive(tmp_path / "conf3", data)).catalog_access == "s3-east"


def test_catalog_access_is_needed_when_targets_on_its_bucket_disagree(tmp_path):
    data = copy.deepcopy(GOOD_CONFIG)
    data["catalog"] = "s3://strongroom/catalog"
    data["storage"]["s3-west"] = dict(data["storage"]["s3-east"], endpoint="http://127.0.0.2:8333",
                                      prefix="west", site="chengdu")
    config_file = make_archive(tmp_path / "conf", data)
    exc = config_error(load_config, config_file)
    assert_names(exc, config_file, "catalog_access", "is needed", "s3-east, s3-west")
    data["catalog_access"] = "s3-west"
    assert load_config(make_archive(tmp_path / "conf2", data)).catalog_access == "s3-west"


def test_ca_bundle_is_relative_to_config(tmp_path):
    data = copy.deepcopy(GOOD_CONFIG)
    data["storage"]["s3-east"]["ca_bundle"] = "certs/ca.pem"
    config_file = make_archive(tmp_path / "conf", data)
    exc = config_error(load_config, config_file)
    assert_names(exc, config_file, "storage.s3-east.ca_bundle", "does not exist", "PEM")
    (tmp_path / "conf" / "certs").mkdir()
    (tmp_path / "conf" / "certs" / "ca.pem").write_text("x")
    assert load_config(config_file).storage["s3-east"].options["ca_bundle"] == str(tmp_path / "conf" / "certs" / "ca.pem")


def _s3(**changes):
    def change(data):
        data["storage"]["s3-east"].update(changes)
    return change


def _set(path, value):
    def change(data):
        node = data
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = value
    return change


def _drop(path):
    def change(data):
        node = data
        for part in path[:-1]:
            node = node[part]
        del node[path[-1]]
    return change


BAD_CONFIGS = [
    (_set(["catalogue"], "./x"), "catalogue", ["unknown key", "did you mean 'catalog'", "catalog, catalog_access, staging, policies, storage"]),
    (_drop(["storage"]), "storage", ["required"]),
    (_set(["storage"], {}), "storage", ["must be a mapping of storage target names", "an empty mapping"]),
    (_set(["storage"], ["site-a"]), "storage", ["must be a mapping of storage target names"]),
    (_set(["catalog"], "ftp://host/x"), "catalog", ["a folder path or s3://bucket/prefix"]),
    (_set(["catalog"], "s3://ab/x"), "catalog", ["3-63 characters"]),
    (_set(["staging"], 5), "staging", ["must be a folder path"]),
    (_set(["storage", "site-a", "type"], "tape"), "storage.site-a.type", ["must be one of filesystem, s3"]),
    (_drop(["storage", "site-a", "type"]), "storage.site-a.type", ["required", "filesystem, s3"]),
    (_drop(["storage", "site-a", "root"]), "storage.site-a.root", ["required", "type, root, site, fixity"]),
    (_drop(["storage", "site-a", "site"]), "storage.site-a.site", ["required"]),
    (_set(["storage", "site-a", "site"], 7), "storage.site-a.site", ["a site name"]),
    (_set(["storage", "site-a", "bucket"], "x"), "storage.site-a.bucket", ["unknown key", "type, root, site, fixity"]),
    (_set(["storage", "bad name"], {"type": "filesystem", "root": "x", "site": "y"}), "storage.bad name",
     ["not a valid storage target name", "letters, digits"]),
    (_set(["storage", "site-a", "fixity"], {"deep_every": "often"}), "storage.site-a.fixity.deep_every", ["90d"]),
    (_set(["storage", "site-a", "fixity"], {"deep": "9d"}), "storage.site-a.fixity.deep",
     ["did you mean 'deep_every'", "deep_every, quick_every"]),
    (_set(["storage", "site-a", "fixity"], {}), "storage.site-a.fixity", ["deep_every and/or quick_every"]),
    (_s3(endpoint="ftp://127.0.0.1:8333"), "storage.s3-east.endpoint", ["http:// or https:// URL"]),
    (_s3(endpoint="http://127.0.0.1:99999"), "storage.s3-east.endpoint", ["port"]),
    (_s3(bucket="ab"), "storage.s3-east.bucket", ["3-63 characters"]),
    (_s3(bucket="Has_Caps"), "storage.s3-east.bucket", ["lower-case"]),
    (_drop(["storage", "s3-east", "bucket"]), "storage.s3-east.bucket", ["required"]),
    (_s3(addressing_style="sideways"), "storage.s3-east.addressing_style", ["must be one of path, virtual, auto"]),
    (_s3(storage_class="glacier"), "storage.s3-east.storage_class", ["STANDARD"]),
    (_s3(multipart_chunksize="1MB"), "storage.s3-east.multipart_chunksize", ["at least 5MiB and at most 5GiB"]),
    (_s3(multipart_threshold="big"), "storage.s3-east.multipart_threshold", ["500GB"]),
    (_s3(verify_tls="no"), "storage.s3-east.verify_tls", ["true or false"]),
    (_s3(object_lock=1), "storage.s3-east.object_lock", ["true or false"]),
    (_s3(prefix="a/../b"), "storage.s3-east.prefix", ["'..'"]),
    (_s3(region="us east"), "storage.s3-east.region", ["us-east-1"]),
    (_s3(root="/x"), "storage.s3-east.root", ["unknown key", "bucket"]),
    (_s3(credentials={"profile": "p", "access_key_env": "A"}), "storage.s3-east.credentials", ["not both"]),
    (_s3(credentials={"access_key_env": "A"}), "storage.s3-east.credentials.secret_key_env", ["required"]),
    (_s3(credentials="S3_EAST_KEY"), "storage.s3-east.credentials", ["access_key_env: NAME", "profile: NAME"]),
    (_s3(retry_mode="forever"), "storage.s3-east.retry_mode", ["must be one of standard, adaptive"]),
    (_s3(max_attempts=0), "storage.s3-east.max_attempts", [">= 1 and <= 20"]),
    (_s3(connect_timeout=10), "storage.s3-east.connect_timeout", ["no unit"]),
    (_s3(read_timeout="soon"), "storage.s3-east.read_timeout", ["12h"]),
    (_s3(concurrency=1000), "storage.s3-east.concurrency", ["<= 256"]),
    (_set(["catalog_access"], "s3-east"), "catalog_access", ["only applies to a catalog in S3"]),
    (lambda d: d.update(catalog="s3://cat-bucket/c", catalog_access="s3-nowhere"), "catalog_access",
     ["unknown storage target 's3-nowhere'", "s3-east"]),
    (lambda d: d.update(catalog="s3://cat-bucket/c", catalog_access="site-a"), "catalog_access",
     ["of type filesystem", "S3 target"]),
    (_set(["catalog"], "s3://strongroom/preservation/catalog"), "catalog",
     ["overlaps storage.s3-east", "'preservation'", "its own"]),
    (_set(["catalog"], "s3://strongroom"), "catalog", ["overlaps storage.s3-east"]),
]


@pytest.mark.parametrize("change, key, allowed", BAD_CONFIGS, ids=[c[1] + "-" + str(i) for i, c in enumerate(BAD_CONFIGS)])
def test_config_bad_values(tmp_path, change, key, allowed):
    data = copy.deepcopy(GOOD_CONFIG)
    change(data)
    policy = dict(GOOD_POLICY, replicas=["site-b"])  # survives every change above
    config_file = make_archive(tmp_path / "conf", data, {"keep.yaml": policy})
    exc = config_error(load_config, config_file)
    assert_names(exc, config_file, key, *allowed)


def test_config_whole_file_problems(tmp_path):
    missing = tmp_path / "nowhere" / "strongroom.yaml"
    exc = config_error(load_config, missing)
    assert str(exc).startswith(str(missing)) and "does not exist" in str(exc)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert "is empty" in str(config_error(load_config, empty)) and str(empty) in str(config_error(load_config, empty))
    broken = tmp_path / "broken.yaml"
    broken.write_text("catalog: ./c\nstorage:\n  a: {type: filesystem, root: x, site: y\n  b: 1\n")
    exc = config_error(load_config, broken)
    assert str(exc).startswith(f"{broken}: YAML syntax error at line ")
    assert "line 4" in str(exc)
    assert "is a folder" in str(config_error(load_config, tmp_path))


def test_policies_folder_must_exist(tmp_path):
    data = copy.deepcopy(GOOD_CONFIG)
    data["policies"] = "./no-such-folder"
    config_file = make_archive(tmp_path / "conf", data)
    assert_names(config_error(load_config, config_file), config_file, "policies",
                 str(tmp_path / "conf" / "no-such-folder"), "does not exist", "strongroom init")


def test_unknown_replica_names_policy_file_and_known_targets(tmp_path):
    config_file = make_archive(tmp_path / "conf", None,
                               {"keep.yaml": dict(GOOD_POLICY, replicas=["site-a", "site-c"])})
    exc = policy_error(config_file)
    assert_names(exc, tmp_path / "conf" / "policies" / "keep.yaml", "replicas[1]",
                 "unknown storage target 'site-c'", "s3-east, site-a, site-b", str(config_file))


def test_distinct_sites_enforced_by_default(tmp_path):
    data = copy.deepcopy(GOOD_CONFIG)
    data["storage"]["site-b"]["site"] = "beijing"
    config_file = make_archive(tmp_path / "conf", data)
    exc = policy_error(config_file)
    assert_names(exc, tmp_path / "conf" / "policies" / "keep.yaml", "replicas[1]",
                 "'site-b' is on site 'beijing'", "'site-a'", "distinct_sites")
    # Allowed when the policy says so explicitly.
    (tmp_path / "conf" / "policies" / "keep.yaml").write_text(
        yaml.safe_dump(dict(GOOD_POLICY, distinct_sites=False)))
    assert load_config(config_file).policy("keep").distinct_sites is False


def test_duplicate_policy_names(tmp_path):
    config_file = make_archive(tmp_path / "conf", None, {"keep.yaml": GOOD_POLICY, "keep.yml": GOOD_POLICY})
    config = load_config(config_file)
    assert config.policy("keep").source == tmp_path / "conf" / "policies" / "keep.yaml"
    exc = config.broken_policies["keep.yml"].error()
    assert_names(exc, tmp_path / "conf" / "policies" / "keep.yml", "name", "already used",
                 str(tmp_path / "conf" / "policies" / "keep.yaml"))


def test_policy_file_name_must_match_in_folder(tmp_path):
    config_file = make_archive(tmp_path / "conf", None, {"other.yaml": GOOD_POLICY})
    assert_names(policy_error(config_file, "other"), tmp_path / "conf" / "policies" / "other.yaml", "name",
                 "does not match the file name", "keep.yaml")


def test_problems_across_config_and_policies_are_reported_together(tmp_path):
    data = copy.deepcopy(GOOD_CONFIG)
    data["storage"]["site-a"]["site"] = ""
    config_file = make_archive(tmp_path / "conf", data, {
        "keep.yaml": dict(GOOD_POLICY, checksums=["sha3"]),
        "broken.yaml": "name: broken\nchecksums: [\n",
    })
    exc = config_error(load_config, config_file)
    text = str(exc)
    assert f"{config_file}: storage.site-a.site: " in text
    assert f"{tmp_path / 'conf' / 'policies' / 'keep.yaml'}: checksums[0]: " in text
    assert f"{tmp_path / 'conf' / 'policies' / 'broken.yaml'}: YAML syntax error" in text


def test_replica_folders_must_not_overlap(tmp_path):
    data = copy.deepcopy(GOOD_CONFIG)
    data["storage"]["site-b"]["root"] = "./archive/replicas/site-a/inner"
    config_file = make_archive(tmp_path / "conf", data)
    assert_names(config_error(load_config, config_file), config_file, "storage.site-b.root",
                 "overlaps storage.site-a.root", "separate folders")
    data = copy.deepcopy(GOOD_CONFIG)
    data["staging"] = "./archive/replicas/site-a"
    config_file = make_archive(tmp_path / "conf2", data)
    assert_names(config_error(load_config, config_file), config_file, "staging", "overlaps")


def test_replica_root_linked_into_another_is_refused(tmp_path):
    """Roots compared after resolving links: a root that is a symlink to (or into) another target's
    root is one copy, refused naming the config file, the key and both targets."""
    data = copy.deepcopy(GOOD_CONFIG)
    elsewhere = tmp_path / "conf" / "archive" / "replicas" / "site-a"
    elsewhere.mkdir(parents=True)
    data["storage"]["site-b"]["root"] = "./b-link"
    config_file = make_archive(tmp_path / "conf", data)
    (tmp_path / "conf" / "b-link").symlink_to(elsewhere)
    exc = config_error(load_config, config_file)
    assert exc.exit_code == 2
    assert_names(exc, config_file, "storage.site-b.root", "overlaps storage.site-a.root", "resolves to")
    (tmp_path / "conf" / "b-link").unlink()
    (tmp_path / "conf" / "b-link").symlink_to(elsewhere / "inner")
    assert_names(config_error(load_config, config_file), config_file, "storage.site-b.root",
                 "overlaps storage.site-a.root")


def test_targets_on_one_file_system_are_one_location(tmp_path, capsys, monkeypatch):
    """Two filesystem targets on one device (GOOD_CONFIG's two folders, both under tmp_path) are
    flagged on stderr, naming both, and share one location; on two devices they are two."""
    import policies.locations as pc

    config_file = make_archive(tmp_path / "conf", copy.deepcopy(GOOD_CONFIG))
    capsys.readouterr()
    config = load_config(config_file)
    err = capsys.readouterr().err
    assert "site-a and site-b are on one file system: they count as one location" in err
    assert str(config_file) in err
    assert config.location_of("site-a") == config.location_of("site-b") == "beijing + wuhan"
    assert config.location_of("s3-east") == "shanghai"
    assert any("site-a and site-b" in w for w in config.warnings)
    load_config(config_file)
    assert capsys.readouterr().err == ""           # once per process, not at every load

    real = pc._device
    monkeypatch.setattr(pc, "_device", lambda p: hash(str(p)) if "site-b" in str(p) else real(p))
    config = load_config(config_file)
    assert config.location_of("site-a") != config.location_of("site-b") and config.warnings == ()
    assert capsys.readouterr().err == ""
    # A root that does not exist yet counts by its nearest existing parent.
    assert real(tmp_path / "not" / "yet" / "there") == os.stat(tmp_path).st_dev


def test_s3_targets_in_the_same_place_are_refused(tmp_path):
    data = copy.deepcopy(GOOD_CONFIG)
    data["storage"]["s3-west"] = dict(data["storage"]["s3-east"], prefix="preservation/west", site="chengdu")
    config_file = make_archive(tmp_path / "conf", data)
    assert_names(config_error(load_config, config_file), config_file, "storage.s3-west.prefix",
                 "overlaps storage.s3-east", "separate prefixes")
    data["storage"]["s3-west"]["prefix"] = "west"
    assert "s3-west" in load_config(make_archive(tmp_path / "conf2", data)).storage


def test_target_cadence_override(tmp_path):
    data = copy.deepcopy(GOOD_CONFIG)
    data["storage"]["s3-east"]["fixity"] = {"deep_every": "180d"}
    config = load_config(make_archive(tmp_path / "conf", data))
    policy = config.policy("keep")
    cold = config.cadence_for(policy, "s3-east")
    assert cold.deep_every == datetime.timedelta(days=180) and cold.quick_every == policy.fixity.quick_every
    assert config.cadence_for(policy, "site-a") == policy.fixity
    assert [t.name for t in config.replicas_for(policy)] == ["site-a", "site-b", "s3-east"]
    # An override that makes quick checks rarer than deep ones is refused.
    data["storage"]["s3-east"]["fixity"] = {"quick_every": "100d"}
    config_file = make_archive(tmp_path / "conf2", data)
    assert_names(policy_error(config_file), config_file, "storage.s3-east.fixity",
                 "quick_every must not be longer than deep_every")


def test_policy_lookup_and_type_mapping(tmp_path):
    policies = {
        "at-risk-purchased.yaml": dict(GOOD_POLICY, name="at-risk-purchased"),
        "self-built.yaml": dict(GOOD_POLICY, name="self-built", checksums=["sha512"]),
        "special.yaml": dict(GOOD_POLICY, name="special"),
    }
    config = load_config(make_archive(tmp_path / "conf", None, policies))
    assert config.policy_for_type("purchased", None).name == "at-risk-purchased"
    assert config.policy_for_type("self-built", None).name == "self-built"
    assert config.policy_for_type("purchased", "special").name == "special"
    exc = config_error(config.policy, "nope")
    assert "'nope'" in str(exc) and "at-risk-purchased, self-built, special" in str(exc)
    with pytest.raises(UsageError) as info:
        config.policy_for_type("borrowed", None)
    assert "purchased, self-built" in str(info.value) and info.value.exit_code == 2


# ---------------------------------------------------------------------------------- secrets

SECRET = "wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY"


@pytest.mark.parametrize("change, key", [
    (_s3(credentials={"access_key": "AKIAEXAMPLE", "secret_key": SECRET}), "storage.s3-east.credentials.secret_key"),
    (_s3(aws_secret_access_key=SECRET), "storage.s3-east.aws_secret_access_key"),
    (_set(["aws_secret_access_key"], SECRET), "aws_secret_access_key"),
    (_set(["storage", "site-a", "password"], SECRET), "storage.site-a.password"),
    (_set(["storage", "site-a", "type"], "tape"), None),  # type error path still scans for secrets
])
def test_literal_secrets_refused_without_echo(tmp_path, change, key):
    data = copy.deepcopy(GOOD_CONFIG)
    change(data)
    if key is None:
        data["storage"]["site-a"]["secret_key"] = SECRET
        key = "storage.site-a.secret_key"
    config_file = make_archive(tmp_path / "conf", data, {"keep.yaml": dict(GOOD_POLICY, replicas=["site-b"])})
    exc = config_error(load_config, config_file)
    assert_names(exc, config_file, key, "a literal secret is not allowed", "access_key_env: NAME", "profile: NAME")
    assert SECRET not in str(exc) and SECRET not in repr(exc.issues)


@pytest.mark.parametrize("credentials", [
    {"access_key_env": SECRET + "/x", "secret_key_env": "OK"},
    {"access_key_env": "OK", "secret_key_env": SECRET + "+x"},
    {"profile": SECRET + " x"},
])
def test_bad_credential_reference_is_not_echoed(tmp_path, credentials):
    data = copy.deepcopy(GOOD_CONFIG)
    data["storage"]["s3-east"]["credentials"] = credentials
    config_file = make_archive(tmp_path / "conf", data)
    exc = config_error(load_config, config_file)
    assert f"{config_file}: storage.s3-east.credentials." in str(exc)
    assert SECRET not in str(exc)


def test_secret_in_endpoint_or_syntax_error_not_echoed(tmp_path):
    data = copy.deepcopy(GOOD_CONFIG)
    data["storage"]["s3-east"]["endpoint"] = f"http://AKIA:{SECRET}@127.0.0.1:8333"
    config_file = make_archive(tmp_path / "conf", data)
    exc = config_error(load_config, config_file)
    assert_names(exc, config_file, "storage.s3-east.endpoint", "user name or password")
    assert SECRET not in str(exc)
    broken = tmp_path / "broken.yaml"
    broken.write_text(f"storage:\n  s3: {{secret_key: {SECRET}: x}}\n")
    exc = config_error(load_config, broken)
    assert "YAML syntax error at line 2" in str(exc) and SECRET not in str(exc)


def test_env_referenced_credentials_resolve(tmp_path):
    config = load_config(make_archive(tmp_path / "conf"))
    target = config.storage["s3-east"]
    creds = resolve_credentials(target, {"S3_EAST_KEY": "AKIAEXAMPLE", "S3_EAST_SECRET": SECRET})
    assert creds == Credentials(access_key="AKIAEXAMPLE", secret_key=SECRET)
    assert SECRET not in repr(creds) and "AKIAEXAMPLE" not in repr(creds)
    exc = config_error(resolve_credentials, target, {"S3_EAST_KEY": "AKIAEXAMPLE"})
    assert_names(exc, config.path, "storage.s3-east.credentials.secret_key_env", "S3_EAST_SECRET", "is not set")
    assert "AKIAEXAMPLE" not in str(exc)
    assert resolve_credentials(config.storage["site-a"], {}) is None


def test_profile_credentials(tmp_path):
    data = copy.deepcopy(GOOD_CONFIG)
    data["storage"]["s3-east"]["credentials"] = {"profile": "archive"}
    config = load_config(make_archive(tmp_path / "conf", data))
    assert resolve_credentials(config.storage["s3-east"], {}) == Credentials(profile="archive")
