"""Ingest one deposit: from a library's source folder to validated bag(s) in staging.

The steps are domain functions (scan, stage, supplied-checksum check, bag) so the Luigi
tasks in `pipelines/` stay thin and everything here is testable without Luigi.
Nothing in the source is written; if anything fails, every partly built bag is removed and
the error names each file concerned.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Dict, List, Optional

from strongroom.errors import InputError, PreservationError, UsageError
from strongroom.fstree import make_dirs

from . import supplied as supplied_mod
from .bag import BagPlan, BuiltBag, discard, finish_bag
from .metadata import Provenance
from strongroom.bag_id import BagId, check_code, check_title

from .naming import CLAIMS_DIR, claim_stamp
from .scan import ScanResult, scan_source
from .split import plan_parts
from .versions import Duplicate, Earlier, staged_listing
from .stage import StagedFile, StageTask, StagingProblem, make_parent_dirs, staging_error, stage_files

COLLECTION_TYPES = ("purchased", "self-built")
INCOMPLETE = ".incomplete"


@dataclass
class DepositRequest:
    source: Path
    library: str
    collection: str
    collection_type: str
    policy: object  # policies.model.Policy
    staging: Path
    title: str = ""
    workers: int = 1
    follow_internal_links: bool = False
    now: Optional[datetime] = None
    stamp: Optional[str] = None  # fixed by the workflow so a rerun rebuilds the same bag ids
    progress: Optional[Callable[[int, int], None]] = None
    virus: Optional[object] = None  # ingest.virus.VirusSetup; None: no virus check asked for
    earlier: Optional[Earlier] = None  # the collection's registered bags (ingest.versions); None: not compared
    new_version: bool = False  # --new-version: store what changed, reference the rest (fetch.txt)


@dataclass
class DepositResult:
    bags: List[BuiltBag]
    scan: ScanResult
    warnings: List[str] = field(default_factory=list)
    virus: Dict[str, dict] = field(default_factory=dict)  # bag id -> ingest.virus.summarize()
    duplicate: Optional[Duplicate] = None  # identical to an earlier bag group: no bag built

    @property
    def file_count(self) -> int:
        return sum(b.file_count for b in self.bags)

    @property
    def byte_count(self) -> int:
        return sum(b.byte_count for b in self.bags)


def work_dir_prefix(library: str, collection: str, stamp: str) -> str:
    """Start of the names of one deposit's work folders in staging/.incomplete/ ('+' is in no
    library or collection code): a rerun after a crash removes its own leftovers, never another's."""
    return f"{library}+{collection}+{stamp}-"


def ingest(req: DepositRequest, identifier=None, scan: Optional[ScanResult] = None) -> DepositResult:
    """Scan, stage, check supplied checksums, bag and validate. Returns the bags built."""
    check_code(req.library, "library")
    check_code(req.collection, "collection")
    check_title(req.title)
    if req.collection_type not in COLLECTION_TYPES:
        raise UsageError(f"--type must be one of {', '.join(COLLECTION_TYPES)}, not {req.collection_type!r}")
    source = Path(os.path.abspath(req.source))
    staging = Path(os.path.abspath(req.staging))
    _check_apart(source, staging)
    if scan is None:
        scan = scan_source(source, follow_internal_links=req.follow_internal_links)
    if not scan.files:
        # A bag with an empty manifest can be copied and verified but never registered: refuse it
        # now, not after every replica was written (see ingest.preflight).
        raise InputError("the source holds no file (only empty folders or nothing); a bag must hold at least "
                         "one file", path=str(source))
    policy = req.policy
    if identifier is None:
        from .identify import Identifier  # loading FIDO's signatures takes a moment: only when needed

        identifier = Identifier()

    now = req.now or datetime.now(timezone.utc)
    work_dirs: List[Path] = []
    try:
        # From here on the source is read only by stage_files (which reports its problems per
        # file): any OSError that escapes is one of writing staging (full, read-only, failing).
        stamp = req.stamp or _free_stamp(staging, req.library, req.collection, now)
        parts = plan_parts(scan.files, max_bytes=policy.bag.max_bytes, max_files=policy.bag.max_files)
        bag_ids = [BagId(req.library, req.collection, stamp, i + 1) for i in range(len(parts))]
        work_root = staging / INCOMPLETE
        make_dirs(work_root)
        prefix = work_dir_prefix(req.library, req.collection, stamp)
        work_dirs = [work_root / f"{prefix}{i + 1}-{uuid.uuid4().hex[:8]}" for i in range(len(parts))]
        return _build(req, scan, parts, bag_ids, work_dirs, identifier, staging, now)
    except OSError as exc:
        raise staging_error(staging, exc.errno or 0, exc.strerror or str(exc),
                            f"writing {os.fsdecode(exc.filename)}" if isinstance(exc.filename, (str, bytes)) else ""
                            ) from exc
    finally:
        for w in work_dirs:
            discard(w)


def _build(req, scan, parts, bag_ids, work_dirs, identifier, staging: Path, now: datetime) -> DepositResult:
    policy = req.policy
    tasks: Dict[str, StageTask] = {}
    part_of: Dict[str, int] = {}
    for i, (files, work) in enumerate(zip(parts, work_dirs)):
        data = os.fsencode(work / "data")
        for f in files:
            tasks[f.relpath] = StageTask(f, data + b"/" + f.relpath.encode("utf-8"))
            part_of[f.relpath] = i
    virus = req.virus
    scanner = virus.scanner if virus is not None else None
    if virus is not None:
        from .virus import refuse_large

        refuse_large(virus, scan.files)  # large_files: refuse -- before any byte is staged
    make_parent_dirs(tasks.values())
    for w in work_dirs:
        make_dirs(w / "data")

    # 1. Checksum files the depositor supplied: stage them first, then read the staged copies,
    #    so we know which extra algorithms to compute without reading any source byte twice.
    def read_staged(rel: str) -> bytes:
        with open(tasks[rel].dest, "rb") as fh:
            return fh.read()

    first = [t for rel, t in tasks.items() if supplied_mod.may_hold_checksums(rel)]
    first_rel = {t.source.relpath for t in first}
    algorithms = list(policy.checksums)
    staged_first, problems = stage_files(first, algorithms, identifier=identifier, workers=1, scanner=scanner)
    _stop_if_staging_failed(problems, staging)
    _stop_if_scanner_failed(problems, scan.root)
    if problems:
        raise InputError("could not stage the source", path=str(scan.root), problems=problems)
    checksum_specs = supplied_mod.find_checksum_files(first_rel, read_staged)
    supplied: List[supplied_mod.SuppliedDigest] = []
    parse_problems: List[str] = []
    for spec in checksum_specs:
        found, bad = supplied_mod.parse_checksum_file(spec, read_staged(spec.relpath))
        supplied.extend(found)
        parse_problems.extend(bad)
    if parse_problems:
        raise InputError("a supplied checksum file cannot be read", path=str(scan.root), problems=parse_problems)
    extra = [a for a in supplied_mod.algorithms_needed(supplied) if a not in algorithms]
    if extra and staged_first:
        # The checksum files themselves may be listed in another checksum file: rare; hash those few again.
        staged_first = _rehash(staged_first, tasks, algorithms + extra)

    # 2. Everything else, one read per byte, spread over the workers.
    rest = [t for rel, t in tasks.items() if rel not in first_rel]
    staged_rest, problems = stage_files(rest, algorithms + extra, identifier=identifier,
                                        workers=req.workers, progress=req.progress, scanner=scanner)
    _stop_if_staging_failed(problems, staging)
    _stop_if_scanner_failed(problems, scan.root)
    if problems:
        raise InputError(f"could not stage {len(problems)} file(s) of the source", path=str(scan.root),
                         problems=problems)
    staged: Dict[str, StagedFile] = {s.relpath: s for s in staged_first + staged_rest}
    virus_warnings = _virus_verdicts(virus, staged, tasks) if virus is not None else []

    # 3. Supplied checksums must match the bytes received.
    mismatches = supplied_mod.verify_supplied(supplied, {k: v.digests for k, v in staged.items()})
    if mismatches:
        raise PreservationError(
            f"{len(mismatches)} file(s) do not match the checksums supplied with the deposit; nothing was kept. "
            f"Fix the source: replace the damaged file(s) with good copies, or correct the supplied checksum "
            f"file if it is the one in error (Strongroom never changes the source)",
            path=str(scan.root), problems=mismatches,
        )

    # 4. An earlier bag group of the collection with the same files: a duplicate stores nothing;
    #    a new version references the unchanged files instead of storing them again.
    listing = staged_listing(staged.values())
    if req.earlier is not None and not req.new_version:
        duplicate = req.earlier.duplicate_of(listing)
        if duplicate is not None:
            return DepositResult([], scan, list(virus_warnings), {}, duplicate=duplicate)
    fetch = req.earlier.fetchable(listing) if req.earlier is not None and req.new_version else {}
    for path in fetch:
        _unstage(tasks[path[len("data/"):]].dest, work_dirs[part_of[path[len("data/"):]]] / "data")

    warnings = list(virus_warnings)
    unidentified = [rel for rel, s in staged.items() if not getattr(s.identification, "puid", "")]
    if unidentified:
        message = f"{len(unidentified)} file(s) in no format FIDO knows: " + ", ".join(unidentified[:10]) + (
            " ..." if len(unidentified) > 10 else "")
        if policy.formats.unidentified == "fail":
            raise PreservationError(f"policy {policy.name} refuses unidentified formats", path=str(scan.root),
                                    problems=[f"{rel}: format not identified" for rel in unidentified])
        warnings.append(message)
    at_risk = [f"{rel}: {s.identification.puid} is listed as at risk by policy {policy.name}"
               for rel, s in staged.items() if getattr(s.identification, "puid", "") in set(policy.formats.at_risk)]
    warnings.extend(at_risk)

    # 5. One bag per part, each validated before it gets its final name.
    provenance = Provenance(req.library, identifier.fido_version, identifier.signature_version, now)
    info = {
        "Strongroom-Collection-Type": req.collection_type,
        "Strongroom-Policy": policy.name,
    }
    if req.title:
        info["External-Description"] = req.title
        info["Strongroom-Collection-Title"] = req.title
    built: List[BuiltBag] = []
    final_dirs = []
    virus_records: Dict[str, dict] = {}
    try:
        for i, (files, work, bag_id) in enumerate(zip(parts, work_dirs, bag_ids)):
            in_part = [staged[f.relpath] for f in files]
            plan = BagPlan(
                bag_id=bag_id, work_dir=work, files=in_part, algorithms=tuple(algorithms + extra),
                part_count=len(parts), external_id=str(uuid.uuid4()), info=dict(info),
                empty_dirs=list(scan.empty_dirs) if i == 0 else [],
                supplied=[s for s in supplied if part_of.get(s.path) == i],
                virus=_bag_virus(virus_records, str(bag_id), virus, in_part),
                fetch=[fetch[p] for p in ("data/" + f.relpath for f in files) if p in fetch],
                version_of=req.earlier.latest if req.earlier is not None and req.new_version else None,
            )
            final = staging / bag_id.library / bag_id.collection / bag_id.name
            built.append(finish_bag(plan, provenance, final))
            final_dirs.append(final)
    except BaseException:
        for d in final_dirs:  # a deposit is all of its parts or nothing
            discard(d)
        raise
    return DepositResult(built, scan, warnings, virus_records)


def _unstage(dest: bytes, data_dir: Path) -> None:
    """Remove the staged copy of a file a version bag references (fetch.txt) instead of holding,
    and the folders that held only it: the bag's data/ is what gets stored."""
    os.unlink(dest)
    folder = os.path.dirname(dest)
    top = os.fsencode(data_dir)
    while folder != top and folder.startswith(top + b"/"):
        try:
            os.rmdir(folder)
        except OSError:  # not empty: another file of the bag is below it
            return
        folder = os.path.dirname(folder)


def _bag_virus(records: Dict[str, dict], bag_id: str, virus, files) -> Optional[dict]:
    """This bag's virus check record (None when no check was asked for), kept in `records`."""
    from .virus import summarize

    record = summarize(virus, files) if virus is not None else None
    if record is not None:
        records[bag_id] = record
    return record


def _stop_if_staging_failed(problems: List[str], staging: Path) -> None:
    """Writing staging failed (its disk full, read-only, failing): one error naming staging, exit 1,
    rerun helps -- not N source problems, since no file of the source is at fault (the work
    folders are discarded by ingest(), so nothing is left half-written)."""
    failed = [p for p in problems if isinstance(p, StagingProblem)]
    if failed:
        first = failed[0]
        raise staging_error(staging, first.errno, first.strerror,
                            f"{len(failed)} file(s) could not be staged, the first {first.relpath}")


def _stop_if_scanner_failed(problems: List[str], root) -> None:
    """clamd unreachable or failing mid-deposit (virus_check: required): stop, exit 1, nothing
    recorded as checked (the work folders are discarded by ingest())."""
    from .virus import ScannerProblem

    failed = [p for p in problems if isinstance(p, ScannerProblem)]
    if failed:
        raise PreservationError(f"the virus check failed for {len(failed)} file(s), so the deposit was stopped and "
                                f"nothing was recorded as checked; make sure clamd runs, then run the same "
                                f"command again", path=str(root), problems=failed[:50], rerun_helps=True)


def _virus_verdicts(virus, staged: Dict[str, StagedFile], tasks: Dict[str, StageTask]) -> List[str]:
    """Infected files: quarantined and the deposit stopped (required), or warnings (warn)."""
    from .virus import infected_error, quarantine

    warnings = list(virus.warnings)
    found = [(rel, s) for rel, s in sorted(staged.items()) if getattr(s.virus, "status", "") == "infected"]
    if found and virus.mode == "required":
        folder = quarantine(virus, [(rel, tasks[rel].dest, s.virus.signature, s.size, dict(s.digests))
                                    for rel, s in found])
        raise infected_error(virus, [(rel, s.virus.signature) for rel, s in found], folder)
    for rel, s in found:
        warnings.append(f"{rel}: infected ({s.virus.signature}); kept because policy says virus_check: warn")
    unscanned = [rel for rel, s in staged.items() if getattr(s.virus, "status", "") == "unscanned"]
    if unscanned:
        warnings.append(f"{len(unscanned)} file(s) not virus-checked (clamd failed; virus_check: warn): "
                        + ", ".join(unscanned[:10]) + (" ..." if len(unscanned) > 10 else ""))
    skipped = [rel for rel, s in staged.items() if getattr(s.virus, "status", "") == "skipped"]
    if skipped:
        warnings.append(f"{len(skipped)} file(s) not virus-checked, longer than clamd's stream limit "
                        f"(large_files: skip-and-record): " + ", ".join(skipped[:10]) + (" ..." if len(skipped) > 10 else ""))
    return warnings


def _rehash(staged: List[StagedFile], tasks, algorithms) -> List[StagedFile]:
    from strongroom.checksums import hash_file

    out = []
    for s in staged:
        _, digests = hash_file(tasks[s.relpath].dest, algorithms)
        out.append(StagedFile(s.relpath, s.size, s.mtime_ns, digests, s.identification))
    return out


def _check_apart(source: Path, staging: Path) -> None:
    real_source, real_staging = os.path.realpath(source), os.path.realpath(staging)
    if os.path.commonpath([real_source, real_staging]) in (real_source, real_staging):
        raise UsageError(
            f"the source ({source}) and the staging folder ({staging}) must not contain one another",
            path=str(source),
        )


def _free_stamp(staging: Path, library: str, collection: str, now: datetime) -> str:
    """A deposit time stamp (second resolution) claimed for this ingest alone: no bag of this
    collection in staging has it, and no concurrent deposit can get it too (ingest.naming)."""
    collection_dir = staging / library / collection
    return claim_stamp(staging / CLAIMS_DIR, library, collection, now, owner=lambda stamp: f"ingest-{uuid.uuid4()}",
                       taken=lambda stamp: collection_dir.is_dir() and any(collection_dir.glob(f"{stamp}-*")))
