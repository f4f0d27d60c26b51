"""Moved to `catalog.findings` (open findings are read from the catalog, by audits as well as by
reports). This name stays for the reports modules that still import it."""

from catalog.findings import (PROBLEM_STATES, OpenCopy, OpenFinding, is_problem,  # noqa: F401
                              open_copies, open_findings)
