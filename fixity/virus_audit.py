"""`strongroom audit --virus`: rescan the stored copies with clamd's current signatures.

New signatures find old infections: every file of every verified copy of the selected bags is
read through the StorageAdapter API (`open_file`, so folders and S3 alike) and streamed to clamd
(INSTREAM, large files in overlapping chunks as at ingest unless the policy says
skip-and-record). Each copy gets a ledger event `virus check` (object replica) naming the
engine and signature database, with the counts; the NDSA assessment takes each bag's newest
virus check as what is known now. Nothing is repaired or moved: an infected file in the archive
is for a person to judge (it may be the very content a collection exists to keep).

clamd unreachable or failing is never "clean": the run stops (exit 1) and the copy being
scanned is not recorded as checked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Dict, List, Optional

from strongroom.errors import ConfigError, PreservationError

READ = 1 << 20
GOOD_STATES = ("verified", "repaired")


@dataclass
class VirusAuditSummary:
    """What one `audit --virus` run scanned and found."""

    engine: str
    copies: List[Dict[str, Any]] = field(default_factory=list)  # one per (bag, target)
    infected: List[Dict[str, str]] = field(default_factory=list)
    problems: List[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 1 if self.infected or self.problems else 0

    def to_dict(self) -> Dict[str, Any]:
        return {"kind": "virus audit", "engine": self.engine, "copies": self.copies, "infected": self.infected,
                "problems": self.problems, "files_scanned": sum(c["scanned"] for c in self.copies),
                "exit_code": self.exit_code}

    def text(self) -> str:
        files = sum(c["scanned"] for c in self.copies)
        lines = [f"Virus check of {len(self.copies)} cop(ies), {files} file(s) scanned with {self.engine}:"]
        for c in self.copies:
            lines.append(f"  {c['bag_id']}  {c['target']:<12} {c['scanned']} scanned, {len(c['infected'])} infected"
                         + (f", {c['skipped']} skipped as too large" if c["skipped"] else ""))
        for i in self.infected:
            lines.append(f"  INFECTED: {i['bag_id']} on {i['target']}: {i['path']}: {i['signature']}")
        for p in self.problems:
            lines.append(f"  problem: {p}")
        lines.append("No infection found." if not self.infected and not self.problems else
                     "Infected files are left in place: judge them (restore from a clean deposit or deaccession).")
        return "\n".join(lines)


def run_virus_audit(config, *, library: Optional[str] = None, collection: Optional[str] = None,
                    bag: Optional[str] = None, catalog=None) -> VirusAuditSummary:
    from catalog.access import open_catalog
    from catalog.schema import EventRecord
    from ingest.clamd import ClamdError, version
    from strongroom.bag_id import BagId
    from ingest.virus import Scanner, agent_note, configured_endpoint, detail_text
    from storage_adapters.base import StorageError
    from storage_adapters.registry import open_target

    endpoint = configured_endpoint(config)
    if endpoint is None:
        raise ConfigError("audit --virus needs clamav: in the config (where clamd listens), e.g. "
                          "`clamav: {socket: /run/clamav/clamd.ctl}`", path=str(config.path), key="clamav")
    try:
        engine = version(endpoint)
    except ClamdError as exc:
        raise PreservationError(f"virus check impossible, nothing was recorded: {exc}", path=str(config.path),
                                key="clamav", rerun_helps=True)
    catalog = catalog if catalog is not None else open_catalog(config, must_exist=True)
    bags = catalog.bags(library=library, collection=collection).to_pylist()
    if bag:
        bags = [b for b in bags if b["bag_id"] == bag]
        if not bags:
            raise ConfigError(f"no bag {bag} in the catalog", key="--bag")
    summary = VirusAuditSummary(engine.describe())
    for row in bags:
        bag_id = BagId.parse(row["bag_id"])
        policy = config.policies.get(row.get("policy") or "")
        large = "skip-and-record" if policy is not None and policy.large_files == "skip-and-record" \
            else "scan-in-chunks"
        scanner = Scanner(endpoint, "required", large)
        files = catalog.files(bag_id=row["bag_id"]).select(["path", "size"]).to_pylist()
        for rep in catalog.replicas(bag_id=row["bag_id"]).to_pylist():
            if rep["state"] not in GOOD_STATES or rep["target"] not in config.storage:
                continue
            adapter = open_target(config.target(rep["target"]))
            record = _scan_copy(adapter, bag_id, files, scanner, summary, rep["target"], StorageError)
            if record is None:
                continue
            record.update(engine=engine.engine, db_version=engine.db_version, db_date=engine.db_date,
                          endpoint=endpoint.describe(), mode="audit", large_files=large)
            outcome = "failure" if record["infected"] else "success" if record["scanned"] == len(files) else "warning"
            catalog.append_events([EventRecord(
                type="virus check", outcome=outcome, agent=agent_note(record), object_type="replica",
                bag_id=row["bag_id"], target=rep["target"],
                detail=f"audit --virus of the copy on {rep['target']}: {detail_text(record)}",
                datetime=datetime.now(timezone.utc))])
            summary.copies.append({"bag_id": row["bag_id"], "target": rep["target"], "scanned": record["scanned"],
                                   "infected": record["infected"], "skipped": len(record["skipped"]),
                                   "outcome": outcome})
    return summary


def _scan_copy(adapter, bag_id, files, scanner, summary: VirusAuditSummary, target: str, StorageError):
    """Scan every file of one copy; the record for the ledger, or raise if clamd fails."""
    from ingest.clamd import ClamdError

    scanned, infected, skipped, unscanned, chunked = 0, [], [], [], 0
    for f in files:
        scan = scanner.start(f["path"], f["size"])
        try:
            with adapter.open_file(bag_id, f["path"]) as fh:
                while True:
                    data = fh.read(READ)
                    if not data:
                        break
                    scan.feed(data)
            verdict = scan.finish()
        except ClamdError as exc:
            scan.abort()
            raise PreservationError(f"virus check of {bag_id} on {target} stopped: {exc}; this copy was not "
                                    f"recorded as checked", rerun_helps=True)
        except (StorageError, OSError) as exc:
            scan.abort()
            unscanned.append([f["path"], str(exc)])
            summary.problems.append(f"{bag_id} on {target}: {f['path']}: cannot be read ({exc})")
            continue
        if verdict.status == "skipped":
            skipped.append([f["path"], verdict.reason])
            continue
        scanned += 1
        chunked += verdict.chunks > 1
        if verdict.status == "infected":
            infected.append([f["path"], verdict.signature])
            summary.infected.append({"bag_id": str(bag_id), "target": target, "path": f["path"],
                                     "signature": verdict.signature})
    return {"files": len(files), "scanned": scanned, "infected": infected, "skipped": skipped,
            "unscanned": unscanned, "unscanned_count": len(unscanned), "chunked": chunked}
