"""What one bag audit found and did, and the repairs it plans.

`fixity.repair.audit_bag` returns a `BagAudit`: per copy a `ReplicaOutcome` (its findings,
the `RepairAction`s made on it, the damage that remains). While it judges the copies it plans
`_Fix`es: make a file on one copy equal a `Reference` (the right size and digests, and the
copies known to hold them), or take it out of the bag. These records live apart from the
judging, repairing and recording modules (`fixity.judge_payload`, `fixity.judge_tags`,
`fixity.repairer`, `fixity.audit_record`) so that each of them, and `fixity.repair`, can
import them without a cycle.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Mapping, Optional

from fixity import audit as A

GOOD_STATES = ("verified", "repaired")
#: A copy a person must look at (catalog.schema REPLICA_STATES): the copies disagree and nothing
#: independent decides which is right. While any copy of a bag is disputed nothing of it is repaired.
DISPUTED_STATE = "disputed"

# Outcomes of one copy in one audit run.
SUCCESS, REPAIRED, FAILURE, INCONCLUSIVE, SKIPPED = "success", "repaired", "failure", "inconclusive", "skipped"


# --------------------------------------------------------------------------------------------
# Records


@dataclass
class Reference:
    """The right content of one file: size and digests, and the copies known to hold it."""

    size: Optional[int]
    digests: Dict[str, str]
    holders: List[str] = field(default_factory=list)


@dataclass
class RepairAction:
    """One repair on one copy: `replace` a damaged/missing file from `source`, `move-aside` an
    extra file or odd object, or `delete` an extra object (object stores)."""

    target: str
    path: str
    action: str
    outcome: str                 # success | failure
    detail: str
    source: Optional[str] = None


@dataclass
class ReplicaOutcome:
    target: str
    site: str
    kind: str                    # deep | quick | tags (looked at for comparison only)
    audited: bool                # selected for this run (its record gets the audit)
    outcome: str                 # success | repaired | failure | inconclusive | skipped
    state_before: Optional[str]
    state_after: Optional[str]
    files_checked: int = 0
    bytes_checked: int = 0
    findings: List[A.Finding] = field(default_factory=list)      # damage and inconclusive, as found
    repairs: List[RepairAction] = field(default_factory=list)
    remaining: List[A.Finding] = field(default_factory=list)     # damage not repaired
    not_listed: int = 0          # findings beyond what is listed
    note: str = ""
    checked_at: Optional[str] = None


@dataclass
class BagAudit:
    bag_id: str
    policy: str
    started_at: str
    finished_at: str = ""
    repair: bool = True
    replicas: List[ReplicaOutcome] = field(default_factory=list)
    bag_findings: List[A.Finding] = field(default_factory=list)
    events: int = 0

    @property
    def damage_remains(self) -> bool:
        return any(r.remaining for r in self.replicas) or any(f.damage for f in self.bag_findings)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "BagAudit":
        d = dict(d)
        reps = []
        for r in d.get("replicas", []):
            r = dict(r)
            r["findings"] = [A.Finding.from_dict(f) for f in r.get("findings", [])]
            r["remaining"] = [A.Finding.from_dict(f) for f in r.get("remaining", [])]
            r["repairs"] = [RepairAction(**a) for a in r.get("repairs", [])]
            reps.append(ReplicaOutcome(**r))
        d["replicas"] = reps
        d["bag_findings"] = [A.Finding.from_dict(f) for f in d.get("bag_findings", [])]
        return cls(**d)


@dataclass
class _Fix:
    """A planned repair: make `path` on `target` equal `ref` (or remove it: ref None)."""

    target: str
    path: str
    ref: Optional[Reference]
    finding: A.Finding
    sources: List[str] = field(default_factory=list)
    tag: bool = False


__all__ = ["Reference", "RepairAction", "ReplicaOutcome", "BagAudit", "GOOD_STATES", "DISPUTED_STATE", "SUCCESS",
           "REPAIRED", "FAILURE", "INCONCLUSIVE", "SKIPPED"]
