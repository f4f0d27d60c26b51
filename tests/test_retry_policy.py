"""One retry policy: how many requests one object costs for each kind of fault.

Retries used to nest (botocore per request x the adapter per object x audit per file): a file
on a target that keeps answering 503 cost 3 x 3 x 5 = 45 GETs in an audit. Now one object has
one budget (`max_attempts`, default 5) spent by every level, and audit / restore do not start
over on a failure the adapter already retried. Counted at a fault-injecting proxy in front of
a real SeaweedFS.
"""

from __future__ import annotations

import hashlib
import io

import pytest

from fixity.check_records import MISSING, UNREADABLE
from fixity.payload_check import FileChecker
from fixity.retry import Retry, with_retry
from strongroom.bag_id import BagId
from storage_adapters.base import StorageError
from storage_adapters.retrying import Budget, RetryPolicy, is_transient, spent
from storage_adapters.s3 import S3Adapter
from tests.test_s3_faults import bucket, proxy, through  # noqa: F401 - the fault proxy's fixtures

BAG = BagId.parse("LIB/COLL/20240102T030405Z-1")
DATA = b"one budget per object " * 4000
SHA = hashlib.sha256(DATA).hexdigest()
AUDIT_RETRY = Retry(attempts=3, delays=(0.0,))   # audit's default number of attempts, without the waits


def adapter(proxy, seaweed, bucket, **kw) -> S3Adapter:
    kw.setdefault("retry_delay", 0.001)
    return through(proxy, seaweed, bucket, **kw)


def stored(proxy, seaweed, bucket, **kw):
    a = adapter(proxy, seaweed, bucket, **kw)
    a.put_file(BAG, "data/f.bin", io.BytesIO(DATA), size=len(DATA), digests={"sha256": SHA})
    proxy.clear()
    return a, f"/{bucket}/{a.prefix}/{BAG}/data/f.bin"


def audit_one_file(a: S3Adapter):
    """What a deep audit does for one file: FileChecker, with audit's own retry policy."""
    problem, _ = FileChecker(a, str(BAG), True, ["sha256"], AUDIT_RETRY).check("data/f.bin", len(DATA),
                                                                               {"sha256": SHA})
    return problem


@pytest.mark.parametrize("action", ["slowdown", "internal", "reset"])
def test_a_file_that_keeps_failing_costs_one_budget_of_gets_in_an_audit(seaweed, proxy, bucket, action):
    a, path = stored(proxy, seaweed, bucket)
    proxy.fail(action, method="GET", path=path)
    problem = audit_one_file(a)
    assert problem is not None and problem.kind == UNREADABLE, problem
    # was 3 (audit) x 3 (object) x 5 (request) = 45. A reset on a kept-alive connection (the first
    # GET reuses the PUT's) is resent once on a new one, as urllib3 does: the server may have
    # closed it while idle. That resend is the transport's, not a retry of the policy.
    assert len(proxy.requests("GET", path)) == (6 if action == "reset" else 5)
    assert "gave up after 5 attempts" in problem.detail


def test_a_body_that_keeps_dying_is_resumed_within_the_same_budget(seaweed, proxy, bucket):
    a, path = stored(proxy, seaweed, bucket)
    proxy.fail("truncate", method="GET", path=path, keep_bytes=100)
    problem = audit_one_file(a)
    assert problem is not None and problem.kind == UNREADABLE, problem
    gets = proxy.requests("GET", path)
    assert len(gets) == 5                                  # the GET and 4 resumes; was 3 x 3 = 9
    assert [g.range for g in gets[1:]] == [f"bytes={100 * n}-" for n in range(1, 5)]


def test_faults_that_pass_are_retried_until_the_file_is_read(seaweed, proxy, bucket):
    a, path = stored(proxy, seaweed, bucket)
    proxy.fail("slowdown", method="GET", path=path, times=1)
    proxy.fail("reset", method="GET", path=path, times=1)
    proxy.fail("internal", method="GET", path=path, times=2)
    assert audit_one_file(a) is None
    assert [g.outcome for g in proxy.requests("GET", path)] == ["slowdown", "reset", "internal", "internal", "200"]


def test_an_answer_is_not_retried(seaweed, proxy, bucket):
    a, path = stored(proxy, seaweed, bucket)
    path = path.replace("data/f.bin", "data/absent.bin")
    problem, _ = FileChecker(a, str(BAG), True, ["sha256"], AUDIT_RETRY).check("data/absent.bin", 3, {"sha256": SHA})
    assert problem.kind == MISSING
    assert len(proxy.requests("GET", path)) == 1


def test_a_put_that_keeps_failing_costs_one_budget_of_puts(seaweed, proxy, bucket):
    a = adapter(proxy, seaweed, bucket, max_attempts=4)
    path = f"/{bucket}/{a.prefix}/{BAG}/data/p.bin"
    proxy.fail("internal", method="PUT", path=path)
    with pytest.raises(StorageError) as info:
        a.put_file(BAG, "data/p.bin", io.BytesIO(DATA), size=len(DATA), digests={"sha256": SHA})
    assert len(proxy.requests("PUT", path)) == 4           # was 3 (object) x 4 (request) = 12
    assert "gave up after 4 attempts" in str(info.value) and spent(info.value)


def test_the_budget_is_shared_by_the_requests_of_one_object(seaweed, proxy, bucket):
    """HEAD failures and PUT failures of one put_file come out of the same budget."""
    a = adapter(proxy, seaweed, bucket, max_attempts=4)
    path = f"/{bucket}/{a.prefix}/{BAG}/data/s.bin"
    proxy.fail("internal", method="HEAD", path=path, times=2)
    proxy.fail("slowdown", method="PUT", path=path)
    with pytest.raises(StorageError, match="gave up after 4 attempts"):
        a.put_file(BAG, "data/s.bin", io.BytesIO(DATA), size=len(DATA), digests={"sha256": SHA})
    assert len(proxy.requests("PUT", path)) == 2


def test_callers_do_not_retry_what_an_adapter_already_retried():
    calls = []

    def failing():
        calls.append(1)
        err = StorageError("503 SlowDown", target="t", location="l")
        err.transient = True  # type: ignore[attr-defined]
        Budget(RetryPolicy(attempts=1)).fail(err)   # as an adapter whose budget is spent leaves it
        raise err

    with pytest.raises(StorageError):
        with_retry(Retry(attempts=3, delays=(0.0,)), failing)
    assert calls == [1]

    def flaky_disk():  # an adapter that does not retry itself (file systems): audit's Retry applies
        calls.append(2)
        raise OSError(5, "Input/output error")

    with pytest.raises(OSError):
        with_retry(Retry(attempts=3, delays=(0.0,)), flaky_disk)
    assert calls == [1, 2, 2, 2]


def test_the_classifier_and_the_backoff():
    transient = StorageError("x", target="t", location="l")
    transient.transient = True  # type: ignore[attr-defined]
    assert is_transient(transient) and is_transient(ConnectionResetError()) and is_transient(TimeoutError())
    assert not is_transient(StorageError("access denied", target="t", location="l"))
    policy = RetryPolicy(attempts=5, base_delay=1.0, max_delay=20.0)
    for n, top in ((1, 1.0), (2, 2.0), (3, 4.0), (6, 20.0)):
        delays = [policy.delay(n) for _ in range(200)]
        assert all(top / 2 <= d < top for d in delays) and len(set(delays)) > 100  # jitter
    budget = Budget(policy)
    assert [budget.fail(transient) for _ in range(5)] == [True, True, True, True, False] and spent(transient)
