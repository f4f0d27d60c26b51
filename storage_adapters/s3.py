"""S3-compatible object storage (AWS S3, SeaweedFS, MinIO, Ceph) as a storage target, via boto3.

Layout: one object per bag file, key `<prefix>/<LIB>/<COLL>/<bag-name>/<path inside bag>`.

Why each object is trustworthy once put_file returns:
  * the bytes are sent with checksums the SERVER verifies before it keeps the object:
    `x-amz-checksum-sha256` (servers that know the newer headers) and `Content-MD5` (every S3
    server), both taken from the bag's manifests when they hold sha256/md5, else computed in a
    local pass that also checks every manifest digest before anything is sent. A server that
    receives other bytes refuses them (BadDigest): nothing is stored under the key;
  * files from `multipart_threshold` bytes up go as a multipart upload of
    `multipart_chunksize` parts, up to `concurrency` parts in flight, each part with its own
    sha256 (+ MD5 until the server has shown it checks sha256). The whole file is hashed on the
    way (the strongest manifest algorithm: one collision-resistant digest proves the bytes are
    the manifest's), and only when it matches is the upload completed;
  * afterwards the stored object is checked: a HEAD (size, stored checksum - full-object sha256
    or the composite of the parts - digests in metadata, and on an Object-Locked bucket the
    retention). `put_files` checks its single-PUT objects in bulk instead: the PUT's answer must
    echo the sha256 sent (or the MD5 as ETag), and one listing of the batch's key range must
    show every object with its size and MD5 ETag; anything it cannot confirm gets the HEAD;
  * user metadata (x-amz-meta-sha256, -md5, ...) carries the manifest digests and the source
    mtime, so `stat_file` returns them and `catalog rebuild` can use them without reading data.

Never overwriting: a HEAD comes first (identical object -> ALREADY_PRESENT, different ->
ReplicaConflict), and the PUT / CompleteMultipartUpload carries `If-None-Match: *`, so a
concurrent writer cannot be overwritten either (a server answering 501 to it is remembered and
the HEAD alone guards). In `put_files` one listing of the batch's key range (this bag's prefix
only) replaces the HEAD for keys it shows absent: If-None-Match still guards them. `replace_file`
(repair) writes without the condition: on a versioned / Object-Locked bucket that makes a new
version and the old one is kept.

Failures that pass (5xx, 503 SlowDown and other throttling, connection resets, timeouts) are
retried under one policy (storage_adapters.retrying): each object gets one budget of
`max_attempts` attempts in all (`object_attempts` overrides it), whichever of its requests fails,
with exponential backoff and jitter from `retry_delay`; requests are sent once underneath
(botocore keeps its own retries only in `retry_mode: adaptive`, whose rate limiter needs them).
A put starts again with a HEAD (an upload whose answer was lost is then found identical), a GET whose body dies half way is re-opened at the
byte where it stopped, pinned to the same object version (If-Match / VersionId), so the reader's
running hash stays valid. A multipart upload interrupted by a transient failure is resumed: its
parts already on the server are listed and each is reused only when its size and checksum
(sha256, or the MD5 ETag) match the bytes read again from the source; this also resumes an
upload left by a killed process. An upload that finally fails is aborted, and `cleanup_temp`
aborts whatever a killed run left under the bag's prefix: no parts are left dangling.

Cost per bag does not grow with the bucket: writing and verifying a bag lists only its own
prefix (`<bag key>/`, in `put_files` only the batch's key range of it); `list_bags` walks LIB/,
COLL/, bag-name/ levels with a delimiter.

Credentials come from `policies.config.resolve_credentials` (named environment variables or an
AWS profile) and are handed to boto3 only. They never appear in messages: errors are built from
the S3 error code and message and scrubbed of the key values; botocore's DEBUG logging (which
prints request headers, access key id included) is capped at INFO by this module when nobody set
its level, and at any level storage_adapters.redact scrubs credentials from the records of
botocore, boto3, s3transfer and urllib3 (installed by every adapter, see there).

Module map (each layer one job; this module is the facade that assembles them):
  s3_errors     error codes, exceptions, failure -> StorageError (transient or not)
  s3_records    records passed between layers (HEAD, listing, part, upload) and byte helpers
  s3_transport  the boto3 client and `_Direct` (the lean path: s3_wire or urllib3)
  s3_wire       SigV4 on kept-alive http.client connections (plain http, no proxy)
  s3_read       HEAD, resumable GET, listings
  s3_upload     put_file(s) / replace / delete / put_new_object, the no-overwrite rule
  s3_multipart  multipart uploads, resuming, aborting, cleanup_temp
  s3_retention  Object Lock retention
  s3_reserved   records under <prefix>/.strongroom/ (put_record / read_record / list_records)
  s3_catalog    the catalog's S3 access (pyarrow file system + conditional PUT)
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, TypeVar

from strongroom.bag_id import BagId

from .base import (
    StorageAdapter,
    StorageError,
    UnsafePath,
    bag_key,
    bag_segments,
    check_relpath,
)
from .redact import install as _install_redaction
from .retrying import RetryPolicy, is_transient, object_budget, spent
from .s3_catalog import CatalogS3, open_catalog_s3
from .s3_errors import BucketMissing, RetentionUnsupported, S3Errors
from .s3_multipart import S3Multipart
from .s3_read import S3Reads
from .s3_reserved import S3Records
from .s3_records import META_MTIME
from .s3_retention import RetentionSpec, S3Retention, retain_until
from .s3_transport import S3Transport, _Direct
from .s3_upload import S3Uploads

log = logging.getLogger(__name__)

T = TypeVar("T")

RETRY_MODES = ("standard", "adaptive", "legacy")
DEFAULT_CONCURRENCY = 16      # objects (put_files) and parts (multipart) in flight per adapter


class S3Adapter(S3Uploads, S3Multipart, S3Reads, S3Records, S3Retention, S3Transport, S3Errors, StorageAdapter):
    """Bags as objects in one bucket under a prefix. Thread-safe (one shared boto3 client).

    Assembled from one mixin per job (see the module map above); this class holds the settings,
    where things are, the retry loop and the bucket check every operation starts with.
    """

    type = "s3"

    def __init__(self, name: str, site: str, *, bucket: str, endpoint: Optional[str] = None,
                 region: Optional[str] = None, prefix: str = "", addressing_style: str = "auto",
                 storage_class: Optional[str] = None, multipart_threshold: int = 64 << 20,
                 multipart_chunksize: int = 16 << 20, object_lock: bool = False, verify_tls: bool = True,
                 ca_bundle: Optional[str] = None, credentials=None, retention: Any = None,
                 retry_mode: str = "standard", max_attempts: int = 5, connect_timeout: float = 10.0,
                 read_timeout: float = 60.0, max_pool_connections: Optional[int] = None,
                 concurrency: int = DEFAULT_CONCURRENCY, object_attempts: Optional[int] = None, retry_delay: float = 1.0,
                 direct_put: bool = True, source: Optional[str] = None):
        super().__init__(name, site)
        if retry_mode not in RETRY_MODES:
            raise ValueError(f"retry_mode must be one of {', '.join(RETRY_MODES)}, not {retry_mode!r}")
        for label, value in (("max_attempts", max_attempts), ("concurrency", concurrency),
                             ("object_attempts", max_attempts if object_attempts is None else object_attempts)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{label} must be a whole number >= 1, not {value!r}")
        self.bucket = bucket
        self.endpoint = endpoint
        self.region = region
        self.prefix = prefix.strip("/")
        self.addressing_style = addressing_style
        self.storage_class = storage_class
        self.multipart_threshold = int(multipart_threshold)
        self.multipart_chunksize = int(multipart_chunksize)
        self.object_lock = bool(object_lock)
        self.verify_tls = verify_tls
        self.ca_bundle = ca_bundle
        self.retention = RetentionSpec.of(retention)
        self.retry_mode = retry_mode
        self.max_attempts = max_attempts
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.concurrency = concurrency
        # put_files' objects and multipart parts can be in flight together: room for both
        self.max_pool_connections = max_pool_connections or max(10, 2 * concurrency + 2)
        self.retry_delay = float(retry_delay)
        #: one budget per object (storage_adapters.retrying): `max_attempts` attempts in all, whichever
        #: request fails (`object_attempts` overrides it); requests themselves are sent once, except in
        #: adaptive mode, where botocore's client-side rate limiter needs its own retries
        self.retry_policy = RetryPolicy(attempts=max_attempts if object_attempts is None else object_attempts,
                                        base_delay=self.retry_delay)
        self._request_attempts = max_attempts if retry_mode == "adaptive" else 1
        self._credentials = credentials
        # before any request can be logged: botocore & co. scrubbed at any level, these values too
        _install_redaction(getattr(credentials, "access_key", None), getattr(credentials, "secret_key", None),
                           getattr(credentials, "session_token", None))
        self._source = source
        self._client = None
        self._lock = threading.Lock()
        self._bucket_lock = threading.Lock()
        # multipart parts read but not yet sent, across all uploads of this adapter: bounds memory
        # to concurrency x multipart_chunksize however many large files are stored at once
        self._part_slots = threading.BoundedSemaphore(concurrency)
        self._bucket_checked = False
        self._retention_checked = False
        # in-memory PUTs without the boto3 client's per-call cost (see _Direct); set up by ensure_bucket
        self.direct_put = bool(direct_put) and endpoint is not None and retry_mode != "adaptive"
        self._direct: Optional[_Direct] = None
        self._session = None
        self._if_none_match = True         # cleared if the server answers 501 to If-None-Match
        self._sha256_verified: Optional[bool] = None  # does the server check x-amz-checksum-sha256?

    #: option keys of a StorageTarget passed on as they are when present (see policies.config)
    TUNING_KEYS = ("retry_mode", "max_attempts", "connect_timeout", "read_timeout", "max_pool_connections",
                   "concurrency", "object_attempts", "retry_delay", "direct_put")

    @classmethod
    def from_target(cls, target, *, retention: Any = None, environ: Optional[Mapping[str, str]] = None,
                    **overrides) -> "S3Adapter":
        """From a `policies.config.StorageTarget` of type s3; reads the referenced credentials now
        (ConfigError naming a missing variable), but touches no storage."""
        from policies.config import resolve_credentials

        o = target.options
        kwargs = dict(
            bucket=o["bucket"], endpoint=o.get("endpoint"), region=o.get("region"), prefix=o.get("prefix") or "",
            addressing_style=o.get("addressing_style") or "auto", storage_class=o.get("storage_class"),
            multipart_threshold=o.get("multipart_threshold", 64 << 20),
            multipart_chunksize=o.get("multipart_chunksize", 16 << 20),
            object_lock=o.get("object_lock", False), verify_tls=o.get("verify_tls", True),
            ca_bundle=o.get("ca_bundle"), credentials=resolve_credentials(target, environ),
            direct_put=o.get("transport", "auto") != "boto3",  # boto3: no lean path (see s3_transport)
            retention=retention, source=None if target.source is None else str(target.source),
        )
        for key in cls.TUNING_KEYS:
            if o.get(key) is not None:
                kwargs[key] = o[key]
        kwargs.update(overrides)
        return cls(target.name, target.site, **kwargs)

    def _object_key(self, bag_id: BagId, relpath: Optional[str] = None) -> str:
        key = bag_key(bag_id, relpath)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _bag_prefix(self, bag_id: BagId) -> str:
        return self._object_key(bag_id) + "/"

    def location(self, bag_id: BagId, relpath: Optional[str] = None) -> str:
        parts = [self.prefix] if self.prefix else []
        parts += list(bag_segments(bag_id))
        if relpath:
            parts.append(relpath)
        return f"s3://{self.bucket}/" + "/".join(parts)

    @property
    def parallel_reads(self) -> int:  # type: ignore[override]
        return self.concurrency

    def describe(self) -> Dict[str, object]:
        return {
            "name": self.name, "type": self.type, "site": self.site, "endpoint": self.endpoint or "(AWS default)",
            "bucket": self.bucket, "prefix": self.prefix, "region": self.region,
            "addressing_style": self.addressing_style, "storage_class": self.storage_class,
            "object_lock": self.object_lock,
            "retention": None if self.retention is None else self.retention.describe(),
            "concurrency": self.concurrency, "retry_mode": self.retry_mode, "max_attempts": self.max_attempts,
        }

    def _checked_key(self, bag_id: BagId, relpath: str) -> Tuple[str, str]:
        """(object key, location for messages); UnsafePath for a bad bag path."""
        loc = self.location(bag_id, relpath)
        try:
            check_relpath(relpath)
        except ValueError as exc:
            raise UnsafePath(f"refused bag path: {exc}", target=self.name, location=loc) from None
        return self._object_key(bag_id, relpath), loc

    def _backoff(self, attempt: int) -> float:
        """Seconds to wait before attempt `attempt` + 1 (the retry policy's backoff with jitter)."""
        return self.retry_policy.delay(attempt)

    def _retrying(self, loc: Optional[str], operation: Callable[[int, bool], T], *,
                  attempts: Optional[int] = None, before_retry: Optional[Callable[[], None]] = None) -> T:
        """Run `operation(attempt, is_last)`, again after a backoff while it fails transiently.

        All attempts at one object share one budget (storage_adapters.retrying): a nested call
        for the same object (the HEAD after an upload, a part's listing) spends from the budget
        of the operation around it, and requests are not retried underneath. `attempts` sets the
        budget of an outermost call (1 for a source that cannot be read twice). The final error
        says how many attempts were made and is marked spent, so that callers above do not
        start over; errors that are not transient are raised at once.
        """
        policy = self.retry_policy if attempts is None else replace(self.retry_policy, attempts=attempts)
        with object_budget(policy) as budget:
            attempt = 1
            while True:
                try:
                    return operation(attempt, budget.last)
                except StorageError as exc:
                    if spent(exc):  # a nested call on this object already gave up
                        raise
                    if not budget.fail(exc):
                        if is_transient(exc) and budget.failures > 1:
                            exc.message += f" (gave up after {budget.failures} attempts)"
                            exc.args = (str(exc),)
                        raise
                    delay = self._backoff(budget.failures)
                    log.warning("%s: %s; trying again in %.1f s (attempt %d of %d)", self.name,
                                exc.message if loc is None else f"{loc}: {exc.message}", delay,
                                budget.failures + 1, budget.policy.attempts)
                    time.sleep(delay)
                    if before_retry is not None:
                        before_retry()
                    attempt += 1

    def ensure_bucket(self) -> None:
        """StorageError unless the bucket exists and answers. Checked once, before the first write
        or listing: some servers (SeaweedFS) create a missing bucket on PUT, so a mistyped bucket
        name would otherwise silently become a new, unlocked, unmonitored bucket."""
        if self._bucket_checked:
            return
        with self._bucket_lock:  # parallel verifications start together: one check, one captured URL
            if not self._bucket_checked:
                self._check_bucket()

    def _check_bucket(self) -> None:
        loc = f"s3://{self.bucket}"

        def head_bucket(attempt: int, last: bool) -> None:
            try:
                self.client.head_bucket(Bucket=self.bucket)
            except Exception as exc:  # noqa: BLE001
                code = self._code(exc)
                if code in ("404", "NoSuchBucket", "NotFound"):
                    raise BucketMissing(f"bucket {self.bucket!r} does not exist at {self.endpoint or 'AWS'}; "
                                       f"Strongroom does not create buckets (create it, with Object Lock if the "
                                       f"policy asks for retention)", target=self.name, location=loc) from None
                raise self._error(exc, "reach the bucket", loc) from None

        seen: List[str] = []
        capture = f"strongroom-bucket-url-{id(self)}"
        if self.direct_put:
            self.client.meta.events.register("before-send.s3.HeadBucket", lambda request, **kw: seen.append(request.url),
                                             unique_id=capture)
        try:
            self._retrying(loc, head_bucket)
        finally:
            if self.direct_put:
                self.client.meta.events.unregister("before-send.s3.HeadBucket", unique_id=capture)
        if self.direct_put and seen and self._direct is None:
            # the URL boto3 used for the bucket (its addressing style and endpoint): keys go below it
            self._direct = _Direct(self, seen[-1].split("?", 1)[0], self._session)
        self._bucket_checked = True


__all__ = ["S3Adapter", "BucketMissing", "RetentionSpec", "retain_until", "META_MTIME", "DEFAULT_CONCURRENCY", "CatalogS3",
           "open_catalog_s3", "RetentionUnsupported"]
