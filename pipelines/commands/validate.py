"""`strongroom validate BAG_DIR`: check any BagIt bag (RFC 8493, and drafts 0.93-0.97).

Needs no config file: it touches no archive. Exit 0 valid, 1 invalid (every problem listed, each
naming the file it concerns), 2 when BAG_DIR is not a folder or not a bag at all (no bagit.txt, no
manifest, no data/: the wrong folder was named, which is an input error, not a damaged bag). A
folder that looks like a bag but lacks bagit.txt (the LoC conformance case "missing-bagit.txt":
manifest and data/ present) is an invalid bag, exit 1. fetch.txt URLs are never fetched.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from pipelines.output import emit, warn


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "validate",
        help="validate a BagIt bag (RFC 8493): exit 0 valid, 1 invalid",
        description="Validate a BagIt bag: bagit.txt, manifests, completeness, Payload-Oxum, every "
                    "payload and tag checksum, fetch.txt (never fetched). Lists every problem found, "
                    "each naming the file concerned. Exit 0 valid, 1 invalid, 2 if BAG_DIR is not a "
                    "folder or not a bag at all (no bagit.txt, manifest or data/). Hashes with two threads unless --workers says otherwise.",
    )
    parser.add_argument("bag_dir", metavar="BAG_DIR", help="the bag's top folder (holding bagit.txt)")
    parser.add_argument(
        "--completeness-only", "--fast", dest="completeness_only", action="store_true",
        help="check structure, manifests, completeness, Payload-Oxum and tag manifests, "
             "without re-reading payload files",
    )
    # --json (a JSON object: valid, version, problems, ...) is the global option, accepted here too.
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ingest.validate import printable, validate_bag

    _refuse_plain_folder(args.bag_dir)
    requested = getattr(args, "workers", 1) or 1
    workers = requested if requested > 1 else min(2, os.cpu_count() or 1)
    report = validate_bag(args.bag_dir, completeness_only=args.completeness_only, processes=workers)
    if not args.json:
        for w in report.warnings:
            warn(str(w))
    emit(args, report.to_dict(), _text(report, printable))
    return 0 if report.valid else 1


def _refuse_plain_folder(bag_dir: str) -> None:
    """A folder with none of a bag's parts is not a bag someone damaged but the wrong folder: exit 2.

    Only when bagit.txt, every manifest-*.txt and data/ are all absent; with any of them present
    the folder is judged as a bag (a missing bagit.txt is then one of its problems, exit 1).
    Missing or non-folder paths are left to validate_bag, which names them."""
    from strongroom import bagit_spec as spec
    from strongroom.errors import InputError

    root = Path(bag_dir)
    if not root.is_dir():
        return
    try:
        names = {entry.name for entry in os.scandir(root)}
    except OSError as exc:
        raise InputError(f"cannot be read: {exc.strerror}", path=str(bag_dir)) from None
    if spec.BAGIT_TXT in names or "data" in names or any(
            n.startswith("manifest-") and n.endswith(".txt") for n in names):
        return
    raise InputError(f"not a BagIt bag: no {spec.BAGIT_TXT} (nor any manifest-*.txt or data/)",
                     path=str(bag_dir))


def _text(report, printable) -> str:
    what = f"BagIt {report.version or '?'}"
    algs = ", ".join(report.algorithms) or "none"
    scope = "completeness only, payload not re-read" if report.completeness_only else \
        f"{report.files_hashed} files hashed"
    files = f"{report.payload_files} payload file{'s' if report.payload_files != 1 else ''}"
    summary = f"{what}; manifests: {algs}; {files}, {report.payload_bytes} bytes; {scope}"
    if report.valid:
        return f"valid: {printable(report.bag_dir)} ({summary})"
    n = len(report.problems)
    lines = [f"INVALID: {printable(report.bag_dir)} ({summary}): {n} problem{'s' if n != 1 else ''}"]
    lines += [f"  - {p}" for p in report.problems]
    return "\n".join(lines)
