"""Durations ("90d") and sizes ("500GB") as people write them in config and policy files.

Sizes follow the usual convention of storage vendors and the SI: KB, MB, GB, TB, PB are powers
of 1000 (GB = 10^9 bytes); KiB, MiB, GiB, TiB, PiB are powers of 1024 (GiB = 2^30 bytes). A
bare whole number is a count of bytes. The unit's case is not significant except for the `i`
that marks a binary unit, so "500gb" is 500 GB, and "1.5TiB" is exactly 1.5 * 2^40 bytes.
Fractions are allowed and rounded to the nearest byte.

Durations are a whole number with a unit: s (seconds), min (minutes), h (hours), d (days),
w (weeks), and may be combined ("1d12h"). Months and years are refused on purpose: they are not
fixed lengths and "m" could mean either minutes or months; write 30d or 365d instead.

Both parsers raise ConfigError naming `where` (the file and key being read) and what is allowed,
so the person editing the file sees exactly which value to fix.
"""

from __future__ import annotations

import datetime
import re
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any, Dict, List, Tuple

from strongroom.errors import ConfigError

SI_UNITS: Dict[str, int] = {"kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "pb": 10**15}
IEC_UNITS: Dict[str, int] = {"kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40, "pib": 2**50}
_SIZE_UNITS: Dict[str, int] = {"": 1, "b": 1, **SI_UNITS, **IEC_UNITS}
_SIZE_NAMES = {"kb": "KB", "mb": "MB", "gb": "GB", "tb": "TB", "pb": "PB",
               "kib": "KiB", "mib": "MiB", "gib": "GiB", "tib": "TiB", "pib": "PiB"}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*([A-Za-z]*)\s*$")

SIZE_HELP = ("a size like 500GB, 100GB, 1.5TiB or a whole number of bytes "
             "(KB/MB/GB/TB/PB = powers of 1000, KiB/MiB/GiB/TiB/PiB = powers of 1024)")

_DURATION_UNITS: Dict[str, int] = {"w": 7 * 86400, "d": 86400, "h": 3600, "min": 60, "s": 1}
_DURATION_PART = re.compile(r"(\d+)\s*([A-Za-z]+)")
_DURATION_RE = re.compile(r"^\s*(?:\d+\s*[A-Za-z]+\s*)+$")

DURATION_HELP = ("a duration like 90d, 7d, 12h or 2w "
                 "(whole number + unit: s, min, h, d, w; combinations such as 1d12h are allowed)")


def _show(value: Any) -> str:
    """A short, safe rendering of a bad value for an error message."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def parse_size(value: Any, *, where: str) -> int:
    """Bytes from a size such as "500GB", "1.5TiB" or a plain int; ConfigError if malformed."""
    if isinstance(value, bool):
        raise ConfigError(f"must be {SIZE_HELP}, got {_show(value)}", key=where)
    if isinstance(value, int):
        if value < 0:
            raise ConfigError(f"must not be negative; must be {SIZE_HELP}, got {value}", key=where)
        return value
    if not isinstance(value, str):
        raise ConfigError(f"must be {SIZE_HELP}, got {_show(value)}", key=where)
    match = _SIZE_RE.match(value)
    unit = match.group(2).lower() if match else None
    if not match or unit not in _SIZE_UNITS:
        hint = ""
        if match and unit in ("k", "m", "g", "t", "p"):
            hint = f" (write {unit.upper()}B or {unit.upper()}iB)"
        raise ConfigError(f"must be {SIZE_HELP}, got {_show(value)}{hint}", key=where)
    try:
        number = Decimal(match.group(1))
    except InvalidOperation:  # pragma: no cover - the regex admits only decimals
        raise ConfigError(f"must be {SIZE_HELP}, got {_show(value)}", key=where)
    if unit in ("", "b") and number != number.to_integral_value():
        raise ConfigError(f"a number of bytes must be whole; must be {SIZE_HELP}, got {_show(value)}",
                          key=where)
    return int((number * _SIZE_UNITS[unit]).to_integral_value(rounding=ROUND_HALF_UP))


def parse_duration(value: Any, *, where: str) -> datetime.timedelta:
    """A positive timedelta from "90d", "12h", "2w", "1d12h"; ConfigError if malformed."""
    if isinstance(value, datetime.timedelta):
        if value <= datetime.timedelta(0):
            raise ConfigError(f"must be a positive duration; must be {DURATION_HELP}", key=where)
        return value
    if isinstance(value, bool) or isinstance(value, (int, float)):
        raise ConfigError(f"{_show(value)} has no unit; must be {DURATION_HELP}", key=where)
    if not isinstance(value, str) or not _DURATION_RE.match(value):
        raise ConfigError(f"must be {DURATION_HELP}, got {_show(value)}", key=where)
    seconds = 0
    for number, unit in _DURATION_PART.findall(value):
        unit_l = unit.lower()
        if unit_l in ("m", "mo", "mon", "month", "months", "y", "yr", "year", "years"):
            raise ConfigError(
                f"{_show(value)}: months and years are not fixed lengths (and 'm' could mean minutes "
                f"or months); write days or weeks instead, e.g. 30d or 52w; must be {DURATION_HELP}",
                key=where)
        if unit_l not in _DURATION_UNITS:
            raise ConfigError(f"unknown unit {unit!r} in {_show(value)}; must be {DURATION_HELP}", key=where)
        seconds += int(number) * _DURATION_UNITS[unit_l]
    if seconds <= 0:
        raise ConfigError(f"must be a positive duration, got {_show(value)}; must be {DURATION_HELP}",
                          key=where)
    return datetime.timedelta(seconds=seconds)


def format_size(n: int) -> str:
    """Shortest readable form, exact when it can be ("500GB", "1.5TiB"), else ~3 digits ("1.23GB").

    Exact forms round-trip through parse_size, so values copied from a report into a policy
    mean the same number of bytes.
    """
    n = int(n)
    if n < 0:
        return "-" + format_size(-n)
    if n < 1000:
        return f"{n}B"
    # Exact forms (whole, or with up to two decimals) in either system; the shortest wins,
    # a whole number winning a tie.
    exact: List[Tuple[int, int, str]] = []
    for table in (SI_UNITS, IEC_UNITS):
        for unit, mult in table.items():
            if n >= mult and (n * 100) % mult == 0:
                text = f"{Decimal(n) / Decimal(mult):f}".rstrip("0").rstrip(".") if n % mult else str(n // mult)
                text += _SIZE_NAMES[unit]
                exact.append((len(text), 0 if n % mult == 0 else 1, text))
    if exact:
        return min(exact, key=lambda t: (t[0], t[1]))[2]
    for unit, mult in sorted(SI_UNITS.items(), key=lambda kv: -kv[1]):
        if n >= mult:
            value = n / mult
            text = f"{value:.3g}" if value < 1000 else f"{value:.0f}"
            return f"{text}{_SIZE_NAMES[unit]}"
    return f"{n}B"  # pragma: no cover - n >= 1000 always finds a unit


def display_size(n: int) -> str:
    """A size for people to read, in one unit system everywhere: decimal units (KB is 1000 B,
    as in the audit summaries), about three significant figures, a space before the unit
    ("512 B", "1.23 MB", "22.9 MB", "451 MB", "1.5 TB"). Not for config values: use
    format_size, whose exact forms round-trip through parse_size."""
    n = int(n)
    if n < 0:
        return "-" + display_size(-n)
    if n < 1000:
        return f"{n} B"
    names = ["KB", "MB", "GB", "TB", "PB"]
    value, i = n / 1000, 0
    # 999,600 B is "1 MB", not "1e+03 KB": move up a unit while the rounded figure reaches 1000.
    while i < len(names) - 1 and float(f"{value:.3g}") >= 1000:
        value, i = value / 1000, i + 1
    text = f"{value:.3g}" if value < 1000 else f"{value:.0f}"
    return f"{text} {names[i]}"


def add_years(when: datetime.datetime, years: int) -> datetime.datetime:
    """`years` calendar years after `when` (retention is in years, not days); 29 February
    becomes 1 March in a common year."""
    try:
        return when.replace(year=when.year + years)
    except ValueError:
        return when.replace(year=when.year + years, month=3, day=1)


def format_duration(td: datetime.timedelta) -> str:
    """The largest whole unit that is exact ("90d", "12h", "90min"); weeks are left as days.

    Days rather than weeks because policies are written in days (90d, 180d) and "13w" reads
    worse than "91d". Sub-second remainders are shown as fractional seconds.
    """
    total = td.total_seconds()
    if total != int(total):
        return f"{total:g}s"
    seconds = int(total)
    if seconds == 0:
        return "0s"
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    for unit in ("d", "h", "min", "s"):
        mult = _DURATION_UNITS[unit]
        if seconds % mult == 0:
            return f"{sign}{seconds // mult}{unit}"
    return f"{sign}{seconds}s"  # pragma: no cover
