"""Bring the governance records back from the ledger after `catalog rebuild`.

The governance records (catalog.requests, catalog.entitlements) live in the catalog, and a lost
catalog is rebuilt from the storage targets, whose ledger checkpoints bring the events back
(catalog.anchors). Every governance event carries its record (`record: <JSON>` in the detail),
so the records are written again from the events: entitlements, requests (checked against
the sha256 they were made with), approvals (with the signature the event holds), executions and
the releases of executed triggers. Without this a rebuilt catalog would forget what the board
decided: a released collection would turn dark again, and pending approvals would be lost.
Only missing records are written (each create-exclusive), no event is appended, so running it
again changes nothing.
"""

from __future__ import annotations

import json
from typing import Dict

from catalog.catalog import Catalog
from catalog.entitlements import POLICY_EVENT, store_entitlement, store_release
from catalog.requests import (APPROVAL_EVENT, EXECUTION_EVENT, REQUEST_EVENT, Request, read_record, request_from,
                              store_approval, store_execution, store_request)
from strongroom.errors import StrongroomError

_SIGNATURE = "signature:\n"


def recover_governance(catalog: Catalog) -> int:
    """Write every governance record the ledger has and the catalog lacks; returns how many."""
    events = catalog.events(type=[POLICY_EVENT, REQUEST_EVENT, APPROVAL_EVENT, EXECUTION_EVENT])
    written = 0
    requests: Dict[str, Request] = {}
    for kind, outcome, detail in zip(events.column("type").to_pylist(), events.column("outcome").to_pylist(),
                                     events.column("detail").to_pylist()):
        record = read_record(detail)
        if record is None:
            continue
        try:
            if kind == POLICY_EVENT and "action" in record and "name" in record:
                written += store_entitlement(catalog, record)
            elif kind == REQUEST_EVENT:
                req = request_from(json.dumps(record).encode("utf-8"), "ledger event of request "
                                   f"{record.get('id')}")
                requests[req.id] = req
                written += store_request(catalog, req)
            elif kind == APPROVAL_EVENT and _SIGNATURE in detail:
                signature = detail.split(_SIGNATURE, 1)[1]
                written += store_approval(catalog, {**record, "signature": signature})
            elif kind == EXECUTION_EVENT and outcome == "success" and "id" in record:
                written += store_execution(catalog, record)
                req = requests.get(record["id"])
                if req is not None and req.kind == "trigger":
                    written += store_release(catalog, req)
        except (StrongroomError, KeyError, TypeError, ValueError):
            continue   # a record that does not read back is left out: never a half-made decision
    return written


__all__ = ["recover_governance"]
