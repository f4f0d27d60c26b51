"""Deposit benchmark against what a librarian would script by hand (issue 11), in interleaved runs.

    python bench/bench_ingest.py [--small N] [--large 4x512MiB] [--rounds R] [--work DIR]
                                 [--corpus small|large] [--virus-check off|required] [--strace]

Corpora (built once under --work, default /tmp/strongroom-bench):
  small: N files of 1-32 KiB (default 20,000): real files copied from /usr/share (those sizes,
         a quarter of N at most), topped up with random bytes (unknown formats: FIDO's worst case);
  large: COUNTxSIZE files of random bytes (default 4x512MiB).

baseline: `bagit.py --processes 2 --sha256 --md5` on a copy of the corpus, `cp -r` of the bag to
          two folders, `bagit.py --validate --processes 2` of each (for the large corpus also the
          same ending with `sync`: the plain baseline never waits for the disk);
strongroom: `strongroom --workers 2 deposit` into a fresh `strongroom init` archive (two
          filesystem replicas; sha256 + md5; FIDO; PREMIS; catalog; every replica re-read after
          it was made durable).

Each round runs strongroom and the baseline(s) one after the other, the order alternating, so a
busy machine slows both alike; the ratios are medians over the rounds. Wall time, CPU (user+sys
of every child process) and peak RSS come from one small wrapper process per command
(os.wait4's rusage), the byte and syscall accounting from the wrapper's /proc/self/io, to which
Linux adds the counters of every waited-for child: read()/write() bytes (page cache included)
and calls, and bytes that reached the block device. `--strace` adds one extra, untimed run of each
side under `strace -f -c` for the syscall table (it slows the run a lot, so never timed).

Virus check: off by default here (the goal compares with a baseline that scans nothing); with
`--virus-check required` a private clamd (tests/clamav.py) is started and every byte is scanned
while staging, as the default policies ask.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]
GOAL = 1.0  # strongroom / baseline, wall and CPU (issue 11)

#: The wrapper: runs one command, writes {"wall", "cpu", "rss_mib", "io": {...}} as JSON to argv[1].
_WRAP = r"""
import json, os, sys, time
def io():
    with open("/proc/self/io") as fh:
        return {k: int(v) for k, v in (line.split(": ") for line in fh)}
before = io()
t0 = time.perf_counter()
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
_, status, ru = os.wait4(pid, 0)
wall = time.perf_counter() - t0
after = io()
out = {"wall": wall, "cpu": ru.ru_utime + ru.ru_stime, "rss_mib": ru.ru_maxrss / 1024,
       "rc": os.waitstatus_to_exitcode(status), "io": {k: after[k] - before[k] for k in after}}
with open(sys.argv[1], "w") as fh:
    json.dump(out, fh)
"""


@dataclass
class Run:
    """One measured command (or a sequence of them, summed; peak RSS is the max)."""

    wall: float = 0.0
    cpu: float = 0.0
    rss_mib: float = 0.0
    io: Dict[str, int] = field(default_factory=dict)

    def add(self, other: "Run") -> None:
        self.wall += other.wall
        self.cpu += other.cpu
        self.rss_mib = max(self.rss_mib, other.rss_mib)
        for k, v in other.io.items():
            self.io[k] = self.io.get(k, 0) + v


def measure(cmd: Sequence, **kw) -> Run:
    """Run `cmd` under the wrapper; a failing command stops the benchmark (its output shown)."""
    with tempfile.NamedTemporaryFile("r", suffix=".json") as result:
        proc = subprocess.run([sys.executable, "-c", _WRAP, result.name] + [str(c) for c in cmd],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kw)
        output = proc.stdout
        data = json.loads(result.read() or "{}")
    if proc.returncode or data.get("rc"):
        sys.exit(f"command failed ({' '.join(map(str, cmd))}):\n{output.decode(errors='replace')[-3000:]}")
    return Run(data["wall"], data["cpu"], data["rss_mib"], data["io"])


# --- a quiet file system for every timed run ------------------------------------------------

class Trash:
    """Where the output of an earlier run goes (one rename) until every round is over.

    Why: on a journal-less ext4 (this project's machines: `dmesg` says "mounted filesystem ...
    without journal") a new inode is never one freed less than 60 s ago, or 360 s ago once its
    inode table block is dirty again, which the next create in that block makes it:
    `find_inode_bit` steps past each such inode, so for minutes after `rm -rf` of tens of
    thousands of files every file created costs several times what it costs on a quiet file
    system (docs/benchmarks.md, session 25; bench/fs_create_recency.py). Deleting the last run's
    output just before a timed run billed that to whichever side ran next. Here nothing is
    deleted from the first round to the last: old output is renamed aside and deleted when the
    corpus is done (a small corpus needs ~1.5 GB per round). Before the first round the bench
    syncs and waits 61 s; files deleted by anything else in the minutes before it can still slow
    both sides' creates. `keep=False` (the large corpus: a handful of inodes, and no room on the
    disk for several copies) deletes at once, as before.
    """

    QUIET_S = 61.0

    def __init__(self, root: Path, keep: bool):
        self.root, self.keep, self.count = root, keep, 0
        self.root.mkdir(parents=True, exist_ok=True)

    def retire(self, path: Path) -> None:
        if not os.path.lexists(path):
            return
        if not self.keep:
            shutil.rmtree(path, ignore_errors=True)
            return
        self.count += 1
        os.rename(path, self.root / f"{os.getpid()}-{self.count}")

    def empty(self) -> None:
        for entry in list(self.root.iterdir()):
            shutil.rmtree(entry, ignore_errors=True)

    def settle(self) -> None:
        """Before the first round: leftovers of an interrupted run deleted, sync, a quiet minute."""
        self.empty()
        if self.keep:
            subprocess.run(["sync"], check=True)
            print(f"  (waiting {self.QUIET_S:.0f} s: files deleted in the last minute make new ones slow "
                  "on this file system, see class Trash)", flush=True)
            time.sleep(self.QUIET_S)


TRASH: Optional[Trash] = None  # set per corpus by main()


def retire(path: Path) -> None:
    if TRASH is not None:
        TRASH.retire(path)
    else:
        shutil.rmtree(path, ignore_errors=True)


# --- corpora ---------------------------------------------------------------------------------

def done_marker(root: Path) -> Path:
    return root.parent / f"{root.name}.complete"


def build_small(root: Path, count: int) -> None:
    if done_marker(root).exists():
        return
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    rng = random.Random(42)
    n = 0
    real = min(count // 4, 5000)
    for dirpath, _, files in os.walk("/usr/share"):
        for name in sorted(files):
            p = os.path.join(dirpath, name)
            try:
                if os.path.islink(p) or not 1024 <= os.path.getsize(p) <= 32768:
                    continue
                dest = root / "real" / f"d{n // 500:03d}" / f"{n:06d}-{name}"
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(p, dest)
            except OSError:
                continue
            n += 1
            if n >= real:
                break
        if n >= real:
            break
    while n < count:
        dest = root / "random" / f"d{n // 500:04d}" / f"{n:06d}.bin"
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(rng.randbytes(rng.randint(1024, 32768)))
        n += 1
    done_marker(root).touch()


def build_large(root: Path, total_mib: int, count: int = 4) -> None:
    """`count` files of total_mib / count MiB each (bench_virus.py passes the total only)."""
    mib = total_mib // count
    if done_marker(root).exists():
        return
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    chunk = os.urandom(1 << 20)
    for i in range(count):
        with open(root / f"scan-{i}.raw", "wb") as fh:
            for j in range(mib):
                fh.write(chunk[(i * 131 + j) % 4093:] + chunk[: (i * 131 + j) % 4093])  # distinct blocks
    done_marker(root).touch()


def corpus_stats(root: Path):
    files = total = 0
    for dirpath, _, names in os.walk(root):
        for name in names:
            files += 1
            total += os.path.getsize(os.path.join(dirpath, name))
    return files, total


def check_room(name: str, work: Path, nbytes: int, rounds: int, before: bool) -> None:
    """Exit 2 up front, naming the folder and the figures, when the corpus's runs cannot fit:
    a disk filled mid-run fails one side's `cp` and wastes the rounds before it.

    Each Strongroom run stores the payload twice (two replicas; staging's copy becomes one of
    them), the baseline three times (the bag, two `cp -r`). The small corpus keeps every run's
    output until it is done (class Trash); the large one deletes the last output of each side
    before its next run, so at most one output per side is held, and what is already there
    from an earlier bench will be freed."""
    per_round = (2 + 3 + (2 if before else 0)) * nbytes
    if name == "small":
        needed, freed = per_round * rounds, 0
    else:
        needed = per_round
        freed = sum(corpus_stats(work / f"{name}-{part}")[1]
                    for part in ("archive", "bagit", "cp-a", "cp-b") if (work / f"{name}-{part}").exists())
    free = shutil.disk_usage(work).free
    if free + freed < needed * 1.05:
        print(f"bench_ingest: {work} has {free / 2**30:.1f} GiB free ({freed / 2**30:.1f} GiB more to be freed "
              f"as it goes); the {name} corpus needs about {needed / 2**30:.1f} GiB for {rounds} round(s): "
              "free space, or fewer rounds", file=sys.stderr)
        sys.exit(2)


# --- the two sides ---------------------------------------------------------------------------

VIRUS_CHECK = "off"  # set by main() from --virus-check


def fresh_archive(base: Path, env: Optional[dict] = None) -> Path:
    """A default `strongroom init` archive (two filesystem replicas), virus_check per --virus-check;
    `env` runs another checkout's init (--before: its defaults are the ones it reads)."""
    retire(base)
    subprocess.run([BIN / "strongroom", "init", base], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, env=env)
    if VIRUS_CHECK != "required":
        for p in (base / "policies").glob("*.yaml"):
            p.write_text(p.read_text("utf-8").replace("virus_check: required", f"virus_check: {VIRUS_CHECK}"),
                         "utf-8")
    return base / "strongroom.yaml"


def strongroom_cmd(cfg: Path, corpus: Path, name: str) -> List:
    return [BIN / "strongroom", "--config", cfg, "--workers", "2", "deposit", corpus,
            "--library", "BENCH", "--collection", name, "--type", "purchased"]


def run_strongroom(name: str, corpus: Path, work: Path, code: Optional[str] = None) -> Run:
    """One deposit; `code`: a checkout of another Strongroom version to run instead (--before)."""
    env = dict(os.environ, PYTHONPATH=code) if code else None
    cfg = fresh_archive(work / f"{name}-archive", env)
    return measure(strongroom_cmd(cfg, corpus, name), env=env)


def baseline_cmds(name: str, corpus: Path, work: Path, sync: bool) -> List[List]:
    copy = work / f"{name}-bagit"
    cmds: List[List] = [[BIN / "bagit.py", "--processes", "2", "--sha256", "--md5", "--quiet", copy]]
    for site in ("a", "b"):
        dest = work / f"{name}-cp-{site}"
        cmds.append(["cp", "-r", copy, dest])
        cmds.append([BIN / "bagit.py", "--validate", "--processes", "2", "--quiet", dest])
    if sync:
        cmds.append(["sync"])
    return cmds


def prepare_baseline(name: str, corpus: Path, work: Path) -> None:
    """The copy bagit.py bags in place and the cp destinations: set up outside the timing."""
    copy = work / f"{name}-bagit"
    retire(copy)
    shutil.copytree(corpus, copy)
    for site in ("a", "b"):
        retire(work / f"{name}-cp-{site}")
    subprocess.run(["sync"], check=True)


def run_baseline(name: str, corpus: Path, work: Path, sync: bool) -> Run:
    prepare_baseline(name, corpus, work)
    total = Run()
    for cmd in baseline_cmds(name, corpus, work, sync):
        total.add(measure(cmd))
    return total


def strace_counts(cmds: List[List], env: Optional[dict] = None) -> Dict[str, int]:
    """Syscall counts of a sequence of commands, from `strace -f -c` (one untimed run)."""
    counts: Dict[str, int] = {}
    for cmd in cmds:
        with tempfile.NamedTemporaryFile("r", suffix=".strace") as out:
            subprocess.run(["strace", "-f", "-c", "-o", out.name] + [str(c) for c in cmd], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
            for line in out.read().splitlines():
                m = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)\s*$", line)
                if m and m.group(2) != "total":
                    counts[m.group(2)] = counts.get(m.group(2), 0) + int(m.group(1))
    return counts


# --- report ------------------------------------------------------------------------------------

def median(values: List[float]) -> float:
    return statistics.median(values) if values else float("nan")


def report(name: str, files: int, nbytes: int, runs: Dict[str, List[Run]], syscalls: Dict[str, Dict[str, int]]):
    print(f"\n## {name}: {files:,} files, {nbytes / 2**20:,.0f} MiB, {len(runs['strongroom'])} interleaved round(s)")
    print("| side | wall s (median) | CPU s (median) | peak RSS MiB | read B/B | written B/B | to disk B/B "
          "| read calls/file | write calls/file |")
    print("|---|---|---|---|---|---|---|---|---|")
    for side, rs in runs.items():
        io = rs[-1].io
        print(f"| {side} | {median([r.wall for r in rs]):.2f} | {median([r.cpu for r in rs]):.2f} "
              f"| {max(r.rss_mib for r in rs):.0f} | {io.get('rchar', 0) / nbytes:.2f} "
              f"| {io.get('wchar', 0) / nbytes:.2f} | {io.get('write_bytes', 0) / nbytes:.2f} "
              f"| {io.get('syscr', 0) / files:.1f} | {io.get('syscw', 0) / files:.1f} |")
    if syscalls:
        names = sorted({k for c in syscalls.values() for k in c},
                       key=lambda k: -max(c.get(k, 0) for c in syscalls.values()))[:14]
        print("\nsyscalls per file (strace -f -c, one untimed run each):")
        print("| syscall | " + " | ".join(syscalls) + " |")
        print("|---|" + "---|" * len(syscalls))
        for k in names:
            print(f"| {k} | " + " | ".join(f"{c.get(k, 0) / files:.2f}" for c in syscalls.values()) + " |")
    s = runs["strongroom"]
    for base in [k for k in runs if k != "strongroom"]:
        b = runs[base]
        wall = [x.wall / y.wall for x, y in zip(s, b)]
        cpu = [x.cpu / y.cpu for x, y in zip(s, b)]
        for what, ratios in (("wall", wall), ("CPU", cpu)):
            r = median(ratios)
            rounds = ", ".join(f"{x:.2f}" for x in ratios)
            if base == "before":
                print(f"{name}: strongroom/before {what} {r:.2f}x (rounds: {rounds}): this version against --before")
                continue
            verdict = "met" if r <= GOAL else "NOT met"
            print(f"{name}: strongroom/{base} {what} {r:.2f}x (rounds: {rounds}) goal <= {GOAL:.1f}x: {verdict}")


def parse_large(spec: str):
    m = re.fullmatch(r"(\d+)x(\d+)(MiB|GiB)", spec)
    if not m:
        raise argparse.ArgumentTypeError(f"--large {spec!r}: expected COUNTxSIZE such as 4x512MiB")
    return int(m.group(1)), int(m.group(2)) * (1024 if m.group(3) == "GiB" else 1)


def main(argv: Optional[Sequence[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", type=int, default=20000, help="files in the small corpus (default 20000)")
    ap.add_argument("--large", type=parse_large, default=(4, 512), help="large corpus, e.g. 4x512MiB (default)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--work", default="/tmp/strongroom-bench")
    ap.add_argument("--corpus", choices=["small", "large"], default=None, help="only this corpus")
    ap.add_argument("--virus-check", choices=["off", "required"], default="off")
    ap.add_argument("--strace", action="store_true", help="also count syscalls (one untimed run per side)")
    ap.add_argument("--before", metavar="DIR", default=None,
                    help="also run the Strongroom of this checkout (e.g. `git archive` of an older commit), "
                         "interleaved like the others, as the side 'before'")
    ap.add_argument("--ours", metavar="DIR", default=None,
                    help="run the side 'strongroom' from this checkout (e.g. `git archive HEAD`: committed "
                         "work only, when others edit the working tree) instead of the installed one")
    args = ap.parse_args(argv)
    global VIRUS_CHECK
    VIRUS_CHECK = args.virus_check
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    corpora = {}
    if args.corpus in (None, "small"):
        corpora["small"] = work / f"corpus-small-{args.small}"
        build_small(corpora["small"], args.small)
    if args.corpus in (None, "large"):
        count, mib = args.large
        corpora["large"] = work / f"corpus-large-{count}x{mib}"
        build_large(corpora["large"], count * mib, count)
    clamd = None
    if VIRUS_CHECK == "required":
        sys.path.insert(0, str(REPO))
        from tests.clamav import Clamd

        clamd = Clamd(work / "clamd-ingest").start()
        os.environ["STRONGROOM_CLAMAV"] = clamd.socket
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start; "
          f"virus check: {VIRUS_CHECK}")
    global TRASH
    try:
        for name, corpus in corpora.items():
            files, nbytes = corpus_stats(corpus)
            check_room(name, work, nbytes, args.rounds, bool(args.before))
            TRASH = Trash(work / "trash", keep=name == "small")
            TRASH.settle()
            sides = ["strongroom", "baseline"] + (["baseline+sync"] if name == "large" else []) + (
                ["before"] if args.before else [])
            runs: Dict[str, List[Run]] = {s: [] for s in sides}
            for i in range(args.rounds):
                order = sides if i % 2 == 0 else sides[::-1]
                for side in order:
                    if side in ("strongroom", "before"):
                        runs[side].append(run_strongroom(name, corpus, work,
                                                         args.before if side == "before" else args.ours))
                    else:
                        runs[side].append(run_baseline(name, corpus, work, sync=side.endswith("sync")))
                    print(f"  round {i + 1} {name} {side}: {runs[side][-1].wall:.2f} s wall, "
                          f"{runs[side][-1].cpu:.2f} s CPU", flush=True)
            syscalls: Dict[str, Dict[str, int]] = {}
            if args.strace:
                env = dict(os.environ, PYTHONPATH=args.ours) if args.ours else None
                cfg = fresh_archive(work / f"{name}-archive", env)
                syscalls["strongroom"] = strace_counts([strongroom_cmd(cfg, corpus, name)], env=env)
                prepare_baseline(name, corpus, work)
                syscalls["baseline"] = strace_counts(baseline_cmds(name, corpus, work, sync=False))
            report(name, files, nbytes, runs, syscalls)
            TRASH.empty()
    finally:
        if clamd is not None:
            clamd.stop()
    print(f"\nload average {os.getloadavg()[0]:.2f} at the end (other work on the machine slows both sides)")


if __name__ == "__main__":
    main()
