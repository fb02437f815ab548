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
import time
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from scanfleet import ScanfleetError, twophase
from scanfleet.collect import merge_inputs
from scanfleet.files import atomic_write
from scanfleet.merge import ShardReport, _children, host_key, is_identified
from scanfleet.pairs import (
    DEFAULT_JOB_COST,
    GROUPINGS,
    Job,
    PairMap,
    PhaseTwoState,
    _labelled,
    encode_map,
    group_jobs,
    job_view,
    load_phase2,
    merge_two_phase,
    phase2_inputs,
    record_phase2,
    save_phase2,
    write_residual,
)
from scanfleet.state import counted, load_state, private_dir, run_dir

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
        "line": f"pass 2 named {len(named)} of {counted(total, 'unnamed port')}",
        "named_ports": [dataclasses.asdict(n) for n in named.values()],
    }
    return result


# --------------------------------------------------------------------------------------------------
# A run's pass 2 (the nmap_scan role, through the scan_recover module): RESULTS/RUN_ID/pass2/
#
# pass2/selection.json holds the ports pass 2 scans (:func:`select`, once: a resumed pass 2 keeps them), and
# pass2/phase2.json its jobs, in the phase-2 state of :mod:`scanfleet.pairs` (its recording, fetch checks and
# merge inputs are reused as they are); the fetched outputs go to pass2/HOST/JOB_ID/. Unlike phase 2, a pass-2
# job is never handed to another scanner (the ports are that scanner's view): a job whose scanner is not
# available waits for a later run of the same run id, and one that failed or whose scanner was lost while it ran
# is recorded so; either way its ports keep their fast-pass entries (reported unnamed, never dropped).

PASS2_DIR = "pass2"
SELECTION_FILE = "selection.json"
# options of pass 2 left out of the user's service-scan options: it reruns the banner wait, not the scripts
_PASS2_DROP = ("-sV", "-sC", "-A", "-O", "--traceroute", "--osscan-limit", "--osscan-guess", "--fuzzy")
_PASS2_DROP_PREFIXES = ("--script", "--osscan-", "--max-os-tries")
# -sV always runs NSE's "version" scripts (nmap.cc: o.scriptversion follows o.servicescan), and no option turns
# them off. They ran in the fast pass on these same ports; in pass 2 they are capped: in the lab sweep the HTTP
# ones (vmware-version, hnap-info, http-trane-info ...) waited 4 s on silent ports 443/8000/8443, 4 of the 10.8 s
# of target-web's pass-2 job.
PASS2_SCRIPT_TIMEOUT = "1s"


def wants_service_scan(options: Sequence[str]) -> bool:
    """True when the scan's nmap OPTIONS run the service scan (``-sV`` or ``-A``): only then has pass 2 a use."""
    return any(str(o) in ("-sV", "-A") for o in options)


def pass2_options(options: Sequence[str]) -> list[str]:
    """The nmap options of pass 2 from the scan's OPTIONS: the service-scan options of a two-phase scan (no
    ``-p``, no host discovery, ``-Pn``: :func:`scanfleet.twophase.phase_options`) without scripts, OS detection
    and traceroute (``-A`` becomes ``-sV``), then ``--script-timeout`` :data:`PASS2_SCRIPT_TIMEOUT` (the version
    scripts -sV runs anyway) and ``-sV``."""
    service = twophase.phase_options(options, "service")
    out, skip = [], False
    for option in service:
        if skip:
            skip = False
            continue
        name = option.split("=", 1)[0]
        if name in ("--script", "--script-args", "--script-args-file", "--script-timeout", "--max-os-tries") \
                and "=" not in option:
            skip = True
            continue
        if option in _PASS2_DROP or name.startswith(_PASS2_DROP_PREFIXES):
            continue
        out.append(option)
    return [*out, "--script-timeout", PASS2_SCRIPT_TIMEOUT, "-sV"]


def fast_inputs(results: str | Path, run_id: str, *, two_phase: bool = False) -> list[Pass1Input]:
    """The fast pass's nmap XML with the service scan, and the scanner of each: the run's attempts
    (:func:`run_inputs`), or in a two-phase run its recorded phase-2 jobs (phase 1 ran no service scan)."""
    directory = run_dir(Path(results), run_id)
    if not two_phase:
        return run_inputs(directory)
    state = load_phase2(directory / twophase.PHASE2_DIR)
    if state is None:
        raise ScanfleetError(f"{directory / twophase.PHASE2_DIR}: no phase-2 state; pass 2 of a two-phase run "
                             "follows its phase 2 (re-run the same command to finish it)")
    hosts = {j.id: j.host for j in state.jobs}
    return [Pass1Input(hosts[label], label, path) for label, path in phase2_inputs(state)]


def pass2_dir(results: str | Path, run_id: str) -> Path:
    return run_dir(Path(results), run_id) / PASS2_DIR


def load_selection(directory: str | Path) -> Selection | None:
    """The selection saved in DIRECTORY (a run's pass2/), None when there is none."""
    path = Path(directory) / SELECTION_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return Selection([Candidate(**c) for c in data["candidates"]], int(data["open_ports"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise ScanfleetError(f"{path}: not a pass-2 selection ({exc}); move the run's pass2/ away to plan pass 2 "
                             "afresh") from None


def _job_rate(jobs: int, rate_budget: Any, rate_cap: Any) -> int | None:
    """Each pass-2 job's --max-rate: the fleet's budget split evenly over the jobs (never above the per-scanner
    cap, at least 1: nmap's smallest rate), None without a budget or cap. Both were checked with the scan's."""
    limits = [int(v) for v in (int(rate_budget) // max(jobs, 1) if rate_budget else None, rate_cap) if v is not None]
    return max(1, min(limits)) if limits else None


def plan_run(*, results: str | Path, run_id: str, available: Sequence[str], unavailable: Mapping[str, str],
             two_phase: bool = False, options: Sequence[str] = (), wait_ms: Any = DEFAULT_WAIT_MS,
             rate_budget: Any = None, rate_cap: Any = None, write: bool = True,
             now: float | None = None) -> dict[str, Any]:
    """Plan (once) or resume the run's pass 2: select the ports (:func:`select` of :func:`fast_inputs`), group
    them into jobs per scanner (:func:`plan`) and save both in ``RUN/pass2``. A job is never handed to another
    scanner: one whose scanner is not AVAILABLE (UNAVAILABLE says why) waits, unrun, for a later run of the same
    run id, and its ports keep the fast pass's entries meanwhile.
    Returns the jobs to run per scanner (``assignments``, as the phase-2 plan gives them), the pass-2 nmap
    ``options`` and ``environment`` (WAIT_MS checked first: nothing is planned with a bad wait), and lines."""
    environment = wait_environment(wait_ms)
    now = time.time() if now is None else now
    directory = pass2_dir(results, run_id)
    state = load_phase2(directory)
    selection = load_selection(directory) if state is not None else None
    changed = False
    if state is None or selection is None:
        selection = select(fast_inputs(results, run_id, two_phase=two_phase))
        jobs = plan(selection)
        rate = _job_rate(len(jobs), rate_budget, rate_cap)
        for job in jobs:
            job.created, job.max_rate = now, rate
        pairs = {a: {p: set(ports) for p, ports in m.items()} for m in selection.pairs().values()
                 for a, m in m.items()}
        state = PhaseTwoState(pairs=encode_map(pairs), targets=[], created=now, updated=now, seq=len(jobs),
                              jobs=jobs)
        state.events.append({"time": now, "text": f"pass 2 planned: {counted(len(selection.candidates), 'port')} "
                                                  f"of {selection.open_ports} open in {counted(len(jobs), 'job')}"})
        changed = True
    up = set(available)
    running = [j for j in state.jobs if j.status == "assigned"]
    waiting = [j for j in running if j.host not in up]
    if write and changed:
        private_dir(directory)
        with atomic_write(directory / SELECTION_FILE, mode=0o600) as f:
            json.dump(selection.to_dict(), f, indent=1, sort_keys=True)
            f.write("\n")
        save_phase2(directory, state)
    reasons = ", ".join(f"{n} {r}" for r, n in selection.reasons().items() if n)
    lines = [f"pass 2: {counted(len(selection.candidates), 'port')} of {selection.open_ports} open left unnamed "
             f"by the fast pass" + (f" ({reasons})" if reasons else "") + f", {counted(len(state.jobs), 'job')}, "
             f"banner wait {environment[SERVICE_WAIT_VAR]} ms"]
    lines += [f"{j.host}: {j.id} -p {j.nmap_ports} -iL {' '.join(j.lines)}"
              + (f" --max-rate {j.max_rate}" if j.max_rate else "") for j in running if j.host in up]
    lines += [f"pass-2 job {j.id} not run now: {j.host} {unavailable.get(j.host, 'not available')}; its "
              f"{counted(j.size, 'port')} keep the fast pass's entries until a run of the same run id runs it"
              for j in waiting]
    total = len(selection.candidates)
    done = sum(j.size for j in state.jobs if j.status != "assigned")
    return {"changed": changed, "dir": str(directory), "lines": lines, "options": pass2_options(options),
            "environment": environment, "ports": total, "reasons": selection.reasons(),
            "assignments": {h: [job_view(j) for j in running if j.host == h] for h in sorted(up)},
            "total": total, "covered": done, "done": not running, "waiting": [j.id for j in waiting]}


def record_run(*, results: str | Path, run_id: str, outcomes: Sequence[Mapping[str, Any]], write: bool = True,
               now: float | None = None) -> dict[str, Any]:
    """Record the run's pass-2 jobs (:func:`scanfleet.pairs.record_phase2` in ``RUN/pass2``: the fetched XML
    checked against the sha256 the scanner reported). A job that failed or was lost is not run again: its ports
    keep the fast pass's entries. Returns the notes, the scanners lost and ``pending`` (jobs still assigned)."""
    result = record_phase2(directory=pass2_dir(results, run_id), outcomes=outcomes, write=write, now=now)
    notes = [note.replace("are planned again", "keep the fast pass's entries") for note in result["notes"]]
    return {**result, "notes": notes,
            "pending": sorted(j for j, status in result["statuses"].items() if status == "assigned")}


def run_pass2(results: str | Path, run_id: str) -> tuple[Selection, list[tuple[str, Path]]] | None:
    """The run's pass-2 selection and the (job id, XML) of its recorded jobs, None when it has no pass 2."""
    directory = pass2_dir(results, run_id)
    state = load_phase2(directory)
    selection = load_selection(directory)
    if state is None or selection is None:
        return None
    return selection, phase2_inputs(state)


def merge_fast(fast_xml: str | Path, selection: Selection, pass2: Sequence[tuple[str, Path]], out: str | Path, *,
               dtd: Path | None = None, stylesheet: str | None = None) -> dict[str, Any]:
    """:func:`merge` of the fast pass's merged report FAST_XML (one input: every port once already) and PASS2."""
    return merge([Pass1Input("", "fast", Path(fast_xml))], pass2, out, selection=selection, dtd=dtd,
                 stylesheet=stylesheet)


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
