"""Luigi tasks of an audit: one check per bag x target, one judgement/repair per bag.

    CheckReplica(bag, target, kind, basis) ─┐
    CheckReplica(bag, target, kind, basis) ─┼─► AuditBag(bag, plan)
    ...                                     ─┘

Each task is a thin wrapper around `fixity.audit.check_target` / `fixity.repair.finish_bag`;
its output is a small JSON file under `<staging>/.audit/`, written atomically when the work
is done, so a rerun after a crash redoes only what is missing.

Why a second run does no duplicate work (cron every hour, several machines on one luigid):
task ids are built from the *copy's current catalog record* (`basis`), not from the run, so
two runs selecting the same copy in the same state schedule the very same task. luigid runs
a task id once at a time (the other workers see it running elsewhere); on one machine with
the local scheduler, each task takes an exclusive lock on its output file's `.lock` before
working and returns at once if the output appeared meanwhile. Once a copy is audited its
record changes, so a later run gets a new task for it, and `check_target` / `finish_bag`
skip a copy whose record changed after the run was planned (someone else audited it).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from pathlib import Path
from typing import Iterator, List, Sequence, Tuple

import luigi

from pipelines.task_base import ArchiveTask

AUDIT_DIR = ".audit"


@contextlib.contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """Hold an exclusive flock() on `path` (created if needed); waits for another holder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def safe(bag_id: str) -> str:
    return bag_id.replace("/", "__")


class _AuditTask(ArchiveTask):
    @property
    def catalog(self):
        if not hasattr(self, "_catalog"):
            from catalog.access import open_catalog

            self._catalog = open_catalog(self.config)
        return self._catalog

    def audit_dir(self) -> Path:
        return Path(self.config.staging) / AUDIT_DIR

    def write_output(self, data) -> None:
        """Atomically (an output is there whole or not at all: a rerun redoes only what is
        missing). Outputs live under `<staging>/.audit`, not a deposit's state folder, so the
        plain durable write is the whole story (and the deposit workflow is not imported)."""
        from strongroom.durable import atomic_write_json

        atomic_write_json(Path(self.output().path), data)

    def failure_path(self) -> Path:
        return failure_path(self.audit_dir(), self.task_id)


def failure_path(audit_dir: Path, task_id: str) -> Path:
    return audit_dir / "failures" / f"{task_id}.json"


class CheckReplica(_AuditTask):
    """Check one bag on one storage target (deep or quick)."""

    bag_id = luigi.Parameter()
    target = luigi.Parameter()
    kind = luigi.ChoiceParameter(choices=["deep", "quick"])
    basis = luigi.Parameter(description="the copy's catalog record when planned (recorded_at), or 'none'")
    all_digests = luigi.BoolParameter(default=False)
    threads = luigi.IntParameter(default=1, significant=False)

    def output(self):
        suffix = ".all" if self.all_digests else ""
        return luigi.LocalTarget(str(self.audit_dir() / "checks" / safe(self.bag_id)
                                     / f"{self.target}.{self.kind}{suffix}.{self.basis}.json"))

    def run(self):
        from fixity.audit import check_target
        from pipelines.progress import phase

        out = Path(self.output().path)
        with exclusive(out.with_name(out.name + ".lock")):
            if out.exists():
                return  # done by another run while this one waited
            record = self.catalog.bag(self.bag_id)
            total = record.byte_count if record and self.kind == "deep" else 0
            label = f"{self.kind} {self.target} {self.bag_id}"

            def status(files: int, nbytes: int) -> None:
                self.set_status_message(f"{label}: {files} files, {nbytes:,} bytes")

            with phase(label, total, record.file_count if record else 0, on_update=status) as progress:
                result = check_target(self.config, self.catalog, self.bag_id, self.target, kind=self.kind,
                                      basis=self.basis, all_digests=self.all_digests, workers=self.threads,
                                      progress=progress)
            self.write_output(result)


class AuditBag(_AuditTask):
    """Judge all copies of one bag, repair, record; `plan` is JSON [[target, kind, basis], ...]."""

    bag_id = luigi.Parameter()
    plan = luigi.Parameter()
    all_digests = luigi.BoolParameter(default=False)
    repair = luigi.BoolParameter(default=True)
    threads = luigi.IntParameter(default=1, significant=False)

    def entries(self) -> List[Tuple[str, str, str]]:
        return [tuple(x) for x in json.loads(self.plan)]  # type: ignore[misc]

    def requires(self):
        return [CheckReplica(self.config_path, self.bag_id, target, kind, basis, all_digests=self.all_digests,
                             threads=self.threads) for target, kind, basis in self.entries()]

    def output(self):
        key = hashlib.sha256(f"{self.plan}\0{self.all_digests}\0{self.repair}".encode()).hexdigest()[:16]
        return luigi.LocalTarget(str(self.audit_dir() / "bags" / safe(self.bag_id) / f"{key}.json"))

    def run(self):
        from fixity.repair import finish_bag

        out = Path(self.output().path)
        with exclusive(self.audit_dir() / "locks" / f"{safe(self.bag_id)}.lock"):
            if out.exists():
                return
            results = {}
            for task in self.requires():
                with open(task.output().path, encoding="utf-8") as fh:
                    results[task.target] = json.load(fh)
            self.set_status_message(f"judging and repairing the copies of {self.bag_id}")
            result = finish_bag(self.config, self.catalog, self.bag_id, self.entries(), results, repair=self.repair)
            self.write_output(result.to_dict())


def plan_text(entries: Sequence[Tuple[str, str, str]]) -> str:
    """The canonical plan parameter: the same selection always gives the same task id."""
    return json.dumps(sorted([list(e) for e in entries]), separators=(",", ":"))


__all__ = ["CheckReplica", "AuditBag", "plan_text", "exclusive", "failure_path", "AUDIT_DIR", "safe"]
