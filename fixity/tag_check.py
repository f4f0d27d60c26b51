"""The tag files of one copy (bagit.txt, bag-info.txt, manifests, tag manifests, metadata/):
they are not in the catalog, so every copy's tag files are read and digested here, bagit.txt,
bag-info.txt and the (tag) manifests parsed, and the findings recorded in its ReplicaCheck;
`fixity.repair` judges them across copies.
"""

from __future__ import annotations

import io
import tempfile
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple


from strongroom import bagit_spec
from strongroom.bag_id import BagId
from strongroom.checksums import SUPPORTED
from storage_adapters.base import CHUNK, NotFound, StorageAdapter, UnsafePath

from .check_records import MANIFEST_DISAGREES, MAX_LISTED, NOT_A_FILE, UNREADABLE, Finding, ReplicaCheck, TagCopy
from .expected_bag import ExpectedBag
from .manifests import InOrder, _lines, compare_manifest, matches_sorted, parse_manifest
from .payload_check import _CONSTRUCTORS
from .retry import Retry, describe, is_transient, with_retry


def _needs_parsing(path: str) -> bool:
    return "/" not in path and (path in (bagit_spec.BAGIT_TXT, "bag-info.txt")
                                or bool(bagit_spec.MANIFEST_RE.match(path) or bagit_spec.TAGMANIFEST_RE.match(path)))


def read_tag_file(adapter: StorageAdapter, bag_id: BagId, path: str, algorithms: Sequence[str], retry: Retry,
                  keep: bool, linked: Optional[List[List[Any]]] = None, sink: Optional["ManifestSink"] = None
                  ) -> Tuple[TagCopy, Optional[bytes]]:
    """Digest one tag file as a stream; its bytes too when `keep` (files that are parsed), or
    handed to `sink` chunk by chunk instead (started again when a read is retried)."""
    def read() -> Tuple[TagCopy, Optional[bytes]]:
        hashers = [_CONSTRUCTORS[a]() for a in algorithms]
        kept = io.BytesIO() if keep else None
        if sink is not None:
            sink.start()
        n = 0
        with adapter.open_file(bag_id, path) as fh:
            ident = adapter.stream_identity(fh)
            if ident is not None and ident[2] > 1 and linked is not None:
                linked.append([path, ident[0], ident[1]])
            while True:
                chunk = fh.read(CHUNK)
                if not chunk:
                    break
                for h in hashers:
                    h.update(chunk)
                if kept is not None:
                    kept.write(chunk)
                if sink is not None:
                    sink.feed(chunk)
                n += len(chunk)
        return TagCopy(n, {a: h.hexdigest() for a, h in zip(algorithms, hashers)}), \
            (kept.getvalue() if kept is not None else None)
    return with_retry(retry, read)


class ManifestSink:
    """Where a payload manifest's bytes go while it is read: compared in order with the catalog
    as they come (`manifests.InOrder`), and kept in an unlinked temporary file (nothing of it
    outlives the process), not in memory, for the exact comparison should the in-order one not
    prove them equal. A bag's manifests are its biggest tag files (about 100 bytes a file each):
    held whole they made a deep audit's memory grow with the bag's file count (issues 11, 16)."""

    def __init__(self, expected: ExpectedBag, algorithm: str, version: str):
        self.in_order = InOrder(expected, algorithm, version)
        self._facts = (expected, algorithm, version)
        self._file = tempfile.TemporaryFile(prefix=".strongroom-audit-manifest-")

    def start(self) -> None:
        self.in_order.start()
        self._file.seek(0)
        self._file.truncate()

    def feed(self, chunk: bytes) -> None:
        self.in_order.feed(chunk)
        self._file.write(chunk)

    def agrees(self) -> bool:
        """True when the manifest read is, line for line, what Strongroom writes for the catalog."""
        return self.in_order.finish()

    def agrees_sorted(self) -> bool:
        """True when the manifest's lines, sorted, are the catalog's (read back a chunk at a time)."""
        self._file.seek(0)
        return matches_sorted(iter(lambda: self._file.read(CHUNK), b""), *self._facts)

    def read_back(self) -> bytes:
        """The whole manifest, for the exact comparison (a manifest not in the catalog's lines)."""
        self._file.seek(0)
        return self._file.read()

    def close(self) -> None:
        self._file.close()


def tag_algorithms(expected: ExpectedBag, tag_paths: Iterable[str]) -> List[str]:
    """Digests worth computing for tag files: the catalog's, every tag manifest's, and sha256."""
    algs = set(expected.algorithms) | {"sha256"}
    for p in tag_paths:
        m = bagit_spec.TAGMANIFEST_RE.match(p) if "/" not in p else None
        if m and bagit_spec.hashlib_name(m.group(1)) in SUPPORTED:
            algs.add(bagit_spec.hashlib_name(m.group(1)))
    return [a for a in SUPPORTED if a in algs]


def _check_tags(adapter: StorageAdapter, bag_id: BagId, expected: ExpectedBag, tag_paths: List[str],
                check: ReplicaCheck, retry: Retry) -> None:
    """Read every tag file of the copy; parse bagit.txt, bag-info.txt and the (tag) manifests.

    bagit.txt is read first (it says how every manifest is read), and each payload manifest is
    compared with the catalog as soon as it is read and then let go: a bag's manifests are its
    biggest tag files (about 100 bytes a file each), and holding all of them at once made the
    audit's memory grow with the file count. Findings keep the order they always had."""
    algs = tag_algorithms(expected, tag_paths)
    kept: Dict[str, bytes] = {}
    payload_manifests = {f"manifest-{alg}.txt": alg for alg in expected.algorithms}
    read_findings: Dict[str, Finding] = {}
    manifest_findings: List[Finding] = []
    version = bagit_spec.BAGIT_VERSION
    check.bagit_ok = False
    for path in sorted(tag_paths, key=lambda p: p != bagit_spec.BAGIT_TXT):
        keep = _needs_parsing(path)
        sink = ManifestSink(expected, payload_manifests[path], version) if path in payload_manifests else None
        try:
            try:
                copy, data = read_tag_file(adapter, bag_id, path, algs, retry, keep and sink is None, check.linked,
                                           sink)
            except NotFound:
                continue  # removed between listing and reading: it is simply not there
            except UnsafePath as exc:
                read_findings[path] = Finding(NOT_A_FILE, check.target, path, exc.message)
                continue
            except Exception as exc:
                if not is_transient(exc):
                    raise
                check.tag_unreadable[path] = describe(exc)
                read_findings[path] = Finding(UNREADABLE, check.target, path,
                                              f"tag file cannot be read after {retry.attempts} attempts "
                                              f"({describe(exc)}); inconclusive, not damage")
                continue
            if sink is not None:
                _judge_manifest(sink, path, payload_manifests[path], version, expected, check, manifest_findings)
        finally:
            if sink is not None:
                sink.close()
        check.tag_copies[path] = copy
        check.tag_bytes += copy.size
        if data is None:
            continue
        if path == bagit_spec.BAGIT_TXT:
            decl = bagit_spec.parse_bagit_txt(data)
            check.bagit_ok = decl.rules is not None and decl.encoding is not None and \
                not any(i.error for i in decl.issues)
            version = decl.rules or version
        else:
            kept[path] = data
    check.tag_copies = {p: check.tag_copies[p] for p in tag_paths if p in check.tag_copies}  # listing order
    check.findings.extend(read_findings[p] for p in tag_paths if p in read_findings)
    check.bag_version = version

    raw = kept.get("bag-info.txt")
    if raw is not None:
        check.bag_info_issues = _bag_info_issues(raw, version, expected)

    judged = dict(check.manifest_state)
    check.manifest_state.clear()
    for alg in expected.algorithms:
        name = f"manifest-{alg}.txt"
        check.manifest_state[alg] = judged.get(alg) or ("unreadable" if name in check.tag_unreadable else "missing")
    check.findings.extend(manifest_findings)

    for path in list(kept):
        m = bagit_spec.TAGMANIFEST_RE.match(path)
        alg = bagit_spec.hashlib_name(m.group(1)) if m else None
        if not m or alg not in SUPPORTED:
            continue
        try:
            table, errors = parse_manifest(kept[path], version, alg, path)
        except bagit_spec.TagFileError as exc:
            table, errors = None, [exc.message]
        if errors:
            check.tag_manifest_errors[alg] = "; ".join(errors[:5])
            continue
        entries = dict(zip(table.column("path").to_pylist(), table.column("digest").to_pylist()))
        if len(entries) != table.num_rows:
            check.tag_manifest_errors[alg] = "lists a tag file twice"
            continue
        check.tag_manifests[alg] = entries


def _judge_manifest(sink: ManifestSink, name: str, alg: str, version: str, expected: ExpectedBag,
                    check: ReplicaCheck, findings: List[Finding]) -> None:
    """`manifest_state[alg]` of one payload manifest read from the copy (agrees, disagrees,
    invalid), its differences and their findings (added to `findings`). Proven equal in the
    catalog's order as it was read, or as sorted lines (sorted outside memory), it is never held
    whole; otherwise it is parsed and joined with the catalog's rows path by path."""
    if sink.agrees() or sink.agrees_sorted():
        check.manifest_state[alg] = "agrees"
        return
    raw = sink.read_back()
    try:
        table, errors = parse_manifest(raw, version, alg, name)
    except bagit_spec.TagFileError as exc:
        table, errors = None, [exc.message]
    if errors:
        check.manifest_state[alg] = "invalid: " + "; ".join(errors[:5])
        return
    diff = compare_manifest(expected, table, alg)
    check.manifest_state[alg] = "disagrees" if diff else "agrees"
    if diff:
        check.manifest_differences[alg] = diff
        in_catalog = set(expected.digests_of(diff))
        for path, digest in list(sorted(diff.items()))[:MAX_LISTED]:
            catalog_has = path in in_catalog
            if digest is None:
                what = f"{name} does not list {path}, which the catalog holds"
            elif not catalog_has:
                what = f"{name} lists {path} ({alg} {digest}), which is not in the catalog"
            else:
                what = f"{name} gives {alg} {digest} for {path}; the catalog has another digest"
            findings.append(Finding(MANIFEST_DISAGREES, check.target, path, what))


def _bag_info_issues(raw: bytes, version: str, expected: ExpectedBag) -> List[str]:
    """What bag-info.txt says that the catalog contradicts (Payload-Oxum, External-Identifier)."""
    try:
        items, issues = bagit_spec.parse_tag_lines(_lines(raw, "bag-info.txt"), version)
    except bagit_spec.TagFileError as exc:
        return [exc.message]
    problems = [f"bag-info.txt: {i}" for i in issues if i.error]
    info: Dict[str, str] = {}
    for label, value in items:
        info.setdefault(label, value)
    oxum = info.get("Payload-Oxum")
    want = bagit_spec.payload_oxum(expected.byte_count, expected.file_count)
    if oxum is None:
        problems.append("bag-info.txt has no Payload-Oxum")
    elif oxum.strip() != want:
        problems.append(f"bag-info.txt Payload-Oxum {oxum.strip()} differs from the catalog's {want}")
    ext = info.get("External-Identifier")
    if expected.external_identifier and ext != expected.external_identifier:
        problems.append(f"bag-info.txt External-Identifier {ext!r} differs from the catalog's "
                        f"{expected.external_identifier!r}")
    return problems
