"""Small records the S3 layers pass between them (what a HEAD, a listing or a ListParts says;
what an upload sent) and the byte-level helpers they share (base64, timestamps, hashing a
stream, reading exactly n bytes).

Why separate: reads, uploads and multipart all speak these; keeping them apart from the
requests that produce them lets each layer be read on its own.
"""

from __future__ import annotations

import base64
import datetime as _dt
import hashlib
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Tuple

from strongroom.checksums import SUPPORTED, MultiHasher

from .base import CHUNK, HashingReader, PutItem, SourceMismatch

META_MTIME = "mtime"          # x-amz-meta-mtime: the source file's mtime (seconds, as text)
_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_ABSENT = object()            # a listing showed the key absent (put_files); If-None-Match still guards


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


def _hex_from_b64(text: str) -> Optional[str]:
    try:
        return base64.b64decode(text, validate=True).hex()
    except (ValueError, TypeError):
        return None


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


@dataclass(frozen=True)
class _Job:
    """One put_files item with its checked digests, key and location."""

    index: int
    item: PutItem
    digests: Dict[str, str]
    key: str
    loc: str


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
