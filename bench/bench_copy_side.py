"""The copy side of a deposit alone: Replicate and Verify of one bag to two folder targets (issue 11).

    python bench/bench_copy_side.py --before DIR [--ours DIR] [--small N | --large 4x512MiB] [--rounds R]
                                    [--work DIR]

Why: a whole deposit (`bench_ingest.py`) mixes staging, the bag check, PREMIS and the catalog
with the copy side, and on a shared machine its spread hides a change of a few seconds. Here
only what Replicate and Verify run is timed, as a deposit runs it: a bag of bench_ingest's small
or large corpus (made once with `bagit.py --sha256 --md5`), its inventory taken, then for each side in a
fresh process: `replicate_bag` to target A placing the staged files (a fresh copy of the bag as
staging, its files hard-linked, `fs_place`), `replicate_bag` to target B copying them,
`verify_replica` of each (deep). CPU is the process's own (time.process_time), per phase; the
sides alternate, medians and per-round ratios are printed. DIR is a checkout (`git archive`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

BIN = Path(sys.executable).parent
HERE = Path(__file__).resolve().parent

#: Run in a fresh interpreter with PYTHONPATH at the side's checkout; prints one JSON line.
_SIDE = r"""
import json, os, shutil, sys, time
from pathlib import Path
from strongroom.bag_id import BagId
from storage_adapters.filesystem import FilesystemAdapter
from storage_adapters.replicate import bag_inventory, replicate_bag, verify_replica
bag, work = Path(sys.argv[1]), Path(sys.argv[2])
staged = work / "staged"
for p in (staged, work / "a", work / "b"):
    shutil.rmtree(p, ignore_errors=True)
shutil.copytree(bag, staged)
(work / "a").mkdir(); (work / "b").mkdir()
os.sync()
inv = bag_inventory(staged)
bid = BagId.parse("BENCH/COPY/20260101T000000Z-1")
a = FilesystemAdapter("a", "here", work / "a"); a.place_from = staged
b = FilesystemAdapter("b", "there", work / "b")
out = {}
for key, fn in (("replicate placed", lambda: replicate_bag(a, staged, bid, inventory=inv)),
                ("replicate copied", lambda: replicate_bag(b, staged, bid, inventory=inv)),
                ("verify placed", lambda: verify_replica(a, bid, inv.digests, inv.sizes, deep=True)),
                ("verify copied", lambda: verify_replica(b, bid, inv.digests, inv.sizes, deep=True))):
    c0, t0 = time.process_time(), time.perf_counter()
    result = fn()
    out[key] = [time.perf_counter() - t0, time.process_time() - c0]
    if getattr(result, "ok", True) is not True:
        sys.exit(f"{key}: {result.problems[:5]}")
print(json.dumps(out))
"""


def make_bag(work: Path, corpus: Path) -> Path:
    bag = work / f"bag-{corpus.name}"
    if not (bag / "bagit.txt").exists():
        shutil.rmtree(bag, ignore_errors=True)
        shutil.copytree(corpus, bag)
        subprocess.run([BIN / "bagit.py", "--processes", "2", "--sha256", "--md5", "--quiet", bag], check=True)
    return bag


def run_side(code: str, bag: Path, work: Path) -> Dict[str, List[float]]:
    proc = subprocess.run([sys.executable, "-c", _SIDE, bag, work], env=dict(os.environ, PYTHONPATH=code),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if proc.returncode:
        sys.exit(f"side {code} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: Optional[Sequence[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", required=True, metavar="DIR", help="checkout to compare with")
    ap.add_argument("--ours", default=str(HERE.parent), metavar="DIR", help="checkout measured (default: this one)")
    ap.add_argument("--small", type=int, default=20000)
    ap.add_argument("--large", default=None, help="the large corpus instead, e.g. 4x512MiB")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--work", default="/tmp/strongroom-bench")
    args = ap.parse_args(argv)
    work = Path(args.work)
    sys.path.insert(0, str(HERE))
    from bench_ingest import build_large, build_small, corpus_stats, parse_large

    if args.large:
        count, mib = parse_large(args.large)
        corpus = work / f"corpus-large-{count}x{mib}"
        build_large(corpus, count * mib, count)
    else:
        corpus = work / f"corpus-small-{args.small}"
        build_small(corpus, args.small)
    files, nbytes = corpus_stats(corpus)
    bag = make_bag(work, corpus)
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start")
    runs: Dict[str, List[Dict[str, List[float]]]] = {"ours": [], "before": []}
    for i in range(args.rounds):
        for side in (("ours", "before") if i % 2 == 0 else ("before", "ours")):
            runs[side].append(run_side(args.ours if side == "ours" else args.before, bag, work / f"copy-{side}"))
            total = sum(v[1] for v in runs[side][-1].values())
            print(f"  round {i + 1} {side}: {total:.2f} s CPU", flush=True)
    phases = list(runs["ours"][0])
    print(f"\n| phase ({files:,} files, {nbytes / 2**20:,.0f} MiB) | before CPU s | ours CPU s | ours/before (rounds) "
          "| ours wall s |")
    print("|---|---|---|---|---|")
    for phase in phases + ["all"]:
        def cpu(r, p=phase):
            return sum(v[1] for v in r.values()) if p == "all" else r[p][1]
        ours = [cpu(r) for r in runs["ours"]]
        before = [cpu(r) for r in runs["before"]]
        ratios = [o / b for o, b in zip(ours, before)]
        wall = [sum(v[0] for v in r.values()) if phase == "all" else r[phase][0] for r in runs["ours"]]
        print(f"| {phase} | {statistics.median(before):.2f} | {statistics.median(ours):.2f} "
              f"| {statistics.median(ratios):.2f}x ({', '.join(f'{x:.2f}' for x in ratios)}) "
              f"| {statistics.median(wall):.2f} |")
    print(f"\nload average {os.getloadavg()[0]:.2f} at the end (other work on the machine slows both sides)")


if __name__ == "__main__":
    main()
