"""Records on the folder target: small files under `<root>/.strongroom/` (storage_adapters.base.RESERVED).

`StoredRecords` is a part of `FilesystemAdapter` (a mixin, like `fs_read.StoredReads`): it uses
the adapter's link-refusing folder walk (`_dir`, `_walk`) and its never-overwriting store of a
file (`_store`: locked temp file, fsync, link(), folder fsync), so a record gets exactly the
guarantees of a bag file: complete and durable under its name or not there at all, never
replacing anything, no link followed at any level.
"""

from __future__ import annotations

import hashlib
import io
import time
from typing import Iterator, Tuple

from .base import RESERVED, NotFound, PutOutcome, UnsafePath, check_record_key, checked_record_prefix
from .fs_common import TEMP_SUFFIX, WriteInProgress, is_temp_name

#: How long a record's writer waits for another process writing the same record (they are small).
RECORD_WAIT = 10.0


class StoredRecords:
    """The record methods of `FilesystemAdapter` (see base.StorageAdapter.put_record)."""

    def record_location(self, key: str) -> str:
        return "/".join((str(self.root), RESERVED, key))

    def _record_key(self, key: str) -> Tuple[Tuple[str, ...], str, str]:
        """(folders below the root, file name, location); UnsafePath for a bad key."""
        loc = self.record_location(key)
        try:
            segments = check_record_key(key)
        except ValueError as exc:
            raise UnsafePath(f"refused record key: {exc}", target=self.name, location=loc) from None
        if any(is_temp_name(seg) for seg in segments):
            raise UnsafePath(f"refused record key: it has the form Strongroom reserves for its temporary "
                             f"files (.NAME{TEMP_SUFFIX})", target=self.name, location=loc)
        return (RESERVED,) + segments[:-1], segments[-1], loc

    def put_record(self, key: str, data: bytes) -> PutOutcome:
        """As StorageAdapter.put_record. Two commands that ended at once may write the same record
        (the same ledger checkpoint) at the same moment: the later one waits, up to RECORD_WAIT
        seconds, for the other to finish, then compares what is stored as for any existing record."""
        dirs, name, loc = self._record_key(key)
        digests = {"sha256": hashlib.sha256(data).hexdigest()}
        deadline = time.monotonic() + RECORD_WAIT
        while True:
            try:
                with self._dir(dirs, create=True) as dfd:
                    return self._store(dfd, name, loc, io.BytesIO(data), len(data), digests, None, replace=False)
            except WriteInProgress:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def read_record(self, key: str) -> bytes:
        dirs, name, loc = self._record_key(key)
        with self._dir(dirs, create=False) as dfd:
            with self._open_regular(dfd, name, loc) as fh:
                try:
                    return fh.read()
                except OSError as exc:
                    raise self._failure(exc, loc, writing=False) from None

    def list_records(self, prefix: str = "") -> Iterator[str]:
        checked_record_prefix(self, prefix)
        folder = tuple(s for s in prefix.split("/")[:-1] if s)
        base = "/".join(folder) + "/" if folder else ""
        try:
            found = [key for _, name, key in self._walk((RESERVED,) + folder, base)
                     if not is_temp_name(name) and key.startswith(prefix)]
        except NotFound:
            found = []
        return iter(sorted(found))
