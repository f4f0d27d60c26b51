"""Who is acting: the operator and the software named as the agent of every ledger event.

A preservation ledger must say who did what (NDSA Control level 3), so the catalog stamps every
event it appends with the operator and the software version (`Catalog.append_events`, the one
place events enter the ledger). The operator comes from `STRONGROOM_OPERATOR` (a consortium runs
its cron jobs as one service account, so the person responsible is named explicitly), else the
OS user. Finding the OS user never fails: a container with no passwd entry still gets `uid <n>`.
"""

from __future__ import annotations

import getpass
import os
import re
from dataclasses import dataclass
from typing import Optional

from strongroom import NAME, __version__

OPERATOR_ENV = "STRONGROOM_OPERATOR"
MAX_OPERATOR = 100
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


@dataclass(frozen=True)
class Agent:
    """The operator and software of the running process (the library is per event)."""

    operator: str
    software: str


def software() -> str:
    """E.g. "Strongroom 0.1.0": which code made the event, so a later bug can be traced to it."""
    return f"{NAME} {__version__}"


def _clean(value: str) -> str:
    """One line, bounded: the name goes into reports and PREMIS, never control characters."""
    return " ".join(_CONTROL.sub(" ", value).split())[:MAX_OPERATOR].strip()


def os_user() -> str:
    """The OS user's name; `uid <n>` when no name can be found (never raises)."""
    try:
        name = _clean(getpass.getuser())
        if name:
            return name
    except Exception:  # getpass raises KeyError/OSError without a passwd entry or env name
        pass
    try:
        import pwd
        return _clean(pwd.getpwuid(os.getuid()).pw_name) or f"uid {os.getuid()}"
    except Exception:  # no pwd module (Windows) or no entry for this uid
        getuid = getattr(os, "getuid", None)
        return f"uid {getuid()}" if getuid else "unknown user"


def operator() -> str:
    """`STRONGROOM_OPERATOR` when set to something non-blank, else the OS user."""
    named = _clean(os.environ.get(OPERATOR_ENV, ""))
    return named or os_user()


def current() -> Agent:
    """The agent of events appended now (read at each append: the environment may change)."""
    return Agent(operator=operator(), software=software())


_WORDS = {"en": ("not recorded", "for"), "zh": ("未记录", "代表")}


def describe(operator_name: Optional[str], library: Optional[str], software_name: Optional[str],
             lang: str = "en") -> str:
    """One line for reports: "alice for PKU (Strongroom 0.1.0)"; events from before agents were
    recorded have none of the three, and say so rather than showing a blank."""
    missing, for_word = _WORDS.get(lang, _WORDS["en"])
    if not (operator_name or library or software_name):
        return missing
    text = operator_name or missing
    if library:
        text += f" {for_word} {library}"
    if software_name:
        text += f" ({software_name})"
    return text


__all__ = ["Agent", "OPERATOR_ENV", "current", "describe", "operator", "os_user", "software"]
