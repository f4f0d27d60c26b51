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

The catalog is checked first (`catalog.integrity.check_catalog`): a missing catalog folder, a
damaged catalog, or an empty catalog while the storage targets hold bags (a catalog wiped
whole) is said plainly, "CATALOG MISSING / DAMAGED / LOST", with `strongroom catalog rebuild`
as the way out, and exits 1; with --json that is still one JSON document (`catalog_ok: false`,
`catalog_state`, `catalog_problems`, `exit_code: 1`). A healthy status document carries
`catalog_ok: true`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import List, Set, Tuple

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
    from catalog.integrity import check_catalog
    from pipelines.cli import config_path
    from policies.config import load_config
    from reports.status import build_status, status_text

    config = load_config(config_path(args))
    catalog = open_catalog(config, check=False)  # the check is ours to report, not to die of
    if not config.catalog_is_s3 and not catalog.store.exists():
        return catalog_trouble(args, config, "missing", [f"the catalog folder {config.catalog} does not exist"])
    health = check_catalog(catalog)
    if not health.ok:
        return catalog_trouble(args, config, "damaged", health.problems)
    if catalog.bags().num_rows == 0:
        from reports.status import unfinished_deposits

        # Copies of unfinished and abandoned deposits are known, not signs of a lost catalog.
        pending = {b["id"] for d in unfinished_deposits(Path(config.staging), include_abandoned=True) for b in d.bags}
        holding = targets_holding_bags(config, ignore=pending)
        if holding:
            return catalog_trouble(args, config, "lost", [
                f"the catalog holds no bag, but storage target {name} holds bags"
                + ("" if args.library else f" (e.g. {example})") for name, example in holding])
    status = build_status(config, catalog, library=args.library, collection=args.collection, bag_id=args.bag)
    if getattr(args, "json", False) and status.warnings:
        counts: dict = {}
        for w in status.warnings:
            counts[w.flag] = counts.get(w.flag, 0) + 1
        warn(", ".join(f"{n} {flag}" for flag, n in counts.items()) + " (listed under `warnings`)")
    data, text, code = status.to_dict(), status_text(status), status.exit_code
    lost = [b for b in health.lost_bags if args.library is None or b.startswith(f"{args.library}/")]
    if lost:  # given up on by a rebuild: on record in the ledger, shown until resolved
        data = {**data, "lost_bags": lost, "ok": False, "exit_code": 1}
        text += "\n" + "\n".join([f"LOST BAGS ({len(lost)}): registered in the ledger, but `strongroom "
                                   f"catalog rebuild` found no copy that could be registered:"]
                                  + [f"  - {b}" for b in lost])
        code = 1
    data, text, code = broken_policies(config, status, data, text, code)
    emit(args, data, text)
    return code


def broken_policies(config, status, data: dict, text: str, code: int):
    """A policy file that did not load is a config problem: exit 2 (1 when copies also need
    attention, the more urgent news), listed under `broken_policies`. With --library only the
    broken policies of the bags shown count (the file names come with the notes)."""
    broken = dict(getattr(config, "broken_policies", {}))
    if status.filters.get("library") is not None:
        used = {b.policy for b in status.bags}
        broken = {name: entry for name, entry in broken.items() if name in used}
    if not broken:
        return data, text, code
    code = 1 if code == 1 else 2
    listed = [{"policy": e.name, "file": str(e.file), "problems": [str(i) for i in e.issues]} for e in broken.values()]
    text += "\n" + "\n".join([f"BROKEN POLICY FILES ({len(listed)}), exit {code}:"]
                              + [f"  - {entry.describe()}" for entry in broken.values()])
    return {**data, "broken_policies": listed, "ok": False, "exit_code": code}, text, code


def catalog_trouble(args: argparse.Namespace, config, what: str, problems: List[str]) -> int:
    """Say the catalog is missing, damaged or lost, in text or as one JSON document; exit 1.

    A preservation problem, not a config error: the copies may be intact, but nothing the
    catalog would say can be trusted until `strongroom catalog rebuild` (which reads them).
    With --library the problems are counted, not listed: they name files and bags of any
    library, and a library's view shows nothing of another's."""
    from catalog.integrity import REBUILD_HINT

    if getattr(args, "library", None) is not None and what == "damaged":
        problems = [f"{len(problems)} problem(s) in the catalog shared by every library; "
                    f"`strongroom status` without --library lists them"]

    hint = (f"{REBUILD_HINT} to rebuild it from the copies" if what != "missing" else
            f"{REBUILD_HINT} if the catalog was lost, `strongroom init` for a new archive, or fix `catalog` "
            f"in {config.path}")
    data = {"catalog": config.catalog, "catalog_ok": False, "catalog_state": what, "catalog_problems": problems,
            "hint": hint, "exit_code": 1}
    lines = [f"CATALOG {what.upper()}: {config.catalog}: nothing it says can be trusted"]
    lines += [f"  - {p}" for p in problems[:200]]
    if len(problems) > 200:
        lines.append(f"  ... and {len(problems) - 200} more")
    lines.append(hint[0].upper() + hint[1:] + ".")
    emit(args, data, "\n".join(lines))
    return 1


def targets_holding_bags(config, ignore: Set[str] = frozenset()) -> List[Tuple[str, str]]:
    """(target, one bag id) for each storage target that holds at least one bag not in `ignore`
    (the bags of unfinished deposits, copied but not registered yet): asked only when the
    catalog is empty, so a wiped catalog is not taken for a new archive. A target that cannot
    be listed is left to the usual reachability flags."""
    from storage_adapters.registry import open_target
    from strongroom.errors import StrongroomError

    found = []
    for target in config.storage.values():
        try:
            first = next((b for b in open_target(target).list_bags() if str(b) not in ignore), None)
        except (StrongroomError, OSError):
            continue
        if first is not None:
            found.append((target.name, str(first)))
    return found
