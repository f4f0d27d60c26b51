"""S3-compatible object storage (AWS S3, SeaweedFS, MinIO, Ceph) as a storage target, via boto3.

Layout: one object per bag file, key `<prefix>/<LIB>/<COLL>/<bag-name>/<path inside bag>`.

Why each object is trustworthy once put_file returns:
  * the bytes are sent with checksums the SERVER verifies before it keeps the object:
    `x-amz-checksum-sha256` (servers that know the newer headers) and `Content-MD5` (every S3
    server), both taken from the bag's manifests when they hold sha256/md5, else computed in a
    local pass that also checks every manifest digest before anything is sent. A server that
    receives other bytes refuses them (BadDigest): nothing is stored under the key;
  * files from `multipart_threshold` bytes up go as a multipart upload of
    `multipart_chunksize` parts, each part with its own sha256 (+ MD5 until the server has
    shown it checks sha256). The whole file is hashed on the way, and only when it matches the
    manifest is the upload completed; any failure aborts the upload, so no parts are left
    behind (a crash that kills the process is cleared by `cleanup_temp`);
  * afterwards a HEAD checks size, the stored checksum (full-object sha256, or the composite
    checksum of the parts) and, on an Object-Locked bucket, that the retention was applied.
  * user metadata (x-amz-meta-sha256, -md5, ...) carries the manifest digests and the source
    mtime, so `stat_file` returns them and `catalog rebuild` can use them without reading data.

Never overwriting: a HEAD comes first (identical object -> ALREADY_PRESENT, different ->
ReplicaConflict), and the PUT / CompleteMultipartUpload carries `If-None-Match: *`, so a
concurrent writer cannot be overwritten either (a server answering 501 to it is remembered and
the HEAD alone guards). `replace_file` (repair) writes without the condition: on a versioned /
Object-Locked bucket that makes a new version and the old one is kept.

Cost per bag does not grow with the bucket: writing and verifying a bag lists only its own
prefix (`<bag key>/`); `list_bags` walks LIB/, COLL/, bag-name/ levels with a delimiter.

Credentials come from `policies.config.resolve_credentials` (named environment variables or an
AWS profile) and are handed to boto3 only. They never appear in messages: errors are built from
the S3 error code and message and scrubbed of the key values; botocore's DEBUG logging (which
prints request headers, access key id included) is capped at INFO by this module.
"""

from __future__ import annotations

import base64
import datetime as _dt
import hashlib
import io
import logging
import os
import tempfile
import threading
from dataclasses import dataclass
from typing import Any, BinaryIO, Dict, Iterator, List, Mapping, Optional, Tuple, Union

from ingest.naming import BagId
from strongroom.checksums import SUPPORTED, MultiHasher
from strongroom.errors import ConfigError

from .base import (
    CHUNK,
    FileStat,
    HashingReader,
    NotFound,
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
    open_source,
)

log = logging.getLogger(__name__)

# botocore logs request headers (Authorization: ... Credential=<access key id>/...) at DEBUG;
# `-vv` sets the root logger to DEBUG. Keep these libraries at INFO unless someone set a level.
for _name in ("botocore", "boto3", "s3transfer", "urllib3"):
    _logger = logging.getLogger(_name)
    if _logger.level == logging.NOTSET:
        _logger.setLevel(logging.INFO)

META_MTIME = "mtime"          # x-amz-meta-mtime: the source file's mtime (seconds, as text)
SPOOL_MEMORY = 8 << 20        # an unseekable source is spooled to disk beyond this many bytes
RETRY_MODES = ("standard", "adaptive", "legacy")
_LOCK_MODES = {"governance": "GOVERNANCE", "compliance": "COMPLIANCE"}
_MISSING = {"404", "NoSuchKey", "NotFound"}
_NO_BUCKET = {"NoSuchBucket"}
_DENIED = {"403", "AccessDenied", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch",
           "InvalidToken", "ExpiredToken", "AllAccessDisabled"}


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


def _hex_from_b64(text: str) -> Optional[str]:
    try:
        return base64.b64decode(text, validate=True).hex()
    except (ValueError, TypeError):
        return None


def retain_until(years: int, now: Optional[_dt.datetime] = None) -> _dt.datetime:
    """`years` calendar years from now (UTC); 29 February becomes 1 March in a common year."""
    now = now or _dt.datetime.now(_dt.timezone.utc)
    try:
        return now.replace(year=now.year + years)
    except ValueError:
        return now.replace(year=now.year + years, month=3, day=1)


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


class _ObjectReader(io.RawIOBase):
    """A GET's streaming body as a file object: reads stream from the socket (memory stays
    flat) and transport failures become StorageError naming the target and the object."""

    def __init__(self, body, adapter: "S3Adapter", location: str):
        super().__init__()
        self._body = body
        self._adapter = adapter
        self._location = location

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        try:
            n = self._body.readinto(buffer)
        except Exception as exc:  # noqa: BLE001 - urllib3/botocore errors are not OSError
            raise self._adapter._error(exc, "read", self._location) from None
        return n or 0

    def close(self) -> None:
        if not self.closed:
            try:
                self._body.close()
            finally:
                super().close()


class S3Adapter(StorageAdapter):
    """Bags as objects in one bucket under a prefix. Thread-safe (one shared boto3 client)."""

    type = "s3"

    def __init__(self, name: str, site: str, *, bucket: str, endpoint: Optional[str] = None,
                 region: Optional[str] = None, prefix: str = "", addressing_style: str = "auto",
                 storage_class: Optional[str] = None, multipart_threshold: int = 64 << 20,
                 multipart_chunksize: int = 16 << 20, object_lock: bool = False, verify_tls: bool = True,
                 ca_bundle: Optional[str] = None, credentials=None, retention: Any = None,
                 retry_mode: str = "standard", max_attempts: int = 5, connect_timeout: float = 10.0,
                 read_timeout: float = 60.0, max_pool_connections: int = 32, source: Optional[str] = None):
        super().__init__(name, site)
        if retry_mode not in RETRY_MODES:
            raise ValueError(f"retry_mode must be one of {', '.join(RETRY_MODES)}, not {retry_mode!r}")
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
        self.max_pool_connections = max_pool_connections
        self._credentials = credentials
        self._source = source
        self._client = None
        self._lock = threading.Lock()
        self._bucket_checked = False
        self._retention_checked = False
        self._if_none_match = True         # cleared if the server answers 501 to If-None-Match
        self._sha256_verified: Optional[bool] = None  # does the server check x-amz-checksum-sha256?

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
        for key in ("retry_mode", "max_attempts", "connect_timeout", "read_timeout", "max_pool_connections"):
            if key in o:
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

    def describe(self) -> Dict[str, object]:
        return {
            "name": self.name, "type": self.type, "site": self.site, "endpoint": self.endpoint or "(AWS default)",
            "bucket": self.bucket, "prefix": self.prefix, "region": self.region,
            "addressing_style": self.addressing_style, "storage_class": self.storage_class,
            "object_lock": self.object_lock,
            "retention": None if self.retention is None else self.retention.describe(),
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

        creds = self._credentials
        try:
            if creds is not None and creds.profile:
                session = boto3.session.Session(profile_name=creds.profile)
            elif creds is not None:
                session = boto3.session.Session(aws_access_key_id=creds.access_key,
                                                aws_secret_access_key=creds.secret_key,
                                                aws_session_token=creds.session_token)
            else:
                session = boto3.session.Session()
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
        return session.client("s3", endpoint_url=self.endpoint, config=config, verify=verify)

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
                err: StorageError = StorageError(f"cannot {action}: bucket {self.bucket!r} does not exist "
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
        return err

    # ------------------------------------------------------------------ bucket capabilities

    def ensure_bucket(self) -> None:
        """StorageError unless the bucket exists and answers. Checked once, before the first write
        or listing: some servers (SeaweedFS) create a missing bucket on PUT, so a mistyped bucket
        name would otherwise silently become a new, unlocked, unmonitored bucket."""
        if self._bucket_checked:
            return
        loc = f"s3://{self.bucket}"
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except Exception as exc:  # noqa: BLE001
            code = self._code(exc)
            if code in ("404", "NoSuchBucket", "NotFound"):
                raise StorageError(f"bucket {self.bucket!r} does not exist at {self.endpoint or 'AWS'}; "
                                   f"Strongroom does not create buckets (create it, with Object Lock if the "
                                   f"policy asks for retention)", target=self.name, location=loc) from None
            raise self._error(exc, "reach the bucket", loc) from None
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
            raise StorageError(f"the policy asks for retention ({want}) but this S3 target is not declared "
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
            raise StorageError(f"the policy asks for retention ({want}) but bucket {self.bucket!r} has no "
                               f"Object Lock (a bucket gets it only when created with Object Lock enabled); "
                               f"nothing was uploaded", target=self.name, location=loc)
        try:
            status = self.client.get_bucket_versioning(Bucket=self.bucket).get("Status")
        except Exception as exc:  # noqa: BLE001
            raise self._error(exc, "read the bucket's versioning state", loc) from None
        if status != "Enabled":
            raise StorageError(f"the policy asks for retention ({want}) but bucket {self.bucket!r} does not "
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
        return _Stored(size=int(r.get("ContentLength", 0)), last_modified=r.get("LastModified"),
                       metadata={k.lower(): v for k, v in (r.get("Metadata") or {}).items()},
                       checksum_sha256=r.get("ChecksumSHA256"), lock_mode=r.get("ObjectLockMode"),
                       version_id=r.get("VersionId"))

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
        stored = self._head(key, loc)
        if stored is not None and self._same_as_stored(key, loc, stored, size, digests):
            return PutOutcome.ALREADY_PRESENT
        try:
            self._upload(key, loc, src, size, digests, mtime, lock_args, exclusive=True)
        except _Exists:
            stored = self._head(key, loc)
            if stored is None:
                raise StorageError("appeared and vanished again while being written; try again",
                                   target=self.name, location=loc) from None
            self._same_as_stored(key, loc, stored, size, digests)
            return PutOutcome.ALREADY_PRESENT
        return PutOutcome.WRITTEN

    def replace_file(self, bag_id: BagId, relpath: str, src: Source, *, size: int, digests: Mapping[str, str],
                     mtime: Optional[float] = None) -> PutOutcome:
        """Repair: a PUT without the no-overwrite condition. On a versioned (Object-Locked) bucket
        this adds a new current version and the damaged one is kept, as Object Lock requires."""
        digests = check_digests(digests)
        key, loc = self._checked_key(bag_id, relpath)
        self.ensure_bucket()
        self._upload(key, loc, src, size, digests, mtime, self._lock_args(), exclusive=False)
        return PutOutcome.WRITTEN

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
                mtime: Optional[float], lock_args: Mapping[str, Any], *, exclusive: bool) -> None:
        with open_source(src, target=self.name) as stream:
            if size >= self.multipart_threshold:
                expected = self._put_multipart(key, loc, stream, size, digests, mtime, lock_args, exclusive)
            else:
                expected = self._put_single(key, loc, stream, size, digests, mtime, lock_args, exclusive)
        self._check_stored(key, loc, size, digests, expected, lock_args)

    # --- one PUT ---

    def _put_single(self, key: str, loc: str, stream: BinaryIO, size: int, digests: Dict[str, str],
                    mtime: Optional[float], lock_args: Mapping[str, Any], exclusive: bool) -> str:
        """PutObject with x-amz-checksum-sha256 and Content-MD5; the stored checksum expected."""
        spool = None
        try:
            need_md5 = "md5" not in digests and self._sha256_verified is not True
            prehash = ("sha256" not in digests or need_md5 or any(a not in ("sha256", "md5") for a in digests)
                       or not _seekable(stream))
            start = 0
            if prehash:
                algorithms = list(dict.fromkeys(list(digests) + ["sha256", "md5"]))
                if _seekable(stream):
                    start = stream.tell()
                    body: BinaryIO = stream
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
                    body = spool  # type: ignore[assignment]
                reader.check(size, digests, target=self.name, location=loc)
                sha256, md5 = reader.hasher.hexdigests()["sha256"], reader.hasher.hexdigests()["md5"]
            else:
                start = stream.tell()
                actual = stream.seek(0, os.SEEK_END) - start
                stream.seek(start)
                if actual != size:
                    raise SourceMismatch(f"the source has {actual} bytes, not the expected {size}; nothing was "
                                         f"stored", target=self.name, location=loc)
                body, sha256, md5 = stream, digests["sha256"], digests.get("md5")
            args = self._common_args(key, digests, mtime, lock_args)
            args.update(Body=body, ContentLength=size, ChecksumSHA256=_b64(bytes.fromhex(sha256)))
            if md5 is not None:
                args["ContentMD5"] = _b64(bytes.fromhex(md5))
            response = self._call_put(self.client.put_object, args, loc, exclusive,
                                      rewind=lambda: body.seek(0 if spool is not None else start))
            echoed = response.get("ChecksumSHA256")
            if self._sha256_verified is None:
                self._sha256_verified = echoed == args["ChecksumSHA256"]
            return args["ChecksumSHA256"]
        except _BadDigest:
            # The server got bytes that do not match the checksums sent: the source, or the wire?
            if spool is None and _seekable(stream):
                stream.seek(start)
                _, found = _hash_all(stream, list(digests))
                wrong = [f"{a} expected {digests[a]}, read {found[a]}" for a in digests if found[a] != digests[a]]
                if wrong:
                    raise SourceMismatch(f"the source does not match its checksums ({'; '.join(wrong)}); "
                                         f"nothing was stored", target=self.name, location=loc) from None
            raise StorageError("the server refused the upload: the bytes it received do not match their "
                               "checksums (BadDigest; damaged in transit?); nothing was stored, try again",
                               target=self.name, location=loc) from None
        finally:
            if spool is not None:
                spool.close()

    def _call_put(self, method, args: Dict[str, Any], loc: str, exclusive: bool,
                  rewind=None) -> Dict[str, Any]:
        """PutObject / CompleteMultipartUpload, with If-None-Match: * when `exclusive`.

        _Exists if something is stored under the key already; _BadDigest if the server refused
        the bytes as not matching their checksums; StorageError otherwise. `rewind` puts the
        body back at its start before a second attempt without the condition.
        """
        if exclusive and self._if_none_match:
            try:
                return method(IfNoneMatch="*", **args)
            except Exception as exc:  # noqa: BLE001
                code = self._code(exc)
                if code in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409"):
                    raise _Exists() from None
                if code not in ("NotImplemented", "501"):
                    raise self._classify(exc, loc) from None
                log.info("%s: the server does not support If-None-Match on writes; relying on the HEAD "
                         "before each write", self.name)
                self._if_none_match = False
                if rewind is not None:
                    rewind()
        try:
            return method(**args)
        except Exception as exc:  # noqa: BLE001
            raise self._classify(exc, loc) from None

    def _classify(self, exc: BaseException, loc: str) -> BaseException:
        if self._code(exc) in ("BadDigest", "InvalidDigest", "XAmzContentSHA256Mismatch"):
            return _BadDigest()
        return self._error(exc, "write", loc)

    # --- multipart ---

    def _put_multipart(self, key: str, loc: str, stream: BinaryIO, size: int, digests: Dict[str, str],
                       mtime: Optional[float], lock_args: Mapping[str, Any], exclusive: bool) -> str:
        """Upload in parts, each with its sha256 (and MD5 until the server proved it checks sha256),
        the whole file hashed on the way; complete only if it matches the manifest, else abort."""
        args = self._common_args(key, digests, mtime, lock_args)
        try:
            upload_id = self.client.create_multipart_upload(ChecksumAlgorithm="SHA256", **args)["UploadId"]
        except Exception as exc:  # noqa: BLE001
            raise self._error(exc, "start a multipart upload", loc) from None
        completed = False
        try:
            whole = MultiHasher(list(digests))
            part_sha: List[bytes] = []
            parts: List[Dict[str, Any]] = []
            chunk = self.multipart_chunksize
            number = 0
            while True:
                try:
                    data = _read_exactly(stream, chunk)
                except OSError as exc:
                    raise StorageError(f"cannot read the source ({exc.strerror or exc}); the upload was aborted",
                                       target=self.name, location=loc) from None
                if not data and number > 0:
                    break
                number += 1
                whole.update(data)
                if whole.size > size:
                    raise SourceMismatch(f"the source gives more than the expected {size} bytes; nothing was "
                                         f"stored", target=self.name, location=loc)
                sha = hashlib.sha256(data).digest()
                part_args: Dict[str, Any] = {"Bucket": self.bucket, "Key": key, "UploadId": upload_id,
                                             "PartNumber": number, "Body": data, "ChecksumSHA256": _b64(sha)}
                if self._sha256_verified is not True:
                    part_args["ContentMD5"] = _b64(hashlib.md5(data).digest())
                try:
                    r = self.client.upload_part(**part_args)
                except Exception as exc:  # noqa: BLE001
                    if self._code(exc) in ("BadDigest", "InvalidDigest"):
                        raise StorageError(f"the server refused part {number}: the bytes it received do not "
                                           f"match their checksums (BadDigest; damaged in transit?); the upload "
                                           f"was aborted, try again", target=self.name, location=loc) from None
                    raise self._error(exc, f"upload part {number}", loc) from None
                if r.get("ChecksumSHA256") not in (None, part_args["ChecksumSHA256"]):
                    raise StorageError(f"the server stored part {number} with checksum {r.get('ChecksumSHA256')}, "
                                       f"not the {part_args['ChecksumSHA256']} sent; the upload was aborted",
                                       target=self.name, location=loc)
                if self._sha256_verified is None and r.get("ChecksumSHA256"):
                    self._sha256_verified = True
                part_sha.append(sha)
                parts.append({"PartNumber": number, "ETag": r["ETag"], "ChecksumSHA256": part_args["ChecksumSHA256"]})
                if len(data) < chunk:
                    break
            found = whole.hexdigests()
            if whole.size != size:
                raise SourceMismatch(f"the source gave {whole.size} bytes, not the expected {size}; nothing was "
                                     f"stored", target=self.name, location=loc)
            wrong = [f"{a} expected {digests[a]}, read {found[a]}" for a in digests if found[a] != digests[a]]
            if wrong:
                raise SourceMismatch(f"the source does not match its checksums ({'; '.join(wrong)}); nothing "
                                     f"was stored", target=self.name, location=loc)
            complete = {"Bucket": self.bucket, "Key": key, "UploadId": upload_id,
                        "MultipartUpload": {"Parts": parts}}
            try:
                self._call_put(self.client.complete_multipart_upload, complete, loc, exclusive)
            except _BadDigest:
                raise StorageError("the server refused to complete the upload: the parts do not match their "
                                   "checksums (BadDigest); the upload was aborted, try again",
                                   target=self.name, location=loc) from None
            completed = True
            return _b64(hashlib.sha256(b"".join(part_sha)).digest()) + f"-{len(part_sha)}"
        finally:
            if not completed:
                self._abort(key, upload_id, loc)

    def _abort(self, key: str, upload_id: str, loc: str) -> None:
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except Exception as exc:  # noqa: BLE001 - the original failure is the one to raise
            if self._code(exc) not in ("NoSuchUpload", "404"):
                log.warning("%s: could not abort the unfinished multipart upload of %s (%s); "
                            "cleanup_temp() of the bag removes it", self.name, loc, self._error(exc, "abort", loc))

    # --- after the upload ---

    def _check_stored(self, key: str, loc: str, size: int, digests: Dict[str, str], expected_checksum: str,
                      lock_args: Mapping[str, Any]) -> None:
        """HEAD the new object: size, stored checksum, digests in metadata, retention."""
        stored = self._head(key, loc)
        if stored is None:
            raise StorageError("was written but a HEAD right after does not find it", target=self.name,
                               location=loc)
        problems = []
        if stored.size != size:
            problems.append(f"size {stored.size} stored, {size} sent")
        if stored.checksum_sha256 is not None and stored.checksum_sha256 != expected_checksum:
            problems.append(f"stored checksum {stored.checksum_sha256}, {expected_checksum} sent")
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
        if self._head(key, loc) is None:
            raise NotFound("not stored here", target=self.name, location=loc)
        try:
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except Exception as exc:  # noqa: BLE001
            raise self._error(exc, "delete", loc) from None

    # ------------------------------------------------------------------ reading

    def _get(self, key: str, loc: str) -> _ObjectReader:
        try:
            r = self.client.get_object(Bucket=self.bucket, Key=key)
        except Exception as exc:  # noqa: BLE001
            raise self._error(exc, "read", loc) from None
        return _ObjectReader(r["Body"], self, loc)

    def open_file(self, bag_id: BagId, relpath: str) -> BinaryIO:
        key, loc = self._checked_key(bag_id, relpath)
        self.ensure_bucket()
        return self._get(key, loc)  # type: ignore[return-value]

    def stat_file(self, bag_id: BagId, relpath: str) -> Optional[FileStat]:
        key, loc = self._checked_key(bag_id, relpath)
        self.ensure_bucket()
        stored = self._head(key, loc)
        if stored is None:
            return None
        return FileStat(size=stored.size, mtime=stored.mtime, stored_digests=stored.digests())

    # ------------------------------------------------------------------ listing

    def _list(self, prefix: str, *, delimiter: Optional[str] = None) -> Iterator[Tuple[str, bool]]:
        """(key or common prefix, is_prefix) under `prefix`, page by page."""
        self.ensure_bucket()
        args: Dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
        if delimiter:
            args["Delimiter"] = delimiter
        loc = f"s3://{self.bucket}/{prefix}"
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(**args):
                for item in page.get("CommonPrefixes") or ():
                    yield item["Prefix"], True
                for item in page.get("Contents") or ():
                    yield item["Key"], False
        except StorageError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise self._error(exc, "list", loc) from None

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
        aborted = 0
        try:
            for page in self.client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket,
                                                                                    Prefix=prefix):
                for upload in page.get("Uploads") or ():
                    self.client.abort_multipart_upload(Bucket=self.bucket, Key=upload["Key"],
                                                       UploadId=upload["UploadId"])
                    aborted += 1
        except Exception as exc:  # noqa: BLE001
            raise self._error(exc, "clear unfinished multipart uploads", loc) from None
        return aborted


# --------------------------------------------------------------------------------------------
# Helpers


class _Exists(Exception):
    """If-None-Match: * failed: something is stored under the key already."""


class _BadDigest(Exception):
    """The server refused a PUT whose bytes did not match the checksums sent."""


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


__all__ = ["S3Adapter", "RetentionSpec", "retain_until", "META_MTIME"]
