"""Governance requests and their approvals: the catalog's record of decisions taken by a quorum.

A request (trigger, withdraw, legal-hold, release-hold) is written once and never changed: its
*signable text* (`Request.signable`) is what approvers sign with `ssh-keygen -Y sign -n
strongroom`, so it holds everything the decision is about (id, kind, target, every bag, for a
trigger the libraries it releases to, reason, evidence, requester, created and expiry time) in
one canonical form (UTF-8, LF, one `key: value` per line). Three folders of small JSON files on
the catalog's Store, each file created exclusively (never overwritten, even by a racing writer):

    governance/requests/<id>.json              the request (its fields and sha256)
    governance/approvals/<id>--<who>.json      one per principal: the same principal twice cannot
                                               both land, whatever the timing
    governance/executions/<id>.json            written after the request was carried out: a
                                               request executes once

Each also goes into the ledger (events "request", "digital signature validation" for an
approval, "request execution"), the request
event with the full signable text and each approval with the armoured signature, so the
ledger alone is enough to re-check every approval with `ssh-keygen -Y verify`.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import re
import secrets
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from catalog.catalog import Catalog
from catalog.schema import EventRecord, utc_now
from catalog.store import CatalogError
from policies.governance import KINDS
from strongroom.errors import InputError, PreservationError

REQUESTS, APPROVALS, EXECUTIONS = "governance/requests", "governance/approvals", "governance/executions"
# An approval is a "digital signature validation" (LoC PREMIS eventType): its detail says which request.
REQUEST_EVENT, APPROVAL_EVENT, EXECUTION_EVENT = "request", "digital signature validation", "request execution"
FORMAT = "strongroom request v1"
MAX_TEXT = 2000
_ID = re.compile(r"^REQ-[0-9]{8}T[0-9]{6}Z-[0-9a-f]{8}\Z")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


@dataclass(frozen=True)
class Grant:
    """A library a trigger releases a collection to, with the titles and years of its rights."""

    library: str
    titles: Tuple[str, ...] = ()          # empty: every title
    years: Optional[Tuple[int, int]] = None  # inclusive; None: every year

    def describe(self) -> str:
        text = self.library
        if self.titles:
            text += " titles=" + "|".join(self.titles)
        if self.years:
            text += f" years={self.years[0]}-{self.years[1]}"
        return text


@dataclass(frozen=True)
class Request:
    """One request, as its approvers signed it (see the module docstring)."""

    id: str
    kind: str
    target: str
    bag_ids: Tuple[str, ...]
    reason: str
    evidence: Optional[str]
    requester: str
    created: _dt.datetime
    expires: _dt.datetime
    grants: Tuple[Grant, ...] = ()        # trigger only: who the collection is released to

    def signable(self) -> bytes:
        """The exact bytes approvers sign: canonical, so the same request always gives the same text."""
        lines = [FORMAT, f"id: {self.id}", f"kind: {self.kind}", f"target: {self.target}",
                 f"bags: {len(self.bag_ids)}"]
        lines += [f"bag: {b}" for b in self.bag_ids]
        lines += [f"release-to: {g.describe()}" for g in self.grants]
        lines += [f"reason: {self.reason}", f"evidence: {self.evidence or '-'}", f"requester: {self.requester}",
                  f"created: {_stamp(self.created)}", f"expires: {_stamp(self.expires)}"]
        return ("\n".join(lines) + "\n").encode("utf-8")

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.signable()).hexdigest()

    def expired(self, now: Optional[_dt.datetime] = None) -> bool:
        return (now or utc_now()) >= self.expires


@dataclass(frozen=True)
class Approval:
    """A verified signature of one principal over one request's signable text."""

    request_id: str
    request_sha256: str
    principal: str
    fingerprint: str
    signature: str          # the armoured SSH SIGNATURE, as `ssh-keygen -Y verify -s` reads it
    approved_at: _dt.datetime


@dataclass(frozen=True)
class ExecutionResult:
    """What an executor did: one line for people and the ledger, details for --json."""

    summary: str
    details: Dict[str, Any] = field(default_factory=dict)


RECORD_MARK = "\nrecord: "


def with_record(sentence: str, record: Dict[str, Any], tail: str = "") -> str:
    """An event detail: a sentence for people, then `record: <JSON>` (what `catalog rebuild`
    recovers the governance records from, see catalog.governance_recover), then `tail`."""
    return f"{sentence}{RECORD_MARK}{json.dumps(record, sort_keys=True, ensure_ascii=False, default=str)}\n{tail}"


def read_record(detail: Optional[str]) -> Optional[Dict[str, Any]]:
    """The JSON record of an event detail written by `with_record`, or None."""
    if not detail or RECORD_MARK not in detail:
        return None
    line = detail.split(RECORD_MARK, 1)[1].split("\n", 1)[0]
    try:
        found = json.loads(line)
    except ValueError:
        return None
    return found if isinstance(found, dict) else None


def _stamp(value: _dt.datetime) -> str:
    return value.astimezone(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_stamp(text: str) -> _dt.datetime:
    return _dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=_dt.timezone.utc)


def check_line(value: Optional[str], what: str, *, required: bool = True) -> Optional[str]:
    """One line of text for the signable form: no control characters (a newline would let a value
    forge another line of the request), bounded."""
    if value is None or not value.strip():
        if required:
            raise InputError(f"{what} must not be empty", key=what)
        return None
    if _CONTROL.search(value):
        raise InputError(f"{what} must be one line of text (no control characters)", key=what)
    if len(value) > MAX_TEXT:
        raise InputError(f"{what} is {len(value)} characters long; at most {MAX_TEXT}", key=what)
    return value.strip()


def new_request(kind: str, target: str, bag_ids: Sequence[str], reason: str, evidence: Optional[str],
                requester: str, expiry_days: int, grants: Sequence[Grant] = (),
                now: Optional[_dt.datetime] = None) -> Request:
    """A new request (not yet stored); InputError for text that cannot go into the signable form."""
    if kind not in KINDS:
        raise InputError(f"request kind {kind!r} is not one of {', '.join(KINDS)}")
    created = (now or utc_now()).replace(microsecond=0)
    rid = f"REQ-{created.strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(4)}"
    return Request(id=rid, kind=kind, target=check_line(target, "TARGET") or "", bag_ids=tuple(sorted(bag_ids)),
                   reason=check_line(reason, "--reason") or "", evidence=check_line(evidence, "--evidence",
                                                                                     required=False),
                   requester=requester, created=created,
                   expires=created + _dt.timedelta(days=expiry_days), grants=tuple(grants))


# -------------------------------------------------------------------------------- storage


def _request_data(req: Request) -> Dict[str, Any]:
    data = asdict(req)
    data.update(created=_stamp(req.created), expires=_stamp(req.expires), sha256=req.sha256,
                bag_ids=list(req.bag_ids), grants=[asdict(g) for g in req.grants])
    return data


def _request_json(req: Request) -> bytes:
    return json.dumps(_request_data(req), ensure_ascii=False, sort_keys=True).encode("utf-8")


def request_from(raw: bytes, where: str) -> Request:
    """A stored request record (JSON) as a Request; PreservationError if its text was altered."""
    try:
        data = json.loads(raw.decode("utf-8"))
        grants = tuple(Grant(g["library"], tuple(g.get("titles") or ()),
                             tuple(g["years"]) if g.get("years") else None) for g in data.get("grants") or ())
        req = Request(id=data["id"], kind=data["kind"], target=data["target"], bag_ids=tuple(data["bag_ids"]),
                      reason=data["reason"], evidence=data.get("evidence"), requester=data["requester"],
                      created=_parse_stamp(data["created"]), expires=_parse_stamp(data["expires"]), grants=grants)
        stored = data["sha256"]
    except (ValueError, KeyError, TypeError, UnicodeError) as exc:
        raise CatalogError(f"the request record cannot be read ({exc})", path=where) from None
    if req.sha256 != stored:
        raise PreservationError("the request record was altered: its text no longer has the sha256 it was "
                                f"made with ({stored}); nothing done", path=where)
    return req


def _request_event(req: Request) -> EventRecord:
    lib = req.target.split("/", 1)[0]
    return EventRecord(type=REQUEST_EVENT, outcome="success", object_type="bag", agent_library=lib,
                       detail=with_record(f"request {req.id} ({req.kind} {req.target}) sha256 {req.sha256}",
                                          _request_data(req), "signable text:\n" + req.signable().decode("utf-8")))


def save_request(catalog: Catalog, req: Request) -> None:
    """Store a new request and log it; a request id is never reused."""
    if not store_request(catalog, req):
        raise CatalogError(f"request {req.id} already exists", path=catalog.store.path(REQUESTS))
    catalog.append_events([_request_event(req)])


def store_request(catalog: Catalog, req: Request) -> bool:
    """Write a request record once; False if one with its id exists."""
    return catalog.store.create_exclusive(REQUESTS, f"{req.id}.json", _request_json(req))


def check_request_id(text: str) -> str:
    if not _ID.match(text or ""):
        raise InputError(f"{text!r} is not a request id (REQ-YYYYMMDDTHHMMSSZ-xxxxxxxx; `strongroom requests` "
                         f"lists them)", key="REQ")
    return text


def load_request(catalog: Catalog, request_id: str) -> Request:
    check_request_id(request_id)
    path = catalog.store.path(REQUESTS, f"{request_id}.json")
    try:
        raw = catalog.store.read_bytes(path)
    except FileNotFoundError:
        raise InputError(f"no request {request_id} (`strongroom requests` lists them)", key="REQ") from None
    return request_from(raw, path)


def list_requests(catalog: Catalog) -> List[Request]:
    """Every request, oldest first."""
    found = [request_from(catalog.store.read_bytes(f.path), f.path) for f in catalog.store.list(REQUESTS)
             if f.name.endswith(".json")]
    return sorted(found, key=lambda r: (r.created, r.id))


def _principal_key(principal: str) -> str:
    return hashlib.sha256(principal.encode("utf-8")).hexdigest()[:24]


def save_approval(catalog: Catalog, approval: Approval) -> bool:
    """Record a verified approval; False (nothing written) if this principal already approved."""
    data = asdict(approval)
    data["approved_at"] = _stamp(approval.approved_at)
    if not store_approval(catalog, data):
        return False
    record = {k: v for k, v in data.items() if k != "signature"}
    catalog.append_events([EventRecord(
        type=APPROVAL_EVENT, outcome="success", agent_library=None,
        detail=with_record(f"approval of request {approval.request_id} (sha256 {approval.request_sha256}) by "
                           f"{approval.principal} ({approval.fingerprint}), verified with ssh-keygen -Y verify -n "
                           f"strongroom", record, f"signature:\n{approval.signature.strip()}\n"))])
    return True


def store_approval(catalog: Catalog, data: Dict[str, Any]) -> bool:
    """Write an approval record (JSON fields of Approval) once per (request, principal)."""
    name = f"{data['request_id']}--{_principal_key(data['principal'])}.json"
    return catalog.store.create_exclusive(APPROVALS, name, json.dumps(data, sort_keys=True).encode("utf-8"))


def approvals(catalog: Catalog, request_id: Optional[str] = None) -> List[Approval]:
    """The recorded approvals (of one request), oldest first."""
    out = []
    for f in catalog.store.list(APPROVALS):
        if request_id is not None and not f.name.startswith(f"{request_id}--"):
            continue
        try:
            data = json.loads(catalog.store.read_bytes(f.path).decode("utf-8"))
            data["approved_at"] = _parse_stamp(data["approved_at"])
            out.append(Approval(**data))
        except (ValueError, KeyError, TypeError, UnicodeError) as exc:
            raise CatalogError(f"the approval record cannot be read ({exc})", path=f.path) from None
    return sorted(out, key=lambda a: (a.approved_at, a.principal))


def execution(catalog: Catalog, request_id: str) -> Optional[Dict[str, Any]]:
    """The executed marker of a request ({"at", "summary", "details", "approvers"}), or None."""
    path = catalog.store.path(EXECUTIONS, f"{request_id}.json")
    try:
        return json.loads(catalog.store.read_bytes(path).decode("utf-8"))
    except FileNotFoundError:
        return None
    except (ValueError, UnicodeError) as exc:
        raise CatalogError(f"the execution record cannot be read ({exc})", path=path) from None


def mark_executed(catalog: Catalog, req: Request, result: ExecutionResult, signers: Sequence[str]) -> bool:
    """Write the executed marker and its ledger event; False if another run marked it first."""
    data = {"id": req.id, "at": _stamp(utc_now()), "summary": result.summary, "details": result.details,
            "approvers": list(signers), "sha256": req.sha256}
    if not store_execution(catalog, data):
        return False
    catalog.append_events([EventRecord(
        type=EXECUTION_EVENT, outcome="success", agent_library=req.target.split("/", 1)[0],
        detail=with_record(f"request {req.id} ({req.kind} {req.target}, sha256 {req.sha256}) executed at quorum, "
                           f"approved by {', '.join(signers)}: {result.summary}", data))])
    return True


def store_execution(catalog: Catalog, data: Dict[str, Any]) -> bool:
    """Write the executed marker of request data["id"]; False if there is one already."""
    return catalog.store.create_exclusive(EXECUTIONS, f"{data['id']}.json",
                                          json.dumps(data, sort_keys=True, default=str).encode("utf-8"))


def record_execution_failure(catalog: Catalog, req: Request, reason: str) -> None:
    """A refused or failed execution: logged; the request stays approved, not executed."""
    catalog.append_events([EventRecord(
        type=EXECUTION_EVENT, outcome="failure", agent_library=req.target.split("/", 1)[0],
        detail=f"request {req.id} ({req.kind} {req.target}) reached quorum but was not carried out: {reason}"[:4000])])


__all__ = ["APPROVAL_EVENT", "EXECUTION_EVENT", "KINDS", "REQUEST_EVENT", "Approval", "ExecutionResult", "Grant",
           "Request", "approvals", "check_line", "check_request_id", "execution", "list_requests", "load_request",
           "mark_executed", "new_request", "read_record", "record_execution_failure", "request_from", "save_approval",
           "save_request", "store_approval", "store_execution", "store_request", "with_record"]
