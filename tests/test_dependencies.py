"""setup.py's requirements say what the code imports, no more and no less.

Why: the README tells a user which packages Strongroom needs at run time. A requirement that no
runtime module imports (bagit was one: only tests use it, to cross-check Strongroom's own BagIt
rules) costs every install something for nothing; a package imported directly but only arriving
as someone else's dependency (botocore through boto3, markupsafe through jinja2) breaks the day
that other package stops bringing it. The imports are read by import-linter's graph builder
(grimp), so imports inside functions count too.
"""

from __future__ import annotations

import ast
import importlib.util
import sys
import sysconfig
from importlib.metadata import packages_distributions
from pathlib import Path
from typing import Dict, List, Set

import grimp
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
RUNTIME_PACKAGES = ("strongroom", "pipelines", "ingest", "fixity", "storage_adapters", "policies",
                    "reports", "catalog")


def _setup_keywords() -> Dict[str, object]:
    """install_requires and extras_require as written in setup.py (its source, not the possibly
    stale metadata of an earlier `pip install -e`)."""
    tree = ast.parse((ROOT / "setup.py").read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "setup":
            return {k.arg: ast.literal_eval(k.value) for k in node.keywords
                    if k.arg in ("install_requires", "extras_require")}
    raise AssertionError("setup.py has no setup(...) call")


def _names(requirements: List[str]) -> Set[str]:
    return {Requirement(r).name.lower().replace("_", "-") for r in requirements}


def _is_stdlib(name: str) -> bool:
    """Python 3.10+ lists the standard library; 3.9 (setup.py's floor) is asked where it lives."""
    if hasattr(sys, "stdlib_module_names"):
        return name in sys.stdlib_module_names
    spec = importlib.util.find_spec(name)
    origin = (spec.origin or "") if spec is not None else ""
    return origin in ("built-in", "frozen") or origin.startswith(sysconfig.get_paths()["stdlib"])


def _imported_distributions() -> Dict[str, Set[str]]:
    """distribution name -> the top-level modules of it that runtime code imports."""
    graph = grimp.build_graph(*RUNTIME_PACKAGES, include_external_packages=True)
    external = {m for m in graph.modules if "." not in m and m not in RUNTIME_PACKAGES
                and not _is_stdlib(m)}
    providers = packages_distributions()
    out: Dict[str, Set[str]] = {}
    for module in external:
        dists = providers.get(module)
        assert dists, f"runtime code imports {module!r}, which no installed distribution provides"
        for dist in dists:
            out.setdefault(dist.lower().replace("_", "-"), set()).add(module)
    return out


def test_install_requires_is_what_runtime_code_imports():
    declared = _names(_setup_keywords()["install_requires"])
    imported = _imported_distributions()
    undeclared = {d: sorted(m) for d, m in imported.items() if d not in declared}
    unused = sorted(declared - set(imported))
    assert not undeclared, f"imported at run time but not in install_requires: {undeclared}"
    assert not unused, f"in install_requires but imported by no runtime module (move to an extra): {unused}"


def test_the_test_extra_brings_what_tests_and_ci_use():
    test_extra = _names(_setup_keywords()["extras_require"]["test"])
    # bagit cross-checks the BagIt rules in tests; the CI tools run from .ci/run.
    for needed in ("bagit", "pytest", "pytest-timeout", "import-linter", "ruff"):
        assert needed in test_extra, f"setup.py's test extra lacks {needed}"


def test_every_test_has_a_timeout(pytestconfig):
    """pytest.ini's `timeout` (pytest-timeout): a hung test (a server that never answers, a
    deadlocked worker) fails with its stack instead of holding CI until its 90 minutes run out."""
    assert float(pytestconfig.getini("timeout") or 0) > 0, "pytest.ini sets no timeout"
