"""Storage targets as `strongroom status` shows them: which location each counts as, and
whether it answers.

Locations: targets on one file system, in one bucket or on one site are one location
(`Config.location_of`); `status` shows each bag's count of locations holding a good copy and
repeats the config's warning about targets sharing a file system. Reachability: a target is
unreachable when its root is gone, not a folder, or empty although the catalog records copies
there (an unmounted volume), or, for an S3 target, when its bucket does not answer one HEAD.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from catalog.catalog import Catalog
from catalog.replicas import ABSENT

#: An S3 target's reachability check: one HEAD of its bucket, no retries, short timeouts.
S3_CHECK_TIMEOUTS = {"max_attempts": 1, "connect_timeout": 3.0, "read_timeout": 5.0}


@dataclass
class TargetStatus:
    """One storage target: where it is, which location it counts as, and whether it answered."""

    name: str
    type: str
    site: str
    location: str
    copies: int                  # copies the catalog records there (any state)
    reachable: Optional[bool]    # None: not checked (an S3 target holding no recorded copy)
    reason: str = ""


def location_groups(config) -> List[Dict[str, Any]]:
    """The config's locations: each with its targets and their sites (one device, bucket or site)."""
    groups: Dict[str, List[str]] = {}
    for name in config.storage:
        groups.setdefault(config.location_of(name), []).append(name)
    return [{"location": loc, "targets": names, "sites": sorted({config.storage[n].site for n in names})}
            for loc, names in sorted(groups.items())]


def check_targets(config, catalog: Catalog, names: Optional[List[str]], rows: Sequence[Dict[str, Any]], *,
                  now: Optional[_dt.datetime] = None) -> List[TargetStatus]:
    """Is every storage target there? Cheap checks, one per target: those in `names`, or, when
    `names` is None (a filtered status), the targets of `rows`.

    A folder target: its root exists, is a folder, and is not empty when the catalog records copies
    there (an unmounted mount point looks empty). An S3 target holding recorded copies: one HEAD
    request of its bucket (it answers, the credentials are accepted, the bucket exists), no
    retries, short timeouts (S3_CHECK_TIMEOUTS). Never raises."""
    recorded: Dict[str, List[str]] = {}
    for r in rows:
        if r["state"] != ABSENT:
            recorded.setdefault(r["target"], []).append(r["bag_id"])
    if names is None:
        names = sorted({r["target"] for r in rows})
    out: List[TargetStatus] = []
    for name in names:
        target = config.storage.get(name)
        if target is None:
            continue
        held = recorded.get(name, [])
        reachable, reason = _reach(target, held)
        out.append(TargetStatus(name=name, type=target.type, site=target.site, location=config.location_of(name),
                                copies=len(held), reachable=reachable, reason=reason))
    return out


def _reach(target, held: Sequence[str]) -> Tuple[Optional[bool], str]:
    import os

    if target.type == "filesystem":
        root = target.root
        try:
            if not os.path.lexists(root):
                return False, f"its root folder {root} does not exist (not mounted, or moved?)"
            if not os.path.isdir(root):
                return False, f"its root {root} is not a folder"
            if held:
                with os.scandir(root) as entries:
                    if next(entries, None) is None:
                        return False, (f"its root folder {root} is empty although the catalog records copies "
                                       f"there: is the volume mounted?")
        except OSError as exc:
            return False, f"its root folder {root} cannot be read ({exc.strerror or exc})"
        return True, ""
    if not held:
        return None, "not checked: the catalog records no copy there"
    import dataclasses
    import types as _types

    from strongroom.bag_id import BagId
    from storage_adapters.registry import open_target

    quick = dataclasses.replace(target, options=_types.MappingProxyType({**target.options, **S3_CHECK_TIMEOUTS}))
    try:
        adapter = open_target(quick)
        check = getattr(adapter, "ensure_bucket", None)   # one HEAD of the bucket
        if check is not None:
            check()
        elif not adapter.has_bag(BagId.parse(held[0])):
            return False, f"it holds nothing of {held[0]}, which the catalog records there"
    except Exception as exc:  # noqa: BLE001 - any failure to answer is what this check reports
        return False, f"it does not answer ({type(exc).__name__}: {exc})"[:300]
    return True, ""
