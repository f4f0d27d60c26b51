"""Workers on a central `luigid` (issue 16): several processes, one catalog in S3, kill -9.

A real luigid on loopback (tests/luigid.py, killed by pid at the end) and the session's
SeaweedFS: three `strongroom deposit` processes of the same multi-bag source at once, then
two `audit --all --deep` at once, every Luigi task done exactly once over all of them and
the ledger without a duplicate event; a worker killed with -9 mid-deposit, and the same
command run again at once, finishes (luigid still holds the dead worker's tasks as RUNNING: the
rerun releases them); an unreachable luigid is one line naming the URL, exit 2; luigid's task
list carries no credential; and progress reaches luigid at most every STATUS_EVERY seconds.
"""

from __future__ import annotations

import collections
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.luigid import Luigid

KEY_ENV, SECRET_ENV = "SR_LUIGID_S3_KEY", "SR_LUIGID_S3_SECRET"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def luigid(tmp_path_factory):
    server = Luigid(tmp_path_factory.mktemp("luigid")).start()
    try:
        yield server
    finally:
        server.stop()


def write_archive(folder: Path, seaweed, bucket: str) -> Path:
    """A local folder and one S3 bucket; the catalog in that bucket; bags of at most 3 files."""
    (folder / "policies").mkdir(parents=True)
    (folder / "replicas" / "local").mkdir(parents=True)
    creds = f"{{access_key_env: {KEY_ENV}, secret_key_env: {SECRET_ENV}}}"
    (folder / "strongroom.yaml").write_text(f"""\
catalog: s3://{bucket}/catalog
staging: ./staging
policies: ./policies
storage:
  local: {{type: filesystem, root: ./replicas/local, site: beijing}}
  s3:
    type: s3
    endpoint: {seaweed.endpoint}
    bucket: {bucket}
    region: us-east-1
    prefix: bags
    addressing_style: path
    site: shanghai
    credentials: {creds}
""", encoding="utf-8")
    (folder / "policies" / "small.yaml").write_text(
        "name: small\nchecksums: [sha256]\nreplicas: [local, s3]\nbag: {max_files: 3}\nvirus_check: off\n",
        encoding="utf-8")
    return folder / "strongroom.yaml"


def make_source(root: Path, files: int, size: int) -> Path:
    for i in range(files):
        p = root / f"part{i % 3}" / f"file{i:03d}.bin"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(os.urandom(size))
    return root


def cli(cfg: Path, env: dict, *argv, wait: bool = True):
    command = [sys.executable, "-m", "pipelines", "--config", str(cfg), *map(str, argv)]
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if not wait:
        return proc
    out, err = proc.communicate(timeout=300)
    return proc.returncode, out, err


def deposit_args(src: Path, collection: str):
    return ("deposit", src, "--library", "PKU", "--collection", collection, "--type", "self-built",
            "--policy", "small")


def done_tasks(stderr: str) -> list:
    """Task ids a worker ran to the end, from Luigi's INFO log (-v)."""
    return re.findall(r"^INFO: \[pid \d+\] Worker Worker\(.*?\) done\s+(\S.*)$", stderr, flags=re.M)


@pytest.fixture
def setup(seaweed, tmp_path):
    bucket = seaweed.make_bucket()
    cfg = write_archive(tmp_path / "archive", seaweed, bucket)
    env = {**os.environ, KEY_ENV: seaweed.access_key, SECRET_ENV: seaweed.secret_key,
           "STRONGROOM_PROGRESS": "0", "PYTHONPATH": str(REPO)}
    return cfg, env


def catalog_of(cfg: Path, env: dict):
    from catalog.access import open_catalog
    from policies.config import load_config

    before = {k: os.environ.get(k) for k in (KEY_ENV, SECRET_ENV)}
    os.environ.update({KEY_ENV: env[KEY_ENV], SECRET_ENV: env[SECRET_ENV]})
    try:
        config = load_config(cfg)
        catalog = open_catalog(config)
        return config, catalog.bags().to_pylist(), catalog.events().to_pylist()
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def assert_no_duplicate_events(events: list) -> None:
    ids = collections.Counter(e["event_id"] for e in events)
    assert [i for i, n in ids.items() if n > 1] == []
    kinds = collections.Counter((e["type"], e["bag_id"], e.get("target"), e["detail"]) for e in events)
    assert [k for k, n in kinds.items() if n > 1] == []


def test_three_workers_deposit_and_audit_each_task_once(luigid, setup, tmp_path):
    cfg, env = setup
    src = make_source(tmp_path / "src", files=6, size=4096)  # 2 bags of 3 files
    procs = [cli(cfg, env, "--scheduler-url", luigid.url, "-v", "--json", *deposit_args(src, "MANY"), wait=False)
             for _ in range(3)]
    results = [(p.wait(timeout=300), *p.communicate()) for p in procs]
    for code, out, err in results:
        assert code == 0, out + err[-3000:]
        assert json.loads(out)["state"] == "preserved"
    ran = collections.Counter(t for _, _, err in results for t in done_tasks(err))
    assert ran and max(ran.values()) == 1, ran
    families = collections.Counter(t.split("(", 1)[0] for t in ran)
    assert families == {"Deposit": 1, "BuildBags": 1, "ValidateBag": 2, "Replicate": 4, "Verify": 4,
                        "Register": 2}, families
    # Which process runs which task is luigid's choice: on a loaded machine one process may take
    # them all before the others ask (seen under pytest-xdist), so only 'exactly once' is asserted.

    procs = [cli(cfg, env, "--scheduler-url", luigid.url, "-v", "--json", "audit", "--all", "--deep", wait=False)
             for _ in range(2)]
    results = [(p.wait(timeout=300), *p.communicate()) for p in procs]
    for code, out, err in results:
        assert code == 0, out + err[-3000:]
    ran = collections.Counter(t for _, _, err in results for t in done_tasks(err))
    families = collections.Counter(t.split("(", 1)[0] for t in ran)
    assert max(ran.values()) == 1 and families == {"CheckReplica": 4, "AuditBag": 2}, ran

    _, bags, events = catalog_of(cfg, env)
    assert len(bags) == 2
    assert_no_duplicate_events(events)
    audits = collections.Counter((e["bag_id"], e["target"]) for e in events
                                 if e["type"] == "fixity check" and "deep verification after writing" not in e["detail"])
    assert sorted(audits.values()) == [1] * 4, audits

    # what luigid's page shows of the tasks (parameters, status messages) carries no credential
    page = luigid.raw("task_list", status="", upstream_status="") + luigid.raw("worker_list")
    assert "Deposit" in page and "CheckReplica" in page
    assert env[SECRET_ENV] not in page and env[KEY_ENV] not in page


def test_worker_killed_mid_deposit_then_rerun_at_once_finishes(luigid, setup, tmp_path):
    cfg, env = setup
    src = make_source(tmp_path / "src", files=12, size=2 << 20)  # 4 bags of 3 files, 24 MB
    proc = cli(cfg, env, "--scheduler-url", luigid.url, "--workers", "2", *deposit_args(src, "KILL"), wait=False)
    state = cfg.parent / "staging" / ".state"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list(state.glob("*/*.copied.json")):
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    assert list(state.glob("*/*.copied.json")), "the deposit never got to copying"
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    assert not list(state.glob("*/done.json"))  # killed mid-run: something is left to do

    started = time.monotonic()
    code, out, err = cli(cfg, env, "--scheduler-url", luigid.url, "--json", *deposit_args(src, "KILL"))
    assert code == 0, out + err[-3000:]
    assert json.loads(out)["state"] == "preserved"
    assert "released them" in err  # said what it did about the dead worker's tasks
    assert time.monotonic() - started < 60  # without waiting for luigid's worker_disconnect_delay

    _, bags, events = catalog_of(cfg, env)
    assert len(bags) == 4 and all(b["file_count"] == 3 for b in bags)
    assert_no_duplicate_events(events)
    registered = collections.Counter(e["bag_id"] for e in events if e["type"] == "ingestion")
    assert sorted(registered.values()) == [1] * 4


def test_unreachable_luigid_is_one_line_naming_the_url(setup, tmp_path):
    cfg, env = setup
    src = make_source(tmp_path / "src", files=1, size=10)
    from tests.seaweed import free_ports

    url = f"http://127.0.0.1:{free_ports(1)[0]}"
    code, out, err = cli(cfg, env, "--scheduler-url", url, *deposit_args(src, "GONE"))
    assert code == 2, out + err
    assert url in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    code, out, err = cli(cfg, env, "--scheduler-url", "ftp://x", *deposit_args(src, "GONE"))
    assert code == 2 and "http://HOST:PORT" in err and "Traceback" not in err, err


def test_progress_reaches_luigid_at_most_every_status_every_seconds(monkeypatch):
    from pipelines import progress

    calls = []
    with progress.phase("replicate s3", 1000, 1000, on_update=lambda f, b: calls.append((f, b))) as update:
        for i in range(1, 1001):
            update(i, i)
    assert calls[0] == (1, 1) and calls[-1] == (1000, 1000) and len(calls) <= 3, len(calls)


def test_an_unknown_scheduler_url_never_shows_its_password():
    from pipelines.central import SchedulerUnreachable, check_reachable

    with pytest.raises(SchedulerUnreachable) as info:
        check_reachable("http://admin:hunter2@127.0.0.1:1")
    assert "hunter2" not in str(info.value) and "http://127.0.0.1:1" in str(info.value)


def test_a_gone_process_is_told_from_a_live_one():
    from pipelines.central import process_gone

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert process_gone(child.pid) and not process_gone(os.getpid()) and not process_gone(None)
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    time.sleep(0.5)  # exited, not reaped yet
    assert process_gone(zombie.pid)
    zombie.wait()


def test_helpers_take_only_this_deposits_tasks_from_what_luigid_lists():
    from pipelines import tasks  # noqa: F401 - registers the task families
    from pipelines.central import helpers

    ours = {"config_path": "/srv/a/strongroom.yaml", "deposit_key": "PKU-R-1"}
    good = tasks.Replicate(bag_id="PKU/R/20260101T000000Z-1", target="s3", **ours)
    listed = [(good.task_id, "Replicate", {**ours, "bag_id": good.bag_id, "target": "s3"}),
              ("x", "Replicate", {**ours, "deposit_key": "THU-X-2", "bag_id": "b", "target": "s3"}),
              ("y", "Replicate", {**ours, "config_path": "/srv/other.yaml", "bag_id": "b", "target": "s3"}),
              ("z", "Replicate", {**ours, "deposit_key": "../../etc", "bag_id": "b", "target": "s3"}),
              ("w", "Replicate", {**ours, "bag_id": "../../b", "target": "s3"}),
              ("v", "NotOurs", {**ours})]
    found = helpers(listed, {(ours["config_path"], ours["deposit_key"]), (ours["config_path"], "../../etc")})
    assert [t.task_id for t in found] == [good.task_id]


SLEEPY = '''
import os, sys, time
import luigi
from pathlib import Path
from pipelines.task_base import ArchiveTask

class Sleepy(ArchiveTask):
    n = luigi.IntParameter()
    def output(self):
        return luigi.LocalTarget(os.path.join(sys.argv[1], f"out{self.n}"))
    def failure_path(self):
        return Path(sys.argv[1]) / f"failed{self.n}"
    def run(self):
        Path(sys.argv[1], f"pid{self.n}").write_text(str(os.getpid()))
        time.sleep(60)

luigi.build([Sleepy(config_path="x", n=1), Sleepy(config_path="x", n=2)], workers=2, local_scheduler=True,
            log_level="CRITICAL")
'''


def test_forked_task_processes_die_with_their_worker(tmp_path):
    """A worker killed with -9 takes its forked task processes with it (nothing of it keeps
    working while a rerun runs its tasks again)."""
    from pipelines.central import process_gone

    worker = subprocess.Popen([sys.executable, "-c", SLEEPY, str(tmp_path)], cwd=REPO,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not all((tmp_path / f"pid{n}").exists() for n in (1, 2)):
        time.sleep(0.1)
    children = [int((tmp_path / f"pid{n}").read_text()) for n in (1, 2)]
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not all(process_gone(c) for c in children):
        time.sleep(0.1)
    assert all(process_gone(c) for c in children)
