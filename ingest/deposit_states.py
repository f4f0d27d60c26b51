"""The deposit workflow's state folders, read: deposits in staging that have not finished, for
`strongroom status` and the preservation report.

Here, below the reports and the workflow, so that reports read the state files without
importing pipelines (imports run one way: pipelines -> reports -> ... -> ingest). The folder
layout is the workflow's (staging/.state/<key>/, written by pipelines.flow, which takes
STATE_DIR and ABANDONED from here): a deposit without done.json is unfinished; its recorded
failures make it failed; one given up with `deposit --abandon` has abandoned.json (why, when,
by whom) and is history, not work: left out unless `include_abandoned`, and then flagged
deposit-abandoned.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

STATE_DIR = ".state"               # staging/.state/<deposit key>/: one folder per deposit
ABANDONED = "abandoned.json"       # written by `deposit --abandon`: why, when, by whom


def state_name(bag_id: str) -> str:
    """A bag id as one file name of a deposit's state folder (its markers, kept check, stamps):
    the one spelling every writer and reader of those files uses."""
    return bag_id.replace("/", "__")


def read_json(path: Path):
    """One state file's JSON (OSError / ValueError to the caller, who names the file)."""
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


@dataclass
class DepositStatus:
    """A deposit in staging that has not finished (no done.json in its state folder)."""

    key: str
    library: Optional[str]
    collection: Optional[str]
    source: Optional[str]
    policy: Optional[str]
    started_at: Optional[str]
    stage: str                    # "bagging", "replicating", "unreadable"
    bags: List[Dict[str, Any]]    # [{"id", "registered", "verified_on": [targets]}]
    failures: List[Dict[str, Any]]
    flags: List[str] = field(default_factory=list)
    abandoned: Optional[Dict[str, Any]] = None   # abandoned.json: reason/why, at, by


def unfinished_deposits(staging: Path, *, library: Optional[str] = None, collection: Optional[str] = None,
                        bag_id: Optional[str] = None, include_abandoned: bool = False) -> List[DepositStatus]:
    """Deposits whose state folder has no done.json, with their recorded failures, by key
    (the abandoned ones too when `include_abandoned`)."""
    root = Path(staging) / STATE_DIR
    if not root.is_dir():
        return []
    out: List[DepositStatus] = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if (folder / "done.json").exists() or not (folder / "deposit.json").exists():
            continue
        if (folder / ABANDONED).exists() and not include_abandoned:
            continue
        dep = _deposit_status(folder, read_json)
        if (folder / ABANDONED).exists():
            try:
                dep.abandoned = read_json(folder / ABANDONED)
            except (OSError, ValueError) as exc:
                dep.abandoned = {"why": f"{folder / ABANDONED} cannot be read: {exc}"}
            dep.flags = ["deposit-abandoned"]
        if library is not None and dep.library != library:
            continue
        if collection is not None and dep.collection != collection:
            continue
        if bag_id is not None and bag_id not in [b["id"] for b in dep.bags]:
            continue
        out.append(dep)
    return out


def _deposit_status(folder: Path, read_json) -> DepositStatus:
    failures = []
    for f in sorted((folder / "failures").glob("*.json")) if (folder / "failures").is_dir() else []:
        try:
            failures.append(read_json(f))
        except (OSError, ValueError) as exc:
            failures.append({"step": f.stem, "message": f"failure record {f} cannot be read: {exc}",
                             "problems": [], "exit_code": 1})
    try:
        info = read_json(folder / "deposit.json")
    except (OSError, ValueError) as exc:
        failures.append({"step": "deposit.json", "message": f"{folder / 'deposit.json'} cannot be read: {exc}",
                         "problems": [], "exit_code": 2})
        return DepositStatus(key=folder.name, library=None, collection=None, source=None, policy=None,
                             started_at=None, stage="unreadable", bags=[], failures=failures,
                             flags=["deposit-failed"])
    bags: List[Dict[str, Any]] = []
    stage = "bagging"
    try:
        built = read_json(folder / "bags.json") if (folder / "bags.json").exists() else None
    except (OSError, ValueError):
        built = None
    if built is not None:
        stage = "replicating"
        for b in built.get("bags", []):
            safe = state_name(str(b["id"]))
            verified = sorted(p.name[len(safe) + 1:-len(".verified.json")]
                              for p in folder.glob(f"{safe}.*.verified.json"))
            bags.append({"id": b["id"], "registered": (folder / f"{safe}.registered.json").exists(),
                         "verified_on": verified})
        if bags and all(b["registered"] for b in bags):
            stage = "finishing"
    return DepositStatus(
        key=folder.name, library=info.get("library"), collection=info.get("collection"),
        source=info.get("source"), policy=info.get("policy"), started_at=info.get("created_at"),
        stage=stage, bags=bags, failures=failures,
        flags=["deposit-failed" if failures else "deposit-unfinished"])
