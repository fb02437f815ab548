"""Command line of scanfleet: ``scanfleet SUBCOMMAND ...`` (also ``python -m scanfleet``).

Each module registers its own subcommands through a ``register(subparsers)`` function; a
subcommand sets ``func`` to a callable taking the parsed args and returning an exit code.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from scanfleet import ScanfleetError

# Modules that contribute subcommands (each has register(subparsers)).
_MODULES = ("source", "probes", "targets", "report")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scanfleet", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in _MODULES:
        try:
            module = importlib.import_module(f"scanfleet.{name}")
        except ModuleNotFoundError as exc:  # a module not written yet
            if exc.name != f"scanfleet.{name}":
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ScanfleetError as exc:
        print(f"scanfleet {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
