"""Compiled regular expressions kept between runs: FIDO's ~2,300 PRONOM patterns without
parsing and compiling each one again in every process.

Why: `re.compile` parses a pattern and translates it into a program for the `_sre` matching
engine, both in Python code; on a corpus that touches most signatures (the format corpus does)
that is a third of `strongroom identify`'s time, and both worker processes pay it. The program
depends only on the pattern and the Python build, so it is kept in a small file in the cache
folder, named after a digest of this module, the exact Python version, the engine's MAGIC
number and every pattern, and handed straight to `_sre.compile` (what `re.compile` itself ends
with). `_sre.compile` validates a program before using it; anything missing, unreadable or
refused falls back to `re.compile`, so a stale or damaged file costs time, never an answer.
`tests/test_identify_regex_cache.py` checks that every cached pattern equals `re.compile`'s
(pattern objects compare their flags and programs).
"""

from __future__ import annotations

import hashlib
import marshal
import os
import re
import sys
import tempfile
from array import array
from typing import Dict, Iterable, Optional, Tuple

try:  # the parser and translator `re` itself uses (module names before Python 3.11: sre_*)
    import re._compiler as _translator
    import re._parser as _parser
except ImportError:  # pragma: no cover
    import sre_compile as _translator  # type: ignore[no-redef]
    import sre_parse as _parser  # type: ignore[no-redef]

try:
    import _sre
except ImportError:  # pragma: no cover - not CPython: always re.compile
    _sre = None  # type: ignore[assignment]

#: (flags, program, groups - 1, group index, index group): `_sre.compile`'s arguments after the
#: pattern, the program packed as unsigned 32-bit words (`_sre.CODESIZE` is 4): one bytes object
#: loads far faster than a list of ints.
Program = Tuple[int, bytes, int, dict, tuple]


def program_of(regex: bytes) -> Program:
    """What `re.compile(regex)` hands `_sre.compile` (re._compiler.compile, step by step)."""
    parsed = _parser.parse(regex, 0)
    code = _translator._code(parsed, 0)
    groupindex = dict(parsed.state.groupdict)
    indexgroup = [None] * parsed.state.groups
    for name, index in groupindex.items():
        indexgroup[index] = name
    return int(parsed.state.flags), array("I", code).tobytes(), parsed.state.groups - 1, groupindex, tuple(indexgroup)


class ProgramCache:
    """Compiled patterns for one set of regexes; `compile(regex)` is `re.compile(regex)`."""

    def __init__(self, regexes: Iterable[bytes], cache_dir: Optional[str]):
        wanted = sorted(set(regexes))
        self._programs: Dict[bytes, Program] = {}
        self.path: Optional[str] = None
        if _sre is None or getattr(_sre, "CODESIZE", 0) != array("I").itemsize or not cache_dir:
            return
        digest = hashlib.sha256(f"{sys.version}|{getattr(_sre, 'MAGIC', '')}".encode())
        with open(__file__, "rb") as source:  # a change to this module makes a new file
            digest.update(source.read())
        for regex in wanted:
            digest.update(len(regex).to_bytes(4, "big") + regex)
        self.path = os.path.join(cache_dir, f"fido-programs-{digest.hexdigest()[:32]}.marshal")
        loaded = self._read()
        if loaded is None:
            loaded = self._build(wanted)
            self._write(loaded)
        self._programs = loaded

    def compile(self, regex: bytes):
        """re.compile(regex), from the kept program when there is one (any refusal: re.compile)."""
        program = self._programs.get(regex)
        if program is not None:
            flags, packed, groups, groupindex, indexgroup = program
            try:
                code = array("I")
                code.frombytes(packed)
                return _sre.compile(regex, flags, code.tolist(), groups, groupindex, indexgroup)
            except (TypeError, ValueError, RuntimeError, OverflowError):
                pass
        return re.compile(regex)

    @staticmethod
    def _build(regexes) -> Dict[bytes, Program]:
        built: Dict[bytes, Program] = {}
        for regex in regexes:
            try:
                built[regex] = program_of(regex)
            except Exception:  # does not compile: re.compile raises it again where FIDO would
                continue
        return built

    def _read(self) -> Optional[Dict[bytes, Program]]:
        try:
            with open(self.path, "rb") as handle:
                data = marshal.load(handle)
        except (OSError, EOFError, ValueError, TypeError):
            return None
        if not isinstance(data, dict) or not all(
                isinstance(k, bytes) and isinstance(v, tuple) and len(v) == 5 and isinstance(v[1], bytes)
                for k, v in data.items()):
            return None
        return data

    def _write(self, programs: Dict[bytes, Program]) -> None:
        """Best effort: an unwritable cache only costs the next run the compiling time."""
        folder = os.path.dirname(self.path)
        temporary = None
        try:
            os.makedirs(folder, exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=folder, suffix=".tmp")
            with os.fdopen(handle, "wb") as out:
                marshal.dump(programs, out)
            os.replace(temporary, self.path)
        except (OSError, ValueError):
            if temporary is not None:
                try:
                    os.unlink(temporary)
                except OSError:
                    pass
