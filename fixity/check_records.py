"""What a check of one replica can find, and the JSON-able records it produces (`Finding`,
`FileProblem`, `TagCopy`, `ReplicaCheck`): shared by the audit (`fixity.audit`), the repair
step (`fixity.repair`) and everything that reads a check's results.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Mapping, Optional

from strongroom import bagit_spec

DEEP, QUICK, TAGS = "deep", "quick", "tags"   # TAGS: tag files only (a copy looked at for comparison)

# --- what can be found ------------------------------------------------------------------------
# Damage (exit 1 unless repaired):
CORRUPTED = "corrupted"                # same size, different digest (or the storage's own checksum differs)
TRUNCATED = "truncated"                # shorter than the catalog says
GROWN = "grown"                        # longer than the catalog says
MISSING = "missing"                    # a payload file the catalog lists is not stored
EXTRA = "extra"                        # a stored file no manifest or tag manifest accounts for
NOT_A_FILE = "not-a-file"              # a link, FIFO, device or folder where a file (or a file/link where a folder) belongs
SHARED_STORAGE = "shared-storage"      # this copy's file is the same file on disk as another copy's (fixity.independence)
TAG_DAMAGED = "tag-damaged"            # a tag file (bagit.txt, bag-info, manifests, metadata/) differs
TAG_MISSING = "tag-missing"            # a tag file is not stored
BAG_MISSING = "bag-missing"            # nothing of the bag is stored on the target
BAG_NOT_A_FOLDER = "bag-not-a-folder"  # the bag's folder (or its LIB/COLL folder) is a link or not a folder
MANIFEST_DISAGREES = "manifest-disagrees"  # the copy's own payload manifest disagrees with the catalog
FETCH_UNVERIFIED = "fetch-unverified"  # a version bag's fetch.txt names a file no earlier registered bag holds as listed
# Bag-level judgements made by fixity.repair across copies (damage):
CATALOG_DISAGREES = "catalog-disagrees"    # the majority of copies and their manifests say otherwise
NO_GOOD_COPY = "no-good-copy"              # no copy anywhere to repair from: nothing was touched
TAG_IN_DOUBT = "tag-in-doubt"              # copies of a tag file disagree and nothing says which is right
DISPUTED = "disputed"                      # a copy is disputed (fixity.repair): nothing of the bag is repaired
# Not damage: the check could not conclude (exit 1, outcome inconclusive, never repaired):
UNREADABLE = "unreadable"              # read error / timeout / server error after retries
UNREACHABLE = "unreachable"            # the target or the bag's listing could not be read

DAMAGE_KINDS = frozenset({CORRUPTED, TRUNCATED, GROWN, MISSING, EXTRA, NOT_A_FILE, SHARED_STORAGE, TAG_DAMAGED,
                          TAG_MISSING, BAG_MISSING, BAG_NOT_A_FOLDER, MANIFEST_DISAGREES, CATALOG_DISAGREES,
                          NO_GOOD_COPY, TAG_IN_DOUBT, DISPUTED, FETCH_UNVERIFIED})
INCONCLUSIVE_KINDS = frozenset({UNREADABLE, UNREACHABLE})

#: Findings kept per replica check; more are counted, not listed (a whole bag of bad files
#: must not produce a result file the size of the bag's manifest).
MAX_LISTED = 100_000


# --------------------------------------------------------------------------------------------
# Records


@dataclass
class Finding:
    """One thing found wrong (or not checkable) on one copy, or about a bag (`target` None)."""

    kind: str
    target: Optional[str]
    path: Optional[str]
    detail: str

    @property
    def damage(self) -> bool:
        return self.kind in DAMAGE_KINDS

    @property
    def inconclusive(self) -> bool:
        return self.kind in INCONCLUSIVE_KINDS

    def __str__(self) -> str:
        where = " ".join(x for x in (self.target, self.path) if x)
        return f"{self.kind}: {where}: {self.detail}" if where else f"{self.kind}: {self.detail}"

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Finding":
        return cls(**d)


@dataclass
class FileProblem:
    """A payload copy that is not as the catalog says, or could not be read.

    `size` and `digests` are what was found (bytes read, or stat size in a quick check); they
    let the repair step compare copies when the catalog itself is in doubt.
    """

    path: str
    kind: str
    detail: str
    size: Optional[int] = None
    digests: Dict[str, str] = field(default_factory=dict)


@dataclass
class TagCopy:
    """One stored tag file of this copy: its size and digests (every algorithm of interest)."""

    size: int
    digests: Dict[str, str]


@dataclass
class ReplicaCheck:
    """Everything one check of one copy found; JSON-able (it is a Luigi task's output).

    `kind` is deep, quick or tags (tag files only: a copy read for comparison, not audited).
    `reachable` False means the listing failed: nothing else is known. Payload problems are
    listed per file; tag files are only described here (`tag_copies`, `tag_manifests`,
    `manifest_state`) and judged across copies by `fixity.repair`.
    """

    bag_id: str
    target: str
    site: str
    kind: str
    started_at: str
    finished_at: str = ""
    reachable: bool = True
    unreachable_reason: str = ""
    bag_present: bool = True
    files_checked: int = 0           # payload files looked at (stat or read)
    bytes_checked: int = 0           # payload bytes read and hashed (what a daily budget limits)
    tag_bytes: int = 0               # tag file bytes read
    algorithms: List[str] = field(default_factory=list)   # digests recomputed for payload (deep)
    payload_problems: List[FileProblem] = field(default_factory=list)
    problems_not_listed: int = 0
    extra_payload: List[str] = field(default_factory=list)
    tag_copies: Dict[str, TagCopy] = field(default_factory=dict)
    tag_unreadable: Dict[str, str] = field(default_factory=dict)
    #: tag manifests of this copy, parsed: alg -> {tag path: digest}; absent alg = missing/unparseable
    tag_manifests: Dict[str, Dict[str, str]] = field(default_factory=dict)
    tag_manifest_errors: Dict[str, str] = field(default_factory=dict)
    #: alg -> "agrees" | "disagrees" | "missing" | "invalid: ..." (payload manifest vs catalog)
    manifest_state: Dict[str, str] = field(default_factory=dict)
    #: alg -> {path: digest the manifest gives, or None when it omits a catalog file}
    manifest_differences: Dict[str, Dict[str, Optional[str]]] = field(default_factory=dict)
    bagit_ok: bool = True
    bag_info_issues: List[str] = field(default_factory=list)
    bag_version: str = bagit_spec.BAGIT_VERSION
    findings: List[Finding] = field(default_factory=list)
    #: root-relative keys of odd objects found where the bag's folders belong (a linked bag or
    #: collection folder): repair moves them aside before storing the bag again
    odd_keys: List[str] = field(default_factory=list)
    #: [path, device, inode] of every file read or stat'ed with more than one hard link: compared
    #: with the other copies by fixity.independence (a file Strongroom stored has one link)
    linked: List[List[Any]] = field(default_factory=list)
    #: [device, inode] of the bag's folder (file systems): two copies with one folder are one copy
    folder_identity: Optional[List[int]] = None

    # -- outcome of this check alone (fixity.repair adds the judgement across copies)
    @property
    def damaged(self) -> bool:
        return any(f.damage for f in self.findings)

    @property
    def inconclusive(self) -> bool:
        return any(f.inconclusive for f in self.findings)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ReplicaCheck":
        d = dict(d)
        d["payload_problems"] = [FileProblem(**p) for p in d.get("payload_problems", [])]
        d["tag_copies"] = {k: TagCopy(**v) for k, v in d.get("tag_copies", {}).items()}
        d["findings"] = [Finding.from_dict(f) for f in d.get("findings", [])]
        return cls(**d)
