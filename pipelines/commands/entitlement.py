"""`strongroom entitlement add|remove|list`: perpetual-access rights to purchased collections.

An entitlement says which member library may be handed a purchased collection once a trigger
releases it (titles, years). Each change is a catalog row and a `policy assignment` event in the
ledger (catalog.entitlements). A trigger request copies the entitlements into its signed text,
so a change after a release does not widen what the board approved.
"""

from __future__ import annotations

import argparse


def register(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "entitlement", help="record which libraries hold perpetual-access rights to a purchased collection",
        description="Entitlements of purchased collections (governance; needs a governance: section).")
    actions = parser.add_subparsers(dest="entitlement_command", metavar="ACTION")
    actions.required = True
    for name, text in (("add", "add an entitlement"), ("remove", "remove an entitlement (exactly as added)")):
        p = actions.add_parser(name, help=text, description=f"{text.capitalize()}; recorded in the ledger.")
        p.add_argument("collection", metavar="LIB/COLL", help="a purchased collection")
        p.add_argument("--library", required=True, metavar="L", help="the entitled library's code")
        p.add_argument("--titles", nargs="+", default=None, metavar="TITLE",
                       help="only these titles (free text, ISSN or ISBN, matched against the bags' titles)")
        p.add_argument("--years", default=None, metavar="YYYY-YYYY", help="only these years, e.g. 2001-2020")
        p.set_defaults(run=run_change, action=name)
    listing = actions.add_parser("list", help="list entitlements", description="List the current entitlements.")
    listing.add_argument("collection", metavar="LIB/COLL", nargs="?", default=None)
    listing.set_defaults(run=run_list)
    return parser


def run_change(args: argparse.Namespace) -> int:
    from catalog.entitlements import Entitlement, change_entitlement, entitlements, parse_years
    from catalog.requests import check_line
    from pipelines.governance import collection_bags, open_governed
    from pipelines.output import emit
    from strongroom.bag_id import check_code
    from strongroom.errors import UsageError

    config, _gov, catalog = open_governed(args)
    check_code(args.library, "library")
    if config.libraries is not None and args.library not in config.libraries:
        raise UsageError(f"library {args.library} is not in the config's libraries: ({', '.join(sorted(config.libraries))})",
                         path=str(config.path), key="--library")
    collection_bags(catalog, args.collection, bag_allowed=False)
    owner, coll = args.collection.split("/", 1)
    types = set(catalog.bags(owner, coll).column("collection_type").to_pylist())
    if types != {"purchased"}:
        raise UsageError(f"collection {args.collection} is self-built: entitlements are for purchased collections "
                         f"only (a self-built collection is open to its owner {owner})", key="LIB/COLL")
    titles = tuple(check_line(t, "--titles") or "" for t in args.titles or ())
    ent = Entitlement(args.collection, args.library, titles, parse_years(args.years))
    present = ent in entitlements(catalog, args.collection)
    if args.action == "remove" and not present:
        raise UsageError(f"no such entitlement of {args.library} to {args.collection} (`strongroom entitlement "
                         f"list {args.collection}` shows them as added)", key="--library")
    changed = not (args.action == "add" and present)
    if changed:
        change_entitlement(catalog, ent, args.action)
    data = {"collection": ent.collection, "library": ent.library, "titles": list(ent.titles),
            "years": list(ent.years) if ent.years else None, "action": args.action, "changed": changed}
    verb = "added" if args.action == "add" else "removed"
    text = (f"entitlement {verb}: {ent.grant().describe()} to {ent.collection} (recorded in the ledger)" if changed
            else f"entitlement already present: {ent.grant().describe()} to {ent.collection}; nothing changed")
    emit(args, data, text)
    return 0


def run_list(args: argparse.Namespace) -> int:
    from catalog.entitlements import access_state, entitlements
    from pipelines.governance import open_governed
    from pipelines.output import emit

    _config, _gov, catalog = open_governed(args)
    found = entitlements(catalog, args.collection)
    rows = []
    for e in found:
        owner, coll = e.collection.split("/", 1)
        rows.append({"collection": e.collection, "library": e.library, "titles": list(e.titles),
                     "years": list(e.years) if e.years else None, "access_state": access_state(catalog, owner, coll)})
    lines = [f"{r['collection']:<30} {e.grant().describe():<40} ({r['access_state']})" for r, e in zip(rows, found)]
    emit(args, {"entitlements": rows}, "\n".join(lines) or "no entitlements recorded")
    return 0
