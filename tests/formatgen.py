"""Small real-format sample files built with the standard library, and the `fido` command's
answers for any set of files (the reference our identification must reproduce).

The samples cover signature matches (PNG, GIF, JPEG, TIFF, PDF, XML, HTML, WAV, ZIP), container
matches (DOCX, ODT), the extension fallback (plain text, empty files) and no match at all
(random bytes), plus files sized around FIDO's buffer so head and tail handling is exercised.
"""

from __future__ import annotations

import io
import os
import random
import struct
import subprocess
import sys
import tempfile
import wave
import zipfile
import zlib
from pathlib import Path
from typing import Dict, Iterable, List, Sequence, Tuple

DEFAULT_BUFSIZE = 128 * 1024  # fido's default head/tail size


# ---- formats -----------------------------------------------------------------------------------
def png(width: int = 2, height: int = 2) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\x00" + bytes([(x * 90 + y * 40) % 256 for x in range(width) for _ in range(3)])
                   for y in range(height))
    return (b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))


def gif() -> bytes:
    """A 1x1 GIF89a with a two-colour palette."""
    header = b"GIF89a" + struct.pack("<HHBBB", 1, 1, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    image = b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0) + b"\x02\x02\x44\x01\x00"
    return header + image + b"\x3b"


def jpeg() -> bytes:
    """A baseline 8x8 grey JFIF 1.01 image with one-code Huffman tables (DC 0, then EOB)."""
    def segment(marker: int, body: bytes) -> bytes:
        return struct.pack(">HH", 0xFF00 | marker, len(body) + 2) + body

    app0 = segment(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00")
    dqt = segment(0xDB, b"\x00" + bytes([1] * 64))
    sof0 = segment(0xC0, struct.pack(">BHHB", 8, 8, 8, 1) + b"\x01\x11\x00")
    one_code = bytes([1] + [0] * 15)
    dht = segment(0xC4, b"\x00" + one_code + b"\x00" + b"\x10" + one_code + b"\x00")
    sos = segment(0xDA, b"\x01\x01\x00\x00\x3f\x00")
    return b"\xff\xd8" + app0 + dqt + sof0 + dht + sos + b"\x3f" + b"\xff\xd9"


def tiff() -> bytes:
    """A 1x1 8-bit greyscale little-endian baseline TIFF."""
    entries = [(256, 3, 1, 1), (257, 3, 1, 1), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1),
               (273, 4, 1, 8), (277, 3, 1, 1), (278, 3, 1, 1), (279, 4, 1, 1)]
    ifd_offset = 10
    ifd = struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        ifd += struct.pack("<HHII", tag, kind, count, value)
    ifd += struct.pack("<I", 0)
    return b"II*\x00" + struct.pack("<I", ifd_offset) + b"\x00\x80" + ifd


def pdf(padding: int = 0) -> bytes:
    """A one-page PDF 1.4; `padding` bytes of stream data make it as large as wanted."""
    content = b"BT /F1 12 Tf 72 720 Td (Strongroom) Tj ET\n" + b"%" * max(0, padding - 1) + (
        b"\n" if padding else b"")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % number + body + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    for offset in offsets:
        out.write(b"%010d 00000 n \n" % offset)
    out.write(b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref))
    return out.getvalue()


def _zip(members: Sequence[Tuple[str, bytes, int]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data, method in members:
            info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
            info.compress_type = method
            archive.writestr(info, data)
    return buffer.getvalue()


def zip_archive() -> bytes:
    return _zip([("readme.txt", b"hello from strongroom\n" * 20, zipfile.ZIP_DEFLATED),
                 ("data/values.csv", b"a,b\n1,2\n", zipfile.ZIP_DEFLATED)])


def broken_zip() -> bytes:
    """A DOCX whose central directory entries have a damaged magic number: the ZIP signature
    still matches, but zipfile refuses the container (FIDO then keeps the signature match)."""
    data = bytearray(docx())
    start = data.find(b"PK\x01\x02")
    while start != -1:
        data[start + 3] = 0x09
        start = data.find(b"PK\x01\x02", start + 4)
    return bytes(data)


def unreadable_directory_zip() -> bytes:
    """A DOCX whose end record points the central directory past the file's start: zipfile
    raises OSError, on which the `fido` command prints an error and no answer at all."""
    data = bytearray(docx())
    end = data.rfind(b"PK\x05\x06")
    data[end + 16:end + 20] = struct.pack("<I", 0x7FFF0000)
    return bytes(data)


def docx() -> bytes:
    types = (b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
             b'<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
             b'<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
             b'<Default Extension="xml" ContentType="application/xml"/>'
             b'<Override PartName="/word/document.xml" ContentType="application/vnd.openxmlformats-'
             b'officedocument.wordprocessingml.document.main+xml"/></Types>')
    rels = (b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
            b'<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
            b'<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
            b'relationships/officeDocument" Target="word/document.xml"/></Relationships>')
    document = (b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
                b'<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">'
                b'<w:body><w:p><w:r><w:t>Strongroom</w:t></w:r></w:p></w:body></w:document>')
    return _zip([("[Content_Types].xml", types, zipfile.ZIP_DEFLATED),
                 ("_rels/.rels", rels, zipfile.ZIP_DEFLATED),
                 ("word/document.xml", document, zipfile.ZIP_DEFLATED)])


def odt() -> bytes:
    mime = b"application/vnd.oasis.opendocument.text"
    manifest = (b'<?xml version="1.0" encoding="UTF-8"?>\n'
                b'<manifest:manifest xmlns:manifest="urn:oasis:names:tc:opendocument:xmlns:manifest:1.0" '
                b'manifest:version="1.2">'
                b'<manifest:file-entry manifest:full-path="/" manifest:version="1.2" '
                b'manifest:media-type="application/vnd.oasis.opendocument.text"/>'
                b'<manifest:file-entry manifest:full-path="content.xml" manifest:media-type="text/xml"/>'
                b'</manifest:manifest>')
    content = (b'<?xml version="1.0" encoding="UTF-8"?>\n'
               b'<office:document-content xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
               b'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0" office:version="1.2">'
               b'<office:body><office:text><text:p>Strongroom</text:p></office:text></office:body>'
               b'</office:document-content>')
    return _zip([("mimetype", mime, zipfile.ZIP_STORED),
                 ("content.xml", content, zipfile.ZIP_DEFLATED),
                 ("META-INF/manifest.xml", manifest, zipfile.ZIP_DEFLATED)])


def xml() -> bytes:
    return b'<?xml version="1.0" encoding="UTF-8"?>\n<collection><item id="1">Strongroom</item></collection>\n'


def html() -> bytes:
    return (b"<!DOCTYPE html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\"><title>Strongroom</title>"
            b"</head>\n<body><p>Preserved.</p></body>\n</html>\n")


def wav() -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(b"".join(struct.pack("<h", (i * 700) % 20000 - 10000) for i in range(800)))
    return buffer.getvalue()


def text() -> bytes:
    return "Plain text: Strongroom keeps copies.\nZweite Zeile, 第三行.\n".encode("utf-8")


def random_bytes(size: int, seed: int) -> bytes:
    """Bytes no signature should claim (a fixed seed keeps the test deterministic)."""
    data = bytearray(random.Random(seed).getrandbits(8) for _ in range(size))
    data[0] = 0x07  # a first byte few signatures start with
    return bytes(data)


def samples(bufsize: int = DEFAULT_BUFSIZE) -> Dict[str, bytes]:
    """File name -> content for every sample (names carry the extensions FIDO may fall back on)."""
    return {
        "image.png": png(),
        "image.gif": gif(),
        "photo.jpg": jpeg(),
        "scan.tif": tiff(),
        "doc.pdf": pdf(),
        "big.pdf": pdf(padding=3 * bufsize),  # head and tail far apart
        "edge-plus-one.pdf": _pad_pdf_to(bufsize + 1),  # head and tail overlap by all but one byte
        "archive.zip": zip_archive(),
        "truncated.zip": zip_archive()[:60],  # cut short: not even a ZIP signature match
        "broken-directory.zip": broken_zip(),  # ZIP signature, but container reading fails
        "letter-named.zip": docx(),  # the container signature wins over the extension
        "letter.docx": docx(),
        "letter.odt": odt(),
        "data.xml": xml(),
        "page.html": html(),
        "sound.wav": wav(),
        "notes.txt": text(),
        "exactly-bufsize.txt": (b"0123456789abcdef" * (bufsize // 16 + 1))[:bufsize],
        "empty.txt": b"",
        "empty": b"",
        "png-named.txt": png(),  # the signature wins over the extension
        "unknown": random_bytes(3000, seed=1),
        "unknown.qqq": random_bytes(bufsize * 2 + 5, seed=2),
    }


def _pad_pdf_to(size: int) -> bytes:
    base = len(pdf(padding=1))
    for padding in range(max(1, size - base - 16), size):
        data = pdf(padding=padding)
        if len(data) == size:
            return data
    raise AssertionError("could not size the PDF")  # pragma: no cover


def write_samples(folder, bufsize: int = DEFAULT_BUFSIZE) -> List[Path]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, data in samples(bufsize).items():
        path = folder / name
        path.write_bytes(data)
        written.append(path)
    return written


# ---- the reference: the `fido` command ---------------------------------------------------------
FIDO_MATCH = "OK\t%(info.puid)s\t%(info.matchtype)s\t%(info.filename)s\n"
FIDO_NOMATCH = "KO\t\t%(info.matchtype)s\t%(info.filename)s\n"


def fido_command() -> str:
    """The `fido` console script of the interpreter running us (the venv's bin folder)."""
    return str(Path(sys.executable).parent / "fido")


def fido_cli_answers(paths: Iterable, processes: int = 2) -> Dict[str, Tuple[List[str], str]]:
    """normpath -> (PUIDs in the order `fido` printed them, match type) from the real command.

    The files are split among `processes` concurrent `fido` runs (each still one process for
    many files). Match type "fail" is what fido prints when nothing matched at all.
    """
    files = [os.path.normpath(os.path.abspath(os.fspath(p))) for p in paths]
    for name in files:
        if "\n" in name or "\t" in name:
            raise ValueError(f"{name!r}: fido's line output cannot carry this name")
    chunks = [files[i::processes] for i in range(processes) if files[i::processes]]
    answers: Dict[str, Tuple[List[str], str]] = {}
    with tempfile.TemporaryDirectory(prefix="fido-lists-") as tmp:
        runs = []
        for number, chunk in enumerate(chunks):
            listing = Path(tmp) / f"files-{number}.txt"
            listing.write_text("".join(f"{name}\n" for name in chunk), encoding="utf-8")
            runs.append(subprocess.Popen(
                [fido_command(), "-q", "-matchprintf", FIDO_MATCH, "-nomatchprintf", FIDO_NOMATCH,
                 "-input", str(listing)],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL))
        for run in runs:
            out, _ = run.communicate()
            if run.returncode != 0:
                raise RuntimeError(f"fido exited with {run.returncode}")
            for line in out.decode("utf-8", "surrogateescape").splitlines():
                status, puid, matchtype, name = line.split("\t", 3)
                puids, _ = answers.get(name, ([], ""))
                if status == "OK":
                    puids.append(puid)
                answers[name] = (puids, matchtype)
    return answers
