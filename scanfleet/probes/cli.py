"""``scanfleet probes merge|check|validate`` (see :mod:`scanfleet.probes`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from scanfleet import ScanfleetError
from scanfleet.probes import harvest as hv
from scanfleet.probes.check import Problem, precheck_file, precheck_rules
from scanfleet.probes.merging import merge, merge_files, write_merged
from scanfleet.probes.model import Origin
from scanfleet.probes.null_only import write_null_only
from scanfleet.probes.parsing import parse_file, parse_rules_file, read_text
from scanfleet.probes.validate import validate_with_nmap

# --------------------------------------------------------------------------------------------------
# Command line


def _cmd_merge(args: argparse.Namespace) -> int:
    result = merge_files(args.stock, args.rules, drop_exclude=args.drop_exclude,
                         totalwaitms=args.totalwaitms, tcpwrappedms=args.tcpwrappedms)
    for problem in result.problems:
        print(problem, file=sys.stderr)
    write_merged(result, args.output, args.nmap)
    checked = f", accepted by {args.nmap}" if args.nmap else ""
    print(f"{args.output}: {result.summary()}{checked}")
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    stock = read_text(args.stock) if args.stock else None
    problems: list[Problem] = []
    for name in args.files:
        try:
            if name.endswith(".probes"):
                rf = parse_rules_file(name)
                if stock is None:
                    problems += precheck_rules(rf)
                else:
                    merged = merge(stock, [rf], stock_path=args.stock).parsed
                    problems += precheck_file(merged, only=lambda o, path=rf.path: o.path == path)
            else:
                problems += precheck_file(parse_file(name))
        except ScanfleetError as exc:
            problems.append(Problem(Origin(name, 0), str(exc)))
    for problem in problems:
        print(f"error: {problem.message}" if problem.origin.line == 0 else problem)
    errors = sum(p.severity == "error" for p in problems)
    print(f"{len(args.files)} file(s): {errors} error(s), {len(problems) - errors} warning(s)")
    return 1 if errors else 0


def _cmd_validate(args: argparse.Namespace) -> int:
    validate_with_nmap(args.file, args.nmap)
    print(f"{args.file}: accepted by {args.nmap}")
    return 0


def _cmd_harvest(args: argparse.Namespace) -> int:
    result = hv.harvest(args.source, hv.parse_names(args.name))
    out = args.out or (str(Path(args.source) / hv.HARVEST_FILE) if Path(args.source).is_dir() else hv.HARVEST_FILE)
    changed = hv.write_harvest(result, out)
    if args.json:
        print(hv.dumps(result))
    else:
        for line in hv.summary_lines(result):
            print(line)
        print(f"{out}: {'written' if changed else 'unchanged'}; review it before copying rules into files/probes/")
    return 0


def _cmd_null_only(args: argparse.Namespace) -> int:
    print(write_null_only(args.file, args.output, args.nmap) + (f", accepted by {args.nmap}" if args.nmap else ""))
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("probes", help="parse, merge and validate nmap-service-probes files",
                            description="Parse, merge and validate nmap-service-probes files.")
    cmds = parser.add_subparsers(dest="probes_command", required=True)

    m = cmds.add_parser("merge", help="merge custom rule files into a stock nmap-service-probes",
                        description="Merge rule files (sorted by file name) into the stock file and write "
                                    "the result atomically (nothing is written on error).")
    m.add_argument("--stock", required=True, help="stock nmap-service-probes (may be an earlier merge)")
    m.add_argument("--rules", required=True, nargs="+", metavar="DIR_OR_FILE",
                   help="rule files, or directories of *.probes rule files")
    m.add_argument("--drop-exclude", action="store_true", help="remove the Exclude directive")
    m.add_argument("--totalwaitms", type=int, metavar="MS", help="set every probe's totalwaitms")
    m.add_argument("--tcpwrappedms", type=int, metavar="MS", help="set tcpwrappedms (NULL probe)")
    m.add_argument("-o", "--output", required=True, help="file to write")
    m.add_argument("--nmap", metavar="BIN", help="validate with this nmap binary before writing")
    m.set_defaults(func=_cmd_merge)

    c = cmds.add_parser("check", help="Python-side checks of rule files (*.probes) and probes files",
                        description="Check files without nmap: FILE ending in .probes is a rule file, "
                                    "anything else a full nmap-service-probes file.  Exit 1 on errors.")
    c.add_argument("files", nargs="+", metavar="FILE")
    c.add_argument("--stock", help="stock file to resolve the rule files' probe references against")
    c.set_defaults(func=_cmd_check)

    v = cmds.add_parser("validate", help="make a real nmap load a probes file",
                        description="Run nmap (in an isolated network namespace) so that it parses the "
                                    "file and compiles every regex; report its error by file:line.")
    v.add_argument("--nmap", required=True, metavar="BIN", help="nmap binary")
    v.add_argument("file", metavar="FILE")
    v.set_defaults(func=_cmd_validate)

    h = cmds.add_parser("harvest", help="draft match rules from the services a run could not name",
                        description="Group the replies of the unidentified services of a run (their servicefp) "
                                    "and write a draft match/softmatch line per group, checked, for review.")
    h.add_argument("source", metavar="RUN_DIR_OR_MERGED_XML",
                   help="a run directory (its merged.xml) or an nmap XML file")
    h.add_argument("--out", metavar="FILE",
                   help="rule file to write (default: RUN_DIR/harvest.probes, or ./harvest.probes for an XML file)")
    h.add_argument("--json", action="store_true", help="print the groups and drafts as JSON")
    h.add_argument("--name", action="append", default=[], metavar="PORT=NAME",
                   help="service name for the drafts whose ports are all PORT (repeat; e.g. --name 4222=nats)")
    h.set_defaults(func=_cmd_harvest)

    n = cmds.add_parser("null-only", help="the probes file of a scan's second pass: the NULL probe alone",
                        description="Write FILE's preamble and NULL probe (every match and softmatch line of it, "
                                    "with those rule files merged ahead of them) to OUT: the file pass 2 of a scan "
                                    "uses to wait out greeting pauses (scanfleet.recover).")
    n.add_argument("file", metavar="FILE", help="a full nmap-service-probes file (the build's, or a merged one)")
    n.add_argument("-o", "--output", required=True, help="file to write")
    n.add_argument("--nmap", metavar="BIN", help="validate with this nmap binary before writing")
    n.set_defaults(func=_cmd_null_only)
