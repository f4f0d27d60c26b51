"""Replication benchmark: `replicate_bag` to a filesystem target vs `cp -a` of the same bag.

    python bench/bench_replicate.py [--work DIR] [--repeat N] [--workers W] [--only 4k,mixed,1gib]

Staged bags (BagIt 1.0, sha256 + md5 manifests, built once under --work, default
/tmp/strongroom-bench-replicate; the targets are written next to them, on the same file system):
  4k:    10,000 files of 4 KiB (500 per folder);
  mixed: 20,000 files of 1-64 KiB, random sizes (500 per folder);
  1gib:  8 files of 128 MiB.
Each run: a fresh target folder, `replicate_bag` (every byte digested and checked, durable before
it gets its name), then a rerun over the complete copy (every stored file re-read once to prove
it identical). Baselines: `cp -a` of the bag, and `cp -a` followed by `sync -f` (the copy made
durable, which is what replicate_bag promises). Everything is flushed with sync before each
timed step, and the page cache is warm for the source. Prints medians of --repeat runs as a
Markdown table.

To time another checkout's storage_adapters (e.g. before a change), put it first on PYTHONPATH:
    git archive HEAD | tar -x -C /tmp/sr-before
    PYTHONPATH=/tmp/sr-before python bench/bench_replicate.py
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.append(str(Path(__file__).resolve().parents[1]))  # after PYTHONPATH: --before trees win

from strongroom import bagit_spec  # noqa: E402
from strongroom.bag_id import BagId  # noqa: E402
from storage_adapters.filesystem import FilesystemAdapter  # noqa: E402
from storage_adapters.replicate import bag_inventory, replicate_bag  # noqa: E402

BAG = BagId.parse("BENCH/repl/20240101T000000Z-1")
ALGS = ("sha256", "md5")


def build_bag(bag_dir: Path, sizes) -> Path:
    """A staged bag with one random file per size (500 per folder); built once."""
    marker = bag_dir.parent / f"{bag_dir.name}.complete"
    if marker.exists():
        return bag_dir
    shutil.rmtree(bag_dir, ignore_errors=True)
    rng = random.Random(42)
    entries = {alg: [] for alg in ALGS}
    total = 0
    for i, size in enumerate(sizes):
        rel = f"data/d{i // 500:03d}/f{i:05d}.bin"
        path = bag_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        hashers = [hashlib.new(a) for a in ALGS]
        with open(path, "wb") as fh:
            left = size
            while left:
                block = rng.randbytes(min(left, 1 << 20))
                fh.write(block)
                for h in hashers:
                    h.update(block)
                left -= len(block)
        for alg, h in zip(ALGS, hashers):
            entries[alg].append((rel, h.hexdigest()))
        total += size
    bagit_spec.write_bagit_txt(bag_dir)
    for alg in ALGS:
        bagit_spec.write_manifest(bag_dir / f"manifest-{alg}.txt", entries[alg])
    bagit_spec.write_tag_file(bag_dir / "bag-info.txt", [("Payload-Oxum", f"{total}.{len(sizes)}")])
    bagit_spec.write_tag_manifests(bag_dir, ALGS)
    os.sync()
    marker.touch()
    return bag_dir


def corpora(work: Path, only) -> dict:
    rng = random.Random(7)
    specs = {
        "4k": lambda: [4096] * 10_000,
        "mixed": lambda: [rng.randint(1024, 65536) for _ in range(20_000)],
        "1gib": lambda: [128 << 20] * 8,
    }
    return {name: build_bag(work / "staging" / name / BAG.name, make()) for name, make in specs.items()
            if name in only}


def clear(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    os.sync()


def timed(fn) -> float:
    os.sync()
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def run(name: str, bag: Path, work: Path, repeat: int, workers: int) -> dict:
    inventory = bag_inventory(bag)
    target = work / "targets" / name
    cp_dest = work / "targets" / f"{name}-cp"
    times = {"replicate": [], "rerun": [], "cp -a": [], "cp -a + sync -f": []}
    files = len(inventory.sizes)
    for _ in range(repeat):
        clear(target)
        target.mkdir(parents=True)
        adapter = FilesystemAdapter("bench", "here", target)
        result = {}

        def first():
            result["r"] = replicate_bag(adapter, bag, BAG, inventory=inventory, workers=workers)

        times["replicate"].append(timed(first))
        assert result["r"].files_written == files, result["r"]

        def again():
            result["r"] = replicate_bag(adapter, bag, BAG, inventory=inventory, workers=workers)

        times["rerun"].append(timed(again))
        assert result["r"].files_already_present == files, result["r"]
        clear(target)

        for label, cmds in (("cp -a", [["cp", "-a", str(bag), str(cp_dest)]]),
                            ("cp -a + sync -f", [["cp", "-a", str(bag), str(cp_dest)], ["sync", "-f", str(cp_dest)]])):
            clear(cp_dest)
            times[label].append(timed(lambda: [subprocess.run(c, check=True) for c in cmds]))
            clear(cp_dest)
    return {"files": files, "bytes": sum(inventory.sizes.values()),
            **{k: statistics.median(v) for k, v in times.items()}, "all": times}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="/tmp/strongroom-bench-replicate")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--only", default="4k,mixed,1gib")
    args = ap.parse_args()
    work = Path(args.work)
    import storage_adapters

    print(f"storage_adapters from {Path(storage_adapters.__file__).parent}; workers={args.workers}; "
          f"median of {args.repeat}; load {os.getloadavg()[0]:.1f}", file=sys.stderr)
    rows = []
    for name, bag in corpora(work, args.only.split(",")).items():
        r = run(name, bag, work, args.repeat, args.workers)
        print(f"{name}: " + ", ".join(f"{k} {[round(x, 2) for x in v]}" for k, v in r["all"].items()),
              file=sys.stderr)
        rows.append((name, r))
    print("| bag | files | MiB | replicate s | rerun s | cp -a s | cp -a + sync -f s |")
    print("|---|---|---|---|---|---|---|")
    for name, r in rows:
        print(f"| {name} | {r['files']} | {r['bytes'] / 2**20:.0f} | {r['replicate']:.2f} | {r['rerun']:.2f} | "
              f"{r['cp -a']:.2f} | {r['cp -a + sync -f']:.2f} |")


if __name__ == "__main__":
    main()
