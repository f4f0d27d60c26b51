"""Bag identifiers: stable, readable, and safe to use as storage keys.

`LIB/COLL/YYYYMMDDTHHMMSSZ-N` (DESIGN.md). Library and collection codes become folder names
and object-key segments on every storage target, so they are restricted to a portable set
of characters; a collection's human title may be any Unicode text and lives in bag-info.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone

from strongroom.errors import UsageError

_CODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_BAG_ID = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]{0,63})/([A-Za-z0-9][A-Za-z0-9._-]{0,63})/(\d{8}T\d{6}Z)-(\d+)$")


def check_code(value: str, what: str) -> str:
    if not _CODE.match(value or ""):
        raise UsageError(
            f"{value!r} is not a valid {what} code: use 1-64 ASCII letters, digits, '.', '_' or '-', "
            "starting with a letter or digit (put the full name in --title)",
            key=f"--{what}",
        )
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
