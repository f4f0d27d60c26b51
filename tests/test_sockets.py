"""Idle-connection checks must work for descriptors numbered 1024 or more.

select() raises ValueError past FD_SETSIZE (1024): a long audit that holds many files open would
then treat every kept-alive S3 connection and every clamd session as dead (or crash).
"""

from __future__ import annotations

import os
import resource
import socket
import time

import pytest

from strongroom.sockets import idle_socket_quiet

HIGH_FD = 1500


@pytest.fixture
def high_pair():
    """A connected socket pair whose first end has descriptor HIGH_FD."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= HIGH_FD:
        pytest.fail(f"the hard RLIMIT_NOFILE ({hard}) is below {HIGH_FD}: cannot run this test here")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, HIGH_FD + 10), hard))
    a, b = socket.socketpair()
    os.dup2(a.fileno(), HIGH_FD)
    a.close()
    high = socket.socket(fileno=HIGH_FD)
    try:
        yield high, b
    finally:
        high.close()
        b.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_an_idle_socket_past_fd_setsize_is_quiet_then_not_once_the_peer_speaks(high_pair):
    high, peer = high_pair
    assert high.fileno() >= 1024
    assert idle_socket_quiet(high)
    peer.sendall(b"x")
    assert not idle_socket_quiet(high)


def test_a_socket_the_peer_closed_is_not_quiet(high_pair):
    high, peer = high_pair
    peer.close()
    assert not idle_socket_quiet(high)


def test_a_clamd_session_on_a_high_descriptor_stays_usable(high_pair):
    from ingest import clamd

    high, peer = high_pair
    session = object.__new__(clamd._Session)
    session.sock, session.pid, session.idle_since = high, os.getpid(), time.monotonic()
    assert session.usable()  # select() made this False (ValueError), opening a session per scan
    peer.close()
    assert not session.usable()
