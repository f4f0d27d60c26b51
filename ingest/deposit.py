"""Ingest one deposit: from a library's source folder to validated bag(s) in staging.

The steps are domain functions (scan, stage, supplied-checksum check, bag) so the Luigi
tasks in `pipelines/` stay thin and everything here is testable without Luigi.
Nothing in the source is written; if anything fails, every partly built bag is removed and
the error names each file concerned.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field, replace
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
from .split import count_parts, iter_parts
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
    state_dir: Optional[Path] = None  # the deposit's state folder: each bag's check is kept there (bag_check)


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
    """Scan, stage, check supplied checksums, bag and validate. Returns the bags built.

    The bags are built one after the other (stage a part, bag it, let go of it): memory stays
    flat however many files and bags the deposit has."""
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
        limits = {"max_bytes": policy.bag.max_bytes, "max_files": policy.bag.max_files}
        count = count_parts(scan.files, **limits)
        bag_ids = [BagId(req.library, req.collection, stamp, i + 1) for i in range(count)]
        work_root = staging / INCOMPLETE
        make_dirs(work_root)
        prefix = work_dir_prefix(req.library, req.collection, stamp)
        work_dirs = [work_root / f"{prefix}{i + 1}-{uuid.uuid4().hex[:8]}" for i in range(count)]
        return _build(req, scan, limits, bag_ids, work_dirs, identifier, staging, now)
    except OSError as exc:
        raise staging_error(staging, exc.errno or 0, exc.strerror or str(exc),
                            f"writing {os.fsdecode(exc.filename)}" if isinstance(exc.filename, (str, bytes)) else ""
                            ) from exc
    finally:
        for w in work_dirs:
            discard(w)


@dataclass
class _Notes:
    """What a deposit reports about all of its files, kept as counts and a few names (never a
    list of every file), as its bags are built one after the other."""

    warnings: List[str] = field(default_factory=list)     # the virus check's, one line each
    counts: Dict[str, int] = field(default_factory=dict)  # kind -> files
    names: Dict[str, List[str]] = field(default_factory=dict)  # kind -> the first ten
    at_risk: List[str] = field(default_factory=list)

    def note(self, kind: str, rel: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        shown = self.names.setdefault(kind, [])
        if len(shown) < 10:
            shown.append(rel)

    def listed(self, kind: str) -> str:
        return ", ".join(self.names.get(kind, [])) + (" ..." if self.counts.get(kind, 0) > 10 else "")

    def virus_lines(self) -> List[str]:
        out = list(self.warnings)
        if self.counts.get("unscanned"):
            out.append(f"{self.counts['unscanned']} file(s) not virus-checked (clamd failed; virus_check: warn): "
                       + self.listed("unscanned"))
        if self.counts.get("skipped"):
            out.append(f"{self.counts['skipped']} file(s) not virus-checked, longer than clamd's stream limit "
                       f"(large_files: skip-and-record): " + self.listed("skipped"))
        return out

    def all_lines(self) -> List[str]:
        out = self.virus_lines()
        if self.counts.get("unidentified"):
            out.append(f"{self.counts['unidentified']} file(s) in no format FIDO knows: " + self.listed("unidentified"))
        return out + self.at_risk


@dataclass
class _Part:
    """One part of the deposit, staged, waiting to be bagged."""

    index: int
    files: List[StagedFile]     # in walk order
    dests: Dict[str, bytes]     # relpath -> its staged copy


def _build(req, scan, limits, bag_ids, work_dirs, identifier, staging: Path, now: datetime) -> DepositResult:
    policy = req.policy
    virus = req.virus
    scanner = virus.scanner if virus is not None else None
    if virus is not None:
        from .virus import refuse_large

        refuse_large(virus, scan.files)  # large_files: refuse -- before any byte is staged
    for w in work_dirs:
        make_dirs(w / "data")

    def task(f, i: int) -> StageTask:
        return StageTask(f, os.fsencode(work_dirs[i] / "data") + b"/" + f.relpath.encode("utf-8"))

    # 1. Checksum files the depositor supplied: stage them first, then read the staged copies,
    #    so we know which extra algorithms to compute without reading any source byte twice.
    first = {f.relpath: task(f, i) for i, files in enumerate(iter_parts(scan.files, **limits))
             for f in files if supplied_mod.may_hold_checksums(f.relpath)}

    def read_staged(rel: str) -> bytes:
        with open(first[rel].dest, "rb") as fh:
            return fh.read()

    algorithms = list(policy.checksums)
    make_parent_dirs(first.values())
    staged_first, problems = stage_files(list(first.values()), algorithms, identifier=identifier, workers=1,
                                         scanner=scanner)
    _stop_if_staging_failed(problems, staging)
    _stop_if_scanner_failed(problems, scan.root)
    if problems:
        raise InputError("could not stage the source", path=str(scan.root), problems=problems)
    checksum_specs = supplied_mod.find_checksum_files(first, read_staged)
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
        staged_first = _rehash(staged_first, first, algorithms + extra)
    early: Dict[str, StagedFile] = {s.relpath: s for s in staged_first}
    listed = {s.path for s in supplied}
    supplied_part = {f.relpath: i for i, files in enumerate(iter_parts(scan.files, **limits))
                     for f in files if f.relpath in listed} if supplied else {}

    # 2. One part after the other: stage it (one read per byte, spread over the workers), check
    #    it, bag it. An earlier bag group of the collection with the same files is a duplicate
    #    and stores nothing: while the parts so far may still be one, they wait unbagged.
    notes = _Notes(warnings=list(virus.warnings) if virus is not None else [])
    earlier = req.earlier
    candidates = earlier.duplicate_candidates(len(scan.files), scan.total_bytes) \
        if earlier is not None and not req.new_version else []
    waiting: List[_Part] = []
    builder = _Bagger(req, scan, bag_ids, work_dirs, identifier, now, algorithms + extra, supplied, supplied_part)
    done_files = done_bytes = 0
    try:
        for i, files in enumerate(iter_parts(scan.files, **limits)):
            rest = [task(f, i) for f in files if f.relpath not in early]
            make_parent_dirs(rest)

            def progress(n: int, nbytes: int, before=(done_files, done_bytes)) -> None:
                if req.progress is not None:
                    req.progress(before[0] + n, before[1] + nbytes)

            staged_rest, problems = stage_files(rest, algorithms + extra, identifier=identifier,
                                                workers=req.workers, progress=progress, scanner=scanner)
            _stop_if_staging_failed(problems, staging)
            _stop_if_scanner_failed(problems, scan.root)
            if problems:
                raise InputError(f"could not stage {len(problems)} file(s) of the source", path=str(scan.root),
                                 problems=problems)
            done_files += len(staged_rest)
            done_bytes += sum(s.size for s in staged_rest)
            by_rel = {s.relpath: s for s in staged_rest}
            part = _Part(i, [early.get(f.relpath) or by_rel[f.relpath] for f in files],
                         {t.source.relpath: t.dest for t in rest})
            part.dests.update((f.relpath, first[f.relpath].dest) for f in files if f.relpath in early)
            del by_rel, staged_rest, rest
            # Checksum files first, as the deposit staged them (the order warnings name files in).
            checked = [s for s in part.files if s.relpath in early] + [s for s in part.files if s.relpath not in early]
            _virus_verdicts(virus, checked, part.dests, notes)

            # 3. Supplied checksums must match the bytes received.
            _check_supplied(builder.supplied_of(i, first_part=i == 0), part.files, scan.root)

            # 4. Bag the part (or keep it waiting while the deposit may still be a duplicate).
            if candidates:
                candidates = earlier.still_equal(candidates, staged_listing(part.files))
            if candidates:
                waiting.append(part)
                continue
            for held in waiting + [part]:
                builder.bag(held, notes)
            waiting = []
        if candidates:
            return DepositResult([], scan, notes.virus_lines(), {}, duplicate=earlier.duplicate(candidates))
    except BaseException:
        for d in builder.final_dirs:  # a deposit is all of its parts or nothing
            discard(d)
        raise
    return DepositResult(builder.built, scan, notes.all_lines(), builder.virus_records)


def _check_supplied(supplied: List[supplied_mod.SuppliedDigest], files: List[StagedFile], root) -> None:
    """Supplied checksums must match the bytes received (those of one part at a time)."""
    mismatches = supplied_mod.verify_supplied(supplied, {s.relpath: s.digests for s in files}) if supplied else []
    if mismatches:
        raise PreservationError(
            f"{len(mismatches)} file(s) do not match the checksums supplied with the deposit; nothing was kept. "
            f"Fix the source: replace the damaged file(s) with good copies, or correct the supplied checksum "
            f"file if it is the one in error (Strongroom never changes the source)",
            path=str(root), problems=mismatches,
        )


class _Bagger:
    """Turns staged parts into bags, one at a time; keeps only what every bag needs."""

    def __init__(self, req, scan, bag_ids, work_dirs, identifier, now, algorithms, supplied, supplied_part) -> None:
        self.req, self.scan, self.bag_ids, self.work_dirs = req, scan, bag_ids, work_dirs
        self.algorithms = tuple(algorithms)
        self.supplied, self.supplied_part = supplied, supplied_part
        self.provenance = Provenance(req.library, identifier.fido_version, identifier.signature_version, now)
        self.info = {"Strongroom-Collection-Type": req.collection_type, "Strongroom-Policy": req.policy.name}
        if req.title:
            self.info["External-Description"] = req.title
            self.info["Strongroom-Collection-Title"] = req.title
        self.built: List[BuiltBag] = []
        self.final_dirs: List[Path] = []
        self.virus_records: Dict[str, dict] = {}
        self.at_risk = set(req.policy.formats.at_risk)

    def supplied_of(self, i: int, first_part: bool) -> List[supplied_mod.SuppliedDigest]:
        """The supplied digests of part i's files (the first part also gets those naming a file
        the source does not hold, so that they are reported at once)."""
        return [s for s in self.supplied
                if self.supplied_part.get(s.path, 0 if first_part else -1) == i]

    def bag(self, part: _Part, notes: _Notes) -> None:
        """5. Bag one part, validated before it gets its final name; its file list is let go."""
        req, policy, i = self.req, self.req.policy, part.index
        # A new version references the unchanged files instead of storing them again.
        fetch = req.earlier.fetchable(staged_listing(part.files)) if req.earlier is not None and req.new_version else {}
        for path in fetch:
            _unstage(part.dests[path[len("data/"):]], self.work_dirs[i] / "data")
        unidentified = [s.relpath for s in part.files if not getattr(s.identification, "puid", "")]
        if unidentified and policy.formats.unidentified == "fail":
            raise PreservationError(f"policy {policy.name} refuses unidentified formats", path=str(self.scan.root),
                                    problems=[f"{rel}: format not identified" for rel in unidentified])
        for rel in unidentified:
            notes.note("unidentified", rel)
        notes.at_risk.extend(f"{s.relpath}: {s.identification.puid} is listed as at risk by policy {policy.name}"
                             for s in part.files if getattr(s.identification, "puid", "") in self.at_risk)
        bag_id = self.bag_ids[i]
        plan = BagPlan(
            bag_id=bag_id, work_dir=self.work_dirs[i], files=part.files, algorithms=self.algorithms,
            part_count=len(self.bag_ids), external_id=str(uuid.uuid4()), info=dict(self.info),
            empty_dirs=list(self.scan.empty_dirs) if i == 0 else [],
            supplied=[s for s in self.supplied if self.supplied_part.get(s.path) == i],
            virus=_bag_virus(self.virus_records, str(bag_id), req.virus, part.files),
            fetch=[fetch[p] for p in ("data/" + f.relpath for f in part.files) if p in fetch],
            version_of=req.earlier.latest if req.earlier is not None and req.new_version else None,
            state_dir=req.state_dir,
        )
        final = req.staging / bag_id.library / bag_id.collection / bag_id.name
        built = finish_bag(plan, self.provenance, final)
        self.final_dirs.append(final)
        self.built.append(replace(built, files=()))  # the bag's own files describe it from here on


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


def _virus_verdicts(virus, staged: List[StagedFile], dests: Dict[str, bytes], notes: _Notes) -> None:
    """Infected files of one part: quarantined and the deposit stopped (required), or warnings (warn)."""
    if virus is None:
        return
    from .virus import infected_error, quarantine

    found = sorted((s.relpath, s) for s in staged if getattr(s.virus, "status", "") == "infected")
    if found and virus.mode == "required":
        folder = quarantine(virus, [(rel, dests[rel], s.virus.signature, s.size, dict(s.digests))
                                    for rel, s in found])
        raise infected_error(virus, [(rel, s.virus.signature) for rel, s in found], folder)
    for rel, s in found:
        notes.warnings.append(f"{rel}: infected ({s.virus.signature}); kept because policy says virus_check: warn")
    for s in staged:
        status = getattr(s.virus, "status", "")
        if status in ("unscanned", "skipped"):
            notes.note(status, s.relpath)


def _rehash(staged: List[StagedFile], tasks: Dict[str, StageTask], algorithms) -> List[StagedFile]:
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
