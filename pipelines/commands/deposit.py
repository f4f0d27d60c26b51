"""`strongroom deposit SOURCE --library LIB --collection COLL --type purchased|self-built`."""

from __future__ import annotations

from pathlib import Path

from pipelines.cli import config_path
from pipelines.output import emit, warn
from pipelines.progress import ByteProgress


def register(sub) -> None:
    p = sub.add_parser("deposit", help="package a source folder as validated BagIt bag(s) and preserve them")
    p.add_argument("source", help="folder holding the collection (never modified)")
    p.add_argument("--library", required=True, help="library code, e.g. PKU")
    p.add_argument("--collection", required=True, help="collection code, e.g. rare-books")
    p.add_argument("--type", dest="collection_type", required=True, choices=["purchased", "self-built"])
    p.add_argument("--policy", default=None, help="policy name (default: chosen by --type)")
    p.add_argument("--title", default="", help="human-readable collection title (any language)")
    p.add_argument("--follow-internal-links", action="store_true",
                   help="take symbolic links to files inside the source as those files (default: refuse links)")
    p.set_defaults(run=run)


def run(args) -> int:
    from ingest.deposit import DepositRequest, ingest
    from policies.config import load_config

    config = load_config(config_path(args))
    policy = config.policy_for_type(args.collection_type, args.policy)
    request = DepositRequest(
        source=Path(args.source), library=args.library, collection=args.collection,
        collection_type=args.collection_type, policy=policy, staging=config.staging, title=args.title,
        workers=args.workers, follow_internal_links=args.follow_internal_links,
    )
    result = deposit_with_progress(request, show=not args.json)
    for w in result.warnings:
        warn(w)
    emit(args, deposit_summary(result, policy), deposit_text(result, policy))
    return 0


def deposit_with_progress(request, show: bool):
    from ingest.deposit import ingest
    from ingest.scan import scan_source

    # The scan is cheap (stat only); it sizes the progress bar.
    scan = scan_source(request.source, follow_internal_links=request.follow_internal_links)
    with ByteProgress(scan.total_bytes, len(scan.files), "staging", enabled=None if show else False) as update:
        request.progress = update
        return ingest(request, scan=scan)


def deposit_summary(result, policy) -> dict:
    return {
        "state": "staged",
        "policy": policy.name,
        "files": result.file_count,
        "bytes": result.byte_count,
        "empty_directories": len(result.scan.empty_dirs),
        "bags": [
            {"id": str(b.bag_id), "path": str(b.path), "external_identifier": f"urn:uuid:{b.external_id}",
             "files": b.file_count, "bytes": b.byte_count}
            for b in result.bags
        ],
        "warnings": result.warnings,
    }


def deposit_text(result, policy) -> str:
    lines = [f"Packaged {result.file_count} file(s), {result.byte_count:,} bytes, as {len(result.bags)} "
             f"validated bag(s) (policy {policy.name}):"]
    for b in result.bags:
        lines.append(f"  {b.bag_id}  {b.file_count} file(s)  {b.path}")
    return "\n".join(lines)
