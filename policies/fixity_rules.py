"""The two fixity rules beyond the plain cadence: audits sooner after a finding, and cold copies.

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

Read here (with the policy's Reader) so policies.model stays one job: the policy file's shape.
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


__all__ = ["AfterFinding", "ColdSample", "DEFAULT_AFTER_FINDING", "DEFAULT_COLD", "read_after_finding", "read_cold"]
