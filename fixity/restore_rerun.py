"""Finishing a restore that was killed after DEST was put in place, before it was recorded.

Why a module of its own: the rerun reads no replica; it only proves that DEST is exactly what
the earlier run restored and records that run's event, once. fixity.restore_dest keeps the
lock file and its state line (and needs no catalog); this part reads and writes the catalog.

The findings (bad copies, replica states) are recorded before the rename; just before it, the
lock file gets a state line (the bag, --payload-only, the dissemination event with its id and
detail, the tag files' sizes and sha256, the folders). The same command rerun finds DEST
completed by its own earlier run, re-verifies it read-only against the catalog's digests
(every file, size and digest; no extra file, folder or link), records the event (once: its id
is checked in the ledger first) and removes the lock file: exit 0. Any difference is exit 1
naming the files, with nothing deleted and the lock file kept; a rerun with another bag or
options is refused (exit 2), as is a DEST no state line vouches for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence, Tuple

from catalog.access import open_catalog
from catalog.catalog import Catalog
from catalog.schema import EventRecord
from strongroom import bagit_spec
from strongroom.bag_id import BagId
from strongroom.errors import PreservationError, UsageError
from fixity.restore_dest import TempFolder, verify_tree
from fixity.restore_result import AGENT, DETAIL_MAX as _DETAIL_MAX, RestoreResult
from fixity.restore_sources import bag_files


def complete_earlier(config, catalog: Optional[Catalog], bag_id: BagId, dest: Path, payload_only: bool,
                     temp: TempFolder, *, subject: Optional[str] = None,
                     parts: Optional[Sequence[Tuple[BagId, str]]] = None) -> RestoreResult:
    """Finish a restore whose earlier run put DEST in place and was stopped before recording it.

    Only the same bag with the same --payload-only is finished (else UsageError, exit 2, and the
    lock file with its state line is kept for that command). DEST is checked again, read-only,
    against the catalog's digests for the payload and the state line's sha256 for the tag files,
    and against the folders it listed: any difference is a PreservationError (exit 1) naming the
    files, nothing deleted, the lock file kept. Then the dissemination event the earlier run
    would have recorded is recorded, unless the ledger already holds its id.

    A restore of several bags into one DEST (fixity.restore_group) passes `subject` (what the
    state line names: the deposit or collection version), `parts` (each bag and the folder of
    DEST it was written to, "" for DEST itself); its state line lists one event per bag.
    """
    state = temp.earlier or {}
    subject = subject or str(bag_id)
    parts = list(parts or [(bag_id, "")])
    group = "events" in state     # the earlier run restored a deposit or collection version
    command = f"strongroom restore {'--deposit ' if group else ''}{state.get('bag')} {dest}"
    theirs = f"{state.get('bag')}" + (" with --payload-only" if state.get("payload_only") else "")
    if state.get("bag") != subject or bool(state.get("payload_only")) != payload_only:
        temp.keep_lock = True
        raise UsageError(f"is not empty: it holds a restore of {theirs} that was put in place by a run stopped before "
                         f"it was recorded; rerun that restore (`{command}"
                         f"{' --payload-only' if state.get('payload_only') else ''}`) to check and record it, or "
                         "remove the folder and its lock file "
                         f"({temp.lock_path.name}) and restore afresh", path=str(dest))
    left_out = {str(m) for m in state.get("missing") or ()}
    try:
        catalog = catalog or open_catalog(config)
        expected: Dict[str, Tuple[int, Mapping[str, str]]] = {}
        for part, prefix in parts:
            _, files = bag_files(catalog, part)
            for f in files:
                if f.path in left_out or f"{part}/{f.path}" in left_out:
                    continue
                rel = f.path[len(bagit_spec.PAYLOAD_DIR) + 1:] if payload_only else f.path
                expected[f"{prefix}/{rel}" if prefix else rel] = (f.size, f.digests)
        if not payload_only:
            for rel, (size, sha256) in dict(state.get("tags") or {}).items():
                expected[str(rel)] = (int(size), {"sha256": str(sha256)})
        problems = verify_tree(dest, expected, {str(d) for d in state.get("dirs") or ()})
    except BaseException:
        temp.keep_lock = True    # whatever went wrong, the proof that DEST is ours stays
        raise
    if problems:
        temp.keep_lock = True
        raise PreservationError(f"holds the restore of {theirs} that an earlier run put in place and did not record, "
                                f"but {len(problems)} thing(s) in it differ from what was restored; nothing was "
                                "deleted or recorded: look at the files named, then remove the folder and its lock "
                                f"file ({temp.lock_path.name}) and restore again", path=str(dest), problems=problems)
    summary = dict(state.get("result") or {})
    result = RestoreResult(bag_id=subject, dest=str(dest), payload_only=payload_only,
                           files=int(summary.get("files", 0)), bytes=int(summary.get("bytes", 0)),
                           tag_files=int(summary.get("tag_files", 0)), empty_dirs=int(summary.get("empty_dirs", 0)),
                           sources=dict(summary.get("sources") or {}), tag_source=summary.get("tag_source"),
                           partial=bool(state.get("partial")), missing=sorted(left_out))
    result.warnings.append(f"{dest} was put in place by an earlier run of this restore that was stopped before it "
                           "recorded it; every file was checked again against the catalog and found exact")
    events = state.get("events") or [[str(bag_id), state.get("event_id"), state.get("detail"), state.get("outcome")]]
    for bag, event_id, detail, outcome in events:
        event_id = str(event_id or "")
        have = set(catalog.events(bag_id=str(bag), type="dissemination").column("event_id").to_pylist())
        if event_id and event_id in have:
            result.events.append(event_id)      # recorded already: the earlier run was stopped just after
            continue
        detail = (str(detail or f"restored {bag} to {dest}") +
                  "; put in place by a run stopped before it recorded this, every file checked again by the rerun")
        event = EventRecord(type="dissemination", outcome=str(outcome or "success"), detail=detail[:_DETAIL_MAX],
                            agent=AGENT, object_type="bag", bag_id=str(bag),
                            **({"event_id": event_id} if event_id else {}))
        catalog.append_events([event])
        result.events.append(event.event_id)
    return result


__all__ = ["complete_earlier"]
