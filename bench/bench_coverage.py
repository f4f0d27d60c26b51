"""Coverage (catalog.coverage) on a large replica log: time and peak memory, against the replica
table query that `strongroom status` already runs over the same log (catalog.replicas.replica_table).

    .venv/bin/python bench/bench_coverage.py --bags 20000 --records 10 --pairs 2

Builds a catalog in a temp folder with BAGS bags on three targets and RECORDS audit records per
copy (written as a few large Parquet files, as compaction leaves them), then runs each query in
its own process (peak RSS from getrusage), interleaved: coverage, replica table, coverage, ...
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyarrow as pa  # noqa: E402

from catalog.compact import table_bytes  # noqa: E402
from catalog.schema import BAGS_SCHEMA, BATCH, RECORD_ID, RECORDED, REPLICAS_SCHEMA  # noqa: E402
from tests.test_cadence import archive  # noqa: E402

T0 = dt.datetime(2031, 6, 15, tzinfo=dt.timezone.utc)
TARGETS = {"site-a": "beijing", "site-b": "wuhan", "site-c": "shanghai"}


def build(root: Path, bags: int, records: int) -> Path:
    cfg = archive(root)
    from catalog.catalog import Catalog
    from policies.config import load_config

    store = Catalog(load_config(cfg).catalog).store
    ids = [f"LIB/COLL/2030{n:010d}Z-1" for n in range(bags)]
    created = T0 - dt.timedelta(days=800)
    bag_rows = {"bag_id": ids, "library": ["LIB"] * bags, "collection": ["COLL"] * bags,
                "collection_type": ["self-built"] * bags, "title": [None] * bags, "policy": ["self-built"] * bags,
                "external_identifier": [f"urn:uuid:{uuid.uuid4()}" for _ in ids], "group_id": ids,
                "part": [1] * bags, "part_count": [1] * bags, "file_count": [10] * bags,
                "byte_count": [10_000 + n for n in range(bags)], "created_at": [created] * bags,
                "source_path": [None] * bags, BATCH: [uuid.uuid4().hex for _ in ids], RECORDED: [created] * bags}
    store.write_new("bags", "compact-bench.parquet", table_bytes(pa.table(bag_rows, schema=BAGS_SCHEMA), "bags"))
    for r in range(records):
        at = T0 - dt.timedelta(days=700 - r * 70)
        n = bags * len(TARGETS)
        kind = "deep" if r % 2 == 0 else "quick"
        rows = {"bag_id": [b for b in ids for _ in TARGETS], "target": list(TARGETS) * bags,
                "site": list(TARGETS.values()) * bags, "state": ["verified"] * n, "verified_at": [at] * n,
                "last_audit_at": [at] * n, "last_audit_kind": [kind] * n, "last_audit_outcome": ["success"] * n,
                "detail": [f"audit ({kind}): success: 10 files, 10000 bytes re-read"] * n, "recorded_at": [at] * n,
                RECORD_ID: [uuid.uuid4().hex for _ in range(n)]}
        store.write_new("replicas", f"compact-bench-{r}.parquet",
                        table_bytes(pa.table(rows, schema=REPLICAS_SCHEMA), "replicas"))
    return cfg


def run_one(cfg: str, which: str) -> dict:
    from catalog.catalog import Catalog
    from policies.config import load_config

    config = load_config(cfg)
    catalog = Catalog(config.catalog)
    start = time.perf_counter()
    if which == "coverage":
        from catalog.coverage import coverage

        result = coverage(config, catalog, now=T0).total.held_copies
    else:
        from catalog.replicas import replica_table

        result = replica_table(config, catalog, catalog.bags(), now=T0).num_rows
    seconds = time.perf_counter() - start
    return {"which": which, "seconds": seconds, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "rows": result}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--bags", type=int, default=20000)
    p.add_argument("--records", type=int, default=10)
    p.add_argument("--pairs", type=int, default=2)
    p.add_argument("--one", nargs=2, metavar=("CFG", "WHICH"))
    args = p.parse_args()
    if args.one:
        print(json.dumps(run_one(*args.one)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        cfg = build(Path(tmp) / "a", args.bags, args.records)
        results = []
        for _ in range(args.pairs):
            for which in ("coverage", "replica_table"):
                out = subprocess.run([sys.executable, __file__, "--one", str(cfg), which], capture_output=True,
                                     text=True, check=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
                results.append(json.loads(out.stdout.strip().splitlines()[-1]))
                print(json.dumps(results[-1]))
        cov = [r for r in results if r["which"] == "coverage"]
        base = [r for r in results if r["which"] == "replica_table"]
        print(f"copies {args.bags * 3}, replica records {args.bags * 3 * args.records}: coverage/replica_table "
              f"time {sum(r['seconds'] for r in cov) / sum(r['seconds'] for r in base):.2f}x, "
              f"peak memory {max(r['peak_mb'] for r in cov) / max(r['peak_mb'] for r in base):.2f}x")


if __name__ == "__main__":
    main()
