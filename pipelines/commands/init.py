"""`strongroom init [DIR]`: a working archive layout a librarian can start from and read.

Writes DIR/strongroom.yaml (commented), DIR/policies/at-risk-purchased.yaml and
DIR/policies/self-built.yaml, then creates the catalog, staging and replica folders. It never
reads an existing config (so a broken --config does not stop it) and never replaces an
existing file unless --force is given.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from policies.config import load_config, write_default_files


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "init",
        help="write a working strongroom.yaml and default policies",
        description="Write a working strongroom.yaml and the default policies (at-risk-purchased, "
                    "self-built) into DIR, with two filesystem replicas in two folders of DIR (a demo "
                    "layout: one disk is one location, not two sites), and create the catalog, staging "
                    "and replica folders under DIR.",
    )
    parser.add_argument("directory", nargs="?", default=None, metavar="DIR",
                        help="folder to set up (default: the current folder)")
    parser.add_argument("--force", action="store_true",
                        help="replace an existing strongroom.yaml and default policy files")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    directory = args.directory if args.directory is not None else os.getcwd()
    written = write_default_files(directory, force=args.force)
    config = load_config(written.config)
    demo = len(set(config.locations.values())) < len(config.storage)
    if args.json:
        payload = {
            "config": str(written.config),
            "policies": [str(p) for p in written.policies],
            "folders_created": [str(p) for p in written.folders_created],
            "overwritten": [str(p) for p in written.overwritten],
            "catalog": config.catalog,
            "staging": str(config.staging),
            "storage": {name: {"type": t.type, "site": t.site, "root": None if t.root is None else str(t.root),
                               "location": config.location_of(name)}
                        for name, t in config.storage.items()},
            "locations": len(set(config.locations.values())),
            "demo_layout": demo,
            "warnings": list(config.warnings),
        }
        json.dump(payload, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    out = sys.stdout
    for path in (written.config, *written.policies):
        verb = "Replaced" if path in written.overwritten else "Wrote"
        out.write(f"{verb} {path}\n")
    for folder in written.folders_created:
        out.write(f"Created folder {folder}\n")
    out.write("\nStorage targets:\n")
    for name, target in config.storage.items():
        out.write(f"  {name}: {target.type} {target.root} (site {target.site})\n")
    if demo:
        names = " and ".join(config.storage)
        out.write(
            f"\nThis is a DEMO LAYOUT, not two sites: {names} are folders on one disk, so they are one\n"
            "location (one failed disk takes every copy). `status`, the reports and the NDSA levels\n"
            "count them as one location until site-b is on another disk in another building.\n")
    out.write(
        "\nNext: move site-b to another disk or building (a mounted network share works) and write the\n"
        "real place of each storage target in its `site` in strongroom.yaml, then deposit a collection, e.g.\n"
        f"  strongroom --config {written.config} deposit SOURCE --library LIB --collection COLL --type purchased\n"
    )
    return 0
