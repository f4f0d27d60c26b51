"""`strongroom demo [DIR]`: end to end on the embedded default with the bundled sample collection.

It is the README's first command: on a fresh machine it shows, with no set-up, what Strongroom
does. It makes (or reuses) an `init` folder (two filesystem replicas, Luigi's local
scheduler), deposits the sample collection (real formats, Chinese names, a supplied MD5SUMS),
shows the archive's status, restores the collection from a replica and proves that the
restored files equal the originals, byte for byte, and writes the preservation, fixity and
format reports (HTML, English and Chinese).
"""

from __future__ import annotations

import filecmp
import os
import shutil
from pathlib import Path

SAMPLE = Path(__file__).resolve().parents[1] / "sample"


def register(sub) -> None:
    p = sub.add_parser("demo", help="run deposit, status and restore end to end on a bundled sample collection")
    p.add_argument("dir", nargs="?", default="strongroom-demo", help="working folder (default ./strongroom-demo)")
    p.set_defaults(run=run)


def run(args) -> int:
    from fixity.restore import restore_bag
    from pipelines.commands.deposit import deposit, outcome_text
    from pipelines.output import emit
    from policies.config import load_config, write_default_config

    base = Path(args.dir).resolve()
    config_file = base / "strongroom.yaml"
    created = not config_file.exists()
    if created:
        write_default_config(base)
        _demo_virus_policy(base)
    config = load_config(config_file)
    lines = [f"{'Created' if created else 'Using'} {config_file}", "", "== deposit"]
    outcome = deposit(config, args, source=SAMPLE, library="DEMO", collection="special-collections",
                      collection_type="self-built", title="示例特藏 Sample special collection")
    lines.append(outcome_text(outcome))
    summary = {"config": str(config_file), "config_created": created, "deposit": outcome}
    if outcome["exit_code"] != 0:
        emit(args, summary, "\n".join(lines))
        return outcome["exit_code"]

    lines += ["", "== status"]
    status_data, status_text = _status(config, outcome)
    lines.append(status_text)
    summary["status"] = status_data

    lines += ["", "== restore"]
    restored_root = base / "restored"
    restored_root.mkdir(exist_ok=True)
    checks = []
    for bag in outcome["bags"]:
        dest = restored_root / bag["id"].replace("/", "_")
        if dest.exists():
            shutil.rmtree(dest)
        result = restore_bag(config, bag["id"], dest, payload_only=True)
        problems = compare_trees(SAMPLE, dest)
        checks.append({"bag": bag["id"], "dest": str(dest), "files": result.files, "identical": not problems,
                       "differences": problems})
        verdict = "identical to the originals" if not problems else f"DIFFERENT: {'; '.join(problems[:5])}"
        lines.append(f"  {bag['id']} -> {dest}: {result.files} file(s), {verdict}")
    summary["restore"] = checks

    lines += ["", "== reports"]
    import reports

    written = [str(p) for lang in ("en", "zh") for p in reports.write_all(config, base / "reports", lang=lang)]
    lines += [f"  {p}" for p in written]
    summary["reports"] = written
    lines += ["", f"Try: strongroom --config {os.path.relpath(config_file)} audit --all --deep"]
    emit(args, summary, "\n".join(lines))
    return 0 if all(c["identical"] for c in checks) else 1


def _demo_virus_policy(base: Path) -> None:
    """The demo must run on a machine without ClamAV: its policies say virus_check: warn, so the
    sample is scanned when a clamd answers (clamav: in strongroom.yaml) and otherwise the deposit
    says, and records, that it was NOT virus-checked. `strongroom init` keeps required."""
    for name in ("at-risk-purchased.yaml", "self-built.yaml"):
        path = base / "policies" / name
        text = path.read_text("utf-8")
        path.write_text(text.replace(
            "\nvirus_check: required\n",
            "\n# The demo: scanned when clamd answers, else a warning (strongroom init writes required).\n"
            "virus_check: warn\n", 1), "utf-8")


def _status(config, outcome):
    """The archive's status as `strongroom status` shows it."""
    from reports import status as status_mod

    status = status_mod.build_status(config)
    return status.to_dict(), status_mod.status_text(status)


def compare_trees(original: Path, restored: Path) -> list:
    """Differences between two trees: names, bytes and modification times of files; empty folders."""
    problems = []

    def listing(root: Path):
        out = {}
        for dirpath, dirnames, filenames in os.walk(root):
            rel = os.path.relpath(dirpath, root)
            if not dirnames and not filenames and rel != ".":
                out[rel + "/"] = None
            for name in filenames:
                p = os.path.join(dirpath, name)
                out[os.path.normpath(os.path.join(rel, name))] = p
        return out

    a, b = listing(original), listing(restored)
    for name in sorted(set(a) | set(b)):
        if name not in b:
            problems.append(f"{name}: missing from the restore")
        elif name not in a:
            problems.append(f"{name}: not in the original")
        elif a[name] is not None:
            if not filecmp.cmp(a[name], b[name], shallow=False):
                problems.append(f"{name}: bytes differ")
            elif os.stat(a[name]).st_mtime_ns != os.stat(b[name]).st_mtime_ns:
                problems.append(f"{name}: modification time differs")
    return problems
