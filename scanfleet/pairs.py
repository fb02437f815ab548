"""Two-phase scanning, controller side: phase-1 pairs, their shards and jobs, phase-2 state, the merge.

In two-phase mode (``nmap_scan_mode: two_phase``) the fleet first runs host discovery and a port sweep
(``-sS``/``-sT``, no ``-sV``) sharded by address, as a one-phase run does (:mod:`scanfleet.plan`). Then:

1. **Collect** (:func:`collect`): from the phase-1 nmap XML of every shard, the open (address, protocol,
   port) *pairs*, and the accounting of every target address: ``up_open`` (up, with open ports),
   ``up_none`` (up, none open), ``down``, or ``pending``. An address is down when its shard is complete
   (nmap finished with exit success) and the XML does not list it as up: nmap lists down hosts only with
   ``-v``, so "not listed" means down. A truncated or failed shard only vouches for the hosts it fully
   reports (as :meth:`scanfleet.state.Attempt.covered` does for one-phase resume): its other addresses are
   ``pending``, never down; phase 1 must scan them again before their accounting is final. Every pair's
   address must lie in the scope (:func:`scanfleet.targets.check_scope`) and in its shard's targets.
2. **Shard** (:func:`shard_pairs`): the pairs are split by their *count*, weighted by capacity with
   :func:`scanfleet.shards.largest_remainder` (the same weights and rounding as address shards). The pairs
   are ordered by (family, the host's port set, address, protocol, port) and cut into consecutive pieces
   in scanner name order, so hosts stay whole except at a cut and hosts with the same port set sit
   together.
3. **Group** (:func:`group_jobs`): each shard becomes nmap jobs, a *job* being a host list (an ``-iL``
   file) and a port list per protocol (``-p T:22,80,U:53``), one address family each (nmap needs ``-6``).
   ``union`` (the default): the hosts whose every open pair is in this shard share one job with the union
   of their ports; a host with only part of its pairs here (cut between two shards, or partly done in an
   earlier round) goes into an exact job, so no job ever probes an open port that another job scans.
   ``exact``: one job per distinct port set. :func:`grid_cost` counts the port probes a grouping sends
   (hosts x ports of every job) and the extra ones beyond the pairs; see docs/two_phase.md for the
   measurement behind the default.
4. **Phase-2 state** (:class:`PhaseTwoState`, ``phase2.json``): the pairs and every job with its status,
   as one-phase attempts: ``assigned``, ``finished`` (complete XML, exit success: all its pairs done),
   ``partial`` (the pairs of the hosts the XML fully reports are done), ``failed``, ``lost``. The pairs not
   done and not assigned are planned again (:func:`plan_phase2_round`) over the available scanners only,
   so a lost scanner's unfinished pairs go to the survivors; the pair is the unit of work. :func:`plan_phase2`
   and :func:`record_phase2` are the round's planner and recorder, as :func:`scanfleet.plan.plan_run` and
   :func:`scanfleet.collect.record_run` are for a one-phase run.
5. **Merge** (:func:`merge_two_phase`): every phase-1 file is copied without the ``<port>`` elements that
   phase 2 reports for the same host (phase 2 replaces them), then :func:`scanfleet.merge.merge` merges
   those copies with the phase-2 files. Up hosts without open ports and down hosts come from phase 1, so
   every target address is in the report once (down hosts that nmap did not list are counted in
   ``runstats``, as nmap does).
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import json
import time
import types
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from scanfleet import ScanfleetError, rates
from scanfleet.collect import XML, attempt_dir, merge_inputs
from scanfleet.files import atomic_write, sha256_file
from scanfleet.intervals import EMPTY, IPV4, IPV6, IntervalSet, render_lines, union_all
from scanfleet.jobs import HOST_LOST_OUTCOMES
from scanfleet.merge import ShardReport, _attrs, _children, _write, format_ranges, host_key, inspect_input
from scanfleet.merge import merge as merge_xml
from scanfleet.shards import largest_remainder
from scanfleet.state import counted, known_fields, load_state, private_dir
from scanfleet.targets import (
    addresses_of,
    check_scope,
    load_targets_file,
    parse_scanner,
    parse_scope,
    parse_target_lines,
    parse_targets_file,
)

PAIRS_VERSION = 1
PHASE2_FILE = "phase2.json"
GROUPINGS = ("union", "exact")
DEFAULT_JOB_COST = 256  # port probes one more nmap process is worth (docs/two_phase.md)
DEFAULT_STATES = ("open",)
PROTOCOLS = {"tcp": "T", "udp": "U", "sctp": "S"}
SCOPE_FIX = "widen the scope (scanfleet_scope_extra, --scope) or drop that phase-1 shard"

Pair = tuple[str, str, int]  # (address, protocol, port)
Ports = dict[str, set[int]]  # protocol -> ports
PairMap = dict[str, Ports]  # address -> its ports


def _address_key(address: str) -> tuple[int, int]:
    ip = ipaddress.ip_address(address)
    return ip.version, int(ip)


def _family(address: str) -> int:
    return IPV6 if ":" in address else IPV4


def count_pairs(pairs: Mapping[str, Mapping[str, Iterable[int]]]) -> int:
    return sum(len(list(ports)) for by_proto in pairs.values() for ports in by_proto.values())


def iter_pairs(pairs: Mapping[str, Mapping[str, Iterable[int]]]) -> list[Pair]:
    """Every pair, in address, protocol, port order."""
    return [(a, proto, port) for a in sorted(pairs, key=_address_key)
            for proto in sorted(pairs[a]) for port in sorted(pairs[a][proto])]


def to_map(pairs: Iterable[Pair]) -> PairMap:
    out: PairMap = {}
    for address, proto, port in pairs:
        out.setdefault(address, {}).setdefault(proto, set()).add(port)
    return out


def encode_map(pairs: Mapping[str, Mapping[str, Iterable[int]]]) -> dict[str, dict[str, str]]:
    """JSON form: address -> protocol -> nmap range list (``22,80,8000-8010``)."""
    return {a: {p: format_ranges(set(ports)) for p, ports in sorted(pairs[a].items()) if ports}
            for a in sorted(pairs, key=_address_key)}


def decode_map(data: Mapping[str, Mapping[str, str]], *, source: str) -> PairMap:
    out: PairMap = {}
    for address, by_proto in data.items():
        try:
            canonical = str(ipaddress.ip_address(address))
            out[canonical] = {p: set(_ranges(text)) for p, text in by_proto.items()}
        except (ValueError, TypeError, AttributeError):
            raise ScanfleetError(f"{source}: pair entry {address!r}: {by_proto!r} is not an address with port "
                                 "lists; write it again with scanfleet pairs collect") from None
    return out


def _ranges(text: str) -> list[int]:
    out = []
    for part in str(text).split(","):
        low, _, high = part.strip().partition("-")
        out.extend(range(int(low), int(high or low) + 1))
    return out


# --------------------------------------------------------------------------------------------------
# 1. Collect


@dataclasses.dataclass
class PhaseOneShard:
    """One phase-1 nmap run: its label, XML, the addresses it was given and those it vouches for."""

    label: str
    xml: Path
    targets: IntervalSet
    covered: IntervalSet  # complete: its targets; truncated or failed: the hosts it fully reports
    complete: bool
    problem: str | None = None


def shard_from_files(targets_file: str | Path, xml: str | Path, label: str | None = None) -> PhaseOneShard:
    """A phase-1 shard given as its ``-iL`` targets file and its nmap XML (the rule of record_attempt)."""
    targets = load_targets_file(targets_file)
    report = inspect_input(Path(xml), label)
    complete = report.complete and report.exit == "success"
    if complete:
        covered = targets
    else:
        kept = IntervalSet.from_addresses(report.addresses, what=f"{xml}: host address")
        covered = kept & targets
    problem = None if complete else (report.problem or f"nmap exit {report.exit or 'unknown'}")
    return PhaseOneShard(report.label, Path(xml), targets, covered, complete, problem)


def shards_from_run(run_dir: str | Path) -> tuple[IntervalSet, list[PhaseOneShard]]:
    """The target set and the recorded attempts of a phase-1 run directory (RESULTS/RUN_ID)."""
    run_dir = Path(run_dir)
    state = load_state(run_dir)
    if state is None:
        raise ScanfleetError(f"{run_dir}/state.json: no such run state; give the phase-1 run's directory "
                             "RESULTS/RUN_ID (planned by scanfleet run plan or playbooks/scan.yml)")
    shards = []
    for attempt in state.attempts:
        if attempt.status not in ("finished", "partial") or XML not in attempt.files:
            continue
        xml = attempt_dir(run_dir.parent, state.run_id, attempt) / XML
        shards.append(PhaseOneShard(attempt.id, xml, attempt.addresses(), attempt.covered(),
                                    attempt.status == "finished", attempt.detail))
    return state.targets(), shards


@dataclasses.dataclass
class Collection:
    """What :func:`collect` found: the pairs and the accounting of every target address."""

    targets: IntervalSet
    pairs: PairMap
    up_open: list[str]
    up_none: list[str]
    down: IntervalSet
    pending: IntervalSet
    shards: list[PhaseOneShard]
    states: tuple[str, ...]

    def accounting(self) -> dict[str, int]:
        return {"targets": self.targets.size, "up_open": len(self.up_open), "up_none": len(self.up_none),
                "down": self.down.size, "pending": self.pending.size, "pairs": count_pairs(self.pairs)}

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "scanfleet-pairs", "version": PAIRS_VERSION, "states": list(self.states),
            "targets": render_lines(self.targets, "cidr"), "accounting": self.accounting(),
            "up_open": self.up_open, "up_none": self.up_none,
            "down": render_lines(self.down, "cidr"), "pending": render_lines(self.pending, "cidr"),
            "phase1": [{"label": s.label, "xml": str(s.xml), "complete": s.complete, "problem": s.problem,
                        "targets": s.targets.size, "covered": s.covered.size} for s in self.shards],
            "pairs": encode_map(self.pairs),
        }

    def lines(self) -> list[str]:
        acc = self.accounting()
        out = [f"{counted(acc['targets'], 'target address')}: {acc['up_open']} up with open ports, "
               f"{acc['up_none']} up with none, {acc['down']} down, {acc['pending']} pending; "
               f"{counted(acc['pairs'], 'open pair')}"]
        for shard in self.shards:
            if not shard.complete:
                out.append(f"{shard.label} ({shard.xml}) is incomplete ({shard.problem}): "
                           f"{shard.targets.size - shard.covered.size} of its addresses are pending, not down; "
                           "scan them again in phase 1")
        if self.pending:
            out.append(f"pending: {self.pending.describe()}")
        return out


def _host_pairs(host: ET.Element, states: Sequence[str]) -> Ports:
    found: Ports = {}
    ports = host.find("ports")
    for port in ports.findall("port") if ports is not None else ():
        state = port.find("state")
        if state is not None and state.get("state") in states:
            found.setdefault(port.get("protocol", "tcp"), set()).add(int(port.get("portid", "0")))
    return found


def collect(shards: Sequence[PhaseOneShard], targets: IntervalSet, scope: IntervalSet, *,
            states: Sequence[str] = DEFAULT_STATES) -> Collection:
    """The open pairs and the accounting of TARGETS from phase-1 SHARDS (rules in the module docstring)."""
    if not shards:
        raise ScanfleetError("no phase-1 shard given; pass the phase-1 run directory or --shard TARGETS XML")
    pairs: PairMap = {}
    up: set[str] = set()
    for shard in shards:
        report = ShardReport(path=shard.xml, label=shard.label)
        for kind, elem in _children(shard.xml, report):
            if kind != "child" or elem.tag != "host":
                continue
            address = host_key(elem)
            if address is None or address not in shard.targets:
                raise ScanfleetError(
                    f"{shard.xml}: lists host {address}, which is not among the {shard.targets.size} targets of "
                    f"shard {shard.label} ({shard.targets.describe()}); give each XML with its own targets file")
            status = elem.find("status")
            if status is None or status.get("state") != "up":
                continue
            up.add(address)
            for proto, ports in _host_pairs(elem, states).items():
                pairs.setdefault(address, {}).setdefault(proto, set()).update(ports)
    if pairs:
        check_scope(IntervalSet.from_addresses(pairs), scope, label="scope of the phase-1 pairs", fix=SCOPE_FIX)
        outside = IntervalSet.from_addresses(pairs) - targets
        if outside:
            raise ScanfleetError(f"phase-1 pairs on {outside.describe()}, outside the run's targets "
                                 f"({targets.describe()}); collect each run's shards with that run's targets")
    covered = union_all(s.covered for s in shards)
    up_set = IntervalSet.from_addresses(up)
    order = sorted(up, key=_address_key)
    return Collection(
        targets=targets, pairs=pairs,
        up_open=[a for a in order if a in pairs], up_none=[a for a in order if a not in pairs],
        down=(covered & targets) - up_set, pending=targets - covered - up_set,
        shards=list(shards), states=tuple(states))


def _load_json(path: Path, kind: str, what: str, fix: str) -> dict[str, Any] | None:
    """The JSON document of KIND in PATH (None when there is no such file); FIX ends the errors."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ScanfleetError(f"{path}: unreadable ({exc}); {fix}") from None
    if not isinstance(data, dict) or data.get("kind") != kind or data.get("version") != PAIRS_VERSION:
        raise ScanfleetError(f"{path}: not {what} (version {PAIRS_VERSION}); {fix}")
    return data


def load_pairs(path: str | Path) -> tuple[PairMap, IntervalSet]:
    """The pairs and the targets of a ``pairs.json`` written by ``scanfleet pairs collect``.

    Phase 2 starts once phase 1 is complete: a pairs file with pending addresses is refused (their pairs
    are not known yet, and a phase 2 planned without them could not take them in later).
    """
    path = Path(path)
    data = _load_json(path, "scanfleet-pairs", "a scanfleet pairs file", "write it with scanfleet pairs collect")
    if data is None:
        raise ScanfleetError(f"{path}: no such file; write it with scanfleet pairs collect")
    pending = addresses_of(parse_target_lines(data.get("pending") or [], source=f"{path} pending",
                                              allow_hostnames=False))
    if pending:
        raise ScanfleetError(
            f"{path}: phase 1 is not complete, {pending.describe()} pending (an incomplete phase-1 shard); "
            "resume phase 1 (run the same phase-1 command again), then collect again")
    targets = addresses_of(parse_target_lines(data.get("targets", []), source=f"{path} targets",
                                              allow_hostnames=False))
    return decode_map(data.get("pairs", {}), source=str(path)), targets


# --------------------------------------------------------------------------------------------------
# 2-3. Shard by pair count, group into jobs


def _signature(ports: Mapping[str, Iterable[int]]) -> tuple[tuple[str, tuple[int, ...]], ...]:
    return tuple((proto, tuple(sorted(ports[proto]))) for proto in sorted(ports) if ports[proto])


def shard_pairs(pairs: Mapping[str, Mapping[str, Iterable[int]]],
                weights: Mapping[str, Any]) -> dict[str, PairMap]:
    """Split PAIRS between the scanners of WEIGHTS by pair count (rules in the module docstring)."""
    counts = largest_remainder(count_pairs(pairs), weights)
    ordered = sorted(pairs, key=lambda a: (_family(a), _signature(pairs[a]), _address_key(a)))
    flat = [(a, proto, port) for a in ordered for proto, ports in _signature(pairs[a]) for port in ports]
    out: dict[str, PairMap] = {}
    start = 0
    for host in counts:  # name order
        out[host] = to_map(flat[start:start + counts[host]])
        start += counts[host]
    return out


@dataclasses.dataclass
class Job:
    """One phase-2 nmap process: a host list and a port list per protocol, one address family."""

    id: str
    host: str  # the scanner
    family: int
    hosts: list[str]  # addresses, for the -iL file
    ports: dict[str, str]  # protocol -> nmap range list: the job's -p
    pairs: dict[str, dict[str, str]]  # address -> protocol -> ports: the pairs this job answers for
    size: int  # number of pairs
    grid: int  # port probes it sends: sum over protocols of hosts x ports
    round: int = 1
    created: float = 0.0
    status: str = "assigned"
    detail: str | None = None
    kept: list[str] = dataclasses.field(default_factory=list)  # hosts fully reported (partial)
    recorded: float | None = None
    xml: str | None = None  # the nmap XML recorded for it (finished or partial)
    max_rate: int | None = None  # its share of the fleet's rate budget (--max-rate), None: no limit

    @property
    def nmap_ports(self) -> str:
        """The ``-p`` value: ``T:22,80,U:53``."""
        return ",".join(f"{PROTOCOLS.get(p, p[:1].upper())}:{self.ports[p]}" for p in sorted(self.ports))

    @property
    def lines(self) -> list[str]:
        """The job's ``-iL`` lines."""
        return render_lines(IntervalSet.from_addresses(self.hosts), "auto")

    def pair_map(self) -> PairMap:
        return decode_map(self.pairs, source=f"job {self.id}")

    def done(self) -> PairMap:
        """The pairs this job scanned for good."""
        if self.status == "finished":
            return self.pair_map()
        if self.status == "partial":
            kept = set(self.kept)
            return {a: p for a, p in self.pair_map().items() if a in kept}
        return {}

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "nmap_ports": self.nmap_ports}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Job:
        return cls(**known_fields(cls, data))


def _grid(hosts: Sequence[str], ports: Mapping[str, set[int]]) -> int:
    return len(hosts) * sum(len(p) for p in ports.values())


def _width(ports: Mapping[str, set[int]], other: Mapping[str, set[int]] | None = None) -> int:
    """Ports per host of a job with PORTS (united with OTHER's)."""
    other = other or {}
    return sum(len(ports.get(p, set()) | other.get(p, set())) for p in {*ports, *other})


@dataclasses.dataclass
class _Bin:
    family: int
    hosts: list[str]
    ports: dict[str, set[int]]
    pairs: int
    whole: bool  # every host has all its remaining pairs here: it may share a union job

    @property
    def grid(self) -> int:
        return len(self.hosts) * _width(self.ports)


def group_jobs(host: str, shard: Mapping[str, Mapping[str, Iterable[int]]], *, grouping: str = "union",
               whole: Mapping[str, Mapping[str, Iterable[int]]] | None = None,
               job_cost: int = DEFAULT_JOB_COST) -> list[Job]:
    """The jobs of one scanner's SHARD of pairs (ids left empty; rules in the module docstring).

    The hosts are first grouped by their exact port set. ``exact`` stops there. ``union`` then takes the
    groups, largest first, and puts each into the union job where it adds the fewest extra port probes, if
    that is at most JOB_COST (the port probes one more nmap process is worth), else into a new job: it
    minimises extra probes + JOB_COST x jobs, greedily. WHOLE: every pair still to scan per address
    (default: SHARD itself); a host whose WHOLE pairs are not all in SHARD keeps an exact job, because a
    union's extra ports could be its open pairs that another job scans.
    """
    if grouping not in GROUPINGS:
        raise ScanfleetError(f"unknown pair grouping {grouping!r}; use one of {', '.join(GROUPINGS)}")
    if isinstance(job_cost, bool) or not isinstance(job_cost, int) or job_cost < 0:
        raise ScanfleetError(f"job cost {job_cost!r} is not a whole number of port probes >= 0; "
                             f"give e.g. {DEFAULT_JOB_COST}")
    whole = shard if whole is None else whole
    exact: dict[tuple[Any, ...], _Bin] = {}
    for address in sorted(shard, key=_address_key):
        signature = _signature(shard[address])
        if not signature:
            continue
        family = _family(address)
        # exact: hosts with the same port set share a job whatever else they have elsewhere (no extra probes)
        mergeable = grouping == "exact" or signature == _signature(whole.get(address, {}))
        group = exact.setdefault((family, not mergeable, signature),
                                 _Bin(family, [], {p: set(n) for p, n in signature}, 0, mergeable))
        group.hosts.append(address)
        group.pairs += sum(len(n) for _, n in signature)
    bins = list(exact.values())
    if grouping == "union":
        merged: list[_Bin] = []
        for key in sorted((k for k in exact if not k[1]), key=lambda k: (k[0], -exact[k].pairs, k[2])):
            group = exact[key]
            best, best_added = None, job_cost + 1
            g_hosts, g_width = len(group.hosts), _width(group.ports)
            # job_cost 0 never merges (two different port sets always add a probe): skip the search
            for job in merged if job_cost else ():
                j_hosts, j_width = len(job.hosts), _width(job.ports)
                # a lower bound first (the united width is at least the wider of the two), then the real count
                wide = max(j_width, g_width)
                if job.family != group.family or (j_hosts + g_hosts) * wide - job.grid - group.grid >= best_added:
                    continue
                added = (j_hosts + g_hosts) * _width(job.ports, group.ports) - job.grid - group.grid
                if added < best_added:
                    best, best_added = job, added
            if best is None:
                merged.append(_Bin(group.family, list(group.hosts), dict(group.ports), group.pairs, True))
            else:
                best.hosts.extend(group.hosts)
                best.ports = {p: best.ports.get(p, set()) | group.ports.get(p, set())
                              for p in {*best.ports, *group.ports}}
                best.pairs += group.pairs
        bins = merged + [b for k, b in exact.items() if k[1]]
    jobs = []
    for b in sorted(bins, key=lambda b: (b.family, not b.whole, min(_address_key(a) for a in b.hosts))):
        addresses = sorted(b.hosts, key=_address_key)
        mine = {a: shard[a] for a in addresses}
        jobs.append(Job(id="", host=host, family=b.family, hosts=addresses,
                        ports={p: format_ranges(n) for p, n in sorted(b.ports.items())},
                        pairs=encode_map(mine), size=b.pairs, grid=b.grid))
    return jobs


def grid_cost(jobs: Sequence[Job]) -> dict[str, int]:
    """Jobs, pairs, port probes sent (hosts x ports per job) and the extra ones beyond the pairs."""
    pairs = sum(j.size for j in jobs)
    grid = sum(j.grid for j in jobs)
    return {"jobs": len(jobs), "pairs": pairs, "probes": grid, "extra": grid - pairs}


# --------------------------------------------------------------------------------------------------
# 4. Phase-2 state: resume and reassignment


@dataclasses.dataclass
class PhaseTwoState:
    """The pairs of a two-phase run and its phase-2 jobs; stored as ``phase2.json``."""

    pairs: dict[str, dict[str, str]]
    targets: list[str]
    created: float
    updated: float
    seq: int = 0
    jobs: list[Job] = dataclasses.field(default_factory=list)
    events: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    version: int = PAIRS_VERSION

    def pair_map(self) -> PairMap:
        return decode_map(self.pairs, source=PHASE2_FILE)

    def job(self, job_id: str) -> Job:
        for job in self.jobs:
            if job.id == job_id:
                return job
        known = ", ".join(j.id for j in self.jobs) or "none"
        raise ScanfleetError(f"{PHASE2_FILE}: no job {job_id!r} (jobs: {known}); give a job id from "
                             "scanfleet pairs shard")

    def done(self) -> set[Pair]:
        return {p for job in self.jobs for p in iter_pairs(job.done())}

    def assigned(self) -> set[Pair]:
        return {p for job in self.jobs if job.status == "assigned" for p in iter_pairs(job.pair_map())}

    def remaining(self) -> PairMap:
        """The pairs neither done nor assigned: what the next round plans."""
        left = set(iter_pairs(self.pair_map())) - self.done() - self.assigned()
        return to_map(left)

    def progress(self) -> dict[str, int]:
        total = count_pairs(self.pair_map())
        done = len(self.done())
        return {"pairs": total, "done": done, "assigned": len(self.assigned()), "remaining": total - done}

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["kind"] = "scanfleet-phase2"
        data["jobs"] = [j.to_dict() for j in self.jobs]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PhaseTwoState:
        values = known_fields(cls, data)
        values["jobs"] = [Job.from_dict(j) for j in data.get("jobs", [])]
        return cls(**values)


def load_phase2(directory: str | Path) -> PhaseTwoState | None:
    data = _load_json(Path(directory) / PHASE2_FILE, "scanfleet-phase2", "a scanfleet phase-2 state",
                      "move it away to plan phase 2 afresh")
    return None if data is None else PhaseTwoState.from_dict(data)


def save_phase2(directory: str | Path, state: PhaseTwoState) -> None:
    directory = Path(directory)
    private_dir(directory)
    with atomic_write(directory / PHASE2_FILE, mode=0o600, durable=True) as f:
        json.dump(state.to_dict(), f, indent=1, sort_keys=True)
        f.write("\n")


def open_phase2(directory: str | Path, pairs: PairMap, targets: IntervalSet, now: float) -> PhaseTwoState:
    """The phase-2 state in DIRECTORY for these pairs, or a new one; other pairs there are refused."""
    state = load_phase2(directory)
    encoded = encode_map(pairs)
    if state is None:
        return PhaseTwoState(pairs=encoded, targets=render_lines(targets, "cidr"), created=now, updated=now)
    if state.pairs != encoded:
        raise ScanfleetError(
            f"{Path(directory) / PHASE2_FILE}: planned for {counted(count_pairs(state.pair_map()), 'other pair')}, "
            f"not the {count_pairs(pairs)} of this pairs file; use another directory for this phase 2, or give the "
            "pairs file it was planned with to resume it")
    return state


def mark_lost(state: PhaseTwoState, available: Iterable[str], unavailable: Mapping[str, str], now: float) -> None:
    """Jobs still assigned to a scanner that is not AVAILABLE are lost (UNAVAILABLE says why): their pairs are
    planned again. Done again, it changes nothing."""
    up = set(available)
    for job in state.jobs:
        if job.status == "assigned" and job.host not in up:
            job.status = "lost"
            job.recorded = now
            job.detail = f"{job.host} {unavailable.get(job.host, 'not available')} before its result came back"
            state.events.append({"time": now, "text": f"job {job.id} ({counted(job.size, 'pair')}) lost: "
                                 f"{job.detail}; its pairs are planned again"})


def plan_phase2_round(state: PhaseTwoState, *, weights: Mapping[str, Any], available: Iterable[str],
                      unavailable: Mapping[str, str] | None = None, scope: IntervalSet | None = None,
                      grouping: str = "union", job_cost: int = DEFAULT_JOB_COST, round_no: int = 1,
                      receivers: Iterable[str] | None = None, now: float) -> list[Job]:
    """Plan one phase-2 round: jobs still assigned to an unavailable scanner are lost, and every pair not
    done and not assigned is sharded over the available scanners (only RECEIVERS among them, when given: the
    rate budget may leave some out of a round) and grouped into jobs. Returns the new jobs."""
    available = sorted(h for h in set(available) if h in weights)
    unavailable = dict(unavailable or {})
    mark_lost(state, available, unavailable, now)
    todo = state.remaining()
    if not todo:
        return []
    if scope is not None:
        check_scope(IntervalSet.from_addresses(todo), scope, label="scope of the phase-2 pairs", fix=SCOPE_FIX)
    usable = {h: weights[h] for h in available if receivers is None or h in set(receivers)}
    if not usable or not any(float(w) > 0 for w in usable.values()):
        why = "; ".join(f"{h}: {unavailable.get(h, 'capacity 0' if h in usable else 'not available')}"
                        for h in sorted(weights))
        raise ScanfleetError(f"{counted(count_pairs(todo), 'pair')} left to scan in phase 2 but no scanner is "
                             f"available ({why}); bring a scanner back and run the same command to resume")
    new = []
    for host, shard in shard_pairs(todo, usable).items():
        for job in group_jobs(host, shard, grouping=grouping, whole=todo, job_cost=job_cost):
            state.seq += 1
            job.id = f"p2-{state.seq:03d}-{host}"
            job.round = round_no
            job.created = now
            state.jobs.append(job)
            new.append(job)
    state.updated = now
    return new


def record_job(state: PhaseTwoState, job_id: str, xml: str | Path | None, *, now: float,
               outcome: str | None = None) -> str:
    """Record what came back of a phase-2 job (its nmap XML, or None when nothing did); returns a note."""
    job = state.job(job_id)
    if job.status != "assigned":
        return f"job {job.id}: recorded already ({job.status})"
    job.recorded = now
    report = None
    problem = outcome or "no nmap XML came back"
    if xml is not None:
        try:
            report = inspect_input(Path(xml), job.id)
        except ScanfleetError as exc:
            problem = str(exc)
    job.xml = None if report is None else str(xml)
    if report is None:
        job.status = "lost" if outcome == "unreachable" else "failed"
        job.detail = problem
        text = f"job {job.id} on {job.host}: {problem}; its {counted(job.size, 'pair')} are planned again"
    elif report.complete and report.exit == "success":
        job.status = "finished"
        text = f"job {job.id} on {job.host}: finished, {counted(job.size, 'pair')}"
    else:
        mine = set(job.hosts)
        job.status = "partial"
        job.kept = sorted({a for a in report.addresses if a in mine}, key=_address_key)
        job.detail = report.problem or f"nmap exit {report.exit or 'unknown'}"
        done = len(iter_pairs(job.done()))
        text = (f"job {job.id} on {job.host}: {job.detail}; {counted(len(job.kept), 'host')} kept, "
                f"{job.size - done} of {counted(job.size, 'pair')} planned again")
    state.events.append({"time": now, "text": text})
    state.updated = now
    return text


def job_dir(directory: str | Path, job: Job) -> Path:
    """Where a job's fetched files go: ``DIRECTORY/HOST/JOB_ID/`` (as ``RESULTS/RUN_ID/HOST/ATTEMPT/``)."""
    return Path(directory) / job.host / job.id


def record_phase2(*, directory: str | Path, outcomes: Sequence[Mapping[str, Any]], write: bool = True,
                  now: float | None = None) -> dict[str, Any]:
    """Record a phase-2 round as :func:`scanfleet.collect.record_run` records a one-phase round: one entry per
    job (``id``, ``outcome``, ``files`` {name: sha256 reported by the scanner}, ``detail``), the files fetched
    into :func:`job_dir` already. A file whose sha256 differs is no result (the job failed, its pairs are
    planned again); a scanner whose job ended with a host-lost outcome gets no more work in this run."""
    now = time.time() if now is None else now
    state = load_phase2(directory)
    if state is None:
        raise ScanfleetError(f"{Path(directory) / PHASE2_FILE}: no phase-2 state; plan it with scanfleet pairs shard")
    notes, recorded, lost_hosts = [], [], {}
    for item in outcomes:
        job = state.job(str(item["id"]))
        if job.status != "assigned":
            continue
        outcome = str(item.get("outcome") or "missing")
        xml = None
        fetched = item.get("files") or {}
        if XML in fetched:
            path = job_dir(directory, job) / XML
            actual = sha256_file(path) if path.is_file() else None
            if actual == fetched[XML]:
                xml = path
            else:
                outcome = f"fetch failed: {XML} {'has sha256 ' + actual if actual else 'did not arrive'}"
        notes.append(record_job(state, job.id, xml, now=now, outcome=outcome))
        recorded.append(job.id)
        if outcome in HOST_LOST_OUTCOMES or outcome.startswith("fetch failed"):
            lost_hosts[job.host] = f"{outcome} in job {job.id}"
    if write and recorded:
        save_phase2(directory, state)
    return {"changed": bool(recorded), "recorded": recorded, "notes": notes, "lost_hosts": lost_hosts,
            "statuses": {j.id: j.status for j in state.jobs}, "progress": state.progress()}


def job_view(job: Job) -> dict[str, Any]:
    """What a scanner needs to run JOB: its ``-iL`` lines, ``-p`` value, protocols and family."""
    return {"id": job.id, "host": job.host, "family": job.family, "ipv6": job.family == IPV6, "lines": job.lines,
            "ports": job.nmap_ports, "protocols": sorted(job.ports), "pairs": job.size, "size": job.size,
            "hosts": len(job.hosts), "probes": job.grid, "status": job.status, "round": job.round,
            "max_rate": job.max_rate}


def balance(jobs: Sequence[Job], weights: Mapping[str, Any]) -> dict[str, Any]:
    """Pairs per scanner in JOBS and the tail: the largest ratio of a scanner's pairs to its weighted share."""
    per_host = {h: 0 for h in sorted(weights)}
    for job in jobs:
        per_host[job.host] = per_host.get(job.host, 0) + job.size
    total = sum(per_host.values())
    weight_sum = sum(float(weights[h]) for h in weights)
    shares = [per_host[h] / (total * float(weights[h]) / weight_sum)
              for h in weights if float(weights[h]) > 0 and total]
    return {"pairs": per_host, "tail": round(max(shares), 3) if shares else 1.0}


def _rate_view(job: Job) -> Any:
    """A phase-2 job as :func:`scanfleet.rates.held` reads attempts: a lost job may still run (its host went
    away with the job detached), so it counts as ``unreachable``."""
    return types.SimpleNamespace(id=job.id, host=job.host, status=job.status, max_rate=job.max_rate,
                                 recorded=job.recorded, outcome="unreachable" if job.status == "lost" else None)


def _set_rates(new: Sequence[Job], limits: rates.Limits, weights: Mapping[str, Any],
               holds: Sequence[rates.Hold]) -> tuple[dict[str, int], list[str]]:
    """Give each new job its ``max_rate``: the budget left after HOLDS split over the scanners that got new
    jobs by WEIGHTS (:func:`scanfleet.rates.split`), each scanner's share over its jobs by pair count."""
    hosts = sorted({j.host for j in new})
    shares, lowered = rates.split(limits, {h: weights[h] for h in hosts}, holds)
    for host in hosts if shares else ():
        mine = {j.id: j.size for j in new if j.host == host}
        per = rates.per_job(host, shares[host], mine)
        for job in new:
            if job.host == host:
                job.max_rate = per[job.id]
    return shares, lowered


def plan_phase2(*, pairs_file: str | Path, directory: str | Path, weights: Mapping[str, Any],
                available: Sequence[str], scope: IntervalSet, unavailable: Mapping[str, str] | None = None,
                grouping: str = "union", job_cost: int = DEFAULT_JOB_COST, options: Sequence[str] = (),
                rate_budget: Any = None, rate_cap: Any = None, timeout: float = 0, kill_grace: float = 0,
                write: bool = True, now: float | None = None) -> dict[str, Any]:
    """Open (or resume) the phase 2 of PAIRS_FILE in DIRECTORY and plan one round (:func:`plan_phase2_round`);
    write ``phase2.json`` and the new jobs' ``jobs/ID.targets`` (not with WRITE false: check mode). Every pair
    planned must lie in SCOPE. RATE_BUDGET/RATE_CAP (checked against OPTIONS, the phase-2 nmap options) give
    each new job its ``max_rate`` as :func:`scanfleet.plan.plan_run` does for addresses: jobs still assigned
    (resumed) and lost jobs that may still run hold their rate; a scanner whose share would be below 1 gets
    no pairs this round. The one phase-2 planner: ``scanfleet pairs shard`` and the role's module call it."""
    now = time.time() if now is None else now
    limits = rates.check_limits(rate_budget, rate_cap, options, timeout=timeout, kill_grace=kill_grace,
                                scanners=rates.positive_count(weights.values()))
    directory = Path(directory)
    pairs, targets = load_pairs(pairs_file)
    state = open_phase2(directory, pairs, targets, now)
    round_no = max((j.round for j in state.jobs), default=0) + 1
    before = {j.id: j.status for j in state.jobs}
    up = {h for h in available if h in weights}
    mark_lost(state, up, dict(unavailable or {}), now)  # before the holds: a lost job may still send
    resumed = [j for j in state.jobs if j.status == "assigned"]
    holds = rates.held([_rate_view(j) for j in state.jobs], resumed=[_rate_view(j) for j in resumed],
                       available=up, now=now, limits=limits)
    receivers, sit_out = rates.eligible(limits, {h: weights[h] for h in sorted(up) if h in weights}, holds)
    new = plan_phase2_round(state, weights=weights, available=available, unavailable=unavailable, scope=scope,
                            grouping=grouping, job_cost=job_cost, round_no=round_no, receivers=receivers, now=now)
    shares, lowered = _set_rates(new, limits, weights, holds)
    lost = [j for j in state.jobs if j.status == "lost" and before.get(j.id) == "assigned"]
    changed = bool(new or lost) or not (directory / PHASE2_FILE).is_file()
    if write and changed:
        private_dir(directory / "jobs")
        for job in new:
            with atomic_write(directory / "jobs" / f"{job.id}.targets", mode=0o600) as f:
                f.write("".join(f"{line}\n" for line in job.lines))
        save_phase2(directory, state)
    running = [j for j in state.jobs if j.status == "assigned"]
    cost = grid_cost(new)
    lines = [f"{job.host}: {job.id} IPv{job.family} {counted(len(job.hosts), 'host')} -p {job.nmap_ports} "
             f"({counted(job.size, 'pair')}, {job.grid} port probes"
             f"{f', --max-rate {job.max_rate}' if job.max_rate else ''}) -iL jobs/{job.id}.targets" for job in new]
    lines += [f"{j.host}: {j.id} (resumed) {counted(j.size, 'pair')}" for j in resumed]
    lines += [f"job {j.id} lost: {j.detail}; its pairs are planned again" for j in lost]
    lines.append(f"round {round_no}: {cost['jobs']} jobs, {cost['pairs']} pairs, {cost['probes']} port probes "
                 f"({cost['extra']} beyond the pairs, grouping {grouping})")
    lines += rates.summary(limits, shares, holds, lowered, sit_out if new else {}, round_no)
    return {"changed": changed, "round": round_no, "dir": str(directory), "lines": lines,
            "new": [j.id for j in new], "lost": [j.id for j in lost],
            "assignments": {h: [job_view(j) for j in running if j.host == h] for h in sorted(set(available))},
            "cost": cost, "balance": balance(new, {h: weights[h] for h in available if h in weights}),
            "rates": shares, "rate_total": sum(shares.values()),
            "progress": state.progress(), "done": not running and not state.remaining()}


# --------------------------------------------------------------------------------------------------
# 5. Merge


def phase2_ports(files: Sequence[Path]) -> dict[str, set[tuple[str, int]]]:
    """address -> the (protocol, port) that the phase-2 FILES report for it (complete hosts only)."""
    out: dict[str, set[tuple[str, int]]] = {}
    for path in files:
        for kind, elem in _children(Path(path), ShardReport(path=Path(path), label=str(path))):
            if kind != "child" or elem.tag != "host":
                continue
            address = host_key(elem)
            ports = elem.find("ports")
            if address is None or ports is None:
                continue
            mine = out.setdefault(address, set())
            mine.update((p.get("protocol", "tcp"), int(p.get("portid", "0"))) for p in ports.findall("port"))
    return out


def write_residual(source: Path, out: Path, replaced: Mapping[str, set[tuple[str, int]]], *,
                   extraports: bool = True) -> int:
    """Copy the phase-1 nmap XML SOURCE to OUT without the ports that phase 2 REPLACED (and, EXTRAPORTS false,
    without any host's ``<extraports>``); a truncated SOURCE stays truncated (its complete elements are copied, no
    closing tag). Returns the ports left out."""
    report = ShardReport(path=source, label=str(source))
    dropped = 0
    with atomic_write(out) as f:
        for kind, elem in _children(source, report):
            if kind == "root":
                f.write(f'<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE nmaprun>\n<nmaprun{_attrs(elem.attrib)}>\n')
                continue
            if elem.tag == "host":
                gone = replaced.get(host_key(elem) or "", set())
                ports = elem.find("ports")
                for group in list(ports.findall("extraports")) if ports is not None and not extraports else ():
                    ports.remove(group)
                for port in list(ports.findall("port")) if ports is not None and gone else ():
                    if (port.get("protocol", "tcp"), int(port.get("portid", "0"))) in gone:
                        ports.remove(port)
                        dropped += 1
            _write(f, elem)
        if report.complete:
            f.write("</nmaprun>\n")
    return dropped


def phase2_inputs(state: PhaseTwoState) -> list[tuple[str, Path]]:
    """(label, XML) of every phase-2 job that contributes hosts to the merge, in job order."""
    return [(j.id, Path(j.xml)) for j in state.jobs
            if j.xml and (j.status == "finished" or (j.status == "partial" and j.kept))]


def merge_run(run_dir: str | Path, phase2_dir: str | Path, out: str | Path, *, dtd: Path | None = None,
              stylesheet: str | None = None) -> dict[str, Any]:
    """:func:`merge_two_phase` of a phase-1 run directory (its recorded attempts, as the one-phase merge takes
    them) and a phase-2 directory (its recorded jobs)."""
    run_dir = Path(run_dir)
    state = load_state(run_dir)
    if state is None:
        raise ScanfleetError(f"{run_dir}/state.json: no such run state; give the phase-1 run's directory")
    phase2 = load_phase2(phase2_dir)
    if phase2 is None:
        raise ScanfleetError(f"{Path(phase2_dir) / PHASE2_FILE}: no phase-2 state; plan it with scanfleet pairs shard")
    return merge_two_phase(merge_inputs(state, run_dir.parent), phase2_inputs(phase2), out, dtd=dtd,
                           stylesheet=stylesheet)


def merge_two_phase(phase1: Sequence[tuple[str, Path]], phase2: Sequence[tuple[str, Path]], out: str | Path, *,
                    dtd: Path | None = None, stylesheet: str | None = None,
                    stages: tuple[str, str] = ("phase1", "phase2")) -> dict[str, Any]:
    """Merge PHASE1 and PHASE2 (label, nmap XML) into OUT (rules in the module docstring); the phase-1
    copies go to OUT's directory, ``phase1-residual/LABEL.xml``. STAGES names the two in labels and that
    directory (:mod:`scanfleet.recover` merges a scan's pass 2 the same way)."""
    out = Path(out)
    if not phase1:
        raise ScanfleetError("two-phase merge: no phase-1 XML given; pass the discovery shards' nmap XML")
    for _, path in (*phase1, *phase2):
        if not Path(path).is_file():
            raise ScanfleetError(f"{path}: no such file; check the path of the shard's nmap .xml")
    replaced = phase2_ports([Path(p) for _, p in phase2])
    residual_dir = out.parent / f"{stages[0]}-residual"
    private_dir(residual_dir)
    inputs, labels = [], []
    dropped = 0
    for label, path in phase1:
        copy = residual_dir / f"{label}.xml"
        dropped += write_residual(Path(path), copy, replaced)
        inputs.append(copy)
        labels.append(f"{stages[0]}/{label}")
    for label, path in phase2:
        inputs.append(Path(path))
        labels.append(f"{stages[1]}/{label}")
    result = merge_xml(inputs, out, labels=labels, dtd=dtd, stylesheet=stylesheet)
    return {**result.to_dict(), "replaced_ports": dropped}


# --------------------------------------------------------------------------------------------------
# Command line: scanfleet pairs collect|shard|record|status|merge


def _scope(args: argparse.Namespace) -> IntervalSet:
    scope = parse_scope(args.scope, origin="--scope") if args.scope else EMPTY
    for path in args.scope_file:
        scope = scope | union_all(t.addresses for t in parse_targets_file(path, allow_hostnames=False))
    if not scope:
        raise ScanfleetError("no scope given; pass --scope CIDR... (or --scope-file) with the networks you are "
                             "allowed to scan: every pair's address must lie inside")
    return scope


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, mode=0o600) as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.write("\n")


def _cmd_collect(args: argparse.Namespace) -> int:
    if bool(args.run_dir) == bool(args.shard):
        raise ScanfleetError("give either --run-dir RESULTS/RUN_ID (a phase-1 run) or --shard TARGETS XML "
                             "(one per phase-1 shard), not both and not neither")
    if args.run_dir:
        targets, shards = shards_from_run(args.run_dir)
    else:
        shards = [shard_from_files(t, x) for t, x in args.shard]
        labels = [s.label for s in shards]
        if len(set(labels)) != len(labels):
            shards = [dataclasses.replace(s, label=str(s.xml)) for s in shards]
        targets = union_all(s.targets for s in shards)
    states = tuple(s for s in args.states.split(",") if s)
    result = collect(shards, targets, _scope(args), states=states)
    _write_json(Path(args.out), result.to_dict())
    print(json.dumps(result.accounting(), sort_keys=True) if args.json else "\n".join(result.lines()))
    print(f"pairs: {args.out}")
    return 1 if result.pending else 0


def _cmd_shard(args: argparse.Namespace) -> int:
    scanners = [parse_scanner(s) for s in args.scanner]
    if not scanners:
        raise ScanfleetError("no scanners given; pass --scanner NAME=WEIGHT for each scanner host")
    unavailable = dict(u.split("=", 1) if "=" in u else (u, "not available") for u in args.unavailable)
    result = plan_phase2(pairs_file=args.pairs, directory=args.state, weights={s.name: s.weight for s in scanners},
                         available=[s.name for s in scanners if s.name not in unavailable], unavailable=unavailable,
                         scope=_scope(args), grouping=args.grouping, job_cost=args.job_cost)
    print(json.dumps(result, indent=1, sort_keys=True) if args.json else "\n".join(result["lines"]))
    return 0


def _cmd_record(args: argparse.Namespace) -> int:
    state = load_phase2(args.state)
    if state is None:
        raise ScanfleetError(f"{Path(args.state) / PHASE2_FILE}: no phase-2 state; plan it with scanfleet pairs shard")
    print(record_job(state, args.job, args.xml, now=time.time(), outcome=args.outcome))
    save_phase2(args.state, state)
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    state = load_phase2(args.state)
    if state is None:
        raise ScanfleetError(f"{Path(args.state) / PHASE2_FILE}: no phase-2 state; plan it with scanfleet pairs shard")
    progress = state.progress()
    if args.json:
        print(json.dumps({"progress": progress, "jobs": [{"id": j.id, "host": j.host, "status": j.status,
                                                          "pairs": j.size} for j in state.jobs]}, sort_keys=True))
    else:
        print(f"phase 2: {progress['done']}/{counted(progress['pairs'], 'pair')} done, "
              f"{progress['assigned']} assigned, {progress['remaining']} not done")
        for job in state.jobs:
            print(f"{job.id} {job.host} {job.status} {counted(job.size, 'pair')}"
                  + (f": {job.detail}" if job.detail else ""))
    return 0 if progress["remaining"] == 0 else 1


def _labelled(files: Sequence[str]) -> list[tuple[str, Path]]:
    out = []
    for text in files:
        path = Path(text)
        out.append((path.parent.name or path.stem, path))
    labels = [label for label, _ in out]
    if len(set(labels)) != len(labels):
        out = [(f"{n:03d}-{p.parent.name or p.stem}", p) for n, (_, p) in enumerate(out, 1)]
    return out


def _cmd_merge(args: argparse.Namespace) -> int:
    dtd = Path(args.dtd) if args.dtd else None
    if bool(args.run_dir) == bool(args.phase1) or bool(args.run_dir) != bool(args.state):
        raise ScanfleetError("give either --run-dir RESULTS/RUN_ID with --state DIR (a recorded run), or --phase1 "
                             "XML... [--phase2 XML...] (files)")
    if args.run_dir:
        result = merge_run(args.run_dir, args.state, args.out, dtd=dtd)
    else:
        result = merge_two_phase(_labelled(args.phase1), _labelled(args.phase2), args.out, dtd=dtd)
    hosts = result["hosts"]
    print(f"{args.out}: {hosts['total']} addresses ({hosts['up']} up, {hosts['down']} down), "
          f"{result['replaced_ports']} phase-1 ports replaced by phase 2"
          + (", valid against nmap.dtd" if result["validated"] else ""))
    return 0 if result["exit"] == "success" else 1


def _add_scope(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scope", action="extend", nargs="+", default=[], metavar="S",
                        help="networks you may scan (CIDRs/ranges); every pair's address must lie inside")
    parser.add_argument("--scope-file", action="extend", nargs="+", default=[], metavar="F")


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``scanfleet pairs collect|shard|record|status|merge``."""
    parser = sub.add_parser("pairs", help="two-phase scanning: phase-1 pairs, phase-2 jobs, the merge",
                            description=__doc__.splitlines()[0])
    actions = parser.add_subparsers(dest="pairs_command", required=True)

    p = actions.add_parser("collect", help="the open pairs and the accounting of every address, from phase 1",
                           description="Read the phase-1 nmap XML and write the open pairs and the accounting "
                                       "(up with open ports, up with none, down, pending). Exit 1 when some "
                                       "addresses are pending (an incomplete phase-1 shard).")
    p.add_argument("--run-dir", metavar="DIR", help="the phase-1 run's directory, RESULTS/RUN_ID")
    p.add_argument("--shard", nargs=2, action="append", default=[], metavar=("TARGETS", "XML"),
                   help="one phase-1 shard: its -iL targets file and its nmap XML")
    p.add_argument("--states", default=",".join(DEFAULT_STATES), metavar="LIST",
                   help="port states that make a pair (default open; e.g. open,open|filtered for UDP)")
    p.add_argument("--out", required=True, metavar="FILE", help="pairs file to write (JSON)")
    p.add_argument("--json", action="store_true", help="print the accounting as JSON")
    _add_scope(p)
    p.set_defaults(func=_cmd_collect)

    p = actions.add_parser("shard", help="plan a phase-2 round: shard the pairs by count, group them into jobs",
                           description="Shard the pairs not yet done over the scanners by pair count (weighted) "
                                       "and group them into nmap jobs (-iL file + -p list); writes DIR/phase2.json "
                                       "and DIR/jobs/ID.targets. Run again after recording to plan what is left.")
    p.add_argument("--pairs", required=True, metavar="FILE", help="pairs file from scanfleet pairs collect")
    p.add_argument("--state", required=True, metavar="DIR", help="phase-2 directory (phase2.json, jobs/)")
    p.add_argument("--scanner", action="extend", nargs="+", default=[], metavar="NAME=WEIGHT",
                   help="scanner host and its capacity weight")
    p.add_argument("--unavailable", action="extend", nargs="+", default=[], metavar="NAME[=WHY]",
                   help="scanner that gets no work in this round (its assigned jobs are lost)")
    p.add_argument("--grouping", choices=GROUPINGS, default="union",
                   help="union: hosts share a job while that adds at most --job-cost port probes (default); "
                        "exact: one job per port set")
    p.add_argument("--job-cost", type=int, default=DEFAULT_JOB_COST, metavar="PROBES",
                   help=f"port probes one more nmap process is worth (default {DEFAULT_JOB_COST})")
    p.add_argument("--json", action="store_true",
                   help="print the plan as JSON (jobs per scanner, cost, pairs per scanner and tail, progress)")
    _add_scope(p)
    p.set_defaults(func=_cmd_shard)

    p = actions.add_parser("record", help="record a phase-2 job's nmap XML (or that nothing came back)")
    p.add_argument("--state", required=True, metavar="DIR", help="phase-2 directory")
    p.add_argument("--job", required=True, metavar="ID", help="job id from scanfleet pairs shard")
    p.add_argument("--xml", metavar="FILE", help="the job's nmap XML (omit when nothing came back)")
    p.add_argument("--outcome", metavar="WORD", help="why nothing came back (unreachable: the scanner is lost)")
    p.set_defaults(func=_cmd_record)

    p = actions.add_parser("status", help="phase-2 progress: pairs done, assigned, left; exit 1 while any is left")
    p.add_argument("--state", required=True, metavar="DIR", help="phase-2 directory")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_status)

    p = actions.add_parser("merge", help="merge phase-1 and phase-2 nmap XML into one report")
    p.add_argument("--run-dir", metavar="DIR", help="the phase-1 run's directory, RESULTS/RUN_ID (with --state)")
    p.add_argument("--state", metavar="DIR", help="the phase-2 directory (its recorded jobs' XML)")
    p.add_argument("--phase1", nargs="+", default=[], metavar="XML", help="the discovery shards' nmap XML")
    p.add_argument("--phase2", nargs="*", default=[], metavar="XML", help="the phase-2 jobs' nmap XML")
    p.add_argument("--out", required=True, metavar="FILE", help="merged nmap XML to write")
    p.add_argument("--dtd", metavar="PATH", help="nmap.dtd to validate the result with")
    p.set_defaults(func=_cmd_merge)
