"""Setting a damaged catalog's untrustworthy files aside, never deleting them (`catalog rebuild`).

`catalog.integrity.check_catalog` names what cannot be trusted; `set_aside` moves it into a
dated, hidden folder of the catalog so the rebuild can register again, from the copies, what
those files held, while the damaged files stay for a person (or `strongroom ledger verify`) to
examine. Hidden names are never read as catalog data (see store.py).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from catalog.compact import COMPACT_PREFIX, ReplacedCache
from catalog.integrity import CatalogHealth, _signatures, forget
from catalog.ledger import CACHE_FOLDER, FOLDER as EVENTS_FOLDER, Ledger
from catalog.store import Store

DAMAGED_FOLDER = ".damaged"   # hidden: never read as catalog data (see store.py)


@dataclass
class SetAside:
    """What `set_aside` moved: `folder` (a store path) holds `<table>/<file>` for each file."""

    folder: Optional[str] = None
    moved: List[str] = field(default_factory=list)      # "<table>/<file>" as they were
    ledger_reset: bool = False                           # the whole ledger was set aside
    reasons: List[str] = field(default_factory=list)

    def to_dict(self) -> Dict[str, object]:
        return {"folder": self.folder, "moved": list(self.moved), "ledger_reset": self.ledger_reset,
                "reasons": list(self.reasons)}


def set_aside(catalog, health: CatalogHealth, *, stamp: Optional[str] = None) -> SetAside:
    """Move every file the check could not trust into `<catalog>/.damaged/<UTC stamp>/<table>/`,
    never deleting one, so that a rebuild can re-register from the copies what they held:

    * unreadable, foreign or stray files of any table;
    * the bag row file(s) of each bag whose file rows do not add up (its files/ file was lost):
      with the bag row gone the rebuild registers the bag again from its copies (a compacted
      bags/ file holds other bags' rows too: they are all re-registered, which is harmless);
      and that bag's own files/ files, now orphans;
    * the whole ledger (events/ and ledger-cache/) when a segment is missing, unreadable or
      inconsistent: a chain with a hole cannot be appended to honestly. The set-aside ledger
      stays where `strongroom ledger verify` can be pointed at it; the rebuild starts a new
      chain and records where the old one went.

    Local catalogs: rename (atomic, same file system). S3: copy, then delete the original."""
    from catalog.compact import bag_file_prefix

    store: Store = catalog.store
    result = SetAside()
    wanted: List[Tuple[str, str]] = []  # (folder, name)

    def add(path: str, reason: str) -> None:
        rel = path[len(store.root):].lstrip("/") if path.startswith(store.root) else path
        folder, _, name = rel.rpartition("/")
        if (folder, name) not in wanted:
            wanted.append((folder, name))
            result.reasons.append(f"{folder}/{name}: {reason}")

    ledger_broken = bool(health.ledger_problems) or any(
        p.startswith(store.path(EVENTS_FOLDER) + "/") for p in health.unreadable)
    for path in health.unreadable:
        if ledger_broken and path.startswith((store.path(EVENTS_FOLDER) + "/", store.path(CACHE_FOLDER) + "/")):
            continue
        add(path, "unreadable, foreign or stray")
    if health.short_bags:
        short = set(health.short_bags)
        for table in ("bags", "files"):
            for name in store.names(table):
                if any(name.startswith(bag_file_prefix(b)) for b in short):
                    add(store.path(table, name), "belongs to a bag whose file rows do not add up")
        for name in store.names("bags"):
            if name.startswith(COMPACT_PREFIX) and store.path("bags", name) not in health.unreadable:
                try:
                    with store.fs.open_input_file(store.path("bags", name)) as fh:
                        ids = pq.read_table(fh, columns=["bag_id"]).column("bag_id").to_pylist()
                except (OSError, pa.ArrowException):
                    continue
                if short & set(ids):
                    add(store.path("bags", name), "holds the row of a bag whose file rows do not add up")
    if ledger_broken:
        result.ledger_reset = True
        for folder in (EVENTS_FOLDER, CACHE_FOLDER):
            for name in _signatures(store, folder):
                add(store.path(folder, name), "the ledger has a missing, unreadable or inconsistent segment")
    if not wanted:
        return result
    stamp = stamp or time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    base = store.path(DAMAGED_FOLDER, stamp)
    n = 1
    while store.fs.get_file_info(base).type != pafs.FileType.NotFound:
        n += 1
        base = store.path(DAMAGED_FOLDER, f"{stamp}-{n}")
    result.folder = base
    for folder, name in wanted:
        src = store.path(folder, name)
        dest_dir = f"{base}/{folder}" if folder else base
        store.fs.create_dir(dest_dir, recursive=True)
        dest = f"{dest_dir}/{name}"
        try:
            if store.is_local:
                os.rename(src, dest)
            else:
                store.fs.copy_file(src, dest)
                store.delete(src)
        except FileNotFoundError:
            continue  # gone meanwhile (a compaction): nothing to keep
        result.moved.append(f"{folder}/{name}")
    if store.is_local:
        from strongroom.durable import fsync_dir

        for folder in {f for f, _ in wanted}:
            fsync_dir(store.path(folder))
            fsync_dir(f"{base}/{folder}")
        fsync_dir(base)
    forget(store)
    catalog._replaced = ReplacedCache()
    catalog._ledger = Ledger(store)  # its remembered head may have been set aside
    return result


__all__ = ["DAMAGED_FOLDER", "SetAside", "set_aside"]
