"""Compiled PRONOM patterns kept between runs (ingest.regex_programs) are exactly re.compile's.

`re.Pattern` objects compare equal when their pattern, flags and compiled program are equal, so
equality here is the proof that matching with a kept program gives re's own answers.
"""

from __future__ import annotations

import re

import pytest

from ingest.fido_matcher import FastFido
from ingest.regex_programs import ProgramCache


@pytest.fixture(scope="module")
def patterns(tmp_path_factory):
    fido = FastFido(cache_dir=str(tmp_path_factory.mktemp("fido-cache")))
    return sorted({regex for signatures in fido._signatures for sig in signatures
                   for _, regex in sig.patterns if isinstance(regex, bytes)})


def test_every_kept_program_is_re_compile_s(patterns, tmp_path):
    first = ProgramCache(patterns, str(tmp_path))            # builds and writes the file
    assert first.path is not None and (tmp_path / first.path.rsplit("/", 1)[-1]).is_file()
    again = ProgramCache(patterns, str(tmp_path))            # reads it back
    assert len(again._programs) == len(patterns)
    for regex in patterns:
        wanted = re.compile(regex)
        assert again.compile(regex) == wanted, regex
        assert first.compile(regex) == wanted, regex


def test_a_damaged_or_refused_cache_falls_back_to_re_compile(patterns, tmp_path):
    some = patterns[:50]
    cache = ProgramCache(some, str(tmp_path))
    with open(cache.path, "wb") as out:
        out.write(b"\x00not marshal data")
    rebuilt = ProgramCache(some, str(tmp_path))              # unreadable: built again
    assert all(rebuilt.compile(r) == re.compile(r) for r in some)
    flags, packed, groups, groupindex, indexgroup = rebuilt._programs[some[0]]
    rebuilt._programs[some[0]] = (flags, packed[:-8], groups, groupindex, indexgroup)  # a truncated program
    assert rebuilt.compile(some[0]) == re.compile(some[0])   # _sre refuses it; re.compile answers


def test_no_cache_folder_means_plain_re_compile(patterns):
    cache = ProgramCache(patterns[:5], None)
    assert cache.path is None and not cache._programs
    assert cache.compile(patterns[0]) == re.compile(patterns[0])
    with pytest.raises(re.error):
        cache.compile(b"(unbalanced")
