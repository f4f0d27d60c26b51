"""Bag identifiers: stable, readable, and safe to use as storage keys.

`LIB/COLL/YYYYMMDDTHHMMSSZ-N` (DESIGN.md). Library and collection codes become folder names
and object-key segments on every storage target, so they are restricted to a portable set
of characters; a collection's human title may be any Unicode text and lives in bag-info.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timezone

from strongroom.errors import UsageError

_CODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
# ASCII digits only ([0-9], never \d): a bag id is a storage key and a folder name; Arabic-Indic
# or other Unicode digits would parse (int() accepts them) and name a bag no deposit made.
_BAG_ID = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]{0,63})/([A-Za-z0-9][A-Za-z0-9._-]{0,63})/([0-9]{8}T[0-9]{6}Z)-([0-9]+)\Z")


def check_code(value: str, what: str) -> str:
    if not _CODE.match(value or ""):
        raise UsageError(
            f"{value!r} is not a valid {what} code: use 1-64 ASCII letters, digits, '.', '_' or '-', "
            "starting with a letter or digit (put the full name in --title)",
            key=f"--{what}",
        )
    return value


#: The longest title taken, in UTF-8 bytes. bag-info.txt lines over 64 KiB are refused on read
#: (ingest.bagit_spec), so a longer title would make its own bag unreadable; 8 KiB leaves room
#: for the title being written twice (External-Description and Strongroom-Collection-Title).
MAX_TITLE_BYTES = 8 * 1024


def check_title(value: str) -> str:
    """Refuse a collection title that bag-info.txt cannot carry back unchanged.

    A title is any Unicode text, and line breaks (LF) are kept: the bag-info writer folds them
    onto indented continuation lines and every reader gives them back. Refused, because they
    would come back different or not at all: more than MAX_TITLE_BYTES; control characters other
    than LF (CR becomes LF, NUL/ESC/tab... are not text); U+2028/U+2029 (other readers split
    lines there); a continuation line starting with whitespace (BagIt drops indentation); bytes
    that are not valid UTF-8 (the shell handed over undecodable bytes).
    """
    value = value or ""

    def refuse(problem: str) -> UsageError:
        return UsageError(f"the title {problem}", key="--title")

    size = len(value.encode("utf-8", "surrogatepass"))
    if size > MAX_TITLE_BYTES:
        raise refuse(f"is {size:,} bytes long (UTF-8); at most {MAX_TITLE_BYTES:,} bytes are taken "
                     "(put a longer description in a file of the source)")
    for index, ch in enumerate(value):
        where = f"at character {index + 1}"
        if 0xD800 <= ord(ch) <= 0xDFFF:
            raise refuse(f"is not valid UTF-8 ({where}): give the title as UTF-8 text")
        if ch == "\n":
            continue
        if ch == "\r":
            raise refuse(f"holds a carriage return (CR) {where}: use LF alone for a line break")
        if ch in "\u2028\u2029":
            raise refuse(f"holds the line/paragraph separator U+{ord(ch):04X} {where}: use LF for a line break")
        if unicodedata.category(ch) == "Cc":
            raise refuse(f"holds the control character U+{ord(ch):04X} {where}: a title is text "
                         "(only LF line breaks are kept in bag-info.txt)")
    for number, line in enumerate(value.split("\n")[1:], start=2):
        if line[:1] in (" ", "\t"):
            raise refuse(f"line {number} starts with a space: bag-info.txt drops the indentation of "
                         "continuation lines, so the title would not come back as given")
    return value


def deposit_stamp(now: datetime) -> str:
    return now.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


@dataclass(frozen=True)
class BagId:
    library: str
    collection: str
    stamp: str
    part: int

    @property
    def name(self) -> str:
        """The bag's folder / key segment: `YYYYMMDDTHHMMSSZ-N`."""
        return f"{self.stamp}-{self.part}"

    @property
    def group(self) -> str:
        """The deposit all parts belong to (Bag-Group-Identifier)."""
        return f"{self.library}/{self.collection}/{self.stamp}"

    def __str__(self) -> str:
        return f"{self.library}/{self.collection}/{self.name}"

    @classmethod
    def parse(cls, text: str) -> "BagId":
        m = _BAG_ID.match(text or "")
        if not m:
            raise UsageError(f"{text!r} is not a bag id (expected LIB/COLL/YYYYMMDDTHHMMSSZ-N)")
        return cls(m.group(1), m.group(2), m.group(3), int(m.group(4)))

