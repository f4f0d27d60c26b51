"""A small client for ClamAV's `clamd`, speaking its documented socket protocol by hand.

Why by hand: the PyPI `clamd` package (1.0.2, 2014) and `pyclamd` (2017) are unmaintained, and
the part of the protocol Strongroom needs is small (clamd(8), "COMMANDS"):

* `zVERSION\\0` -> `ClamAV 1.4.6/27500/Wed Dec  2 14:53:40 2026\\0` (engine / signature
  database version / database build date; the last two are missing when clamd has no CVD/CUD).
* `zINSTREAM\\0`, then chunks each prefixed by its length as a 4-byte big-endian unsigned int,
  then a zero-length chunk; the reply is `stream: OK\\0`, `stream: NAME FOUND\\0`, or
  `... ERROR\\0` (e.g. `INSTREAM size limit exceeded. ERROR` once more than clamd's
  StreamMaxLength was sent; clamd then closes the connection, so a send may fail with EPIPE
  before the reply can be read: the reply is still read and reported).

Everything that is not a clear "OK" or "FOUND" is a `ClamdError`: an unreachable daemon, a
timeout, a connection closed mid-stream or an unknown reply is never taken for "clean".
"""

from __future__ import annotations

import re
import socket
import struct
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Optional, Tuple

DEFAULT_TIMEOUT = 60.0          # seconds for connecting and for each reply
DEFAULT_STREAM_MAX = 25 * 2**20  # clamd's own StreamMaxLength default (25M)
FRAME = 1 << 20                  # largest chunk sent in one INSTREAM frame
_MAX_REPLY = 64 * 1024


class ClamdError(Exception):
    """clamd could not give a verdict: the message says which daemon and why."""


class StreamLimitExceeded(ClamdError):
    """clamd refused a stream longer than its StreamMaxLength."""


@dataclass(frozen=True)
class Endpoint:
    """Where clamd listens: a unix socket path, or host and port. Picklable (sent to workers)."""

    socket: Optional[str] = None
    host: Optional[str] = None
    port: Optional[int] = None
    timeout: float = DEFAULT_TIMEOUT
    stream_max_bytes: int = DEFAULT_STREAM_MAX  # must not exceed clamd's StreamMaxLength

    def describe(self) -> str:
        return f"clamd at {self.socket}" if self.socket else f"clamd at {self.host}:{self.port}"

    def connect(self) -> socket.socket:
        try:
            if self.socket:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(self.timeout)
                sock.connect(self.socket)
            else:
                sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
                sock.settimeout(self.timeout)
        except socket.timeout:
            raise ClamdError(f"{self.describe()}: no answer within {self.timeout:g} s")
        except OSError as exc:
            raise ClamdError(f"{self.describe()} is unreachable ({exc.strerror or exc})")
        return sock


@dataclass(frozen=True)
class EngineVersion:
    """What `VERSION` said: recorded as the PREMIS agent of every virus check."""

    engine: str          # e.g. "ClamAV 1.4.6"
    db_version: str      # e.g. "27500"; "" when clamd loaded no versioned database
    db_date: str         # as clamd prints it, e.g. "Wed Dec  2 14:53:40 2026"; "" when unknown
    raw: str

    @property
    def db_datetime(self) -> Optional[datetime]:
        """The signature database's build time (UTC), for "definitions are N days old"."""
        if not self.db_date:
            return None
        try:
            return datetime.strptime(" ".join(self.db_date.split()), "%a %b %d %H:%M:%S %Y").replace(
                tzinfo=timezone.utc)
        except ValueError:
            return None

    def describe(self) -> str:
        if not self.db_version:
            return f"{self.engine}, signature database of unknown version"
        return f"{self.engine}, signature database {self.db_version} of {self.db_date}"


def parse_version(reply: str) -> EngineVersion:
    parts = reply.strip().split("/")
    if not parts[0].startswith("ClamAV "):
        raise ClamdError(f"unexpected VERSION reply {reply[:200]!r}")
    return EngineVersion(parts[0], parts[1] if len(parts) > 1 else "", "/".join(parts[2:]).strip(), reply.strip())


_FOUND = re.compile(r"^stream: (.+) FOUND$", re.S)


def parse_scan_reply(reply: str) -> Optional[str]:
    """None for a clean stream, the signature name when infected; ClamdError for anything else."""
    reply = reply.strip()
    if reply == "stream: OK":
        return None
    found = _FOUND.match(reply)
    if found:
        return found.group(1)
    if "size limit exceeded" in reply:
        raise StreamLimitExceeded(f"clamd refused the stream: {reply}")
    if reply.endswith("ERROR"):
        raise ClamdError(f"clamd could not scan the stream: {reply}")
    raise ClamdError(f"unexpected reply from clamd: {reply[:200]!r}")


def _read_reply(sock: socket.socket, endpoint: Endpoint) -> str:
    """Read up to the NUL that ends a z-command reply (or the peer closing)."""
    data = b""
    try:
        while b"\0" not in data and len(data) < _MAX_REPLY:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    except socket.timeout:
        raise ClamdError(f"{endpoint.describe()}: no reply within {endpoint.timeout:g} s")
    except OSError as exc:
        raise ClamdError(f"{endpoint.describe()}: connection lost while waiting for its reply "
                         f"({exc.strerror or exc})")
    if not data:
        raise ClamdError(f"{endpoint.describe()} closed the connection without a reply")
    return data.split(b"\0", 1)[0].decode("utf-8", "replace")


def version(endpoint: Endpoint) -> EngineVersion:
    """Ask clamd for its engine and signature database versions (also proves it answers)."""
    with endpoint.connect() as sock:
        try:
            sock.sendall(b"zVERSION\0")
        except OSError as exc:
            raise ClamdError(f"{endpoint.describe()}: cannot send ({exc.strerror or exc})")
        return parse_version(_read_reply(sock, endpoint))


class InStream:
    """One INSTREAM scan: `send()` bytes as they are read, `verdict()` at the end.

    Used as a context manager so the connection is closed whatever happens.
    """

    def __init__(self, endpoint: Endpoint):
        self.endpoint = endpoint
        self.sent = 0
        self._sock = endpoint.connect()
        self._broken: Optional[str] = None
        self._send(b"zINSTREAM\0")

    def __enter__(self) -> "InStream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _send(self, data) -> None:
        if self._broken is not None:
            return  # the daemon stopped listening: its reply (read in verdict) says why
        try:
            self._sock.sendall(data)
        except socket.timeout:
            raise ClamdError(f"{self.endpoint.describe()}: stopped accepting data for {self.endpoint.timeout:g} s")
        except OSError as exc:  # EPIPE/ECONNRESET: clamd closed, maybe after a size-limit reply
            self._broken = exc.strerror or str(exc)

    def send(self, data) -> None:
        view = memoryview(data)
        for start in range(0, len(view), FRAME):
            piece = view[start:start + FRAME]
            self._send(struct.pack(">I", len(piece)))
            self._send(piece)
            self.sent += len(piece)

    def verdict(self) -> Optional[str]:
        """None if clean, else the signature name; ClamdError if clamd gave no clear verdict."""
        self._send(struct.pack(">I", 0))
        try:
            reply = _read_reply(self._sock, self.endpoint)
        except ClamdError:
            if self._broken is not None:
                raise ClamdError(f"{self.endpoint.describe()}: connection lost after {self.sent:,} bytes "
                                 f"of the stream ({self._broken})")
            raise
        finally:
            self.close()
        return parse_scan_reply(reply)


def scan_bytes(endpoint: Endpoint, data: bytes) -> Optional[str]:
    """Scan one buffer; None if clean, else the signature name."""
    with InStream(endpoint) as stream:
        stream.send(data)
        return stream.verdict()


def split_endpoint(text: str) -> Tuple[Optional[str], Optional[str], Optional[int]]:
    """'/run/clamav/clamd.ctl' -> socket; 'host:3310' -> host and port (for the environment override)."""
    if text.startswith("/") or ":" not in text:
        return text, None, None
    host, _, port = text.rpartition(":")
    return None, host, int(port)
