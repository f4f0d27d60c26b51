"""The `strongroom` command: global options, one sub-command per module in `pipelines.commands`.

Each command module exposes `register(subparsers)`, which adds its parser and sets `run`
(a function `run(args) -> int`). Errors derived from `StrongroomError` become a one-line
message on stderr and the exit code the error carries (2 usage/config/input, 1 preservation).
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


class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on usage errors already; keep its message but name the program."""


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="strongroom",
        description="Long-term digital preservation: BagIt deposits, verified replicas, fixity audits.",
    )
    parser.add_argument("--version", action="version", version=f"strongroom {__version__}")
    parser.add_argument(
        "--config",
        default=None,
        help="config file (default: $STRONGROOM_CONFIG or ./strongroom.yaml)",
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    parser.add_argument("--workers", type=positive_int, default=1, help="parallel workers (default 1)")
    parser.add_argument(
        "--scheduler-url", default=None, help="use a central luigid scheduler instead of the local one"
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in command_modules():
        module = importlib.import_module(f"pipelines.commands.{name}")
        module.register(sub)
    return parser


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


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2),
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        code = args.run(args)
    except StrongroomError as exc:
        print(f"strongroom {args.command}: error: {exc}", file=sys.stderr)
        for problem in getattr(exc, "problems", [])[:200]:
            print(f"  - {problem}", file=sys.stderr)
        extra = len(getattr(exc, "problems", [])) - 200
        if extra > 0:
            print(f"  ... and {extra} more", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"strongroom {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(code or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
