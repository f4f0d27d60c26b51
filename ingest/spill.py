"""A deposit's list of source files kept on disk instead of in memory.

Why: a source of a million files listed as Python objects takes ~0.5 KiB per file, and the
deposit's memory then grows with its size (2.6 GiB at a million files). The scan writes each
file's record (path, size, mtime, mode, device and inode) to an anonymous temporary file as it
walks, and every later pass (the checks before any work, the split into bags, staging one bag
after the other) reads the records back in walk order. Only running totals stay in memory.

The file is created unlinked (O_TMPFILE, or unlinked at once): a process killed at any point
leaves nothing behind, and no other process can change it. It holds only what the scan saw
(names and stat fields, never payload bytes): the same facts the in-memory list held.
"""

from __future__ import annotations

import io
import os
import struct
import tempfile
from typing import TYPE_CHECKING, BinaryIO, Iterator, Optional

if TYPE_CHECKING:
    from .scan import SourceFile

# size, mtime_ns, mode, st_dev, st_ino, length of relpath, length of a separate abspath (0: root/relpath)
_HEAD = struct.Struct("<qqIQQII")


class SpilledFiles:
    """SourceFile records in walk order, on disk; iterable any number of times, never indexed.

    `len()`, truth and `total_bytes` come from counters kept while writing, so they cost no pass.
    """

    def __init__(self, root: bytes, folder: Optional[str] = None) -> None:
        self._root = root
        self._fh: BinaryIO = tempfile.TemporaryFile(prefix=".strongroom-scan-", dir=folder, buffering=0)
        self._out = io.BufferedWriter(self._fh, buffer_size=1 << 20)  # type: ignore[arg-type]
        self._count = 0
        self.total_bytes = 0
        self._writing = True

    def append(self, f: "SourceFile") -> None:
        raw = f.relpath.encode("utf-8")
        own = b"" if f.abspath == self._root + b"/" + raw else f.abspath
        self._out.write(_HEAD.pack(f.size, f.mtime_ns, f.mode, f.inode[0], f.inode[1], len(raw), len(own)))
        self._out.write(raw)
        self._out.write(own)
        self._count += 1
        self.total_bytes += f.size

    def _finish_writing(self) -> None:
        if self._writing:
            self._out.flush()
            self._writing = False

    def __len__(self) -> int:
        return self._count

    def __bool__(self) -> bool:
        return self._count > 0

    def __iter__(self) -> Iterator["SourceFile"]:
        self._finish_writing()
        return self._read(self._fh.fileno())  # pread: passes may interleave, no shared offset

    def _read(self, fd: int) -> Iterator["SourceFile"]:
        from .scan import SourceFile  # scan imports this module

        offset, buf, start = 0, b"", 0
        head = _HEAD.size
        root = self._root + b"/"
        for i in range(self._count):
            if len(buf) - start < head:
                chunk = os.pread(fd, 1 << 20, offset)
                buf, start, offset = buf[start:] + chunk, 0, offset + len(chunk)
            size, mtime_ns, mode, dev, ino, n_rel, n_own = _HEAD.unpack_from(buf, start)
            need = head + n_rel + n_own
            while len(buf) - start < need:
                chunk = os.pread(fd, max(1 << 20, need), offset)
                if not chunk:
                    raise OSError(f"the scan's spill file ends early (record {i + 1} of {self._count})")
                buf, start, offset = buf[start:] + chunk, 0, offset + len(chunk)
            raw = buf[start + head:start + head + n_rel]
            own = buf[start + head + n_rel:start + need]
            start += need
            yield SourceFile(raw.decode("utf-8"), own or root + raw, size, mtime_ns, mode, (dev, ino))

    def close(self) -> None:
        self._writing = False
        self._out.close()  # closes the file too
