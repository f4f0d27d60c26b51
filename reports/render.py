"""The four forms of every report: HTML for people, CSV and JSON for programs, PREMIS 3 XML.

* HTML is one self-contained file: CSS inline (with a print stylesheet), charts as inline SVG,
  no script, and a Content-Security-Policy that forbids loading anything, so the page never
  reaches the network when it is opened. Jinja2 templates (reports/templates) with
  autoescaping: every value from the catalog is escaped by the library, never by hand.
* JSON is the report's data with stable English keys; NDSA results carry their rule and
  finding texts in the report's language as well as the structured parameters.
* CSV: the fixity report has one row per event; the format report one row per format, overall
  (`scope` = all) and per collection (`scope` = collection); the preservation report, whose
  sections differ in shape, is written "long": section, library, collection, site, target,
  key, item, value; one figure per row, each figure the same as in the JSON form. Open findings
  are section `open_finding`, keyed `bag/path` (the bag alone for a whole copy), one row per
  field (bag, path, kind, state, since, checked_at, no_good_copy, detail), their count the
  `totals` row `open_findings`; `location` and `collection_locations` rows give the locations.
* PREMIS 3 (ingest.premis, validated against the schema in tests): an intellectualEntity for
  the archive's catalog and one per bag in scope; the events of the period (preservation: every
  event; fixity: audit and repair events, plus the ledger verification the report itself made);
  their agents. The format report's PREMIS lists, as file objects with format and fixity, the
  files that need attention (unidentified or in an at-risk format), streamed from the catalog.

Every form is written to a temp file beside the output and renamed into place (strongroom.durable,
and ingest.premis.write_premis for PREMIS).
"""

from __future__ import annotations

import csv
import json
import re
import uuid
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, TextIO

import jinja2
import pyarrow as pa
import pyarrow.compute as pc
from markupsafe import Markup, escape

from reports import charts, ndsa
from reports.common import Scope, check_output, iso, write_atomic
from reports.i18n import Translator
from strongroom import __version__

HTML_ROW_LIMIT = 200
HTML_EVENT_LIMIT = 500
TOP_FORMATS = 15

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("reports", "templates"),
    autoescape=jinja2.select_autoescape(["html"], default_for_string=True),
    undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
_SEPARATORS = re.compile(r"([-_/.])")


def wrap_id(value: Any) -> Markup:
    """A bag id, path or key, escaped, with a line-break opportunity (<wbr>) after each `-`, `_`,
    `/` and `.`: a narrow table column then wraps it between its parts, never a character per
    line (the CSS keeps the cell's smallest width at its longest part: no `break-all`)."""
    if value is None:
        return Markup("")
    return Markup(_SEPARATORS.sub(r"\1<wbr>", str(escape(value))))


_ENV.filters["wrapid"] = wrap_id


# --------------------------------------------------------------------------------------------
# labels


def scope_label(scope: Scope, tr: Translator) -> str:
    if scope.library and scope.collection:
        return tr.t("scope.library_collection", library=scope.library, collection=scope.collection)
    if scope.library:
        return tr.t("scope.library", library=scope.library)
    if scope.collection:
        return tr.t("scope.collection", collection=scope.collection)
    return tr.t("scope.all")


def period_label(scope: Scope, tr: Translator) -> str:
    if scope.since and scope.until:
        return tr.t("period.between", since=tr.datetime(scope.since), until=tr.datetime(scope.until))
    if scope.since:
        return tr.t("period.since", since=tr.datetime(scope.since))
    if scope.until:
        return tr.t("period.until", until=tr.datetime(scope.until))
    return tr.t("period.all")


# --------------------------------------------------------------------------------------------
# HTML


def html(report: Any, tr: Translator) -> str:
    context: Dict[str, Any] = {
        "report": report, "tr": tr, "t": tr.t, "version": __version__, "limit": HTML_ROW_LIMIT,
        "title": tr.t(f"title.{report.kind}"), "scope_label": scope_label(report.scope, tr),
        "period_label": period_label(report.scope, tr), "charts": _charts(report, tr),
        "areas": ndsa.AREAS, "rules": ndsa.RULES,
    }
    if report.kind == "preservation":
        # The NDSA storage level beside each collection's locations: the same assessment, not a second one.
        context["storage_levels"] = {(c.library, c.collection): c.level("storage") for c in report.ndsa}
    if report.kind == "fixity":
        context["events_shown"] = report.latest_events(HTML_EVENT_LIMIT)
    if report.kind == "formats":
        grouped: Dict[tuple, List[dict]] = {}
        for row in report.by_collection:
            grouped.setdefault((row["library"], row["collection"]), []).append(row)
        context["by_collection"] = grouped
    return _ENV.get_template(f"{report.kind}.html").render(**context)


def _charts(report: Any, tr: Translator) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    if report.kind == "preservation":
        if report.collections:
            # Every collection has its own bar (the chart grows downwards): none hidden in "other".
            rows = sorted(((f"{c['library']}/{c['collection']}", c["bytes"]) for c in report.collections),
                          key=lambda r: -r[1])
            out["holdings"] = charts.barh([r[0] for r in rows], [r[1] for r in rows], tr.t("chart.holdings"),
                                          tr.t("axis.bytes"), tr, size_axis=True)
        if report.copies_by_site:
            sites = sorted({r["site"] for r in report.copies_by_site})
            states = sorted({r["state"] for r in report.copies_by_site}, key=lambda s: list(charts.STATE_COLOURS).index(s)
                            if s in charts.STATE_COLOURS else 99)
            series = {s: [sum(r["copies"] for r in report.copies_by_site if r["site"] == site and r["state"] == s)
                          for site in sites] for s in states}
            out["copies"] = charts.stacked(sites, series, charts.STATE_COLOURS, {s: tr.state(s) for s in states},
                                           tr.t("chart.copies"), tr.t("axis.copies"))
        if report.ndsa:
            out["ndsa"] = charts.levels([f"{c.library}/{c.collection}" for c in report.ndsa], ndsa.AREAS,
                                        [[c.level(a) for a in ndsa.AREAS] for c in report.ndsa],
                                        [tr.area(a) for a in ndsa.AREAS], tr.t("chart.ndsa"), tr.t("axis.level"), tr)
    elif report.kind == "fixity":
        if report.by_month:
            months = sorted({r["month"] for r in report.by_month})
            outcomes = [o for o in charts.OUTCOME_COLOURS if any(r["outcome"] == o for r in report.by_month)]
            outcomes += sorted({r["outcome"] for r in report.by_month} - set(outcomes))
            series = {o: [sum(r["events"] for r in report.by_month if r["month"] == m and r["outcome"] == o)
                          for m in months] for o in outcomes}
            out["months"] = charts.stacked(months, series, charts.OUTCOME_COLOURS, {o: tr.outcome(o) for o in outcomes},
                                           tr.t("chart.months"), tr.t("axis.checks"))
    elif report.kind == "formats":
        if report.formats:
            def label(r: dict) -> str:
                parts = [r["puid"] or tr.t("word.unidentified"), r["format_name"] or "", r["format_version"] or ""]
                return " ".join(p for p in parts if p)

            for key, axis, size in (("files", "axis.files", False), ("bytes", "axis.bytes", True)):
                rows = charts.top_with_other([(label(r), r[key]) for r in report.formats], TOP_FORMATS,
                                             tr.t("word.other"))
                out[key] = charts.barh([r[0] for r in rows], [r[1] for r in rows],
                                       tr.t(f"chart.{key}", n=TOP_FORMATS), tr.t(axis), tr, size_axis=size)
    return _Charts(out)


class _Charts(dict):
    """Missing charts (no data) render as nothing rather than failing StrictUndefined."""

    def __getattr__(self, name: str) -> Any:
        return self.get(name, "")


# --------------------------------------------------------------------------------------------
# JSON


def to_json_data(report: Any, tr: Translator, events: bool = True) -> Dict[str, Any]:
    """The JSON form as one dict (for the fixity report with `events=False`, without its rows)."""
    data = report.to_dict(events=events) if report.kind == "fixity" else report.to_dict()
    data = {"report": report.kind, "lang": tr.lang, "title": tr.t(f"title.{report.kind}"),
            "strongroom": __version__, **{k: v for k, v in data.items() if k != "kind"}}
    if report.kind == "preservation":
        data["ndsa"] = [_ndsa_dict(c, tr) for c in report.ndsa]
    return data


def _ndsa_dict(c: ndsa.CollectionAssessment, tr: Translator) -> Dict[str, Any]:
    def rule(r: ndsa.RuleResult) -> Dict[str, Any]:
        return {"level": r.level, "key": r.key, "met": r.met, "rule": tr.rule(r.key), "finding": tr.finding(r),
                "params": _jsonable(r.params)}

    return {"library": c.library, "collection": c.collection, "levels": {a.area: a.level for a in c.areas},
            "areas": [{"area": a.area, "level": a.level, "level_name": tr.level_name(a.level),
                       "evidence": [tr.finding(r) for r in a.evidence],
                       "missing": [tr.rule(r.key) for r in a.missing],
                       "rules": [rule(r) for r in a.rules],
                       "not_evidenced": [tr.t(k) for k in a.not_evidenced]} for a in c.areas]}


def _jsonable(value: Any) -> Any:
    from reports.common import plain

    return plain(value)


def write_json(report: Any, tr: Translator, fh: TextIO) -> None:
    if report.kind != "fixity":
        json.dump(to_json_data(report, tr), fh, ensure_ascii=False, indent=1, default=str)
        fh.write("\n")
        return
    # The fixity rows are streamed a chunk at a time: one JSON document, never one big list.
    head = json.dumps(to_json_data(report, tr, events=False), ensure_ascii=False, indent=1, default=str)
    fh.write(head[:-2] + ',\n "events": [')
    first = True
    for chunk in report.event_rows():
        for row in chunk:
            fh.write(("\n  " if first else ",\n  ") + json.dumps(_jsonable(row), ensure_ascii=False))
            first = False
    fh.write("\n ]\n}\n")


# --------------------------------------------------------------------------------------------
# CSV

PRESERVATION_CSV = ["section", "library", "collection", "site", "target", "key", "item", "value"]
FORMATS_CSV = ["scope", "library", "collection", "puid", "format_name", "format_version", "files", "bytes",
               "at_risk_files", "at_risk_bytes"]


def csv_rows(report: Any, tr: Translator) -> Iterator[List[Any]]:
    """The header, then the rows, as plain values (timestamps as ISO 8601 UTC)."""
    if report.kind == "fixity":
        from reports.fixity import EVENT_COLUMNS

        yield EVENT_COLUMNS
        for chunk in report.event_rows():
            for e in chunk:
                yield [_cell(e[c]) for c in EVENT_COLUMNS]
    elif report.kind == "formats":
        yield FORMATS_CSV
        for r in report.formats:
            yield ["all", "", "", *[_cell(r[c]) for c in FORMATS_CSV[3:]]]
        for r in report.by_collection:
            yield ["collection", r["library"], r["collection"], *[_cell(r[c]) for c in FORMATS_CSV[3:]]]
    else:
        yield PRESERVATION_CSV
        yield from _preservation_rows(report, tr)


DEPOSIT_ITEMS = ("state", "source", "policy", "started_at", "stage", "bags", "reason", "at", "by")
FINDING_ITEMS = ("bag", "path", "kind", "state", "since", "checked_at", "no_good_copy", "detail")


def finding_key(f: Dict[str, Any]) -> str:
    """An open finding's CSV key: bag/path, as the PREMIS form names a stored file; the bag alone
    when the finding is the copy as a whole."""
    return f"{f['bag']}/{f['path']}" if f.get("path") else f["bag"]


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if hasattr(value, "isoformat"):
        return iso(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ";".join(str(v) for v in value)
    return value


def _preservation_rows(report: Any, tr: Translator) -> Iterator[List[Any]]:
    def row(section, item, value, library="", collection="", site="", target="", key=""):
        return [section, library, collection, site, target, key, item, _cell(value)]

    for item, value in report.totals.items():
        yield row("totals", item, value)
    # Open findings: one row per field, keyed bag/path (the bag alone for a whole-copy finding),
    # so a finding's rows filter together; the count is in totals (open_findings, 0 when none).
    for f in report.open_findings:
        lc = {"library": f["library"] or "", "collection": f["collection"] or "", "site": f["site"] or "",
              "target": f["target"] or "", "key": finding_key(f)}
        for item in FINDING_ITEMS:
            yield row("open_finding", item, f[item], **lc)
    for item, value in (("ok", report.ledger.ok), ("head_seq", report.ledger.head_seq),
                        ("head_hash", report.ledger.head_hash), ("segments", report.ledger.segments),
                        ("events", report.ledger.events), ("problems", len(report.ledger.problems))):
        yield row("ledger", item, value)
    for r in report.by_type:
        for item in ("bags", "files", "bytes"):
            yield row("by_type", item, r[item], key=r["collection_type"])
    for c in report.collections:
        lc = {"library": c["library"], "collection": c["collection"]}
        for item in ("bags", "files", "bytes"):
            yield row("holdings", item, c[item], **lc)
        yield row("holdings", "policies", c["policies"], **lc)
        yield row("holdings", "collection_types", c["collection_types"], **lc)
        for state, n in c["copies"].items():
            yield row("holdings", "copies", n, key=state, **lc)
    for r in report.copies_by_site:
        yield row("copies", "copies", r["copies"], site=r["site"], target=r["target"], key=r["state"])
    for g in report.locations:
        for item in ("targets", "sites", "shared_by"):
            yield row("location", item, g[item], key=g["location"])
    for c in report.collection_locations:
        lc = {"library": c["library"], "collection": c["collection"]}
        for item in ("good_copies_min", "good_copies_max", "locations_min", "locations_max", "locations"):
            yield row("collection_locations", item, c[item], **lc)
    for d in report.deposits:
        lc = {"library": d["library"] or "", "collection": d["collection"] or "", "key": d["key"]}
        for item in DEPOSIT_ITEMS:
            yield row("deposit", item, d[item], **lc)
    for p in report.retention:
        yield row("retention", "mode", p["mode"], key=p["policy"])
        yield row("retention", "years", p["years"], key=p["policy"])
        for t in p["targets"]:
            for item in ("storage_type", "object_lock", "deep_every", "quick_every"):
                yield row("retention", item, t[item], target=t["target"], key=p["policy"])
    for a in report.audits:
        lc = {"library": a["library"], "collection": a["collection"], "target": a["target"]}
        for item in ("verified_copies", "last_deep_oldest", "last_deep_newest", "last_quick_oldest",
                     "last_quick_newest", "overdue_deep", "overdue_quick", "never_audited"):
            yield row("audits", item, a[item], **lc)
    for r in report.replicas:
        lc = {"library": r["library"], "collection": r["collection"], "site": r["site"] or "", "target": r["target"],
              "key": r["bag_id"]}
        for item in ("state", "in_policy", "verified_at", "last_deep_at", "last_quick_at", "deep_due_at",
                     "overdue_deep", "overdue_quick"):
            yield row("copy", item, r[item], **lc)
    for e in report.repairs:
        lc = {"library": e["library"] or "", "collection": e["collection"] or "", "target": e["target"] or "",
              "key": e["event_id"]}
        for item in ("datetime", "type", "outcome", "bag_id", "path", "detail"):
            yield row("repair", item, e[item], **lc)
    for r in report.events_by_type:
        yield row("events", r["outcome"], r["events"], key=r["type"])
    for c in report.ndsa:
        lc = {"library": c.library, "collection": c.collection}
        for a in c.areas:
            yield row("ndsa", "level", a.level, key=a.area, **lc)
            for r in a.evidence:
                yield row("ndsa", "evidence", tr.finding(r), key=a.area, **lc)
            for r in a.missing:
                yield row("ndsa", "missing", tr.rule(r.key), key=a.area, **lc)
            for r in a.rules:
                yield row("ndsa_rule", r.key, "" if r.met is None else r.met, key=a.area, **lc)


def write_csv(report: Any, tr: Translator, fh: TextIO) -> None:
    csv.writer(fh).writerows(csv_rows(report, tr))


# --------------------------------------------------------------------------------------------
# PREMIS


def premis_parts(report: Any, config, catalog):
    """(objects, events, agents) iterables for ingest.premis.write_premis."""
    from ingest import premis

    catalog_entity = premis.IntellectualEntity("strongroom-catalog", report.catalog,
                                               title=f"Strongroom archive catalog ({report.kind} report)")
    bags = _bags(catalog, report.scope)
    entities = (premis.IntellectualEntity("strongroom-bag", b["bag_id"], title=b["title"] or "",
                                          other_identifiers=(("UUID", b["external_identifier"]),))
                for b in bags)
    reporter = premis.Agent("local", "strongroom", "Strongroom", "software", version=__version__,
                            note=f"Strongroom {__version__} {report.kind} report")
    if report.kind == "formats":
        objects: Iterable = _chain([catalog_entity], entities, _attention_files(report, config, catalog))
        return objects, [], [reporter]
    table = report.events if report.kind == "fixity" else _period_events(report, catalog)
    agent_names = sorted(n for n in pc.unique(table.column("agent")).to_pylist() if n) if table.num_rows else []
    agents = [reporter] + [premis.Agent("local", name, name, "software") for name in agent_names if name != "strongroom"]
    events: Iterable = (_premis_event(r) for batch in table.to_batches(max_chunksize=10_000)
                        for r in batch.to_pylist())
    if report.kind == "fixity":
        led = report.ledger
        detail = (f"ledger hash chain verified by the fixity report: {led.segments} segments, {led.events} events, "
                  f"head seg-{led.head_seq if led.head_seq is not None else -1:012d} sha256:{led.head_hash or '-'}")
        events = _chain(events, [premis.Event(
            "UUID", str(uuid.uuid4()), "fixity check", iso(report.generated_at), detail,
            "success" if led.ok else "failure", "; ".join(led.problems[:20]),
            agents=(("local", "strongroom", "executing program"),),
            objects=(("strongroom-catalog", report.catalog, "source"),))])
    return _chain([catalog_entity], entities), events, agents


def _premis_event(r: Dict[str, Any]):
    from ingest import premis

    detail = r.get("detail") or ""
    if r.get("target"):
        detail = f"{detail} [copy on {r['target']}]".strip()
    objects = []
    if r.get("bag_id"):
        objects.append(("strongroom-bag", r["bag_id"], "source"))
        if r.get("path"):
            objects.append(("strongroom-path", f"{r['bag_id']}/{r['path']}", "outcome"))
    agents = (("local", r["agent"], "executing program"),) if r.get("agent") else ()
    return premis.Event("UUID", r["event_id"], r["type"], iso(r["datetime"]), detail, r["outcome"],
                        agents=agents, objects=tuple(objects))


def _period_events(report: Any, catalog) -> pa.Table:
    from reports.common import in_period
    from reports.preservation import scope_events

    bags = catalog.bags(report.scope.library, report.scope.collection)
    events = in_period(scope_events(catalog, bags, report.scope), "datetime", report.scope)
    return events.sort_by([("datetime", "ascending")])


def _bags(catalog, scope: Scope) -> List[Dict[str, Any]]:
    return catalog.bags(scope.library, scope.collection).select(
        ["bag_id", "title", "external_identifier"]).to_pylist()


def _attention_files(report: Any, config, catalog) -> Iterator[Any]:
    """File objects for unidentified files and files in their policy's at-risk formats, streamed."""
    from catalog.schema import DIGEST_ALGORITHMS
    from ingest import premis
    from reports.scan import at_risk_mask, at_risk_table, file_batches

    risk = at_risk_table(config)
    bags = catalog.bags(report.scope.library, report.scope.collection)
    columns = ["path", "size", "puid", "format_name", "format_version", "identification_method", *DIGEST_ALGORITHMS]

    def needs_attention(batch: pa.Table) -> pa.ChunkedArray:
        return pc.or_(pc.is_null(batch.column("puid")), at_risk_mask(batch, risk))

    for batch in file_batches(catalog, bags, columns, keep=needs_attention):
        batch = batch.sort_by([("bag_id", "ascending"), ("path", "ascending")])
        for r in batch.to_pylist():
            name = r["path"][len("data/"):] if r["path"].startswith("data/") else r["path"]
            yield premis.FileObject(
                identifier_type="strongroom-path", identifier_value=f"{r['bag_id']}/{r['path']}", original_name=name,
                size=r["size"], fixity=tuple((a, r[a]) for a in DIGEST_ALGORITHMS if r[a]),
                format_puid=r["puid"] or "", format_name=r["format_name"] or "",
                format_version=r["format_version"] or "", format_basis=r["identification_method"] or "",
                storage_location=r["path"])


def _chain(*iterables: Iterable) -> Iterator:
    for it in iterables:
        yield from it


def write_premis_file(report: Any, config, catalog, path: Path) -> Path:
    """ingest.premis.write_premis streams into a temp file beside `path` and renames it (atomic)."""
    from ingest.premis import write_premis

    objects, events, agents = premis_parts(report, config, catalog)
    return write_premis(check_output(path), objects, events, agents)


# --------------------------------------------------------------------------------------------


def write(report: Any, fmt: str, lang: str, path: Path, config, catalog) -> Path:
    tr = Translator(lang)
    if fmt == "html":
        text = html(report, tr)
        return write_atomic(path, lambda fh: fh.write(text))
    if fmt == "json":
        return write_atomic(path, lambda fh: write_json(report, tr, fh))
    if fmt == "csv":
        if report.kind == "fixity":  # its coverage table beside the events (reports.fixity)
            from reports.fixity import coverage_csv_path, coverage_rows

            write_atomic(coverage_csv_path(path), lambda fh: csv.writer(fh).writerows(coverage_rows(report)))
        return write_atomic(path, lambda fh: write_csv(report, tr, fh))
    if fmt == "premis":
        return write_premis_file(report, config, catalog, path)
    raise ValueError(f"unknown report format {fmt!r}")


__all__ = ["html", "to_json_data", "csv_rows", "premis_parts", "write", "scope_label", "period_label"]
