"""Validate any BagIt bag (RFC 8493 1.0 and drafts 0.93-0.97) and report every problem found.

A preservation archive needs to know *everything* that is wrong with a bag, not the first
thing, so each check records problems and carries on. A problem names the file it concerns
(`data/x.txt: sha256 mismatch (manifest-sha256.txt says ..., file is ...)`). Things that do not
make a bag invalid (a './' before a manifest path, an md5sum-style '*', a file listed twice
with the same checksum in an old bag) are warnings.

Safety: the bag is untrusted input. Paths from manifests and fetch.txt are checked by
`bagit_spec.path_problem` before anything is opened; the walk never follows symbolic links
(a symlink in a bag is itself a problem); fetch.txt URLs are never fetched or resolved.

Cost: each payload file is read once, all of its manifest algorithms computed in the same pass
(`strongroom.checksums`), in 1 MiB chunks, so memory stays flat whatever the file sizes.
With processes > 1, files are hashed by that many threads (hashlib releases the GIL); only a
small window of files is in flight at a time.

Decisions where the RFC leaves room (each pinned by tests/test_validate.py):
  * Names are matched byte for byte first; a manifest name that matches a file on disk only
    after Unicode NFC normalization is accepted with a warning (RFC 8493 section 6.3 and
    bagit-python do the same), because file systems (macOS) renormalize names in transit.
  * The same file listed twice in one manifest - literally, or as two spellings that a
    normalizing or case-insensitive file system would make one file - is a warning before
    1.0 and a problem in 1.0 bags (the LoC conformance suite pins both). Two different
    checksums for one file are a problem in every version.
  * A listed file that is absent is a problem, except an operating-system metadata file
    (.DS_Store, Thumbs.db, '._x'...) whose listed checksum is that of zero bytes: copying
    tools drop those, and nothing is lost. That is a warning (and counts as 0 bytes, 1 file
    for Payload-Oxum).
  * `completeness_only` (the CLI's --completeness-only / --fast) checks structure, manifests,
    fetch.txt, completeness, Payload-Oxum and the tag manifests' checksums (tag files are
    small), but does not re-read payload files.
"""

from __future__ import annotations

import os
import re
import unicodedata
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Set, Tuple, Union
from urllib.parse import urlsplit

from strongroom.checksums import hash_file
from strongroom.errors import InputError, PreservationError

from strongroom import bagit_spec as spec

PathLike = Union[str, "os.PathLike[str]"]

#: bagit.txt is two short lines; anything bigger is not a bag declaration (and is not slurped).
_BAGIT_TXT_MAX = 64 * 1024
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Problem:
    """One thing wrong with (or worth knowing about) a bag: the file concerned and what."""

    path: str      # bag-relative; "data/" for the payload folder as a whole
    message: str

    def __str__(self) -> str:
        return f"{printable(self.path)}: {self.message}"

    def to_dict(self) -> Dict[str, str]:
        return {"path": self.path, "message": self.message}


@dataclass
class BagContents:
    """What the check of a valid bag read, kept so that nothing after it parses the bag again
    (`ingest.bag_check`): the manifests' digests matched to the files on disk, every file's
    size, and a Strongroom bag's metadata/ as its strict readers parsed it."""

    payload: Dict[str, Dict[str, str]]     # payload file on disk -> {algorithm: digest} (payload manifests)
    tags: Dict[str, Dict[str, str]]        # tag file -> {algorithm: digest} (tag manifests; checked)
    sizes: Dict[str, int]                  # every regular file of the bag, tag files too
    rules: str                             # the BagIt rules the bag's manifests were read by
    formats: Optional[dict] = None         # metadata.read_formats() of a Strongroom bag, else None
    attributes: Optional[dict] = None      # metadata.read_file_attributes()


@dataclass
class ValidationReport:
    bag_dir: str
    version: Optional[str] = None          # BagIt-Version as declared (None if unreadable)
    encoding: Optional[str] = None         # Tag-File-Character-Encoding as declared
    algorithms: List[str] = field(default_factory=list)       # payload manifest algorithms
    tag_algorithms: List[str] = field(default_factory=list)   # tag manifest algorithms
    problems: List[Problem] = field(default_factory=list)     # any of these makes the bag invalid
    warnings: List[Problem] = field(default_factory=list)
    payload_files: int = 0                 # regular files found under data/
    payload_bytes: int = 0
    tag_files: int = 0                     # regular files outside data/
    files_hashed: int = 0
    bytes_hashed: int = 0
    completeness_only: bool = False
    fetched_files: int = 0                 # absent, listed in a version bag's fetch.txt (allow_fetched)
    fetched_bytes: int = 0
    contents: Optional["BagContents"] = None   # what was read, for a valid bag checked with keep=True

    @property
    def valid(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        return {
            "bag": self.bag_dir, "valid": self.valid, "version": self.version, "encoding": self.encoding,
            "algorithms": list(self.algorithms), "tag_algorithms": list(self.tag_algorithms),
            "completeness_only": self.completeness_only,
            "payload_files": self.payload_files, "payload_bytes": self.payload_bytes,
            "tag_files": self.tag_files, "files_hashed": self.files_hashed, "bytes_hashed": self.bytes_hashed,
            "fetched_files": self.fetched_files, "fetched_bytes": self.fetched_bytes,
            "problems": [p.to_dict() for p in self.problems],
            "warnings": [w.to_dict() for w in self.warnings],
        }


def printable(path: str) -> str:
    """A path fit for one line of output: control characters shown as escapes (\\n, \\r, \\x1b)."""
    return re.sub(r"[\x00-\x1f\x7f]", lambda m: {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(
        m.group(0), f"\\x{ord(m.group(0)):02x}"), path)


def validate_bag(bag_dir: PathLike, *, completeness_only: bool = False, processes: int = 1,
                 allow_fetched: bool = False, keep: bool = False) -> ValidationReport:
    """Check a bag and return every problem found. Raises InputError if bag_dir is no folder.

    `allow_fetched`: the bag is a Strongroom version bag as built or stored (docs/versions.md):
    a file its manifests list but its data/ lacks is no problem when fetch.txt lists it at a
    strongroom:// URL with its length; it counts for Payload-Oxum, which is of the complete bag.
    Whether the named earlier bag really holds it is the catalog's question (the audit asks
    it), never the network's: nothing is fetched.

    `keep`: a valid bag's report also carries what was read (`BagContents`), so a deposit checks
    its staged bag once and hands that on instead of parsing the bag again (`ingest.bag_check`).
    """
    root = Path(bag_dir)
    if not root.exists():
        raise InputError("does not exist", path=str(bag_dir))
    if not root.is_dir():
        raise InputError("is not a directory (a BagIt bag is a folder)", path=str(bag_dir))
    return _Validator(root, completeness_only, max(1, int(processes)), allow_fetched, keep).run()


def require_valid(bag_dir: PathLike, **kw) -> ValidationReport:
    """`validate_bag`, raising PreservationError (exit code 1) with every problem if invalid."""
    report = validate_bag(bag_dir, **kw)
    if not report.valid:
        n = len(report.problems)
        raise PreservationError(f"not a valid BagIt bag: {n} problem{'s' if n != 1 else ''}",
                                path=str(bag_dir), problems=list(report.problems))
    return report


# --------------------------------------------------------------------------------------------

Expected = Dict[str, Dict[str, Tuple[str, str]]]   # file -> {algorithm: (digest, manifest name)}


class _Validator:
    def __init__(self, root: Path, completeness_only: bool, processes: int, allow_fetched: bool = False,
                 keep: bool = False):
        self.root = root
        self.keep = keep
        self.metadata: Dict[str, dict] = {}      # metadata/ file -> its parse (Strongroom bags, kept with keep)
        self.allow_fetched = allow_fetched
        self.completeness_only = completeness_only
        self.processes = processes
        self.report = ValidationReport(bag_dir=str(root), completeness_only=completeness_only)
        self.payload: Dict[str, int] = {}        # regular files under data/ -> size
        self.tags: Dict[str, int] = {}           # regular files elsewhere -> size
        self.irregular: Set[str] = set()         # symlinks, special files (reported already)
        self.rules = spec.FALLBACK_RULES
        self.encoding = spec.TAG_ENCODING
        self.payload_manifests: Dict[str, Dict[str, spec.ManifestEntry]] = {}   # manifest name -> entries
        self.tag_manifests: Dict[str, Dict[str, spec.ManifestEntry]] = {}
        self.fetch: Dict[str, Tuple[str, str, int]] = {}   # path -> (url, length, line)
        self.oxum: Optional[Tuple[int, int]] = None
        self.tolerated_absent = 0
        self.strongroom_bag = False              # bag-info has Strongroom-Bag-Id: metadata/ is checked too

    # -- recording
    def error(self, path: str, message: str) -> None:
        self.report.problems.append(Problem(path, message))

    def warn(self, path: str, message: str) -> None:
        self.report.warnings.append(Problem(path, message))

    def issue(self, path: str, issue: spec.LineIssue) -> None:
        (self.error if issue.error else self.warn)(path, str(issue))

    @property
    def v1(self) -> bool:
        return spec.is_v1(self.rules)

    def run(self) -> ValidationReport:
        self._inventory()
        self._bagit_txt()
        self._manifests()
        self._fetch_txt()
        self._bag_info()
        self._strongroom_metadata()
        expected = self._payload_completeness()
        tag_expected = self._tag_completeness()
        self._payload_oxum()
        jobs: List[Tuple[str, Dict[str, Tuple[str, str]]]] = []
        if not self.completeness_only:
            jobs.extend(sorted(expected.items()))
        jobs.extend(sorted(tag_expected.items()))
        self._verify_digests(jobs)
        r = self.report
        r.payload_files, r.payload_bytes, r.tag_files = len(self.payload), sum(self.payload.values()), len(self.tags)
        if self.keep and r.valid:
            r.contents = self._contents(tag_expected)
        r.problems.sort(key=lambda p: p.path)   # stable: grouped by file, check order kept within
        r.warnings.sort(key=lambda p: p.path)
        return r

    # -- what is on disk
    def _inventory(self) -> None:
        data = self.root / spec.PAYLOAD_DIR
        self._walk(self.root, "", self.tags)
        if data.is_symlink():
            self.error("data/", f"the payload directory is a symbolic link (to {os.readlink(data)!r}); not followed")
        elif not data.exists():
            self.error("data/", "the payload directory is missing (RFC 8493 2.1.2)")
        elif not data.is_dir():
            self.error("data/", "must be a directory")
        else:
            self._walk(data, "data/", self.payload)

    def _walk(self, top: Path, top_prefix: str, into: Dict[str, int]) -> None:
        """Every entry below `top`, depth first in name order, with an explicit stack (no recursion:
        a hostile bag may nest folders thousands deep)."""
        stack: List[Tuple[str, str]] = [(os.fspath(top), top_prefix)]
        while stack:
            folder, prefix = stack.pop()
            try:
                with os.scandir(folder) as it:
                    entries = sorted(it, key=lambda e: e.name)
            except OSError as exc:
                self.error(prefix or ".", f"cannot be listed: {exc.strerror}")
                continue
            subfolders: List[Tuple[str, str]] = []
            for entry in entries:
                rel = prefix + entry.name
                if not prefix and entry.name == spec.PAYLOAD_DIR:
                    continue
                if _has_surrogates(entry.name):
                    shown = os.fsencode(rel).decode("utf-8", "backslashreplace")
                    self.error(shown, "the name is not valid UTF-8, so no manifest can list it")
                    self.irregular.add(rel)
                elif entry.is_symlink():
                    try:
                        target = os.readlink(entry.path)
                    except OSError:
                        target = "?"
                    self.error(rel, f"is a symbolic link (to {target!r}); a bag holds regular files only; not followed")
                    self.irregular.add(rel)
                elif entry.is_dir(follow_symlinks=False):
                    subfolders.append((entry.path, rel + "/"))
                elif entry.is_file(follow_symlinks=False):
                    into[rel] = entry.stat(follow_symlinks=False).st_size
                else:
                    self.error(rel, "is a special file (device, FIFO or socket), not a regular file")
                    self.irregular.add(rel)
            stack.extend(reversed(subfolders))

    def _lines(self, rel: str) -> Iterator[Tuple[int, str]]:
        """Lines of a tag file in the declared encoding; a decoding failure is a problem, not a crash."""
        try:
            bom = spec.bom_issue(self.root / rel, self.encoding)
            if bom:
                self.issue(rel, bom)
            yield from spec.iter_lines(self.root / rel, self.encoding)
        except UnicodeError as exc:   # UnicodeDecodeError, or UTF-16 without a byte-order mark
            reason = getattr(exc, "reason", None) or str(exc)
            self.error(rel, f"is not valid {self.encoding} text ({reason}); the rest of it was not read")
        except LookupError as exc:    # parse_bagit_txt accepts text encodings only: kept as a safety net
            self.error(rel, f"cannot be read in the encoding bagit.txt declares ({exc})")
        except spec.BagItSyntaxError as exc:   # a line too long to be a tag-file line
            for issue in exc.issues:
                self.error(rel, str(issue))
        except OSError as exc:
            self.error(rel, f"cannot be read: {exc.strerror}")

    # -- bagit.txt
    def _bagit_txt(self) -> None:
        if spec.BAGIT_TXT not in self.tags:
            if spec.BAGIT_TXT not in self.irregular:
                self.error(spec.BAGIT_TXT, "is missing; every bag must have it (RFC 8493 2.1.1)")
            return
        if self.tags[spec.BAGIT_TXT] > _BAGIT_TXT_MAX:
            self.error(spec.BAGIT_TXT, f"is {self.tags[spec.BAGIT_TXT]} bytes; a bag declaration is two short lines")
            return
        try:
            raw = (self.root / spec.BAGIT_TXT).read_bytes()
        except OSError as exc:
            self.error(spec.BAGIT_TXT, f"cannot be read: {exc.strerror}")
            return
        decl = spec.parse_bagit_txt(raw)
        for issue in decl.issues:
            self.issue(spec.BAGIT_TXT, issue)
        self.report.version, self.report.encoding = decl.version, decl.encoding
        if decl.rules:
            self.rules = decl.rules
        if decl.encoding:
            self.encoding = decl.encoding

    # -- manifests
    def _manifests(self) -> None:
        root_files = sorted(rel for rel in self.tags if "/" not in rel)
        payload = [rel for rel in root_files if spec.MANIFEST_RE.match(rel)]
        tag = [rel for rel in root_files if spec.TAGMANIFEST_RE.match(rel)]
        if not payload:
            self.error("manifest-<algorithm>.txt", "the bag has no payload manifest (RFC 8493 2.1.3 requires one)")
        for rel in payload:
            alg = spec.manifest_algorithm(rel)
            self.report.algorithms.append(alg)
            self.payload_manifests[rel] = self._read_manifest(rel, alg, payload_manifest=True)
        for rel in tag:
            alg = spec.manifest_algorithm(rel)
            self.report.tag_algorithms.append(alg)
            self.tag_manifests[rel] = self._read_manifest(rel, alg, payload_manifest=False)

    def _read_manifest(self, rel: str, alg: str, *, payload_manifest: bool) -> Dict[str, spec.ManifestEntry]:
        if spec.hashlib_name(alg) is None:
            self.error(rel, f"checksum algorithm {alg!r} is unknown, so its checksums cannot be verified")
        entries, issues = spec.parse_manifest_lines(self._lines(rel), self.rules,
                                                    alg if spec.hashlib_name(alg) else None)
        for issue in issues:
            self.issue(rel, issue)
        by_path: Dict[str, spec.ManifestEntry] = {}
        for e in entries:
            if payload_manifest and not spec.is_payload_path(e.path):
                self.error(rel, f"line {e.line}: {printable(e.path)!r} is outside the payload directory data/ "
                                "(a payload manifest lists payload files only)")
                continue
            if not payload_manifest and e.path.split("/", 1)[0] == spec.PAYLOAD_DIR:
                self.error(rel, f"line {e.line}: lists the payload file {printable(e.path)!r} "
                                "(a tag manifest lists tag files only)")
                continue
            if not payload_manifest and spec.TAGMANIFEST_RE.match(e.path):
                self.warn(rel, f"line {e.line}: lists another tag manifest, {e.path}")
            first = by_path.get(e.path)
            if first is None:
                by_path[e.path] = e
            elif first.digest != e.digest:
                self.error(rel, f"line {e.line}: {printable(e.path)} is listed twice with different checksums "
                                f"(line {first.line}: {first.digest}, line {e.line}: {e.digest})")
            else:
                msg = f"line {e.line}: {printable(e.path)} is listed twice (also on line {first.line})"
                if self.v1:
                    self.error(rel, msg + "; a BagIt 1.0 manifest lists each file once")
                else:
                    self.warn(rel, msg)
        return by_path

    # -- fetch.txt (parsed, never fetched)
    def _fetch_txt(self) -> None:
        rel = spec.FETCH_TXT
        if rel not in self.tags:
            return
        for number, line in self._lines(rel):
            if not line.strip():
                self.warn(rel, f"line {number}: blank line (ignored)")
                continue
            m = re.fullmatch(r"(\S+)[ \t]+(\S+)[ \t]+(.+)", line)
            if not m:
                self.error(rel, f"line {number}: {line!r} is not 'URL LENGTH PATH'")
                continue
            url, length, written = m.groups()
            try:
                scheme = urlsplit(url).scheme
            except ValueError:
                scheme = ""
            if not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", scheme):
                self.error(rel, f"line {number}: {url!r} is not an absolute URL")
            if not re.fullmatch(r"[0-9]{1,19}|-", length):
                self.error(rel, f"line {number}: length {length!r} is neither a number of bytes nor '-'")
            decoded = spec.decode_path(written, self.rules)
            problem = spec.path_problem(decoded)
            if problem:
                self.error(rel, f"line {number}: unsafe path {written!r}: {problem}; not used")
                continue
            path = spec.canonical_path(decoded)
            if not spec.is_payload_path(path):
                self.error(rel, f"line {number}: {printable(path)!r} is not a payload file "
                                "(fetch.txt may list files under data/ only)")
                continue
            if path in self.fetch:
                self.warn(rel, f"line {number}: {printable(path)} is listed again (first on line {self.fetch[path][2]})")
                continue
            self.fetch[path] = (url, length, number)
        for path, (url, length, number) in sorted(self.fetch.items()):
            for mrel, entries in sorted(self.payload_manifests.items()):
                if path not in entries:
                    self.error(rel, f"line {number}: {printable(path)} is not listed in {mrel} "
                                    "(every file in fetch.txt must be in every payload manifest)")
            if path in self.payload and re.fullmatch(r"[0-9]{1,19}", length) and int(length) != self.payload[path]:
                self.warn(rel, f"line {number}: says {printable(path)} has {length} bytes; "
                               f"the file in the bag has {self.payload[path]}")

    # -- bag-info.txt
    def _bag_info(self) -> None:
        name = spec.bag_info_name(self.rules)
        if name not in self.tags:
            return
        items, issues = spec.parse_tag_lines(self._lines(name), self.rules)
        for issue in issues:
            self.issue(name, issue)
        for label, value in items:
            if label.lower() == "bag-count":
                try:
                    spec.parse_bag_count(value)
                except ValueError as exc:
                    self.warn(name, str(exc))
            elif label == "Strongroom-Bag-Id":
                self.strongroom_bag = True
        values = [v for label, v in items if label.lower() == "payload-oxum"]
        if not values:
            return
        if len(set(values)) > 1:
            self.error(name, f"Payload-Oxum is given {len(values)} times with different values: {', '.join(values)}")
            return
        if len(values) > 1:
            self.warn(name, f"Payload-Oxum is given {len(values)} times")
        try:
            self.oxum = spec.parse_payload_oxum(values[0])
        except ValueError as exc:
            self.error(name, str(exc))

    # -- Strongroom's own metadata/ (only in bags Strongroom made)
    def _strongroom_metadata(self) -> None:
        """formats.csv and file-attributes.csv parsed with the strict readers registration, `catalog
        rebuild` and `restore` use: a bag they would refuse is reported here too, line and all."""
        from . import metadata

        if not self.strongroom_bag:
            return
        for rel, parse in ((metadata.FORMATS_FILE, metadata.read_formats),
                           (metadata.ATTRIBUTES_FILE, metadata.read_file_attributes)):
            if rel not in self.tags:
                continue
            try:
                parsed = parse((self.root / rel).read_bytes())
                if self.keep:
                    self.metadata[rel] = parsed
            except spec.TagFileError as exc:
                at = f"line {exc.line}: " if exc.line else ""
                self.error(rel, f"{at}{exc.problem}; Strongroom could not rebuild its catalog from this bag")
            except OSError as exc:
                self.error(rel, f"cannot be read: {exc.strerror}")

    def _payload_oxum(self) -> None:
        if self.oxum is None:
            return
        want_bytes, want_files = self.oxum
        have_bytes = sum(self.payload.values())
        have_files = len(self.payload) + self.tolerated_absent + self.report.fetched_files
        have_bytes += self.report.fetched_bytes
        if (want_bytes, want_files) != (have_bytes, have_files):
            self.error(spec.bag_info_name(self.rules),
                       f"Payload-Oxum says {want_bytes} bytes in {want_files} files; the payload holds "
                       f"{have_bytes} bytes in {have_files} files")

    # -- completeness
    def _payload_completeness(self) -> Expected:
        listed: Dict[str, Dict[str, spec.ManifestEntry]] = {}      # manifest path -> {manifest: entry}
        for mrel, entries in self.payload_manifests.items():
            for path, e in entries.items():
                listed.setdefault(path, {})[mrel] = e
        nfc_index = _index(self.payload, _nfc)
        fold_index = _index(self.payload, lambda s: _nfc(s).casefold())
        algorithm = {mrel: spec.manifest_algorithm(mrel) for mrel in self.payload_manifests}
        expected: Expected = {}
        covered: Dict[str, Set[str]] = {}

        def cover(disk: str, listing: Dict[str, spec.ManifestEntry]) -> None:
            for mrel, e in listing.items():
                covered.setdefault(disk, set()).add(mrel)
                expected.setdefault(disk, {})[algorithm[mrel]] = (e.digest, mrel)

        for path in sorted(listing_path for listing_path in listed):
            listing = listed[path]
            where = ", ".join(sorted(listing))
            if path in self.payload:
                cover(path, listing)
                continue
            if path in self.irregular:
                continue            # the symlink / special file is reported already
            literal = self._literal_name(listing)
            if literal:
                cover(literal, listing)
                continue
            norm = [d for d in nfc_index.get(unicodedata.normalize("NFC", path), []) if d != path]
            if norm:
                disk = norm[0]
                if disk in listed:
                    self._same_file_twice(path, disk, listing, listed[disk], "Unicode normalization forms")
                else:
                    self.warn(disk, f"is listed in {where} as '{_spelled(path)}', the same name in another "
                                    f"Unicode normalization form than on disk ('{_spelled(disk)}'); matched")
                    cover(disk, listing)
                continue
            folded = unicodedata.normalize("NFC", path).casefold()
            case = [d for d in fold_index.get(folded, []) if d != path and d in listed]
            if case and all(listed[case[0]].get(m) and listed[case[0]][m].digest == e.digest
                            for m, e in listing.items()):
                self._same_file_twice(path, case[0], listing, listed[case[0]], "letter case")
                continue
            if spec.is_os_metadata(path) and all(spec.empty_digest(spec.manifest_algorithm(m)) == e.digest
                                                  for m, e in listing.items()):
                self.warn(path, f"is listed in {where} but absent; it is an empty operating-system "
                                "metadata file (copying tools drop these), so no content is lost")
                self.tolerated_absent += 1
                continue
            if path in self.fetch and self._fetched_ok(path, listing):
                continue
            if path in self.fetch:
                url = self.fetch[path][0]
                self.error(path, f"is not in the bag: fetch.txt lists it at {url}; Strongroom never fetches, "
                                 "so the bag is incomplete")
                continue
            near = fold_index.get(folded, [])
            hint = f" (the bag has {printable(near[0])!r}, which differs in letter case)" if near else ""
            self.error(path, f"is listed in {where} but is not in the bag{hint}")

        all_manifests = set(self.payload_manifests)
        for disk in sorted(self.payload):
            got = covered.get(disk, set())
            if not got:
                self.error(disk, "is in the payload but not listed in any payload manifest")
            elif got != all_manifests:
                self.error(disk, f"is not listed in {', '.join(sorted(all_manifests - got))} "
                                 "(every payload manifest must list every payload file)")
            if spec.is_os_metadata(disk):
                self.warn(disk, "is an operating-system metadata file (left by a desktop file manager)")
        for names in nfc_index.values():
            if len(names) > 1:
                self.warn(names[0], f"and {', '.join(map(repr, names[1:]))} differ only in Unicode normalization; "
                                    "they cannot both exist on file systems that normalize names")
        for names in fold_index.values():
            distinct = {unicodedata.normalize("NFC", n) for n in names}
            if len(distinct) > 1:
                self.warn(names[0], f"and {', '.join(map(repr, names[1:]))} differ only in letter case; "
                                    "they cannot both exist on case-insensitive file systems")
        return expected

    def _fetched_ok(self, path: str, listing: Dict[str, spec.ManifestEntry]) -> bool:
        """An absent file a version bag lists in fetch.txt (allow_fetched): counted, not a problem."""
        url, length, _ = self.fetch[path]
        if not (self.allow_fetched and url.startswith("strongroom://") and re.fullmatch(r"[0-9]{1,19}", length)):
            return False
        self.report.fetched_files += 1
        self.report.fetched_bytes += int(length)
        return True

    def _literal_name(self, listing: Dict[str, spec.ManifestEntry]) -> Optional[str]:
        """Before 1.0 nothing was percent-encoded: 'a%0Ab' may be a literal name, not an encoded LF."""
        if self.v1:
            return None
        for e in listing.values():
            if e.written != e.path and spec.path_problem(e.written) is None:
                candidate = spec.canonical_path(e.written)
                if candidate in self.payload:
                    return candidate
        return None

    def _same_file_twice(self, path: str, disk: str, listing: Dict[str, spec.ManifestEntry],
                         disk_listing: Dict[str, spec.ManifestEntry], differ: str) -> None:
        """`path` is absent but names the same file as the listed `disk` on some file systems."""
        if differ.startswith("Unicode"):   # the two names print alike: show their code points
            a, b = _spelled(path), _spelled(disk)
        else:
            a, b = printable(path), printable(disk)
        for mrel, e in sorted(listing.items()):
            other = disk_listing.get(mrel)
            if other is not None and other.digest != e.digest:
                self.error(mrel, f"line {e.line}: '{a}' and '{b}' (line {other.line}) differ only in {differ} "
                                 f"and have different checksums; only '{b}' is in the bag")
                continue
            msg = (f"line {e.line}: '{a}' and '{b}' differ only in {differ}: the same file listed twice on "
                   f"file systems that ignore the difference; only '{b}' is in the bag")
            if self.v1:
                self.error(mrel, msg + "; a BagIt 1.0 manifest lists each file once")
            else:
                self.warn(mrel, msg)

    def _tag_completeness(self) -> Expected:
        expected: Expected = {}
        missing: Dict[str, List[str]] = {}
        for mrel, entries in sorted(self.tag_manifests.items()):
            alg = spec.manifest_algorithm(mrel)
            for path, e in entries.items():
                if path in self.tags:
                    expected.setdefault(path, {})[alg] = (e.digest, mrel)
                elif path not in self.irregular:
                    missing.setdefault(path, []).append(mrel)
        for path, where in sorted(missing.items()):
            self.error(path, f"is listed in {', '.join(where)} but is not in the bag")
        if self.tag_manifests:
            for path in sorted(self.tags):
                if path not in expected and not ("/" not in path and spec.TAGMANIFEST_RE.match(path)):
                    self.warn(path, "is not listed in any tag manifest, so damage to it would go unnoticed")
        return expected

    def _contents(self, tag_expected: Expected) -> BagContents:
        from . import metadata

        listed: Dict[str, Dict[str, str]] = {}   # every file a payload manifest lists (fetched ones too)
        for mrel, entries in self.payload_manifests.items():
            alg = spec.manifest_algorithm(mrel)
            for path, e in entries.items():
                listed.setdefault(path, {})[alg] = e.digest
        tags = {path: {alg: digest for alg, (digest, _) in want.items()} for path, want in tag_expected.items()}
        return BagContents(listed, tags, {**self.tags, **self.payload}, self.rules,
                           self.metadata.get(metadata.FORMATS_FILE), self.metadata.get(metadata.ATTRIBUTES_FILE))

    # -- checksums
    def _verify_digests(self, jobs: List[Tuple[str, Dict[str, Tuple[str, str]]]]) -> None:
        def work(job):
            rel, want = job
            algorithms = sorted({spec.hashlib_name(a) for a in want if spec.hashlib_name(a)})
            try:
                return _digest_file(self.root / rel, algorithms)
            except OSError as exc:
                return exc

        if self.processes > 1:   # largest first, so the last file to finish is a small one
            jobs = sorted(jobs, key=lambda j: -self.payload.get(j[0], self.tags.get(j[0], 0)))
        for (rel, want), result in _map_threads(work, jobs, self.processes):
            if isinstance(result, OSError):
                self.error(rel, f"cannot be read: {result.strerror or result}")
                continue
            size, digests = result
            self.report.files_hashed += 1
            self.report.bytes_hashed += size
            for alg, (digest, mrel) in sorted(want.items()):
                name = spec.hashlib_name(alg)
                if name is None:
                    continue
                if digests[name] != digest:
                    self.error(rel, f"{alg} mismatch ({mrel} says {digest}, file is {digests[name]})")


def _index(names: Iterable[str], key: Callable[[str], str]) -> Dict[str, List[str]]:
    out: Dict[str, List[str]] = {}
    for n in names:
        out.setdefault(key(n), []).append(n)
    return out


def _spelled(name: str) -> str:
    """'data/Nu\\u0301n\\u0303ez (NFD)': two normalizations of a name look identical when printed."""
    form = next((f for f in ("NFC", "NFD") if unicodedata.is_normalized(f, name)), "not normalized")
    return f"{ascii(name)[1:-1]} ({form})"


_SURROGATE = re.compile("[\udc80-\udcff]")


def _has_surrogates(name: str) -> bool:
    """A lone surrogate os.fsdecode made of a byte that is not UTF-8."""
    return _SURROGATE.search(name) is not None


def _nfc(name: str) -> str:
    """unicodedata.normalize("NFC", name); an ASCII name is its own NFC form."""
    return name if name.isascii() else unicodedata.normalize("NFC", name)


def _digest_file(path: Path, algorithms: List[str]) -> Tuple[int, Dict[str, str]]:
    """Size and digests from one read, including algorithms a foreign bag may use (sha224...)."""
    return hash_file(path, algorithms, _CHUNK, foreign_ok=True)


def _map_threads(fn, items: List, workers: int):
    """(item, fn(item)) pairs as they finish; with workers > 1, threads with a bounded backlog.

    Results come in completion order (the report is sorted afterwards), so one huge file does
    not hold up the small ones queued behind it; at most 4 jobs per worker are pending.
    """
    if workers <= 1 or len(items) <= 1:
        for item in items:
            yield item, fn(item)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bag-hash") as pool:
        pending: Dict = {}
        queue = iter(items)
        while True:
            for item in queue:
                pending[pool.submit(fn, item)] = item
                if len(pending) >= workers * 4:
                    break
            if not pending:
                return
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                yield pending.pop(fut), fut.result()


__all__ = ["BagContents", "Problem", "ValidationReport", "validate_bag", "require_valid", "printable"]
