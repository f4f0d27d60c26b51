"""The archive's config file (`strongroom.yaml`): where things live and which policies apply.

Read strictly, like the policies (see `policies.model`): every problem in the config and in
every policy file is collected and raised as one ConfigError naming each file, dotted key and
what is allowed. Cross-checks that need both sides happen here: a policy's replicas must be
storage targets of this config, and with `distinct_sites` (the default) on different sites.

One device is one location: two filesystem targets whose roots sit on one file system (the same
`st_dev` of the root, or of its nearest existing parent) are flagged at load with a warning on
stderr naming both ("site-a and site-b are on one file system: they count as one location"),
whatever their `site` says; `Config.location_of` gives every target's location (targets on one
file system, in one S3 bucket of one endpoint, or on one `site` share one), which `status`, the
reports and the NDSA levels count. Two targets whose roots resolve into one another (equal, or
one inside the other, through links too) are refused outright (`_check_overlaps`).

Relative paths are relative to the config file's own folder, so an archive folder can be moved
or mounted elsewhere as a whole. Secrets are never in the file: S3 credentials are referenced
by environment variable names or an AWS profile, and `resolve_credentials` reads them only when
a storage adapter needs them, so commands that never touch S3 work without them.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import types
import urllib.parse
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

from strongroom.errors import ConfigError, UsageError
from policies.model import (
    NAME_HELP,
    NAME_PATTERN,
    CadenceOverride,
    FixityCadence,
    Policy,
    Problems,
    Reader,
    join_key,
    read_cadence_override,
    read_policy,
    read_yaml,
    show_value,
    type_name,
)
from policies.units import format_duration

CONFIG_FILENAME = "strongroom.yaml"
CONFIG_KEYS = ("catalog", "catalog_access", "staging", "policies", "storage", "clamav")
CLAMAV_KEYS = ("socket", "host", "port", "timeout", "stream_max_bytes")
DEFAULT_CATALOG = "./archive/catalog"
DEFAULT_STAGING = "./archive/staging"
DEFAULT_POLICIES = "./policies"

# Without --policy, the collection type picks the policy (DESIGN.md, `strongroom deposit`).
POLICY_FOR_TYPE: Mapping[str, str] = types.MappingProxyType({
    "purchased": "at-risk-purchased",
    "self-built": "self-built",
})

STORAGE_TYPES = ("filesystem", "s3")
FILESYSTEM_KEYS = ("type", "root", "site", "fixity")
S3_KEYS = ("type", "endpoint", "bucket", "region", "prefix", "site", "addressing_style", "storage_class",
           "multipart_threshold", "multipart_chunksize", "object_lock", "credentials", "verify_tls",
           "ca_bundle", "fixity", "retry_mode", "max_attempts", "connect_timeout", "read_timeout", "concurrency")
RETRY_MODES = ("standard", "adaptive")
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
_URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


@dataclass(frozen=True)
class StorageTarget:
    """One place that holds copies. `options` holds the type's settings with defaults filled in.

    filesystem: `root` is the absolute folder; `options` is empty.
    s3: `root` is None; `options` has endpoint (URL or None for AWS), bucket, region (or None),
    prefix ("" or "a/b", no leading/trailing slash), addressing_style (path|virtual|auto),
    storage_class (or None), multipart_threshold and multipart_chunksize (bytes),
    object_lock (bool: the bucket has S3 Object Lock, so policy retention is applied),
    credentials (None = the default AWS chain, or a mapping of access_key_env/secret_key_env/
    session_token_env or profile), verify_tls (bool), ca_bundle (absolute path or None), and,
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


@dataclass(frozen=True)
class Config:
    """A validated config with all of its policies, cross-checked against its storage targets."""

    path: Path
    base_dir: Path
    catalog: str            # absolute folder path, or s3://bucket/prefix
    staging: Path
    policies_dir: Path
    storage: Dict[str, StorageTarget]
    policies: Dict[str, Policy]
    # The S3 storage target whose endpoint and credentials reach an s3:// catalog (None: the
    # AWS defaults). Set by `catalog_access`, or found as the one S3 target using that bucket.
    catalog_access: Optional[str] = None
    # target name -> location label; targets that share a file system, a bucket or a site share one.
    locations: Mapping[str, str] = field(default_factory=dict)
    # Warnings found at load (targets on one file system); printed once per process on stderr.
    warnings: Tuple[str, ...] = ()
    # Where ClamAV's clamd listens (`clamav:`): an ingest.clamd.Endpoint, or None when not configured.
    clamav: Any = None

    def location_of(self, target_name: str) -> str:
        """The location of a target: its site, or the joined sites of the targets it shares a device
        or bucket with. A target the config no longer has is its own location (by name)."""
        return self.locations.get(target_name, f"target {target_name}")

    @property
    def catalog_is_s3(self) -> bool:
        return self.catalog.startswith("s3://")

    @property
    def catalog_target(self) -> Optional[StorageTarget]:
        return None if self.catalog_access is None else self.storage[self.catalog_access]

    def policy(self, name: str) -> Policy:
        """The policy called `name`; ConfigError listing the known names otherwise."""
        try:
            return self.policies[name]
        except KeyError:
            known = ", ".join(sorted(self.policies)) or "none (the folder has no policy files)"
            raise ConfigError(f"no policy named {name!r}; known policies: {known}",
                              path=str(self.policies_dir)) from None

    def policy_for_type(self, collection_type: str, explicit: Optional[str] = None) -> Policy:
        """--policy if given, else the type's default: purchased -> at-risk-purchased, self-built -> self-built."""
        if explicit:
            return self.policy(explicit)
        if collection_type not in POLICY_FOR_TYPE:
            raise UsageError(f"unknown collection type {collection_type!r}; "
                             f"must be one of {', '.join(POLICY_FOR_TYPE)}", key="--type")
        return self.policy(POLICY_FOR_TYPE[collection_type])

    def target(self, name: str) -> StorageTarget:
        try:
            return self.storage[name]
        except KeyError:
            raise ConfigError(f"no storage target named {name!r}; known targets: "
                              f"{', '.join(sorted(self.storage))}", path=str(self.path), key="storage") from None

    def replicas_for(self, policy: Policy) -> List[StorageTarget]:
        """The policy's storage targets, in the policy's order."""
        return [self.target(name) for name in policy.replicas]

    def cadence_for(self, policy: Policy, target_name: str) -> FixityCadence:
        """The policy's cadence with the target's own override (if any) applied."""
        target = self.target(target_name)
        return target.fixity.apply(policy.fixity) if target.fixity else policy.fixity


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


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


def _read_catalog(reader: Reader, value: Any, base: Path) -> Optional[str]:
    help_text = "a folder path or s3://bucket/prefix"
    text = reader.text(value, "catalog", help=help_text)
    if text is None:
        return None
    if text.startswith("s3://"):
        bucket, _, prefix = text[len("s3://"):].partition("/")
        if not BUCKET_PATTERN.match(bucket):
            reader.problem("catalog", f"bucket {show_value(bucket)} is not valid; must be {BUCKET_HELP} "
                                      f"(written as {help_text})")
            return None
        prefix = prefix.strip("/")
        if prefix and not _valid_prefix(prefix):
            reader.problem("catalog", f"prefix {show_value(prefix)} is not valid; segments must not be "
                                      f"empty, '.' or '..' (written as {help_text})")
            return None
        return f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
    if _URL_SCHEME.match(text):
        reader.problem("catalog", f"{show_value(text)} is not supported; must be {help_text}")
        return None
    return str(_absolute(base, text))


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
                         fixity=fixity, source=reader.file)


def _read_s3_options(reader: Reader, data: Dict[str, Any], key: str, base: Path) -> Dict[str, Any]:
    k = lambda sub: join_key(key, sub)  # noqa: E731 - short local helper
    options: Dict[str, Any] = {
        "endpoint": None, "bucket": None, "region": None, "prefix": "", "addressing_style": "auto",
        "storage_class": None, "multipart_threshold": DEFAULT_MULTIPART_THRESHOLD,
        "multipart_chunksize": DEFAULT_MULTIPART_CHUNKSIZE, "object_lock": False, "credentials": None,
        "verify_tls": True, "ca_bundle": None,
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


def _real(path: Path) -> Path:
    """`path` with every symlink resolved (realpath; parts that do not exist yet kept as written)."""
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # a symlink loop: compare as written
        return path


def _inside(inner: Path, outer: Path) -> bool:
    try:
        _real(inner).relative_to(_real(outer))
        return True
    except ValueError:
        return False


def _shown(path: Path) -> str:
    real = _real(path)
    return str(path) if real == path else f"{path} (resolves to {real})"


def _check_overlaps(reader: Reader, places: List[Tuple[str, Path]]) -> None:
    """Replica roots, staging and a local catalog must be separate folders, none inside another.

    A replica inside staging would be deleted with it; two replicas in one folder are one copy.
    """
    for i, (key_a, path_a) in enumerate(places):
        for key_b, path_b in places[i + 1:]:
            if _inside(path_a, path_b) or _inside(path_b, path_a):
                reader.problem(key_b, f"{_shown(path_b)} overlaps {key_a} ({_shown(path_a)}); replica roots, "
                                      f"staging and the catalog must be separate folders, none inside another "
                                      f"(two targets in one folder are one copy)")


def _prefixes_overlap(a: str, b: str) -> bool:
    """Two key prefixes of one bucket ("" = the whole bucket) of which one contains the other."""
    pa, pb = a + "/", b + "/"
    return pa.startswith(pb) or pb.startswith(pa) or "/" in (pa, pb)


def _check_bucket_overlaps(reader: Reader, storage: Dict[str, StorageTarget]) -> None:
    """Two S3 targets on the same endpoint and bucket need prefixes that do not contain each other."""
    s3 = [t for t in storage.values() if t.type == "s3"]
    for i, a in enumerate(s3):
        for b in s3[i + 1:]:
            same_bucket = (a.options["endpoint"], a.options["bucket"]) == (b.options["endpoint"], b.options["bucket"])
            if same_bucket and _prefixes_overlap(a.options["prefix"], b.options["prefix"]):
                reader.problem(f"storage.{b.name}.prefix",
                               f"overlaps storage.{a.name} (same endpoint and bucket {b.options['bucket']!r}, "
                               f"prefixes {a.options['prefix']!r} and {b.options['prefix']!r}); two targets "
                               f"in one place are one copy: use another bucket or separate prefixes")


def _read_catalog_access(reader: Reader, top: Mapping[str, Any], catalog: Optional[str],
                         storage: Dict[str, StorageTarget], declared: set) -> Optional[str]:
    """Which S3 target's endpoint and credentials reach an s3:// catalog.

    `catalog_access: NAME` says so; without it, the S3 target(s) using the catalog's bucket are
    taken if they agree on endpoint and credentials, and otherwise the AWS defaults apply (endpoint,
    region and credentials from the environment and ~/.aws). The catalog must not sit inside a
    target's prefix (nor a target inside it): a rebuild or audit would then read catalog files as
    bag files, and compaction would delete objects from a replica's place.
    """
    is_s3 = catalog is not None and catalog.startswith("s3://")
    name = None
    if "catalog_access" in top:
        name = reader.text(top["catalog_access"], "catalog_access", pattern=NAME_PATTERN, help=NAME_HELP)
        if name is None:
            return None
        if catalog is not None and not is_s3:
            reader.problem("catalog_access", "only applies to a catalog in S3 (catalog: s3://bucket/prefix); "
                                             f"the catalog here is the folder {catalog}")
            return None
        if name not in declared:
            reader.problem("catalog_access", f"unknown storage target {name!r}; must be one of the S3 storage "
                                             f"targets: {', '.join(t for t in sorted(storage) if storage[t].type == 's3') or '(none)'}")
            return None
        if name not in storage:
            return None  # declared but invalid: already reported
        if storage[name].type != "s3":
            reader.problem("catalog_access", f"storage target {name!r} is of type {storage[name].type}; it must be "
                                             f"an S3 target, whose endpoint and credentials reach the catalog's bucket")
            return None
    if not is_s3:
        return None
    assert catalog is not None
    bucket, _, prefix = catalog[len("s3://"):].partition("/")
    if name is None:
        same = [t for t in storage.values() if t.type == "s3" and t.options["bucket"] == bucket]
        ways = {(t.options["endpoint"], repr(t.options["credentials"])) for t in same}
        if len(ways) > 1:
            reader.problem("catalog_access", f"is needed: storage targets {', '.join(t.name for t in same)} all use "
                                             f"bucket {bucket!r} but with different endpoints or credentials; name "
                                             f"the one that reaches the catalog (catalog_access: NAME)")
            return None
        name = same[0].name if same else None
    endpoint = None if name is None else storage[name].options["endpoint"]
    for t in storage.values():
        if t.type != "s3" or (t.options["endpoint"], t.options["bucket"]) != (endpoint, bucket):
            continue
        if _prefixes_overlap(prefix, t.options["prefix"]):
            reader.problem("catalog", f"{catalog} overlaps storage.{t.name} (bucket {bucket!r}, prefix "
                                      f"{t.options['prefix']!r}); the catalog and the replicas must not share a "
                                      f"prefix: give the catalog its own, e.g. s3://{bucket}/catalog")
    return name


def _load_policies(config_file: Path, policies_dir: Path, storage: Dict[str, StorageTarget],
                   declared: set, problems: Problems) -> Dict[str, Policy]:
    policies: Dict[str, Policy] = {}
    lower_names: Dict[str, Path] = {}
    files = sorted(p for p in policies_dir.iterdir()
                   if p.suffix in (".yaml", ".yml") and not p.name.startswith(".") and p.is_file())
    for file in files:
        try:
            data = read_yaml(file, what="policy file")
        except ConfigError as exc:
            problems.add(exc.path or file, exc.key, exc.message)
            continue
        policy = read_policy(data, file, problems)
        if policy is None:
            continue
        folded = policy.name.lower()
        if folded in lower_names:
            problems.add(file, "name", f"policy name {policy.name!r} is already used by {lower_names[folded]}; "
                                       f"policy names must be unique (ignoring case)")
            continue
        lower_names[folded] = file
        if _cross_check(policy, config_file, storage, declared, problems):
            policies[policy.name] = policy
    return policies


def _cross_check(policy: Policy, config_file: Path, storage: Dict[str, StorageTarget], declared: set,
                 problems: Problems) -> bool:
    ok = True
    sites: Dict[str, Tuple[int, str]] = {}
    known = ", ".join(sorted(declared)) or "(none)"
    for index, name in enumerate(policy.replicas):
        key = f"replicas[{index}]"
        if name not in declared:
            problems.add(policy.source, key, f"unknown storage target {name!r}; must be one of the storage "
                                             f"names in {config_file}: {known}")
            ok = False
            continue
        target = storage.get(name)
        if target is None:
            ok = False  # declared but invalid: already reported against the config
            continue
        if policy.distinct_sites and target.site in sites:
            other_index, other = sites[target.site]
            problems.add(policy.source, key,
                         f"{name!r} is on site {target.site!r}, the same site as {other!r} "
                         f"(replicas[{other_index}]); distinct_sites is true, so every replica must be on a "
                         f"different site: give the targets different `site` values in {config_file}, "
                         f"or set distinct_sites: false")
            ok = False
        sites.setdefault(target.site, (index, name))
        if target.fixity:
            cadence = target.fixity.apply(policy.fixity)
            if cadence.quick_every > cadence.deep_every:
                problems.add(config_file, f"storage.{name}.fixity",
                             f"with policy {policy.name!r} quick checks "
                             f"({format_duration(cadence.quick_every)}) would be rarer than deep ones "
                             f"({format_duration(cadence.deep_every)}); quick_every must not be longer "
                             f"than deep_every")
                ok = False
    return ok


def _device(path: Path) -> Optional[int]:
    """st_dev of `path` or of its nearest existing parent (None if nothing can be stat'ed)."""
    p = path
    while True:
        try:
            return os.stat(p).st_dev
        except (FileNotFoundError, NotADirectoryError):
            if p.parent == p:
                return None
            p = p.parent
        except OSError:
            return None


def _join_names(names: List[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def find_locations(storage: Mapping[str, StorageTarget]) -> Tuple[Dict[str, str], Tuple[str, ...]]:
    """(target -> location label, warnings). Targets are one location when they share a file system
    (filesystem targets: the st_dev of their roots), a bucket (S3 targets: endpoint and bucket) or a
    site; a warning names each group of filesystem targets on one file system and of S3 targets in
    one bucket, since their `site` values then promise more than the storage gives."""
    names = list(storage)
    parent = {n: n for n in names}

    def find(n: str) -> str:
        while parent[n] != n:
            parent[n] = parent[parent[n]]
            n = parent[n]
        return n

    def union(a: str, b: str) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[rb] = ra

    shared: Dict[Tuple[str, Any], List[str]] = {}
    for n in names:
        t = storage[n]
        if t.type == "filesystem" and t.root is not None:
            dev = _device(t.root)
            if dev is not None:
                shared.setdefault(("file system", dev), []).append(n)
        elif t.type == "s3":
            shared.setdefault(("bucket", (t.options.get("endpoint"), t.options.get("bucket"))), []).append(n)
    by_site: Dict[str, List[str]] = {}
    for n in names:
        by_site.setdefault(storage[n].site, []).append(n)
    warnings = []
    for (what, _), group in shared.items():
        for other in group[1:]:
            union(group[0], other)
        if len(group) > 1 and len({storage[n].site for n in group}) > 1:
            one = "one file system" if what == "file system" else "one bucket"
            warnings.append(f"{_join_names(group)} are on {one}: they count as one location "
                            f"(a disk or bucket lost takes every copy on it), whatever their `site` says")
    for group in by_site.values():
        for other in group[1:]:
            union(group[0], other)
    members: Dict[str, List[str]] = {}
    for n in names:
        members.setdefault(find(n), []).append(n)
    labels = {}
    for group in members.values():
        label = " + ".join(sorted({storage[n].site for n in group}))
        for n in group:
            labels[n] = label
    return labels, tuple(warnings)


_WARNED: set = set()


def _warn_once(config_file: Path, warnings: Tuple[str, ...]) -> None:
    """Config warnings on stderr, once per process and config (Luigi workers load it again)."""
    for w in warnings:
        if (str(config_file), w) not in _WARNED:
            _WARNED.add((str(config_file), w))
            print(f"warning: {config_file}: {w}", file=sys.stderr)


def load_config(path: Any) -> Config:
    """Read `strongroom.yaml` and every policy in its policies folder; ConfigError listing all problems."""
    config_file = Path(os.path.abspath(os.path.expanduser(str(path))))
    data = read_yaml(config_file, what="config file")
    base = config_file.parent
    problems = Problems()
    reader = Reader(config_file, problems)
    top = reader.mapping(data, "", CONFIG_KEYS, ("storage",), describe="a config (a YAML mapping)")
    if top is None:
        problems.raise_if_any()
    assert top is not None

    catalog = _read_catalog(reader, top.get("catalog", DEFAULT_CATALOG), base)
    staging = _read_path(reader, top.get("staging", DEFAULT_STAGING), "staging", base)
    policies_dir = _read_path(reader, top.get("policies", DEFAULT_POLICIES), "policies", base)

    storage: Dict[str, StorageTarget] = {}
    declared: set = set()
    if "storage" in top:
        raw = top["storage"]
        if not isinstance(raw, dict) or not raw:
            reader.problem("storage", "must be a mapping of storage target names to targets "
                                      "(type: filesystem with root and site, or type: s3 with bucket and site); "
                                      f"got {'an empty mapping' if isinstance(raw, dict) else type_name(raw)}")
        else:
            for name, value in raw.items():
                declared.add(name)
                target = _read_target(reader, name, value, base)
                if target is not None:
                    storage[name] = target

    places: List[Tuple[str, Path]] = [(f"storage.{t.name}.root", t.root) for t in storage.values() if t.root]
    if staging is not None:
        places.append(("staging", staging))
    if catalog is not None and not catalog.startswith("s3://"):
        places.append(("catalog", Path(catalog)))
    _check_overlaps(reader, places)
    _check_bucket_overlaps(reader, storage)
    catalog_access = _read_catalog_access(reader, top, catalog, storage, declared)
    clamav = _read_clamav(reader, top["clamav"], base) if "clamav" in top else None

    policies: Dict[str, Policy] = {}
    if policies_dir is not None:
        if not policies_dir.is_dir():
            reader.problem("policies", f"folder {policies_dir} does not exist; must be a folder of policy "
                                       f"YAML files (`strongroom init` writes the default ones)")
        else:
            policies = _load_policies(config_file, policies_dir, storage, declared, problems)

    problems.raise_if_any()
    assert catalog is not None and staging is not None and policies_dir is not None
    locations, warnings = find_locations(storage)
    _warn_once(config_file, warnings)
    return Config(path=config_file, base_dir=base, catalog=catalog, staging=staging,
                  policies_dir=policies_dir, storage=storage, policies=policies, catalog_access=catalog_access,
                  locations=types.MappingProxyType(locations), warnings=warnings, clamav=clamav)


def _read_clamav(reader: Reader, value: Any, base: Path):
    """`clamav: {socket: /run/clamav/clamd.ctl}` or `{host: H, port: 3310}`, with optional
    `timeout` (a duration, default 60s) and `stream_max_bytes` (clamd's StreamMaxLength, default 25MiB)."""
    from ingest.clamd import DEFAULT_STREAM_MAX, DEFAULT_TIMEOUT, Endpoint

    data = reader.mapping(value, "clamav", CLAMAV_KEYS, describe="a mapping")
    if data is None:
        return None
    sock = host = port = None
    if "socket" in data:
        text = reader.text(data["socket"], "clamav.socket", help="the path of clamd's unix socket (LocalSocket)")
        sock = None if text is None else str(_absolute(base, text))
    if "host" in data:
        host = reader.text(data["host"], "clamav.host", help="the host clamd listens on (TCPAddr)")
    if "port" in data:
        port = reader.integer(data["port"], "clamav.port", minimum=1, maximum=65535)
    if sock is not None and (host is not None or port is not None):
        reader.problem("clamav", "give either socket or host and port, not both")
        return None
    if sock is None and (host is None or port is None):
        if "socket" not in data and "host" not in data and "port" not in data:
            reader.problem("clamav", "needs socket (e.g. /run/clamav/clamd.ctl) or host and port (e.g. 3310)")
        elif host is not None or port is not None:
            reader.problem("clamav", "host and port go together; one of them is missing")
        return None
    timeout = DEFAULT_TIMEOUT
    if "timeout" in data:
        duration = reader.duration(data["timeout"], "clamav.timeout")
        timeout = duration.total_seconds() if duration is not None else timeout
    stream_max = DEFAULT_STREAM_MAX
    if "stream_max_bytes" in data:
        stream_max = reader.size(data["stream_max_bytes"], "clamav.stream_max_bytes", minimum=4096) or stream_max
    return Endpoint(socket=sock, host=host, port=port, timeout=timeout, stream_max_bytes=stream_max)


# --------------------------------------------------------------------------------------------
# Writing the defaults (`strongroom init`)
# --------------------------------------------------------------------------------------------

DEFAULT_POLICY_FILES = ("at-risk-purchased.yaml", "self-built.yaml")


@dataclass(frozen=True)
class WrittenDefaults:
    """What write_default_files did, so `strongroom init` can say so."""

    config: Path
    policies: Tuple[Path, ...]
    folders_created: Tuple[Path, ...]
    overwritten: Tuple[Path, ...]


def default_text(filename: str) -> str:
    """A bundled default (policies/defaults/FILE): the config template or a policy."""
    return resources.files("policies").joinpath("defaults").joinpath(filename).read_text(encoding="utf-8")


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_default_files(directory: Any, *, force: bool = False) -> WrittenDefaults:
    """Write strongroom.yaml + default policies into `directory` and create the archive folders.

    Refuses (UsageError, exit 2) to replace any existing file unless `force`: a librarian's
    edited config or policy is not to be lost to a second `init`. The result is loaded back with
    load_config before any folder is made, so what init leaves behind always works.
    """
    directory = Path(os.path.abspath(os.path.expanduser(str(directory))))
    if directory.exists() and not directory.is_dir():
        raise UsageError("is not a folder; give a folder to write the config into", path=str(directory))
    config_path = directory / CONFIG_FILENAME
    policy_paths = tuple(directory / "policies" / name for name in DEFAULT_POLICY_FILES)
    existing = [p for p in (config_path, *policy_paths) if p.exists()]
    if existing and not force:
        others = "" if len(existing) == 1 else f" (also {', '.join(str(p) for p in existing[1:])})"
        raise UsageError(f"already exists{others}; not overwriting it. Use --force to replace it "
                         f"with the defaults", path=str(existing[0]))
    for path in existing:
        if path.is_dir():
            raise UsageError("is a folder; cannot write a file there", path=str(path))

    texts = {path: default_text(path.name) for path in policy_paths}
    texts[config_path] = default_text(CONFIG_FILENAME)
    for path in (*policy_paths, config_path):
        _write_atomically(path, texts[path])

    config = load_config(config_path)
    wanted = [config.staging] + [t.root for t in config.storage.values() if t.root is not None]
    if not config.catalog_is_s3:
        wanted.insert(0, Path(config.catalog))
    created = []
    for folder in wanted:
        if not folder.exists():
            folder.mkdir(parents=True)
            created.append(folder)
    return WrittenDefaults(config=config_path, policies=policy_paths, folders_created=tuple(created),
                           overwritten=tuple(existing))


def write_default_config(directory: Any, *, force: bool = False) -> Path:
    """Write a working default config + policies into `directory`; returns the config's path."""
    return write_default_files(directory, force=force).config


__all__ = [
    "CONFIG_FILENAME", "Config", "Credentials", "POLICY_FOR_TYPE", "StorageTarget", "WrittenDefaults",
    "default_text", "find_locations", "load_config", "resolve_credentials", "write_default_config", "write_default_files",
]
