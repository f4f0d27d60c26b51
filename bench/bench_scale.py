"""Scale (issue 16): a central luigid against the local scheduler, 1/2/4 worker processes, luigid
with 10,000 pending tasks, and a synthetic collection of up to a million files.

    python bench/bench_scale.py ratio   [--files 3034] [--pairs 2]      luigid vs local deposit
    python bench/bench_scale.py workers [--files 6000] [--procs 1,2,4]  processes on one luigid
    python bench/bench_scale.py pending [--tasks 10000]                 luigid's answers, loaded
    python bench/bench_scale.py million [--files 100000,300000,1000000] [--workers 2] [--trace F]  deposit, status, audit --due, report
    python bench/bench_scale.py catalog [--files 100000,300000,1000000] status, --due selection only
    python bench/bench_scale.py rss     [--files 20000,200000] [--baseline DIR]  deposit peak RSS, ours vs DIR

Every archive has two folder targets, the catalog in a folder, virus_check off, and bags of at
most --bag-files files (so a big deposit is split per policy); sources are generated on the fly
(small random files, 100 per folder) and never kept. Wall time and peak RSS of each strongroom
process come from /usr/bin/time -v. `ratio` and `workers` interleave their runs (ours,
baseline, ours, baseline): the machine may be busy, and a ratio of neighbours says more than
either figure. luigid is started on a free loopback port with its own state file (tests/luigid.py)
and killed by its pid at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Optional

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.luigid import Luigid  # noqa: E402

ENV = {**os.environ, "STRONGROOM_PROGRESS": "0", "PYTHONPATH": str(REPO)}


def make_source(root: Path, count: int, seed: int = 1, low: int = 64, high: int = 2048) -> Path:
    rng = random.Random(seed)
    for i in range(count):
        folder = root / f"d{i // 100:05d}"
        if i % 100 == 0:
            folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{i:07d}.dat").write_bytes(rng.randbytes(rng.randint(low, high)))
    return root


def write_archive(folder: Path, bag_files: int) -> Path:
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "policies").mkdir(parents=True)
    for sub in ("a", "b"):
        (folder / "replicas" / sub).mkdir(parents=True)
    (folder / "strongroom.yaml").write_text("""\
catalog: ./catalog
staging: ./staging
policies: ./policies
storage:
  a: {type: filesystem, root: ./replicas/a, site: beijing}
  b: {type: filesystem, root: ./replicas/b, site: shanghai}
""", encoding="utf-8")
    (folder / "policies" / "p.yaml").write_text(
        f"name: p\nchecksums: [sha256]\nreplicas: [a, b]\nvirus_check: off\nbag: {{max_files: {bag_files}}}\n",
        encoding="utf-8")
    return folder / "strongroom.yaml"


def timed(cfg: Path, *argv, ok=(0,)) -> tuple:
    """(wall seconds, peak RSS MiB, stdout) of one strongroom run, from /usr/bin/time -v."""
    proc = subprocess.run(["/usr/bin/time", "-v", sys.executable, "-m", "pipelines", "--config", str(cfg),
                           *map(str, argv)], cwd=REPO, env=ENV, capture_output=True, text=True)
    if proc.returncode not in ok:
        raise SystemExit(f"{' '.join(map(str, argv))} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n"
                         f"{proc.stderr[-3000:]}")
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1))
    return _wall(proc.stderr), rss / 1024, proc.stdout


def spawn(cfg: Path, *argv) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pipelines", "--config", str(cfg), *map(str, argv)], cwd=REPO,
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def deposit_args(src: Path, collection: str) -> list:
    return ["deposit", src, "--library", "BENCH", "--collection", collection, "--type", "self-built", "--policy", "p"]


def ratio(args, work: Path) -> None:
    """A deposit through luigid against the same deposit on the local scheduler, interleaved."""
    src = make_source(work / "src", args.files)
    rows = []
    with Luigid(work / "luigid") as luigid:
        for pair in range(args.pairs):
            for how in ("luigid", "local"):
                cfg = write_archive(work / f"archive-{how}-{pair}", args.bag_files)
                extra = ["--scheduler-url", luigid.url] if how == "luigid" else []
                seconds, rss, _ = timed(cfg, *extra, *deposit_args(src, f"R{pair}"))
                rows.append((pair, how, seconds, rss))
                print(f"pair {pair} {how:<7} {seconds:7.1f} s  {rss:6.0f} MiB", flush=True)
                shutil.rmtree(work / f"archive-{how}-{pair}")
    print("\n| pair | luigid s | local s | ratio |\n|---|---|---|---|")
    for pair in range(args.pairs):
        ours = next(r[2] for r in rows if r[0] == pair and r[1] == "luigid")
        base = next(r[2] for r in rows if r[0] == pair and r[1] == "local")
        print(f"| {pair} | {ours:.1f} | {base:.1f} | {ours / base:.2f} |")


def workers(args, work: Path) -> None:
    """Deposit and deep audit with k processes running the same command on one luigid."""
    src = make_source(work / "src", args.files)
    procs: List[int] = [int(x) for x in args.procs.split(",")]
    print("| processes | deposit s | files/s | deep audit s | files/s |\n|---|---|---|---|---|", flush=True)
    with Luigid(work / "luigid") as luigid:
        for k in procs:
            cfg = write_archive(work / f"archive-{k}", args.bag_files)
            url = ["--scheduler-url", luigid.url]
            began = time.monotonic()
            running = [spawn(cfg, *url, *deposit_args(src, f"W{k}")) for _ in range(k)]
            codes = [p.wait() for p in running]
            dep = time.monotonic() - began
            if any(codes):
                raise SystemExit(f"deposit with {k} processes: {codes} {running[0].stderr.read()[-2000:]}")
            began = time.monotonic()
            running = [spawn(cfg, *url, "audit", "--all", "--deep") for _ in range(k)]
            codes = [p.wait() for p in running]
            aud = time.monotonic() - began
            if any(codes):
                raise SystemExit(f"audit with {k} processes: {codes} {running[0].stderr.read()[-2000:]}")
            print(f"| {k} | {dep:.1f} | {args.files / dep:.0f} | {aud:.1f} | {2 * args.files / aud:.0f} |", flush=True)
            shutil.rmtree(work / f"archive-{k}")


def pending(args, work: Path) -> None:
    """luigid's answer times with `--tasks` pending tasks (one worker's, as after a big plan)."""
    with Luigid(work / "luigid") as luigid:
        worker = "bench-worker"
        luigid.call("add_worker", worker=worker, info={"host": "bench", "pid": "1"})
        began = time.monotonic()
        for i in range(args.tasks):
            luigid.call("add_task", worker=worker, task_id=f"CheckReplica_bench_{i:06d}", status="PENDING",
                        family="CheckReplica", params={"bag_id": f"B/C/{i}"}, runnable=True)
        added = time.monotonic() - began
        print(f"{args.tasks} add_task calls in {added:.1f} s ({args.tasks / added:.0f}/s)")
        for method, kwargs in (("get_work", {"worker": worker, "host": "bench"}),
                               ("count_pending", {"worker": worker}),
                               ("ping", {"worker": worker}),
                               ("task_list", {"status": "PENDING", "upstream_status": ""}),
                               ("task_list", {"status": "RUNNING", "upstream_status": ""}),
                               ("worker_list", {}),
                               ("set_task_status_message", {"task_id": "CheckReplica_bench_000001",
                                                            "status_message": "x"})):
            times = []
            for _ in range(5):
                t = time.monotonic()
                luigid.call(method, **kwargs)
                times.append(time.monotonic() - t)
            times.sort()
            print(f"| {method} {json.dumps(kwargs)[:60]} | median {times[2] * 1000:.0f} ms | max {times[-1] * 1000:.0f} ms |",
                  flush=True)


def million(args, work: Path) -> None:
    """Deposit of N files split into bags, then status, audit --due selection and reports."""
    print("| files | bags | deposit s | files/s | peak RSS MiB | sampled: building bags | after | status s | "
          "audit --due s | report s | report RSS MiB |\n|---|---|---|---|---|---|---|---|---|---|---|", flush=True)
    for n in [int(x) for x in args.files.split(",")]:
        src = work / f"src-{n}"
        began = time.monotonic()
        make_source(src, n)
        made = time.monotonic() - began
        cfg = write_archive(work / f"archive-{n}", args.bag_files)
        trace = args.trace.with_name(f"{args.trace.stem}-{n}{args.trace.suffix}") if args.trace else None
        dep, rss, build, after, bags = _sampled(REPO, cfg, src, n, args.workers, trace)
        st, _, _ = timed(cfg, "--json", "status")
        due, _, _ = timed(cfg, "--json", "audit", "--due")
        rep, rep_rss, _ = timed(cfg, "report", "fixity", "-o", work / f"report-{n}.html")
        print(f"| {n:,} | {bags} | {dep:.0f} | {n / dep:.0f} | {rss:.0f} | {build:.0f} | {after:.0f} | {st:.1f} | "
              f"{due:.1f} | {rep:.1f} | {rep_rss:.0f} |  (source made in {made:.0f} s)", flush=True)
        shutil.rmtree(src)
        shutil.rmtree(work / f"archive-{n}")


def rss(args, work: Path) -> None:
    """Peak RSS of `deposit --workers N` at each size, ours and a baseline tree interleaved.

    The baseline is another checkout (`git archive <commit> | tar -x -C DIR`), run with the same
    Python. Besides /usr/bin/time's peak (the largest process of the run), every process of the
    run is sampled every 2 s, so the peak is split into before and after bags.json (the building
    of the bags against replication, verification and registration)."""
    repos = [("ours", REPO)] + ([("baseline", Path(args.baseline))] if args.baseline else [])
    print("| files | bags | tree | deposit s | files/s | peak RSS MiB | sampled: building bags | after |\n"
          "|---|---|---|---|---|---|---|---|", flush=True)
    for n in [int(x) for x in args.files.split(",")]:
        src = make_source(work / f"src-{n}", n)
        for name, repo in repos:
            cfg = write_archive(work / f"archive-{name}-{n}", args.bag_files)
            seconds, peak, build, after, bags = _sampled(repo, cfg, src, n, args.workers)
            print(f"| {n:,} | {bags} | {name} | {seconds:.0f} | {n / seconds:.0f} | {peak:.0f} | {build:.0f} | "
                  f"{after:.0f} |", flush=True)
            shutil.rmtree(work / f"archive-{name}-{n}")
        shutil.rmtree(src)


def _sampled(repo: Path, cfg: Path, src: Path, n: int, workers: int, trace: Optional[Path] = None) -> tuple:
    """(wall s, peak RSS MiB, sampled peak before / after bags.json, bags) of one deposit from `repo`.

    With `trace`, every sample is also a line there (seconds, phase, bags registered, the largest
    process's and the main process's RSS), to show where a run's memory grows, not only its peak."""
    env = {**ENV, "PYTHONPATH": str(repo)}
    proc = subprocess.Popen(["/usr/bin/time", "-v", sys.executable, "-m", "pipelines", "--config", str(cfg),
                             "--json", "--workers", str(workers), *deposit_args(src, f"M{n}")],
                            cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peaks = [0, 0]
    state = cfg.parent / "staging" / ".state"
    began = time.monotonic()
    log = trace.open("w", encoding="utf-8") if trace else None
    while proc.poll() is None:
        phase = 1 if any(state.glob("*/bags.json")) else 0
        sizes = _tree_rss(proc.pid)
        peaks[phase] = max(peaks[phase], max(sizes, default=0))
        if log:
            main = _tree_rss(proc.pid, below=False)
            log.write(f"{time.monotonic() - began:.0f} {'after' if phase else 'build'} "
                      f"{len(list(state.glob('*/*.registered.json')))} {max(sizes, default=0):.0f} "
                      f"{max(main, default=0):.0f}\n")
            log.flush()
        time.sleep(2)
    if log:
        log.close()
    out, err = proc.communicate()
    if proc.returncode:
        raise SystemExit(f"deposit from {repo} failed ({proc.returncode}):\n{err[-3000:]}")
    peak = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", err).group(1)) / 1024
    return _wall(err), peak, peaks[0], peaks[1], len(json.loads(out)["bags"])


def _tree_rss(top: int, below: bool = True) -> List[float]:
    """RSS (MiB) of every process below `top` (Luigi forks one per task with --workers > 1); with
    below=False, of the strongroom process under /usr/bin/time (Luigi's worker and scheduler) only."""
    parent, rss_of = {}, {}
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            text = status.read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        pid = int(status.parent.name)
        parent[pid] = int(fields.get("PPid", "0"))
        rss_of[pid] = int(fields.get("VmRSS", "0 kB").split()[0]) / 1024
    if not below:
        return [rss_of[p] for p, pp in parent.items() if pp == top and p in rss_of]
    tree, grew = {top}, True
    while grew:
        new = {p for p, pp in parent.items() if pp in tree and p not in tree}
        tree |= new
        grew = bool(new)
    return [rss_of[p] for p in tree if p in rss_of]


DUE = """
import sys, time
from catalog.access import open_catalog
from fixity import due
from policies.config import load_config
config = load_config(sys.argv[1])
began = time.monotonic()
selection = due.select(config, open_catalog(config, must_exist=True), mode="due")
print(len(selection.chosen), len(selection.deferred), round(time.monotonic() - began, 2))
"""


def catalog(args, work: Path) -> None:
    """status and the audit --due selection over a catalog of N files built through the catalog's
    API (bench/bench_reports.py's builder: no storage behind it), for sizes a deposit on this
    machine cannot reach in an evening."""
    sys.path.insert(0, str(REPO / "bench"))
    from bench_reports import build

    print("| files | bags | built in | status --json | its RSS | audit --due selection | its RSS | chosen / deferred |\n"
          "|---|---|---|---|---|---|---|---|", flush=True)
    for n in [int(x) for x in args.files.split(",")]:
        root = work / f"catalog-{n}"
        began = time.monotonic()
        built = build(root, n, args.bag_files, 10_000, 1_000)
        made = time.monotonic() - began
        cfg = root / "strongroom.yaml"
        st, st_rss, _ = timed(cfg, "--json", "status", ok=(0, 1))
        proc = subprocess.run(["/usr/bin/time", "-v", sys.executable, "-c", DUE, str(cfg)], cwd=REPO, env=ENV,
                              capture_output=True, text=True, check=True)
        chosen, deferred, seconds = proc.stdout.split()
        rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1)) / 1024
        print(f"| {n:,} | {built['bags']} | {made:.0f} s | {st:.1f} s | {st_rss:.0f} MiB | {seconds} s (process "
              f"{_wall(proc.stderr):.1f} s) | {rss:.0f} MiB | {chosen} / {deferred} |", flush=True)
        shutil.rmtree(root)


def _wall(time_v: str) -> float:
    h, m, s = (float(x or 0) for x in re.search(r"Elapsed \(wall clock\) time .*: (?:(\d+):)?(\d+):([\d.]+)",
                                                 time_v).groups())
    return h * 3600 + m * 60 + s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["ratio", "workers", "pending", "million", "catalog", "rss"])
    ap.add_argument("--files", default=None, help="files per source (million: a comma list)")
    ap.add_argument("--pairs", type=int, default=2)
    ap.add_argument("--procs", default="1,2,4")
    ap.add_argument("--tasks", type=int, default=10000)
    ap.add_argument("--bag-files", type=int, default=None, help="policy bag.max_files")
    ap.add_argument("--workers", type=int, default=2, help="million, rss: the deposit's --workers")
    ap.add_argument("--baseline", default=None, help="rss: a checkout of the baseline to interleave with ours")
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--trace", type=Path, default=None,
                    help="million: write each deposit's RSS samples to TRACE-<files>.<ext> (one line per 2 s)")
    args = ap.parse_args()
    defaults = {"ratio": ("3034", 1000), "workers": ("6000", 1000), "pending": ("0", 1000),
                "million": ("100000,300000,1000000", 100000), "catalog": ("100000,300000,1000000", 10000),
                "rss": ("20000,200000", 20000)}[args.what]
    args.files = args.files or defaults[0]
    if args.what not in ("million", "catalog", "rss"):
        args.files = int(args.files)
    args.bag_files = args.bag_files or defaults[1]
    work = args.work or Path(tempfile.mkdtemp(prefix=f"sr-bench-scale-{args.what}-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        {"ratio": ratio, "workers": workers, "pending": pending, "million": million,
         "catalog": catalog, "rss": rss}[args.what](args, work)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
