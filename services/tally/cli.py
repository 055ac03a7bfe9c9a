"""The ``tally`` command line: ``tally demo`` and ``tally version`` for now.

Errors reach the user as one line on stderr and a non-zero exit code, never
as a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

import tally

Command = Callable[[argparse.Namespace], int]


def _demo(arguments: argparse.Namespace) -> int:
    from tally import demo

    return demo.main()


def _version(arguments: argparse.Namespace) -> int:
    print(f"tally {tally.__version__}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with one subcommand per action."""
    parser = argparse.ArgumentParser(
        prog="tally", description="Joint analytics over secret-shared tables."
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = commands.add_parser(
        "demo",
        help="run the engine demo: three parties on two providers' shares, checked with numpy",
    )
    demo.set_defaults(run=_demo)
    version = commands.add_parser("version", help="print the installed version")
    version.set_defaults(run=_version)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tally`` console script; returns the exit code."""
    parser = build_parser()
    arguments = parser.parse_args(argv)
    run: Command | None = getattr(arguments, "run", None)
    if run is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return run(arguments)
    except KeyboardInterrupt:
        print("tally: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # every failure becomes a message, not a traceback
        print(f"tally: error: {error or type(error).__name__}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
