"""One retry policy for storage: which failures are worth another attempt, how long to wait, and
how many attempts one object gets in all.

Why: retries used to nest. botocore retried each request (5 attempts), the S3 adapter retried
each object operation (3), and audit / restore retried each file (3): up to 3 x 3 x 5 = 45 GETs
for one file on a target that keeps answering 503, and three different ideas of "transient".
Now one object has one `Budget` (`RetryPolicy.attempts` failed attempts end it, whichever level
fails), shared by every level through a context variable, and a failure that leaves an adapter
with its budget spent is marked so that callers above (fixity) do not start over.

The classifier works on StorageError: adapters set `transient` on what they raise (5xx,
throttling, resets, timeouts, a body cut short); built-in ConnectionError / TimeoutError count
too. NotFound, access denied, bad digests and the like are answers, never retried.
"""

from __future__ import annotations

import contextvars
import random
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Optional

from .base import StorageError


@dataclass(frozen=True)
class RetryPolicy:
    """`attempts` attempts per object in all; the wait before attempt n+1 is
    `base_delay * 2**(n-1)`, capped at `max_delay`, times a random
    factor in [0.5, 1) so that many workers failing together do not come back together."""

    attempts: int = 5
    base_delay: float = 1.0
    max_delay: float = 20.0

    def delay(self, failures: int) -> float:
        """Seconds to wait after the `failures`-th failed attempt."""
        return min(self.max_delay, self.base_delay * 2 ** (failures - 1)) * (0.5 + random.random() / 2)


def is_transient(exc: BaseException) -> bool:
    """Worth another attempt later: a StorageError its adapter marked transient, or a connection
    failure / timeout of the transport."""
    if isinstance(exc, StorageError):
        return bool(getattr(exc, "transient", False))
    return isinstance(exc, (ConnectionError, TimeoutError))


def spent(exc: BaseException) -> bool:
    """True if the adapter that raised `exc` already used the object's whole retry budget (or
    found it not worth retrying): a caller above must not retry it again."""
    return bool(getattr(exc, "retries_spent", False))


class Budget:
    """The failed attempts one object may still have. Thread-safe: a GET's reader and the
    requests of one object share it."""

    def __init__(self, policy: RetryPolicy):
        self.policy = policy
        self.failures = 0
        self._lock = threading.Lock()

    @property
    def last(self) -> bool:
        """True when the attempt under way is the last one the budget allows."""
        return self.failures + 1 >= self.policy.attempts

    def fail(self, exc: BaseException) -> bool:
        """Count a failed attempt: True if another attempt may follow, False when `exc` is not
        transient or the budget is spent (`exc` is then marked, see `spent`)."""
        with self._lock:
            self.failures += 1
            if spent(exc) or not is_transient(exc) or self.failures >= self.policy.attempts:
                try:
                    exc.retries_spent = True  # type: ignore[attr-defined]
                except AttributeError:
                    pass
                return False
            return True

    def progressed(self) -> None:
        """The object made real progress (a resumed read got far): earlier failures are forgiven."""
        with self._lock:
            self.failures = 0


_CURRENT: contextvars.ContextVar[Optional[Budget]] = contextvars.ContextVar("strongroom_retry_budget",
                                                                            default=None)


def current() -> Optional[Budget]:
    """The budget of the object being worked on in this thread, if any."""
    return _CURRENT.get()


@contextmanager
def object_budget(policy: RetryPolicy) -> Iterator[Budget]:
    """The budget of the object being worked on: the one already open in this thread (a nested
    operation on the same object spends from it), else a new one from `policy`."""
    active = _CURRENT.get()
    if active is not None:
        yield active
        return
    budget = Budget(policy)
    token = _CURRENT.set(budget)
    try:
        yield budget
    finally:
        _CURRENT.reset(token)


__all__ = ["RetryPolicy", "Budget", "is_transient", "spent", "current", "object_budget"]
