"""PREMIS 3 XML: each bag's `metadata/premis.xml` now, PREMIS reports later.

The document is built as plain dicts in xmltodict's layout and written by `premis_emit`, which
writes exactly what `xmltodict.unparse` would (tested against it) in half the time; the written
documents take each file object, nearly all of a bag's premis.xml, straight as text
(`file_text`, the same bytes as its dict: tested against both writers); escaping of
`&`, `<`, `>` and attribute quoting are xml.sax.saxutils' rules, in one place (premis_emit's
`escape_text` and `quote_attr`). Element order inside each dict follows
the `xs:sequence` of the PREMIS 3.0 schema (loc.gov premis-v3-0.xsd); tests validate the
output against it with lxml.

Large bags (100,000 files) are handled by handing the writer *generators* of per-object dicts:
`premis_xml` and `write_premis` never hold a dict for every file at once, and `write_premis`
streams straight into the file, so memory stays near one object's worth plus the output
buffer (`premis_xml` must of course return the whole text).

Controlled values use the Library of Congress preservation vocabularies
(id.loc.gov/vocabulary/preservation/...): eventType, agentType, eventRelatedAgentRole,
eventRelatedObjectRole, eventOutcome, cryptographicHashFunctions. A label found there gets
`authority`, `authorityURI` and `valueURI` attributes; any other label (e.g. "repair", which
the vocabulary does not have) is written as plain text, because a wrong URI is worse than none.

Text that XML 1.0 cannot carry (file names are untrusted and may hold anything a POSIX file
system allows) is handled in two ways, chosen by what the text is for:

* Names -- `originalName`, `contentLocationValue` and every `...IdentifierValue` -- must stay
  exact, so they are percent-encoded like RFC 8493 (BagIt 1.0) manifest paths: `%` -> `%25`,
  LF -> `%0A`, CR -> `%0D`, and additionally every character XML 1.0 forbids (C0 controls
  other than TAB/LF/CR, U+FFFE, U+FFFF) -> `%XX` of its UTF-8 bytes, and a byte that
  `os.fsdecode` could not decode (a lone surrogate U+DC80..U+DCFF) -> `%XX` of that byte.
  Everything else, Chinese included, is written as is. `decode_name` is the exact inverse,
  and the encoded value equals the path as written in the bag's manifest.
* Prose -- details, notes, agent/format names, titles -- is for people: CR and CRLF become
  LF (what any XML parser would report anyway) and forbidden characters become visible
  `\\xNN` (or `\\uNNNN`) escapes. Lossy by design, but never silently dropped.
"""

from __future__ import annotations

import io
import itertools
import os
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Dict, Iterable, Optional, Tuple, Union
from urllib.parse import unquote_to_bytes

from strongroom.durable import fsync_dir, unlink_quietly

from .premis_emit import Rendered, emit_document, escape_text, render_element

__all__ = [
    "PREMIS_NS", "XSI_NS", "PREMIS_XSD_URL", "PREMIS_VERSION",
    "EVENT_TYPES", "AGENT_TYPES", "AGENT_ROLES", "OBJECT_ROLES", "EVENT_OUTCOMES", "HASH_FUNCTIONS",
    "UNKNOWN_FORMAT_NAME", "DEFAULT_STORAGE_LOCATION_TYPE",
    "Agent", "FileObject", "IntellectualEntity", "Event",
    "premis_document", "premis_xml", "write_premis", "encode_name", "decode_name",
]

PREMIS_NS = "http://www.loc.gov/premis/v3"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
PREMIS_XSD_URL = "http://www.loc.gov/standards/premis/v3/premis-v3-0.xsd"
PREMIS_VERSION = "3.0"

_VOCAB = "http://id.loc.gov/vocabulary/preservation/"

# LoC eventType vocabulary (2018-09-24 revision): authoritative label -> code.
EVENT_TYPES: Dict[str, str] = {
    "accession": "acc", "appraisal": "app", "capture": "cap", "compiling": "cop",
    "compression": "com", "creation": "cre", "deaccession": "dea", "decompression": "dec",
    "decryption": "der", "deletion": "del", "digital signature generation": "dsg",
    "digital signature validation": "dig", "displaying": "dsp", "dissemination": "dis",
    "encryption": "enc", "execution": "exe", "exporting": "exp", "extraction": "ext",
    "filename change": "fil", "fixity check": "fix", "forensic feature analysis": "ffa",
    "format identification": "for", "imaging": "ima", "information package creation": "ipc",
    "information package merging": "ipm", "information package splitting": "ips",
    "ingestion": "ing", "ingestion end": "ine", "ingestion start": "ins", "interpreting": "int",
    "message digest calculation": "mes", "metadata extraction": "mee",
    "metadata modification": "mem", "migration": "mig", "modification": "mod",
    "normalization": "nor", "packing": "pac", "policy assignment": "poa", "printing": "prt",
    "quarantine": "qua", "recovery": "rec", "redaction": "red", "refreshment": "ref",
    "rendering": "ren", "replication": "rep", "transfer": "tra", "unpacking": "unp",
    "unquarantine": "unq", "validation": "val", "virus check": "vir",
}
AGENT_TYPES: Dict[str, str] = {"hardware": "har", "organization": "org", "person": "per", "software": "sof"}
AGENT_ROLES: Dict[str, str] = {
    "authorizer": "aut", "executing program": "exe", "implementer": "imp", "validator": "val",
}
OBJECT_ROLES: Dict[str, str] = {"outcome": "out", "source": "sou"}
# Our outcome words -> LoC eventOutcome code ("fail" is LoC's label for fai; "inconclusive" has none).
EVENT_OUTCOMES: Dict[str, Optional[str]] = {
    "success": "suc", "failure": "fai", "warning": "war", "inconclusive": None,
}
# Normalised algorithm name (lower case, no '-' or '_') -> (LoC label, LoC code).
HASH_FUNCTIONS: Dict[str, Tuple[str, str]] = {
    "md5": ("MD5", "md5"), "sha1": ("SHA-1", "sha1"), "sha256": ("SHA-256", "sha256"),
    "sha384": ("SHA-384", "sha384"), "sha512": ("SHA-512", "sha512"),
}

UNKNOWN_FORMAT_NAME = "unknown"          # PREMIS requires a <format>; this says we could not tell
DEFAULT_STORAGE_LOCATION_TYPE = "bag path"  # a path relative to the bag root, manifest-encoded


# ---------------------------------------------------------------------------------------------
# records

def _require(value: str, what: str) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"PREMIS {what} must be a non-empty string, got {value!r}")


def _check_links(links: Any, what: str) -> None:
    if not isinstance(links, tuple) or any(
            not isinstance(link, tuple) or len(link) != 3 or not all(isinstance(x, str) for x in link)
            or not link[0] or not link[1] for link in links):
        raise ValueError(f"PREMIS event {what} must be a tuple of (identifier_type, identifier_value, role) "
                         f"string tuples with non-empty type and value, got {links!r}")


@dataclass(frozen=True)
class Agent:
    """Who or what acted: software (with version), an organization, a person."""

    identifier_type: str
    identifier_value: str
    name: str
    type: str  # "software" | "organization" | "person" | "hardware"
    version: str = ""
    note: str = ""

    def __post_init__(self) -> None:
        _require(self.identifier_type, "agent identifier_type")
        _require(self.identifier_value, "agent identifier_value")
        if self.type not in AGENT_TYPES:
            raise ValueError(f"PREMIS agent {self.identifier_value!r}: type {self.type!r} is not one of "
                             f"{', '.join(sorted(AGENT_TYPES))}")


@dataclass(frozen=True)
class FileObject:
    """One payload file: identity, size, digests, format, where it sits in the bag."""

    identifier_type: str
    identifier_value: str
    original_name: str
    size: int
    fixity: Tuple[Tuple[str, str], ...]  # ((algorithm e.g. "sha256", hex digest), ...)
    format_puid: str = ""
    format_name: str = ""
    format_version: str = ""
    format_basis: str = ""  # how the format was found, e.g. "signature", "extension"
    storage_location: str = ""
    storage_location_type: str = DEFAULT_STORAGE_LOCATION_TYPE

    def __post_init__(self) -> None:
        _require(self.identifier_type, "file identifier_type")
        _require(self.identifier_value, "file identifier_value")
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 0:
            raise ValueError(f"PREMIS file {self.identifier_value!r}: size must be an int >= 0, got {self.size!r}")
        if not isinstance(self.fixity, tuple) or any(
                not isinstance(f, tuple) or len(f) != 2 or not all(isinstance(x, str) and x for x in f)
                for f in self.fixity):
            raise ValueError(f"PREMIS file {self.identifier_value!r}: fixity must be a tuple of "
                             f"(algorithm, digest) non-empty string pairs, got {self.fixity!r}")
        if self.storage_location:
            _require(self.storage_location_type, "file storage_location_type")


@dataclass(frozen=True)
class IntellectualEntity:
    """The deposit a bag holds (PREMIS xsi:type="intellectualEntity").

    PREMIS has no descriptive elements; `title` is written as a significantProperties pair
    (type "title"), the one free key/value slot an intellectualEntity has that needs no
    extension schema. `other_identifiers` carries e.g. the bag-info External-Identifier UUID.
    """

    identifier_type: str
    identifier_value: str
    title: str = ""
    original_name: str = ""
    other_identifiers: Tuple[Tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        _require(self.identifier_type, "entity identifier_type")
        _require(self.identifier_value, "entity identifier_value")
        if not isinstance(self.other_identifiers, tuple) or any(
                not isinstance(i, tuple) or len(i) != 2 or not all(isinstance(x, str) and x for x in i)
                for i in self.other_identifiers):
            raise ValueError(f"PREMIS entity {self.identifier_value!r}: other_identifiers must be a tuple of "
                             f"(type, value) non-empty string pairs, got {self.other_identifiers!r}")


@dataclass(frozen=True)
class Event:
    """Something done to objects by agents, with its outcome."""

    identifier_type: str
    identifier_value: str
    type: str  # LoC eventType label, e.g. "message digest calculation"; others written as plain text
    datetime: str  # ISO 8601 with a UTC offset, e.g. "2025-01-31T12:00:00Z"
    detail: str
    outcome: str  # "success" | "failure" | "warning" | "inconclusive"
    outcome_detail: str = ""
    agents: Tuple[Tuple[str, str, str], ...] = ()  # (identifier_type, identifier_value, role)
    objects: Tuple[Tuple[str, str, str], ...] = ()  # (identifier_type, identifier_value, role)

    def __post_init__(self) -> None:
        _require(self.identifier_type, "event identifier_type")
        _require(self.identifier_value, "event identifier_value")
        _require(self.type, "event type")
        if self.outcome not in EVENT_OUTCOMES:
            raise ValueError(f"PREMIS event {self.identifier_value!r}: outcome {self.outcome!r} is not one of "
                             f"{', '.join(EVENT_OUTCOMES)}")
        _check_utc(self.datetime, self.identifier_value)
        _check_links(self.agents, "agents")
        _check_links(self.objects, "objects")


def _check_utc(value: str, event_id: str) -> None:
    """Event times are evidence: refuse anything that is not an unambiguous UTC instant."""
    problem = None
    if not isinstance(value, str) or "T" not in value:
        problem = "is not an ISO 8601 date-time"
    else:
        text = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            problem = "is not an ISO 8601 date-time"
        else:
            if parsed.utcoffset() != timedelta(0):
                problem = "is not in UTC (end it with Z or +00:00)"
    if problem:
        raise ValueError(f"PREMIS event {event_id!r}: datetime {value!r} {problem}")


PremisObject = Union[FileObject, IntellectualEntity]


# ---------------------------------------------------------------------------------------------
# text that XML 1.0 cannot hold

# XML 1.0 Char excludes C0 controls but TAB/LF/CR, surrogates, U+FFFE and U+FFFF.
_NOT_XML = "\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff"
_NAME_SPECIAL = re.compile(f"[%\n\r{_NOT_XML}]")
_PROSE_SPECIAL = re.compile(f"[\r{_NOT_XML}]")
_NOT_XML_RE = re.compile(f"[{_NOT_XML}]")


def _percent(match: "re.Match[str]") -> str:
    char = match.group()
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # os.fsdecode's stand-in for an undecodable byte
        return f"%{code - 0xDC00:02X}"
    return "".join(f"%{b:02X}" for b in char.encode("utf-8", "surrogatepass"))


def encode_name(name: str) -> str:
    """A file name or identifier as written in PREMIS (see module doc); exact inverse: decode_name."""
    return _NAME_SPECIAL.sub(_percent, name) if _NAME_SPECIAL.search(name) else name


def decode_name(text: str) -> str:
    """The original name back from `encode_name` (undecodable bytes come back surrogate-escaped)."""
    if "%" not in text:
        return text
    return unquote_to_bytes(text).decode("utf-8", "surrogateescape")


def _visible(match: "re.Match[str]") -> str:
    code = ord(match.group())
    if 0xDC80 <= code <= 0xDCFF:
        return f"\\x{code - 0xDC00:02X}"
    return f"\\x{code:02X}" if code < 0x20 else f"\\u{code:04X}"


def _prose(text: str) -> str:
    if not _PROSE_SPECIAL.search(text):
        return text
    return _NOT_XML_RE.sub(_visible, text.replace("\r\n", "\n").replace("\r", "\n"))


# ---------------------------------------------------------------------------------------------
# dicts, in schema order

def _term(text: str, vocabulary: str, code: Optional[str]) -> Union[str, Dict[str, str]]:
    """A stringPlusAuthority value, with LoC authority attributes when the term is in it."""
    if code is None:
        return _prose(text)
    return {
        "@authority": vocabulary,
        "@authorityURI": _VOCAB + vocabulary,
        "@valueURI": f"{_VOCAB}{vocabulary}/{code}",
        "#text": _prose(text),
    }


def _fixity(algorithm: str, digest: str) -> Dict[str, Any]:
    known = HASH_FUNCTIONS.get(algorithm.lower().replace("-", "").replace("_", ""))
    name = _term(known[0], "cryptographicHashFunctions", known[1]) if known else _prose(algorithm)
    return {"messageDigestAlgorithm": name, "messageDigest": _prose(digest)}


def _format(obj: FileObject) -> Dict[str, Any]:
    fmt: Dict[str, Any] = {}
    if obj.format_name or not obj.format_puid:
        designation: Dict[str, str] = {"formatName": _prose(obj.format_name or UNKNOWN_FORMAT_NAME)}
        if obj.format_version:
            designation["formatVersion"] = _prose(obj.format_version)
        fmt["formatDesignation"] = designation
    if obj.format_puid:
        fmt["formatRegistry"] = {"formatRegistryName": "PRONOM", "formatRegistryKey": _prose(obj.format_puid)}
    if obj.format_basis:
        fmt["formatNote"] = _prose(f"identification basis: {obj.format_basis}")
    return fmt


def _object_identifier(id_type: str, id_value: str) -> Dict[str, str]:
    return {"objectIdentifierType": _prose(id_type), "objectIdentifierValue": encode_name(id_value)}


def _file(obj: FileObject) -> Dict[str, Any]:
    node: Dict[str, Any] = {
        "@xsi:type": "file",
        "objectIdentifier": _object_identifier(obj.identifier_type, obj.identifier_value),
        "objectCharacteristics": {
            "compositionLevel": "0",
            "fixity": [_fixity(a, d) for a, d in obj.fixity],
            "size": str(obj.size),
            "format": _format(obj),
        },
    }
    if obj.original_name:
        node["originalName"] = encode_name(obj.original_name)
    if obj.storage_location:
        node["storage"] = {"contentLocation": {
            "contentLocationType": _prose(obj.storage_location_type),
            "contentLocationValue": encode_name(obj.storage_location),
        }}
    return node


def _leaf(pad: str, tag: str, text: str) -> str:
    return f"{pad}<{tag}>{escape_text(text)}</{tag}>\n"


_ALGORITHM_LINES: Dict[str, str] = {}


def _algorithm_line(algorithm: str) -> str:
    """<messageDigestAlgorithm> of one algorithm, as written inside <fixity> (a bag has two or three)."""
    line = _ALGORITHM_LINES.get(algorithm)
    if line is None:
        line = render_element("messageDigestAlgorithm", _fixity(algorithm, "")["messageDigestAlgorithm"], 4)
        if len(_ALGORITHM_LINES) < 64:
            _ALGORITHM_LINES[algorithm] = line
    return line


def file_text(obj: FileObject) -> Rendered:
    """`_file(obj)` as premis_emit writes it, without building the dict: a bag's file objects are
    nearly all of its premis.xml (31.5 MB for 20,000 files), and the dicts cost more than the
    writing. Same branches as `_file` and `_format`, in the same order."""
    parts = ['  <object xsi:type="file">\n    <objectIdentifier>\n',
             _leaf("      ", "objectIdentifierType", _prose(obj.identifier_type)),
             _leaf("      ", "objectIdentifierValue", encode_name(obj.identifier_value)),
             "    </objectIdentifier>\n    <objectCharacteristics>\n      <compositionLevel>0</compositionLevel>\n"]
    for algorithm, digest in obj.fixity:
        parts += ["      <fixity>\n", _algorithm_line(algorithm),
                  _leaf("        ", "messageDigest", _prose(digest)), "      </fixity>\n"]
    parts.append(f"      <size>{obj.size}</size>\n")
    fmt = []
    if obj.format_name or not obj.format_puid:
        fmt += ["        <formatDesignation>\n",
                _leaf("          ", "formatName", _prose(obj.format_name or UNKNOWN_FORMAT_NAME))]
        if obj.format_version:
            fmt.append(_leaf("          ", "formatVersion", _prose(obj.format_version)))
        fmt.append("        </formatDesignation>\n")
    if obj.format_puid:
        fmt += ["        <formatRegistry>\n          <formatRegistryName>PRONOM</formatRegistryName>\n",
                _leaf("          ", "formatRegistryKey", _prose(obj.format_puid)), "        </formatRegistry>\n"]
    if obj.format_basis:
        fmt.append(_leaf("        ", "formatNote", _prose(f"identification basis: {obj.format_basis}")))
    parts += ["      <format>\n", *fmt, "      </format>\n"] if fmt else ["      <format></format>\n"]
    parts.append("    </objectCharacteristics>\n")
    if obj.original_name:
        parts.append(_leaf("    ", "originalName", encode_name(obj.original_name)))
    if obj.storage_location:
        parts += ["    <storage>\n      <contentLocation>\n",
                  _leaf("        ", "contentLocationType", _prose(obj.storage_location_type)),
                  _leaf("        ", "contentLocationValue", encode_name(obj.storage_location)),
                  "      </contentLocation>\n    </storage>\n"]
    parts.append("  </object>\n")
    return Rendered("".join(parts))


def _entity(obj: IntellectualEntity) -> Dict[str, Any]:
    node: Dict[str, Any] = {
        "@xsi:type": "intellectualEntity",
        "objectIdentifier": [_object_identifier(obj.identifier_type, obj.identifier_value)]
        + [_object_identifier(t, v) for t, v in obj.other_identifiers],
    }
    if obj.title:
        node["significantProperties"] = {"significantPropertiesType": "title",
                                         "significantPropertiesValue": _prose(obj.title)}
    if obj.original_name:
        node["originalName"] = encode_name(obj.original_name)
    return node


def _object(obj: PremisObject) -> Dict[str, Any]:
    if isinstance(obj, FileObject):
        return _file(obj)
    if isinstance(obj, IntellectualEntity):
        return _entity(obj)
    raise TypeError(f"PREMIS objects must be FileObject or IntellectualEntity, got {type(obj).__name__}")


def _streamed_object(obj: PremisObject) -> Any:
    """What the written documents carry: file objects already rendered (`file_text`)."""
    return file_text(obj) if type(obj) is FileObject else _object(obj)


def _link(prefix: str, link: Tuple[str, str, str], roles: Dict[str, str], vocabulary: str) -> Dict[str, Any]:
    id_type, id_value, role = link
    node: Dict[str, Any] = {f"{prefix}IdentifierType": _prose(id_type),
                            f"{prefix}IdentifierValue": encode_name(id_value)}
    if role:
        node[f"{prefix}Role"] = _term(role, vocabulary, roles.get(role))
    return node


def _event(ev: Event) -> Dict[str, Any]:
    if not isinstance(ev, Event):
        raise TypeError(f"PREMIS events must be Event, got {type(ev).__name__}")
    outcome: Dict[str, Any] = {"eventOutcome": _term(ev.outcome, "eventOutcome", EVENT_OUTCOMES[ev.outcome])}
    if ev.outcome_detail:
        outcome["eventOutcomeDetail"] = {"eventOutcomeDetailNote": _prose(ev.outcome_detail)}
    node: Dict[str, Any] = {
        "eventIdentifier": {"eventIdentifierType": _prose(ev.identifier_type),
                            "eventIdentifierValue": encode_name(ev.identifier_value)},
        "eventType": _term(ev.type, "eventType", EVENT_TYPES.get(ev.type)),
        "eventDateTime": ev.datetime,
    }
    if ev.detail:
        node["eventDetailInformation"] = {"eventDetail": _prose(ev.detail)}
    node["eventOutcomeInformation"] = outcome
    node["linkingAgentIdentifier"] = [_link("linkingAgent", a, AGENT_ROLES, "eventRelatedAgentRole")
                                      for a in ev.agents]
    node["linkingObjectIdentifier"] = [_link("linkingObject", o, OBJECT_ROLES, "eventRelatedObjectRole")
                                       for o in ev.objects]
    return node


def _agent(agent: Agent) -> Dict[str, Any]:
    if not isinstance(agent, Agent):
        raise TypeError(f"PREMIS agents must be Agent, got {type(agent).__name__}")
    node: Dict[str, Any] = {"agentIdentifier": {"agentIdentifierType": _prose(agent.identifier_type),
                                                "agentIdentifierValue": encode_name(agent.identifier_value)}}
    if agent.name:
        node["agentName"] = _prose(agent.name)
    node["agentType"] = _term(agent.type, "agentType", AGENT_TYPES[agent.type])
    if agent.version:
        node["agentVersion"] = _prose(agent.version)
    if agent.note:
        node["agentNote"] = _prose(agent.note)
    return node


def _document(objects: Iterable[PremisObject], events: Iterable[Event], agents: Iterable[Agent],
              *, lazy: bool) -> Dict[str, Any]:
    it = iter(objects)
    first = next(it, None)
    if first is None:
        raise ValueError("a PREMIS document needs at least one object (premis-v3-0.xsd: object minOccurs=1)")
    objs = itertools.chain((first,), it)
    root: Dict[str, Any] = {
        "@xmlns": {"": PREMIS_NS, "xsi": XSI_NS},
        "@xsi:schemaLocation": f"{PREMIS_NS} {PREMIS_XSD_URL}",
        "@version": PREMIS_VERSION,
    }
    if lazy:
        root["object"] = map(_streamed_object, objs)
        root["event"] = map(_event, events)
        root["agent"] = map(_agent, agents)
    else:
        root["object"] = [_object(o) for o in objs]
        root["event"] = [_event(e) for e in events]
        root["agent"] = [_agent(a) for a in agents]
    return {"premis": root}


# ---------------------------------------------------------------------------------------------
# public entry points

def premis_document(objects: Iterable[PremisObject], events: Iterable[Event] = (),
                    agents: Iterable[Agent] = ()) -> Dict[str, Any]:
    """The xmltodict structure (plain dicts and lists), objects/events/agents in the order given."""
    return _document(objects, events, agents, lazy=False)


def premis_xml(objects: Iterable[PremisObject], events: Iterable[Event] = (),
               agents: Iterable[Agent] = ()) -> str:
    """Pretty-printed PREMIS 3 XML text (UTF-8 declared); same input, same bytes."""
    # Encoded into a BytesIO rather than a StringIO: for 100,000 files with CJK names the peak is
    # the UTF-8 bytes plus the final str (~555 MiB) instead of two copies of the str (~740 MiB).
    raw = io.BytesIO()
    text = io.TextIOWrapper(raw, encoding="utf-8", newline="\n")
    emit_document(_document(objects, events, agents, lazy=True), text.write)
    text.write("\n")
    text.flush()
    text.detach()
    data = raw.getbuffer()
    try:
        return str(data, "utf-8")
    finally:
        data.release()


def write_premis(path: Union[str, os.PathLike], objects: Iterable[PremisObject],
                 events: Iterable[Event] = (), agents: Iterable[Agent] = ()) -> Path:
    """Write premis.xml atomically: a temp file in the same folder, fsync, then os.replace.

    A crash leaves either the old file or the new one, never half of one; the document is
    streamed into the temp file so a 100,000-file bag is never held in memory as text.
    """
    target = Path(path)
    folder = target.parent
    document = _document(objects, events, agents, lazy=True)  # refuse an empty document before touching disk
    tmp = folder / f".{target.name}.{secrets.token_hex(8)}.tmp"
    # O_EXCL: never follow or reuse something already there; mode 0o666 lets the umask decide.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
    try:
        with io.open(fd, "w", encoding="utf-8", newline="\n", buffering=1 << 20) as fh:
            emit_document(document, fh.write)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        unlink_quietly(tmp)
        raise
    fsync_dir(folder)
    return target
