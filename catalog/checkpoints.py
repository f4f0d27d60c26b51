"""Ledger checkpoints: the object each storage target keeps of the catalog's ledger (issue 17).

Why: the ledger's hash chain shows an edit, but not a catalog rolled back, truncated, or replaced
by a chain whose every hash was recomputed. A checkpoint written into every storage target after
each command that moved the ledger head (never overwritten; Object-Locked where the target
locks) is a witness the catalog cannot rewrite: `strongroom ledger verify --against-storage`
compares the two (catalog.anchors). A checkpoint carries the segments themselves (exact bytes,
and the canonical JSON their content digest hashes), so `catalog rebuild` restores the events
and a script with only the standard library re-checks the chain.

The layout is a contract (/work/coord/api-checkpoints.md, docs): record key
`ledger/checkpoints/<last seq, 12 digits>-<head sha256>.json` under a target's `.strongroom/`;
UTF-8 JSON (sorted keys, compact) with format, target, written_at, software, head {seq, sha256},
first_seq, last_seq, events, previous {key, sha256, head_sha256, last_seq} or null, and segments
[{seq, name, file_sha256, prev_sha256, content_sha256, events, canonical_events,
parquet_base64}]. This module builds, parses and checks checkpoints; it touches no storage
except through the adapter's record API.
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from catalog.ledger import (GENESIS, KEY_CONTENT, KEY_COUNT, KEY_PREV, KEY_SEQ, canonical_events,
                            read_segment_bytes, segment_name, sha256_hex)
from strongroom import __version__

PREFIX = "ledger/checkpoints/"
FORMAT = "strongroom-ledger-checkpoint/1"
KEY_RE = re.compile(r"^ledger/checkpoints/([0-9]{12})-([0-9a-f]{64})\.json\Z")
_HEX64 = re.compile(r"^[0-9a-f]{64}\Z")


class BadCheckpoint(ValueError):
    """A checkpoint (or a catalog segment to put in one) is malformed or inconsistent."""


def checkpoint_key(seq: int, head_sha256: str) -> str:
    return f"{PREFIX}{seq:012d}-{head_sha256}.json"


def encode(doc: Mapping[str, Any]) -> bytes:
    """The exact bytes of a checkpoint: what its sha256 (in the next one's `previous`) is of."""
    return (json.dumps(doc, ensure_ascii=False, sort_keys=True, separators=(",", ":")) + "\n").encode("utf-8")


@dataclass(frozen=True)
class Entry:
    """One ledger segment as a checkpoint holds it."""

    seq: int
    file_sha256: str
    prev_sha256: str
    content_sha256: str
    events: int
    canonical: str = field(repr=False)
    data: bytes = field(repr=False)

    def to_json(self) -> Dict[str, Any]:
        return {"seq": self.seq, "name": segment_name(self.seq), "file_sha256": self.file_sha256,
                "prev_sha256": self.prev_sha256, "content_sha256": self.content_sha256, "events": self.events,
                "canonical_events": self.canonical, "parquet_base64": base64.b64encode(self.data).decode("ascii")}


def entry_of_segment(seq: int, data: bytes) -> Entry:
    """The entry for catalog segment `seq` from its bytes; BadCheckpoint if the segment does not
    agree with itself (its recorded seq, count or content digest): damage is never anchored."""
    try:
        table = read_segment_bytes(data)
    except Exception as exc:  # any decoding failure is damage to report, not to crash on
        raise BadCheckpoint(f"{segment_name(seq)}: not a readable Parquet segment ({exc})") from None
    meta = table.schema.metadata or {}
    text = canonical_events(table)
    content = hashlib.sha256(text.encode("utf-8")).hexdigest()
    recorded = {k: meta.get(k, b"").decode(errors="replace") for k in (KEY_SEQ, KEY_PREV, KEY_CONTENT, KEY_COUNT)}
    if recorded[KEY_SEQ] != str(seq) or recorded[KEY_CONTENT] != content or recorded[KEY_COUNT] != str(table.num_rows):
        raise BadCheckpoint(f"{segment_name(seq)}: its events do not match what it records (sequence number, "
                            f"count or content digest): `strongroom ledger verify` says more")
    if not _HEX64.match(recorded[KEY_PREV]):
        raise BadCheckpoint(f"{segment_name(seq)}: records no valid previous hash")
    return Entry(seq, sha256_hex(data), recorded[KEY_PREV], content, table.num_rows, text, data)


@dataclass(frozen=True)
class Checkpoint:
    """A parsed checkpoint; `sha256` is of its exact bytes (what the next one chains onto)."""

    key: str
    sha256: str
    target: str
    written_at: str
    software: str
    first_seq: int
    last_seq: int
    head_sha256: str
    events: int
    previous: Optional[Dict[str, Any]]
    entries: Tuple[Entry, ...] = field(repr=False)


def build(target: str, entries: Sequence[Entry], previous: Optional[Checkpoint],
          now: Optional[_dt.datetime] = None) -> Tuple[str, bytes]:
    """(record key, bytes) of the checkpoint covering `entries`, chained onto `previous`."""
    if not entries:
        raise ValueError("a checkpoint covers at least one segment")
    when = (now or _dt.datetime.now(_dt.timezone.utc)).astimezone(_dt.timezone.utc)
    last = entries[-1]
    doc = {
        "format": FORMAT, "target": target, "written_at": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "software": f"strongroom {__version__}", "head": {"seq": last.seq, "sha256": last.file_sha256},
        "first_seq": entries[0].seq, "last_seq": last.seq, "events": sum(e.events for e in entries),
        "previous": None if previous is None else {"key": previous.key, "sha256": previous.sha256,
                                                   "head_sha256": previous.head_sha256,
                                                   "last_seq": previous.last_seq},
        "segments": [e.to_json() for e in entries],
    }
    return checkpoint_key(last.seq, last.file_sha256), encode(doc)


def _int(doc: Mapping[str, Any], name: str) -> int:
    value = doc.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise BadCheckpoint(f"field {name!r} is not a whole number >= 0")
    return value


def _hex(doc: Mapping[str, Any], name: str) -> str:
    value = doc.get(name)
    if not isinstance(value, str) or not _HEX64.match(value):
        raise BadCheckpoint(f"field {name!r} is not a sha256 (64 lower-case hex digits)")
    return value


def parse(key: str, data: bytes, *, deep: bool = True, checked: Optional[Dict[str, Entry]] = None) -> Checkpoint:
    """A checkpoint from its record key and bytes; BadCheckpoint naming what is wrong.

    Always: the key's form, the JSON structure, the head named by the key. `deep`: every segment
    against itself too (its bytes' sha256, its canonical events' digest and count, the
    segment's own Parquet metadata) and the chain of prev hashes inside the checkpoint.
    `checked`: segments already decoded, by file sha256 (one file is decoded once, however
    many targets anchored it)."""
    m = KEY_RE.match(key)
    if not m:
        raise BadCheckpoint("not a checkpoint key (ledger/checkpoints/<12 digits>-<sha256>.json)")
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadCheckpoint(f"not UTF-8 JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise BadCheckpoint(f"not a {FORMAT} document")
    head = doc.get("head")
    if not isinstance(head, dict):
        raise BadCheckpoint("field 'head' is missing")
    first, last, events = _int(doc, "first_seq"), _int(doc, "last_seq"), _int(doc, "events")
    head_seq, head_sha = _int(head, "seq"), _hex(head, "sha256")
    if (head_seq, head_sha) != (int(m.group(1)), m.group(2)) or last != head_seq or first > last:
        raise BadCheckpoint("its head, last_seq and first_seq do not agree with its name")
    previous = doc.get("previous")
    if previous is not None:
        if not isinstance(previous, dict) or not isinstance(previous.get("key"), str):
            raise BadCheckpoint("field 'previous' is neither null nor {key, sha256, head_sha256, last_seq}")
        _hex(previous, "sha256")
        _hex(previous, "head_sha256")
        if _int(previous, "last_seq") + 1 != first:
            raise BadCheckpoint(f"previous.last_seq is {previous['last_seq']}, first_seq {first}: segments skipped")
    elif first != 0:
        raise BadCheckpoint(f"has no previous checkpoint but starts at segment {first}, not 0")
    raw = doc.get("segments")
    if not isinstance(raw, list) or len(raw) != last - first + 1:
        raise BadCheckpoint(f"field 'segments' does not hold segments {first}..{last}")
    entries = tuple(_entry(item, first + i, deep, checked) for i, item in enumerate(raw))
    if entries[-1].file_sha256 != head_sha:
        raise BadCheckpoint(f"its head sha256 is not that of {segment_name(last)} it holds")
    if sum(e.events for e in entries) != events:
        raise BadCheckpoint("field 'events' is not the sum of its segments' events")
    chain_from = GENESIS if previous is None else previous["head_sha256"]
    for e in entries:
        if e.prev_sha256 != chain_from:
            raise BadCheckpoint(f"{segment_name(e.seq)}: chains onto {e.prev_sha256[:16]}..., not onto the "
                                f"previous segment {chain_from[:16]}...")
        chain_from = e.file_sha256
    return Checkpoint(key, hashlib.sha256(data).hexdigest(), str(doc.get("target", "")),
                      str(doc.get("written_at", "")), str(doc.get("software", "")), first, last, head_sha, events,
                      previous, entries)


def _entry(item: Any, seq: int, deep: bool, checked: Optional[Dict[str, Entry]]) -> Entry:
    if not isinstance(item, dict) or item.get("seq") != seq or item.get("name") != segment_name(seq):
        raise BadCheckpoint(f"segment entry {seq} is missing or out of order")
    text, b64 = item.get("canonical_events"), item.get("parquet_base64")
    if not isinstance(text, str) or not isinstance(b64, str):
        raise BadCheckpoint(f"{segment_name(seq)}: canonical_events or parquet_base64 is missing")
    try:
        data = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        raise BadCheckpoint(f"{segment_name(seq)}: parquet_base64 is not base64") from None
    entry = Entry(seq, _hex(item, "file_sha256"), _hex(item, "prev_sha256"), _hex(item, "content_sha256"),
                  _int(item, "events"), text, data)
    if not deep:
        return entry
    if sha256_hex(data) != entry.file_sha256:
        raise BadCheckpoint(f"{segment_name(seq)}: its bytes do not hash to the file_sha256 recorded")
    if hashlib.sha256(text.encode("utf-8")).hexdigest() != entry.content_sha256:
        raise BadCheckpoint(f"{segment_name(seq)}: its canonical events do not hash to its content_sha256")
    actual = None if checked is None else checked.get(entry.file_sha256)
    if actual is None or actual.seq != seq:
        actual = entry_of_segment(seq, data)
        if checked is not None:
            checked[entry.file_sha256] = actual
    if (actual.prev_sha256, actual.content_sha256, actual.events) != \
            (entry.prev_sha256, entry.content_sha256, entry.events):
        raise BadCheckpoint(f"{segment_name(seq)}: the segment's own metadata does not match its entry")
    return entry


@dataclass
class TargetChain:
    """Every checkpoint found on one target, oldest first, and what is wrong with them."""

    target: str
    checkpoints: List[Checkpoint] = field(default_factory=list)
    problems: List[str] = field(default_factory=list)

    @property
    def entries(self) -> Dict[int, Entry]:
        """Segments by seq, over every checkpoint that parsed."""
        return {e.seq: e for cp in self.checkpoints for e in cp.entries}

    @property
    def head(self) -> Tuple[int, str]:
        if not self.checkpoints:
            return -1, GENESIS
        return self.checkpoints[-1].last_seq, self.checkpoints[-1].head_sha256


def checkpoint_keys(adapter) -> Tuple[List[str], List[str]]:
    """(checkpoint keys sorted by seq, problems for other keys found under the prefix)."""
    keys, problems = [], []
    for key in adapter.list_records(PREFIX):
        if KEY_RE.match(key):
            keys.append(key)
        else:
            problems.append(f"{adapter.name}: {adapter.record_location(key)}: not a checkpoint name; ignored")
    return sorted(keys), problems


def read_chain(adapter, checked: Optional[Dict[str, Entry]] = None) -> TargetChain:
    """Read and check every checkpoint on `adapter`: each on its own (parse, deep) and as a chain:
    its `previous` is a checkpoint found before it (key and sha256 of its bytes), and where two
    checkpoints cover one segment (two commands anchoring at once) they agree on it."""
    chain = TargetChain(adapter.name)
    keys, chain.problems = checkpoint_keys(adapter)
    seen: Dict[str, Checkpoint] = {}
    covered: Dict[int, Tuple[str, str]] = {}   # seq -> (file sha256, checkpoint key)
    for key in keys:
        where = f"{adapter.name}: {adapter.record_location(key)}"
        try:
            cp = parse(key, adapter.read_record(key), checked=checked)
        except BadCheckpoint as exc:
            chain.problems.append(f"{where}: damaged checkpoint: {exc}")
            continue
        if cp.previous is not None:
            before = seen.get(cp.previous["key"])
            if before is None or before.sha256 != cp.previous["sha256"]:
                chain.problems.append(f"{where}: its previous checkpoint {cp.previous['key']} is "
                                      f"{'not there' if before is None else 'not the one it names (altered)'}: "
                                      f"a checkpoint was removed, altered or forged")
        for e in cp.entries:
            other = covered.get(e.seq)
            if other is not None and other[0] != e.file_sha256:
                chain.problems.append(f"{where}: {segment_name(e.seq)} hashes {e.file_sha256[:16]}... here but "
                                      f"{other[0][:16]}... in {other[1]}: the checkpoints disagree")
            covered.setdefault(e.seq, (e.file_sha256, key))
        seen[key] = cp
        chain.checkpoints.append(cp)
    return chain


__all__ = ["PREFIX", "FORMAT", "KEY_RE", "BadCheckpoint", "Entry", "Checkpoint", "TargetChain", "checkpoint_key",
           "encode", "entry_of_segment", "build", "parse", "checkpoint_keys", "read_chain"]
