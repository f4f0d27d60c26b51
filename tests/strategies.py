"""Hypothesis strategies and settings shared by the property tests and the bounded fuzz run.

Every setting here is reproducible (derandomize=True: the same examples on every run, so CI
never fails by luck) and has no deadline (a loaded 2-core CI machine makes timings noise).
The example database is off: nothing is written into the work tree.
"""

from __future__ import annotations

import hashlib
import os
import string
from typing import Dict, List, Tuple

from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st

#: Unicode text without surrogates (they cannot be written as UTF-8, so no tag file holds one).
UNICODE = st.characters(blacklist_categories=("Cs",))

#: Characters file names are made of in the tests that touch disk: spaces, '%', CJK, accents.
NAME_CHARS = string.ascii_letters + string.digits + " %-_.,'()+=#~" + "善本书目古籍文件第卷é"

#: Characters that break naive line splitting or percent decoding, mixed into parsed names.
TRICKY_CHARS = "%\r\n\t \u2028\u2029\x85\x0b\x0c\x1c\x1d\x1e\ufeff:*#~."


#: Multiplies every example count: STRONGROOM_PROPERTY_SCALE=20 for a long local hunt (CI: 1).
SCALE = float(os.environ.get("STRONGROOM_PROPERTY_SCALE", "1") or 1)
#: STRONGROOM_PROPERTY_HUNT=1 skips the explicit @example cases (known failures would stop the
#: run before any random example is tried) when hunting for new failures locally.
HUNT = os.environ.get("STRONGROOM_PROPERTY_HUNT", "") not in ("", "0")


def quick(max_examples: int, **kw) -> settings:
    """Settings for one property: few examples, reproducible, no deadline, no database."""
    base = dict(max_examples=max(1, int(max_examples * SCALE)), deadline=None, derandomize=True, database=None,
                print_blob=False, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                        HealthCheck.filter_too_much])
    if HUNT:
        base["phases"] = [Phase.generate, Phase.shrink]
    base.update(kw)
    return settings(**base)


def _component(chars: st.SearchStrategy) -> st.SearchStrategy:
    """One path component: not empty, no '/', no NUL, no backslash, not '.' or '..'."""
    return st.text(chars, min_size=1, max_size=12).filter(lambda s: s not in (".", "..") and "/" not in s
                                                          and "\x00" not in s and "\\" not in s)


#: Any Unicode component a manifest may name (CR, LF, '%', U+2028, BOM... included).
ANY_COMPONENT = _component(st.one_of(UNICODE, st.sampled_from(TRICKY_CHARS)))
#: A component that can be a real file name on Linux and reads sensibly in an error message.
DISK_COMPONENT = _component(st.sampled_from(NAME_CHARS)).filter(lambda s: not s.startswith("._"))


def payload_paths(component: st.SearchStrategy = ANY_COMPONENT, max_depth: int = 3) -> st.SearchStrategy:
    """'data/a/b/c' style canonical payload paths."""
    return st.lists(component, min_size=1, max_size=max_depth).map(lambda parts: "data/" + "/".join(parts))


def hex_digest(algorithm: str = "sha256") -> st.SearchStrategy:
    """A digest of the right length for `algorithm` (from random bytes, so it is lower-case hex)."""
    return st.binary(min_size=1, max_size=16).map(lambda b: hashlib.new(algorithm, b).hexdigest())


def no_dir_file_clash(paths: List[str]) -> bool:
    """True when no path is also a folder of another one (a tree that can exist on disk)."""
    folders = {"/".join(p.split("/")[:i]) for p in paths for i in range(1, p.count("/") + 1)}
    return not (folders & set(paths))


def payload_trees(min_files: int = 1, max_files: int = 4) -> st.SearchStrategy:
    """{payload path relative to data/: bytes}: a small tree with nested folders."""
    rel = st.lists(DISK_COMPONENT, min_size=1, max_size=3).map("/".join)
    return st.dictionaries(rel, st.binary(max_size=64), min_size=min_files, max_size=max_files).filter(
        lambda d: no_dir_file_clash(list(d)))


def manifest_entries(algorithm: str = "sha256", max_size: int = 8) -> st.SearchStrategy:
    """{payload path: digest} with distinct paths."""
    return st.dictionaries(payload_paths(), hex_digest(algorithm), min_size=0, max_size=max_size)


def tag_labels() -> st.SearchStrategy:
    """Labels RFC 8493 allows: non-empty, no ':', CR or LF, no surrounding whitespace."""
    return st.text(st.one_of(UNICODE, st.sampled_from("-_ .\t")), min_size=1, max_size=16).filter(
        lambda s: s == s.strip() and not any(c in s for c in ":\r\n"))


def tag_values() -> st.SearchStrategy:
    """Values with anything, line breaks (folded by the writer) and Unicode included."""
    return st.text(st.one_of(UNICODE, st.sampled_from(TRICKY_CHARS)), max_size=40)


def tag_items() -> st.SearchStrategy:
    return st.lists(st.tuples(tag_labels(), tag_values()), max_size=6)


def split_value(value: str) -> List[str]:
    import re

    return re.split(r"\r\n|\r|\n", value)


def read_back_value(value: str) -> str:
    """What a BagIt reader must return for a value `tag_line` wrote: line breaks become LF and
    the indentation of continuation lines is not part of the value (RFC 8493 2.2.2)."""
    first, *rest = split_value(value)
    return "\n".join([first] + [part.lstrip(" \t") for part in rest])


def line_endings(text: str, ending: str) -> str:
    return text.replace("\n", ending)


def manifest_text(entries: Dict[str, str], version: str = "1.0") -> Tuple[str, List[str]]:
    """(manifest text as Strongroom writes it, its lines) for {path: digest}."""
    from strongroom import bagit_spec as spec

    lines = [spec.manifest_line(d, p, version) for p, d in sorted(entries.items())]
    return "".join(lines), lines


BAG_ID_TEXT = "LIB/COLL/20260101T000000Z-1"


def build_bag(root, tree: Dict[str, bytes], algorithms=("sha256", "md5")):
    """A bag made by ingest.bag.finish_bag (the deposit's own writer) from {relpath: bytes};
    returns its folder, root/"bag"."""
    from datetime import datetime, timezone
    from pathlib import Path

    from ingest.bag import BagPlan, finish_bag
    from ingest.metadata import Provenance
    from strongroom.bag_id import BagId
    from ingest.stage import StagedFile

    root = Path(root)
    work = root / ".incomplete"
    staged = []
    for rel, data in sorted(tree.items()):
        p = work / "data" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        staged.append(StagedFile(rel, len(data), p.stat().st_mtime_ns,
                                 {a: hashlib.new(a, data).hexdigest() for a in algorithms}, None))
    plan = BagPlan(bag_id=BagId.parse(BAG_ID_TEXT), work_dir=work, files=staged, algorithms=list(algorithms),
                   part_count=1, external_id="00000000-0000-4000-8000-000000000000",
                   info={"Strongroom-Collection-Type": "self-built", "Strongroom-Policy": "self-built",
                         "Strongroom-Collection-Title": "善本 100% \"quoted\""})
    finish_bag(plan, Provenance("Library 图书馆", "fido-test", "sig-test", datetime(2026, 1, 1, tzinfo=timezone.utc)),
               root / "bag")
    return root / "bag"
