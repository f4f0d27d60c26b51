"""`strongroom deposit SOURCE --library LIB --collection COLL --type purchased|self-built [--new-version]`
and `strongroom deposit --abandon KEY --reason TEXT`.

Stage, identify, bag, validate, replicate to every policy target, verify each copy, register.
The work runs as Luigi tasks (local scheduler, or `--scheduler-url` for luigid); a rerun of
the same command after a crash resumes the unfinished deposit and does only what is missing.
A deposit identical to an earlier bag group of the collection stores nothing (exit 0, says
which); `--new-version` stores only what changed (docs/versions.md). `--abandon` gives up an
unfinished or failed deposit for good, recorded with its reason (`pipelines.flow.abandon_deposit`).
"""

from __future__ import annotations

import json
from pathlib import Path

from pipelines.cli import config_path
from pipelines.output import emit, warn


def register(sub) -> None:
    p = sub.add_parser("deposit", help="package a source folder as BagIt bag(s) and preserve them on every replica")
    p.add_argument("source", nargs="?", help="folder holding the collection (never modified)")
    p.add_argument("--library", help="library code, e.g. PKU (required with SOURCE)")
    p.add_argument("--collection", help="collection code, e.g. rare-books (required with SOURCE)")
    p.add_argument("--type", dest="collection_type", choices=["purchased", "self-built"],
                   help="required with SOURCE")
    p.add_argument("--policy", default=None, help="policy name (default: chosen by --type)")
    p.add_argument("--title", default="", help="human-readable collection title (any language)")
    p.add_argument("--follow-internal-links", action="store_true",
                   help="take symbolic links to files inside the source as those files (default: refuse links)")
    p.add_argument("--no-virus-check", action="store_true",
                   help="do not scan this deposit with ClamAV (refused when the policy says virus_check: required)")
    p.add_argument("--new-version", action="store_true",
                   help="deposit a changed collection as a new version: store only new and changed files, "
                        "reference the unchanged ones in the earlier bags (fetch.txt); also stores a deposit "
                        "identical to an earlier one, as a version holding no new file")
    p.add_argument("--abandon", metavar="KEY", default=None,
                   help="give up the unfinished or failed deposit KEY (as `status` shows it), for good; "
                        "needs --reason; nothing stored is deleted")
    p.add_argument("--reason", default=None, help="why the deposit is abandoned (recorded in the ledger)")
    p.set_defaults(run=run, deposit_parser=p)


def run(args) -> int:
    from policies.config import load_config

    def usage(message: str) -> int:
        """Exit 2 with the usage line, exactly as argparse's own errors (--json: one document too)."""
        import sys

        from pipelines.output import emit_error

        text = f"{args.deposit_parser.prog}: error: {message}"
        args.deposit_parser.print_usage(sys.stderr)
        print(text, file=sys.stderr)
        if getattr(args, "json", False):
            emit_error(2, text)
        return 2

    if args.abandon is not None:
        given = [f for f, v in (("SOURCE", args.source), ("--new-version", args.new_version)) if v]
        if given:
            return usage(f"--abandon KEY takes no {' or '.join(given)}: it gives up the deposit KEY as it is")
        if not (args.reason or "").strip():
            return usage("--abandon KEY needs --reason TEXT (why the deposit is given up; it is recorded)")
        from pipelines import flow

        config = load_config(config_path(args))
        outcome = flow.abandon_deposit(config, args.abandon, args.reason.strip())
        emit(args, outcome, abandon_text(outcome))
        return 0
    if args.reason is not None:
        return usage("--reason goes with --abandon KEY")
    missing = [f for f, v in (("SOURCE", args.source), ("--library", args.library),
                              ("--collection", args.collection), ("--type", args.collection_type)) if not v]
    if missing:
        return usage(f"deposit needs {', '.join(missing)} (or --abandon KEY --reason TEXT to give up a "
                         f"deposit)")
    config = load_config(config_path(args))
    outcome = deposit(config, args, source=args.source, library=args.library, collection=args.collection,
                      collection_type=args.collection_type, policy_name=args.policy, title=args.title,
                      follow_internal_links=args.follow_internal_links,
                      no_virus_check=getattr(args, "no_virus_check", False),
                      new_version=getattr(args, "new_version", False))
    emit(args, outcome, outcome_text(outcome))
    _end_without_teardown()
    return outcome["exit_code"]


def _end_without_teardown() -> None:
    """Everything a deposit writes (staged bags, state markers, replicas, catalog, ledger) is
    made durable before its step returns, and its worker processes and pools have ended, so the
    process may end without freeing each of its objects one by one (`pipelines.entry.skip_teardown`;
    ~1 s of user CPU after a 5,000-file deposit: the file lists, FIDO's signatures, Luigi's tasks)."""
    from pipelines.entry import skip_teardown

    skip_teardown()


def deposit(config, args, *, source, library, collection, collection_type, policy_name=None, title="",
            follow_internal_links=False, no_virus_check=False, new_version=False) -> dict:
    """Run a deposit through Luigi and gather what happened (also used by `demo`)."""
    from strongroom.bag_id import check_code, check_title
    from ingest.preflight import refuse_impossible, telling_files
    from ingest.scan import scan_source
    from ingest.supplied import check_bag_versions
    from pipelines import flow
    from pipelines.runner import run_tasks
    from pipelines.tasks import Deposit, hand_over_scan
    from strongroom.errors import InputError

    policy = config.policy_for_type(collection_type, policy_name)
    check_code(library, "library")
    check_code(collection, "collection")
    check_title(title)
    from ingest.virus import check_before_work
    from storage_adapters.registry import check_retention

    check_before_work(config, policy, no_virus_check=no_virus_check)  # exit 2 before any work

    try:
        scan = scan_source(source, follow_internal_links=follow_internal_links)  # refuse bad input before any work
    except InputError as exc:
        key = flow.unfinished_key(config, source, library, collection)
        if key is None:
            raise
        raise InputError(f"{exc}; an unfinished deposit of this source ({key}) waits for it: put the source back "
                         f"as it was to resume, or give the deposit up with: strongroom deposit --abandon {key} "
                         f"--reason TEXT", problems=exc.problems) from None
    try:
        telling = telling_files(scan)  # one pass over the list for both checks
        refuse_impossible(source, scan, archive_places(config, policy), config_path=str(config.path),
                          telling=telling)
        check_bag_versions(scan, telling)
        check_retention(config.replicas_for(policy), policy.retention)  # refuse before any upload
        state = flow.open_deposit(config, source=source, library=library, collection=collection,
                                  collection_type=collection_type, policy=policy.name, title=title,
                                  follow_internal_links=follow_internal_links, no_virus_check=no_virus_check,
                                  new_version=new_version)
        if not hand_over_scan(state, scan, follow_internal_links=follow_internal_links):  # BuildBags need not walk
            scan.files.close()  # its list on disk (ingest.spill), for a million files ~100 MB: not kept for nothing
        run = run_tasks([Deposit(str(config.path), state.key, workers=args.workers)], workers=args.workers,
                        scheduler_url=args.scheduler_url, verbose=args.verbose)
    finally:
        scan.files.close()  # its list on disk (ingest.spill)
    return gather(config, state, policy, run)


def archive_places(config, policy) -> list:
    """The archive's own folders a source must keep apart from: every folder target's root (the
    policy's own must be folders), staging, and a local catalog."""
    from ingest.preflight import Place

    used = set(policy.replicas)
    places = [Place(f"the replica root of storage.{t.name}", Path(t.root), key=f"storage.{t.name}.root",
                    must_be_folder=t.name in used)
              for t in config.storage.values() if t.type == "filesystem" and t.root is not None]
    places.append(Place("the staging folder", Path(config.staging), key="staging"))
    if not config.catalog_is_s3:
        places.append(Place("the catalog folder", Path(config.catalog), key="catalog"))
    return places


def gather(config, state, policy, run) -> dict:
    """The deposit's state after a run: bags, each replica's state, failures and warnings."""
    from catalog.access import open_catalog
    from pipelines import flow

    state_dir = state.state_dir(Path(config.staging))
    bags_file = state_dir / "bags.json"
    built = json.loads(bags_file.read_text("utf-8")) if bags_file.exists() else {"bags": [], "warnings": []}
    catalog = open_catalog(config)
    bags = []
    for bag in built["bags"]:
        replicas = {}
        current = {r["target"]: r for r in catalog.replicas(bag_id=bag["id"]).to_pylist()}
        for target in policy.replicas:
            rec = current.get(target, {})
            verified = (state_dir / f"{flow.state_name(bag['id'])}.{target}.verified.json").exists()
            replicas[target] = {"state": "verified" if verified else rec.get("state") or "pending",
                                "site": config.target(target).site,
                                "detail": None if verified else rec.get("detail")}
        bags.append({**bag, "replicas": replicas,
                     "preserved": all(r["state"] == "verified" for r in replicas.values())})
    done = (state_dir / "done.json").exists()
    # A finished deposit has no failure left: the records of an earlier run's failed steps
    # (a target that was down, since fixed) are history, not news of this run.
    failed = [] if done and run.ok else flow.failures(Path(config.staging), state)
    duplicate = flow.duplicate_of(Path(config.staging), state)
    exit_code = 0 if done and run.ok else max([f.get("exit_code", 1) for f in failed] or [1])
    warnings = list(built.get("warnings", []))
    if state.replaces:
        warnings.append(f"an unfinished deposit of this source ({state.replaces}) had bag ids another deposit "
                        f"holds; it was set aside (nothing of it removed) and this deposit started anew")
    # A rerun can help when nothing says otherwise (a run killed, storage to be fixed); not when
    # every failure is of the source or config, which fails the same way until a person fixes it.
    rerun = not done and (not failed or any(f.get("rerun_helps", True) for f in failed))
    return {
        "deposit": state.key, "policy": policy.name,
        "state": ("duplicate" if duplicate else "preserved") if done else "incomplete",
        **({"duplicate": duplicate} if duplicate else {}),
        **({"new_version": True} if state.new_version else {}),
        "source": state.source, "bags": bags, "warnings": warnings, "failures": failed,
        "exit_code": exit_code, "rerun_helps": rerun, "luigi": run.status,
        "luigi_summary": run.summary if not run.ok else "",
    }


def outcome_text(outcome: dict) -> str:
    lines = []
    for w in outcome["warnings"]:
        warn(w)
    files = sum(b["files"] for b in outcome["bags"])
    size = sum(b["bytes"] for b in outcome["bags"])
    if outcome["state"] == "duplicate":
        lines.append(f"Nothing stored: {outcome['duplicate']['message']}.")
    elif outcome["state"] == "preserved":
        fetched = sum(b.get("fetched_files", 0) for b in outcome["bags"])
        lines.append(f"Preserved {files} file(s), {size:,} bytes, as {len(outcome['bags'])} bag(s) "
                     f"(policy {outcome['policy']}):")
        if fetched:
            kept = sum(b.get("fetched_bytes", 0) for b in outcome["bags"])
            lines.append(f"  a new version: {files - fetched} new or changed file(s) stored, {fetched} unchanged "
                         f"file(s) ({kept:,} bytes) referenced from earlier bags (fetch.txt)")
    elif outcome.get("rerun_helps", True):
        lines.append(f"Deposit NOT complete ({outcome['deposit']}); rerun the same command to resume"
                     + (" once the problem below is fixed." if outcome["failures"] else "."))
    else:
        lines.append(f"Deposit NOT complete ({outcome['deposit']}): a rerun as it is would fail the same way; "
                     f"fix the source or the configuration as said below, then run the same command again "
                     f"(or give the deposit up: strongroom deposit --abandon {outcome['deposit']} --reason TEXT).")
    for b in outcome["bags"]:
        lines.append(f"  {b['id']}  {b['files']} file(s)  {b['bytes']:,} bytes")
        for target, r in b["replicas"].items():
            extra = f"  ({r['detail']})" if r.get("detail") and r["state"] != "verified" else ""
            lines.append(f"      {target:<12} {r['site']:<12} {r['state']}{extra}")
    for f in outcome["failures"]:
        lines.append(f"  failed: {f['step']}: {f['message']}")
        for p in f.get("problems", [])[:50]:
            lines.append(f"      - {p}")
    return "\n".join(lines)


def abandon_text(outcome: dict) -> str:
    if outcome.get("already"):
        return f"Deposit {outcome['deposit']} was already abandoned at {outcome['at']}: {outcome['reason']}"
    lines = [f"Abandoned deposit {outcome['deposit']} ({outcome['library']}/{outcome['collection']} from "
             f"{outcome['source']}): {outcome['reason']}",
             f"  its state and staged files are kept in {outcome['kept']}; nothing stored on a replica was deleted"]
    for b in outcome.get("bags", []):
        lines.append(f"  {b['id']}: verified on {', '.join(b['verified_on']) or 'no target'} (not registered)")
    return "\n".join(lines)
