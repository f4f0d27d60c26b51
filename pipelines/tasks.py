"""Luigi tasks of a deposit: per bag, and per bag x storage target; never per file.

    BuildBags(deposit) ─► ValidateBag(bag) ─► Replicate(bag, target) ─► Verify(bag, target) ─► Register(bag)
                                                                   Deposit(deposit) wraps them all

Each task is a thin wrapper around a function of `pipelines.flow`; its output is a small
marker file in the deposit's state folder written atomically after the step's effects are
durable, so Luigi's "complete" means "done and safe" and a rerun does only what is missing.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import luigi

from pipelines import flow
from pipelines.progress import phase
from pipelines.task_base import ArchiveTask


class _DepositTask(ArchiveTask):
    deposit_key = luigi.Parameter(description="the deposit's key (its state folder in staging)")

    @property
    def state(self) -> flow.DepositState:
        if not hasattr(self, "_state"):
            self._state = flow.load_deposit(self.config.staging, self.deposit_key)
        return self._state

    def marker(self, name: str) -> luigi.LocalTarget:
        return luigi.LocalTarget(str(self.state.state_dir(self.config.staging) / name))

    def write_marker(self, data) -> None:
        flow.write_json_atomic(Path(self.output().path), data)

    @contextmanager
    def progress(self, label: str, total_bytes: int, total_files: int):
        """A callback(files, bytes) shown in luigid's UI and, at a terminal, as one line of the
        run's display; the totals must count what the callback counts (tag files included)."""
        def status(files_done: int, bytes_done: int) -> None:
            if total_bytes:
                self.set_progress_percentage(min(100, int(100 * bytes_done / total_bytes)))
            self.set_status_message(f"{label}: {files_done}/{total_files} files, {bytes_done:,} bytes")

        with phase(label, total_bytes, total_files, on_update=status) as update:
            yield update

    def bag_label(self, bag_id: str) -> str:
        """How a phase line names the bag: nothing when the deposit made one bag, else its last part."""
        return "" if len(self.bags()) <= 1 else f" {bag_id.rsplit('/', 1)[-1]}"

    def inventory(self, bag: dict):
        """The staged bag's inventory, as its one check kept it (`ingest.bag_check`). Loaded per
        run, never kept on the task: Luigi keeps every task object of a run, and one inventory
        per bag x target kept would grow the worker by ~2 KiB per file deposited."""
        from ingest.bag_check import kept_paths

        inventory_path = kept_paths(self.state.state_dir(self.config.staging), bag["id"])[0]
        return flow.load_inventory(inventory_path, bag["path"])

    @staticmethod
    def totals(inventory):
        """(files, bytes) of every file of the staged bag that is copied and checked, tag files too."""
        return len(inventory.sizes), sum(inventory.sizes.values())

    def failure_path(self) -> Path:
        return self.state.state_dir(self.config.staging) / "failures" / f"{self.task_id}.json"

    def bags(self):
        return json.loads(Path(BuildBags(self.config_path, self.deposit_key).output().path).read_text("utf-8"))["bags"]

    def bag(self, bag_id: str) -> dict:
        return next(b for b in self.bags() if b["id"] == bag_id)


#: Scans the deposit command made just before Luigi started, by deposit key (`hand_over_scan`).
_handed_scans: dict = {}


def hand_over_scan(state: flow.DepositState, scan, *, follow_internal_links: bool) -> bool:
    """Let this deposit's BuildBags take the scan the command already made, instead of walking
    the source a second time (~0.3 s per 20,000 files): in this process, or in a worker process
    Luigi forks from it, which inherits it. Anywhere else (a luigid worker on another machine, a
    later run) BuildBags scans as before. Only a scan of exactly the folder the deposit records
    (its real path, as BuildBags would scan it) with the deposit's --follow-internal-links is
    handed over; the caller closes it once the tasks have run. Returns whether it was."""
    if state.follow_internal_links != follow_internal_links or str(scan.root) != state.source:
        return False
    _handed_scans[state.key] = scan
    return True


class BuildBags(_DepositTask):
    workers = luigi.IntParameter(default=1, significant=False)

    def output(self):
        return self.marker("bags.json")

    def run(self):
        from ingest.scan import scan_source

        # The command's scan, made moments ago (a file changed since is refused while it is
        # staged, as after any scan), or a scan of our own.
        scan = _handed_scans.pop(self.deposit_key, None) or scan_source(
            self.state.source, follow_internal_links=self.state.follow_internal_links,
            spill_dir=str(self.config.staging))
        try:
            with self.progress("stage", scan.total_bytes, len(scan.files)) as update:
                bags, warnings = flow.build_bags(self.config, self.state, workers=self.workers, progress=update,
                                                 scan=scan)
        finally:
            scan.files.close()
        self.write_marker({"bags": bags, "warnings": warnings})


class ValidateBag(_DepositTask):
    """The staged bag as checked once: `finish_bag` checked it before its rename (structure,
    completeness, Payload-Oxum, tag manifests) and kept what it read in the deposit's state
    (`ingest.bag_check`); this confirms the kept result is this build's, or checks the staged
    bag again and keeps that (a bag built by an older version, a kept file lost), before
    anything is copied."""

    bag_id = luigi.Parameter()

    def requires(self):
        return BuildBags(self.config_path, self.deposit_key)

    def output(self):
        return self.marker(f"{_safe(self.bag_id)}.valid.json")

    def run(self):
        bag = self.bag(self.bag_id)
        with self.progress(f"validate{self.bag_label(self.bag_id)}", 0, bag["files"]):
            checked_again = flow.keep_bag_check(self.state.state_dir(self.config.staging), bag)
        self.write_marker({"bag": self.bag_id, "valid": True, "files": bag["files"], "checked_again": checked_again})


class Replicate(_DepositTask):
    bag_id = luigi.Parameter()
    target = luigi.Parameter()

    def requires(self):
        return ValidateBag(self.config_path, self.deposit_key, self.bag_id)

    def output(self):
        return self.marker(f"{_safe(self.bag_id)}.{self.target}.copied.json")

    def run(self):
        bag = self.bag(self.bag_id)
        inventory = self.inventory(bag)
        files, nbytes = self.totals(inventory)
        with self.progress(f"replicate {self.target}{self.bag_label(self.bag_id)}", nbytes, files) as update:
            result = flow.replicate_to(self.config, self.state, bag, self.target, progress=update,
                                       inventory=inventory)
        self.write_marker({"bag": self.bag_id, "target": self.target, "files_written": result.files_written,
                           "files_already_present": result.files_already_present})


class Verify(_DepositTask):
    bag_id = luigi.Parameter()
    target = luigi.Parameter()

    def requires(self):
        return Replicate(self.config_path, self.deposit_key, self.bag_id, self.target)

    def output(self):
        return self.marker(f"{_safe(self.bag_id)}.{self.target}.verified.json")

    def run(self):
        bag = self.bag(self.bag_id)
        inventory = self.inventory(bag)
        files, nbytes = self.totals(inventory)
        with self.progress(f"verify {self.target}{self.bag_label(self.bag_id)}", nbytes, files) as update:
            result = flow.verify_on(self.config, self.state, bag, self.target, progress=update,
                                    inventory=inventory)
        self.write_marker({"bag": self.bag_id, "target": self.target, "files": result.files_checked,
                           "bytes": result.bytes_checked, "unchanged_since_checked": result.files_unchanged})


class Register(_DepositTask):
    bag_id = luigi.Parameter()

    def requires(self):
        policy = self.config.policy(self.state.policy)
        return [Verify(self.config_path, self.deposit_key, self.bag_id, t) for t in policy.replicas]

    def output(self):
        return self.marker(f"{_safe(self.bag_id)}.registered.json")

    def run(self):
        from ingest import bag_check

        flow.register(self.config, self.state, self.bag(self.bag_id))
        self.write_marker({"bag": self.bag_id, "registered": True})
        state_dir = self.state.state_dir(self.config.staging)
        bag_check.drop_records(state_dir, self.bag_id)
        for target in self.config.policy(self.state.policy).replicas:
            flow.checked_path(state_dir, self.bag_id, target).unlink(missing_ok=True)


class Deposit(_DepositTask):
    """The whole deposit: bags are only known once built, so they are yielded as dynamic deps."""

    workers = luigi.IntParameter(default=1, significant=False)

    def output(self):
        return self.marker("done.json")

    def run(self):
        yield BuildBags(self.config_path, self.deposit_key, workers=self.workers)
        bags = self.bags()
        yield [Register(self.config_path, self.deposit_key, b["id"]) for b in bags]
        flow.finish(self.config, self.state, bags)


_safe = flow.state_name
