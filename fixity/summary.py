"""One summary per audit run: a screen of text for people, one JSON file for monitoring.

No per-file alerts: every finding is in the ledger (events) and the bag results; the summary
counts outcomes, names what was repaired and what remains (a few lines each, the rest in the
JSON), what could not be audited and what is still overdue. The JSON is written atomically
to `<staging>/.audit/summaries/<run id>.json` and copied to `latest.json` there, so a
monitoring check can read one fixed path (`exit_code`, `counts`, `remaining`, `finished_at`).

Every run also reports the archive's *open findings* (`catalog.findings`): all outstanding
damage and doubt in the copies' current catalog records within the run's --library /
--collection / --bag filter, whatever this run selected. A copy an earlier run left damaged
(no good copy, or --no-repair) is not due again for a while, but the next `audit --due` still
lists it and exits 1: monitoring reading `latest.json` stays red until a later check resolves it.

Exit code: 0 when every copy checked is intact or was repaired and re-verified and no finding
is open; 1 when damage remains (including a file with no good copy, a tag file in doubt, a
catalog that disagrees with the copies, a copy disputed), any copy in the filter is damaged,
missing, failed, disputed or its last audit inconclusive (open findings), a copy could not be
audited (inconclusive, target gone from the config, unknown policy) or a bag's audit failed
with an error. Overdue copies left for another day
by the byte budget are a schedule matter, reported but not an error; so are bags another
worker (another machine on the same luigid) was still auditing when this run ended.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from catalog.findings import OpenFinding
from fixity.due import Selection
from fixity.repair import FAILURE, INCONCLUSIVE, REPAIRED, SKIPPED, SUCCESS, BagAudit

OUTCOMES = (SUCCESS, REPAIRED, FAILURE, INCONCLUSIVE, SKIPPED)
LIST_LIMIT = 1000     # entries per list in the JSON (the rest counted)
SCREEN_LINES = 5      # entries per section on screen
KEEP_DAYS = 90        # summary files older than this are removed by later runs


_WHERE = re.compile(r"moved aside to (.+?)(?: \(| by an earlier run|;|\Z)")


def repair_text(r: Dict[str, Any]) -> str:
    """What one successful repair did, in words that match it: a file system never deletes (the
    extra file or odd object is moved aside, and the screen says where it is kept), an object
    store deletes only after recording the object's size and sha256 in the ledger."""
    action, detail = r.get("action"), r.get("detail") or ""
    if r.get("source"):
        return f"from {r['source']}"
    if "already gone" in detail:
        return "(already gone)"
    if action == "move-aside":
        m = _WHERE.search(detail)
        return f"(moved aside, kept at {m.group(1)})" if m else "(moved aside, nothing deleted)"
    if action == "delete":
        return "(deleted, size and sha256 recorded first)"
    return f"({action})" if action else ""


def new_run_id(now: Optional[_dt.datetime] = None) -> str:
    now = now or _dt.datetime.now(_dt.timezone.utc)
    return now.astimezone(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:8]


def summaries_dir(config) -> Path:
    return Path(config.staging) / ".audit" / "summaries"


@dataclass
class AuditSummary:
    run_id: str
    started_at: _dt.datetime
    finished_at: _dt.datetime
    mode: str
    kind: Optional[str]
    repair: bool
    filters: Dict[str, Optional[str]]
    selection: Selection
    bags: List[BagAudit] = field(default_factory=list)
    errors: List[Dict[str, Any]] = field(default_factory=list)       # {"bag", "message", "problems"}
    unfinished: List[str] = field(default_factory=list)              # bags another worker still had
    overdue_after: Dict[str, int] = field(default_factory=dict)      # {"deep": n, "quick": n}
    ledger_head: Optional[Dict[str, Any]] = None
    summary_path: Optional[str] = None
    open_findings: List[OpenFinding] = field(default_factory=list)  # all outstanding, after this run

    # ---------------------------------------------------------------- derived
    def audited(self):
        for bag in self.bags:
            for r in bag.replicas:
                if r.audited or r.outcome == SKIPPED:
                    yield bag, r

    @property
    def counts(self) -> Dict[str, int]:
        counts = {o: 0 for o in OUTCOMES}
        for _, r in self.audited():
            counts[r.outcome] += 1
        counts["error"] = len(self.errors)
        counts["not_audited"] = sum(1 for n in self.selection.not_audited if n.get("blocking", True))
        return counts

    def _remaining(self) -> List[Dict[str, Any]]:
        out = []
        for bag in self.bags:
            for r in bag.replicas:
                # Why a repair did not take (the disk is full, no good copy...): said with the damage it left.
                failed = {a.path: a.detail for a in r.repairs if a.outcome != "success"}
                for f in r.remaining:
                    entry = {"bag": bag.bag_id, "target": r.target, "kind": f.kind, "path": f.path,
                             "detail": f.detail, "audited": r.audited}
                    if f.path in failed:
                        entry["repair"] = failed[f.path]
                    out.append(entry)
            for f in bag.bag_findings:
                if f.damage:
                    out.append({"bag": bag.bag_id, "target": None, "kind": f.kind, "path": f.path, "detail": f.detail,
                                "audited": True})
        return out

    def _repaired(self) -> List[Dict[str, Any]]:
        return [{"bag": bag.bag_id, "target": a.target, "path": a.path, "action": a.action, "source": a.source,
                 "detail": a.detail}
                for bag in self.bags for r in bag.replicas for a in r.repairs if a.outcome == "success"]

    def _inconclusive(self) -> List[Dict[str, Any]]:
        out = []
        for bag, r in self.audited():
            if r.outcome == INCONCLUSIVE:
                reasons = [f for f in r.findings if f.inconclusive]
                out.append({"bag": bag.bag_id, "target": r.target, "count": len(reasons),
                            "detail": str(reasons[0]) if reasons else ""})
        return out

    @property
    def exit_code(self) -> int:
        c = self.counts
        if c[FAILURE] or c[INCONCLUSIVE] or c["error"] or c["not_audited"] or self._remaining() \
                or self.open_findings:
            return 1
        return 0

    @property
    def files_checked(self) -> int:
        return sum(r.files_checked for _, r in self.audited())

    @property
    def bytes_checked(self) -> int:
        return sum(r.bytes_checked for _, r in self.audited())

    # ---------------------------------------------------------------- output
    def to_dict(self) -> Dict[str, Any]:
        seconds = max(1e-9, (self.finished_at - self.started_at).total_seconds())
        remaining, repaired = self._remaining(), self._repaired()
        replicas = []
        for bag, r in self.audited():
            replicas.append({"bag": bag.bag_id, "target": r.target, "site": r.site, "kind": r.kind,
                             "outcome": r.outcome, "state": r.state_after, "files": r.files_checked,
                             "bytes": r.bytes_checked, "findings": len(r.findings) + r.not_listed,
                             "repairs": len(r.repairs), "remaining": len(r.remaining), "note": r.note})
        return {
            "run_id": self.run_id,
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "seconds": round(seconds, 3),
            "mode": self.mode, "kind": self.kind, "repair": self.repair, "filters": self.filters,
            "ok": self.exit_code == 0, "exit_code": self.exit_code,
            "counts": self.counts,
            "bags": len(self.bags),
            "files_checked": self.files_checked, "bytes_checked": self.bytes_checked,
            "bytes_per_second": int(self.bytes_checked / seconds),
            "replicas": replicas[:LIST_LIMIT], "replicas_not_listed": max(0, len(replicas) - LIST_LIMIT),
            "repaired": repaired[:LIST_LIMIT], "repaired_total": len(repaired),
            "remaining": remaining[:LIST_LIMIT], "remaining_total": len(remaining),
            "inconclusive": self._inconclusive()[:LIST_LIMIT],
            "open_findings": [f.to_dict() for f in self.open_findings[:LIST_LIMIT]],
            "open_findings_total": len(self.open_findings),
            "open_copies": len({(f.bag, f.target) for f in self.open_findings}),
            "errors": self.errors[:LIST_LIMIT],
            "unfinished": self.unfinished[:LIST_LIMIT],
            "not_audited": self.selection.not_audited[:LIST_LIMIT],
            "deferred": [c.to_dict() for c in self.selection.deferred[:LIST_LIMIT]],
            "deferred_total": len(self.selection.deferred),
            "budgets": self.selection.budgets,
            "overdue_after": self.overdue_after,
            "ledger_head": self.ledger_head,
            "summary_file": self.summary_path,
        }

    def text(self) -> str:
        c = self.counts
        seconds = max(1e-9, (self.finished_at - self.started_at).total_seconds())
        chosen = self.selection.chosen
        deep = sum(1 for x in chosen if x.kind == "deep")
        head = (f"Audit {self.run_id} ({self.mode}{', ' + self.kind if self.kind else ''}, "
                f"repair {'on' if self.repair else 'off'}): {len(chosen)} cop{'y' if len(chosen) == 1 else 'ies'} "
                f"of {len(self.bags) or len({x.bag_id for x in chosen})} bag(s) in {seconds:.1f} s")
        lines = [head]
        if chosen:
            lines.append(f"  {deep} deep, {len(chosen) - deep} quick; {self.files_checked:,} files, "
                         f"{_size(self.bytes_checked)} re-read ({_size(self.bytes_checked / seconds)}/s)")
        lines.append("  " + " · ".join(f"{k} {c[k]}" for k in (SUCCESS, REPAIRED, FAILURE, INCONCLUSIVE, SKIPPED,
                                                                "error") if c[k] or k in (SUCCESS, FAILURE)))
        repaired = self._repaired()
        if repaired:
            lines.append(f"Repaired {len(repaired)} file(s) from good copies (each re-verified):")
            lines += [f"  {r['bag']} {r['target']}: {r['path']} {repair_text(r)}" for r in repaired[:SCREEN_LINES]]
            lines += _more(len(repaired))
        remaining = sorted(self._remaining(), key=lambda r: r["target"] is not None)  # judgements of a bag first
        if remaining:
            lines.append(f"DAMAGE REMAINS ({len(remaining)}):")
            lines += [(f"  {r['bag']} {r['target'] or '(all copies)'}: {r['kind']} {r['path'] or ''} {r['detail']}"[:200]
                       + (f"; {r['repair']}"[:200] if r.get("repair") else ""))
                      for r in remaining[:SCREEN_LINES]]
            lines += _more(len(remaining))
        inconclusive = self._inconclusive()
        if inconclusive:
            lines.append(f"Inconclusive, not damage, audited again next run ({len(inconclusive)}):")
            lines += [f"  {i['bag']} {i['target']}: {i['detail']}"[:200] for i in inconclusive[:SCREEN_LINES]]
            lines += _more(len(inconclusive))
        seen = {(r["bag"], r["target"]) for r in remaining} | {(i["bag"], i["target"]) for i in inconclusive}
        older = [f for f in self.open_findings if (f.bag, f.target) not in seen]
        if older:
            copies = len({(f.bag, f.target) for f in older})
            lines.append(f"STILL OPEN from earlier audits ({len(older)} finding(s) on {copies} cop"
                         f"{'y' if copies == 1 else 'ies'}; `strongroom status` shows them):")
            lines += [f"  {f.line()}"[:200] for f in older[:SCREEN_LINES]]
            lines += _more(len(older))
        for e in self.errors[:SCREEN_LINES]:
            lines.append(f"ERROR {e['bag']}: {e['message']}"[:200])
        lines += _more(len(self.errors))
        if self.unfinished:
            lines.append(f"Still being audited by another worker: {', '.join(self.unfinished[:SCREEN_LINES])}")
        blocking = [n for n in self.selection.not_audited if n.get("blocking", True)]
        if blocking:
            lines.append(f"Cannot be audited ({len(blocking)}):")
            lines += [f"  {n['bag_id']} {n['target']}: {n['reason']}"[:200] for n in blocking[:SCREEN_LINES]]
            lines += _more(len(blocking))
        waiting = len(self.selection.not_audited) - len(blocking)
        if waiting:
            lines.append(f"{waiting} cop{'y' if waiting == 1 else 'ies'} not verified by their deposit yet "
                         "(left alone)")
        if self.selection.deferred:
            lines.append(f"{len(self.selection.deferred)} deep audit(s) wait for tomorrow's byte budget")
        if self.overdue_after:
            lines.append(f"Overdue now: {self.overdue_after.get('deep', 0)} deep, {self.overdue_after.get('quick', 0)} "
                         "quick")
        if not chosen and not self.selection.not_audited:
            nothing = "Nothing is due." if self.mode == "due" else "Nothing to audit."
            lines.append(nothing if not self.open_findings else
                         f"{nothing[:-1]} now, but damage found earlier is still open (exit 1).")
        if self.ledger_head:
            lines.append(f"Ledger head: seg-{self.ledger_head['seq']:012d} sha256:{self.ledger_head['hash']}")
        if self.summary_path:
            lines.append(f"Summary: {self.summary_path}")
        return "\n".join(lines)

    def write(self, directory: Path) -> Path:
        """<directory>/<run id>.json and latest.json, each written atomically; old ones pruned."""
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{self.run_id}.json"
        self.summary_path = str(path)
        data = json.dumps(self.to_dict(), ensure_ascii=False, indent=2, default=str)
        for target in (path, directory / "latest.json"):
            tmp = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex}")
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        _prune(directory)
        return path


def _prune(directory: Path) -> None:
    cutoff = time.time() - KEEP_DAYS * 86400
    for p in directory.glob("*.json"):
        try:
            if p.name != "latest.json" and p.stat().st_mtime < cutoff:
                p.unlink()
        except OSError:
            pass


def _more(total: int) -> List[str]:
    return [f"  ... and {total - SCREEN_LINES} more (see the summary file)"] if total > SCREEN_LINES else []


def _iso(value: _dt.datetime) -> str:
    return value.astimezone(_dt.timezone.utc).isoformat().replace("+00:00", "Z")


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


__all__ = ["AuditSummary", "new_run_id", "summaries_dir", "OUTCOMES"]
