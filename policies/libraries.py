"""The library registry (`libraries:` in strongroom.yaml) and who may deposit with what.

A consortium archive keeps many member libraries' bags side by side; the registry says which
library codes exist (with their names and their receiving area) so that a typo or a hostile
upload cannot open a new "library" by depositing under a new code. Policies and storage targets
may be bound to some libraries (`libraries: [CODE, ...]`, absent = every library): the hostile
case this guards against is `deposit --library THU --policy pku`, which without a binding wrote
THU's files into PKU's bucket with PKU's credentials. `check_deposit` refuses such a deposit
before a byte moves; `pipelines.flow.open_deposit` calls it (through `pipelines.admission`), so
`deposit` and `receive` both pass through it.

Codes follow the rules of every library code (1-64 ASCII letters, digits, '.', '_', '-') and are
unique ignoring case: codes become folder names and object keys, and `pku` beside `PKU` would
be one folder on a case-insensitive share. Receiving-area credentials are environment-variable
names only, never the secrets (the same rule as storage targets).
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

from strongroom.errors import UsageError
from policies.locations import _prefixes_overlap
from policies.model import CODE_HELP, NAME_PATTERN, Reader, join_key, show_value, type_name
from policies.targets import (
    ADDRESSING_STYLES,
    BUCKET_HELP,
    BUCKET_PATTERN,
    REGION_PATTERN,
    StorageTarget,
    _read_credentials,
    _read_endpoint,
    _read_path,
    _valid_prefix,
)

LIBRARY_KEYS = ("name", "contact", "receiving")
NAME_KEYS = ("en", "zh")
RECEIVING_TYPES = ("s3", "filesystem")
COMMON_RECEIVING_KEYS = ("type", "keep_uploads", "publish_reports")
FILESYSTEM_RECEIVING_KEYS = COMMON_RECEIVING_KEYS + ("root",)
S3_RECEIVING_KEYS = COMMON_RECEIVING_KEYS + ("endpoint", "bucket", "prefix", "region", "addressing_style",
                                             "credentials")


@dataclass(frozen=True)
class ReceivingSpec:
    """Where one library uploads: an S3 bucket (optionally a prefix in it) or a folder.

    `credentials` holds environment-variable NAMES (access_key_env, secret_key_env, optionally
    session_token_env), never values: the library's own keys, read only by the receiving area.
    `keep_uploads`: keep the uploaded objects after the deposit is preserved (default: remove).
    `publish_reports`: `receive` and `audit --due` refresh the library's reports under reports/.
    """

    type: str
    endpoint: Optional[str] = None
    bucket: Optional[str] = None
    prefix: str = ""
    region: Optional[str] = None
    addressing_style: Optional[str] = None
    root: Optional[Path] = None
    credentials: Optional[Mapping[str, str]] = None
    keep_uploads: bool = False
    publish_reports: bool = False


@dataclass(frozen=True)
class Library:
    """One member library of the registry; `name` has the display names under en and zh."""

    code: str
    name: Dict[str, str]
    contact: Optional[str] = None
    receiving: Optional[ReceivingSpec] = None


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def read_libraries(reader: Reader, value: Any, base: Path) -> Optional[Dict[str, Library]]:
    """The `libraries:` section: a mapping of code -> library. Problems go to `reader`."""
    if not isinstance(value, dict) or not value:
        reader.problem("libraries", "must be a mapping of library codes to libraries (name: {en, zh}, "
                                    "optional contact and receiving); got "
                                    f"{'an empty mapping' if isinstance(value, dict) else type_name(value)}")
        return None
    libraries: Dict[str, Library] = {}
    folded: Dict[str, str] = {}
    for code, entry in value.items():
        key = join_key("libraries", code)
        if not isinstance(code, str) or not NAME_PATTERN.match(code):
            reader.problem(key, f"{show_value(code)} is not a valid code; must be {CODE_HELP}")
            continue
        if code.lower() in folded:
            reader.problem(key, f"differs only in case from library {folded[code.lower()]!r}; library codes "
                                f"must be unique ignoring case (they name folders on case-insensitive shares)")
            continue
        folded[code.lower()] = code
        library = _read_library(reader, code, entry, base)
        if library is not None:
            libraries[code] = library
    return libraries


def _read_library(reader: Reader, code: str, value: Any, base: Path) -> Optional[Library]:
    key = join_key("libraries", code)
    before = len(reader.problems.issues)
    data = reader.mapping(value, key, LIBRARY_KEYS, ("name",), describe="a library (a mapping)")
    if data is None:
        return None
    names: Dict[str, str] = {}
    if "name" in data:
        raw = reader.mapping(data["name"], join_key(key, "name"), NAME_KEYS, NAME_KEYS,
                             describe="the display names, a mapping")
        for lang in NAME_KEYS:
            if raw is not None and lang in raw:
                text = _one_line(reader, raw[lang], join_key(key, f"name.{lang}"), "the library's display name")
                if text is not None:
                    names[lang] = text
    contact = None
    if "contact" in data:
        contact = _one_line(reader, data["contact"], join_key(key, "contact"),
                            "who to write to (an e-mail address or a name)")
    receiving = _read_receiving(reader, code, data["receiving"], base) if "receiving" in data else None
    if len(reader.problems.issues) > before:
        return None
    return Library(code=code, name=names, contact=contact, receiving=receiving)


def _one_line(reader: Reader, value: Any, key: str, help: str) -> Optional[str]:
    """Text shown in reports and status lines: one line, no control characters."""
    text = reader.text(value, key, help=f"{help}, one line of text")
    if text is not None and any(unicodedata.category(ch) == "Cc" for ch in text):
        reader.problem(key, f"must be {help}, one line of text without control characters (line breaks, tabs)")
        return None
    return None if text is None else text.strip()


def _read_receiving(reader: Reader, code: str, value: Any, base: Path) -> Optional[ReceivingSpec]:
    key = join_key("libraries", f"{code}.receiving")
    k = lambda sub: join_key(key, sub)  # noqa: E731 - short local helper
    if not isinstance(value, dict) or "type" not in value:
        if isinstance(value, dict):
            reader.problem(k("type"), f"is required but missing; must be one of {', '.join(RECEIVING_TYPES)}")
        else:
            reader.problem(key, f"must be a mapping with type: s3 (bucket, credentials) or type: filesystem "
                                f"(root); got {type_name(value)}")
        return None
    kind = reader.choice(value["type"], k("type"), RECEIVING_TYPES)
    if kind is None:
        reader.mapping(value, key, tuple(dict.fromkeys(FILESYSTEM_RECEIVING_KEYS + S3_RECEIVING_KEYS)))
        return None
    if kind == "filesystem":
        data = reader.mapping(value, key, FILESYSTEM_RECEIVING_KEYS, ("root",))
    else:
        data = reader.mapping(value, key, S3_RECEIVING_KEYS, ("bucket", "credentials"))
    assert data is not None
    flags = {}
    for flag in ("keep_uploads", "publish_reports"):
        flags[flag] = bool(reader.boolean(data[flag], k(flag))) if flag in data else False
    if kind == "filesystem":
        root = _read_path(reader, data["root"], k("root"), base) if "root" in data else None
        return ReceivingSpec(type=kind, root=root, **flags)
    endpoint = _read_endpoint(reader, data["endpoint"], k("endpoint")) if "endpoint" in data else None
    bucket = reader.text(data["bucket"], k("bucket"), pattern=BUCKET_PATTERN, help=BUCKET_HELP) \
        if "bucket" in data else None
    region = reader.text(data["region"], k("region"), pattern=REGION_PATTERN,
                         help="a region name such as us-east-1") if "region" in data else None
    style = reader.choice(data["addressing_style"], k("addressing_style"), ADDRESSING_STYLES) \
        if "addressing_style" in data else None
    prefix = ""
    if "prefix" in data:
        text = reader.text(data["prefix"], k("prefix"), allow_empty=True, help="a key prefix such as uploads/pku")
        prefix = (text or "").strip("/")
        if prefix and not _valid_prefix(prefix):
            reader.problem(k("prefix"), f"{show_value(prefix)} is not allowed; segments must not be empty, "
                                        f"'.' or '..', and no backslashes or control characters")
    credentials = None
    if "credentials" in data:
        if isinstance(data["credentials"], dict) and "profile" in data["credentials"]:
            reader.problem(k("credentials.profile"), "a receiving area takes its library's keys from environment "
                                                     "variables only: {access_key_env: NAME, secret_key_env: NAME}")
        else:
            credentials = _read_credentials(reader, data["credentials"], k("credentials"))
    return ReceivingSpec(type=kind, endpoint=endpoint, bucket=bucket, prefix=prefix, region=region,
                         addressing_style=style, credentials=credentials, **flags)


def check_binding_codes(reader: Reader, key: str, codes: Optional[Iterable[str]],
                        libraries: Optional[Mapping[str, Library]]) -> None:
    """With a registry, a binding may name only listed codes (spelt as listed)."""
    if codes is None or libraries is None:
        return
    by_fold = {c.lower(): c for c in libraries}
    for index, code in enumerate(codes):
        if code in libraries:
            continue
        listed = by_fold.get(code.lower())
        hint = f" (the registry spells it {listed!r})" if listed else ""
        reader.problem(join_key(key, index), f"library {code!r} is not listed under libraries:{hint}; must be one "
                                             f"of {', '.join(sorted(libraries))}")


def check_receiving_places(reader: Reader, libraries: Mapping[str, Library],
                           storage: Mapping[str, StorageTarget]) -> List[Tuple[str, Path]]:
    """S3 receiving areas must not share a bucket prefix with each other or with a storage target
    (a library's keys would then reach another's uploads or preserved copies). Returns the folder
    areas as (key, root) for the config's overlap check with replicas, staging and the catalog."""
    folders: List[Tuple[str, Path]] = []
    seen: List[Tuple[str, ReceivingSpec]] = []
    for code, library in libraries.items():
        spec = library.receiving
        if spec is None:
            continue
        key = f"libraries.{code}.receiving"
        if spec.type == "filesystem":
            if spec.root is not None:
                folders.append((f"{key}.root", spec.root))
            continue
        for other, theirs in seen:
            if (theirs.endpoint, theirs.bucket) == (spec.endpoint, spec.bucket) and \
                    _prefixes_overlap(theirs.prefix, spec.prefix):
                reader.problem(f"{key}.bucket", f"overlaps the receiving area of library {other} (bucket "
                                                f"{spec.bucket!r}); each library needs its own bucket or prefix")
        for target in storage.values():
            if target.type == "s3" and (target.options["endpoint"], target.options["bucket"]) == \
                    (spec.endpoint, spec.bucket) and _prefixes_overlap(target.options["prefix"], spec.prefix):
                reader.problem(f"{key}.bucket", f"overlaps storage.{target.name} (bucket {spec.bucket!r}); a "
                                                f"receiving area must be apart from every preservation copy")
        seen.append((code, spec))
    return folders


# --------------------------------------------------------------------------------------------
# Who may deposit with what
# --------------------------------------------------------------------------------------------


def _refuse(config, message: str, key: str) -> UsageError:
    return UsageError(message, path=str(config.path), key=key)


def check_deposit(config, library: str, collection: str, policy_name: str) -> None:
    """Refuse (UsageError, exit 2, naming the code and the config file) a deposit the registry
    and the bindings do not allow: a library not listed (or listed with other capitals), a policy
    bound to other libraries, or a policy whose storage targets are bound to other libraries.

    `collection` is checked by `pipelines.admission` against the catalog (case collisions); the
    registry lists libraries only."""
    libraries: Optional[Mapping[str, Library]] = getattr(config, "libraries", None)
    if libraries is not None and library not in libraries:
        listed = {c.lower(): c for c in libraries}.get(library.lower())
        if listed is not None:
            raise _refuse(config, f"library {library!r} differs only in case from the listed library {listed!r}; "
                                  f"codes are compared ignoring case: use --library {listed}", "libraries")
        raise _refuse(config, f"library {library!r} is not listed under libraries: (listed: "
                              f"{', '.join(sorted(libraries))}); only listed libraries may deposit", "libraries")
    policy = config.policy(policy_name)
    bound = getattr(policy, "libraries", None)
    if bound is not None and library not in bound:
        raise UsageError(f"policy {policy.name!r} is bound to {', '.join(bound)}; library {library!r} may not "
                         f"deposit with it (nothing was stored)", path=str(policy.source or config.policies_dir),
                         key="libraries")
    for name in policy.replicas:
        target = config.target(name)
        allowed = getattr(target, "libraries", None)
        if allowed is not None and library not in allowed:
            raise _refuse(config, f"storage target {name!r} (a replica of policy {policy.name!r}) is bound to "
                                  f"{', '.join(allowed)}; library {library!r} may not store copies there "
                                  f"(nothing was stored)", f"storage.{name}.libraries")


__all__ = ["Library", "ReceivingSpec", "check_deposit", "check_binding_codes", "check_receiving_places",
           "read_libraries", "LIBRARY_KEYS", "RECEIVING_TYPES"]
