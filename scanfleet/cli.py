"""Command line of scanfleet: ``scanfleet NOUN COMMAND ...`` (also ``python -m scanfleet``).

One command per noun, along the data path: ``source`` (nmap sources), ``probes`` (service probes files),
``targets`` (targets and scope), ``run`` (plan a run, a run's status), ``merge`` (the shards' nmap XML into
one report), ``pairs`` (two-phase scanning: phase-1 pairs, phase-2 jobs, their merge), ``recover`` (pass 2
of a scan: the open ports pass 1 left unidentified, its jobs, its merge). Each noun's module
registers it through a ``register(subparsers)`` function; a command sets ``func`` to a callable taking the
parsed args and returning an exit code. A module that cannot be imported is an error, never skipped.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from scanfleet import ScanfleetError

# noun -> the module that registers it (register(subparsers) adds the noun and its commands)
NOUNS = {
    "source": "scanfleet.source",
    "probes": "scanfleet.probes.cli",
    "targets": "scanfleet.targets",
    "run": "scanfleet.runcli",
    "merge": "scanfleet.report",
    "pairs": "scanfleet.pairs",
    "diff": "scanfleet.diff",
    "recover": "scanfleet.recover",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scanfleet", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for module_name in NOUNS.values():
        importlib.import_module(module_name).register(sub)
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
