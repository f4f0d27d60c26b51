"""Failures of an S3 connection that the user fixes on their own side: a TLS certificate the
client refuses, and a request refused because the signing clock is off. Turned into one
sentence naming the endpoint and the setting to change.

Why a module of its own: the transport (which must not retry these) and the error mapping
(which words them) both need them, and neither depends on the other for it. Why not transient:
retrying cannot change a certificate or a clock; it only delays the message by minutes.

Clock skew is reported, not corrected: botocore does not correct it either (it only estimates
it for its retry headers), and an archive whose clock is off also writes wrong event times, so
the remedy is the clock (NTP), not a silently shifted signature.
"""

from __future__ import annotations

import datetime as _dt
import email.utils
import ssl
import urllib.parse
from typing import Optional

#: S3 refuses a request signed more than 15 minutes away from the server's clock.
SKEW_LIMIT = _dt.timedelta(minutes=15)


def certificate_failure(exc: BaseException) -> Optional[str]:
    """Why the server's certificate was refused (ssl's verify message, or urllib3's host-name
    mismatch), when `exc` (botocore's SSLError, or what urllib3 raised below it) is such a
    refusal; None for any other failure, including TLS failures that are not about the
    certificate (a connection reset in the handshake is transient)."""
    chain = []
    cause: Optional[BaseException] = exc
    while cause is not None and len(chain) < 10:
        chain.append(cause)
        kwargs = getattr(cause, "kwargs", None)  # botocore's SSLError keeps urllib3's as kwargs["error"]
        cause = (kwargs.get("error") if isinstance(kwargs, dict) else None) or cause.__cause__ or cause.__context__
    for cause in reversed(chain):  # the innermost says it best (no URL around it)
        if isinstance(cause, ssl.SSLCertVerificationError):
            return cause.verify_message or str(cause)
        if type(cause).__name__ == "CertificateError" or "doesn't match" in str(cause):
            return str(cause)
    return None


def signing_clock() -> _dt.datetime:
    """The time botocore's SigV4 signer puts on requests now (UTC): the clock a skew is about."""
    from botocore import auth

    return auth.get_current_datetime().replace(tzinfo=_dt.timezone.utc)


def explain_connection_fault(exc: BaseException, endpoint: Optional[str], code: Optional[str]) -> Optional[str]:
    """One sentence for a refused certificate or a skewed clock, naming the endpoint; else None.

    A HEAD answer carries no error code, so a bare 403 whose Date is more than 15 minutes off
    the signing clock is taken for a skew too (HeadBucket is the first request a command makes).
    """
    where = endpoint or "AWS"
    reason = certificate_failure(exc)
    if reason is not None:
        if "doesn't match" in reason or "mismatch" in reason.lower():
            host = urllib.parse.urlsplit(where).hostname if endpoint else where
            return (f"the TLS certificate of endpoint {where} does not match its host name {host!r} ({reason}); "
                    f"use in endpoint: a host name the certificate is for")
        return (f"the TLS certificate of endpoint {where} is not trusted ({reason}); give the PEM certificates "
                f"of the CA that signed it as ca_bundle: on this storage target, or in AWS_CA_BUNDLE")
    if code not in ("RequestTimeTooSkewed", "403"):
        return None
    local = signing_clock()
    response = getattr(exc, "response", None)
    headers = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}) if isinstance(response, dict) else {}
    server: Optional[_dt.datetime] = None
    try:
        server = email.utils.parsedate_to_datetime(headers["date"]).astimezone(_dt.timezone.utc)
    except (KeyError, TypeError, ValueError, IndexError):
        pass
    if code == "403" and (server is None or abs(server - local) <= SKEW_LIMIT):
        return None
    said = "RequestTimeTooSkewed" if code == "RequestTimeTooSkewed" else \
        "HTTP 403, most likely RequestTimeTooSkewed as the server's clock is far from this machine's"
    off = ""
    if server is not None:
        minutes = abs(server - local).total_seconds() / 60
        off = (f", {minutes:,.0f} minutes {'behind' if local < server else 'ahead of'} the server's "
               f"({server:%Y-%m-%d %H:%M:%S} UTC)")
    return (f"endpoint {where} refused the request as signed at the wrong time ({said}): this machine's "
            f"clock reads {local:%Y-%m-%d %H:%M:%S} UTC{off}; S3 accepts at most 15 minutes of difference: "
            f"set the clock right (NTP)")
