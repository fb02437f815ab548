"""Two-pass recovery of slow banners, controller side (issue 12): what pass 2 scans, and its merge.

The fast pass of a scan waits a few hundred milliseconds for a banner (the build's compiled service wait). A
service that greets only after a pause (a mail server's ``greet_pause``: Exim, Sendmail) is then named from the
port table (``smtp``) where stock nmap, waiting 6 s, names it (``Exim smtpd 4.96``). Pass 2 scans again only the
open ports the fast pass left unidentified, on the scanner that scanned them, with a wait long enough for
greeting pauses: the same build, its wait raised when nmap runs (``SCANFLEET_SERVICE_WAIT_MS``, patch
60-runtime-waits), with the NULL probe alone (:mod:`scanfleet.probes.null_only`): a greeting is what the NULL
probe waits for, and every other probe was already sent in pass 1.

Which ports (:func:`select`)
----------------------------
An open TCP port of the pass-1 nmap XML (every shard's file, as the merge takes them) needs pass 2 when no
input names it fully. Named fully: nmap matched the service (:func:`scanfleet.merge.is_identified`: probed, not
``unknown`` or ``tcpwrapped``) and gave its product. The reasons a port needs pass 2, as counted in the summary:

* ``none``: no ``<service>`` at all;
* ``table``: a name from nmap's port table only (``method="table"``), no reply to match;
* ``tcpwrapped``: the connection closed before the tcpwrapped wait ended;
* ``unknown``: a reply nmap did not match (a ``servicefp``, whatever the name), or probed and not matched (a name
  ending in ``?``);
* ``softmatch``: probed and named without a product: a ``softmatch`` line (``ftp``, ``smtp``), or a ``match``
  line without ``p//`` (nmap's XML cannot tell the two apart; pass 2 leaves such a port as it was unless it
  names the product).

A port that several inputs report (a retried attempt) needs pass 2 only if none of them names it fully; it goes
to the scanner of the first input that reported it. UDP and SCTP ports are not selected: a greeting pause is a
TCP banner, and the NULL probe is TCP only.

Jobs (:func:`plan`)
-------------------
Each scanner's ports become nmap jobs with :func:`scanfleet.pairs.group_jobs` (an ``-iL`` host list and a
``-p`` list per job, one address family each), ids ``pass2-NNN``. A union job may probe a port that another
host of the job needs, on a host that does not: pass 2's entry for such a port is never used (below).

Merge (:func:`merge`)
---------------------
Pass 2 *names* a port when its entry is open and identified and either has a product or the pass-1 entry was
not identified at all (``table``/``tcpwrapped``/``unknown``/``none``). Only the named entries are kept from the
pass-2 files (copies without the other ports and without ``<extraports>``, ``pass2-named/LABEL.xml``); the
pass-1 files lose the same ports (:func:`scanfleet.pairs.write_residual`) and both are merged by
:func:`scanfleet.pairs.merge_two_phase`. So a named port's pass-2 entry replaces its pass-1 entries, no port
appears twice, and a port pass 2 did not name keeps its pass-1 entry. The summary line says "pass 2 named N of M
ports".
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from scanfleet import ScanfleetError
from scanfleet.collect import merge_inputs
from scanfleet.merge import ShardReport, _children, host_key, is_identified
from scanfleet.pairs import (
    DEFAULT_JOB_COST,
    GROUPINGS,
    Job,
    PairMap,
    _labelled,
    group_jobs,
    merge_two_phase,
    write_residual,
)
from scanfleet.state import counted, load_state, private_dir

PROTOCOLS = ("tcp",)
REASONS = ("none", "table", "tcpwrapped", "unknown", "softmatch")
# The banner wait of pass 2 (nmap_scan_recover_wait_ms): stock nmap's NULL probe waits 6 s, for greeting pauses.
DEFAULT_WAIT_MS = 6000
# What the build's patch 60-runtime-waits accepts (nmap's own range for the probes file's totalwaitms).
WAIT_RANGE = (100, 300000)
SERVICE_WAIT_VAR = "SCANFLEET_SERVICE_WAIT_MS"
STAGES = ("pass1", "pass2")

Key = tuple[str, str, int]  # (address, protocol, port)


class Pass1Input(NamedTuple):
    """One pass-1 nmap XML: the scanner that ran it, its label in the merge, the file."""

    scanner: str
    label: str
    xml: Path


def _service(port: ET.Element) -> dict[str, str] | None:
    service = port.find("service")
    return None if service is None else dict(service.attrib)


def named_fully(service: Mapping[str, str] | None) -> bool:
    """True when nmap matched the service (:func:`scanfleet.merge.is_identified`) and gave its product."""
    return is_identified(service) and bool((service or {}).get("product", "").strip())


def reason(service: Mapping[str, str] | None) -> str | None:
    """Why an open port with SERVICE needs pass 2 (one of :data:`REASONS`), or None when it is named fully."""
    if named_fully(service):
        return None
    if not service:
        return "none"
    if is_identified(service):
        return "softmatch"
    if service.get("name") == "tcpwrapped":
        return "tcpwrapped"
    return "unknown" if service.get("method") == "probed" or service.get("servicefp") else "table"


@dataclasses.dataclass
class Candidate:
    """An open port pass 2 scans again: where, on which scanner, and its pass-1 service."""

    scanner: str
    address: str
    protocol: str
    port: int
    reason: str
    service: dict[str, str] | None  # the pass-1 <service> attributes (the input that reported it first)

    @property
    def key(self) -> Key:
        return (self.address, self.protocol, self.port)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class Selection:
    """The ports pass 2 scans (:func:`select`), in input order."""

    candidates: list[Candidate]
    open_ports: int  # open ports of the selected protocols in pass 1, each counted once

    def pairs(self) -> dict[str, PairMap]:
        """scanner -> address -> protocol -> ports."""
        out: dict[str, PairMap] = {}
        for c in self.candidates:
            out.setdefault(c.scanner, {}).setdefault(c.address, {}).setdefault(c.protocol, set()).add(c.port)
        return out

    def by_key(self) -> dict[Key, Candidate]:
        return {c.key: c for c in self.candidates}

    def reasons(self) -> dict[str, int]:
        return {r: sum(c.reason == r for c in self.candidates) for r in REASONS}

    def to_dict(self) -> dict[str, Any]:
        return {"open_ports": self.open_ports, "ports": len(self.candidates), "reasons": self.reasons(),
                "candidates": [c.to_dict() for c in self.candidates]}


def _entries(path: Path) -> Any:
    """(address, protocol, port, state, service) of every port of the complete hosts of nmap XML PATH."""
    for kind, elem in _children(path, ShardReport(path=path, label=str(path))):
        if kind != "child" or elem.tag != "host":
            continue
        address = host_key(elem)
        ports = elem.find("ports")
        for port in ports.findall("port") if address is not None and ports is not None else ():
            state = port.find("state")
            yield (address, port.get("protocol", "tcp"), int(port.get("portid", "0")),
                   None if state is None else state.get("state"), _service(port))


def select(inputs: Sequence[Pass1Input], *, protocols: Sequence[str] = PROTOCOLS) -> Selection:
    """The open ports of the pass-1 INPUTS that pass 2 scans again (rules in the module docstring)."""
    found: dict[Key, Candidate] = {}
    named: set[Key] = set()
    seen: set[Key] = set()
    for item in inputs:
        if not Path(item.xml).is_file():
            raise ScanfleetError(f"{item.xml}: no such file; check the path of the shard's nmap .xml "
                                 f"(scanner {item.scanner}, {item.label})")
        for address, protocol, port, state, service in _entries(Path(item.xml)):
            if state != "open" or protocol not in protocols:
                continue
            key = (address, protocol, port)
            seen.add(key)
            why = reason(service)
            if why is None:
                named.add(key)
            elif key not in found:
                found[key] = Candidate(item.scanner, address, protocol, port, why, service)
    return Selection([c for key, c in found.items() if key not in named], len(seen))


def run_inputs(run_dir: str | Path) -> list[Pass1Input]:
    """The pass-1 inputs of a run directory (RESULTS/RUN_ID): the attempts the merge takes, with their scanner."""
    run_dir = Path(run_dir)
    state = load_state(run_dir)
    if state is None:
        raise ScanfleetError(f"{run_dir}/state.json: no such run state; give the run's directory RESULTS/RUN_ID")
    scanner = {a.id: a.host for a in state.attempts}
    return [Pass1Input(scanner[label], label, path) for label, path in merge_inputs(state, run_dir.parent)]


def plan(selection: Selection, *, grouping: str = "union", job_cost: int = DEFAULT_JOB_COST) -> list[Job]:
    """The pass-2 nmap jobs of SELECTION: per scanner (name order), :func:`scanfleet.pairs.group_jobs`."""
    jobs: list[Job] = []
    for scanner, pairs in sorted(selection.pairs().items()):
        for job in group_jobs(scanner, pairs, grouping=grouping, job_cost=job_cost):
            job.id = f"pass2-{len(jobs) + 1:03d}"
            jobs.append(job)
    return jobs


def wait_environment(wait_ms: Any) -> dict[str, str]:
    """The environment that sets pass 2's banner wait in a build with runtime waits; WAIT_MS is checked first."""
    low, high = WAIT_RANGE
    if isinstance(wait_ms, bool) or not isinstance(wait_ms, int) or not low <= wait_ms <= high:
        raise ScanfleetError(f"pass-2 banner wait {wait_ms!r} is not a whole number of milliseconds from {low} to "
                             f"{high}; give e.g. {DEFAULT_WAIT_MS} (nmap_scan_recover_wait_ms)")
    return {SERVICE_WAIT_VAR: str(wait_ms)}


def pass2_names(before: Mapping[str, str] | None, after: Mapping[str, str] | None) -> bool:
    """True when pass 2's service AFTER names a port whose pass-1 service was BEFORE (module docstring)."""
    if not is_identified(after):
        return False
    return named_fully(after) or not is_identified(before)


@dataclasses.dataclass
class Named:
    """A port pass 2 named: its pass-1 and pass-2 services."""

    address: str
    protocol: str
    port: int
    before: dict[str, str] | None
    after: dict[str, str]


def merge(pass1: Sequence[Pass1Input], pass2: Sequence[tuple[str, Path]], out: str | Path, *,
          selection: Selection | None = None, dtd: Path | None = None, stylesheet: str | None = None) -> dict[str, Any]:
    """Merge the PASS1 inputs and the PASS2 (job label, nmap XML) files into OUT: the ports that pass 2 scanned for
    good reason (SELECTION, by default :func:`select` of PASS1) and named take its entries, every other port keeps
    pass 1's (rules in the module docstring). Returns the merge's summary with ``recover``: the counts, the line
    for people and the named ports."""
    out = Path(out)
    selection = select(pass1) if selection is None else selection
    wanted = selection.by_key()
    named: dict[Key, Named] = {}
    drop: list[dict[str, set[tuple[str, int]]]] = []
    for _, path in pass2:
        if not Path(path).is_file():
            raise ScanfleetError(f"{path}: no such file; check the path of the pass-2 job's nmap .xml")
        unused: dict[str, set[tuple[str, int]]] = {}
        for address, protocol, port, state, service in _entries(Path(path)):
            key = (address, protocol, port)
            candidate = wanted.get(key)
            if (candidate is None or key in named or state != "open" or service is None
                    or not pass2_names(candidate.service, service)):
                unused.setdefault(address, set()).add((protocol, port))
            else:
                named[key] = Named(address, protocol, port, candidate.service, service)
        drop.append(unused)
    copies_dir = out.parent / f"{STAGES[1]}-named"
    private_dir(copies_dir)
    copies = []
    for (label, path), unused in zip(pass2, drop, strict=True):
        copy = copies_dir / f"{label}.xml"
        write_residual(Path(path), copy, unused, extraports=False)
        copies.append((label, copy))
    result = merge_two_phase([(i.label, Path(i.xml)) for i in pass1], copies, out, dtd=dtd, stylesheet=stylesheet,
                             stages=STAGES)
    result.pop("replaced_ports", None)
    total = len(selection.candidates)
    result["recover"] = {
        "ports": total, "named": len(named), "reasons": selection.reasons(),
        "line": f"pass 2 named {len(named)} of {counted(total, 'port')}",
        "named_ports": [dataclasses.asdict(n) for n in named.values()],
    }
    return result


# --------------------------------------------------------------------------------------------------
# Command line: scanfleet recover plan|merge


def _cmd_plan(args: argparse.Namespace) -> int:
    selection = select(run_inputs(args.run_dir))
    jobs = plan(selection, grouping=args.grouping, job_cost=args.job_cost)
    if args.json:
        print(json.dumps({**selection.to_dict(), "jobs": [job.to_dict() for job in jobs]}, indent=1))
        return 0
    reasons = ", ".join(f"{n} {r}" for r, n in selection.reasons().items() if n)
    print(f"pass 2: {counted(len(selection.candidates), 'port')} of {selection.open_ports} open"
          + (f" ({reasons})" if reasons else "") + f" in {counted(len(jobs), 'job')}")
    for job in jobs:
        print(f"{job.id} {job.host} -p {job.nmap_ports} -iL: {' '.join(job.lines)}")
    return 0


def _cmd_merge(args: argparse.Namespace) -> int:
    result = merge(run_inputs(args.run_dir), _labelled(args.pass2), args.out,
                   dtd=Path(args.dtd) if args.dtd else None)
    print(f"{args.out}: {result['recover']['line']}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("recover", help="pass 2 of a scan: the open ports pass 1 left unidentified",
                            description="Two-pass recovery of slow banners (scanfleet.recover).")
    cmds = parser.add_subparsers(dest="recover_command", required=True)
    p = cmds.add_parser("plan", help="the ports pass 2 scans again and its jobs, per scanner",
                        description="Read the recorded attempts of a run and print the open ports pass 1 left "
                                    "unidentified, grouped into nmap jobs per scanner (nothing is written).")
    p.add_argument("run_dir", metavar="RUN_DIR", help="the run's directory, RESULTS/RUN_ID")
    p.add_argument("--grouping", choices=GROUPINGS, default="union")
    p.add_argument("--job-cost", type=int, default=DEFAULT_JOB_COST, metavar="PROBES")
    p.add_argument("--json", action="store_true", help="the ports and jobs as JSON")
    p.set_defaults(func=_cmd_plan)
    m = cmds.add_parser("merge", help="merge a run's pass 1 with pass 2's nmap XML",
                        description="Merge the run's pass-1 XML with pass 2's: the ports pass 2 named take its "
                                    "entries, every other port keeps pass 1's; says how many pass 2 named.")
    m.add_argument("run_dir", metavar="RUN_DIR", help="the run's directory, RESULTS/RUN_ID")
    m.add_argument("--pass2", nargs="+", required=True, metavar="XML", help="the pass-2 jobs' nmap XML")
    m.add_argument("-o", "--out", required=True, help="the merged nmap XML to write")
    m.add_argument("--dtd", help="validate the result against this nmap.dtd")
    m.set_defaults(func=_cmd_merge)
