"""Serialise premis.py's document dicts as XML text, byte for byte what xmltodict.unparse writes.

Why not xmltodict itself: for every element it builds a SAX AttributesImpl, checks and maps
names and goes through XMLGenerator's method calls; for a 20,000-file bag (31.5 MB of XML) that
was ~3 s of a deposit (issue 11). This writer walks the same dicts (`premis._document`) with the
same rules -- `xmltodict.unparse(..., pretty=True, indent="  ", newl="\\n",
short_empty_elements=False)`: attributes from "@" keys ("@xmlns" a dict of prefixes), text from
"#text", a str value a text-only element, a list or other iterable one element per item, an
empty list nothing, children before text, escaping by xml.sax.saxutils (`escape` for text,
`quoteattr` for attributes) -- and writes each top-level object as soon as it is made, so a
100,000-file bag is never held as text. tests/test_premis_emit.py checks it against
xmltodict.unparse on generated documents (hypothesis).

Element and attribute names come only from premis.py's own constants, never from input, so no
name check is needed here; every value passes through the escapes.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List
from xml.sax.saxutils import quoteattr

XML_DECLARATION = '<?xml version="1.0" encoding="utf-8"?>\n'
_INDENT = "  "
#: Pieces of text gathered per call of `write` (~100 bytes each): small enough to stream, big
#: enough to keep calls few. Counted in pieces, not characters: no length to add up per element.
_FLUSH_AT = 256


class Rendered(str):
    """An element already written out as this module would write it, one level below the root
    (two spaces in, newline last): a list item of this type is copied as it is. premis.py hands
    the file objects over this way (`premis.file_text`), ~20,000 per bag; tests check each one
    against this module's own rendering of the same dict."""


def emit_document(document: dict, write: Callable[[str], Any]) -> None:
    """Write `document` ({root tag: root dict}) as xmltodict.unparse(pretty) would, without the
    trailing newline unparse does not write either."""
    (key, value), = document.items()
    out: List[str] = [XML_DECLARATION]

    def flush_if_big() -> None:
        if len(out) >= _FLUSH_AT:
            write("".join(out))
            out.clear()

    _element(key, value, 0, out, flush_if_big)
    write("".join(out))


def render_element(key: str, value: Any, depth: int) -> str:
    """One element as `emit_document` writes it at `depth` (what premis.file_text reuses for the
    pieces it does not spell out itself)."""
    out: List[str] = []
    _element(key, value, depth, out, lambda: None)
    return "".join(out)


def escape_text(text: str) -> str:
    """xml.sax.saxutils.escape(text) (& < >), without its call overhead for text that has none."""
    if "&" in text or "<" in text or ">" in text:
        return text.replace("&", "&amp;").replace(">", "&gt;").replace("<", "&lt;")
    return text


#: quoteattr() of attribute values already seen: a bag's attributes are a few vocabulary URIs
#: and names repeated for every file (~7 per file), so each is quoted once.
_QUOTED: Dict[str, str] = {}


def quote_attr(value: Any) -> str:
    value = "" if value is None else value
    quoted = _QUOTED.get(value)
    if quoted is None:
        quoted = quoteattr(value)
        if len(_QUOTED) < 4096:
            _QUOTED[value] = quoted
    return quoted


def _element(key: str, value: Any, depth: int, out: List[str], flush: Callable[[], None]) -> None:
    if isinstance(value, (str, dict)) or value is None or not hasattr(value, "__iter__"):
        value = (value,)
    pad = _INDENT * depth
    inner = pad + _INDENT
    newline = "\n" if depth else ""
    for item in value:
        if isinstance(item, Rendered):
            out.append(item)
            if depth == 1:
                flush()
            continue
        if isinstance(item, str):  # a text-only element: {"#text": item}
            out.append(f"{pad}<{key}>{escape_text(item)}</{key}>{newline}")
            if depth == 1:
                flush()
            continue
        if item is None:
            item = {}
        elif not isinstance(item, dict):
            raise TypeError(f"PREMIS element {key}: unexpected value {type(item).__name__}")
        text = None
        attrs: List[str] = []
        children = []
        for k, v in item.items():
            if k == "#text":
                text = v
            elif k[:1] == "@":
                if k == "@xmlns" and isinstance(v, dict):
                    attrs.extend(f" xmlns{':' + p if p else ''}={quote_attr(u)}" for p, u in v.items())
                else:
                    attrs.append(f" {k[1:]}={quote_attr(v)}")
            elif not (isinstance(v, list) and not v):
                children.append((k, v))
        head = f"{pad}<{key}{''.join(attrs)}>"
        if children:
            out.append(head + "\n")
            for child_key, child_value in children:
                if depth and isinstance(child_value, str):  # the common leaf, written here (no flush due)
                    out.append(f"{inner}<{child_key}>{escape_text(child_value)}</{child_key}>\n")
                else:
                    _element(child_key, child_value, depth + 1, out, flush)
            out.append((escape_text(text) if text is not None else "") + f"{pad}</{key}>{newline}")
        else:
            out.append(head + (escape_text(text) if text is not None else "") + f"</{key}>{newline}")
        if depth == 1:
            flush()
