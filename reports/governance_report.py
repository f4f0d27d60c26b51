"""The governance section of the preservation report: access states, entitlements, requests.

A consortium board and an auditor want to see, next to what is preserved, who may be handed it
and what the board decided: each collection's access state (dark, open-to-owner, released, and
to whom), the entitlements recorded, and every request with its approvers, pending or executed
(issue 13 part 6). Read from the catalog's governance records (catalog.entitlements,
catalog.requests); approvals are shown as recorded (each was verified with `ssh-keygen -Y
verify` when recorded; `strongroom requests` re-checks them against today's allowed_signers).
"""

from __future__ import annotations

from typing import Any, Dict, List, Set, Tuple

import pyarrow as pa

from catalog.catalog import Catalog
from catalog.entitlements import access_state, entitlements, releases
from catalog.requests import approvals, execution, list_requests


def governance_section(config, catalog: Catalog, bags: pa.Table) -> Dict[str, Any]:
    """{"enforced", "access", "entitlements", "requests"} for the collections of `bags` (the scope)."""
    collections: Set[Tuple[str, str]] = set(zip(bags.column("library").to_pylist(),
                                                bags.column("collection").to_pylist()))
    names = {f"{lib}/{coll}" for lib, coll in collections}
    released = releases(catalog)
    access = [{"collection": f"{lib}/{coll}", "state": access_state(catalog, lib, coll, released),
               "released_to": [g.describe() for g in released.get(f"{lib}/{coll}", [])]}
              for lib, coll in sorted(collections)]
    ents = [{"collection": e.collection, "library": e.library, "titles": list(e.titles),
             "years": list(e.years) if e.years else None} for e in entitlements(catalog) if e.collection in names]
    ids = set(bags.column("bag_id").to_pylist())
    rows: List[Dict[str, Any]] = []
    for req in list_requests(catalog):
        if req.target not in names and not ids.intersection(req.bag_ids):
            continue
        done = execution(catalog, req.id)
        state = "executed" if done else "expired" if req.expired() else "pending"
        rows.append({"id": req.id, "kind": req.kind, "target": req.target, "state": state, "reason": req.reason,
                     "evidence": req.evidence, "requester": req.requester, "created": req.created,
                     "sha256": req.sha256, "approvers": [a.principal for a in approvals(catalog, req.id)],
                     "quorum": config.governance.quorum[req.kind] if config.governance else None,
                     "executed_at": done.get("at") if done else None,
                     "summary": done.get("summary") if done else None})
    return {"enforced": config.governance is not None, "access": access, "entitlements": ents, "requests": rows}


__all__ = ["governance_section"]
