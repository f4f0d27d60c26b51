"""Reports at scale: build a catalog of N files and M events, then time every report in every form
and measure its peak memory.

    python bench/bench_reports.py --dir /tmp/repbench --files 1000000 --events 100000
    python bench/bench_reports.py --dir /tmp/repbench --reuse          # time again, no rebuild

The catalog is built through the public API (`Catalog.add_bag`, `record_replica`,
`append_events`) and then compacted (as `strongroom catalog compact` would), with a realistic mix:
bags of `--files-per-bag` files in 50 collections of 7 libraries, a dozen PRONOM formats (some
at risk under the purchased policy, 3% unidentified), two verified copies per bag, and events
that are mostly fixity checks (with failures, repairs and inconclusive ones) in segments of
`--events-per-segment`. Each report runs in a fresh child process, so its peak RSS (VmHWM) is its
own; `rss_before_mb` is that process with pyarrow, Jinja2 and matplotlib imported. Run it at two
sizes (e.g. --files 100000 and 1000000) to see memory stay flat while the files grow tenfold.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing as mp
import os
import random
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

T0 = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)
FORMATS = [("fmt/353", "Tagged Image File Format", None, "signature", 40),
           ("fmt/18", "Acrobat PDF 1.4 - Portable Document Format", "1.4", "signature", 15),
           ("fmt/11", "Portable Network Graphics", "1.0", "signature", 10),
           ("fmt/43", "JPEG File Interchange Format", "1.01", "signature", 10),
           ("fmt/101", "Extensible Markup Language", "1.0", "signature", 6),
           ("x-fmt/111", "Plain Text File", None, "extension", 5),
           ("fmt/141", "Waveform Audio (PCMWAVEFORMAT)", None, "signature", 4),
           ("fmt/471", "Hypertext Markup Language", "5", "signature", 3),
           ("fmt/4", "Graphics Interchange Format", "89a", "signature", 2),
           ("fmt/132", "Windows Media Audio", None, "signature", 1),   # at risk (at-risk-purchased)
           ("fmt/107", "Macromedia Flash", "4", "signature", 1),       # at risk
           (None, None, None, "none", 3)]


def bag_id(i: int) -> str:
    return f"LIB{i % 7}/COLL{i % 50}/{(T0 + dt.timedelta(minutes=i)).strftime('%Y%m%dT%H%M%SZ')}-1"


def build(root: Path, files: int, per_bag: int, events: int, per_segment: int) -> dict:
    from catalog.catalog import BagRecord, Catalog, EventRecord, FileRecord, ReplicaRecord
    from policies.config import load_config, write_default_config

    if root.exists():
        shutil.rmtree(root)
    config = load_config(write_default_config(root))
    cat = Catalog(config.catalog)
    rng = random.Random(42)
    weights = [f[4] for f in FORMATS]
    bags = -(-files // per_bag)
    t = time.perf_counter()
    for i in range(bags):
        bid = bag_id(i)
        n = min(per_bag, files - i * per_bag)
        picks = rng.choices(FORMATS, weights=weights, k=n)
        recs = [FileRecord(bid, f"data/dir{j % 10}/file-{j:06d}", 1000 + (j * 7919) % 100_000, None,
                           md5=f"{i:016x}{j:016x}", sha256=f"{i:032x}{j:032x}", puid=p[0], format_name=p[1],
                           format_version=p[2], identification_method=p[3]) for j, p in enumerate(picks)]
        purchased = i % 2 == 0
        cat.add_bag(BagRecord(bid, f"LIB{i % 7}", f"COLL{i % 50}", "purchased" if purchased else "self-built",
                              f"Title {i}" if i % 3 else None, "at-risk-purchased" if purchased else "self-built",
                              f"urn:uuid:{i:032x}", f"g{i}", 1, 1, n, sum(r.size for r in recs),
                              T0 + dt.timedelta(minutes=i)), recs)
        for target in ("site-a", "site-b"):
            when = T0 + dt.timedelta(days=rng.randint(0, 200))
            cat.record_replica(ReplicaRecord(bid, target, target, "verified", verified_at=when, last_audit_at=when,
                                             last_audit_kind="deep", last_audit_outcome="success"))
    t_bags = time.perf_counter() - t
    t = time.perf_counter()
    n = 0
    kinds = [("fixity check", "success")] * 90 + [("fixity check", "failure")] * 3 + \
        [("fixity check", "inconclusive")] * 2 + [("repair", "success")] * 3 + [("replication", "success")] * 2
    while n < events:
        batch = []
        for k in range(min(per_segment, events - n)):
            kind, outcome = kinds[rng.randrange(len(kinds))]
            batch.append(EventRecord(kind, outcome, detail=f"{kind}: {outcome}", agent="strongroom bench",
                                     object_type="replica", bag_id=bag_id(rng.randrange(bags)),
                                     target=rng.choice(("site-a", "site-b")),
                                     datetime=T0 + dt.timedelta(seconds=(n + k) * 97)))
        cat.append_events(batch)
        n += len(batch)
    t_events = time.perf_counter() - t
    t = time.perf_counter()
    cat.compact()
    t_compact = time.perf_counter() - t
    return {"bags": bags, "files": files, "events": events, "build_bags_s": round(t_bags, 1),
            "build_events_s": round(t_events, 1), "compact_s": round(t_compact, 1)}


def catalog_size(config_path: str) -> dict:
    """What the catalog holds (with --reuse the command-line sizes say nothing)."""
    import pyarrow.compute as pc

    from catalog.catalog import Catalog
    from catalog.ledger import verify_ledger
    from policies.config import load_config

    cat = Catalog(load_config(config_path).catalog)
    bags = cat.bags()
    return {"bags": bags.num_rows, "files": int(pc.sum(bags.column("file_count")).as_py() or 0),
            "events": verify_ledger(cat.location).events}


def peak_rss_mb() -> float:
    """This process's own peak RSS (VmHWM); ru_maxrss would carry the parent's over fork+exec."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _child(config_path: str, kind: str, fmt: str, out: str, conn) -> None:
    import jinja2  # noqa: F401  (imported before measuring the baseline, like pyarrow)
    import matplotlib.pyplot  # noqa: F401

    from policies.config import load_config
    from reports.write import write_report

    config = load_config(config_path)
    base = peak_rss_mb()
    t = time.perf_counter()
    path = write_report(config, kind, out, fmt=fmt, now=T0 + dt.timedelta(days=240))
    conn.send((time.perf_counter() - t, peak_rss_mb(), base, os.path.getsize(path)))


def run_one(config_path: str, kind: str, fmt: str, out_dir: Path) -> dict:
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    out = out_dir / f"{kind}.{ {'premis': 'xml'}.get(fmt, fmt) }"
    p = ctx.Process(target=_child, args=(config_path, kind, fmt, str(out), child))
    p.start()
    seconds, rss, base, size = parent.recv()
    p.join()
    return {"seconds": round(seconds, 2), "peak_rss_mb": round(rss), "rss_before_mb": round(base),
            "output_mb": round(size / 1e6, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", default="/tmp/strongroom-bench-reports")
    ap.add_argument("--files", type=int, default=1_000_000)
    ap.add_argument("--files-per-bag", type=int, default=1000)
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--events-per-segment", type=int, default=1000)
    ap.add_argument("--reuse", action="store_true", help="time the reports over an existing bench catalog")
    ap.add_argument("--kinds", default="preservation,fixity,formats")
    ap.add_argument("--formats", default="html,csv,json,premis")
    args = ap.parse_args()
    root = Path(args.dir)
    result: dict = {"args": vars(args)}
    if not args.reuse:
        result["build"] = build(root, args.files, args.files_per_bag, args.events, args.events_per_segment)
        print(json.dumps(result["build"]), flush=True)
    config_path = str(root / "strongroom.yaml")
    result["catalog"] = catalog_size(config_path)
    print(json.dumps({"catalog": result["catalog"], "load_average": os.getloadavg()}), flush=True)
    out_dir = root / "reports"
    out_dir.mkdir(exist_ok=True)
    result["reports"] = {}
    for kind in args.kinds.split(","):
        for fmt in args.formats.split(","):
            r = run_one(config_path, kind, fmt, out_dir)
            result["reports"][f"{kind} {fmt}"] = r
            print(f"{kind:13s} {fmt:7s} {json.dumps(r)}", flush=True)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
