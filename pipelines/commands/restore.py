"""`strongroom restore BAG DEST [--payload-only] [--from TARGET]`.

Writes a bag back from a verified (or repaired and re-verified) replica (whole bag, or with
--payload-only the original source tree), checking every payload file against the catalog while
streaming it. DEST must lie outside the archive's own folders (catalog, staging, policies,
storage targets): that is checked before the catalog is even opened. The same command rerun
after a kill finishes the restore (see fixity.restore: a DEST put in place but not recorded is
checked again, file by file, then recorded). The work
is `fixity.restore.restore_bag`; this module only parses, shows progress and prints.
"""

from __future__ import annotations

import sys

from pipelines.cli import config_path
from pipelines.output import emit, warn


def register(sub) -> None:
    p = sub.add_parser(
        "restore", help="write a bag (or its payload) back from a verified replica, checking every file",
        description="Rebuild bag BAG in the new folder DEST from a verified replica. Every payload file is "
                    "checked against the catalog's digests as it is read; a damaged or missing copy is taken "
                    "from another verified replica instead (and recorded: the replica is marked damaged for "
                    "the next audit to repair). DEST is written completely or not at all, never inside the "
                    "archive's own folders; a rerun after a killed restore removes what it left (or, when it was "
                    "killed once DEST was in place, checks every file of DEST again and records it). Exit 0 "
                    "restored, 1 some file has no good copy anywhere (or a killed restore's DEST was changed "
                    "since), 2 usage errors.")
    p.add_argument("bag", metavar="BAG", help="bag id, LIB/COLL/YYYYMMDDTHHMMSSZ-N (`strongroom status` lists them)")
    p.add_argument("dest", metavar="DEST", help="folder to create (it must not exist, or be empty)")
    p.add_argument("--payload-only", action="store_true",
                   help="write only the payload, as the original source tree: the files under data/ directly "
                        "in DEST, empty folders recreated, modification times restored")
    p.add_argument("--from", dest="from_target", metavar="TARGET", default=None,
                   help="read from this storage target first (other verified replicas are used only for files "
                        "that are damaged or missing there)")
    p.set_defaults(run=run)


def run(args) -> int:
    from catalog.access import open_catalog
    from fixity.restore import RestoreError, check_dest_location, restore_bag
    from pipelines.progress import ByteProgress
    from policies.config import load_config

    config = load_config(config_path(args))
    check_dest_location(args.dest, config)   # a DEST inside the archive is refused before anything is opened
    catalog = open_catalog(config)
    known = _bag_record(catalog, args.bag)
    total_bytes, total_files = (known.byte_count, known.file_count) if known else (0, 0)
    try:
        with ByteProgress(total_bytes, total_files, "restore") as progress:
            result = restore_bag(config, args.bag, args.dest, payload_only=args.payload_only,
                                 from_target=args.from_target, workers=args.workers, progress=progress,
                                 catalog=catalog)
    except RestoreError as exc:
        if not args.json:
            raise
        emit(args, {**exc.result.to_dict(), "restored": False, "error": str(exc),
                    "problems": [str(p) for p in exc.problems], "exit_code": exc.exit_code}, "")
        print(f"strongroom restore: error: {exc}", file=sys.stderr)
        return exc.exit_code
    data = {**result.to_dict(), "restored": True, "exit_code": 0}
    emit(args, data, _text(result) if not args.json else "")
    if not args.json:
        for w in result.warnings:
            warn(w)
    return 0


def _bag_record(catalog, bag: str):
    """The catalog's bag row, for the progress bar's totals (errors are left to restore_bag)."""
    try:
        return catalog.bag(bag)
    except Exception:
        return None


def _text(result) -> str:
    what = "payload (source tree)" if result.payload_only else "bag"
    lines = [f"Restored {what} {result.bag_id} to {result.dest}: {result.files} file(s), {result.bytes:,} bytes, "
             "every file verified against the catalog."]
    for target, s in result.sources.items():
        lines.append(f"  from {target:<12} {s['files']} file(s), {s['bytes']:,} bytes")
    if result.payload_only:
        lines.append(f"  {result.empty_dirs} empty folder(s) recreated; modification times restored")
    else:
        lines.append(f"  tag files from {result.tag_source} ({result.tag_files}); bag validated")
    if result.fallbacks:
        lines.append(f"NOTE: {len(result.fallbacks)} file(s) were damaged or missing on a replica and were taken "
                     "from another one:")
        for f in result.fallbacks[:50]:
            refused = "; ".join(f"{p.target}: {p.problem}" for p in f.failed)
            lines.append(f"  {f.path}: from {f.source} (refused {refused})")
        if len(result.fallbacks) > 50:
            lines.append(f"  ... and {len(result.fallbacks) - 50} more")
    if result.damaged:
        names = ", ".join(sorted(result.damaged))
        lines.append(f"Replica(s) now marked damaged (or missing) in the catalog: {names}; "
                     f"`strongroom audit --bag {result.bag_id}` repairs them from a good copy.")
    lines.append(f"{len(result.events)} event(s) recorded in the ledger.")
    return "\n".join(lines)
