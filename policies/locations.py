"""Where storage targets are: separate places, and which of them count as one location.

Two targets whose roots resolve into one another (equal, or one inside the other, through links
too) are refused outright (`_check_overlaps`), as are two S3 targets of one bucket whose prefixes
contain each other. One device is one location: two filesystem targets whose roots sit on one
file system (the same `st_dev` of the root, or of its nearest existing parent) are flagged at
load with a warning on stderr naming both ("site-a and site-b are on one file system: they count
as one location"), whatever their `site` says; `find_locations` gives every target's location
(targets on one file system, in one S3 bucket of one endpoint, or on one `site` share one),
which `Config.location_of` answers and `status`, the reports and the NDSA levels count.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

from policies.model import Reader
from policies.targets import StorageTarget

def _real(path: Path) -> Path:
    """`path` with every symlink resolved (realpath; parts that do not exist yet kept as written)."""
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # a symlink loop: compare as written
        return path


def _inside(inner: Path, outer: Path) -> bool:
    try:
        _real(inner).relative_to(_real(outer))
        return True
    except ValueError:
        return False


def _shown(path: Path) -> str:
    real = _real(path)
    return str(path) if real == path else f"{path} (resolves to {real})"


def _check_overlaps(reader: Reader, places: List[Tuple[str, Path]]) -> None:
    """Replica roots, staging and a local catalog must be separate folders, none inside another.

    A replica inside staging would be deleted with it; two replicas in one folder are one copy.
    """
    for i, (key_a, path_a) in enumerate(places):
        for key_b, path_b in places[i + 1:]:
            if _inside(path_a, path_b) or _inside(path_b, path_a):
                reader.problem(key_b, f"{_shown(path_b)} overlaps {key_a} ({_shown(path_a)}); replica roots, "
                                      f"staging and the catalog must be separate folders, none inside another "
                                      f"(two targets in one folder are one copy)")


def _prefixes_overlap(a: str, b: str) -> bool:
    """Two key prefixes of one bucket ("" = the whole bucket) of which one contains the other."""
    pa, pb = a + "/", b + "/"
    return pa.startswith(pb) or pb.startswith(pa) or "/" in (pa, pb)


def _check_bucket_overlaps(reader: Reader, storage: Dict[str, StorageTarget]) -> None:
    """Two S3 targets on the same endpoint and bucket need prefixes that do not contain each other."""
    s3 = [t for t in storage.values() if t.type == "s3"]
    for i, a in enumerate(s3):
        for b in s3[i + 1:]:
            same_bucket = (a.options["endpoint"], a.options["bucket"]) == (b.options["endpoint"], b.options["bucket"])
            if same_bucket and _prefixes_overlap(a.options["prefix"], b.options["prefix"]):
                reader.problem(f"storage.{b.name}.prefix",
                               f"overlaps storage.{a.name} (same endpoint and bucket {b.options['bucket']!r}, "
                               f"prefixes {a.options['prefix']!r} and {b.options['prefix']!r}); two targets "
                               f"in one place are one copy: use another bucket or separate prefixes")


def _device(path: Path) -> Optional[int]:
    """st_dev of `path` or of its nearest existing parent (None if nothing can be stat'ed)."""
    p = path
    while True:
        try:
            return os.stat(p).st_dev
        except (FileNotFoundError, NotADirectoryError):
            if p.parent == p:
                return None
            p = p.parent
        except OSError:
            return None


def _join_names(names: List[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def find_locations(storage: Mapping[str, StorageTarget]) -> Tuple[Dict[str, str], Tuple[str, ...]]:
    """(target -> location label, warnings). Targets are one location when they share a file system
    (filesystem targets: the st_dev of their roots), a bucket (S3 targets: endpoint and bucket) or a
    site; a warning names each group of filesystem targets on one file system and of S3 targets in
    one bucket, since their `site` values then promise more than the storage gives."""
    names = list(storage)
    parent = {n: n for n in names}

    def find(n: str) -> str:
        while parent[n] != n:
            parent[n] = parent[parent[n]]
            n = parent[n]
        return n

    def union(a: str, b: str) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[rb] = ra

    shared: Dict[Tuple[str, Any], List[str]] = {}
    for n in names:
        t = storage[n]
        if t.type == "filesystem" and t.root is not None:
            dev = _device(t.root)
            if dev is not None:
                shared.setdefault(("file system", dev), []).append(n)
        elif t.type == "s3":
            shared.setdefault(("bucket", (t.options.get("endpoint"), t.options.get("bucket"))), []).append(n)
    by_site: Dict[str, List[str]] = {}
    for n in names:
        by_site.setdefault(storage[n].site, []).append(n)
    warnings = []
    for (what, _), group in shared.items():
        for other in group[1:]:
            union(group[0], other)
        if len(group) > 1 and len({storage[n].site for n in group}) > 1:
            one = "one file system" if what == "file system" else "one bucket"
            warnings.append(f"{_join_names(group)} are on {one}: they count as one location "
                            f"(a disk or bucket lost takes every copy on it), whatever their `site` says")
    for group in by_site.values():
        for other in group[1:]:
            union(group[0], other)
    members: Dict[str, List[str]] = {}
    for n in names:
        members.setdefault(find(n), []).append(n)
    labels = {}
    for group in members.values():
        label = " + ".join(sorted({storage[n].site for n in group}))
        for n in group:
            labels[n] = label
    return labels, tuple(warnings)
