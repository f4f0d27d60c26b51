"""Cost of anchoring the ledger after a command (catalog.anchors.anchor_all), on a catalog with
--segments ledger segments (default 1,000) and two filesystem targets.

    python bench/bench_anchor.py [--work DIR] [--segments N] [--repeat R]

Measured in-process, medians of R interleaved rounds (each round: one of every case):
  * unchanged:  the head did not move: the CLI's two looks at the head's number (before and
                after the command), what `status` and every read-only command pay;
  * one more:   one segment appended since the last checkpoint: the look after plus
                `anchor_all` (what a deposit or an audit pays on top of its own work);
  * baseline:   appending that one segment (`Catalog.append_events`), which the command paid
                anyway: the ratio says what anchoring adds to recording;
  * first:      the first checkpoint of a target, covering all N segments (once per target);
  * verify:     `verify_against_storage` (every checkpoint on both targets against the catalog).
Prints a Markdown table (ms).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from catalog.anchors import anchor_all, ledger_seq, verify_against_storage  # noqa: E402
from catalog.catalog import Catalog  # noqa: E402
from catalog.schema import EventRecord, utc_now  # noqa: E402
from policies.config import load_config, write_default_config  # noqa: E402


def event(i: int) -> EventRecord:
    return EventRecord(type="fixity check", outcome="success", agent="bench", object_type="bag",
                       bag_id=f"LIB/COLL/20240101T000000Z-{i % 7 + 1}", target="site-a",
                       detail=f"bench event {i}", datetime=utc_now())


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default="/tmp/strongroom-bench-anchor")
    ap.add_argument("--segments", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=7)
    a = ap.parse_args()
    work = Path(a.work)
    shutil.rmtree(work, ignore_errors=True)
    config = load_config(write_default_config(work))
    catalog = Catalog(config.catalog)
    for target in config.storage.values():  # a folder holding no bag gets no checkpoint: give each one
        (Path(target.root) / "LIB" / "COLL" / "20240101T000000Z-1").mkdir(parents=True)
    for i in range(a.segments):
        catalog.append_events([event(2 * i), event(2 * i + 1)])
    store = catalog.store
    first = timed(lambda: anchor_all(config, store))
    cases = {"unchanged": [], "baseline": [], "one more": [], "verify": []}
    n = a.segments
    for _ in range(a.repeat):
        cases["unchanged"].append(timed(lambda: (ledger_seq(store), ledger_seq(store))))
        cases["baseline"].append(timed(lambda: catalog.append_events([event(10**6 + n)])))
        n += 1
        cases["one more"].append(timed(lambda: (ledger_seq(store), anchor_all(config, store))))
        cases["verify"].append(timed(lambda: verify_against_storage(config, store)))
    print(f"catalog of {a.segments} segments, 2 filesystem targets, {a.repeat} interleaved rounds (ms, median)\n")
    print("| case | ms |\n|---|---:|")
    print(f"| first checkpoint (all {a.segments} segments, both targets) | {first:.0f} |")
    for name, values in cases.items():
        print(f"| {name} | {statistics.median(values):.1f} |")
    ratios = [o / b for o, b in zip(cases["one more"], cases["baseline"])]
    print(f"\none more / baseline, per round: {', '.join(f'{r:.1f}' for r in ratios)} "
          f"(median {statistics.median(ratios):.1f})")


if __name__ == "__main__":
    main()
