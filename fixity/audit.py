"""Check one replica of one bag: what is wrong with it, named file by file.

Why it is built this way:

* **Two references, compared with each other.** Payload files are checked against the
  catalog (path, size, digests), which is the archive's record of what was deposited. The
  copy's own manifests are parsed too and compared with the catalog: a manifest that says
  something else is itself a finding (`manifest-disagrees`), and the repair step
  (`fixity.repair`) decides, with the other copies, whether the manifest or the catalog is
  the odd one out. Tag files (bagit.txt, bag-info.txt, manifests, tag manifests, metadata/)
  are not in the catalog: every copy's tag files are read and digested here, with the copy's
  tag manifests parsed, and `fixity.repair` judges them across copies.
* **Streaming, memory flat in bytes.** Every payload file is read as a stream in 1 MiB
  chunks and hashed as it goes; nothing is copied, extracted or kept. Per-file bookkeeping
  lives in Arrow tables (the catalog's file table, the listing, the manifests), a few hundred
  bytes per file, and only problems become Python objects.
* **Inconclusive is not damage.** A read error, timeout or server error is retried
  (`Retry`); if it persists the file is `unreadable` and the replica's outcome is
  `inconclusive`, never `failure`, so nothing is repaired because of it. Only a digest or
  size mismatch, a confirmed missing file (absent from the listing, or NotFound), or an odd
  object (`OddObject`: a link, FIFO, socket, device or folder where a file belongs, or a
  linked `data/`, bag or collection folder: never followed) is damage.
* **Independent copies.** Reading a file also gives its identity (device, inode, links) from
  the descriptor read: files with more than one hard link, and the bag folder's identity, are
  kept in the check for `fixity.trust` to compare across copies (shared storage is one copy).
* **Deep and quick.** deep re-reads every payload file and recomputes the policy's primary
  digest (every catalog digest with `all_digests`); quick checks existence, size and any
  checksum the storage keeps itself (S3 full-object checksums) without reading payload bytes.
  Tag files are always read: they are small and are what the copies are compared with.
* **Parallel where it pays.** With workers > 1 the payload files are checked by a pool of
  processes (fork), each opening its own adapter through `open_adapter`: hashing releases
  the GIL but per-file Python work on small files does not, so processes are what scales.
  Work is handed out in chunks (bounded in files and bytes) with a bounded number in flight.

Only the `StorageAdapter` interface is used, so the same code audits filesystem and S3 targets.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import multiprocessing
import time
from concurrent.futures import FIRST_COMPLETED, Executor, ProcessPoolExecutor, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple

import pyarrow as pa
import pyarrow.compute as pc

from catalog.schema import DIGEST_ALGORITHMS
from ingest import bagit_spec
from ingest.naming import BagId
from strongroom.checksums import SUPPORTED
from storage_adapters.base import CHUNK, NotFound, OddObject, StorageAdapter, StorageError, UnsafePath
from strongroom.errors import StrongroomError

DEEP, QUICK, TAGS = "deep", "quick", "tags"   # TAGS: tag files only (a copy looked at for comparison)

# --- what can be found ------------------------------------------------------------------------
# Damage (exit 1 unless repaired):
CORRUPTED = "corrupted"                # same size, different digest (or the storage's own checksum differs)
TRUNCATED = "truncated"                # shorter than the catalog says
GROWN = "grown"                        # longer than the catalog says
MISSING = "missing"                    # a payload file the catalog lists is not stored
EXTRA = "extra"                        # a stored file no manifest or tag manifest accounts for
NOT_A_FILE = "not-a-file"              # a link, FIFO, device or folder where a file (or a file/link where a folder) belongs
SHARED_STORAGE = "shared-storage"      # this copy's file is the same file on disk as another copy's (fixity.independence)
TAG_DAMAGED = "tag-damaged"            # a tag file (bagit.txt, bag-info, manifests, metadata/) differs
TAG_MISSING = "tag-missing"            # a tag file is not stored
BAG_MISSING = "bag-missing"            # nothing of the bag is stored on the target
BAG_NOT_A_FOLDER = "bag-not-a-folder"  # the bag's folder (or its LIB/COLL folder) is a link or not a folder
MANIFEST_DISAGREES = "manifest-disagrees"  # the copy's own payload manifest disagrees with the catalog
# Bag-level judgements made by fixity.repair across copies (damage):
CATALOG_DISAGREES = "catalog-disagrees"    # the majority of copies and their manifests say otherwise
NO_GOOD_COPY = "no-good-copy"              # no copy anywhere to repair from: nothing was touched
TAG_IN_DOUBT = "tag-in-doubt"              # copies of a tag file disagree and nothing says which is right
DISPUTED = "disputed"                      # a copy is disputed (fixity.repair): nothing of the bag is repaired
# Not damage: the check could not conclude (exit 1, outcome inconclusive, never repaired):
UNREADABLE = "unreadable"              # read error / timeout / server error after retries
UNREACHABLE = "unreachable"            # the target or the bag's listing could not be read

DAMAGE_KINDS = frozenset({CORRUPTED, TRUNCATED, GROWN, MISSING, EXTRA, NOT_A_FILE, SHARED_STORAGE, TAG_DAMAGED,
                          TAG_MISSING, BAG_MISSING, BAG_NOT_A_FOLDER, MANIFEST_DISAGREES, CATALOG_DISAGREES,
                          NO_GOOD_COPY, TAG_IN_DOUBT, DISPUTED})
INCONCLUSIVE_KINDS = frozenset({UNREADABLE, UNREACHABLE})

#: Findings kept per replica check; more are counted, not listed (a whole bag of bad files
#: must not produce a result file the size of the bag's manifest).
MAX_LISTED = 100_000
#: Parallel chunks: at most this many files or bytes per unit of work handed to a worker.
CHUNK_FILES = 256
CHUNK_BYTES = 32 << 20
#: Below this many files (and bytes) a pool costs more than it saves.
POOL_MIN_FILES = 64
POOL_MIN_BYTES = 64 << 20

AdapterFactory = Callable[[], StorageAdapter]


def utcnow() -> _dt.datetime:
    """The audit's clock: every time an audit records (check times, replica records, events,
    the due selection of the command) comes from here, so tests can move it."""
    return _dt.datetime.now(_dt.timezone.utc)
Progress = Callable[[int, int], None]   # (payload files checked, payload bytes read)


# --------------------------------------------------------------------------------------------
# Records


@dataclass
class Finding:
    """One thing found wrong (or not checkable) on one copy, or about a bag (`target` None)."""

    kind: str
    target: Optional[str]
    path: Optional[str]
    detail: str

    @property
    def damage(self) -> bool:
        return self.kind in DAMAGE_KINDS

    @property
    def inconclusive(self) -> bool:
        return self.kind in INCONCLUSIVE_KINDS

    def __str__(self) -> str:
        where = " ".join(x for x in (self.target, self.path) if x)
        return f"{self.kind}: {where}: {self.detail}" if where else f"{self.kind}: {self.detail}"

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Finding":
        return cls(**d)


@dataclass
class FileProblem:
    """A payload copy that is not as the catalog says, or could not be read.

    `size` and `digests` are what was found (bytes read, or stat size in a quick check); they
    let the repair step compare copies when the catalog itself is in doubt.
    """

    path: str
    kind: str
    detail: str
    size: Optional[int] = None
    digests: Dict[str, str] = field(default_factory=dict)


@dataclass
class TagCopy:
    """One stored tag file of this copy: its size and digests (every algorithm of interest)."""

    size: int
    digests: Dict[str, str]


@dataclass
class ReplicaCheck:
    """Everything one check of one copy found; JSON-able (it is a Luigi task's output).

    `kind` is deep, quick or tags (tag files only: a copy read for comparison, not audited).
    `reachable` False means the listing failed: nothing else is known. Payload problems are
    listed per file; tag files are only described here (`tag_copies`, `tag_manifests`,
    `manifest_state`) and judged across copies by `fixity.repair`.
    """

    bag_id: str
    target: str
    site: str
    kind: str
    started_at: str
    finished_at: str = ""
    reachable: bool = True
    unreachable_reason: str = ""
    bag_present: bool = True
    files_checked: int = 0           # payload files looked at (stat or read)
    bytes_checked: int = 0           # payload bytes read and hashed (what a daily budget limits)
    tag_bytes: int = 0               # tag file bytes read
    algorithms: List[str] = field(default_factory=list)   # digests recomputed for payload (deep)
    payload_problems: List[FileProblem] = field(default_factory=list)
    problems_not_listed: int = 0
    extra_payload: List[str] = field(default_factory=list)
    tag_copies: Dict[str, TagCopy] = field(default_factory=dict)
    tag_unreadable: Dict[str, str] = field(default_factory=dict)
    #: tag manifests of this copy, parsed: alg -> {tag path: digest}; absent alg = missing/unparseable
    tag_manifests: Dict[str, Dict[str, str]] = field(default_factory=dict)
    tag_manifest_errors: Dict[str, str] = field(default_factory=dict)
    #: alg -> "agrees" | "disagrees" | "missing" | "invalid: ..." (payload manifest vs catalog)
    manifest_state: Dict[str, str] = field(default_factory=dict)
    #: alg -> {path: digest the manifest gives, or None when it omits a catalog file}
    manifest_differences: Dict[str, Dict[str, Optional[str]]] = field(default_factory=dict)
    bagit_ok: bool = True
    bag_info_issues: List[str] = field(default_factory=list)
    bag_version: str = bagit_spec.BAGIT_VERSION
    findings: List[Finding] = field(default_factory=list)
    #: root-relative keys of odd objects found where the bag's folders belong (a linked bag or
    #: collection folder): repair moves them aside before storing the bag again
    odd_keys: List[str] = field(default_factory=list)
    #: [path, device, inode] of every file read or stat'ed with more than one hard link: compared
    #: with the other copies by fixity.independence (a file Strongroom stored has one link)
    linked: List[List[Any]] = field(default_factory=list)
    #: [device, inode] of the bag's folder (file systems): two copies with one folder are one copy
    folder_identity: Optional[List[int]] = None

    # -- outcome of this check alone (fixity.repair adds the judgement across copies)
    @property
    def damaged(self) -> bool:
        return any(f.damage for f in self.findings)

    @property
    def inconclusive(self) -> bool:
        return any(f.inconclusive for f in self.findings)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ReplicaCheck":
        d = dict(d)
        d["payload_problems"] = [FileProblem(**p) for p in d.get("payload_problems", [])]
        d["tag_copies"] = {k: TagCopy(**v) for k, v in d.get("tag_copies", {}).items()}
        d["findings"] = [Finding.from_dict(f) for f in d.get("findings", [])]
        return cls(**d)


# --------------------------------------------------------------------------------------------
# What the bag should hold (from the catalog)


_EXPECTED_CACHE: Dict[Tuple, "ExpectedBag"] = {}


@dataclass
class ExpectedBag:
    """The catalog's record of a bag: payload files (an Arrow table) and bag facts."""

    bag_id: str
    policy: str
    files: pa.Table                 # path, size and one column per digest algorithm
    algorithms: Tuple[str, ...]     # digest algorithms the catalog holds for every file
    primary: str                    # the policy's primary digest (or the first the catalog has)
    file_count: int
    byte_count: int
    external_identifier: Optional[str] = None

    @classmethod
    def from_catalog(cls, catalog, bag_id: str, policy=None) -> "ExpectedBag":
        """The bag's catalog record. `policy` (a policies.model.Policy, if known) names the
        primary digest, and the algorithms of a bag without payload files.

        The last one read is kept (per process): a registered bag's rows never change (the
        catalog refuses different content under a bag id), and the check of a copy and the
        judgement of the bag, run one after the other, need the same rows."""
        key = (str(getattr(catalog, "location", id(catalog))), bag_id, getattr(policy, "primary_checksum", None),
               tuple(getattr(policy, "checksums", ()) or ()))
        cached = _EXPECTED_CACHE.get(key)
        if cached is not None:
            return cached
        _EXPECTED_CACHE.clear()
        _EXPECTED_CACHE[key] = expected = cls._read(catalog, bag_id, policy)
        return expected

    @classmethod
    def _read(cls, catalog, bag_id: str, policy=None) -> "ExpectedBag":
        record = catalog.bag(bag_id)
        if record is None:
            raise KeyError(bag_id)
        files = catalog.files(bag_id)
        if files.num_rows:
            algorithms = tuple(a for a in DIGEST_ALGORITHMS if files.column(a).null_count == 0)
        else:
            algorithms = tuple(a for a in DIGEST_ALGORITHMS if policy is not None and a in policy.checksums)
        primary = policy.primary_checksum if policy is not None else None
        if primary not in algorithms:
            primary = "sha256" if "sha256" in algorithms else (algorithms[0] if algorithms else "sha256")
        keep = ["path", "size"] + list(algorithms)
        return cls(bag_id=bag_id, policy=record.policy, files=files.select(keep), algorithms=algorithms,
                   primary=primary, file_count=record.file_count, byte_count=record.byte_count,
                   external_identifier=record.external_identifier)

    def digests_of(self, paths: Iterable[str]) -> Dict[str, Tuple[int, Dict[str, str]]]:
        """(size, digests) of some payload files, by path (vectorised lookup)."""
        wanted = pa.array(list(paths), pa.string())
        rows = self.files.filter(pc.is_in(self.files.column("path"), value_set=wanted))
        out: Dict[str, Tuple[int, Dict[str, str]]] = {}
        cols = {a: rows.column(a).to_pylist() for a in self.algorithms}
        for i, (p, s) in enumerate(zip(rows.column("path").to_pylist(), rows.column("size").to_pylist())):
            out[p] = (s, {a: cols[a][i] for a in self.algorithms if cols[a][i]})
        return out

    def iter_files(self, table: Optional[pa.Table] = None, batch: int = 4096,
                   algorithms: Optional[Sequence[str]] = None) -> Iterator[Tuple[str, int, Dict[str, str]]]:
        """(path, size, digests) of every row, batch by batch (no list of every file);
        `algorithms` limits the digests given (less to hand to worker processes)."""
        table = self.files if table is None else table
        wanted = [a for a in self.algorithms if algorithms is None or a in algorithms]
        for rb in table.to_batches(max_chunksize=batch):
            paths = rb.column("path").to_pylist()
            sizes = rb.column("size").to_pylist()
            cols = [(a, rb.column(rb.schema.get_field_index(a)).to_pylist()) for a in wanted]
            for i, p in enumerate(paths):
                yield p, sizes[i], {a: c[i] for a, c in cols if c[i]}


# --------------------------------------------------------------------------------------------
# Retrying what may be transient


@dataclass(frozen=True)
class Retry:
    """How often a failed read is tried again before the file is called unreadable.

    `delays[i]` is the pause before attempt i+2 (the last delay repeats). Storage clients
    retry on their own too (botocore's standard mode); this covers what gets through.
    """

    attempts: int = 3
    delays: Tuple[float, ...] = (0.5, 2.0)

    def pause(self, attempt: int) -> None:
        if self.delays:
            delay = self.delays[min(attempt, len(self.delays) - 1)]
            if delay > 0:
                time.sleep(delay)


#: The retry policy used when a caller gives none (tests make it instant).
DEFAULT_RETRY = Retry()

_BUGS = (TypeError, AttributeError, NameError, AssertionError, KeyError, IndexError, ImportError)


def is_transient(exc: BaseException) -> bool:
    """True for failures that say nothing about the stored bytes (I/O error, timeout, 5xx).

    NotFound (confirmed absent) and UnsafePath (a link where a file belongs) are answers, not
    failures. Programming errors are not swallowed as "unreadable".
    """
    if isinstance(exc, (NotFound, UnsafePath)) or isinstance(exc, _BUGS):
        return False
    return isinstance(exc, Exception)


def describe(exc: BaseException) -> str:
    if isinstance(exc, StorageError):
        return exc.message
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def with_retry(retry: Retry, fn: Callable[[], Any]) -> Any:
    """fn() with transient failures retried; the last one is raised."""
    for attempt in range(retry.attempts):
        try:
            return fn()
        except Exception as exc:
            if not is_transient(exc) or attempt == retry.attempts - 1:
                raise
            retry.pause(attempt)
    raise AssertionError("unreachable")


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
                if attempt < self.retry.attempts - 1:
                    self.retry.pause(attempt)
        return FileProblem(path, UNREADABLE, f"cannot be read after {self.retry.attempts} attempts "
                                             f"({describe(last)}); inconclusive, not damage"), 0

    def _deep(self, path: str, size: int, expected: Mapping[str, str]) -> Tuple[Optional[FileProblem], int]:
        algorithms = [a for a in self.algorithms if a in expected] or [a for a in expected if a in SUPPORTED][:1]
        hashers = [_CONSTRUCTORS[a]() for a in algorithms]
        buf, view, n = self.buf, self.view, 0
        with self.adapter.open_file(self.bag_id, path) as fh:
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
    checker = checker or _WORKER
    assert checker is not None
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


# --------------------------------------------------------------------------------------------
# Listing and tag files


def list_copy(adapter: StorageAdapter, bag_id: BagId, retry: Retry) -> pa.Array:
    """Every stored path of the bag as an Arrow string array (built in chunks, compact)."""
    def listing() -> pa.Array:
        chunks: List[pa.Array] = []
        batch: List[str] = []
        for relpath in adapter.list_bag_files(bag_id):
            batch.append(relpath)
            if len(batch) >= 65536:
                chunks.append(pa.array(batch, pa.string()))
                batch = []
        chunks.append(pa.array(batch, pa.string()))
        return pa.concat_arrays(chunks)
    return with_retry(retry, listing)


def is_payload(path: str) -> bool:
    return path.startswith(bagit_spec.PAYLOAD_DIR + "/")


def _needs_parsing(path: str) -> bool:
    return "/" not in path and (path in (bagit_spec.BAGIT_TXT, "bag-info.txt")
                                or bool(bagit_spec.MANIFEST_RE.match(path) or bagit_spec.TAGMANIFEST_RE.match(path)))


def read_tag_file(adapter: StorageAdapter, bag_id: BagId, path: str, algorithms: Sequence[str], retry: Retry,
                  keep: bool, linked: Optional[List[List[Any]]] = None) -> Tuple[TagCopy, Optional[bytes]]:
    """Digest one tag file as a stream; its bytes too when `keep` (files that are parsed)."""
    def read() -> Tuple[TagCopy, Optional[bytes]]:
        hashers = [_CONSTRUCTORS[a]() for a in algorithms]
        kept = io.BytesIO() if keep else None
        n = 0
        with adapter.open_file(bag_id, path) as fh:
            ident = adapter.stream_identity(fh)
            if ident is not None and ident[2] > 1 and linked is not None:
                linked.append([path, ident[0], ident[1]])
            while True:
                chunk = fh.read(CHUNK)
                if not chunk:
                    break
                for h in hashers:
                    h.update(chunk)
                if kept is not None:
                    kept.write(chunk)
                n += len(chunk)
        return TagCopy(n, {a: h.hexdigest() for a, h in zip(algorithms, hashers)}), \
            (kept.getvalue() if kept is not None else None)
    return with_retry(retry, read)


def _lines(data: bytes, file: str = "tag file", where: Optional[str] = None) -> Iterator[Tuple[int, str]]:
    """(number, text) of each line of a tag file read from a copy: `bagit_spec.split_lines`, the
    one splitter every reader of tag files shares (LF, CR and CRLF line ends, a UTF-8 BOM
    dropped, lines bounded). Bytes that are not UTF-8 or an overlong line raise TagFileError
    naming `file` and the line."""
    return bagit_spec.split_lines(data, file, where)


def parse_manifest(data: bytes, version: str, algorithm: str, file: Optional[str] = None,
                   where: Optional[str] = None) -> Tuple[pa.Table, List[str]]:
    """(path, digest) table of a (tag) manifest, and its errors. Parsed in slices: no object per
    line kept. Raises TagFileError (naming `file`, default `manifest-<algorithm>.txt`, and the
    line) for bytes that are not UTF-8 or an overlong line."""
    paths: List[pa.Array] = []
    digests: List[pa.Array] = []
    errors: List[str] = []
    batch: List[Tuple[int, str]] = []

    def flush() -> None:
        entries, issues = bagit_spec.parse_manifest_lines(batch, version, algorithm)
        errors.extend(str(i) for i in issues if i.error)
        paths.append(pa.array([e.path for e in entries], pa.string()))
        digests.append(pa.array([e.digest for e in entries], pa.string()))
        batch.clear()

    for item in _lines(data, file or f"manifest-{algorithm}.txt", where):
        batch.append(item)
        if len(batch) >= 20000:
            flush()
    flush()
    return pa.table({"path": pa.concat_arrays(paths), "digest": pa.concat_arrays(digests)}), errors


def manifest_matches(raw: bytes, expected: ExpectedBag, algorithm: str, version: str) -> bool:
    """True when a payload manifest says exactly what the catalog says, checked without parsing
    it line by line: its lines, sorted, equal the lines Strongroom writes for the catalog's
    entries (`<digest>  <encoded path>`). Anything else (other spacing, upper-case digests,
    invalid UTF-8, a real difference) is left to the full parse. Vectorised and lean: a
    manifest of 200,000 lines costs tens of milliseconds, and besides the manifest's own lines
    and the expected ones only sort indices and one slice at a time are held."""
    start = 3 if raw.startswith(b"\xef\xbb\xbf") else 0
    body = memoryview(raw)[start:]
    offsets = pa.array([0, len(body)], pa.int64()).buffers()[1]
    whole = pa.LargeBinaryArray.from_buffers(pa.large_binary(), 1, [None, offsets, pa.py_buffer(body)])  # no copy
    lines = pc.list_flatten(pc.split_pattern(whole, b"\n"))
    if len(lines) and not lines[len(lines) - 1].as_py():
        lines = lines.slice(0, len(lines) - 1)            # what follows the last line end
    if raw.find(b"\r", start) >= 0:                       # CRLF line ends
        try:
            lines = pc.utf8_rtrim(lines.cast(pa.large_string()), characters="\r").cast(pa.large_binary())
        except pa.ArrowInvalid:                            # not UTF-8: the full parse says so
            return False
    if len(lines) != expected.files.num_rows:
        return False
    if len(lines) == 0:
        return True
    paths = expected.files.column("path")
    pairs = ([("%", "%25")] if bagit_spec.is_v1(version) else []) + [("\n", "%0A"), ("\r", "%0D")]
    for old, new in pairs:
        if pc.any(pc.match_substring(paths, old)).as_py():
            paths = pc.replace_substring(paths, old, new)
    wanted = pc.binary_join_element_wise(expected.files.column(algorithm).cast(pa.large_binary()),
                                         paths.cast(pa.large_binary()), pa.scalar(b"  ", pa.large_binary()))
    if isinstance(wanted, pa.ChunkedArray):
        wanted = wanted.combine_chunks()
    ours, theirs = pc.array_sort_indices(lines), pc.array_sort_indices(wanted)
    step = 65536
    for offset in range(0, len(lines), step):
        a = pc.take(lines, ours.slice(offset, step))
        b = pc.take(wanted, theirs.slice(offset, step))
        if not pc.all(pc.equal(a, b)).as_py():
            return False
    return True


def compare_manifest(expected: ExpectedBag, manifest: pa.Table, algorithm: str
                     ) -> Dict[str, Optional[str]]:
    """Paths where a payload manifest and the catalog disagree: path -> the manifest's digest
    (None: the manifest omits a file the catalog lists). A path listed twice counts as a
    disagreement if either line differs."""
    cat = expected.files.select(["path", algorithm]).rename_columns(["path", "catalog"])
    joined = cat.join(manifest, "path", join_type="full outer")
    same = pc.fill_null(pc.equal(joined.column("catalog"), joined.column("digest")), False)
    diff = joined.filter(pc.invert(same))
    out: Dict[str, Optional[str]] = {}
    for p, d in zip(diff.column("path").to_pylist(), diff.column("digest").to_pylist()):
        out[p] = d
    counts = pc.value_counts(manifest.column("path"))
    dup = counts.filter(pc.greater(counts.field("counts"), 1))
    for item in dup.to_pylist():
        out.setdefault(item["values"], None)
    return out


# --------------------------------------------------------------------------------------------
# One copy


def basis_of(recorded_at: Optional[_dt.datetime]) -> str:
    """A copy's current catalog record as short stable text ("none" without one). Audit tasks
    are keyed on it, so two runs selecting the same copy in the same state are the same unit
    of work, and a run can tell that another one audited the copy meanwhile."""
    if recorded_at is None:
        return "none"
    return recorded_at.astimezone(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")


def current_basis(catalog, bag_id: str, target: str) -> str:
    record = catalog.replica(bag_id, target)
    return basis_of(record.recorded_at if record is not None else None)


def check_target(config, catalog, bag_id: str, target: str, *, kind: str, basis: Optional[str] = None,
                 all_digests: bool = False, retry: Optional[Retry] = None, workers: int = 1,
                 open_adapter: Optional[Callable] = None, progress: Optional[Progress] = None) -> Dict[str, Any]:
    """Check `bag_id` on the config's storage target `target`: {"check": ReplicaCheck as a dict},
    or {"skipped": why} when the copy's catalog record is no longer `basis` (another run
    audited it since this one was planned)."""
    from storage_adapters.registry import open_target

    retry = retry or DEFAULT_RETRY
    current = catalog.replica(bag_id, target)
    if basis is not None:
        now_basis = basis_of(current.recorded_at if current is not None else None)
        if now_basis != basis:
            return {"skipped": f"audited by another run meanwhile (its catalog record changed at {now_basis})"}
    opener = open_adapter or open_target
    record = catalog.bag(bag_id)
    policy = config.policies.get(record.policy) if record is not None else None
    expected = ExpectedBag.from_catalog(catalog, bag_id, policy)
    spec = config.target(target)
    try:
        adapter = opener(spec)
    except StrongroomError as exc:   # e.g. an S3 target whose credentials are not set
        check = ReplicaCheck(bag_id=bag_id, target=target, site=spec.site, kind=kind, started_at=utcnow().isoformat())
        return {"check": mark_unreachable(check, f"the target cannot be opened ({exc})", utcnow).to_dict()}
    recorded = current is not None
    check = check_replica(adapter, expected, kind=kind, all_digests=all_digests, retry=retry, workers=workers,
                          open_adapter=lambda: opener(spec), progress=progress, empty_target_ok=not recorded)
    return {"check": check.to_dict()}


def check_replica(adapter: StorageAdapter, expected: ExpectedBag, *, kind: str = DEEP, all_digests: bool = False,
                  retry: Optional[Retry] = None, workers: int = 1, open_adapter: Optional[AdapterFactory] = None,
                  progress: Optional[Progress] = None, now: Optional[Callable[[], _dt.datetime]] = None,
                  empty_target_ok: bool = False) -> ReplicaCheck:
    """Check one copy of `expected` on `adapter` (see the module docstring).

    Never raises for what it finds; storage failures become `unreachable` / `unreadable`
    findings. `open_adapter` builds a fresh adapter for each pool process (workers > 1).
    A target holding no bag at all is taken as unmounted (unreachable), unless
    `empty_target_ok` (the copy was never made: a new target is legitimately empty).
    """
    clock = now or (lambda: utcnow())
    retry = retry or DEFAULT_RETRY
    bag_id = BagId.parse(expected.bag_id)
    check = ReplicaCheck(bag_id=expected.bag_id, target=adapter.name, site=adapter.site, kind=kind,
                         started_at=clock().isoformat())
    algorithms = list(expected.algorithms if all_digests else (expected.primary,)) if kind == DEEP else []
    check.algorithms = algorithms
    try:
        listing = list_copy(adapter, bag_id, retry)
    except OddObject as exc:
        return _bag_not_a_folder(check, exc, clock)
    except Exception as exc:
        if not is_transient(exc):
            raise
        return mark_unreachable(check, f"the bag's files cannot be listed ({describe(exc)})", clock)
    if len(listing) == 0:
        return _bag_missing(adapter, check, retry, clock, empty_target_ok)

    try:
        ident = adapter.folder_identity(bag_id)
    except Exception as exc:   # an identity that cannot be had is no finding of its own
        if not is_transient(exc):
            raise
        ident = None
    check.folder_identity = list(ident) if ident is not None else None
    payload_mask = pc.starts_with(listing, bagit_spec.PAYLOAD_DIR + "/")
    tag_paths = sorted(pc.filter(listing, pc.invert(payload_mask)).to_pylist())
    _check_tags(adapter, bag_id, expected, tag_paths, check, retry)

    if kind != TAGS:
        stored_payload = pc.filter(listing, payload_mask)
        present = pc.is_in(expected.files.column("path"), value_set=stored_payload)
        absent = expected.files.filter(pc.invert(present)).column("path").to_pylist()
        extra = pc.filter(stored_payload, pc.invert(pc.is_in(stored_payload, value_set=expected.files.column("path"))))
        extras = sorted(extra.to_pylist())
        folders = _folders_in_place(absent, extras)
        for path in absent:
            if path in folders:
                _add_problem(check, FileProblem(path, NOT_A_FILE, "is a folder where a file belongs; a stored bag "
                                                                  "file must be a regular file"))
            else:
                _add_problem(check, FileProblem(path, MISSING, "missing: not stored on this target"))
        # What is stored inside such a folder goes aside with it: not extra files of their own.
        check.extra_payload = [p for p in extras if not any(p.startswith(f + "/") for f in _parents(p, folders))]
        to_check = expected.files.filter(present)
        big = to_check.num_rows >= POOL_MIN_FILES or (pc.sum(to_check.column("size")).as_py() or 0) >= POOL_MIN_BYTES
        files, nbytes, problems = check_payload(
            adapter, expected.bag_id, expected.iter_files(to_check, algorithms=algorithms if kind == DEEP else None),
            deep=(kind == DEEP), algorithms=algorithms,
            retry=retry, workers=workers, open_adapter=open_adapter, progress=progress, use_pool=bool(big),
            linked=check.linked)
        check.files_checked, check.bytes_checked = files, nbytes
        for p in sorted(problems, key=lambda p: p.path):
            _add_problem(check, p)
        for path in check.extra_payload:
            check.findings.append(Finding(EXTRA, adapter.name, path, "extra file: in no manifest of the bag "
                                                                     "and not in the catalog"))
    check.finished_at = clock().isoformat()
    return check


def _parents(path: str, among) -> List[str]:
    """The folders above `path` that are in `among`."""
    parts = path.split("/")
    return [p for p in ("/".join(parts[:i]) for i in range(1, len(parts))) if p in among]


def _folders_in_place(absent: List[str], extras: List[str]) -> set:
    """Catalog paths not stored as files but as folders (something is stored below them)."""
    if not absent or not extras:
        return set()
    wanted = set(absent)
    return {p for e in extras for p in _parents(e, wanted)}


def _add_problem(check: ReplicaCheck, problem: FileProblem) -> None:
    if len(check.payload_problems) >= MAX_LISTED:
        check.problems_not_listed += 1
        return
    check.payload_problems.append(problem)
    check.findings.append(Finding(problem.kind, check.target, problem.path, problem.detail))


def _bag_not_a_folder(check: ReplicaCheck, exc: OddObject, clock) -> ReplicaCheck:
    """The bag's folder, or a folder above it, is a link (perhaps into another target) or not a
    folder: nothing of this copy is read through it. Damage: repair moves it aside and stores
    the bag again from a good copy."""
    check.bag_present = False
    check.odd_keys.append(exc.key)
    check.findings.append(Finding(BAG_NOT_A_FOLDER, check.target, None,
                                  f"{exc.location or exc.key} is {exc.what or 'not a folder'} where the bag's "
                                  "folder belongs; it is not followed, so no copy of the bag is stored here "
                                  "(a link into another target would make one copy count as two)"))
    check.finished_at = clock().isoformat()
    return check


def mark_unreachable(check: ReplicaCheck, reason: str, clock) -> ReplicaCheck:
    """The copy could not be looked at (listing failed, target cannot be opened): inconclusive."""
    check.reachable = False
    check.unreachable_reason = reason
    check.findings.append(Finding(UNREACHABLE, check.target, None, reason + "; inconclusive, not damage"))
    check.finished_at = clock().isoformat()
    return check


def _bag_missing(adapter: StorageAdapter, check: ReplicaCheck, retry: Retry, clock,
                 empty_target_ok: bool = False) -> ReplicaCheck:
    """Nothing of the bag is stored. On a target that holds no bag at all, that more likely
    means an unmounted volume or a wrong root than a lost copy: inconclusive, not repaired."""
    try:
        holds_any = empty_target_ok or with_retry(retry, lambda: next(iter(adapter.list_bags()), None) is not None)
    except Exception as exc:
        if not is_transient(exc):
            raise
        return mark_unreachable(check, f"the target cannot be listed ({describe(exc)})", clock)
    if not holds_any:
        return mark_unreachable(check, f"the target holds no bags at all ({adapter.location(BagId.parse(check.bag_id))} "
                                   "and everything around it is empty): is the volume mounted or the "
                                   "bucket/prefix right?", clock)
    check.bag_present = False
    check.findings.append(Finding(BAG_MISSING, check.target, None,
                                  f"the whole bag is missing: nothing is stored at "
                                  f"{adapter.location(BagId.parse(check.bag_id))}"))
    check.finished_at = clock().isoformat()
    return check


def tag_algorithms(expected: ExpectedBag, tag_paths: Iterable[str]) -> List[str]:
    """Digests worth computing for tag files: the catalog's, every tag manifest's, and sha256."""
    algs = set(expected.algorithms) | {"sha256"}
    for p in tag_paths:
        m = bagit_spec.TAGMANIFEST_RE.match(p) if "/" not in p else None
        if m and bagit_spec.hashlib_name(m.group(1)) in SUPPORTED:
            algs.add(bagit_spec.hashlib_name(m.group(1)))
    return [a for a in SUPPORTED if a in algs]


def _check_tags(adapter: StorageAdapter, bag_id: BagId, expected: ExpectedBag, tag_paths: List[str],
                check: ReplicaCheck, retry: Retry) -> None:
    """Read every tag file of the copy; parse bagit.txt, bag-info.txt and the (tag) manifests."""
    algs = tag_algorithms(expected, tag_paths)
    kept: Dict[str, bytes] = {}
    for path in tag_paths:
        keep = _needs_parsing(path)
        try:
            copy, data = read_tag_file(adapter, bag_id, path, algs, retry, keep, check.linked)
        except NotFound:
            continue  # removed between listing and reading: it is simply not there
        except UnsafePath as exc:
            check.findings.append(Finding(NOT_A_FILE, check.target, path, exc.message))
            continue
        except Exception as exc:
            if not is_transient(exc):
                raise
            check.tag_unreadable[path] = describe(exc)
            check.findings.append(Finding(UNREADABLE, check.target, path,
                                          f"tag file cannot be read after {retry.attempts} attempts "
                                          f"({describe(exc)}); inconclusive, not damage"))
            continue
        check.tag_copies[path] = copy
        check.tag_bytes += copy.size
        if data is not None:
            kept[path] = data

    version = bagit_spec.BAGIT_VERSION
    raw = kept.get(bagit_spec.BAGIT_TXT)
    if raw is not None:
        decl = bagit_spec.parse_bagit_txt(raw)
        check.bagit_ok = decl.rules is not None and decl.encoding is not None and \
            not any(i.error for i in decl.issues)
        version = decl.rules or version
    else:
        check.bagit_ok = False
    check.bag_version = version

    raw = kept.get("bag-info.txt")
    if raw is not None:
        check.bag_info_issues = _bag_info_issues(raw, version, expected)

    for alg in expected.algorithms:
        name = f"manifest-{alg}.txt"
        raw = kept.pop(name, None)
        if raw is None:
            check.manifest_state[alg] = "unreadable" if name in check.tag_unreadable else "missing"
            continue
        if manifest_matches(raw, expected, alg, version):
            check.manifest_state[alg] = "agrees"
            continue
        try:
            table, errors = parse_manifest(raw, version, alg, name)
        except bagit_spec.TagFileError as exc:
            table, errors = None, [exc.message]
        if errors:
            check.manifest_state[alg] = "invalid: " + "; ".join(errors[:5])
            continue
        diff = compare_manifest(expected, table, alg)
        check.manifest_state[alg] = "disagrees" if diff else "agrees"
        if diff:
            check.manifest_differences[alg] = diff
            listed = pa.array(list(diff), pa.string())
            in_catalog = set(pc.filter(listed, pc.is_in(listed, value_set=expected.files.column("path"))).to_pylist())
            for path, digest in list(sorted(diff.items()))[:MAX_LISTED]:
                catalog_has = path in in_catalog
                if digest is None:
                    what = f"{name} does not list {path}, which the catalog holds"
                elif not catalog_has:
                    what = f"{name} lists {path} ({alg} {digest}), which is not in the catalog"
                else:
                    what = f"{name} gives {alg} {digest} for {path}; the catalog has another digest"
                check.findings.append(Finding(MANIFEST_DISAGREES, check.target, path, what))

    for path in list(kept):
        m = bagit_spec.TAGMANIFEST_RE.match(path)
        alg = bagit_spec.hashlib_name(m.group(1)) if m else None
        if not m or alg not in SUPPORTED:
            continue
        try:
            table, errors = parse_manifest(kept[path], version, alg, path)
        except bagit_spec.TagFileError as exc:
            table, errors = None, [exc.message]
        if errors:
            check.tag_manifest_errors[alg] = "; ".join(errors[:5])
            continue
        entries = dict(zip(table.column("path").to_pylist(), table.column("digest").to_pylist()))
        if len(entries) != table.num_rows:
            check.tag_manifest_errors[alg] = "lists a tag file twice"
            continue
        check.tag_manifests[alg] = entries


def _bag_info_issues(raw: bytes, version: str, expected: ExpectedBag) -> List[str]:
    """What bag-info.txt says that the catalog contradicts (Payload-Oxum, External-Identifier)."""
    try:
        items, issues = bagit_spec.parse_tag_lines(_lines(raw, "bag-info.txt"), version)
    except bagit_spec.TagFileError as exc:
        return [exc.message]
    problems = [f"bag-info.txt: {i}" for i in issues if i.error]
    info: Dict[str, str] = {}
    for label, value in items:
        info.setdefault(label, value)
    oxum = info.get("Payload-Oxum")
    want = bagit_spec.payload_oxum(expected.byte_count, expected.file_count)
    if oxum is None:
        problems.append("bag-info.txt has no Payload-Oxum")
    elif oxum.strip() != want:
        problems.append(f"bag-info.txt Payload-Oxum {oxum.strip()} differs from the catalog's {want}")
    ext = info.get("External-Identifier")
    if expected.external_identifier and ext != expected.external_identifier:
        problems.append(f"bag-info.txt External-Identifier {ext!r} differs from the catalog's "
                        f"{expected.external_identifier!r}")
    return problems


__all__ = [
    "DEEP", "QUICK", "TAGS", "CORRUPTED", "TRUNCATED", "GROWN", "MISSING", "EXTRA", "NOT_A_FILE", "SHARED_STORAGE",
    "BAG_NOT_A_FOLDER", "DISPUTED", "TAG_DAMAGED",
    "TAG_MISSING", "BAG_MISSING", "MANIFEST_DISAGREES", "CATALOG_DISAGREES", "NO_GOOD_COPY", "TAG_IN_DOUBT",
    "UNREADABLE", "UNREACHABLE", "DAMAGE_KINDS", "INCONCLUSIVE_KINDS", "DEFAULT_RETRY", "Finding", "FileProblem",
    "TagCopy", "ReplicaCheck", "ExpectedBag", "Retry", "basis_of", "current_basis", "check_target", "FileChecker",
    "is_transient", "describe", "with_retry", "CopyRead", "read_copy", "check_payload", "check_replica", "list_copy",
    "is_payload", "tag_algorithms", "read_tag_file", "utcnow", "manifest_matches", "compare_manifest",
    "parse_manifest",
]
