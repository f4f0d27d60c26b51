"""ingest.premis_emit writes byte for byte what xmltodict.unparse wrote before it (issue 11).

The old writer is the reference: every generated document goes through both and the texts must
be identical, for PREMIS records with hostile text (markup, quotes, controls, CJK, undecodable
bytes) and for arbitrary dicts of xmltodict's layout (attributes, text beside children, empty
lists, None, iterables).
"""

from __future__ import annotations

import io

import xmltodict
from hypothesis import given, strategies as st

from ingest import premis
from ingest.premis import Agent, Event, FileObject, IntellectualEntity
from ingest.premis_emit import emit_document
from tests.strategies import quick

_UNPARSE = {"pretty": True, "indent": "  ", "newl": "\n", "short_empty_elements": False}
TEXT = st.lists(st.characters(blacklist_categories=("Cs",)) | st.sampled_from(
    list("<>&\"'\r\n\t%\x00\x1f\ufffe") + ["\udc80", "\udcff", "图书馆", "]]>"]), max_size=12).map("".join)
WORD = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7e, blacklist_characters="<>&"), min_size=1,
               max_size=8)
WHEN = st.sampled_from(["2026-01-01T00:00:00Z", "2025-12-31T23:59:59.123456+00:00"])


def reference(document: dict) -> str:
    out = io.StringIO()
    xmltodict.unparse(document, output=out, encoding="utf-8", **_UNPARSE)
    return out.getvalue()


def emitted(document: dict) -> str:
    out = io.StringIO()
    emit_document(document, out.write)
    return out.getvalue()


@st.composite
def file_objects(draw):
    return FileObject(
        identifier_type=draw(WORD), identifier_value=draw(TEXT.filter(bool)), original_name=draw(TEXT),
        size=draw(st.integers(0, 2**40)),
        fixity=tuple(draw(st.lists(st.tuples(st.sampled_from(["sha256", "md5", "SHA-1", "x-odd"]), WORD),
                                   max_size=3))),
        format_puid=draw(st.sampled_from(["", "fmt/43", "x-fmt/<&>"])), format_name=draw(TEXT),
        format_version=draw(TEXT), format_basis=draw(TEXT), storage_location=draw(TEXT))


@st.composite
def entities(draw):
    return IntellectualEntity(draw(WORD), draw(TEXT.filter(bool)), title=draw(TEXT), original_name=draw(TEXT),
                              other_identifiers=tuple(draw(st.lists(st.tuples(WORD, WORD), max_size=2))))


LINK = st.tuples(WORD, TEXT.filter(bool), st.sampled_from(["", "source", "outcome", "implementer", "odd role"]))


@st.composite
def events(draw):
    return Event(draw(WORD), draw(TEXT.filter(bool)), draw(st.sampled_from(["ingestion", "repair", "fixity check"])),
                 draw(WHEN), draw(TEXT), draw(st.sampled_from(list(premis.EVENT_OUTCOMES))), draw(TEXT),
                 agents=tuple(draw(st.lists(LINK, max_size=2))), objects=tuple(draw(st.lists(LINK, max_size=2))))


@st.composite
def agents(draw):
    return Agent(draw(WORD), draw(TEXT.filter(bool)), draw(TEXT), draw(st.sampled_from(list(premis.AGENT_TYPES))),
                 version=draw(TEXT), note=draw(TEXT))


@quick(40)
@given(st.lists(file_objects() | entities(), min_size=1, max_size=5), st.lists(events(), max_size=3),
       st.lists(agents(), max_size=3))
def test_premis_documents_are_byte_identical_to_xmltodict(objects, evs, ags):
    expected = reference(premis.premis_document(objects, evs, ags)) + "\n"
    assert premis.premis_xml(objects, evs, ags) == expected


@quick(200)
@given(file_objects())
def test_file_objects_rendered_directly_equal_their_dicts_as_written(obj):
    """premis.file_text writes a file object without building its dict (issue 11): the same
    bytes as the dict through xmltodict, and as the dict through premis_emit."""
    direct = emitted({"premis": {"object": [premis.file_text(obj)]}})
    assert direct == reference({"premis": {"object": [premis._file(obj)]}})
    assert direct == emitted({"premis": {"object": [premis._file(obj)]}})


def test_write_premis_writes_the_same_bytes(tmp_path):
    objects = [IntellectualEntity("strongroom-bag", "L/c/1"),
               FileObject("strongroom-path", "L/c/1/data/a&b<\"'>.txt", "a&b<\"'>.txt", 3, (("sha256", "ab"),))]
    path = premis.write_premis(tmp_path / "premis.xml", objects)
    assert path.read_bytes() == (reference(premis.premis_document(objects)) + "\n").encode("utf-8")


NAME = st.sampled_from(["a", "b", "c:d", "object"])
ATTR_VALUE = st.text(st.sampled_from(list("ab\"'<>&\n\r\t 图")), max_size=6)


def _value(children):
    attrs = st.dictionaries(st.sampled_from(["@x", "@y:z", "#text"]), ATTR_VALUE | st.none(), max_size=3)
    elements = st.dictionaries(NAME, st.one_of(children, st.lists(children, max_size=3)), max_size=3)
    return st.tuples(attrs, elements).map(lambda pair: {**pair[0], **pair[1]})


VALUES = st.recursive(ATTR_VALUE | st.none(), _value, max_leaves=12)


@quick(150)
@given(st.dictionaries(NAME, VALUES, min_size=1, max_size=1),
       st.dictionaries(st.sampled_from(["", "p"]), ATTR_VALUE | st.none(), max_size=2))
def test_any_dict_of_xmltodict_layout_is_written_alike(document, xmlns):
    (key, value), = document.items()
    if isinstance(value, dict) and all(not k.startswith("@") or k == "@x" for k in value):
        document = {key: {"@xmlns": xmlns, **value}}
    doc_ok = True
    try:
        expected = reference(document)
    except (ValueError, TypeError, AttributeError):
        doc_ok = False  # e.g. several roots: xmltodict refuses, nothing to compare
    if doc_ok:
        assert emitted(document) == expected


def test_big_documents_are_written_in_pieces():
    """Top-level children are handed to write() as they are made, not held to the end."""
    pieces = []
    doc = {"r": {"o": [{"v": "x" * 1000} for _ in range(500)]}}
    emit_document(doc, pieces.append)
    assert len(pieces) > 3 and "".join(pieces) == reference(doc)


def test_attribute_values_and_leaves_written_alike_past_the_quote_cache():
    """Attribute values are quoted once and remembered (up to a bound); text leaves are written
    inline: the same bytes either way, for values past the bound and for every escape."""
    doc = {"r": {"o": [{"@a": f'v{i % 5000} "q" \'s\' &<>\n\t', "@b": None, "k": f"t&<>{i}", "e": [],
                        "n": {"m": "x", "#text": "y"}} for i in range(6000)]}}
    assert emit_document_text(doc) == reference(doc)


def emit_document_text(doc: dict) -> str:
    pieces: list = []
    emit_document(doc, pieces.append)
    return "".join(pieces)
