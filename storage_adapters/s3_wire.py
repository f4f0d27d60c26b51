"""SigV4-signed S3 requests on kept-alive `http.client` connections: the small-object fast path.

Why by hand: for objects of a few KiB, the CPU of the client itself sets the pace on a small
machine (the server wants the other core). Measured on 20,000 PUTs of 1-64 KiB, botocore's
request objects, header dictionaries, signer and urllib3's pool spend most of a request's client
CPU on bookkeeping; the request below is the same bytes on the wire (SigV4 with a known payload
hash, the same headers) for a fraction of it. The numbers are in docs/benchmarks.md.

Scope, deliberately small: `http://` and `https://` endpoints without a proxy (TLS through
`ssl` with the CA bundle boto3 would use: over https urllib3's per-request bookkeeping doubled the
client CPU of small files); everything else (proxies, AWS itself, redirects) stays on botocore's
tested machinery. Errors come back as the answer
(status, headers, body) for the caller to turn into botocore's ClientError, and transport
failures as the built-in ConnectionError/TimeoutError, which the adapter retries.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import hmac
import http.client
import io
import ssl
import threading
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Tuple
from urllib.parse import quote, urlsplit

from strongroom.sockets import idle_socket_quiet

ALGORITHM = "AWS4-HMAC-SHA256"


@dataclass(frozen=True)
class Answer:
    """What a request got back when the body was read whole (PUTs, error answers)."""

    status_code: int
    headers: Mapping[str, str]   # case-insensitive (http.client's message)
    content: bytes


def query_string(params: Mapping[str, str]) -> str:
    """The canonical query of SigV4 (names sorted, names and values URI-encoded), also what is
    sent, so that the request and its signature cannot disagree."""
    return "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(params.items()))


class Signer:
    """AWS Signature Version 4 for S3 (header form), with the day's signing key cached."""

    def __init__(self, region: str, service: str = "s3"):
        self.region = region
        self.service = service
        self._key: Tuple[str, str, bytes] = ("", "", b"")
        self._lock = threading.Lock()

    def _signing_key(self, secret: str, day: str) -> bytes:
        with self._lock:
            cached_day, cached_secret, key = self._key
            if cached_day == day and cached_secret == secret:
                return key
        key = ("AWS4" + secret).encode()
        for part in (day, self.region, self.service, "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        with self._lock:
            self._key = (day, secret, key)
        return key

    def sign(self, method: str, path: str, params: Mapping[str, str], headers: Dict[str, str],
             payload_sha256: str, access_key: str, secret_key: str, token: Optional[str] = None,
             now: Optional[_dt.datetime] = None) -> None:
        """Add x-amz-date, x-amz-content-sha256 (and the session token) and Authorization to
        `headers` (lower-case names; `host` already there). `path` is URI-encoded once."""
        now = now or _dt.datetime.now(_dt.timezone.utc)
        stamp = now.strftime("%Y%m%dT%H%M%SZ")
        day = stamp[:8]
        headers["x-amz-date"] = stamp
        headers["x-amz-content-sha256"] = payload_sha256
        if token:
            headers["x-amz-security-token"] = token
        names = sorted(headers)
        canonical = "\n".join((
            method, path, query_string(params),
            "".join(f"{n}:{' '.join(str(headers[n]).split())}\n" for n in names),
            ";".join(names), payload_sha256))
        scope = f"{day}/{self.region}/{self.service}/aws4_request"
        to_sign = f"{ALGORITHM}\n{stamp}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        signature = hmac.new(self._signing_key(secret_key, day), to_sign.encode(), hashlib.sha256).hexdigest()
        headers["authorization"] = (f"{ALGORITHM} Credential={access_key}/{scope}, "
                                    f"SignedHeaders={';'.join(names)}, Signature={signature}")


class Wire:
    """Kept-alive connections to one http:// endpoint, or https:// with `ssl_context` (which
    decides what is trusted: the caller gives the CA bundle boto3 would use), shared by threads
    (one request each). TLS connections are kept alive like plain ones, so a handshake is paid
    per connection, not per request."""

    def __init__(self, base_url: str, *, connect_timeout: float, read_timeout: float, max_idle: int,
                 ssl_context: Optional[ssl.SSLContext] = None):
        parts = urlsplit(base_url)
        if parts.scheme != ("https" if ssl_context is not None else "http") or not parts.hostname:
            raise ValueError(f"Wire serves http:// endpoints, or https:// with an SSL context, not {base_url}")
        self.host = parts.hostname
        self.port = parts.port or (443 if ssl_context is not None else 80)
        self.ssl_context = ssl_context
        self.netloc = parts.netloc
        self.base_path = parts.path.rstrip("/") + "/"
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.max_idle = max_idle
        self._idle: List[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    # -- connections ----------------------------------------------------------------------
    def _take(self, *, fresh: bool = False) -> Tuple[http.client.HTTPConnection, bool]:
        """(connection, reused): an idle connection the server has not closed (as urllib3 checks:
        an idle socket that is readable has been closed, or holds bytes nobody asked for), else
        a new one. Connecting failures are ConnectionError (TimeoutError when timed out)."""
        while not fresh:
            with self._lock:
                if not self._idle:
                    break
                conn = self._idle.pop()
            if conn.sock is not None and idle_socket_quiet(conn.sock):
                return conn, True
            conn.close()
        if self.ssl_context is not None:
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                self.host, self.port, timeout=self.connect_timeout, context=self.ssl_context)
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=self.connect_timeout)
        try:
            conn.connect()  # sets TCP_NODELAY
        except OSError as exc:
            conn.close()
            # a refused certificate keeps ssl's own error (its reason is what the user needs)
            if isinstance(exc, (TimeoutError, ConnectionError, ssl.SSLCertVerificationError)):
                raise
            raise ConnectionError(f"cannot connect ({exc.strerror or exc})") from None
        conn.sock.settimeout(self.read_timeout)
        return conn, False

    def _give(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            if len(self._idle) < self.max_idle:
                self._idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    # -- requests -------------------------------------------------------------------------
    def path_of(self, key: str) -> str:
        return self.base_path + quote(key, safe="/~")

    def request(self, method: str, path: str, query: str, headers: Mapping[str, str], body: bytes,
                *, stream: bool) -> Tuple[int, Mapping[str, str], object]:
        """(status, headers, body): body is the bytes, or with `stream` and a 2xx answer a
        file-like reader that gives the connection back once read to its end."""
        conn, reused = self._take()
        while True:
            try:
                conn.putrequest(method, path + query, skip_host=True, skip_accept_encoding=True)
                for name, value in headers.items():
                    conn.putheader(name, value)
                conn.endheaders(body if body else None)
                resp = conn.getresponse()
                break
            except (http.client.HTTPException, OSError) as exc:
                conn.close()
                if isinstance(exc, TimeoutError):
                    raise
                if reused and isinstance(exc, (http.client.RemoteDisconnected, BrokenPipeError,
                                               ConnectionResetError)):
                    # a kept-alive connection the server closed as the request went out: it was not
                    # answered, so it is sent once more on a new connection (as urllib3 does)
                    conn, reused = self._take(fresh=True)
                    continue
                raise ConnectionError(f"{type(exc).__name__}: {exc}") from None
        if stream and resp.status < 300:
            return resp.status, resp.headers, _Body(self, conn, resp)
        try:
            data = resp.read()
        except (http.client.HTTPException, OSError) as exc:
            conn.close()
            raise ConnectionError(f"the answer was cut off ({type(exc).__name__})") from None
        if resp.will_close:
            conn.close()
        else:
            self._give(conn)
        return resp.status, resp.headers, data


class _Body(io.RawIOBase):
    """A GET's body read from the socket; the connection is reused only if read to its end."""

    def __init__(self, wire: Wire, conn: http.client.HTTPConnection, resp: http.client.HTTPResponse):
        super().__init__()
        self._wire, self._conn, self._resp = wire, conn, resp

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self._conn is None:
            return 0
        try:
            n = self._resp.readinto(buffer)
        except (http.client.HTTPException, OSError) as exc:
            self._drop()
            if isinstance(exc, TimeoutError):
                raise
            raise ConnectionError(f"reading the answer failed ({type(exc).__name__})") from None
        if self._resp.isclosed():
            self._finish()
        return n

    def _finish(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if self._resp.length in (None, 0) and not self._resp.will_close:
            self._wire._give(conn)
        else:
            conn.close()  # ended early: the connection's state is unknown

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def close(self) -> None:
        if self._conn is not None:
            if self._resp.isclosed():
                self._finish()
            else:
                self._drop()
        super().close()


__all__ = ["Answer", "Signer", "Wire", "query_string"]
