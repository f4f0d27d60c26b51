"""Tombstones of withdrawn bags and legal holds, in the catalog (contract K4).

Why a table of its own: a withdrawn bag's rows in `bags/`, `files/` and `replicas/` stay (the
catalog is append-only and the fixity report keeps a withdrawn bag's history), so something
else must say "this bag was withdrawn on purpose": without it every audit, `status` and
`catalog check` would call its copies missing. One small JSON file per state change, in the
folders `tombstones/` and `holds/` of the catalog's Store (written atomically, create-only, so
a rerun of the same step writes nothing new); the newest record per bag wins. JSON rather than
Parquet: these are a handful of records that a person (or a stdlib script) may need to read
when everything else is lost, and the same JSON is what lies on the storage targets.
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Mapping, Tuple

import pyarrow as pa
import pyarrow.compute as pc

from catalog.compact import bag_key
from catalog.store import CatalogError, Store
from storage_adapters.withdrawal import HOLD_SPACE, TOMBSTONE_SPACE, hold_key, tombstone_key
from strongroom.bag_id import BagId
from strongroom.errors import InputError, StrongroomError

TOMBSTONES = "tombstones"
HOLDS = "holds"
STARTED, COMPLETE = "started", "complete"
HOLD, RELEASE = "hold", "release"


def _iso(value: _dt.datetime) -> str:
    return value.astimezone(_dt.timezone.utc).isoformat()


def _when(text: Any, what: str) -> _dt.datetime:
    try:
        value = _dt.datetime.fromisoformat(str(text))
    except ValueError:
        raise ValueError(f"{what} {text!r} is not an ISO 8601 time") from None
    if value.tzinfo is None:
        raise ValueError(f"{what} {text!r} has no time zone")
    return value.astimezone(_dt.timezone.utc)


@dataclass(frozen=True)
class Tombstone:
    """What remains of a withdrawn bag: who decided, when, and what exactly was withdrawn.

    `manifest_digests` maps each manifest / tag-manifest file name of the withdrawn bag to the
    sha256 of its bytes, so anyone holding a copy later can prove it is the withdrawn bag.
    `state` is "started" from before the first deletion until every copy is gone ("complete").
    """

    bag_id: str
    library: str
    collection: str
    request_id: str
    state: str
    withdrawn_at: _dt.datetime
    approvers: Tuple[str, ...] = ()
    manifest_digests: Mapping[str, str] = field(default_factory=dict)
    bypass_governance: bool = False
    reason: str = ""

    def __post_init__(self) -> None:
        if self.state not in (STARTED, COMPLETE):
            raise ValueError(f"tombstone state {self.state!r} is not {STARTED!r} or {COMPLETE!r}")
        for name in ("bag_id", "library", "collection", "request_id"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"tombstone {name} must be a non-empty string")
        if self.withdrawn_at.tzinfo is None:
            raise ValueError("tombstone withdrawn_at must be timezone-aware")
        object.__setattr__(self, "approvers", tuple(self.approvers))
        object.__setattr__(self, "manifest_digests", dict(self.manifest_digests))

    def to_dict(self) -> Dict[str, Any]:
        out = asdict(self)
        out["withdrawn_at"] = _iso(self.withdrawn_at)
        out["approvers"] = list(self.approvers)
        return out

    def to_json(self) -> bytes:
        """Canonical bytes (sorted keys): the same tombstone is the same bytes on every target,
        so a rerun's put_record finds it already there instead of a conflict."""
        return json.dumps(self.to_dict(), sort_keys=True, ensure_ascii=False, indent=1).encode("utf-8") + b"\n"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Tombstone":
        """ValueError naming the problem for a record that is not a tombstone."""
        if not isinstance(data, Mapping):
            raise ValueError("a tombstone must be a JSON object")
        try:
            return cls(bag_id=data["bag_id"], library=data["library"], collection=data["collection"],
                       request_id=data["request_id"], state=data["state"],
                       withdrawn_at=_when(data["withdrawn_at"], "withdrawn_at"),
                       approvers=tuple(str(a) for a in data.get("approvers") or ()),
                       manifest_digests={str(k): str(v) for k, v in (data.get("manifest_digests") or {}).items()},
                       bypass_governance=bool(data.get("bypass_governance", False)),
                       reason=str(data.get("reason") or ""))
        except KeyError as exc:
            raise ValueError(f"a tombstone needs {exc.args[0]!r}") from None

    @classmethod
    def from_json(cls, data: bytes) -> "Tombstone":
        try:
            return cls.from_dict(json.loads(data.decode("utf-8")))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not JSON ({exc})") from None


@dataclass(frozen=True)
class HoldRecord:
    """One legal-hold decision for one bag: `action` hold (on) or release (off)."""

    bag_id: str
    request_id: str
    action: str
    at: _dt.datetime

    def __post_init__(self) -> None:
        if self.action not in (HOLD, RELEASE):
            raise ValueError(f"hold action {self.action!r} is not {HOLD!r} or {RELEASE!r}")

    def to_json(self) -> bytes:
        return json.dumps({"bag_id": self.bag_id, "request_id": self.request_id, "action": self.action,
                           "at": _iso(self.at)}, sort_keys=True, ensure_ascii=False).encode("utf-8") + b"\n"

    @classmethod
    def from_json(cls, data: bytes) -> "HoldRecord":
        try:
            d = json.loads(data.decode("utf-8"))
            return cls(bag_id=d["bag_id"], request_id=d["request_id"], action=d["action"], at=_when(d["at"], "at"))
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"not a hold record ({exc})") from None


def _name(bag_id: str, request_id: str, what: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in request_id)[:80]
    return f"bag-{bag_key(bag_id)}-{safe}-{what}.json"


def record_tombstone(catalog, tombstone: Tombstone) -> bool:
    """Add a tombstone record; False when this very record (bag, request, state) is already
    there (a rerun: the executor reuses the started tombstone, so the bytes are the same).
    Other bytes under the name are a CatalogError: the first record is left as it is."""
    store: Store = catalog.store
    name = _name(tombstone.bag_id, tombstone.request_id, tombstone.state)
    data = tombstone.to_json()
    if store.create_exclusive(TOMBSTONES, name, data):
        return True
    if store.read_bytes(store.path(TOMBSTONES, name)) != data:
        raise CatalogError(f"a different tombstone of {tombstone.bag_id} for {tombstone.request_id} is already "
                           "recorded; it was left as it is", path=store.path(TOMBSTONES, name))
    return False


def record_hold(catalog, hold: HoldRecord) -> bool:
    """Add a legal-hold record; False when it is already there (a rerun)."""
    store: Store = catalog.store
    return store.create_exclusive(HOLDS, _name(hold.bag_id, hold.request_id, hold.action), hold.to_json())


def _read(store: Store, folder: str, name: str, parse):
    try:
        return parse(store.read_bytes(store.path(folder, name)))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise CatalogError(f"the {folder} record cannot be read: {exc}", path=store.path(folder, name)) from None


def _all(catalog, folder: str, parse) -> list:
    store: Store = catalog.store
    out = []
    for name in store.names(folder):
        if name.endswith(".json"):
            rec = _read(store, folder, name, parse)
            if rec is not None:
                out.append(rec)
    return out


def tombstones(catalog) -> list:
    """Every tombstone record (all states), oldest first."""
    return sorted(_all(catalog, TOMBSTONES, Tombstone.from_json),
                  key=lambda t: (t.withdrawn_at, t.bag_id, t.state == COMPLETE))


def withdrawn_bags(catalog) -> Dict[str, Tombstone]:
    """Bag id -> its tombstone (the "complete" one once there is one, else "started").

    Every bag here is withdrawn: its copies are gone or going on purpose, by the request named
    in the tombstone. Audits, status, reports, `catalog check` and `catalog rebuild` treat it
    as WITHDRAWN, never as missing."""
    out: Dict[str, Tombstone] = {}
    for t in tombstones(catalog):
        if t.bag_id not in out or t.state == COMPLETE:
            out[t.bag_id] = t
    return out


def recover_from_target(catalog, adapter) -> int:
    """For `catalog rebuild`: record in the catalog the tombstones and legal-hold markers a
    target holds (the `.strongroom/tombstones/` and `.strongroom/holds/` records), so a rebuilt
    catalog knows the bags it must not register again, even one a dead withdrawal left half
    removed, and the holds still in force. How many records were new. A record that is not
    what its key says, or lies elsewhere than its own bag's key, is skipped: a stray record
    must not hide a bag or block its withdrawal."""
    added = 0
    for key in adapter.list_records(TOMBSTONE_SPACE + "/"):
        try:
            stone = Tombstone.from_json(adapter.read_record(key))
            if key != tombstone_key(BagId.parse(stone.bag_id), stone.state):
                continue
        except (ValueError, StrongroomError):
            continue
        added += record_tombstone(catalog, stone)
    for key in adapter.list_records(HOLD_SPACE + "/"):
        try:
            hold = HoldRecord.from_json(adapter.read_record(key))
            if key != hold_key(BagId.parse(hold.bag_id), hold.request_id, hold.action):
                continue
        except (ValueError, StrongroomError):
            continue
        added += record_hold(catalog, hold)
    return added


class BagWithdrawn(InputError):
    """The bag asked for was withdrawn at quorum: its copies are gone on purpose (exit 2)."""


def refuse_withdrawn(catalog, bag_id: str) -> None:
    """BagWithdrawn naming the request, date and approvers if `bag_id` is withdrawn: a restore
    (or any read of its copies) must say so, not report every file missing."""
    t = withdrawn_bags(catalog).get(bag_id)
    if t is not None:
        when = "was withdrawn" if t.state == COMPLETE else "is being withdrawn"
        raise BagWithdrawn(f"bag {bag_id} {when} by request {t.request_id} on {t.withdrawn_at.date().isoformat()} "
                           f"(approved by {', '.join(t.approvers) or '?'}): its copies were removed from every "
                           f"target; nothing restored")


def without_withdrawn(catalog, bags: pa.Table) -> pa.Table:
    """The rows of a bags table (catalog.bags()) whose bag is not withdrawn: what is still held.
    Due selection, status and the reports' holdings use it; the ledger's history keeps them."""
    gone = withdrawn_bags(catalog)
    if not gone or bags.num_rows == 0:
        return bags
    return bags.filter(pc.invert(pc.is_in(bags.column("bag_id"), value_set=pa.array(sorted(gone)))))


def holds(catalog) -> list:
    """Every hold record, oldest first."""
    return sorted(_all(catalog, HOLDS, HoldRecord.from_json), key=lambda h: (h.at, h.action == RELEASE))


def held_bags(catalog) -> Dict[str, HoldRecord]:
    """Bag id -> the hold in force (the newest record of the bag is a hold, not a release)."""
    newest: Dict[str, HoldRecord] = {}
    for h in holds(catalog):
        newest[h.bag_id] = h
    return {b: h for b, h in newest.items() if h.action == HOLD}


__all__ = ["BagWithdrawn", "refuse_withdrawn", "Tombstone", "HoldRecord", "record_tombstone", "record_hold", "tombstones", "withdrawn_bags", "without_withdrawn", "recover_from_target", "holds",
           "held_bags", "STARTED", "COMPLETE", "HOLD", "RELEASE", "TOMBSTONES", "HOLDS"]
