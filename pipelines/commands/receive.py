"""`strongroom receive [--library L]`: deposit every complete upload in the libraries' receiving
areas exactly once, answering each with `COLLECTION/BATCH.done` or `.failed` in the same area.

Meant for cron (and safe to overlap with itself: see pipelines.receive_flow). Each library's
area is opened with that library's own credentials; one library's unreachable area or missing
credentials is reported and the others are still received. A library whose receiving area says
`publish_reports: true` gets its reports refreshed under reports/ once a batch of it is preserved.
"""

from __future__ import annotations

from dataclasses import asdict

from pipelines.cli import config_path
from pipelines.output import emit


def register(sub) -> None:
    p = sub.add_parser("receive", help="deposit every complete upload (COLLECTION/BATCH + .ready) in the "
                                       "libraries' receiving areas, exactly once")
    p.add_argument("--library", default=None, help="only this library's receiving area")
    p.add_argument("--keep-uploads", action="store_true",
                   help="leave the uploaded files in the receiving area after they are preserved")
    p.add_argument("--max-batch-bytes", default=None,
                   help="refuse a batch that unpacks to more than this (e.g. 500GB; default 1TiB, and never "
                        "more than the free space beside staging)")
    p.set_defaults(run=run)


def run(args) -> int:
    from policies.config import load_config
    from policies.units import parse_size
    from reports.publish import publish_reports, publishes_reports
    from pipelines.receive_flow import DEFAULT_MAX_BATCH_BYTES, BatchOutcome, ReceiveOptions, receive_library
    from storage_adapters.receiving import library_of, open_area
    from strongroom.errors import StrongroomError, UsageError

    config = load_config(config_path(args))
    if args.library is not None:
        library_of(config, args.library)
        codes = [args.library]
    else:
        codes = [c for c, lib in (getattr(config, "libraries", None) or {}).items() if lib.receiving is not None]
        if getattr(config, "libraries", None) is None:
            raise UsageError(f"{config.path} has no libraries: section, so there are no receiving areas",
                             path=str(config.path), key="libraries")
    limit = DEFAULT_MAX_BATCH_BYTES
    if args.max_batch_bytes is not None:
        try:
            limit = parse_size(args.max_batch_bytes, where="--max-batch-bytes")
        except StrongroomError as exc:
            raise UsageError(exc.message, key="--max-batch-bytes") from None
    outcomes = []
    for code in codes:
        spec = config.libraries[code].receiving
        options = ReceiveOptions(keep_uploads=args.keep_uploads or bool(getattr(spec, "keep_uploads", False)),
                                 max_batch_bytes=limit)
        try:
            area = open_area(config, code)
            received = receive_library(config, args, area, options)
            outcomes.extend(received)
        except StrongroomError as exc:
            if args.library is not None:
                raise
            outcomes.append(BatchOutcome(code, "", "unreachable", detail=str(exc), problems=list(exc.problems),
                                         exit_code=exc.exit_code))
            continue
        if publishes_reports(config, code) and any(o.state == "preserved" for o in received):
            try:
                keys = publish_reports(config, code)
            except StrongroomError as exc:
                outcomes.append(BatchOutcome(code, "", "reports not published", detail=str(exc), exit_code=1))
            else:
                outcomes.append(BatchOutcome(code, "", "reports published", detail=", ".join(keys)))
    code = max([o.exit_code for o in outcomes] or [0])
    emit(args, {"ok": code == 0, "exit_code": code, "batches": [asdict(o) for o in outcomes]}, text(outcomes))
    return code


def text(outcomes) -> str:
    if not outcomes:
        return "Nothing to receive: no complete batch (COLLECTION/BATCH.ready) in any receiving area."
    lines = []
    for o in outcomes:
        where = f"{o.library}/{o.batch}" if o.batch else o.library
        if o.state == "preserved":
            lines.append(f"{where}: preserved {o.files} file(s), {o.bytes:,} bytes as {', '.join(o.bags)}")
        else:
            lines.append(f"{where}: {o.state}: {o.detail}")
        for p in o.problems[:50]:
            lines.append(f"    - {p}")
    return "\n".join(lines)
