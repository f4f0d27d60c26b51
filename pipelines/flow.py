"""The deposit workflow's steps as plain functions (the Luigi tasks in `tasks.py` only wire them).

A deposit's progress lives in a small state folder in staging (`.state/<deposit key>/`):
the request (`deposit.json`), the bags built (`bags.json`) and one marker per finished step.
Every marker is written atomically after its step's effects are durable, so a rerun after a
crash (kill -9 included) redoes at most the step that was interrupted, and every step is
idempotent: storage puts skip identical files, catalog writes skip what is already recorded,
events carry ids derived from (deposit, bag, target, step) and are appended only once.

A second deposit of the same source (same library and collection) while the first is not
finished *resumes* it; once the first has finished, it is a new deposit with new bag ids.
Deposits of different sources never share bag ids, even when started in the same second: a
new deposit claims its time stamp atomically (`ingest.naming.claim_stamp`, staging/.claims/),
and a deposit whose bag ids turn out to be another's (left by a version without claims) is set
aside, never resumed, and never records anything about the other deposit's copies.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional, Sequence

from catalog.bag_records import records_from_parts
from catalog.access import open_catalog
from catalog.catalog import Catalog
from catalog.schema import EventRecord, ReplicaRecord
from ingest.deposit_states import ABANDONED, STATE_DIR, read_json, state_name
from strongroom.bag_id import BagId
from ingest.naming import CLAIMS_DIR, claim_owner, claim_stamp, take_claim
from pipelines.admission import admit_deposit
from strongroom import NAME, __version__, durable
from strongroom.errors import PreservationError, StagingError, UsageError
from strongroom.fstree import remove_tree

if TYPE_CHECKING:
    from storage_adapters.replicate import BagInventory

AGENT = f"{NAME} {__version__}"
_EVENT_NS = uuid.UUID("7f0c6a52-3f43-4d0e-9a55-5b1d2b3c0a11")


@dataclass
class DepositState:
    """What was asked for; stored in `deposit.json` so reruns and luigid workers agree."""

    key: str
    source: str
    library: str
    collection: str
    collection_type: str
    policy: str
    title: str
    stamp: str
    created_at: str
    config_path: str
    follow_internal_links: bool = False
    replaces: str = ""  # an unfinished deposit of the same source set aside (its bag ids were not its own)
    no_virus_check: bool = False  # --no-virus-check (refused when the policy says virus_check: required)
    new_version: bool = False  # --new-version: store what changed since the collection's earlier bags

    def state_dir(self, staging: Path) -> Path:
        return Path(staging) / STATE_DIR / self.key


def write_json_atomic(path, data, *, compact: bool = False) -> None:
    """Write one record of a deposit's state (deposit.json, bags.json, a step's marker, the event
    journal, done.json) atomically; every state write of the workflow comes through here.

    Why not `strongroom.durable.atomic_write_json` directly: staging can fill up (or turn
    read-only, or fail) between the staging phase and the last marker. A write under
    staging/.state that fails then raises the StagingError the staging phase raises (exit 1,
    naming the staging folder and what to do, rerun helps) instead of a raw OSError; the write
    being atomic, the state so far is intact and the same command resumes from it.
    """
    _write_state(path, lambda: durable.atomic_write_json(path, data, compact=compact))


def _write_state(path, write) -> None:
    """Run `write()` (an atomic write of `path` under staging/.state), its OSError as StagingError."""
    try:
        write()
    except OSError as exc:
        staging = _staging_of(path)
        if staging is None:
            raise
        raise _state_error(staging, path, exc) from exc


def _staging_of(path) -> Optional[Path]:
    """The staging folder holding `path` in its STATE_DIR, or None for a path outside one."""
    for folder in Path(os.path.abspath(os.fspath(path))).parents:
        if folder.name == STATE_DIR:
            return folder.parent
    return None


def _state_error(staging: Path, path, exc: OSError) -> StagingError:
    from ingest.stage import staging_error

    rel = os.path.relpath(os.path.abspath(os.fspath(path)), staging)
    return staging_error(staging, exc.errno or 0, exc.strerror or str(exc), f"writing the deposit's state {rel}",
                         kept="the deposit's state so far is kept and the rerun resumes from it")


def failures(staging: Path, state: DepositState) -> List[dict]:
    folder = state.state_dir(staging) / "failures"
    return [read_json(p) for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []


# --- opening a deposit ------------------------------------------------------------------------

def open_deposit(config, *, source, library: str, collection: str, collection_type: str,
                 policy: str, title: str = "", follow_internal_links: bool = False,
                 now: Optional[datetime] = None, no_virus_check: bool = False,
                 new_version: bool = False) -> DepositState:
    """Resume the unfinished deposit of this source into this collection, or start a new one.

    A new deposit's time stamp (so its bag ids) is claimed atomically (`ingest.naming.claim_stamp`):
    two deposits into one collection in the same second get different stamps, never one bag id.
    The whole decision runs under a lock on the staging area, so two runs of the same deposit at
    once also agree on one deposit instead of starting two.
    """
    admit_deposit(config, library, collection, policy)  # registry, bindings, case collisions: exit 2
    staging = Path(config.staging)
    real_source = os.path.realpath(source)
    with _opening(staging):
        replaced = ""
        for existing in _deposit_states(staging):
            if (existing.source, existing.library, existing.collection) == (real_source, library, collection) \
                    and not (existing.state_dir(staging) / "done.json").exists():
                if existing.policy != policy or existing.collection_type != collection_type:
                    raise UsageError(
                        f"an unfinished deposit of {real_source} into {library}/{collection} "
                        f"(started {existing.created_at}, policy {existing.policy}, type {existing.collection_type}) "
                        "must be finished first: rerun it with the same --type/--policy"
                    )
                clash = stamp_clash(config, existing)
                if clash is None:
                    return existing
                abandon(staging, existing, clash)  # never resume onto another deposit's bag ids
                replaced = existing.key
        now = now or datetime.now(timezone.utc)

        def key_for(stamp: str) -> str:
            digest = hashlib.sha256(f"{real_source}\0{library}\0{collection}\0{stamp}".encode()).hexdigest()[:16]
            return f"{library}-{collection}-{stamp}-{digest}"

        stamp = claim_stamp(staging / CLAIMS_DIR, library, collection, now, owner=key_for,
                            taken=_used_stamps(config, staging, library, collection))
        state = DepositState(
            key=key_for(stamp), source=real_source, library=library, collection=collection,
            collection_type=collection_type, policy=policy, title=title, stamp=stamp,
            created_at=now.isoformat(), config_path=str(config.path), follow_internal_links=follow_internal_links,
            replaces=replaced, no_virus_check=no_virus_check, new_version=new_version,
        )
        write_json_atomic(state.state_dir(staging) / "deposit.json", asdict(state))
    return state


@contextmanager
def _opening(staging: Path):
    """An exclusive lock on the staging area while a deposit is looked up or started."""
    folder = staging / CLAIMS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def load_deposit(staging: Path, key: str) -> DepositState:
    return DepositState(**read_json(Path(staging) / STATE_DIR / key / "deposit.json"))


def _deposit_states(staging: Path):
    """Every deposit still to be resumed or finished (abandoned ones are history, not work)."""
    root = staging / STATE_DIR
    if not root.is_dir():
        return
    for entry in sorted(root.iterdir()):
        f = entry / "deposit.json"
        if f.is_file() and not (entry / ABANDONED).exists():
            yield DepositState(**read_json(f))


def _used_stamps(config, staging: Path, library: str, collection: str):
    """taken(stamp): a stamp some bag of this collection already has, wherever it is recorded: a
    deposit's state (also one from before claims existed), staging, the catalog, or a folder target."""
    states = {s.stamp for s in _deposit_states(staging) if (s.library, s.collection) == (library, collection)}
    catalogued = set()
    for bag_id in open_catalog(config).bags(library=library, collection=collection).column("bag_id").to_pylist():
        try:
            catalogued.add(BagId.parse(bag_id).stamp)
        except UsageError:
            continue
    folders = [staging / library / collection]
    folders += [Path(t.root) / library / collection for t in config.storage.values()
                if t.type == "filesystem" and t.root is not None]

    def taken(stamp: str) -> bool:
        return stamp in states or stamp in catalogued or any(
            any(folder.glob(f"{stamp}-*")) for folder in folders if folder.is_dir())

    return taken


def stamp_clash(config, state: DepositState) -> Optional[str]:
    """Why this deposit's bag ids are not (or no longer) its own, or None when they are.

    Its stamp must be claimed by it (a deposit started before claims existed claims it now), and
    no bag of that stamp may be registered from another source.
    """
    staging = Path(config.staging)
    if not take_claim(staging / CLAIMS_DIR, state.library, state.collection, state.stamp, state.key):
        owner = claim_owner(staging / CLAIMS_DIR, state.library, state.collection, state.stamp)
        return (f"its bag ids {state.library}/{state.collection}/{state.stamp}-N are claimed by another deposit "
                f"({owner or 'unknown'})")
    prefix = f"{state.library}/{state.collection}/{state.stamp}-"
    for row in open_catalog(config).bags(library=state.library, collection=state.collection).to_pylist():
        if str(row["bag_id"]).startswith(prefix) and row.get("source_path") != state.source:
            return f"bag {row['bag_id']} is already registered, from {row.get('source_path')}"
    return None


def abandon(staging: Path, state: DepositState, why: str) -> None:
    """Set a deposit aside for good: it is never resumed, and nothing of it (or of the deposit it
    clashed with) is removed; the next deposit of its source starts anew with a fresh stamp."""
    write_json_atomic(state.state_dir(staging) / ABANDONED,
                      {"deposit": state.key, "why": why, "at": datetime.now(timezone.utc).isoformat()})


def unfinished_key(config, source, library: str, collection: str) -> Optional[str]:
    """The key of the unfinished deposit of this source into this collection, or None."""
    staging, real = Path(config.staging), os.path.realpath(source)
    for state in _deposit_states(staging):
        if (state.source, state.library, state.collection) == (real, library, collection) \
                and not (state.state_dir(staging) / "done.json").exists():
            return state.key
    return None


def abandon_deposit(config, key: str, reason: str) -> dict:
    """`deposit --abandon KEY --reason TEXT`: give up an unfinished or failed deposit for good.

    Recorded twice: `abandoned.json` in its state folder (why, when, by whom; `status` lists it
    as abandoned instead of failing on it) and a ledger event with the reason. Nothing is
    deleted: its state and staged bags stay where they are, and a copy already written or
    verified on a replica stays too (never registered, so no audit counts it). The next deposit
    of the source starts anew, with new bag ids.
    """
    staging = Path(config.staging)
    if not key or key in (".", "..") or "/" in key or "\\" in key or "\0" in key:
        raise UsageError(f"--abandon {key!r}: not a deposit key (as `strongroom status` shows it)")
    folder = staging / STATE_DIR / key
    if not (folder / "deposit.json").is_file():
        raise UsageError(f"--abandon {key}: no such deposit in {staging / STATE_DIR} "
                         "(`strongroom status` lists the unfinished ones)", path=str(folder))
    with _opening(staging):
        state = load_deposit(staging, key)
        if (folder / "done.json").exists():
            raise UsageError(f"--abandon {key}: that deposit finished; its bags are preserved and there is "
                             "nothing to abandon", path=str(folder))
        if (folder / ABANDONED).exists():
            earlier = read_json(folder / ABANDONED)
            return {"deposit": key, "already": True, "reason": earlier.get("reason") or earlier.get("why"),
                    "at": earlier.get("at"), "exit_code": 0}
        from ingest.deposit_states import unfinished_deposits

        bags = next((d.bags for d in unfinished_deposits(staging) if d.key == key), [])
        now = datetime.now(timezone.utc)
        from strongroom.agent import operator as current_operator

        operator = current_operator()
        record = {"deposit": key, "why": reason, "reason": reason, "at": now.isoformat(), "by": operator,
                  "requested": True, "bags": bags}
        append_once(open_catalog(config), journal=state.state_dir(staging) / "events", events=[EventRecord(
            type="deposit abandoned", outcome="success", agent=AGENT, object_type="bag", agent_library=state.library,
            bag_id=bags[0]["id"] if bags else None, datetime=now, event_id=event_id(state, "abandon"),
            detail=f"deposit {key} of {state.source} into {state.library}/{state.collection} abandoned by "
                   f"{operator}: {reason}; its state and staged files are kept, nothing stored was deleted")])
        write_json_atomic(folder / ABANDONED, record)
    return {**record, "library": state.library, "collection": state.collection, "source": state.source,
            "kept": str(folder), "exit_code": 0}


# --- the steps ------------------------------------------------------------------------------

def build_bags(config, state: DepositState, *, workers: int = 1, progress=None, identifier=None, scan=None):
    """Ingest the source into validated bag(s) in staging; returns ([{'id', 'path', ...}], warnings)."""
    from ingest.bag import discard
    from ingest.deposit import INCOMPLETE, DepositRequest, ingest, work_dir_prefix

    staging = Path(config.staging)
    clash = stamp_clash(config, state)
    if clash is not None:
        # Never build (or clean up) under another deposit's bag ids: set this one aside, so the
        # same command run again starts a fresh deposit of the source with bag ids of its own.
        abandon(staging, state, clash)
        raise PreservationError(f"deposit {state.key} was set aside: {clash}; nothing of either deposit was "
                                f"changed. Run the same command again to deposit {state.source} under new "
                                f"bag ids", path=state.source, rerun_helps=True)
    for stale in (staging / state.library / state.collection).glob(f"{state.stamp}-*"):
        remove_tree(stale, strict=True)  # built by a run that crashed before recording them: rebuild
    prefix = work_dir_prefix(state.library, state.collection, state.stamp)
    for stale in (staging / INCOMPLETE).glob(prefix + "*"):
        discard(stale)  # half-built by a run that was killed while staging
    for stale in (staging / INCOMPLETE).glob("." + prefix + "*"):
        stale.unlink(missing_ok=True)  # a temp file (premis.xml being written) of a killed run
    from ingest import virus

    policy = config.policy(state.policy)
    scanning = virus.setup(config, policy, quarantine_dir=staging / virus.QUARANTINE / state.key,
                           source=state.source, no_virus_check=state.no_virus_check)
    request = DepositRequest(
        source=Path(state.source), library=state.library, collection=state.collection,
        collection_type=state.collection_type, policy=policy, staging=staging,
        title=state.title, workers=workers, follow_internal_links=state.follow_internal_links,
        stamp=state.stamp, progress=progress, virus=scanning,
        earlier=earlier_bags(open_catalog(config), state.library, state.collection), new_version=state.new_version,
        state_dir=state.state_dir(staging),
    )
    result = ingest(request, identifier=identifier, scan=scan)
    if result.duplicate is not None:
        record_duplicate(config, state, result.duplicate)
    return [
        {"id": str(b.bag_id), "path": str(b.path), "files": b.file_count, "bytes": b.byte_count,
         "external_identifier": f"urn:uuid:{b.external_id}",
         **({"fetched_files": b.fetched_files, "fetched_bytes": b.fetched_bytes} if b.fetched_files else {}),
         **({"virus_check": result.virus[str(b.bag_id)]} if str(b.bag_id) in result.virus else {})}
        for b in result.bags
    ], result.warnings


def earlier_bags(catalog: Catalog, library: str, collection: str):
    """The collection's registered bags (`ingest.versions.Earlier`), what a new deposit is
    compared with to find a duplicate or the files a new version need not store. Their files
    are read per bag group when the comparison needs them, not all of the collection at once."""
    import pyarrow as pa

    from catalog.tombstones import without_withdrawn
    from ingest.versions import Earlier

    # A withdrawn bag holds nothing any more: never a duplicate's original, never a fetch source.
    bags = without_withdrawn(catalog, catalog.bags(library=library, collection=collection))

    def load(ids):
        return pa.concat_tables([catalog.files(b) for b in ids]) if ids else catalog.files("")

    return Earlier.from_bags(bags, load)


DUPLICATE = "duplicate.json"


def record_duplicate(config, state: DepositState, duplicate) -> None:
    """A deposit identical to an earlier bag group: the decision goes into the deposit's state
    (`duplicate.json`, what the CLI reports) and the ledger (an `ingestion` event with outcome
    `warning` on the earlier group's first bag), before the deposit finishes with no bag."""
    staging = Path(config.staging)
    message = duplicate.message(state.source)
    write_json_atomic(state.state_dir(staging) / DUPLICATE, {"deposit": state.key, "message": message,
                                                             **duplicate.to_dict()})
    append_once(open_catalog(config), journal=state.state_dir(staging) / "events", events=[EventRecord(
        type="ingestion", outcome="warning", agent=AGENT, object_type="bag", bag_id=duplicate.bag_ids[0],
        detail=f"duplicate deposit: {message}", event_id=event_id(state, "duplicate"))])


def duplicate_of(staging: Path, state: DepositState) -> Optional[dict]:
    """The duplicate decision recorded for this deposit, or None."""
    path = state.state_dir(staging) / DUPLICATE
    return read_json(path) if path.exists() else None


def event_id(state: DepositState, *parts: str) -> str:
    return str(uuid.uuid5(_EVENT_NS, "/".join((state.key,) + parts)))


def append_once(catalog: Catalog, events: Sequence[EventRecord], journal: Path) -> None:
    """Append events not yet in the ledger: a rerun of a step must not record it twice.

    The step's events get a journal file once appended. Only when an earlier run crashed
    between declaring its intent and writing that journal is the ledger itself searched (a scan
    of every segment); the ordinary path costs two small local files, not a ledger query.
    """
    name = hashlib.sha256("".join(e.event_id for e in events).encode()).hexdigest()[:24]
    done, intent = journal / f"{name}.done", journal / f"{name}.intent"
    if done.exists():
        return
    fresh = list(events)
    if intent.exists():
        known = set()
        for bag_id in {e.bag_id for e in events}:
            known.update(catalog.events(bag_id=bag_id).column("event_id").to_pylist())
        fresh = [e for e in events if e.event_id not in known]
    else:
        write_json_atomic(intent, [e.event_id for e in events])
    if fresh:
        catalog.append_events(fresh)
    write_json_atomic(done, [e.event_id for e in events])


def keep_bag_check(state_dir: Path, bag: dict) -> bool:
    """Make sure the staged bag's check is kept in the deposit's state (`ingest.bag_check`), for
    Replicate, Verify (the inventory) and Register (the catalog rows). Returns True when the bag
    had to be checked again: its kept result was missing, unreadable or of another build (a
    bag staged by an older version, which kept none); a bag that fails raises PreservationError."""
    from ingest import bag_check

    if bag_check.is_kept(state_dir, bag["id"], bag["external_identifier"]):
        return False
    check = bag_check.check_staged(Path(bag["path"]), bag["id"], allow_fetched=True)
    if check.external_identifier != bag["external_identifier"]:
        raise PreservationError(f"the staged bag {bag['id']} is not the one built (External-Identifier "
                                f"{check.external_identifier}, built as {bag['external_identifier']})",
                                path=bag["path"])
    _write_state(bag_check.kept_paths(state_dir, bag["id"])[0], lambda: bag_check.keep(check, state_dir))
    return True


def load_inventory(path: Path, bag_dir) -> "BagInventory":
    """The inventory the bag's check kept (`ingest.bag_check`), or (a deposit validated by an
    older version, which kept none) the one taken from the staged bag now.

    Why kept: Replicate and Verify of every target need it; rebuilding it from the bag each
    time (a walk, the manifests parsed, a stat per file, the tag manifests hashed) cost 0.55 s
    per call at 20,000 files. Nothing is trusted more for being kept: every byte copied is
    still checked against these digests, and every replica re-read."""
    from storage_adapters.replicate import BagInventory, bag_inventory

    if not Path(path).exists():
        return bag_inventory(bag_dir)
    data = read_json(path)
    return BagInventory(data["digests"], data["sizes"])


def replicate_to(config, state: DepositState, bag: dict, target_name: str, *, progress=None, inventory=None):
    """Copy one staged bag to one target (skipping files already there identically)."""
    from storage_adapters.registry import open_target
    from storage_adapters.replicate import replicate_bag

    target = config.target(target_name)
    catalog = open_catalog(config)
    bag_id = BagId.parse(bag["id"])
    retention = config.policy(state.policy).retention
    try:
        adapter = open_target(target, retention=retention)
        if target_name == placing_target(config, state, bag):
            adapter.place_from = Path(bag["path"])
        result = replicate_bag(adapter, bag["path"], bag_id, progress=progress, inventory=inventory)
        # A run killed between naming a file and removing its temp name leaves that temp behind;
        # the file itself is whole, so the rerun skips it and nothing else would remove the temp.
        adapter.cleanup_temp(bag_id)
    except PreservationError as exc:
        _record_failure(config, catalog, state, bag_id, target, "replication", str(exc))
        raise
    write_json_atomic(checked_path(state.state_dir(Path(config.staging)), bag["id"], target_name),
                      {"bag": bag["id"], "target": target_name, "external_identifier": bag["external_identifier"],
                       "stamps": result.checked}, compact=True)
    return result


def checked_path(state_dir: Path, bag_id: str, target_name: str) -> Path:
    """Where Replicate keeps the stamps of the files a target re-read and checked after they were
    made durable (`ReplicateResult.checked`), for that target's Verify."""
    return Path(state_dir) / f"{state_name(bag_id)}.{target_name}.checked.json"


def load_checked(state_dir: Path, bag: dict, target_name: str) -> dict:
    """The stamps Replicate kept for this build of the bag on this target, or {} (none kept, a
    file of another build or target, unreadable): Verify then reads every file."""
    from storage_adapters.base import CheckedStamp

    try:
        data = read_json(checked_path(state_dir, bag["id"], target_name))
        if (data.get("bag"), data.get("target"), data.get("external_identifier")) != \
                (bag["id"], target_name, bag["external_identifier"]):
            return {}
        return {relpath: CheckedStamp(*stamp) for relpath, stamp in data["stamps"].items()}
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return {}


def placing_target(config, state: DepositState, bag: dict) -> Optional[str]:
    """The one target that may place the staged files (`storage_adapters.fs_place`) instead of
    copying them: the policy's first folder target on the staged bag's file system, or None.

    Why one: a placed file shares its inode with the staged copy, and two targets sharing one
    inode would not be two independent copies; every other target gets a copy. The choice is
    made again on every run, so it needs no state: a rerun whose config changed may pick
    another target, and fs_place then copies every staged file already placed elsewhere.
    """
    try:
        dev = os.stat(bag["path"]).st_dev
    except OSError:
        return None
    for name in config.policy(state.policy).replicas:
        target = config.target(name)
        if target.type != "filesystem" or target.root is None:
            continue
        try:
            if os.stat(target.root).st_dev == dev:
                return name
        except OSError:
            continue
    return None


def verify_on(config, state: DepositState, bag: dict, target_name: str, *, progress=None, inventory=None):
    """Re-read the replica, compare every digest with the staged bag's manifests, record the outcome."""
    from storage_adapters.registry import open_target
    from storage_adapters.replicate import bag_inventory, verify_replica

    target = config.target(target_name)
    catalog = open_catalog(config)
    bag_id = BagId.parse(bag["id"])
    if inventory is None:
        inventory = bag_inventory(bag["path"])
    checked = load_checked(state.state_dir(Path(config.staging)), bag, target_name)
    try:
        adapter = open_target(target)
        result = verify_replica(adapter, bag_id, inventory.digests, inventory.sizes, deep=True,
                                workers=adapter.parallel_reads, progress=progress, checked=checked)
    except PreservationError as exc:
        _record_failure(config, catalog, state, bag_id, target, "fixity check", str(exc))
        raise
    now = datetime.now(timezone.utc)
    if not result.ok:
        detail = "; ".join(result.problems[:20])
        _record_failure(config, catalog, state, bag_id, target, "fixity check", detail)
        raise PreservationError(f"replica of {bag_id} on {target_name} failed verification after writing",
                                path=adapter.location(bag_id), problems=result.problems)
    reread = result.bytes_checked + result.bytes_unchanged
    catalog.record_replica(ReplicaRecord(
        bag_id=str(bag_id), target=target.name, site=target.site, state="verified", verified_at=now,
        last_audit_at=now, last_audit_kind="deep", last_audit_outcome="success",
        detail=f"{result.files_checked} files, {reread} bytes re-read and matched",
    ))
    append_once(catalog, journal=state.state_dir(Path(config.staging)) / "events", events=[
        EventRecord(type="replication", outcome="success", agent=AGENT, object_type="replica",
                    bag_id=str(bag_id), target=target.name,
                    detail=f"copied to {adapter.location(bag_id)} ({target.site})",
                    event_id=event_id(state, bag["id"], target.name, "replication"), datetime=now),
        EventRecord(type="fixity check", outcome="success", agent=AGENT, object_type="replica",
                    bag_id=str(bag_id), target=target.name,
                    detail=f"deep verification after writing: {result.files_checked} files matched their manifests"
                           + _how_verified(result),
                    event_id=event_id(state, bag["id"], target.name, "verify"), datetime=now),
    ])
    return result


def _how_verified(result) -> str:
    """How the files of a Verify were re-read, for its event: by Replicate, after their flush and
    before their names (and unchanged since), or now."""
    if not result.files_unchanged:
        return ""
    return (f" ({result.files_unchanged} re-read and checked after they were made durable, before they were "
            f"named, and unchanged since (inode, size, times); {result.files_checked - result.files_unchanged} "
            "re-read now)")


def _record_failure(config, catalog: Catalog, state: DepositState, bag_id: BagId, target, kind: str,
                    detail: str) -> None:
    """Record that this deposit's copy failed. Only ever about this deposit's own bag: never for a
    bag id it does not hold the claim on, nor for a bag already registered (its copies are then
    the audit's to judge); the failure itself still stops the step and is reported."""
    if catalog.has_bag(str(bag_id)) or stamp_clash(config, state) is not None:
        return
    now = datetime.now(timezone.utc)
    catalog.record_replica(ReplicaRecord(bag_id=str(bag_id), target=target.name, site=target.site,
                                         state="failed", detail=detail[:2000]))
    catalog.append_events([EventRecord(type=kind, outcome="failure",
                                       agent=AGENT, object_type="replica", bag_id=str(bag_id), target=target.name,
                                       detail=detail[:2000], datetime=now)])


def register(config, state: DepositState, bag: dict) -> None:
    """Record the bag and its files in the catalog once every policy replica is verified: the
    rows of the bag as its one check read it (kept by `finish_bag` or ValidateBag), not parsed
    from the staged bag again."""
    from ingest import bag_check

    catalog = open_catalog(config)
    bag_id = BagId.parse(bag["id"])
    state_dir = state.state_dir(Path(config.staging))
    kept = bag_check.load_records(state_dir, bag["id"], bag["external_identifier"])
    if kept is None:  # lost since ValidateBag: the staged bag (still there) is checked again
        keep_bag_check(state_dir, bag)
        kept = bag_check.load_records(state_dir, bag["id"], bag["external_identifier"])
        assert kept is not None
    info, digests, described = kept
    record, files = records_from_parts(info, digests, described, bag_id, bag["path"])
    record = type(record)(**{**asdict(record), "source_path": state.source})
    catalog.add_bag(record, files)
    policy = config.policy(state.policy)
    events = []
    if bag.get("virus_check"):
        from ingest.virus import agent_note, detail_text

        check = bag["virus_check"]
        events.append(EventRecord(
            type="virus check", outcome=check["outcome"], agent=agent_note(check), object_type="bag",
            bag_id=str(bag_id), detail=f"at ingest (virus_check: {check['mode']}): {detail_text(check)}",
            event_id=event_id(state, bag["id"], "virus check"),
            datetime=datetime.fromisoformat(check["checked_at"])))
    events.append(EventRecord(
        type="ingestion", outcome="success", agent=AGENT, object_type="bag", bag_id=str(bag_id),
        detail=f"preserved: {record.file_count} files, {record.byte_count} bytes, verified on "
               f"{', '.join(policy.replicas)} (policy {policy.name})",
        event_id=event_id(state, bag["id"], "register"),
    ))
    append_once(catalog, journal=state.state_dir(Path(config.staging)) / "events", events=events)


def finish(config, state: DepositState, bags: List[dict]) -> dict:
    """All bags preserved: drop the staged copies (the verified replicas are the archive).

    Files one target placed (`placing_target`) lose only their staged name here: their inode is
    that target's verified copy."""
    for bag in bags:
        remove_tree(bag["path"])  # not shutil.rmtree: it recurses, and bags may be 1,000+ folders deep
    summary = {"deposit": state.key, "bags": [b["id"] for b in bags],
               "finished_at": datetime.now(timezone.utc).isoformat()}
    write_json_atomic(state.state_dir(Path(config.staging)) / "done.json", summary)
    return summary
