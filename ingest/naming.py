"""Claims on deposit time stamps: two deposits of one collection never share a bag id.

A new deposit claims its stamp atomically under staging/.claims/ (a folder created with
mkdir, which only one process can win); the bag identifiers themselves (`BagId`, codes and
titles) are the shared vocabulary in `strongroom.bag_id`.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path
from typing import Callable, Optional

from strongroom.bag_id import deposit_stamp
from strongroom.durable import atomic_write_bytes, fsync_dir
from strongroom.errors import PreservationError

# Two deposits into one collection in the same second would compute the same stamp, so the same
# bag ids, and one would overwrite (or fail over, and then record failures against) the other's
# bags. A stamp is therefore *claimed* before it is used: `mkdir` of one folder per
# LIB/COLL/STAMP in staging/.claims/ (atomic, also on NFS: exactly one of two racing processes
# succeeds), holding the owner's key. A claim is never released: a stamp once claimed is never
# handed out again by this staging area, whether its deposit finished, failed or was abandoned.
CLAIMS_DIR = ".claims"
_OWNER = "owner"
#: How far ahead of the clock a stamp may be taken (one per second): only a burst of that many
#: deposits into one collection within the same moment could exhaust it.
_MAX_AHEAD = 3600


def _claim_dir(claims: Path, library: str, collection: str, stamp: str) -> Path:
    # '+' is in no library or collection code (see strongroom.bag_id), so the name is unambiguous
    return Path(claims) / f"{library}+{collection}+{stamp}"


def claim_stamp(claims: Path, library: str, collection: str, now: datetime, *, owner: Callable[[str], str],
                taken: Callable[[str], bool] = lambda stamp: False) -> str:
    """The first stamp at or after `now` that nothing has used (`taken(stamp)` is False: no bag
    of it in the catalog, in staging or on a target) and that this process claimed atomically.
    `owner(stamp)` names the claimant (the deposit's key) so a later run can tell its own stamp
    from another deposit's."""
    claims = Path(claims)
    claims.mkdir(parents=True, exist_ok=True)
    t = now
    for _ in range(_MAX_AHEAD):
        stamp = deposit_stamp(t)
        t += timedelta(seconds=1)
        if taken(stamp):
            continue
        folder = _claim_dir(claims, library, collection, stamp)
        try:
            os.mkdir(folder)
        except FileExistsError:
            continue  # another deposit got this second first: take the next one
        atomic_write_bytes(folder / _OWNER, owner(stamp).encode("utf-8"))
        fsync_dir(claims)
        return stamp
    raise PreservationError(f"no free deposit time stamp for {library}/{collection} within {_MAX_AHEAD} s "
                            f"of {deposit_stamp(now)}; try again later", path=str(claims))


def take_claim(claims: Path, library: str, collection: str, stamp: str, owner: str) -> bool:
    """Claim this exact stamp for `owner` (a deposit started before claims existed), or confirm
    that `owner` holds it. False when another deposit holds it."""
    folder = _claim_dir(Path(claims), library, collection, stamp)
    Path(claims).mkdir(parents=True, exist_ok=True)
    try:
        os.mkdir(folder)
    except FileExistsError:
        return claim_owner(claims, library, collection, stamp) == owner
    atomic_write_bytes(folder / _OWNER, owner.encode("utf-8"))
    return True


def claim_owner(claims: Path, library: str, collection: str, stamp: str) -> Optional[str]:
    """Who claimed the stamp: a deposit key, "" for a claim whose owner was never written
    (its claimant was killed in between: nobody may use it), None if unclaimed."""
    folder = _claim_dir(Path(claims), library, collection, stamp)
    try:
        return (folder / _OWNER).read_text("utf-8")
    except FileNotFoundError:
        return "" if folder.is_dir() else None
