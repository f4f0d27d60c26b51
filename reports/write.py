"""Build a report and write it in one form: the API behind `strongroom report` and the demo.

    from reports.write import write_report, write_all
    write_report(config, "fixity", "audit-2026.csv", fmt="csv", since="2026-01-01", until="2026-12-31")
    paths = write_all(config, "reports/", lang="zh")   # the three HTML reports

Exit-code contract (via strongroom.errors): a bad date, an empty period, an unknown library or
collection, a missing output folder are UsageError (exit 2); anything written is complete
(temp file + rename), so a failed run leaves no half-written report behind.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
from pathlib import Path
from typing import Any, List, Optional

from catalog.access import open_catalog
from catalog.catalog import Catalog
from catalog.scope import LibraryScope
from reports.common import FORMATS, KINDS, LANGS, SUFFIX, Scope, make_scope
from strongroom.errors import UsageError


def build_report(config, kind: str, scope: Optional[Scope] = None, catalog: Optional[Catalog] = None) -> Any:
    """The report's data (a PreservationReport, FixityReport or FormatReport)."""
    catalog = catalog if catalog is not None else open_catalog(config)
    scope = scope or make_scope()
    if kind == "preservation":
        from reports.preservation import build_preservation
        return library_ledger(build_preservation(config, catalog, scope), catalog, scope)
    if kind == "fixity":
        from reports.fixity import build_fixity
        return library_ledger(build_fixity(config, catalog, scope), catalog, scope)
    if kind == "formats":
        from reports.formats import build_formats
        return build_formats(config, catalog, scope)
    raise UsageError(f"unknown report {kind!r}; one of {', '.join(KINDS)}", key="report")


def library_ledger(report: Any, catalog: Catalog, scope: Scope) -> Any:
    """The report with its ledger figures made the library's own when it is for one library.

    The ledger is one hash chain for the whole consortium: its verification (intact or not, and
    its problems) and its head hash (a commitment that reveals nothing of any event) hold for
    every library, but its event count is a consortium-wide total. A library's report counts
    the events of its own bags instead (`catalog.scope.LibraryScope`)."""
    if scope.library is None:
        return report
    own = LibraryScope(scope.library).events(catalog).num_rows
    return dataclasses.replace(report, ledger=dataclasses.replace(report.ledger, events=own))


def write_report(config, kind: str, path: Any, *, fmt: str = "html", lang: str = "en",
                 library: Optional[str] = None, collection: Optional[str] = None,
                 since: Any = None, until: Any = None, now: Optional[_dt.datetime] = None,
                 catalog: Optional[Catalog] = None) -> Path:
    """Build report `kind` over the scope and write it to `path` in `fmt` and `lang`; returns the path.
    `since`/`until` are datetimes or the CLI's strings (a date means that whole day, UTC)."""
    if fmt not in FORMATS:
        raise UsageError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}", key="--format")
    if lang not in LANGS:
        raise UsageError(f"unknown language {lang!r}; one of {', '.join(LANGS)}", key="--lang")
    from reports.render import write

    catalog = catalog if catalog is not None else open_catalog(config)
    scope = make_scope(library=library, collection=collection, since=since, until=until, now=now)
    report = build_report(config, kind, scope, catalog)
    return write(report, fmt, lang, Path(path), config, catalog)


def write_all(config, out_dir: Any, lang: str = "en", *, fmt: str = "html", now: Optional[_dt.datetime] = None,
              **filters: Any) -> List[Path]:
    """The three reports (preservation, fixity, formats) in `out_dir` (created if needed), named
    `<kind>[-zh]<suffix>`; returns their paths in that order. For `strongroom demo`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    catalog = open_catalog(config)
    tag = "" if lang == "en" else f"-{lang}"
    return [write_report(config, kind, out / f"{kind}{tag}{SUFFIX[fmt]}", fmt=fmt, lang=lang, now=now,
                         catalog=catalog, **filters) for kind in KINDS]


__all__ = ["build_report", "write_report", "write_all"]
