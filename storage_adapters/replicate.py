"""Copy a staged bag to any storage target, and verify a stored bag against its manifests.

Both work per file through the `StorageAdapter` interface only, so the same code serves the
filesystem and S3 targets. Copying is idempotent: every put is atomic and skips a file that is
already stored identically, so a rerun after a crash (kill -9 included) copies only what is
missing. bagit.txt is stored last, in a batch of its own: a bag folder without it on a target
was not completely replicated. Files go to the target in batches (`put_files`, up to
BATCH_FILES files / BATCH_BYTES bytes), so a target can make a whole batch durable at once
instead of flushing after every small file.

What a bag holds comes from its own manifests (`bag_inventory`): payload digests from
manifest-<alg>.txt, tag file digests from tagmanifest-<alg>.txt. The tag manifests themselves,
and any tag file no tag manifest lists, are digested from the staged copy, so every stored file
has digests to be verified against.
"""

from __future__ import annotations

import contextlib
import os
import threading
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, List, Mapping, NamedTuple, Optional, Sequence, Tuple

from strongroom import bagit_spec
from strongroom.bag_id import BagId
from strongroom.checksums import SUPPORTED, hash_file
from strongroom.errors import PreservationError

from .base import BagReads, CheckedStamp, HashingReader, PutItem, PutOutcome, StorageAdapter, StorageError, read_buffer

Progress = Callable[[int, int], None]  # (files done, bytes done), as pipelines.progress.phase shows them

#: Files per put_files call, and bytes: enough to share one flush among many small files, small
#: enough to bound the memory waiting to be written back and the work a crash throws away.
BATCH_FILES = 1000
BATCH_BYTES = 1 << 30
Digests = Dict[str, Dict[str, str]]    # bag path -> {algorithm: hex digest}


class BagInventory(NamedTuple):
    """Every file of a staged bag: digests (by bag path, by algorithm) and sizes in bytes."""

    digests: Digests
    sizes: Dict[str, int]


@dataclass(frozen=True)
class ReplicateResult:
    target: str
    bag_id: str
    files_total: int
    bytes_total: int
    files_written: int
    bytes_written: int
    files_already_present: int
    #: bag path -> stamp of each file the target re-read and checked after it was durable
    #: (`CheckedStamp`; a folder target's new files): what Verify may compare instead of reading
    checked: Dict[str, CheckedStamp] = field(default_factory=dict)


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of checking one bag on one target. `problems` has one line per file, naming it.

    `bytes_checked` counts bytes re-read and re-hashed (0 for a quick check), which is what a
    daily byte budget limits. `missing`, `damaged` and `extra` list bag paths, for repair.
    """

    ok: bool
    problems: List[str]
    files_checked: int
    bytes_checked: int
    target: str = ""
    bag_id: str = ""
    deep: bool = True
    missing: List[str] = field(default_factory=list)
    damaged: List[str] = field(default_factory=list)
    extra: List[str] = field(default_factory=list)
    #: of files_checked, those taken as checked by their unchanged stamp (`verify_replica(checked=)`),
    #: and their bytes (re-read when they were checked, not now, so not in bytes_checked)
    files_unchanged: int = 0
    bytes_unchanged: int = 0


# --------------------------------------------------------------------------------------------
# Inventory of a staged bag


def _supported(algorithm: str) -> Optional[str]:
    name = bagit_spec.hashlib_name(algorithm)
    return name if name in SUPPORTED else None


def _walk_bag(bag_dir: Path, problems: List[str]) -> List[str]:
    """Every regular file of the bag, as bag paths; symbolic links and special files are problems.

    Depth first in name order, with an explicit stack of folder listings: a bag nested deeper
    than Python's recursion limit (1,000 levels) is walked like any other."""
    found: List[str] = []
    stack: List[Tuple[str, Iterator[os.DirEntry]]] = [("", iter(_sorted_entries(bag_dir)))]
    while stack:
        prefix, entries = stack[-1]
        for entry in entries:
            rel = prefix + entry.name
            if entry.is_symlink():
                problems.append(f"{rel}: is a symbolic link; a bag to be stored holds regular files only")
            elif entry.is_dir(follow_symlinks=False):
                stack.append((rel + "/", iter(_sorted_entries(entry.path))))
                break
            elif entry.is_file(follow_symlinks=False):
                found.append(rel)
            else:
                problems.append(f"{rel}: is not a regular file")
        else:
            stack.pop()
    return found


def _sorted_entries(folder) -> List[os.DirEntry]:
    with os.scandir(folder) as it:
        return sorted(it, key=lambda e: e.name)


def bag_inventory(bag_dir) -> BagInventory:
    """Digests and sizes of every file of a staged bag, from its own manifests and tag manifests.

    Raises PreservationError listing every problem: a file a payload manifest lists but the
    bag lacks, a payload file no manifest lists, conflicting digests, unreadable manifests.
    Manifests of algorithms Strongroom does not compute are ignored (see strongroom.checksums).
    """
    bag_dir = Path(bag_dir)
    problems: List[str] = []
    try:
        decl = bagit_spec.parse_bagit_txt((bag_dir / bagit_spec.BAGIT_TXT).read_bytes())
    except OSError as exc:
        raise PreservationError(f"cannot read bagit.txt ({exc.strerror or exc}); not a bag that can be stored",
                                path=str(bag_dir)) from None
    if decl.rules is None or decl.encoding is None:
        raise PreservationError("bagit.txt is not valid; not a bag that can be stored", path=str(bag_dir),
                                problems=[f"bagit.txt: {i}" for i in decl.issues if i.error])

    files = _walk_bag(bag_dir, problems)
    on_disk = set(files)
    fetched = _fetched_paths(bag_dir) if bagit_spec.FETCH_TXT in on_disk else set()
    digests: Digests = {}
    payload_algorithms: List[str] = []
    manifests = sorted(p for p in on_disk if "/" not in p and
                       (bagit_spec.MANIFEST_RE.match(p) or bagit_spec.TAGMANIFEST_RE.match(p)))
    for name in manifests:
        algorithm = _supported(bagit_spec.manifest_algorithm(name) or "")
        if algorithm is None:
            continue
        is_tag = bool(bagit_spec.TAGMANIFEST_RE.match(name))
        if not is_tag:
            payload_algorithms.append(algorithm)
        try:
            entries = bagit_spec.read_manifest(bag_dir / name, decl.rules, decl.encoding)
        except bagit_spec.BagItSyntaxError as exc:
            problems.extend(f"{name}: {issue}" for issue in exc.issues)
            continue
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(f"{name}: cannot be read ({exc})")
            continue
        for relpath, digest in entries:
            if not is_tag and not bagit_spec.is_payload_path(relpath):
                problems.append(f"{name}: lists {relpath!r}, which is outside data/")
                continue
            if relpath not in on_disk and relpath in fetched:
                continue  # a version bag's unchanged file: an earlier bag holds it (ingest.fetch)
            if relpath not in on_disk:
                problems.append(f"{relpath}: listed in {name} but not in the bag")
                continue
            known = digests.setdefault(relpath, {})
            if known.get(algorithm, digest) != digest:
                problems.append(f"{relpath}: listed twice in {name} with different {algorithm} checksums")
            known[algorithm] = digest
    if not payload_algorithms:
        problems.append("the bag has no payload manifest of a supported algorithm "
                        f"({', '.join(SUPPORTED)})")

    local_algorithms = list(dict.fromkeys(payload_algorithms)) or ["sha256"]
    sizes: Dict[str, int] = {}
    for relpath in files:
        if relpath not in digests:
            if bagit_spec.is_payload_path(relpath):
                problems.append(f"{relpath}: payload file not listed in any payload manifest")
                continue
            # Tag manifests (and any tag file they do not list): digest the staged copy.
            _, digests[relpath] = hash_file(bag_dir / relpath, local_algorithms)
        elif bagit_spec.is_payload_path(relpath):
            missing = [a for a in payload_algorithms if a not in digests[relpath]]
            if missing:
                problems.append(f"{relpath}: not listed in manifest-{missing[0]}.txt")
        sizes[relpath] = (bag_dir / relpath).stat().st_size
    if problems:
        raise PreservationError(f"bag cannot be stored: {len(problems)} problem(s) in its files or manifests",
                                path=str(bag_dir), problems=problems)
    return BagInventory({p: digests[p] for p in files}, sizes)


def _fetched_paths(bag_dir: Path) -> set:
    """The files a staged version bag lists in fetch.txt instead of holding (docs/versions.md)."""
    from ingest.fetch import FETCH_TXT, parse_fetch

    return {e.path for e in parse_fetch((bag_dir / FETCH_TXT).read_bytes(), str(bag_dir))}


# --------------------------------------------------------------------------------------------
# Replication


def _store_order(paths: Iterable[str]) -> Tuple[List[str], List[str]]:
    """(everything but bagit.txt, [bagit.txt]): bagit.txt last marks a completely stored bag."""
    rest = [p for p in paths if p != bagit_spec.BAGIT_TXT]
    last = [p for p in paths if p == bagit_spec.BAGIT_TXT]
    return rest, last


def _batches(paths: Sequence[str], sizes: Mapping[str, int], max_files: int, max_bytes: int) -> Iterator[List[str]]:
    """Consecutive runs of paths of at most max_files files and max_bytes bytes (a bigger file alone)."""
    batch: List[str] = []
    total = 0
    for relpath in paths:
        if batch and (len(batch) >= max_files or total + sizes[relpath] > max_bytes):
            yield batch
            batch, total = [], 0
        batch.append(relpath)
        total += sizes[relpath]
    if batch:
        yield batch


def replicate_bag(adapter: StorageAdapter, bag_dir, bag_id: BagId, *, progress: Optional[Progress] = None,
                  inventory: Optional[BagInventory] = None, workers: int = 1) -> ReplicateResult:
    """Store every file of a staged bag on `adapter`, each atomically; skip identical ones.

    Every byte is checked against the bag's manifests before it gets its name (a bad staged copy
    is never stored): while it is uploaded, or (a folder target) re-read after its flush, whose
    stamps the result keeps (`checked`). Stops at the first failure and raises it (StorageError: ReplicaConflict if a
    different file is already stored under a key). Files go in batches through `put_files`;
    `workers` > 1 stores batches in parallel threads (useful for S3). `progress` is called once
    per file (files done, bytes done), from one thread at a time. `inventory` saves re-reading
    the manifests if the caller has it.
    """
    bag_dir = Path(bag_dir)
    if inventory is None:
        inventory = bag_inventory(bag_dir)
    digests, sizes = inventory
    files_done = bytes_done = written = bytes_written = present = 0
    checked: Dict[str, CheckedStamp] = {}
    lock = threading.Lock()

    prefix = os.fspath(bag_dir) + "/"

    def item(relpath: str) -> PutItem:
        src = prefix + relpath  # a str, not bag_dir / relpath: pathlib's join was ~0.4 s per 20,000 files
        try:
            mtime = os.stat(src).st_mtime
        except OSError as exc:
            raise StorageError(f"cannot read the staged file ({exc.strerror or exc})", target=adapter.name,
                               location=src) from None
        return PutItem(relpath, src, sizes[relpath], digests[relpath], mtime)

    def record(relpath: str, outcome: PutOutcome) -> None:
        nonlocal files_done, bytes_done, written, bytes_written, present
        with lock:
            files_done += 1
            bytes_done += sizes[relpath]
            if outcome is PutOutcome.WRITTEN:
                written += 1
                bytes_written += sizes[relpath]
            else:
                present += 1
            if progress is not None:
                progress(files_done, bytes_done)

    def put(batch: List[str]) -> None:
        items = [item(p) for p in batch]
        reported = [False] * len(batch)

        def done(index: int, outcome: PutOutcome) -> None:
            if not reported[index]:
                reported[index] = True
                record(batch[index], outcome)

        def stamped(index: int, stamp: CheckedStamp) -> None:
            with lock:
                checked[batch[index]] = stamp

        outcomes = adapter.put_files(bag_id, items, on_done=done, on_checked=stamped)
        for index, outcome in enumerate(outcomes):
            done(index, outcome)  # an adapter that does not report as it goes is counted here

    for group in _store_order(sorted(digests)):
        if not group:
            continue
        per_batch = BATCH_FILES if workers <= 1 else max(1, min(BATCH_FILES, -(-len(group) // workers)))
        batches = list(_batches(group, sizes, per_batch, BATCH_BYTES))
        if workers <= 1 or len(batches) <= 1:
            for batch in batches:
                put(batch)
            continue
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"put-{adapter.name}") as pool:
            pending = {pool.submit(put, b) for b in batches}
            while pending:
                done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                for fut in done:
                    if fut.exception() is not None:
                        for other in pending:
                            other.cancel()
                        raise fut.exception()
    return ReplicateResult(target=adapter.name, bag_id=str(bag_id), files_total=len(digests),
                           bytes_total=sum(sizes.values()), files_written=written, bytes_written=bytes_written,
                           files_already_present=present, checked=checked)


# --------------------------------------------------------------------------------------------
# Verification


def _check_one(adapter: StorageAdapter, reads: BagReads, bag_id: BagId, relpath: str, expected: Mapping[str, str],
               size: Optional[int], deep: bool, algorithms: Optional[Sequence[str]]
               ) -> Tuple[Optional[str], str, int]:
    """(problem or None, kind: ok|missing|damaged, bytes read) for one listed file; a deep check
    opens it through `reads` (the adapter's `reading` context of the bag)."""
    wanted = [a for a in (algorithms or expected) if a in expected]
    if deep and not wanted:
        return f"{relpath}: no digest of a requested algorithm to check against", "damaged", 0
    stream = None
    try:
        if deep:
            found = reads.open_with_stat(relpath)
            st, stream = found if found is not None else (None, None)
        else:
            st = adapter.stat_file(bag_id, relpath)
    except StorageError as exc:
        return f"{relpath}: {exc.message}", "damaged", 0
    if st is None:
        return f"{relpath}: missing", "missing", 0
    with stream if stream is not None else contextlib.nullcontext():
        problem = _stat_problem(relpath, st, expected, size)
        if problem is not None or not deep:
            return problem, "ok" if problem is None else "damaged", 0
        try:
            reader = HashingReader(stream, wanted)
            buf = read_buffer(size)
            while reader.readinto(buf):
                pass
        except StorageError as exc:
            return f"{relpath}: {exc.message}", "damaged", 0
        except OSError as exc:
            return f"{relpath}: cannot be read ({exc.strerror or exc})", "damaged", 0
    n = reader.hasher.size
    if size is not None and n != size:
        return f"{relpath}: size differs ({n} bytes read, {size} expected)", "damaged", n
    found_digests = reader.hasher.hexdigests()
    wrong = [f"{a} expected {expected[a]}, found {found_digests[a]}" for a in wanted
             if found_digests[a] != expected[a].lower()]
    if wrong:
        return f"{relpath}: checksum mismatch ({'; '.join(wrong)})", "damaged", n
    return None, "ok", n


def _stat_problem(relpath: str, st, expected: Mapping[str, str], size: Optional[int]) -> Optional[str]:
    """What the stored size and the storage's own digests already show to be wrong, if anything."""
    if size is not None and st.size != size:
        how = "truncated" if st.size < size else "longer than expected"
        return f"{relpath}: size differs ({how}: {st.size} bytes stored, {size} expected)"
    stored = {a: v for a, v in st.stored_digests.items() if a in expected}
    wrong = [f"{a} stored checksum {v}, expected {expected[a]}" for a, v in stored.items() if v != expected[a]]
    if wrong:
        return f"{relpath}: checksum mismatch ({'; '.join(wrong)})"
    return None


def verify_replica(adapter: StorageAdapter, bag_id: BagId, manifests: Mapping[str, Mapping[str, str]],
                   sizes: Mapping[str, int], *, deep: bool = True, algorithms: Optional[Sequence[str]] = None,
                   workers: int = 1, progress: Optional[Progress] = None,
                   checked: Optional[Mapping[str, CheckedStamp]] = None) -> VerifyResult:
    """Check a stored bag against what it should hold (`bag_inventory`, or the catalog).

    deep: every file is re-read as a stream and its digests recomputed (`algorithms` limits
    which, e.g. only the primary one; default all known for the file). quick: existence and
    size, plus any checksum the storage itself keeps. Both report files missing from the target
    and extra files the manifests do not list. Problems never stop the check: every file is
    looked at and named. `progress` is called as each file is done (files done, bytes of them
    by the manifests' sizes, missing ones included, so the counts end at the inventory's totals).

    `checked`: stamps of files the target re-read and checked after they were made durable
    (`ReplicateResult.checked`, the same deposit's Replicate, for these manifests). A deep
    check takes a file whose stamp is still the same as checked (`files_unchanged`) instead of
    reading it again; any other file, one changed since included, is read and checked in full.
    """
    for alg in algorithms or ():
        if alg not in SUPPORTED:
            raise ValueError(f"unsupported checksum algorithm {alg!r}; allowed: {', '.join(SUPPORTED)}")
    problems: List[str] = []
    missing: List[str] = []
    damaged: List[str] = []
    extra: List[str] = []
    try:
        stored = set(adapter.list_bag_files(bag_id))
    except StorageError as exc:
        stored = None
        problems.append(f"(bag {bag_id}): cannot be listed: {exc}")

    expected = sorted(manifests)
    outcomes: Dict[str, Tuple[Optional[str], str, int]] = {}
    to_check = []
    for relpath in expected:
        if stored is not None and relpath not in stored:
            outcomes[relpath] = (f"{relpath}: missing", "missing", 0)
        else:
            to_check.append(relpath)

    reads = adapter.reading(bag_id)

    def check(relpath: str):
        if checked and deep and relpath in checked and reads.stamp(relpath) == tuple(checked[relpath]):
            return relpath, (None, "unchanged", 0)
        return relpath, _check_one(adapter, reads, bag_id, relpath,
                                   {a: d.lower() for a, d in manifests[relpath].items()},
                                   sizes.get(relpath), deep, algorithms)

    done = [len(outcomes), sum(sizes.get(p, 0) for p in outcomes)]

    def settled(relpath: str, outcome) -> None:
        outcomes[relpath] = outcome
        if progress is not None:
            done[0] += 1
            done[1] += sizes.get(relpath, 0)
            progress(done[0], done[1])

    with reads:
        if workers > 1 and len(to_check) > 1:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"verify-{adapter.name}") as pool:
                for relpath, outcome in pool.map(check, to_check):
                    settled(relpath, outcome)
        else:
            for relpath in to_check:
                settled(relpath, check(relpath)[1])
    # Whatever the reads' kept state may have hidden (a folder replaced while it was read).
    problems.extend(reads.problems())

    files_checked = bytes_checked = files_unchanged = bytes_unchanged = 0
    for relpath in expected:
        problem, kind, n = outcomes[relpath]
        bytes_checked += n
        if kind != "missing":
            files_checked += 1
        if kind == "unchanged":
            files_unchanged += 1
            bytes_unchanged += sizes.get(relpath, 0)
        if problem:
            problems.append(problem)
            (missing if kind == "missing" else damaged).append(relpath)
    for relpath in sorted((stored or set()) - set(manifests)):
        extra.append(relpath)
        problems.append(f"{relpath}: extra file, not in the bag's manifests")
    return VerifyResult(ok=not problems, problems=problems, files_checked=files_checked,
                        bytes_checked=bytes_checked, target=adapter.name, bag_id=str(bag_id), deep=deep,
                        missing=missing, damaged=damaged, extra=extra, files_unchanged=files_unchanged,
                        bytes_unchanged=bytes_unchanged)


__all__ = ["BATCH_FILES", "BATCH_BYTES", "BagInventory", "ReplicateResult", "VerifyResult", "bag_inventory",
           "replicate_bag", "verify_replica"]
