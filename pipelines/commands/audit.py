"""`strongroom audit [--due | --all] [--library L] [--collection C] [--bag B] [--quick | --deep]
[--all-digests] [--no-repair]`, and `strongroom audit --bag B --repair-from SOURCE`.

Select the copies to check (`fixity.due`), run one Luigi check task per bag x target and one
judgement/repair task per bag (`pipelines.audit_tasks`), then print one summary and write it
as JSON for monitoring (`fixity.summary`). Without --due or --all: --all when --bag is given
(audit that bag's copies now), else --due.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path
from typing import Dict, List, Optional

from pipelines.cli import config_path
from pipelines.output import emit


def register(sub) -> None:
    p = sub.add_parser(
        "audit", help="check the copies (fixity) on schedule and repair damage from a good copy",
        description="Fixity audit. --due (the default) checks the copies whose deep or quick audit is overdue "
                    "by their policy's cadence (a storage target may set its own), never-audited and most "
                    "overdue first, deep audits limited to the policy's daily_byte_budget. --all checks every "
                    "copy of the selected bags. --deep re-reads every file and recomputes its primary digest; "
                    "--quick checks presence, size and storage-kept checksums without reading. Damaged, "
                    "missing and extra files are repaired from a copy verified in this run unless --no-repair. "
                    "Every run also reports all open findings of the selected bags (damage, disputed or "
                    "inconclusive copies earlier runs left), whatever it checked. Exit 0 all intact (or "
                    "repaired) and nothing open, 1 damage remains or is still open, or a copy could not be "
                    "audited, 2 usage or configuration error. Safe to run from cron: a second run does no "
                    "duplicate work.")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--due", action="store_true", help="only copies overdue by their cadence (default)")
    which.add_argument("--all", action="store_true",
                       help="every copy of the selected bags, ignoring cadence and budget")
    p.add_argument("--library", default=None, help="only bags of this library")
    p.add_argument("--collection", default=None, help="only bags of this collection")
    p.add_argument("--bag", default=None, help="only this bag (LIB/COLL/YYYYMMDDTHHMMSSZ-N); implies --all "
                                               "unless --due is given")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--quick", action="store_true", help="presence, size and storage checksums only")
    how.add_argument("--deep", action="store_true", help="re-read and re-hash every file")
    p.add_argument("--all-digests", action="store_true",
                   help="deep: recompute every digest the catalog holds, not only the policy's primary one")
    p.add_argument("--no-repair", action="store_true", help="only report; change nothing on the storage targets")
    p.add_argument("--repair-from", metavar="SOURCE", default=None,
                   help="with --bag: repair that bag's damaged or missing files that no good copy can mend from "
                        "SOURCE, the original folder it was deposited from (or a BagIt bag of it). Every source "
                        "file is hashed with every algorithm of the bag's own manifests and must match them and "
                        "the catalog exactly, else it is refused and listed; the source is only read. Each "
                        "repair is a ledger event naming the source, and the copies are re-audited after. Exit 0 "
                        "all copies intact, 1 anything refused or still damaged, 2 usage error")
    p.add_argument("--virus", action="store_true",
                   help="instead of fixity: rescan every verified copy of the selected bags with clamd's current "
                        "signatures (new signatures find old infections) and record a virus check event per "
                        "copy; exit 1 if anything is infected or could not be scanned")
    p.set_defaults(run=run)


def now() -> _dt.datetime:
    """The audit's clock (`fixity.audit.utcnow`, which tests replace)."""
    from fixity import audit

    return audit.utcnow()


#: Arrow's allocator (mimalloc) keeps pages freed by one batch for later ones, ~65 MB after one
#: pass over a 200,000-file bag's catalog rows: the streamed check then peaked 1.3x higher at
#: 200,000 files than at 20,000 although it holds no more. With no purge delay it gives them
#: back at once (measured: 1.08-1.12x). Read by mimalloc when pyarrow loads, so set before that.
ALLOCATOR_ENV = {"MIMALLOC_PURGE_DELAY": "0"}


def run(args) -> int:
    for name, value in ALLOCATOR_ENV.items():   # before pyarrow is imported; an operator's own setting wins
        os.environ.setdefault(name, value)
    from catalog.access import open_catalog
    from policies.config import load_config

    config = load_config(config_path(args))
    catalog = open_catalog(config, must_exist=True)
    if getattr(args, "repair_from", None) is not None:
        return _repair_from(args, config, catalog)
    if getattr(args, "virus", False):
        from fixity.virus_audit import run_virus_audit

        result = run_virus_audit(config, library=args.library, collection=args.collection, bag=args.bag,
                                 catalog=catalog)
        emit(args, result.to_dict(), result.text())
        return result.exit_code
    mode = "all" if args.all or (args.bag and not args.due) else "due"
    kind = "quick" if args.quick else "deep" if args.deep else None
    summary = run_audit(config, mode=mode, kind=kind, library=args.library, collection=args.collection,
                        bag=args.bag, repair=not args.no_repair, all_digests=args.all_digests,
                        workers=args.workers, scheduler_url=args.scheduler_url, verbose=args.verbose,
                        catalog=catalog)
    data, text, code = summary.to_dict(), summary.text(), summary.exit_code
    early = [c for c in summary.selection.chosen + summary.selection.deferred if c.early or c.sampled]
    if early:
        data = {**data, "due_early": [c.to_dict() for c in early]}
        text += early_text(summary.selection, early)
    if mode == "due":  # the audited libraries' published reports, if their switch is on (reports.publish)
        from reports.publish import refresh_published

        published, problems = refresh_published(config, [c.bag_id for c in summary.selection.chosen], catalog=catalog)
        if published or problems:
            data = {**data, "published": published, "publish_problems": problems}
            text += "".join(f"\nReports of library {lib} published ({len(keys)})" for lib, keys in published.items())
            text += "".join(f"\nPUBLISH FAILED: {p}" for p in problems)
            code = max(code, 1 if problems else 0)
            data["exit_code"] = code
    emit(args, data, text)
    _end_without_teardown()
    return code


def _end_without_teardown() -> None:
    """Everything an audit writes (ledger, replica records, task outputs, the summary) is made
    durable before it returns and its worker pools are shut down, so the process may end
    without freeing each of its objects one by one (`pipelines.entry.skip_teardown`)."""
    from pipelines.entry import skip_teardown

    skip_teardown()


EARLY_LINES = 20


def early_text(selection, special) -> str:
    """Why copies were audited before their policy's deep_every (a finding on their target) or
    re-read on a cold target (its random sample): each reason, so nobody wonders why these bags."""
    lines = [f"\nDeep audits due early or sampled ({len(special)}):"]
    lines += [f"  {c.bag_id} {c.target}{' (deferred: daily byte budget)' if c in selection.deferred else ''}: "
              f"{c.reason}"[:300] for c in special[:EARLY_LINES]]
    if len(special) > EARLY_LINES:
        lines.append(f"  ... and {len(special) - EARLY_LINES} more (--json lists them all under due_early)")
    return "\n".join(lines)


def _repair_from(args, config, catalog) -> int:
    """`audit --repair-from SOURCE --bag B` (fixity.repair_from_source): one bag, every copy, deep."""
    from fixity.repair_from_source import repair_from_source
    from strongroom.errors import UsageError

    conflicting = [name for name, on in (("--virus", args.virus), ("--no-repair", args.no_repair),
                                         ("--quick", args.quick), ("--due", args.due)) if on]
    if not args.bag or conflicting:
        raise UsageError("--repair-from SOURCE needs --bag BAG_ID (one bag, all its copies, deep)"
                         + (f" and cannot be combined with {', '.join(conflicting)}" if conflicting else ""))
    if args.library:
        from catalog.scope import LibraryScope

        LibraryScope(args.library).check_bag(catalog, args.bag)   # another library's bag: exit 2, nothing done
    result = repair_from_source(config, catalog, args.bag, args.repair_from)
    emit(args, result.to_dict(), result.text())
    return result.exit_code


def run_audit(config, *, mode: str = "due", kind: Optional[str] = None, library: Optional[str] = None,
              collection: Optional[str] = None, bag: Optional[str] = None, repair: bool = True,
              all_digests: bool = False, workers: int = 1, scheduler_url: Optional[str] = None, verbose: int = 0,
              clock=None, catalog=None):
    """Select, run the Luigi tasks, gather: the run's AuditSummary (already written to disk)."""
    from catalog.access import open_catalog
    from fixity import due
    from fixity.repair import BagAudit
    from fixity.summary import AuditSummary, new_run_id, summaries_dir
    from pipelines.audit_tasks import AUDIT_DIR, AuditBag, failure_path, plan_text
    from pipelines.runner import run_tasks

    clock = clock or now
    started = clock()
    catalog = catalog if catalog is not None else open_catalog(config)
    prune_outputs(Path(config.staging) / AUDIT_DIR)
    if bag is not None:
        from strongroom.bag_id import BagId

        BagId.parse(bag)  # UsageError for a malformed id
    selection = due.select(config, catalog, mode=mode, kind=kind, library=library, collection=collection, bag=bag,
                           now=started)
    by_bag = selection.by_bag()
    luigi_workers = max(1, min(workers, len(by_bag)))
    threads = max(1, workers // luigi_workers)
    tasks: Dict[str, AuditBag] = {}
    for bag_id, cands in by_bag.items():
        plan = plan_text([(c.target, c.kind, c.basis) for c in cands])
        tasks[bag_id] = AuditBag(str(config.path), bag_id, plan, all_digests=all_digests, repair=repair,
                                 threads=threads)
    if tasks:
        run_tasks(list(tasks.values()), workers=luigi_workers, scheduler_url=scheduler_url, verbose=verbose)

    bags: List[BagAudit] = []
    errors: List[dict] = []
    unfinished: List[str] = []
    audit_dir = Path(config.staging) / AUDIT_DIR
    for bag_id, task in tasks.items():
        out = Path(task.output().path)
        if out.exists():
            with open(out, encoding="utf-8") as fh:
                bags.append(BagAudit.from_dict(json.load(fh)))
            continue
        failed = [failure_path(audit_dir, t.task_id) for t in [task] + list(task.requires())]
        records = [json.loads(p.read_text("utf-8")) for p in failed if p.exists()]
        if records:
            errors.append({"bag": bag_id, "message": records[0].get("message", "failed"),
                           "problems": records[0].get("problems", [])})
        else:
            unfinished.append(bag_id)

    after = due.select(config, catalog, mode="due", library=library, collection=collection, bag=bag, now=clock())
    overdue = {"deep": sum(1 for c in after.chosen + after.deferred if c.kind == "deep" and not c.sampled),
               "quick": sum(1 for c in after.chosen if c.kind == "quick")}
    open_now = outstanding(config, catalog, library=library, collection=collection, bag=bag, now=clock())
    seq, head = catalog.ledger_head()
    summary = AuditSummary(run_id=new_run_id(started), started_at=started, finished_at=clock(), mode=mode, kind=kind,
                           repair=repair, filters={"library": library, "collection": collection, "bag": bag},
                           selection=selection, bags=bags, errors=errors, unfinished=unfinished,
                           overdue_after=overdue, ledger_head=None if seq < 0 else {"seq": seq, "hash": head},
                           open_findings=open_now)
    summary.write(summaries_dir(config))
    return summary


def outstanding(config, catalog, *, library: Optional[str] = None, collection: Optional[str] = None,
                bag: Optional[str] = None, now=None):
    """Every open finding (`catalog.findings`) of the bags matching the filters, read from the
    catalog after the run: what this run did not select is reported too."""
    from catalog.findings import open_findings
    from reports.status import replica_table

    bags = catalog.bags(library, collection, bag)
    if bags.num_rows == 0:
        return []
    return open_findings(catalog, replica_table(config, catalog, bags, bag_id=bag, now=now).to_pylist())


#: Task outputs (checks, bag results, failure records) older than this are removed at the start
#: of a run: they only serve runs in progress and reruns after a crash.
KEEP_OUTPUTS_DAYS = 7


def prune_outputs(audit_dir: Path, keep_days: float = KEEP_OUTPUTS_DAYS) -> int:
    """Remove old task outputs and their lock files (best effort); the per-bag locks and the
    summaries are left alone. An output's lock is only ever used for that output's copy state
    (basis), which a week later is long gone."""
    import time

    cutoff = time.time() - keep_days * 86400
    removed = 0
    for sub in ("checks", "bags", "failures"):
        folder = audit_dir / sub
        if not folder.is_dir():
            continue
        for path in [*folder.rglob("*.json"), *folder.rglob("*.json.lock")]:
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
            except OSError:
                pass
    return removed
