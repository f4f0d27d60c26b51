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
retried at two levels: botocore retries each request (`retry_mode` standard or adaptive,
`max_attempts`, exponential backoff with jitter), and whole-object operations are retried
`object_attempts` times with a longer backoff: a put starts again with a HEAD (an upload whose
answer was lost is then found identical), a GET whose body dies half way is re-opened at the
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
"""

from __future__ import annotations

import base64
import datetime as _dt
import hashlib
import io
import logging
import os
import random
import socket
import tempfile
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, as_completed, wait
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, TypeVar, Union

from ingest.naming import BagId
from policies.units import add_years
from strongroom.checksums import SUPPORTED, MultiHasher
from strongroom.errors import ConfigError

from .base import (
    CHUNK,
    FileStat,
    HashingReader,
    ItemDone,
    NotFound,
    PutItem,
    PutOutcome,
    ReplicaConflict,
    Source,
    SourceMismatch,
    StorageAdapter,
    StorageError,
    UnsafePath,
    bag_key,
    bag_segments,
    check_digests,
    check_relpath,
    check_unique_relpaths,
    open_source,
)
from .redact import install as _install_redaction
from .s3_wire import Answer, Signer, Wire, query_string

log = logging.getLogger(__name__)

# botocore logs request headers (Authorization: ... Credential=<access key id>/...) at DEBUG;
# `-vv` sets the root logger to DEBUG. Keep these libraries at INFO unless someone set a level
# (less noise); whatever their level, storage_adapters.redact scrubs credentials from their
# records (installed by every S3Adapter).
for _name in ("botocore", "boto3", "s3transfer", "urllib3"):
    _logger = logging.getLogger(_name)
    if _logger.level == logging.NOTSET:
        _logger.setLevel(logging.INFO)

T = TypeVar("T")

META_MTIME = "mtime"          # x-amz-meta-mtime: the source file's mtime (seconds, as text)
SPOOL_MEMORY = 8 << 20        # an unseekable source is spooled to disk beyond this many bytes
SMALL_BODY = 8 << 20          # single PUTs up to this size are sent from memory (see _put_single)
RETRY_MODES = ("standard", "adaptive", "legacy")
DEFAULT_CONCURRENCY = 16      # objects (put_files) and parts (multipart) in flight per adapter
#: put_files works through its items in runs of this many: one listing before and one after
#: each run (a page holds 1000 keys), progress reported as each run is confirmed.
RUN_FILES = 1000
#: fewer items than this in a put_files run: a HEAD each is cheaper than two listings
RUN_LIST_MIN = 8
#: the whole-file check of a multipart upload uses one digest, the first of these the manifest has
_WHOLE_FILE_ORDER = ("sha256", "sha512", "sha1", "md5")
_LOCK_MODES = {"governance": "GOVERNANCE", "compliance": "COMPLIANCE"}
_MISSING = {"404", "NoSuchKey", "NotFound"}
_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_NO_BUCKET = {"NoSuchBucket"}
_DENIED = {"403", "AccessDenied", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch",
           "InvalidToken", "ExpiredToken", "AllAccessDisabled"}
#: S3 error codes (and HTTP statuses) that say "try again later", not "this request is wrong"
_TRANSIENT = {"500", "502", "503", "504", "429", "InternalError", "ServiceUnavailable", "SlowDown",
              "SlowDownRead", "SlowDownWrite", "RequestTimeout", "RequestTimeoutException", "Throttling",
              "ThrottlingException", "RequestLimitExceeded", "TooManyRequests", "TooManyRequestsException",
              "BandwidthLimitExceeded", "PriorRequestNotComplete", "OperationAborted", "XMinioServerNotInitialized"}
RESUME_PROGRESS = 1 << 20     # a GET resumed after at least this many bytes starts its failure count afresh
_ABSENT = object()            # a listing showed the key absent (put_files); If-None-Match still guards


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


def _hex_from_b64(text: str) -> Optional[str]:
    try:
        return base64.b64decode(text, validate=True).hex()
    except (ValueError, TypeError):
        return None


def retain_until(years: int, now: Optional[_dt.datetime] = None) -> _dt.datetime:
    """`years` calendar years from now (UTC); 29 February becomes 1 March in a common year."""
    return add_years(now or _dt.datetime.now(_dt.timezone.utc), years)


@dataclass(frozen=True)
class RetentionSpec:
    """Object Lock retention applied to every object: mode governance|compliance, years >= 1."""

    mode: str
    years: int

    @classmethod
    def of(cls, value: Any) -> Optional["RetentionSpec"]:
        """From a policies.model.Retention, a (mode, years) pair, or None; None for mode "none"."""
        if value is None:
            return None
        if isinstance(value, RetentionSpec):
            return value
        if isinstance(value, (tuple, list)):
            mode, years = value
        else:
            mode, years = value.mode, value.years
        mode = str(mode).lower()
        if mode == "none":
            return None
        if mode not in _LOCK_MODES:
            raise ValueError(f"retention mode {mode!r} is not one of none, governance, compliance")
        if not isinstance(years, int) or isinstance(years, bool) or years < 1:
            raise ValueError(f"retention years must be a whole number >= 1, not {years!r}")
        return cls(mode, years)

    def describe(self) -> Dict[str, object]:
        return {"mode": self.mode, "years": self.years}


@dataclass(frozen=True)
class _Stored:
    """What a HEAD tells about an object."""

    size: int
    last_modified: Optional[_dt.datetime]
    metadata: Mapping[str, str]
    checksum_sha256: Optional[str]   # as the server gives it: base64, "-N" suffix when composite
    lock_mode: Optional[str]
    version_id: Optional[str]

    @classmethod
    def from_response(cls, r: Mapping[str, Any]) -> "_Stored":
        """From a HEAD or GET answer (the same headers)."""
        return cls(size=int(r.get("ContentLength", 0)), last_modified=r.get("LastModified"),
                   metadata={k.lower(): v for k, v in (r.get("Metadata") or {}).items()},
                   checksum_sha256=r.get("ChecksumSHA256"), lock_mode=r.get("ObjectLockMode"),
                   version_id=r.get("VersionId"))

    @property
    def full_sha256(self) -> Optional[str]:
        """Hex sha256 of the whole object when the server keeps a full-object one."""
        if not self.checksum_sha256 or "-" in self.checksum_sha256:
            return None
        return _hex_from_b64(self.checksum_sha256)

    def digests(self) -> Dict[str, str]:
        """Digests known for the stored bytes: the metadata written with them, the server's
        own full-object sha256 taking precedence (it describes the bytes, not a claim)."""
        found = {a: str(self.metadata[a]).lower() for a in SUPPORTED if self.metadata.get(a)}
        if self.full_sha256:
            found["sha256"] = self.full_sha256
        return found

    @property
    def mtime(self) -> Optional[float]:
        text = self.metadata.get(META_MTIME)
        if text:
            try:
                return float(text)
            except ValueError:
                pass
        return None if self.last_modified is None else self.last_modified.timestamp()



@dataclass(frozen=True)
class _Listed:
    """What a listing tells about an object: its size and ETag (quotes removed, lower case)."""

    size: int
    etag: str


@dataclass(frozen=True)
class _Part:
    """A part already uploaded to an unfinished multipart upload (from ListParts)."""

    size: int
    etag: str                     # as the server gives it, quotes included (CompleteMultipartUpload wants it so)
    checksum_sha256: Optional[str]


@dataclass(frozen=True)
class _Written:
    """What one upload sent; `checked` when a HEAD already compared the stored object with it."""

    key: str
    loc: str
    size: int
    digests: Mapping[str, str]
    checksum: str                 # x-amz-checksum-sha256 sent (or expected composite "...-N")
    md5: Optional[str]            # hex MD5 of the bytes when known: a single PUT's ETag must equal it
    lock_args: Mapping[str, Any]
    checked: bool


class _ObjectReader(io.RawIOBase):
    """A GET's streaming body as a file object: reads stream from the socket (memory stays flat).

    A body that dies half way (connection reset, timeout, truncated answer) is re-opened at the
    byte where it stopped with a ranged GET pinned to the same object (VersionId, or If-Match on
    the ETag), up to `object_attempts` times in a row with less than RESUME_PROGRESS bytes
    read in between (a link that breaks every few bytes is given up on); a caller hashing the
    stream therefore still hashes one object's bytes exactly once. Other failures, and the last
    one, become StorageError naming the target and the object.
    """

    def __init__(self, adapter: "S3Adapter", key: str, location: str, response: Mapping[str, Any]):
        super().__init__()
        self._adapter = adapter
        self._key = key
        self._location = location
        self._body = response["Body"]
        self.stored = _Stored.from_response(response)
        self._size = response.get("ContentLength")
        self._etag = response.get("ETag")
        self._version = response.get("VersionId")
        self._pos = 0
        self._failures = 0
        self._since_failure = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while True:
            try:
                n = self._body.readinto(buffer) or 0
            except Exception as exc:  # noqa: BLE001 - urllib3/botocore errors are not OSError
                err = self._adapter._error(exc, "read", self._location)
                self._reopen(err)
                continue
            if n == 0 and len(buffer) and self._size is not None and self._pos < self._size:
                self._reopen(StorageError(f"the answer ended after {self._pos} of {self._size} bytes",
                                          target=self._adapter.name, location=self._location), transient=True)
                continue
            if n:
                self._pos += n
                self._since_failure += n
                if self._since_failure >= RESUME_PROGRESS:
                    self._failures = 0
            return n

    def _reopen(self, err: StorageError, transient: Optional[bool] = None) -> None:
        adapter = self._adapter
        if transient is None:
            transient = bool(getattr(err, "transient", False))
        self._failures += 1
        self._since_failure = 0
        if not transient or self._failures >= adapter.object_attempts:
            raise err
        delay = adapter._backoff(self._failures)
        log.warning("%s: %s: reading stopped at byte %d (%s); resuming there in %.1f s", adapter.name,
                    self._location, self._pos, err.message, delay)
        self._close_body()
        time.sleep(delay)
        args: Dict[str, Any] = {"Bucket": adapter.bucket, "Key": self._key, "Range": f"bytes={self._pos}-"}
        if self._version:
            args["VersionId"] = self._version
        elif self._etag:
            args["IfMatch"] = self._etag
        try:
            response = adapter.client.get_object(**args)
        except Exception as exc:  # noqa: BLE001
            if adapter._code(exc) in ("PreconditionFailed", "412"):
                raise StorageError(f"changed while being read (it no longer has ETag {self._etag}); read it again",
                                   target=adapter.name, location=self._location) from None
            failure = adapter._error(exc, "read", self._location)
            self._reopen(failure)  # counts as another failure in a row; raises when out of attempts
            return
        if not str(response.get("ContentRange") or "").startswith(f"bytes {self._pos}-"):
            response["Body"].close()
            raise StorageError(f"cannot resume reading at byte {self._pos}: the server did not answer the range "
                               f"request with that range", target=adapter.name, location=self._location)
        self._body = response["Body"]

    def _close_body(self) -> None:
        try:
            self._body.close()
        except Exception:  # noqa: BLE001 - a broken connection may not close cleanly
            pass

    def close(self) -> None:
        if not self.closed:
            try:
                self._close_body()
            finally:
                super().close()


_THROTTLING = {"SlowDown", "SlowDownRead", "SlowDownWrite", "Throttling", "ThrottlingException", "RequestLimitExceeded",
               "TooManyRequests", "TooManyRequestsException", "BandwidthLimitExceeded", "429"}
_REDIRECTS = {"301", "307", "PermanentRedirect", "TemporaryRedirect", "AuthorizationHeaderMalformed",
              "IllegalLocationConstraintException"}


class _Direct:
    """PutObject and UploadPart of in-memory bodies, and GetObject, with botocore's signer and HTTP session,
    without the boto3 client's per-call machinery.

    Why: a boto3 call costs about 2 ms of CPU (parameter handling, some thirty event hooks,
    response parsing), which on a small machine caps small-file uploads well below what the
    server takes; signing (S3SigV4Auth) and sending (URLLib3Session) are a third of that. And
    botocore signs a payload by hashing it once more (sha256, on plain http), while the sha256 of
    every body sent here is known already (the manifest's, or the part's): the signature uses it,
    so the server checks the body against it too, and no CPU is spent on a third hash of every
    byte - CPU the server on the same machine needs. The request is the one boto3 sends (same
    headers, SigV4), errors are botocore's ClientError / transport exceptions, and failures are
    retried like botocore's standard mode (5xx, throttling with a 1 s base, transport errors with
    50 ms, exponential, jitter, `max_attempts` in all). Used for custom endpoints (S3-compatible
    servers) in standard/legacy retry mode; AWS itself, adaptive mode and streamed bodies go
    through boto3. A redirect or region error turns it off for the adapter (boto3 follows those).
    """

    _HEADERS = (("ContentMD5", "Content-MD5"), ("ChecksumSHA256", "x-amz-checksum-sha256"),
                ("ContentType", "Content-Type"), ("StorageClass", "x-amz-storage-class"),
                ("ObjectLockMode", "x-amz-object-lock-mode"), ("IfNoneMatch", "If-None-Match"))

    def __init__(self, adapter: "S3Adapter", bucket_url: str, session):
        from botocore.auth import S3SigV4Auth
        from botocore.httpsession import URLLib3Session
        from botocore.utils import get_environ_proxies

        class KnownPayloadAuth(S3SigV4Auth):
            def payload(self, request):
                return request.context.get("payload_sha256") or super().payload(request)

        self._auth = KnownPayloadAuth
        self._adapter = adapter
        self._base = bucket_url if bucket_url.endswith("/") else bucket_url + "/"
        self._credentials = session.get_credentials()
        verify: Union[bool, str] = adapter.ca_bundle or True
        if not adapter.verify_tls:
            verify = False
        self._http = URLLib3Session(verify=verify, proxies=get_environ_proxies(self._base),
                                    timeout=(adapter.connect_timeout, adapter.read_timeout),
                                    max_pool_connections=adapter.max_pool_connections,
                                    # as boto3's own: no Nagle delay between the headers and the body
                                    socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
        # plain http without a proxy: the leaner client of s3_wire (same requests, less CPU)
        self._wire: Optional[Wire] = None
        if self._base.startswith("http://") and not get_environ_proxies(self._base):
            self._wire = Wire(self._base, connect_timeout=adapter.connect_timeout, read_timeout=adapter.read_timeout,
                              max_idle=adapter.max_pool_connections)
            self._signer = Signer(adapter.region or "us-east-1")

    def put_object(self, **kw) -> Dict[str, Any]:
        headers = {name: str(kw[arg]) for arg, name in self._HEADERS if kw.get(arg) is not None}
        for meta, value in (kw.get("Metadata") or {}).items():
            headers[f"x-amz-meta-{meta}"] = str(value)
        until = kw.get("ObjectLockRetainUntilDate")
        if until is not None:
            headers["x-amz-object-lock-retain-until-date"] = until.astimezone(_dt.timezone.utc).strftime(
                "%Y-%m-%dT%H:%M:%SZ")
        return self._put(kw["Key"], {}, kw["Body"], headers, "PutObject")

    def upload_part(self, **kw) -> Dict[str, Any]:
        headers = {name: str(kw[arg]) for arg, name in self._HEADERS[:2] if kw.get(arg) is not None}
        params = {"partNumber": str(int(kw["PartNumber"])), "uploadId": str(kw["UploadId"])}
        return self._put(kw["Key"], params, kw["Body"], headers, "UploadPart")

    def _put(self, key: str, params: Dict[str, str], body: bytes, headers: Dict[str, str],
             operation: str) -> Dict[str, Any]:
        checksum = headers.get("x-amz-checksum-sha256")
        known = base64.b64decode(checksum).hex() if checksum else hashlib.sha256(body).hexdigest()
        h, _ = self._send("PUT", key, params, body, headers, operation, known, stream=False)
        return {"ETag": h.get("ETag"), "ChecksumSHA256": h.get("x-amz-checksum-sha256"),
                "VersionId": h.get("x-amz-version-id")}

    def get_object(self, Bucket: str, Key: str) -> Dict[str, Any]:  # noqa: N803 - boto3's names
        """GetObject with the body left on the socket (read it to its end, or close it), in the
        shape boto3 answers (Body, ContentLength, ETag, VersionId, LastModified, Metadata,
        ObjectLockMode)."""
        h, body = self._send("GET", Key, {}, b"", {}, "GetObject", _EMPTY_SHA256, stream=True)
        last = h.get("Last-Modified")
        return {"Body": body, "ContentLength": int(h["Content-Length"]) if "Content-Length" in h else None,
                "ETag": h.get("ETag"), "VersionId": h.get("x-amz-version-id"),
                "LastModified": _parse_timestamp(last) if last else None,
                "Metadata": {k[len("x-amz-meta-"):]: v for k, v in h.items() if k.lower().startswith("x-amz-meta-")},
                "ObjectLockMode": h.get("x-amz-object-lock-mode")}

    def _send(self, method: str, key: str, params: Dict[str, str], body: bytes, headers: Dict[str, str],
              operation: str, payload_sha256: str, *, stream: bool) -> Tuple[Mapping[str, str], Any]:
        """One signed request, retried like botocore's standard mode: (headers, body) of the
        2xx answer, the body a stream with `stream`, else bytes."""
        import botocore.exceptions as bx

        adapter = self._adapter
        attempt = 0
        while True:
            attempt += 1
            if self._credentials is None:
                raise bx.NoCredentialsError()
            try:
                status, answer_headers, content = self._once(method, key, params, body, headers, payload_sha256,
                                                             stream)
            except (bx.HTTPClientError, bx.ConnectionError, ConnectionError, TimeoutError):
                if attempt >= adapter.max_attempts:
                    raise
                time.sleep(random.random() * min(0.05 * 2 ** (attempt - 1), 20.0))
                continue
            if status < 300:
                return answer_headers, content
            error = _client_error(Answer(status, answer_headers, content), operation)
            code = error.response["Error"]["Code"]
            if code in _REDIRECTS:
                raise _UseClient() from None
            if code not in _TRANSIENT or attempt >= adapter.max_attempts:
                raise error
            base = 1.0 if code in _THROTTLING else 0.05
            time.sleep(random.random() * min(base * 2 ** (attempt - 1), 20.0))

    def _once(self, method: str, key: str, params: Dict[str, str], body: bytes, headers: Dict[str, str],
              payload_sha256: str, stream: bool) -> Tuple[int, Mapping[str, str], Any]:
        """(status, headers, body) of one attempt; the body read whole unless streaming a 2xx."""
        from urllib.parse import quote

        from botocore.awsrequest import AWSRequest

        query = "?" + query_string(params) if params else ""
        creds = self._credentials.get_frozen_credentials()
        if self._wire is not None:
            path = self._wire.path_of(key)
            signed = {"host": self._wire.netloc, **{k.lower(): v for k, v in headers.items()}}
            if method == "PUT":
                signed["content-length"] = str(len(body))
            self._signer.sign(method, path, params, signed, payload_sha256, creds.access_key, creds.secret_key,
                              creds.token)
            return self._wire.request(method, path, query, signed, body, stream=stream)
        request = AWSRequest(method, self._base + quote(key, safe="/~") + query, data=body, headers=dict(headers),
                             stream_output=stream)
        request.context["payload_sha256"] = payload_sha256
        self._auth(creds, "s3", self._adapter.region or "us-east-1").add_auth(request)
        response = self._http.send(request.prepare())
        if stream and response.status_code < 300:
            return response.status_code, response.headers, response.raw
        return response.status_code, response.headers, response.content


def _client_error(response: Answer, operation: str):
    """A botocore ClientError from an S3 error answer (XML <Error><Code>..., or just a status)."""
    import xml.etree.ElementTree as ET

    from botocore.exceptions import ClientError

    code, message = str(response.status_code), ""
    try:
        root = ET.fromstring(response.content or b"")
        code = root.findtext("Code") or code
        message = root.findtext("Message") or ""
    except ET.ParseError:
        pass
    return ClientError({"Error": {"Code": code, "Message": message},
                        "ResponseMetadata": {"HTTPStatusCode": response.status_code,
                                             "HTTPHeaders": dict(response.headers)}}, operation)


class BucketMissing(StorageError):
    """The bucket itself is not there (as opposed to an object in it)."""


class RetentionUnsupported(StorageError):
    """The policy asks for retention this target cannot apply (no Object Lock declared, or a bucket
    without Object Lock or versioning): a configuration error, exit 2, found before any upload."""

    exit_code = 2


class _UseClient(Exception):
    """The direct path met a redirect or region error: send this through boto3 instead."""


class S3Adapter(StorageAdapter):
    """Bags as objects in one bucket under a prefix. Thread-safe (one shared boto3 client)."""

    type = "s3"

    def __init__(self, name: str, site: str, *, bucket: str, endpoint: Optional[str] = None,
                 region: Optional[str] = None, prefix: str = "", addressing_style: str = "auto",
                 storage_class: Optional[str] = None, multipart_threshold: int = 64 << 20,
                 multipart_chunksize: int = 16 << 20, object_lock: bool = False, verify_tls: bool = True,
                 ca_bundle: Optional[str] = None, credentials=None, retention: Any = None,
                 retry_mode: str = "standard", max_attempts: int = 5, connect_timeout: float = 10.0,
                 read_timeout: float = 60.0, max_pool_connections: Optional[int] = None,
                 concurrency: int = DEFAULT_CONCURRENCY, object_attempts: int = 3, retry_delay: float = 1.0,
                 direct_put: bool = True, source: Optional[str] = None):
        super().__init__(name, site)
        if retry_mode not in RETRY_MODES:
            raise ValueError(f"retry_mode must be one of {', '.join(RETRY_MODES)}, not {retry_mode!r}")
        for label, value in (("max_attempts", max_attempts), ("concurrency", concurrency),
                             ("object_attempts", object_attempts)):
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
        self.object_attempts = object_attempts
        self.retry_delay = float(retry_delay)
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
            retention=retention, source=None if target.source is None else str(target.source),
        )
        for key in cls.TUNING_KEYS:
            if o.get(key) is not None:
                kwargs[key] = o[key]
        kwargs.update(overrides)
        return cls(target.name, target.site, **kwargs)

    # ------------------------------------------------------------------ where things are

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

    # ------------------------------------------------------------------ client and errors

    @property
    def client(self):
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = self._make_client()
        return self._client


    def _make_client(self):
        import boto3
        import botocore.exceptions
        from botocore.config import Config

        import botocore.session

        creds = self._credentials
        core = botocore.session.get_session()
        # botocore parses every timestamp with dateutil (~150 us each: most of the CPU a 1000-key
        # listing costs); S3 sends two fixed formats, parsed here in a few microseconds
        core.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=_parse_timestamp)
        try:
            if creds is not None and creds.profile:
                session = boto3.session.Session(profile_name=creds.profile, botocore_session=core)
            elif creds is not None:
                session = boto3.session.Session(aws_access_key_id=creds.access_key,
                                                aws_secret_access_key=creds.secret_key,
                                                aws_session_token=creds.session_token, botocore_session=core)
            else:
                session = boto3.session.Session(botocore_session=core)
        except botocore.exceptions.ProfileNotFound:
            raise ConfigError(f"AWS profile {creds.profile!r} is not defined (~/.aws/config or "
                              f"~/.aws/credentials)", path=self._source,
                              key=f"storage.{self.name}.credentials.profile") from None
        config = Config(
            region_name=self.region,
            signature_version="s3v4",
            s3={"addressing_style": self.addressing_style},
            retries={"mode": self.retry_mode, "total_max_attempts": self.max_attempts},
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            max_pool_connections=self.max_pool_connections,
            # We send the checksums ourselves (from the manifests); no automatic CRC32 on top.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        verify: Union[bool, str, None] = None
        if not self.verify_tls:
            verify = False
        elif self.ca_bundle:
            verify = self.ca_bundle
        self._session = session
        client = session.client("s3", endpoint_url=self.endpoint, config=config, verify=verify)
        _register_session_secrets(session)  # a profile's or the default chain's keys, resolved by now
        return client

    def _scrub(self, text: str) -> str:
        creds = self._credentials
        for secret in (getattr(creds, "secret_key", None), getattr(creds, "session_token", None),
                       getattr(creds, "access_key", None)):
            if secret:
                text = text.replace(secret, "***")
        return text

    @staticmethod
    def _code(exc: BaseException) -> Optional[str]:
        response = getattr(exc, "response", None)
        if isinstance(response, dict):
            code = response.get("Error", {}).get("Code")
            if code:
                return str(code)
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status:
                return str(status)
        return None

    def _error(self, exc: BaseException, action: str, location: Optional[str], *,
               missing: str = "not stored here") -> StorageError:
        """A StorageError for a boto3/botocore failure: the S3 error code and message, no secrets."""
        import botocore.exceptions as bx

        if isinstance(exc, StorageError):
            return exc
        code = self._code(exc)
        if code is not None:
            message = str(exc.response.get("Error", {}).get("Message") or "")  # type: ignore[attr-defined]
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")  # type: ignore[attr-defined]
            detail = f"S3 error {code}" + (f" (HTTP {status})" if status and str(status) != code else "")
            if message:
                detail += f": {message}"
            if code in _NO_BUCKET:
                err: StorageError = BucketMissing(f"cannot {action}: bucket {self.bucket!r} does not exist "
                                                 f"({detail})", target=self.name, location=location)
            elif code in _MISSING:
                err = NotFound(missing, target=self.name, location=location)
            elif code in _DENIED:
                err = StorageError(f"cannot {action}: access denied ({detail}); check the credentials this "
                                   f"target references and their permissions on bucket {self.bucket!r}",
                                   target=self.name, location=location)
            else:
                err = StorageError(f"cannot {action}: {detail}", target=self.name, location=location)
        elif isinstance(exc, bx.NoCredentialsError):
            err = StorageError(f"cannot {action}: no S3 credentials found (set credentials: {{access_key_env, "
                               f"secret_key_env}} or {{profile}} on this storage target)", target=self.name,
                               location=location)
        elif isinstance(exc, (bx.EndpointConnectionError, bx.ConnectTimeoutError, bx.ConnectionClosedError)):
            err = StorageError(f"cannot {action}: endpoint {self.endpoint or 'AWS'} cannot be reached "
                               f"({type(exc).__name__})", target=self.name, location=location)
        elif isinstance(exc, bx.ReadTimeoutError):
            err = StorageError(f"cannot {action}: endpoint {self.endpoint or 'AWS'} did not answer in time "
                               f"(read timeout {self.read_timeout:g}s)", target=self.name, location=location)
        elif isinstance(exc, OSError):
            err = StorageError(f"cannot {action} ({exc.strerror or exc})", target=self.name, location=location)
        else:
            err = StorageError(f"cannot {action} ({type(exc).__name__}: {exc})", target=self.name,
                               location=location)
        err.message = self._scrub(err.message)
        err.args = (str(err),)
        err.s3_code = code  # type: ignore[attr-defined]
        err.transient = _is_transient(exc, code)  # type: ignore[attr-defined]
        return err

    # ------------------------------------------------------------------ retries

    def _backoff(self, attempt: int) -> float:
        """Seconds to wait before attempt `attempt` + 1: exponential, capped at 20 s, with jitter
        (many workers failing together must not come back together)."""
        return min(20.0, self.retry_delay * 2 ** (attempt - 1)) * (0.5 + random.random() / 2)

    def _retrying(self, loc: Optional[str], operation: Callable[[int, bool], T], *,
                  attempts: Optional[int] = None, before_retry: Optional[Callable[[], None]] = None) -> T:
        """Run `operation(attempt, is_last)`, again after a backoff while it fails transiently.

        Each attempt is itself a series of requests that botocore retries; this level survives
        what outlasts those (a server restarting, a long SlowDown). The final error says how
        many attempts were made; errors that are not transient are raised at once.
        """
        attempts = attempts or self.object_attempts
        attempt = 1
        while True:
            try:
                return operation(attempt, attempt >= attempts)
            except StorageError as exc:
                if not getattr(exc, "transient", False):
                    raise
                if attempt >= attempts:
                    if attempts > 1:
                        exc.message += f" (gave up after {attempts} attempts)"
                        exc.args = (str(exc),)
                    raise
                delay = self._backoff(attempt)
                log.warning("%s: %s; trying again in %.1f s (attempt %d of %d)", self.name,
                            exc.message if loc is None else f"{loc}: {exc.message}", delay, attempt + 1, attempts)
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

    def check_retention_supported(self) -> None:
        """Before any upload: StorageError if the policy's retention cannot be applied here.

        Needs `object_lock: true` on the target and a bucket with Object Lock enabled (which
        implies versioning). Without a retention to apply, nothing is checked.
        """
        if self.retention is None or self._retention_checked:
            return
        loc = f"s3://{self.bucket}"
        want = f"{self.retention.mode}, {self.retention.years} years"
        if not self.object_lock:
            raise RetentionUnsupported(f"the policy asks for retention ({want}) but this S3 target is not declared "
                               f"with object_lock: true; use a bucket created with Object Lock and set "
                               f"object_lock: true, or a policy without retention for it",
                               target=self.name, location=loc)
        self.ensure_bucket()
        try:
            lock = self.client.get_object_lock_configuration(Bucket=self.bucket).get("ObjectLockConfiguration", {})
        except Exception as exc:  # noqa: BLE001
            code = self._code(exc)
            if code in ("ObjectLockConfigurationNotFoundError", "ObjectLockConfigurationNotFound", "404",
                        "NotImplemented", "InvalidRequest"):
                lock = {}
            else:
                raise self._error(exc, "read the bucket's Object Lock configuration", loc) from None
        if lock.get("ObjectLockEnabled") != "Enabled":
            raise RetentionUnsupported(f"the policy asks for retention ({want}) but bucket {self.bucket!r} has no "
                               f"Object Lock (a bucket gets it only when created with Object Lock enabled); "
                               f"nothing was uploaded", target=self.name, location=loc)
        try:
            status = self.client.get_bucket_versioning(Bucket=self.bucket).get("Status")
        except Exception as exc:  # noqa: BLE001
            raise self._error(exc, "read the bucket's versioning state", loc) from None
        if status != "Enabled":
            raise RetentionUnsupported(f"the policy asks for retention ({want}) but bucket {self.bucket!r} does not "
                               f"have versioning enabled (Object Lock needs it); nothing was uploaded",
                               target=self.name, location=loc)
        self._retention_checked = True

    def _lock_args(self) -> Dict[str, Any]:
        if self.retention is None:
            return {}
        self.check_retention_supported()
        return {"ObjectLockMode": _LOCK_MODES[self.retention.mode],
                "ObjectLockRetainUntilDate": retain_until(self.retention.years)}

    # ------------------------------------------------------------------ HEAD

    def _head(self, key: str, loc: str) -> Optional[_Stored]:
        try:
            r = self.client.head_object(Bucket=self.bucket, Key=key, ChecksumMode="ENABLED")
        except Exception as exc:  # noqa: BLE001
            if self._code(exc) in _MISSING:
                return None
            raise self._error(exc, "read the object's details (HEAD)", loc) from None
        return _Stored.from_response(r)

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

    # ------------------------------------------------------------------ writing

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
                  on_done: Optional[ItemDone] = None) -> List[PutOutcome]:
        """Up to `concurrency` objects in flight, each stored and verified as put_file does.

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
            return self.object_attempts, None   # each attempt opens the file again
        if _seekable(src):
            start = src.tell()
            return self.object_attempts, lambda: src.seek(start)  # type: ignore[union-attr]
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

    # --- one PUT ---

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

    # --- multipart ---

    def _put_multipart(self, key: str, loc: str, stream: BinaryIO, size: int, digests: Dict[str, str],
                       mtime: Optional[float], lock_args: Mapping[str, Any], exclusive: bool,
                       exists: Callable[[], bool], *, keep_on_transient: bool) -> str:
        """Upload in parts, up to `concurrency` at once, each with its sha256 (and MD5 until the
        server proved it checks sha256); the whole file is hashed on the way and the upload is
        completed only if it matches the manifest. An unfinished upload of this key (a previous
        attempt, a killed run) is resumed: its parts are reused where they match the source.
        Returns the composite checksum the stored object must show."""
        algorithm = next(a for a in _WHOLE_FILE_ORDER if a in digests)
        upload_id, uploaded = self._find_upload(key, loc)
        if upload_id is None:
            args = self._common_args(key, digests, mtime, lock_args)
            try:
                upload_id = self.client.create_multipart_upload(ChecksumAlgorithm="SHA256", **args)["UploadId"]
            except Exception as exc:  # noqa: BLE001
                raise self._error(exc, "start a multipart upload", loc) from None
        completed = keep = False
        try:
            whole = hashlib.new(algorithm)
            total = 0
            chunk = self.multipart_chunksize
            futures: List[Future] = []
            failed: List[Future] = []
            with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix=f"s3-part-{self.name}") as pool:
                try:
                    number = 0
                    while not failed:
                        self._part_slots.acquire()  # released by _send_part (or here if no part is sent)
                        handed = False
                        try:
                            data = self._read_part(stream, chunk, loc)
                            if not data and number > 0:
                                break
                            number += 1
                            whole.update(data)
                            total += len(data)
                            if total > size:
                                raise SourceMismatch(f"the source gives more than the expected {size} bytes; "
                                                     f"nothing was stored", target=self.name, location=loc)
                            fut = pool.submit(self._send_part, key, loc, upload_id, number, data, uploaded.get(number))
                            handed = True
                        finally:
                            if not handed:
                                self._part_slots.release()
                        fut.add_done_callback(lambda f: failed.append(f) if not f.cancelled() and f.exception() is not None
                                               else None)
                        futures.append(fut)
                        if len(data) < chunk:
                            break
                    wait(futures, return_when=FIRST_EXCEPTION)
                except BaseException:
                    self._cancel_parts(futures)
                    raise
                if failed:
                    self._cancel_parts(futures)
            if failed:
                failed[0].result()  # raises the first failure
            results = [f.result() for f in futures]
            if total != size:
                raise SourceMismatch(f"the source gave {total} bytes, not the expected {size}; nothing was "
                                     f"stored", target=self.name, location=loc)
            found = whole.hexdigest()
            if found != digests[algorithm]:
                raise SourceMismatch(f"the source does not match its checksums ({algorithm} expected "
                                     f"{digests[algorithm]}, read {found}); nothing was stored",
                                     target=self.name, location=loc)
            complete = {"Bucket": self.bucket, "Key": key, "UploadId": upload_id,
                        "MultipartUpload": {"Parts": [part for part, _ in results]}}
            try:
                self._call_put(self.client.complete_multipart_upload, complete, loc, exclusive, exists=exists)
            except _BadDigest:
                raise StorageError("the server refused to complete the upload: the parts do not match their "
                                   "checksums (BadDigest); the upload was aborted, try again",
                                   target=self.name, location=loc) from None
            completed = True
            return _b64(hashlib.sha256(b"".join(sha for _, sha in results)).digest()) + f"-{len(results)}"
        except StorageError as exc:
            if getattr(exc, "s3_code", None) in ("NoSuchUpload",):
                exc.transient = True  # type: ignore[attr-defined]  # aborted under us: start a new one
            keep = keep_on_transient and bool(getattr(exc, "transient", False)) \
                and getattr(exc, "s3_code", None) != "NoSuchUpload"
            raise
        finally:
            if not completed:
                if keep:
                    log.info("%s: %s: keeping the unfinished upload to resume it", self.name, loc)
                else:
                    self._abort(key, upload_id, loc)

    def _cancel_parts(self, futures: Sequence[Future]) -> None:
        for fut in futures:
            if fut.cancel():
                self._part_slots.release()  # a part that never ran never releases its slot

    def _read_part(self, stream: BinaryIO, size: int, loc: str) -> bytes:
        try:
            return _read_exactly(stream, size)
        except OSError as exc:
            raise StorageError(f"cannot read the source ({exc.strerror or exc}); the upload was aborted",
                               target=self.name, location=loc) from None

    def _send_part(self, key: str, loc: str, upload_id: str, number: int, data: bytes,
                   prior: Optional[_Part]) -> Tuple[Dict[str, Any], bytes]:
        """Upload one part (retried on its own), or reuse the part already uploaded under this
        number when its size and checksum match these bytes. Returns (part entry, sha256)."""
        try:
            sha = hashlib.sha256(data).digest()
            b64 = _b64(sha)
            if prior is not None and prior.size == len(data):
                same = (prior.checksum_sha256 == b64 if prior.checksum_sha256
                        else prior.etag.strip('"').lower() == hashlib.md5(data).hexdigest())
                if same:
                    return {"PartNumber": number, "ETag": prior.etag, "ChecksumSHA256": b64}, sha
            args: Dict[str, Any] = {"Bucket": self.bucket, "Key": key, "UploadId": upload_id, "PartNumber": number,
                                    "Body": data, "ChecksumSHA256": b64}
            if self._sha256_verified is not True:
                args["ContentMD5"] = _b64(hashlib.md5(data).digest())

            def send(attempt: int, last: bool) -> Dict[str, Any]:
                direct = self._direct
                try:
                    if direct is not None:
                        try:
                            return direct.upload_part(**args)
                        except _UseClient:
                            self._direct = None
                    return self.client.upload_part(**args)
                except Exception as exc:  # noqa: BLE001
                    if self._code(exc) in ("BadDigest", "InvalidDigest"):
                        err = StorageError(f"the server refused part {number}: the bytes it received do not "
                                           f"match their checksums (BadDigest; damaged in transit?)",
                                           target=self.name, location=loc)
                        err.transient = True  # type: ignore[attr-defined]
                        raise err from None
                    raise self._error(exc, f"upload part {number}", loc) from None

            r = self._retrying(loc, send)
            echoed = r.get("ChecksumSHA256")
            if echoed not in (None, b64):
                raise StorageError(f"the server stored part {number} with checksum {echoed}, not the {b64} sent",
                                   target=self.name, location=loc)
            if self._sha256_verified is None and echoed:
                self._sha256_verified = True
            return {"PartNumber": number, "ETag": r["ETag"], "ChecksumSHA256": b64}, sha
        finally:
            self._part_slots.release()

    def _find_upload(self, key: str, loc: str) -> Tuple[Optional[str], Dict[int, _Part]]:
        """The newest unfinished multipart upload of exactly this key and its parts, or (None, {})."""
        try:
            r = self.client.list_multipart_uploads(Bucket=self.bucket, Prefix=key)
        except Exception as exc:  # noqa: BLE001
            raise self._error(exc, "look for an unfinished upload", loc) from None
        mine = [u for u in r.get("Uploads") or () if u.get("Key") == key]
        if not mine:
            return None, {}
        epoch = _dt.datetime.min.replace(tzinfo=_dt.timezone.utc)
        newest = max(mine, key=lambda u: u.get("Initiated") or epoch)
        parts: Dict[int, _Part] = {}
        try:
            for page in self.client.get_paginator("list_parts").paginate(Bucket=self.bucket, Key=key,
                                                                          UploadId=newest["UploadId"]):
                for p in page.get("Parts") or ():
                    parts[int(p["PartNumber"])] = _Part(int(p.get("Size", -1)), str(p.get("ETag") or ""),
                                                        p.get("ChecksumSHA256"))
        except Exception as exc:  # noqa: BLE001
            if self._code(exc) in ("NoSuchUpload", "404"):
                return None, {}
            raise self._error(exc, "list the parts of an unfinished upload", loc) from None
        log.info("%s: %s: resuming an unfinished multipart upload (%d part(s) on the server, reused where "
                 "they match the source)", self.name, loc, len(parts))
        return newest["UploadId"], parts

    def _abort(self, key: str, upload_id: str, loc: str) -> None:
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except Exception as exc:  # noqa: BLE001 - the original failure is the one to raise
            if self._code(exc) not in ("NoSuchUpload", "404"):
                log.warning("%s: could not abort the unfinished multipart upload of %s (%s); "
                            "cleanup_temp() of the bag removes it", self.name, loc, self._error(exc, "abort", loc))

    def _abort_all(self, key: str, loc: str) -> None:
        """Abort every unfinished upload of exactly this key (best effort: logged, not raised)."""
        try:
            r = self.client.list_multipart_uploads(Bucket=self.bucket, Prefix=key)
        except Exception as exc:  # noqa: BLE001
            log.warning("%s: could not look for unfinished uploads of %s (%s); cleanup_temp() of the bag "
                        "removes them", self.name, loc, self._error(exc, "list unfinished uploads", loc))
            return
        for upload in r.get("Uploads") or ():
            if upload.get("Key") == key:
                self._abort(key, upload["UploadId"], loc)

    # --- after the upload ---

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

    def put_new_object(self, key: str, data: bytes) -> bool:
        """Store small `data` under `key` (a full key: no prefix or bag layout) only if nothing is
        there: True if written, False if the key is taken. If-None-Match: * makes it atomic; on a
        server without it, a HEAD before the PUT (a small race remains). For the catalog."""
        loc = f"s3://{self.bucket}/{key}"
        self.ensure_bucket()
        args = {"Bucket": self.bucket, "Key": key, "Body": data, "ContentMD5": _b64(hashlib.md5(data).digest()),
                "ChecksumSHA256": _b64(hashlib.sha256(data).digest())}

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

    # ------------------------------------------------------------------ reading

    def _get(self, key: str, loc: str, *, missing_ok: bool = False) -> Optional[_ObjectReader]:
        """The object's body as a stream; None if it is absent and `missing_ok`."""
        def get(attempt: int, last: bool) -> Optional[_ObjectReader]:
            try:
                direct = self._direct
                if direct is not None:
                    try:
                        r = direct.get_object(Bucket=self.bucket, Key=key)
                    except _UseClient:
                        self._direct = None
                        r = self.client.get_object(Bucket=self.bucket, Key=key)
                else:
                    r = self.client.get_object(Bucket=self.bucket, Key=key)
            except Exception as exc:  # noqa: BLE001
                if missing_ok and self._code(exc) in _MISSING:
                    return None
                raise self._error(exc, "read", loc) from None
            return _ObjectReader(self, key, loc, r)

        return self._retrying(loc, get)

    def open_file(self, bag_id: BagId, relpath: str) -> BinaryIO:
        key, loc = self._checked_key(bag_id, relpath)
        self.ensure_bucket()
        return self._get(key, loc)  # type: ignore[return-value]

    def open_with_stat(self, bag_id: BagId, relpath: str) -> Optional[Tuple[FileStat, BinaryIO]]:
        """One GET: its headers are what a HEAD would say (but the server's own checksum, which
        a deep check does not need: it re-hashes the bytes)."""
        key, loc = self._checked_key(bag_id, relpath)
        self.ensure_bucket()
        reader = self._get(key, loc, missing_ok=True)
        if reader is None:
            return None
        stored = reader.stored
        return FileStat(size=stored.size, mtime=stored.mtime, stored_digests=stored.digests()), reader

    def stat_file(self, bag_id: BagId, relpath: str) -> Optional[FileStat]:
        key, loc = self._checked_key(bag_id, relpath)
        self.ensure_bucket()
        stored = self._retrying(loc, lambda attempt, last: self._head(key, loc))
        if stored is None:
            return None
        return FileStat(size=stored.size, mtime=stored.mtime, stored_digests=stored.digests())

    # ------------------------------------------------------------------ listing

    def _list(self, prefix: str, *, delimiter: Optional[str] = None) -> List[Tuple[str, bool]]:
        """(key or common prefix, is_prefix) under `prefix`, every page (retried as a whole)."""
        self.ensure_bucket()
        args: Dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
        if delimiter:
            args["Delimiter"] = delimiter
        loc = f"s3://{self.bucket}/{prefix}"

        def run(attempt: int, last: bool) -> List[Tuple[str, bool]]:
            found: List[Tuple[str, bool]] = []
            try:
                for page in self.client.get_paginator("list_objects_v2").paginate(**args):
                    found.extend((item["Prefix"], True) for item in page.get("CommonPrefixes") or ())
                    found.extend((item["Key"], False) for item in page.get("Contents") or ())
            except Exception as exc:  # noqa: BLE001
                raise self._error(exc, "list", loc) from None
            return found

        return self._retrying(loc, run)

    def list_bag_files(self, bag_id: BagId) -> Iterator[str]:
        """Only this bag's own prefix is listed. Keys that are not canonical bag paths are
        listed as they are (verification reports them as extra files); folder markers are not."""
        prefix = self._bag_prefix(bag_id)
        found = [key[len(prefix):] for key, _ in self._list(prefix) if not key.endswith("/")]
        return iter(sorted(p for p in found if p))

    def list_bags(self) -> Iterator[BagId]:
        base = self.prefix + "/" if self.prefix else ""
        found: List[BagId] = []
        for lib, is_prefix in self._list(base, delimiter="/"):
            if not is_prefix:
                continue
            for coll, is_prefix2 in self._list(lib, delimiter="/"):
                if not is_prefix2:
                    continue
                for bag, is_prefix3 in self._list(coll, delimiter="/"):
                    if not is_prefix3:
                        continue
                    text = bag[len(base):].rstrip("/")
                    try:
                        bag_id = BagId.parse(text)
                        bag_segments(bag_id)
                    except Exception:  # noqa: BLE001 - not a bag id: ignored, as documented
                        continue
                    found.append(bag_id)
        return iter(sorted(found, key=str))

    def cleanup_temp(self, bag_id: BagId) -> int:
        """Abort unfinished multipart uploads under this bag's prefix (left by a killed writer).

        Call it when no other writer is storing this bag on this target (Luigi runs one
        replication task per bag and target): a live upload it aborts fails and is retried.
        """
        self.ensure_bucket()
        prefix = self._bag_prefix(bag_id)
        loc = f"s3://{self.bucket}/{prefix}"

        def run(attempt: int, last: bool) -> int:
            aborted = 0
            try:
                for page in self.client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket,
                                                                                        Prefix=prefix):
                    for upload in page.get("Uploads") or ():
                        try:
                            self.client.abort_multipart_upload(Bucket=self.bucket, Key=upload["Key"],
                                                               UploadId=upload["UploadId"])
                        except Exception as exc:  # noqa: BLE001
                            if self._code(exc) not in ("NoSuchUpload", "404"):
                                raise
                        aborted += 1
            except Exception as exc:  # noqa: BLE001
                raise self._error(exc, "clear unfinished multipart uploads", loc) from None
            return aborted

        return self._retrying(loc, run)


# --------------------------------------------------------------------------------------------
# The catalog on S3 (`catalog: s3://bucket/prefix`)


@dataclass(frozen=True)
class CatalogS3:
    """How the catalog reaches its bucket: a pyarrow S3 file system (reads, listings, plain
    writes) and `put_if_absent`, a conditional PUT (If-None-Match: *) that pyarrow cannot send,
    so that a write that must not replace a file (a ledger segment) is atomic on S3 too."""

    filesystem: Any               # pyarrow.fs.S3FileSystem
    root: str                     # "bucket/prefix": pyarrow paths carry no scheme
    adapter: "S3Adapter"          # boto3 side, same endpoint and credentials

    def put_if_absent(self, path: str, data: bytes) -> bool:
        """Write `data` at `path` ("bucket/key") unless something is there: True if written."""
        bucket, _, key = path.partition("/")
        if bucket != self.adapter.bucket or not key:
            raise ValueError(f"{path!r} is not in the catalog's bucket {self.adapter.bucket!r}")
        return self.adapter.put_new_object(key, data)


def open_catalog_s3(location: str, target=None, *, environ: Optional[Mapping[str, str]] = None) -> CatalogS3:
    """The catalog at `location` (s3://bucket[/prefix]), reached with the endpoint, region,
    addressing style, CA bundle, timeouts and credentials of S3 storage target `target` (its
    bucket and prefix are not used), or, without a target, the AWS defaults (endpoint, region and
    credential chain from the environment and ~/.aws). ConfigError for what pyarrow cannot do.
    """
    import pyarrow.fs as pafs
    from urllib.parse import urlsplit

    if not location.startswith("s3://"):
        raise ValueError(f"{location!r} is not an s3:// location")
    bucket, _, prefix = location[len("s3://"):].partition("/")
    prefix = prefix.strip("/")
    root = f"{bucket}/{prefix}" if prefix else bucket
    source = None if target is None or target.source is None else str(target.source)
    if target is None:
        adapter = S3Adapter("catalog", "", bucket=bucket)
        return CatalogS3(pafs.S3FileSystem(), root, adapter)
    if target.type != "s3":
        raise ConfigError(f"catalog_access must name an S3 storage target; {target.name!r} is of type "
                          f"{target.type}", path=source, key="catalog_access")
    adapter = S3Adapter.from_target(target, environ=environ, bucket=bucket, prefix="")
    kwargs: Dict[str, Any] = {"retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=adapter.max_attempts),
                              "connect_timeout": adapter.connect_timeout, "request_timeout": adapter.read_timeout,
                              "region": adapter.region or "us-east-1",
                              "force_virtual_addressing": adapter.addressing_style == "virtual"}
    if adapter.endpoint:
        parts = urlsplit(adapter.endpoint)
        kwargs["scheme"] = parts.scheme
        kwargs["endpoint_override"] = parts.netloc + parts.path.rstrip("/")
        if parts.scheme == "https" and not adapter.verify_tls:
            raise ConfigError(f"storage target {target.name!r} has verify_tls: false, which pyarrow's S3 file "
                              f"system cannot do for the catalog; give its CA certificates as ca_bundle instead",
                              path=source, key=f"storage.{target.name}.verify_tls")
    if adapter.ca_bundle:
        kwargs["tls_ca_file_path"] = adapter.ca_bundle
    creds = adapter._credentials
    if creds is not None and creds.profile:
        import boto3
        import botocore.exceptions

        try:
            found = boto3.session.Session(profile_name=creds.profile).get_credentials()
        except botocore.exceptions.ProfileNotFound:
            raise ConfigError(f"AWS profile {creds.profile!r} is not defined (~/.aws/config or ~/.aws/credentials)",
                              path=source, key=f"storage.{target.name}.credentials.profile") from None
        if found is None:
            raise ConfigError(f"AWS profile {creds.profile!r} gives no credentials", path=source,
                              key=f"storage.{target.name}.credentials.profile")
        frozen = found.get_frozen_credentials()
        kwargs.update(access_key=frozen.access_key, secret_key=frozen.secret_key)
        if frozen.token:
            kwargs["session_token"] = frozen.token
    elif creds is not None:
        kwargs.update(access_key=creds.access_key, secret_key=creds.secret_key)
        if creds.session_token:
            kwargs["session_token"] = creds.session_token
    return CatalogS3(pafs.S3FileSystem(**kwargs), root, adapter)


# --------------------------------------------------------------------------------------------
# Helpers


@dataclass(frozen=True)
class _Job:
    """One put_files item with its checked digests, key and location."""

    index: int
    item: PutItem
    digests: Dict[str, str]
    key: str
    loc: str


class _Exists(Exception):
    """If-None-Match: * failed: something is stored under the key already."""


class _BadDigest(Exception):
    """The server refused a PUT whose bytes did not match the checksums sent."""


def _register_session_secrets(session) -> None:
    """Have the log redaction replace the keys a boto3 session resolved itself (profile, default
    chain): they were not known when the adapter was made. Never fails the caller."""
    values: Tuple[Optional[str], ...] = ()
    try:
        found = session.get_credentials()
        if found is not None:
            frozen = found.get_frozen_credentials()
            values = (frozen.access_key, frozen.secret_key, frozen.token)
    except Exception:  # noqa: BLE001 - a credential problem is reported by the first request
        pass
    _install_redaction(*values)  # also puts the filter on botocore's loggers made since the adapter


def _is_transient(exc: BaseException, code: Optional[str]) -> bool:
    """Worth another attempt later: throttling, 5xx, and transport failures (reset, timeout)."""
    if code is not None:
        return code in _TRANSIENT
    import botocore.exceptions as bx

    return isinstance(exc, (bx.ConnectionError, bx.HTTPClientError, bx.IncompleteReadError,
                            ConnectionError, TimeoutError))


def _parse_timestamp(value: Any) -> _dt.datetime:
    """ISO 8601 (listings: 2024-01-02T03:04:05.000Z) and RFC 1123 (headers: Tue, 02 Jan 2024
    03:04:05 GMT) as aware datetimes; anything else goes to botocore's general parser."""
    if isinstance(value, str):
        try:
            if value[-1:] == "Z" and "T" in value:
                return _dt.datetime.fromisoformat(value[:-1]).replace(tzinfo=_dt.timezone.utc)
            if value.endswith(" GMT"):
                return _dt.datetime.strptime(value, "%a, %d %b %Y %H:%M:%S GMT").replace(tzinfo=_dt.timezone.utc)
        except ValueError:
            pass
    from botocore.utils import parse_timestamp

    return parse_timestamp(value)


def _seekable(stream) -> bool:
    try:
        return bool(stream.seekable())
    except (AttributeError, OSError, ValueError):
        return False


def _drain(reader: HashingReader) -> None:
    buf = bytearray(CHUNK)
    while reader.readinto(buf):
        pass


def _hash_all(stream, algorithms) -> Tuple[int, Dict[str, str]]:
    reader = HashingReader(stream, algorithms)
    _drain(reader)
    return reader.hasher.size, reader.hasher.hexdigests()


def _check_read(hasher: MultiHasher, size: int, digests: Mapping[str, str], target: str, loc: str) -> None:
    """SourceMismatch unless the bytes hashed have exactly this size and these digests."""
    if hasher.size != size:
        gave = f"more than {size}" if hasher.size > size else str(hasher.size)  # a longer one is not read to its end
        raise SourceMismatch(f"the source gave {gave} bytes, not the expected {size}; nothing was stored",
                             target=target, location=loc)
    found = hasher.hexdigests()
    wrong = [f"{a} expected {digests[a]}, read {found[a]}" for a in digests if found[a] != digests[a]]
    if wrong:
        raise SourceMismatch(f"the source does not match its checksums ({'; '.join(wrong)}); nothing was stored",
                             target=target, location=loc)


def _read_exactly(stream, n: int) -> bytes:
    """Up to n bytes, fewer only at the end of the stream."""
    chunks = []
    left = n
    while left > 0:
        data = stream.read(min(left, CHUNK * 8))
        if not data:
            break
        chunks.append(data)
        left -= len(data)
    return b"".join(chunks)


__all__ = ["S3Adapter", "BucketMissing", "RetentionSpec", "retain_until", "META_MTIME", "DEFAULT_CONCURRENCY", "CatalogS3",
           "open_catalog_s3"]
