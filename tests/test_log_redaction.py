"""No S3 credential in any log record, whatever level botocore & co. are set to.

storage_adapters/s3.py keeps botocore, boto3, s3transfer and urllib3 at INFO only while nobody
set their level; an operator with their own logging set-up or a program using Strongroom as a
library can set them to DEBUG, where botocore prints every request's Authorization header
(Credential=<access key id>/...) and urllib3 every URL (a presigned one: X-Amz-Credential,
X-Amz-Signature). These tests turn them to DEBUG, store and read through an adapter against the
real SeaweedFS server (tests/seaweed.py), over boto3 and over the direct s3_wire path, and check
every formatted record: the debug lines are still there, with the credentials replaced.
"""

from __future__ import annotations

import hashlib
import io
import logging
import uuid
from typing import Iterator, List

import pytest

from strongroom.bag_id import BagId
from policies.config import Credentials
from storage_adapters import redact
from storage_adapters.s3 import S3Adapter

BAG = BagId.parse("LIB/COLL/20240102T030405Z-1")
LOUD = ("botocore", "boto3", "s3transfer", "urllib3")


class Capture(logging.Handler):
    """Every record that reaches the root logger, formatted as a handler would print it."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines: List[str] = []
        self.names: List[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))
        self.names.append(record.name)


@pytest.fixture
def capture() -> Iterator[Capture]:
    """botocore, boto3, s3transfer, urllib3 at DEBUG, their records captured; levels restored."""
    handler = Capture()
    root = logging.getLogger()
    before = {name: logging.getLogger(name).level for name in LOUD}
    root.addHandler(handler)
    try:
        for name in LOUD:
            logging.getLogger(name).setLevel(logging.DEBUG)
        yield handler
    finally:
        root.removeHandler(handler)
        for name, level in before.items():
            logging.getLogger(name).setLevel(level)


@pytest.fixture(scope="module")
def bucket(seaweed) -> str:
    return seaweed.make_bucket()


def adapter_for(seaweed, bucket: str, **kw) -> S3Adapter:
    return S3Adapter("s3-log", "site-a", bucket=bucket, endpoint=seaweed.endpoint, region="us-east-1",
                     prefix="t-" + uuid.uuid4().hex[:10], addressing_style="path",
                     credentials=Credentials(access_key=seaweed.access_key, secret_key=seaweed.secret_key), **kw)


def put_and_get(adapter: S3Adapter, data: bytes) -> bytes:
    digests = {a: hashlib.new(a, data).hexdigest() for a in ("sha256", "md5")}
    adapter.put_file(BAG, "data/a.txt", io.BytesIO(data), size=len(data), digests=digests)
    with adapter.open_file(BAG, "data/a.txt") as fh:
        return fh.read()


def assert_clean(capture: Capture, seaweed) -> None:
    leaked = [line for line in capture.lines if seaweed.access_key in line or seaweed.secret_key in line]
    assert not leaked, f"{len(leaked)} log lines carry a credential, e.g. {leaked[0][:300]}"


@pytest.mark.parametrize("direct_put", [False, True], ids=["boto3", "s3_wire"])
def test_debug_logging_of_put_and_get_carries_no_credentials(seaweed, bucket, capture, direct_put):
    adapter = adapter_for(seaweed, bucket, direct_put=direct_put)
    data = b"redaction " * 100
    assert put_and_get(adapter, data) == data
    if direct_put:
        assert adapter._direct is not None and adapter._direct._wire is not None, "the direct path was not used"
    assert_clean(capture, seaweed)
    # the requests were logged at DEBUG, with their Authorization header ...
    assert any(name.startswith("botocore") for name in capture.names), "botocore logged nothing at DEBUG"
    signed = [line for line in capture.lines if "Authorization" in line and "Credential=" in line]
    assert signed, "no record shows a signed request's headers"
    # ... the credential replaced, the rest of the header kept for whoever is debugging
    assert all(f"Credential={redact.REDACTED}" in line for line in signed)
    assert any("SignedHeaders=" in line for line in signed)


def test_presigned_url_logged_by_urllib3_is_redacted(seaweed, bucket, capture):
    import urllib3

    adapter = adapter_for(seaweed, bucket, direct_put=False)
    data = b"presigned"
    put_and_get(adapter, data)
    url = adapter.client.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": f"{adapter.prefix}/{BAG}/data/a.txt"}, ExpiresIn=60)
    assert "X-Amz-Credential=" in url and seaweed.access_key in url
    with urllib3.PoolManager() as pool:
        answer = pool.request("GET", url)
    assert answer.status == 200 and answer.data == data
    assert_clean(capture, seaweed)
    logged = [line for line in capture.lines if line.startswith("urllib3") and "X-Amz-Signature=" in line]
    assert logged, "urllib3 did not log the presigned request"
    assert all(f"X-Amz-Credential={redact.REDACTED}" in line and f"X-Amz-Signature={redact.REDACTED}" in line
               for line in logged)


def test_filter_scrubs_message_args_exception_and_late_loggers(capture):
    """Shapes botocore and friends print, in the message and in its args, on a logger made after
    install (botocore imports modules lazily) and a child whose parent alone has a filter."""
    secret = "s3cr3t/Value+WithSlash" + uuid.uuid4().hex
    key_id = "AKIDLATE" + uuid.uuid4().hex[:12].upper()
    token = "FwoGZXIvYXdzE" + uuid.uuid4().hex
    redact.install(key_id, secret, token)
    late = logging.getLogger("botocore.late_module_" + uuid.uuid4().hex[:6])
    late.debug("Sending http request: %s", {"Authorization": f"AWS {key_id}:c2lnbmF0dXJl",
                                            "X-Amz-Security-Token": token})
    late.debug("CanonicalRequest:\nGET\n/\n\nx-amz-security-token:%s\n", token)
    late.debug("Signature:\n%s", "ab" * 32)
    late.debug("config %s", f"aws_secret_access_key={secret} aws_access_key_id = '{key_id}'")
    late.debug("url %s", f"http://h/k?X-Amz-Credential={key_id}%2F20240101%2Fus-east-1&X-Amz-Security-Token=zz")
    try:
        raise RuntimeError(f"failed with {secret}")
    except RuntimeError:
        logging.getLogger("urllib3.connectionpool").debug("oops", exc_info=True)
    text = "\n".join(capture.lines)
    for value in (secret, key_id, token, "ab" * 32, "c2lnbmF0dXJl"):
        assert value not in text
    assert len(capture.lines) == 6
    assert "RuntimeError" in text and "Traceback" in text  # the traceback itself is still shown
    assert text.count(redact.REDACTED) >= 9


# --------------------------------------------------------------------------------------------
# pipelines/runner.py: a run without -v silences Luigi's loggers for the run only


@pytest.fixture
def luigi_levels() -> Iterator[dict]:
    """Luigi's loggers at distinct, known levels; whatever they were before is put back."""
    from pipelines.runner import LUIGI_LOGGERS

    before = {name: logging.getLogger(name).level for name in LUIGI_LOGGERS}
    known = dict(zip(LUIGI_LOGGERS, (logging.WARNING, logging.NOTSET, logging.INFO)))
    for name, level in known.items():
        logging.getLogger(name).setLevel(level)
    try:
        yield known
    finally:
        for name, level in before.items():
            logging.getLogger(name).setLevel(level)


def test_run_without_verbose_restores_luigi_log_levels(luigi_levels):
    import luigi

    from pipelines.runner import LUIGI_LOGGERS, run_tasks

    seen: dict = {}

    class Probe(luigi.Task):
        token = luigi.Parameter()

        def complete(self) -> bool:
            return bool(seen)

        def run(self) -> None:
            seen.update({name: logging.getLogger(name).level for name in LUIGI_LOGGERS})

    outcome = run_tasks([Probe(token=uuid.uuid4().hex)], verbose=0)
    assert outcome.ok, outcome.summary
    assert seen == {name: logging.CRITICAL for name in LUIGI_LOGGERS}  # silenced during the run
    assert {name: logging.getLogger(name).level for name in LUIGI_LOGGERS} == luigi_levels


def test_failed_build_restores_luigi_log_levels(luigi_levels, monkeypatch):
    import luigi

    from pipelines.runner import LUIGI_LOGGERS, run_tasks

    def broken_build(*args, **kwargs):
        raise RuntimeError("scheduler unreachable")

    monkeypatch.setattr(luigi, "build", broken_build)
    with pytest.raises(RuntimeError):
        run_tasks([], verbose=0)
    assert {name: logging.getLogger(name).level for name in LUIGI_LOGGERS} == luigi_levels
