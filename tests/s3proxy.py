"""A loopback HTTP proxy in front of a real S3 server, for fault tests and request counting.

Why a proxy and not mocks: the S3 behaviour under test (checksums verified, If-None-Match,
multipart, Object Lock) stays the real server's; only the transport is made to misbehave the
way real networks and busy servers do: 503 SlowDown, 500 InternalError, connections reset
before an answer, and GET bodies cut off in the middle. Every request that passes through is
logged (method, path, query), so tests can assert what a client asked for, e.g. that it never
listed outside a bag's prefix.

The proxy forwards requests byte for byte (Host header included), so SigV4 signatures made for
the proxy's address are checked by the server as they are. One thread per client connection.
"""

from __future__ import annotations

import http.client
import re
import socket
import socketserver
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Dict, List, Optional
from urllib.parse import parse_qsl, unquote, urlsplit

ACTIONS = ("slowdown", "internal", "reset", "truncate", "delay")
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade",
               "expect"}
_ERRORS = {
    "slowdown": (503, "SlowDown", "Please reduce your request rate."),
    "internal": (500, "InternalError", "We encountered an internal error. Please try again."),
}


@dataclass
class Rule:
    """Which requests to break and how.

    `method` (e.g. "PUT"), `path` (a regex searched in the URL-decoded path, e.g. the bucket
    name) and `query` (a regex searched in the raw query string, e.g. "partNumber=2") must all
    match when given. `times`: break the first N matching requests, then let them pass (None:
    every one). `action`: slowdown (503 SlowDown), internal (500 InternalError), reset (read
    the request, close the connection without an answer), truncate (forward, but cut the
    response body after `keep_bytes` bytes and close), delay (wait `seconds`, then forward:
    a slow server, so a test can act while a transfer is under way).
    """

    action: str = "slowdown"
    method: Optional[str] = None
    path: Optional[str] = None
    query: Optional[str] = None
    times: Optional[int] = None
    keep_bytes: int = 0
    seconds: float = 0.0
    hits: int = 0

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"action must be one of {ACTIONS}, not {self.action!r}")

    def matches(self, method: str, path: str, query: str) -> bool:
        if self.method is not None and method != self.method:
            return False
        if self.path is not None and not re.search(self.path, path):
            return False
        if self.query is not None and not re.search(self.query, query):
            return False
        return self.times is None or self.hits < self.times


@dataclass(frozen=True)
class Logged:
    """One request seen by the proxy and what became of it (status sent, or the fault)."""

    method: str
    path: str                  # URL-decoded, e.g. /bucket/prefix/LIB/COLL/bag/data/a.txt
    query: Dict[str, str]      # decoded query parameters; a bare flag like ?uploads maps to ""
    raw_query: str
    outcome: str               # "200", "404", ... or the injected action
    range: Optional[str] = None  # the Range header, if any (a GET resuming half way)

    @property
    def is_list(self) -> bool:
        """ListObjects(V2) or ListObjectVersions or ListMultipartUploads on a bucket."""
        return self.method == "GET" and self.path.count("/") == 1 and (
            "list-type" in self.query or "versions" in self.query or "uploads" in self.query
            or "prefix" in self.query or "delimiter" in self.query)


@dataclass
class S3Proxy:
    """Start with `start()`; point clients at `endpoint`; add rules with `fail(...)`."""

    upstream_port: int
    upstream_host: str = "127.0.0.1"
    rules: List[Rule] = field(default_factory=list)
    log: List[Logged] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._server: Optional[_Server] = None
        self._thread: Optional[threading.Thread] = None

    @property
    def port(self) -> int:
        assert self._server is not None, "proxy not started"
        return self._server.server_address[1]

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "S3Proxy":
        self._server = _Server(("127.0.0.1", 0), _Handler, self)
        self._thread = threading.Thread(target=self._server.serve_forever, name="s3proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "S3Proxy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- rules and log -------------------------------------------------------------------
    def fail(self, action: str = "slowdown", **match) -> Rule:
        rule = Rule(action=action, **match)
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        """Drop every rule and forget the log."""
        with self._lock:
            self.rules.clear()
            self.log.clear()

    def requests(self, method: Optional[str] = None, path: Optional[str] = None) -> List[Logged]:
        with self._lock:
            return [r for r in self.log if (method is None or r.method == method)
                    and (path is None or re.search(path, r.path))]

    def _decide(self, method: str, path: str, query: str) -> Optional[Rule]:
        with self._lock:
            for rule in self.rules:
                if rule.matches(method, path, query):
                    rule.hits += 1
                    return rule
        return None

    def _record(self, method: str, path: str, query: str, outcome: str, range_: Optional[str] = None) -> None:
        entry = Logged(method, path, dict(parse_qsl(query, keep_blank_values=True)), query, outcome, range_)
        with self._lock:
            self.log.append(entry)


class _Server(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, handler, proxy: S3Proxy):
        self.proxy = proxy
        super().__init__(address, handler)

    def handle_error(self, request, client_address) -> None:
        pass  # a client that hung up mid-request is part of the faults under test, not news


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, and "100 Continue" for Expect headers
    server: _Server

    def log_message(self, format, *args) -> None:  # noqa: A002 - quiet: the proxy keeps its own log
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self) -> None:
        proxy = self.server.proxy
        split = urlsplit(self.path)
        path, query = unquote(split.path), split.query
        body = self._body()
        rule = proxy._decide(self.command, path, query)
        range_ = self.headers.get("Range")
        if rule is not None and rule.action in _ERRORS:
            proxy._record(self.command, path, query, rule.action, range_)
            self._send_error(rule.action, path)
            return
        if rule is not None and rule.action == "reset":
            proxy._record(self.command, path, query, "reset", range_)
            self._reset()
            return
        if rule is not None and rule.action == "delay":
            time.sleep(rule.seconds)
            rule = None
        try:
            status, reason, headers, data = self._forward(body)
        except (OSError, http.client.HTTPException):  # the server is down (killed by a test): the connection drops
            proxy._record(self.command, path, query, "upstream-down", range_)
            self._reset()
            return
        proxy._record(self.command, path, query, "truncate" if rule is not None else str(status), range_)
        self.send_response_only(status, reason)
        for name, value in headers:
            self.send_header(name, value)
        if rule is not None and self.command != "HEAD":  # truncate: promise everything, send part
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: rule.keep_bytes])
            self._hang_up()
            return
        if self.command != "HEAD" or not any(n.lower() == "content-length" for n, _ in headers):
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _forward(self, body: bytes):
        upstream = getattr(self, "_upstream", None)
        for attempt in (1, 2):  # a kept-alive upstream connection may have been closed meanwhile
            if upstream is None:
                proxy = self.server.proxy
                upstream = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port, timeout=120)
                self._upstream = upstream
            try:
                upstream.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                for name, value in self.headers.items():
                    if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                        upstream.putheader(name, value)
                if body or self.command in ("PUT", "POST"):
                    upstream.putheader("Content-Length", str(len(body)))
                upstream.endheaders(body if body else None)
                response = upstream.getresponse()
                data = response.read()
            except (ConnectionError, http.client.HTTPException, OSError):
                upstream.close()
                upstream = self._upstream = None
                if attempt == 2:
                    raise
                continue
            headers = [(n, v) for n, v in response.getheaders()
                       if n.lower() not in _HOP_BY_HOP and (n.lower() != "content-length" or self.command == "HEAD")]
            if response.will_close:
                upstream.close()
                self._upstream = None
            return response.status, response.reason, headers, data
        raise AssertionError("unreachable")

    def _send_error(self, action: str, path: str) -> None:
        status, code, message = _ERRORS[action]
        body = b"" if self.command == "HEAD" else (
            f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
            f"<Resource>{path}</Resource><RequestId>s3proxy</RequestId></Error>").encode()
        self.send_response_only(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body:
            self.wfile.write(body)

    def _hang_up(self) -> None:
        """Close cleanly after what was sent (FIN, not RST): the client gets every byte written,
        then the end of the connection, as from a server that died after sending them."""
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        self.close_connection = True

    def _reset(self) -> None:
        """Close with RST (SO_LINGER 0), as a crashed server or a middlebox would."""
        try:
            self.wfile.flush()
        except OSError:
            pass
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.close_connection = True
        try:
            self.connection.close()
        except OSError:
            pass

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass
        upstream = getattr(self, "_upstream", None)
        if upstream is not None:
            upstream.close()

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle


__all__ = ["S3Proxy", "Rule", "Logged", "ACTIONS"]
