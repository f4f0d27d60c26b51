"""Format identification with FIDO (opf-fido), in-process, giving the `fido` command's answers.

FIDO is loaded once per process (`Identifier`), never run once per file. The decision logic of
`Fido.identify_file` is reproduced step by step in `Identifier._decide`, so that ingest can
identify a file from the head and tail it already read while copying it (`identify_buffers`)
and still get what `fido FILE` prints:

1. signature matching on the first and last `bufsize` bytes;
2. if a match is a ZIP or OLE2 container, container signatures (the file itself is opened);
   a container match wins;
3. otherwise the signature matches, unless there are none or the file is empty, in which case
   the matches on the file extension (FIDO's "extension" match), possibly none at all.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from dataclasses import dataclass
from typing import Iterable, Iterator, List, Optional, Sequence, Tuple

import fido as _fido_pkg

from ingest.fido_matcher import FastFido

log = logging.getLogger(__name__)

METHODS = ("signature", "container", "extension", "none")


@dataclass(frozen=True)
class Identification:
    """What FIDO says a file is. Empty strings when nothing matched (method "none")."""

    puid: str
    format_name: str
    format_version: str
    mime: str
    method: str  # "signature" | "container" | "extension" | "none"
    alternatives: Tuple[str, ...]  # further PUIDs FIDO returned, in FIDO's order, no repeats
    fido_version: str
    signature_version: str  # PRONOM signature file version, e.g. "v109"

    @property
    def puids(self) -> Tuple[str, ...]:
        """Every PUID FIDO returned, first one first."""
        return ((self.puid,) if self.puid else ()) + self.alternatives

    def as_dict(self) -> dict:
        """Plain fields (alternatives as a list), without dataclasses.asdict's deep copying."""
        return {"puid": self.puid, "format_name": self.format_name,
                "format_version": self.format_version, "mime": self.mime, "method": self.method,
                "alternatives": list(self.alternatives), "fido_version": self.fido_version,
                "signature_version": self.signature_version}


class Identifier:
    """One loaded FIDO; identify as many files as you like with it.

    Not thread-safe (FIDO keeps per-file state on the instance): use one per thread or process.
    """

    def __init__(self) -> None:
        self._fido = FastFido()
        self.bufsize: int = self._fido.bufsize
        self.fido_version: str = _fido_pkg.__version__
        self.signature_version: str = f"v{self._fido.pronom_version}"
        self.signature_file: str = self._fido.signature_file
        self.container_signature_file: str = self._fido.containersignature_file

    def identify_path(self, path) -> Identification:
        """Identify one file on disk, reading its head and tail as `fido` does."""
        path = os.fspath(path)
        size = os.stat(path).st_size
        with open(path, "rb") as handle:
            head = handle.read(min(size, self.bufsize))
            if size <= self.bufsize:
                tail = head
            else:
                handle.seek(size - self.bufsize)
                tail = handle.read(self.bufsize)
        return self.identify_buffers(path, size, head, tail, path=path)

    def identify_buffers(self, name: str, size: int, head: bytes, tail: bytes,
                         path=None) -> Identification:
        """Identify a file from its first and last min(size, bufsize) bytes.

        `name` gives the extension for FIDO's extension fallback. `path`, a readable copy of the
        file, is opened only when the signatures say ZIP or OLE2, for container signatures;
        without it such files raise ValueError rather than get an answer `fido` would not give.
        """
        expected = min(size, self.bufsize)
        if len(head) != expected or len(tail) != expected:
            raise ValueError(f"{name}: identify_buffers needs the first and last {expected} bytes "
                             f"of this {size}-byte file, got {len(head)} and {len(tail)}")
        fido = self._fido
        fido.current_file = name
        fido.current_filesize = size
        matches = fido.match_formats(head, tail)
        container = fido.container_type(matches)
        if container in ("zip", "ole"):
            if path is None:
                raise ValueError(f"{name}: looks like a {container} container; identify_buffers "
                                 "needs path= to read its container signatures")
            try:
                found = fido.match_container_file(container, os.fspath(path))
            except Exception as exc:  # `fido` prints an error and no answer, or a traceback
                log.warning("%s: container signatures could not be read (%s: %s); using the "
                            "signature match", name, type(exc).__name__, exc)
                found = []
            if found:
                return self._result(found, "container")
        if matches and size > 0:
            return self._result(matches, "signature")
        matches = fido.match_extensions(name)
        return self._result(matches, "extension" if matches else "none")

    def _result(self, matches: Sequence[tuple], method: str) -> Identification:
        if not matches:
            return Identification("", "", "", "", "none", (), self.fido_version, self.signature_version)
        puids: List[str] = []
        for fmt, _signature_name in matches:
            puid = self._fido.get_puid(fmt)
            if puid not in puids:
                puids.append(puid)
        first = matches[0][0]
        return Identification(
            puid=puids[0],
            format_name=first.findtext("name") or "",
            format_version=first.findtext("version") or "",
            mime=first.findtext("mime") or "",
            method=method,
            alternatives=tuple(puids[1:]),
            fido_version=self.fido_version,
            signature_version=self.signature_version,
        )


# ---- many files, several processes ---------------------------------------------------------
_worker_identifier: Optional[Identifier] = None


def _worker_init() -> None:
    global _worker_identifier
    if _worker_identifier is None:
        _worker_identifier = Identifier()


def _worker_identify(path: str) -> Tuple[str, Identification]:
    return path, _worker_identifier.identify_path(path)


def identify_paths(paths: Iterable, workers: int = 2) -> Iterator[Tuple[str, Identification]]:
    """Yield (path, Identification) for each path, in the order given.

    With workers > 1 the files are shared among that many processes, each loading FIDO once
    (forked from this process when the platform allows, so the loaded signatures are shared).
    An unreadable file raises OSError naming it.
    """
    global _worker_identifier
    paths = [os.fspath(p) for p in paths]
    if workers <= 1 or len(paths) < 2:
        if _worker_identifier is None:
            _worker_identifier = Identifier()
        for path in paths:
            yield _worker_identify(path)
        return
    methods = multiprocessing.get_all_start_methods()
    if "fork" in methods:
        _worker_init()  # load before forking: the workers inherit it
        context = multiprocessing.get_context("fork")
    else:  # pragma: no cover - not on Linux
        context = multiprocessing.get_context()
    chunk = max(1, min(64, len(paths) // (workers * 8)))
    with context.Pool(workers, initializer=_worker_init) as pool:
        yield from pool.imap(_worker_identify, paths, chunksize=chunk)
