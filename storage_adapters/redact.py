"""Credential redaction for the S3 libraries' log records, whatever level their loggers are at.

Why: botocore logs every request at DEBUG (`Sending http request: <AWSPreparedRequest ...
headers={'Authorization': b'AWS4-HMAC-SHA256 Credential=<access key id>/...'}>`, the canonical
request with `x-amz-security-token:...`, the signature), urllib3 logs request URLs (a presigned
one carries X-Amz-Credential / X-Amz-Signature / X-Amz-Security-Token). storage_adapters/s3.py
keeps those loggers at INFO when nobody set a level, but an operator debugging with their own
logging set-up, `-vv`, or a program using Strongroom as a library can turn them up. This module
makes that safe: the records of those libraries are scrubbed before any handler sees them.

How it is hooked in (`install`, called for every S3 adapter; idempotent):
  * a `CredentialFilter` on the botocore, boto3, s3transfer and urllib3 loggers, on
    storage_adapters.s3 / s3_wire, and on every descendant logger existing at that moment (a
    filter on a logger does not see records its children propagate, so each one gets it);
  * the log record factory is wrapped once, so records from loggers in those namespaces that
    are created later (botocore imports modules lazily) are scrubbed when they are made.
Either alone would do for the common case; together they survive a replaced record factory
and a logger created after the sweep.

What is scrubbed, in the formatted message (args are merged into it and dropped, so a lazily
formatted request object cannot print its headers later), the exception text and stack:
  * Authorization header values (a SigV4 one keeps its algorithm and SignedHeaders, with
    Credential and Signature replaced; any other scheme is replaced whole);
  * Credential=..., X-Amz-Credential=..., Signature=..., X-Amz-Signature=..., a bare
    `Signature:` hex line, X-Amz-Security-Token / session token values;
  * name=value / 'name': value pairs for aws_secret_access_key, aws_access_key_id,
    aws_session_token, secret_key, access_key(_id), SecretAccessKey, AccessKeyId, SessionToken;
  * the literal access key id, secret key and session token of every S3 target configured in
    this process (and their URL-encoded forms), wherever they appear.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any, Callable, FrozenSet, Optional, Tuple
from urllib.parse import quote

REDACTED = "<redacted>"

#: loggers (and their descendants) whose records are scrubbed
NAMESPACES: Tuple[str, ...] = ("botocore", "boto3", "s3transfer", "urllib3", "storage_adapters.s3",
                               "storage_adapters.s3_wire")

#: a literal shorter than this is not replaced everywhere it occurs (it would shred every
#: message); the patterns still catch it where it appears as a credential
MIN_LITERAL = 6

_SEP = r"""(['"]?\s*[:=]\s*b?['"]?)"""
_AUTHORIZATION = re.compile(r"""(authorization)""" + _SEP + r"""([^'"\r\n]*)""", re.IGNORECASE)
_CREDENTIAL = re.compile(r"""((?:x-amz-)?credential=)[^,&\s'"]+""", re.IGNORECASE)
_SIGNATURE = re.compile(r"""((?:x-amz-)?signature=)[^,&\s'"]+""", re.IGNORECASE)
_BARE_SIGNATURE = re.compile(r"""(signature:\s*)[0-9a-f]{16,}""", re.IGNORECASE)
_NAMED = re.compile(
    r"""(aws_secret_access_key|aws_access_key_id|aws_session_token|secret_?access_?key|access_?key_?id"""
    r"""|secret[_-]?key|access[_-]?key|session[_-]?token|security[_-]?token)""" + _SEP + r"""([^'"\s,&}]+)""",
    re.IGNORECASE)
_FORMATTER = logging.Formatter()
_MARK = "_strongroom_redacted"


def _authorization(match: "re.Match[str]") -> str:
    value = match.group(3)
    if value.upper().startswith("AWS4-") and "credential=" in value.lower():
        value = _SIGNATURE.sub(r"\1" + REDACTED, _CREDENTIAL.sub(r"\1" + REDACTED, value))
    elif value:
        value = REDACTED
    return match.group(1) + match.group(2) + value


class CredentialFilter(logging.Filter):
    """Scrubs credential material from a record in place and lets it through (never drops one:
    a redacted line still helps whoever is debugging)."""

    def __init__(self) -> None:
        super().__init__()
        self._literals: FrozenSet[str] = frozenset()
        self._lock = threading.Lock()

    def add_secrets(self, *values: Optional[str]) -> None:
        """Values to replace wherever they occur (an access key id, a secret, a session token)."""
        found = set()
        for value in values:
            if isinstance(value, str) and len(value) >= MIN_LITERAL:
                found.update({value, quote(value, safe=""), quote(value, safe="/")})
        if not found - self._literals:
            return
        with self._lock:
            self._literals = frozenset(self._literals | found)

    def redact(self, text: str) -> str:
        """`text` with every credential it holds replaced by REDACTED (longest literal first: a
        value containing another is replaced whole)."""
        for literal in sorted(self._literals, key=len, reverse=True):
            if literal in text:
                text = text.replace(literal, REDACTED)
        text = _AUTHORIZATION.sub(_authorization, text)
        text = _CREDENTIAL.sub(r"\1" + REDACTED, text)
        text = _SIGNATURE.sub(r"\1" + REDACTED, text)
        text = _BARE_SIGNATURE.sub(r"\1" + REDACTED, text)
        return _NAMED.sub(lambda m: m.group(1) + m.group(2) + REDACTED, text)

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, _MARK, False):
            return True
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken format string: keep what it had, scrubbed
            message = f"{record.msg} {record.args!r}"
        record.msg = self.redact(message)
        record.args = ()
        if record.exc_info and not record.exc_text:
            record.exc_text = _FORMATTER.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        record.exc_info = None  # formatters would render the traceback again from it, unscrubbed
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        setattr(record, _MARK, True)
        return True


FILTER = CredentialFilter()
_install_lock = threading.Lock()
_factory_wrapped = False


def in_scope(name: str) -> bool:
    """Is a logger of this name one whose records are scrubbed?"""
    return any(name == ns or name.startswith(ns + ".") for ns in NAMESPACES)


def _wrap_factory() -> None:
    previous: Callable[..., logging.LogRecord] = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        if in_scope(record.name):
            FILTER.filter(record)
        return record

    logging.setLogRecordFactory(factory)


def install(*secrets: Optional[str]) -> CredentialFilter:
    """Scrub the S3 libraries' log records from now on, and these literal values everywhere they
    occur in them. Safe to call for every adapter: the record factory is wrapped once, the filter
    is added only to loggers that lack it."""
    global _factory_wrapped
    FILTER.add_secrets(*secrets)
    with _install_lock:
        if not _factory_wrapped:
            _wrap_factory()
            _factory_wrapped = True
        names = set(NAMESPACES)
        names.update(n for n in list(logging.Logger.manager.loggerDict) if in_scope(n))
        for name in names:
            logger = logging.getLogger(name)
            if FILTER not in logger.filters:
                logger.addFilter(FILTER)
    return FILTER


__all__ = ["CredentialFilter", "FILTER", "NAMESPACES", "REDACTED", "in_scope", "install"]
