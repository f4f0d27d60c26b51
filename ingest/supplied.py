"""Checksums a depositor supplied with the source are checked, not ignored.

Vendors and digitisation projects often ship `MD5SUMS`, `*.sha256` files or a whole BagIt bag.
Those digests are the only evidence of what the files were *before* they reached the library,
so staging verifies them against the bytes it reads (no extra read: the algorithms are added
to the ones computed while copying) and a mismatch fails the deposit, naming each file.

Recognised (names case-insensitive):
* `MD5SUMS`, `SHA1SUMS`, `SHA256SUMS`, `SHA512SUMS` (and the singular `...SUM`),
  `*.md5`, `*.sha1`, `*.sha256`, `*.sha512`: GNU coreutils format (`<hex>  name`,
  `<hex> *name`) or BSD format (`MD5 (name) = <hex>`); paths relative to the checksum file's
  folder.
* `manifest-<alg>.txt` / `tagmanifest-<alg>.txt` beside a `bagit.txt`: a BagIt bag; paths
  relative to the bag's folder, percent-decoded as that bag's BagIt version requires.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from strongroom.checksums import SUPPORTED
from strongroom.errors import InputError

from strongroom.bagit_spec import decode_path, safe_relpath

_HEX_LENGTHS = {32: "md5", 40: "sha1", 64: "sha256", 128: "sha512"}
_SUMS_NAME = re.compile(r"^(md5|sha1|sha256|sha512)sums?$", re.IGNORECASE)
_SUFFIX_NAME = re.compile(r"^.+\.(md5|sha1|sha256|sha512)$", re.IGNORECASE)
#: A BagIt (tag) manifest's file name, the algorithm as group 1.
BAG_MANIFEST = re.compile(r"^(?:tag)?manifest-(md5|sha1|sha256|sha512)\.txt$")
_GNU_LINE = re.compile(r"^\\?([0-9a-fA-F]{32,128})[ \t]+\*?(.+)$")
_BSD_LINE = re.compile(r"^(MD5|SHA1|SHA256|SHA512) ?\((.+)\) ?= ?([0-9a-fA-F]{32,128})$", re.IGNORECASE)


@dataclass(frozen=True)
class SuppliedChecksumFile:
    relpath: str  # the checksum file, relative to the source root
    algorithm: Optional[str]  # from its name, or None when only the digest length can tell
    kind: str  # "sums" | "bagit"
    bag_version: str = ""


@dataclass(frozen=True)
class SuppliedDigest:
    listed_in: str  # checksum file (relative to source root)
    line: int
    path: str  # the file it names, relative to the source root
    algorithm: str
    digest: str  # lower-case hex


def may_hold_checksums(relpath: str) -> bool:
    """Files to stage (and so read) first: checksum files and the `bagit.txt` that dates a bag."""
    name = posixpath.basename(relpath)
    return bool(name == "bagit.txt" or BAG_MANIFEST.match(name) or _SUMS_NAME.match(name) or _SUFFIX_NAME.match(name))


def find_checksum_files(relpaths: Iterable[str], read_small) -> List[SuppliedChecksumFile]:
    """Which of these files are checksum files. `read_small(relpath)` reads one (from the staged copy)."""
    relset = set(relpaths)
    found = []
    for rel in sorted(relset):
        folder, name = posixpath.split(rel)
        m = BAG_MANIFEST.match(name)
        bagit_txt = posixpath.join(folder, "bagit.txt")
        if m and bagit_txt in relset:
            version = _bag_version(read_small(bagit_txt))
            problem = version_problem(bagit_txt, version)
            if problem:
                raise InputError("a bag supplied in the source declares an unusable BagIt version",
                                 problems=[problem])
            found.append(SuppliedChecksumFile(rel, m.group(1), "bagit", version))
            continue
        m = _SUMS_NAME.match(name) or _SUFFIX_NAME.match(name)
        if m:
            found.append(SuppliedChecksumFile(rel, m.group(1).lower(), "sums"))
    return found


def _bag_version(text: bytes) -> str:
    m = re.search(rb"BagIt-Version:[ \t]*([^\r\n]*?)[ \t]*(?:\r\n|\r|\n|$)", text)
    return m.group(1).decode("utf-8", "backslashreplace") if m else "1.0"


def version_problem(bagit_txt: str, version: str) -> Optional[str]:
    """Why a supplied bag's declared version cannot be used to read its manifests, or None.

    RFC 8493 2.1.1 writes the version as M.N ("1.0"); bagit-python refuses anything else
    ("Bag version numbers must be MAJOR.MINOR numbers"). A version such as "1.0.0" is refused,
    not guessed: the version decides how manifest paths are percent-decoded, so guessing could
    check the depositor's checksums against the wrong files. The fix is one line in bagit.txt.
    """
    from strongroom.bagit_spec import KNOWN_VERSIONS, rules_version

    try:
        use, note = rules_version(version)
    except ValueError:
        use, note = None, f"BagIt-Version {version!r} is not of the form M.N"
    if use is None:
        return (f"{bagit_txt}: {note}; a supplied bag's bagit.txt must declare one of "
                f"{', '.join(KNOWN_VERSIONS)} (RFC 8493: 'BagIt-Version: 1.0')")
    return None


def check_bag_versions(scan, files: Optional[Sequence] = None) -> None:
    """Before any work: InputError (exit 2) naming every supplied bag whose bagit.txt declares a
    version its manifests cannot be read by. Reads only those small bagit.txt files.
    `files`: the scan's files, or a part holding every bagit.txt and BagIt manifest among them
    (`preflight.telling_files`)."""
    files = scan.files if files is None else files
    # The folders holding a BagIt manifest (few): no set of every name (the list streams from disk).
    with_manifest = {posixpath.dirname(f.relpath) for f in files
                     if BAG_MANIFEST.match(posixpath.basename(f.relpath))}
    problems = []
    for f in files:
        folder, name = posixpath.split(f.relpath)
        if name != "bagit.txt" or f.size > _BAGIT_TXT_LIMIT:
            continue
        if folder not in with_manifest:
            continue  # no manifest beside it: nothing is read as a bag
        try:
            with open(f.abspath, "rb") as fh:
                problem = version_problem(f.relpath, _bag_version(fh.read(_BAGIT_TXT_LIMIT)))
        except OSError as exc:
            problem = f"{f.relpath}: cannot be read ({exc.strerror or exc})"
        if problem:
            problems.append(problem)
    if problems:
        raise InputError("a bag supplied in the source declares an unusable BagIt version", path=str(scan.root),
                         problems=problems)


_BAGIT_TXT_LIMIT = 1 << 16


def parse_checksum_file(spec: SuppliedChecksumFile, data: bytes) -> Tuple[List[SuppliedDigest], List[str]]:
    """Digests listed in one checksum file, and problems (malformed or unsafe lines)."""
    digests: List[SuppliedDigest] = []
    problems: List[str] = []
    folder = posixpath.dirname(spec.relpath)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return [], [f"{spec.relpath}: checksum file is not UTF-8 text"]
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip("\r")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        algorithm = spec.algorithm
        bsd = _BSD_LINE.match(line)
        if spec.kind == "bagit":
            parts = line.split(None, 1) if " " in line or "\t" in line else []
            if len(parts) != 2:
                problems.append(f"{spec.relpath}, line {number}: not '<checksum> <path>'")
                continue
            digest, name = parts[0], decode_path(parts[1].lstrip(" \t").lstrip("*"), spec.bag_version)
            name = name[2:] if name.startswith("./") else name
        elif bsd:
            algorithm, name, digest = bsd.group(1).lower(), bsd.group(2), bsd.group(3)
        else:
            gnu = _GNU_LINE.match(line)
            if not gnu:
                problems.append(f"{spec.relpath}, line {number}: not a checksum line ('<hex>  <name>')")
                continue
            digest, name = gnu.group(1), gnu.group(2)
            if line.startswith("\\"):  # GNU escapes names holding '\n' or '\\'
                name = name.replace("\\n", "\n").replace("\\\\", "\\")
        if algorithm is None:
            algorithm = _HEX_LENGTHS.get(len(digest))
        if algorithm not in SUPPORTED or _HEX_LENGTHS.get(len(digest)) != algorithm:
            problems.append(f"{spec.relpath}, line {number}: '{digest}' is not a {algorithm or 'known'} digest")
            continue
        if not safe_relpath(name):
            problems.append(f"{spec.relpath}, line {number}: unsafe path {name!r} (absolute or with '..')")
            continue
        path = posixpath.normpath(posixpath.join(folder, name)) if folder else posixpath.normpath(name)
        digests.append(SuppliedDigest(spec.relpath, number, path, algorithm, digest.lower()))
    return digests, problems


def verify_supplied(supplied: Sequence[SuppliedDigest], actual: Dict[str, Dict[str, str]]) -> List[str]:
    """Compare supplied digests with those computed while staging (`actual[path][algorithm]`)."""
    problems = []
    for s in supplied:
        got = actual.get(s.path)
        if got is None:
            problems.append(f"{s.path}: listed in {s.listed_in} (line {s.line}) but not in the source")
        elif got.get(s.algorithm) != s.digest:
            problems.append(
                f"{s.path}: {s.algorithm} does not match {s.listed_in} (line {s.line}): "
                f"supplied {s.digest}, file has {got.get(s.algorithm)}"
            )
    return problems


def algorithms_needed(supplied: Iterable[SuppliedDigest]) -> List[str]:
    return sorted({s.algorithm for s in supplied})
