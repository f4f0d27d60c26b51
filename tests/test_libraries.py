"""The library registry (`libraries:` in strongroom.yaml, issue 12 item 1) and case-only code
collisions (issue 18 item 6).

* A registry is read strictly: every bad entry names the file, the dotted key and what is
  allowed; receiving areas are s3 (credentials as env-var names only) or a folder apart from
  the replicas; codes follow the --library rules and are unique ignoring case.
* With a registry, a deposit for an unlisted code exits 2 naming the code and the config file.
* `pku` beside a catalogued `PKU` (and `Books` beside `books` in one library) is refused naming
  the existing code, with or without a registry.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from policies.config import load_config
from strongroom.errors import ConfigError

POLICY = {"name": "self-built", "checksums": ["sha256"], "replicas": ["site-a", "site-b"], "virus_check": "off"}
CONFIG = {
    "catalog": "./catalog",
    "staging": "./staging",
    "policies": "./policies",
    "storage": {
        "site-a": {"type": "filesystem", "root": "./replicas/a", "site": "beijing"},
        "site-b": {"type": "filesystem", "root": "./replicas/b", "site": "wuhan"},
        "s3-pres": {"type": "s3", "endpoint": "http://127.0.0.1:8333", "bucket": "preservation", "site": "shanghai",
                    "credentials": {"access_key_env": "SVC_KEY", "secret_key_env": "SVC_SECRET"}},
    },
    "libraries": {
        "PKU": {"name": {"en": "Peking University Library", "zh": "北京大学图书馆"},
                "contact": "preservation@lib.pku.edu.cn",
                "receiving": {"type": "s3", "endpoint": "http://127.0.0.1:8333", "bucket": "receiving-pku",
                              "prefix": "/uploads/", "region": "us-east-1", "publish_reports": True,
                              "credentials": {"access_key_env": "PKU_RECV_KEY", "secret_key_env": "PKU_RECV_SECRET"}}},
        "WHU": {"name": {"en": "Wuhan University Library", "zh": "武汉大学图书馆"},
                "receiving": {"type": "filesystem", "root": "./receiving/whu", "keep_uploads": True}},
        "THU": {"name": {"en": "Tsinghua University Library", "zh": "清华大学图书馆"}},
    },
}


def write(root: Path, config: dict, policies=None) -> Path:
    (root / "policies").mkdir(parents=True, exist_ok=True)
    for name in ("replicas/a", "replicas/b"):
        (root / name).mkdir(parents=True, exist_ok=True)
    (root / "strongroom.yaml").write_text(yaml.safe_dump(config, allow_unicode=True, sort_keys=False), "utf-8")
    for body in policies or [POLICY]:
        (root / "policies" / f"{body['name']}.yaml").write_text(yaml.safe_dump(body, sort_keys=False), "utf-8")
    return root / "strongroom.yaml"


def problems_of(config_file: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(config_file)
    return str(info.value)


def with_change(change) -> dict:
    data = copy.deepcopy(CONFIG)
    change(data)
    return data


def test_registry_is_read_into_libraries(tmp_path):
    from policies.libraries import Library, ReceivingSpec

    config = load_config(write(tmp_path, CONFIG))
    assert sorted(config.libraries) == ["PKU", "THU", "WHU"]
    pku = config.libraries["PKU"]
    assert isinstance(pku, Library) and pku.name == {"en": "Peking University Library", "zh": "北京大学图书馆"}
    assert pku.contact == "preservation@lib.pku.edu.cn"
    assert pku.receiving == ReceivingSpec(type="s3", endpoint="http://127.0.0.1:8333", bucket="receiving-pku",
                                          prefix="uploads", region="us-east-1", publish_reports=True,
                                          credentials={"access_key_env": "PKU_RECV_KEY",
                                                       "secret_key_env": "PKU_RECV_SECRET"})
    whu = config.libraries["WHU"].receiving
    assert whu.type == "filesystem" and whu.root == tmp_path / "receiving" / "whu" and whu.keep_uploads
    assert not whu.publish_reports and config.libraries["THU"].receiving is None


def test_no_section_means_no_registry(tmp_path):
    data = with_change(lambda d: d.pop("libraries"))
    assert load_config(write(tmp_path, data)).libraries is None


@pytest.mark.parametrize("change, key, fragments", [
    (lambda d: d["libraries"]["PKU"].update(nmae="x"), "libraries.PKU.nmae", ["unknown key", "'name'"]),
    (lambda d: d["libraries"]["THU"].pop("name"), "libraries.THU.name", ["is required"]),
    (lambda d: d["libraries"]["THU"]["name"].pop("zh"), "libraries.THU.name.zh", ["is required"]),
    (lambda d: d["libraries"].update({"P K U": {"name": {"en": "x", "zh": "y"}}}), "libraries.P K U",
     ["not a valid code", "1-64 ASCII letters"]),
    (lambda d: d["libraries"].update({"pku": {"name": {"en": "x", "zh": "y"}}}), "libraries.pku",
     ["differs only in case from library 'PKU'"]),
    (lambda d: d.update(libraries=[]), "libraries", ["must be a mapping of library codes"]),
    (lambda d: d["libraries"]["THU"]["name"].update(en="Tsinghua\nLibrary"), "libraries.THU.name.en",
     ["one line of text without control characters"]),
    (lambda d: d["libraries"]["WHU"]["receiving"].update(type="ftp"), "libraries.WHU.receiving.type",
     ["must be one of s3, filesystem"]),
    (lambda d: d["libraries"]["WHU"]["receiving"].update(bucket="x"), "libraries.WHU.receiving.bucket",
     ["unknown key", "allowed keys here: type, keep_uploads, publish_reports, root"]),
    (lambda d: d["libraries"]["WHU"]["receiving"].update(keep_uploads="yes"),
     "libraries.WHU.receiving.keep_uploads", ["must be true or false"]),
    (lambda d: d["libraries"]["PKU"]["receiving"].pop("credentials"), "libraries.PKU.receiving.credentials",
     ["is required"]),
    (lambda d: d["libraries"]["PKU"]["receiving"].update(credentials={"profile": "pku"}),
     "libraries.PKU.receiving.credentials.profile", ["environment variables only"]),
    (lambda d: d["libraries"]["PKU"]["receiving"]["credentials"].update(secret_key_env="hunter2 secret"),
     "libraries.PKU.receiving.credentials.secret_key_env", ["NAME of an environment variable"]),
    (lambda d: d["libraries"]["PKU"]["receiving"].update(secret_key="AKIAxyz"), "libraries.PKU.receiving.secret_key",
     ["a literal secret is not allowed"]),
    (lambda d: d["libraries"]["PKU"]["receiving"].update(bucket="preservation", prefix=""),
     "libraries.PKU.receiving.bucket", ["overlaps storage.s3-pres"]),
    (lambda d: d["libraries"]["THU"].update(receiving=copy.deepcopy(d["libraries"]["PKU"]["receiving"])),
     "libraries.THU.receiving.bucket", ["overlaps the receiving area of library PKU"]),
    (lambda d: d["libraries"]["WHU"]["receiving"].update(root="./replicas/a/whu"),
     "libraries.WHU.receiving.root", ["overlaps storage.site-a.root"]),
    (lambda d: d["storage"]["site-a"].update(libraries=["PKU", "pku"]), "storage.site-a.libraries[1]",
     ["'pku' is not listed under libraries:", "spells it 'PKU'"]),
    (lambda d: d["storage"]["site-a"].update(libraries="PKU"), "storage.site-a.libraries",
     ["must be a list of library codes"]),
])
def test_registry_errors_name_file_key_and_allowed_values(tmp_path, change, key, fragments):
    config_file = write(tmp_path, with_change(change))
    text = problems_of(config_file)
    assert f"{config_file}: {key}: " in text, text
    for fragment in fragments:
        assert fragment in text, (fragment, text)
    assert "hunter2" not in text and "AKIAxyz" not in text


def test_policy_bound_to_an_unlisted_code_is_a_broken_policy(tmp_path):
    config_file = write(tmp_path, CONFIG, [dict(POLICY, libraries=["PKU", "XYZ"])])
    config = load_config(config_file)
    assert "self-built" not in config.policies
    with pytest.raises(ConfigError) as info:
        config.policy("self-built")
    assert f"{tmp_path / 'policies' / 'self-built.yaml'}: libraries[1]: library 'XYZ' is not listed" in str(info.value)


# --------------------------------------------------------------------------------------------
# Deposits through the CLI


def cli(capsys, *argv) -> tuple:
    from pipelines.cli import main

    capsys.readouterr()
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def source(tmp_path: Path, name: str = "src") -> Path:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "a.txt").write_text(f"{name}: 善本\n", "utf-8")
    return folder


def deposit(capsys, config_file, src, library, collection="books"):
    return cli(capsys, "--config", config_file, "--json", "deposit", src, "--library", library,
               "--collection", collection, "--type", "self-built")


def bags_of(config_file) -> list:
    from catalog.access import open_catalog

    return open_catalog(load_config(config_file)).bags().column("bag_id").to_pylist()


def test_unlisted_library_is_refused_naming_code_and_file(tmp_path, capsys):
    config_file = write(tmp_path, CONFIG)
    code, out, err = deposit(capsys, config_file, source(tmp_path), "XYZ")
    assert code == 2, out + err
    error = json.loads(out)["error"]
    assert "'XYZ' is not listed under libraries:" in error and str(config_file) in error, error
    assert bags_of(config_file) == [] and not list((tmp_path / "replicas").rglob("*.txt"))
    code, out, err = deposit(capsys, config_file, source(tmp_path, "src2"), "pku")
    assert code == 2 and "differs only in case from the listed library 'PKU'" in json.loads(out)["error"]
    code, out, err = deposit(capsys, config_file, source(tmp_path, "src3"), "THU")
    assert code == 0, out + err
    assert [b.split("/")[0] for b in bags_of(config_file)] == ["THU"]


def test_codes_differing_only_in_case_from_catalogued_ones_are_refused(tmp_path, capsys):
    config_file = write(tmp_path, with_change(lambda d: d.pop("libraries")))
    assert deposit(capsys, config_file, source(tmp_path), "PKU", "books")[0] == 0
    code, out, err = deposit(capsys, config_file, source(tmp_path, "src2"), "pku", "books")
    assert code == 2, out + err
    assert "'pku' differs only in case from 'PKU'" in json.loads(out)["error"]
    code, out, err = deposit(capsys, config_file, source(tmp_path, "src3"), "PKU", "Books")
    assert code == 2, out + err
    assert "'Books' differs only in case from PKU/books" in json.loads(out)["error"]
    assert [b.rsplit("/", 1)[0] for b in bags_of(config_file)] == ["PKU/books"]
    # the same codes, spelt as catalogued, and another library's own "Books", are fine
    assert deposit(capsys, config_file, source(tmp_path, "src4"), "PKU", "books")[0] == 0
    assert deposit(capsys, config_file, source(tmp_path, "src5"), "WHU", "Books")[0] == 0


def test_a_bad_registry_is_a_config_error_on_the_command_line(tmp_path, capsys):
    config_file = write(tmp_path, with_change(lambda d: d["libraries"]["PKU"]["receiving"].update(type="ftp")))
    code, out, err = cli(capsys, "--config", config_file, "status")
    assert code == 2, out + err
    assert err.startswith(f"strongroom status: error: {config_file}: libraries.PKU.receiving.type: must be one of "
                          f"s3, filesystem; got 'ftp'"), err
    assert "Traceback" not in err
