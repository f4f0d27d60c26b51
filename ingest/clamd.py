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

* `zIDSESSION\0` starts a session: further z-commands on the same connection, each answered
  `<id>: <reply>\0`, ids counting from 1. Staging scans thousands of small files: one new
  connection per file costs clamd an accept and a hand-over to its thread pool each time, so a
  scan that is to be `reuse`d runs inside a session kept per process and thread (one command
  at a time, its reply read before the next is sent, as clamd(8) requires).

Everything that is not a clear "OK" or "FOUND" is a `ClamdError`: an unreachable daemon, a
timeout, a connection closed mid-stream or an unknown reply is never taken for "clean". In a
session a reply must carry the id of the command just sent, or it is an error too; a session
is used again only after a clean finish (verdict read, nothing more in the socket), never after
an error or an abandoned stream, never in a forked child, and not once idle long enough for
clamd's IdleTimeout to be near (a session clamd closed while idle is noticed before a command
is sent, so no file's bytes are ever lost to it).
"""

from __future__ import annotations

import os
import re
import socket
import struct
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Optional, Tuple

from strongroom.sockets import idle_socket_quiet

DEFAULT_TIMEOUT = 60.0          # seconds for connecting and for each reply
DEFAULT_STREAM_MAX = 25 * 2**20  # clamd's own StreamMaxLength default (25M)
FRAME = 1 << 20                  # largest chunk sent in one INSTREAM frame
_MAX_REPLY = 64 * 1024
REUSE_IDLE = 10.0  # seconds: an idle session older than this is closed, not used (IdleTimeout: 30)


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


def _recv_to_nul(sock: socket.socket, endpoint: Endpoint) -> bytes:
    """What clamd sends up to the NUL that ends a z-command reply (or until it closes)."""
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
    return data


def _read_reply(sock: socket.socket, endpoint: Endpoint) -> str:
    """Read up to the NUL that ends a z-command reply (or the peer closing)."""
    data = _recv_to_nul(sock, endpoint)
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


class _Session:
    """One IDSESSION connection: its socket, the next command id, and who may use it."""

    def __init__(self, endpoint: Endpoint):
        self.sock = endpoint.connect()
        self.next_id = 1
        self.pid = os.getpid()
        self.idle_since = time.monotonic()
        try:
            self.sock.sendall(b"zIDSESSION\0")
        except OSError as exc:
            self.sock.close()
            raise ClamdError(f"{endpoint.describe()}: cannot start a session ({exc.strerror or exc})")

    def usable(self) -> bool:
        """Same process, not idle too long, and clamd has not closed it (nor sent anything)."""
        if self.pid != os.getpid() or time.monotonic() - self.idle_since > REUSE_IDLE:
            return False
        try:
            # EOF, or a reply nobody asked for: either way, not this session
            return idle_socket_quiet(self.sock)
        except (OSError, ValueError):
            return False

    def close(self) -> None:
        # In a forked child this closes only the child's copy of the descriptor: the parent's
        # session stays open (and is never used by the child, see usable()).
        self.sock.close()


_idle = threading.local()  # endpoint -> the idle _Session of this thread


def _take_session(endpoint: Endpoint) -> Tuple[_Session, bool]:
    """(session, reused): this thread's idle session to the endpoint if still good, else a new one."""
    pool = getattr(_idle, "sessions", None)
    if pool is None:
        pool = _idle.sessions = {}
    old = pool.pop(endpoint, None)
    if old is not None:
        if old.usable():
            return old, True
        old.close()
    return _Session(endpoint), False


def _give_back(endpoint: Endpoint, session: _Session) -> None:
    session.idle_since = time.monotonic()
    pool = getattr(_idle, "sessions", None)
    if pool is None:
        pool = _idle.sessions = {}
    stale = pool.pop(endpoint, None)
    if stale is not None and stale is not session:
        stale.close()
    pool[endpoint] = session


def close_sessions() -> None:
    """Close this thread's idle sessions (clamd would close them after its IdleTimeout anyway)."""
    for session in list(getattr(_idle, "sessions", {}).values()):
        session.close()
    _idle.sessions = {}


class InStream:
    """One INSTREAM scan: `send()` bytes as they are read, `verdict()` at the end.

    Used as a context manager so the connection is closed whatever happens. With `reuse`, the
    scan runs in this thread's clamd session (see the module docstring), which is kept for the
    next scan only when this one ended with a clean verdict exchange.
    """

    def __init__(self, endpoint: Endpoint, *, reuse: bool = False):
        self.endpoint = endpoint
        self.sent = 0
        self._broken: Optional[str] = None
        self._session: Optional[_Session] = None
        self._id = 0
        if not reuse:
            self._sock: Optional[socket.socket] = endpoint.connect()
            self._send(b"zINSTREAM\0")
            return
        session, reused = _take_session(endpoint)
        if reused:
            try:
                session.sock.sendall(b"zINSTREAM\0")
            except OSError:
                # closed by clamd between the check and the command: no byte of a file was sent
                # yet, so a fresh session loses nothing
                session.close()
                session = _Session(endpoint)
            else:
                self._attach(session)
                return
        self._attach(session)
        self._send(b"zINSTREAM\0")

    def _attach(self, session: _Session) -> None:
        self._session, self._sock = session, session.sock
        self._id = session.next_id
        session.next_id += 1

    def __enter__(self) -> "InStream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection (a session too: a scan not finished by verdict() leaves it
        mid-stream, unusable)."""
        if self._session is not None:
            self._session.close()
            self._session = None
            self._sock = None
        elif self._sock is not None:
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
        keep = False
        try:
            if self._session is None:
                reply = _read_reply(self._sock, self.endpoint)
            else:
                reply, extra = _read_session_reply(self._sock, self.endpoint)
                reply = self._own_reply(reply)
                keep = self._broken is None and not extra
        except ClamdError:
            if self._broken is not None:
                raise ClamdError(f"{self.endpoint.describe()}: connection lost after {self.sent:,} bytes "
                                 f"of the stream ({self._broken})")
            raise
        finally:
            if keep:
                session, self._session, self._sock = self._session, None, None
            else:
                self.close()
        try:
            found = parse_scan_reply(reply)
        except ClamdError:
            if keep:
                session.close()  # clamd may close a session after an error reply: start afresh
            raise
        if keep:
            _give_back(self.endpoint, session)
        return found

    def _own_reply(self, reply: str) -> str:
        """The reply without its `<id>: `; a reply for any other command is an error."""
        prefix = f"{self._id}: "
        if not reply.startswith(prefix):
            raise ClamdError(f"{self.endpoint.describe()}: reply {reply[:200]!r} is not for request {self._id} "
                             f"of the session")
        return reply[len(prefix):]


def _read_session_reply(sock: socket.socket, endpoint: Endpoint) -> Tuple[str, bytes]:
    """A session reply up to its NUL, and whatever came after it (nothing, if all is well)."""
    data = _recv_to_nul(sock, endpoint)
    if b"\0" not in data:
        raise ClamdError(f"{endpoint.describe()} closed the connection without a reply" if not data else
                         f"{endpoint.describe()}: reply not terminated: {data[:200]!r}")
    reply, _, extra = data.partition(b"\0")
    return reply.decode("utf-8", "replace"), extra


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
