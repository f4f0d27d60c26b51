"""A policy's `fixity:` section (and a storage target's override of it), with the two rules
beyond the plain cadence: audits sooner after a finding, and cold copies.

* `deep_every`, `quick_every`, `daily_byte_budget`: the cadence (see fixity.due), `drill_every`:
  restore drills per target (fixity.drill); a target's `fixity: {deep_every, quick_every}`
  overrides the two intervals for every policy (CadenceOverride).

* `fixity.after_finding: {deep_within: 7d, window: 30d}` (the default; `off` turns it off).
  A damaged or inconclusive finding on a storage target is evidence that the target (its disks,
  its operator, its provider) may be failing: LOCKSS polls a peer more often after a
  disagreement for the same reason. For `window` after such a finding, every OTHER good copy
  on that target not deep-verified since the finding falls due for a deep audit at the latest
  `deep_within` after it. It only ever brings a due date forward: a clean history never makes
  a copy due later than the policy's `deep_every`.
* `fixity.cold: {sample_bytes: 10GB, every: 30d}` (the default) applies to targets marked
  `tier: cold` in the config (Glacier-class storage, where re-reading everything costs money
  and hours). Copies there get their quick checks on the cadence (stored checksums, sizes)
  but no full deep cadence: instead, every `every`, a RANDOM sample of the target's copies
  under this policy is re-read in full, up to `sample_bytes` (at least one bag per period, so
  a bag bigger than the budget is still sampled). Random, so nobody can predict which copies
  are re-read; reports say what fraction of the target's bytes was truly re-read.

Read here with the policy's Reader (policies.model, which passes it in).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

from policies.units import format_duration, format_size

if TYPE_CHECKING:  # pragma: no cover - the Reader is passed in by policies.model
    from policies.model import Reader

AFTER_FINDING_KEYS = ("deep_within", "window")
COLD_KEYS = ("sample_bytes", "every")


@dataclass(frozen=True)
class AfterFinding:
    """After a damaged/inconclusive finding on a target, its other copies are deep-audited within
    `deep_within`, for findings younger than `window`."""

    deep_within: datetime.timedelta
    window: datetime.timedelta

    def as_dict(self) -> dict:
        return {"deep_within": format_duration(self.deep_within), "window": format_duration(self.window)}


@dataclass(frozen=True)
class ColdSample:
    """On a `tier: cold` target: re-read a random sample of up to `sample_bytes` every `every`."""

    sample_bytes: int
    every: datetime.timedelta

    def as_dict(self) -> dict:
        return {"sample_bytes": format_size(self.sample_bytes), "every": format_duration(self.every)}


DEFAULT_AFTER_FINDING = AfterFinding(deep_within=datetime.timedelta(days=7), window=datetime.timedelta(days=30))
DEFAULT_COLD = ColdSample(sample_bytes=10 * 10**9, every=datetime.timedelta(days=30))


def read_after_finding(reader: "Reader", value: Any, key: str,
                       deep_every: Optional[datetime.timedelta]) -> Optional[AfterFinding]:
    """`off` (or false) -> None; a mapping -> AfterFinding with the defaults for keys left out."""
    if value is False or value == "off":
        return None
    data = reader.mapping(value, key, AFTER_FINDING_KEYS, describe="off, or a mapping")
    if data is None:
        return DEFAULT_AFTER_FINDING
    within = reader.duration(data["deep_within"], f"{key}.deep_within") if "deep_within" in data \
        else DEFAULT_AFTER_FINDING.deep_within
    window = reader.duration(data["window"], f"{key}.window") if "window" in data else DEFAULT_AFTER_FINDING.window
    if within and deep_every and within >= deep_every:
        reader.problem(f"{key}.deep_within", f"({format_duration(within)}) must be shorter than fixity.deep_every "
                                             f"({format_duration(deep_every)}), or it never brings an audit forward")
    if within and window and window < within:
        reader.problem(f"{key}.window", f"({format_duration(window)}) must not be shorter than deep_within "
                                        f"({format_duration(within)})")
    return AfterFinding(deep_within=within or DEFAULT_AFTER_FINDING.deep_within,
                        window=window or DEFAULT_AFTER_FINDING.window)


def read_cold(reader: "Reader", value: Any, key: str) -> ColdSample:
    """`cold: {sample_bytes: SIZE, every: DURATION}` with the defaults for keys left out."""
    data = reader.mapping(value, key, COLD_KEYS)
    if data is None:
        return DEFAULT_COLD
    sample = reader.size(data["sample_bytes"], f"{key}.sample_bytes") if "sample_bytes" in data \
        else DEFAULT_COLD.sample_bytes
    every = reader.duration(data["every"], f"{key}.every") if "every" in data else DEFAULT_COLD.every
    return ColdSample(sample_bytes=sample or DEFAULT_COLD.sample_bytes, every=every or DEFAULT_COLD.every)


@dataclass(frozen=True)
class FixityCadence:
    """How often every copy is re-checked, and how many bytes an audit day may read."""

    deep_every: datetime.timedelta      # full re-hash of every file
    quick_every: datetime.timedelta     # existence + size (and stored-checksum) check
    daily_byte_budget: int              # bytes a single day's deep audits may read
    after_finding: Optional[AfterFinding] = DEFAULT_AFTER_FINDING   # None: off
    cold: ColdSample = DEFAULT_COLD     # the deep sample on `tier: cold` targets
    drill_every: datetime.timedelta = datetime.timedelta(days=180)   # restore drill per target (fixity.drill)


@dataclass(frozen=True)
class CadenceOverride:
    """A storage target's own cadence (e.g. a cold bucket re-hashed every 180d); None = policy's."""

    deep_every: Optional[datetime.timedelta] = None
    quick_every: Optional[datetime.timedelta] = None

    def apply(self, cadence: FixityCadence) -> FixityCadence:
        return FixityCadence(
            deep_every=self.deep_every or cadence.deep_every,
            quick_every=self.quick_every or cadence.quick_every,
            daily_byte_budget=cadence.daily_byte_budget,
            after_finding=cadence.after_finding,
            cold=cadence.cold,
            drill_every=cadence.drill_every,
        )


DEFAULT_FIXITY = FixityCadence(
    deep_every=datetime.timedelta(days=90),
    quick_every=datetime.timedelta(days=7),
    daily_byte_budget=500 * 10**9,
)


def read_cadence_override(reader: "Reader", value: Any, key: str) -> Optional[CadenceOverride]:
    """A storage target's `fixity: {deep_every, quick_every}` (either or both)."""
    data = reader.mapping(value, key, ("deep_every", "quick_every"))
    if data is None:
        return None
    if not value:
        reader.problem(key, "must set deep_every and/or quick_every (or be left out)")
        return None
    deep = reader.duration(data["deep_every"], f"{key}.deep_every") if "deep_every" in data else None
    quick = reader.duration(data["quick_every"], f"{key}.quick_every") if "quick_every" in data else None
    if deep and quick and quick > deep:
        reader.problem(f"{key}.quick_every",
                       f"({format_duration(quick)}) must not be longer than deep_every ({format_duration(deep)})")
    return CadenceOverride(deep_every=deep, quick_every=quick)


def read_fixity(reader: "Reader", value: Any) -> FixityCadence:
    """A policy's `fixity:` mapping, defaults for keys left out."""
    data = reader.mapping(value, "fixity", ("deep_every", "quick_every", "daily_byte_budget", "after_finding", "cold",
                                            "drill_every"))
    if data is None:
        return DEFAULT_FIXITY
    deep = reader.duration(data["deep_every"], "fixity.deep_every") if "deep_every" in data else DEFAULT_FIXITY.deep_every
    quick = reader.duration(data["quick_every"], "fixity.quick_every") if "quick_every" in data else DEFAULT_FIXITY.quick_every
    budget = (reader.size(data["daily_byte_budget"], "fixity.daily_byte_budget")
              if "daily_byte_budget" in data else DEFAULT_FIXITY.daily_byte_budget)
    if deep and quick and quick > deep:
        reader.problem("fixity.quick_every",
                       f"({format_duration(quick)}) must not be longer than "
                       f"fixity.deep_every ({format_duration(deep)}): quick checks run between deep ones")
    after = read_after_finding(reader, data["after_finding"], "fixity.after_finding", deep or DEFAULT_FIXITY.deep_every) \
        if "after_finding" in data else DEFAULT_AFTER_FINDING
    cold = read_cold(reader, data["cold"], "fixity.cold") if "cold" in data else DEFAULT_COLD
    drill = reader.duration(data["drill_every"], "fixity.drill_every") if "drill_every" in data else None
    return FixityCadence(deep_every=deep or DEFAULT_FIXITY.deep_every,
                         quick_every=quick or DEFAULT_FIXITY.quick_every,
                         daily_byte_budget=budget or DEFAULT_FIXITY.daily_byte_budget, after_finding=after, cold=cold,
                         drill_every=drill or DEFAULT_FIXITY.drill_every)


__all__ = ["AfterFinding", "CadenceOverride", "ColdSample", "DEFAULT_AFTER_FINDING", "DEFAULT_COLD", "DEFAULT_FIXITY",
           "FixityCadence", "read_after_finding", "read_cadence_override", "read_cold", "read_fixity"]
