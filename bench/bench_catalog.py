"""Catalog at scale: build a catalog through the public API, then time queries and peak memory.

    python bench/bench_catalog.py --dir /tmp/catbench --bags 10000 --files-per-bag 100 \
        --events 100000 --events-per-segment 10

Each query runs in a fresh child process so its peak RSS (ru_maxrss) is its own. Queries are
timed before and after `Catalog.compact()`. Building is done once; rerun with --reuse to query an
existing catalog again.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing as mp
import os
import resource
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from catalog.catalog import BagRecord, Catalog, EventRecord, FileRecord, ReplicaRecord  # noqa: E402
from catalog.ledger import verify_ledger  # noqa: E402

T0 = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)


def bag_id(i: int) -> str:
    return f"LIB{i % 7}/COLL{i % 50}/{(T0 + dt.timedelta(minutes=i)).strftime('%Y%m%dT%H%M%SZ')}-1"


def build(root: str, bags: int, per_bag: int, events: int, per_segment: int) -> dict:
    cat = Catalog(root)
    t = time.perf_counter()
    for i in range(bags):
        bid = bag_id(i)
        files = [FileRecord(bid, f"data/dir{j % 10}/file-{j:06d}.tif", 1000 + j, 1_700_000_000_000_000_000 + j,
                            md5=f"{i:016x}{j:016x}", sha256=f"{i:032x}{j:032x}", puid="fmt/353",
                            format_name="Tagged Image File Format", mime="image/tiff",
                            identification_method="signature")
                 for j in range(per_bag)]
        cat.add_bag(BagRecord(bid, f"LIB{i % 7}", f"COLL{i % 50}", "purchased", f"Title {i}", "at-risk-purchased",
                              f"urn:uuid:{i:032x}", f"g{i}", 1, 1, per_bag, sum(f.size for f in files),
                              T0 + dt.timedelta(minutes=i)), files)
        for target in ("site-a", "site-b"):
            cat.record_replica(ReplicaRecord(bid, target, target, "verified", verified_at=T0))
    t_bags = time.perf_counter() - t
    t = time.perf_counter()
    n = 0
    while n < events:
        batch = [EventRecord("fixity check", "success", detail="all files match", agent="strongroom bench",
                             bag_id=bag_id((n + k) % bags), target="site-a",
                             datetime=T0 + dt.timedelta(seconds=n + k))
                 for k in range(min(per_segment, events - n))]
        cat.append_events(batch)
        n += len(batch)
    t_events = time.perf_counter() - t
    return {"add_bag+2 replicas, s": round(t_bags, 1), "bags per s": round(bags / t_bags, 1),
            "append_events, s": round(t_events, 1), "segments per s": round(-(-events // per_segment) / t_events, 1)}


QUERIES = {
    "files() all": lambda c, b: c.files().num_rows,
    "files(bag_id)": lambda c, b: c.files(b).num_rows,
    "file_digests(bag_id)": lambda c, b: len(c.file_digests(b)),
    "bags() all": lambda c, b: c.bags().num_rows,
    "bags(library=)": lambda c, b: c.bags(library="LIB3").num_rows,
    "has_bag": lambda c, b: int(c.has_bag(b)),
    "replicas() current": lambda c, b: c.replicas().num_rows,
    "replicas(bag_id)": lambda c, b: c.replicas(b).num_rows,
    "events() all": lambda c, b: c.events().num_rows,
    "events(bag_id)": lambda c, b: c.events(bag_id=b).num_rows,
    "events(type, since, until)": lambda c, b: c.events(type="fixity check", since=T0 + dt.timedelta(hours=1),
                                                        until=T0 + dt.timedelta(hours=2)).num_rows,
    "verify_ledger": lambda c, b: verify_ledger(c.location).events,
}


def peak_rss_mb() -> float:
    """This process's own peak RSS (VmHWM). ru_maxrss is no good here: Linux carries the parent's
    peak over fork+exec into the child's."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child(root: str, name: str, bid: str, out) -> None:
    cat = Catalog(root)
    base = peak_rss_mb()
    t = time.perf_counter()
    rows = QUERIES[name](cat, bid) if name != "compact" else cat.compact().to_dict()
    out.send((time.perf_counter() - t, rows, peak_rss_mb(), base))


def in_child(root: str, name: str, bid: str) -> dict:
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    p = ctx.Process(target=_child, args=(root, name, bid, child))
    p.start()
    seconds, rows, rss, base = parent.recv()
    p.join()
    # base: the interpreter with pyarrow and the catalog imported, before the query
    return {"seconds": round(seconds, 3), "rows": rows, "peak_rss_mb": round(rss), "rss_before_mb": round(base)}


def run_queries(root: str, bid: str) -> dict:
    return {name: in_child(root, name, bid) for name in QUERIES}


def count_files(root: str) -> int:
    return sum(len(files) for _, _, files in os.walk(root))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", default="/tmp/strongroom-catalog-bench")
    ap.add_argument("--bags", type=int, default=10000)
    ap.add_argument("--files-per-bag", type=int, default=100)
    ap.add_argument("--events", type=int, default=100000)
    ap.add_argument("--events-per-segment", type=int, default=10)
    ap.add_argument("--reuse", action="store_true", help="query an existing catalog, do not rebuild")
    args = ap.parse_args()
    report = {"bags": args.bags, "files": args.bags * args.files_per_bag, "events": args.events,
              "events_per_segment": args.events_per_segment}
    if not args.reuse:
        shutil.rmtree(args.dir, ignore_errors=True)
        report["build"] = build(args.dir, args.bags, args.files_per_bag, args.events, args.events_per_segment)
    bid = bag_id(args.bags // 2)
    report["catalog_files_before_compact"] = count_files(args.dir)
    report["before_compact"] = run_queries(args.dir, bid)
    report["compact"] = in_child(args.dir, "compact", bid)
    report["catalog_files_after_compact"] = count_files(args.dir)
    report["after_compact"] = run_queries(args.dir, bid)
    json.dump(report, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
