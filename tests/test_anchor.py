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


# --------------------------------------------------------------------------------------------
# K2: checkpoints written by the CLI, checked and restored (filesystem targets)

import json  # noqa: E402
import shutil  # noqa: E402
import types  # noqa: E402
from pathlib import Path  # noqa: E402

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from catalog.checkpoints import build, entry_of_segment, parse, read_chain  # noqa: E402
from catalog.ledger import GENESIS, build_segment, sha256_hex  # noqa: E402
from tests.test_status import cli, clone, deposited, load  # noqa: E402,F401

TARGETS = ("site-a", "site-b")


@pytest.fixture
def arch(deposited, tmp_path):  # noqa: F811
    return clone(deposited, tmp_path)


def root_of(arch, target: str) -> Path:
    return Path(load(arch).target(target).root)


def checkpoint_files(arch, target: str):
    folder = root_of(arch, target) / ".strongroom" / "ledger" / "checkpoints"
    return sorted(folder.iterdir()) if folder.is_dir() else []


def snapshot(arch):
    return {t: {p.name: p.read_bytes() for p in checkpoint_files(arch, t)} for t in TARGETS}


def events_dir(arch) -> Path:
    return Path(load(arch).catalog) / "events"


def rewritten_chain(arch, seq_to_edit: int):
    """The catalog's segments with one event's detail edited and every hash recomputed:
    [(seq, bytes)] forming a chain that `ledger verify` alone accepts."""
    out, prev = [], GENESIS
    for p in sorted(events_dir(arch).glob("seg-*.parquet")):
        seq = int(p.name[4:16])
        table = pq.read_table(p).replace_schema_metadata(None)
        if seq == seq_to_edit:
            detail = table.column("detail").to_pylist()
            detail[0] = "history as the attacker would have it"
            table = table.set_column(table.column_names.index("detail"), "detail", pa.array(detail, pa.string()))
        data = build_segment(table, seq, prev)
        out.append((seq, data))
        prev = sha256_hex(data)
    return out


def install_chain(arch, chain) -> None:
    shutil.rmtree(Path(load(arch).catalog) / "ledger-cache", ignore_errors=True)
    for seq, data in chain:
        path = events_dir(arch) / f"seg-{seq:012d}.parquet"
        path.chmod(0o644)
        path.write_bytes(data)


def verify(capsys, arch):
    return cli(capsys, "--config", arch.config, "--json", "ledger", "verify", "--against-storage")


def test_deposit_anchors_every_target_and_a_command_that_records_nothing_writes_nothing(capsys, arch):
    before = snapshot(arch)
    head = load(arch)
    for target in TARGETS:
        files = checkpoint_files(arch, target)
        assert files, f"no checkpoint on {target} after the deposits"
        cps = [parse(f"ledger/checkpoints/{p.name}", p.read_bytes()) for p in files]
        assert cps[0].first_seq == 0 and cps[0].previous is None
        for older, newer in zip(cps, cps[1:]):  # one chain per target
            assert newer.previous["key"] == older.key and newer.previous["sha256"] == older.sha256
    assert head is not None
    run = cli(capsys, "--config", arch.config, "--json", "status")
    assert run.code == 0, run.err
    assert snapshot(arch) == before  # nothing written when the head did not move
    audit = cli(capsys, "--config", arch.config, "--json", "audit", "--all", "--quick")
    assert audit.code == 0, audit.out + audit.err
    after = snapshot(arch)
    for target in TARGETS:
        assert set(before[target]) < set(after[target])           # a new checkpoint ...
        assert all(after[target][k] == v for k, v in before[target].items())  # ... the old ones untouched
        newest = max(after[target])
        cp = parse(f"ledger/checkpoints/{newest}", after[target][newest])
        assert cp.previous["key"] == f"ledger/checkpoints/{max(before[target])}"
        assert any("fixity check" in e.canonical for e in cp.entries)
    assert not (root_of(arch, "site-a") / ".strongroom-aside").exists()  # the audit left the namespace alone
    good = verify(capsys, arch)
    assert good.code == 0, good.out
    assert good.data["against_storage"]["ok"] is True


def test_a_consistent_rewrite_of_the_catalog_ledger_is_caught(capsys, arch):
    install_chain(arch, rewritten_chain(arch, 1))
    plain = cli(capsys, "--config", arch.config, "--json", "ledger", "verify")
    assert plain.data["ok"] is True  # the chain alone is fooled: every hash was recomputed
    run = verify(capsys, arch)
    assert run.code == 1
    problems = run.data["against_storage"]["problems"]
    assert any(p.startswith("site-a: ledger/checkpoints/") and "seg-000000000001.parquet" in p
               and "altered or replaced" in p for p in problems), problems
    assert any(p.startswith("site-b: ") for p in problems)


def test_a_truncated_catalog_ledger_is_caught_and_anchoring_refuses_to_follow_it(capsys, arch):
    before = snapshot(arch)
    newest = sorted(events_dir(arch).glob("seg-*.parquet"))[-1]
    newest.unlink()
    run = verify(capsys, arch)
    assert run.code == 1
    assert run.data["ok"] is True  # the shortened chain is consistent on its own
    assert any(newest.name in p and "missing from the catalog" in p for p in run.data["against_storage"]["problems"])
    audit = cli(capsys, "--config", arch.config, "--json", "audit", "--all", "--quick")  # records events
    assert audit.code == 1
    assert "ledger checkpoint not written to site-a" in audit.err and "nothing written" in audit.err
    assert snapshot(arch) == before  # nothing written that would bless the other chain


def test_rebuild_restores_the_events_byte_for_byte(capsys, arch):
    catalog = Path(load(arch).catalog)
    original = {p.name: p.read_bytes() for p in (catalog / "events").glob("seg-*.parquet")}
    shutil.rmtree(catalog)
    run = cli(capsys, "--config", arch.config, "--json", "catalog", "rebuild")
    assert run.code == 0, run.out + run.err
    assert run.data["events"]["segments_restored"] == len(original)
    restored = {p.name: p.read_bytes() for p in (catalog / "events").glob("seg-*.parquet")}
    assert all(restored[name] == data for name, data in original.items())
    assert len(restored) > len(original)  # and the rebuild's own events chained after them
    assert verify(capsys, arch).code == 0
    status = cli(capsys, "--config", arch.config, "--json", "status")
    assert status.code == 0 and status.data["totals"]["bags"] == len(arch.bags)


def test_rebuild_refuses_to_restore_events_when_targets_disagree(capsys, arch):
    forged = [entry_of_segment(seq, data) for seq, data in rewritten_chain(arch, 0)]
    site_b = root_of(arch, "site-b") / ".strongroom"
    shutil.rmtree(site_b)
    from storage_adapters.filesystem import FilesystemAdapter

    FilesystemAdapter("site-b", "x", root_of(arch, "site-b")).put_record(*build("site-b", forged, None))
    shutil.rmtree(Path(load(arch).catalog))
    run = cli(capsys, "--config", arch.config, "--json", "catalog", "rebuild")
    assert run.code == 1
    assert run.data["events"]["segments_restored"] == 0
    assert any("the targets disagree on seg-000000000000.parquet" in p for p in run.data["events"]["problems"])


def test_an_unwritable_target_is_a_warning_and_exit_1_and_the_next_command_catches_up(capsys, arch):
    site_b = root_of(arch, "site-b") / ".strongroom"
    shutil.rmtree(site_b)
    site_b.write_bytes(b"not a folder")   # the namespace cannot be written
    run = cli(capsys, "--config", arch.config, "--json", "audit", "--all", "--quick")
    assert run.code == 1
    assert "warning: ledger checkpoint not written to site-b" in run.err
    assert "Traceback" not in run.err
    assert json.loads(run.out)  # the command's own answer is intact
    site_b.unlink()
    quiet = cli(capsys, "--config", arch.config, "--json", "status")   # records nothing: writes nothing
    assert quiet.code == 0 and not site_b.exists()
    again = cli(capsys, "--config", arch.config, "--json", "audit", "--all", "--quick")   # catches up
    assert again.code == 0, again.err
    (cp,) = read_chain(FilesystemAdapter("site-b", "x", root_of(arch, "site-b"))).checkpoints
    assert cp.first_seq == 0 and cp.last_seq == len(list(events_dir(arch).glob("seg-*.parquet"))) - 1
    assert verify(capsys, arch).code == 0


# --------------------------------------------------------------------------------------------
# K2 on SeaweedFS: a locked S3 target through the CLI

KEY_ENV, SECRET_ENV = "SR_ANCHOR_S3_KEY", "SR_ANCHOR_S3_SECRET"


def test_an_s3_target_gets_locked_checkpoints_and_witnesses_a_rewrite(seaweed, locked_bucket, tmp_path, capsys,
                                                                       monkeypatch):
    monkeypatch.setenv(KEY_ENV, seaweed.access_key)
    monkeypatch.setenv(SECRET_ENV, seaweed.secret_key)
    prefix = "anchor-" + uuid.uuid4().hex[:6]
    folder = tmp_path / "archive"
    (folder / "policies").mkdir(parents=True)
    (folder / "replicas" / "local").mkdir(parents=True)
    (folder / "strongroom.yaml").write_text(f"""\
storage:
  local: {{type: filesystem, root: ./replicas/local, site: beijing}}
  vault:
    type: s3
    endpoint: {seaweed.endpoint}
    bucket: {locked_bucket}
    prefix: {prefix}
    object_lock: true
    site: shanghai
    credentials: {{access_key_env: {KEY_ENV}, secret_key_env: {SECRET_ENV}}}
""", encoding="utf-8")
    (folder / "policies" / "kept.yaml").write_text(
        "name: kept\nchecksums: [sha256]\nreplicas: [local, vault]\nvirus_check: off\n"
        "retention: {mode: governance, years: 1}\n", encoding="utf-8")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.txt").write_bytes(b"kept for ever\n")
    cfg = folder / "strongroom.yaml"
    run = cli(capsys, "--config", cfg, "--json", "deposit", tmp_path / "src", "--library", "PKU", "--collection",
              "KEPT", "--type", "self-built", "--policy", "kept")
    assert run.code == 0, run.out + run.err

    raw = seaweed.client()
    listed = raw.list_objects_v2(Bucket=locked_bucket, Prefix=f"{prefix}/.strongroom/ledger/checkpoints/")
    (obj,) = listed["Contents"]
    head = raw.head_object(Bucket=locked_bucket, Key=obj["Key"])
    assert head.get("ObjectLockMode") == "GOVERNANCE"   # the policy's retention, on the checkpoint too
    cp = parse(obj["Key"][len(prefix) + len("/.strongroom/"):],
               raw.get_object(Bucket=locked_bucket, Key=obj["Key"])["Body"].read())
    assert cp.target == "vault" and cp.first_seq == 0

    arch = types.SimpleNamespace(config=cfg)
    install_chain(arch, rewritten_chain(arch, 0))
    caught = verify(capsys, arch)
    assert caught.code == 1
    assert any(p.startswith(f"vault: {cp.key}: seg-000000000000.parquet") for p in
               caught.data["against_storage"]["problems"])
    assert seaweed.secret_key not in caught.out + caught.err


def test_targets_holding_nothing_to_vouch_for_get_no_checkpoint(capsys, arch, monkeypatch):
    """A folder no bag is on may be a mount point whose volume is not mounted: nothing is written
    into it. A target no policy stores copies on is not anchored (nor a warning)."""
    empty = arch.root / "not-mounted"
    empty.mkdir()
    monkeypatch.delenv("SR_UNSET_KEY", raising=False)
    text = arch.config.read_text("utf-8")
    arch.config.write_text(text.replace("\nstorage:\n", f"\nstorage:\n  site-z: {{type: filesystem, root: {empty}, "
                                                      f"site: elsewhere}}\n  s3-unused:\n    type: s3\n"
                                                      f"    endpoint: http://127.0.0.1:9\n    bucket: unused\n"
                                                      f"    site: nowhere\n    credentials: {{access_key_env: "
                                                      f"SR_UNSET_KEY, secret_key_env: SR_UNSET_KEY}}\n", 1), "utf-8")
    (arch.config.parent / "policies" / "spare.yaml").write_text(
        "name: spare\nchecksums: [sha256]\nreplicas: [site-z]\nvirus_check: off\n", encoding="utf-8")
    run = cli(capsys, "--config", arch.config, "--json", "audit", "--all", "--quick")
    assert run.code == 0, run.err
    assert "ledger checkpoint not written" not in run.err and "could not be anchored" not in run.err
    assert list(empty.iterdir()) == []
    assert len(snapshot(arch)["site-a"]) >= 2  # the others were anchored


def test_a_record_another_process_is_writing_right_now_is_waited_for(tmp_path):
    """Two commands that ended at once anchor the same checkpoint at the same moment: the later
    one waits for the other's write (its locked temp file) instead of failing the target."""
    import fcntl
    import os as _os
    import threading

    from storage_adapters.fs_common import temp_name

    (tmp_path / "root").mkdir()
    a = FilesystemAdapter("site-a", "beijing", str(tmp_path / "root"))
    folder = tmp_path / "root" / ".strongroom" / "ledger"
    folder.mkdir(parents=True)
    data = b'{"same": "checkpoint"}\n'
    tmp = folder / temp_name("cp.json")
    fd = _os.open(tmp, _os.O_WRONLY | _os.O_CREAT | _os.O_EXCL, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)                      # the other writer, mid-write

    def finish():
        (folder / "cp.json").write_bytes(data)
        tmp.unlink()
        _os.close(fd)
    timer = threading.Timer(0.5, finish)
    timer.start()
    try:
        assert a.put_record("ledger/cp.json", data) == PutOutcome.ALREADY_PRESENT
    finally:
        timer.cancel()
    assert a.read_record("ledger/cp.json") == data
