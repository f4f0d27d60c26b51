"""`strongroom status [--library LIB] [--collection COLL] [--bag BAG]`: what is held where.

Per collection: bags, files, bytes and replica states; per bag: each copy's target, site,
state, when it was verified and last audited; flags for anything damaged, failed, missing,
absent, unverified or overdue; unfinished deposits in staging with their failures; and the
ledger's head hash, for an auditor to note (`strongroom ledger verify --expected-head` checks it
later). The query and its text form are `reports.status` (`build_status`, `status_text`).

Exit 0 when every copy is where its policy wants it and verified (overdue audits are reported
as warnings and still exit 0: a schedule matter, fixed by `strongroom audit --due`, not
damage); 1 when anything is damaged, failed, missing, absent or unverified, or a deposit
failed; 2 for a bad filter (an unknown bag, library or collection) or config.
"""

from __future__ import annotations

import argparse

from pipelines.output import emit, warn


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "status", help="what is held where, last audit per copy, anything overdue or damaged",
        description="Bags, files and bytes per library and collection; every copy's site, state, "
                    "verification and last audit; flags for damaged, failed, missing, absent, "
                    "unverified or overdue copies; unfinished deposits; the ledger head hash. "
                    "Exit 0 all well (overdue audits are warnings), 1 a copy needs attention, "
                    "2 unknown bag/library/collection or a config error.")
    parser.add_argument("--library", default=None, help="only this library (e.g. PKU)")
    parser.add_argument("--collection", default=None, help="only this collection code")
    parser.add_argument("--bag", default=None, metavar="BAG", help="only this bag (LIB/COLL/YYYYMMDDTHHMMSSZ-N)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from catalog.access import open_catalog
    from pipelines.cli import config_path
    from policies.config import load_config
    from reports.status import build_status, status_text
    from strongroom.errors import ConfigError

    config = load_config(config_path(args))
    catalog = open_catalog(config)
    if not config.catalog_is_s3 and not catalog.store.exists():
        raise ConfigError(f"catalog folder {config.catalog} does not exist (run `strongroom init` for a new "
                          f"archive, or `strongroom catalog rebuild` if the catalog was lost)",
                          path=str(config.path), key="catalog")
    status = build_status(config, catalog, library=args.library, collection=args.collection, bag_id=args.bag)
    if getattr(args, "json", False) and status.warnings:
        counts: dict = {}
        for w in status.warnings:
            counts[w.flag] = counts.get(w.flag, 0) + 1
        warn(", ".join(f"{n} {flag}" for flag, n in counts.items()) + " (listed under `warnings`)")
    emit(args, status.to_dict(), status_text(status))
    return status.exit_code
