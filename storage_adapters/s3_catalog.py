"""The catalog on S3 (`catalog: s3://bucket/prefix`): a pyarrow S3 file system with the
endpoint, TLS settings, timeouts and credentials of an S3 storage target, plus the conditional
PUT pyarrow cannot send."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, Mapping, Optional

from strongroom.errors import ConfigError

from .s3_transport import proxy_for, trusted_ca_bundle

if TYPE_CHECKING:
    from .s3 import S3Adapter


@dataclass(frozen=True)
class CatalogS3:
    """How the catalog reaches its bucket: a pyarrow S3 file system (reads, listings, plain
    writes) and `put_if_absent`, a conditional PUT (If-None-Match: *) that pyarrow cannot send,
    so that a write that must not replace a file (a ledger segment) is atomic on S3 too."""

    filesystem: Any               # pyarrow.fs.S3FileSystem
    root: str                     # "bucket/prefix": pyarrow paths carry no scheme
    adapter: "S3Adapter"          # boto3 side, same endpoint and credentials

    def put_if_absent(self, path: str, data: bytes) -> bool:
        """Write `data` at `path` ("bucket/key") unless something is there: True if written."""
        bucket, _, key = path.partition("/")
        if bucket != self.adapter.bucket or not key:
            raise ValueError(f"{path!r} is not in the catalog's bucket {self.adapter.bucket!r}")
        return self.adapter.put_new_object(key, data)


def open_catalog_s3(location: str, target=None, *, environ: Optional[Mapping[str, str]] = None) -> CatalogS3:
    """The catalog at `location` (s3://bucket[/prefix]), reached with the endpoint, region,
    addressing style, CA bundle, timeouts and credentials of S3 storage target `target` (its
    bucket and prefix are not used), or, without a target, the AWS defaults (endpoint, region and
    credential chain from the environment and ~/.aws). ConfigError for what pyarrow cannot do.
    """
    from urllib.parse import urlsplit

    import pyarrow.fs as pafs

    from .s3 import S3Adapter  # the facade imports this module: resolved at call time

    if not location.startswith("s3://"):
        raise ValueError(f"{location!r} is not an s3:// location")
    bucket, _, prefix = location[len("s3://"):].partition("/")
    prefix = prefix.strip("/")
    root = f"{bucket}/{prefix}" if prefix else bucket
    source = None if target is None or target.source is None else str(target.source)
    if target is None:
        adapter = S3Adapter("catalog", "", bucket=bucket)
        return CatalogS3(pafs.S3FileSystem(), root, adapter)
    if target.type != "s3":
        raise ConfigError(f"catalog_access must name an S3 storage target; {target.name!r} is of type "
                          f"{target.type}", path=source, key="catalog_access")
    adapter = S3Adapter.from_target(target, environ=environ, bucket=bucket, prefix="")
    kwargs: Dict[str, Any] = {"retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=adapter.max_attempts),
                              "connect_timeout": adapter.connect_timeout, "request_timeout": adapter.read_timeout,
                              "region": adapter.region or "us-east-1",
                              "force_virtual_addressing": adapter.addressing_style == "virtual"}
    if adapter.endpoint:
        parts = urlsplit(adapter.endpoint)
        kwargs["scheme"] = parts.scheme
        kwargs["endpoint_override"] = parts.netloc + parts.path.rstrip("/")
        if parts.scheme == "https" and not adapter.verify_tls:
            raise ConfigError(f"storage target {target.name!r} has verify_tls: false, which pyarrow's S3 file "
                              f"system cannot do for the catalog; give its CA certificates as ca_bundle instead",
                              path=source, key=f"storage.{target.name}.verify_tls")
    # pyarrow reads neither AWS_CA_BUNDLE nor HTTPS_PROXY/NO_PROXY: give it what boto3 uses
    bundle = trusted_ca_bundle(adapter)
    if bundle:
        kwargs["tls_ca_file_path"] = bundle
    proxy = proxy_for(adapter.endpoint) if adapter.endpoint else None
    if proxy:
        kwargs["proxy_options"] = proxy
    creds = adapter._credentials
    if creds is not None and creds.profile:
        import boto3
        import botocore.exceptions

        try:
            found = boto3.session.Session(profile_name=creds.profile).get_credentials()
        except botocore.exceptions.ProfileNotFound:
            raise ConfigError(f"AWS profile {creds.profile!r} is not defined (~/.aws/config or ~/.aws/credentials)",
                              path=source, key=f"storage.{target.name}.credentials.profile") from None
        if found is None:
            raise ConfigError(f"AWS profile {creds.profile!r} gives no credentials", path=source,
                              key=f"storage.{target.name}.credentials.profile")
        frozen = found.get_frozen_credentials()
        kwargs.update(access_key=frozen.access_key, secret_key=frozen.secret_key)
        if frozen.token:
            kwargs["session_token"] = frozen.token
    elif creds is not None:
        kwargs.update(access_key=creds.access_key, secret_key=creds.secret_key)
        if creds.session_token:
            kwargs["session_token"] = creds.session_token
    return CatalogS3(pafs.S3FileSystem(**kwargs), root, adapter)
