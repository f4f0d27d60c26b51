"""Reading from S3: HEAD, GET as a resumable stream, listings (a bag's files, the bags).

A GET's body that dies half way is re-opened at the byte where it stopped, pinned to the same
object version, so a caller hashing the stream hashes one object's bytes exactly once.
"""

from __future__ import annotations

import io
import logging
import time
from typing import (
    TYPE_CHECKING,
    Any,
    BinaryIO,
    Dict,
    Iterator,
    List,
    Mapping,
    Optional,
    Tuple,
)

from strongroom.bag_id import BagId

from .base import RESERVED, FileStat, StorageError, bag_segments
from .retrying import Budget, current
from .s3_errors import _MISSING, _UseClient
from .s3_records import _Stored

if TYPE_CHECKING:
    from .s3 import S3Adapter

log = logging.getLogger("storage_adapters.s3")

RESUME_PROGRESS = 1 << 20     # a GET resumed after at least this many bytes starts its failure count afresh


class _ObjectReader(io.RawIOBase):
    """A GET's streaming body as a file object: reads stream from the socket (memory stays flat).

    A body that dies half way (connection reset, timeout, truncated answer) is re-opened at the
    byte where it stopped with a ranged GET pinned to the same object (VersionId, or If-Match on
    the ETag), spending from the retry budget of the GET that opened it (failures are forgiven
    once RESUME_PROGRESS bytes were read: a link that breaks every few bytes is given up on); a caller hashing the
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
        self._since_failure = 0
        # the budget of the GET that opened this reader (one budget per object), else a fresh one
        self._budget = current() or Budget(adapter.retry_policy)

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
                    self._budget.progressed()
            return n

    def _reopen(self, err: StorageError, transient: Optional[bool] = None) -> None:
        adapter = self._adapter
        if transient is not None:
            err.transient = transient  # type: ignore[attr-defined]
        self._since_failure = 0
        if not self._budget.fail(err):
            raise err
        delay = adapter._backoff(self._budget.failures)
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



class S3Reads:
    """Mixin of S3Adapter: HEAD, GET and listings."""

    def _head(self, key: str, loc: str) -> Optional[_Stored]:
        try:
            r = self.client.head_object(Bucket=self.bucket, Key=key, ChecksumMode="ENABLED")
        except Exception as exc:  # noqa: BLE001
            if self._code(exc) in _MISSING:
                return None
            raise self._error(exc, "read the object's details (HEAD)", loc) from None
        return _Stored.from_response(r)

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
            if not is_prefix or lib == f"{base}{RESERVED}/":  # records, not a library: not walked
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
