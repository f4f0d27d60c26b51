"""The records a restore returns and raises (see fixity.restore).

Why a module of its own: the restore itself (fixity.restore) and the rerun that finishes a
killed one (fixity.restore_rerun) both build a `RestoreResult`, and the events they record carry
the same agent and the same bounded detail; keeping these here lets both import them without
importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from strongroom import NAME, __version__
from strongroom.errors import PreservationError

AGENT = f"{NAME} {__version__}"
#: Longest event or replica-state detail recorded (a longer one is cut).
DETAIL_MAX = 2000


@dataclass(frozen=True)
class CopyProblem:
    """One bad copy of one file on one replica: `problem` says what ("missing", digests...).

    `bag`: the earlier bag whose copy it was, when a version bag's fetch.txt sent the restore
    there (None: the bag restored). `blameless`: no replica is at fault (e.g. fetch.txt names
    no usable source), so nothing is recorded against one.
    """

    target: str
    path: str
    problem: str
    bag: Optional[str] = None
    blameless: bool = False

    def __str__(self) -> str:
        return f"{self.path}: {self.target}: {self.problem}"


@dataclass(frozen=True)
class Fallback:
    """A payload file whose good copy came from `source` after the copies in `failed` were refused."""

    path: str
    source: str
    failed: Tuple[CopyProblem, ...]


@dataclass(frozen=True)
class Missing:
    """A payload file with no good copy anywhere, and what each source had."""

    path: str
    tried: str

    def __str__(self) -> str:
        return f"{self.path}: {self.tried}"


@dataclass
class RestoreResult:
    bag_id: str
    dest: str
    payload_only: bool
    files: int = 0                      # payload files restored
    bytes: int = 0                      # payload bytes restored
    tag_files: int = 0                  # tag files in the restored bag (0 with payload_only)
    empty_dirs: int = 0                 # empty folders recreated (payload_only)
    sources: Dict[str, Dict[str, int]] = field(default_factory=dict)   # target -> {files, bytes}
    tag_source: Optional[str] = None    # the replica whose tag files were used
    fallbacks: List[Fallback] = field(default_factory=list)
    damaged: Dict[str, List[str]] = field(default_factory=dict)       # target -> problems found
    events: List[str] = field(default_factory=list)                   # event ids recorded
    warnings: List[str] = field(default_factory=list)
    partial: bool = False               # --partial: files without a good copy are left out, not fatal
    missing: List[str] = field(default_factory=list)                  # payload paths left out (partial)
    missing_detail: List[str] = field(default_factory=list)           # "path: what each source had"
    fetched: int = 0                    # files read from an earlier bag named by fetch.txt

    def to_dict(self) -> dict:
        return {
            "bag": self.bag_id, "dest": self.dest, "payload_only": self.payload_only,
            "files": self.files, "bytes": self.bytes, "tag_files": self.tag_files,
            "empty_dirs": self.empty_dirs, "sources": self.sources, "tag_source": self.tag_source,
            "fallback_files": [{"path": f.path, "from": f.source,
                                "instead_of": [{"target": p.target, "problem": p.problem} for p in f.failed]}
                               for f in self.fallbacks],
            "damaged_replicas": self.damaged, "events": self.events, "warnings": self.warnings,
            "partial": self.partial, "missing": self.missing, "missing_detail": self.missing_detail,
            "fetched_files": self.fetched,
        }


class RestoreError(PreservationError):
    """No good copy of some file (or of the tag files) exists: nothing was left at DEST.

    `problems` names every file concerned and what each replica had; `result` holds what was
    found and recorded (events, replicas marked damaged) for machine-readable output.
    """

    def __init__(self, message: str, *, path: str, problems: list, result: RestoreResult):
        super().__init__(message, path=path, problems=problems)
        self.result = result


__all__ = ["AGENT", "DETAIL_MAX", "CopyProblem", "Fallback", "Missing", "RestoreResult", "RestoreError"]
