"""Text (what `strongroom status` prints without --json): totals, one line per copy, then what
needs attention; and the aligned-column tables it is made of."""

from __future__ import annotations

import datetime as _dt
import unicodedata
from typing import Any, Dict, List, Optional, Sequence

from reports.status_records import PROBLEM_FLAGS, Status

# More bags than this and the text lists only the bags that need attention (JSON lists all).
BAG_LIST_LIMIT = 40
MESSAGE_LIMIT = 50


def status_text(status: Status) -> str:
    """About one screen for a small archive: totals, one line per copy, then what needs attention."""
    lines: List[str] = [f"Strongroom status of {status.catalog} at {_when(status.generated_at, minutes=True)}"]
    if status.ledger_hash is None:
        lines.append("Ledger head: none (no events yet)")
    else:
        lines.append(f"Ledger head: seg-{status.ledger_seq:012d} sha256:{status.ledger_hash}")
        lines.append("  (note it; `strongroom ledger verify --expected-head HASH` later proves nothing was removed)")
    lines.append("")

    if status.totals.bags == 0:
        lines.append("No bags in the catalog" + (" match the filters." if any(status.filters.values()) else "."))
    else:
        lines += _collection_table(status)
        lines.append("")
        lines += _bag_table(status)

    if status.coverage is not None and status.coverage.targets:
        lines.append("")
        lines += coverage_lines(status.coverage)

    if status.deposits:
        lines += ["", f"Unfinished deposits ({len(status.deposits)}):"]
        for d in status.deposits:
            lines.append(f"  {d.library}/{d.collection} from {d.source}: {d.stage}, started {d.started_at} "
                         f"[{d.key}]")
            for b in d.bags:
                state = "registered" if b["registered"] else f"verified on {', '.join(b['verified_on']) or 'no target yet'}"
                lines.append(f"      {b['id']}: {state}")
            if d.abandoned is not None:
                lines.append(f"      ABANDONED {d.abandoned.get('at', '')}: {d.abandoned.get('reason') or d.abandoned.get('why')}")
                continue
            for f in d.failures:
                lines.append(f"      FAILED {f.get('step')}: {f.get('message')}")
                for p in (f.get("problems") or [])[:5]:
                    lines.append(f"        - {p}")
        if any(d.abandoned is None for d in status.deposits):  # an abandoned one is never resumed
            lines.append("  (rerun the same `strongroom deposit` command to resume one, once what failed is fixed; "
                         "or give one up: `strongroom deposit --abandon KEY --reason TEXT`)")

    if status.withdrawn:
        lines += ["", f"Withdrawn ({len(status.withdrawn)}; removed from every target at quorum, tombstones kept):"]
        for w in status.withdrawn[:MESSAGE_LIMIT]:
            what = "WITHDRAWN" if w["state"] == "complete" else "WITHDRAWAL UNFINISHED (rerun `strongroom approve REQ`)"
            lines.append(f"  {w['bag_id']}: {what} by {w['request_id']} on {w['withdrawn_at'][:10]}, "
                         f"approved by {', '.join(w['approvers']) or '?'}"[:240])
        if len(status.withdrawn) > MESSAGE_LIMIT:
            lines.append(f"  ... and {len(status.withdrawn) - MESSAGE_LIMIT} more (--json lists them all)")

    if status.open_findings:
        copies = len({(f.bag, f.target) for f in status.open_findings})
        lines += ["", f"Open findings ({len(status.open_findings)} on {copies} cop{'y' if copies == 1 else 'ies'}, "
                      f"open until a later check resolves them):"]
        lines += [f"  {f.line()}"[:240] for f in status.open_findings[:MESSAGE_LIMIT]]
        if len(status.open_findings) > MESSAGE_LIMIT:
            lines.append(f"  ... and {len(status.open_findings) - MESSAGE_LIMIT} more (--json lists them all)")

    if status.notes:
        lines += ["", "Locations:"]
        for g in status.locations:
            lines.append(f"  {g['location']}: {', '.join(g['targets'])}")
        lines += [f"  note: {n}" for n in status.notes]

    for title, flags in (("Problems", status.problems), ("Warnings", status.warnings)):
        if not flags:
            continue
        lines += ["", f"{title} ({len(flags)}):"]
        for f in flags[:MESSAGE_LIMIT]:
            who = f.bag_id or f.deposit or ""
            lines.append(f"  {who}: {f.message}" if who else f"  {f.message}")
        if len(flags) > MESSAGE_LIMIT:
            lines.append(f"  ... and {len(flags) - MESSAGE_LIMIT} more (--json lists them all)")

    lines.append("")
    if status.problems:
        lines.append(f"ATTENTION: {len(status.problems)} problem(s) need action (exit 1).")
    elif status.totals.bags == 0 and not status.deposits:
        lines.append("Nothing held yet.")
    elif status.warnings:
        overdue = sum(1 for w in status.warnings if w.flag.startswith("overdue"))
        hint = "; run `strongroom audit --due`" if overdue else ""
        lines.append(f"No damage; {len(status.warnings)} warning(s){hint}.")
    else:
        copies = sum(status.totals.replicas.values())
        fewest = min((b.locations for b in status.bags), default=0)
        where = f" in {fewest} location(s) at the least" if status.notes else ""
        lines.append(f"All well: {status.totals.bags} bag(s), {copies} copy(ies){where}, every one verified and "
                     f"audited on schedule.")
    return "\n".join(lines)


def _collection_table(status) -> List[str]:
    from policies.units import format_size

    rows = []
    for c in status.collections:
        rows.append([f"{c.library}/{c.collection}", ", ".join(c.policies), c.totals.bags, c.totals.files,
                     format_size(c.totals.bytes), _states(c.totals.replicas), _attention(c.totals)])
    if len(status.collections) > 1:
        for lib in status.libraries:
            t = lib.totals
            rows.append([f"{lib.library} (library)", "", t.bags, t.files, format_size(t.bytes),
                         _states(t.replicas), _attention(t)])
        t = status.totals
        rows.append(["all", "", t.bags, t.files, format_size(t.bytes), _states(t.replicas), _attention(t)])
    return text_table(["COLLECTION", "POLICY", "BAGS", "FILES", "BYTES", "COPIES", "ATTENTION"], rows,
                 right={2, 3, 4})


def _bag_table(status) -> List[str]:
    from policies.units import format_size

    bags = status.bags
    hidden = 0
    if len(bags) > BAG_LIST_LIMIT and status.filters.get("bag") is None:
        shown = [b for b in bags if b.flags]
        hidden = len(bags) - len(shown)
        bags = shown
    rows = []
    for b in bags:
        first = True
        for r in b.replicas or [None]:
            head = [b.bag_id, b.files, format_size(b.bytes)] if first else ["", "", ""]
            first = False
            if r is None:
                rows.append(head + ["-", "-", "no copy recorded", "", "", "", ",".join(b.flags) or "-"])
                continue
            target = r.target if r.in_policy else f"{r.target} (extra)"
            audit = "-" if r.last_audit_at is None else \
                f"{r.last_audit_kind or '?'} {_when(r.last_audit_at)} {_outcome(r.last_audit_outcome)}"
            flags = ",".join(f.upper() if f in PROBLEM_FLAGS else f for f in r.flags) or "-"
            rows.append(head + [target, r.site or "?", r.state, _when(r.verified_at), audit, _retention(r.retention),
                                flags])
    lines = text_table(["BAG", "FILES", "BYTES", "TARGET", "SITE", "STATE", "VERIFIED", "LAST AUDIT", "RETENTION",
                        "FLAGS"], rows,
                  right={1, 2})
    if hidden:
        lines.append(f"({hidden} more bag(s), all well; narrow with --collection or --bag, or use --json)")
    return lines


def coverage_lines(cov) -> List[str]:
    """Per target: the share of bytes (and files) held that a deep check re-read in the last 90 and
    365 days, with the cadence's target share beside it (catalog.coverage)."""
    from policies.units import format_size

    def cell(w) -> str:
        if w.bytes_pct is None:
            return "-"
        expected = "" if w.expected_pct is None else f" (target {w.expected_pct:g} %)"
        return f"{w.bytes_pct:g} % of bytes, {w.files_pct:g} % of files{expected}"

    rows = [[t.target, t.tier, t.held_copies, format_size(t.held_bytes), cell(t.windows[90]), cell(t.windows[365]),
             t.cadence] for t in cov.targets]
    if len(cov.targets) > 1:
        t = cov.total
        rows.append(["all", "", t.held_copies, format_size(t.held_bytes), cell(t.windows[90]), cell(t.windows[365]),
                     ""])
    return (["Coverage: held copies re-read in full by a deep check (quick checks do not count):"]
            + text_table(["TARGET", "TIER", "COPIES", "BYTES", "LAST 90 DAYS", "LAST 365 DAYS", "CADENCE"], rows,
                         right={2, 3}))


def _retention(retention: Optional[Dict[str, Any]]) -> str:
    if not retention or retention["mode"] == "none":
        return "-"
    if not retention["locked"]:
        return "not locked"
    return f"{retention['mode']} to {retention['until_at_least']:%Y-%m-%d}+"


def _states(states) -> str:
    return ", ".join(f"{n} {s}" for s, n in states.items()) or "-"


def _attention(totals) -> str:
    parts = []
    if totals.problems:
        parts.append(f"{totals.problems} PROBLEM(S)")
    if totals.warnings:
        parts.append(f"{totals.warnings} warning(s)")
    return ", ".join(parts) or "-"


def _outcome(outcome: Optional[str]) -> str:
    return {"success": "ok", "failure": "FAILED", None: ""}.get(outcome, outcome or "")


def _when(value: Optional[_dt.datetime], minutes: bool = False) -> str:
    if value is None:
        return "never"
    value = value.astimezone(_dt.timezone.utc)
    return value.strftime("%Y-%m-%d %H:%M UTC") if minutes else value.strftime("%Y-%m-%d")


def text_width(text: str) -> int:
    """Terminal columns: East Asian wide characters (site or collection titles in Chinese) take two."""
    return sum(2 if unicodedata.east_asian_width(ch) in ("W", "F") else 0 if unicodedata.combining(ch) else 1
               for ch in text)


def text_table(headers: Sequence[str], rows: Sequence[Sequence[object]], right=frozenset()) -> List[str]:
    """Aligned columns, two spaces apart; numbers in `right` columns right-aligned."""
    cells = [[str(h) for h in headers]] + [["" if v is None else str(v) for v in row] for row in rows]
    widths = [max(text_width(row[i]) for row in cells) for i in range(len(headers))]
    out = []
    for row in cells:
        parts = []
        for i, value in enumerate(row):
            pad = " " * (widths[i] - text_width(value))
            parts.append(pad + value if i in right else value + pad)
        out.append("  ".join(parts).rstrip())
    return out
