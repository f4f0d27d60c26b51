"""Benchmark: `strongroom identify` against the `fido` command, same files, same answers.

Two corpora, built in a temporary folder (never committed):
  real    a few thousand real files copied from /usr/share (every k-th regular file, sorted walk)
  random  20,000 small files of random bytes (fido's worst case: every signature is tried)
and optionally the shared format corpus (../shared/format-corpus), used in place.

For each corpus it times the exact commands printed, checks that every file got the same PUIDs
(and match type) from both, and prints files/s and the speed-up. Siegfried (`sf -multi 2`, the
Go PRONOM identifier) is an optional anchor: it is timed on the same folder when an `sf` binary
is found ($SIEGFRIED, else `sf` on PATH; its signature folder from $SIEGFRIED_HOME, passed as
`-home`), and skipped with a message otherwise. Its answers come from another engine (DROID
priorities, containers by default), so only its time is compared, not its PUIDs.

`strongroom identify` and `sf` are run --repeat times in interleaved pairs (ours, sf, ours,
sf...), so a machine busy with other work slows both alike; medians and the ratio of the
medians are printed, with every run. Usage:

    python bench/bench_identify.py [--real 3000] [--random 20000] [--shared] [--keep DIR] [--repeat 5]
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.formatgen import FIDO_MATCH, FIDO_NOMATCH, fido_command  # noqa: E402

SHARED_CORPUS = REPO.parent / "shared" / "format-corpus"
METHOD_OF_FIDO = {"fail": "none"}


def build_real(dest: Path, count: int, source: Path = Path("/usr/share"),
               max_size: int = 8 * 1024 * 1024) -> int:
    candidates: List[Path] = []
    for folder, dirs, files in os.walk(source):
        dirs.sort()
        for name in sorted(files):
            path = Path(folder) / name
            try:
                if path.is_symlink() or not path.is_file() or path.stat().st_size > max_size:
                    continue
                str(path).encode("utf-8")
            except (OSError, UnicodeEncodeError):
                continue
            if "\t" in str(path) or "\n" in str(path):
                continue
            candidates.append(path)
    step = max(1, len(candidates) // count)
    chosen = candidates[::step][:count]
    for path in chosen:
        target = dest / path.relative_to(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    return len(chosen)


def build_random(dest: Path, count: int, seed: int = 20) -> int:
    rng = random.Random(seed)
    for i in range(count):
        folder = dest / f"d{i // 1000:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        suffix = ".dat" if i % 4 == 0 else ""
        (folder / f"r{i:05d}{suffix}").write_bytes(rng.randbytes(rng.randint(1, 4096)))
    return count


def run_fido(folder: Path) -> Tuple[float, Dict[str, Tuple[Tuple[str, ...], str]], List[str]]:
    command = [fido_command(), "-q", "-recurse", "-matchprintf", FIDO_MATCH,
               "-nomatchprintf", FIDO_NOMATCH, str(folder)]
    start = time.perf_counter()
    done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, check=True)
    seconds = time.perf_counter() - start
    answers: Dict[str, Tuple[List[str], str]] = {}
    for line in done.stdout.decode("utf-8", "surrogateescape").splitlines():
        status, puid, matchtype, name = line.split("\t", 3)
        puids, _ = answers.get(name, ([], ""))
        if status == "OK" and puid not in puids:
            puids.append(puid)
        answers[name] = (puids, METHOD_OF_FIDO.get(matchtype, matchtype))
    shown = [c if "\t" not in c and "\n" not in c else repr(c) for c in command]
    return seconds, {k: (tuple(v[0]), v[1]) for k, v in answers.items()}, shown


def run_strongroom(folder: Path):
    command = [sys.executable, "-m", "pipelines", "identify", str(folder)]
    start = time.perf_counter()
    done = subprocess.run(command, stdout=subprocess.PIPE, cwd=REPO, check=True)
    seconds = time.perf_counter() - start
    answers = {}
    for row in csv.DictReader(io.StringIO(done.stdout.decode("utf-8", "surrogateescape"))):
        puids = ((row["puid"],) if row["puid"] else ()) + tuple(
            p for p in row["alternatives"].split(";") if p)
        answers[os.path.normpath(row["path"])] = (puids, row["method"])
    return seconds, answers, command


def siegfried() -> Optional[List[str]]:
    """The `sf` command with its -home, or None when no binary is found."""
    exe = os.environ.get("SIEGFRIED") or shutil.which("sf")
    if not exe or not os.access(exe, os.X_OK):
        return None
    home = os.environ.get("SIEGFRIED_HOME")
    return [exe] + (["-home", home] if home else [])


def run_siegfried(sf: List[str], folder: Path) -> Tuple[float, int, List[str]]:
    """Seconds for `sf -multi 2 -csv FOLDER` as a whole process, and the rows it printed."""
    command = sf + ["-multi", "2", "-csv", str(folder)]
    start = time.perf_counter()
    done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, check=True)
    seconds = time.perf_counter() - start
    rows = max(0, len(done.stdout.splitlines()) - 1)
    return seconds, rows, command


def run_library_one_core(folder: Path) -> Tuple[float, float]:
    """Per-core speed: Identifier() load time, then identify_paths(..., workers=1) in-process."""
    from ingest.identify import Identifier, identify_paths
    import ingest.identify as module

    files = sorted(os.path.join(d, f) for d, _, names in os.walk(folder) for f in names)
    start = time.perf_counter()
    module._worker_identifier = Identifier()
    load = time.perf_counter() - start
    start = time.perf_counter()
    for _ in identify_paths(files, workers=1):
        pass
    return load, time.perf_counter() - start


def compare(label: str, folder: Path, files: int, repeat: int = 1) -> bool:
    print(f"\n== {label}: {files} files in {folder}")
    fido_s, fido_answers, fido_cmd = run_fido(folder)
    print(f"  fido CLI            {fido_s:8.2f} s {files / fido_s:9.1f} files/s"
          f"          $ {' '.join(fido_cmd)}")
    sf = siegfried()
    ours_runs: List[float] = []
    sf_runs: List[float] = []
    sf_cmd: List[str] = []
    sf_rows = 0
    for _ in range(max(1, repeat)):       # interleaved pairs: ours, sf, ours, sf...
        ours_s, ours, cmd = run_strongroom(folder)
        ours_runs.append(ours_s)
        if sf is not None:
            sf_s, sf_rows, sf_cmd = run_siegfried(sf, folder)
            sf_runs.append(sf_s)
    ours_s = statistics.median(ours_runs)
    runs = ", ".join(f"{r:.2f}" for r in ours_runs)
    print(f"  strongroom identify {ours_s:8.2f} s {files / ours_s:9.1f} files/s  x{fido_s / ours_s:5.1f}"
          f"   $ {' '.join(cmd)}   (cwd {REPO}; median of {len(ours_runs)}: {runs})")
    if sf is None:
        print("  siegfried           skipped: no `sf` found (set SIEGFRIED=/path/to/sf and SIEGFRIED_HOME="
              "its signature folder, e.g. siegfried's cmd/roy/data)")
    else:
        sf_s = statistics.median(sf_runs)
        runs = ", ".join(f"{r:.2f}" for r in sf_runs)
        print(f"  siegfried sf        {sf_s:8.2f} s {files / sf_s:9.1f} files/s  x{fido_s / sf_s:5.1f}"
              f"   $ {' '.join(sf_cmd)}   (median of {len(sf_runs)}: {runs}; {sf_rows} rows)")
        print(f"    strongroom identify vs sf -multi 2: {sf_s / ours_s:.2f}x sf's speed "
              f"(pairwise: {', '.join(f'{s / o:.2f}' for o, s in zip(ours_runs, sf_runs))})")
    differ = [p for p in set(fido_answers) | set(ours) if fido_answers.get(p) != ours.get(p)]
    print(f"    identical answers (PUIDs + method): {len(ours) - len(differ)}/{len(ours)}"
          f" (fido answered {len(fido_answers)} files)")
    for path in sorted(differ)[:10]:
        print(f"    DIFFERENT {path}: fido {fido_answers.get(path)} strongroom {ours.get(path)}")
    load, seconds = run_library_one_core(folder)
    print(f"  library, one core: Identifier() {load:.2f} s, then {seconds:.2f} s ="
          f" {files / seconds:.0f} files/s  (identify_paths(files, workers=1))")
    return not differ and len(ours) == files


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real", type=int, default=3000, help="real files from /usr/share (0: none)")
    parser.add_argument("--random", type=int, default=20000, help="small random files (0: none)")
    parser.add_argument("--shared", action="store_true", help="also the shared format corpus")
    parser.add_argument("--keep", type=Path, help="build the corpora here and keep them")
    parser.add_argument("--repeat", type=int, default=5,
                        help="interleaved runs of strongroom identify and sf per corpus (medians)")
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}, "
          f"fido at {fido_command()}, sf: {' '.join(siegfried() or ['absent'])}")
    ok = True
    with tempfile.TemporaryDirectory(prefix="bench-identify-") as tmp:
        base = args.keep or Path(tmp)
        if args.real:
            folder = base / "real"
            if not folder.exists():
                build_real(folder, args.real)
            files = sum(len(f) for _, _, f in os.walk(folder))
            ok &= compare("real files from /usr/share", folder, files, args.repeat)
        if args.random:
            folder = base / "random"
            if not folder.exists():
                build_random(folder, args.random)
            files = sum(len(f) for _, _, f in os.walk(folder))
            ok &= compare("small random files", folder, files, args.repeat)
        if args.shared:
            files = sum(len(f) for _, _, f in os.walk(SHARED_CORPUS))
            ok &= compare("shared format corpus", SHARED_CORPUS, files, args.repeat)
    print("\nall answers identical" if ok else "\nSOME ANSWERS DIFFER")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
