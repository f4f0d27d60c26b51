"""What an S3 failure means: the S3 error codes Strongroom tells apart, the exceptions the S3
layers raise, and the translation of a boto3/botocore/transport failure into a StorageError
that names the target and the object, carries `s3_code` and `transient`, and holds no secret.

Why one module: every S3 layer (transport, reads, uploads, retention) asks the same two
questions of a failure - what is it, and is it worth another attempt - and must answer them
the same way.
"""

from __future__ import annotations

from typing import Optional

from .base import NotFound, StorageError
from .s3_connection_faults import explain_connection_fault
from .s3_wire import Answer

_MISSING = {"404", "NoSuchKey", "NotFound"}
_NO_BUCKET = {"NoSuchBucket"}
_DENIED = {"403", "AccessDenied", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch",
           "InvalidToken", "ExpiredToken", "AllAccessDisabled"}
#: S3 error codes (and HTTP statuses) that say "try again later", not "this request is wrong"
_TRANSIENT = {"500", "502", "503", "504", "429", "InternalError", "ServiceUnavailable", "SlowDown",
              "SlowDownRead", "SlowDownWrite", "RequestTimeout", "RequestTimeoutException", "Throttling",
              "ThrottlingException", "RequestLimitExceeded", "TooManyRequests", "TooManyRequestsException",
              "BandwidthLimitExceeded", "PriorRequestNotComplete", "OperationAborted", "XMinioServerNotInitialized"}
_THROTTLING = {"SlowDown", "SlowDownRead", "SlowDownWrite", "Throttling", "ThrottlingException", "RequestLimitExceeded",
               "TooManyRequests", "TooManyRequestsException", "BandwidthLimitExceeded", "429"}
_REDIRECTS = {"301", "307", "PermanentRedirect", "TemporaryRedirect", "AuthorizationHeaderMalformed",
              "IllegalLocationConstraintException"}


class BucketMissing(StorageError):
    """The bucket itself is not there (as opposed to an object in it)."""


class RetentionUnsupported(StorageError):
    """The policy asks for retention this target cannot apply (no Object Lock declared, or a bucket
    without Object Lock or versioning): a configuration error, exit 2, found before any upload."""

    exit_code = 2


class _UseClient(Exception):
    """The direct path met a redirect or region error: send this through boto3 instead."""


class _Exists(Exception):
    """If-None-Match: * failed: something is stored under the key already."""


class _BadDigest(Exception):
    """The server refused a PUT whose bytes did not match the checksums sent."""


def _client_error(response: Answer, operation: str):
    """A botocore ClientError from an S3 error answer (XML <Error><Code>..., or just a status)."""
    import xml.etree.ElementTree as ET

    from botocore.exceptions import ClientError

    code, message = str(response.status_code), ""
    try:
        root = ET.fromstring(response.content or b"")
        code = root.findtext("Code") or code
        message = root.findtext("Message") or ""
    except ET.ParseError:
        pass
    return ClientError({"Error": {"Code": code, "Message": message},
                        "ResponseMetadata": {"HTTPStatusCode": response.status_code,
                                             "HTTPHeaders": dict(response.headers)}}, operation)


def _is_transient(exc: BaseException, code: Optional[str]) -> bool:
    """Worth another attempt later: throttling, 5xx, and transport failures (reset, timeout)."""
    if code is not None:
        return code in _TRANSIENT
    import botocore.exceptions as bx

    return isinstance(exc, (bx.ConnectionError, bx.HTTPClientError, bx.IncompleteReadError,
                            ConnectionError, TimeoutError))



class S3Errors:
    """Mixin of S3Adapter: its failures as StorageErrors (needs name, bucket, endpoint, read_timeout, _credentials)."""

    def _scrub(self, text: str) -> str:
        creds = self._credentials
        for secret in (getattr(creds, "secret_key", None), getattr(creds, "session_token", None),
                       getattr(creds, "access_key", None)):
            if secret:
                text = text.replace(secret, "***")
        return text

    @staticmethod
    def _code(exc: BaseException) -> Optional[str]:
        response = getattr(exc, "response", None)
        if isinstance(response, dict):
            code = response.get("Error", {}).get("Code")
            if code:
                return str(code)
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status:
                return str(status)
        return None

    def _error(self, exc: BaseException, action: str, location: Optional[str], *,
               missing: str = "not stored here") -> StorageError:
        """A StorageError for a boto3/botocore failure: the S3 error code and message, no secrets."""
        import botocore.exceptions as bx

        if isinstance(exc, StorageError):
            return exc
        code = self._code(exc)
        fault = explain_connection_fault(exc, self.endpoint, code)  # a refused certificate, a skewed clock
        if fault is not None:
            err: StorageError = StorageError(f"cannot {action}: {fault}", target=self.name, location=location)
        elif code is not None:
            message = str(exc.response.get("Error", {}).get("Message") or "")  # type: ignore[attr-defined]
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")  # type: ignore[attr-defined]
            detail = f"S3 error {code}" + (f" (HTTP {status})" if status and str(status) != code else "")
            if message:
                detail += f": {message}"
            if code in _NO_BUCKET:
                err = BucketMissing(f"cannot {action}: bucket {self.bucket!r} does not exist "
                                    f"({detail})", target=self.name, location=location)
            elif code in _MISSING:
                err = NotFound(missing, target=self.name, location=location)
            elif code in _DENIED:
                err = StorageError(f"cannot {action}: access denied ({detail}); check the credentials this "
                                   f"target references and their permissions on bucket {self.bucket!r}",
                                   target=self.name, location=location)
            else:
                err = StorageError(f"cannot {action}: {detail}", target=self.name, location=location)
        elif isinstance(exc, bx.NoCredentialsError):
            err = StorageError(f"cannot {action}: no S3 credentials found (set credentials: {{access_key_env, "
                               f"secret_key_env}} or {{profile}} on this storage target)", target=self.name,
                               location=location)
        elif isinstance(exc, (bx.EndpointConnectionError, bx.ConnectTimeoutError, bx.ConnectionClosedError)):
            err = StorageError(f"cannot {action}: endpoint {self.endpoint or 'AWS'} cannot be reached "
                               f"({type(exc).__name__})", target=self.name, location=location)
        elif isinstance(exc, bx.ReadTimeoutError):
            err = StorageError(f"cannot {action}: endpoint {self.endpoint or 'AWS'} did not answer in time "
                               f"(read timeout {self.read_timeout:g}s)", target=self.name, location=location)
        elif isinstance(exc, OSError):
            err = StorageError(f"cannot {action} ({exc.strerror or exc})", target=self.name, location=location)
        else:
            err = StorageError(f"cannot {action} ({type(exc).__name__}: {exc})", target=self.name,
                               location=location)
        err.message = self._scrub(err.message)
        err.args = (str(err),)
        err.s3_code = code  # type: ignore[attr-defined]
        err.transient = fault is None and _is_transient(exc, code)  # type: ignore[attr-defined]
        return err
