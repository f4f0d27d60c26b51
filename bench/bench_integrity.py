"""What the catalog's self-check (`catalog.integrity.check_catalog`) costs on a big catalog.

    python bench/bench_integrity.py --dir /tmp/integrity-bench --bags 2000 --files-per-bag 100

Builds a catalog of BAGS bags (one bags/ and one files/ Parquet file each, as `add_bag` writes
them), two replica records per bag and three ledger segments per bag (as a deposit writes), then
times `check_catalog` in a fresh process (cold: nothing remembered) and again in that process
(warm: what every later `open_catalog` of the same command pays), before and after
`catalog compact`. Rows are written straight through the store (the same file names and
schemas as `add_bag`), so building 200k file rows takes seconds rather than the quadratic time
of `add_bag`'s duplicate check.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing as mp
import shutil
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from catalog.catalog import BagRecord, Catalog, EventRecord, FileRecord, ReplicaRecord  # noqa: E402
from catalog.compact import bag_file_prefix, table_bytes  # noqa: E402
from catalog.schema import (BAGS_SCHEMA, BATCH, FILES_SCHEMA, RECORDED, RECORD_ID, REPLICAS_SCHEMA,  # noqa: E402
                            records_to_table, utc_now)

T0 = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)


def bag_id(i: int) -> str:
    return f"LIB{i % 7}/COLL{i % 50}/{(T0 + dt.timedelta(minutes=i)).strftime('%Y%m%dT%H%M%SZ')}-1"


def build(root: str, bags: int, per_bag: int) -> float:
    cat = Catalog(root)
    store = cat.store
    t = time.perf_counter()
    for i in range(bags):
        bid = bag_id(i)
        files = [FileRecord(bid, f"data/dir{j % 10}/file-{j:06d}.tif", 1000 + j, None,
                            md5=f"{i:016x}{j:016x}", sha256=f"{i:032x}{j:032x}", puid="fmt/353")
                 for j in range(per_bag)]
        bag = BagRecord(bid, f"LIB{i % 7}", f"COLL{i % 50}", "purchased", f"Title {i}", "at-risk-purchased",
                        f"urn:uuid:{i:032x}", f"g{i}", 1, 1, per_bag, sum(f.size for f in files),
                        T0 + dt.timedelta(minutes=i))
        batch = uuid.uuid4().hex
        prefix = bag_file_prefix(bid)
        store.write_new("files", f"{prefix}-{batch}.parquet",
                        table_bytes(records_to_table(files, FILES_SCHEMA, {BATCH: batch}), "files"))
        store.write_new("bags", f"{prefix}.parquet",
                        table_bytes(records_to_table([bag], BAGS_SCHEMA, {BATCH: batch, RECORDED: utc_now()}), "bags"))
        for target in ("site-a", "site-b"):
            rid = uuid.uuid4().hex
            rec = ReplicaRecord(bid, target, target, "verified", verified_at=T0)
            store.write_new("replicas", f"{prefix}-{rid}.parquet",
                            table_bytes(records_to_table([rec], REPLICAS_SCHEMA, {RECORD_ID: rid}), "replicas"))
            cat.append_events([EventRecord("fixity check", "success", object_type="replica", bag_id=bid,
                                           target=target)])
        cat.append_events([EventRecord("ingestion", "success", bag_id=bid)])
    return time.perf_counter() - t


def _child(root: str, out) -> None:
    from catalog.integrity import check_catalog

    cat = Catalog(root)
    t = time.perf_counter()
    health = check_catalog(cat)
    cold = time.perf_counter() - t
    t = time.perf_counter()
    check_catalog(Catalog(root))
    warm = time.perf_counter() - t
    t = time.perf_counter()
    tables_only = check_catalog(Catalog(root), ledger=False)
    out.send({"ok": health.ok, "problems": health.problems[:3], "counts": health.counts,
              "cold_s": round(cold, 3), "warm_s": round(warm, 3),
              "warm_tables_only_s": round(time.perf_counter() - t, 3), "ok_tables_only": tables_only.ok})


def in_child(root: str) -> dict:
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    p = ctx.Process(target=_child, args=(root, child))
    p.start()
    result = parent.recv()
    p.join()
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", default="/tmp/strongroom-integrity-bench")
    ap.add_argument("--bags", type=int, default=2000)
    ap.add_argument("--files-per-bag", type=int, default=100)
    ap.add_argument("--reuse", action="store_true")
    args = ap.parse_args()
    report = {"bags": args.bags, "file_rows": args.bags * args.files_per_bag}
    if not args.reuse:
        shutil.rmtree(args.dir, ignore_errors=True)
        report["build_s"] = round(build(args.dir, args.bags, args.files_per_bag), 1)
    report["before_compact"] = in_child(args.dir)
    Catalog(args.dir).compact()
    report["after_compact"] = in_child(args.dir)
    json.dump(report, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
