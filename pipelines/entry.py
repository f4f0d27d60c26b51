"""The `strongroom` console entry point, and what a short command costs to start and to end.

Why this module exists: a run of `strongroom identify` on a few thousand files lasts well under
a second, so most of it used to be fixed cost that has nothing to do with the files:

* **Start-up.** `pipelines.cli.build_parser` imports every command module to register it, and
  through them the config, policy and storage code (yaml, urllib3, ...). A command that needs
  none of that (`STANDALONE`) gets a parser with only itself registered when the command line
  plainly names it (`standalone_command`); it parses exactly as the full parser would, because
  the sub-command's own parser is the same object either way. Anything unusual before the
  command word (an abbreviated or unknown option, --help, --version) takes the full parser.
* **Teardown.** After the command, the interpreter frees every object it made (FIDO's signature
  tree alone is ~100,000 objects: about a third of a second). A command that has closed and
  flushed everything it wrote may call `skip_teardown()`; `main` then flushes stdout, stderr
  and the logging handlers and ends the process with `os._exit`, after `pipelines.cli.main`
  returned, so after everything it does once a command has run (the ledger anchoring too).
  Other commands end as usual, atexit handlers and finalizers included.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import List, Optional, Sequence

#: Commands whose module needs no other command module, config or catalog to parse and run.
STANDALONE = ("identify",)

#: Global options as written before the command (pipelines.cli.GLOBAL_FLAGS), by whether they
#: take a value. Only these exact spellings are understood; anything else means "full parser".
_FLAGS_WITH_VALUE = ("--config", "--workers", "--scheduler-url")
_FLAGS_WITHOUT_VALUE = ("--json", "-v", "--verbose", "--progress", "--no-progress")

_skip_teardown = False


def standalone_command(argv: Sequence[str]) -> Optional[str]:
    """The command `argv` names when it is one of `STANDALONE` and nothing before it needs the
    full parser; None otherwise (then every command is registered, as always)."""
    i = 0
    while i < len(argv):
        word = argv[i]
        if not word.startswith("-"):
            return word if word in STANDALONE else None
        name = word.split("=", 1)[0]
        if name in _FLAGS_WITH_VALUE:
            i += 1 if "=" in word else 2
        elif word in _FLAGS_WITHOUT_VALUE or (len(word) > 2 and word[0] == "-" and set(word[1:]) == {"v"}):
            i += 1
        else:
            return None
    return None


def skip_teardown() -> None:
    """Called by a command that has closed and flushed all it wrote: its process may end
    without the interpreter's teardown (see the module docstring)."""
    global _skip_teardown
    _skip_teardown = True


def _flush_all() -> None:
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing more can reach it
            pass


def main(argv: Optional[List[str]] = None) -> None:
    """`strongroom ...` (console script and `python -m pipelines`): run the command, then exit
    with its code; without teardown when the command asked for that."""
    from pipelines.cli import main as cli_main

    code = cli_main(argv)
    if _skip_teardown:
        _flush_all()
        os._exit(code)
    sys.exit(code)
