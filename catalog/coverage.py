"""Coverage: how much of what each target holds was truly re-read in full recently (issue 17).

"Last audit" per copy says little to an auditor: a quick check proves presence and size, not
the bytes, and an archive can audit the same few bags over and over. Coverage answers the
auditor's question per storage target: of the files and bytes held there, how many were
verified by a DEEP check (every byte re-read and re-hashed) in the last 90 and 365 days, beside
what the policy's cadence asks for in those windows.

What counts as deep-verified at time t: a replica record with `last_audit_kind` deep and
`last_audit_outcome` success at `last_audit_at` t: a deep audit, a repair re-verified deep, the
deposit's own deep read-back of the stored copy, a deep `catalog rebuild`. And the copy must be
in a good state now (verified, repaired): a copy found damaged since is not counted. Quick
checks never count, whatever they found.

The replica log is read in record batches of the few columns needed and folded into one entry
per copy, so memory grows with the number of copies held, never with the number of audit
records.
"""

from __future__ import annotations

import datetime as _dt
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from catalog.catalog import TIE_ORDER, Catalog, _first_per_key
from catalog.compact import live_files
from catalog.schema import RECORD_ID, REPLICAS_SCHEMA, utc_now
from catalog.store import CatalogError
from catalog.tombstones import without_withdrawn
from policies.units import format_duration, format_size

WINDOWS = (90, 365)
HOT, COLD = "hot", "cold"
GOOD = ("verified", "repaired")
NOT_HELD = ("pending", "copied")          # the deposit has not finished: not held yet
_COLUMNS = ["bag_id", "target", "site", "state", "last_audit_at", "last_audit_kind", "last_audit_outcome",
            "recorded_at", RECORD_ID]
_BATCH_ROWS = 65536
_SCAN_ATTEMPTS = 5
_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)


@dataclass(frozen=True)
class CopyFacts:
    """What the replica log says about one copy (bag on target), folded from all its records."""

    bag_id: str
    target: str
    site: Optional[str]
    state: str
    last_deep_us: Optional[int]     # newest deep verification, microseconds since 1970 UTC

    @property
    def last_deep_at(self) -> Optional[_dt.datetime]:
        return None if self.last_deep_us is None else _EPOCH + _dt.timedelta(microseconds=self.last_deep_us)


@dataclass(frozen=True)
class WindowFigures:
    days: int
    files: int
    bytes: int
    files_pct: Optional[float]
    bytes_pct: Optional[float]
    expected_pct: Optional[float]   # the cadence target, as % of the bytes held
    expected_bytes: int             # the same in bytes


@dataclass(frozen=True)
class TargetCoverage:
    target: str
    site: Optional[str]
    tier: str
    held_copies: int
    held_files: int
    held_bytes: int
    good_copies: int
    never_deep: int
    windows: Dict[int, WindowFigures]
    cadence: str                   # in words (English), e.g. "deep every 90d"
    cadences: Tuple[Dict[str, Any], ...] = ()   # the same as data: {kind: deep, every} | {kind: cold, sample_bytes, every}

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["windows"] = {str(k): asdict(v) for k, v in self.windows.items()}
        d["cadences"] = [dict(p) for p in self.cadences]
        return d


@dataclass(frozen=True)
class CopyCoverage:
    bag_id: str
    target: str
    state: str
    files: int
    bytes: int
    last_deep_at: Optional[_dt.datetime]
    within: Dict[int, bool]


@dataclass(frozen=True)
class Coverage:
    now: _dt.datetime
    targets: List[TargetCoverage]
    total: TargetCoverage

    def to_dict(self) -> Dict[str, Any]:
        return {"now": _iso(self.now), "windows_days": list(WINDOWS),
                "targets": [t.to_dict() for t in self.targets], "total": self.total.to_dict()}


def _iso(value: _dt.datetime) -> str:
    return value.astimezone(_dt.timezone.utc).isoformat().replace("+00:00", "Z")


def pct(part: float, whole: float) -> Optional[float]:
    """part/whole in %, rounded DOWN to 0.1 (evidence never overstates: 99.96 % is not 100 %)."""
    if whole <= 0:
        return None
    return math.floor(part * 1000.0 / whole + 1e-9) / 10.0


# ------------------------------------------------------------------------------------------
# One pass over the replica log


def _batches(catalog: Catalog, bag_id: Optional[str]) -> Iterator[pa.RecordBatch]:
    files = live_files(catalog.store, "replicas", bag_id, catalog._replaced)  # noqa: SLF001 - same package
    if not files:
        return
    flt = None if bag_id is None else ds.field("bag_id") == bag_id
    dataset = ds.dataset([f.path for f in files], schema=REPLICAS_SCHEMA, format="parquet",
                         filesystem=catalog.store.fs)
    yield from dataset.to_batches(columns=_COLUMNS, filter=flt, batch_size=_BATCH_ROWS)


def scan_copies(catalog: Catalog, *, bag_id: Optional[str] = None) -> Dict[Tuple[str, str], CopyFacts]:
    """Per copy (bag, target) its current state and newest deep verification.

    Each batch is reduced to one row per copy in Arrow (no row loops), and the reduced batches
    are merged whenever they outgrow what is already merged, so memory stays about one row per
    copy. Folding is idempotent (newest wins), so a scan restarted because a compaction
    replaced files under it gives the same answer."""
    for attempt in range(_SCAN_ATTEMPTS):
        try:
            merged = _merge(catalog, bag_id)
            break
        except FileNotFoundError as exc:
            if attempt == _SCAN_ATTEMPTS - 1:
                raise CatalogError(f"the replicas table kept changing while being read: {exc}",
                                   path=catalog.store.path("replicas"))
        except (pa.ArrowInvalid, OSError) as exc:
            raise CatalogError(f"the replicas table cannot be read: {exc}", path=catalog.store.path("replicas"))
    copies: Dict[Tuple[str, str], CopyFacts] = {}
    if merged is not None:
        cols = [merged.column(n).to_pylist() for n in ("bag_id", "target", "site", "state")]
        deep = pc.cast(merged.column("deep_at"), pa.int64()).to_pylist()
        for bag, target, site, state, at in zip(*cols, deep):
            copies[(bag, target)] = CopyFacts(bag, target, site, state, at)
    return copies


_ORDER = [("recorded_at", "descending"), ("_rank", "ascending"), (RECORD_ID, "descending")]
_REDUCED = ["bag_id", "target", "site", "state", "recorded_at", "_rank", RECORD_ID, "deep_at"]


def _merge(catalog: Catalog, bag_id: Optional[str]) -> Optional[pa.Table]:
    merged: Optional[pa.Table] = None
    pending: List[pa.Table] = []
    pending_rows = 0
    for batch in _batches(catalog, bag_id):
        pending.append(_reduce(_prepare(pa.Table.from_batches([batch]))))
        pending_rows += pending[-1].num_rows
        if pending_rows > max(merged.num_rows if merged is not None else 0, 4 * _BATCH_ROWS):
            merged = _reduce(pa.concat_tables(([merged] if merged is not None else []) + pending))
            pending, pending_rows = [], 0
    if pending:
        merged = _reduce(pa.concat_tables(([merged] if merged is not None else []) + pending))
    return merged


def _prepare(table: pa.Table) -> pa.Table:
    """The columns a copy's facts are folded from: its deep verification time (null if not one)."""
    deep_ok = pc.and_(pc.fill_null(pc.equal(table.column("last_audit_kind"), "deep"), False),
                      pc.fill_null(pc.equal(table.column("last_audit_outcome"), "success"), False))
    at = table.column("last_audit_at")
    return pa.table({
        "bag_id": table.column("bag_id"), "target": table.column("target"), "site": table.column("site"),
        "state": table.column("state"), "recorded_at": table.column("recorded_at"),
        # The worse state wins a tie of recorded_at (catalog.catalog.TIE_ORDER), as Catalog.replicas.
        "_rank": pc.index_in(table.column("state"), value_set=pa.array(TIE_ORDER)),
        RECORD_ID: table.column(RECORD_ID),
        "deep_at": pc.if_else(deep_ok, at, pa.scalar(None, at.type)),
    })


def _reduce(table: pa.Table) -> pa.Table:
    """One row per copy: the current record's columns and the newest deep verification."""
    deep = table.group_by(["bag_id", "target"]).aggregate([("deep_at", "max")])
    deep = deep.rename_columns(["bag_id", "target", "deep_at"])
    first = _first_per_key(table.drop_columns(["deep_at"]), ["bag_id", "target"], _ORDER)
    return first.join(deep, ["bag_id", "target"], join_type="inner").select(_REDUCED)


# ------------------------------------------------------------------------------------------
# Coverage


def tier_of(config, target: str) -> str:
    spec = config.storage.get(target)
    return getattr(spec, "tier", HOT) if spec is not None else HOT


def _held(config, catalog: Catalog, library: Optional[str], collection: Optional[str], bag: Optional[str],
          ) -> Iterator[Tuple[CopyFacts, Dict[str, Any]]]:
    bags = without_withdrawn(catalog, catalog.bags(library, collection, bag))   # K4: withdrawn = not held
    facts = {r["bag_id"]: r for r in bags.select(["bag_id", "policy", "byte_count", "file_count"]).to_pylist()}
    copies = scan_copies(catalog, bag_id=bag)
    for key in sorted(copies):
        c = copies[key]
        info = facts.get(c.bag_id)
        if info is None or c.state in NOT_HELD:
            continue
        yield c, info


def _us(value: _dt.datetime) -> int:
    return (value - _EPOCH) // _dt.timedelta(microseconds=1)


def _bounds(now: _dt.datetime) -> Dict[int, Tuple[int, int]]:
    """Per window, (from, to) in microseconds: a verification counts when within [now - days, now]."""
    return {d: (_us(now - _dt.timedelta(days=d)), _us(now)) for d in WINDOWS}


def _within(at_us: Optional[int], bounds: Tuple[int, int]) -> bool:
    return at_us is not None and bounds[0] <= at_us <= bounds[1]


def copy_coverage(config, catalog: Catalog, *, library: Optional[str] = None, collection: Optional[str] = None,
                  bag: Optional[str] = None, now: Optional[_dt.datetime] = None) -> Iterator[CopyCoverage]:
    """One row per copy held (see the module docstring), by bag id then target."""
    now = (now or utc_now()).astimezone(_dt.timezone.utc)
    bounds = _bounds(now)
    for c, info in _held(config, catalog, library, collection, bag):
        good = c.state in GOOD
        yield CopyCoverage(bag_id=c.bag_id, target=c.target, state=c.state, files=info["file_count"],
                           bytes=info["byte_count"], last_deep_at=c.last_deep_at,
                           within={d: good and _within(c.last_deep_us, bounds[d]) for d in WINDOWS})


@dataclass
class _Sums:
    site: Optional[str] = None
    copies: int = 0
    files: int = 0
    bytes: int = 0
    good: int = 0
    never: int = 0
    files_in: Dict[int, int] = field(default_factory=lambda: {d: 0 for d in WINDOWS})
    bytes_in: Dict[int, int] = field(default_factory=lambda: {d: 0 for d in WINDOWS})
    by_policy: Dict[str, int] = field(default_factory=dict)   # held bytes per policy (expected figures)


def coverage(config, catalog: Catalog, *, library: Optional[str] = None, collection: Optional[str] = None,
             bag: Optional[str] = None, now: Optional[_dt.datetime] = None) -> Coverage:
    """Per target (and all targets together): held, deep-verified in 90/365 days, cadence target."""
    now = (now or utc_now()).astimezone(_dt.timezone.utc)
    sums: Dict[str, _Sums] = {}
    bounds = _bounds(now)
    for c, info in _held(config, catalog, library, collection, bag):
        s = sums.setdefault(c.target, _Sums(site=c.site))
        s.copies += 1
        s.files += info["file_count"]
        s.bytes += info["byte_count"]
        s.by_policy[info["policy"]] = s.by_policy.get(info["policy"], 0) + info["byte_count"]
        if c.last_deep_us is None:
            s.never += 1
        if c.state not in GOOD:
            continue
        s.good += 1
        for d in WINDOWS:
            if _within(c.last_deep_us, bounds[d]):
                s.files_in[d] += info["file_count"]
                s.bytes_in[d] += info["byte_count"]
    targets = [_target(config, name, s) for name, s in sorted(sums.items())]
    return Coverage(now=now, targets=targets, total=_total(targets))


def _expected(config, target: str, tier: str, by_policy: Dict[str, int], days: int
              ) -> Tuple[float, List[Dict[str, Any]]]:
    """Bytes the cadence asks to be re-read within `days`, and the cadences behind it."""
    expected = 0.0
    words: List[Dict[str, Any]] = []
    for name, held in sorted(by_policy.items()):
        policy = config.policies.get(name)
        if policy is None or target not in config.storage:
            continue
        cadence = config.cadence_for(policy, target)
        window = _dt.timedelta(days=days)
        if tier == COLD:
            expected += min(float(held), cadence.cold.sample_bytes * (window / cadence.cold.every))
            part = {"kind": COLD, "sample_bytes": cadence.cold.sample_bytes, "every": format_duration(cadence.cold.every)}
        else:
            expected += held * min(1.0, window / cadence.deep_every)
            part = {"kind": "deep", "every": format_duration(cadence.deep_every)}
        if part not in words:
            words.append(part)
    return expected, words


def _words(part: Dict[str, Any]) -> str:
    if part["kind"] == COLD:
        return f"cold: sample {format_size(part['sample_bytes'])} every {part['every']}"
    return f"deep every {part['every']}"


def _target(config, name: str, s: _Sums) -> TargetCoverage:
    tier = tier_of(config, name)
    windows: Dict[int, WindowFigures] = {}
    words: List[Dict[str, Any]] = []
    for d in WINDOWS:
        expected, words = _expected(config, name, tier, s.by_policy, d)
        windows[d] = WindowFigures(days=d, files=s.files_in[d], bytes=s.bytes_in[d],
                                   files_pct=pct(s.files_in[d], s.files), bytes_pct=pct(s.bytes_in[d], s.bytes),
                                   expected_pct=pct(expected, s.bytes) if words else None,
                                   expected_bytes=int(expected))
    return TargetCoverage(target=name, site=s.site, tier=tier, held_copies=s.copies, held_files=s.files,
                          held_bytes=s.bytes, good_copies=s.good, never_deep=s.never, windows=windows,
                          cadence="; ".join(_words(w) for w in words) or "unknown (target or policy not in the config)",
                          cadences=tuple(words))


def _total(targets: List[TargetCoverage]) -> TargetCoverage:
    parts = [p for t in targets for p in t.cadences]
    files = sum(t.held_files for t in targets)
    size = sum(t.held_bytes for t in targets)
    windows: Dict[int, WindowFigures] = {}
    for d in WINDOWS:
        f = sum(t.windows[d].files for t in targets)
        b = sum(t.windows[d].bytes for t in targets)
        exp = sum(t.windows[d].expected_bytes for t in targets)
        windows[d] = WindowFigures(days=d, files=f, bytes=b, files_pct=pct(f, files), bytes_pct=pct(b, size),
                                   expected_pct=pct(exp, size) if targets else None, expected_bytes=exp)
    return TargetCoverage(target="*", site=None, tier="-", held_copies=sum(t.held_copies for t in targets),
                          held_files=files, held_bytes=size, good_copies=sum(t.good_copies for t in targets),
                          never_deep=sum(t.never_deep for t in targets), windows=windows,
                          cadence="; ".join(dict.fromkeys(t.cadence for t in targets)),
                          cadences=tuple(p for i, p in enumerate(parts) if p not in parts[:i]))


__all__ = ["WINDOWS", "Coverage", "CopyCoverage", "CopyFacts", "TargetCoverage", "WindowFigures",
           "copy_coverage", "coverage", "pct", "scan_copies", "tier_of"]
