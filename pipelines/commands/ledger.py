"""`strongroom ledger verify [--expected-head HASH] [--against-storage]`: is the event ledger as it was written?

Re-hashes every segment of the catalog's ledger and checks the chain. Exit 0 if intact, 1 if
any event or segment was altered, inserted, reordered or removed (each problem names the
segment file), 2 for a bad option or config. The head hash it prints is worth keeping outside
the archive (a report, a ticket, an e-mail): passing it back with --expected-head later also
detects that the newest segments were removed, which the chain alone cannot show.
`--against-storage` does that without a noted hash: every storage target keeps checkpoints of
the ledger (catalog.anchors), and every segment they anchored must be in the catalog, with the
same hash; each problem names the target, the checkpoint and the segment.
"""

from __future__ import annotations

import argparse
import re

from strongroom.errors import UsageError

_HASH = re.compile(r"^(sha256:)?[0-9a-fA-F]{64}$")


def register(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("ledger", help="check the event ledger's hash chain",
                                   description="Commands for the catalog's hash-chained event ledger.")
    actions = parser.add_subparsers(dest="ledger_command", metavar="ACTION")
    actions.required = True
    verify = actions.add_parser(
        "verify", help="re-hash every ledger segment and check the chain; exit 1 if anything was altered",
        description="Re-hash every ledger segment and check the chain. Exit 0 intact, 1 altered or "
                    "removed (naming the segment), 2 usage/config error.")
    verify.add_argument("--expected-head", metavar="HASH", default=None,
                        help="a head hash noted earlier (printed by this command); detects removal of "
                             "the newest segments")
    verify.add_argument("--against-storage", action="store_true",
                        help="also check that the catalog's chain holds every checkpoint each storage target "
                             "keeps (catches a catalog rolled back, truncated or rewritten with every hash "
                             "recomputed)")
    verify.set_defaults(run=run_verify)
    return parser


def run_verify(args: argparse.Namespace) -> int:
    from catalog.access import open_store
    from catalog.ledger import verify_store
    from pipelines.cli import config_path
    from pipelines.output import emit
    from policies.config import load_config

    expected = getattr(args, "expected_head", None)
    if expected is not None and not _HASH.match(expected.strip()):
        raise UsageError(f"{expected!r} is not a SHA-256 hash (64 hex digits, as printed by "
                         f"`strongroom ledger verify`)", key="--expected-head")
    config = load_config(config_path(args))
    store = open_store(config, must_exist=True)
    report = verify_store(store, expected_head=expected)
    head = "none (empty ledger)" if report.head_hash is None else \
        f"seg-{report.head_seq:012d} sha256:{report.head_hash}"
    if report.ok:
        lines = [f"ledger intact: {report.segments} segment(s), {report.events} event(s)", f"head: {head}"]
        if expected is not None:
            lines.append("expected head: present")
    else:
        lines = [f"LEDGER ALTERED: {len(report.problems)} problem(s) in {config.catalog}/events"]
        lines += [f"  - {p}" for p in report.problems]
        lines.append(f"head now: {head}")
    data = {"catalog": config.catalog, **report.to_dict(), "expected_head": expected}
    ok = report.ok
    if getattr(args, "against_storage", False):
        from catalog.anchors import verify_against_storage

        anchored = verify_against_storage(config, store)
        data["against_storage"] = anchored.to_dict()
        lines += storage_lines(anchored)
        ok = ok and anchored.ok
    emit(args, data, "\n".join(lines))
    return 0 if ok else 1


def storage_lines(report) -> list:
    """The --against-storage part of the text: one line per target, then each problem."""
    lines = []
    for t in report.targets:
        where = f"  target {t.target}: {t.checkpoints} checkpoint(s)"
        if t.checkpoints:
            where += f", anchored up to seg-{t.anchored_seq:012d}"
        where += " - OK" if not t.problems else f" - {len(t.problems)} PROBLEM(S)"
        lines.append(where + (f" ({t.note})" if t.note else ""))
        lines += [f"    - {p}" for p in t.problems]
    lines.append("storage checkpoints: the catalog's ledger holds every anchored segment" if report.ok else
                 "STORAGE CHECKPOINTS DISAGREE WITH THE CATALOG: its ledger was rolled back, truncated, altered "
                 "or replaced (or a checkpoint was damaged); with the catalog's events/ folder moved aside, `strongroom "
                 "catalog rebuild` restores the anchored events")
    return lines
