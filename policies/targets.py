"""Storage targets: what an entry under `storage:` in `strongroom.yaml` may say, read strictly
into a StorageTarget (filesystem: a root folder; s3: endpoint, bucket, prefix and tuning).

Secrets are never in the file: S3 credentials are referenced by environment variable names or
an AWS profile, and `resolve_credentials` reads them only when a storage adapter needs them, so
commands that never touch S3 work without them. Also the path helpers every part of the config
uses: relative paths are relative to the config file's own folder, so an archive folder can be
moved or mounted elsewhere as a whole.
"""

from __future__ import annotations

import os
import re
import types
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple

from strongroom.errors import ConfigError
from policies.fixity_rules import CadenceOverride, read_cadence_override
from policies.model import (
    NAME_HELP,
    NAME_PATTERN,
    Reader,
    join_key,
    read_binding,
    show_value,
    type_name,
)

STORAGE_TYPES = ("filesystem", "s3")
FILESYSTEM_KEYS = ("type", "root", "site", "fixity", "libraries", "tier")
S3_KEYS = ("type", "endpoint", "bucket", "region", "prefix", "site", "addressing_style", "storage_class",
           "multipart_threshold", "multipart_chunksize", "object_lock", "credentials", "verify_tls",
           "ca_bundle", "fixity", "retry_mode", "max_attempts", "connect_timeout", "read_timeout", "concurrency",
           "libraries", "transport", "tier")
#: how requests reach an S3 target. auto: in-memory PUTs/UploadParts and every GET go through the
#: adapter's lean signed-request path (botocore's signer, less CPU per request) where it applies
#: (a custom endpoint, standard retry mode); everything else through boto3. boto3: every request
#: through the boto3 client, e.g. to rule the lean path out when a proxy or endpoint misbehaves.
TRANSPORTS = ("auto", "boto3")
RETRY_MODES = ("standard", "adaptive")
#: hot: every copy deep-audited on the cadence. cold (Glacier-class: re-reading costs money and
#: hours): quick checks on the cadence plus a random deep sample under the policy's `fixity.cold`
#: budget (policies.fixity_rules).
TIERS = ("hot", "cold")
MAX_CONCURRENCY = 256
ADDRESSING_STYLES = ("path", "virtual", "auto")
CREDENTIAL_KEYS = ("access_key_env", "secret_key_env", "session_token_env", "profile")

# S3 limits: parts are 5 MiB to 5 GiB. Defaults suit preservation files (large, read whole).
MIN_PART = 5 * 2**20
MAX_PART = 5 * 2**30
DEFAULT_MULTIPART_THRESHOLD = 64 * 2**20
DEFAULT_MULTIPART_CHUNKSIZE = 16 * 2**20

BUCKET_PATTERN = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
BUCKET_HELP = ("an S3 bucket name: 3-63 characters, lower-case letters, digits, '.' and '-', "
               "starting and ending with a letter or digit")
ENV_NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
PROFILE_PATTERN = re.compile(r"^[A-Za-z0-9_.+=,@:/-]{1,128}$")
REGION_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
STORAGE_CLASS_PATTERN = re.compile(r"^[A-Z][A-Z0-9_]{0,63}$")
SITE_PATTERN = re.compile(r"^\S(.{0,126}\S)?$")


@dataclass(frozen=True)
class StorageTarget:
    """One place that holds copies. `options` holds the type's settings with defaults filled in.

    filesystem: `root` is the absolute folder; `options` is empty.
    s3: `root` is None; `options` has endpoint (URL or None for AWS), bucket, region (or None),
    prefix ("" or "a/b", no leading/trailing slash), addressing_style (path|virtual|auto),
    storage_class (or None), multipart_threshold and multipart_chunksize (bytes),
    object_lock (bool: the bucket has S3 Object Lock, so policy retention is applied),
    credentials (None = the default AWS chain, or a mapping of access_key_env/secret_key_env/
    session_token_env or profile), verify_tls (bool), ca_bundle (absolute path or None),
    transport (auto|boto3, see TRANSPORTS), and,
    only when the file sets them, the tuning keys retry_mode (standard|adaptive), max_attempts,
    connect_timeout and read_timeout (seconds, float) and concurrency (objects/parts in flight):
    left out, the adapter's own defaults apply.
    """

    name: str
    type: str
    site: str
    root: Optional[Path]
    options: Mapping[str, Any]
    fixity: Optional[CadenceOverride] = None
    source: Optional[Path] = None  # the config file that declared it (for error messages)
    # `libraries: [CODE, ...]`: the only libraries whose copies may be stored here (None: every one).
    libraries: Optional[Tuple[str, ...]] = None
    tier: str = "hot"   # see TIERS


@dataclass(frozen=True)
class Credentials:
    """Resolved S3 credentials. The secret fields never appear in repr() or logs."""

    access_key: Optional[str] = field(default=None, repr=False)
    secret_key: Optional[str] = field(default=None, repr=False)
    session_token: Optional[str] = field(default=None, repr=False)
    profile: Optional[str] = None


def resolve_credentials(target: StorageTarget, environ: Optional[Mapping[str, str]] = None) -> Optional[Credentials]:
    """Read the secrets a target references; None means "use the default AWS credential chain".

    ConfigError names the environment variable that is missing, never a value.
    """
    env = os.environ if environ is None else environ
    spec = target.options.get("credentials")
    if not spec:
        return None
    if "profile" in spec:
        return Credentials(profile=spec["profile"])
    values: Dict[str, Optional[str]] = {}
    for key, attr in (("access_key_env", "access_key"), ("secret_key_env", "secret_key"),
                      ("session_token_env", "session_token")):
        if key not in spec:
            values[attr] = None
            continue
        value = env.get(spec[key])
        if not value:
            raise ConfigError(f"environment variable {spec[key]} is not set (or empty); "
                              f"it must hold the {attr.replace('_', ' ')} for this storage target",
                              path=None if target.source is None else str(target.source),
                              key=f"storage.{target.name}.credentials.{key}")
        values[attr] = value
    return Credentials(**values)


def _absolute(base: Path, text: str) -> Path:
    """A config path made absolute against the config's folder (~ expanded), without resolving symlinks."""
    path = Path(os.path.expanduser(text))
    if not path.is_absolute():
        path = base / path
    return Path(os.path.normpath(str(path)))


def _read_path(reader: Reader, value: Any, key: str, base: Path) -> Optional[Path]:
    text = reader.text(value, key, help="a folder path (relative paths are relative to the config file's folder)")
    if text is None:
        return None
    if "\x00" in text:
        reader.problem(key, "must not contain NUL characters")
        return None
    return _absolute(base, text)


def _valid_prefix(prefix: str) -> bool:
    return all(part not in ("", ".", "..") for part in prefix.split("/")) and "\\" not in prefix \
        and not any(ord(c) < 32 for c in prefix)


def _read_credentials(reader: Reader, value: Any, key: str) -> Optional[Mapping[str, str]]:
    """Credential *references*; values are never echoed in messages in case a secret was pasted."""
    forms = "{access_key_env: NAME, secret_key_env: NAME} (optionally session_token_env) or {profile: NAME}"
    data = reader.mapping(value, key, CREDENTIAL_KEYS, describe=f"credential references {forms};")
    if data is None:
        return None
    ok = True
    for name, item in data.items():
        sub = join_key(key, name)
        if name == "profile":
            if not isinstance(item, str) or not PROFILE_PATTERN.match(item):
                reader.problem(sub, "must be the name of an AWS profile (letters, digits and _.+=,@:/-)")
                ok = False
        elif not isinstance(item, str) or not ENV_NAME_PATTERN.match(item):
            reader.problem(sub, "must be the NAME of an environment variable that holds the secret "
                                "(letters, digits and _, not starting with a digit), not the secret itself")
            ok = False
    if "profile" in data and len(data) > 1:
        reader.problem(key, f"use either a profile or environment variables, not both; must be {forms}")
        ok = False
    elif "profile" not in data:
        for needed in ("access_key_env", "secret_key_env"):
            if needed not in data:
                reader.problem(join_key(key, needed), f"is required with environment-variable credentials; "
                                                      f"must be {forms}")
                ok = False
    return types.MappingProxyType(dict(data)) if ok else None


def _read_endpoint(reader: Reader, value: Any, key: str) -> Optional[str]:
    help_text = "an http:// or https:// URL such as http://127.0.0.1:8333"
    if not isinstance(value, str):
        reader.problem(key, f"must be {help_text}; got {type_name(value)}")
        return None
    parts = urllib.parse.urlsplit(value.strip())
    if "@" in parts.netloc:
        reader.problem(key, f"must not contain a user name or password (not shown here); {help_text}; "
                            f"credentials go in credentials: {{access_key_env: NAME, secret_key_env: NAME}}")
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        reader.problem(key, f"must be {help_text}; got {show_value(value)}")
        return None
    try:
        parts.port
    except ValueError:
        reader.problem(key, f"has a bad port number; must be {help_text}; got {show_value(value)}")
        return None
    return value.strip().rstrip("/")


def _read_target(reader: Reader, name: Any, value: Any, base: Path) -> Optional[StorageTarget]:
    key = join_key("storage", name)
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        reader.problem(key, f"{show_value(name)} is not a valid storage target name; must be {NAME_HELP}")
        return None
    if not isinstance(value, dict):
        reader.problem(key, f"must be a mapping with type: filesystem or type: s3 and its keys; "
                            f"got {type_name(value)}")
        return None
    if "type" not in value:
        reader.problem(join_key(key, "type"), f"is required but missing; must be one of {', '.join(STORAGE_TYPES)}")
        kind = None
    else:
        kind = reader.choice(value["type"], join_key(key, "type"), STORAGE_TYPES)
    if kind is None:
        # Still report unknown keys and pasted secrets, checked against every type's keys.
        reader.mapping(value, key, tuple(dict.fromkeys(FILESYSTEM_KEYS + S3_KEYS)))
        return None
    before = len(reader.problems.issues)
    if kind == "filesystem":
        data = reader.mapping(value, key, FILESYSTEM_KEYS, ("root", "site"))
    else:
        data = reader.mapping(value, key, S3_KEYS, ("bucket", "site"))
    assert data is not None
    site = reader.text(data["site"], join_key(key, "site"), pattern=SITE_PATTERN,
                       help="a site name (where this copy physically is, e.g. beijing), up to 128 characters") \
        if "site" in data else None
    fixity = read_cadence_override(reader, data["fixity"], join_key(key, "fixity")) if "fixity" in data else None
    libraries = read_binding(reader, data["libraries"], join_key(key, "libraries")) if "libraries" in data else None
    tier = reader.choice(data["tier"], join_key(key, "tier"), TIERS) if "tier" in data else "hot"
    root: Optional[Path] = None
    options: Dict[str, Any] = {}
    if kind == "filesystem":
        if "root" in data:
            root = _read_path(reader, data["root"], join_key(key, "root"), base)
    else:
        options = _read_s3_options(reader, data, key, base)
    if len(reader.problems.issues) > before or site is None:
        return None
    return StorageTarget(name=name, type=kind, site=site, root=root, options=types.MappingProxyType(options),
                         fixity=fixity, source=reader.file, libraries=libraries, tier=tier or "hot")


def _read_s3_options(reader: Reader, data: Dict[str, Any], key: str, base: Path) -> Dict[str, Any]:
    k = lambda sub: join_key(key, sub)  # noqa: E731 - short local helper
    options: Dict[str, Any] = {
        "endpoint": None, "bucket": None, "region": None, "prefix": "", "addressing_style": "auto",
        "storage_class": None, "multipart_threshold": DEFAULT_MULTIPART_THRESHOLD,
        "multipart_chunksize": DEFAULT_MULTIPART_CHUNKSIZE, "object_lock": False, "credentials": None,
        "verify_tls": True, "ca_bundle": None, "transport": "auto",
    }
    if "endpoint" in data:
        options["endpoint"] = _read_endpoint(reader, data["endpoint"], k("endpoint"))
    if "bucket" in data:
        options["bucket"] = reader.text(data["bucket"], k("bucket"), pattern=BUCKET_PATTERN, help=BUCKET_HELP)
    if "region" in data:
        options["region"] = reader.text(data["region"], k("region"), pattern=REGION_PATTERN,
                                        help="a region name such as us-east-1")
    if "prefix" in data:
        prefix = reader.text(data["prefix"], k("prefix"), allow_empty=True,
                             help="a key prefix such as preservation or a/b ('/'-separated)")
        if prefix is not None:
            prefix = prefix.strip("/")
            if prefix and not _valid_prefix(prefix):
                reader.problem(k("prefix"), f"{show_value(prefix)} is not allowed; segments must not be "
                                            f"empty, '.' or '..', and no backslashes or control characters")
            options["prefix"] = prefix
    if "addressing_style" in data:
        options["addressing_style"] = reader.choice(data["addressing_style"], k("addressing_style"), ADDRESSING_STYLES)
    if "storage_class" in data:
        options["storage_class"] = reader.text(data["storage_class"], k("storage_class"),
                                               pattern=STORAGE_CLASS_PATTERN,
                                               help="an S3 storage class such as STANDARD or STANDARD_IA")
    if "multipart_threshold" in data:
        options["multipart_threshold"] = reader.size(data["multipart_threshold"], k("multipart_threshold"))
    if "multipart_chunksize" in data:
        options["multipart_chunksize"] = reader.size(data["multipart_chunksize"], k("multipart_chunksize"),
                                                     minimum=MIN_PART, maximum=MAX_PART)
    if "object_lock" in data:
        options["object_lock"] = reader.boolean(data["object_lock"], k("object_lock"))
    if "credentials" in data:
        options["credentials"] = _read_credentials(reader, data["credentials"], k("credentials"))
    if "verify_tls" in data:
        options["verify_tls"] = reader.boolean(data["verify_tls"], k("verify_tls"))
    if "ca_bundle" in data:
        bundle = _read_path(reader, data["ca_bundle"], k("ca_bundle"), base)
        if bundle is not None and not bundle.is_file():
            reader.problem(k("ca_bundle"), f"{bundle} does not exist or is not a file; must be the path of a "
                                           f"PEM file of CA certificates")
        options["ca_bundle"] = None if bundle is None else str(bundle)
    if "transport" in data:
        options["transport"] = reader.choice(data["transport"], k("transport"), TRANSPORTS)
    if "retry_mode" in data:
        options["retry_mode"] = reader.choice(data["retry_mode"], k("retry_mode"), RETRY_MODES)
    if "max_attempts" in data:
        options["max_attempts"] = reader.integer(data["max_attempts"], k("max_attempts"), minimum=1, maximum=20)
    for timeout in ("connect_timeout", "read_timeout"):
        if timeout in data:
            span = reader.duration(data[timeout], k(timeout))
            options[timeout] = None if span is None else span.total_seconds()
    if "concurrency" in data:
        options["concurrency"] = reader.integer(data["concurrency"], k("concurrency"), minimum=1,
                                                maximum=MAX_CONCURRENCY)
    return options
