"""The checksum algorithms Strongroom accepts, and a multi-digest hasher.

One place decides which names are valid in policies, BagIt manifests and the catalog, so a
policy can never ask for an algorithm that the bag writer or the auditor cannot compute.
All come from the standard library's `hashlib` (OpenSSL-backed, releases the GIL on large
buffers, so threads hash in parallel).
"""

from __future__ import annotations

import hashlib
from typing import Dict, Iterable, Tuple

from strongroom import byte_ticks

# BagIt manifest names (RFC 8493 section 2.4 uses the lower-case hashlib-style names).
SUPPORTED: Tuple[str, ...] = ("md5", "sha1", "sha256", "sha512")


class MultiHasher:
    """Feeds the same bytes to several digests at once, so a file is read a single time."""

    __slots__ = ("algorithms", "_hashers", "size")

    def __init__(self, algorithms: Iterable[str], *, foreign_ok: bool = False):
        """`foreign_ok`: also any other hashlib algorithm (sha224, sha3_256...), which a bag made
        elsewhere may use; only validation asks for that, never a policy."""
        self.algorithms = tuple(algorithms)
        unknown = [a for a in self.algorithms if a not in SUPPORTED]
        if unknown and not foreign_ok:
            raise ValueError(f"unsupported checksum algorithm(s) {unknown}; allowed: {', '.join(SUPPORTED)}")
        self._hashers = [hashlib.new(a) for a in self.algorithms]
        self.size = 0

    def update(self, chunk) -> None:
        for h in self._hashers:
            h.update(chunk)
        self.size += len(chunk)
        byte_ticks.add(len(chunk))  # bytes within a file, for progress displays

    def hexdigests(self) -> Dict[str, str]:
        return {a: h.hexdigest() for a, h in zip(self.algorithms, self._hashers)}


def hash_file(path, algorithms: Iterable[str], chunk_size: int = 1 << 20, *,
              foreign_ok: bool = False) -> Tuple[int, Dict[str, str]]:
    """Size and digests of a file, read once in chunks (memory stays flat whatever its size)."""
    hasher = MultiHasher(algorithms, foreign_ok=foreign_ok)
    buf = bytearray(chunk_size)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as fh:
        while True:
            n = fh.readinto(buf)
            if not n:
                break
            hasher.update(view[:n])
    return hasher.size, hasher.hexdigests()
