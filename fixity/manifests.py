"""A copy's payload manifests read against the catalog: split into lines (`_lines`), parsed
(`parse_manifest`), compared fast when they agree (`manifest_matches`) and, when they do not,
path by path (`compare_manifest`).
"""

from __future__ import annotations

from typing import Dict, Iterator, List, Optional, Tuple

import pyarrow as pa
import pyarrow.compute as pc

from strongroom import bagit_spec

from .expected_bag import ExpectedBag


def _lines(data: bytes, file: str = "tag file", where: Optional[str] = None) -> Iterator[Tuple[int, str]]:
    """(number, text) of each line of a tag file read from a copy: `bagit_spec.split_lines`, the
    one splitter every reader of tag files shares (LF, CR and CRLF line ends, a UTF-8 BOM
    dropped, lines bounded). Bytes that are not UTF-8 or an overlong line raise TagFileError
    naming `file` and the line."""
    return bagit_spec.split_lines(data, file, where)


def parse_manifest(data: bytes, version: str, algorithm: str, file: Optional[str] = None,
                   where: Optional[str] = None) -> Tuple[pa.Table, List[str]]:
    """(path, digest) table of a (tag) manifest, and its errors. Parsed in slices: no object per
    line kept. Raises TagFileError (naming `file`, default `manifest-<algorithm>.txt`, and the
    line) for bytes that are not UTF-8 or an overlong line."""
    paths: List[pa.Array] = []
    digests: List[pa.Array] = []
    errors: List[str] = []
    batch: List[Tuple[int, str]] = []

    def flush() -> None:
        entries, issues = bagit_spec.parse_manifest_lines(batch, version, algorithm)
        errors.extend(str(i) for i in issues if i.error)
        paths.append(pa.array([e.path for e in entries], pa.string()))
        digests.append(pa.array([e.digest for e in entries], pa.string()))
        batch.clear()

    for item in _lines(data, file or f"manifest-{algorithm}.txt", where):
        batch.append(item)
        if len(batch) >= 20000:
            flush()
    flush()
    return pa.table({"path": pa.concat_arrays(paths), "digest": pa.concat_arrays(digests)}), errors


def manifest_matches(raw: bytes, expected: ExpectedBag, algorithm: str, version: str) -> bool:
    """True when a payload manifest says exactly what the catalog says, checked without parsing
    it line by line: its lines, sorted, equal the lines Strongroom writes for the catalog's
    entries (`<digest>  <encoded path>`). Anything else (other spacing, upper-case digests,
    invalid UTF-8, a real difference) is left to the full parse. Vectorised and lean: a
    manifest of 200,000 lines costs tens of milliseconds, and besides the manifest's own lines
    and the expected ones only sort indices and one slice at a time are held."""
    start = 3 if raw.startswith(b"\xef\xbb\xbf") else 0
    body = memoryview(raw)[start:]
    offsets = pa.array([0, len(body)], pa.int64()).buffers()[1]
    whole = pa.LargeBinaryArray.from_buffers(pa.large_binary(), 1, [None, offsets, pa.py_buffer(body)])  # no copy
    lines = pc.list_flatten(pc.split_pattern(whole, b"\n"))
    if len(lines) and not lines[len(lines) - 1].as_py():
        lines = lines.slice(0, len(lines) - 1)            # what follows the last line end
    if raw.find(b"\r", start) >= 0:                       # CRLF line ends
        try:
            lines = pc.utf8_rtrim(lines.cast(pa.large_string()), characters="\r").cast(pa.large_binary())
        except pa.ArrowInvalid:                            # not UTF-8: the full parse says so
            return False
    if len(lines) != expected.files.num_rows:
        return False
    if len(lines) == 0:
        return True
    paths = expected.files.column("path")
    pairs = ([("%", "%25")] if bagit_spec.is_v1(version) else []) + [("\n", "%0A"), ("\r", "%0D")]
    for old, new in pairs:
        if pc.any(pc.match_substring(paths, old)).as_py():
            paths = pc.replace_substring(paths, old, new)
    wanted = pc.binary_join_element_wise(expected.files.column(algorithm).cast(pa.large_binary()),
                                         paths.cast(pa.large_binary()), pa.scalar(b"  ", pa.large_binary()))
    if isinstance(wanted, pa.ChunkedArray):
        wanted = wanted.combine_chunks()
    ours, theirs = pc.array_sort_indices(lines), pc.array_sort_indices(wanted)
    step = 65536
    for offset in range(0, len(lines), step):
        a = pc.take(lines, ours.slice(offset, step))
        b = pc.take(wanted, theirs.slice(offset, step))
        if not pc.all(pc.equal(a, b)).as_py():
            return False
    return True


def compare_manifest(expected: ExpectedBag, manifest: pa.Table, algorithm: str
                     ) -> Dict[str, Optional[str]]:
    """Paths where a payload manifest and the catalog disagree: path -> the manifest's digest
    (None: the manifest omits a file the catalog lists). A path listed twice counts as a
    disagreement if either line differs."""
    cat = expected.files.select(["path", algorithm]).rename_columns(["path", "catalog"])
    joined = cat.join(manifest, "path", join_type="full outer")
    same = pc.fill_null(pc.equal(joined.column("catalog"), joined.column("digest")), False)
    diff = joined.filter(pc.invert(same))
    out: Dict[str, Optional[str]] = {}
    for p, d in zip(diff.column("path").to_pylist(), diff.column("digest").to_pylist()):
        out[p] = d
    counts = pc.value_counts(manifest.column("path"))
    dup = counts.filter(pc.greater(counts.field("counts"), 1))
    for item in dup.to_pylist():
        out.setdefault(item["values"], None)
    return out
