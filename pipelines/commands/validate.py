"""`strongroom validate BAG_DIR`: check any BagIt bag (RFC 8493, and drafts 0.93-0.97).

Needs no config file: it touches no archive. Exit 0 valid, 1 invalid (every problem listed, each
naming the file it concerns), 2 when BAG_DIR is not a folder. fetch.txt URLs are never fetched.
"""

from __future__ import annotations

import argparse
import os

from pipelines.output import emit, warn


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "validate",
        help="validate a BagIt bag (RFC 8493): exit 0 valid, 1 invalid",
        description="Validate a BagIt bag: bagit.txt, manifests, completeness, Payload-Oxum, every "
                    "payload and tag checksum, fetch.txt (never fetched). Lists every problem found, "
                    "each naming the file concerned. Exit 0 valid, 1 invalid, 2 if BAG_DIR is not a "
                    "folder. Hashes with two threads unless --workers says otherwise.",
    )
    parser.add_argument("bag_dir", metavar="BAG_DIR", help="the bag's top folder (holding bagit.txt)")
    parser.add_argument(
        "--completeness-only", "--fast", dest="completeness_only", action="store_true",
        help="check structure, manifests, completeness, Payload-Oxum and tag manifests, "
             "without re-reading payload files",
    )
    # Also accepted after the command; dest differs from the global --json so the sub-parser's
    # default cannot overwrite a global `strongroom --json validate ...`.
    parser.add_argument("--json", dest="validate_json", action="store_true",
                        help="print a JSON object (valid, version, problems, ...) on stdout")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ingest.validate import printable, validate_bag

    if getattr(args, "validate_json", False):
        args.json = True
    requested = getattr(args, "workers", 1) or 1
    workers = requested if requested > 1 else min(2, os.cpu_count() or 1)
    report = validate_bag(args.bag_dir, completeness_only=args.completeness_only, processes=workers)
    if not args.json:
        for w in report.warnings:
            warn(str(w))
    emit(args, report.to_dict(), _text(report, printable))
    return 0 if report.valid else 1


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
