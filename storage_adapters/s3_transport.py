"""How requests reach the server: the boto3 client (every operation), and `_Direct`, the lean
path for in-memory PUTs / UploadParts and GETs, which itself sends through `s3_wire` (http or
https without a proxy) or botocore's URLLib3Session (through a proxy).

The transport choice lives here and in one adapter setting: `S3Adapter.direct_put` (the
target's `transport: auto | boto3`, see policies.targets: auto = on for custom endpoints outside
adaptive retry mode, boto3 = off, so every request goes through the boto3 client) enables
`_Direct`, which `S3Adapter._check_bucket` builds from the bucket URL boto3 used; `_Direct`
picks `s3_wire` or urllib3 in its constructor. A redirect or region error (`_UseClient`) turns
the lean path off for the adapter.

Credentials go to boto3 / the signer only; botocore & co. are kept at INFO unless someone set
their level (their DEBUG prints request headers), and storage_adapters.redact scrubs their
records at any level.
"""

from __future__ import annotations

import base64
import datetime as _dt
import hashlib
import logging
import random
import socket
import ssl
import time
from typing import TYPE_CHECKING, Any, Dict, Mapping, Optional, Tuple, Union

from strongroom.errors import ConfigError

from .redact import install as _install_redaction
from .s3_connection_faults import certificate_failure
from .s3_errors import _REDIRECTS, _THROTTLING, _TRANSIENT, _client_error, _UseClient
from .s3_records import _EMPTY_SHA256, _parse_timestamp
from .s3_wire import Answer, Signer, Wire, query_string

if TYPE_CHECKING:
    from .s3 import S3Adapter

# botocore logs request headers (Authorization: ... Credential=<access key id>/...) at DEBUG;
# `-vv` sets the root logger to DEBUG. Keep these libraries at INFO unless someone set a level
# (less noise); whatever their level, storage_adapters.redact scrubs credentials from their
# records (installed by every S3Adapter).
for _name in ("botocore", "boto3", "s3transfer", "urllib3"):
    _logger = logging.getLogger(_name)
    if _logger.level == logging.NOTSET:
        _logger.setLevel(logging.INFO)


class _Direct:
    """PutObject and UploadPart of in-memory bodies, and GetObject, with botocore's signer and HTTP session,
    without the boto3 client's per-call machinery.

    Why: a boto3 call costs about 2 ms of CPU (parameter handling, some thirty event hooks,
    response parsing), which on a small machine caps small-file uploads well below what the
    server takes; signing (S3SigV4Auth) and sending (URLLib3Session) are a third of that. And
    botocore signs a payload by hashing it once more (sha256, on plain http), while the sha256 of
    every body sent here is known already (the manifest's, or the part's): the signature uses it,
    so the server checks the body against it too, and no CPU is spent on a third hash of every
    byte - CPU the server on the same machine needs. The request is the one boto3 sends (same
    headers, SigV4), errors are botocore's ClientError / transport exceptions, and failures are
    retried like botocore's standard mode (5xx, throttling with a 1 s base, transport errors with
    50 ms, exponential, jitter, `max_attempts` in all). Used for custom endpoints (S3-compatible
    servers) in standard/legacy retry mode; AWS itself, adaptive mode and streamed bodies go
    through boto3. A redirect or region error turns it off for the adapter (boto3 follows those).
    """

    _HEADERS = (("ContentMD5", "Content-MD5"), ("ChecksumSHA256", "x-amz-checksum-sha256"),
                ("ContentType", "Content-Type"), ("StorageClass", "x-amz-storage-class"),
                ("ObjectLockMode", "x-amz-object-lock-mode"), ("IfNoneMatch", "If-None-Match"))

    def __init__(self, adapter: "S3Adapter", bucket_url: str, session):
        from botocore.auth import S3SigV4Auth
        from botocore.httpsession import URLLib3Session
        from botocore.utils import get_environ_proxies

        class KnownPayloadAuth(S3SigV4Auth):
            def payload(self, request):
                return request.context.get("payload_sha256") or super().payload(request)

        self._auth = KnownPayloadAuth
        self._adapter = adapter
        self._base = bucket_url if bucket_url.endswith("/") else bucket_url + "/"
        self._credentials = session.get_credentials()
        # boto3.Session keeps its botocore session as _session
        verify: Union[bool, str] = adapter.ca_bundle or _configured_ca_bundle(getattr(session, "_session", None)) \
            or True
        if not adapter.verify_tls:
            verify = False
        self._http = URLLib3Session(verify=verify, proxies=get_environ_proxies(self._base),
                                    timeout=(adapter.connect_timeout, adapter.read_timeout),
                                    max_pool_connections=adapter.max_pool_connections,
                                    # as boto3's own: no Nagle delay between the headers and the body
                                    socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
        # http or https without a proxy: the leaner client of s3_wire (same requests, less CPU),
        # trusting exactly what urllib3 above would (verify)
        self._wire: Optional[Wire] = None
        if self._base.startswith(("http://", "https://")) and not get_environ_proxies(self._base):
            context = _ssl_context(verify) if self._base.startswith("https://") else None
            self._wire = Wire(self._base, connect_timeout=adapter.connect_timeout, read_timeout=adapter.read_timeout,
                              max_idle=adapter.max_pool_connections, ssl_context=context)
            self._signer = Signer(adapter.region or "us-east-1")

    def put_object(self, **kw) -> Dict[str, Any]:
        headers = {name: str(kw[arg]) for arg, name in self._HEADERS if kw.get(arg) is not None}
        for meta, value in (kw.get("Metadata") or {}).items():
            headers[f"x-amz-meta-{meta}"] = str(value)
        until = kw.get("ObjectLockRetainUntilDate")
        if until is not None:
            headers["x-amz-object-lock-retain-until-date"] = until.astimezone(_dt.timezone.utc).strftime(
                "%Y-%m-%dT%H:%M:%SZ")
        return self._put(kw["Key"], {}, kw["Body"], headers, "PutObject")

    def upload_part(self, **kw) -> Dict[str, Any]:
        headers = {name: str(kw[arg]) for arg, name in self._HEADERS[:2] if kw.get(arg) is not None}
        params = {"partNumber": str(int(kw["PartNumber"])), "uploadId": str(kw["UploadId"])}
        return self._put(kw["Key"], params, kw["Body"], headers, "UploadPart")

    def _put(self, key: str, params: Dict[str, str], body: bytes, headers: Dict[str, str],
             operation: str) -> Dict[str, Any]:
        checksum = headers.get("x-amz-checksum-sha256")
        known = base64.b64decode(checksum).hex() if checksum else hashlib.sha256(body).hexdigest()
        h, _ = self._send("PUT", key, params, body, headers, operation, known, stream=False)
        return {"ETag": h.get("ETag"), "ChecksumSHA256": h.get("x-amz-checksum-sha256"),
                "VersionId": h.get("x-amz-version-id")}

    def get_object(self, Bucket: str, Key: str) -> Dict[str, Any]:  # noqa: N803 - boto3's names
        """GetObject with the body left on the socket (read it to its end, or close it), in the
        shape boto3 answers (Body, ContentLength, ETag, VersionId, LastModified, Metadata,
        ObjectLockMode)."""
        h, body = self._send("GET", Key, {}, b"", {}, "GetObject", _EMPTY_SHA256, stream=True)
        last = h.get("Last-Modified")
        return {"Body": body, "ContentLength": int(h["Content-Length"]) if "Content-Length" in h else None,
                "ETag": h.get("ETag"), "VersionId": h.get("x-amz-version-id"),
                "LastModified": _parse_timestamp(last) if last else None,
                "Metadata": {k[len("x-amz-meta-"):]: v for k, v in h.items() if k.lower().startswith("x-amz-meta-")},
                "ObjectLockMode": h.get("x-amz-object-lock-mode")}

    def _send(self, method: str, key: str, params: Dict[str, str], body: bytes, headers: Dict[str, str],
              operation: str, payload_sha256: str, *, stream: bool) -> Tuple[Mapping[str, str], Any]:
        """One signed request: (headers, body) of the 2xx answer, the body a stream with `stream`,
        else bytes. It is sent `_request_attempts` times at most: once (the object's retry budget in
        storage_adapters/retrying.py retries above it), or up to max_attempts with `retry_mode: adaptive`."""
        import botocore.exceptions as bx

        adapter = self._adapter
        attempt = 0
        while True:
            attempt += 1
            if self._credentials is None:
                raise bx.NoCredentialsError()
            try:
                status, answer_headers, content = self._once(method, key, params, body, headers, payload_sha256,
                                                             stream)
            except (bx.HTTPClientError, bx.ConnectionError, ConnectionError, TimeoutError) as exc:
                if attempt >= adapter._request_attempts or certificate_failure(exc) is not None:
                    raise
                time.sleep(random.random() * min(0.05 * 2 ** (attempt - 1), 20.0))
                continue
            if status < 300:
                return answer_headers, content
            error = _client_error(Answer(status, answer_headers, content), operation)
            code = error.response["Error"]["Code"]
            if code in _REDIRECTS:
                raise _UseClient() from None
            if code not in _TRANSIENT or attempt >= adapter._request_attempts:
                raise error
            base = 1.0 if code in _THROTTLING else 0.05
            time.sleep(random.random() * min(base * 2 ** (attempt - 1), 20.0))

    def _once(self, method: str, key: str, params: Dict[str, str], body: bytes, headers: Dict[str, str],
              payload_sha256: str, stream: bool) -> Tuple[int, Mapping[str, str], Any]:
        """(status, headers, body) of one attempt; the body read whole unless streaming a 2xx."""
        from urllib.parse import quote

        from botocore.awsrequest import AWSRequest

        query = "?" + query_string(params) if params else ""
        creds = self._credentials.get_frozen_credentials()
        if self._wire is not None:
            path = self._wire.path_of(key)
            signed = {"host": self._wire.netloc, **{k.lower(): v for k, v in headers.items()}}
            if method == "PUT":
                signed["content-length"] = str(len(body))
            self._signer.sign(method, path, params, signed, payload_sha256, creds.access_key, creds.secret_key,
                              creds.token)
            return self._wire.request(method, path, query, signed, body, stream=stream)
        request = AWSRequest(method, self._base + quote(key, safe="/~") + query, data=body, headers=dict(headers),
                             stream_output=stream)
        request.context["payload_sha256"] = payload_sha256
        self._auth(creds, "s3", self._adapter.region or "us-east-1").add_auth(request)
        response = self._http.send(request.prepare())
        if stream and response.status_code < 300:
            return response.status_code, response.headers, response.raw
        return response.status_code, response.headers, response.content


def _ssl_context(verify: Union[bool, str]) -> ssl.SSLContext:
    """What botocore's URLLib3Session would check for `verify`: the given CA bundle, or its default
    (certifi's) for True, with host-name checks; nothing for False (verify_tls: false)."""
    from botocore.httpsession import get_cert_path

    if verify is False:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    return ssl.create_default_context(cafile=get_cert_path(verify))


def _configured_ca_bundle(core) -> Optional[str]:
    """The CA bundle boto3 itself uses without a per-target one, from botocore session `core`:
    AWS_CA_BUNDLE, or ca_bundle in the AWS config file of its profile. The lean path (and
    pyarrow, for the catalog) must trust exactly what the boto3 client trusts, or small objects
    and reads fail on a private CA."""
    if core is None:
        return None
    try:
        return core.get_config_variable("ca_bundle") or None
    except Exception:  # noqa: BLE001 - a broken profile is reported by the boto3 client's first request
        return None


def trusted_ca_bundle(adapter: "S3Adapter") -> Optional[str]:
    """The CA bundle a client other than boto3 (pyarrow's, for the catalog) must trust to see
    what boto3 sees: the target's ca_bundle, else boto3's default (AWS_CA_BUNDLE, or ca_bundle
    in the AWS config file); None = the system's."""
    import botocore.session

    return adapter.ca_bundle or _configured_ca_bundle(botocore.session.get_session())


def proxy_for(url: str) -> Optional[str]:
    """The http(s) proxy that requests to `url` go through, by botocore's rules (HTTPS_PROXY or
    HTTP_PROXY by the URL's scheme, unless NO_PROXY names its host); None = direct. For clients
    that do not read the environment themselves (pyarrow's)."""
    from urllib.parse import urlsplit

    from botocore.utils import get_environ_proxies

    proxy = get_environ_proxies(url).get(urlsplit(url).scheme)
    return proxy if proxy and urlsplit(proxy).scheme in ("http", "https") else None


def _register_session_secrets(session) -> None:
    """Have the log redaction replace the keys a boto3 session resolved itself (profile, default
    chain): they were not known when the adapter was made. Never fails the caller."""
    values: Tuple[Optional[str], ...] = ()
    try:
        found = session.get_credentials()
        if found is not None:
            frozen = found.get_frozen_credentials()
            values = (frozen.access_key, frozen.secret_key, frozen.token)
    except Exception:  # noqa: BLE001 - a credential problem is reported by the first request
        pass
    _install_redaction(*values)  # also puts the filter on botocore's loggers made since the adapter



class S3Transport:
    """Mixin of S3Adapter: the shared boto3 client, made on first use."""

    @property
    def client(self):
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = self._make_client()
        return self._client

    def _make_client(self):
        import boto3
        import botocore.exceptions
        import botocore.session
        from botocore.config import Config

        creds = self._credentials
        core = botocore.session.get_session()
        # botocore parses every timestamp with dateutil (~150 us each: most of the CPU a 1000-key
        # listing costs); S3 sends two fixed formats, parsed here in a few microseconds
        core.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=_parse_timestamp)
        try:
            if creds is not None and creds.profile:
                session = boto3.session.Session(profile_name=creds.profile, botocore_session=core)
            elif creds is not None:
                session = boto3.session.Session(aws_access_key_id=creds.access_key,
                                                aws_secret_access_key=creds.secret_key,
                                                aws_session_token=creds.session_token, botocore_session=core)
            else:
                session = boto3.session.Session(botocore_session=core)
        except botocore.exceptions.ProfileNotFound:
            raise ConfigError(f"AWS profile {creds.profile!r} is not defined (~/.aws/config or "
                              f"~/.aws/credentials)", path=self._source,
                              key=f"storage.{self.name}.credentials.profile") from None
        config = Config(
            region_name=self.region,
            signature_version="s3v4",
            s3={"addressing_style": self.addressing_style},
            retries={"mode": self.retry_mode, "total_max_attempts": self._request_attempts},
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            max_pool_connections=self.max_pool_connections,
            # We send the checksums ourselves (from the manifests); no automatic CRC32 on top.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        verify: Union[bool, str, None] = None
        if not self.verify_tls:
            verify = False
        elif self.ca_bundle:
            verify = self.ca_bundle
        self._session = session
        client = session.client("s3", endpoint_url=self.endpoint, config=config, verify=verify)
        _register_session_secrets(session)  # a profile's or the default chain's keys, resolved by now
        return client
