"""A deposit killed with SIGKILL (kill -9, or a power cut as far as the process can tell) at any
point, then rerun, must end exactly as an uninterrupted deposit: every replica verified, each
step recorded once in the ledger (no duplicate events), no partial file ever visible under its
final name on a target, the ledger's hash chain intact, staging cleaned up.

The deposit runs as a child process (`python -m pipelines ... deposit ...`) in its own session,
and the whole session is killed, so no Luigi worker survives its parent. Two ways to pick the
moment, both real SIGKILLs:

* polled: the test watches the deposit's state folder and the target folders and kills the
  child as soon as it sees a given stage (mid-staging, bags built, first target being copied,
  second target being copied, both verified, registered). The child may finish first on a
  fast machine; such a run must still be correct, and most of the points must really be hit
  (return code -9).
* injected: for moments too brief to catch from outside (a half-written temp file, a replica
  recorded as verified but its events not yet appended, a ledger segment written under its
  temp name...), a small bootstrap wraps one internal function in the child so that the child
  SIGKILLs its own session at exactly that moment. Nothing in Strongroom's code is changed and
  nothing gets a chance to clean up.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List

import pytest

from tests.test_deposit_pipeline import (
    LIB,
    REPO,
    TARGETS,
    TEMP_SUFFIX,
    Archive,
    check_preserved,
    deposit_argv,
    ledger_problems,
    make_archive,
    make_source,
    sha256,
    strongroom,
    success_counts,
    tree_digests,
)

MiB = 1024 * 1024

# Wraps one function of the child so that it SIGKILLs its own session at the chosen moment.
BOOTSTRAP = r'''
import os, signal, sys

POINT = os.environ["STRONGROOM_TEST_KILL_AT"]


def die():
    os.killpg(os.getpgrp(), signal.SIGKILL)


def after(owner, name, when):
    """Call the original, then die if when(result, *args)."""
    original = getattr(owner, name)

    def wrapper(*args, **kwargs):
        result = original(*args, **kwargs)
        if when(result, *args, **kwargs):
            die()
        return result
    setattr(owner, name, wrapper)


def before(owner, name, when):
    original = getattr(owner, name)

    def wrapper(*args, **kwargs):
        if when(*args, **kwargs):
            die()
        return original(*args, **kwargs)
    setattr(owner, name, wrapper)


def nth(n):
    calls = [0]

    def check(*args, **kwargs):
        calls[0] += 1
        return calls[0] == n
    return check


if POINT == "mid-staging":
    import ingest.stage as m
    after(m, "copy_with_digests", nth(5))
elif POINT == "bags built, not recorded":
    import pipelines.flow as m
    before(m, "write_json_atomic", lambda path, data, **kw: os.path.basename(path) == "bags.json")
elif POINT == "half-written temp file":
    import storage_adapters.filesystem as m
    written = {}
    original_write_all = m._write_all

    def _write_all(fd, data):
        original_write_all(fd, data)
        written[fd] = written.get(fd, 0) + len(data)
        if written[fd] >= 2 * 1024 * 1024:  # inside a 3 MiB file
            die()
    m._write_all = _write_all
elif POINT == "whole temp file, not linked":
    import storage_adapters.filesystem as m
    before(m.FilesystemAdapter, "_link_new", nth(4))
elif POINT == "file named, its temp name not yet removed":
    import storage_adapters.filesystem as m
    after(m.FilesystemAdapter, "_link_new", nth(4))
elif POINT == "replica recorded verified, events not appended":
    import catalog.catalog as m
    after(m.Catalog, "record_replica", lambda result, self, rec: rec.state == "verified")
elif POINT == "ledger segment under its temp name":
    import catalog.store as m
    after(m.Store, "_write_temp", lambda result, self, base, data: os.path.basename(str(base).rstrip("/")) == "events")
elif POINT == "events appended, marker not written":
    import catalog.catalog as m
    after(m.Catalog, "append_events", nth(1))
elif POINT == "bag registered, ingestion event not appended":
    import catalog.catalog as m
    after(m.Catalog, "add_bag", lambda *a, **k: True)
elif POINT == "ingestion event appended, marker not written":
    import catalog.catalog as m
    after(m.Catalog, "append_events",
          lambda result, self, events: any(e.type == "ingestion" for e in events))
elif POINT == "staged copies removed, done not written":
    import pipelines.flow as m
    before(m, "write_json_atomic", lambda path, data, **kw: os.path.basename(path) == "done.json")
else:
    raise SystemExit(f"unknown kill point {POINT}")

from pipelines.cli import main
sys.exit(main(sys.argv[1:]))
'''

INJECTED = [
    "mid-staging",
    "bags built, not recorded",
    "half-written temp file",
    "whole temp file, not linked",
    "file named, its temp name not yet removed",
    "replica recorded verified, events not appended",
    "ledger segment under its temp name",
    "events appended, marker not written",
    "bag registered, ingestion event not appended",
    "ingestion event appended, marker not written",
    "staged copies removed, done not written",
]


def _names(folder: Path) -> List[str]:
    return os.listdir(folder) if folder.is_dir() else []


def _evidence(arch: Archive, collection: str) -> Dict[str, bool]:
    """What the archive looks like after a kill at each injected point (proof the point was hit)."""
    catalog = arch.catalog()
    counts = success_counts(catalog)
    types = {k[0] for k in counts}
    incomplete = arch.staging / ".incomplete"
    staged = arch.staging / LIB / collection
    temps = [n for t in TARGETS for _, _, names in os.walk(arch.target_root(t)) for n in names
             if n.endswith(TEMP_SUFFIX)]
    replica_states = {r["state"] for r in catalog.replicas().to_pylist()}
    return {
        "mid-staging": _files_under(incomplete) and not _marker(arch, "bags.json"),
        "bags built, not recorded": staged.is_dir() and any(staged.iterdir()) and not _marker(arch, "bags.json"),
        "half-written temp file": bool(temps) and not _marker(arch, ".copied.json"),
        "whole temp file, not linked": bool(temps) and not _marker(arch, ".copied.json"),
        "file named, its temp name not yet removed": bool(temps) and not _marker(arch, ".copied.json"),
        "replica recorded verified, events not appended": "verified" in replica_states and not counts,
        "ledger segment under its temp name": any(n.startswith(".tmp-")
                                                 for n in _names(Path(arch.catalog_path) / "events")),
        "events appended, marker not written": "fixity check" in types and not _marker(arch, ".verified.json"),
        "bag registered, ingestion event not appended": catalog.bags().num_rows == 1 and "ingestion" not in types,
        "ingestion event appended, marker not written": "ingestion" in types
                                                        and not _marker(arch, ".registered.json"),
        "staged copies removed, done not written": _marker(arch, ".registered.json") != []
                                                   and not (staged.is_dir() and any(staged.iterdir()))
                                                   and not _marker(arch, "done.json"),
    }


# --------------------------------------------------------------------------------------------
# Helpers


def _child(arch: Archive, source: Path, collection: str, log: Path, *, kill_at: str = "",
           bootstrap: str = BOOTSTRAP) -> subprocess.Popen:
    """A deposit in a child process of its own session; with kill_at, run through `bootstrap`,
    a script that reads STRONGROOM_TEST_KILL_AT and kills that session at that point."""
    argv = deposit_argv(arch, source, collection, json_out=False)
    env = dict(os.environ)
    if kill_at:
        script = log.parent / "bootstrap.py"
        script.write_text(bootstrap, "utf-8")
        command = [sys.executable, str(script), *argv]
        env["STRONGROOM_TEST_KILL_AT"] = kill_at
    else:
        command = [sys.executable, "-m", "pipelines", *argv]
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    with open(log, "wb") as out:
        return subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def run_until_killed(arch: Archive, source: Path, collection: str, log: Path, *, kill_at: str,
                     bootstrap: str = BOOTSTRAP) -> None:
    """Run a deposit that `bootstrap` kills (-9, its whole session) at `kill_at`; fails unless
    the child really died of that kill (a kill point never reached proves nothing)."""
    proc = _child(arch, source, collection, log, kill_at=kill_at, bootstrap=bootstrap)
    try:
        proc.wait(timeout=300)  # a hang guard, not a timing assertion
    finally:
        _kill_session(proc)
    assert proc.returncode == -signal.SIGKILL, f"the child was not killed at {kill_at!r}: " + \
        log.read_text(errors="replace")


def _kill_session(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _files_under(folder: Path) -> bool:
    for _, _, names in os.walk(folder):
        if any(not n.endswith(TEMP_SUFFIX) for n in names):
            return True
    return False


def _marker(arch: Archive, suffix: str) -> List[Path]:
    return [p for d in arch.state_dirs() for p in d.glob(f"*{suffix}")]


def visible_file_problems(arch: Archive, source: Path, collection: str) -> List[str]:
    """Every file a target shows under its final name must be whole: a payload file equal to
    the source's, a tag file equal to the staged bag's (while the staged copy exists)."""
    src = tree_digests(source)
    problems = []
    for target in TARGETS:
        coll = arch.target_root(target) / LIB / collection
        if not coll.is_dir():
            continue
        for bag in sorted(coll.iterdir()):
            staged = arch.staging / LIB / collection / bag.name
            for rel, digest in tree_digests(bag).items():
                if os.path.basename(rel).endswith(TEMP_SUFFIX):
                    continue
                if rel.startswith("data/"):
                    want = src.get(rel[len("data/"):])
                elif (staged / rel).is_file():
                    want = sha256(staged / rel)
                else:
                    continue  # staged copy already removed: only payload can be compared
                if digest != want:
                    problems.append(f"{target}: {bag.name}/{rel} is not whole")
    return problems


def _check_after_kill(arch: Archive, source: Path, collection: str) -> None:
    assert visible_file_problems(arch, source, collection) == []
    assert ledger_problems(arch) == []
    counts = success_counts(arch.catalog())
    assert [k for k, n in counts.items() if n > 1] == [], "a step was recorded twice"


def _rerun_and_check(arch: Archive, source: Path, collection: str, capsys) -> dict:
    res = strongroom(capsys, *deposit_argv(arch, source, collection))
    assert res.code == 0, res.out + res.err
    assert len(arch.state_dirs()) == 1, "the rerun started a new deposit instead of resuming"
    check_preserved(arch, source, res.data)
    return res.data


# --------------------------------------------------------------------------------------------
# Killed from outside, at stages seen in the state and target folders


def _staging_in_progress(arch: Archive) -> bool:
    return _files_under(arch.staging / ".incomplete") and not _marker(arch, "bags.json")


def _first_target_copying(arch: Archive) -> bool:
    return any(_files_under(arch.target_root(t) / LIB) for t in TARGETS)


def _second_target_copying(arch: Archive) -> bool:
    return bool(_marker(arch, ".verified.json")) and all(_files_under(arch.target_root(t) / LIB) for t in TARGETS)


POLLED: Dict[str, Callable[[Archive], bool]] = {
    "mid-staging": _staging_in_progress,
    "bags built": lambda a: bool(_marker(a, "bags.json")),
    "first target being copied": _first_target_copying,
    "second target being copied": _second_target_copying,
    "both targets verified": lambda a: len(_marker(a, ".verified.json")) == len(TARGETS),
    "registered": lambda a: bool(_marker(a, ".registered.json")),
}


def test_kill_9_at_polled_stages_then_rerun(tmp_path, capsys):
    source = make_source(tmp_path / "source", small=160, big=[3 * MiB, 3 * MiB])
    killed, failed = {}, {}
    for i, (point, reached) in enumerate(POLLED.items()):
        arch = make_archive(tmp_path / f"run{i}")
        collection = f"polled{i}"
        log = tmp_path / f"run{i}" / "child.log"
        proc = _child(arch, source, collection, log)
        try:
            while proc.poll() is None:
                if reached(arch):
                    _kill_session(proc)
                    break
                time.sleep(0.001)
            proc.wait()
        finally:
            _kill_session(proc)
        killed[point] = proc.returncode == -signal.SIGKILL
        try:  # every point is checked, so one bug does not hide another
            if not killed[point]:
                assert proc.returncode == 0, log.read_text(errors="replace")
            _check_after_kill(arch, source, collection)
            _rerun_and_check(arch, source, collection, capsys)
        except AssertionError as exc:
            failed[point] = str(exc).splitlines()[0]
    assert failed == {}, failed
    hit = [p for p, k in killed.items() if k]
    assert len(hit) >= len(POLLED) - 1, f"only {hit} of {list(POLLED)} were interrupted"


# --------------------------------------------------------------------------------------------
# Killed from inside, at exact moments


@pytest.mark.parametrize("point", INJECTED)
def test_kill_9_at_an_exact_moment_then_rerun(tmp_path, capsys, point):
    arch = make_archive(tmp_path)
    source = make_source(tmp_path / "source", small=8, big=[3 * MiB])
    log = tmp_path / "child.log"
    run_until_killed(arch, source, "exact", log, kill_at=point)
    assert _evidence(arch, "exact")[point], f"the archive does not show a kill at {point!r}"
    _check_after_kill(arch, source, "exact")
    _rerun_and_check(arch, source, "exact", capsys)
