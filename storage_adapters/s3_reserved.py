"""Records on S3 targets: small objects under `<prefix>/.strongroom/` (storage_adapters.base.RESERVED).

A mixin of S3Adapter. A record is one PutObject (`put_new_object`) with `If-None-Match: *` (a
concurrent writer cannot be overwritten), Content-MD5 and x-amz-checksum-sha256 (the server
refuses damaged bytes), and the adapter's Object Lock retention when it has one: records are evidence (ledger
checkpoints, tombstones) and must outlive an operator who would rather they did not.
A key already taken is read back: the same bytes are ALREADY_PRESENT, others a ReplicaConflict.
"""

from __future__ import annotations

from typing import Iterator

from .base import RESERVED, NotFound, PutOutcome, ReplicaConflict, UnsafePath, check_record_key, checked_record_prefix


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
        if self.put_new_object(full, data, extra=self._lock_args()):
            return PutOutcome.WRITTEN
        # Taken: by these bytes (an earlier run) or by others.
        if self._stored_record(full, loc) == data:
            return PutOutcome.ALREADY_PRESENT
        raise ReplicaConflict("a different record is already stored here; not overwriting it",
                              target=self.name, location=loc)

    def read_record(self, key: str) -> bytes:
        full = self._record_object(key)
        self.ensure_bucket()
        return self._stored_record(full, self.record_location(key))

    def list_records(self, prefix: str = "") -> Iterator[str]:
        checked_record_prefix(self, prefix)
        base = self._records_base()
        found = [k[len(base):] for k, is_prefix in self._list(base + prefix) if not is_prefix and not k.endswith("/")]
        return iter(sorted(k for k in found if k))
