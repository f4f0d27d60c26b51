"""PREMIS 3 writer: schema-valid, exact about names, deterministic, atomic on disk."""

from __future__ import annotations

import os

import pytest
import xmltodict
from lxml import etree

from ingest import premis
from ingest.premis import (Agent, Event, FileObject, IntellectualEntity, decode_name, encode_name,
                           premis_document, premis_xml, write_premis)
from tests import schema
from tests.schema import assert_valid, validation_errors

NS = {"p": premis.PREMIS_NS, "xsi": premis.XSI_NS}
BAG = "LIB/COLL/20250131T120000Z-1"
LOC = "http://id.loc.gov/vocabulary/preservation/"

# Names a depositor's file system can really hand us (str as os.fsdecode gives them).
AWKWARD_NAMES = [
    "报告/年度报告 2024.pdf",             # Chinese
    "Q&A <draft> \"v2\" 'x'.txt",        # XML markup characters
    "100% done %0A not-a-newline.txt",   # '%' and something that looks like an escape
    "line\nbreak.txt",                   # LF
    "carriage\rreturn.txt",              # CR (a parser would turn it into LF)
    "tab\there.txt",                     # TAB (legal in XML, kept)
    "bell\x07and\x1fnul\x00.txt",        # controls XML 1.0 cannot hold at all
    os.fsdecode(b"caf\xe9-latin1.txt"),  # undecodable byte -> lone surrogate U+DCE9
    "nonchar\uffff\ufffe.txt",           # XML 1.0 excludes these two code points
    "emoji \U0001F600 and \u00e9.txt",   # outside the BMP / precomposed
]


def agents():
    return [
        Agent("local", "strongroom", "Strongroom", "software", version="0.1.0", note="pipeline"),
        Agent("local", "fido", "FIDO (opf-fido)", "software", version="1.6.1", note="PRONOM v109"),
        Agent("local", "library:北大", "北京大学图书馆 & Co", "organization"),
        Agent("email", "curator@example.org", "A. Curator", "person"),
    ]


def objects():
    return [
        IntellectualEntity("strongroom-bag", BAG, title="档案 <Annual> & reports",
                           original_name="deposit-2025", other_identifiers=(("UUID", "0b7c3ad0-0000-4000-8000-000000000001"),)),
        FileObject("strongroom-path", f"{BAG}/data/a.pdf", "a.pdf", 12345,
                   (("sha256", "a" * 64), ("md5", "b" * 32)),
                   format_puid="fmt/276", format_name="Acrobat PDF 1.7 - Portable Document Format",
                   format_version="1.7", format_basis="signature", storage_location="data/a.pdf"),
        FileObject("strongroom-path", f"{BAG}/data/b.bin", "b.bin", 0, (("sha512", "c" * 128),)),
        FileObject("strongroom-path", f"{BAG}/data/c.txt", "c.txt", 7, (("SHA-1", "d" * 40),),
                   format_puid="x-fmt/111", format_basis="extension"),
    ]


def events():
    bag = (("strongroom-bag", BAG, "source"),)
    run = (("local", "strongroom", "executing program"),)
    return [
        Event("UUID", "e-1", "message digest calculation", "2025-01-31T12:00:00Z", "sha256, md5", "success",
              "3 file(s)", run, bag),
        Event("UUID", "e-2", "format identification", "2025-01-31T12:00:01Z", "FIDO 1.6.1", "warning",
              "1 unidentified", run + (("local", "fido", "executing program"),), bag),
        Event("UUID", "e-3", "validation", "2025-01-31T12:00:02.5+00:00", "BagIt 1.0", "success", agents=run, objects=bag),
        Event("UUID", "e-4", "ingestion", "2025-01-31T12:00:03Z", "", "success",
              agents=run + (("local", "library:北大", "implementer"),), objects=bag),
        Event("UUID", "e-5", "fixity check", "2025-02-01T00:00:00Z", "deep audit", "failure", "1 digest differs",
              run, ((("strongroom-path", f"{BAG}/data/a.pdf", "source")),)),
        Event("UUID", "e-6", "replication", "2025-02-01T00:01:00Z", "site-b", "success", agents=run,
              objects=(("strongroom-bag", BAG, "source"), ("strongroom-replica", f"site-b:{BAG}", "outcome"))),
        Event("UUID", "e-7", "repair", "2025-02-01T00:02:00Z", "from site-b", "inconclusive", agents=run),
    ]


def parse(xml: str) -> etree._Element:
    return etree.fromstring(xml.encode("utf-8"))


def test_document_with_objects_events_agents_is_schema_valid():
    xml = premis_xml(objects(), events(), agents())
    assert_valid(xml)
    root = parse(xml)
    assert root.tag == f"{{{premis.PREMIS_NS}}}premis" and root.get("version") == "3.0"
    assert root.get(f"{{{premis.XSI_NS}}}schemaLocation").split() == [premis.PREMIS_NS, premis.PREMIS_XSD_URL]
    types = [o.get(f"{{{premis.XSI_NS}}}type") for o in root.findall("p:object", NS)]
    assert types == ["intellectualEntity", "file", "file", "file"]
    assert len(root.findall("p:event", NS)) == 7 and len(root.findall("p:agent", NS)) == 4


def test_file_object_carries_size_digests_format_and_location():
    root = parse(premis_xml(objects(), events(), agents()))
    pdf, unidentified, puid_only = root.findall("p:object", NS)[1:]
    oc = pdf.find("p:objectCharacteristics", NS)
    assert oc.findtext("p:compositionLevel", namespaces=NS) == "0"
    assert oc.findtext("p:size", namespaces=NS) == "12345"
    algorithms = oc.findall("p:fixity/p:messageDigestAlgorithm", NS)
    assert [a.text for a in algorithms] == ["SHA-256", "MD5"]
    assert [a.get("valueURI") for a in algorithms] == [LOC + "cryptographicHashFunctions/sha256",
                                                        LOC + "cryptographicHashFunctions/md5"]
    assert [d.text for d in oc.findall("p:fixity/p:messageDigest", NS)] == ["a" * 64, "b" * 32]
    assert oc.findtext("p:format/p:formatRegistry/p:formatRegistryName", namespaces=NS) == "PRONOM"
    assert oc.findtext("p:format/p:formatRegistry/p:formatRegistryKey", namespaces=NS) == "fmt/276"
    assert oc.findtext("p:format/p:formatDesignation/p:formatVersion", namespaces=NS) == "1.7"
    assert oc.findtext("p:format/p:formatNote", namespaces=NS) == "identification basis: signature"
    assert pdf.findtext("p:originalName", namespaces=NS) == "a.pdf"
    assert pdf.findtext("p:storage/p:contentLocation/p:contentLocationValue", namespaces=NS) == "data/a.pdf"
    # No PUID: a formatDesignation saying so (PREMIS requires a format); PUID only: registry only.
    fmt = unidentified.find("p:objectCharacteristics/p:format", NS)
    assert [c.tag.split("}")[1] for c in fmt] == ["formatDesignation"]
    assert fmt.findtext("p:formatDesignation/p:formatName", namespaces=NS) == premis.UNKNOWN_FORMAT_NAME
    fmt = puid_only.find("p:objectCharacteristics/p:format", NS)
    assert [c.tag.split("}")[1] for c in fmt] == ["formatRegistry", "formatNote"]
    assert puid_only.find("p:objectCharacteristics/p:fixity/p:messageDigestAlgorithm", NS).text == "SHA-1"


def test_loc_vocabulary_terms_get_authority_uris_and_others_stay_plain():
    root = parse(premis_xml(objects(), events(), agents()))
    expected = {"message digest calculation": "mes", "format identification": "for", "validation": "val",
                "ingestion": "ing", "fixity check": "fix", "replication": "rep"}
    seen = {}
    for et in root.findall("p:event/p:eventType", NS):
        seen[et.text] = et.get("valueURI")
        if et.text in expected:
            assert et.get("authority") == "eventType"
            assert et.get("authorityURI") == LOC + "eventType"
    assert {k: v for k, v in seen.items() if k in expected} == {k: f"{LOC}eventType/{c}" for k, c in expected.items()}
    assert seen["repair"] is None  # not in the LoC list: no invented URI
    outcomes = {e.findtext("p:eventIdentifier/p:eventIdentifierValue", namespaces=NS):
                e.find("p:eventOutcomeInformation/p:eventOutcome", NS) for e in root.findall("p:event", NS)}
    assert outcomes["e-5"].text == "failure" and outcomes["e-5"].get("valueURI") == LOC + "eventOutcome/fai"
    assert outcomes["e-2"].get("valueURI") == LOC + "eventOutcome/war"
    assert outcomes["e-7"].get("valueURI") is None
    roles = {r.text: r.get("valueURI") for r in root.iterfind(".//p:linkingAgentRole", NS)}
    assert roles == {"executing program": LOC + "eventRelatedAgentRole/exe",
                     "implementer": LOC + "eventRelatedAgentRole/imp"}
    roles = {r.text: r.get("valueURI") for r in root.iterfind(".//p:linkingObjectRole", NS)}
    assert roles == {"source": LOC + "eventRelatedObjectRole/sou", "outcome": LOC + "eventRelatedObjectRole/out"}
    kinds = {a.text: a.get("valueURI") for a in root.iterfind("p:agent/p:agentType", NS)}
    assert kinds == {"software": LOC + "agentType/sof", "organization": LOC + "agentType/org",
                     "person": LOC + "agentType/per"}


def test_validator_rejects_documents_missing_required_parts():
    doc = premis_document(objects(), events(), agents())
    assert validation_errors(xmltodict.unparse(doc)) == []
    file_obj = doc["premis"]["object"][1]
    del file_obj["objectCharacteristics"]  # required by xsi:type="file"
    errors = validation_errors(xmltodict.unparse(doc))
    assert errors and any("objectCharacteristics" in e for e in errors), errors

    doc = premis_document(objects(), events(), agents())
    del doc["premis"]["@version"]  # premis/@version is use="required"
    assert any("version" in e for e in validation_errors(xmltodict.unparse(doc)))

    doc = premis_document(objects(), events(), agents())
    event = doc["premis"]["event"][0]
    doc["premis"]["event"][0] = {"eventType": event["eventType"], **event}  # out of schema order
    assert validation_errors(xmltodict.unparse(doc))


def test_names_round_trip_exactly_and_document_stays_valid(tmp_path):
    files = [FileObject("strongroom-path", f"{BAG}/data/{n}", n, i, (("sha256", "0" * 64),),
                        storage_location=f"data/{n}")
             for i, n in enumerate(AWKWARD_NAMES)]
    ev = Event("UUID", "e-1", "ingestion", "2025-01-31T12:00:00Z", "ok", "success",
               objects=tuple(("strongroom-path", f"{BAG}/data/{n}", "source") for n in AWKWARD_NAMES))
    path = write_premis(tmp_path / "premis.xml", files, [ev], agents())
    assert_valid(path)
    root = etree.parse(str(path)).getroot()
    objs = root.findall("p:object", NS)
    assert [decode_name(o.findtext("p:originalName", namespaces=NS)) for o in objs] == AWKWARD_NAMES
    assert [decode_name(o.findtext("p:storage/p:contentLocation/p:contentLocationValue", namespaces=NS))
            for o in objs] == [f"data/{n}" for n in AWKWARD_NAMES]
    # Event links use the same encoding, so they still match the objects' identifiers exactly.
    ids = [o.findtext("p:objectIdentifier/p:objectIdentifierValue", namespaces=NS) for o in objs]
    links = [v.text for v in root.iterfind(".//p:linkingObjectIdentifierValue", NS)]
    assert links == ids and len(set(ids)) == len(AWKWARD_NAMES)
    # The undecodable byte comes back as the same bytes on disk.
    assert os.fsencode(decode_name(objs[7].findtext("p:originalName", namespaces=NS))) == b"caf\xe9-latin1.txt"


def test_name_encoding_touches_only_what_it_must():
    for plain in ["报告/年度报告 2024.pdf", "Q&A <draft>.txt", "tab\there.txt", "emoji \U0001F600.txt"]:
        assert encode_name(plain) == plain
    assert encode_name("100% done\n") == "100%25 done%0A"  # as an RFC 8493 manifest writes it
    assert encode_name("a\rb\x00c") == "a%0Db%00c"
    assert encode_name(os.fsdecode(b"\xff")) == "%FF"
    for name in AWKWARD_NAMES:
        assert decode_name(encode_name(name)) == name


def test_prose_keeps_markup_and_cjk_and_makes_controls_visible():
    ev = Event("UUID", "e-1", "validation", "2025-01-31T12:00:00Z",
               "检查 <bag> & \"quotes\" 100%\r\nsecond line\x07 " + os.fsdecode(b"\xfe"), "failure",
               outcome_detail="tab\tnul\x00 end\uffff")
    xml = premis_xml(objects()[:1], [ev], [])
    assert_valid(xml)
    root = parse(xml)
    detail = root.findtext(".//p:eventDetail", namespaces=NS)
    assert detail == "检查 <bag> & \"quotes\" 100%\nsecond line\\x07 \\xFE"
    assert root.findtext(".//p:eventOutcomeDetailNote", namespaces=NS) == "tab\tnul\\x00 end\\uFFFF"
    title = root.findtext(".//p:significantPropertiesValue", namespaces=NS)
    assert title == "档案 <Annual> & reports"


def test_output_is_deterministic_and_same_through_every_entry_point(tmp_path):
    first = premis_xml(objects(), events(), agents())
    assert premis_xml(objects(), events(), agents()) == first
    assert xmltodict.unparse(premis_document(objects(), events(), agents()), pretty=True, indent="  ",
                             newl="\n", short_empty_elements=False) + "\n" == first
    path = write_premis(tmp_path / "premis.xml", objects(), events(), agents())
    assert path.read_bytes() == first.encode("utf-8")
    # Generators work too (reports stream from the catalog), with the same result.
    assert premis_xml(iter(objects()), iter(events()), iter(agents())) == first


def test_write_premis_replaces_atomically_and_leaves_no_temp_files(tmp_path):
    target = tmp_path / "premis.xml"
    write_premis(target, objects(), events(), agents())
    before = target.read_bytes()
    assert_valid(target)

    def broken():
        yield from objects()
        yield "not a PREMIS object"

    with pytest.raises(TypeError, match="FileObject or IntellectualEntity"):
        write_premis(target, broken(), events(), agents())
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["premis.xml"]

    with pytest.raises(ValueError, match="at least one object"):
        write_premis(target, [], events(), agents())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["premis.xml"]

    write_premis(str(target), objects()[:2], [], [])
    assert target.read_bytes() != before
    assert len(etree.parse(str(target)).getroot().findall("p:object", NS)) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["premis.xml"]


@pytest.mark.parametrize("build, message", [
    (lambda: Event("UUID", "e", "ingestion", "2025-01-31T12:00:00Z", "", "ok"), "outcome"),
    (lambda: Event("UUID", "e", "ingestion", "2025-01-31T12:00:00", "", "success"), "not in UTC"),
    (lambda: Event("UUID", "e", "ingestion", "2025-01-31T20:00:00+08:00", "", "success"), "not in UTC"),
    (lambda: Event("UUID", "e", "ingestion", "yesterday", "", "success"), "ISO 8601"),
    (lambda: Event("UUID", "e", "", "2025-01-31T12:00:00Z", "", "success"), "event type"),
    (lambda: Event("UUID", "e", "ingestion", "2025-01-31T12:00:00Z", "", "success", agents=(("local", "x"),)),
     "agents"),
    (lambda: FileObject("t", "v", "n", -1, ()), "size"),
    (lambda: FileObject("t", "v", "n", True, ()), "size"),
    (lambda: FileObject("t", "v", "n", 1, (("sha256",),)), "fixity"),
    (lambda: FileObject("t", "", "n", 1, ()), "identifier_value"),
    (lambda: Agent("local", "a", "A", "robot"), "type"),
    (lambda: IntellectualEntity("t", "v", other_identifiers=(("UUID", ""),)), "other_identifiers"),
])
def test_records_refuse_values_that_would_make_bad_evidence(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_many_files_stream_through_and_validate(tmp_path):
    count = 2000

    def many():
        yield objects()[0]
        for i in range(count):
            yield FileObject("strongroom-path", f"{BAG}/data/d/{i}.txt", f"d/{i}.txt", i, (("sha256", f"{i:064x}"),),
                             format_puid="x-fmt/111", format_name="Plain Text File", format_basis="extension")

    path = write_premis(tmp_path / "premis.xml", many(), events(), agents())
    assert_valid(path)
    root = etree.parse(str(path)).getroot()
    sizes = [int(s.text) for s in root.iterfind("p:object/p:objectCharacteristics/p:size", NS)]
    assert sizes == list(range(count))


# --- the shared validation helper (tests/schema.py) -------------------------------------------

METS_WITH_PREMIS = """<?xml version="1.0" encoding="UTF-8"?>
<mets xmlns="http://www.loc.gov/METS/" xmlns:xlink="http://www.w3.org/1999/xlink">
  <amdSec ID="amd1"><digiprovMD ID="dp1"><mdWrap MDTYPE="PREMIS"><xmlData>{premis}</xmlData></mdWrap></digiprovMD></amdSec>
  <fileSec><fileGrp><file ID="f1"><FLocat LOCTYPE="URL" xlink:href="data/a.pdf"/></file></fileGrp></fileSec>
  <structMap><div><fptr FILEID="f1"/></div></structMap>
</mets>"""


def _premis_fragment(valid: bool) -> str:
    # An <event>: a wrapped <object> carries xsi:type="file", which libxml2 cannot resolve
    # unless the PREMIS schema is loaded -- so METS with PREMIS inside needs ("mets", "premis").
    event = premis_document(objects()[:1], events()[:1])["premis"]["event"][0]
    if not valid:
        del event["eventDateTime"]  # required
    return xmltodict.unparse({"event": {"@xmlns": premis.PREMIS_NS, **event}}, full_document=False)


def test_schema_helper_resolves_xlink_locally_and_validates_wrapped_premis():
    good = METS_WITH_PREMIS.format(premis=_premis_fragment(True))
    bad = METS_WITH_PREMIS.format(premis=_premis_fragment(False))
    assert_valid(good, "mets")  # METS 1.12.1 imports XLink by its loc.gov URL
    assert "http://www.loc.gov/standards/xlink/xlink.xsd" in schema.RESOLVED_LOCALLY
    assert validation_errors(bad, "mets") == []  # METS alone: xmlData is lax, PREMIS unknown
    errors = validation_errors(bad, "mets", "premis")  # both loaded: the PREMIS inside is checked
    assert any("eventDateTime" in e for e in errors), errors
    assert_valid(good, "mets", "premis")
    file_object = xmltodict.unparse(premis_document(objects()[1:2]), full_document=False)
    assert_valid(METS_WITH_PREMIS.format(premis=file_object), "mets", "premis")
    broken_mets = good.replace('LOCTYPE="URL"', 'LOCTYPE="NOT-A-LOCTYPE"')
    assert validation_errors(broken_mets, "mets")


def test_schema_helper_refuses_remote_imports_it_has_no_copy_of(tmp_path):
    xsd = tmp_path / "remote.xsd"
    xsd.write_text('<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema">'
                   '<xs:import namespace="urn:x" schemaLocation="https://example.org/x.xsd"/></xs:schema>')
    with pytest.raises(schema.RemoteSchemaRefused, match="https://example.org/x.xsd"):
        schema.compile_schema(xsd)
    with pytest.raises(ValueError, match="unknown schema"):
        schema.load_schema("premis-v2")
