"""Shared helpers for the fault tests (test_faults.py) and the secrets test (test_secrets.py).

Why a module of its own: the fault tests run Strongroom the way an operator does (real child
processes killed with SIGKILL, real file systems filled up or made read-only with mount), and
every one of them then asks the same questions of the archive: does the ledger verify, does
`status` say all is well, does every copy deep-verify, is any temporary file left, was a step
recorded twice? Those checks live here, once. Nothing here hooks into production code: the
children are plain `python -m pipelines ...` processes, and the moments to kill them are seen
from outside (files appearing in staging, on a target, next to a restore destination).

Mounts need root (CI runs as root); every mount made here is undone in a `finally`.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence

from tests.test_deposit_pipeline import sha256, tree_digests  # noqa: F401 (fk.sha256, fk.tree_digests)

REPO = Path(__file__).resolve().parents[1]
LIB = "PKU"
TARGETS = ("site-a", "site-b")

# Names a crash may leave and a rerun must not: the filesystem adapter's temp files, the
# catalog store's temp names, durable.write_json_atomic / premis / summary temp files, a
# restore's hidden sibling folder.
TEMP_SUFFIXES = (".strongroom-part", ".tmp")
TEMP_INFIXES = (".restore-", ".tmp-")


# --------------------------------------------------------------------------------------------
# The archive


@dataclass
class FaultArchive:
    """A `strongroom init` folder with its paths read once (a test may break the config)."""

    root: Path
    config_path: Path
    staging: Path
    catalog_path: Path
    roots: Dict[str, Path]
    env: Dict[str, str] = field(default_factory=dict)

    def catalog(self):
        from catalog.catalog import Catalog

        return Catalog(str(self.catalog_path))

    def bag_folder(self, target: str, bag_id: str) -> Path:
        return self.roots[target].joinpath(*bag_id.split("/"))


def new_archive(folder: Path) -> FaultArchive:
    from policies.config import load_config, write_default_config

    path = Path(write_default_config(folder))
    config = load_config(path)
    return FaultArchive(folder, path, Path(config.staging), Path(config.catalog),
                        {name: Path(t.root) for name, t in config.storage.items()})


def copy_archive(template: FaultArchive, folder: Path) -> FaultArchive:
    """A copy of a prepared archive (its config uses relative paths, so the copy is independent)."""
    shutil.copytree(template.root, folder, symlinks=True)
    return new_archive_from(folder)


def new_archive_from(folder: Path) -> FaultArchive:
    from policies.config import load_config

    path = folder / "strongroom.yaml"
    config = load_config(path)
    return FaultArchive(folder, path, Path(config.staging), Path(config.catalog),
                        {name: Path(t.root) for name, t in config.storage.items()})


def make_files(folder: Path, count: int, size: int, *, seed: str = "faults") -> Path:
    """`count` incompressible files of `size` bytes in two sub-folders, plus awkward names."""
    (folder / "scans").mkdir(parents=True, exist_ok=True)
    (folder / "古籍").mkdir(exist_ok=True)
    (folder / "readme 100% done.txt").write_text(f"{seed}: a space and a percent sign\n", "utf-8")
    (folder / "古籍" / "善本 第1卷.txt").write_text(f"{seed}: 善本\n", "utf-8")
    for i in range(count):
        (folder / "scans" / f"page-{i:03d}.bin").write_bytes(hashlib.shake_256(f"{seed}/{i}".encode()).digest(size))
    return folder


# --------------------------------------------------------------------------------------------
# Running the command


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err

    @property
    def data(self) -> dict:
        return json.loads(self.out)


def child_env(arch: FaultArchive, extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    env = dict(os.environ)
    env.update(arch.env)
    env.update(extra or {})
    env["STRONGROOM_CONFIG"] = str(arch.config_path)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def cli(arch: FaultArchive, *argv, env: Optional[Dict[str, str]] = None, timeout: float = 300) -> Result:
    """The real command line, in its own process (STRONGROOM_CONFIG names the archive)."""
    p = subprocess.run([sys.executable, "-m", "pipelines", *map(str, argv)], cwd=REPO,
                       env=child_env(arch, env), capture_output=True, text=True, timeout=timeout)
    return Result(p.returncode, p.stdout, p.stderr)


def inproc(arch: FaultArchive, *argv) -> Result:
    """The same command in this process (cheaper: no interpreter start-up); for checks and reruns."""
    from pipelines.cli import main

    out, err = io.StringIO(), io.StringIO()
    old = os.environ.get("STRONGROOM_CONFIG")
    os.environ["STRONGROOM_CONFIG"] = str(arch.config_path)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main([str(a) for a in argv])
            except SystemExit as exc:  # argparse
                code = int(exc.code or 0)
    finally:
        if old is None:
            os.environ.pop("STRONGROOM_CONFIG", None)
        else:
            os.environ["STRONGROOM_CONFIG"] = old
    return Result(code, out.getvalue(), err.getvalue())


def spawn(arch: FaultArchive, *argv, log: Path) -> subprocess.Popen:
    """Start the command in its own session (so the whole session, Luigi workers included, can
    be SIGKILLed at once), output to `log`."""
    with open(log, "wb") as fh:
        return subprocess.Popen([sys.executable, "-m", "pipelines", *map(str, argv)], cwd=REPO,
                                env=child_env(arch), stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)


def kill_session(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def run_and_kill(arch: FaultArchive, argv: Sequence[str], log: Path, *, when: Optional[Callable[[], bool]] = None,
                 after: Optional[float] = None, timeout: float = 120) -> int:
    """Run the command and SIGKILL its session as soon as `when()` is true (polled every ms) or
    `after` seconds have passed. Returns the child's return code (-9 when it was killed; 0 or
    another code when it finished first: the caller decides whether that is acceptable)."""
    proc = spawn(arch, *argv, log=log)
    start = time.monotonic()
    try:
        while proc.poll() is None:
            now = time.monotonic() - start
            if (when is not None and when()) or (after is not None and now >= after):
                kill_session(proc)
                break
            if now > timeout:
                kill_session(proc)
                raise AssertionError(f"{argv} hung for {timeout} s:\n" + log.read_text(errors="replace"))
            time.sleep(0.001)
        proc.wait()
    finally:
        kill_session(proc)
    return proc.returncode


# --------------------------------------------------------------------------------------------
# What a healthy archive looks like


def leftovers(*roots: Path) -> List[str]:
    """Every temporary name below the given folders (and, for a restore destination, beside it)."""
    found = []
    for root in roots:
        if not root.exists():
            continue
        for dirpath, dirnames, names in os.walk(root):
            for name in dirnames + names:
                if name.endswith(TEMP_SUFFIXES) or any(i in name for i in TEMP_INFIXES):
                    found.append(os.path.join(dirpath, name))
    return sorted(found)


def success_counts(arch: FaultArchive) -> Counter:
    """(type, bag, target, path, detail head) of every success event -> how often it was recorded."""
    table = arch.catalog().events()
    cols = [table.column(c).to_pylist() for c in ("type", "bag_id", "target", "path", "outcome", "detail")]
    out: Counter = Counter()
    for type_, bag, target, path, outcome, detail in zip(*cols):
        if outcome == "success":
            out[(type_, bag, target, path, (detail or "").split(":", 1)[0])] += 1
    return out


def counted_twice(arch: FaultArchive) -> List[tuple]:
    """Steps that happen once per thing and were recorded more than once: a deposit's
    replication, verification and ingestion per bag and target, a repair of one file on one
    copy (the file is good after the first one), a removal or move aside of one extra file."""
    twice = []
    for key, n in success_counts(arch).items():
        type_, bag, target, path, head = key
        once = (type_ in ("replication", "ingestion") and path is None) or \
               (type_ in ("replication", "deletion", "quarantine") and path is not None and head == "repair")
        if once and n > 1:
            twice.append((key, n))
    return twice


def falsely_verified(arch: FaultArchive) -> List[str]:
    """Every copy the catalog calls verified (or repaired) must hold the catalog's bytes:
    checked here by hand, file by file, without Strongroom's code."""
    catalog = arch.catalog()
    problems = []
    for rec in catalog.replicas().to_pylist():
        if rec["state"] not in ("verified", "repaired") or rec["target"] not in arch.roots:
            continue
        folder = arch.bag_folder(rec["target"], rec["bag_id"])
        for row in catalog.files(rec["bag_id"]).to_pylist():
            p = folder / row["path"]
            if not p.is_file() or p.is_symlink():
                problems.append(f"{rec['target']}: {rec['bag_id']}/{row['path']} missing but {rec['state']}")
            elif sha256(p) != row["sha256"]:
                problems.append(f"{rec['target']}: {rec['bag_id']}/{row['path']} differs but {rec['state']}")
    return problems


def health_problems(arch: FaultArchive, *extra_roots: Path, deep: bool = True) -> List[str]:
    """Everything an operator checks after a rerun: the ledger verifies, `status` is all well,
    every copy deep-verifies (`audit --all --deep` finds nothing, repairs nothing), no temporary
    file is left anywhere, no step was counted twice, no copy is called verified wrongly."""
    problems = []
    r = inproc(arch, "ledger", "verify")
    if r.code != 0:
        problems.append(f"ledger verify exit {r.code}: {r.text.strip()[:500]}")
    r = inproc(arch, "--json", "status")
    if r.code != 0:
        problems.append(f"status exit {r.code}: {r.text.strip()[:800]}")
    else:
        for bag in r.data.get("bags", []):
            for rep in bag.get("replicas", []):
                if rep.get("state") not in ("verified", "repaired"):
                    problems.append(f"status: {bag.get('bag_id')} on {rep.get('target')} is {rep.get('state')}")
    if deep:
        r = inproc(arch, "--json", "audit", "--all", "--deep", "--no-repair")
        if r.code != 0:
            problems.append(f"audit --all --deep --no-repair exit {r.code}: {r.text.strip()[:800]}")
    problems += [f"temporary file left: {p}" for p in leftovers(arch.root, *extra_roots)]
    problems += [f"counted twice: {k} x{n}" for k, n in counted_twice(arch)]
    problems += falsely_verified(arch)
    return problems


# --------------------------------------------------------------------------------------------
# File systems that fill up or turn read-only (root only)


def _run(*cmd: str) -> None:
    p = subprocess.run(list(cmd), capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr.strip()}")


def _umount(folder: Path) -> None:
    if subprocess.run(["umount", str(folder)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def can_mount_tmpfs(probe: Path) -> Optional[str]:
    """None if `mount -t tmpfs` works here, else why not (then the loop-image fallback is used)."""
    probe.mkdir(parents=True, exist_ok=True)
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe)], capture_output=True, text=True)
    if p.returncode != 0:
        return p.stderr.strip() or f"mount exit {p.returncode}"
    _umount(probe)
    return None


@contextlib.contextmanager
def small_fs(folder: Path, size: int, *, scratch: Path) -> Iterator[Path]:
    """A small file system of `size` bytes mounted on `folder`, keeping what `folder` held
    (copied in after mounting). A tmpfs where mount allows it, else an ext4 image on a loop
    device (mkfs.ext4 + mount -o loop), so the disk really fills either way; `fill` then leaves
    as little room as a case needs, and deleting the filler makes room again (which works the
    same on both). Always unmounted, and what it held at the end copied back underneath."""
    folder.mkdir(parents=True, exist_ok=True)
    keep = scratch / f"keep-{folder.name}-{time.monotonic_ns()}"
    shutil.copytree(folder, keep, symlinks=True)
    why_not = can_mount_tmpfs(scratch / "probe")
    if why_not is None:
        _run("mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder))
    else:  # pragma: no cover - only where tmpfs mounts are refused
        image = scratch / f"{folder.name}.img"
        with open(image, "wb") as fh:
            fh.truncate(max(size, 2 << 20))
        _run("mkfs.ext4", "-q", "-F", "-m", "0", str(image))
        _run("mount", "-o", "loop", str(image), str(folder))
        lost = folder / "lost+found"
        if lost.is_dir():
            lost.rmdir()
    try:
        for entry in keep.iterdir():
            dest = folder / entry.name
            if entry.is_dir() and not entry.is_symlink():
                shutil.copytree(entry, dest, symlinks=True)
            else:
                shutil.copy2(entry, dest, follow_symlinks=False)
        yield folder
    finally:
        inside = scratch / f"inside-{folder.name}-{time.monotonic_ns()}"
        with contextlib.suppress(Exception):
            shutil.copytree(folder, inside, symlinks=True)
        _umount(folder)
        if inside.is_dir():
            shutil.rmtree(folder)
            shutil.copytree(inside, folder, symlinks=True)


def fill(folder: Path, leave: int = 0) -> Path:
    """Write a filler file in `folder` until at most `leave` bytes remain free on its file system."""
    filler = folder / "filler.bin"
    st = os.statvfs(folder)
    want = max(0, st.f_bavail * st.f_frsize - leave)
    block = b"\0" * (1 << 16)
    with open(filler, "wb") as fh:
        try:
            while want > 0:
                n = fh.write(block[:min(len(block), want)])
                want -= n
            fh.flush()
            os.fsync(fh.fileno())
        except OSError:
            pass
    return filler


def free_bytes(folder: Path) -> int:
    st = os.statvfs(folder)
    return st.f_bavail * st.f_frsize


@contextlib.contextmanager
def bind_mounted(folder: Path) -> Iterator[Path]:
    """`folder` bind-mounted on itself, so it can be remounted read-only (chmod does not stop
    root; a read-only mount does). Always unmounted."""
    _run("mount", "--bind", str(folder), str(folder))
    try:
        yield folder
    finally:
        subprocess.run(["mount", "-o", "remount,rw,bind", str(folder)], capture_output=True)
        _umount(folder)


def remount(folder: Path, *, read_only: bool, bind: bool = True) -> None:
    _run("mount", "-o", ("remount,ro" if read_only else "remount,rw") + (",bind" if bind else ""), str(folder))


# --------------------------------------------------------------------------------------------
# Searching for secrets


def parquet_strings(source) -> Iterator[str]:
    """Every value of a Parquet file (a path, or its bytes) as text, plus its schema metadata:
    the raw file may be compressed, so a byte search of it proves nothing."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(pa.BufferReader(source) if isinstance(source, bytes) else source)
    meta = table.schema.metadata or {}
    for k, v in meta.items():
        yield k.decode("utf-8", "replace")
        yield v.decode("utf-8", "replace")
    for column in table.columns:
        for value in column.to_pylist():
            if value is not None:
                yield value if isinstance(value, str) else repr(value)


def files_holding(roots: Sequence[Path], needles: Sequence[str]) -> List[str]:
    """Every file under `roots` whose bytes (or, for Parquet, decoded values) hold a needle."""
    hits = []
    raw = [n.encode() for n in needles]
    for root in roots:
        for dirpath, _, names in os.walk(root):
            for name in names:
                p = Path(dirpath) / name
                if p.is_symlink() or not p.is_file():
                    continue
                data = p.read_bytes()
                found = [n for n, b in zip(needles, raw) if b in data]
                if data[:4] == b"PAR1":
                    text = "\n".join(parquet_strings(p))
                    found += [n for n in needles if n in text and n not in found]
                hits += [f"{p}: {n[:6]}..." for n in found]
    return hits
