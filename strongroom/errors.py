"""Error types shared by every package, each carrying the exit code the CLI must use.

Exit codes are part of the contract (DESIGN.md): 2 for usage, configuration or input errors,
1 for preservation problems found (invalid bag, damaged copy, altered ledger).
"""

from __future__ import annotations

from typing import Optional


class StrongroomError(Exception):
    """Base class: a message a person can act on, naming the file (and key) concerned."""

    exit_code = 2
    #: Whether running the same command again, unchanged, can succeed (a full disk freed, a volume
    #: mounted, a deposit set aside). False for errors in the input or config: those fail the same
    #: way until a person fixes them, so "rerun" advice would only mislead.
    rerun_helps = False

    def __init__(self, message: str, *, path: Optional[str] = None, key: Optional[str] = None,
                 problems: Optional[list] = None, rerun_helps: Optional[bool] = None):
        if rerun_helps is not None:
            self.rerun_helps = rerun_helps
        self.message = message
        self.problems = list(problems or [])  # every offending item, each naming its file
        self.path = None if path is None else str(path)
        self.key = key
        super().__init__(str(self))

    def __str__(self) -> str:
        where = ""
        if self.path:
            where = self.path
            if self.key:
                where += f": {self.key}"
            where += ": "
        elif self.key:
            where = f"{self.key}: "
        return f"{where}{self.message}"


class UsageError(StrongroomError):
    """The command line itself is wrong."""


class ConfigError(StrongroomError):
    """A config or policy file is missing, malformed or has a bad value."""


class InputError(StrongroomError):
    """The material handed to Strongroom cannot be taken as it is (missing source, symlink...)."""


class PreservationError(StrongroomError):
    """A preservation problem was found: bytes that do not match their checksums, an invalid bag."""

    exit_code = 1


class StagingError(StrongroomError):
    """The archive's own staging folder cannot be written (full, over quota, read-only, failing).

    A storage problem of the archive, not bad input: the source is fine and the same command
    succeeds once staging is fixed, so exit 1 and "rerun" advice (never a per-file source
    problem, which would send the depositor looking at files that are not at fault)."""

    exit_code = 1
    rerun_helps = True
