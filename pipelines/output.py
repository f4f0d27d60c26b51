"""How commands print: plain text for people, one JSON document on stdout with `--json`."""

from __future__ import annotations

import json
import sys
from typing import Any


def emit(args, data: Any, text: str) -> None:
    if getattr(args, "json", False):
        json.dump(data, sys.stdout, ensure_ascii=False, indent=2, default=str)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)
