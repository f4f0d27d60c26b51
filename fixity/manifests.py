"""A copy's payload manifests read against the catalog: split into lines (`_lines`), parsed
(`parse_manifest`), compared line for line in the catalog's order while they are read
(`InOrder`: a window of the manifest and a batch of catalog rows at a time), compared as
sorted lines when that does not prove them equal (`manifest_matches`) and, when they do not
agree, path by path (`compare_manifest`).
"""

from __future__ import annotations

from typing import Dict, Iterable, Iterator, List, Optional, Tuple

import pyarrow as pa
import pyarrow.compute as pc

from strongroom import bagit_spec

from .expected_bag import ExpectedBag
from .external_sort import SortedSpill, same_sequence


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


#: The in-order comparison splits at most about this many manifest bytes into lines at a time.
WINDOW_BYTES = 4 << 20

_BOM = b"\xef\xbb\xbf"


def _expected_lines(rows, algorithm: str, version: str) -> pa.Array:
    """The lines Strongroom writes for catalog rows (a batch or table with path and `algorithm`:
    `<digest>  <encoded path>`, no line end), as large_binary."""
    paths = rows.column("path")
    pairs = ([("%", "%25")] if bagit_spec.is_v1(version) else []) + [("\n", "%0A"), ("\r", "%0D")]
    for old, new in pairs:
        if pc.any(pc.match_substring(paths, old)).as_py():
            paths = pc.replace_substring(paths, old, new)
    wanted = pc.binary_join_element_wise(rows.column(algorithm).cast(pa.large_binary()),
                                         paths.cast(pa.large_binary()), pa.scalar(b"  ", pa.large_binary()))
    return wanted.combine_chunks() if isinstance(wanted, pa.ChunkedArray) else wanted


def _split(body, crlf: bool) -> Optional[pa.Array]:
    """`body`'s lines split at LF (what follows the last line end dropped when empty), a CR
    before each LF removed when `crlf`; None for bytes that are not UTF-8 (the full parse says)."""
    offsets = pa.array([0, len(body)], pa.int64()).buffers()[1]
    whole = pa.LargeBinaryArray.from_buffers(pa.large_binary(), 1, [None, offsets, pa.py_buffer(body)])  # no copy
    lines = pc.list_flatten(pc.split_pattern(whole, b"\n"))
    if len(lines) and not lines[len(lines) - 1].as_py():
        lines = lines.slice(0, len(lines) - 1)
    if crlf:
        try:
            lines = pc.utf8_rtrim(lines.cast(pa.large_string()), characters="\r").cast(pa.large_binary())
        except pa.ArrowInvalid:
            return None
    return lines


class _Lines:
    """A manifest's bytes, fed a chunk at a time, cut into lines as `_split` cuts them (a UTF-8
    BOM at the start dropped, CR before LF removed): what `feed` returns is the lines complete
    so far (None: bytes that are not UTF-8, or no line end for far longer than a line may be)."""

    def __init__(self) -> None:
        self._tail = b""
        self._at_start = True

    def feed(self, chunk: bytes, final: bool = False) -> Optional[pa.Array]:
        data = self._tail + chunk if self._tail else chunk
        if self._at_start:
            if len(data) < len(_BOM) and not final:
                self._tail = bytes(data)
                return _NO_LINES
            if data.startswith(_BOM):
                data = data[len(_BOM):]
            self._at_start = False
        cut = len(data) if final else data.rfind(b"\n") + 1
        self._tail = bytes(data[cut:])
        if len(self._tail) > 4 * bagit_spec.MAX_LINE_CHARS:   # never a line Strongroom writes
            return None
        return _split(memoryview(data)[:cut], data.find(b"\r", 0, cut) >= 0) if cut else _NO_LINES


_NO_LINES = pa.array([], pa.large_binary())


class InOrder:
    """A payload manifest fed as it is read (`feed`), compared line for line with the lines
    Strongroom writes for the catalog's rows in the catalog's order (`ExpectedBag.batches`):
    `finish()` is True when they are the same lines in the same order. Memory: a window of the
    manifest and a batch of rows, whatever the bag's size.

    False says only "not proven equal in this order": another order, other spacing, upper-case
    digests, invalid UTF-8 or a real difference; the caller then compares exactly the slow way.
    `start()` begins again (a read retried from the first byte)."""

    def __init__(self, expected: ExpectedBag, algorithm: str, version: str):
        self._expected, self._algorithm, self._version = expected, algorithm, version
        self.start()

    def start(self) -> None:
        self._rows = self._expected.batches(["path", self._algorithm])
        self._wanted: pa.Array = _NO_LINES
        self._rows_done = False
        self._lines = _Lines()
        self.equal = True

    def feed(self, chunk: bytes, final: bool = False) -> None:
        if self.equal:
            self._compare(self._lines.feed(chunk, final))

    def finish(self) -> bool:
        self.feed(b"", final=True)
        if self.equal and len(self._wanted) == 0:
            self._more(1)
        return self.equal and len(self._wanted) == 0

    def _compare(self, lines: Optional[pa.Array]) -> None:
        if lines is None or not self._more(len(lines)):
            self.equal = False
            return
        wanted = self._wanted.slice(0, len(lines))
        self._wanted = self._wanted.slice(len(lines))
        if len(lines) and not pc.all(pc.equal(lines, wanted)).as_py():
            self.equal = False

    def _more(self, n: int) -> bool:
        """At least `n` expected lines pending (False: the catalog has fewer rows)."""
        parts = [self._wanted]
        have = len(self._wanted)
        while have < n and not self._rows_done:
            try:
                rb = next(self._rows)
            except StopIteration:
                self._rows_done = True
                break
            parts.append(_expected_lines(rb, self._algorithm, self._version))
            have += len(parts[-1])
        if len(parts) > 1:
            self._wanted = pa.concat_arrays([p for p in parts if len(p)]) if have else parts[0]
        return have >= n


def matches_sorted(chunks: Iterable[bytes], expected: ExpectedBag, algorithm: str, version: str) -> bool:
    """`manifest_matches` for a manifest whose lines are not in the catalog's order: its lines
    and the lines Strongroom writes for the catalog's rows, each sorted, are the same sequence.
    Both are sorted outside memory when they are long (`external_sort.SortedSpill`)."""
    split = _Lines()
    ours, theirs = SortedSpill(), SortedSpill()
    try:
        for chunk in [*chunks, None]:
            lines = split.feed(chunk or b"", final=chunk is None)
            if lines is None:
                return False
            ours.add(lines)
        for rb in expected.batches(["path", algorithm]):
            theirs.add(_expected_lines(rb, algorithm, version))
        return ours.total == theirs.total and same_sequence(ours.sorted(), theirs.sorted())
    finally:
        ours.close()
        theirs.close()


def manifest_matches(raw: bytes, expected: ExpectedBag, algorithm: str, version: str) -> bool:
    """True when a payload manifest says exactly what the catalog says, checked without parsing
    it line by line: its lines, as a multiset, equal the lines Strongroom writes for the
    catalog's entries (`<digest>  <encoded path>`). Anything else (other spacing, upper-case
    digests, invalid UTF-8, a real difference) is left to the full parse.

    Exact either way, and lean where it can be: Strongroom writes manifests sorted by path, the
    order of the catalog's rows, so they are first compared line for line in that order (`InOrder`,
    a window of WINDOW_BYTES at a time). A manifest in another order (another tool's bag) is
    compared as sorted lines instead (`matches_sorted`)."""
    windows = [raw[pos:pos + WINDOW_BYTES] for pos in range(0, len(raw), WINDOW_BYTES)]
    check = InOrder(expected, algorithm, version)
    for window in windows:
        check.feed(window)
    return check.finish() or matches_sorted(windows, expected, algorithm, version)


def compare_manifest(expected: ExpectedBag, manifest: pa.Table, algorithm: str
                     ) -> Dict[str, Optional[str]]:
    """Paths where a payload manifest and the catalog disagree: path -> the manifest's digest
    (None: the manifest omits a file the catalog lists). A path listed twice counts as a
    disagreement if either line differs."""
    cat = expected.table(["path", algorithm]).rename_columns(["path", "catalog"])
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
