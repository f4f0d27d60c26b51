"""Ingest and deposit benchmarks against the tools a library would otherwise use.

    python bench/bench_ingest.py [--small N] [--large-mib M] [--work DIR] [--only ingest|deposit]
                                 [--virus-check required|off]

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

Virus check: the default policies say `virus_check: required`, so by default (--virus-check
required) both Strongroom rows scan every byte with ClamAV while staging, as users will run it:
a private clamd (tests/clamav.py: test-made signature database, default limits) is started
under --work for the run and $STRONGROOM_CLAMAV points Strongroom at it (its peak RSS is
clamd's own process, not counted). The baselines scan nothing. `--virus-check off` writes
`virus_check: off` into the bench archive's policies instead: the figures without the scan
(bench/bench_virus.py sets the two side by side, with clamdscan).
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
from typing import Optional

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]


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


VIRUS_CHECK = "required"  # set by main() from --virus-check


def fresh_archive(base: Path, virus_check: Optional[str] = None) -> Path:
    """A default `strongroom init` archive; its policies' virus_check set to `virus_check`
    (default: --virus-check) when that is not the policies' own `required`."""
    shutil.rmtree(base, ignore_errors=True)
    subprocess.run([BIN / "strongroom", "init", base], check=True, stdout=subprocess.DEVNULL)
    mode = virus_check or VIRUS_CHECK
    if mode != "required":
        for p in (base / "policies").glob("*.yaml"):
            p.write_text(p.read_text("utf-8").replace("virus_check: required", f"virus_check: {mode}"), "utf-8")
    return base / "strongroom.yaml"


def start_clamd(work: Path):
    """A private clamd for the run (tests/clamav.py); $STRONGROOM_CLAMAV names it to every
    strongroom child. Returns the server (stop() it), or None when no scan is asked for."""
    if VIRUS_CHECK == "off":
        return None
    sys.path.insert(0, str(REPO))
    from tests.clamav import Clamd

    server = Clamd(work / "clamd-ingest").start()
    os.environ["STRONGROOM_CLAMAV"] = server.socket
    return server


INGEST_ONLY = """
import sys
from pathlib import Path
from ingest import virus
from ingest.deposit import DepositRequest, ingest
from policies.config import load_config
cfg = load_config(sys.argv[1])
policy = cfg.policy("at-risk-purchased")
scanning = virus.setup(cfg, policy, quarantine_dir=Path(cfg.staging) / virus.QUARANTINE / "bench", source=sys.argv[2])
r = ingest(DepositRequest(source=Path(sys.argv[2]), library="BENCH", collection="c", collection_type="purchased",
                          policy=policy, staging=cfg.staging, workers=2, virus=scanning))
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
    ap.add_argument("--virus-check", choices=["required", "off"], default="required",
                    help="scan with a private clamd while staging, as the default policies ask (default), "
                         "or write virus_check: off into the bench archive's policies")
    args = ap.parse_args()
    global VIRUS_CHECK
    VIRUS_CHECK = args.virus_check
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
    clamd = start_clamd(work)
    try:
        for name, corpus in corpora.items():
            if args.only in (None, "ingest"):
                bench_ingest(name, corpus, work, rows)
            if args.only in (None, "deposit"):
                bench_deposit(name, corpus, work, rows)
    finally:
        if clamd is not None:
            clamd.stop()
    print(f"virus check: {VIRUS_CHECK}" + (" (private clamd, every byte scanned while staging)"
                                           if VIRUS_CHECK == "required" else " (virus_check: off in the policies)"))
    print("| run | baseline s | baseline peak MiB | strongroom s | strongroom peak MiB | ratio (strongroom/baseline) |")
    print("|---|---|---|---|---|---|")
    for run, bw, br, sw, sr in rows:
        print(f"| {run} | {bw:.1f} | {br:.0f} | {sw:.1f} | {sr:.0f} | {sw / bw:.2f}x |")


if __name__ == "__main__":
    main()
