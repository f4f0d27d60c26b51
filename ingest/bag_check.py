"""The staged bag's one check, kept in the deposit's state for the tasks after it (issue 11).

`finish_bag` validates the bag it built before giving it its final name (structure,
completeness, Payload-Oxum, tag manifests, metadata/ parsed strictly). What that check read is
written here, next to the deposit's markers, before the rename:

  <bag>.inventory.json  every file's digests and size (`BagInventory`: Replicate and Verify)
  <bag>.records.json    bag-info.txt and each payload file's digests, size, time and format
                        (`catalog.bag_records.records_from_parts`: Register; removed once
                        the bag is registered)

so ValidateBag no longer checks the bag a second time, nor do the inventory and Register parse
its manifests again (~4 s of CPU of a 20,000-file deposit). Both files name the bag and its
External-Identifier, a fresh UUID per build: a kept result that is missing, unreadable or from
another build of the bag id (a rebuild after a crash) is not used, and ValidateBag checks the
staged bag again and keeps that (`check_staged`).

Nothing is trusted more for being kept: every byte copied to a replica, tag files included, is
still checked against these digests before it gets its name, and every replica is re-read
against them after it was made durable. A staged file altered after the check is therefore
refused by the copy; a file added to staging after it is not in the inventory, so never stored;
the catalog rows are those of the bag as checked, not as staging holds it later.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from strongroom import bagit_spec, durable
from strongroom.checksums import SUPPORTED, hash_file

from . import metadata
from .deposit_states import state_name
from .validate import BagContents, require_valid

#: Version of the kept files' layout: another one is not used (the bag is checked again).
LAYOUT = 1


@dataclass
class BagCheck:
    """What one check of a staged bag found, as the later steps of the deposit need it."""

    bag_id: str
    external_identifier: str               # "urn:uuid:..." as bag-info.txt has it
    digests: Dict[str, Dict[str, str]]     # every stored file (tag files too) -> {algorithm: digest}
    sizes: Dict[str, int]
    bag_info: Dict[str, Tuple[str, int]]   # label -> (value, line), first occurrence
    payload_digests: Dict[str, Dict[str, str]]   # every file the payload manifests list (fetched too)
    files: List[metadata.FileDescription]  # in path order, one per listed payload file


def kept_paths(state_dir: Path, bag_id: str) -> Tuple[Path, Path]:
    """(inventory, records) of a bag in the deposit's state folder (names as the task markers')."""
    safe = state_name(bag_id)
    return Path(state_dir) / f"{safe}.inventory.json", Path(state_dir) / f"{safe}.records.json"


def from_contents(bag_dir: Path, contents: BagContents, bag_id: str) -> BagCheck:
    """The check's result from what a validation with keep=True read (`validate.BagContents`).

    The digests are those `storage_adapters.replicate.bag_inventory` takes from the bag: payload
    files by their manifests, tag files by the tag manifests (each compared by the check), the
    tag manifests themselves (and any tag file no tag manifest lists) hashed now, with the
    payload manifests' algorithms."""
    bag_dir = Path(bag_dir)
    where = str(bag_dir)
    raw = (bag_dir / "bag-info.txt").read_bytes()
    info = bagit_spec.bag_info_lines(raw, where)
    algorithms = list(dict.fromkeys(n for d in contents.payload.values() for n in map(_supported, d) if n))
    digests: Dict[str, Dict[str, str]] = {}
    for path in sorted(contents.sizes):
        listed = contents.payload.get(path) if bagit_spec.is_payload_path(path) else contents.tags.get(path)
        known = {_supported(a): d for a, d in (listed or {}).items() if _supported(a)}
        if known:
            digests[path] = known
        else:
            _, digests[path] = hash_file(bag_dir / path, algorithms or ["sha256"])
    formats = contents.formats or {}
    attributes = contents.attributes or {}
    files = [metadata.describe_file(path, formats, attributes, where) for path in sorted(contents.payload)]
    external = info.get("External-Identifier", ("", 0))[0]
    return BagCheck(bag_id, external, digests, contents.sizes, info, contents.payload, files)


def _supported(algorithm: str) -> Optional[str]:
    """The hashlib name of a manifest's algorithm if Strongroom computes it (as bag_inventory)."""
    name = bagit_spec.hashlib_name(algorithm)
    return name if name in SUPPORTED else None


def check_staged(bag_dir: Path, bag_id: str, *, allow_fetched: bool) -> BagCheck:
    """Check a staged bag (completeness only: the copies check every payload byte) and return
    what was found; PreservationError with every problem if it is not valid."""
    report = require_valid(bag_dir, completeness_only=True, allow_fetched=allow_fetched, keep=True)
    assert report.contents is not None
    return from_contents(Path(bag_dir), report.contents, bag_id)


def keep(check: BagCheck, state_dir: Path) -> None:
    """Write the check's result durably (each file atomically; the inventory last)."""
    inventory, records = kept_paths(state_dir, check.bag_id)
    head = {"layout": LAYOUT, "bag": check.bag_id, "external_identifier": check.external_identifier}
    rows = [[f.path, f.size, f.mtime_ns, f.identification, check.payload_digests[f.path]] for f in check.files]
    Path(state_dir).mkdir(parents=True, exist_ok=True)
    # Compact ASCII JSON (names as \u escapes).
    durable.atomic_write_bytes(records, _dump({**head, "bag_info": check.bag_info, "files": rows}))
    durable.atomic_write_bytes(inventory, _dump({**head, "digests": check.digests, "sizes": check.sizes}))


def _dump(data: dict) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode("ascii")


def _load(path: Path, bag_id: str, external_identifier: str) -> Optional[dict]:
    """A kept file's data if it is this build's (layout, bag id, External-Identifier), else None."""
    try:
        data = json.loads(Path(path).read_bytes())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("layout") != LAYOUT or data.get("bag") != bag_id \
            or data.get("external_identifier") != external_identifier:
        return None
    return data


def is_kept(state_dir: Path, bag_id: str, external_identifier: str) -> bool:
    """Both kept files are there, readable and of this build of the bag."""
    return all(_load(p, bag_id, external_identifier) is not None for p in kept_paths(state_dir, bag_id))


def load_records(state_dir: Path, bag_id: str, external_identifier: str
                 ) -> Optional[Tuple[Dict[str, Tuple[str, int]], Dict[str, Dict[str, str]],
                                     List[metadata.FileDescription]]]:
    """(bag-info lines, payload digests, file descriptions) as kept, or None when the kept
    records are missing or of another build."""
    data = _load(kept_paths(state_dir, bag_id)[1], bag_id, external_identifier)
    if data is None:
        return None
    info = {label: (value, line) for label, (value, line) in data["bag_info"].items()}
    digests = {row[0]: row[4] for row in data["files"]}
    files = [metadata.FileDescription(path, size, mtime, ident) for path, size, mtime, ident, _ in data["files"]]
    return info, digests, files


def drop_records(state_dir: Path, bag_id: str) -> None:
    """Remove the kept records once the bag is registered (its marker written): the catalog holds
    them now, and they are the larger of the two files (~300 bytes a file). The inventory stays
    with the other markers, as before."""
    kept_paths(state_dir, bag_id)[1].unlink(missing_ok=True)
