"""``scanfleet run``: plan a run's round and show a run's state and coverage, from the controller.

``scanfleet run plan`` is the playbook's planner (:func:`scanfleet.plan.plan_run`) with the targets, scope
and scanners given on the command line: it writes ``RESULTS/RUN_ID/state.json`` and the shards' nmap
``-iL`` files ``RESULTS/RUN_ID/shards/NNN-HOST.targets``, exactly as ``playbooks/scan.yml`` does, so a run
planned here can be resumed by the playbook with the same targets and options, and the other way round.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from scanfleet import ScanfleetError
from scanfleet.collect import run_status
from scanfleet.intervals import RENDER_STYLES
from scanfleet.plan import plan_run
from scanfleet.report import status_lines
from scanfleet.shards import DEFAULT_BLOCK_PREFIX, MODES
from scanfleet.state import STATE_FILE, load_state
from scanfleet.targets import add_input_arguments, gather_inputs, system_resolver


def _cmd_plan(args: argparse.Namespace) -> int:
    plan, scanners = gather_inputs(args, system_resolver)
    if not scanners:
        raise ScanfleetError("no scanners given; pass --scanner NAME=WEIGHT[@ADDR] for each scanner host")
    now = time.time()
    session = args.session or time.strftime("cli-%Y%m%dT%H%M%SZ", time.gmtime(now))
    result = plan_run(results=args.results, run_id=args.run_id, plan=plan, options=args.extra,
                      weights={s.name: s.weight for s in scanners}, available=[s.name for s in scanners],
                      unavailable={}, session=session, round_no=1,
                      mode=args.mode, seed=args.seed, style=args.format, block_prefix=args.block_prefix,
                      block_prefix6=args.block_prefix6, rate_budget=args.rate_budget,
                      rate_cap=args.max_rate_per_scanner, write=not args.dry_run, now=now)
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
    else:
        print("\n".join(result["lines"]))
        print(f"state: {Path(result['dir']) / STATE_FILE}" + (" (dry run: nothing written)" if args.dry_run else ""))
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    directory = Path(args.run_dir)
    state = load_state(directory)
    if state is None:
        raise ScanfleetError(f"{directory / STATE_FILE}: no such run state; give a run's directory "
                             "(RESULTS/RUN_ID), planned by scanfleet run plan or playbooks/scan.yml")
    status = run_status(state)
    print(json.dumps(status, indent=2, sort_keys=True) if args.json else "\n".join(status_lines(status)))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``scanfleet run plan|status``."""
    parser = sub.add_parser("run", help="plan a distributed scan run; show a run's state and coverage",
                            description=__doc__.splitlines()[0])
    actions = parser.add_subparsers(dest="run_command", required=True)

    plan = actions.add_parser("plan", help="plan (or resume) a run: shard the targets between scanners",
                              description="Plan one round of a run as the playbook does; the run id is "
                                          "derived from the targets and --extra options unless given.")
    add_input_arguments(plan)
    plan.add_argument("--results", required=True, metavar="DIR", help="results directory (RESULTS)")
    plan.add_argument("--run-id", default="", metavar="ID", help="run id (default: scan- + fingerprint)")
    plan.add_argument("--mode", choices=MODES, default="contiguous")
    plan.add_argument("--seed", type=int, default=0, help="seed of the interleaved order")
    plan.add_argument("--block-prefix", type=int, default=DEFAULT_BLOCK_PREFIX[4], metavar="N",
                      help="interleaved IPv4 block size as a prefix length (default 28; grows if needed)")
    plan.add_argument("--block-prefix6", type=int, default=DEFAULT_BLOCK_PREFIX[6], metavar="N",
                      help="interleaved IPv6 block size as a prefix length (default 124)")
    plan.add_argument("--format", choices=RENDER_STYLES, default="auto",
                      help="-iL lines: CIDRs, nmap octet ranges, or whichever is shorter (default)")
    plan.add_argument("--rate-budget", metavar="PPS", default=None,
                      help="packets per second the whole fleet may send, split by weight (each scanner's nmap "
                           "--max-rate; default: no limit)")
    plan.add_argument("--max-rate-per-scanner", metavar="PPS", default=None,
                      help="packets per second any one scanner may send (default: no cap)")
    plan.add_argument("--session", default="", metavar="NAME",
                      help="the session this plan belongs to (default: cli- + the time); a session that takes over "
                           "attempts still assigned is recorded in the run")
    plan.add_argument("--dry-run", action="store_true", help="plan and print, write nothing")
    plan.add_argument("--json", action="store_true", help="print the plan as JSON")
    plan.set_defaults(func=_cmd_plan)

    status = actions.add_parser("status", help="a run's state and coverage (rounds, attempts, missing)")
    status.add_argument("run_dir", metavar="RUN_DIR", help="the run's directory, RESULTS/RUN_ID")
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    status.set_defaults(func=_cmd_status)
