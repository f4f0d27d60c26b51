"""Virus check cost: `strongroom deposit` with and without the ClamAV scan, against `clamdscan`.

    python bench/bench_virus.py [--small N] [--large-mib M] [--work DIR]

Corpora as bench_ingest.py (built once under --work, default /tmp/strongroom-bench): N small
files (default 20,000, 1-64 KiB) and four random files of M/4 MiB each (default 2,048 MiB in all).
A private clamd (tests/clamav.py: test-made signature database, StreamMaxLength 25M,
MaxFileSize/MaxScanSize 0 = unlimited so clamdscan really reads the large files, MaxThreads 4)
serves every run. Rows:

  deposit, virus_check: off       `strongroom --workers 2 deposit` (two filesystem replicas)
  deposit, virus_check: required  the same, every byte streamed to clamd while staging (INSTREAM,
                                  large files in 25 MiB chunks overlapping by 1 MiB)
  clamdscan --multiscan           clamd reads the same source files itself, in parallel threads
  clamdscan --stream              clamdscan sends each file over INSTREAM (like Strongroom, one client)

The scan's cost inside a deposit is the difference of the first two rows; clamdscan is the
scan alone, with a read of its own. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_ingest import BIN, build_large, build_small  # noqa: E402
from tests.clamav import Clamd  # noqa: E402


def timed(cmd, env=None, ok=(0,)) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run([str(c) for c in cmd], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode not in ok:
        raise SystemExit(f"{cmd[0]} failed ({proc.returncode}): {proc.stderr.decode()[-2000:]}")
    return wall


def archive(base: Path, virus_check: str) -> Path:
    shutil.rmtree(base, ignore_errors=True)
    subprocess.run([BIN / "strongroom", "init", base], check=True, stdout=subprocess.DEVNULL)
    for p in (base / "policies").glob("*.yaml"):
        p.write_text(p.read_text("utf-8").replace("virus_check: required", f"virus_check: {virus_check}"), "utf-8")
    return base / "strongroom.yaml"


def bench(name: str, code: str, corpus: Path, work: Path, clamd: Clamd, rows: list) -> None:
    env = dict(os.environ, STRONGROOM_CLAMAV=clamd.socket)
    walls = {}
    for mode in ("off", "required"):
        cfg = archive(work / f"virus-{code}-{mode}", mode)
        walls[mode] = timed([BIN / "strongroom", "--config", cfg, "--workers", "2", "deposit", corpus, "--library",
                             "BENCH", "--collection", code, "--type", "purchased"], env=env)
    conf = f"--config-file={clamd.conf}"
    multi = timed(["clamdscan", conf, "--multiscan", "--no-summary", "--quiet", corpus])
    stream = timed(["clamdscan", conf, "--stream", "--no-summary", "--quiet", corpus])
    rows.append((name, walls["off"], walls["required"], multi, stream))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--small", type=int, default=20000)
    ap.add_argument("--large-mib", type=int, default=2048)
    ap.add_argument("--work", default="/tmp/strongroom-bench")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    clamd = Clamd(work / "clamd", stream_max="25M",
                  extra_conf="MaxFileSize 0\nMaxScanSize 0\nMaxThreads 4\n").start()
    rows = []
    try:
        if args.small:
            small = work / f"small-{args.small}"
            build_small(small, args.small)
            bench(f"{args.small} small files", "small", small, work, clamd, rows)
        if args.large_mib:
            large = work / f"large-{args.large_mib}"
            build_large(large, args.large_mib)
            bench(f"4 x {args.large_mib // 4} MiB", "large", large, work, clamd, rows)
    finally:
        clamd.stop()
    print("| corpus | deposit, virus_check: off | deposit, virus_check: required | scan cost in the deposit "
          "| clamdscan --multiscan | clamdscan --stream |")
    print("|---|---|---|---|---|---|")
    for name, off, req, multi, stream in rows:
        print(f"| {name} | {off:.1f} s | {req:.1f} s | +{req - off:.1f} s ({100 * (req - off) / off:.0f} %) "
              f"| {multi:.1f} s | {stream:.1f} s |")


if __name__ == "__main__":
    main()
