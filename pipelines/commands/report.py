"""`strongroom report preservation|fixity|formats [--library L] [--collection C] [--since D]
[--until D] [--format html|csv|json|premis] [--lang en|zh] -o PATH`: reports for staff and auditors.
`strongroom report KIND --library L --publish [-o PATH]`: L's three reports (HTML, en and zh) into
L's receiving area under reports/ (`reports.publish`), where the library reads them itself.

With --library nothing of another library appears (no row, total, chart bar or ledger detail:
`catalog.scope`); consortium-wide totals only without it.

preservation  holdings, copies per site and their state, retention, audits, overdue copies, open
              damage, repairs in the period, and the NDSA Levels (v2.0) each collection reaches,
              with the evidence and what is missing for the next level
fixity        for auditors: every audit and repair event of the period (one row per event in CSV
              and JSON), damage found and its repair, copies never or not recently audited, and
              the ledger's verification with its head hash
formats       files and bytes per PRONOM format, unidentified files, files in at-risk formats
evidence      for certification: ISO 16363 metrics and CoreTrustSeal requirements mapped to the
              catalog's and ledger's figures, the event ids behind them and what they cannot show
              (`reports.evidence`; html or json, --library only: evidence covers every period)

Dates: YYYY-MM-DD is a whole day in UTC (`--until 2026-12-31` includes the 31st); an ISO 8601
date-time is that instant. Exit 0 when the report is written (even if it shows problems: the
report is the finding), 2 for a bad option, an unknown library or collection, or a config error.
The file appears complete or not at all (written beside PATH, then renamed).
"""

from __future__ import annotations

import argparse

KINDS = ("preservation", "fixity", "formats", "evidence")
EVIDENCE_FORMATS = ("html", "json")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "report", help="preservation, fixity, format and evidence reports (HTML, CSV, JSON, PREMIS; English or "
                       "Chinese)",
        description="Write a report over the catalog: preservation (holdings, copies, audits, NDSA levels), "
                    "fixity (every audit event of a period, damage and repairs, ledger verification), "
                    "formats (PRONOM formats, unidentified and at-risk files) or evidence (ISO 16363 and "
                    "CoreTrustSeal requirements mapped to the records, html or json). Exit 0 written, 2 usage or "
                    "config error.")
    parser.add_argument("kind", choices=KINDS, help="which report")
    parser.add_argument("--library", default=None, help="only this library")
    parser.add_argument("--collection", default=None, help="only this collection")
    parser.add_argument("--since", default=None, metavar="DATE",
                        help="period start, inclusive: YYYY-MM-DD (UTC) or an ISO 8601 date-time")
    parser.add_argument("--until", default=None, metavar="DATE",
                        help="period end: YYYY-MM-DD includes that whole day (UTC); a date-time is exclusive")
    parser.add_argument("--format", dest="report_format", default="html", choices=("html", "csv", "json", "premis"),
                        help="html (default; one self-contained file), csv, json or premis (PREMIS 3 XML)")
    parser.add_argument("--lang", default="en", choices=("en", "zh"), help="en (default) or zh (Simplified Chinese)")
    parser.add_argument("-o", "--output", default=None, metavar="PATH",
                        help="the file to write (required unless --publish)")
    parser.add_argument("--publish", action="store_true",
                        help="with --library L: write L's three reports (preservation, fixity, formats; HTML, en and "
                             "zh) into L's receiving area under reports/, replacing the previous ones")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from catalog.access import open_catalog
    from pipelines.cli import config_path
    from pipelines.output import emit
    from policies.config import load_config
    from pathlib import Path

    from reports.common import iso, make_scope
    from reports.render import write
    from reports.write import build_report
    from strongroom.errors import ConfigError, UsageError

    if args.kind == "evidence":
        return _evidence(args)
    if args.output is None and not args.publish:
        raise UsageError("give -o PATH, the file to write (or --library L --publish)", key="-o")
    if args.publish and (args.library is None or args.collection or args.since or args.until):
        raise UsageError("--publish writes one library's whole reports: give --library L, and no --collection, "
                         "--since or --until", key="--publish")
    config = load_config(config_path(args))
    listed = args.library in (getattr(config, "libraries", None) or {})
    scope = make_scope(library=args.library, collection=args.collection, since=args.since, until=args.until,
                       listed=listed)
    catalog = open_catalog(config)
    if not config.catalog_is_s3 and not catalog.store.exists():
        raise ConfigError(f"catalog folder {config.catalog} does not exist (run `strongroom init` for a new "
                          f"archive, or `strongroom catalog rebuild` if the catalog was lost)",
                          path=str(config.path), key="catalog")
    data, lines = {"report": args.kind, "scope": scope.to_dict()}, []
    if args.output is not None:
        report = build_report(config, args.kind, scope, catalog)
        path = write(report, args.report_format, args.lang, Path(args.output), config, catalog)
        data.update({"format": args.report_format, "lang": args.lang, "path": str(path),
                     "generated_at": iso(report.generated_at)})
        lines.append(f"{args.kind} report written to {path}")
    if args.publish:
        from reports.publish import publish_reports
        from storage_adapters.receiving import open_area

        keys = publish_reports(config, args.library, catalog=catalog, now=scope.now)
        where = open_area(config, args.library).describe()
        data["published"] = {"area": where, "keys": keys}
        lines.append(f"{len(keys)} reports of library {args.library} published to {where}: " + ", ".join(keys))
    emit(args, data, "\n".join(lines))
    return 0


def _evidence(args: argparse.Namespace) -> int:
    """`report evidence`: the certification evidence pack (reports.evidence)."""
    from pathlib import Path

    from catalog.access import open_catalog
    from pipelines.cli import config_path
    from pipelines.output import emit
    from policies.config import load_config
    from reports.common import iso, make_scope
    from reports.evidence import build_evidence, write_evidence
    from strongroom.errors import UsageError

    if args.output is None:
        raise UsageError("give -o PATH, the file to write", key="-o")
    for given, option in ((args.collection, "--collection"), (args.since, "--since"), (args.until, "--until")):
        if given is not None:
            raise UsageError(f"report evidence covers a whole library (or the consortium) over every period; "
                             f"{option} is not for it", key=option)
    if args.publish:
        raise UsageError("--publish writes the preservation, fixity and format reports; not evidence",
                         key="--publish")
    if args.report_format not in EVIDENCE_FORMATS:
        raise UsageError(f"report evidence is written as {' or '.join(EVIDENCE_FORMATS)}, not {args.report_format}",
                         key="--format")
    config = load_config(config_path(args))
    listed = args.library in (getattr(config, "libraries", None) or {})
    scope = make_scope(library=args.library, listed=listed)
    catalog = open_catalog(config)
    report = build_evidence(config, catalog, scope)
    path = write_evidence(report, args.report_format, args.lang, Path(args.output))
    emit(args, {"report": "evidence", "scope": scope.to_dict(), "format": args.report_format, "lang": args.lang,
                "path": str(path), "generated_at": iso(report.generated_at), "status_counts": report.status_counts()},
         f"evidence report written to {path}")
    return 0
