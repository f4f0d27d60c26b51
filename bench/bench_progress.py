"""What bytes-within-a-file progress costs: hash one big file with no display, then with one.

    .venv/bin/python bench/bench_progress.py [--size 1.5GB] [--rounds 3]

Rounds alternate between the two modes. The file is read once beforehand (so every round reads from the page cache: the figure is the
worst case, hashing with no disk wait to hide behind). Each mode's best round is compared;
CPU time of this process (the display thread included), not wall time: other work on the
machine would swamp a 1 % difference. Issue 18 asks for less than 1 % overhead.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.progress import phase  # noqa: E402
from pipelines.progress_display import Hub  # noqa: E402
from policies.units import display_size, parse_size  # noqa: E402
from strongroom.checksums import hash_file  # noqa: E402


def _round(path: Path) -> float:
    start = time.process_time()
    hash_file(path, ["sha256", "md5"])
    return time.process_time() - start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="1.5GB")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    size = parse_size(args.size, where="--size")
    with tempfile.TemporaryDirectory(prefix="bench-progress-") as tmp:
        path = Path(tmp) / "big.bin"
        block = os.urandom(1 << 20)
        with open(path, "wb") as fh:
            for _ in range(size // len(block)):
                fh.write(block)
        _round(path)  # into the page cache
        quiet, shown = [], []
        with open(os.devnull, "w") as sink, Hub(stream=sink):
            for _ in range(args.rounds):  # interleaved, so a busy neighbour slows both alike
                quiet.append(_round(path))
                with phase("bench", size, 1):
                    shown.append(_round(path))
    quiet, shown = min(quiet), min(shown)
    overhead = 100 * (shown - quiet) / quiet
    print(f"{display_size(size)} sha256+md5: no display {quiet:.3f} s, "
          f"with display {shown:.3f} s, overhead {overhead:+.2f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
