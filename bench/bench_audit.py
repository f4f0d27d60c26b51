"""Deep-audit benchmark of a filesystem replica against the hashing limit and `bagit.py --validate`.

    python bench/bench_audit.py [--work DIR] [--repeat N] [--workers W] [--only small,large,memory]
                                [--large-gib G] [--million]

Each dataset is one BagIt 1.0 bag (sha256 + md5 manifests and tag manifests) stored directly on
a filesystem target of a small archive under --work (default /tmp/strongroom-bench-audit), with
its catalog records written as a deposit would; built once and reused.

  small:  20,000 files of 1-8 KiB (random sizes, 500 per folder);
  large:  8 files, G GiB in all (default 4);
  memory: 20,000 and 200,000 files of 64 bytes (peak RSS only); with --million also 1,000,000
          (built on the fly, about 1M inodes and a few minutes; never committed).

Measured per dataset, page cache warm (an untimed pass first), medians of --repeat runs made in
interleaved rounds (every measure once per round):
  * hashing limit: a single-thread loop that opens, reads (1 MiB) and hashlib.sha256-hashes
    every payload file; the limit for W workers is that rate x W. The same loop run by W
    processes at once shows what the machine actually gives W workers at the time (on a
    machine loaded by other work it is well below the limit);
  * audit engine: `fixity.audit.check_replica(kind=deep, workers=W)` in-process (listing, tag
    files, every payload file re-read and its primary digest compared);
  * audit command: `strongroom --workers W audit --bag B --deep --no-repair` as a new process
    (the installed console script, as a user runs it), wall clock: Python start-up, config,
    catalog, Luigi, the check, the judgement, the ledger segment and replica record, the
    summary file, the end of the process;
  * --all-digests (sha256 and md5, what bagit.py checks) for the command;
  * `bagit.py --validate --processes 2` on the same bag folder (small dataset).
Memory: peak RSS of the audit command (the largest of its processes: the main one) at 20k and
200k files (and 1M), against the flatness goal (<= 1.20x the 20k peak).
Prints Markdown tables, the ratio against bagit.py and whether each goal is met.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Dict, List, Tuple

REPO = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):
    sys.path.insert(0, str(REPO))

from catalog.catalog import Catalog  # noqa: E402
from catalog.schema import BagRecord, FileRecord, ReplicaRecord  # noqa: E402

ALGS = ("sha256", "md5")
STAMP = "20240101T000000Z"
MIB = 1 << 20
STRONGROOM = Path(sys.executable).with_name("strongroom")   # the console script users run
GOAL_VS_BAGIT = 3.0      # files/s of the audit command over bagit.py --validate (issue 11)
GOAL_FLAT = 1.20         # peak RSS at 200k (1M) files over the peak at 20k (issues 11, 16)
# Commands run as an installed program runs: with its modules' bytecode cached (pip compiles it
# at install). A PYTHONDONTWRITEBYTECODE shell would otherwise make every run compile ~140
# modules again (0.2-0.3 s), which no user pays; the first, untimed pass writes the caches.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


# --------------------------------------------------------------------------------------------
# Building an archive with one stored bag


def write_config(root: Path) -> Path:
    for d in ("catalog", "staging", "policies", "replicas/a"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "strongroom.yaml").write_text(textwrap.dedent("""\
        catalog: ./catalog
        staging: ./staging
        policies: ./policies
        storage:
          site-a: {type: filesystem, root: ./replicas/a, site: bench}
        """))
    (root / "policies" / "self-built.yaml").write_text(
        "name: self-built\nchecksums: [sha256, md5]\nreplicas: [site-a]\n"
        "fixity: {deep_every: 90d, quick_every: 7d, daily_byte_budget: 1000TB}\n")
    return root / "strongroom.yaml"


def build(root: Path, collection: str, sizes: List[int], seed: int = 42) -> Tuple[Path, str, Path]:
    """(config, bag id, bag folder): the bag stored on site-a and registered; built once."""
    cfg = root / "strongroom.yaml"
    bag_id = f"BENCH/{collection}/{STAMP}-1"
    bag_dir = root / "replicas" / "a" / "BENCH" / collection / f"{STAMP}-1"
    marker = root / f".{collection}.complete"
    if marker.exists():
        return cfg, bag_id, bag_dir
    shutil.rmtree(root, ignore_errors=True)
    write_config(root)
    rng = random.Random(seed)
    entries: Dict[str, List[Tuple[str, str]]] = {a: [] for a in ALGS}
    records: List[FileRecord] = []
    chunk = rng.randbytes(8 * MIB)
    for i, size in enumerate(sizes):
        rel = f"data/d{i // 500:04d}/f{i:06d}.bin"
        path = bag_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        hashers = {a: hashlib.new(a) for a in ALGS}
        with open(path, "wb") as fh:
            left = size
            salt = i.to_bytes(8, "little")
            while left:
                n = min(left, 8 * MIB)   # the first piece starts with the salt (no 8 MiB copy per file)
                piece = (salt + chunk[: max(0, n - len(salt))])[:n] if left == size else chunk[:n]
                fh.write(piece)
                for h in hashers.values():
                    h.update(piece)
                left -= len(piece)
        digests = {a: h.hexdigest() for a, h in hashers.items()}
        for a in ALGS:
            entries[a].append((rel, digests[a]))
        records.append(FileRecord(bag_id=bag_id, path=rel, size=size, **digests))
    (bag_dir / "bagit.txt").write_text("BagIt-Version: 1.0\nTag-File-Character-Encoding: UTF-8\n")
    total = sum(sizes)
    (bag_dir / "bag-info.txt").write_text(
        f"Payload-Oxum: {total}.{len(sizes)}\nExternal-Identifier: urn:uuid:bench-{collection}\n")
    for a in ALGS:
        with open(bag_dir / f"manifest-{a}.txt", "w", encoding="utf-8") as fh:
            for rel, d in entries[a]:
                fh.write(f"{d}  {rel}\n")
    tags = ["bagit.txt", "bag-info.txt"] + [f"manifest-{a}.txt" for a in ALGS]
    for a in ALGS:
        with open(bag_dir / f"tagmanifest-{a}.txt", "w", encoding="utf-8") as fh:
            for name in tags:
                fh.write(f"{hashlib.new(a, (bag_dir / name).read_bytes()).hexdigest()}  {name}\n")
    for p in bag_dir.rglob("*"):
        if p.is_file():
            p.chmod(0o444)
    from policies.config import load_config

    config = load_config(cfg)
    catalog = Catalog(config.catalog)
    created = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
    catalog.add_bag(BagRecord(bag_id=bag_id, library="BENCH", collection=collection, collection_type="self-built",
                              title=None, policy="self-built", external_identifier=f"urn:uuid:bench-{collection}",
                              group_id=f"BENCH/{collection}/{STAMP}", part=1, part_count=1, file_count=len(sizes),
                              byte_count=total, created_at=created), records)
    catalog.record_replica(ReplicaRecord(bag_id=bag_id, target="site-a", site="bench", state="verified",
                                         verified_at=created, last_audit_at=created, last_audit_kind="deep",
                                         last_audit_outcome="success", recorded_at=created))
    marker.touch()
    return cfg, bag_id, bag_dir


# --------------------------------------------------------------------------------------------
# Measurements


def payload_files(bag_dir: Path) -> List[Path]:
    return sorted(p for p in (bag_dir / "data").rglob("*") if p.is_file())


def hash_loop(files: List[Path]) -> float:
    """Seconds for one thread to open, read and sha256 every file."""
    buf = bytearray(MIB)
    view = memoryview(buf)
    t = time.perf_counter()
    for p in files:
        h = hashlib.sha256()
        with open(p, "rb", buffering=0) as fh:
            while True:
                n = fh.readinto(buf)
                if not n:
                    break
                h.update(view[:n])
    return time.perf_counter() - t


def _hash_part(paths: List[str]) -> None:
    hash_loop([Path(p) for p in paths])


def hash_parallel(files: List[Path], workers: int) -> float:
    """Seconds for `workers` processes running the same loop over interleaved shares of the files:
    what plain hashing achieves in parallel on this machine right now (other load included)."""
    import multiprocessing

    shares = [[str(p) for p in files[i::workers]] for i in range(workers)]
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        t = time.perf_counter()
        pool.map(_hash_part, shares, chunksize=1)
        return time.perf_counter() - t


def engine(cfg: Path, bag_id: str, workers: int, all_digests: bool = False) -> float:
    from fixity.audit import ExpectedBag, check_replica
    from policies.config import load_config
    from storage_adapters.registry import open_target

    config = load_config(cfg)
    catalog = Catalog(config.catalog)
    expected = ExpectedBag.from_catalog(catalog, bag_id, config.policy("self-built"))
    spec = config.target("site-a")
    adapter = open_target(spec)
    t = time.perf_counter()
    check = check_replica(adapter, expected, kind="deep", all_digests=all_digests, workers=workers,
                          open_adapter=lambda: open_target(spec))
    elapsed = time.perf_counter() - t
    assert not check.findings, check.findings[:3]
    assert check.files_checked == expected.file_count
    return elapsed


def command(cfg: Path, bag_id: str, workers: int, *extra: str) -> Tuple[float, dict]:
    """Wall seconds of the audit command as a new process, and its peak RSS (KiB; `wait4`: the
    largest of the process and the pool processes it waited for)."""
    argv = [str(STRONGROOM), "--config", str(cfg), "--json", "--workers", str(workers), "audit",
            "--bag", bag_id, "--deep", "--no-repair", *extra]
    out, err = cfg.parent / "audit.out", cfg.parent / "audit.err"
    with open(out, "wb") as o, open(err, "wb") as e:
        t = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=o, stderr=e, cwd=str(cfg.parent), env=ENV)
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - t
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"audit failed ({proc.returncode}): {out.read_text()[-2000:]} {err.read_text()[-2000:]}")
    stats = {"rss_kib": usage.ru_maxrss, "cpu": usage.ru_utime + usage.ru_stime}
    summary = json.loads(out.read_text())
    assert summary["counts"]["success"] == 1, summary["counts"]
    return elapsed, stats


def bagit_validate(bag_dir: Path) -> float:
    exe = Path(sys.executable).with_name("bagit.py")
    t = time.perf_counter()
    proc = subprocess.run([str(exe), "--validate", "--processes", "2", str(bag_dir)], capture_output=True, text=True,
                          env=ENV)
    elapsed = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"bagit.py --validate failed: {proc.stderr[-2000:]}")
    return elapsed


def interleaved(measures, repeat: int) -> List[List[float]]:
    """Each measure `repeat` times, round by round (a, b, c, a, b, c...): on a machine shared
    with other work, a busy spell then slows every measure alike instead of one of them."""
    runs: List[List[float]] = [[] for _ in measures]
    for _ in range(repeat):
        for i, fn in enumerate(measures):
            runs[i].append(fn())
    return runs


# --------------------------------------------------------------------------------------------


def run_throughput(name: str, cfg: Path, bag_id: str, bag_dir: Path, workers: int, repeat: int,
                   with_bagit: bool) -> List[str]:
    files = payload_files(bag_dir)
    n = len(files)
    total = sum(p.stat().st_size for p in files)
    # Every audit run adds a replica record and a ledger segment: compact first, as an archive's
    # `strongroom catalog compact` does, so the rounds measure the audit, not the bench's own history.
    Catalog(str(cfg.parent / "catalog")).compact()
    hash_loop(files)                               # warm the page cache
    command(cfg, bag_id, workers)                  # and the bytecode caches (untimed)
    measures = [
        (f"hashlib.sha256 loop, 1 thread (x{workers} = limit)", lambda: hash_loop(files)),
        (f"same loop in {workers} processes at once (what the machine gives now)",
         lambda: hash_parallel(files, workers)),
        (f"audit engine (check_replica deep, workers={workers})", lambda: engine(cfg, bag_id, workers)),
        (f"`strongroom --workers {workers} audit --bag B --deep`", lambda: command(cfg, bag_id, workers)[0]),
        ("`... audit --deep --all-digests` (sha256+md5)",
         lambda: command(cfg, bag_id, workers, "--all-digests")[0]),
    ]
    if with_bagit:
        measures.append(("`bagit.py --validate --processes 2` (sha256+md5)", lambda: bagit_validate(bag_dir)))
    runs_of = interleaved([fn for _, fn in measures], repeat)
    rows = [(label, statistics.median(runs), runs, None) for (label, _), runs in zip(measures, runs_of)]
    h, e, c, a = rows[0][1], rows[2][1], rows[3][1], rows[4][1]
    b = rows[5][1] if with_bagit else 0.0
    limit_mbs = total / h / 1e6 * workers
    limit_fps = n / h * workers
    out = [f"### {name}: {n:,} files, {total / 1e6:,.1f} MB (workers={workers}, median of {repeat})", "",
           "| what | seconds (runs) | files/s | MB/s | vs limit |", "|---|---:|---:|---:|---:|"]
    for label, sec, runs, _ in rows:
        out.append(f"| {label} | {sec:.3f} ({', '.join(f'{r:.2f}' for r in runs)}) | {n / sec:,.0f} | "
                   f"{total / sec / 1e6:,.0f} | {(total / sec / 1e6) / limit_mbs:.2f}x |")
    out.append(f"| hashing limit (1 thread x {workers}) | | {limit_fps:,.0f} | {limit_mbs:,.0f} | 1.00x |")
    if with_bagit:
        bagit_runs, command_runs = rows[5][2], rows[3][2]
        out.append("")
        out.append(f"Audit command vs bagit.py, files/s: {b / c:.2f}x (primary digest), {b / a:.2f}x (both digests); "
                   f"engine vs bagit.py: {b / e:.2f}x; per round (primary digest): "
                   + ", ".join(f"{x / y:.2f}x" for x, y in zip(bagit_runs, command_runs)))
        per_round = statistics.median(x / y for x, y in zip(bagit_runs, command_runs))
        met = min(b / c, per_round) >= GOAL_VS_BAGIT
        out.append(f"Goal (command >= {GOAL_VS_BAGIT:.0f}x bagit.py, both as the ratio of the medians and as the "
                   f"median of the per-round ratios): {'met' if met else 'NOT met'} ({b / c:.2f}x, {per_round:.2f}x)")
    out.append("")
    return out


def run_memory(work: Path, workers: int, million: bool = False) -> List[str]:
    sizes = (20_000, 200_000) + ((1_000_000,) if million else ())
    out = ["### Memory: peak RSS of the audit command (deep, 64-byte files)", "",
           "| files | workers | seconds | files/s | peak RSS (MiB) |", "|---:|---:|---:|---:|---:|"]
    peaks: Dict[int, Dict[int, float]] = {}
    for n in sizes:
        cfg, bag_id, _ = build(work / f"memory-{n}", f"mem{n}", [64] * n, seed=n)
        for w in sorted({1, workers}):
            sec, stats = command(cfg, bag_id, w)
            peaks.setdefault(w, {})[n] = stats["rss_kib"] / 1024
            out.append(f"| {n:,} | {w} | {sec:.1f} | {n / sec:,.0f} | {stats['rss_kib'] / 1024:.0f} |")
    out.append("")
    for w, by_n in sorted(peaks.items()):
        for n in sizes[1:]:
            ratio = by_n[n] / by_n[20_000]
            out.append(f"Peak RSS at {n:,} files / at 20,000 (workers={w}): {ratio:.2f}x "
                       f"(flat: <= {GOAL_FLAT:.2f}x: {'met' if ratio <= GOAL_FLAT else 'NOT met'})")
    out.append("")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="/tmp/strongroom-bench-audit")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--only", default="small,large,memory")
    ap.add_argument("--large-gib", type=float, default=4.0)
    ap.add_argument("--million", action="store_true", help="memory: also a bag of 1,000,000 files")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    only = set(args.only.split(","))
    print(f"# bench_audit: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}, Python {sys.version.split()[0]}\n")
    if "small" in only:
        rng = random.Random(7)
        sizes = [rng.randint(1024, 8192) for _ in range(20_000)]
        cfg, bag, bag_dir = build(work / "small", "small", sizes)
        print("\n".join(run_throughput("small files", cfg, bag, bag_dir, args.workers, args.repeat, True)))
    if "large" in only:
        each = int(args.large_gib * (1 << 30) / 8)
        cfg, bag, bag_dir = build(work / f"large-{args.large_gib:g}", "large", [each] * 8)
        print("\n".join(run_throughput("large files", cfg, bag, bag_dir, args.workers, args.repeat, False)))
    if "memory" in only:
        print("\n".join(run_memory(work, args.workers, args.million)))
    print(f"(load average at the end: {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
