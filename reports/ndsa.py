"""NDSA Levels of Digital Preservation (v2.0, 2019): which level each collection reaches, and why.

The NDSA matrix has five functional areas, each with four cumulative levels (1 Know your
content, 2 Protect your content, 3 Monitor your content, 4 Sustain your content). Some of its
cells are about things no archive software can see (who holds the keys, what disasters threaten
a building, whether staff review logs). The rules below are the part Strongroom can *evidence*
from its catalog, ledger and config; a level is reached when every rule of it and of every
level below holds for every bag of the collection. Each area also lists what the NDSA asks that
Strongroom cannot evidence, for staff to attest outside it (`NOT_EVIDENCED`). A Strongroom
`site` is taken as a distinct geographic location with its own disaster threats: that is what
the config says it is ("where a copy physically is"; policies refuse two copies on one site),
except that targets on one file system or in one bucket are one location whatever their sites
say (`Config.location_of`): two folders on one disk are one copy for "locations", so the
default `strongroom init` layout (a demo) is not credited with two. Sites below count such
locations.

A copy counts as *verified* when its current state is `verified` or `repaired`.

Storage
  1  every bag has >= 2 verified copies, in >= 2 separate locations (NDSA: "two complete copies in
     separate locations"; not two folders on one disk)
  2  every bag has >= 3 verified copies, spanning >= 2 sites
  3  every bag's verified copies span >= 3 sites (one disaster takes at most one copy of three)
  4  every bag's verified copies use >= 2 kinds of storage (e.g. filesystem and S3: no single
     technology to fail), and every copy the policy asks for is present and verified (none
     damaged, failed, missing, absent or unverified)
Integrity
  1  every file has its policy's primary digest, computed at ingest, and every bag's latest
     virus check (ClamAV at ingest, or `audit --virus` since) scanned all of its files and found
     nothing (NDSA: "virus check all content; isolate content in quarantine as needed"; infected
     deposits never reach the catalog, they stay in staging/quarantine/)
  2  every copy was verified after copying (every file re-hashed on the stored copy)
  3  every verified copy had a deep audit (every file re-hashed) within its cadence, and every
     bag's fixity checks are in the ledger, whose hash chain verifies intact
  4  no copy is damaged, failed or missing (damage found was repaired from a good copy), and
     every verified copy is within its quick-check cadence too
Control
  1  the collection's policy is known to the config and names the targets allowed to hold it
  2  copies exist only on targets the policy names
  3  every logged action on the collection names its agent, every bag has its ingestion
     logged, and the ledger verifies intact
  4  (not evidenced: periodic review of the action logs is not recorded in the catalog)
Metadata
  1  the catalog inventories every file of every bag (its file rows add up to the bag's counts)
     and every bag has a verified copy that carries its own manifests, so the inventory is
     backed up apart from the catalog (`strongroom catalog rebuild` restores it)
  2  enough metadata to know what the content is: every bag has a title (descriptive; the
     administrative ones, library, collection, policy and UUID, are always there) and every
     file a format identification record (technical)
  3  standards applied without gaps: every bag's ingestion is logged (Strongroom writes BagIt
     bag-info and PREMIS 3 into every bag at ingest) and every file is identified to a PRONOM
     format
  4  preservation actions are recorded with their dates: ingestion, replication and fixity
     check events for every bag, in a ledger that verifies intact
Content
  1  every file's format identification is recorded, with how it was made (signature,
     container, extension, or none)
  2  every file is identified to a PRONOM format (PUID)
  3  each policy of the collection keeps a list of formats at risk of obsolescence (which the
     format report checks every file against)
  4  no file is in a format its policy lists as at risk (nothing awaits migration: Strongroom
     does not migrate, at-risk files are migrated outside and deposited as a new version)
"""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

AREAS = ("storage", "integrity", "control", "metadata", "content")
LEVELS = (1, 2, 3, 4)


@dataclass
class Facts:
    """What the catalog, ledger and config say about one collection (see preservation.py)."""

    library: str
    collection: str
    bags: int = 0
    files: int = 0                      # file rows in the catalog
    files_declared: int = 0             # sum of the bags' file counts
    policies: List[str] = field(default_factory=list)
    unknown_policies: List[str] = field(default_factory=list)
    policy_targets: List[str] = field(default_factory=list)
    copies: int = 0                     # every replica row (absent included)
    good_copies_min: int = 0
    good_copies_max: int = 0
    good_sites_min: int = 0             # separate sites = distinct locations (one device is one location)
    good_sites_max: int = 0
    good_types_min: int = 0
    good_copies: int = 0
    sites: List[str] = field(default_factory=list)         # sites holding verified copies
    storage_types: List[str] = field(default_factory=list)
    copies_bad: int = 0                 # damaged, failed, missing
    copies_absent: int = 0
    copies_unverified: int = 0
    copies_extra: int = 0               # on targets the policy does not name
    good_without_verification: int = 0
    overdue_deep: int = 0
    overdue_quick: int = 0
    last_deep_oldest: Optional[_dt.datetime] = None
    last_deep_newest: Optional[_dt.datetime] = None
    deep_every: List[str] = field(default_factory=list)
    quick_every: List[str] = field(default_factory=list)
    primary_digests: List[str] = field(default_factory=list)
    files_missing_primary: int = 0
    files_unidentified: int = 0
    files_no_identification: int = 0
    methods: Dict[str, int] = field(default_factory=dict)
    at_risk_files: int = 0
    at_risk_bytes: int = 0
    at_risk_watched: int = 0            # PUIDs the collection's policies list as at risk
    policies_without_watch: List[str] = field(default_factory=list)
    bags_untitled: int = 0
    events: int = 0
    events_without_agent: int = 0
    fixity_events: int = 0
    bags_without_ingestion: int = 0
    bags_without_replication: int = 0
    bags_without_fixity: int = 0
    repairs_in_period: int = 0
    ledger_ok: bool = False
    virus_checked_bags: int = 0         # bags whose latest virus check scanned every file, clean
    virus_infected_bags: int = 0        # bags whose latest virus check found an infection
    virus_scanned_files: int = 0        # files scanned by those latest checks
    virus_db: str = ""                  # newest signature database used: "27500 of Wed Dec  2 ... 2026"
    virus_db_age_days: Optional[int] = None  # its age when the report was made


# A finding is (message key, params); messages live in reports.i18n as "ndsa.<rule>.finding".
Finding = Tuple[str, Dict[str, Any]]


@dataclass(frozen=True)
class Rule:
    area: str
    level: int
    key: str                                         # message keys: ndsa.<key>.rule / .finding
    check: Optional[Callable[[Facts], bool]]         # None: not evidenced by Strongroom
    finding: Callable[[Facts], Dict[str, Any]]


def _range(lo: int, hi: int) -> str:
    return str(lo) if lo == hi else f"{lo}-{hi}"


def _ledger(f: Facts) -> str:
    return "ledger.intact" if f.ledger_ok else "ledger.altered"


RULES: Tuple[Rule, ...] = (
    # Storage
    Rule("storage", 1, "storage.two_copies", lambda f: f.good_copies_min >= 2 and f.good_sites_min >= 2,
         lambda f: {"copies": _range(f.good_copies_min, f.good_copies_max),
                    "locations": _range(f.good_sites_min, f.good_sites_max), "targets": f.policy_targets}),
    Rule("storage", 2, "storage.three_copies", lambda f: f.good_copies_min >= 3,
         lambda f: {"copies": _range(f.good_copies_min, f.good_copies_max)}),
    Rule("storage", 2, "storage.two_sites", lambda f: f.good_sites_min >= 2,
         lambda f: {"sites": _range(f.good_sites_min, f.good_sites_max), "names": f.sites}),
    Rule("storage", 3, "storage.three_sites", lambda f: f.good_sites_min >= 3,
         lambda f: {"sites": _range(f.good_sites_min, f.good_sites_max), "names": f.sites}),
    Rule("storage", 4, "storage.diverse", lambda f: f.good_types_min >= 2,
         lambda f: {"kinds": f.good_types_min, "types": f.storage_types}),
    Rule("storage", 4, "storage.all_required", lambda f: f.copies_bad + f.copies_absent + f.copies_unverified == 0,
         lambda f: {"bad": f.copies_bad, "absent": f.copies_absent, "unverified": f.copies_unverified}),
    # Integrity
    Rule("integrity", 1, "integrity.digests", lambda f: f.files_missing_primary == 0,
         lambda f: {"files": f.files, "missing": f.files_missing_primary, "digests": f.primary_digests}),
    Rule("integrity", 1, "integrity.virus_check",
         lambda f: f.bags > 0 and f.virus_checked_bags == f.bags and f.virus_infected_bags == 0,
         lambda f: {"checked": f.virus_checked_bags, "bags": f.bags, "infected": f.virus_infected_bags,
                    "files": f.virus_scanned_files, "db": f.virus_db or "-",
                    "age": "-" if f.virus_db_age_days is None else f.virus_db_age_days}),
    Rule("integrity", 2, "integrity.verified_copies",
         lambda f: f.good_copies > 0 and f.good_without_verification == 0 and f.copies_unverified == 0,
         lambda f: {"copies": f.good_copies - f.good_without_verification, "unverified":
                    f.good_without_verification + f.copies_unverified}),
    Rule("integrity", 3, "integrity.deep_cadence", lambda f: f.good_copies > 0 and f.overdue_deep == 0,
         lambda f: {"every": f.deep_every, "oldest": f.last_deep_oldest, "newest": f.last_deep_newest,
                    "overdue": f.overdue_deep}),
    Rule("integrity", 3, "integrity.fixity_log", lambda f: f.bags_without_fixity == 0 and f.ledger_ok,
         lambda f: {"events": f.fixity_events, "bags": f.bags_without_fixity, "ledger": _ledger(f)}),
    Rule("integrity", 4, "integrity.no_damage", lambda f: f.copies_bad == 0,
         lambda f: {"bad": f.copies_bad, "repairs": f.repairs_in_period}),
    Rule("integrity", 4, "integrity.quick_cadence", lambda f: f.good_copies > 0 and f.overdue_quick == 0,
         lambda f: {"every": f.quick_every, "overdue": f.overdue_quick}),
    # Control
    Rule("control", 1, "control.policy_known", lambda f: not f.unknown_policies and bool(f.policies),
         lambda f: {"policies": f.policies, "unknown": f.unknown_policies, "targets": f.policy_targets}),
    Rule("control", 2, "control.only_allowed", lambda f: f.copies_extra == 0,
         lambda f: {"extra": f.copies_extra}),
    Rule("control", 3, "control.agents_logged",
         lambda f: f.events_without_agent == 0 and f.bags_without_ingestion == 0 and f.ledger_ok,
         lambda f: {"events": f.events, "without": f.events_without_agent, "bags": f.bags_without_ingestion,
                    "ledger": _ledger(f)}),
    Rule("control", 4, "control.log_review", None, lambda f: {}),
    # Metadata
    Rule("metadata", 1, "metadata.inventory",
         lambda f: f.files == f.files_declared and f.good_copies_min >= 1,
         lambda f: {"files": f.files, "declared": f.files_declared, "copies": f.good_copies}),
    Rule("metadata", 2, "metadata.enough", lambda f: f.bags_untitled == 0 and f.files_no_identification == 0,
         lambda f: {"untitled": f.bags_untitled, "bags": f.bags, "noid": f.files_no_identification}),
    Rule("metadata", 3, "metadata.standards", lambda f: f.bags_without_ingestion == 0 and f.files_unidentified == 0,
         lambda f: {"bags": f.bags_without_ingestion, "unidentified": f.files_unidentified}),
    Rule("metadata", 4, "metadata.actions",
         lambda f: f.bags_without_ingestion == 0 and f.bags_without_replication == 0
         and f.bags_without_fixity == 0 and f.ledger_ok,
         lambda f: {"events": f.events, "ingestion": f.bags_without_ingestion,
                    "replication": f.bags_without_replication, "fixity": f.bags_without_fixity,
                    "ledger": _ledger(f)}),
    # Content
    Rule("content", 1, "content.documented", lambda f: f.files_no_identification == 0,
         lambda f: {"methods": f.methods, "noid": f.files_no_identification}),
    Rule("content", 2, "content.identified", lambda f: f.files_unidentified == 0,
         lambda f: {"files": f.files, "unidentified": f.files_unidentified}),
    Rule("content", 3, "content.watch", lambda f: bool(f.policies) and not f.policies_without_watch,
         lambda f: {"watched": f.at_risk_watched, "without": f.policies_without_watch}),
    Rule("content", 4, "content.no_at_risk", lambda f: f.at_risk_files == 0,
         lambda f: {"files": f.at_risk_files, "bytes": f.at_risk_bytes}),
)

# What the NDSA asks at each level that Strongroom cannot see: for staff to attest.
NOT_EVIDENCED: Dict[str, Tuple[str, ...]] = {
    "storage": ("ndsa.storage.media", "ndsa.storage.obsolescence"),
    "integrity": ("ndsa.integrity.write_blocker", "ndsa.integrity.write_access"),
    "control": ("ndsa.control.authorisation", "ndsa.control.review"),
    "metadata": ("ndsa.metadata.standards",),
    "content": ("ndsa.content.migration",),
}


@dataclass
class RuleResult:
    level: int
    key: str
    met: Optional[bool]                  # None: not evidenced by Strongroom
    params: Dict[str, Any]


@dataclass
class AreaAssessment:
    area: str
    level: int                           # 0 when level 1 is not reached
    evidence: List[RuleResult]           # rules met, up to the level reached
    missing: List[RuleResult]            # rules of the next level not met
    rules: List[RuleResult]              # every rule, met or not
    not_evidenced: Tuple[str, ...]


@dataclass
class CollectionAssessment:
    library: str
    collection: str
    areas: List[AreaAssessment]

    def level(self, area: str) -> int:
        return next(a.level for a in self.areas if a.area == area)


def assess(facts: Facts) -> CollectionAssessment:
    areas = []
    for area in AREAS:
        results = [RuleResult(r.level, r.key, None if r.check is None else bool(r.check(facts)), r.finding(facts))
                   for r in RULES if r.area == area]
        reached = 0
        for level in LEVELS:
            if all(r.met for r in results if r.level == level):
                reached = level
            else:
                break
        areas.append(AreaAssessment(
            area=area, level=reached,
            evidence=[r for r in results if r.level <= reached],
            missing=[r for r in results if r.level == reached + 1 and not r.met],
            rules=results, not_evidenced=NOT_EVIDENCED[area]))
    return CollectionAssessment(facts.library, facts.collection, areas)


# --- virus checks (from the ledger's "virus check" events) ------------------------------------

VIRUS_EVENT = "virus check"
_SCANNED = re.compile(r"(\d+) of (\d+) file\(s\) scanned, (\d+) infected")
_DB = re.compile(r"signature database (\S+) of (.+?) \(")


def virus_facts(events, now: _dt.datetime) -> Dict[Tuple[str, str], Dict[str, Any]]:
    """(library, collection) -> the virus_* fields of Facts, from each bag's latest virus check
    event (ingest's, or a later `audit --virus` of a copy: the newest says what is known now).
    `events` has library, collection, bag_id, type, outcome, detail, agent, datetime columns."""
    import pyarrow.compute as pc

    if events.num_rows == 0:
        return {}
    rows = events.filter(pc.fill_null(pc.equal(events.column("type"), VIRUS_EVENT), False)).select(
        ["library", "collection", "bag_id", "outcome", "detail", "agent", "datetime"]).to_pylist()
    latest: Dict[str, Dict[str, Any]] = {}
    for r in sorted(rows, key=lambda r: r["datetime"]):
        if r["bag_id"] is not None and r["library"] is not None:
            latest[r["bag_id"]] = r
    out: Dict[Tuple[str, str], Dict[str, Any]] = {}
    newest: Dict[Tuple[str, str], Tuple[_dt.datetime, str]] = {}
    for r in latest.values():
        key = (r["library"], r["collection"])
        facts = out.setdefault(key, {"virus_checked_bags": 0, "virus_infected_bags": 0, "virus_scanned_files": 0})
        scanned = _SCANNED.search(r["detail"] or "")
        if scanned:
            facts["virus_scanned_files"] += int(scanned.group(1))
        complete = bool(scanned) and scanned.group(1) == scanned.group(2) and scanned.group(3) == "0"
        if r["outcome"] == "success" and complete:
            facts["virus_checked_bags"] += 1
        if (scanned and scanned.group(3) != "0") or r["outcome"] == "failure" and "FOUND" in (r["detail"] or ""):
            facts["virus_infected_bags"] += 1
        db = _DB.search(r["agent"] or "")
        if db:
            try:
                when = _dt.datetime.strptime(" ".join(db.group(2).split()), "%a %b %d %H:%M:%S %Y").replace(
                    tzinfo=_dt.timezone.utc)
            except ValueError:
                continue
            if key not in newest or when > newest[key][0]:
                newest[key] = (when, f"{db.group(1)} of {' '.join(db.group(2).split())}")
    for key, (when, text) in newest.items():
        out[key]["virus_db"] = text
        out[key]["virus_db_age_days"] = max(0, (now - when).days)
    return out


def add_virus_facts(facts: List[Facts], events, now: _dt.datetime) -> None:
    """Fill each collection's virus_* fields (kept out of preservation._facts' group-bys)."""
    found = virus_facts(events, now)
    for f in facts:
        for name, value in found.get((f.library, f.collection), {}).items():
            setattr(f, name, value)
