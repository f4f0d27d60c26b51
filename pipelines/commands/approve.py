"""`strongroom approve REQ [SIGFILE]`: record one approver's signature; execute at quorum.

SIGFILE is what `ssh-keygen -Y sign -n strongroom REQ.txt` wrote (REQ.txt from `strongroom
requests show REQ --signable`). The signature is checked with `ssh-keygen -Y find-principals` and
`-Y verify` against the config's allowed_signers file (pipelines.governance); a refusal says why
(another namespace, a key not allowed or outside its validity window, a signature of other bytes,
a replay, the same person twice, the requester, an expired request) and records nothing. Without
SIGFILE it only re-counts and, at quorum, retries an execution that was refused earlier.
Exit 0 recorded (or already executed), 2 refused, 1 an execution failed for a preservation reason.
"""

from __future__ import annotations

import argparse


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "approve", help="record an approver's SSH signature of a request; executes it at quorum",
        description="Record an approval (an `ssh-keygen -Y sign -n strongroom` signature of the request's "
                    "signable text) and execute the request once its quorum of distinct approvers is reached.")
    p.add_argument("request_id", metavar="REQ", help="the request id (`strongroom requests` lists them)")
    p.add_argument("sigfile", metavar="SIGFILE", nargs="?", default=None,
                   help="the signature file (REQ.txt.sig); without it: re-count and retry a refused execution")
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    from catalog.requests import load_request
    from pipelines.governance import approve, open_governed
    from pipelines.output import emit

    config, gov, catalog = open_governed(args)
    req = load_request(catalog, args.request_id)
    outcome = approve(config, gov, catalog, req, args.sigfile)
    lines = []
    if outcome.principal:
        lines.append(f"approval of {req.id} by {outcome.principal} recorded (signature verified)")
    if outcome.executed_now:
        lines.append(f"quorum reached ({len(outcome.counted)} of {outcome.quorum}: {', '.join(outcome.counted)}); "
                     f"request executed: {outcome.result.summary if outcome.result else ''}")
    elif outcome.already_executed:
        lines.append(f"request {req.id} was already executed ({outcome.already_executed.get('at')}): "
                     f"{outcome.already_executed.get('summary')}; nothing more done")
    else:
        lines.append(f"{len(outcome.counted)} of {outcome.quorum} approval(s) needed"
                     + (f" ({', '.join(outcome.counted)})" if outcome.counted else "") + "; not executed yet")
    emit(args, outcome.to_dict(), "\n".join(lines))
    return 0
