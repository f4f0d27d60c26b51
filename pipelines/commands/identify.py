"""`strongroom identify PATH...`: FIDO format identification, one row per file.

Needs no config file: it touches no archive. Folders are walked recursively, in sorted order,
without following symlinked folders; special files (FIFOs, sockets, devices) are left out
because reading them could block.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import stat
import sys
from typing import Iterator, List

from strongroom.errors import InputError

COLUMNS = ["path", "puid", "format_name", "format_version", "mime", "method", "alternatives",
           "fido_version", "signature_version"]

# One process identifies a few thousand files a second once FIDO is loaded; below this many
# files a second process (fork, pool, passing results back) saves next to nothing.
PARALLEL_THRESHOLD = 1000


def register(subparsers) -> None:
    from pipelines.cli import positive_int

    parser = subparsers.add_parser(
        "identify",
        help="identify file formats with FIDO/PRONOM (CSV, or JSON with --json)",
        description="Identify the format of each file (folders are searched recursively) with FIDO "
                    "and its PRONOM signatures. Prints CSV with a header row, or a JSON list with "
                    "--json. Alternatives (further PUIDs FIDO returned) are ';'-separated in CSV. "
                    "Uses both cores for large inputs unless --workers says otherwise.",
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="file or folder")
    # The global --json/--workers, also accepted after the command (`identify DIR --json`);
    # SUPPRESS leaves the global value alone when they are not repeated here.
    parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="JSON list instead of CSV (same as the global --json)")
    parser.add_argument("--workers", type=positive_int, default=argparse.SUPPRESS,
                        help="processes to use (same as the global --workers)")
    parser.set_defaults(run=run)


def list_files(paths: List[str]) -> Iterator[str]:
    """Files under the given paths; a missing path is an input error naming it."""
    for given in paths:
        if not os.path.lexists(given):
            raise InputError("no such file or folder", path=given)
        if os.path.isdir(given):
            for folder, dirs, files in os.walk(given, onerror=_walk_error):
                dirs.sort()
                for name in sorted(files):
                    full = os.path.join(folder, name)
                    if _is_regular(full):
                        yield full
        elif _is_regular(given):
            yield given
        else:
            raise InputError("not a regular file or folder (or a broken symlink)", path=given)


def _walk_error(exc: OSError) -> None:
    raise InputError(f"cannot list folder: {exc.strerror}", path=exc.filename)


def _is_regular(path: str) -> bool:
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False  # broken symlink inside a folder: nothing to identify


def choose_workers(requested: int, count: int) -> int:
    """--workers as given when above 1; otherwise both cores once the input is large enough.

    The global --workers defaults to 1, which cannot be told apart from an explicit 1.
    """
    if requested > 1:
        return requested
    if count >= PARALLEL_THRESHOLD:
        return min(2, _usable_cpus())
    return 1


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


def run(args: argparse.Namespace) -> int:
    from ingest.identify import identify_paths  # loads FIDO only when the command runs
    from pipelines.entry import skip_teardown

    files = list(list_files(args.paths))
    workers = choose_workers(getattr(args, "workers", 1) or 1, len(files))
    rows = _rows(identify_paths(files, workers=workers))
    # File names that are not valid UTF-8 are written back as the bytes they are.
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="surrogateescape")
    try:
        if args.json:
            json.dump(list(rows), sys.stdout, ensure_ascii=False, indent=1)
            sys.stdout.write("\n")
        else:
            writer = csv.DictWriter(sys.stdout, fieldnames=COLUMNS, lineterminator="\n")
            writer.writeheader()
            for row in rows:
                row["alternatives"] = ";".join(row["alternatives"])
                writer.writerow(row)
        sys.stdout.flush()
    except BrokenPipeError:  # `strongroom identify ... | head`: the reader has all it wants
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    # Everything is written and the pool is gone: the process may end without freeing FIDO's
    # signature tree object by object (pipelines.entry).
    skip_teardown()
    return 0


def _rows(results) -> Iterator[dict]:
    try:
        for path, ident in results:
            row = {"path": path}
            row.update(ident.as_dict())
            yield row
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror or exc}", path=exc.filename)
