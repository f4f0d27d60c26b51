"""`strongroom catalog ACTION`: maintenance of the catalog (check, compact; rebuild comes from elsewhere).

Other modules add actions: put the module's name in `SUBCOMMAND_MODULES`; its
`register(actions)` receives the `catalog` parser's sub-parsers object and adds its parser with
`set_defaults(run=...)`, like a top-level command. `register` also returns that object. Note that
`pipelines.cli` registers every module in `pipelines/commands/` as a top-level command too: such a
module's `register` must add nothing when `actions.dest != "catalog_command"` (as
`catalog_rebuild` does), or the module must live elsewhere.
"""

from __future__ import annotations

import argparse
import importlib
from typing import List

# e.g. "pipelines.catalog_rebuild" (exposing register(actions)) for `strongroom catalog rebuild`.
SUBCOMMAND_MODULES: List[str] = ["pipelines.commands.catalog_rebuild"]


def register(subparsers):
    parser = subparsers.add_parser("catalog", help="catalog maintenance (check, compact, rebuild)",
                                   description="Maintenance of the catalog's Parquet tables.")
    actions = parser.add_subparsers(dest="catalog_command", metavar="ACTION")
    actions.required = True
    compact = actions.add_parser(
        "compact", help="merge each catalog table's small files into a few large ones (queries unchanged)",
        description="Merge the small Parquet files that writers append (one per write) into a few "
                    "large files per table (in size tiers, at most about a million rows per merge), and "
                    "extend the event ledger's query cache. Query results do not change; ledger "
                    "segments are never touched. Safe while other processes write; one compaction "
                    "at a time.")
    compact.set_defaults(run=run_compact)
    check = actions.add_parser(
        "check", help="the catalog's self-check alone: table files readable, file rows adding up, ledger agreeing",
        description="Run the cheap self-check every command runs when it opens the catalog (every table "
                    "file readable and of its table, every bag's file rows adding up to its Payload-Oxum, "
                    "the ledger's numbering and head, bags and copies the ledger knows present) and say "
                    "what it found. Exit 0 healthy, 1 damaged (then `strongroom catalog rebuild`), 2 config.")
    check.set_defaults(run=run_check)
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).register(actions)
    return actions


def catalog_of(args: argparse.Namespace, *, check: bool = True):
    """The Catalog named by the config (shared by catalog actions)."""
    from catalog.access import open_catalog
    from pipelines.cli import config_path
    from policies.config import load_config

    return open_catalog(load_config(config_path(args)), must_exist=True, check=check)


def run_check(args: argparse.Namespace) -> int:
    from catalog.integrity import REBUILD_HINT, check_catalog
    from pipelines.output import emit

    catalog = catalog_of(args, check=False)
    health = check_catalog(catalog)
    c = health.counts
    if health.ok:
        lines = [f"catalog {catalog.location}: healthy ({c.get('bags_rows', 0)} bag(s), {c.get('files_rows', 0)} "
                 f"file row(s), {c.get('replicas_rows', 0)} replica record(s), {c.get('segments', 0)} ledger "
                 f"segment(s); checked in {health.seconds:.2f} s)"]
    else:
        lines = [f"CATALOG DAMAGED: {catalog.location}: {len(health.problems)} problem(s)"]
        lines += [f"  - {p}" for p in health.problems]
        lines.append(REBUILD_HINT[0].upper() + REBUILD_HINT[1:] + " (damaged files are moved aside, never deleted).")
    emit(args, {"catalog": catalog.location, **health.to_dict(), "exit_code": 0 if health.ok else 1},
         "\n".join(lines))
    return 0 if health.ok else 1


def run_compact(args: argparse.Namespace) -> int:
    from pipelines.output import emit

    catalog = catalog_of(args)
    result = catalog.compact()
    lines = [f"compacted {catalog.location}: {result.files_before} file(s) -> {result.files_after}"]
    for t in result.tables:
        lines.append(f"  {t.table}: {t.files_before} -> {t.files_after} file(s), {t.rows} row(s)")
    emit(args, {"catalog": catalog.location, **result.to_dict()}, "\n".join(lines))
    return 0
