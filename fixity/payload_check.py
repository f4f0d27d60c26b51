"""Checking the payload files of one copy: one file at a time (`FileChecker`, `read_copy`), or
many through a pool (`check_payload`).

* **Streaming, memory flat in bytes.** Every payload file is read as a stream in 1 MiB
  chunks and hashed as it goes; nothing is copied, extracted or kept. Per-file bookkeeping
  lives in Arrow tables (the catalog's file table, the listing, the manifests), a few hundred
  bytes per file, and only problems become Python objects.
* **Parallel where it pays.** With workers > 1 the payload files are checked by a pool of
  processes (fork), each opening its own adapter through `open_adapter`: hashing releases
  the GIL but per-file Python work on small files does not, so processes are what scales.
  Work is handed out in chunks (bounded in files and bytes) with a bounded number in flight.
"""

from __future__ import annotations

import hashlib
import io
import multiprocessing
from concurrent.futures import FIRST_COMPLETED, Executor, ProcessPoolExecutor, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

from strongroom.bag_id import BagId
from strongroom.checksums import SUPPORTED
from storage_adapters.base import CHUNK, BagReads, NotFound, StorageAdapter, UnsafePath

from .check_records import CORRUPTED, GROWN, MISSING, NOT_A_FILE, TRUNCATED, UNREADABLE, FileProblem
from .retry import Retry, describe, is_transient, spent

#: Parallel chunks: at most this many files or bytes per unit of work handed to a worker.
CHUNK_FILES = 256
CHUNK_BYTES = 32 << 20

AdapterFactory = Callable[[], StorageAdapter]
Progress = Callable[[int, int], None]   # (payload files checked, payload bytes read)


# --------------------------------------------------------------------------------------------
# One payload file


_CONSTRUCTORS = {a: getattr(hashlib, a) for a in SUPPORTED}


def size_problem(path: str, found: int, expected: int, how: str) -> FileProblem:
    kind = TRUNCATED if found < expected else GROWN
    word = "truncated" if found < expected else "grown"
    return FileProblem(path, kind, f"{word}: {found} bytes {how}, {expected} expected", size=found)


class FileChecker:
    """Checks payload files of one bag on one adapter; one per thread or process (owns a buffer)."""

    def __init__(self, adapter: StorageAdapter, bag_id: str, deep: bool, algorithms: Sequence[str], retry: Retry):
        self.adapter = adapter
        self.bag_id = BagId.parse(bag_id)
        self.deep = deep
        self.algorithms = tuple(algorithms)
        self.retry = retry
        self.buf = bytearray(CHUNK)
        self.view = memoryview(self.buf)
        self.linked: List[List[Any]] = []   # [path, device, inode] of files with more than one link
        self.reads: Optional[BagReads] = None   # while a chunk is checked: the bag's kept reads (`reading`)

    def check(self, path: str, size: int, expected: Mapping[str, str]) -> Tuple[Optional[FileProblem], int]:
        """(problem or None, bytes read) for one file the listing shows as present."""
        last: Optional[BaseException] = None
        for attempt in range(self.retry.attempts):
            try:
                return self._deep(path, size, expected) if self.deep else (self._quick(path, size, expected), 0)
            except NotFound:
                return FileProblem(path, MISSING, "missing (listed, then not found when opened)"), 0
            except UnsafePath as exc:
                return FileProblem(path, NOT_A_FILE, exc.message), 0
            except Exception as exc:
                if not is_transient(exc):
                    raise
                last = exc
                if spent(exc):
                    break  # the adapter already spent this object's retry budget: not another round
                if attempt < self.retry.attempts - 1:
                    self.retry.pause(attempt)
        tries = "" if spent(last) else f" after {self.retry.attempts} attempts"  # the adapter's message says
        return FileProblem(path, UNREADABLE, f"cannot be read{tries} ({describe(last)}); inconclusive, not damage"), 0

    def _deep(self, path: str, size: int, expected: Mapping[str, str]) -> Tuple[Optional[FileProblem], int]:
        algorithms = [a for a in self.algorithms if a in expected] or [a for a in expected if a in SUPPORTED][:1]
        hashers = [_CONSTRUCTORS[a]() for a in algorithms]
        buf, view, n = self.buf, self.view, 0
        with self._open(path) as fh:
            ident = self.adapter.stream_identity(fh)
            if ident is not None and ident[2] > 1:
                self.linked.append([path, ident[0], ident[1]])
            readinto = getattr(fh, "readinto", None)
            # A buffered reader fills the buffer unless it meets the end: a short read is the end
            # (one read system call per small file fewer).
            short_is_end = isinstance(fh, io.BufferedReader)
            k = 0
            while True:
                if readinto is not None:
                    if short_is_end and 0 < k < len(buf):
                        break
                    k = readinto(buf)
                    if not k:
                        break
                    chunk = view[:k]
                else:
                    chunk = fh.read(CHUNK)
                    k = len(chunk)
                    if not k:
                        break
                for h in hashers:
                    h.update(chunk)
                n += k
        found = {a: h.hexdigest() for a, h in zip(algorithms, hashers)}
        if n != size:
            problem = size_problem(path, n, size, "read")
            problem.digests = found
            return problem, n
        wrong = [f"{a} expected {expected[a]}, found {found[a]}" for a in algorithms if found[a] != expected[a]]
        if wrong:
            return FileProblem(path, CORRUPTED, "checksum mismatch (" + "; ".join(wrong) + ")", size=n,
                               digests=found), n
        return None, n

    def _open(self, path: str):
        """The stored file's stream: through the chunk's kept reads (a folder target opens it by
        its one name in a folder descriptor kept open) or, outside a chunk, from the root."""
        if self.reads is None:
            return self.adapter.open_file(self.bag_id, path)
        got = self.reads.open_with_stat(path)
        if got is None:
            raise NotFound("not stored here", target=self.adapter.name, location=path)
        return got[1]

    def _quick(self, path: str, size: int, expected: Mapping[str, str]) -> Optional[FileProblem]:
        st = self.adapter.stat_file(self.bag_id, path)
        if st is None:
            return FileProblem(path, MISSING, "missing (listed, then not found)")
        if st.identity is not None and (st.links or 1) > 1:
            self.linked.append([path, st.identity[0], st.identity[1]])
        if st.size != size:
            return size_problem(path, st.size, size, "stored")
        wrong = [f"the storage's own {a} checksum is {v}, expected {expected[a]}"
                 for a, v in st.stored_digests.items() if a in expected and v.lower() != expected[a]]
        if wrong:
            return FileProblem(path, CORRUPTED, "checksum mismatch (" + "; ".join(wrong) + ")", size=st.size,
                               digests={a: v.lower() for a, v in st.stored_digests.items()})
        return None


@dataclass
class CopyRead:
    """A copy read fully: `status` ok (size and digests are what was read), missing,
    not-a-file or unreadable (after retries; `detail` says why)."""

    status: str
    size: Optional[int] = None
    digests: Dict[str, str] = field(default_factory=dict)
    detail: str = ""


def read_copy(adapter: StorageAdapter, bag_id: str, path: str, algorithms: Sequence[str], retry: Retry) -> CopyRead:
    """Read one stored file as a stream and digest it: for re-verification after a repair and
    for comparing copies when the catalog is in doubt."""
    checker = FileChecker(adapter, bag_id, True, algorithms, retry)
    problem, n = checker.check(path, -1, {a: "" for a in algorithms})
    if problem is None:  # cannot happen: no size is -1 bytes long
        raise AssertionError("read_copy: unexpected match")
    if problem.kind in (TRUNCATED, GROWN, CORRUPTED):
        return CopyRead("ok", problem.size, dict(problem.digests))
    status = {MISSING: "missing", NOT_A_FILE: "not-a-file"}.get(problem.kind, "unreadable")
    return CopyRead(status, detail=problem.detail)


# --------------------------------------------------------------------------------------------
# Parallel payload checks


_WORKER: Optional[FileChecker] = None


def _init_worker(open_adapter: AdapterFactory, bag_id: str, deep: bool, algorithms: Sequence[str],
                 retry: Retry) -> None:
    global _WORKER
    _WORKER = FileChecker(open_adapter(), bag_id, deep, algorithms, retry)


def _run_chunk(items: List[Tuple[str, int, Dict[str, str]]], checker: Optional[FileChecker] = None
               ) -> Tuple[int, int, List[FileProblem], List[List[Any]]]:
    """Check one chunk; a deep check reads it through the adapter's `reading` (issue 11: on a
    folder target one open per file by its single checked name, in folder descriptors kept
    for the chunk, instead of the root opened and the whole path resolved per file).

    A kept descriptor still reads a folder moved or replaced meanwhile: if the reads name such
    a folder once the chunk is read, nothing read is taken for the stored bag and the chunk
    is checked again from the root, file by file, so its verdicts are about what is stored."""
    checker = checker or _WORKER
    assert checker is not None
    if not checker.deep:
        return _check_items(items, checker)
    with checker.adapter.reading(checker.bag_id) as reads:
        checker.reads = reads
        try:
            result = _check_items(items, checker)
        finally:
            checker.reads = None
    if reads.problems():
        result = _check_items(items, checker)
    return result


def _check_items(items: List[Tuple[str, int, Dict[str, str]]], checker: FileChecker
                 ) -> Tuple[int, int, List[FileProblem], List[List[Any]]]:
    checker.linked = []
    files = nbytes = 0
    problems: List[FileProblem] = []
    for path, size, expected in items:
        problem, n = checker.check(path, size, expected)
        files += 1
        nbytes += n
        if problem is not None:
            problems.append(problem)
    linked, checker.linked = checker.linked, []
    return files, nbytes, problems, linked


def _chunks(items: Iterator[Tuple[str, int, Dict[str, str]]]) -> Iterator[List[Tuple[str, int, Dict[str, str]]]]:
    chunk: List[Tuple[str, int, Dict[str, str]]] = []
    total = 0
    for item in items:
        if chunk and (len(chunk) >= CHUNK_FILES or total + item[1] > CHUNK_BYTES):
            yield chunk
            chunk, total = [], 0
        chunk.append(item)
        total += item[1]
    if chunk:
        yield chunk


def _pool(open_adapter: AdapterFactory, workers: int, bag_id: str, deep: bool, algorithms: Sequence[str],
          retry: Retry) -> Executor:
    """Processes (fork: the factory is inherited, not pickled) where available, else threads."""
    if "fork" in multiprocessing.get_all_start_methods():
        return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("fork"),
                                   initializer=_init_worker, initargs=(open_adapter, bag_id, deep, algorithms, retry))
    return _ThreadPool(workers, open_adapter, bag_id, deep, algorithms, retry)


class _ThreadPool(ThreadPoolExecutor):
    """Threads, each with its own FileChecker (buffer) over one shared thread-safe adapter."""

    def __init__(self, workers, open_adapter, bag_id, deep, algorithms, retry):
        import threading

        super().__init__(max_workers=workers, thread_name_prefix="audit")
        self._adapter = open_adapter()
        self._local = threading.local()
        self._args = (bag_id, deep, algorithms, retry)

    def submit(self, fn, *args, **kwargs):  # type: ignore[override]
        def call():
            checker = getattr(self._local, "checker", None)
            if checker is None:
                checker = self._local.checker = FileChecker(self._adapter, *self._args)
            return fn(*args, checker=checker)
        return super().submit(call)


def check_payload(adapter: StorageAdapter, bag_id: str, items: Iterator[Tuple[str, int, Dict[str, str]]], *,
                  deep: bool, algorithms: Sequence[str], retry: Retry, workers: int = 1,
                  open_adapter: Optional[AdapterFactory] = None, progress: Optional[Progress] = None,
                  use_pool: bool = True, linked: Optional[List[List[Any]]] = None
                  ) -> Tuple[int, int, List[FileProblem]]:
    """Check (path, size, digests) items on `adapter`: (files checked, bytes read, problems);
    files with more than one hard link are added to `linked` ([path, device, inode])."""
    files = nbytes = 0
    problems: List[FileProblem] = []

    def take(result: Tuple[int, int, List[FileProblem], List[List[Any]]]) -> None:
        nonlocal files, nbytes
        files += result[0]
        nbytes += result[1]
        problems.extend(result[2])
        if linked is not None:
            linked.extend(result[3])
        if progress is not None:
            progress(files, nbytes)

    if workers <= 1 or not use_pool:
        checker = FileChecker(adapter, bag_id, deep, algorithms, retry)
        for chunk in _chunks(items):
            take(_run_chunk(chunk, checker))
        return files, nbytes, problems
    factory = open_adapter or (lambda: adapter)
    with _pool(factory, workers, bag_id, deep, algorithms, retry) as pool:
        pending = set()
        for chunk in _chunks(items):
            pending.add(pool.submit(_run_chunk, chunk))
            if len(pending) >= 2 * workers:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    take(fut.result())
        for fut in pending:
            take(fut.result())
    return files, nbytes, problems
