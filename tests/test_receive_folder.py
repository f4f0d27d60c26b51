"""`strongroom receive` for an on-site library whose receiving area is a folder: the batch is
preserved and answered, links and special files planted in the upload are refused (never
followed), markers are never replaced, and a library not in the registry is a usage error."""

from __future__ import annotations

import json
import os

import pytest
import yaml

from pipelines.cli import main


@pytest.fixture
def archive(tmp_path):
    (tmp_path / "policies").mkdir()
    for sub in ("replicas/a", "replicas/b", "receiving/whu"):
        (tmp_path / sub).mkdir(parents=True)
    (tmp_path / "strongroom.yaml").write_text("""\
catalog: ./catalog
staging: ./staging
policies: ./policies
storage:
  a: {type: filesystem, root: ./replicas/a, site: wuhan}
  b: {type: filesystem, root: ./replicas/b, site: beijing}
libraries:
  WHU:
    name: {en: Wuhan University Library, zh: 武汉大学图书馆}
    receiving: {type: filesystem, root: ./receiving/whu}
""", encoding="utf-8")
    for name in ("self-built", "at-risk-purchased"):
        (tmp_path / "policies" / f"{name}.yaml").write_text(
            f"name: {name}\nchecksums: [sha256]\nreplicas: [a, b]\nvirus_check: off\n")
    return tmp_path


def receive(capsys, archive, *extra):
    capsys.readouterr()
    code = main(["--config", str(archive / "strongroom.yaml"), "--json", "receive", *extra])
    return code, json.loads(capsys.readouterr().out)


def put(area, rel, data=b"x"):
    path = area / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def listing(area):
    return sorted(os.path.relpath(os.path.join(d, f), area) for d, _, fs in os.walk(area) for f in fs)


def test_a_folder_batch_is_preserved_and_answered(archive, capsys):
    area = archive / "receiving" / "whu"
    put(area, "theses/2024/a.pdf", b"%PDF-1.4 a")
    put(area, "theses/2024/sub/b.txt", b"b")
    put(area, "theses/2024.ready", yaml.safe_dump({"type": "self-built", "title": "学位论文"}).encode())
    put(area, "theses/2025/c.pdf", b"no .ready yet")
    code, out = receive(capsys, archive, "--library", "WHU")
    assert code == 0, out
    assert [(b["batch"], b["state"], b["files"]) for b in out["batches"]] == [("theses/2024", "preserved", 2)]
    assert listing(area) == ["theses/2024.done", "theses/2025/c.pdf"]
    done = yaml.safe_load((area / "theses/2024.done").read_text("utf-8"))
    assert done["bags"] == out["batches"][0]["bags"]
    code, out = receive(capsys, archive)
    assert code == 0 and out["batches"] == []


def test_links_and_fifos_planted_in_a_folder_upload_are_refused(archive, capsys, tmp_path):
    area = archive / "receiving" / "whu"
    secret = tmp_path / "outside-secret.txt"
    secret.write_bytes(b"not the library's")
    put(area, "maps/m1/ok.tif", b"map")
    os.symlink(secret, area / "maps" / "m1" / "link.txt")
    os.mkfifo(area / "maps" / "m1" / "pipe")
    put(area, "maps/m1.ready", b"type: self-built\n")
    code, out = receive(capsys, archive, "--library", "WHU")
    assert code == 1 and out["batches"][0]["state"] == "failed"
    failed = yaml.safe_load((area / "maps/m1.failed").read_text("utf-8"))
    text = json.dumps(failed["problems"], ensure_ascii=False)
    assert "maps/m1/link.txt is a symbolic link" in text and "maps/m1/pipe is a FIFO" in text
    assert (area / "maps" / "m1" / "link.txt").is_symlink() and secret.read_bytes() == b"not the library's"
    assert not (archive / "replicas" / "a" / "WHU").exists()


def test_an_answer_is_never_replaced(archive):
    from policies.config import load_config
    from storage_adapters.receiving import open_area

    area = open_area(load_config(archive / "strongroom.yaml"), "WHU")
    assert area.put_bytes("c/b.done", b"first") is True
    assert area.put_bytes("c/b.done", b"second") is False
    assert (archive / "receiving/whu/c/b.done").read_bytes() == b"first"
    with pytest.raises(ValueError):
        area.put_bytes("../escape.done", b"x")
    assert not (archive / "receiving" / "escape.done").exists()


def test_receive_for_a_library_not_listed_is_a_usage_error(archive, capsys):
    capsys.readouterr()
    code = main(["--config", str(archive / "strongroom.yaml"), "receive", "--library", "PKU"])
    err = capsys.readouterr().err
    assert code == 2
    assert "PKU" in err and "strongroom.yaml" in err and "Traceback" not in err


def test_receive_refreshes_the_librarys_reports_when_its_area_says_so(archive, capsys):
    config = archive / "strongroom.yaml"
    config.write_text(config.read_text("utf-8").replace(
        "receiving: {type: filesystem, root: ./receiving/whu}",
        "receiving: {type: filesystem, root: ./receiving/whu, publish_reports: true}"), encoding="utf-8")
    area = archive / "receiving" / "whu"
    put(area, "maps/m2/a.tif", b"map")
    put(area, "maps/m2.ready", b"type: self-built\n")
    code, out = receive(capsys, archive, "--library", "WHU")
    assert code == 0, out
    assert [b["state"] for b in out["batches"]] == ["preserved", "reports published"]
    assert "reports/preservation-zh.html" in listing(area)
    page = (area / "reports" / "preservation.html").read_text("utf-8").replace("<wbr>", "")
    assert out["batches"][0]["bags"][0] in page


def status(capsys, archive):
    capsys.readouterr()
    code = main(["--config", str(archive / "strongroom.yaml"), "status"])
    return code, capsys.readouterr().out


def test_a_batch_failed_on_the_librarys_input_is_answered_and_its_deposit_abandoned(archive, capsys):
    import hashlib

    from catalog.access import open_catalog
    from policies.config import load_config

    area = archive / "receiving" / "whu"
    put(area, "maps/b2/a.tif", b"map")
    put(area, "maps/b2/MD5SUMS", f"{hashlib.md5(b'other').hexdigest()}  a.tif\n".encode())
    put(area, "maps/b2.ready", b"type: self-built\n")
    code, out = receive(capsys, archive, "--library", "WHU")
    assert code == 1 and out["batches"][0]["state"] == "failed", out
    assert (area / "maps/b2.failed").is_file() and (area / "maps/b2/a.tif").is_file()
    events = [e for e in open_catalog(load_config(archive / "strongroom.yaml")).events().to_pylist()
              if e["type"] == "deposit abandoned"]
    assert len(events) == 1 and "received batch maps/b2 failed: answered with maps/b2.failed" in events[0]["detail"]
    code, text = status(capsys, archive)
    assert code == 0, text
    assert "ABANDONED" in text and "  FAILED " not in text and "rerun the same" not in text, text
    code, out = receive(capsys, archive, "--library", "WHU")
    assert code == 0 and out["batches"] == [], out


def test_a_batch_failed_on_the_archives_side_stays_unfinished_and_the_rerun_resumes_it(archive, capsys):
    area = archive / "receiving" / "whu"
    put(area, "maps/b3/a.tif", b"map")
    put(area, "maps/b3.ready", b"type: self-built\n")
    (archive / "replicas" / "b").rmdir()                          # target b not mounted: the archive's fault
    code, out = receive(capsys, archive, "--library", "WHU")
    assert code == 1 and out["batches"][0]["state"] == "incomplete", out
    assert not (area / "maps/b3.failed").exists() and (area / "maps/b3.claim").exists()
    code, text = status(capsys, archive)
    assert code == 1 and "FAILED" in text and "ABANDONED" not in text, text
    states = os.listdir(archive / "staging" / ".state")
    (archive / "replicas" / "b").mkdir()
    code, out = receive(capsys, archive, "--library", "WHU")
    assert code == 0 and out["batches"][0]["state"] == "preserved", out
    assert listing(area) == ["maps/b3.done"]
    assert os.listdir(archive / "staging" / ".state") == states  # resumed, not deposited anew
    assert status(capsys, archive)[0] == 0


def test_a_run_stopped_after_the_failed_answer_abandons_the_deposit_on_the_rerun(archive, capsys, monkeypatch):
    import hashlib

    from pipelines import flow
    from strongroom.errors import StagingError

    area = archive / "receiving" / "whu"
    put(area, "maps/b4/a.tif", b"map")
    put(area, "maps/b4/MD5SUMS", f"{hashlib.md5(b'other').hexdigest()}  a.tif\n".encode())
    put(area, "maps/b4.ready", b"type: self-built\n")
    real = flow.abandon_deposit

    def stopped(*args, **kwargs):
        raise StagingError("the state folder could not be written (simulated stop)")

    monkeypatch.setattr(flow, "abandon_deposit", stopped)
    capsys.readouterr()
    assert main(["--config", str(archive / "strongroom.yaml"), "receive", "--library", "WHU"]) != 0
    assert (area / "maps/b4.failed").is_file() and (area / "maps/b4.claim").is_file()
    assert status(capsys, archive)[0] == 1                          # not yet abandoned
    monkeypatch.setattr(flow, "abandon_deposit", real)
    code, out = receive(capsys, archive, "--library", "WHU")
    assert code == 0 and out["batches"][0]["state"] == "cleaned", out
    assert not (area / "maps/b4.claim").exists()
    code, text = status(capsys, archive)
    assert code == 0 and "ABANDONED" in text, text
