"""Socket checks shared by the clients of long-lived connections (S3's lean path, clamd sessions)."""

from __future__ import annotations

import select


def idle_socket_quiet(sock) -> bool:
    """True if an idle socket is neither closed by the peer nor holding bytes nobody asked for.

    poll(), not select(): select() cannot watch a descriptor numbered 1024 or more (ValueError),
    which a long audit with many parallel reads and open files reaches.
    """
    poller = select.poll()
    poller.register(sock, select.POLLIN | select.POLLPRI | select.POLLERR | select.POLLHUP)
    return not poller.poll(0)
