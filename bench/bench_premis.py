"""premis.xml of a bag: file objects written straight as text vs built as dicts first (issue 11).

    python bench/bench_premis.py [--files 20000] [--rounds 5] [--work DIR]

`write_premis` of N file objects (two digests, a PUID, names like a deposit's), best of the
rounds, both ways in one process, alternating: "direct" is what deposits use
(`premis.file_text`), "dicts" hands the writer each object's dict (`premis._file`, the layout
xmltodict would take) as before session 25. Both files must be byte-identical; the script
says so, or exits 1.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ingest import premis  # noqa: E402


def objects(count: int):
    return [premis.FileObject(
        "strongroom-path", f"BENCH/p/20261203T000000Z-1/data/real/d{i // 1000:03d}/{i:06d}-file & notes.txt",
        f"real/d{i // 1000:03d}/{i:06d}-file & notes.txt", i * 7 + 1,
        (("sha256", f"{i:064x}"), ("md5", f"{i:032x}")), "x-fmt/111", "Plain Text File", "", "signature",
        f"data/real/d{i // 1000:03d}/{i:06d}-file & notes.txt") for i in range(count)]


def timed(path: Path, objs, direct: bool) -> float:
    saved = premis._streamed_object
    if not direct:
        premis._streamed_object = premis._object  # every object through its dict
    try:
        started = time.perf_counter()
        premis.write_premis(path, objs)
        return time.perf_counter() - started
    finally:
        premis._streamed_object = saved


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--work", default=None)
    args = ap.parse_args()
    objs = objects(args.files)
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        direct, dicts = Path(tmp) / "direct.xml", Path(tmp) / "dicts.xml"
        best = {"direct": float("inf"), "dicts": float("inf")}
        for i in range(args.rounds):
            for side in (("direct", "dicts") if i % 2 == 0 else ("dicts", "direct")):
                best[side] = min(best[side], timed(direct if side == "direct" else dicts, objs, side == "direct"))
        same = direct.read_bytes() == dicts.read_bytes()
        size = os.path.getsize(direct)
    print(f"write_premis, {args.files:,} file objects ({size / 1e6:.1f} MB), best of {args.rounds}:")
    print(f"  direct (premis.file_text): {best['direct']:.3f} s")
    print(f"  dicts (premis._file):      {best['dicts']:.3f} s   ratio {best['dicts'] / best['direct']:.2f}x")
    print(f"  byte-identical: {'yes' if same else 'NO'}")
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
