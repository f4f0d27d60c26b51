"""`strongroom demo [DIR]`: end to end on the embedded default with the bundled sample collection.

It is the README's first command: on a fresh machine it must show, without any set-up, what a
deposit produces. It makes (or reuses) an `init` folder, deposits the sample collection (real
formats, Chinese names, a supplied MD5SUMS) and checks the result.
"""

from __future__ import annotations

import os
from pathlib import Path

SAMPLE = Path(__file__).resolve().parents[1] / "sample"


def register(sub) -> None:
    p = sub.add_parser("demo", help="run a deposit end to end on a bundled sample collection")
    p.add_argument("dir", nargs="?", default="strongroom-demo", help="working folder (default ./strongroom-demo)")
    p.set_defaults(run=run)


def run(args) -> int:
    from ingest.deposit import DepositRequest
    from ingest.validate import validate_bag
    from pipelines.commands.deposit import deposit_summary, deposit_text, deposit_with_progress
    from pipelines.output import emit, warn
    from policies.config import load_config, write_default_config

    base = Path(args.dir).resolve()
    config_file = base / "strongroom.yaml"
    created = not config_file.exists()
    if created:
        write_default_config(base)
    config = load_config(config_file)
    policy = config.policy_for_type("self-built", None)
    request = DepositRequest(
        source=SAMPLE, library="DEMO", collection="special-collections", collection_type="self-built",
        policy=policy, staging=config.staging, title="示例特藏 Sample special collection", workers=args.workers,
    )
    result = deposit_with_progress(request, show=not args.json)
    for w in result.warnings:
        warn(w)
    checks = []
    for bag in result.bags:
        report = validate_bag(bag.path)
        checks.append({"bag": str(bag.bag_id), "valid": report.valid, "problems": [str(p) for p in report.problems]})
    summary = deposit_summary(result, policy)
    summary.update({"config": str(config_file), "config_created": created, "validation": checks})
    lines = [f"{'Created' if created else 'Using'} {config_file}", deposit_text(result, policy)]
    for c in checks:
        lines.append(f"  validate {c['bag']}: {'valid' if c['valid'] else 'INVALID'}")
    lines.append("Next: strongroom --config %s validate <bag path>" % os.path.relpath(config_file))
    emit(args, summary, "\n".join(lines))
    return 0 if all(c["valid"] for c in checks) else 1
