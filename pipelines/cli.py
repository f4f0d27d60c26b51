"""The `strongroom` command: global options, one sub-command per module in `pipelines.commands`.

Each command module exposes `register(subparsers)`, which adds its parser and sets `run`
(a function `run(args) -> int`). Errors derived from `StrongroomError` become a one-line
message on stderr and the exit code the error carries (2 usage/config/input, 1 preservation);
with `--json` also one JSON document on stdout (`{"ok": false, "exit_code": ..., "error": ...,
"problems": [...]}`), usage errors included. The global options are accepted before and after
the command (and after a nested action such as `catalog check`).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from typing import List, Optional

from strongroom import __version__
from strongroom.errors import StrongroomError

from pipelines.output import emit_error
from pipelines.entry import standalone_command

# The order of `strongroom --help`; any other module in pipelines/commands/ follows, by name.
COMMAND_ORDER = [
    "init", "deposit", "status", "audit", "restore", "report", "validate", "identify",
    "ledger", "catalog_cmd", "demo",
]


def command_modules() -> List[str]:
    import pkgutil

    import pipelines.commands as package

    found = {m.name for m in pkgutil.iter_modules(package.__path__) if not m.name.startswith("_")}
    return [n for n in COMMAND_ORDER if n in found] + sorted(found - set(COMMAND_ORDER))


class _UsageExit(SystemExit):
    """argparse's exit 2 on a usage error, carrying the message so `--json` can report it too."""

    def __init__(self, message: str):
        super().__init__(2)
        self.message = message


class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on usage errors already; keep its message but name the program."""

    def error(self, message: str):  # type: ignore[override]
        self.print_usage(sys.stderr)
        text = f"{self.prog}: error: {message}"
        print(text, file=sys.stderr)
        raise _UsageExit(text)


#: Option strings of the global options, as written on the command line.
GLOBAL_FLAGS = ("--config", "--json", "--workers", "--scheduler-url", "-v", "--verbose", "--progress",
                "--no-progress")


def _add_global_options(parser: argparse.ArgumentParser, depth: int) -> None:
    """The global options, on the top parser (depth 0, with the defaults) and on every sub-command.

    On sub-commands each default is SUPPRESS, so a value given before the command is kept unless
    it is given again after it (the later one wins, as usual). An option a command defines itself
    (identify's --json, --workers) is left as the command has it. `-v` counts into one dest per
    level, summed by `verbosity()`, so `-v status -v` means -vv.
    """
    top = depth == 0
    default = (lambda value: value) if top else (lambda value: argparse.SUPPRESS)
    taken = parser._option_string_actions
    group = parser if top else parser.add_argument_group("global options (also accepted before the command)")
    if "--config" not in taken:
        group.add_argument("--config", default=default(None),
                           help="config file (default: $STRONGROOM_CONFIG or ./strongroom.yaml)")
    if "--json" not in taken:
        group.add_argument("--json", action="store_true", default=default(False),
                           help="machine-readable output on stdout")
    if "--workers" not in taken:
        group.add_argument("--workers", type=positive_int, default=default(1),
                           help="parallel workers (default 1)")
    if "--scheduler-url" not in taken:
        group.add_argument("--scheduler-url", default=default(None),
                           help="use a central luigid scheduler instead of the local one")
    if "--progress" not in taken:
        group.add_argument("--progress", dest="progress", action="store_const", const=True, default=default(None),
                           help="progress lines on stderr even when it is not a terminal (then once, at the end)")
        group.add_argument("--no-progress", dest="progress", action="store_const", const=False,
                           default=default(None), help="never show progress lines (default: only at a terminal)")
    if "-v" not in taken and "--verbose" not in taken:
        group.add_argument("-v", "--verbose", action="count", default=0 if top else argparse.SUPPRESS,
                           dest="verbose" if top else f"_verbose_{depth}", help="more log output")


def _sub_parsers(parser: argparse.ArgumentParser) -> List[argparse.ArgumentParser]:
    """The parsers of `parser`'s sub-commands (aliases counted once)."""
    found: List[argparse.ArgumentParser] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                if all(child is not f for f in found):
                    found.append(child)
    return found


def _add_global_options_everywhere(parser: argparse.ArgumentParser, depth: int = 1) -> None:
    for child in _sub_parsers(parser):
        _add_global_options(child, depth)
        _add_global_options_everywhere(child, depth + 1)


def build_parser(only: Optional[str] = None) -> argparse.ArgumentParser:
    """The parser of every command, or of `only` that one (pipelines.entry.standalone_command)."""
    parser = _Parser(
        prog="strongroom",
        description="Long-term digital preservation: BagIt deposits, verified replicas, fixity audits.",
    )
    parser.add_argument("--version", action="version", version=f"strongroom {__version__}")
    _add_global_options(parser, 0)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in [only] if only else command_modules():
        module = importlib.import_module(f"pipelines.commands.{name}")
        module.register(sub)
    _add_global_options_everywhere(parser)
    return parser


def verbosity(args: argparse.Namespace) -> int:
    """Every -v on the line, before and after the command (each level counts into its own dest)."""
    total = getattr(args, "verbose", 0) or 0
    for key in [k for k in vars(args) if k.startswith("_verbose_")]:
        total += getattr(args, key) or 0
        delattr(args, key)
    return total


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number")
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def config_path(args: argparse.Namespace) -> str:
    """Where the config file is: --config, then $STRONGROOM_CONFIG, then ./strongroom.yaml."""
    return args.config or os.environ.get("STRONGROOM_CONFIG") or os.path.join(os.getcwd(), "strongroom.yaml")


def _json_requested(argv: List[str]) -> bool:
    """Whether `--json` is on the line, for errors met before (or while) it is parsed."""
    head = argv[:argv.index("--")] if "--" in argv else argv
    return "--json" in head


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(standalone_command(argv))
    try:
        args = parser.parse_args(argv)
    except _UsageExit as exc:
        if _json_requested(argv):
            emit_error(2, exc.message)
        raise
    args.verbose = verbosity(args)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2),
        format="%(levelname)s %(name)s: %(message)s",
    )
    as_json = bool(getattr(args, "json", False))
    from pipelines.progress import forced_mode

    forget_opened_catalogs()
    try:
        with forced_mode(getattr(args, "progress", None)):
            code = args.run(args)
    except StrongroomError as exc:
        print(f"strongroom {args.command}: error: {exc}", file=sys.stderr)
        problems = list(getattr(exc, "problems", []))
        for problem in problems[:200]:
            print(f"  - {problem}", file=sys.stderr)
        extra = len(problems) - 200
        if extra > 0:
            print(f"  ... and {extra} more", file=sys.stderr)
        if as_json:
            # A ConfigError lists its further problems inside its message and keeps them in
            # `.issues`; the JSON document gives them as `problems`, one string each.
            issues = list(getattr(exc, "issues", None) or [])
            if issues and not problems:
                emit_error(exc.exit_code, str(exc).split("\n", 1)[0], [str(i) for i in issues])
            else:
                emit_error(exc.exit_code, str(exc), problems)
        anchor_after(args)  # after a failure too: a deposit that stopped half way may have recorded events
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"strongroom {args.command}: interrupted", file=sys.stderr)
        if as_json:
            emit_error(130, "interrupted")
        return 130
    return max(int(code or 0), anchor_after(args))


def forget_opened_catalogs() -> None:
    """Before the command: forget catalogs noted earlier in this process (tests run many
    commands in one), so that what the command opens is noted with its ledger head then."""
    if "catalog.anchors" not in sys.modules:
        return   # no catalog was opened in this process (nor any noted): no need to import it
    from catalog.anchors import take_opened

    take_opened()


def anchor_after(args: argparse.Namespace) -> int:
    """Write a ledger checkpoint to every storage target of each catalog the command opened whose
    ledger head moved meanwhile (issue 17, catalog.anchors); 1 if a target could not be anchored
    (a warning names it and why), else 0. The one call site, so every command that records
    events is anchored without doing anything itself; a command that recorded nothing costs one
    listing of the catalog's events/. Never raises: anchoring must not turn a command's answer
    into a traceback."""
    if "catalog.anchors" not in sys.modules:
        return 0   # the command opened no catalog (identify, validate): nothing can have moved
    from catalog.anchors import anchor_all, ledger_seq, take_opened

    code = 0
    for config, store, seq in take_opened():
        try:
            if ledger_seq(store) <= seq:
                continue
            report = anchor_all(config, store)
        except (StrongroomError, OSError) as exc:
            print(f"strongroom {args.command}: warning: the ledger could not be anchored in storage: {exc}",
                  file=sys.stderr)
            code = 1
            continue
        for failed in report.failed:
            print(f"strongroom {args.command}: warning: ledger checkpoint not written to {failed.target}: "
                  f"{failed.message} (the next command that records events tries again)", file=sys.stderr)
        code = max(code, 1 if report.failed else 0)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
