#!/usr/bin/env python3
"""strongroom-verify: re-check Strongroom's copies with nothing but a Python 3 interpreter.

This file is deliberately one script with no imports outside the standard library and none from
Strongroom: the content has to outlive the software, the organisation and its catalog. Strongroom
writes a copy of it into every storage target, beside the ledger checkpoints, so whoever holds a
copy of the storage holds the means to check it. Run it with `python3 -I` (isolated mode: no
site-packages, no PYTHONPATH) to be sure nothing else is used.

    python3 -I strongroom-verify.py bag BAG_DIR [--fetch-root TARGET_ROOT]
    python3 -I strongroom-verify.py ledger TARGET_ROOT
    python3 -I strongroom-verify.py target TARGET_ROOT

`bag` validates one BagIt bag (RFC 8493, and the older 0.93-0.97 drafts as the Library of Congress
conformance suite reads them): bagit.txt, every payload and tag manifest, every digest re-computed
from the bytes, Payload-Oxum, files present but unlisted, unsafe paths, links and special files
(never followed). `ledger` re-checks the chain of ledger checkpoints Strongroom writes into a
storage target (`.strongroom/ledger/checkpoints/`): each checkpoint's own hash, its link to the one
before, and the digest of the events it carries. `target` does both for a whole filesystem target
(or a folder into which an S3 target was copied, e.g. with `aws s3 sync` or `rclone copy`).

Exit status: 0 everything checked is intact; 1 a problem was found (each printed on its own line,
naming the file); 2 the command line or a path given is wrong.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import stat
import sys
import unicodedata
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Tuple

VERSION = "1"
CHUNK = 1 << 20
RESERVED = ".strongroom"
CHECKPOINTS = (RESERVED, "ledger", "checkpoints")
GENESIS = "0" * 64
FETCH_SCHEME = "strongroom://"
OS_METADATA = {".DS_Store", "Thumbs.db", "desktop.ini", "._.DS_Store", "Icon\r"}
_MANIFEST = re.compile(r"^(tag)?manifest-([A-Za-z0-9]+)\.txt\Z")
_LINE = re.compile(r"\A([0-9A-Fa-f]+)([ \t]+)(.+)\Z")
_VERSION = re.compile(r"\A([0-9]+)\.([0-9]+)\Z")
_DRIVE = re.compile(r"\A[A-Za-z]:")
_WIN_VAR = re.compile(r"%[A-Za-z_]+%")


@dataclass
class Report:
    """What one run found: problems fail the check, warnings do not."""
    problems: List[str] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    checked_files: int = 0
    checked_bytes: int = 0

    def problem(self, where: str, what: str) -> None:
        self.problems.append(f"{where}: {what}")

    def warn(self, where: str, what: str) -> None:
        self.warnings.append(f"{where}: {what}")


# ----------------------------------------------------------------------------- files, safely

def _lstat(path: str) -> Optional[os.stat_result]:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def _read_small(path: str, limit: int = 64 << 20) -> bytes:
    """A tag file's bytes, refusing links and anything that is not a regular file."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError("not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as fh:
            data = fh.read(limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise OSError(f"larger than {limit} bytes")
    return data


def _hash_file(path: str, algorithms: List[str]) -> Tuple[int, Dict[str, str]]:
    """Size and every digest from one read; links are not followed."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError("not a regular file")
        hashers = {a: hashlib.new(a) for a in algorithms}
        size = 0
        with os.fdopen(fd, "rb", closefd=False) as fh:
            while True:
                chunk = fh.read(CHUNK)
                if not chunk:
                    break
                size += len(chunk)
                for h in hashers.values():
                    h.update(chunk)
    finally:
        os.close(fd)
    return size, {a: h.hexdigest() for a, h in hashers.items()}


def _walk(root: str, rel: str, report: Report) -> Iterator[str]:
    """Every regular file below root/rel as a bag-relative path; links and special files are problems."""
    try:
        names = sorted(os.listdir(os.path.join(root, rel)))
    except OSError as exc:
        report.problem(rel, f"cannot be listed ({exc.strerror})")
        return
    for name in names:
        child = f"{rel}/{name}"
        st = _lstat(os.path.join(root, child))
        if st is None:
            continue
        if stat.S_ISLNK(st.st_mode):
            report.problem(child, "is a symbolic link (never followed)")
        elif stat.S_ISDIR(st.st_mode):
            yield from _walk(root, child, report)
        elif stat.S_ISREG(st.st_mode):
            yield child
        else:
            report.problem(child, "is a special file (device, socket or FIFO)")


# ----------------------------------------------------------------------------- BagIt rules

def _path_problem(path: str) -> Optional[str]:
    """Why a path from a manifest or fetch.txt may not be used, or None; judged on every system."""
    if not path:
        return "empty path"
    if path.startswith("/") or _DRIVE.match(path):
        return f"absolute path {path!r}"
    if path.startswith("\\\\"):
        return f"UNC path {path!r}"
    if "\\" in path:
        return f"backslash in path {path!r}"
    if path.startswith("~"):
        return f"path {path!r} starts with '~'"
    if _WIN_VAR.search(path):
        return f"path {path!r} names a Windows variable such as %HomeDrive%"
    if any(part == ".." for part in path.split("/")):
        return f"unsafe path {path!r} (climbs out with '..')"
    if "\x00" in path:
        return f"NUL in path {path!r}"
    return None


def _decode_path(text: str, v1: bool) -> str:
    """RFC 8493 section 2.1.3: 1.0 percent-encodes CR, LF and '%'; the drafts only CR and LF."""
    if v1:
        return re.sub(r"%(0A|0D|25)", lambda m: chr(int(m.group(1), 16)), text, flags=re.IGNORECASE)
    return re.sub(r"%(0A|0D)", lambda m: chr(int(m.group(1), 16)), text, flags=re.IGNORECASE)


def _lines(data: bytes, encoding: str, where: str, report: Report) -> List[str]:
    try:
        text = data.decode(encoding)
    except (LookupError, UnicodeDecodeError) as exc:
        report.problem(where, f"cannot be read as {encoding} ({exc})")
        return []
    if text.startswith("\ufeff"):
        text = text[1:]
    return [line for line in re.split(r"\r\n|\r|\n", text) if line.strip()]


def _read_bagit_txt(bag: str, report: Report) -> Optional[Tuple[str, str]]:
    """(version, encoding) from bagit.txt, or None when it is unusable."""
    path = os.path.join(bag, "bagit.txt")
    if _lstat(path) is None:
        report.problem("bagit.txt", "is missing")
        return None
    try:
        raw = _read_small(path)
    except OSError as exc:
        report.problem("bagit.txt", f"cannot be read ({exc})")
        return None
    if raw.startswith(b"\xef\xbb\xbf") or raw.startswith(b"\xff\xfe") or raw.startswith(b"\xfe\xff"):
        report.problem("bagit.txt", "starts with a byte-order mark")
        return None
    lines = _lines(raw, "utf-8", "bagit.txt", report)
    fields: Dict[str, str] = {}
    for line in lines:
        label, sep, value = line.partition(":")
        if not sep:
            report.problem("bagit.txt", f"line {line!r} is not 'Label: value'")
            return None
        fields[label] = value
    version = fields.get("BagIt-Version")
    encoding = fields.get("Tag-File-Character-Encoding")
    if version is None:
        report.problem("bagit.txt", "has no 'BagIt-Version: M.N' line (labels must not end in a space)")
        return None
    if encoding is None:
        report.problem("bagit.txt", "has no Tag-File-Character-Encoding line")
        return None
    if not _VERSION.match(version.strip()):
        report.problem("bagit.txt", f"BagIt-Version {version.strip()!r} is not of the form M.N")
        return None
    if version.strip() == "1.0" and (version != " 1.0" or lines[0] != "BagIt-Version: 1.0"):
        report.problem("bagit.txt", "a BagIt 1.0 bag must read exactly 'BagIt-Version: 1.0' on its first line")
        return None
    return version.strip(), encoding.strip()


def _parse_manifest(bag: str, name: str, encoding: str, v1: bool, report: Report) -> Dict[str, str]:
    """path -> digest of one manifest; duplicates, bad lines and unsafe paths are reported."""
    try:
        data = _read_small(os.path.join(bag, name), 1 << 30)
    except OSError as exc:
        report.problem(name, f"cannot be read ({exc})")
        return {}
    entries: Dict[str, str] = {}
    seen_forms: Dict[Tuple[str, str], str] = {}
    for number, line in enumerate(_lines(data, encoding, name, report), 1):
        match = _LINE.match(line.rstrip("\r\n"))
        if not match:
            report.problem(name, f"line {number} is not 'DIGEST PATH'")
            continue
        digest, path = match.group(1).lower(), match.group(3)
        if path.startswith("*"):
            report.warn(name, f"line {number}: md5sum-style '*' before {path[1:]!r}")
            path = path[1:]
        path = _decode_path(path, v1)
        if path.startswith("./"):
            report.warn(name, f"line {number}: path {path!r} is not in canonical form")
            path = os.path.normpath(path)
        why = _path_problem(path)
        if why:
            report.problem(name, f"line {number}: {why}")
            continue
        if path in entries:
            if entries[path] != digest:
                report.problem(name, f"{path!r} is listed twice with different checksums")
            elif v1:
                report.problem(name, f"{path!r} is listed twice (a BagIt 1.0 manifest lists each file once)")
            else:
                report.warn(name, f"{path!r} is listed twice")
            continue
        for form, kind in ((path.casefold(), "letter case"), (unicodedata.normalize("NFC", path), "Unicode normalization")):
            other = seen_forms.get((kind, form))
            if other is not None and other != path:
                report.warn(name, f"{path!r} and {other!r} differ only in {kind}")
            seen_forms.setdefault((kind, form), path)
        entries[path] = digest
    return entries


def _fetch_entries(bag: str, encoding: str, v1: bool, report: Report) -> Dict[str, str]:
    """path -> URL of fetch.txt (the files the bag lists but holds elsewhere)."""
    path = os.path.join(bag, "fetch.txt")
    if _lstat(path) is None:
        return {}
    try:
        data = _read_small(path)
    except OSError as exc:
        report.problem("fetch.txt", f"cannot be read ({exc})")
        return {}
    found: Dict[str, str] = {}
    for number, line in enumerate(_lines(data, encoding, "fetch.txt", report), 1):
        parts = line.split(None, 2)
        if len(parts) != 3 or not (parts[1] == "-" or parts[1].isdigit()):
            report.problem("fetch.txt", f"line {number} is not 'URL LENGTH PATH'")
            continue
        target = _decode_path(parts[2], v1)
        why = _path_problem(target)
        if why:
            report.problem("fetch.txt", f"line {number}: {why}")
            continue
        found[target] = parts[0]
    return found


def _resolve_fetch(url: str, path: str, fetch_root: Optional[str]) -> Optional[str]:
    """The file a `strongroom://<bag id>/data/...` entry names inside the same target, if at hand."""
    if fetch_root is None or not url.startswith(FETCH_SCHEME):
        return None
    rest = url[len(FETCH_SCHEME):]
    bag_id, sep, inner = rest.partition("/data/")
    if not sep or _path_problem(bag_id) or _path_problem(inner) or len(bag_id.split("/")) != 3:
        return None
    from urllib.parse import unquote
    return os.path.join(fetch_root, *bag_id.split("/"), "data", *unquote(inner).split("/"))


def verify_bag(bag: str, report: Report, fetch_root: Optional[str] = None) -> None:
    """Every check a BagIt validator makes, re-computing each digest from the bytes."""
    declared = _read_bagit_txt(bag, report)
    if declared is None:
        return
    version, encoding = declared
    v1 = version == "1.0"
    names = sorted(os.listdir(bag))
    manifests: Dict[str, Dict[str, str]] = {}
    tagmanifests: Dict[str, Dict[str, str]] = {}
    for name in names:
        match = _MANIFEST.match(name)
        if not match:
            continue
        algorithm = match.group(2).lower()
        if algorithm not in hashlib.algorithms_available:
            report.warn(name, f"algorithm {algorithm!r} cannot be computed here; not checked")
            continue
        parsed = _parse_manifest(bag, name, encoding, v1, report)
        (tagmanifests if match.group(1) else manifests)[algorithm] = parsed
    if not manifests:
        report.problem(bag, "has no payload manifest (manifest-ALGORITHM.txt)")
        return
    fetched = _fetch_entries(bag, encoding, v1, report)
    on_disk = set(_walk(bag, "data", report)) if os.path.isdir(os.path.join(bag, "data")) else set()
    if not os.path.isdir(os.path.join(bag, "data")):
        report.problem("data", "the payload folder is missing")
    listed = set().union(*manifests.values())
    for path in sorted(listed):
        if not path.startswith("data/"):
            report.problem(path, "a payload manifest lists a path outside data/")
    for algorithm, entries in sorted(manifests.items()):
        for path in sorted(listed - set(entries)):
            if path in on_disk:
                report.problem(path, f"is not listed in manifest-{algorithm}.txt")
    for path in sorted(on_disk - listed):
        report.problem(path, "is in the bag but not listed in any payload manifest")
    tolerated = _check_payload(bag, manifests, listed, on_disk, fetched, fetch_root, report)
    _check_tags(bag, tagmanifests, encoding, report)
    _check_oxum(bag, encoding, on_disk, report, version, tolerated)


def _check_payload(bag: str, manifests: Dict[str, Dict[str, str]], listed: set, on_disk: set,
                   fetched: Dict[str, str], fetch_root: Optional[str], report: Report) -> int:
    """Re-hash every listed file; returns how many were tolerated absent (OS metadata, other spellings)."""
    tolerated = 0
    canonical = {unicodedata.normalize("NFC", p).casefold(): p for p in on_disk}
    for path in sorted(listed):
        wanted = {a: e[path] for a, e in manifests.items() if path in e}
        where = os.path.join(bag, *path.split("/"))
        if path not in on_disk:
            if path in fetched:
                source = _resolve_fetch(fetched[path], path, fetch_root)
                if source is None:
                    report.warn(path, f"is held elsewhere (fetch.txt: {fetched[path]}); not checked here")
                    continue
                where = source
            elif unicodedata.normalize("NFC", path).casefold() in canonical or os.path.basename(path) in OS_METADATA:
                report.warn(path, "is listed but absent; another listed spelling or an OS metadata file")
                tolerated += 1
                continue
            else:
                report.problem(path, "is listed in the manifest but is not in the bag")
                continue
        try:
            size, digests = _hash_file(where, sorted(wanted))
        except OSError as exc:
            report.problem(path, f"cannot be read ({exc})")
            continue
        report.checked_files += 1
        report.checked_bytes += size
        for algorithm, digest in sorted(wanted.items()):
            if digests[algorithm] != digest:
                report.problem(path, f"{algorithm} mismatch (manifest {digest}, file {digests[algorithm]})")
    return tolerated


def _check_tags(bag: str, tagmanifests: Dict[str, Dict[str, str]], encoding: str, report: Report) -> None:
    for algorithm, entries in sorted(tagmanifests.items()):
        for path, digest in sorted(entries.items()):
            if path.startswith("data/") or path == "data":
                report.problem(f"tagmanifest-{algorithm}.txt", f"lists payload path {path!r}")
                continue
            full = os.path.join(bag, *path.split("/"))
            if _lstat(full) is None:
                report.problem(path, f"is listed in tagmanifest-{algorithm}.txt but is not in the bag")
                continue
            try:
                _, digests = _hash_file(full, [algorithm])
            except OSError as exc:
                report.problem(path, f"cannot be read ({exc})")
                continue
            if digests[algorithm] != digest:
                report.problem(path, f"{algorithm} mismatch (tag manifest {digest}, file {digests[algorithm]})")


def _check_oxum(bag: str, encoding: str, on_disk: set, report: Report, version: str, tolerated: int) -> None:
    """bag-info's Payload-Oxum (octets.streamcount) against the payload present.

    Files already tolerated as absent (an empty .DS_Store the manifest lists but nobody kept) may
    explain a count that is that much higher, with the same octets: a warning, not a problem.
    """
    name = "bag-info.txt" if version not in ("0.93", "0.94", "0.95") else "package-info.txt"
    path = os.path.join(bag, name)
    if _lstat(path) is None:
        return
    try:
        data = _read_small(path)
    except OSError as exc:
        report.problem(name, f"cannot be read ({exc})")
        return
    oxum = None
    for line in _lines(data, encoding, name, report):
        label, sep, value = line.partition(":")
        if sep and label.strip() == "Payload-Oxum":
            oxum = value.strip()
    if oxum is None:
        return
    octets, dot, count = oxum.partition(".")
    if not (dot and octets.isdigit() and count.isdigit()):
        report.problem(name, f"Payload-Oxum {oxum!r} is not OCTETS.COUNT")
        return
    total = sum(os.lstat(os.path.join(bag, *p.split("/"))).st_size for p in on_disk)
    if (int(octets), int(count)) == (total, len(on_disk)):
        return
    if tolerated and int(octets) == total and int(count) == len(on_disk) + tolerated:
        report.warn(name, f"Payload-Oxum {oxum} counts {tolerated} listed file(s) that are absent")
    else:
        report.problem(name, f"Payload-Oxum {oxum} but the payload present is {total}.{len(on_disk)}")


# ----------------------------------------------------------------------------- the ledger

_CHECKPOINT_NAME = re.compile(r"\A([0-9]{12})-([0-9a-f]{64})\.json\Z")


def _checkpoint_keys(root: str, report: Report) -> List[str]:
    folder = os.path.join(root, *CHECKPOINTS)
    st = _lstat(folder)
    if st is None:
        return []
    if not stat.S_ISDIR(st.st_mode):
        report.problem("/".join(CHECKPOINTS), "is not a folder")
        return []
    keys = []
    for name in sorted(os.listdir(folder)):
        if _CHECKPOINT_NAME.match(name):
            keys.append(name)
        elif not name.startswith("."):
            report.warn("/".join(CHECKPOINTS + (name,)), "is not a checkpoint name; ignored")
    return keys


def _parquet_value(raw: bytes, key: str) -> Optional[str]:
    """A key-value entry of a Parquet file's footer, read without a Parquet library.

    The footer is Thrift compact protocol: a KeyValue's `key` string is followed by the header
    byte of field 2 (0x18: delta 1, type binary), a varint length and the value's bytes. Strongroom
    writes each segment's seq, prev_sha256, content_sha256 and event count there, so the events
    carried as JSON can be tied to the very bytes the chain hashes.
    """
    at = raw.rfind(key.encode("ascii"))
    if at < 0:
        return None
    pos = at + len(key)
    if pos >= len(raw) or raw[pos] != 0x18:
        return None
    pos += 1
    length, shift = 0, 0
    while pos < len(raw):
        byte = raw[pos]
        pos += 1
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    value = raw[pos:pos + length]
    return value.decode("utf-8", "replace") if len(value) == length else None


def _check_segment(where: str, seg: dict, expected_seq: int, expected_prev: str, report: Report) -> Optional[str]:
    """One segment's own hashes; returns its file sha256 (the next one's prev) or None if unusable."""
    import base64
    try:
        seq, file_sha, prev = seg["seq"], seg["file_sha256"], seg["prev_sha256"]
        canonical, content_sha, count = seg["canonical_events"], seg["content_sha256"], seg["events"]
        raw = base64.b64decode(seg["parquet_base64"], validate=True)
    except (KeyError, TypeError, ValueError) as exc:
        report.problem(where, f"segment entry is malformed ({exc})")
        return None
    name = f"segment {seq}"
    if seq != expected_seq:
        report.problem(where, f"{name} where segment {expected_seq} was expected (a gap or a reordering)")
    if prev != expected_prev:
        report.problem(where, f"{name} is chained onto {prev[:16]}... but the segment before it is {expected_prev[:16]}...")
    if hashlib.sha256(raw).hexdigest() != file_sha:
        report.problem(where, f"{name}: the segment bytes carried do not hash to its file_sha256")
    if hashlib.sha256(canonical.encode("utf-8")).hexdigest() != content_sha:
        report.problem(where, f"{name}: its events do not hash to its content_sha256 (an event was altered)")
    recorded = {label: _parquet_value(raw, f"strongroom.ledger.{label}")
                for label in ("seq", "prev_sha256", "content_sha256", "events")}
    claimed = {"seq": str(seq), "prev_sha256": prev, "content_sha256": content_sha, "events": str(count)}
    for label, value in claimed.items():
        if recorded[label] != value:
            report.problem(where, f"{name}: the segment's own bytes record {label} {recorded[label]!r}, "
                                  f"the checkpoint says {value!r}")
    try:
        values = json.loads(canonical)["values"]
        rows = len(values[0]) if values else 0
    except (ValueError, KeyError, TypeError, IndexError):
        report.problem(where, f"{name}: canonical_events is not the ledger's column-major JSON")
        return file_sha
    if rows != count:
        report.problem(where, f"{name}: holds {rows} event(s) but says {count}")
    return file_sha


def _load_checkpoint(root: str, name: str, report: Report) -> Optional[Tuple[dict, str]]:
    where = "/".join(CHECKPOINTS + (name,))
    try:
        raw = _read_small(os.path.join(root, *CHECKPOINTS, name), 1 << 30)
        doc = json.loads(raw.decode("utf-8"))
        if not (isinstance(doc["head"]["sha256"], str) and isinstance(doc["first_seq"], int)
                and isinstance(doc["last_seq"], int) and doc["segments"]):
            raise ValueError("head, first_seq, last_seq or segments missing")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        report.problem(where, f"cannot be read as a checkpoint ({exc})")
        return None
    if doc.get("format") != "strongroom-ledger-checkpoint/1":
        report.problem(where, f"unknown format {doc.get('format')!r}")
        return None
    return doc, hashlib.sha256(raw).hexdigest()


def verify_ledger(root: str, report: Report, heads: Optional[Dict[int, str]] = None) -> int:
    """Re-check the checkpoints in root/.strongroom/ledger/checkpoints; returns how many.

    Each checkpoint is checked by itself (its segments' bytes and events hash as recorded, each
    chained onto the one before, its name matching its head) and against the one it names as its
    previous (present, with that very hash, ending just before it starts). Two commands that
    finished at the same moment may both have continued the same checkpoint, so checkpoints may
    overlap: that is fine as long as every checkpoint that carries a segment carries the same
    one. Together they must cover the ledger from segment 0 without a gap, each segment chained
    onto the one before. `heads` (seq -> segment sha256) collects what every target said about
    each segment, so several targets can be compared the same way.
    """
    names = _checkpoint_keys(root, report)
    loaded: Dict[str, Tuple[dict, str]] = {}
    for name in names:
        got = _load_checkpoint(root, name, report)
        if got is not None:
            loaded["ledger/checkpoints/" + name] = got
    said: Dict[int, Tuple[str, str, str]] = {}   # seq -> (file sha256, prev sha256, where first seen)
    for key, (doc, _) in sorted(loaded.items()):
        where = "/".join((RESERVED, key))
        first, last, head, segments = doc["first_seq"], doc["last_seq"], doc["head"], doc["segments"]
        match = _CHECKPOINT_NAME.match(key.rsplit("/", 1)[1])
        if int(match.group(1)) != last or match.group(2) != head.get("sha256") or head.get("seq") != last:
            report.problem(where, "its name does not match the head it records")
        link = doc.get("previous")
        if link is None:
            expected_prev = GENESIS
            if first != 0:
                report.problem(where, f"names no previous checkpoint but starts at segment {first}, not 0")
        else:
            expected_prev = link.get("head_sha256", "")
            before = loaded.get(link.get("key"))
            if before is None:
                report.problem(where, f"names a previous checkpoint {link.get('key')!r} that this target does not hold "
                                      f"(a checkpoint was removed)")
            elif before[1] != link.get("sha256"):
                report.problem(where, f"its previous checkpoint {link.get('key')!r} has another hash than it recorded "
                                      f"(a checkpoint was replaced)")
            elif (before[0]["last_seq"] + 1, before[0]["head"]["sha256"]) != (first, expected_prev):
                report.problem(where, f"does not continue its previous checkpoint {link.get('key')!r}")
        if segments[0].get("seq") != first or segments[-1].get("seq") != last:
            report.problem(where, "its segment list does not run from first_seq to last_seq")
        total, prev_file = 0, expected_prev
        for offset, seg in enumerate(segments):
            file_sha = _check_segment(where, seg, first + offset, prev_file, report)
            if file_sha is None:
                break
            seq = seg["seq"]
            earlier = said.setdefault(seq, (file_sha, seg["prev_sha256"], where))
            if earlier[0] != file_sha:
                report.problem(where, f"segment {seq} differs from the one {earlier[2]} carries")
            if heads is not None and heads.setdefault(seq, file_sha) != file_sha:
                report.problem(where, f"segment {seq} differs from what another target holds for it")
            prev_file = file_sha
            total += seg["events"] if isinstance(seg.get("events"), int) else 0
        if head.get("sha256") != segments[-1].get("file_sha256"):
            report.problem(where, "its head is not the newest segment it carries")
        if doc.get("events") != total:
            report.problem(where, f"says {doc.get('events')} event(s) but its segments hold {total}")
    if said:
        newest = max(said)
        gaps = [seq for seq in range(newest + 1) if seq not in said]
        if gaps:
            report.problem("/".join(CHECKPOINTS), f"no checkpoint carries segment(s) {_ranges(gaps)} "
                                                  f"(the ledger has a hole)")
        for seq in range(1, newest + 1):
            if seq in said and seq - 1 in said and said[seq][1] != said[seq - 1][0]:
                report.problem(said[seq][2], f"segment {seq} is not chained onto segment {seq - 1}")
        report.notes.append(f"ledger head on {root}: segment {newest} sha256 {said[newest][0]}")
    return len(names)


def _ranges(numbers: List[int]) -> str:
    out, start = [], numbers[0]
    for a, b in zip(numbers, numbers[1:] + [None]):
        if b != a + 1:
            out.append(str(start) if start == a else f"{start}-{a}")
            start = b
    return ", ".join(out)


# ----------------------------------------------------------------------------- a whole target

def iter_bags(root: str) -> Iterator[str]:
    """Bag folders LIB/COLL/BAG below a filesystem target (the `.strongroom` namespace skipped)."""
    for depth1 in sorted(os.listdir(root)):
        if depth1.startswith("."):
            continue
        lib = os.path.join(root, depth1)
        if not stat.S_ISDIR(os.lstat(lib).st_mode):
            continue
        for depth2 in sorted(os.listdir(lib)):
            coll = os.path.join(lib, depth2)
            if not stat.S_ISDIR(os.lstat(coll).st_mode):
                continue
            for depth3 in sorted(os.listdir(coll)):
                bag = os.path.join(coll, depth3)
                if stat.S_ISDIR(os.lstat(bag).st_mode) and not depth3.startswith("."):
                    yield f"{depth1}/{depth2}/{depth3}"


def _print(report: Report, quiet: bool) -> None:
    for line in report.notes:
        print(line)
    for line in report.problems:
        print(f"PROBLEM {line}")
    if not quiet:
        for line in report.warnings:
            print(f"warning {line}")


def _verify_target(root: str, report: Report, heads: Dict[int, str]) -> str:
    bags = 0
    for bag_id in iter_bags(root):
        bags += 1
        sub_report = Report()
        verify_bag(os.path.join(root, *bag_id.split("/")), sub_report, root)
        report.problems += [f"{bag_id}/{p}" for p in sub_report.problems]
        report.warnings += [f"{bag_id}/{w}" for w in sub_report.warnings]
        report.checked_files += sub_report.checked_files
        report.checked_bytes += sub_report.checked_bytes
    count = verify_ledger(root, report, heads)
    return f"target {root}: {bags} bag(s), {count} ledger checkpoint(s)"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="strongroom-verify", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quiet", action="store_true", help="print problems only, not warnings")
    sub = parser.add_subparsers(dest="what", required=True)
    p_bag = sub.add_parser("bag", help="validate one bag folder")
    p_bag.add_argument("paths", nargs=1, metavar="BAG_DIR")
    p_bag.add_argument("--fetch-root", help="target root holding the bags that fetch.txt entries name")
    for name, text in (("ledger", "re-check the ledger checkpoints of one or more targets (compared)"),
                       ("target", "every bag of one or more targets, and their ledger checkpoints")):
        sub.add_parser(name, help=text).add_argument("paths", nargs="+", metavar="TARGET_ROOT")
    args = parser.parse_args(argv)
    for path in args.paths:
        if not os.path.isdir(path):
            print(f"strongroom-verify: {path}: not a folder", file=sys.stderr)
            return 2
    report = Report()
    heads: Dict[int, str] = {}
    summaries = []
    for path in args.paths:
        if args.what == "bag":
            verify_bag(path, report, args.fetch_root)
            summaries.append(f"bag {path}")
        elif args.what == "ledger":
            summaries.append(f"ledger of {path}: {verify_ledger(path, report, heads)} checkpoint(s)")
        else:
            summaries.append(_verify_target(path, report, heads))
    _print(report, args.quiet)
    verdict = "INTACT" if not report.problems else f"{len(report.problems)} PROBLEM(S)"
    for summary in summaries:
        print(f"{verdict}: {summary}")
    print(f"{report.checked_files} file(s), {report.checked_bytes} byte(s) re-hashed")
    return 1 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main())
