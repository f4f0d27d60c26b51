"""Whether a deposit may start at all: the one check `pipelines.flow.open_deposit` makes first,
so every path in (`deposit`, `receive`) passes it before a byte moves.

Two parts. The registry and the bindings (`policies.libraries.check_deposit`: a listed library,
a policy and targets bound to it or to everyone). Then the codes already in use: library and
collection codes become folder names and object keys on every target, so `pku` beside `PKU`
(or `Books` beside `books` in one library) would be separate entries in the catalog whose copies
land in one folder on a case-insensitive share. A code that differs only in case from one the
catalog (or an unfinished deposit) already has is refused, naming the existing code. That part
needs the catalog, which `policies/` may not import: hence this module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Optional, Tuple

from catalog.access import open_catalog
from policies.libraries import check_deposit
from strongroom.errors import UsageError


def admit_deposit(config, library: str, collection: str, policy_name: str) -> None:
    """UsageError (exit 2) when this deposit may not start; see the module docstring."""
    check_deposit(config, library, collection, policy_name)
    pairs = list(_codes_in_use(config))
    clash = case_clash(library, (lib for lib, _ in pairs))
    if clash is not None:
        raise UsageError(f"library code {library!r} differs only in case from {clash!r}, which the archive "
                         f"already holds; codes are compared ignoring case (one folder on a case-insensitive "
                         f"share): use --library {clash}", path=str(config.path), key="--library")
    clash = case_clash(collection, (coll for lib, coll in pairs if lib == library))
    if clash is not None:
        raise UsageError(f"collection code {collection!r} differs only in case from {library}/{clash}, which "
                         f"the archive already holds; codes are compared ignoring case (one folder on a "
                         f"case-insensitive share): use --collection {clash}", path=str(config.path),
                         key="--collection")


def case_clash(code: str, existing: Iterable[str]) -> Optional[str]:
    """An existing code equal to `code` ignoring case but spelt differently, or None."""
    folded = code.casefold()
    for other in existing:
        if other != code and other.casefold() == folded:
            return other
    return None


def _codes_in_use(config) -> Iterable[Tuple[str, str]]:
    """(library, collection) of every catalogued bag and of every unfinished deposit."""
    from pipelines.flow import _deposit_states  # flow calls us: imported when used

    table = open_catalog(config).bags().select(["library", "collection"])
    yield from zip(table.column("library").to_pylist(), table.column("collection").to_pylist())
    for state in _deposit_states(Path(config.staging)):
        yield state.library, state.collection
