"""`strongroom restore BAG DEST | --deposit GROUP DEST | --collection LIB/COLL [--version N] DEST
[--payload-only] [--from TARGET] [--partial]`.

Writes a bag back from a verified (or repaired and re-verified) replica (whole bag, or with
--payload-only the original source tree), checking every payload file against the catalog while
streaming it. DEST must lie outside the archive's own folders (catalog, staging, policies,
storage targets): that is checked before the catalog is even opened. The same command rerun
after a kill finishes the restore (see fixity.restore: a DEST put in place but not recorded is
checked again, file by file, then recorded). The work
is `fixity.restore.restore_bag` (one bag, a version bag's fetch.txt resolved) and
`fixity.restore_group.restore_group` (every bag of a deposit or collection version into one
DEST); this module only parses, shows progress and prints. With --partial the files that have a
good copy are written and the others listed (exit 1).
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
    p.add_argument("bag", metavar="BAG", nargs="?",
                   help="bag id, LIB/COLL/YYYYMMDDTHHMMSSZ-N (`strongroom status` lists them); not with --deposit "
                        "or --collection")
    p.add_argument("dest", metavar="DEST", nargs="?", help="folder to create (it must not exist, or be empty)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--deposit", metavar="GROUP", default=None,
                       help="restore every bag of one deposit (a deposit split into several bags) into DEST: "
                            "the group id LIB/COLL/YYYYMMDDTHHMMSSZ, a part's bag id or the deposit key status "
                            "shows; each bag in DEST/<bag id>/, or with --payload-only one merged source tree")
    which.add_argument("--collection", metavar="LIB/COLL", default=None,
                       help="restore a collection as it was at one version (its successive deposits; default the "
                            "latest), files kept unchanged from earlier versions included")
    p.add_argument("--version", metavar="N|BAG_ID", default=None,
                   help="with --collection: the version number (1 = first deposit), or a bag or group id of it")
    p.add_argument("--partial", action="store_true",
                   help="write every file that has a good copy and list each one that has none (exit 1, recorded "
                        "as a dissemination with outcome warning); without it nothing is written unless all are")
    p.add_argument("--payload-only", action="store_true",
                   help="write only the payload, as the original source tree: the files under data/ directly "
                        "in DEST, empty folders recreated, modification times restored")
    p.add_argument("--library", default=None, metavar="L",
                   help="restore for library L: a bag, deposit or collection of any other library is refused "
                        "(exit 2) before anything is read")
    p.add_argument("--for-preservation", action="store_true",
                   help="restore a dark (or any) collection for preservation work: only for the consortium "
                        "operators listed in governance.operators; recorded in the dissemination event")
    p.add_argument("--from", dest="from_target", metavar="TARGET", default=None,
                   help="read from this storage target first (other verified replicas are used only for files "
                        "that are damaged or missing there)")
    p.set_defaults(run=run)


def run(args) -> int:
    from catalog.access import open_catalog
    from fixity.restore import RestoreError, check_dest_location, restore_bag
    from fixity.restore_group import restore_group, select_deposit, select_version
    from pipelines.progress import ByteProgress
    from policies.config import load_config
    from strongroom.errors import UsageError

    group = args.deposit is not None or args.collection is not None
    given = [a for a in (args.bag, args.dest) if a is not None]
    if group and len(given) != 1:
        raise UsageError(f"restore {'--deposit' if args.deposit is not None else '--collection'} takes one folder, "
                         f"DEST (got {len(given)} positional argument(s))")
    if not group and len(given) != 2:
        raise UsageError("restore needs BAG and DEST (or --deposit GROUP DEST, or --collection LIB/COLL DEST)")
    if args.version is not None and args.collection is None:
        raise UsageError("--version needs --collection LIB/COLL (the collection whose version to restore)",
                         key="--version")
    dest = given[-1]
    config = load_config(config_path(args))
    check_dest_location(dest, config)   # a DEST inside the archive is refused before anything is opened
    catalog = open_catalog(config)
    if config.governance is None:
        if args.for_preservation:
            raise UsageError("--for-preservation needs a governance: section naming the consortium operators "
                             "(see docs/governance.md)", path=str(config.path), key="governance")
        _check_library(args, catalog)
    selection = None
    if args.deposit is not None:
        selection = select_deposit(catalog, args.deposit)
    elif args.collection is not None:
        selection = select_version(catalog, args.collection, args.version)
    known = [_bag_record(catalog, str(b)) for b in selection.bags] if selection else [_bag_record(catalog, args.bag)]
    if config.governance is not None:
        catalog = _gate(args, config.governance, catalog, known)
    else:
        _warn_ungoverned(config, known)
    total_bytes = sum(k.byte_count for k in known if k)
    total_files = sum(k.file_count for k in known if k)
    options = dict(payload_only=args.payload_only, from_target=args.from_target, workers=args.workers,
                   catalog=catalog, partial=args.partial)
    try:
        with ByteProgress(total_bytes, total_files, "restore") as progress:
            if selection is not None:
                result = restore_group(config, selection, dest, progress=progress, **options)
            else:
                result = restore_bag(config, args.bag, dest, progress=progress, **options)
    except RestoreError as exc:
        if not args.json:
            raise
        emit(args, {**exc.result.to_dict(), "restored": False, "error": str(exc),
                    "problems": [str(p) for p in exc.problems], "exit_code": exc.exit_code}, "")
        print(f"strongroom restore: error: {exc}", file=sys.stderr)
        return exc.exit_code
    code = 1 if result.missing else 0
    data = {**result.to_dict(), "restored": True, "exit_code": code}
    text = (_group_text(result) if selection is not None else _text(result)) if not args.json else ""
    emit(args, data, text)
    if not args.json:
        for w in result.warnings:
            warn(w)
    if result.missing:
        shown = result.missing if len(result.missing) <= 200 else result.missing[:200] + ["..."]
        print(f"strongroom restore: partial restore: {len(result.missing)} file(s) have no good copy on any "
              f"verified replica and were NOT written:", file=sys.stderr)
        for m in shown:
            print(f"  missing: {m}", file=sys.stderr)
    return code


def _check_library(args, catalog) -> None:
    """With --library: UsageError (exit 2) unless what is named is that library's, in words that
    reveal nothing of another library's bag (`catalog.scope.LibraryScope.check_bag`)."""
    from catalog.scope import LibraryScope
    from strongroom.errors import UsageError

    if args.library is None:
        return
    named = args.deposit if args.deposit is not None else args.collection if args.collection is not None else None
    if named is not None and not named.startswith(f"{args.library}/"):
        raise UsageError(f"{named} is not of library {args.library}; nothing done", key="--library")
    if named is None:
        LibraryScope(args.library).check_bag(catalog, args.bag)


def _warn_ungoverned(config, known) -> None:
    """Purchased content is dark by default (DESIGN, Governance), but only an archive with a
    governance: section has approvers who could release it; without one the restore goes ahead,
    and says plainly on stderr that nothing decided it may (the dissemination is recorded as ever)."""
    dark = sorted({f"{k.library}/{k.collection}" for k in known if k and k.collection_type == "purchased"})
    if dark:
        warn(f"{', '.join(dark)} is purchased content (dark by default), but access states are not enforced: "
             f"{config.path} has no governance: section (docs/governance.md says how to set up approvers, "
             f"entitlements and trigger release)")


def _gate(args, gov, catalog, known):
    """With a governance: section, the access states decide (catalog.entitlements.decide_restore):
    dark refused unless --for-preservation by a listed operator, open-to-owner for its owner
    library, released for the entitled libraries; the basis goes into the dissemination events.
    A bag the catalog does not know is left to the restore to report (after the library check)."""
    from catalog.entitlements import decide_restore, note_disseminations
    from strongroom import agent

    if any(k is None for k in known):
        _check_library(args, catalog)
        return catalog
    decision = decide_restore(catalog, known, args.library, args.for_preservation, agent.operator(),
                              gov.operators or ())
    return note_disseminations(catalog, decision)


def _bag_record(catalog, bag: str):
    """The catalog's bag row, for the progress bar's totals (errors are left to restore_bag)."""
    try:
        return catalog.bag(bag)
    except Exception:
        return None


def _group_text(result) -> str:
    what = "payloads merged into one source tree" if result.payload_only else "each bag in DEST/<bag id>/"
    lines = [f"Restored {result.selection.label} ({len(result.parts)} bag(s), {what}) to {result.dest}: "
             f"{result.files} file(s), {result.bytes:,} bytes, every file verified against the catalog."]
    for part in result.parts:
        lines.append(f"  {part.bag_id}: {part.files} file(s), {part.bytes:,} bytes"
                     + (f", {part.fetched} unchanged file(s) read from earlier bags" if part.fetched else "")
                     + (f", {len(part.missing)} left out" if part.missing else ""))
        if part.damaged:
            lines.append(f"    replica(s) now marked damaged: {', '.join(sorted(part.damaged))}; "
                         f"`strongroom audit --bag {part.bag_id}` repairs them")
    lines.append(f"{len(result.events)} event(s) recorded in the ledger.")
    return "\n".join(lines)


def _text(result) -> str:
    what = "payload (source tree)" if result.payload_only else "bag"
    done = "Partially restored" if result.missing else "Restored"
    lines = [f"{done} {what} {result.bag_id} to {result.dest}: {result.files} file(s), {result.bytes:,} bytes, "
             "every file verified against the catalog."]
    if result.fetched:
        lines.append(f"  {result.fetched} unchanged file(s) read from the earlier bag(s) its fetch.txt names")
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
