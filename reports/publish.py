"""Hand a member library its own reports where it already looks: its receiving area.

A member library has no shell on the archive's machine; it reads and writes its receiving area
with the S3 client (or the folder) it deposits with. `publish_reports(config, "PKU")` writes
PKU's three reports (preservation, fixity, formats), each in English and Chinese, as HTML under
`reports/` there:

    reports/preservation.html   reports/preservation-zh.html
    reports/fixity.html         reports/fixity-zh.html
    reports/formats.html        reports/formats-zh.html

Each is built with the library's scope (`--library PKU`: nothing of another library, see
`catalog.scope`) and written through `storage_adapters.receiving.open_area`, so with that
library's own credentials only, each object replaced whole (an atomic put). All six are built
before the first is written, so a report that cannot be built leaves the previous set in place.

`strongroom report KIND --library L --publish` calls it (the KIND given is published with the
other two: the library reads its evidence as one set, of one moment). When the library's
receiving area says `publish_reports: true` (`publishes_reports`), `receive` calls it after
answering that library's batches, and `audit --due` (`refresh_published`) for each library
whose copies the run audited.
"""

from __future__ import annotations

import datetime as _dt
from typing import Dict, Iterable, List, Optional, Tuple

from catalog.access import open_catalog
from catalog.catalog import Catalog
from reports.common import KINDS, LANGS, make_scope
from reports.write import build_report

FOLDER = "reports/"


def report_key(kind: str, lang: str) -> str:
    """The key of one published report in the receiving area."""
    return f"{FOLDER}{kind}{'' if lang == 'en' else '-' + lang}.html"


def publishes_reports(config, library: str) -> bool:
    """The config switch: whether `receive` and `audit --due` refresh this library's published
    reports (`libraries: CODE: receiving: {publish_reports: true}`; off when absent)."""
    entry = (getattr(config, "libraries", None) or {}).get(library)
    spec = getattr(entry, "receiving", None)
    return bool(getattr(spec, "publish_reports", False))


def publish_reports(config, library: str, *, catalog: Optional[Catalog] = None,
                    now: Optional[_dt.datetime] = None) -> List[str]:
    """Write the library's reports (HTML, en and zh) into its receiving area; returns the keys.

    UsageError / ConfigError (exit 2) when the library is not listed, has no receiving area or
    its credentials are not set; StorageError (exit 1) when the area refuses a write."""
    from reports.render import html
    from reports.i18n import Translator
    from storage_adapters.receiving import open_area

    area = open_area(config, library)  # before any work: an unlisted library is refused at once
    catalog = catalog if catalog is not None else open_catalog(config)
    scope = make_scope(library=library, now=now, listed=True)
    pages: List[Tuple[str, bytes]] = []
    for kind in KINDS:
        report = build_report(config, kind, scope, catalog)
        for lang in LANGS:
            pages.append((report_key(kind, lang), html(report, Translator(lang)).encode("utf-8")))
    for key, data in pages:
        area.put_bytes(key, data, overwrite=True)
    return [key for key, _ in pages]


def refresh_published(config, bag_ids: Iterable[str], *, catalog: Optional[Catalog] = None
                      ) -> Tuple[Dict[str, List[str]], List[str]]:
    """After a run that changed what some bags' reports say (`audit --due`): republish the reports
    of each library of those bags whose switch is on. Returns ({library: keys written}, problems);
    a library whose publishing fails is a problem in words, never a traceback, and the others are
    still published."""
    from strongroom.errors import StrongroomError

    published: Dict[str, List[str]] = {}
    problems: List[str] = []
    for code in sorted({b.split("/", 1)[0] for b in bag_ids}):
        if not publishes_reports(config, code):
            continue
        try:
            published[code] = publish_reports(config, code, catalog=catalog)
        except (StrongroomError, OSError) as exc:
            problems.append(f"the reports of library {code} could not be published: {exc}")
    return published, problems


__all__ = ["publish_reports", "publishes_reports", "refresh_published", "report_key", "FOLDER"]
