"""The certification evidence pack: ISO 16363 metrics and CoreTrustSeal requirements mapped to
what the catalog and the ledger show, with the figures and event ids behind each claim, and
plainly what the records cannot show (`strongroom report evidence`).

Why it is built this way:

* **Its figures are the other reports' figures.** Nothing is counted twice in two ways: the
  fixity summary, damage and coverage come from `reports.fixity.build_fixity`, holdings and
  copies from `reports.preservation.build_preservation` (both through `reports.write.build_report`,
  so a library's pack counts the library's ledger events as its reports do), the last drill per
  target from `catalog.drills.last_drills`, the anchoring from `catalog.anchors.verify_against_storage`.
  An auditor who opens the fixity report next to the pack finds the same numbers.
* **A claim is evidence, not a verdict.** Each requirement gets a status of what the records
  show (`evidenced`, `gaps`, `not_evidenced`), the figures, the ids of the ledger events behind
  them (the newest first, capped: the fixity report's JSON lists every one), and a sentence on
  what no catalog can show (agreements, plans, people's reviews).
* **One file, two languages.** HTML through the same Jinja environment, frame and CSP as every
  report (`reports.render.html`, template reports/templates/evidence.html), JSON with stable
  English keys and the texts in the chosen language (reports.i18n_evidence, part of reports.i18n).
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import pyarrow.compute as pc

from catalog.anchors import AnchorVerifyReport, open_for_records, verify_against_storage
from catalog.catalog import Catalog
from catalog.drills import TargetDrill, last_drills
from catalog.scope import LibraryScope
from catalog.verifier_copy import FOLDER as VERIFIER_FOLDER
from policies.units import format_duration
from reports.common import Scope, iso, plain, write_atomic
from reports.i18n import Translator
from reports.i18n_evidence import REQUIREMENTS
from reports.preservation import Ledger
from reports.status import GOOD_STATES
from strongroom.errors import StrongroomError

#: Event ids listed per claim in the JSON form (HTML shows fewer); the total is always given.
EVENT_IDS_JSON = 100
EVENT_IDS_HTML = 3
STATUSES = ("evidenced", "gaps", "not_evidenced")


@dataclass
class Claim:
    """One requirement: what the records show about it, and the events behind that."""

    framework: str                      # "iso16363" | "coretrustseal"
    number: str                         # "4.4.1.2", "R14"
    status: str                         # one of STATUSES
    figures: Dict[str, Any]             # the parameters of its finding sentence (plain values)
    events: List[str] = field(default_factory=list)   # event ids, newest first
    events_total: int = 0

    def texts(self, tr: Translator) -> Dict[str, str]:
        shown = {k: _shown(v, tr) for k, v in self.figures.items()}
        return {"requirement": tr.t(f"req.{self.number}"), "finding": tr.t(f"find.{self.number}", **shown),
                "cannot": tr.t(f"cannot.{self.number}"), "status_text": tr.t(f"ev.status.{self.status}"),
                "framework_text": tr.t(f"framework.{self.framework}")}


@dataclass
class TargetEvidence:
    """Per storage target: its last drill and its ledger checkpoints."""

    target: str
    site: Optional[str]
    drill: Optional[TargetDrill]
    checkpoints: int
    anchored_seq: int
    agrees: bool
    verifiers: int
    note: str = ""

    @property
    def drill_row(self) -> tuple:
        """(target, site, last drill or None): a row of reports/templates/drills.html."""
        return self.target, self.site, self.drill


@dataclass
class EvidenceReport:
    kind: str
    catalog: str
    generated_at: _dt.datetime
    scope: Scope
    ledger: Ledger
    claims: List[Claim]
    targets: List[TargetEvidence]
    fixity_summary: Dict[str, int]
    totals: Dict[str, int]
    coverage: Any                      # catalog.coverage.Coverage (the fixity report's)
    anchors: AnchorVerifyReport

    @property
    def events_shown(self) -> int:
        """Event ids shown per claim in the HTML form (the JSON form lists EVENT_IDS_JSON)."""
        return EVENT_IDS_HTML

    def status_counts(self) -> Dict[str, int]:
        return {s: sum(1 for c in self.claims if c.status == s) for s in STATUSES}

    def to_dict(self, tr: Translator) -> Dict[str, Any]:
        return {
            "report": self.kind, "lang": tr.lang, "title": tr.t("title.evidence"), "catalog": self.catalog,
            "generated_at": iso(self.generated_at), "scope": self.scope.to_dict(), "ledger": plain(self.ledger),
            "status_counts": self.status_counts(),
            "claims": [{"framework": c.framework, "number": c.number, "status": c.status,
                        "figures": {k: _plain_figure(v) for k, v in c.figures.items()},
                        "events": c.events[:EVENT_IDS_JSON],
                        "events_total": c.events_total, **c.texts(tr)} for c in self.claims],
            "targets": [{"target": t.target, "site": t.site, "checkpoints": t.checkpoints,
                         "anchored_seq": t.anchored_seq, "agrees_with_catalog": t.agrees, "verifiers": t.verifiers,
                         "note": t.note, "last_drill": t.drill.to_dict() if t.drill else None} for t in self.targets],
            "fixity_summary": dict(self.fixity_summary), "totals": dict(self.totals),
            "coverage": None if self.coverage is None else self.coverage.to_dict(),
            "anchors": self.anchors.to_dict(),
        }


# --------------------------------------------------------------------------------------------
# Building


def build_evidence(config, catalog: Catalog, scope: Scope) -> EvidenceReport:
    """The pack for `scope` (its library, if any; every period: evidence is cumulative)."""
    from reports.write import build_report

    fix = build_report(config, "fixity", scope, catalog)
    pres = build_report(config, "preservation", scope, catalog)
    library = scope.library
    drills = last_drills(catalog, library)
    anchors = verify_against_storage(config, catalog.store)
    targets = _targets(config, drills, anchors)
    facts = _Facts(config, catalog, LibraryScope(library), fix, pres, targets)
    claims = [facts.claim(framework, number) for framework, number in REQUIREMENTS]
    return EvidenceReport(kind="evidence", catalog=catalog.location, generated_at=scope.now, scope=scope,
                          ledger=pres.ledger, claims=claims, targets=targets, fixity_summary=dict(fix.summary),
                          totals=dict(pres.totals), coverage=fix.coverage, anchors=anchors)


def _targets(config, drills: Dict[str, TargetDrill], anchors: AnchorVerifyReport) -> List[TargetEvidence]:
    checks = {t.target: t for t in anchors.targets}
    out = []
    for name in sorted(config.storage):
        target = config.storage[name]
        check = checks.get(name)
        out.append(TargetEvidence(target=name, site=getattr(target, "site", None), drill=drills.get(name),
                                  checkpoints=check.checkpoints if check else 0,
                                  anchored_seq=check.anchored_seq if check else -1,
                                  agrees=bool(check) and not check.problems, verifiers=_verifiers(config, target),
                                  note=(check.note if check else "") or "; ".join(check.problems[:3] if check else [])))
    return out


def _verifiers(config, target) -> int:
    try:
        return sum(1 for _ in open_for_records(config, target).list_records(VERIFIER_FOLDER))
    except (StrongroomError, OSError):
        return 0


class _Facts:
    """The figures of every claim, from the reports built once."""

    def __init__(self, config, catalog: Catalog, scope: LibraryScope, fix, pres, targets: List[TargetEvidence]):
        self.config, self.catalog, self.scope, self.fix, self.pres = config, catalog, scope, fix, pres
        self.targets = targets
        self.s = fix.summary
        self.t = pres.totals
        bags = catalog.bags(scope.code)
        self.policies = sorted({p for p in bags.column("policy").to_pylist()}) if bags.num_rows else []
        self.bag_policy = dict(zip(bags.column("bag_id").to_pylist(), bags.column("policy").to_pylist()))
        # locations, not site labels: targets on one file system, bucket or site are one place (policies.locations)
        self.sites = sorted({config.location_of(r["target"]) for r in pres.copies_by_site})
        total = fix.coverage.total if fix.coverage is not None else None
        self.cov = {d: (total.windows[d] if total is not None else None) for d in (90, 365)}
        self.n_targets = len(targets)
        self.drilled = sum(1 for t in targets if t.drill is not None)
        self.drill_ok = sum(1 for t in targets if t.drill is not None and t.drill.outcome == "success")
        self.anchored = sum(1 for t in targets if t.checkpoints > 0)

    # ------------------------------------------------------------------ helpers
    def _events(self, **query) -> List[str]:
        table = self.scope.events(self.catalog, **query)
        return list(reversed(table.column("event_id").to_pylist())) if table.num_rows else []

    def _checks(self) -> List[str]:
        ev = self.fix.events
        checks = ev.filter(pc.equal(ev.column("type"), "fixity check"))
        return list(reversed(checks.column("event_id").to_pylist()))

    def _damage_events(self) -> List[str]:
        ids: List[str] = []
        for d in reversed(self.fix.damage):
            ids.extend(i for i in (d.get("repair_event_id"), d.get("event_id")) if i)
        return ids

    def _drill_events(self) -> List[str]:
        return [e for t in self.targets if t.drill for e in reversed(t.drill.event_ids)]

    def _pct(self, days: int, what: str = "bytes_pct") -> Optional[float]:
        w = self.cov.get(days)
        return getattr(w, what) if w is not None else None

    def _cov_met(self) -> bool:
        have, want = self._pct(365), self._pct(365, "expected_pct")
        return have is not None and (want is None or have >= want)

    def _algorithms(self) -> str:
        algs: List[str] = []
        for name in self.policies:
            policy = self.config.policies.get(name)
            algs.extend(a for a in (policy.checksums if policy else ()) if a not in algs)
        return ", ".join(algs) or "—"

    def _short(self) -> int:
        good: Dict[str, int] = {}
        for r in self.pres.replicas:
            if r["state"] in GOOD_STATES and r.get("in_policy", True):
                good[r["bag_id"]] = good.get(r["bag_id"], 0) + 1
        short = 0
        for bag, name in self.bag_policy.items():
            policy = self.config.policies.get(name)
            if policy is not None and good.get(bag, 0) < len(policy.replicas):
                short += 1
        return short

    def _restores(self) -> Dict[str, Any]:
        table = self.scope.events(self.catalog, type="dissemination")
        failed = table.filter(pc.equal(table.column("outcome"), "failure")) if table.num_rows else table
        requests = self.scope.events(self.catalog, type="request execution")
        req_failed = requests.filter(pc.equal(requests.column("outcome"), "failure")) if requests.num_rows else requests
        ids = list(reversed(failed.column("event_id").to_pylist())) + \
            list(reversed(req_failed.column("event_id").to_pylist()))
        return {"restores": table.num_rows, "restore_failed": failed.num_rows, "request_failed": req_failed.num_rows,
                "ids": ids}

    # ------------------------------------------------------------------ claims
    def claim(self, framework: str, number: str) -> Claim:
        status, figures, events = getattr(self, "c_" + number.replace(".", "_"))()
        events = list(dict.fromkeys(events))     # a drill's event is a fixity check too: listed once
        return Claim(framework, number, status, figures, events[:EVENT_IDS_JSON], len(events))

    def c_3_3_5(self):
        s = self.s
        cadences = "; ".join(
            f"{n}: deep {format_duration(self.config.policies[n].fixity.deep_every)}, "
            f"quick {format_duration(self.config.policies[n].fixity.quick_every)}"
            for n in self.policies if n in self.config.policies) or "—"
        figures = {"cadences": cadences, "checks": s["fixity_checks"], "passed": s["passed"], "failed": s["failed"],
                   "inconclusive": s["inconclusive"], "cov90": _Pct(self._pct(90)),
                   "exp90": _Pct(self._pct(90, "expected_pct")), "cov365": _Pct(self._pct(365))}
        status = "not_evidenced" if not s["fixity_checks"] else "evidenced" if self._cov_met() else "gaps"
        return status, figures, self._checks()

    def c_4_1_6(self):
        t = self.t
        figures = {"bags": t["bags"], "files": t["files"], "size": _Size(t["bytes"]), "copies": t["copies"],
                   "targets": len({r["target"] for r in self.pres.copies_by_site}), "verified": t["verified_copies"]}
        status = "not_evidenced" if not t["bags"] else "evidenced" if t["verified_copies"] == t["copies"] else "gaps"
        return status, figures, self._events(type="ingestion")

    def c_4_2_9(self):
        a = self.pres.ledger
        verifiers = sum(1 for t in self.targets if t.verifiers)
        agree = all(t.agrees for t in self.targets)
        figures = {"head": a.head_seq if a.head_seq is not None else -1, "anchored": self.anchored,
                   "targets": self.n_targets, "checkpoints": sum(t.checkpoints for t in self.targets),
                   "agree": agree, "verifiers": verifiers}
        full = agree and self.anchored == self.n_targets and verifiers == self.n_targets and self.n_targets
        status = "evidenced" if full else "gaps" if self.anchored else "not_evidenced"
        return status, figures, []

    def c_4_4_1_2(self):
        s = self.s
        figures = {"checks": s["fixity_checks"], "audited": s["copies_audited"], "copies": s["copies"],
                   "not_audited": s["copies_not_audited"], "drilled": self.drilled, "targets": self.n_targets,
                   "drill_failed": self.drilled - self.drill_ok}
        full = s["fixity_checks"] and not s["copies_not_audited"] and self.drill_ok == self.n_targets
        status = "evidenced" if full else "gaps" if s["fixity_checks"] else "not_evidenced"
        return status, figures, self._drill_events() + self._checks()

    def c_4_4_2(self):
        led = self.pres.ledger
        scoped = self.scope.events(self.catalog)
        with_operator = int(pc.sum(pc.is_valid(scoped.column("operator"))).as_py() or 0) if scoped.num_rows else 0
        figures = {"events": led.events, "segments": led.segments, "intact": _Word("ev.intact" if led.ok else "ev.altered"),
                   "head_hash": led.head_hash or "—", "with_operator": with_operator}
        status = ("evidenced" if self.fix.ledger.ok and all(t.agrees for t in self.targets) else
                  "gaps" if led.ok else "not_evidenced")
        return status, figures, []

    def c_4_6_1_1(self):
        r = self._restores()
        figures = {k: r[k] for k in ("restores", "restore_failed", "request_failed")}
        return "gaps", figures, r["ids"]

    def c_5_1_1_3(self):
        s = self.s
        figures = {"algorithms": self._algorithms(), "damage": s["damage_found"], "cov365": _Pct(self._pct(365)),
                   "drilled": self.drilled}
        full = s["fixity_checks"] and self._cov_met() and self.drilled == self.n_targets
        status = "evidenced" if full else "gaps" if s["fixity_checks"] or self.drilled else "not_evidenced"
        return status, figures, self._damage_events() + self._drill_events()

    def c_5_1_1_3_1(self):
        s = self.s
        figures = {"damage": s["damage_found"], "repaired": s["damage_repaired"], "open": s["open_findings"],
                   "repairs": s["repairs"]}
        status = "evidenced" if not s["open_findings"] and s["damage_repaired"] == s["damage_found"] else "gaps"
        return status, figures, self._damage_events()

    def c_5_1_2(self):
        short = self._short()
        distinct = ", ".join(n for n in self.policies if getattr(self.config.policies.get(n), "distinct_sites", False))
        figures = {"copies": self.t["copies"], "sites": len(self.sites),
                   "targets": len({r["target"] for r in self.pres.copies_by_site}), "short": short,
                   "distinct": distinct or "—"}
        status = ("not_evidenced" if not self.t["copies"] else
                  "evidenced" if not short and len(self.sites) >= 2 else "gaps")
        return status, figures, self._events(type="replication")

    def c_5_1_2_1(self):
        t = self.t
        figures = {"verified": t["verified_copies"], "copies": t["copies"],
                   "problem": t["copies"] - t["verified_copies"], "repairs": self.s["repairs"]}
        status = "not_evidenced" if not t["copies"] else "evidenced" if t["verified_copies"] == t["copies"] else "gaps"
        return status, figures, self._damage_events()

    def c_5_2_4(self):
        figures = {"ok": self.drill_ok, "targets": self.n_targets, "never": self.n_targets - self.drilled,
                   "sites": len(self.sites), "anchored": self.anchored}
        full = self.drill_ok == self.n_targets and len(self.sites) >= 2 and self.anchored == self.n_targets
        status = "evidenced" if full and self.n_targets else "gaps" if self.drilled else "not_evidenced"
        return status, figures, self._drill_events()

    def c_R07(self):
        led = self.pres.ledger
        figures = {"intact": _Word("ev.intact" if led.ok else "ev.altered"), "anchored": self.anchored,
                   "algorithms": self._algorithms()}
        full = led.ok and self.anchored == self.n_targets and all(t.agrees for t in self.targets)
        status = "evidenced" if full else "gaps" if led.ok else "not_evidenced"
        return status, figures, []

    def c_R14(self):
        parts = [self.c_5_1_2()[0], self.c_4_4_1_2()[0], self.c_5_2_4()[0]]
        status = next((s for s in reversed(STATUSES) if s in parts), "evidenced")
        figures = {"copies": self.t["copies"], "sites": len(self.sites), "checks": self.s["fixity_checks"],
                   "cov365": _Pct(self._pct(365)), "ok": self.drill_ok, "targets": self.n_targets}
        return status, figures, self._drill_events() + self._checks()


# --------------------------------------------------------------------------------------------
# Values shown in the sentences (plain in JSON, formatted in the page's language in the texts)


@dataclass(frozen=True)
class _Pct:
    value: Optional[float]


@dataclass(frozen=True)
class _Size:
    value: int


@dataclass(frozen=True)
class _Word:
    key: str


def _shown(v: Any, tr: Translator) -> Any:
    if isinstance(v, _Pct):
        return "—" if v.value is None else f"{v.value:.1f}%"
    if isinstance(v, _Size):
        return tr.size(v.value)
    if isinstance(v, _Word):
        return tr.t(v.key)
    return v


def _plain_figure(v: Any) -> Any:
    if isinstance(v, (_Pct, _Size)):
        return v.value
    if isinstance(v, _Word):
        return v.key.rsplit(".", 1)[-1]
    return plain(v)


# --------------------------------------------------------------------------------------------
# Writing


def write_evidence(report: EvidenceReport, fmt: str, lang: str, path: Path) -> Path:
    """The pack as one self-contained HTML page or one JSON document, written atomically."""
    from reports.render import html

    tr = Translator(lang)
    if fmt == "html":
        text = html(report, tr)
        return write_atomic(path, lambda fh: fh.write(text))
    if fmt == "json":
        data = report.to_dict(tr)
        return write_atomic(path, lambda fh: (json.dump(data, fh, ensure_ascii=False, indent=1, default=str),
                                              fh.write("\n")))
    raise ValueError(f"unknown evidence format {fmt!r}")


__all__ = ["EvidenceReport", "Claim", "TargetEvidence", "build_evidence", "write_evidence", "STATUSES"]
