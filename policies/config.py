"""The archive's config file (`strongroom.yaml`): where things live and which policies apply.

Read strictly, like the policies (see `policies.model`): every problem in the config and in
every policy file is collected and raised as one ConfigError naming each file, dotted key and
what is allowed. Cross-checks that need both sides happen here: a policy's replicas must be
storage targets of this config, and with `distinct_sites` (the default) on different sites.

Storage target entries and S3 credentials are read by `policies.targets`; separate places and
locations (one file system, bucket or site is one location) are `policies.locations`. Both are
re-exported here. Relative paths are relative to the config file's own folder, so an archive
folder can be moved or mounted elsewhere as a whole.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import types
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

from strongroom.errors import ConfigError, UsageError
from policies.locations import _check_bucket_overlaps, _check_overlaps, _prefixes_overlap, find_locations
from policies.governance import Governance, read_governance
from policies.libraries import Library, check_binding_codes, check_receiving_places, read_libraries
from policies.model import (
    Issue,
    NAME_HELP,
    NAME_PATTERN,
    FixityCadence,
    Policy,
    Problems,
    Reader,
    read_policy,
    read_yaml,
    show_value,
    to_config_error,
    type_name,
)
from policies.targets import (  # noqa: F401 - re-exported: importers know them from here
    BUCKET_HELP,
    BUCKET_PATTERN,
    Credentials,
    StorageTarget,
    _absolute,
    _read_path,
    _read_target,
    _valid_prefix,
    resolve_credentials,
)
from policies.units import format_duration

CONFIG_FILENAME = "strongroom.yaml"
CONFIG_KEYS = ("catalog", "catalog_access", "staging", "policies", "storage", "clamav", "libraries", "governance")
CLAMAV_KEYS = ("socket", "host", "port", "timeout", "stream_max_bytes")
DEFAULT_CATALOG = "./archive/catalog"
DEFAULT_STAGING = "./archive/staging"
DEFAULT_POLICIES = "./policies"

# Without --policy, the collection type picks the policy (DESIGN.md, `strongroom deposit`).
POLICY_FOR_TYPE: Mapping[str, str] = types.MappingProxyType({
    "purchased": "at-risk-purchased",
    "self-built": "self-built",
})

_URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


@dataclass(frozen=True)
class BrokenPolicy:
    """A policy file that did not load. It blocks only the collections whose bags name it: the
    other policies load, so other collections' deposits, audits and `status` still work."""

    name: str               # the file's stem: a policy named NAME must be in NAME.yaml
    file: Path
    issues: Tuple[Issue, ...]

    def error(self) -> ConfigError:
        """The file's problems as one ConfigError (exit 2), saying what it blocks."""
        error = to_config_error(self.issues)
        first, newline, rest = error.message.partition("\n")
        error.message = (f"{first} (policy {self.name!r} cannot be used until {self.file.name} is fixed; "
                         f"the other policies work){newline}{rest}")
        return error

    def describe(self) -> str:
        first = self.issues[0]
        more = f" (and {len(self.issues) - 1} more problem(s))" if len(self.issues) > 1 else ""
        where = f"{first.key}: " if first.key else ""
        return (f"policy file {self.file} is broken: {where}{first.message}{more}; collections using policy "
                f"{self.name!r} cannot be deposited or audited until it is fixed")


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
    # The library registry (`libraries:`): None when the config has no such section, else the
    # libraries by code (policies.libraries.Library); with it, only listed codes may deposit.
    libraries: Optional[Dict[str, Library]] = None
    # Policy files that did not load, by policy name (see BrokenPolicy); `status` names them.
    broken_policies: Mapping[str, BrokenPolicy] = field(default_factory=dict)
    # `governance:` (policies.governance): approvers, quorums, operators; None without the section.
    governance: Optional[Governance] = None

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
            if name in self.broken_policies:
                raise self.broken_policies[name].error() from None
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


def _load_policies(config_file: Path, policies_dir: Path, storage: Dict[str, StorageTarget], declared: set,
                   libraries: Optional[Dict[str, Library]]) -> Tuple[Dict[str, Policy], Dict[str, BrokenPolicy]]:
    """Every policy file of the folder, each on its own: one with problems is set aside as broken
    (blocking only its own collections) instead of stopping every command of the archive."""
    policies: Dict[str, Policy] = {}
    broken: Dict[str, BrokenPolicy] = {}
    lower_names: Dict[str, Path] = {}
    files = sorted(p for p in policies_dir.iterdir()
                   if p.suffix in (".yaml", ".yml") and not p.name.startswith(".") and p.is_file())
    for file in files:
        problems = Problems()
        policy = _load_one_policy(file, config_file, storage, declared, libraries, lower_names, problems)
        if policy is not None and not problems:
            policies[policy.name] = policy
        elif problems:  # keyed by the name it would have (keep.yml beside a good keep.yaml: by file name)
            key = file.stem if file.stem not in policies and file.stem not in broken else file.name
            broken[key] = BrokenPolicy(name=file.stem, file=file, issues=tuple(problems.issues))
    return policies, broken


def _load_one_policy(file: Path, config_file: Path, storage: Dict[str, StorageTarget], declared: set,
                     libraries: Optional[Dict[str, Library]], lower_names: Dict[str, Path],
                     problems: Problems) -> Optional[Policy]:
    try:
        data = read_yaml(file, what="policy file")
    except ConfigError as exc:
        problems.add(exc.path or file, exc.key, exc.message)
        return None
    policy = read_policy(data, file, problems)
    if policy is None:
        return None
    folded = policy.name.lower()
    if folded in lower_names:
        problems.add(file, "name", f"policy name {policy.name!r} is already used by {lower_names[folded]}; "
                                   f"policy names must be unique (ignoring case)")
        return None
    lower_names[folded] = file
    check_binding_codes(Reader(file, problems), "libraries", policy.libraries, libraries)
    for index, name in enumerate(policy.replicas):  # a bound policy on targets its libraries may not use
        allowed = storage[name].libraries if name in storage else None
        shut_out = [code for code in policy.libraries or () if allowed is not None and code not in allowed]
        if shut_out:
            problems.add(file, f"replicas[{index}]", f"storage target {name!r} is bound to {', '.join(allowed or ())}, "
                                                    f"so {', '.join(shut_out)} (in this policy's libraries) could "
                                                    f"never deposit with it; bind the target to them too or use "
                                                    f"another target")
    return policy if _cross_check(policy, config_file, storage, declared, problems) else None


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
    libraries = read_libraries(reader, top["libraries"], base) if "libraries" in top else None
    if libraries is not None:  # a folder receiving area is apart from replicas, staging and the catalog
        places += check_receiving_places(reader, libraries, storage)
        for target in storage.values():
            check_binding_codes(reader, f"storage.{target.name}.libraries", target.libraries, libraries)
    _check_overlaps(reader, places)
    _check_bucket_overlaps(reader, storage)
    catalog_access = _read_catalog_access(reader, top, catalog, storage, declared)
    clamav = _read_clamav(reader, top["clamav"], base) if "clamav" in top else None
    governance = read_governance(reader, top["governance"], base) if "governance" in top else None

    policies: Dict[str, Policy] = {}
    broken: Dict[str, BrokenPolicy] = {}
    if policies_dir is not None:
        if not policies_dir.is_dir():
            reader.problem("policies", f"folder {policies_dir} does not exist; must be a folder of policy "
                                       f"YAML files (`strongroom init` writes the default ones)")
        else:
            policies, broken = _load_policies(config_file, policies_dir, storage, declared, libraries)

    if problems:  # the config itself is wrong: say every problem, the policy files' too, in one pass
        for entry in broken.values():
            problems.issues.extend(entry.issues)
    problems.raise_if_any()
    assert catalog is not None and staging is not None and policies_dir is not None
    locations, warnings = find_locations(storage)
    # broken policy files: said on stderr by every command, kept out of `warnings` (which every
    # status view shows): `status --library L` names only the broken policies of L's bags
    _warn_once(config_file, warnings + tuple(b.describe() for b in broken.values()))
    return Config(path=config_file, base_dir=base, catalog=catalog, staging=staging,
                  policies_dir=policies_dir, storage=storage, policies=policies, catalog_access=catalog_access,
                  locations=types.MappingProxyType(locations), warnings=warnings, clamav=clamav,
                  libraries=None if libraries is None else dict(libraries),
                  broken_policies=types.MappingProxyType(broken), governance=governance)


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
