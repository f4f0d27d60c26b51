"""What every storage target offers: per-file, never-overwrite storage of bag files.

The interface is shaped by the weakest target Strongroom must support, an S3 bucket:
  * one object per bag file under `<prefix>/<LIB>/<COLL>/<bag-name>/<path inside bag>` (DESIGN.md),
    so a single damaged file can be repaired without touching the rest of the bag;
  * no directory renames: a bag becomes complete file by file, each file atomically, so a rerun
    after a crash only puts what is missing;
  * no listing of other bags' keys to write or verify one bag;
  * `put_files` stores many files of a bag in one call, with every guarantee of `put_file` for
    each, so a target can make them durable together (one file-system flush, parallel uploads)
    instead of paying a flush per file;
  * `put_file` never overwrites. Something different already stored under a key is a conflict
    (ReplicaConflict), because a preservation copy must never be silently replaced. Only
    `replace_file`, used by repair after a good copy has been verified, may replace a file;
  * whatever checksums the storage itself keeps (S3 x-amz-checksum-*) come back from
    `stat_file`, so a quick audit can compare them without reading the bytes.

Errors are StorageError (a PreservationError: exit code 1), naming the target, the file
location and the reason, e.g. "site-b: /x/y/data/a.tif: not writable (permission denied)".
"""

from __future__ import annotations

import abc
import contextlib
import enum
import functools
import hashlib
import io
import os
import re
from dataclasses import dataclass, field
from typing import IO, BinaryIO, Callable, Dict, Iterator, List, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

from strongroom import bagit_spec
from strongroom.bag_id import BagId
from strongroom.checksums import SUPPORTED, MultiHasher
from strongroom.errors import PreservationError, UsageError

CHUNK = 1 << 20  # 1 MiB reads: large enough for hashlib to release the GIL and for sequential I/O

#: A file to store: a local path, or a readable binary stream (e.g. another target's open_file).
Source = Union[str, "os.PathLike[str]", BinaryIO, IO[bytes]]

#: Lower-case hex digits and nothing else: used with fullmatch (a `$` would let a trailing newline pass).
_HEX = re.compile(r"[0-9a-f]+")
_DIGEST_LENGTHS = {alg: hashlib.new(alg).digest_size * 2 for alg in SUPPORTED}


# --------------------------------------------------------------------------------------------
# Errors


class StorageError(PreservationError):
    """A storage operation failed. `target` is the target's name, `location` the file/object.

    The message says what failed and why ("not writable (permission denied)", "cannot write:
    no space left on device"); credentials never appear in it.
    """

    def __init__(self, message: str, *, target: str, location: Optional[str] = None,
                 problems: Optional[list] = None):
        self.target = target
        self.location = location
        super().__init__(message, path=location, problems=problems)

    def __str__(self) -> str:
        where = f"{self.target}: "
        if self.location:
            where += f"{self.location}: "
        return where + self.message


class NotFound(StorageError):
    """The file (or the bag) is not on this target."""


class ReplicaConflict(StorageError):
    """A different file is already stored under the key; it was left as it is."""


class UnsafePath(StorageError):
    """The key is refused: an untrusted path ('..', absolute, NUL...), or a symbolic link inside
    the target that would lead the write or read somewhere else."""


class OddObject(UnsafePath):
    """Something other than what belongs is stored where a bag file or one of its folders should
    be: a symbolic link (at any level: the file, `data/`, the bag or collection folder), a FIFO,
    socket or device, a folder where a file belongs or a file where a folder belongs.

    It is damage, never followed: `key` is its place relative to the target's root
    ('LIB/COLL/bag/data'), `what` says what it is ("a symbolic link", "a FIFO", "a folder").
    Repair moves it aside (`StorageAdapter.move_aside`) and stores a good copy in its place.
    """

    def __init__(self, message: str, *, target: str, location: Optional[str] = None, key: str = "",
                 what: str = ""):
        super().__init__(message, target=target, location=location)
        self.key = key
        self.what = what


class SourceMismatch(StorageError):
    """The bytes read from the source do not match the size or digests they were given with:
    nothing was stored (the staged or repair copy itself is bad)."""


# --------------------------------------------------------------------------------------------
# Records


class PutOutcome(enum.Enum):
    WRITTEN = "written"
    ALREADY_PRESENT = "already-present-identical"


@dataclass(frozen=True)
class PutItem:
    """One file for `StorageAdapter.put_files`: the arguments `put_file` takes for it."""

    relpath: str
    src: Source
    size: int
    digests: Mapping[str, str]
    mtime: Optional[float] = None


#: put_files calls it as each file is settled: (index of the item, its outcome). For progress.
ItemDone = Callable[[int, PutOutcome], None]


class CheckedStamp(NamedTuple):
    """What a stored file was when it was re-read and checked after it was made durable:
    (device, inode, size, mtime and ctime in ns), taken once it had its name.

    Why: a file whose stamp is unchanged was not written, truncated, replaced, renamed over or
    relinked since that check (each moves its ctime, which no process can set back), so the
    deposit's Verify compares stamps instead of reading every replica twice (issue 11). A file
    whose stamp differs is simply re-read and checked again.
    """

    dev: int
    ino: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> "CheckedStamp":
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


#: put_files calls it for a new file re-read and checked after it was durable: (index, its stamp).
ItemChecked = Callable[[int, CheckedStamp], None]


@dataclass(frozen=True)
class FileStat:
    """What a target knows about a stored file without reading it.

    `mtime` is seconds since the epoch (None if the target keeps none). `stored_digests` are
    lower-case hex digests by algorithm name that the storage itself recorded and checks (S3
    full-object checksums); empty where the storage keeps none (a plain file system).

    `identity` is (device, inode) on a file system (None on an object store) and `links` its
    hard-link count: two copies whose files have one identity are one copy on disk, not two
    (a file Strongroom stored has one link; more is worth comparing with the other copies).
    """

    size: int
    mtime: Optional[float]
    stored_digests: Mapping[str, str] = field(default_factory=dict)
    identity: Optional[Tuple[int, int]] = None
    links: Optional[int] = None


# --------------------------------------------------------------------------------------------
# Keys


def check_relpath(relpath: str) -> Tuple[str, ...]:
    """The '/'-separated segments of a bag-relative path; ValueError if it is unsafe or not canonical.

    Paths come from bags and manifests, so they are untrusted: the rules are those of
    `strongroom.bagit_spec.path_problem` (no '..', absolute path, NUL, backslash...), plus canonical
    form (no '.', empty segment or trailing '/'), so one file has exactly one key.
    """
    if not isinstance(relpath, str):
        raise ValueError(f"{relpath!r}: a bag path must be text")
    problem = bagit_spec.path_problem(relpath)
    if problem:
        raise ValueError(f"{relpath!r}: {problem}")
    segments = tuple(relpath.split("/"))
    if any(s in ("", ".") for s in segments):
        raise ValueError(f"{relpath!r}: not a canonical bag path (no '.', '//' or trailing '/')")
    return segments


#: The reserved namespace beside the bags on every target (`<root or prefix>/.strongroom/`) for
#: small records that are not bag files: ledger checkpoints, tombstones, the stdlib verifier.
#: It is no library code (those start with a letter or digit), so bag listings never meet it.
RESERVED = ".strongroom"


def check_record_key(key: str, *, prefix: bool = False) -> Tuple[str, ...]:
    """The segments of a record key (relative to RESERVED); ValueError if it is unsafe.

    Record keys are checked like bag paths (no '..', absolute path, NUL, backslash, '.' or empty
    segment), because a key may come from a record read back from storage. With `prefix`, a
    listing prefix: "" or a key that may end in '/'.
    """
    if prefix:
        if key == "":
            return ()
        if not isinstance(key, str):
            raise ValueError(f"{key!r}: a record key must be text")
        return check_relpath(key[:-1] if key.endswith("/") else key)
    return check_relpath(key)


@functools.lru_cache(maxsize=1024)
def _parsed_bag_id(text: str) -> Optional[BagId]:
    """BagId.parse(text), None when it is no bag id; kept because every stored file opened,
    stat'ed or named asks for the same few bags' segments (twice per file in a deep audit)."""
    try:
        return BagId.parse(text)
    except UsageError:
        return None


def checked_record_prefix(adapter: "StorageAdapter", prefix: str) -> Tuple[str, ...]:
    """`check_record_key(prefix, prefix=True)` for `adapter.list_records`: UnsafePath naming the
    target and the place instead of ValueError."""
    try:
        return check_record_key(prefix, prefix=True)
    except ValueError as exc:
        raise UnsafePath(f"refused record prefix: {exc}", target=adapter.name,
                         location=adapter.record_location(prefix)) from None


def bag_segments(bag_id: BagId) -> Tuple[str, str, str]:
    """(LIB, COLL, bag-name): checked again here because BagId can be built without `parse`."""
    text = str(bag_id)
    canonical = _parsed_bag_id(text) == bag_id
    if not canonical:
        raise ValueError(f"{text!r} is not a canonical bag id (LIB/COLL/YYYYMMDDTHHMMSSZ-N)")
    return bag_id.library, bag_id.collection, bag_id.name


def bag_key(bag_id: BagId, relpath: Optional[str] = None) -> str:
    """`LIB/COLL/bag-name[/relpath]`: the key of a bag file relative to a target's prefix."""
    key = "/".join(bag_segments(bag_id))
    if relpath:
        key += "/" + "/".join(check_relpath(relpath))
    return key


def check_aside_key(bag_id: BagId, key: str) -> Tuple[str, ...]:
    """The segments of a key `move_aside` may touch: the bag, a parent of it, or a path in it."""
    own = bag_segments(bag_id)
    segments = tuple(key.split("/")) if key else ()
    if not segments:
        raise ValueError("refusing to move the whole target aside")
    head = segments[:len(own)]
    if head != own[:len(head)]:
        raise ValueError(f"{key!r} is not the bag {bag_id} nor one of its folders")
    if len(segments) > len(own):
        check_relpath("/".join(segments[len(own):]))
    return segments


def check_unique_relpaths(items: Sequence[PutItem]) -> None:
    """ValueError if one bag path is given twice in one put_files call (which bytes would win?)."""
    seen = set()
    for item in items:
        if item.relpath in seen:
            raise ValueError(f"{item.relpath!r} is given twice in one put_files call")
        seen.add(item.relpath)


def check_digests(digests: Mapping[str, str]) -> Dict[str, str]:
    """Digests by algorithm, lower-cased; ValueError if none are given or one is malformed."""
    if not digests:
        raise ValueError("at least one digest is needed to store a file (it is how an identical copy is recognised)")
    out: Dict[str, str] = {}
    for alg, value in digests.items():
        if alg not in SUPPORTED:
            raise ValueError(f"unsupported checksum algorithm {alg!r}; allowed: {', '.join(SUPPORTED)}")
        value = str(value).lower()
        if not _HEX.fullmatch(value) or len(value) != _DIGEST_LENGTHS[alg]:
            raise ValueError(f"{alg} digest {value!r} is not {_DIGEST_LENGTHS[alg]} hex digits")
        out[alg] = value
    return out


# --------------------------------------------------------------------------------------------
# Streams


class HashingReader(io.RawIOBase):
    """Wraps a source stream and digests every byte read through it.

    Used by every adapter's put: the same read that feeds the target feeds the checksums, and
    `check` then proves the stored bytes are the ones the manifest describes (a bad staged copy
    is refused before it gets a final name). Works as a file object for boto3's uploads too.
    """

    def __init__(self, stream: BinaryIO, algorithms):
        super().__init__()
        self._stream = stream
        self.hasher = MultiHasher(algorithms)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        n = read_into(self._stream, view)
        if n:
            self.hasher.update(view[:n])
        return n

    def check(self, size: int, digests: Mapping[str, str], *, target: str, location: str) -> None:
        """SourceMismatch unless the bytes read so far have exactly this size and these digests."""
        check_hashed(self.hasher, size, digests, target=target, location=location)


def check_hashed(hasher: MultiHasher, size: int, digests: Mapping[str, str], *, target: str, location: str) -> None:
    """SourceMismatch unless the bytes `hasher` was fed have exactly this size and these digests."""
    check_size(hasher.size, size, target=target, location=location)
    found = hasher.hexdigests()
    wrong = [f"{a} expected {digests[a]}, read {found[a]}" for a in digests if found[a] != digests[a]]
    if wrong:
        raise SourceMismatch(f"the source does not match its checksums ({'; '.join(wrong)}); "
                             "nothing was stored", target=target, location=location)


def read_into(stream: BinaryIO, view: memoryview) -> int:
    """Read what the stream gives into `view` (a file object, or anything with only `read`)."""
    readinto = getattr(stream, "readinto", None)
    if readinto is not None:
        n = readinto(view)
        return 0 if n is None else n
    data = stream.read(len(view))
    view[:len(data)] = data
    return len(data)


def check_size(got: int, size: int, *, target: str, location: str) -> None:
    """SourceMismatch unless `got` bytes (of a source read to its end, or one byte past `size`)
    are the expected `size`."""
    if got != size:
        # A longer source is not read to its end (no point filling the disk): say "more than".
        gave = f"more than {size}" if got > size else str(got)
        raise SourceMismatch(f"the source gave {gave} bytes, not the expected {size}; "
                             "nothing was stored", target=target, location=location)


@contextlib.contextmanager
def open_source(src: Source, *, target: str) -> Iterator[BinaryIO]:
    """A binary stream for a path or an already open stream (which is left open for its owner)."""
    if isinstance(src, (str, os.PathLike)):
        try:
            fh = open(src, "rb", buffering=0)
        except OSError as exc:
            raise StorageError(f"cannot read the source file ({exc.strerror or exc})",
                               target=target, location=os.fspath(src)) from exc
        with fh:
            yield fh
    else:
        yield src  # type: ignore[misc]


def read_buffer(size: Optional[int] = None) -> bytearray:
    """A buffer for reading a file of `size` bytes: at most one CHUNK, no more than the file
    needs plus one byte (so one read gets it all and the next sees its end).

    Why: a fresh 1 MiB buffer is zero-filled and page-faulted each time; for many small files
    that cost more than reading them (seconds per 20,000 files).
    """
    if size is None or size < 0:
        return bytearray(CHUNK)
    return bytearray(min(CHUNK, size + 1))


def hash_stream(stream: BinaryIO, algorithms, chunk_size: int = CHUNK) -> Tuple[int, Dict[str, str]]:
    """(size, digests) of everything left in a stream, memory flat."""
    reader = HashingReader(stream, algorithms)
    buf = bytearray(chunk_size)
    while reader.readinto(buf):
        pass
    return reader.hasher.size, reader.hasher.hexdigests()


# --------------------------------------------------------------------------------------------
# The interface


class BagReads:
    """Files of one bag opened one after the other (`StorageAdapter.reading`): this default
    opens each as `open_with_stat` does and keeps nothing between opens."""

    def __init__(self, adapter: "StorageAdapter", bag_id: BagId):
        self.adapter = adapter
        self.bag_id = bag_id

    def __enter__(self) -> "BagReads":
        return self

    def __exit__(self, *exc) -> None:
        return None

    def open_with_stat(self, relpath: str) -> Optional[Tuple[FileStat, BinaryIO]]:
        return self.adapter.open_with_stat(self.bag_id, relpath)

    def stamp(self, relpath: str) -> "Optional[CheckedStamp]":
        """The stored file's `CheckedStamp` now, or None where the target has none (here): its
        file is then read and checked in full."""
        return None

    def problems(self) -> List[str]:
        """What the kept state may have hidden, found once the reads are over; [] here."""
        return []


class StorageAdapter(abc.ABC):
    """One storage target (a folder, a bucket prefix) holding bags as one file/object per bag file.

    Bag paths (`relpath`) are bag-relative, '/'-separated, decoded (not percent-encoded) and
    canonical, e.g. 'data/images/a b.tif' or 'manifest-sha256.txt'. Implementations must be
    safe to call from several threads at once.
    """

    #: the target type as written in strongroom.yaml ("filesystem", "s3")
    type: str = ""

    #: files a whole-bag check should read at once: a local disk is read best one file at a
    #: time, an object store answers many requests in parallel (each waits on the network)
    parallel_reads: int = 1

    def __init__(self, name: str, site: str):
        self.name = name
        self.site = site

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} ({self.site})>"

    # --- where things are ----------------------------------------------------------------

    @abc.abstractmethod
    def location(self, bag_id: BagId, relpath: Optional[str] = None) -> str:
        """Human- and PREMIS-readable place of a bag or a bag file (a path, an s3:// URL)."""

    @abc.abstractmethod
    def describe(self) -> Dict[str, object]:
        """name, type, site and where the target is, for `status`; never credentials."""

    # --- writing -------------------------------------------------------------------------

    @abc.abstractmethod
    def put_file(self, bag_id: BagId, relpath: str, src: Source, *, size: int, digests: Mapping[str, str],
                 mtime: Optional[float] = None) -> PutOutcome:
        """Store one bag file atomically under its key, checking the bytes against size/digests.

        ALREADY_PRESENT if an identical file (same size and digests) is already stored: nothing
        is written. ReplicaConflict if a different one is: it is left untouched. SourceMismatch
        if the source's bytes do not match: nothing is stored under the key. `mtime` (seconds)
        is kept where the target can keep it.
        """

    def put_files(self, bag_id: BagId, items: Sequence[PutItem], *,
                  on_done: Optional[ItemDone] = None, on_checked: Optional[ItemChecked] = None) -> List[PutOutcome]:
        """Store several files of one bag, each exactly as `put_file` would; outcomes in item order.

        Why a batch: a target may make many files durable together far more cheaply than one
        by one (one file-system flush instead of one per file, parallel uploads). The promise
        per file is `put_file`'s: a file gets its key only complete, checked against its
        size/digests and durable; nothing is ever overwritten (ReplicaConflict); an identical
        stored file is ALREADY_PRESENT; a bad source stores nothing (SourceMismatch).

        `on_done(index, outcome)` is called as each file is settled (it has its key, or was
        already there), in no particular order, for progress. When put_files returns, every
        file is durable under its key. When it raises (the first failure; the remaining items
        are not attempted), the items reported to `on_done` are stored and no other item of
        the call was given its key. ValueError, before anything is written, for a bag path
        given twice or malformed digests. This default stores the files one by one.

        `on_checked(index, stamp)` is called, after its `on_done`, for each new file that was
        re-read and checked after it was made durable, with its `CheckedStamp`; a target that
        cannot tell (an object store, this default) never calls it, and its files are re-read
        by the deposit's Verify.
        """
        check_unique_relpaths(items)
        for item in items:
            check_digests(item.digests)
        outcomes: List[PutOutcome] = []
        for index, item in enumerate(items):
            outcome = self.put_file(bag_id, item.relpath, item.src, size=item.size, digests=item.digests,
                                    mtime=item.mtime)
            outcomes.append(outcome)
            if on_done is not None:
                on_done(index, outcome)
        return outcomes

    @abc.abstractmethod
    def replace_file(self, bag_id: BagId, relpath: str, src: Source, *, size: int, digests: Mapping[str, str],
                     mtime: Optional[float] = None) -> PutOutcome:
        """Repair only: atomically replace a (damaged or missing) copy with bytes that match
        size/digests. Readers see the old file or the whole new one, never a mixture."""

    @abc.abstractmethod
    def delete_file(self, bag_id: BagId, relpath: str) -> None:
        """Repair only: remove one stored file (e.g. an extra file planted in a bag). NotFound if absent."""

    #: True where `move_aside` works (a file system); elsewhere repair records size and sha256
    #: of an extra object in the ledger, then deletes it.
    can_move_aside: bool = False

    def move_aside(self, bag_id: BagId, key: str, stamp: str) -> str:
        """Repair only: move whatever is stored at `key` out of the way, never following it and
        never deleting it (a folder goes with everything in it); where it went.

        `key` is relative to the target's root: the bag's own key, one of its parents (LIB or
        LIB/COLL: a link planted there), or a path inside the bag. `stamp` names the run (UTC),
        so what one audit moved aside stays together. NotFound if nothing is there."""
        raise NotImplementedError(f"{self.type} targets cannot move files aside")

    # --- reading -------------------------------------------------------------------------

    @abc.abstractmethod
    def open_file(self, bag_id: BagId, relpath: str) -> BinaryIO:
        """A binary stream of the stored bytes (use it as a context manager). NotFound if absent."""

    @abc.abstractmethod
    def stat_file(self, bag_id: BagId, relpath: str) -> Optional[FileStat]:
        """Size, mtime and storage-kept digests of a stored file, or None if it is not there."""

    def open_with_stat(self, bag_id: BagId, relpath: str) -> Optional[Tuple[FileStat, BinaryIO]]:
        """stat_file and open_file at once, or None if the file is not there. A deep check reads
        every byte anyway: an object store answers both from one GET instead of a HEAD and a GET."""
        st = self.stat_file(bag_id, relpath)
        if st is None:
            return None
        return st, self.open_file(bag_id, relpath)

    def reading(self, bag_id: BagId) -> "BagReads":
        """A context manager for opening many files of one bag (a whole-bag check): its
        `open_with_stat(relpath)` is this adapter's. A target may keep state for the context's
        life to make each open cheaper (the folder target keeps folder descriptors); its
        `problems()` after the context names anything that state hid (default: nothing)."""
        return BagReads(self, bag_id)

    def find_aside(self, bag_id: BagId, key: str) -> List[str]:
        """Where earlier runs moved what was at `key` (`move_aside`), oldest first; [] if nowhere.
        Lets a rerun after a crash record a move whose record the crash prevented."""
        return []

    def stream_identity(self, stream) -> Optional[Tuple[int, int, int]]:
        """(device, inode, hard links) of a stream `open_file` returned, where the target has
        such a thing (a file system); None elsewhere. Lets a deep check compare copies' identities
        from the descriptor it reads, without another lookup of the path."""
        return None

    def folder_identity(self, bag_id: BagId) -> Optional[Tuple[int, int]]:
        """(device, inode) of the bag's folder where the target has folders; None elsewhere or
        when it is not there. Two copies whose bag folders are one folder (a bind mount of one
        target's folder inside another) are one copy, though every file has one link."""
        return None

    @abc.abstractmethod
    def list_bag_files(self, bag_id: BagId) -> Iterator[str]:
        """Bag paths of every file stored for this bag (only this bag), in sorted order.

        Leftovers of interrupted writes are not listed. Nothing if the bag is not there.
        """

    @abc.abstractmethod
    def list_bags(self) -> Iterator[BagId]:
        """Every bag with something stored on this target (for `catalog rebuild`), sorted.

        Only LIB/COLL/bag-name levels that form a valid bag id are reported; anything else is
        ignored. A bag whose bagit.txt is missing was not completely replicated (replicate_bag
        stores bagit.txt last).
        """

    def has_bag(self, bag_id: BagId) -> bool:
        """True when at least one file of the bag is stored here."""
        for _ in self.list_bag_files(bag_id):
            return True
        return False

    def cleanup_temp(self, bag_id: BagId) -> int:
        """Remove leftovers of interrupted writes of this bag; how many were removed.

        Targets whose writes cannot leave leftovers under the bag's keys return 0.
        """
        return 0

    # --- records (the reserved namespace, see RESERVED) ------------------------------------

    def put_record(self, key: str, data: bytes) -> PutOutcome:
        """Store a small record under `.strongroom/<key>` atomically and durably, never
        overwriting: ALREADY_PRESENT when the same bytes are there, ReplicaConflict when other
        bytes are. Object-Locked with the adapter's retention where the target locks. Why never
        overwrite: records are evidence (ledger checkpoints, tombstones); a rewrite would erase it."""
        raise NotImplementedError(f"{self.type} targets cannot store records")

    def read_record(self, key: str) -> bytes:
        """The bytes of the record `.strongroom/<key>`; NotFound if there is none."""
        raise NotImplementedError(f"{self.type} targets cannot store records")

    def list_records(self, prefix: str = "") -> Iterator[str]:
        """Keys (relative to `.strongroom/`) of every record whose key starts with `prefix`,
        recursively, sorted; leftovers of interrupted writes are not listed."""
        raise NotImplementedError(f"{self.type} targets cannot store records")

    def record_location(self, key: str) -> str:
        """Human-readable place of a record (a path, an s3:// URL), for messages."""
        raise NotImplementedError(f"{self.type} targets cannot store records")


__all__ = [
    "CHUNK", "Source", "StorageError", "NotFound", "ReplicaConflict", "UnsafePath", "OddObject", "SourceMismatch",
    "PutOutcome", "PutItem", "ItemDone", "FileStat", "StorageAdapter", "BagReads", "HashingReader",
    "check_relpath", "bag_segments", "bag_key", "check_aside_key", "check_digests", "check_unique_relpaths", "open_source",
    "hash_stream", "read_buffer", "RESERVED", "check_record_key", "checked_record_prefix",
]
