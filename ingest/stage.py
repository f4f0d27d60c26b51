"""Copy source files into a bag's payload folder, reading every source byte exactly once.

While a file is copied, the same bytes feed every checksum the policy (and any supplied
checksum file) asks for, and the first/last bytes FIDO needs are kept, so format
identification costs no further read of the source. A file that changes while it is being
copied (size, mtime or inode differ from the scan, or the byte count read differs) fails the
deposit: a bag must never hold a mixture of two versions of a file.

Work is spread over processes (hashing and FIDO's regular expressions are CPU-bound; the
identifier is built once in the parent and shared with forked workers).

With a virus scanner (ingest/virus.py) the same chunks are also streamed to clamd (INSTREAM)
as they are read: the scan needs no read of its own, and its verdict is part of the StagedFile.
"""

from __future__ import annotations

import errno
import multiprocessing
import os
import stat
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from strongroom.checksums import MultiHasher
from strongroom.durable import write_all
from strongroom.errors import StagingError
from strongroom.fstree import make_dirs

from .clamd import ClamdError
from .scan import SourceFile
from .virus import ScannerProblem

CHUNK = 1 << 20  # 1 MiB: large enough for hashlib to release the GIL and for sequential reads

_O_NOATIME = getattr(os, "O_NOATIME", 0)


@dataclass(frozen=True)
class StagedFile:
    """A payload file as copied: what the manifests, catalog and PREMIS record of it."""

    relpath: str  # relative to the source root == relative to the bag's data/ folder
    size: int
    mtime_ns: int
    digests: Dict[str, str]
    identification: object = None  # ingest.identify.Identification, or None when not asked
    virus: object = None  # ingest.virus.FileVerdict, or None when nothing was scanned


@dataclass(frozen=True)
class StageTask:
    source: SourceFile
    dest: bytes  # absolute path of the copy inside the bag being built


class StageFailure(Exception):
    """A file could not be staged; `problem` names it and says why."""

    def __init__(self, problem: str):
        self.problem = problem
        super().__init__(problem)


class StagingWriteFailure(Exception):
    """Writing the staged copy failed: staging's problem (its disk full, read-only, failing), not
    the source's. Kept apart from StageFailure so that a full staging disk is never reported as
    a fault of every file of the source."""

    def __init__(self, relpath: str, exc: OSError):
        self.relpath = relpath
        self.errno = exc.errno or 0
        self.strerror = exc.strerror or str(exc)
        super().__init__(f"{relpath}: {self.strerror}")


class StagingProblem(str):
    """A staging problem that is staging's own, not the file's (a str, so it travels like one
    from a worker process; the errno rides along for the one error the deposit raises)."""

    errno: int = 0
    relpath: str = ""
    strerror: str = ""

    def __new__(cls, relpath: str, err: int, strerror: str):
        self = super().__new__(cls, f"{relpath}: cannot be written to staging ({strerror})")
        self.errno, self.relpath, self.strerror = err, relpath, strerror
        return self

    def __reduce__(self):
        return (StagingProblem, (self.relpath, self.errno, self.strerror))


_NO_SPACE = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


def staging_error(staging, err: int, strerror: str, what: str = "",
                  kept: str = "nothing of this deposit was kept") -> StagingError:
    """The one error for a staging folder that cannot be written, naming it and what to do.

    ENOSPC/EDQUOT: make room; EROFS: make it writable; anything else (EIO...): fix the disk.
    Each time the remedy is outside Strongroom and the same command then completes. `kept` says
    what the failed step leaves for the rerun."""
    where = os.path.abspath(os.fsdecode(os.fspath(staging)))
    code = errno.errorcode.get(err, str(err or "?"))
    after = f" ({what})" if what else ""
    tail = f"; {kept}"
    if err in _NO_SPACE:
        return StagingError(f"no space left under staging {where} ({code}){after}: free space and rerun{tail}")
    if err == errno.EROFS:
        return StagingError(f"staging {where} is read-only ({code}){after}: make it writable and rerun{tail}")
    return StagingError(f"cannot write under staging {where}: {strerror} ({code}){after}: fix the disk or "
                        f"folder and rerun{tail}")


def _open_source(path: bytes) -> int:
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    if _O_NOATIME:
        try:
            return os.open(path, flags | _O_NOATIME)  # leave the source's atime alone too, where allowed
        except PermissionError:
            pass
    return os.open(path, flags)


def copy_with_digests(task: StageTask, algorithms: Sequence[str], keep: int,
                      scan=None) -> Tuple[int, Dict[str, str], bytes, bytes]:
    """Copy one file; return (size, digests, head, tail) with head/tail of up to `keep` bytes.

    `scan` (an ingest.virus.FileScan), when given, is fed every chunk as it is read."""
    src = task.source
    try:
        fd = _open_source(src.abspath)
    except PermissionError:
        raise StageFailure(f"{src.relpath}: file cannot be read (permission denied)")
    except OSError as exc:
        raise StageFailure(f"{src.relpath}: cannot be opened ({exc.strerror})")
    try:
        before = os.fstat(fd)
        if not stat.S_ISREG(before.st_mode):
            raise StageFailure(f"{src.relpath}: is no longer a regular file")
        _check_unchanged(src, before, "before copying")
        hasher = MultiHasher(algorithms)
        head = b""
        tail = b""
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        try:
            out = os.open(task.dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o644)
        except OSError as exc:
            raise StagingWriteFailure(src.relpath, exc)
        closed = False
        try:
            while True:
                try:
                    n = os.readv(fd, [buf])
                except OSError as exc:
                    raise StageFailure(f"{src.relpath}: read error ({exc.strerror})")
                if not n:
                    break
                chunk = view[:n]
                hasher.update(chunk)
                if scan is not None:
                    scan.feed(chunk)
                try:
                    write_all(out, chunk)
                except OSError as exc:
                    raise StagingWriteFailure(src.relpath, exc)
                if len(head) < keep:
                    head += bytes(chunk[: keep - len(head)])
                if n >= keep:
                    tail = bytes(chunk[n - keep:])
                else:
                    tail = (tail + bytes(chunk))[-keep:] if keep else b""
            try:
                # Through the descriptor, not the path: two lookups of a deep path less per file.
                copied = os.fstat(out)
                if copied.st_size == src.size:
                    os.utime(out, ns=(src.mtime_ns, src.mtime_ns))
                closed = True
                os.close(out)  # a delayed write error (NFS, quota) may first show here
            except OSError as exc:
                raise StagingWriteFailure(src.relpath, exc)
        finally:
            if not closed:
                os.close(out)
        after = os.fstat(fd)
    finally:
        os.close(fd)
    if hasher.size != src.size or after.st_size != src.size:
        raise StageFailure(
            f"{src.relpath}: changed while being staged (size was {src.size} bytes at scan, "
            f"{hasher.size} bytes read, now {after.st_size}); deposit it again once it is stable"
        )
    _check_unchanged(src, after, "while being staged")
    if copied.st_size != src.size:
        raise StageFailure(f"{src.relpath}: staged copy has {copied.st_size} bytes, source {src.size}")
    return hasher.size, hasher.hexdigests(), head, tail


def _check_unchanged(src: SourceFile, st: os.stat_result, when: str) -> None:
    if (st.st_dev, st.st_ino) != src.inode:
        raise StageFailure(f"{src.relpath}: file was replaced {when}; deposit it again once it is stable")
    if st.st_size != src.size or st.st_mtime_ns != src.mtime_ns:
        raise StageFailure(
            f"{src.relpath}: changed {when} (size {src.size} -> {st.st_size}, mtime changed: "
            f"{st.st_mtime_ns != src.mtime_ns}); deposit it again once it is stable"
        )


# --- running many files -------------------------------------------------------------------

_worker_state: dict = {}


def _stage_one(task: StageTask):
    algorithms = _worker_state["algorithms"]
    identifier = _worker_state["identifier"]
    keep = identifier.bufsize if identifier is not None else 0
    scanner = _worker_state.get("scanner")
    scan = None
    try:
        scan = scanner.start(task.source.relpath, task.source.size) if scanner is not None else None
        size, digests, head, tail = copy_with_digests(task, algorithms, keep, scan)
        verdict = scan.finish() if scan is not None else None
        ident = None
        if identifier is not None:
            name = os.path.basename(task.source.relpath)
            ident = identifier.identify_buffers(name, size, head, tail, path=os.fsdecode(task.dest))
        return StagedFile(task.source.relpath, size, task.source.mtime_ns, digests, ident, verdict), None
    except StageFailure as exc:
        return None, exc.problem
    except StagingWriteFailure as exc:
        return None, StagingProblem(exc.relpath, exc.errno, exc.strerror)
    except ClamdError as exc:
        return None, ScannerProblem(str(exc))
    except OSError as exc:
        return None, f"{task.source.relpath}: {exc.strerror or exc}"
    finally:
        if scan is not None:
            scan.abort()


def stage_files(
    tasks: Sequence[StageTask],
    algorithms: Sequence[str],
    *,
    identifier=None,
    workers: int = 1,
    progress: Optional[Callable[[int, int], None]] = None,
    scanner=None,
) -> Tuple[List[StagedFile], List[str]]:
    """Stage every task; return (staged files in task order, problems). Never raises per file.

    `progress(files_done, bytes_done)` is called as files complete. `scanner` (ingest.virus.Scanner)
    scans every file while it is copied; problems that are the scanner's are ScannerProblem strings,
    those that are staging's own (writing the copy failed) StagingProblem strings.
    """
    _worker_state["algorithms"] = tuple(algorithms)
    _worker_state["identifier"] = identifier
    _worker_state["scanner"] = scanner
    results: List[Optional[StagedFile]] = []
    problems: List[str] = []
    done_files = 0
    done_bytes = 0

    def collect(outcome):
        nonlocal done_files, done_bytes
        staged, problem = outcome
        results.append(staged)
        if problem:
            problems.append(problem)
        else:
            done_files += 1
            done_bytes += staged.size
        if progress:
            progress(done_files, done_bytes)

    if workers <= 1 or len(tasks) < 2 or "fork" not in multiprocessing.get_all_start_methods():
        for task in tasks:
            collect(_stage_one(task))
    else:
        ctx = multiprocessing.get_context("fork")  # children inherit the loaded FIDO signatures
        with ctx.Pool(processes=workers) as pool:
            for outcome in pool.imap(_stage_one, tasks, chunksize=chunk_size(tasks, workers)):
                collect(outcome)
    staged = [r for r in results if r is not None]
    return staged, problems


#: Tasks handed to a worker at once: up to MAX_CHUNK_FILES files, about CHUNK_BYTES of reading.
MAX_CHUNK_FILES = 256
CHUNK_BYTES = 8 << 20


def chunk_size(tasks: Sequence[StageTask], workers: int) -> int:
    """How many tasks the pool hands a worker at once.

    Each chunk costs the parent ~1.4 ms of its threads' time (measured: 20,000 small files,
    parent CPU 1.2 s in chunks of 64, 0.8 s in chunks of 256), so small files go in big chunks;
    but the last chunk a worker takes is work the other may wait for, so a chunk is also kept
    near CHUNK_BYTES of reading (one file per chunk when files are large) and at most an eighth
    of each worker's share."""
    if not tasks:
        return 1
    mean = sum(t.source.size for t in tasks) / len(tasks)
    by_bytes = int(CHUNK_BYTES // mean) if mean > 0 else MAX_CHUNK_FILES
    return max(1, min(MAX_CHUNK_FILES, len(tasks) // (workers * 8), by_bytes))


def make_parent_dirs(tasks: Iterable[StageTask]) -> None:
    made = set()
    for task in tasks:
        parent = os.path.dirname(task.dest)
        if parent not in made:
            make_dirs(parent)  # mkdir -p without recursion: sources may nest 1,000+ folders deep
            made.add(parent)
