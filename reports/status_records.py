"""The records of a status (`reports.status.build_status`) and their JSON form.

Flags name what needs attention; PROBLEM_FLAGS make `strongroom status` exit 1, WARNING_FLAGS
do not (see `reports.status` for what each means).
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, Dict, List, Optional

from catalog.coverage import Coverage
from catalog.findings import OpenFinding
from ingest.deposit_states import DepositStatus
from policies.units import add_years
from reports.targets import TargetStatus

PROBLEM_FLAGS = ("damaged", "failed", "missing", "disputed", "inconclusive", "absent", "unverified", "unreachable",
                 "deposit-failed")
WARNING_FLAGS = ("overdue-deep", "overdue-quick", "unknown-policy", "deposit-unfinished", "deposit-abandoned")


# --------------------------------------------------------------------------------------------
# Records


@dataclass(frozen=True)
class Flag:
    """One thing that needs attention, naming what it concerns."""

    flag: str
    severity: str                # "problem" or "warning"
    message: str
    bag_id: Optional[str] = None
    target: Optional[str] = None
    deposit: Optional[str] = None


@dataclass
class ReplicaStatus:
    target: str
    site: Optional[str]
    state: str                   # a catalog replica state, or "absent"
    in_policy: bool              # the bag's policy asks for a copy on this target
    verified_at: Optional[_dt.datetime]
    last_audit_kind: Optional[str]
    last_audit_at: Optional[_dt.datetime]
    last_audit_outcome: Optional[str]
    last_deep_at: Optional[_dt.datetime]   # newest deep audit, or verification counting as one
    last_check_at: Optional[_dt.datetime]  # newest audit or verification of any kind
    deep_due_at: Optional[_dt.datetime]
    quick_due_at: Optional[_dt.datetime]
    detail: Optional[str]
    recorded_at: Optional[_dt.datetime]
    flags: List[str] = field(default_factory=list)
    retention: Optional[Dict[str, Any]] = None  # see replica_retention
    location: Optional[str] = None              # Config.location_of(target)
    since: Optional[_dt.datetime] = None        # in trouble since (open findings), else None
    findings: List[Dict[str, Any]] = field(default_factory=list)  # open findings (OpenFinding.to_dict)


def replica_retention(config, policy_name: str, target_name: str, created_at: _dt.datetime) -> Optional[Dict[str, Any]]:
    """What keeps this copy from being deleted or overwritten before its time.

    From the bag's policy and the target: an S3 target declared with object_lock applies the
    policy's retention to every object it stores (refused at deposit time otherwise), each object
    locked for `years` from its upload, which came after the bag was made, hence "until at
    least" created_at + years. A folder cannot lock files. None when the policy is unknown.
    """
    policy = config.policies.get(policy_name)
    target = config.storage.get(target_name)
    if policy is None or target is None:
        return None
    mode, years = policy.retention.mode, policy.retention.years
    if mode == "none":
        return {"mode": "none", "years": 0, "locked": False, "until_at_least": None}
    locked = target.type == "s3" and bool(target.options.get("object_lock"))
    until = add_years(created_at, years) if locked else None
    return {"mode": mode, "years": years, "locked": locked, "until_at_least": until,
            **({} if locked else {"why_not": "a folder cannot lock files" if target.type == "filesystem"
                                  else "the target is not declared with object_lock: true"})}


@dataclass
class BagStatus:
    bag_id: str
    library: str
    collection: str
    title: Optional[str]
    policy: str
    part: int
    part_count: int
    files: int
    bytes: int
    created_at: _dt.datetime
    replicas: List[ReplicaStatus] = field(default_factory=list)
    flags: List[str] = field(default_factory=list)
    locations: int = 0           # distinct locations holding a good (verified/repaired) copy

    @property
    def ok(self) -> bool:
        return not any(f in PROBLEM_FLAGS for f in self.flags)


@dataclass
class Totals:
    """Counts over a set of bags; `replicas` counts replica states (absent included)."""

    bags: int = 0
    files: int = 0
    bytes: int = 0
    replicas: Dict[str, int] = field(default_factory=dict)
    problems: int = 0
    warnings: int = 0


@dataclass
class CollectionTotals:
    library: str
    collection: str
    policies: List[str]
    totals: Totals


@dataclass
class LibraryTotals:
    library: str
    totals: Totals


@dataclass
class Status:
    catalog: str
    generated_at: _dt.datetime
    ledger_seq: Optional[int]     # None when the ledger is empty
    ledger_hash: Optional[str]
    filters: Dict[str, Optional[str]]
    bags: List[BagStatus]
    collections: List[CollectionTotals]
    libraries: List[LibraryTotals]
    totals: Totals
    deposits: List[DepositStatus]
    problems: List[Flag]
    warnings: List[Flag]
    open_findings: List[OpenFinding] = field(default_factory=list)
    targets: List[TargetStatus] = field(default_factory=list)
    locations: List[Dict[str, Any]] = field(default_factory=list)   # {location, targets, sites}
    notes: List[str] = field(default_factory=list)                  # config warnings (shared file systems)
    withdrawn: List[Dict[str, Any]] = field(default_factory=list)   # withdrawn bags (tombstones), not copies
    coverage: Optional[Coverage] = None   # deep re-read in 90/365 days per target (catalog.coverage)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def exit_code(self) -> int:
        """1 when anything is damaged, failed, missing, disputed, inconclusive, absent, unverified
        or unreachable; overdue alone is 0."""
        return 0 if self.ok else 1

    def to_dict(self) -> Dict[str, Any]:
        """Plain JSON-ready values with stable keys (timestamps as ISO 8601 UTC strings)."""
        return {
            "catalog": self.catalog,
            "generated_at": _iso(self.generated_at),
            "ok": self.ok,
            "exit_code": self.exit_code,
            "ledger_head": {"seq": self.ledger_seq, "hash": self.ledger_hash},
            "filters": dict(self.filters),
            "totals": _plain(self.totals),
            "libraries": [_plain(x) for x in self.libraries],
            "collections": [_plain(x) for x in self.collections],
            "bags": [{**_plain(b), "ok": b.ok} for b in self.bags],
            "deposits": [_plain(d) for d in self.deposits],
            "problems": [_plain(f) for f in self.problems],
            "warnings": [_plain(f) for f in self.warnings],
            "open_findings": [f.to_dict() for f in self.open_findings],
            "targets": [_plain(t) for t in self.targets],
            "locations": [_plain(x) for x in self.locations],
            "notes": list(self.notes),
            "withdrawn": list(self.withdrawn),
            "coverage": None if self.coverage is None else self.coverage.to_dict(),
        }


def _iso(value: Optional[_dt.datetime]) -> Optional[str]:
    return None if value is None else value.astimezone(_dt.timezone.utc).isoformat().replace("+00:00", "Z")


def _plain(value: Any) -> Any:
    if is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, _dt.datetime):
        return _iso(value)
    return value
