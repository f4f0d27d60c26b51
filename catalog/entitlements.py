"""Entitlements, access states and releases: who may be handed a collection's content.

Purchased content is licensed, not owned: it is kept `dark` (preserved, audited, repaired, never
handed out) until a trigger event, then `released` only to the libraries holding perpetual-access
rights to it; self-built content is `open-to-owner` (its depositing library, the bag id's first
segment). The catalog keeps, as small JSON files on its Store (written once, never changed):

    entitlements/<stamp>-<uuid>.json    an entitlement added or removed (the current set is the
                                        changes in order); each change is also a ledger event
    governance/releases/<REQ>.json      a trigger executed at quorum: the collection and the
                                        grants (library, titles, years) its approvers signed

A release grants what the signed trigger named, not whatever the entitlements say later: one
operator adding an entitlement afterwards must not widen what a board approved. Audits and
repairs never ask any of this; only `restore` (dissemination) does.
"""

from __future__ import annotations

import dataclasses
import json
import re
import uuid
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from catalog.catalog import Catalog
from catalog.requests import Grant, Request, with_record
from catalog.schema import BagRecord, EventRecord, utc_now
from catalog.scope import LibraryScope
from catalog.store import CatalogError
from strongroom.errors import UsageError

ENTITLEMENTS, RELEASES = "entitlements", "governance/releases"
DARK, OPEN_TO_OWNER, RELEASED = "dark", "open-to-owner", "released"
POLICY_EVENT = "policy assignment"
_YEAR = re.compile(r"(?<![0-9])(1[5-9][0-9]{2}|2[0-9]{3})(?![0-9])")


@dataclass(frozen=True)
class Entitlement:
    """A library's perpetual-access right to a purchased collection (titles, years)."""

    collection: str                    # LIB/COLL
    library: str
    titles: Tuple[str, ...] = ()
    years: Optional[Tuple[int, int]] = None

    def grant(self) -> Grant:
        return Grant(self.library, self.titles, self.years)


def parse_years(text: Optional[str]) -> Optional[Tuple[int, int]]:
    """`2001-2020` or `2005`; UsageError naming --years otherwise."""
    if text is None:
        return None
    m = re.fullmatch(r"\s*([0-9]{4})\s*(?:-\s*([0-9]{4})\s*)?", text)
    if not m:
        raise UsageError(f"{text!r} is not a year range (e.g. 2001-2020, or 2005)", key="--years")
    first, last = int(m.group(1)), int(m.group(2) or m.group(1))
    if last < first:
        raise UsageError(f"{text!r}: the range ends before it starts", key="--years")
    return first, last


def _stamp() -> str:
    return utc_now().strftime("%Y%m%dT%H%M%S%fZ")


def change_entitlement(catalog: Catalog, ent: Entitlement, action: str) -> None:
    """Record `add` or `remove` of an entitlement: a catalog row and a `policy assignment` event
    per bag of the collection (the rights statement of each bag changed)."""
    data = {"action": action, "collection": ent.collection, "library": ent.library, "titles": list(ent.titles),
            "years": list(ent.years) if ent.years else None, "at": utc_now().isoformat(),
            "name": f"{_stamp()}-{uuid.uuid4().hex}.json"}
    store_entitlement(catalog, data)
    owner, coll = ent.collection.split("/", 1)
    what = with_record(f"entitlement {'added' if action == 'add' else 'removed'}: {ent.grant().describe()} for "
                       f"purchased collection {ent.collection}", data)
    bags = catalog.bags(owner, coll).column("bag_id").to_pylist()
    events = [EventRecord(type=POLICY_EVENT, outcome="success", bag_id=b, detail=what) for b in bags] or \
        [EventRecord(type=POLICY_EVENT, outcome="success", agent_library=owner, detail=what)]
    catalog.append_events(events)


def store_entitlement(catalog: Catalog, data: Dict) -> bool:
    """Write one entitlement change under its own name (data["name"]); False if it is there."""
    return catalog.store.create_exclusive(ENTITLEMENTS, data["name"],
                                          json.dumps(data, sort_keys=True, ensure_ascii=False).encode("utf-8"))


def entitlements(catalog: Catalog, collection: Optional[str] = None) -> List[Entitlement]:
    """The current entitlements (of one collection), in the order they were added."""
    current: Dict[Tuple, Entitlement] = {}
    for f in catalog.store.list(ENTITLEMENTS):
        try:
            data = json.loads(catalog.store.read_bytes(f.path).decode("utf-8"))
            ent = Entitlement(data["collection"], data["library"], tuple(data.get("titles") or ()),
                              tuple(data["years"]) if data.get("years") else None)
            action = data["action"]
        except (ValueError, KeyError, TypeError, UnicodeError) as exc:
            raise CatalogError(f"the entitlement record cannot be read ({exc})", path=f.path) from None
        if collection is not None and ent.collection != collection:
            continue
        key = (ent.collection, ent.library, ent.titles, ent.years)
        if action == "add":
            current[key] = ent
        else:
            current.pop(key, None)
    return list(current.values())


def record_release(catalog: Catalog, req: Request) -> int:
    """Mark the trigger's collection released to the grants it names (idempotent); `policy
    assignment` events per bag. Returns the number of bags released."""
    if store_release(catalog, req):
        who = "; ".join(g.describe() for g in req.grants)
        catalog.append_events([EventRecord(type=POLICY_EVENT, outcome="success", bag_id=b,
                                           detail=f"access state released by trigger {req.id} (sha256 {req.sha256}) "
                                                  f"to the entitled libraries only: {who}")
                               for b in req.bag_ids])
    return len(req.bag_ids)


def store_release(catalog: Catalog, req: Request) -> bool:
    """Write the release record of an executed trigger once; False if it is there."""
    data = {"collection": req.target, "request_id": req.id, "sha256": req.sha256,
            "grants": [{"library": g.library, "titles": list(g.titles), "years": list(g.years) if g.years else None}
                       for g in req.grants], "at": utc_now().isoformat()}
    return catalog.store.create_exclusive(RELEASES, f"{req.id}.json",
                                          json.dumps(data, sort_keys=True, ensure_ascii=False).encode("utf-8"))


def releases(catalog: Catalog, collection: Optional[str] = None) -> Dict[str, List[Grant]]:
    """{collection: grants} of every executed trigger (several triggers add up)."""
    out: Dict[str, List[Grant]] = {}
    for f in catalog.store.list(RELEASES):
        try:
            data = json.loads(catalog.store.read_bytes(f.path).decode("utf-8"))
            grants = [Grant(g["library"], tuple(g.get("titles") or ()), tuple(g["years"]) if g.get("years") else None)
                      for g in data["grants"]]
        except (ValueError, KeyError, TypeError, UnicodeError) as exc:
            raise CatalogError(f"the release record cannot be read ({exc})", path=f.path) from None
        if collection is None or data["collection"] == collection:
            out.setdefault(data["collection"], []).extend(grants)
    return out


def access_state(catalog: Catalog, library: str, collection: str,
                 released: Optional[Dict[str, List[Grant]]] = None) -> str:
    """`released` once a trigger executed, else `dark` for purchased and `open-to-owner` for
    self-built collections (by the collection's bags). `released`: `releases(catalog)`, when
    the caller has it already (one read for many collections)."""
    found = releases(catalog) if released is None else released
    if found.get(f"{library}/{collection}"):
        return RELEASED
    types = set(catalog.bags(library, collection).column("collection_type").to_pylist())
    return DARK if "purchased" in types or not types else OPEN_TO_OWNER


def grant_covers(grant: Grant, bag: BagRecord) -> Optional[str]:
    """None if the grant covers the bag, else why not. Titles match the bag's title (case and
    spacing aside, either containing the other); years need a year in the bag's title inside
    the range: a bag that names no year is not covered by a year-limited right (licensed
    content must not leak on a guess)."""
    title = " ".join((bag.title or "").split()).casefold()
    if grant.titles:
        wanted = [" ".join(t.split()).casefold() for t in grant.titles]
        if not title or not any(w and (w in title or title in w) for w in wanted):
            return f"its title {bag.title!r} is not among the entitled titles ({'; '.join(grant.titles)})"
    if grant.years:
        years = [int(y) for y in _YEAR.findall(bag.title or "")]
        if not years:
            return f"its title names no year, and the entitlement covers {grant.years[0]}-{grant.years[1]} only"
        if not any(grant.years[0] <= y <= grant.years[1] for y in years):
            return f"its year ({', '.join(map(str, years))}) is outside {grant.years[0]}-{grant.years[1]}"
    return None


@dataclass(frozen=True)
class AccessDecision:
    """Why a restore may hand out the bags: the basis written into its dissemination events."""

    basis: str
    library: Optional[str]


def decide_restore(catalog: Catalog, bags: Sequence[BagRecord], library: Optional[str],
                   for_preservation: bool, operator: str, operators: Sequence[str]) -> AccessDecision:
    """May `operator` restore `bags` (for `library`)? UsageError (exit 2) saying why not and what to do.

    Under --library, a bag of another library that is not released to it is refused in the words
    of `LibraryScope.check_bag`, which reveal nothing of the bag (not even its access state)."""
    released = releases(catalog)
    states: Dict[str, str] = {}
    for bag in bags:
        coll = f"{bag.library}/{bag.collection}"
        if coll not in states:
            states[coll] = access_state(catalog, bag.library, bag.collection, released)
        if library is not None and bag.library != library and not any(
                g.library == library for g in released.get(coll, [])):
            LibraryScope(library).check_bag(catalog, bag.bag_id)
    if for_preservation:
        if operator not in operators:
            raise UsageError(f"operator {operator!r} may not restore for preservation: only the consortium "
                             f"operators listed in governance.operators may ({', '.join(operators) or 'none listed'})",
                             key="--for-preservation")
        return AccessDecision(f"restore for preservation by consortium operator {operator}", library)
    bases = []
    for bag in bags:
        coll = f"{bag.library}/{bag.collection}"
        state = states[coll]
        if state == DARK:
            raise UsageError(f"collection {coll} is dark (purchased content, not released): it is preserved but not "
                             f"handed out. A release is requested with `strongroom request trigger {coll} --reason "
                             f"TEXT` and approved by the governance quorum; consortium operators may use "
                             f"--for-preservation", key=bag.bag_id)
        if state == OPEN_TO_OWNER:
            if library != bag.library:
                raise UsageError(f"collection {coll} is open to its owner only: restore it with --library "
                                 f"{bag.library}" + (f" (not {library})" if library else ""), key=bag.bag_id)
            bases.append(f"open-to-owner collection restored for its owner {library}")
            continue
        grants = [g for g in released.get(coll, []) if g.library == library]
        if library is None or not grants:
            raise UsageError(f"collection {coll} is released to its entitled libraries only; give --library L for "
                             f"one of them" + (f" ({library} is not entitled)" if library else ""), key=bag.bag_id)
        reasons = [grant_covers(g, bag) for g in grants]
        if all(r is not None for r in reasons):
            raise UsageError(f"bag {bag.bag_id} is not covered by {library}'s entitlement: {reasons[0]}",
                             key=bag.bag_id)
        bases.append(f"released collection restored for entitled library {library}")
    return AccessDecision("; ".join(sorted(set(bases))), library)


def note_disseminations(catalog: Catalog, decision: AccessDecision) -> Catalog:
    """The same catalog, but every `dissemination` event appended through it carries the access
    basis in its detail and names the library it was for: the restore code records its
    dissemination itself (fixity.restore), and the basis belongs in that very event, not in a
    second one that could be mistaken for another dissemination."""
    append = catalog.append_events

    def appending(events):
        noted = [dataclasses.replace(e, detail=f"{e.detail or ''}; access: {decision.basis}",
                                     agent_library=decision.library or e.agent_library)
                 if isinstance(e, EventRecord) and e.type == "dissemination" else e for e in events]
        return append(noted)

    catalog.append_events = appending  # type: ignore[method-assign]
    return catalog


__all__ = ["DARK", "OPEN_TO_OWNER", "RELEASED", "AccessDecision", "Entitlement", "access_state",
           "change_entitlement", "decide_restore", "entitlements", "grant_covers", "note_disseminations",
           "parse_years", "record_release", "releases", "store_entitlement", "store_release"]
