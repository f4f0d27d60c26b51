"""`strongroom requests [--pending]` and `strongroom requests show REQ [--signable]`.

`--signable` prints exactly the bytes approvers sign (nothing else, no trailing text), so
`strongroom requests show REQ --signable > REQ.txt` is the file for `ssh-keygen -Y sign`.
"""

from __future__ import annotations

import argparse
import sys


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("requests", help="list governance requests, or show one",
                              description="List governance requests with their state and approvers.")
    p.add_argument("--pending", action="store_true", help="only requests not executed and not expired")
    actions = p.add_subparsers(dest="requests_command", metavar="ACTION")
    show = actions.add_parser("show", help="show one request", description="Show one request.")
    show.add_argument("request_id", metavar="REQ")
    show.add_argument("--signable", action="store_true",
                      help="print only the exact text approvers sign (redirect it to REQ.txt)")
    show.set_defaults(run=run_show)
    p.set_defaults(run=run_list)
    return p


def describe(catalog, gov, req) -> dict:
    """One request's state for listings and reports: approvers counted now, executed or not."""
    from catalog.requests import approvals, execution
    from pipelines.governance import valid_approvers

    done = execution(catalog, req.id)
    counted = list(done.get("approvers") or []) if done else valid_approvers(gov, req, approvals(catalog, req.id))
    state = "executed" if done else "expired" if req.expired() else "pending"
    return {"id": req.id, "kind": req.kind, "target": req.target, "bags": list(req.bag_ids), "reason": req.reason,
            "evidence": req.evidence, "requester": req.requester, "created": req.created.isoformat(),
            "expires": req.expires.isoformat(), "sha256": req.sha256, "state": state, "approvers": counted,
            "quorum": gov.quorum[req.kind], "executed": done,
            "release_to": [g.describe() for g in req.grants]}


def run_list(args: argparse.Namespace) -> int:
    from catalog.requests import list_requests
    from pipelines.governance import open_governed
    from pipelines.output import emit

    _config, gov, catalog = open_governed(args)
    rows = [describe(catalog, gov, r) for r in list_requests(catalog)]
    if args.pending:
        rows = [r for r in rows if r["state"] == "pending"]
    lines = [f"{r['id']}  {r['kind']:<12} {r['target']:<32} {r['state']:<8} {len(r['approvers'])}/{r['quorum']}"
             + (f" ({', '.join(r['approvers'])})" if r["approvers"] else "") for r in rows]
    emit(args, {"requests": rows}, "\n".join(lines) or "no requests")
    return 0


def run_show(args: argparse.Namespace) -> int:
    from catalog.requests import load_request
    from pipelines.governance import open_governed
    from pipelines.output import emit

    _config, gov, catalog = open_governed(args)
    req = load_request(catalog, args.request_id)
    if args.signable:
        sys.stdout.flush()
        sys.stdout.buffer.write(req.signable())
        sys.stdout.buffer.flush()
        return 0
    row = describe(catalog, gov, req)
    text = req.signable().decode("utf-8") + (f"sha256: {req.sha256}\nstate: {row['state']}, approvals "
                                             f"{len(row['approvers'])}/{row['quorum']}"
                                             + (f" ({', '.join(row['approvers'])})" if row["approvers"] else ""))
    emit(args, row, text)
    return 0
