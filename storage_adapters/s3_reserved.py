"""Records on S3 targets: small objects under `<prefix>/.strongroom/` (storage_adapters.base.RESERVED).

A mixin of S3Adapter. A record is one PutObject with `If-None-Match: *` (a concurrent writer
cannot be overwritten), Content-MD5 and x-amz-checksum-sha256 (the server refuses damaged
bytes), and the adapter's Object Lock retention when it has one: records are evidence (ledger
checkpoints, tombstones) and must outlive an operator who would rather they did not.
A key already taken is read back: the same bytes are ALREADY_PRESENT, others a ReplicaConflict.
"""

from __future__ import annotations

import hashlib
from typing import Iterator

from .base import RESERVED, NotFound, PutOutcome, ReplicaConflict, StorageError, UnsafePath, check_record_key
from .s3_errors import _BadDigest, _Exists
from .s3_records import _b64


class S3Records:
    """The record methods of S3Adapter (see base.StorageAdapter.put_record)."""

    def _records_base(self) -> str:
        return f"{self.prefix}/{RESERVED}/" if self.prefix else f"{RESERVED}/"

    def record_location(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._records_base()}{key}"

    def _record_object(self, key: str) -> str:
        try:
            check_record_key(key)
        except ValueError as exc:
            raise UnsafePath(f"refused record key: {exc}", target=self.name,
                             location=self.record_location(key)) from None
        return self._records_base() + key

    def _stored_record(self, full: str, loc: str) -> bytes:
        reader = self._get(full, loc, missing_ok=True)
        if reader is None:
            raise NotFound("not stored here", target=self.name, location=loc)
        with reader as fh:
            return fh.read()

    def put_record(self, key: str, data: bytes) -> PutOutcome:
        full = self._record_object(key)
        loc = self.record_location(key)
        self.ensure_bucket()
        args = {"Bucket": self.bucket, "Key": full, "Body": data, "ContentMD5": _b64(hashlib.md5(data).digest()),
                "ChecksumSHA256": _b64(hashlib.sha256(data).digest()), **self._lock_args()}

        def put(attempt: int, last: bool) -> bool:
            try:
                self._call_put(self.client.put_object, args, loc, True,
                               exists=lambda: self._head(full, loc) is not None)
            except _Exists:
                return False
            except _BadDigest:
                err = StorageError("the server refused the bytes as damaged (BadDigest)", target=self.name,
                                   location=loc)
                err.transient = True  # type: ignore[attr-defined]
                raise err from None
            return True

        if self._if_none_match or self._head(full, loc) is None:
            if self._retrying(loc, put):
                return PutOutcome.WRITTEN
        # Taken: by these bytes (an earlier run, or an attempt whose answer was lost) or by others.
        if self._stored_record(full, loc) == data:
            return PutOutcome.ALREADY_PRESENT
        raise ReplicaConflict("a different record is already stored here; not overwriting it",
                              target=self.name, location=loc)

    def read_record(self, key: str) -> bytes:
        full = self._record_object(key)
        self.ensure_bucket()
        return self._stored_record(full, self.record_location(key))

    def list_records(self, prefix: str = "") -> Iterator[str]:
        try:
            check_record_key(prefix, prefix=True)
        except ValueError as exc:
            raise UnsafePath(f"refused record prefix: {exc}", target=self.name,
                             location=self.record_location(prefix)) from None
        base = self._records_base()
        found = [k[len(base):] for k, is_prefix in self._list(base + prefix) if not is_prefix and not k.endswith("/")]
        return iter(sorted(k for k in found if k))
