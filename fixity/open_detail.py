"""How a copy's catalog record keeps the damage found on it open, and since when.

A damaged copy's record detail ends "... Open since <ISO time>." (the time the damage was first
found). Later records that cannot clear it (a quick check cannot see corrupted bytes; an
inconclusive check saw nothing) keep it: "<this check's summary> (why). Still open: <the damage
record's detail>. Open since <the same ISO time>." `status` and the reports read these.
"""

from __future__ import annotations

import re
from typing import Optional

DETAIL_MAX = 2000   # the longest replica detail the audit writes

#: How a damaged copy's record names the time its damage was first found (kept by later records
#: while it stays open, e.g. through quick checks that cannot see it): "... Open since <ISO time>."
OPEN_SINCE = "Open since "
STILL_OPEN = "Still open: "
_OPEN_SINCE_RE = re.compile(r"Open since (\d{4}-\d\d-\d\dT[0-9:.]+(?:[+-]\d\d:\d\d|Z)?)\.?$")


def open_since(detail: Optional[str]) -> Optional[str]:
    """The ISO time a record's open damage was first found, if its detail carries one."""
    m = _OPEN_SINCE_RE.search(detail or "")
    return m.group(1) if m else None


def with_since(detail: str, since: str) -> str:
    """`detail` cut to fit with its "Open since" ending (the ending is what must survive)."""
    tail = f". {OPEN_SINCE}{since}."
    return detail[:DETAIL_MAX - len(tail)].rstrip(". ") + tail


def still_open(summary: str, current) -> str:
    """A quick success on a damaged copy keeps what the deep check found:
    "<quick summary> (...). Still open: <the damage record's detail>. Open since <ISO time>."."""
    still = current.detail or ""
    if STILL_OPEN in still:
        still = still.split(STILL_OPEN, 1)[1]
    since = open_since(still) or (current.last_audit_at or current.recorded_at).isoformat()
    if open_since(still):
        still = still[:still.rfind(OPEN_SINCE)]
    why = "a quick check cannot clear damage it cannot see" if " (quick): success" in summary else \
        "this check could not clear it"
    return with_since(f"{summary} ({why}). {STILL_OPEN}{still.rstrip('. ')}", since)


__all__ = ["OPEN_SINCE", "STILL_OPEN", "open_since", "with_since", "still_open"]
