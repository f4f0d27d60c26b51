"""`strongroom catalog rebuild [--quick]`: rebuild the catalog from what the storage targets hold.

Registered through `pipelines.commands.catalog_cmd.SUBCOMMAND_MODULES`. The work is
`catalog.rebuild.rebuild_catalog` (see there for what is read, verified and recorded); this
module only parses options and prints the summary. Exit 0 when every copy found verified and
every copy the policies ask for was found (a damaged catalog whose bad files were moved aside
and whose content came back whole from the copies included); 1 when a copy is damaged, missing
or disputed, copies disagree, a bag could not be read, the catalog is still damaged after, or a
target could not be listed; 2 for a config error. The catalog is opened without its self-check
(mending a damaged catalog is the point).
"""

from __future__ import annotations

import argparse
import sys

from pipelines.output import emit

CATALOG_ACTIONS_DEST = "catalog_command"  # the `dest` of pipelines.commands.catalog_cmd's sub-parsers


def register(actions):
    """Add `rebuild` to the `catalog` parser's actions. `pipelines.cli` also calls this, with the
    top-level sub-parsers, because it registers every module in this folder: then add nothing,
    since rebuild is `strongroom catalog rebuild`, not a command of its own."""
    if getattr(actions, "dest", None) != CATALOG_ACTIONS_DEST:
        return None
    parser = actions.add_parser(
        "rebuild", help="rebuild the catalog from the bags on every storage target (verifying each copy)",
        description="List every storage target of the config, read each bag's own tag files (bag-info, "
                    "manifests, metadata/) and register what the catalog lacks: bags, files and the "
                    "state of every copy after verifying it against the bag's own manifests (deep: "
                    "every byte re-read; --quick: sizes only). Bags and copies the catalog already "
                    "knows are left as they are; the ledger's events come back from the checkpoints the "
                    "targets keep. Works into an empty or missing catalog folder. "
                    "Exit 1 if a copy is damaged or missing or copies disagree.")
    parser.add_argument("--quick", action="store_true",
                        help="check existence and size only, without re-reading the bytes")
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from catalog.access import open_catalog
    from catalog.rebuild import rebuild_catalog
    from pipelines.cli import config_path
    from policies.config import load_config

    config = load_config(config_path(args))
    catalog = open_catalog(config, check=False)  # mending a damaged catalog is the point

    def progress(done: int, total: int, bag_id: str) -> None:
        if getattr(args, "verbose", 0) and not getattr(args, "json", False):
            print(f"[{done + 1}/{total}] {bag_id}", file=sys.stderr, flush=True)

    result = rebuild_catalog(config, catalog, deep=not args.quick, workers=getattr(args, "workers", 1) or 1,
                             progress=progress)
    emit(args, result.to_dict(), format_result(result))
    return result.exit_code


def format_result(result) -> str:
    from policies.units import format_size

    d = result.to_dict()["summary"]
    mode = "deep: every byte re-read" if result.deep else "quick: sizes only"
    lines = [f"Catalog rebuild into {result.catalog} ({mode})"]
    if result.catalog_problems:
        lines.append(f"the catalog was damaged ({len(result.catalog_problems)} problem(s)):")
        lines += [f"  - {p}" for p in result.catalog_problems[:50]]
    if result.set_aside.moved:
        lines.append(f"{len(result.set_aside.moved)} damaged catalog file(s) moved aside (kept, not deleted) into "
                     f"{result.set_aside.folder}" + ("; the ledger too: a new chain starts here"
                                                     if result.set_aside.ledger_reset else ""))
    for t in result.targets:
        lines.append(f"  target {t.name} ({t.site}): " + (f"CANNOT BE LISTED: {t.error}" if t.error else
                                                          f"{t.bags} bag(s)"))
    ev = result.events
    if ev.restored:
        lines.append(f"ledger: {ev.restored} segment(s), {ev.events} event(s) restored from the storage "
                     f"checkpoints ({', '.join(ev.sources)})")
    lines += [f"  EVENTS NOT RESTORED: {text}" for text in ev.problems]
    lines += [f"  checkpoints: {text}" for text in ev.warnings]
    lines.append(f"{d['bags_found']} bag(s) found: {d['bags_added']} added, {d['bags_already_registered']} "
                 f"already registered")
    lines.append(f"copies: {d['copies_verified']} verified, {d['copies_damaged']} damaged, "
                 f"{d['copies_missing']} missing, {d['copies_disputed']} disputed, "
                 f"{d['copies_already_known']} already known")
    for b in result.bags:
        if b.ok and b.action == "already registered" and all(c.state == "known" for c in b.copies):
            continue
        copies = ", ".join(f"{c.target} {c.state}" for c in b.copies)
        lines.append(f"  {b.bag_id}  {b.files} file(s)  {format_size(b.bytes)}  {b.action}: {copies}")
        for c in b.copies:
            if c.state in ("damaged", "missing", "disputed"):
                lines.append(f"      {c.target}: {c.state.upper()}: {c.detail}")
        for text in b.conflicts:
            lines.append(f"      CONFLICT: {text}")
        for text in b.problems:
            lines.append(f"      PROBLEM: {text}")
    for text in result.remaining_problems:
        lines.append(f"  STILL DAMAGED: {text}")
    lines.append("OK: every copy found is intact." if result.ok else
                 "ATTENTION: damaged, missing or disputed copies, conflicts, unreadable bags or unlisted targets "
                 "(exit 1); `strongroom status` shows them. A disputed bag is left for a person: nothing of it is "
                 "repaired until its copies agree.")
    return "\n".join(lines)
