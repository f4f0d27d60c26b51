"""How commands print: plain text for people, one JSON document on stdout with `--json`."""

from __future__ import annotations

import json
import sys
from typing import Any, Iterable, Optional


def emit(args, data: Any, text: str) -> None:
    if getattr(args, "json", False):
        json.dump(data, sys.stdout, ensure_ascii=False, indent=2, default=str)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")


def emit_error(exit_code: int, error: str, problems: Optional[Iterable[Any]] = None) -> None:
    """The one JSON document `--json` promises, for a failure: scripts never parse stderr.

    Problems with a `to_dict()` (a validation Problem: path and message) keep their fields;
    anything else is its text."""
    doc = {
        "ok": False,
        "exit_code": int(exit_code),
        "error": str(error),
        "problems": [p.to_dict() if hasattr(p, "to_dict") else str(p) for p in (problems or [])],
    }
    json.dump(doc, sys.stdout, ensure_ascii=False, indent=2, default=str)
    sys.stdout.write("\n")
    sys.stdout.flush()


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)
