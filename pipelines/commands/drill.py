"""`strongroom drill [--sample N | --bytes SIZE] [--library L] [--target T] [--due [--every D]] [--seed S]`.

Restore drills (fixity.drill): for each storage target in turn, restore a random sample of bags
from that target alone into scratch space under staging, verify every byte against the catalog
and the bags' manifests, record one ledger event per bag and target, and delete the scratch
copy. Exit 0 every drill passed (or nothing was due), 1 any drill failed (the copy is marked
damaged when a file was bad: `strongroom audit` repairs it), 2 usage or configuration error.
This module only parses and prints.
"""

from __future__ import annotations

from pipelines.cli import config_path
from pipelines.output import emit, warn


def register(sub) -> None:
    p = sub.add_parser(
        "drill", help="restore a random sample of bags from each target into scratch space and verify every byte",
        description="Restore drill: for each storage target in turn, restore a random sample of bags from THAT "
                    "target only (no fallback to another copy) into scratch space under the staging folder, "
                    "verify every byte against the catalog and the bag's manifests, record a ledger event per "
                    "bag and target (a 'fixity check' whose detail starts 'restore drill', with the run and the "
                    "random seed), and delete the scratch copy, also after a failure. Exit 0 all passed, 1 a "
                    "drill failed, 2 usage or configuration error.")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--sample", type=int, default=None, metavar="N",
                      help="bags per target (default 1)")
    size.add_argument("--bytes", dest="budget", default=None, metavar="SIZE",
                      help="bags per target up to this many bytes, e.g. 50GB (at least one bag)")
    p.add_argument("--library", default=None, metavar="L", help="only bags of this library")
    p.add_argument("--target", default=None, metavar="T", help="only this storage target")
    p.add_argument("--due", action="store_true",
                   help="only targets whose last drill is older than --every (or that were never drilled)")
    p.add_argument("--every", default=None, metavar="DURATION",
                   help="with --due: the drill cadence, e.g. 90d (default: the shortest fixity.drill_every of "
                        "the policies keeping copies on the target, 180d unless set)")
    p.add_argument("--seed", type=int, default=None, metavar="S",
                   help="the random seed (default: the time); recorded in every event, so a run can be repeated")
    p.set_defaults(run=run)


def run(args) -> int:
    from catalog.access import open_catalog
    from fixity.drill import run_drill
    from policies.config import load_config
    from policies.units import parse_duration, parse_size
    from strongroom.errors import ConfigError, UsageError

    if args.every is not None and not args.due:
        raise UsageError("--every sets the cadence of --due; give --due too", key="--every")
    try:
        budget = parse_size(args.budget, where="--bytes") if args.budget is not None else None
        every = parse_duration(args.every, where="--every") if args.every is not None else None
    except ConfigError as exc:
        raise UsageError(exc.message, key=exc.key) from None
    config = load_config(config_path(args))
    catalog = open_catalog(config)
    if args.library is not None and catalog.bags(library=args.library).num_rows == 0:
        raise UsageError(f"library {args.library!r} has no bag in the catalog", key="--library")
    report = run_drill(config, catalog, sample=args.sample, budget=budget, library=args.library,
                       target=args.target, due=args.due, every=every, seed=args.seed, workers=args.workers)
    code = 0 if report.ok else 1
    emit(args, {**report.to_dict(), "exit_code": code}, "" if args.json else _text(report))
    if not args.json:
        for w in report.warnings:
            warn(w)
    return code


def _text(report) -> str:
    lines = [f"Restore drill {report.run_id} (seed {report.seed}):"]
    for path in report.removed_stale:
        lines.append(f"  removed the scratch space of a drill that was stopped: {path}")
    for t in report.targets:
        if t.skipped:
            lines.append(f"  {t.target}: {t.skipped}")
            continue
        lines.append(f"  {t.target}: {len(t.bags) - t.failed} of {len(t.bags)} bag(s) restored and verified "
                     f"({t.candidates} held there)")
        for b in t.bags:
            if b.outcome == "success":
                lines.append(f"    ok      {b.bag_id}: {b.files} file(s), {b.bytes:,} bytes")
            else:
                lines.append(f"    FAILED  {b.bag_id}: {b.problems[0] if b.problems else 'failed'}")
                lines.extend(f"              {p}" for p in b.problems[1:6])
                if b.damaged:
                    lines.append(f"              the copy on {t.target} is now marked damaged; "
                                 f"`strongroom audit --bag {b.bag_id}` repairs it")
    failed = sum(t.failed for t in report.targets)
    lines.append("All drills passed; the scratch copies were deleted." if not failed else
                 f"{failed} drill(s) FAILED; the scratch copies were deleted.")
    return "\n".join(lines)
