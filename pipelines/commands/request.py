"""`strongroom request trigger|withdraw|legal-hold|release-hold TARGET --reason TEXT [--evidence URL]`.

Writes a governance request (catalog.requests) and prints its id and sha256; approvers then sign
its text (`strongroom requests show REQ --signable`) and `strongroom approve` counts them. A
trigger names a purchased collection and carries its entitlements not yet released into the
signed text: the approvers see, and sign, exactly which libraries it releases to (an entitlement
added after a release needs a trigger of its own).
"""

from __future__ import annotations

import argparse

from policies.governance import KINDS


def register(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "request", help="ask the governance board for a trigger release, withdrawal or legal hold",
        description="Write a request that a quorum of approvers signs (see docs/governance.md).")
    kinds = parser.add_subparsers(dest="kind", metavar="KIND")
    kinds.required = True
    helps = {"trigger": "release a dark purchased collection LIB/COLL to its entitled libraries",
             "withdraw": "remove a bag (or every bag of a collection) from every target, leaving a tombstone",
             "legal-hold": "put a legal hold on a bag (or collection): no withdrawal while held",
             "release-hold": "lift a legal hold"}
    for kind in KINDS:
        p = kinds.add_parser(kind, help=helps[kind], description=helps[kind].capitalize() + ".")
        p.add_argument("target", metavar="TARGET", help="LIB/COLL or a bag id" if kind != "trigger" else "LIB/COLL")
        p.add_argument("--reason", required=True, metavar="TEXT", help="why (one line; approvers read it)")
        p.add_argument("--evidence", default=None, metavar="URL", help="a link to the evidence (vendor notice, court order)")
        p.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from catalog.entitlements import OPEN_TO_OWNER, access_state, entitlements, releases
    from catalog.requests import new_request, save_request
    from pipelines.governance import collection_bags, open_governed
    from pipelines.output import emit
    from strongroom import agent
    from strongroom.errors import UsageError

    _config, gov, catalog = open_governed(args)
    bags = collection_bags(catalog, args.target, bag_allowed=args.kind != "trigger")
    grants = ()
    if args.kind == "trigger":
        owner, coll = args.target.split("/", 1)
        state = access_state(catalog, owner, coll)
        if state == OPEN_TO_OWNER:
            raise UsageError(f"collection {args.target} is self-built (open to its owner): a trigger releases "
                             f"purchased content only", key="TARGET")
        done = set(releases(catalog, args.target).get(args.target, []))
        grants = tuple(g for g in (e.grant() for e in entitlements(catalog, args.target)) if g not in done)
        if not grants:
            raise UsageError(f"collection {args.target} has no entitlements that are not released yet: a trigger "
                             f"releases to the entitled libraries only; add them first (`strongroom entitlement add "
                             f"{args.target} --library L`)", key="TARGET")
    req = new_request(args.kind, args.target, bags, args.reason, args.evidence, agent.operator(), gov.expiry_days,
                      grants)
    save_request(catalog, req)
    text = (f"request {req.id}: {req.kind} {req.target} ({len(req.bag_ids)} bag(s)), needs {gov.quorum[req.kind]} "
            f"approval(s), expires {req.expires:%Y-%m-%d %H:%M} UTC\nsha256 {req.sha256}\n"
            f"approvers: strongroom requests show {req.id} --signable > {req.id}.txt\n"
            f"           ssh-keygen -Y sign -f ~/.ssh/id_ed25519 -n strongroom {req.id}.txt\n"
            f"           strongroom approve {req.id} {req.id}.txt.sig")
    emit(args, {"id": req.id, "sha256": req.sha256}, text)
    return 0
