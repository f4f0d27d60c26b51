"""BagIt rules (RFC 8493 for 1.0, the kunze drafts for 0.93-0.97) in one place.

The bag writer (`ingest.bag`) and the validator (`ingest.validate`) both use these functions,
so what Strongroom writes and what it accepts cannot drift apart. The writer computes payload
digests while copying (each source byte is read once), so the functions here take digests and
never re-read payload files.

Why not simply call the `bagit` library (bagit-python 1.9)? Its rules are spread through its
`Bag` class and have known faults this module must not inherit:
  * it decodes only %0A/%0D in manifest paths, never %25, so a 1.0 bag holding
    `data/100% cotton.txt` (written `data/100%25 cotton.txt`, as RFC 8493 2.1.3 requires)
    fails its validation, and it writes such names unencoded;
  * its `_decode_filename` passes `re.IGNORECASE` as `re.sub`'s *count* (so it is
    case-sensitive and stops after two replacements);
  * its tag parser reads through `codecs` line splitting, which also breaks lines at U+2028,
    U+0085 (NEL) and form feeds, strips the whitespace around ':' that 1.0 forbids, keeps fold
    padding inside values, and cannot say on which line a problem is.
What we do reuse from it is its pre-1.0 *behaviour* where the old drafts are silent (CR/LF
escaping as %0D/%0A, package-info.txt before 0.96, Unicode-normalization-tolerant name matching,
tolerant whitespace around ':' before 1.0 - that last one RFC 8493 2.2.2 also asks for).

Paths: every path in a manifest or fetch.txt is untrusted. `path_problem` says why a path
must not be opened (absolute, drive letter, backslash, '..', '~', NUL); nothing here resolves a
path before that check.

Fields: every number in a tag file is untrusted too, and Python's `int()` is far too kind to it
(it takes '١٢٣', Arabic-Indic digits, '1_000', ' 7 ', and numbers of any size). The strict
field parsers here (`parse_uint`, `parse_int`, `parse_payload_oxum`, `parse_bag_count`,
`parse_version`) take ASCII digits only and check ranges; every reader of tag files
(`catalog.bag_records`, `ingest.metadata`, `ingest.validate`, `fixity.restore`) uses them.
Sizes are bounded as well, so a hostile file cannot make a reader slurp a gigabyte "line":
MAX_LINE_CHARS (64 KiB) per tag-file line and MAX_FIELD_CHARS (8 KiB, twice Linux's PATH_MAX,
so any path a file system can hold fits) per CSV field. Strongroom never writes more than that.
A field that breaks them raises FieldError (a ValueError, for the validator, which only
records problems); readers that must stop raise TagFileError, which names the bag, the file and
the line and is a PreservationError (exit 1: the stored bag is what is wrong).
"""

from __future__ import annotations

import codecs
import hashlib
import functools
import io
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

from strongroom.checksums import hash_file
from strongroom.durable import atomic_writer
from strongroom.errors import PreservationError

PathLike = Union[str, "os.PathLike[str]"]

BAGIT_VERSION = "1.0"
TAG_ENCODING = "UTF-8"

#: Versions whose rules this module knows (the LoC conformance suite covers all of them).
KNOWN_VERSIONS = ("0.93", "0.94", "0.95", "0.96", "0.97", "1.0")
#: Rules used when bagit.txt is missing or unreadable: the tolerant pre-1.0 ones, so one broken
#: file does not turn every other line of the bag into a spurious complaint.
FALLBACK_RULES = "0.97"

BAGIT_TXT = "bagit.txt"
FETCH_TXT = "fetch.txt"
PAYLOAD_DIR = "data"
MANIFEST_RE = re.compile(r"^manifest-(.+)\.txt$")
TAGMANIFEST_RE = re.compile(r"^tagmanifest-(.+)\.txt$")

#: Names left by desktop file managers. They carry no content worth preserving, and copying tools
#: (git, rsync excludes, zip "clean" options) routinely drop them.
OS_METADATA_NAMES = frozenset({
    ".DS_Store", "Thumbs.db", "ehthumbs.db", "desktop.ini", "Desktop.ini", "Icon\r",
    ".Spotlight-V100", ".Trashes", ".fseventsd", ".TemporaryItems",
})

#: Longest line (in characters) of any tag file a reader accepts; see the module docstring.
MAX_LINE_CHARS = 64 * 1024
#: Longest field (in characters) of a CSV tag file (metadata/*.csv).
MAX_FIELD_CHARS = 8 * 1024
#: Largest byte count, file count or nanosecond time: what the catalog's int64 columns hold.
INT64_MAX = 2 ** 63 - 1
INT64_MIN = -(2 ** 63)

_UTF8_BOM = codecs.BOM_UTF8
_ALL_BOMS = (codecs.BOM_UTF8, codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE, codecs.BOM_UTF16_LE,
             codecs.BOM_UTF16_BE)


class BagItSyntaxError(ValueError):
    """A tag file or manifest that does not follow the BagIt grammar; `issues` has every line."""

    def __init__(self, path: PathLike, issues: Sequence["LineIssue"]):
        self.path = str(path)
        self.issues = list(issues)
        detail = "; ".join(str(i) for i in self.issues[:5])
        more = f" (and {len(self.issues) - 5} more)" if len(self.issues) > 5 else ""
        super().__init__(f"{self.path}: {detail}{more}")


class FieldError(ValueError):
    """One field of a tag file is not what its grammar allows (the caller names file and line)."""


class TagFileError(PreservationError):
    """A tag file of a bag cannot be read as its grammar says: names the bag, the file and the line.

    `where` is the bag (its folder or storage location), `file` the tag file inside it and
    `line` the line number (0 when the problem is not on one line).
    """

    def __init__(self, problem: str, *, file: str, line: int = 0, where: Optional[str] = None,
                 problems: Optional[list] = None):
        self.file = file
        self.line = line
        self.problem = problem
        at = f"{file} line {line}" if line else file
        super().__init__(f"{at}: {problem}", path=where, problems=problems)


@dataclass(frozen=True)
class LineIssue:
    """Something wrong (error=True) or merely odd (error=False) on one line of a tag file."""

    line: int
    message: str
    error: bool = True

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}" if self.line else self.message


# --------------------------------------------------------------------------------------------
# Versions


@functools.lru_cache(maxsize=64)  # asked once per manifest line (decode_path -> is_v1); a bag declares one
def parse_version(text: str) -> Tuple[int, int]:
    """'0.97' -> (0, 97). Only M.N with ASCII digits on both sides is a BagIt version ('.97' is not).

    '1.0.0' is refused with a hint: RFC 8493 2.1.1 writes the version as M.N ('1.0') and
    bagit-python 1.9 refuses '1.0.0' as well ("Bag version numbers must be MAJOR.MINOR numbers").
    """
    m = re.fullmatch(r"([0-9]{1,6})\.([0-9]{1,6})", text)
    if not m:
        if re.fullmatch(r"[0-9]{1,6}(\.[0-9]{1,6}){2,}", text):
            raise FieldError(f"BagIt-Version {text!r} is not of the form M.N: a BagIt version has two numbers, "
                             f"not three (RFC 8493 2.1.1 writes it '1.0'; bagit-python refuses {text!r} too); "
                             "write 'BagIt-Version: 1.0'")
        raise FieldError(f"BagIt-Version {text!r} is not of the form M.N (e.g. 1.0)")
    return int(m.group(1)), int(m.group(2))


def is_v1(version: str) -> bool:
    """True when RFC 8493 (1.0) rules apply: %25 escaping, exact bagit.txt, strict labels."""
    return parse_version(version) >= (1, 0)


def bag_info_name(version: str) -> str:
    """The bag-info file is called package-info.txt up to 0.95 (drafts -00 to -03)."""
    return "package-info.txt" if parse_version(version) < (0, 96) else "bag-info.txt"


def rules_version(version: str) -> Tuple[Optional[str], Optional[str]]:
    """(version whose rules apply, note) for a declared version; (None, reason) if unsupported.

    Unknown versions between 0.93 and 2.0 are checked with the nearest known rules (with a
    note), as bagit-python accepts them; anything else cannot be validated.
    """
    v = parse_version(version)
    if version in KNOWN_VERSIONS:
        return version, None
    if (0, 93) <= v < (2, 0):
        use = BAGIT_VERSION if v >= (1, 0) else FALLBACK_RULES
        return use, f"BagIt-Version {version} is not a published version; checked with the {use} rules"
    return None, f"BagIt-Version {version} is not supported (known: {', '.join(KNOWN_VERSIONS)})"


# --------------------------------------------------------------------------------------------
# Path encoding in manifests and fetch.txt

_DECODE_V1 = re.compile(r"%(25|0A|0D)", re.IGNORECASE)
_DECODE_OLD = re.compile(r"%(0A|0D)", re.IGNORECASE)


def encode_path(relpath: str, version: str = BAGIT_VERSION) -> str:
    """A bag-relative path as written in a manifest or fetch.txt.

    1.0 (RFC 8493 2.1.3): '%', LF and CR - and only those - are percent-encoded, '%' first so
    that 'a%0Ab' (a literal name) becomes 'a%250Ab' and survives decoding.
    Before 1.0 the drafts encode nothing; bagit-python wrote CR/LF as %0D/%0A (a name with a
    raw newline cannot be written at all otherwise), so that is what we write for them.
    """
    if is_v1(version):
        return relpath.replace("%", "%25").replace("\n", "%0A").replace("\r", "%0D")
    return relpath.replace("\r", "%0D").replace("\n", "%0A")


def decode_path(encoded: str, version: str) -> str:
    """Inverse of `encode_path`, in one left-to-right pass ('%250A' -> '%0A', never LF).

    Escapes other than the ones `encode_path` writes (e.g. '%7E') are left as they are: they
    are literal characters of the name (see the conformance bag 'bag-with-encoded-names').
    """
    if "%" not in encoded:
        return encoded  # nothing escaped: the common case, one line of every manifest
    pattern = _DECODE_V1 if is_v1(version) else _DECODE_OLD
    return pattern.sub(lambda m: chr(int(m.group(1), 16)), encoded)


_DRIVE = re.compile(r"^[A-Za-z]:")


def path_problem(path: str) -> Optional[str]:
    """Why `path` (bag-relative, '/'-separated, already decoded) must not be opened, or None.

    Refused everywhere, not only on the OS where each trick works: bags move between systems,
    and a path that escapes the bag on Windows must not be accepted on Linux either.
    """
    if not path:
        return "empty path"
    if "\x00" in path:
        return "contains a NUL character"
    if "\\" in path:
        return "contains a backslash (a Windows path separator; BagIt paths use '/')"
    if path.startswith("/"):
        return "is an absolute path"
    if _DRIVE.match(path):
        return "starts with a drive letter"
    parts = path.split("/")
    if ".." in parts:
        return "contains a '..' component (points outside its folder)"
    if parts[0].startswith("~"):
        return "starts with '~' (a home-directory shortcut)"
    return None


def safe_relpath(path: str) -> bool:
    """True when `path` stays inside the bag (see `path_problem`)."""
    return path_problem(path) is None


def canonical_path(path: str) -> str:
    """'./data//a/./b' -> 'data/a/b'. Only for paths `path_problem` accepted (no '..')."""
    parts = path.split("/")
    if "" not in parts and "." not in parts:
        return path  # already canonical: every manifest line of a bag Strongroom wrote
    return "/".join(p for p in parts if p not in ("", "."))


_PAYLOAD_PREFIX = PAYLOAD_DIR + "/"


def is_payload_path(path: str) -> bool:
    return path.startswith(_PAYLOAD_PREFIX) and len(path) > len(_PAYLOAD_PREFIX)


def is_os_metadata(path: str) -> bool:
    """Desktop clutter such as .DS_Store, Thumbs.db or AppleDouble '._name' files."""
    name = path.rsplit("/", 1)[-1]
    return name in OS_METADATA_NAMES or name.startswith("._")


# --------------------------------------------------------------------------------------------
# Algorithms and digests

#: Names hashlib always has and that need no length argument (shake_* do).
_COMPUTABLE = frozenset(a for a in hashlib.algorithms_guaranteed if not a.startswith("shake_"))


def hashlib_name(algorithm: str) -> Optional[str]:
    """The hashlib name for a manifest's algorithm ('sha256', 'SHA3-256' -> 'sha3_256'), or None."""
    name = algorithm.lower()
    for candidate in (name, name.replace("-", "_"), name.replace("-", "")):
        if candidate in _COMPUTABLE:
            return candidate
    return None


def digest_length(algorithm: str) -> Optional[int]:
    name = hashlib_name(algorithm)
    return None if name is None else hashlib.new(name).digest_size * 2


def empty_digest(algorithm: str) -> Optional[str]:
    """Digest of zero bytes: lets a validator know that a listed-but-absent file was empty."""
    name = hashlib_name(algorithm)
    return None if name is None else hashlib.new(name, b"").hexdigest()


def payload_oxum(total_bytes: int, file_count: int) -> str:
    """Payload-Oxum value 'OctetCount.StreamCount' (RFC 8493 2.2.2)."""
    if isinstance(total_bytes, bool) or isinstance(file_count, bool) \
            or not isinstance(total_bytes, int) or not isinstance(file_count, int) \
            or total_bytes < 0 or file_count < 0:
        raise ValueError(f"Payload-Oxum needs two non-negative whole numbers, got {total_bytes!r}, {file_count!r}")
    return f"{total_bytes}.{file_count}"


def parse_payload_oxum(value: str) -> Tuple[int, int]:
    """'1234.5' -> (1234 bytes, 5 files); FieldError (a ValueError) for anything else.

    ASCII digits only, each number at most INT64_MAX (no real payload is bigger).
    """
    m = re.fullmatch(r"[ \t]*([0-9]{1,19})\.([0-9]{1,19})[ \t]*", value[:64])
    if not m or len(value) > 64:
        raise FieldError(f"Payload-Oxum {_shown(value)} is not OctetCount.StreamCount (e.g. 1024.3), "
                         "in ASCII digits")
    octets, streams = int(m.group(1)), int(m.group(2))
    if octets > INT64_MAX or streams > INT64_MAX:
        raise FieldError(f"Payload-Oxum {_shown(value)} is out of range (each number at most {INT64_MAX})")
    return octets, streams


# --------------------------------------------------------------------------------------------
# Strict fields


def _shown(text: str, limit: int = 40) -> str:
    """A field as an error message shows it: repr'd, cut short (a hostile field may be huge)."""
    text = str(text)
    return repr(text) if len(text) <= limit else repr(text[:limit]) + f"... ({len(text)} characters)"


_WHOLE_NUMBER = re.compile(r"-?[0-9]+")


def parse_int(text: str, what: str, minimum: int = INT64_MIN, maximum: int = INT64_MAX) -> int:
    """A whole number written in ASCII digits, with an optional leading '-', within [minimum, maximum].

    Refused (FieldError): non-ASCII digits ('١٢٣', which int() accepts), '+', '_', spaces,
    an empty field, more than 19 digits. `what` names the field in the message.
    """
    if not isinstance(text, str) or not _WHOLE_NUMBER.fullmatch(text[:64]) or len(text) > 64:
        raise FieldError(f"{what} {_shown(text)} is not a whole number in ASCII digits")
    value = int(text)  # at most 64 characters: cheap
    if not minimum <= value <= maximum:
        raise FieldError(f"{what} {_shown(text)} is out of range ({minimum} to {maximum})")
    return value


def parse_uint(text: str, what: str, maximum: int = INT64_MAX) -> int:
    """A non-negative whole number in ASCII digits, at most `maximum` (see `parse_int`)."""
    if isinstance(text, str) and text.startswith("-"):
        raise FieldError(f"{what} {_shown(text)} is negative")
    return parse_int(text, what, 0, maximum)


def parse_bag_count(value: str) -> Tuple[int, Optional[int]]:
    """Bag-Count 'N of T' (RFC 8493 2.2.2) -> (N, T), T None for '?'; 1 <= N <= T."""
    m = re.fullmatch(r"[ \t]*([0-9]{1,9})[ \t]+of[ \t]+([0-9]{1,9}|\?)[ \t]*", value[:64])
    if not m or len(value) > 64:
        raise FieldError(f"Bag-Count {_shown(value)} is not 'N of T' (e.g. 1 of 3) in ASCII digits")
    part = int(m.group(1))
    total = None if m.group(2) == "?" else int(m.group(2))
    if part < 1 or (total is not None and part > total):
        raise FieldError(f"Bag-Count {_shown(value)}: the part must be between 1 and the total")
    return part, total


def check_field(text: str, what: str, limit: int = MAX_FIELD_CHARS) -> str:
    """`text` itself, or FieldError when it is longer than `limit` characters."""
    if len(text) > limit:
        raise FieldError(f"{what} is {len(text)} characters long (at most {limit} are accepted)")
    return text


def is_text_encoding(name: str) -> bool:
    """True for a codec that turns bytes into text ('UTF-8', 'ISO-8859-1', 'UTF-16').

    `codecs.lookup` also knows bytes-to-bytes and text-to-text transforms ('base64', 'zlib',
    'rot13', 'hex'): a tag file cannot be in those, and opening one as text raises LookupError.
    """
    try:
        codecs.lookup(name)
        "".encode(name)
        b"".decode(name)
    except (LookupError, TypeError, ValueError):
        return False
    return True


# --------------------------------------------------------------------------------------------
# Reading text tag files

def has_utf8_bom(path: PathLike) -> bool:
    with open(path, "rb") as fh:
        return fh.read(3) == _UTF8_BOM


def iter_lines(path: PathLike, encoding: str = TAG_ENCODING, max_chars: int = MAX_LINE_CHARS
               ) -> Iterator[Tuple[int, str]]:
    """(line number, text) of a tag file, streamed: memory stays flat for huge manifests.

    Lines end at LF, CR or CRLF - the three line breaks BagIt allows - and nowhere else (no
    splitting at U+2028, NEL or form feed). A leading U+FEFF (byte-order mark) is dropped; use
    `has_utf8_bom` to find out whether there was one. Raises UnicodeError (UnicodeDecodeError,
    or a UTF-16 stream without BOM), LookupError for an encoding that is not a text encoding,
    and BagItSyntaxError for a line longer than `max_chars`: it is never read whole.
    """
    if not is_text_encoding(encoding):
        raise LookupError(f"{encoding!r} is not a text encoding")
    with open(path, "rb") as raw:
        text = io.TextIOWrapper(raw, encoding=encoding, errors="strict", newline="")
        number = 0
        while True:
            line = text.readline(max_chars + 2)   # room for the CRLF that ends a maximal line
            if not line:
                return
            number += 1
            if number == 1 and line.startswith("\ufeff"):
                line = line[1:]
            body = line.rstrip("\r\n")
            if len(body) > max_chars:
                raise BagItSyntaxError(path, [LineIssue(number, f"is longer than {max_chars} characters; "
                                                                "the rest of the file was not read")])
            yield number, body


_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def split_lines(raw: bytes, file: str, where: Optional[str] = None, max_chars: int = MAX_LINE_CHARS
                ) -> Iterator[Tuple[int, str]]:
    """(line number, text) of a UTF-8 tag file held in memory: the same lines `iter_lines` gives.

    For readers that get a tag file's bytes from a storage adapter rather than a path
    (`catalog.bag_records`, `catalog.rebuild`); one function, so they cannot split lines
    differently from the validator. Lines end at LF, CR or CRLF (RFC 8493 allows all three) and
    nowhere else; a leading UTF-8 BOM is dropped; a final line break makes no empty last line.
    Bytes that are not UTF-8, or a line longer than `max_chars`, raise TagFileError naming
    `file` (in `where`) and the line.
    """
    if raw.startswith(_UTF8_BOM):
        raw = raw[len(_UTF8_BOM):]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        number = len(_LINE_BREAK.findall(raw[:exc.start].decode("utf-8"))) + 1
        raise TagFileError(f"is not valid UTF-8 (byte {exc.start}: {exc.reason})", file=file, line=number,
                           where=where) from None
    return _split_text(text, file, where, max_chars)


def _split_text(text: str, file: str, where: Optional[str], max_chars: int) -> Iterator[Tuple[int, str]]:
    start, number = 0, 0
    for brk in _LINE_BREAK.finditer(text):
        number += 1
        yield number, _bounded(text[start:brk.start()], number, file, where, max_chars)
        start = brk.end()
    if start < len(text):
        yield number + 1, _bounded(text[start:], number + 1, file, where, max_chars)


def _bounded(line: str, number: int, file: str, where: Optional[str], max_chars: int) -> str:
    if len(line) > max_chars:
        raise TagFileError(f"the line is {len(line)} characters long (at most {max_chars} are accepted)",
                           file=file, line=number, where=where)
    return line


def bom_issue(path: PathLike, encoding: str) -> Optional[LineIssue]:
    """A UTF-8 byte-order mark in a UTF-8 tag file other than bagit.txt: tolerated, reported.

    (bagit.txt itself MUST NOT have one: `parse_bagit_txt` makes that an error.) UTF-16/32 tag
    files need their BOM, so nothing is said about them.
    """
    if codecs.lookup(encoding).name == "utf-8" and has_utf8_bom(path):
        return LineIssue(1, "starts with a UTF-8 byte-order mark, which BagIt does not use (ignored)", error=False)
    return None


@dataclass
class BagitDeclaration:
    """What bagit.txt says, and what is wrong with it."""

    version: Optional[str] = None        # as declared, when it is a valid M.N
    encoding: Optional[str] = None       # as declared, when Python knows the codec
    rules: Optional[str] = None          # version whose rules the rest of the bag is checked with
    issues: List[LineIssue] = field(default_factory=list)


def parse_bagit_txt(raw: bytes) -> BagitDeclaration:
    """Check bagit.txt (RFC 8493 2.1.1): UTF-8 without BOM, exactly

        BagIt-Version: M.N
        Tag-File-Character-Encoding: ENCODING

    1.0 bags must match that byte for byte (no whitespace around ':' or at line end, nothing
    else in the file); older ones are read tolerantly, as their drafts were looser.
    """
    decl = BagitDeclaration()
    issues = decl.issues
    for bom in _ALL_BOMS:
        if raw.startswith(bom):
            issues.append(LineIssue(1, "starts with a byte-order mark; bagit.txt must be UTF-8 without one"))
            raw = raw[len(bom):] if bom == _UTF8_BOM else raw
            break
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        issues.append(LineIssue(0, f"is not valid UTF-8 (byte {exc.start})"))
        return decl
    lines = re.split(r"\r\n|\r|\n", text)
    ends_with_newline = lines[-1] == ""
    if ends_with_newline:
        lines.pop()

    found: Dict[str, Tuple[int, str]] = {}
    for number, line in enumerate(lines, 1):
        label, sep, value = line.partition(":")
        key = label.strip()
        if not sep or key not in ("BagIt-Version", "Tag-File-Character-Encoding"):
            issues.append(LineIssue(number, f"unexpected line {line!r}; bagit.txt holds only BagIt-Version "
                                            "and Tag-File-Character-Encoding"))
            continue
        if key in found:
            issues.append(LineIssue(number, f"{key} is given twice"))
            continue
        found[key] = (number, value.strip())

    if "BagIt-Version" not in found:
        issues.append(LineIssue(0, "lacks the required BagIt-Version line"))
    else:
        number, value = found["BagIt-Version"]
        try:
            parse_version(value)
        except ValueError as exc:
            issues.append(LineIssue(number, str(exc)))
        else:
            decl.version = value
            decl.rules, note = rules_version(value)
            if note:
                issues.append(LineIssue(number, note, error=decl.rules is None))
    if "Tag-File-Character-Encoding" not in found:
        issues.append(LineIssue(0, "lacks the required Tag-File-Character-Encoding line"))
    else:
        number, value = found["Tag-File-Character-Encoding"]
        try:
            codecs.lookup(value)
        except (LookupError, ValueError):   # ValueError: a NUL in the name ("embedded null character")
            issues.append(LineIssue(number, f"Tag-File-Character-Encoding {_shown(value)} is not a known character "
                                            "encoding; the tag files cannot be read (BagIt tag files are UTF-8)"))
        else:
            if is_text_encoding(value):
                decl.encoding = value
            else:
                issues.append(LineIssue(number, f"Tag-File-Character-Encoding {_shown(value)} is not a text "
                                                "encoding (it is a bytes-to-bytes or text-to-text transform); "
                                                "the tag files cannot be read (BagIt tag files are UTF-8)"))

    if decl.rules and is_v1(decl.rules) and not any(i.error for i in issues):
        expected = [f"BagIt-Version: {decl.version}", f"Tag-File-Character-Encoding: {decl.encoding}"]
        if lines != expected:
            for number, (got, want) in enumerate(zip(lines, expected), 1):
                if got != want:
                    issues.append(LineIssue(number, f"must read exactly {want!r} (RFC 8493 2.1.1: one space "
                                                    f"after ':', no other whitespace), found {got!r}"))
            if len(lines) != 2:
                issues.append(LineIssue(0, f"must have exactly 2 lines, has {len(lines)}"))
        elif not ends_with_newline:
            issues.append(LineIssue(2, "the last line has no line break", error=False))
    return decl


def parse_tag_lines(lines: Iterable[Tuple[int, str]], version: str = BAGIT_VERSION
                    ) -> Tuple[List[Tuple[str, str]], List[LineIssue]]:
    """'Label: value' elements of a bag-info style file, in order, plus what is wrong with it.

    RFC 8493 2.2.2: label, ':', one space or tab, value; a line starting with whitespace
    continues the previous value, the line break being part of the value and the indentation
    not. 1.0 labels must not start or end with whitespace; before 1.0 whitespace around ':' is
    accepted and dropped (the RFC asks 1.0 readers to accept that for old bags).
    """
    v1 = is_v1(version)
    items: List[Tuple[str, str]] = []
    issues: List[LineIssue] = []
    for number, line in lines:
        if line[:1] in (" ", "\t") and items:
            label, value = items[-1]
            items[-1] = (label, value + "\n" + line.lstrip(" \t"))
            continue
        if not line.strip():
            if v1:
                issues.append(LineIssue(number, "blank line (ignored)", error=False))
            continue
        if line[:1] in (" ", "\t"):
            issues.append(LineIssue(number, "indented line with no element before it to continue"))
            continue
        label, sep, value = line.partition(":")
        if not sep:
            issues.append(LineIssue(number, f"{line!r} is not 'Label: value'"))
            continue
        if v1:
            if not label.strip():
                issues.append(LineIssue(number, "element with an empty label"))
                continue
            if label != label.strip():
                issues.append(LineIssue(number, f"label {label!r} has whitespace before the ':' "
                                                "(not allowed in BagIt 1.0)"))
                label = label.strip()
            if value[:1] in (" ", "\t"):
                value = value[1:]
            elif value:
                issues.append(LineIssue(number, f"no space after '{label}:'", error=False))
        else:
            label, value = label.strip(), value.strip(" \t")
            if not label:
                issues.append(LineIssue(number, "element with an empty label"))
                continue
        items.append((label, value))
    return items, issues


def bag_info_lines(raw: bytes, where: Optional[str] = None) -> Dict[str, Tuple[str, int]]:
    """label -> (value, line number) of a Strongroom bag's bag-info.txt (UTF-8, read strictly as
    registration reads it), the first occurrence of each label. TagFileError on the first bad line."""
    numbered = list(split_lines(raw, "bag-info.txt", where))
    items, issues = parse_tag_lines(numbered, BAGIT_VERSION)
    errors = [i for i in issues if i.error]
    if errors:
        raise TagFileError(errors[0].message, file="bag-info.txt", line=errors[0].line, where=where)
    starts = [n for n, line in numbered if line[:1] not in (" ", "\t") and line.strip()]
    info: Dict[str, Tuple[str, int]] = {}
    for (label, value), number in zip(items, starts):
        info.setdefault(label, (value, number))
    return info


def read_tag_file(path: PathLike, encoding: str = TAG_ENCODING, version: str = BAGIT_VERSION
                  ) -> List[Tuple[str, str]]:
    """Elements of bag-info.txt (or any 'Label: value' tag file), in order; duplicates kept.

    Raises BagItSyntaxError naming every bad line. A UTF-8 BOM is skipped.
    """
    items, issues = parse_tag_lines(iter_lines(path, encoding), version)
    errors = [i for i in issues if i.error]
    if errors:
        raise BagItSyntaxError(path, errors)
    return items


@dataclass(frozen=True)
class ManifestEntry:
    """One line of a manifest: the decoded, canonical path and the lower-case hex digest."""

    path: str
    digest: str
    line: int
    written: str  # the path exactly as the line has it (still percent-encoded)


_MANIFEST_LINE = re.compile(r"([0-9A-Fa-f]+)([ \t]+)(.*)")


def parse_manifest_lines(lines: Iterable[Tuple[int, str]], version: str, algorithm: Optional[str] = None
                         ) -> Tuple[List[ManifestEntry], List[LineIssue]]:
    """Entries of a (tag) manifest: 'checksum<whitespace>filepath' per line (RFC 8493 2.1.3).

    Unsafe paths are reported and left out, so nothing downstream can open them. Tolerated with
    a warning: md5sum's binary-mode marker ('hash *path', exactly one space then '*') and
    non-canonical paths such as './data/x'.
    """
    expected_len = digest_length(algorithm) if algorithm else None
    entries: List[ManifestEntry] = []
    issues: List[LineIssue] = []
    for number, line in lines:
        if not line.strip():
            issues.append(LineIssue(number, "blank line (ignored)", error=False))
            continue
        m = _MANIFEST_LINE.fullmatch(line)
        if not m or not m.group(3):
            issues.append(LineIssue(number, f"{line!r} is not '<hex checksum> <path>'"))
            continue
        digest, sep, written = m.group(1).lower(), m.group(2), m.group(3)
        if sep == " " and written.startswith("*"):
            written = written[1:]
            issues.append(LineIssue(number, f"md5sum-style '*' before {written!r} (binary-mode marker, ignored)",
                                    error=False))
        if expected_len is not None and len(digest) != expected_len:
            issues.append(LineIssue(number, f"{algorithm} checksum {digest!r} has {len(digest)} hex digits, "
                                            f"not {expected_len}"))
            continue
        decoded = decode_path(written, version)
        problem = path_problem(decoded)
        if problem:
            issues.append(LineIssue(number, f"unsafe path {written!r}: {problem}; not opened"))
            continue
        path = canonical_path(decoded)
        if not path:
            issues.append(LineIssue(number, f"path {written!r} names no file"))
            continue
        if path != decoded:
            issues.append(LineIssue(number, f"path {written!r} is not in canonical form; read as {path!r}",
                                    error=False))
        entries.append(ManifestEntry(path, digest, number, written))
    return entries, issues


def manifest_algorithm(path: PathLike) -> Optional[str]:
    """'manifest-sha256.txt' or 'tagmanifest-sha256.txt' -> 'sha256'; None for other names."""
    name = os.path.basename(os.fspath(path))
    m = TAGMANIFEST_RE.match(name) or MANIFEST_RE.match(name)
    return m.group(1) if m else None


def read_manifest(path: PathLike, version: str = BAGIT_VERSION, encoding: str = TAG_ENCODING
                  ) -> List[Tuple[str, str]]:
    """(decoded relpath, lower-case digest) per line, in file order.

    Raises BagItSyntaxError naming every malformed or unsafe line (never returns an unsafe
    path). Duplicates are returned as they are: deciding about them is the validator's job.
    """
    entries, issues = parse_manifest_lines(iter_lines(path, encoding), version, manifest_algorithm(path))
    errors = [i for i in issues if i.error]
    if errors:
        raise BagItSyntaxError(path, errors)
    return [(e.path, e.digest) for e in entries]


# --------------------------------------------------------------------------------------------
# Writing


def manifest_line(digest: str, relpath: str, version: str = BAGIT_VERSION) -> str:
    """'<digest>  <encoded path>\\n' (two spaces, as sha256sum writes, so its -c can read it)."""
    if not re.fullmatch(r"[0-9A-Fa-f]+", digest or ""):
        raise ValueError(f"{relpath!r}: checksum {digest!r} is not hexadecimal")
    problem = path_problem(relpath)
    if problem:
        raise ValueError(f"{relpath!r}: cannot go into a manifest: {problem}")
    if canonical_path(relpath) != relpath:
        raise ValueError(f"{relpath!r}: not a canonical bag path (no '.', '//' or trailing '/')")
    return f"{digest.lower()}  {encode_path(relpath, version)}\n"


def write_manifest(path: PathLike, entries: Iterable[Tuple[str, str]], version: str = BAGIT_VERSION) -> None:
    """Write a (tag) manifest from (relpath, digest) pairs, sorted by path, atomically.

    Sorting makes the file (and so the tag manifest digest of it) the same on every run.
    Raises ValueError for an unsafe path or a path given twice.
    """
    rows = sorted(entries, key=lambda e: e[0])
    for prev, cur in zip(rows, rows[1:]):
        if prev[0] == cur[0]:
            raise ValueError(f"{path}: {cur[0]!r} is given twice")
    lines = [manifest_line(digest, relpath, version) for relpath, digest in rows]
    with atomic_writer(path) as fh:
        for line in lines:
            fh.write(line.encode("utf-8"))


def write_bagit_txt(bag_dir: PathLike, version: str = BAGIT_VERSION) -> Path:
    """bagit.txt: exactly two lines, UTF-8 without BOM, LF line ends."""
    parse_version(version)
    target = Path(bag_dir) / BAGIT_TXT
    with atomic_writer(target) as fh:
        fh.write(f"BagIt-Version: {version}\nTag-File-Character-Encoding: {TAG_ENCODING}\n".encode("utf-8"))
    return target


def tag_line(label: str, value: str) -> str:
    """One bag-info element; a value with line breaks is folded onto indented lines.

    Labels with ':', CR, LF or surrounding whitespace are refused (RFC 8493 2.2.2). Any line
    break in a value (CR, LF, CRLF) becomes LF plus two spaces of indentation; the indentation
    of continuation lines is not part of a BagIt value, so theirs is dropped here too, which
    makes `read_tag_file` return exactly what was written.
    """
    if not isinstance(label, str) or not label or label != label.strip() or re.search(r"[:\r\n]", label):
        raise ValueError(f"tag label {label!r}: must be non-empty, without ':', CR, LF or surrounding whitespace")
    if not isinstance(value, str):
        raise ValueError(f"tag {label}: value {value!r} is not text")
    first, *rest = re.split(r"\r\n|\r|\n", value)
    out = f"{label}: {first}\n"
    for part in rest:
        out += "  " + part.lstrip(" \t") + "\n"
    return out


def write_tag_file(path: PathLike, items: Sequence[Tuple[str, str]]) -> None:
    """A bag-info style file ('Label: value' lines, order and duplicates kept), UTF-8, atomic."""
    text = "".join(tag_line(label, value) for label, value in items)
    with atomic_writer(path) as fh:
        fh.write(text.encode("utf-8"))


def tag_files(bag_dir: PathLike) -> List[str]:
    """Every tag file: all files outside data/, subfolders included, except the tag manifests.

    Raises ValueError for a symbolic link or special file among them: a tag manifest must
    describe bytes that are really in the bag.
    """
    found: List[str] = []
    # an explicit stack, not recursion: a hostile bag may nest folders thousands deep
    stack: List[Tuple[str, str]] = [(os.fspath(bag_dir), "")]
    while stack:
        folder, prefix = stack.pop()
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
        subfolders = []
        for entry in entries:
            rel = prefix + entry.name
            if not prefix and entry.name == PAYLOAD_DIR:
                continue
            if entry.is_symlink():
                raise ValueError(f"{rel}: is a symbolic link; tag files must be regular files")
            if entry.is_dir(follow_symlinks=False):
                subfolders.append((entry.path, rel + "/"))
            elif entry.is_file(follow_symlinks=False):
                if not prefix and TAGMANIFEST_RE.match(entry.name):
                    continue
                found.append(rel)
            else:
                raise ValueError(f"{rel}: is not a regular file")
        stack.extend(reversed(subfolders))
    return sorted(found, key=lambda r: r.split("/"))


def tag_manifest_entries(bag_dir: PathLike, algorithms: Sequence[str]) -> Dict[str, List[Tuple[str, str]]]:
    """{algorithm: [(tag file relpath, digest), ...]}, each tag file read once for all algorithms."""
    algorithms = list(dict.fromkeys(algorithms))
    out: Dict[str, List[Tuple[str, str]]] = {a: [] for a in algorithms}
    for rel in tag_files(bag_dir):
        _, digests = hash_file(os.path.join(bag_dir, rel), algorithms)
        for a in algorithms:
            out[a].append((rel, digests[a]))
    return out


def write_tag_manifests(bag_dir: PathLike, algorithms: Sequence[str], version: str = BAGIT_VERSION) -> List[Path]:
    """tagmanifest-<alg>.txt for each algorithm, covering every tag file (see `tag_files`)."""
    written = []
    for alg, entries in tag_manifest_entries(bag_dir, algorithms).items():
        target = Path(bag_dir) / f"tagmanifest-{alg}.txt"
        write_manifest(target, entries, version)
        written.append(target)
    return written


__all__ = [
    "BAGIT_VERSION", "TAG_ENCODING", "KNOWN_VERSIONS", "BAGIT_TXT", "FETCH_TXT", "PAYLOAD_DIR",
    "BagItSyntaxError", "LineIssue", "BagitDeclaration", "ManifestEntry", "FieldError", "TagFileError",
    "MAX_LINE_CHARS", "MAX_FIELD_CHARS", "INT64_MAX", "INT64_MIN",
    "parse_int", "parse_uint", "parse_bag_count", "check_field", "is_text_encoding",
    "parse_version", "is_v1", "bag_info_name", "rules_version",
    "encode_path", "decode_path", "path_problem", "safe_relpath", "canonical_path", "is_payload_path",
    "is_os_metadata", "hashlib_name", "digest_length", "empty_digest", "payload_oxum", "parse_payload_oxum",
    "has_utf8_bom", "iter_lines", "split_lines", "bom_issue", "parse_bagit_txt", "parse_tag_lines", "read_tag_file",
    "parse_manifest_lines", "manifest_algorithm", "read_manifest",
    "manifest_line", "write_manifest", "write_bagit_txt", "tag_line", "write_tag_file",
    "tag_files", "tag_manifest_entries", "write_tag_manifests",
]
