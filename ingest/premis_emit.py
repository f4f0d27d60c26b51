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

from typing import Any, Callable, List
from xml.sax.saxutils import escape, quoteattr

XML_DECLARATION = '<?xml version="1.0" encoding="utf-8"?>\n'
_INDENT = "  "
#: Text written per call of `write`: small enough to stream, big enough to keep calls few.
_FLUSH_AT = 1 << 16


def emit_document(document: dict, write: Callable[[str], Any]) -> None:
    """Write `document` ({root tag: root dict}) as xmltodict.unparse(pretty) would, without the
    trailing newline unparse does not write either."""
    (key, value), = document.items()
    out: List[str] = [XML_DECLARATION]
    size = [0]

    def flush_if_big() -> None:
        if size[0] >= _FLUSH_AT:
            write("".join(out))
            out.clear()
            size[0] = 0

    _element(key, value, 0, out, size, flush_if_big)
    write("".join(out))


def _element(key: str, value: Any, depth: int, out: List[str], size: List[int], flush: Callable[[], None]) -> None:
    if isinstance(value, (str, dict)) or value is None or not hasattr(value, "__iter__"):
        value = (value,)
    pad = _INDENT * depth
    for item in value:
        if item is None:
            item = {}
        elif isinstance(item, str):
            item = {"#text": item}
        elif not isinstance(item, dict):
            raise TypeError(f"PREMIS element {key}: unexpected value {type(item).__name__}")
        text = None
        attrs: List[str] = []
        children = []
        for k, v in item.items():
            if k == "#text":
                text = v
            elif k.startswith("@"):
                if k == "@xmlns" and isinstance(v, dict):
                    attrs.extend(f" xmlns{':' + p if p else ''}={quoteattr('' if u is None else u)}"
                                 for p, u in v.items())
                else:
                    attrs.append(f" {k[1:]}={quoteattr('' if v is None else v)}")
            elif not (isinstance(v, list) and not v):
                children.append((k, v))
        head = f"{pad}<{key}{''.join(attrs)}>"
        if children:
            out.append(head + "\n")
            size[0] += len(head)
            for child_key, child_value in children:
                _element(child_key, child_value, depth + 1, out, size, flush)
            tail = (escape(text) if text is not None else "") + f"{pad}</{key}>"
        else:
            tail = head + (escape(text) if text is not None else "") + f"</{key}>"
        if depth:
            tail += "\n"
        out.append(tail)
        size[0] += len(tail)
        if depth == 1:
            flush()
