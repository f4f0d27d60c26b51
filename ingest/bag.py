"""Turn staged payload files into a complete, validated BagIt 1.0 bag.

The payload digests were computed while copying, so this module writes manifests from them
instead of re-hashing (the `bagit` library's `make_bag` would read every byte again). The
bag is assembled in a hidden `.incomplete/` folder, checked (structure, completeness,
Payload-Oxum, tag manifests) and only then renamed to its final name. A crash therefore never
leaves a half bag that looks whole. What that one check read (every file's digests and size,
bag-info.txt, metadata/ parsed) is kept in the deposit's state before the rename
(`ingest.bag_check`), so no later step checks or parses the bag again.

The staged payload is not hashed again here (issue 11: that read and hash of every byte was
~5 s of a 20,000-file deposit): the staged copy is a work area, never a copy of record. Every
byte of it is checked against the manifests while it is copied to a replica (a file that does
not match never gets its name there), and every replica is re-read and checked after it was
made durable before it counts; `strongroom validate` still re-hashes everything.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from strongroom import NAME, __version__
from strongroom.durable import atomic_write_bytes, fsync_dir
from strongroom.errors import PreservationError
from strongroom.forked import Forked
from strongroom.fstree import make_dirs, remove_tree

from strongroom import bagit_spec

from . import bag_check, metadata, premis
from .fetch import FETCH_TXT, FetchEntry, fetch_bytes
from strongroom.bag_id import BagId
from .stage import StagedFile
from .supplied import SuppliedDigest
from .validate import Problem, validate_bag


@dataclass
class BagPlan:
    """Everything needed to finish one bag whose payload is already staged in `work_dir/data`."""

    bag_id: BagId
    work_dir: Path
    files: List[StagedFile]
    algorithms: Sequence[str]
    part_count: int
    external_id: str
    info: Dict[str, str] = field(default_factory=dict)  # extra bag-info lines (type, title, policy...)
    empty_dirs: List[str] = field(default_factory=list)
    supplied: List[SuppliedDigest] = field(default_factory=list)
    virus: Optional[dict] = None  # ingest.virus.summarize(): the bag's virus check, for premis.xml
    fetch: List[FetchEntry] = field(default_factory=list)  # files of `files` not in data/ (a version bag)
    version_of: Optional[str] = None  # the bag group this bag is a new version of (Strongroom-Version-Of)
    state_dir: Optional[Path] = None  # the deposit's state folder: the bag's check is kept there (bag_check)


@dataclass(frozen=True)
class BuiltBag:
    bag_id: BagId
    path: Path
    external_id: str
    file_count: int
    byte_count: int                 # of the complete bag (a version bag's fetched files included)
    files: Sequence[StagedFile]
    fetched_files: int = 0          # listed in fetch.txt, held by an earlier bag
    fetched_bytes: int = 0


def bag_info(plan: BagPlan, library: str, collection: str, when: datetime) -> List[tuple]:
    total = sum(f.size for f in plan.files)
    items = [
        ("Source-Organization", library),
        ("Bagging-Date", when.astimezone(timezone.utc).strftime("%Y-%m-%d")),
        ("External-Identifier", f"urn:uuid:{plan.external_id}"),
        ("Internal-Sender-Identifier", collection),
        ("Bag-Group-Identifier", plan.bag_id.group),
        ("Bag-Count", f"{plan.bag_id.part} of {plan.part_count}"),
        ("Payload-Oxum", bagit_spec.payload_oxum(total, len(plan.files))),
        ("Bag-Software-Agent", f"{NAME} {__version__}"),
        ("Strongroom-Bag-Id", str(plan.bag_id)),
    ]
    if plan.version_of is not None:
        # Payload-Oxum above is of the complete bag (fetched files included), as RFC 8493 has it.
        items.append(("Strongroom-Version-Of", plan.version_of))
        items.append(("Strongroom-Fetched-Oxum",
                      bagit_spec.payload_oxum(sum(e.length for e in plan.fetch), len(plan.fetch))))
    items.extend(plan.info.items())
    return items


def finish_bag(plan: BagPlan, provenance: metadata.Provenance, final_dir: Path) -> BuiltBag:
    """Write tag files, validate, and move the bag into place. Raises PreservationError if invalid."""
    work = plan.work_dir
    make_dirs(work / "data")
    make_dirs(work / "metadata")
    # premis.xml needs nothing written below: a forked child writes it outside the bag meanwhile
    # (strongroom.forked; about 0.5 s of a 20,000-file bag off the one core this runs on). It is
    # moved in with the tag manifests; then the bag as staged is checked once (structure,
    # completeness, Payload-Oxum, tag manifests; its payload is not hashed again, see the module
    # doc) before it gets its final name.
    started = datetime.now(timezone.utc)
    pending_premis = pending_premis_path(work)
    writer = _premis_writer(plan, provenance, started, pending_premis)
    try:
        _write_tag_files(plan, provenance)
    except BaseException:
        writer.stop()
        raise
    writer.wait()
    md = work / "metadata"
    os.replace(pending_premis, md / "premis.xml")
    bagit_spec.write_tag_manifests(work, plan.algorithms)
    report = validate_bag(work, completeness_only=True, allow_fetched=bool(plan.fetch), keep=plan.state_dir is not None)
    if report.valid and report.fetched_files != len(plan.fetch):
        report.problems.append(Problem(FETCH_TXT, f"lists {len(plan.fetch)} file(s) but {report.fetched_files} were "
                                                  "found absent from data/"))
    if not report.valid:
        raise PreservationError(
            f"bag {plan.bag_id} failed validation in staging; nothing was kept",
            path=str(work), problems=[str(p) for p in report.problems],
        )
    if report.contents is not None:
        # What the check read is kept for the later steps (ValidateBag, Replicate, Verify,
        # Register) before the bag gets its name: a bag with its final name always has it.
        bag_check.keep(bag_check.from_contents(work, report.contents, str(plan.bag_id)), plan.state_dir)
    # No fsync of the staged files: staging is a work area, not a copy of record. Every byte is
    # checked against the manifests again while it is copied to a replica, and each replica is
    # re-read and verified before it counts, so a staged file damaged by a power cut can never
    # become a preserved copy. The rename below is what makes a crash (kill -9) safe.
    make_dirs(final_dir.parent)
    os.rename(work, final_dir)  # atomic within one file system; fails if final_dir exists
    fsync_dir(final_dir.parent)
    return BuiltBag(plan.bag_id, final_dir, plan.external_id, len(plan.files),
                    sum(f.size for f in plan.files), plan.files, len(plan.fetch), sum(e.length for e in plan.fetch))


def _write_tag_files(plan: BagPlan, provenance: metadata.Provenance) -> None:
    """Every tag file but premis.xml and the tag manifests."""
    work = plan.work_dir
    bagit_spec.write_bagit_txt(work)
    for alg in plan.algorithms:
        bagit_spec.write_manifest(
            work / f"manifest-{alg}.txt", (("data/" + f.relpath, f.digests[alg]) for f in plan.files)
        )
    bagit_spec.write_tag_file(work / "bag-info.txt", _info(plan, provenance))
    if plan.fetch:
        atomic_write_bytes(work / FETCH_TXT, fetch_bytes(plan.fetch))
    md = work / "metadata"
    atomic_write_bytes(md / "formats.csv", metadata.formats_csv(plan.files))
    atomic_write_bytes(md / "file-attributes.csv", metadata.file_attributes_csv(plan.files))
    if plan.empty_dirs:
        atomic_write_bytes(md / "empty-directories.txt", metadata.empty_dirs_txt(plan.empty_dirs))
    if plan.supplied:
        atomic_write_bytes(md / "supplied-checksums.csv", metadata.supplied_csv(plan.supplied))


#: Below this many files a bag's premis.xml is written inline: a fork (~10 ms) would cost more.
PREMIS_FORK_FILES = 2000


def _premis_writer(plan: BagPlan, provenance: metadata.Provenance, started: datetime, path: Path) -> Forked:
    def write() -> None:
        objects, events, agents = metadata.premis_for_bag(
            str(plan.bag_id), plan.files, plan.algorithms, provenance,
            supplied_count=len(plan.supplied), validated_at=started,
            unidentified=sum(1 for f in plan.files if not getattr(f.identification, "puid", "")),
            title=plan.info.get("Strongroom-Collection-Title", ""), external_id=plan.external_id,
            virus=plan.virus,
        )
        premis.write_premis(path, objects, events, agents)

    return Forked.start(f"writing {path}", write, inline=len(plan.files) < PREMIS_FORK_FILES)


def _info(plan: BagPlan, provenance: metadata.Provenance) -> List[tuple]:
    return bag_info(plan, provenance.library, plan.bag_id.collection, provenance.when)


def pending_premis_path(work: Path) -> Path:
    return work.parent / f"{work.name}.premis.xml"


def discard(work: Path) -> None:
    """Remove a bag under construction and anything written beside it."""
    if work.is_file():
        work.unlink()
        return
    remove_tree(work)  # shutil.rmtree recurses: a deep bag would die with RecursionError
    pending = pending_premis_path(work)
    pending.unlink(missing_ok=True)
    for temp in work.parent.glob(f".{pending.name}.*.tmp"):  # premis.write_premis' temp, if killed mid-write
        temp.unlink(missing_ok=True)
