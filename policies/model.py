"""Preservation policies (policies/NAME.yaml) and the strict reading shared with the config.

A policy decides how a collection is kept: which digests, which storage targets, how often the
copies are checked, how deposits are cut into bags, which formats need attention and whether
copies are locked. A typo here silently weakens preservation (a misspelt `deep_every` would
fall back to a default nobody chose), so every file is read strictly: unknown keys, wrong types
and bad values are errors that name the file, the key (as a dotted path such as
`fixity.deep_every` or `checksums[1]`) and what is allowed. All problems found in a file are
reported together, so a librarian fixes them in one pass rather than one per run.

This module checks a policy's own structure only; whether its replicas exist in the config and
sit on distinct sites is checked by `policies.config.load_config`.
"""

from __future__ import annotations

import datetime
import difflib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import yaml

from strongroom.checksums import SUPPORTED
from strongroom.errors import ConfigError
from policies.fixity_rules import DEFAULT_FIXITY, FixityCadence, read_fixity
from policies.units import format_duration, format_size, parse_duration, parse_size

# --------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------

#: Digests anyone can collide on purpose. Still allowed (BagIt allows them, vendors supply them,
#: and existing bags made with them must stay auditable), but never as a policy's only digest
#: without a warning.
WEAK_CHECKSUMS = ("md5", "sha1")

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
NAME_HELP = "1-64 characters: letters, digits, '.', '_' or '-', starting with a letter or digit"
CODE_HELP = ("a library code: 1-64 ASCII letters, digits, '.', '_' or '-', starting with a letter or digit "
             "(the same rules as --library)")
PUID_PATTERN = re.compile(r"^(x-)?fmt/[0-9]+\Z")  # ASCII digits: PRONOM PUIDs are ASCII
UNIDENTIFIED_CHOICES = ("warn", "fail")
RETENTION_MODES = ("none", "governance", "compliance")
MAX_RETENTION_YEARS = 100  # S3 Object Lock caps retention at 100 years (36500 days)


@dataclass(frozen=True)
class BagLimits:
    """Deposits larger than this are split into several bags, so each copy and audit stays tractable."""

    max_bytes: int
    max_files: int


@dataclass(frozen=True)
class FormatRules:
    """PRONOM PUIDs that need attention, and what to do with files no signature recognises."""

    at_risk: Tuple[str, ...]
    unidentified: str  # "warn" or "fail"


@dataclass(frozen=True)
class Retention:
    """S3 Object Lock on targets that support it; `years` is 0 when mode is "none"."""

    mode: str
    years: int


DEFAULT_BAG = BagLimits(max_bytes=100 * 10**9, max_files=100_000)
DEFAULT_FORMATS = FormatRules(at_risk=(), unidentified="warn")
DEFAULT_RETENTION = Retention(mode="none", years=0)


@dataclass(frozen=True)
class Policy:
    """One validated policy file. `checksums[0]` is the primary digest used to compare copies."""

    name: str
    checksums: Tuple[str, ...]
    replicas: Tuple[str, ...]
    distinct_sites: bool = True
    fixity: FixityCadence = DEFAULT_FIXITY
    bag: BagLimits = DEFAULT_BAG
    formats: FormatRules = DEFAULT_FORMATS
    retention: Retention = DEFAULT_RETENTION
    description: str = ""
    source: Optional[Path] = None
    # Virus check at ingest (ingest/virus.py): required (no deposit without a clean ClamAV scan
    # of every file), warn (scan when clamd answers; findings and gaps are warnings), off.
    virus_check: str = "required"
    # Files longer than clamd's StreamMaxLength: scanned in overlapping chunks, refused, or
    # kept unscanned and recorded as such. Never passed as "clean" silently.
    large_files: str = "scan-in-chunks"
    # `libraries: [CODE, ...]`: the only libraries that may deposit with this policy (None: every
    # library). Checked by policies.libraries.check_deposit before a byte moves.
    libraries: Optional[Tuple[str, ...]] = None

    @property
    def primary_checksum(self) -> str:
        return self.checksums[0]

    @property
    def warnings(self) -> Tuple[str, ...]:
        """Weaknesses allowed but worth saying (each as 'key: why; what to do')."""
        if self.checksums and all(a in WEAK_CHECKSUMS for a in self.checksums):
            which = " and ".join(self.checksums) + (" alone is" if len(self.checksums) == 1 else " are")
            return (f"checksums: {which} not collision-resistant (a file can be altered to keep its digest); "
                    f"add sha256 or sha512",)
        return ()

    def as_dict(self) -> Dict[str, Any]:
        """Plain values in the file's own notation (90d, 500GB), for --json output and records."""
        return {
            "name": self.name,
            "description": self.description,
            "checksums": list(self.checksums),
            "replicas": list(self.replicas),
            "distinct_sites": self.distinct_sites,
            "fixity": {
                "deep_every": format_duration(self.fixity.deep_every),
                "quick_every": format_duration(self.fixity.quick_every),
                "daily_byte_budget": format_size(self.fixity.daily_byte_budget),
                "after_finding": None if self.fixity.after_finding is None else self.fixity.after_finding.as_dict(),
                "cold": self.fixity.cold.as_dict(),
                "drill_every": format_duration(self.fixity.drill_every),
            },
            "bag": {"max_bytes": format_size(self.bag.max_bytes), "max_files": self.bag.max_files},
            "formats": {"at_risk": list(self.formats.at_risk), "unidentified": self.formats.unidentified},
            "retention": {"mode": self.retention.mode, "years": self.retention.years},
            "virus_check": self.virus_check,
            "large_files": self.large_files,
            "libraries": None if self.libraries is None else list(self.libraries),
            "source": None if self.source is None else str(self.source),
        }


# --------------------------------------------------------------------------------------------
# Collecting problems
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Issue:
    """One problem: the file, the dotted key (None for the file as a whole) and what is wrong."""

    file: str
    key: Optional[str]
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.key}: {self.message}" if self.key else f"{self.file}: {self.message}"


class Problems:
    """Gathers every problem found while reading one or several files, then raises them at once."""

    def __init__(self) -> None:
        self.issues: List[Issue] = []

    def add(self, file: Any, key: Optional[str], message: str) -> None:
        self.issues.append(Issue(str(file), key or None, message))

    def __bool__(self) -> bool:
        return bool(self.issues)

    def raise_if_any(self) -> None:
        if self.issues:
            raise to_config_error(self.issues)


def to_config_error(issues: Sequence[Issue]) -> ConfigError:
    """A ConfigError whose path/key/message are the first issue, followed by the others.

    The others are written into the message (one per line, each naming its own file) so
    whoever prints the error shows them all; `.issues` keeps them for programs.
    """
    first = issues[0]
    message = first.message
    if len(issues) > 1:
        message += f"\n  and {len(issues) - 1} more problem{'s' if len(issues) > 2 else ''}:"
        message += "".join(f"\n  - {issue}" for issue in issues[1:])
    error = ConfigError(message, path=first.file, key=first.key)
    error.issues = list(issues)  # type: ignore[attr-defined]
    return error


# --------------------------------------------------------------------------------------------
# Strict YAML reading
# --------------------------------------------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key written twice in one mapping (PyYAML keeps the last)."""

    def construct_mapping(self, node, deep=False):  # type: ignore[override]
        if isinstance(node, yaml.MappingNode):
            seen: Dict[Any, Any] = {}
            for key_node, _value in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    if key in seen:
                        raise yaml.constructor.ConstructorError(
                            "while reading a mapping", node.start_mark,
                            f"key {key!r} is written twice (first on line {seen[key].line + 1})",
                            key_node.start_mark)
                    seen[key] = key_node.start_mark
                except TypeError:
                    pass  # unhashable key: SafeLoader reports it below
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: Path, *, what: str) -> Any:
    """Parse one YAML file with yaml.safe_load semantics; ConfigError for missing/empty/malformed.

    Syntax errors give the line and column but not PyYAML's quoted snippet of the line, which
    could be a secret someone pasted in by mistake.
    """
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{what} does not exist", path=str(path))
    if path.is_dir():
        raise ConfigError(f"{what} is a folder, not a YAML file", path=str(path))
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} is not UTF-8 text (byte {exc.start})", path=str(path))
    except OSError as exc:
        raise ConfigError(f"{what} cannot be read: {exc.strerror}", path=str(path))
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        problem = exc.problem or exc.context or "invalid YAML"
        raise ConfigError(f"YAML syntax error at {where}: {problem}", path=str(path))
    except yaml.YAMLError as exc:
        raise ConfigError(f"YAML error: {exc}", path=str(path))
    if data is None:
        raise ConfigError(f"{what} is empty; it must be a YAML mapping of keys to values", path=str(path))
    return data


# --------------------------------------------------------------------------------------------
# Typed checks (each records a problem and returns None when the value is unusable)
# --------------------------------------------------------------------------------------------

_SECRET_KEY = re.compile(r"secret|passw|token|access_?key|private_?key|api_?key", re.IGNORECASE)


def looks_like_secret_key(name: str) -> bool:
    """True for key names that would hold a credential itself rather than a reference to one."""
    return bool(_SECRET_KEY.search(name)) and not name.lower().endswith("_env")


def join_key(parent: str, child: Any) -> str:
    if isinstance(child, int):
        return f"{parent}[{child}]"
    return f"{parent}.{child}" if parent else str(child)


def show_value(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def type_name(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    return {bool: "true/false", int: "a number", float: "a number", str: "text", list: "a list",
            dict: "a mapping"}.get(type(value), type(value).__name__)


SECRET_HELP = ("secrets are never written in the file: put them in environment variables and "
               "reference them with credentials: {access_key_env: NAME, secret_key_env: NAME}, "
               "or name an AWS profile with credentials: {profile: NAME}")


class Reader:
    """Reads values of one file into typed Python values, recording problems with their key."""

    def __init__(self, file: Path, problems: Problems):
        self.file = Path(file)
        self.problems = problems

    def problem(self, key: Optional[str], message: str) -> None:
        self.problems.add(self.file, key, message)

    def mapping(self, value: Any, key: str, allowed: Iterable[str], required: Iterable[str] = (),
                *, describe: str = "a mapping") -> Optional[Dict[str, Any]]:
        """Check a mapping's type and keys; return it (unknown/secret keys removed) or None."""
        allowed = list(allowed)
        if not isinstance(value, dict):
            self.problem(key or None, f"must be {describe} with keys {', '.join(allowed)}; "
                                      f"got {type_name(value)}")
            return None
        result: Dict[str, Any] = {}
        for name, item in value.items():
            sub = join_key(key, name)
            if not isinstance(name, str):
                self.problem(sub, f"keys must be text; allowed keys here: {', '.join(allowed)}")
                continue
            if name not in allowed:
                if looks_like_secret_key(name):
                    self.problem(sub, f"a literal secret is not allowed here; {SECRET_HELP}")
                    continue
                close = difflib.get_close_matches(name, allowed, n=1) or \
                    [a for a in allowed if a.startswith(name) or name.startswith(a)][:1]
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                self.problem(sub, f"unknown key{hint}; allowed keys here: {', '.join(allowed)}")
                continue
            result[name] = item
        for name in required:
            if name not in value:
                self.problem(join_key(key, name), f"is required but missing; "
                                                  f"allowed keys here: {', '.join(allowed)}")
        return result

    def text(self, value: Any, key: str, *, pattern: Optional[re.Pattern] = None,
             help: str = "text", allow_empty: bool = False) -> Optional[str]:
        if not isinstance(value, str):
            self.problem(key, f"must be {help}; got {type_name(value)} {show_value(value)}")
            return None
        if not allow_empty and not value.strip():
            self.problem(key, f"must not be empty; must be {help}")
            return None
        if pattern is not None and not pattern.match(value):
            self.problem(key, f"{show_value(value)} is not allowed; must be {help}")
            return None
        return value

    def boolean(self, value: Any, key: str) -> Optional[bool]:
        if not isinstance(value, bool):
            self.problem(key, f"must be true or false; got {type_name(value)} {show_value(value)}")
            return None
        return value

    def integer(self, value: Any, key: str, *, minimum: int, maximum: Optional[int] = None) -> Optional[int]:
        limits = f"a whole number >= {minimum}" + (f" and <= {maximum}" if maximum is not None else "")
        if isinstance(value, bool) or not isinstance(value, int):
            self.problem(key, f"must be {limits}; got {type_name(value)} {show_value(value)}")
            return None
        if value < minimum or (maximum is not None and value > maximum):
            self.problem(key, f"must be {limits}; got {value}")
            return None
        return value

    def choice(self, value: Any, key: str, choices: Sequence[str]) -> Optional[str]:
        if not isinstance(value, str) or value not in choices:
            self.problem(key, f"must be one of {', '.join(choices)}; got {show_value(value)}")
            return None
        return value

    def size(self, value: Any, key: str, *, minimum: int = 1, maximum: Optional[int] = None) -> Optional[int]:
        try:
            number = parse_size(value, where=key)
        except ConfigError as exc:
            self.problem(key, exc.message)
            return None
        if number < minimum or (maximum is not None and number > maximum):
            bound = f"at least {format_size(minimum)}" + (f" and at most {format_size(maximum)}"
                                                         if maximum is not None else "")
            self.problem(key, f"must be {bound}; got {show_value(value)}")
            return None
        return number

    def duration(self, value: Any, key: str) -> Optional[datetime.timedelta]:
        try:
            return parse_duration(value, where=key)
        except ConfigError as exc:
            self.problem(key, exc.message)
            return None

    def unique_list(self, value: Any, key: str, *, help: str, allow_empty: bool = False) -> Optional[list]:
        """A YAML list without repeated entries; the entries are checked by the caller."""
        if not isinstance(value, list):
            self.problem(key, f"must be a list of {help}; got {type_name(value)} {show_value(value)}")
            return None
        if not value and not allow_empty:
            self.problem(key, f"must not be empty; must be a list of {help}")
            return None
        seen: Dict[Any, int] = {}
        for index, item in enumerate(value):
            try:
                if item in seen:
                    self.problem(join_key(key, index),
                                 f"{show_value(item)} is listed twice (also at {key}[{seen[item]}]); "
                                 f"each entry may appear once")
                    continue
                seen[item] = index
            except TypeError:
                pass
        return value


def read_binding(reader: Reader, value: Any, key: str) -> Optional[Tuple[str, ...]]:
    """A policy's or storage target's `libraries: [CODE, ...]`: the only libraries that may use it
    (whether the codes are listed in the registry is checked by the config)."""
    items = reader.unique_list(value, key, help="library codes")
    if items is None:
        return None
    codes: List[str] = []
    for index, item in enumerate(items):
        code = reader.text(item, join_key(key, index), pattern=NAME_PATTERN, help=CODE_HELP)
        if code is not None:
            codes.append(code)
    return tuple(codes) if len(codes) == len(items) else None


# --------------------------------------------------------------------------------------------
# Policy
# --------------------------------------------------------------------------------------------

POLICY_KEYS = ("name", "description", "checksums", "replicas", "distinct_sites", "fixity", "bag",
               "formats", "retention", "virus_check", "large_files", "libraries")
VIRUS_CHECK_CHOICES = ("required", "warn", "off")
LARGE_FILES_CHOICES = ("scan-in-chunks", "refuse", "skip-and-record")
POLICY_REQUIRED = ("name", "checksums", "replicas")
CHECKSUM_HELP = f"one of {', '.join(SUPPORTED)}"


def _read_bag(reader: Reader, value: Any) -> BagLimits:
    data = reader.mapping(value, "bag", ("max_bytes", "max_files"))
    if data is None:
        return DEFAULT_BAG
    max_bytes = reader.size(data["max_bytes"], "bag.max_bytes") if "max_bytes" in data else DEFAULT_BAG.max_bytes
    max_files = (reader.integer(data["max_files"], "bag.max_files", minimum=1)
                 if "max_files" in data else DEFAULT_BAG.max_files)
    return BagLimits(max_bytes=max_bytes or DEFAULT_BAG.max_bytes, max_files=max_files or DEFAULT_BAG.max_files)


def _read_formats(reader: Reader, value: Any) -> FormatRules:
    data = reader.mapping(value, "formats", ("at_risk", "unidentified"))
    if data is None:
        return DEFAULT_FORMATS
    at_risk: List[str] = []
    if "at_risk" in data:
        items = reader.unique_list(data["at_risk"], "formats.at_risk", allow_empty=True,
                                   help="PRONOM PUIDs such as fmt/104 or x-fmt/190")
        for index, item in enumerate(items or []):
            puid = reader.text(item, f"formats.at_risk[{index}]", pattern=PUID_PATTERN,
                               help="a PRONOM PUID such as fmt/104 or x-fmt/190 (fmt/N or x-fmt/N)")
            if puid and puid not in at_risk:
                at_risk.append(puid)
    unidentified = DEFAULT_FORMATS.unidentified
    if "unidentified" in data:
        unidentified = reader.choice(data["unidentified"], "formats.unidentified", UNIDENTIFIED_CHOICES) or unidentified
    return FormatRules(at_risk=tuple(at_risk), unidentified=unidentified)


def _read_retention(reader: Reader, value: Any) -> Retention:
    data = reader.mapping(value, "retention", ("mode", "years"))
    if data is None:
        return DEFAULT_RETENTION
    mode = reader.choice(data.get("mode", "none"), "retention.mode", RETENTION_MODES) if "mode" in data else "none"
    if mode is None:
        return DEFAULT_RETENTION
    if mode == "none":
        if "years" in data:
            reader.problem("retention.years", "is only meaningful with retention.mode governance or "
                                              "compliance; set the mode or remove years")
        return DEFAULT_RETENTION
    if "years" not in data:
        reader.problem("retention.years", f"is required when retention.mode is {mode}; "
                                          f"must be a whole number of years from 1 to {MAX_RETENTION_YEARS}")
        return DEFAULT_RETENTION
    years = reader.integer(data["years"], "retention.years", minimum=1, maximum=MAX_RETENTION_YEARS)
    return Retention(mode=mode, years=years or 1)


def read_policy(data: Any, source: Path, problems: Problems) -> Optional[Policy]:
    """Build a Policy from parsed YAML, recording every problem; None if there were any."""
    before = len(problems.issues)
    reader = Reader(source, problems)
    top = reader.mapping(data, "", POLICY_KEYS, POLICY_REQUIRED, describe="a policy (a YAML mapping)")
    if top is None:
        return None

    name = None
    if "name" in top:
        name = reader.text(top["name"], "name", pattern=NAME_PATTERN, help=f"a policy name: {NAME_HELP}")
        if name is not None and Path(source).stem != name:
            reader.problem("name", f"{name!r} does not match the file name {Path(source).name!r}; "
                                   f"a policy named {name!r} must be in {name}.yaml")

    checksums: List[str] = []
    if "checksums" in top:
        items = reader.unique_list(top["checksums"], "checksums", help=f"checksum algorithms ({CHECKSUM_HELP})")
        for index, item in enumerate(items or []):
            algorithm = reader.choice(item, f"checksums[{index}]", SUPPORTED)
            if algorithm and algorithm not in checksums:
                checksums.append(algorithm)

    replicas: List[str] = []
    if "replicas" in top:
        items = reader.unique_list(top["replicas"], "replicas", help="storage target names from the config")
        for index, item in enumerate(items or []):
            target = reader.text(item, f"replicas[{index}]", pattern=NAME_PATTERN,
                                 help="the name of a storage target in the config")
            if target and target not in replicas:
                replicas.append(target)

    distinct = True
    if "distinct_sites" in top:
        distinct = reader.boolean(top["distinct_sites"], "distinct_sites")
        distinct = True if distinct is None else distinct

    description = ""
    if "description" in top:
        description = reader.text(top["description"], "description", help="text", allow_empty=True) or ""

    fixity = read_fixity(reader, top["fixity"]) if "fixity" in top else DEFAULT_FIXITY
    bag = _read_bag(reader, top["bag"]) if "bag" in top else DEFAULT_BAG
    formats = _read_formats(reader, top["formats"]) if "formats" in top else DEFAULT_FORMATS
    retention = _read_retention(reader, top["retention"]) if "retention" in top else DEFAULT_RETENTION
    virus_check = "required"
    if "virus_check" in top:
        # YAML 1.1 reads an unquoted `off` as false: that is what the person wrote.
        value = "off" if top["virus_check"] is False else top["virus_check"]
        virus_check = reader.choice(value, "virus_check", VIRUS_CHECK_CHOICES) or virus_check
    large_files = "scan-in-chunks"
    if "large_files" in top:
        large_files = reader.choice(top["large_files"], "large_files", LARGE_FILES_CHOICES) or large_files

    libraries = read_binding(reader, top["libraries"], "libraries") if "libraries" in top else None

    if len(problems.issues) > before or name is None:
        return None
    policy = Policy(name=name, checksums=tuple(checksums), replicas=tuple(replicas), distinct_sites=distinct,
                    fixity=fixity, bag=bag, formats=formats, retention=retention,
                    description=description.strip(), source=Path(source), virus_check=virus_check,
                    large_files=large_files, libraries=libraries)
    warn_once(policy)
    return policy


_warned: set = set()


def warn_once(policy: Policy) -> None:
    """Print a policy's warnings on stderr, once per file and process (the config is loaded by
    the CLI and again by each task). A warning, not a refusal: an md5-only policy still keeps
    bags that validate, and refusing it would stop every audit and restore of bags made under it.
    Only "warning: FILE: KEY: ..." lines: stdout stays clean for --json."""
    import sys

    for text in policy.warnings:
        line = f"{policy.source}: {text}"
        if line not in _warned:
            _warned.add(line)
            print(f"warning: {line}", file=sys.stderr)


def load_policy(path: Any) -> Policy:
    """Read and check one policy file on its own (not against any config); ConfigError if bad."""
    source = Path(os.path.abspath(os.path.expanduser(str(path))))
    data = read_yaml(source, what="policy file")
    problems = Problems()
    policy = read_policy(data, source, problems)
    problems.raise_if_any()
    assert policy is not None
    return policy


__all__ = [
    "BagLimits", "FixityCadence", "FormatRules", "Issue", "Policy", "Problems",
    "Reader", "Retention", "DEFAULT_BAG", "DEFAULT_FIXITY", "DEFAULT_FORMATS", "DEFAULT_RETENTION",
    "load_policy", "read_policy", "read_yaml", "to_config_error",
]
