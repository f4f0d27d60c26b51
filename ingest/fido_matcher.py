"""A FIDO that gives exactly FIDO's answers, but only runs the regexes that could match.

`fido.fido.Fido.match_formats` tries every pattern of every format against every file (about
2,300 regexes), through `re`'s pattern cache each time. Most of those patterns begin with a
literal byte string at a known offset (`\\A\\x89PNG...`), or end with one at a known distance from
the end (`...%%EOF.{0,16}\\Z`), or at least contain a literal that must appear somewhere. Such a
literal is a *necessary* condition: if it is absent, the pattern cannot match, so its signature
cannot match, so its format can never be appended to FIDO's result. A format that contributes
nothing to `result` also changes nothing in FIDO's `as_good_as_any` checks, so skipping it
leaves the answer unchanged. `FastFido.match_formats` therefore:

1. derives, once, one cheap necessary condition per signature from the parsed regex
   (`re._parser`, the parser `re` itself uses), and indexes the conditions by offset and byte;
2. per file, collects the formats whose condition holds (plus formats it cannot pre-filter);
3. runs FIDO's own loop over only those formats, in FIDO's order, with precompiled regexes and
   the same `as_good_as_any` filtering, so the returned list equals `Fido.match_formats`.

Everything else (loading the signature files, priorities, container detection through
`ZipPackage`/`OlePackage`) is FIDO's own code, reused through subclassing; only the container
signature file is parsed once instead of once per container file.

Deriving the conditions means parsing every regex (a few tenths of a second), so they are kept
in a small JSON file in the user's cache folder, named after a digest of this module's source,
the Python version and every (position, regex) they come from: a changed signature file or a
changed analysis simply makes a new one.
"""

from __future__ import annotations

import gc
import hashlib
import importlib
import json
import os
import sys
import tempfile
import types
from dataclasses import dataclass
from typing import Dict, FrozenSet, List, Optional, Sequence, Set, Tuple
from xml.etree import ElementTree as ET

try:  # the parser `re` itself uses (module names before Python 3.11: sre_*)
    import re._constants as _sre
    import re._parser as _sre_parse
except ImportError:  # pragma: no cover
    import sre_constants as _sre  # type: ignore[no-redef]
    import sre_parse as _sre_parse  # type: ignore[no-redef]

from ingest.regex_programs import ProgramCache


class _DeferredModule(types.ModuleType):
    """Stands in for a module while another one is imported, and imports the real one on the
    first attribute asked of it (then hands that attribute over, every time)."""

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(importlib.import_module(self.__name__), name)


def _import_fido_without_requests() -> None:
    """Import FIDO without `requests` (and urllib3, charset_normalizer, idna...): ~0.1 s of a
    `strongroom identify` run. `fido.versions` imports it at the top only for signature
    updates, which this module never asks for; if that code ever runs, `requests` is imported
    then. The stand-in is in sys.modules only while FIDO is imported."""
    if "requests" in sys.modules or "fido.versions" in sys.modules:
        return
    stand_in = _DeferredModule("requests")
    sys.modules["requests"] = stand_in
    try:
        importlib.import_module("fido.versions")
    finally:
        if sys.modules.get("requests") is stand_in:
            del sys.modules["requests"]


_import_fido_without_requests()

import fido as _fido_pkg  # noqa: E402
from fido.fido import Fido  # noqa: E402
from fido.package import OlePackage, ZipPackage  # noqa: E402
from fido.versions import get_local_versions  # noqa: E402

# FIDO's pattern positions and the buffer/anchoring each one implies (see Fido.match_formats).
_BOF, _EOF, _VAR = 0, 1, 2  # BOF: re.match(bof); EOF: re.search(eof); VAR/IFB: re.search(bof)
_POSITIONS = {"BOF": _BOF, "EOF": _EOF, "VAR": _VAR, "IFB": _VAR}
_UNBOUNDED = None


class _BadPattern:
    """Stands in for a regex that does not compile: FIDO would raise there and drop the format."""


_BAD = _BadPattern()


@dataclass(frozen=True)
class LiteralCondition:
    """`run` must occur in the buffer: at a distance lo..hi from its start (anchor "start"), with
    its end lo..hi before the buffer's end (anchor "end"), or anywhere (anchor "float")."""

    buffer: str  # "bof" | "eof"
    anchor: str  # "start" | "end" | "float"
    run: bytes
    lo: int = 0
    hi: Optional[int] = 0  # None: unbounded

    @property
    def exact(self) -> bool:
        return self.anchor in ("start", "end") and self.hi == self.lo

    def cost(self) -> Tuple[int, int, int]:
        """Cheaper and more selective conditions sort first."""
        if self.exact:
            return (0, 0, -len(self.run))
        if self.anchor != "float" and self.hi is not None:
            return (1, self.hi - self.lo, -len(self.run))
        return (2, 0, -len(self.run))


def _item_width(state, item) -> Tuple[int, Optional[int]]:
    lo, hi = _sre_parse.SubPattern(state, [item]).getwidth()
    return lo, (None if hi >= _sre.MAXREPEAT else hi)


def _walk(state, items, buffer: str, anchor: str) -> List[LiteralCondition]:
    """Literal runs of a top-level sequence with their offset range from the anchor."""
    found: List[LiteralCondition] = []
    lo: int = 0
    hi: Optional[int] = 0
    run = bytearray()
    run_lo, run_hi = 0, 0

    def flush() -> None:
        if run:
            data = bytes(run) if anchor != "end" else bytes(reversed(run))
            if anchor == "float":
                found.append(LiteralCondition(buffer, "float", data, 0, _UNBOUNDED))
            else:
                found.append(LiteralCondition(buffer, anchor, data, run_lo, run_hi))
            run.clear()

    for op, av in items:
        if op is _sre.LITERAL:
            if not run:
                run_lo, run_hi = lo, hi
            run.append(av)
            lo += 1
            hi = None if hi is None else hi + 1
            continue
        flush()
        w_lo, w_hi = _item_width(state, (op, av))
        lo += w_lo
        hi = None if (hi is None or w_hi is None) else hi + w_hi
    flush()
    return found


def literal_conditions(regex: bytes, position: str) -> List[LiteralCondition]:
    """Necessary conditions for `regex` to match as FIDO applies it at `position`.

    Only top-level literals are used (never inside groups, branches or repeats), so every
    condition returned is implied by a match; an empty list means "no cheap test known".
    """
    kind = _POSITIONS.get(position)
    if kind is None:
        return []
    parsed = _sre_parse.parse(regex, 0)
    if parsed.state.flags & (_sre.SRE_FLAG_IGNORECASE | _sre.SRE_FLAG_LOCALE):
        return []
    items = list(parsed.data)
    buffer = "eof" if kind == _EOF else "bof"
    starts_anchored = kind == _BOF or (
        bool(items) and items[0] == (_sre.AT, _sre.AT_BEGINNING_STRING))
    ends_anchored = bool(items) and items[-1] == (_sre.AT, _sre.AT_END_STRING)
    conditions = _walk(parsed.state, items, buffer, "start" if starts_anchored else "float")
    if ends_anchored:
        conditions += _walk(parsed.state, list(reversed(items)), buffer, "end")
    return conditions


@dataclass
class _Signature:
    name: Optional[str]
    patterns: List[Tuple[int, object]]  # (kind, compiled regex | raw bytes | _BAD)
    compiled: bool = False


def default_cache_dir() -> str:
    """$STRONGROOM_CACHE_DIR, else $XDG_CACHE_HOME/strongroom, else ~/.cache/strongroom."""
    explicit = os.environ.get("STRONGROOM_CACHE_DIR")
    if explicit:
        return explicit
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "strongroom")


def _read_cache(path: str, count: int) -> Optional[List[Optional[LiteralCondition]]]:
    """The cached conditions, or None if absent or not exactly what we would have written."""
    try:
        with open(path, "r", encoding="utf-8") as handle:
            rows = json.load(handle)
        if not isinstance(rows, list) or len(rows) != count:
            return None
        result = []
        for row in rows:
            if row is None:
                result.append(None)
                continue
            buffer, anchor, run, lo, hi = row
            if buffer not in ("bof", "eof") or anchor not in ("start", "end", "float"):
                return None
            if not isinstance(lo, int) or not (hi is None or isinstance(hi, int)) or not run:
                return None
            result.append(LiteralCondition(buffer, anchor, bytes.fromhex(run), lo, hi))
        return result
    except (OSError, ValueError, TypeError):
        return None


def _write_cache(path: str, conditions: List[Optional[LiteralCondition]]) -> None:
    """Best effort: an unwritable cache only costs the next run the analysis time."""
    rows = [None if c is None else [c.buffer, c.anchor, c.run.hex(), c.lo, c.hi] for c in conditions]
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump(rows, out, separators=(",", ":"))
        os.replace(temporary, path)
    except OSError:
        try:
            os.unlink(temporary)
        except (OSError, UnboundLocalError):
            pass


class FastFido(Fido):
    """`Fido` configured like the `fido` command, with a pre-filtered `match_formats`.

    The constructor loads the same signature files as `fido` (PRONOM formats plus FIDO's
    extension file, named in `conf/versions.xml`), so answers agree with the command line.
    """

    def __init__(self, conf_dir: str = _fido_pkg.CONFIG_DIR, cache_dir: Optional[str] = "",
                 **kwargs):
        """`cache_dir`: where the derived pre-filter is kept between runs ("" for the default,
        see `default_cache_dir`; None to neither read nor write a cache)."""
        versions = get_local_versions(conf_dir)
        self.pronom_version: str = versions.pronom_version
        format_files = [versions.pronom_signature, versions.fido_extension_signature]
        # Loading makes ~100,000 long-lived XML objects; cyclic GC passes over them while they
        # are being made would double the load time, and none of them is garbage.
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            super().__init__(quiet=True, conf_dir=conf_dir, format_files=format_files,
                             handle_matches=lambda *args: None, **kwargs)
            self._load_rest(versions, cache_dir)
        finally:
            if gc_was_enabled:
                gc.enable()

    def _load_rest(self, versions, cache_dir: Optional[str]) -> None:
        # Fido.__init__ ignores its containersignature_file argument and reads a module global
        # that only fido's main() sets; set it the way main() does.
        self.containersignature_file = versions.pronom_container_signature
        self.signature_file: str = versions.pronom_signature
        self._container_signatures: Dict[str, dict] = {}
        self._cache_dir = default_cache_dir() if cache_dir == "" else cache_dir
        self._build_index()
        self._programs = ProgramCache((regex for signatures in self._signatures for sig in signatures
                                       for _, regex in sig.patterns if isinstance(regex, bytes)), self._cache_dir)

    # ---- index -----------------------------------------------------------------------------
    def _build_index(self) -> None:
        self._puid_of: Dict[int, str] = {}
        self._priority: Dict[str, FrozenSet[str]] = dict(self.puid_has_priority_over_map)
        self._signatures: List[List[_Signature]] = []
        self._always: Set[int] = set()
        self._extensions: Dict[str, List[int]] = {}
        analysed: List[Tuple[int, List[Tuple[str, bytes]]]] = []  # (format index, patterns) per signature

        for index, fmt in enumerate(self.formats):
            self._puid_of[id(fmt)] = self.get_puid(fmt)
            for ext in fmt.findall("extension"):
                if ext.text is not None:
                    entries = self._extensions.setdefault(ext.text, [])
                    if index not in entries:
                        entries.append(index)
            signatures = []
            for sig in self.get_signatures(fmt):
                patterns = []
                sources: List[Tuple[str, bytes]] = []
                for pat in self.get_patterns(sig):
                    try:  # the same calls, in the same order, as Fido.match_formats makes
                        position = self.get_pos(pat)
                        regex = self.get_regex(pat)
                        kind = _POSITIONS.get(position)
                    except Exception:  # FIDO would raise here and drop the rest of the format
                        patterns.append((-1, _BAD))
                        self._always.add(index)
                        continue
                    if kind is None:
                        continue  # FIDO ignores patterns at other positions
                    patterns.append((kind, regex))
                    sources.append((position, regex))
                signatures.append(_Signature(sig.findtext("name"), patterns))
                analysed.append((index, sources))
            self._signatures.append(signatures)

        bof_exact: Dict[int, Dict[int, List[Tuple[int, bytes]]]] = {}
        eof_exact: Dict[int, Dict[int, List[Tuple[int, bytes]]]] = {}
        grouped: Dict[tuple, List[int]] = {}
        for (index, _), best in zip(analysed, self._best_conditions([s for _, s in analysed])):
            if best is None:
                self._always.add(index)
            elif best.exact and best.anchor == "start":
                bof_exact.setdefault(best.lo, {}).setdefault(best.run[0], []).append((index, best.run))
            elif best.exact:
                eof_exact.setdefault(best.lo, {}).setdefault(best.run[-1], []).append((index, best.run))
            else:  # one check per distinct condition, naming every format it can admit
                key = (best.buffer == "bof", {"start": 0, "end": 1, "float": 2}[best.anchor], best.run,
                       best.lo, None if best.hi is None else best.hi + len(best.run))
                if index not in grouped.setdefault(key, []):
                    grouped[key].append(index)
        self._bof_exact = sorted(bof_exact.items())
        self._eof_exact = sorted(eof_exact.items())
        self._ranged_checks = [(tuple(indexes),) + key for key, indexes in grouped.items()]
        # The same checks split by buffer and anchor, so the per-file loops do no branching.
        self._split_checks: Dict[Tuple[bool, int], list] = {
            (is_bof, anchor): [] for is_bof in (True, False) for anchor in (0, 1, 2)}
        for indexes, is_bof, anchor, run, lo, hi_end in self._ranged_checks:
            self._split_checks[(is_bof, anchor)].append((indexes, run, lo, hi_end))

    def _best_conditions(self, signatures: List[List[Tuple[str, bytes]]]) -> List[Optional[LiteralCondition]]:
        """The cheapest necessary condition of each signature (None: must always be tried).

        Parsing 2,300 regexes takes a noticeable part of a second, so the result is kept in a
        JSON file named after a digest of every (position, regex) it was derived from.
        """
        digest = hashlib.sha256(f"{sys.version_info[:2]}".encode())
        with open(__file__, "rb") as source:  # any change to this analysis invalidates the cache
            digest.update(source.read())
        for sources in signatures:
            digest.update(b"\x01")
            for position, regex in sources:
                digest.update(b"\x02" + position.encode("utf-8", "replace") + b"\x03" + regex)
        cache = None
        if self._cache_dir:
            cache = os.path.join(self._cache_dir, f"fido-prefilter-{digest.hexdigest()[:32]}.json")
            loaded = _read_cache(cache, len(signatures))
            if loaded is not None:
                return loaded
        result: List[Optional[LiteralCondition]] = []
        for sources in signatures:
            best: Optional[LiteralCondition] = None
            for position, regex in sources:
                try:
                    conditions = literal_conditions(regex, position)
                except Exception:  # no cheap test known for this pattern
                    conditions = []
                for cond in conditions:
                    if best is None or cond.cost() < best.cost():
                        best = cond
            result.append(best)
        if cache:
            _write_cache(cache, result)
        return result

    def _compiled(self, sig: _Signature) -> List[Tuple[int, object]]:
        """Compile on first use: most patterns never become candidates in a given run.

        A regex that does not compile becomes _BAD at that point, which is where FIDO would
        raise. Skipping such a format while it is not a candidate is still exact: a signature
        holding a bad pattern can never succeed, so the format contributes nothing either way.
        """
        patterns = sig.patterns
        if not sig.compiled:
            for i, (kind, regex) in enumerate(patterns):
                if isinstance(regex, bytes):
                    try:
                        patterns[i] = (kind, self._programs.compile(regex))
                    except Exception:
                        patterns[i] = (kind, _BAD)
            sig.compiled = True
        return patterns

    # ---- matching --------------------------------------------------------------------------
    def candidates(self, bofbuffer: bytes, eofbuffer: bytes) -> List[int]:
        """Indexes (into self.formats) of the formats that might match, in FIDO's order."""
        found = set(self._always)
        size_bof, size_eof = len(bofbuffer), len(eofbuffer)
        for offset, table in self._bof_exact:
            if offset >= size_bof:
                break
            for index, run in table.get(bofbuffer[offset], ()):
                if index not in found and bofbuffer.startswith(run, offset):
                    found.add(index)
        for offset, table in self._eof_exact:
            if offset >= size_eof:
                break
            for index, run in table.get(eofbuffer[size_eof - offset - 1], ()):
                if index not in found and eofbuffer.endswith(run, 0, size_eof - offset):
                    found.add(index)
        checks = self._split_checks
        for is_bof, buf in ((True, bofbuffer), (False, eofbuffer)):
            size = len(buf)
            find = buf.find
            # start: run begins lo..hi bytes in (hi_end = hi + len(run), None: anywhere after lo)
            for indexes, run, lo, hi_end in checks[(is_bof, 0)]:
                if find(run, lo, hi_end) != -1:
                    found.update(indexes)
            # end: run ends lo..hi bytes before the end (hi_end None: anywhere before that)
            for indexes, run, lo, hi_end in checks[(is_bof, 1)]:
                if find(run, 0 if hi_end is None else max(0, size - hi_end), size - lo) != -1:
                    found.update(indexes)
            for indexes, run, _, _ in checks[(is_bof, 2)]:  # anywhere
                if run in buf:
                    found.update(indexes)
        return sorted(found)

    def _as_good_as_any(self, fmt, puid: str, result: Sequence[tuple]) -> bool:
        """Fido.as_good_as_any with the PUID look-ups cached."""
        for other, _ in result:
            if other is fmt:
                continue
            if puid in self._priority[self._puid_of[id(other)]]:
                return False
        return True

    def match_formats(self, bofbuffer: bytes, eofbuffer: bytes) -> List[tuple]:
        """Same list as Fido.match_formats(bofbuffer, eofbuffer), computed on candidates only."""
        self.current_count += 1
        result: List[tuple] = []
        for index in self.candidates(bofbuffer, eofbuffer):
            fmt = self.formats[index]
            puid = self._puid_of[id(fmt)]
            if not self._as_good_as_any(fmt, puid, result):
                continue
            for sig in self._signatures[index]:
                success = True
                failed = False
                for kind, regex in self._compiled(sig):
                    if regex is _BAD:
                        failed = True
                        break
                    if kind == _BOF:
                        hit = regex.match(bofbuffer)
                    elif kind == _EOF:
                        hit = regex.search(eofbuffer)
                    else:
                        hit = regex.search(bofbuffer)
                    if not hit:
                        success = False
                        break
                if failed:
                    break  # FIDO's per-format `except Exception: continue`
                if success:
                    result.append((fmt, sig.name))
        return [m for m in result if self._as_good_as_any(m[0], self._puid_of[id(m[0])], result)]

    def match_extensions(self, filename: str) -> List[tuple]:
        """Same list as Fido.match_extensions(filename), from a precomputed extension map."""
        myext = os.path.splitext(filename)[1].lower().lstrip(".")
        if not myext:
            return []
        name = self.externalsig.findtext("name")
        result = [(self.formats[i], name) for i in self._extensions.get(myext, ())]
        return [m for m in result if self._as_good_as_any(m[0], self._puid_of[id(m[0])], result)]

    # ---- containers ------------------------------------------------------------------------
    def container_signatures(self, signature_type: str) -> dict:
        """Fido.extract_signatures for ZIP or OLE2, parsed once per process, not once per file."""
        if signature_type not in self._container_signatures:
            doc = ET.parse(os.path.join(os.path.abspath(self.conf_dir), self.containersignature_file))
            self._container_signatures[signature_type] = self.extract_signatures(doc, signature_type)
        return self._container_signatures[signature_type]

    def match_container_file(self, container_type: str, path: str) -> List[tuple]:
        """What Fido.identify_file gets from match_container for a "zip" or "ole" file."""
        if container_type == "zip":
            puids = ZipPackage(path, self.container_signatures("ZIP")).detect_formats()
        else:
            puids = OlePackage(path, self.container_signatures("OLE2")).detect_formats()
        results = []
        for puid in puids:
            fmt = self.puid_format_map[puid]
            results.append((fmt, fmt.findtext("name")))
        return results
