"""Which library a view is for: the one filter `--library L` on status, report, restore and audit.

A consortium archive holds many libraries' bags in one catalog and one ledger. A member library
is handed its own status, reports and audit results, and may restore only its own bags, so every
view made for a library must show nothing of another: no row, no total, no file name, no
ledger detail. The views take their bags, replica rows and events through a `LibraryScope`
rather than each filtering in its own way, so "of this library" means the same everywhere: the
bag's `library` column in the catalog (and, for an event without a bag, the library the event
acted for, its `agent_library`).

`LibraryScope(None)` is the whole consortium (no `--library`): everything is allowed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, FrozenSet, Optional

import pyarrow as pa
import pyarrow.compute as pc

from catalog.catalog import Catalog
from strongroom.errors import UsageError


@dataclass(frozen=True)
class LibraryScope:
    """The library a view is for, or None for the whole consortium."""

    code: Optional[str] = None

    @property
    def everyone(self) -> bool:
        return self.code is None

    def allows(self, bag_row: Any) -> bool:
        """Whether a bag (a row of `Catalog.bags().to_pylist()`, or a BagRecord) is in scope."""
        if self.code is None:
            return True
        library = bag_row.get("library") if isinstance(bag_row, dict) else getattr(bag_row, "library", None)
        return library == self.code

    def bags(self, catalog: Catalog, collection: Optional[str] = None, bag_id: Optional[str] = None) -> pa.Table:
        """The catalog's bag rows in scope (optionally of one collection or one bag)."""
        return catalog.bags(self.code, collection, bag_id)

    def bag_ids(self, catalog: Catalog) -> FrozenSet[str]:
        """The ids of the bags in scope."""
        return frozenset(self.bags(catalog).column("bag_id").to_pylist())

    def only_bags(self, table: pa.Table, catalog: Catalog, column: str = "bag_id") -> pa.Table:
        """The rows of `table` (replicas, files, events, audit rows) whose `column` names a bag in
        scope. Under a library, a row without a bag is dropped unless it names this library as
        the one it acted for: an event's `agent_library` (contract C3: stamped by
        `Catalog.append_events`, e.g. a receive event that concerns no bag), or a `library`
        column of other tables."""
        if self.code is None:
            return table
        ids = pa.array(sorted(self.bag_ids(catalog)), pa.string())
        mask = pc.fill_null(pc.is_in(table.column(column), value_set=ids), False)
        for name in ("agent_library", "library"):
            if name in table.column_names:
                own = pc.and_(pc.is_null(table.column(column)),
                              pc.fill_null(pc.equal(table.column(name), self.code), False))
                mask = pc.or_(mask, own)
                break
        return table.filter(mask)

    def events(self, catalog: Catalog, **query: Any) -> pa.Table:
        """`catalog.events(**query)` restricted to the scope (see `only_bags`)."""
        return self.only_bags(catalog.events(**query), catalog)

    def check_bag(self, catalog: Catalog, bag_id: str) -> None:
        """UsageError (exit 2) unless the bag is one of this library's. The words are the same
        whether the bag belongs to another library or does not exist at all, and name nothing of
        it but the id the caller gave, so a refusal reveals neither a bag's existence nor its
        content."""
        if self.code is None:
            return
        record = catalog.bag(bag_id)
        if record is None or record.library != self.code:
            raise UsageError(f"bag {bag_id} is not a bag of library {self.code}; nothing done "
                             f"(`strongroom status --library {self.code}` lists its bags)", key="--library")


__all__ = ["LibraryScope"]
