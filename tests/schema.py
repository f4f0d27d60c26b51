"""Validate XML that Strongroom writes against the XSDs in ../shared/schemas, fully offline.

Tests import this instead of each compiling schemas their own way. The METS 1.x schemas
import XLink from http://www.loc.gov/standards/xlink/xlink.xsd; a resolver maps that URL
(and the published PREMIS/METS URLs) to the local copies listed in shared/schemas/SOURCES.md,
the parser runs with `no_network=True`, and any other remote URL is refused with an error
naming it: a test must never depend on loc.gov being up.

    from tests.schema import assert_valid, validation_errors
    assert_valid(xml_text)                      # PREMIS 3 (the default)
    assert_valid(path_to_mets, "mets")          # METS 1.12.1
    assert_valid(mets2_bytes, "mets2", "premis")  # METS 2 with embedded PREMIS validated too

Schema names: "premis" (PREMIS 3.0), "mets" (METS 1.12.1), "mets-1.12", "mets2", "xlink".
Several names build one schema that imports them all, so wrapped metadata whose namespace is
known (e.g. PREMIS inside METS xmlData, processContents="lax") is validated, not skipped.
Note: METS with a wrapped PREMIS <object xsi:type="file"> is *invalid* against "mets" alone
(libxml2 cannot resolve the xsi:type without the PREMIS schema): use ("mets", "premis").
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Set, Tuple, Union
from xml.sax.saxutils import quoteattr

from lxml import etree

SCHEMAS_DIR = Path(__file__).resolve().parents[2] / "shared" / "schemas"

# name -> (target namespace, file under SCHEMAS_DIR)
SCHEMAS: Dict[str, Tuple[str, str]] = {
    "premis": ("http://www.loc.gov/premis/v3", "premis-v3/premis-v3-0.xsd"),
    "mets": ("http://www.loc.gov/METS/", "mets/version1121/mets.xsd"),
    "mets-1.12": ("http://www.loc.gov/METS/", "mets/version112/mets.xsd"),
    "mets2": ("http://www.loc.gov/METS/v2", "mets/v2/mets2.xsd"),
    "xlink": ("http://www.w3.org/1999/xlink", "xlink/xlink.xsd"),
}

# Published locations -> the local copy of that same file (SOURCES.md). Both http and https.
_URL_MAP: Dict[str, str] = {}
for _url, _local in {
    "www.loc.gov/standards/xlink/xlink.xsd": "xlink/xlink.xsd",
    "www.loc.gov/standards/premis/v3/premis-v3-0.xsd": "premis-v3/premis-v3-0.xsd",
    "www.loc.gov/standards/mets/version1121/mets.xsd": "mets/version1121/mets.xsd",
    "www.loc.gov/standards/mets/version112/mets.xsd": "mets/version112/mets.xsd",
}.items():
    for _scheme in ("http://", "https://"):
        _URL_MAP[_scheme + _url] = str(SCHEMAS_DIR / _local)


class RemoteSchemaRefused(Exception):
    """A schema asked for a URL that has no local copy; fetching it is not allowed."""


# Published URLs that were served from the local copies (lets tests prove the mapping is used).
RESOLVED_LOCALLY: Set[str] = set()


class _LocalOnlyResolver(etree.Resolver):
    def __init__(self) -> None:
        super().__init__()
        self.refused: List[str] = []

    def resolve(self, url, pubid, context):
        if url in _URL_MAP:
            RESOLVED_LOCALLY.add(url)
            return self.resolve_filename(_URL_MAP[url], context)
        if url and "://" in url and not url.startswith("file:"):
            # libxml2 turns an exception raised here into a vague parse error, so remember the
            # URL and hand back something that cannot compile; compile_schema names the URL.
            self.refused.append(url)
            return self.resolve_string("<refused/>", context)
        return None  # a local file: default handling (network stays off)


def _parser(resolver: "_LocalOnlyResolver | None" = None) -> etree.XMLParser:
    parser = etree.XMLParser(no_network=True, resolve_entities=False, huge_tree=True)
    parser.resolvers.add(resolver or _LocalOnlyResolver())
    return parser


def _compile(source: Union[Path, bytes], base_url: str = "") -> etree.XMLSchema:
    resolver = _LocalOnlyResolver()
    parser = _parser(resolver)
    try:
        if isinstance(source, Path):
            tree = etree.parse(str(source), parser)
        else:
            tree = etree.ElementTree(etree.fromstring(source, parser, base_url=base_url))
        return etree.XMLSchema(tree)
    except etree.XMLSchemaParseError as exc:
        if resolver.refused:
            raise RemoteSchemaRefused(
                f"{source if isinstance(source, Path) else 'schema'} imports {', '.join(resolver.refused)}, "
                f"which has no local copy under {SCHEMAS_DIR}; add the file there and map it in "
                "tests/schema.py:_URL_MAP (schemas are never fetched)") from exc
        raise


def compile_schema(path: Union[str, "os.PathLike[str]"]) -> etree.XMLSchema:
    """Compile any XSD file offline, with the same URL mapping (not cached)."""
    return _compile(Path(path))


@lru_cache(maxsize=None)
def _load(names: Tuple[str, ...]) -> etree.XMLSchema:
    unknown = [n for n in names if n not in SCHEMAS]
    if unknown:
        raise ValueError(f"unknown schema name(s) {unknown}; known: {', '.join(SCHEMAS)}")
    if not SCHEMAS_DIR.is_dir():
        raise FileNotFoundError(f"schema folder {SCHEMAS_DIR} is missing (expected ../shared/schemas next to the repo)")
    if len(names) == 1:
        return _compile(SCHEMAS_DIR / SCHEMAS[names[0]][1])
    # One driver schema importing each namespace from its local file.
    imports = "".join(
        f"<xs:import namespace={quoteattr(ns)} schemaLocation={quoteattr((SCHEMAS_DIR / rel).as_uri())}/>"
        for ns, rel in dict.fromkeys(SCHEMAS[n] for n in names))
    driver = f'<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema">{imports}</xs:schema>'
    return _compile(driver.encode("utf-8"), base_url=SCHEMAS_DIR.as_uri() + "/")


def load_schema(*names: str) -> etree.XMLSchema:
    """The compiled schema for `names` (default "premis"), cached per combination."""
    return _load(tuple(dict.fromkeys(names or ("premis",))))


XmlInput = Union[str, bytes, "os.PathLike[str]", etree._Element, etree._ElementTree]


def _tree(xml: XmlInput) -> etree._ElementTree:
    if isinstance(xml, etree._ElementTree):
        return xml
    if isinstance(xml, etree._Element):
        return etree.ElementTree(xml)
    if isinstance(xml, os.PathLike):
        return etree.parse(os.fspath(xml), _parser())
    if isinstance(xml, str):
        xml = xml.encode("utf-8")  # lxml refuses str with an encoding declaration
    return etree.ElementTree(etree.fromstring(xml, _parser()))


def validation_errors(xml: XmlInput, *names: str) -> List[str]:
    """Every schema error as 'line N: message' (empty list: valid).

    `xml` is XML text (str/bytes), a path (os.PathLike; a plain str is always taken as text),
    or an lxml element/tree. Malformed XML raises lxml's XMLSyntaxError.
    """
    schema = load_schema(*names)
    ok = schema.validate(_tree(xml))
    return [] if ok else [f"line {e.line}: {e.message}" for e in schema.error_log]


def assert_valid(xml: XmlInput, *names: str) -> None:
    errors = validation_errors(xml, *names)
    assert not errors, f"not valid against {', '.join(names or ('premis',))}:\n" + "\n".join(errors[:50])
