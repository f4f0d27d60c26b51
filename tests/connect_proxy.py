"""A small HTTP CONNECT proxy on loopback that counts the tunnels it opened.

Why: users reach their S3 endpoint through a site proxy (`HTTPS_PROXY`, with `NO_PROXY` for
local hosts). A test starts this proxy, points `HTTPS_PROXY` at it and asserts from the count
that requests really went through it (or, with `NO_PROXY`, that they did not). Only CONNECT is
served (what clients use for https); anything else is answered 405, so a client that sends a
plain request to the proxy instead of tunnelling is seen too (`refused`).
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass, field
from typing import List, Optional, Tuple


@dataclass
class ConnectProxy:
    """`with ConnectProxy() as proxy:` serves on `proxy.url` until the block ends."""

    host: str = "127.0.0.1"
    tunnels: int = 0
    refused: int = 0
    targets: List[str] = field(default_factory=list)
    _server: Optional[socket.socket] = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _threads: List[threading.Thread] = field(default_factory=list, repr=False)
    _closing: bool = field(default=False, repr=False)

    @property
    def url(self) -> str:
        assert self._server is not None, "proxy not started"
        return f"http://{self.host}:{self._server.getsockname()[1]}"

    def start(self) -> "ConnectProxy":
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind((self.host, 0))
        server.listen(64)
        self._server = server
        self._spawn(self._accept_loop)
        return self

    def stop(self) -> None:
        self._closing = True
        if self._server is not None:
            try:
                self._server.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._server.close()

    def __enter__(self) -> "ConnectProxy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _spawn(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _accept_loop(self) -> None:
        assert self._server is not None
        while not self._closing:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            self._spawn(self._serve, client)

    def _serve(self, client: socket.socket) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = client.recv(4096)
            if not chunk:
                client.close()
                return
            head += chunk
            if len(head) > 65536:
                client.close()
                return
        request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = request_line.split()
        if len(parts) != 3 or parts[0].upper() != "CONNECT":
            with self._lock:
                self.refused += 1
            client.sendall(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            client.close()
            return
        host, port = _split_host(parts[1])
        try:
            upstream = socket.create_connection((host, port), timeout=10)
        except OSError:
            client.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            client.close()
            return
        upstream.settimeout(None)
        with self._lock:
            self.tunnels += 1
            self.targets.append(parts[1])
        client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        rest = head.split(b"\r\n\r\n", 1)[1]
        if rest:
            upstream.sendall(rest)
        self._spawn(_pump, client, upstream)
        _pump(upstream, client)


def _split_host(authority: str) -> Tuple[str, int]:
    host, _, port = authority.rpartition(":")
    return host.strip("[]"), int(port)


def _pump(src: socket.socket, dst: socket.socket) -> None:
    """Copy bytes one way until either side closes; then close both."""
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
