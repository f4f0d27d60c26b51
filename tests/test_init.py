"""`strongroom init`: a working, commented config that load_config accepts, and no silent overwrites."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from pipelines.cli import main
from policies.config import load_config, write_default_config
from policies.model import load_policy


def test_init_writes_a_working_archive(tmp_path, capsys):
    target = tmp_path / "new" / "archive"  # does not exist yet
    assert main(["init", str(target)]) == 0
    out = capsys.readouterr().out
    config_file = target / "strongroom.yaml"
    for path in (config_file, target / "policies" / "at-risk-purchased.yaml", target / "policies" / "self-built.yaml"):
        assert path.is_file()
        assert str(path) in out
    config = load_config(config_file)
    assert config.catalog == str(target / "archive" / "catalog")
    assert config.staging == target / "archive" / "staging"
    assert config.policies_dir == target / "policies"
    fs = [t for t in config.storage.values() if t.type == "filesystem"]
    assert len(fs) == 2
    assert fs[0].root != fs[1].root and fs[0].site != fs[1].site
    for t in fs:
        assert t.root.is_dir() and target in t.root.parents
        assert str(t.root) in out
    assert Path(config.catalog).is_dir() and config.staging.is_dir()
    assert set(config.policies) == {"at-risk-purchased", "self-built"}
    purchased = config.policy_for_type("purchased", None)
    self_built = config.policy_for_type("self-built", None)
    assert purchased.name == "at-risk-purchased" and self_built.name == "self-built"
    for policy in (purchased, self_built):
        assert set(policy.replicas) == {t.name for t in fs}
        assert policy.distinct_sites is True
    # The policies are valid on their own too (name matches file name, etc.).
    assert load_policy(target / "policies" / "self-built.yaml") == self_built


def test_written_yaml_is_commented_and_s3_example_is_valid(tmp_path):
    config_file = write_default_config(tmp_path)
    text = config_file.read_text(encoding="utf-8")
    comment_lines = [line for line in text.splitlines() if line.lstrip().startswith("#")]
    assert len(comment_lines) > 20
    lines = text.splitlines()
    for key in ("catalog:", "staging:", "policies:", "storage:", "type:", "site:", "root:"):
        # The first use of each key has a comment on its line or just above it.
        index = next(i for i, line in enumerate(lines) if line.strip().startswith(key))
        assert "#" in lines[index] or lines[index - 1].lstrip().startswith("#"), key
    # The S3 example is present but commented out: uncommenting it gives a valid config.
    assert "s3-east" not in load_config(config_file).storage
    start = lines.index("  # s3-east:")
    uncommented = lines[:start] + [line.replace("# ", "", 1) for line in lines[start:]]
    config_file.write_text("\n".join(uncommented) + "\n", encoding="utf-8")
    config = load_config(config_file)
    s3 = config.storage["s3-east"]
    assert s3.type == "s3" and s3.options["bucket"] == "strongroom"
    assert dict(s3.options["credentials"]) == {"access_key_env": "S3_EAST_KEY", "secret_key_env": "S3_EAST_SECRET"}
    assert s3.site not in {t.site for t in config.storage.values() if t.name != "s3-east"}
    # The policies explain their keys too.
    for name in ("at-risk-purchased.yaml", "self-built.yaml"):
        policy_text = (tmp_path / "policies" / name).read_text(encoding="utf-8")
        assert "# " in policy_text and "deep_every" in policy_text
        assert yaml.safe_load(policy_text)["name"] == name[:-5]


def test_init_refuses_to_overwrite_without_force(tmp_path, capsys):
    assert main(["init", str(tmp_path)]) == 0
    config_file = tmp_path / "strongroom.yaml"
    edited = config_file.read_text(encoding="utf-8") + "# my edit\n"
    config_file.write_text(edited, encoding="utf-8")
    capsys.readouterr()
    assert main(["init", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert str(config_file) in err and "--force" in err
    assert config_file.read_text(encoding="utf-8") == edited
    assert main(["init", str(tmp_path), "--force"]) == 0
    assert "# my edit" not in config_file.read_text(encoding="utf-8")
    load_config(config_file)


def test_init_refuses_to_overwrite_an_edited_policy(tmp_path, capsys):
    policy = tmp_path / "policies" / "self-built.yaml"
    policy.parent.mkdir()
    policy.write_text("name: self-built\n", encoding="utf-8")
    assert main(["init", str(tmp_path)]) == 2
    assert str(policy) in capsys.readouterr().err
    assert policy.read_text(encoding="utf-8") == "name: self-built\n"
    assert not (tmp_path / "strongroom.yaml").exists()


def test_init_json_and_default_directory(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["--json", "init"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["config"] == str(tmp_path / "strongroom.yaml")
    assert sorted(payload["policies"]) == [str(tmp_path / "policies" / "at-risk-purchased.yaml"),
                                           str(tmp_path / "policies" / "self-built.yaml")]
    assert str(tmp_path / "archive" / "staging") in payload["folders_created"]
    assert payload["overwritten"] == []
    assert len({v["site"] for v in payload["storage"].values()}) == 2
    assert main(["--json", "init", "--force"]) == 0
    assert len(json.loads(capsys.readouterr().out)["overwritten"]) == 3


def test_init_into_a_file_is_an_input_error(tmp_path, capsys):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert main(["init", str(a_file)]) == 2
    assert str(a_file) in capsys.readouterr().err


def test_init_is_not_affected_by_a_broken_config(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("storage: [\n")
    assert main(["--config", str(bad), "init", str(tmp_path / "fresh")]) == 0
    load_config(tmp_path / "fresh" / "strongroom.yaml")


def test_broken_config_makes_the_cli_exit_2_naming_file_and_key(tmp_path, capsys):
    write_default_config(tmp_path)
    config_file = tmp_path / "strongroom.yaml"
    text = config_file.read_text(encoding="utf-8").replace("site: site-b", "site: site-a", 1)
    config_file.write_text(text, encoding="utf-8")
    source = tmp_path / "source"
    source.mkdir()
    (source / "a.txt").write_text("hello")
    code = main(["--config", str(config_file), "deposit", str(source), "--library", "L", "--collection", "C",
                 "--type", "purchased"])
    err = capsys.readouterr().err
    assert code == 2
    assert f"{tmp_path / 'policies' / 'at-risk-purchased.yaml'}: replicas[1]: " in err
    assert "distinct_sites" in err
    assert not any((tmp_path / "archive" / "staging").iterdir())
    # A config that does not exist at all is a config error too.
    missing = tmp_path / "missing.yaml"
    assert main(["--config", str(missing), "deposit", str(source), "--library", "L", "--collection", "C",
                 "--type", "purchased"]) == 2
    assert f"{missing}: config file does not exist" in capsys.readouterr().err


def test_default_layout_says_it_is_a_demo_not_two_sites(tmp_path, capsys):
    """Two folders on one disk are one location: the file, init's output and its JSON say so."""
    assert main(["init", str(tmp_path / "a")]) == 0
    captured = capsys.readouterr()
    assert "DEMO LAYOUT, not two sites" in captured.out and "one location" in captured.out
    assert "site-a and site-b are on one file system: they count as one location" in captured.err
    text = (tmp_path / "a" / "strongroom.yaml").read_text(encoding="utf-8")
    assert "# DEMO LAYOUT, NOT TWO SITES" in text and "ONE location" in text
    config = load_config(tmp_path / "a" / "strongroom.yaml")
    assert config.location_of("site-a") == config.location_of("site-b")
    assert main(["--json", "init", str(tmp_path / "b")]) == 0
    captured = capsys.readouterr()
    payload = json.loads(captured.out)               # the warning went to stderr, the JSON is intact
    assert payload["demo_layout"] is True and payload["locations"] == 1
    assert payload["storage"]["site-a"]["location"] == payload["storage"]["site-b"]["location"]
    assert any("one file system" in w for w in payload["warnings"])
