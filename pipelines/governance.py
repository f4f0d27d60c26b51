"""The governance flow: approving a request, counting the quorum, executing it once.

`approve` takes one approver's signature over a request's signable text and decides whether it
counts; at quorum the request is executed by its kind (a trigger releases a dark collection
here; withdraw, legal-hold and release-hold are carried out by `fixity.withdraw`, imported only
when such a request reaches its quorum). The quorum is re-counted from every stored approval,
each signature checked again with `ssh-keygen` against the allowed_signers file as it is now, so
a key removed from the file since it signed no longer counts. A request whose execution was
refused (a legal hold, Object Lock retention) stays approved; `strongroom approve REQ` without a
signature tries again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

from catalog.catalog import Catalog
from catalog.entitlements import record_release
from catalog.requests import (Approval, ExecutionResult, Request, approvals, execution, mark_executed,
                              record_execution_failure, save_approval)
from catalog.schema import utc_now
from policies.governance import Governance
from strongroom.errors import InputError, StrongroomError
from strongroom.ssh_signature import SignatureRefused, read_signature_file, verify


@dataclass
class ApproveOutcome:
    """What one `strongroom approve` did, for the text and --json output."""

    request: Request
    principal: Optional[str] = None
    counted: List[str] = field(default_factory=list)       # distinct valid approvers, requester excluded
    quorum: int = 0
    executed_now: bool = False
    already_executed: Optional[Dict] = None
    result: Optional[ExecutionResult] = None

    def to_dict(self) -> Dict:
        return {"id": self.request.id, "sha256": self.request.sha256, "kind": self.request.kind,
                "principal": self.principal, "approvals": self.counted, "quorum": self.quorum,
                "executed": bool(self.executed_now or self.already_executed),
                "executed_now": self.executed_now,
                "summary": (self.result.summary if self.result else
                            (self.already_executed or {}).get("summary")),
                "details": self.result.details if self.result else {}}


def open_governed(args):
    """(config, governance, catalog) for a governance command; ConfigError (exit 2) without a
    `governance:` section, before the catalog is opened."""
    from catalog.access import open_catalog
    from pipelines.cli import config_path
    from policies.config import load_config
    from policies.governance import require_governance

    config = load_config(config_path(args))
    gov = require_governance(config)
    return config, gov, open_catalog(config)


def collection_bags(catalog: Catalog, target: str, *, bag_allowed: bool = True) -> List[str]:
    """The bag ids TARGET names (LIB/COLL: every bag of it; a bag id: that bag); InputError if none."""
    from strongroom.bag_id import BagId

    parts = target.split("/")
    if len(parts) == 2 and all(parts):
        bags = catalog.bags(parts[0], parts[1]).column("bag_id").to_pylist()
        if not bags:
            raise InputError(f"no collection {target} in the catalog (`strongroom status` lists them)", key="TARGET")
        return bags
    if not bag_allowed:
        raise InputError(f"{target!r} is not a collection LIB/COLL", key="TARGET")
    try:
        BagId.parse(target)
    except StrongroomError:
        raise InputError(f"{target!r} is neither a collection LIB/COLL nor a bag id LIB/COLL/YYYYMMDDTHHMMSSZ-N",
                         key="TARGET") from None
    if not catalog.has_bag(target):
        raise InputError(f"no bag {target} in the catalog (`strongroom status` lists them)", key="TARGET")
    return [target]


def valid_approvers(gov: Governance, req: Request, stored: List[Approval]) -> List[str]:
    """Distinct principals whose stored signature still verifies over this request, not the requester."""
    found: List[str] = []
    for a in stored:
        if a.principal == req.requester or a.principal in found or a.request_sha256 != req.sha256:
            continue
        try:
            who = verify(gov.allowed_signers, a.signature, req.signable(), where=f"approval by {a.principal}")
        except SignatureRefused:
            continue
        if who.principal == a.principal:
            found.append(a.principal)
    return found


def approve(config, gov: Governance, catalog: Catalog, req: Request, sig_path: Optional[str]) -> ApproveOutcome:
    """Record one approval (when `sig_path` is given) and execute at quorum; see the module docstring."""
    outcome = ApproveOutcome(req, quorum=gov.quorum[req.kind])
    done = execution(catalog, req.id)
    if done is not None:
        outcome.already_executed = done
        outcome.counted = list(done.get("approvers") or [])
        return outcome
    if req.expired():
        raise InputError(f"request {req.id} expired on {req.expires:%Y-%m-%d %H:%M} UTC without reaching its "
                         f"quorum; nothing recorded (make a new request)", key="REQ")
    if sig_path is not None:
        outcome.principal = _record(gov, catalog, req, sig_path)
    outcome.counted = valid_approvers(gov, req, approvals(catalog, req.id))
    if len(outcome.counted) >= outcome.quorum:
        _execute(config, catalog, req, outcome)
    return outcome


def _record(gov: Governance, catalog: Catalog, req: Request, sig_path: str) -> str:
    signature = read_signature_file(sig_path)
    for other in approvals(catalog):
        if other.signature.strip() == signature.strip() and other.request_id != req.id:
            raise SignatureRefused(f"is a replayed signature: it was made for request {other.request_id}, "
                                   f"not {req.id}; nothing recorded", path=sig_path)
    who = verify(gov.allowed_signers, signature, req.signable(), where=sig_path)
    if who.principal == req.requester:
        raise SignatureRefused(f"is by {who.principal}, who made request {req.id}: the requester never "
                               f"approves their own request; nothing recorded", path=sig_path)
    approval = Approval(req.id, req.sha256, who.principal, who.fingerprint, signature, utc_now())
    if not save_approval(catalog, approval):
        raise SignatureRefused(f"{who.principal} has already approved request {req.id}: one approval per "
                               f"person; nothing recorded", path=sig_path)
    return who.principal


def _execute(config, catalog: Catalog, req: Request, outcome: ApproveOutcome) -> None:
    """Carry the request out once: under its execution claim (catalog.execution_claims), and not
    again if a run that held the claim before finished it."""
    from catalog.execution_claims import execution_claim

    with execution_claim(catalog, req.id):
        done = execution(catalog, req.id)
        if done is not None:
            outcome.already_executed = done
            return
        _execute_claimed(config, catalog, req, outcome)


def _execute_claimed(config, catalog: Catalog, req: Request, outcome: ApproveOutcome) -> None:
    stored = [a for a in approvals(catalog, req.id) if a.principal in outcome.counted]
    try:
        if req.kind == "trigger":
            count = record_release(catalog, req)
            result = ExecutionResult(f"collection {req.target} released ({count} bag(s)) to "
                                     + "; ".join(g.describe() for g in req.grants),
                                     {"released_to": [g.describe() for g in req.grants], "bags": list(req.bag_ids)})
        else:
            try:
                from fixity import withdraw
            except ModuleNotFoundError as exc:
                if exc.name != "fixity.withdraw":
                    raise
                raise InputError(f"request {req.id} reached its quorum, but this installation cannot carry out "
                                 f"{req.kind} requests yet; it stays approved (`strongroom approve {req.id}` "
                                 f"retries)") from None
            run = {"withdraw": withdraw.execute_withdraw, "legal-hold": withdraw.execute_legal_hold,
                   "release-hold": withdraw.execute_release_hold}[req.kind]
            result = run(config, catalog, req, stored)
    except StrongroomError as exc:
        record_execution_failure(catalog, req, str(exc))
        raise
    outcome.result = result
    if mark_executed(catalog, req, result, outcome.counted):
        outcome.executed_now = True
    else:
        outcome.already_executed = execution(catalog, req.id)


__all__ = ["ApproveOutcome", "approve", "collection_bags", "open_governed", "valid_approvers"]
