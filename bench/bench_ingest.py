"""Ingest and deposit benchmarks against the tools a library would otherwise use.

    python bench/bench_ingest.py [--small N] [--large-mib M] [--work DIR] [--only ingest|deposit]

Corpora (built once under --work, default /tmp/strongroom-bench):
  small: N files of 1-64 KiB (default 20,000): real files copied from /usr/share (those sizes),
         topped up with random bytes (unknown formats: FIDO's worst case);
  large: four files of M/4 MiB random bytes (default 2,048 MiB in all).

ingest:  `bagit.py --processes 2 --sha256 --md5` on a copy of the corpus (bags in place,
         identifies nothing)  vs  Strongroom's ingest to a validated bag in staging
         (copy + sha256 + md5 + FIDO identification + full validation; source untouched).
deposit: bagit.py as above + two `cp -r` copies + `bagit.py --validate --processes 2` of each
         vs  `strongroom deposit` with two filesystem replicas (ingest, copy, re-read and verify
         every copy, catalog).
Wall time and peak RSS come from /usr/bin/time; page cache is warm for both sides (the corpus
was just written), which favours neither. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def done_marker(root: Path) -> Path:
    return root.parent / f"{root.name}.complete"


def build_small(root: Path, count: int) -> None:
    if done_marker(root).exists():
        return
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    rng = random.Random(42)
    n = 0
    for dirpath, _, files in os.walk("/usr/share"):
        for name in sorted(files):
            p = os.path.join(dirpath, name)
            try:
                if os.path.islink(p) or not 1024 <= os.path.getsize(p) <= 65536:
                    continue
                dest = root / "real" / f"d{n // 500:03d}" / f"{n:05d}-{name}"
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(p, dest)
            except OSError:
                continue
            n += 1
            if n >= min(count // 4, 5000):
                break
        if n >= min(count // 4, 5000):
            break
    while n < count:
        dest = root / "random" / f"d{n // 500:03d}" / f"{n:05d}.bin"
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(rng.randbytes(rng.randint(1024, 65536)))
        n += 1
    done_marker(root).touch()


def build_large(root: Path, mib: int) -> None:
    if done_marker(root).exists():
        return
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    chunk = os.urandom(1 << 20)
    for i in range(4):
        with open(root / f"scan-{i}.raw", "wb") as fh:
            for j in range(mib // 4):
                fh.write(chunk[j % 7:] + chunk[: j % 7])  # distinct blocks, cheap to make
    done_marker(root).touch()


def corpus_copy(src: Path, dest: Path) -> None:
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(src, dest)


def timed(cmd, **kw):
    """(wall seconds, peak RSS MiB) of a command run under /usr/bin/time."""
    out = tempfile.NamedTemporaryFile(delete=False)
    out.close()
    t0 = time.perf_counter()
    subprocess.run(["/usr/bin/time", "-f", "%M", "-o", out.name] + [str(c) for c in cmd], check=True,
                   stdout=subprocess.DEVNULL, **kw)
    wall = time.perf_counter() - t0
    rss = int(Path(out.name).read_text().strip().splitlines()[-1]) / 1024
    os.unlink(out.name)
    return wall, rss


def fresh_archive(base: Path) -> Path:
    shutil.rmtree(base, ignore_errors=True)
    subprocess.run([BIN / "strongroom", "init", base], check=True, stdout=subprocess.DEVNULL)
    return base / "strongroom.yaml"


INGEST_ONLY = """
import sys
from pathlib import Path
from ingest.deposit import DepositRequest, ingest
from policies.config import load_config
cfg = load_config(sys.argv[1])
r = ingest(DepositRequest(source=Path(sys.argv[2]), library="BENCH", collection="c", collection_type="purchased",
                          policy=cfg.policy("at-risk-purchased"), staging=cfg.staging, workers=2))
print(r.file_count, r.byte_count)
"""


def bench_ingest(name: str, corpus: Path, work: Path, rows: list) -> None:
    copy = work / f"{name}-bagit"
    corpus_copy(corpus, copy)
    b_wall, b_rss = timed([BIN / "bagit.py", "--processes", "2", "--sha256", "--md5", "--quiet", copy])
    cfg = fresh_archive(work / f"{name}-archive")
    s_wall, s_rss = timed([sys.executable, "-c", INGEST_ONLY, cfg, corpus])
    rows.append((f"ingest {name}", b_wall, b_rss, s_wall, s_rss))


def bench_deposit(name: str, corpus: Path, work: Path, rows: list) -> None:
    copy = work / f"{name}-bagit"
    corpus_copy(corpus, copy)
    wall = 0.0
    rss = 0.0
    w, r = timed([BIN / "bagit.py", "--processes", "2", "--sha256", "--md5", "--quiet", copy])
    wall += w
    rss = max(rss, r)
    for site in ("a", "b"):
        dest = work / f"{name}-cp-{site}"
        shutil.rmtree(dest, ignore_errors=True)
        w, r = timed(["cp", "-r", copy, dest])
        wall += w
        w, r = timed([BIN / "bagit.py", "--validate", "--processes", "2", "--quiet", dest])
        wall += w
        rss = max(rss, r)
    cfg = fresh_archive(work / f"{name}-archive")
    s_wall, s_rss = timed([BIN / "strongroom", "--config", cfg, "--workers", "2", "deposit", corpus,
                           "--library", "BENCH", "--collection", name, "--type", "purchased"])
    rows.append((f"deposit {name}", wall, rss, s_wall, s_rss))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", type=int, default=20000)
    ap.add_argument("--large-mib", type=int, default=2048)
    ap.add_argument("--work", default="/tmp/strongroom-bench")
    ap.add_argument("--only", choices=["ingest", "deposit"], default=None)
    ap.add_argument("--corpus", choices=["small", "large"], default=None)
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    corpora = {}
    if args.corpus in (None, "small"):
        build_small(work / "corpus-small", args.small)
        corpora["small"] = work / "corpus-small"
    if args.corpus in (None, "large"):
        build_large(work / "corpus-large", args.large_mib)
        corpora["large"] = work / "corpus-large"
    rows = []
    for name, corpus in corpora.items():
        if args.only in (None, "ingest"):
            bench_ingest(name, corpus, work, rows)
        if args.only in (None, "deposit"):
            bench_deposit(name, corpus, work, rows)
    print("| run | baseline s | baseline peak MiB | strongroom s | strongroom peak MiB | ratio (strongroom/baseline) |")
    print("|---|---|---|---|---|---|")
    for run, bw, br, sw, sr in rows:
        print(f"| {run} | {bw:.1f} | {br:.0f} | {sw:.1f} | {sr:.0f} | {sw / bw:.2f}x |")


if __name__ == "__main__":
    main()
