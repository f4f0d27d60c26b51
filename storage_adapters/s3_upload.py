"""Writing to S3: put_file / put_files / replace_file / delete_file / put_new_object, the
no-overwrite rule (HEAD first, If-None-Match: *), single PUTs with server-checked checksums,
and the check of what was stored (a HEAD, or in put_files one listing per run).
Large files go through `s3_multipart`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import (
    Any,
    BinaryIO,
    Callable,
    Dict,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    TypeVar,
)

from strongroom.bag_id import BagId
from strongroom.checksums import MultiHasher

from .base import (
    CHUNK,
    HashingReader,
    ItemDone,
    NotFound,
    PutItem,
    PutOutcome,
    ReplicaConflict,
    Source,
    SourceMismatch,
    StorageError,
    check_digests,
    check_unique_relpaths,
    open_source,
)
from .s3_errors import _BadDigest, _Exists, _UseClient
from .s3_records import (
    _ABSENT,
    META_MTIME,
    _b64,
    _check_read,
    _drain,
    _hash_all,
    _Job,
    _Listed,
    _seekable,
    _Stored,
    _Written,
)

log = logging.getLogger("storage_adapters.s3")

T = TypeVar("T")

SPOOL_MEMORY = 8 << 20        # an unseekable source is spooled to disk beyond this many bytes
SMALL_BODY = 8 << 20          # single PUTs up to this size are sent from memory (see _put_single)
#: put_files works through its items in runs of this many: one listing before and one after
#: each run (a page holds 1000 keys), progress reported as each run is confirmed.
RUN_FILES = 1000
#: fewer items than this in a put_files run: a HEAD each is cheaper than two listings
RUN_LIST_MIN = 8



class S3Uploads:
    """Mixin of S3Adapter: every write, and the check of what was stored."""

    def _same_as_stored(self, key: str, loc: str, stored: _Stored, size: int, digests: Dict[str, str]) -> bool:
        """True if the stored object holds these bytes; ReplicaConflict if it holds others."""
        if stored.size != size:
            raise ReplicaConflict(f"a different object is already stored here ({stored.size} bytes; the new one "
                                  f"has {size}); not overwriting it", target=self.name, location=loc)
        known = stored.digests()
        common = [a for a in digests if a in known]
        if not common:
            # Written by something else, without digests we can compare: read it once.
            with self._get(key, loc) as body:
                found_size, found = _hash_all(body, list(digests))
            common = list(digests)
            known = found
            if found_size != size:
                raise ReplicaConflict(f"a different object is already stored here ({found_size} bytes read); "
                                      f"not overwriting it", target=self.name, location=loc)
        wrong = [f"{a} {known[a]} stored, {digests[a]} new" for a in common if known[a] != digests[a]]
        if wrong:
            raise ReplicaConflict(f"a different object is already stored here ({'; '.join(wrong)}); "
                                  f"not overwriting it", target=self.name, location=loc)
        return True

    def put_file(self, bag_id: BagId, relpath: str, src: Source, *, size: int, digests: Mapping[str, str],
                 mtime: Optional[float] = None) -> PutOutcome:
        digests = check_digests(digests)
        key, loc = self._checked_key(bag_id, relpath)
        self.ensure_bucket()
        lock_args = self._lock_args()
        outcome, _ = self._put(key, loc, src, size, digests, mtime, lock_args, listed=None, bulk_check=False)
        return outcome

    def replace_file(self, bag_id: BagId, relpath: str, src: Source, *, size: int, digests: Mapping[str, str],
                     mtime: Optional[float] = None) -> PutOutcome:
        """Repair: a PUT without the no-overwrite condition. On a versioned (Object-Locked) bucket
        this adds a new current version and the damaged one is kept, as Object Lock requires."""
        digests = check_digests(digests)
        key, loc = self._checked_key(bag_id, relpath)
        self.ensure_bucket()
        lock_args = self._lock_args()
        attempts, rewind = self._source_attempts(src)

        def attempt(n: int, last: bool) -> None:
            self._upload(key, loc, src, size, digests, mtime, lock_args, exclusive=False, bulk_check=False, last=last)

        self._aborting_on_failure(key, loc, size,
                                  lambda: self._retrying(loc, attempt, attempts=attempts, before_retry=rewind))
        return PutOutcome.WRITTEN

    def put_files(self, bag_id: BagId, items: Sequence[PutItem], *,
                  on_done: Optional[ItemDone] = None, on_checked=None) -> List[PutOutcome]:
        """Up to `concurrency` objects in flight, each stored and verified as put_file does.
        (`on_checked` is never called: an object is not read back here, the deposit's Verify does.)

        Items go in runs of RUN_FILES: one listing of the run's key range (this bag's prefix
        only) says which keys exist (those get a HEAD and are compared, the others are PUT with
        If-None-Match); after the run, a second listing confirms each new object's size and MD5
        ETag, and whatever it cannot confirm gets a HEAD. `on_done` is called from this thread,
        as each object is settled. On the first failure the run's remaining items are
        cancelled, the objects already written are reported, and the failure is raised.
        """
        check_unique_relpaths(items)
        jobs: List[_Job] = []
        for index, item in enumerate(items):
            digests = check_digests(item.digests)
            key, loc = self._checked_key(bag_id, item.relpath)
            jobs.append(_Job(index, item, digests, key, loc))
        outcomes: List[Optional[PutOutcome]] = [None] * len(items)
        if not jobs:
            return []
        self.ensure_bucket()
        lock_args = self._lock_args()
        prefix = self._bag_prefix(bag_id)

        def report(index: int, outcome: PutOutcome) -> None:
            outcomes[index] = outcome
            if on_done is not None:
                on_done(index, outcome)

        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(jobs)),
                                thread_name_prefix=f"s3-put-{self.name}") as pool:
            for start in range(0, len(jobs), RUN_FILES):
                self._put_run(pool, prefix, jobs[start:start + RUN_FILES], lock_args, report)
        return outcomes  # type: ignore[return-value]  # every item was reported

    def _put_run(self, pool: ThreadPoolExecutor, prefix: str, run: List["_Job"], lock_args: Mapping[str, Any],
                 report: Callable[[int, PutOutcome], None]) -> None:
        listed = self._listed(prefix, [j.key for j in run]) if len(run) >= RUN_LIST_MIN else None

        def job(j: _Job) -> Tuple[PutOutcome, Optional[_Written]]:
            hint = None if listed is None else listed.get(j.key, _ABSENT)
            return self._put(j.key, j.loc, j.item.src, j.item.size, j.digests, j.item.mtime, lock_args,
                             listed=hint, bulk_check=listed is not None)

        futures = {pool.submit(job, j): j for j in run}
        failure: Optional[BaseException] = None
        unconfirmed: List[Tuple[_Job, _Written]] = []
        try:
            for fut in as_completed(futures):
                if fut.cancelled():
                    continue
                j = futures[fut]
                exc = fut.exception()
                if exc is not None:
                    if failure is None:
                        failure = exc
                        for other in futures:
                            other.cancel()
                    continue
                outcome, written = fut.result()
                if written is not None and not written.checked:
                    unconfirmed.append((j, written))
                else:
                    report(j.index, outcome)
        except BaseException:
            for other in futures:
                other.cancel()
            raise
        if failure is None and unconfirmed:
            self._confirm(prefix, [w for _, w in unconfirmed])
        for j, _ in unconfirmed:
            report(j.index, PutOutcome.WRITTEN)
        if failure is not None:
            raise failure

    def _listed(self, prefix: str, keys: Sequence[str]) -> Dict[str, _Listed]:
        """Size and ETag of those of `keys` (all under `prefix`) that a listing shows.

        Lists from just before the smallest key and stops past the largest or when all are
        seen, so the cost follows the run, not the bag, the bucket or other bags. A key the
        listing misses (servers differ in how they order '/' against '-' or '.') is only a
        missed shortcut: If-None-Match and the HEAD check still guard it.
        """
        wanted = set(keys)
        ordered = sorted(wanted)
        last = ordered[-1]
        args: Dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
        if len(ordered[0]) > len(prefix):
            args["StartAfter"] = ordered[0][:-1]
        loc = f"s3://{self.bucket}/{prefix}"

        def run(attempt: int, is_last: bool) -> Dict[str, _Listed]:
            found: Dict[str, _Listed] = {}
            try:
                for page in self.client.get_paginator("list_objects_v2").paginate(**args):
                    contents = page.get("Contents") or ()
                    for obj in contents:
                        if obj["Key"] in wanted:
                            found[obj["Key"]] = _Listed(int(obj.get("Size", -1)),
                                                        str(obj.get("ETag") or "").strip('"').lower())
                    if len(found) == len(wanted) or (contents and contents[-1]["Key"] > last):
                        break
            except Exception as exc:  # noqa: BLE001
                raise self._error(exc, "list", loc) from None
            return found

        return self._retrying(loc, run)

    def _confirm(self, prefix: str, written: Sequence[_Written]) -> None:
        """After a run: each new object listed with its size and the MD5 ETag of the bytes sent;
        any the listing does not confirm is HEAD-checked (StorageError if it differs)."""
        found = self._listed(prefix, [w.key for w in written])
        for w in written:
            entry = found.get(w.key)
            if entry is not None and entry.size == w.size and entry.etag == w.md5:
                continue
            self._retrying(w.loc, lambda attempt, last, w=w: self._check_stored(w))

    def _source_attempts(self, src: Source) -> Tuple[int, Optional[Callable[[], None]]]:
        """How many whole attempts a source allows, and what puts it back at its start."""
        if isinstance(src, (str, os.PathLike)):
            return self.retry_policy.attempts, None   # each attempt opens the file again
        if _seekable(src):
            start = src.tell()
            return self.retry_policy.attempts, lambda: src.seek(start)  # type: ignore[union-attr]
        return 1, None  # an unseekable stream is read once; its multipart parts are still retried

    def _aborting_on_failure(self, key: str, loc: str, size: int, operation: Callable[[], T]) -> T:
        """Run `operation`; if it finally fails where a multipart upload was kept for resuming,
        abort it: an upload is resumed within the attempts, never left dangling after them."""
        try:
            return operation()
        except StorageError as exc:
            if getattr(exc, "transient", False) and size >= self.multipart_threshold:
                self._abort_all(key, loc)
            raise

    def _put(self, key: str, loc: str, src: Source, size: int, digests: Dict[str, str], mtime: Optional[float],
             lock_args: Mapping[str, Any], *, listed: Any, bulk_check: bool) -> Tuple[PutOutcome, Optional[_Written]]:
        """put_file's work, attempt after attempt. `listed`: None (unknown: HEAD first), _ABSENT
        (a listing just showed no such key) or a _Listed entry (it exists: HEAD and compare)."""
        attempts, rewind = self._source_attempts(src)

        def attempt(n: int, last: bool) -> Tuple[PutOutcome, Optional[_Written]]:
            return self._put_once(key, loc, src, size, digests, mtime, lock_args, listed=listed if n == 1 else None,
                                  bulk_check=bulk_check, last=last)

        return self._aborting_on_failure(key, loc, size,
                                         lambda: self._retrying(loc, attempt, attempts=attempts, before_retry=rewind))

    def _put_once(self, key: str, loc: str, src: Source, size: int, digests: Dict[str, str],
                  mtime: Optional[float], lock_args: Mapping[str, Any], *, listed: Any, bulk_check: bool,
                  last: bool) -> Tuple[PutOutcome, Optional[_Written]]:
        # Large files always get the HEAD: sending gigabytes only to have If-None-Match refuse them is waste.
        if listed is not _ABSENT or not self._if_none_match or size >= self.multipart_threshold:
            stored = self._head(key, loc)
            if stored is not None and self._same_as_stored(key, loc, stored, size, digests):
                return PutOutcome.ALREADY_PRESENT, None
        try:
            written = self._upload(key, loc, src, size, digests, mtime, lock_args, exclusive=True,
                                   bulk_check=bulk_check, last=last)
        except _Exists:
            stored = self._head(key, loc)
            if stored is None:
                err = StorageError("appeared and vanished again while being written; try again",
                                   target=self.name, location=loc)
                err.transient = True  # type: ignore[attr-defined]
                raise err from None
            self._same_as_stored(key, loc, stored, size, digests)
            return PutOutcome.ALREADY_PRESENT, None
        return PutOutcome.WRITTEN, written

    def _metadata(self, digests: Mapping[str, str], mtime: Optional[float]) -> Dict[str, str]:
        meta = dict(digests)
        if mtime is not None:
            meta[META_MTIME] = repr(float(mtime))
        return meta

    def _common_args(self, key: str, digests: Mapping[str, str], mtime: Optional[float],
                     lock_args: Mapping[str, Any]) -> Dict[str, Any]:
        args: Dict[str, Any] = {"Bucket": self.bucket, "Key": key, "Metadata": self._metadata(digests, mtime),
                                "ContentType": "application/octet-stream", **lock_args}
        if self.storage_class:
            args["StorageClass"] = self.storage_class
        return args

    def _upload(self, key: str, loc: str, src: Source, size: int, digests: Dict[str, str],
                mtime: Optional[float], lock_args: Mapping[str, Any], *, exclusive: bool, bulk_check: bool,
                last: bool) -> _Written:
        """One upload, then the check of what was stored: a HEAD, unless `bulk_check` and the
        PUT's answer confirmed the bytes (put_files then confirms by listing)."""

        def exists() -> bool:
            return self._head(key, loc) is not None

        with open_source(src, target=self.name) as stream:
            if size >= self.multipart_threshold:
                checksum = self._put_multipart(key, loc, stream, size, digests, mtime, lock_args, exclusive, exists,
                                               keep_on_transient=not last)
                md5, confirmed = None, False
            else:
                checksum, md5, confirmed = self._put_single(key, loc, stream, size, digests, mtime, lock_args,
                                                            exclusive, exists)
        written = _Written(key, loc, size, digests, checksum, md5, dict(lock_args), checked=False)
        if bulk_check and confirmed and md5 is not None and not lock_args:
            return written
        # the object is stored: a HEAD that fails transiently is retried by itself, not the upload
        self._retrying(loc, lambda attempt, is_last: self._check_stored(written))
        return _Written(key, loc, size, digests, checksum, md5, dict(lock_args), checked=True)

    def _put_single(self, key: str, loc: str, stream: BinaryIO, size: int, digests: Dict[str, str],
                    mtime: Optional[float], lock_args: Mapping[str, Any], exclusive: bool,
                    exists: Callable[[], bool]) -> Tuple[str, Optional[str], bool]:
        """PutObject with x-amz-checksum-sha256 and Content-MD5.

        Returns (checksum sent, hex MD5 or None, confirmed): confirmed when the answer echoes
        the sha256 sent, or gives the MD5 as ETag - the server saw exactly those bytes.
        Bodies up to SMALL_BODY bytes are sent from memory: one read, and botocore sends bytes
        at once, where a file object costs an "Expect: 100-continue" round trip first.
        """
        spool = None
        data: Optional[bytes] = None
        start = 0
        try:
            need_md5 = "md5" not in digests and self._sha256_verified is not True
            prehash = ("sha256" not in digests or need_md5 or any(a not in ("sha256", "md5") for a in digests)
                       or not _seekable(stream))
            if size <= SMALL_BODY:
                data = self._read_part(stream, size + 1, loc)
                if prehash:
                    hasher = MultiHasher(list(dict.fromkeys(list(digests) + ["sha256", "md5"])))
                    hasher.update(data)
                    _check_read(hasher, size, digests, self.name, loc)
                    found = hasher.hexdigests()
                    sha256, md5 = found["sha256"], found["md5"]
                else:
                    if len(data) != size:
                        gave = f"more than {size}" if len(data) > size else str(len(data))
                        raise SourceMismatch(f"the source has {gave} bytes, not the expected {size}; "
                                             f"nothing was stored", target=self.name, location=loc)
                    sha256, md5 = digests["sha256"], digests.get("md5")
                body: Any = data
                rewind = None
            elif prehash:
                algorithms = list(dict.fromkeys(list(digests) + ["sha256", "md5"]))
                if _seekable(stream):
                    start = stream.tell()
                    body = stream
                    reader = HashingReader(stream, algorithms)
                    _drain(reader)
                    stream.seek(start)
                else:
                    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY)
                    reader = HashingReader(stream, algorithms)
                    buf = bytearray(CHUNK)
                    while True:
                        n = reader.readinto(buf)
                        if not n:
                            break
                        spool.write(memoryview(buf)[:n])
                        if reader.hasher.size > size:
                            break  # longer than announced: refused below, stop reading
                    spool.seek(0)
                    body = spool
                reader.check(size, digests, target=self.name, location=loc)
                sha256, md5 = reader.hasher.hexdigests()["sha256"], reader.hasher.hexdigests()["md5"]
                rewind = (lambda: body.seek(0 if spool is not None else start))
            else:
                start = stream.tell()
                actual = stream.seek(0, os.SEEK_END) - start
                stream.seek(start)
                if actual != size:
                    raise SourceMismatch(f"the source has {actual} bytes, not the expected {size}; nothing was "
                                         f"stored", target=self.name, location=loc)
                body, sha256, md5 = stream, digests["sha256"], digests.get("md5")
                rewind = (lambda: body.seek(start))
            args = self._common_args(key, digests, mtime, lock_args)
            args.update(Body=body, ContentLength=size, ChecksumSHA256=_b64(bytes.fromhex(sha256)))
            if md5 is not None:
                args["ContentMD5"] = _b64(bytes.fromhex(md5))
            direct = self._direct if isinstance(body, bytes) else None
            try:
                response = self._call_put(self.client.put_object if direct is None else direct.put_object, args, loc,
                                          exclusive, rewind=rewind, exists=exists)
            except _UseClient:
                log.info("%s: the endpoint redirects; sending uploads through the boto3 client", self.name)
                self._direct = None
                response = self._call_put(self.client.put_object, args, loc, exclusive, rewind=rewind, exists=exists)
            sent = args["ChecksumSHA256"]
            echoed = response.get("ChecksumSHA256")
            if echoed is not None and echoed != sent:
                raise StorageError(f"the server stored the object with checksum {echoed}, not the {sent} sent",
                                   target=self.name, location=loc)
            if self._sha256_verified is None:
                self._sha256_verified = echoed == sent
            etag = str(response.get("ETag") or "").strip('"').lower()
            return sent, md5, echoed == sent or (md5 is not None and etag == md5)
        except _BadDigest:
            # The server got bytes that do not match the checksums sent: the source, or the wire?
            found: Optional[Dict[str, str]] = None
            if data is not None:
                hasher = MultiHasher(list(digests))
                hasher.update(data)
                found = hasher.hexdigests()
            elif spool is None and _seekable(stream):
                stream.seek(start)
                _, found = _hash_all(stream, list(digests))
            wrong = [f"{a} expected {digests[a]}, read {found[a]}" for a in digests
                     if found is not None and found[a] != digests[a]]
            if wrong:
                raise SourceMismatch(f"the source does not match its checksums ({'; '.join(wrong)}); "
                                     f"nothing was stored", target=self.name, location=loc) from None
            err = StorageError("the server refused the upload: the bytes it received do not match their "
                               "checksums (BadDigest; damaged in transit?); nothing was stored",
                               target=self.name, location=loc)
            err.transient = True  # type: ignore[attr-defined]  # damaged on the wire: sending again may work
            raise err from None
        finally:
            if spool is not None:
                spool.close()

    def _call_put(self, method, args: Dict[str, Any], loc: str, exclusive: bool, *,
                  rewind: Optional[Callable[[], Any]] = None,
                  exists: Optional[Callable[[], bool]] = None) -> Dict[str, Any]:
        """PutObject / CompleteMultipartUpload, with If-None-Match: * when `exclusive`.

        _Exists if something is stored under the key already; _BadDigest if the server refused
        the bytes as not matching their checksums; StorageError otherwise. A server that answers
        501 to the condition is remembered; `exists` (a HEAD) then guards this write, and
        `rewind` puts the body back at its start for the second attempt without the condition.
        """
        if exclusive and self._if_none_match:
            try:
                return method(IfNoneMatch="*", **args)
            except _UseClient:
                raise
            except Exception as exc:  # noqa: BLE001
                code = self._code(exc)
                if code in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409"):
                    raise _Exists() from None
                if code not in ("NotImplemented", "501"):
                    raise self._classify(exc, loc) from None
                log.info("%s: the server does not support If-None-Match on writes; relying on the HEAD "
                         "before each write", self.name)
                self._if_none_match = False
                if exists is not None and exists():
                    raise _Exists() from None
                if rewind is not None:
                    rewind()
        try:
            return method(**args)
        except _UseClient:
            raise
        except Exception as exc:  # noqa: BLE001
            raise self._classify(exc, loc) from None

    def _classify(self, exc: BaseException, loc: str) -> BaseException:
        if self._code(exc) in ("BadDigest", "InvalidDigest", "XAmzContentSHA256Mismatch"):
            return _BadDigest()
        return self._error(exc, "write", loc)

    def _check_stored(self, written: _Written) -> None:
        """HEAD the new object: size, stored checksum, digests in metadata, retention."""
        key, loc, size, digests, lock_args = written.key, written.loc, written.size, written.digests, written.lock_args
        stored = self._head(key, loc)
        if stored is None:
            raise StorageError("was written but a HEAD right after does not find it", target=self.name,
                               location=loc)
        problems = []
        if stored.size != size:
            problems.append(f"size {stored.size} stored, {size} sent")
        if stored.checksum_sha256 is not None and stored.checksum_sha256 != written.checksum:
            problems.append(f"stored checksum {stored.checksum_sha256}, {written.checksum} sent")
        meta = stored.metadata
        wrong = [a for a in digests if meta.get(a, digests[a]).lower() != digests[a]]
        if wrong:
            problems.append(f"metadata digests differ ({', '.join(wrong)})")
        if lock_args and stored.lock_mode != lock_args.get("ObjectLockMode"):
            problems.append(f"retention not applied (object lock mode {stored.lock_mode!r}, "
                            f"{lock_args['ObjectLockMode']} requested)")
        if problems:
            raise StorageError(f"the stored object does not match what was sent: {'; '.join(problems)}",
                               target=self.name, location=loc)

    def delete_file(self, bag_id: BagId, relpath: str) -> None:
        """Repair only. On a versioned bucket this adds a delete marker; locked versions remain."""
        key, loc = self._checked_key(bag_id, relpath)
        self.ensure_bucket()

        def delete(attempt: int, last: bool) -> None:
            if self._head(key, loc) is None:
                if attempt > 1:
                    return  # the earlier attempt's delete went through; its answer was lost
                raise NotFound("not stored here", target=self.name, location=loc)
            try:
                self.client.delete_object(Bucket=self.bucket, Key=key)
            except Exception as exc:  # noqa: BLE001
                raise self._error(exc, "delete", loc) from None

        self._retrying(loc, delete)

    def put_new_object(self, key: str, data: bytes, *, extra: Optional[Mapping[str, Any]] = None) -> bool:
        """Store small `data` under `key` (a full key: no prefix or bag layout) only if nothing is
        there: True if written, False if the key is taken. If-None-Match: * makes it atomic; on a
        server without it, a HEAD before the PUT (a small race remains). For the catalog and the
        records (s3_reserved); `extra`: more PutObject arguments (Object Lock retention)."""
        loc = f"s3://{self.bucket}/{key}"
        self.ensure_bucket()
        args = {"Bucket": self.bucket, "Key": key, "Body": data, "ContentMD5": _b64(hashlib.md5(data).digest()),
                "ChecksumSHA256": _b64(hashlib.sha256(data).digest()), **(extra or {})}

        def put(attempt: int, last: bool) -> bool:
            try:
                self._call_put(self.client.put_object, args, loc, True, exists=lambda: self._head(key, loc) is not None)
            except _Exists:
                if attempt > 1:
                    # an earlier attempt whose answer was lost may have written it: same bytes means ours
                    stored = self._head(key, loc)
                    if stored is not None and stored.size == len(data):
                        with self._get(key, loc) as fh:
                            if fh.read() == data:
                                return True
                return False
            except _BadDigest:
                err = StorageError("the server refused the bytes as damaged (BadDigest)", target=self.name,
                                   location=loc)
                err.transient = True  # type: ignore[attr-defined]
                raise err from None
            return True

        if not self._if_none_match and self._head(key, loc) is not None:
            return False
        return self._retrying(loc, put)
