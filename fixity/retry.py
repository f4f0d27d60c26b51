"""Retrying what may be transient. A read error, timeout or server error is retried (`Retry`);
if it persists the file is `unreadable` and the check inconclusive, never damage. NotFound and
UnsafePath are answers, not failures, and programming errors are never swallowed.

One budget per object: a failure its adapter already retried to the end of its own budget
(storage_adapters.retrying, `spent`) is not retried again here - the S3 adapter's retries and
these used to multiply (3 x 3 x 5 = 45 GETs for one file). `Retry` is the budget of adapters
that do not retry themselves (file systems).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Tuple

from storage_adapters.base import NotFound, StorageError, UnsafePath
from storage_adapters.retrying import spent


@dataclass(frozen=True)
class Retry:
    """How often a failed read is tried again before the file is called unreadable.

    `delays[i]` is the pause before attempt i+2 (the last delay repeats). Storage clients
    retry on their own too (botocore's standard mode); this covers what gets through.
    """

    attempts: int = 3
    delays: Tuple[float, ...] = (0.5, 2.0)

    def pause(self, attempt: int) -> None:
        if self.delays:
            delay = self.delays[min(attempt, len(self.delays) - 1)]
            if delay > 0:
                time.sleep(delay)


#: The retry policy used when a caller gives none (tests make it instant).
DEFAULT_RETRY = Retry()

_BUGS = (TypeError, AttributeError, NameError, AssertionError, KeyError, IndexError, ImportError)


def is_transient(exc: BaseException) -> bool:
    """True for failures that say nothing about the stored bytes (I/O error, timeout, 5xx).

    NotFound (confirmed absent) and UnsafePath (a link where a file belongs) are answers, not
    failures. Programming errors are not swallowed as "unreadable".
    """
    if isinstance(exc, (NotFound, UnsafePath)) or isinstance(exc, _BUGS):
        return False
    return isinstance(exc, Exception)


def describe(exc: BaseException) -> str:
    if isinstance(exc, StorageError):
        return exc.message
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def with_retry(retry: Retry, fn: Callable[[], Any]) -> Any:
    """fn() with transient failures retried; the last one is raised."""
    for attempt in range(retry.attempts):
        try:
            return fn()
        except Exception as exc:
            if not is_transient(exc) or spent(exc) or attempt == retry.attempts - 1:
                raise
            retry.pause(attempt)
    raise AssertionError("unreachable")
