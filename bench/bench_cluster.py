"""Strongroom on a SeaweedFS cluster (issue 16 part 2), one volume server killed with -9.

    python bench/bench_cluster.py [--files N] [--work DIR]

A bench script rather than a test: the cluster's five processes and a volume server's failure
detection take longer than the test suite's budget (tens of seconds on a quiet machine, minutes
on a busy one). It checks as it goes and exits 1 at the first broken promise.

Master, two volume servers (same rack), filer and S3 gateway, each its own `weed` process on
loopback, replication 001 (tests/seaweed_cluster.py). The archive: one folder target and one S3
target on the cluster, virus_check off. Steps, each timed:
  1. deposit A (N small files) -> preserved; `audit --all --deep` -> exit 0;
  2. kill -9 volume server 2; `audit --all --deep` -> every copy intact, or inconclusive while a
     read truly fails, never damaged; `restore` of A from the S3 copy -> identical;
  3. deposit B while the volume server is down -> preserved, or a clear failure (exit 1, the
     target named, "rerun the same command"), never a traceback;
  4. restart volume server 2 -> the master counts it again; rerun deposit B -> preserved;
     `audit --all --deep` -> exit 0.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.seaweed_cluster import SeaweedCluster  # noqa: E402

KEY_ENV, SECRET_ENV = "SR_BENCH_CLUSTER_KEY", "SR_BENCH_CLUSTER_SECRET"


def make_source(root: Path, count: int, seed: int) -> Path:
    rng = random.Random(seed)
    for i in range(count):
        p = root / f"d{i % 20:02d}" / f"f{i:05d}.dat"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(rng.randbytes(rng.randint(1024, 16384)))
    return root


def write_archive(folder: Path, cluster: SeaweedCluster, bucket: str) -> Path:
    (folder / "policies").mkdir(parents=True)
    (folder / "replicas" / "local").mkdir(parents=True)
    (folder / "strongroom.yaml").write_text(f"""\
catalog: ./catalog
staging: ./staging
policies: ./policies
storage:
  local: {{type: filesystem, root: ./replicas/local, site: beijing}}
  cluster:
    type: s3
    endpoint: {cluster.endpoint}
    bucket: {bucket}
    region: us-east-1
    prefix: bags
    addressing_style: path
    site: shanghai
    credentials: {{access_key_env: {KEY_ENV}, secret_key_env: {SECRET_ENV}}}
""", encoding="utf-8")
    (folder / "policies" / "p.yaml").write_text(
        "name: p\nchecksums: [sha256]\nreplicas: [local, cluster]\nvirus_check: off\n", encoding="utf-8")
    return folder / "strongroom.yaml"


class Run:
    def __init__(self, cfg: Path, env: dict):
        self.cfg, self.env, self.rows = cfg, env, []

    def __call__(self, step: str, *argv) -> tuple:
        began = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "pipelines", "--config", str(self.cfg), "--json", *map(str, argv)],
                              cwd=REPO, env=self.env, capture_output=True, text=True, timeout=1800)
        seconds = time.monotonic() - began
        try:
            doc = json.loads(proc.stdout)
        except ValueError:
            doc = {}
        self.rows.append((step, proc.returncode, seconds))
        print(f"{step:<55} exit {proc.returncode}  {seconds:6.1f} s", flush=True)
        if "Traceback" in proc.stderr:
            fail(f"{step}: a traceback\n{proc.stderr[-3000:]}")
        return proc.returncode, doc, proc.stderr


def fail(message: str) -> None:
    print(f"FAILED: {message}", file=sys.stderr)
    sys.exit(1)


def audit_outcomes(doc: dict) -> dict:
    """(target, outcome, state after) -> copies, over every copy the audit judged."""
    counts: dict = {}
    for r in doc.get("replicas", []):
        key = (r["target"], r["outcome"], r["state"])
        counts[key] = counts.get(key, 0) + 1
    return counts


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=500)
    ap.add_argument("--work", type=Path, default=None)
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="sr-bench-cluster-"))
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    cluster = SeaweedCluster(work / "cluster")
    began = time.monotonic()
    cluster.start()
    print(f"cluster up in {time.monotonic() - began:.1f} s: {cluster.volume_servers()} volume servers, "
          f"replication {cluster.replication}", flush=True)
    try:
        bucket = "strongroom-cluster"
        cluster.client().create_bucket(Bucket=bucket)
        cfg = write_archive(work / "archive", cluster, bucket)
        env = {**os.environ, KEY_ENV: cluster.access_key, SECRET_ENV: cluster.secret_key, "STRONGROOM_PROGRESS": "0",
               "PYTHONPATH": str(REPO)}
        run = Run(cfg, env)
        src_a = make_source(work / "src-a", args.files, 1)
        src_b = make_source(work / "src-b", args.files, 2)
        dep = ("--library", "PKU", "--type", "self-built", "--policy", "p")

        code, doc, err = run(f"1. deposit A ({args.files} files), both volume servers up", "deposit", src_a,
                             "--collection", "A", *dep)
        if code != 0 or doc.get("state") != "preserved":
            fail(f"deposit A: {err[-2000:]}")
        bag_a = doc["bags"][0]["id"]
        code, doc, err = run("1. audit --all --deep", "audit", "--all", "--deep")
        if code != 0:
            fail(f"audit before the failure: {err[-2000:]}")

        cluster.kill_part("volume2")
        detected = cluster.wait_volumes(1, 120)
        print(f"volume server 2 killed (-9); the master counted 1 volume server after {detected:.1f} s", flush=True)
        code, doc, err = run("2. audit --all --deep, volume server 2 down", "audit", "--all", "--deep")
        outcomes = audit_outcomes(doc)
        print(f"   audit outcomes (target, outcome, state): {outcomes}", flush=True)
        if any(state in ("damaged", "missing", "disputed") for _, _, state in outcomes) or doc.get("repaired_total"):
            fail(f"a copy was judged damaged (or repaired) while a volume server was down: {outcomes}")
        # The audit's own verdict; the command may still exit 1 because the ledger checkpoint (K2)
        # could not be written to the cluster, which takes writes only with both servers up.
        anchored = "ledger checkpoint not written to cluster" not in err
        print(f"   audit verdict: {'ok' if doc.get('ok') else 'inconclusive'}; ledger checkpoint on the cluster: "
              f"{'written' if anchored else 'NOT written (warning, exit 1)'}", flush=True)
        if code not in (0, 1) or not (doc.get("ok") or doc.get("inconclusive")):
            fail(f"audit with a volume server down: exit {code}: {err[-2000:]}")
        code, doc, err = run("2. restore A from the cluster copy", "restore", bag_a, work / "restored",
                             "--from", "cluster", "--payload-only")
        if code != 0 and not (code == 1 and "ledger checkpoint not written to cluster" in err):
            fail(f"restore with a volume server down: {err[-2000:]}")
        for path in src_a.rglob("*"):
            if path.is_file() and (work / "restored" / path.relative_to(src_a)).read_bytes() != path.read_bytes():
                fail(f"restored {path.relative_to(src_a)} differs")

        code, doc, err = run("3. deposit B, volume server 2 down", "deposit", src_b, "--collection", "B", *dep)
        if code == 0:
            print("   deposit B preserved with one volume server down", flush=True)
        elif code == 1 and "rerun" in (err + json.dumps(doc)):
            print(f"   deposit B failed clearly: {(doc.get('failures') or [{}])[0].get('message', err)[:300]}",
                  flush=True)
        else:
            fail(f"deposit B with a volume server down: exit {code}: {err[-2000:]}")

        cluster.start_part("volume2")
        healed = cluster.wait_volumes(2, 120)
        print(f"volume server 2 restarted; the master counted 2 after {healed:.1f} s", flush=True)
        code, doc, err = run("4. rerun deposit B, volume server 2 back", "deposit", src_b, "--collection", "B", *dep)
        if code != 0 or doc.get("state") != "preserved":
            fail(f"deposit B after the restart: {err[-2000:]}")
        code, doc, err = run("4. audit --all --deep", "audit", "--all", "--deep")
        if code != 0:
            fail(f"audit after the restart: {err[-2000:]}")
        print("\n| step | exit | seconds |\n|---|---|---|")
        for step, code, seconds in run.rows:
            print(f"| {step} | {code} | {seconds:.1f} |")
        return 0
    finally:
        cluster.stop()


if __name__ == "__main__":
    sys.exit(main())
