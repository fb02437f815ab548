#!/usr/bin/env python3
"""Benchmark: the fleet at scale (issue 11): 1, 2 and 3 scanners, one-phase and two-phase, stock nmap, /16 sweep.

Needs the scale lab (`make bench-scale` does it all: make provision, lab/scale.sh up, then this program). Every
variant runs playbooks/scan.yml over the same target set (10.78.0.0/22, 1,024 addresses, 304 of them live, see
LAYOUT) with the same per-scanner rate cap (nmap_scan_max_rate_per_scanner = --cap), each with its own run id in
its own results directory under bench/results/scale/STAMP/:

* one_phase-contiguous-N, one_phase-interleaved-N, two_phase-N for N = 1, 2, 3 scanners (--limit); with one
  scanner both shard modes give the same single shard, so one_phase-interleaved-1 is not run again: the
  interleaved line starts at one_phase-contiguous-1; two-phase shards its discovery phase interleaved (the live
  addresses sit in the first half of the /22: contiguous shards would leave the third scanner without a live one);
* stock-1: Debian's nmap package on scanner1 (installed there by an ansible ad-hoc apt call), through the same
  playbook: nmap_scan_nmap=/usr/bin/nmap with its own data directory and probes file, run as root (the Debian
  binary has no capabilities); at stock's 20 probes in flight a silent port takes about 157 s, so the job is
  ended after --stock-limit seconds (nmap_scan_timeout, one round) and its time is a lower bound;
* sweep-1, sweep-3: host discovery only (nmap_scan_options -sn -v) of 10.78.0.0/16 on 1 and 3 scanners.

Per variant: wall time, ratio to 1 scanner (same mode) and to stock, the identified services (address, port,
service, product from merged.xml; the same in every fleet variant, checked), the tail (slowest scanner's nmap time
over the mean; two-phase: the service phase), the overhead (wall time not covered by any nmap job), the
controller's peak memory, and silent ports per second per scanner. The goals of issue 11 are checked and printed,
met or not. Writes bench/results/fleet_scale.json, prints a Markdown table, draws bench/fleet_scale.png.
``--report JSON`` only renders the table and the chart again from a saved result. docs/benchmarks.md says what each
figure means and how it is measured.

A variant whose playbook fails is reported with its exit status and the tail of its output; the others still
run, and the program exits 1. Ctrl-C ends the running ansible-playbook by its process group (SIGINT, then SIGTERM
and SIGKILL), which this program started in a session of its own.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from benchlib import emit, header

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lab_sweep import services  # noqa: E402

from scanfleet import ScanfleetError  # noqa: E402
from scanfleet.collect import XML, attempt_dir  # noqa: E402
from scanfleet.intervals import format_address  # noqa: E402
from scanfleet.jobs import parse_stats  # noqa: E402
from scanfleet.merge import inspect_input  # noqa: E402
from scanfleet.pairs import PHASE2_FILE, decode_map, iter_pairs, job_dir, load_phase2  # noqa: E402
from scanfleet.shards import shard  # noqa: E402
from scanfleet.state import load_state  # noqa: E402
from scanfleet.targets import parse_scope  # noqa: E402
from scanfleet.twophase import PHASE2_DIR  # noqa: E402

# --- The scale lab (lab/scale.sh; its facts, which the estimate and the silent-port count rely on) -------------
TARGETS = "10.78.0.0/22"
SWEEP = "10.78.0.0/16"
SCALE_SILENT = (81, 443, 1433, 5432, 5900, 8000, 8443, 9200)
# address block -> what answers there: a lab target host of inventory/lab/targets.yml (every port of that host),
# the silent-responder host (SCALE_SILENT), or the host with nothing listening (closed ports only)
LAYOUT = (("10.78.0.1-16", "target-web"), ("10.78.0.17-32", "target-db"), ("10.78.0.33-48", "target-mail"),
          ("10.78.1.0-127", "silent"), ("10.78.2.0-127", "closed"))
SCANNERS = ("scanner1", "scanner2", "scanner3")
STOCK = {"nmap_scan_nmap": "/usr/bin/nmap", "nmap_scan_nmap_datadir": "/usr/share/nmap",
         "nmap_scan_versiondb": "/usr/share/nmap/nmap-service-probes", "nmap_scan_user": "root",
         "nmap_scan_group": "root"}
SWEEP_OPTIONS = ["-sn", "-v"]

# --- Goals of issue 11 --------------------------------------------------------------------------------------
GOAL_SPEEDUP = 2.7  # 3 scanners / 1 scanner, same per-scanner cap
GOAL_TAIL = 1.2  # two-phase, service phase
GOAL_OVERHEAD = 0.10  # of a run lasting at least GOAL_OVERHEAD_RUN seconds
GOAL_OVERHEAD_RUN = 300.0
GOAL_SILENT = 100.0  # silent ports per second per scanner

# --- Estimate (printed before starting) ---------------------------------------------------------------------
ARP_TRIES = 3  # ARP requests nmap sends to an address that never answers (estimate only)
RUN_ALLOWANCE = 60.0  # seconds per run beyond the probes: playbook start, service scan and NSE, fetch, merge
# Stock nmap's service scan (issue 11; bench/RESULTS.md section 1): 20 probes in flight, about 157 s per silent port
STOCK_IN_FLIGHT = 20
STOCK_SILENT_SECONDS = 157


def variant_table() -> dict[str, dict[str, Any]]:
    """Every variant: kind (fleet, stock, sweep), scanners, mode, shard mode."""
    out: dict[str, dict[str, Any]] = {}
    for n in (1, 2, 3):
        out[f"one_phase-contiguous-{n}"] = {"kind": "fleet", "scanners": n, "mode": "one_phase",
                                            "shard_mode": "contiguous", "line": "one_phase-contiguous"}
        if n > 1:
            out[f"one_phase-interleaved-{n}"] = {"kind": "fleet", "scanners": n, "mode": "one_phase",
                                                 "shard_mode": "interleaved", "line": "one_phase-interleaved"}
        out[f"two_phase-{n}"] = {"kind": "fleet", "scanners": n, "mode": "two_phase", "shard_mode": "interleaved",
                                 "line": "two_phase"}
    out["stock-1"] = {"kind": "stock", "scanners": 1, "mode": "one_phase", "shard_mode": "contiguous",
                      "line": "stock"}
    for n in (1, 3):
        out[f"sweep-{n}"] = {"kind": "sweep", "scanners": n, "mode": "one_phase", "shard_mode": "contiguous",
                             "line": "sweep /16"}
    return out


VARIANTS = variant_table()


# --------------------------------------------------------------------------------------------------
# Ports and the lab's silent ports


def lab_inventory(inventory: Path, tool: str = "ansible-inventory") -> dict[str, dict[str, Any]]:
    """Host vars of the lab's target hosts (group targets), read as lab/targets.sh reads them."""
    try:
        proc = subprocess.run([tool, "-i", str(inventory), "--list"], capture_output=True, text=True, check=False,
                              cwd=ROOT, timeout=120)
    except OSError as exc:
        raise ScanfleetError(f"{tool}: {exc}; run make venv (ansible is in .venv/bin)") from None
    if proc.returncode:
        raise ScanfleetError(f"{tool} -i {inventory} --list failed: {proc.stderr.strip()[-500:]}")
    inv = json.loads(proc.stdout)
    hosts = inv.get("targets", {}).get("hosts", [])
    if not hosts:
        raise ScanfleetError(f"{inventory}: no host in group targets; give the lab inventory (--inventory)")
    return {h: inv["_meta"]["hostvars"][h] for h in hosts}


def host_ports(hostvars: Mapping[str, Any]) -> tuple[set[int], set[int]]:
    """(every port of a lab target host, its silent ones): sshd, its real services and its responder ports."""
    ports = set(hostvars["targets_service_ports"]["ssh"])
    for service in hostvars.get("targets_services", []):
        ports.update(hostvars["targets_service_ports"][service])
    responder = hostvars.get("targets_responder", [])
    ports.update(e["port"] for e in responder)
    return ports, {e["port"] for e in responder if e["kind"] == "silent"}


def port_numbers(spec: str) -> set[int]:
    """The TCP ports of an nmap -p list made of numbers and ranges (``22,80,1-1024``)."""
    out: set[int] = set()
    for part in spec.split(","):
        part = part.strip()
        if not re.fullmatch(r"\d+(-\d+)?", part):
            raise ScanfleetError(f"--ports: {part!r} is not a port or range; give e.g. lab,1-1024 or 1-1024,8080")
        lo, _, hi = part.partition("-")
        first, last = int(lo), int(hi or lo)
        if not 1 <= first <= last <= 65535:
            raise ScanfleetError(f"--ports: {part!r} is outside 1-65535 or reversed")
        out.update(range(first, last + 1))
    return out


def port_list(spec: str, lab_ports: Iterable[int]) -> list[int]:
    """--ports: an nmap port list where the word ``lab`` stands for every port of the lab's target hosts."""
    words = [w.strip() for w in spec.split(",") if w.strip()]
    ports = set(lab_ports) if "lab" in words else set()
    rest = ",".join(w for w in words if w != "lab")
    return sorted(ports | (port_numbers(rest) if rest else set()))


def compress(ports: Sequence[int]) -> str:
    """22,80,100-200: the nmap -p form of sorted PORTS."""
    parts: list[str] = []
    start = prev = None
    for port in [*ports, None]:
        if prev is not None and port == prev + 1:
            prev = port
            continue
        if start is not None:
            parts.append(str(start) if start == prev else f"{start}-{prev}")
        start = prev = port
    return ",".join(parts)


def silent_pairs(hostvars: Mapping[str, Mapping[str, Any]], ports: Iterable[int]) -> set[tuple[str, int]]:
    """The (address, port) of every silent port of the scale lab that PORTS cover (LAYOUT)."""
    wanted = set(ports)
    out: set[tuple[str, int]] = set()
    for block, what in LAYOUT:
        if what == "closed":
            continue
        silent = set(SCALE_SILENT) if what == "silent" else host_ports(hostvars[what])[1]
        for address in addresses(block):
            out.update((address, p) for p in silent & wanted)
    return out


def addresses(block: str) -> list[str]:
    """Every address of BLOCK (a target expression), as text."""
    return [format_address(family, value) for family, lo, hi in parse_scope(block, origin="LAYOUT").ranges()
            for value in range(lo, hi + 1)]


# --------------------------------------------------------------------------------------------------
# Estimate: probes / cap, per scanner, the slowest shard deciding


def shard_probes(targets: str, n: int, shard_mode: str, *, ports: int, sweep: bool) -> list[int]:
    """Probes each of N scanners sends: a live address costs one probe per port (one ARP for a sweep), a dead one
    ARP_TRIES ARP requests. The shards are scanfleet.shards' own."""
    live = parse_scope([block for block, _ in LAYOUT], origin="LAYOUT")
    pieces = shard(parse_scope(targets, origin="targets"), {h: 1 for h in SCANNERS[:n]}, shard_mode)
    out = []
    for piece in pieces.values():
        up = (piece & live).size
        out.append(up * (1 if sweep else ports) + (piece.size - up) * ARP_TRIES)
    return out


def estimate(names: Sequence[str], *, cap: int, ports: int, stock_limit: float, repeat: int) -> dict[str, Any]:
    """Seconds each variant should take (slowest shard's probes / cap + RUN_ALLOWANCE), and the sum."""
    per: dict[str, float] = {}
    for name in names:
        v = VARIANTS[name]
        sweep = v["kind"] == "sweep"
        probes = shard_probes(SWEEP if sweep else TARGETS, v["scanners"], v["shard_mode"], ports=ports, sweep=sweep)
        seconds = max(probes) / cap + RUN_ALLOWANCE
        if v["kind"] == "stock":
            seconds = min(seconds, stock_limit + RUN_ALLOWANCE)
        per[name] = round(seconds)
    return {"per_variant": per, "total": round(sum(per.values()) * repeat), "repeat": repeat,
            "assumptions": f"probes = live addresses x {ports} ports + dead addresses x {ARP_TRIES} ARP requests, "
                           f"per scanner, slowest shard / {cap} packets/s, + {RUN_ALLOWANCE:.0f} s per run"}


# --------------------------------------------------------------------------------------------------
# Reading a run directory (analysis: no lab needed)


def job_runs(run: Path) -> list[dict[str, Any]]:
    """Every nmap job of the run that left an XML: phase (``scan``: one-phase shards and phase 1; ``service``:
    phase 2), scanner, id, and its [start, end] from the XML nmap wrote (nmaprun start; start + runstats elapsed,
    or the latest time the XML holds when it was cut off)."""
    out = []
    state = load_state(run)
    if state is None:
        raise ScanfleetError(f"{run}/state.json: no run state; is {run} a scanfleet run directory?")
    items: list[tuple[str, str, str, Path]] = [
        ("scan", a.host, a.id, attempt_dir(run.parent, state.run_id, a) / XML)
        for a in state.attempts if XML in a.files]
    phase2 = load_phase2(run / PHASE2_DIR) if (run / PHASE2_DIR / PHASE2_FILE).is_file() else None
    if phase2 is not None:
        # the recorded path, or where the role fetches it (a results directory that was moved)
        items += [("service", j.host, j.id, Path(j.xml) if Path(j.xml).is_file() else
                   job_dir(run / PHASE2_DIR, j) / XML) for j in phase2.jobs if j.xml]
    for phase, host, job_id, xml in items:
        try:
            report = inspect_input(xml, job_id)
        except ScanfleetError:
            continue  # an XML nmap did not finish writing usably: recorded failed, no time to read from it
        if report.start is None:
            continue
        end = report.start + report.elapsed if report.elapsed is not None else (report.last_seen or report.start)
        out.append({"phase": phase, "host": host, "id": job_id, "start": float(report.start), "end": float(end),
                    "xml": str(xml), "version": report.version, "complete": report.complete})
    return out


def union_seconds(intervals: Iterable[tuple[float, float]], window: tuple[float, float] | None = None) -> float:
    """Length of the union of [start, end] INTERVALS, clipped to WINDOW when given."""
    spans = []
    for start, end in intervals:
        if window is not None:
            start, end = max(start, window[0]), min(end, window[1])
        if end > start:
            spans.append((start, end))
    total = 0.0
    cur_start = cur_end = None
    for start, end in sorted(spans):
        if cur_end is None or start > cur_end:
            if cur_end is not None:
                total += cur_end - cur_start
            cur_start, cur_end = start, end
        else:
            cur_end = max(cur_end, end)
    if cur_end is not None:
        total += cur_end - cur_start
    return total


def busy(runs: Sequence[Mapping[str, Any]], phase: str) -> dict[str, float]:
    """Scanner -> seconds in which at least one of its nmap jobs of PHASE ran (union of their intervals)."""
    hosts = sorted({r["host"] for r in runs if r["phase"] == phase})
    return {h: union_seconds((r["start"], r["end"]) for r in runs if r["phase"] == phase and r["host"] == h)
            for h in hosts}


def tail(runs: Sequence[Mapping[str, Any]], phase: str) -> dict[str, Any] | None:
    """The slowest scanner's nmap time in PHASE over the mean of the scanners' (None: no job in that phase)."""
    per = busy(runs, phase)
    if not per:
        return None
    mean = statistics.fmean(per.values())
    return {"tail": round(max(per.values()) / mean, 3) if mean else None,
            "seconds": {h: round(s, 2) for h, s in per.items()}}


def overhead(runs: Sequence[Mapping[str, Any]], start: float, end: float) -> dict[str, float]:
    """Wall time of the playbook [START, END] in which no nmap job of the run was running."""
    inside = union_seconds(((r["start"], r["end"]) for r in runs), (start, end))
    wall = end - start
    return {"seconds": round(wall - inside, 2), "share": round((wall - inside) / wall, 4) if wall > 0 else None,
            "nmap_seconds": round(inside, 2)}


_COMPLETED = re.compile(r"^Completed (Service scan|NSE) at [0-9:]+, ([0-9.]+)s elapsed", re.M)


def service_seconds(log_text: str) -> float | None:
    """Seconds of an nmap run's service identification: its "Completed Service scan" and "Completed NSE" lines
    (nmap -v), summed; None when it has no service scan."""
    found = _COMPLETED.findall(log_text)
    if not any(kind == "Service scan" for kind, _ in found):
        return None
    return sum(float(seconds) for _, seconds in found)


def silent_rates(run: Path, runs: Sequence[Mapping[str, Any]],
                 silent: set[tuple[str, int]]) -> dict[str, dict[str, Any]]:
    """Scanner -> silent ports it identified per second. Two-phase: the silent pairs of its phase-2 jobs over the
    time its phase-2 nmap ran (whole runs, NSE included). One-phase: the silent ports of its shards over the
    "Service scan" + "NSE" seconds of their nmap.log. Scanners with no silent port are left out."""
    per: dict[str, dict[str, float]] = {}
    phase2 = load_phase2(run / PHASE2_DIR) if (run / PHASE2_DIR / PHASE2_FILE).is_file() else None
    if phase2 is not None:
        seconds = busy(runs, "service")
        for job in phase2.jobs:
            if not job.xml:
                continue
            count = sum(1 for a, proto, p in iter_pairs(decode_map(job.pairs, source=job.id))
                        if proto == "tcp" and (a, p) in silent)
            entry = per.setdefault(job.host, {"silent": 0, "seconds": seconds.get(job.host, 0.0)})
            entry["silent"] += count
    else:
        state = load_state(run)
        for attempt in state.attempts if state else []:
            log = attempt_dir(run.parent, state.run_id, attempt) / "nmap.log"
            spent = service_seconds(log.read_text(errors="replace")) if log.is_file() else None
            if spent is None or XML not in attempt.files:
                continue
            mine = attempt.addresses()
            count = sum(1 for a, _ in silent if a in mine)
            entry = per.setdefault(attempt.host, {"silent": 0, "seconds": 0.0})
            entry["silent"] += count
            entry["seconds"] += spent
    return {h: {"silent": e["silent"], "seconds": round(e["seconds"], 2),
                "per_second": round(e["silent"] / e["seconds"], 1) if e["seconds"] else None}
            for h, e in sorted(per.items()) if e["silent"]}


def identified(merged: Path) -> dict[str, tuple[str, str]]:
    """address:port/protocol -> (service, product) of every open port of a merged report."""
    return {key: (e["service"] or "", e["product"] or "") for key, e in services(merged).items()}


def compare_services(found: Mapping[str, Mapping[str, tuple[str, str]]]) -> dict[str, Any]:
    """Whether every variant of FOUND (name -> identified()) names the same services; the first is the reference.
    Per differing variant: ports missing, ports extra, ports named otherwise (at most 20 of each listed)."""
    names = list(found)
    if not names:
        return {"same": True, "reference": None, "differ": {}}
    ref = found[names[0]]
    differ = {}
    for name in names[1:]:
        mine = found[name]
        missing = sorted(set(ref) - set(mine))
        extra = sorted(set(mine) - set(ref))
        changed = sorted(k for k in set(ref) & set(mine) if ref[k] != mine[k])
        if missing or extra or changed:
            differ[name] = {"missing": missing[:20], "extra": extra[:20],
                            "changed": [{"port": k, names[0]: ref[k], name: mine[k]} for k in changed[:20]],
                            "counts": {"missing": len(missing), "extra": len(extra), "changed": len(changed)}}
    return {"same": not differ, "reference": names[0], "differ": differ}


def median_seconds(result: Mapping[str, Any]) -> float | None:
    ok = [r["seconds"] for r in result.get("runs", []) if r.get("rc") == 0 or r.get("limited")]
    return round(statistics.median(ok), 1) if ok else None


def ratios(results: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per variant: its ratio to 1 scanner of the same line (t1 / t) and to stock (t_stock / t; a lower bound,
    marked, when stock was ended at its limit). Interleaved's 1-scanner point is one_phase-contiguous-1."""
    seconds = {name: median_seconds(r) for name, r in results.items()}
    stock = seconds.get("stock-1")
    stock_limited = any(r.get("limited") for r in results.get("stock-1", {}).get("runs", []))
    out = {}
    for name, t in seconds.items():
        v = VARIANTS[name]
        one = next((n for n, w in VARIANTS.items() if w["line"] == v["line"] and w["scanners"] == 1), None)
        if v["line"] == "one_phase-interleaved":
            one = "one_phase-contiguous-1"
        t1 = seconds.get(one) if one else None
        out[name] = {"to_one": round(t1 / t, 2) if t and t1 else None,
                     "to_stock": round(stock / t, 2) if t and stock and v["kind"] == "fleet" else None,
                     "to_stock_is_lower_bound": stock_limited}
    return out


def goals(results: Mapping[str, Mapping[str, Any]], ratio: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The goals of issue 11, each with met (True/False, None: not measured) and what decided it."""
    out = []
    speed = {name: ratio[name]["to_one"] for name in ratio
             if VARIANTS[name]["kind"] == "fleet" and VARIANTS[name]["scanners"] == 3}
    speed = {k: v for k, v in speed.items() if v is not None}
    best = max(speed, key=speed.get) if speed else None
    out.append({"goal": f"3 scanners >= {GOAL_SPEEDUP}x one scanner at the same per-scanner cap",
                "met": None if best is None else speed[best] >= GOAL_SPEEDUP,
                "figures": speed, "why": f"best: {best} at {speed[best]}x" if best else "no 3-scanner fleet run"})
    tails = {name: r["tail"]["service"]["tail"] for name, r in results.items()
             if VARIANTS[name]["mode"] == "two_phase" and VARIANTS[name]["scanners"] > 1
             and (r.get("tail") or {}).get("service")}
    out.append({"goal": f"two-phase tail (service phase) <= {GOAL_TAIL}",
                "met": None if not tails else all(t is not None and t <= GOAL_TAIL for t in tails.values()),
                "figures": tails, "why": "every two-phase run on 2 or 3 scanners" if tails else "no two-phase run "
                "on 2 or more scanners"})
    long_runs = {name: r["overhead"]["share"] for name, r in results.items()
                 if r.get("overhead") and (median_seconds(r) or 0) >= GOAL_OVERHEAD_RUN}
    longest = max((median_seconds(r) or 0 for r in results.values()), default=0)
    out.append({"goal": f"overhead <= {GOAL_OVERHEAD:.0%} of a run lasting >= {GOAL_OVERHEAD_RUN:.0f} s",
                "met": None if not long_runs else all(s <= GOAL_OVERHEAD for s in long_runs.values()),
                "figures": long_runs,
                "why": "every run of at least that length" if long_runs else
                f"no run lasted {GOAL_OVERHEAD_RUN:.0f} s (longest {longest:.0f} s): lower --cap to check it"})
    silent = {f"{name}/{host}": e["per_second"] for name, r in results.items() if VARIANTS[name]["kind"] == "fleet"
              for host, e in (r.get("silent") or {}).items() if e["per_second"] is not None}
    out.append({"goal": f">= {GOAL_SILENT:.0f} silent ports per second per scanner",
                "met": None if not silent else min(silent.values()) >= GOAL_SILENT, "figures": silent,
                "why": f"slowest: {min(silent, key=silent.get)}" if silent else "no silent port rate derived"})
    return out


def analyse_run(run: Path, start: float, end: float, silent: set[tuple[str, int]], mode: str) -> dict[str, Any]:
    """The figures of one finished run directory (playbook from START to END, epoch seconds)."""
    runs = job_runs(run)
    merged = run / "merged.xml"
    return {"jobs": len(runs), "versions": sorted({r["version"] for r in runs if r["version"]}),
            "overhead": overhead(runs, start, end),
            "tail": {phase: tail(runs, phase) for phase in (("scan", "service") if mode == "two_phase" else ("scan",))},
            "silent": silent_rates(run, runs, silent),
            "services": identified(merged) if merged.is_file() else None}


# --------------------------------------------------------------------------------------------------
# Running the playbook (lab)


def session_rss(sid: int) -> int:
    """KiB resident in every process of session SID (the playbook and all its workers) now."""
    total = 0
    page = os.sysconf("SC_PAGE_SIZE") // 1024
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            if int(fields[3]) != sid:  # field 6 of stat: session id
                continue
            total += int((entry / "statm").read_text().split()[1]) * page
        except (OSError, ValueError, IndexError):
            continue
    return total


def stop_group(pid: int, graces: tuple[float, float, float] = (30, 10, 10)) -> None:
    """End the process group PID (the playbook we started, leader PID): SIGINT (ansible's own Ctrl-C), then SIGTERM,
    then SIGKILL, each until the whole group is gone (a member may outlive the leader) or its grace (seconds,
    GRACES) is over."""
    reaped = False
    for sig, grace in zip((signal.SIGINT, signal.SIGTERM, signal.SIGKILL), graces, strict=True):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        end = time.monotonic() + grace
        while time.monotonic() < end:
            if not reaped:
                try:
                    reaped = bool(os.wait4(pid, os.WNOHANG)[0])
                except ChildProcessError:
                    reaped = True
            try:
                os.killpg(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)


def run_playbook(cmd: Sequence[str], log: Path, timeout: float) -> dict[str, Any]:
    """Run CMD (its output to LOG) in a session of its own; wall time, exit status, peak memory of its processes
    (ru_maxrss of the largest one, from wait4; and the largest sum over the session, sampled every second)."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    start, t0 = time.time(), time.monotonic()
    peak = 0
    try:
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            peak = max(peak, session_rss(proc.pid))
            if time.monotonic() - t0 > timeout:
                stop_group(proc.pid)
                return {"rc": None, "seconds": round(time.monotonic() - t0, 1), "start": start, "end": time.time(),
                        "error": f"timed out after {timeout:.0f} s (--timeout)", "tail": tail_of(log)}
            time.sleep(1)
    except BaseException:
        stop_group(proc.pid)
        raise
    seconds = time.monotonic() - t0
    rc = os.waitstatus_to_exitcode(status)
    return {"rc": rc, "seconds": round(seconds, 1), "start": start, "end": start + seconds,
            "maxrss_kib": usage.ru_maxrss, "peak_session_rss_kib": peak,
            **({"tail": tail_of(log)} if rc else {})}


def tail_of(log: Path, lines: int = 30) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def extra_vars(name: str, *, run_id: str, results: Path, ports: str, cap: int, stock_limit: int) -> dict[str, Any]:
    v = VARIANTS[name]
    extra: dict[str, Any] = {"nmap_scan_run_id": run_id, "nmap_scan_results_dir": str(results),
                             "nmap_scan_max_rate_per_scanner": cap, "nmap_scan_mode": v["mode"],
                             "nmap_scan_shard_mode": v["shard_mode"]}
    if v["kind"] == "sweep":
        extra.update(nmap_scan_targets=[SWEEP], nmap_scan_ports="", nmap_scan_options=SWEEP_OPTIONS)
    else:
        extra.update(nmap_scan_targets=[TARGETS], nmap_scan_ports=ports)
    if v["kind"] == "stock":
        extra.update(STOCK, nmap_scan_timeout=stock_limit, nmap_scan_max_rounds=1)
    return extra


def install_stock(ansible: str, log: Path) -> dict[str, Any]:
    """Debian's nmap package on scanner1 (from the lab's apt proxy), and the version it reports."""
    with open(log, "ab") as out:
        rc = subprocess.run([ansible, "scanner1", "-m", "ansible.builtin.apt", "-a",
                             "name=nmap state=present update_cache=true", "--become"], cwd=ROOT, stdout=out,
                            stderr=subprocess.STDOUT, timeout=900, check=False).returncode
    version = subprocess.run([ansible, "scanner1", "-m", "ansible.builtin.command", "-a", "/usr/bin/nmap --version",
                              "-o"], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False).stdout
    return {"rc": rc, "version": version.strip()}


def ad_hoc(ansible: str, hosts: str, module: str, module_args: Mapping[str, Any]) -> dict[str, Any]:
    """An ansible ad-hoc call (-o: one line per host, "HOST | STATUS => {json}"); host -> its result."""
    proc = subprocess.run([ansible, hosts, "-m", module, "-a", json.dumps(module_args), "--become", "-o"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, check=False)
    out = {}
    for line in proc.stdout.splitlines():
        head, sep, body = line.partition(" => ")
        if sep:
            try:
                out[head.split(" | ", 1)[0].strip()] = json.loads(body)
            except ValueError:
                continue
    return out


def stop_remote_jobs(ansible: str, run_id: str, hosts: Sequence[str]) -> dict[str, Any]:
    """End, by their recorded PIDs (scanfleet.fleet.scan_job state=stopped), the jobs of RUN_ID still on HOSTS:
    a playbook ended from here leaves its detached jobs running. Returns what each host answered."""
    base = "/var/lib/scanfleet/runs"  # nmap_scan_remote_dir's default, which the benchmark does not change
    found = ad_hoc(ansible, ":".join(hosts), "ansible.builtin.find",
                   {"paths": f"{base}/{run_id}", "file_type": "directory"})
    out = {}
    for host, result in found.items():
        jobs = [{"id": Path(f["path"]).name} for f in result.get("files", [])]
        if jobs:
            answer = ad_hoc(ansible, host, "scanfleet.fleet.scan_job",
                            {"state": "stopped", "base_dir": base, "run_id": run_id, "attempts": jobs,
                             "reason": "stopped"}).get(host, {})
            out[host] = [{"id": a.get("id"), "state": a.get("state")} for a in answer.get("attempts", [])]
    return out


def run_variant(name: str, args: argparse.Namespace, work: Path, silent: set[tuple[str, int]],
                ports: str) -> dict[str, Any]:
    v = VARIANTS[name]
    runs = []
    for i in range(1, args.repeat + 1):
        run_id = f"{work.name}-{name}-r{i}"  # unique: the scanners keep their job directories by run id
        extra = extra_vars(name, run_id=run_id, results=work, ports=ports, cap=args.cap, stock_limit=args.stock_limit)
        cmd = [args.ansible_playbook, "playbooks/scan.yml", "-e", json.dumps(extra), "--limit",
               ":".join(SCANNERS[:v["scanners"]])]
        print(f"{name} run {i}: {' '.join(cmd[:2])} -e '{json.dumps(extra)}' {' '.join(cmd[4:])}", file=sys.stderr,
              flush=True)
        ansible = str(Path(args.ansible_playbook).parent / "ansible")
        try:
            result = run_playbook(cmd, work / f"{run_id}.log", args.timeout)
        except KeyboardInterrupt:
            stop_remote_jobs(ansible, run_id, SCANNERS[:v["scanners"]])
            raise
        if result["rc"] is None:  # ended at --timeout
            result["stopped_jobs"] = stop_remote_jobs(ansible, run_id, SCANNERS[:v["scanners"]])
        result.update(run_id=run_id, command=cmd)
        run = work / run_id
        if (run / "state.json").is_file():
            try:
                result.update(analyse_run(run, result["start"], result["end"], silent, v["mode"]))
            except (ScanfleetError, OSError, ValueError) as exc:
                result["analysis_error"] = str(exc)
        if v["kind"] == "stock" and result["rc"] not in (0, None):
            result.update(stock_limited(run, len(silent)))
        print(f"{name} run {i}: rc {result['rc']}, {result['seconds']} s", file=sys.stderr, flush=True)
        runs.append(result)
    return summarise(name, runs)


def stock_limited(run: Path, silent: int) -> dict[str, Any]:
    """Whether stock nmap's job was ended at --stock-limit (outcome timeout), where its nmap was then (the last
    progress line of its nmap.log), and a projection, labelled as one: its silent ports at
    STOCK_SILENT_SECONDS each, STOCK_IN_FLIGHT at a time."""
    state = load_state(run) if (run / "state.json").is_file() else None
    ended = [a for a in (state.attempts if state else []) if a.outcome == "timeout"]
    if not ended:
        return {"limited": False}
    log = attempt_dir(run.parent, state.run_id, ended[0]) / "nmap.log"
    progress = parse_stats(log.read_text(errors="replace")) if log.is_file() else None
    return {"limited": True, "stock_progress": None if progress is None else
            {"phase": progress.phase, "percent": progress.percent, "hosts_completed": progress.hosts_completed},
            "stock_silent_projection_s": round(silent * STOCK_SILENT_SECONDS / STOCK_IN_FLIGHT)}


def summarise(name: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The variant's entry: every run, and the figures of its median run."""
    out: dict[str, Any] = {**VARIANTS[name], "runs": runs}
    out["seconds"] = median_seconds(out)
    ok = [r for r in runs if r.get("rc") == 0 or r.get("limited")]
    if ok:
        mid = min(ok, key=lambda r: abs(r["seconds"] - out["seconds"]))
        for key in ("overhead", "tail", "silent", "maxrss_kib", "peak_session_rss_kib", "versions", "run_id",
                    "stock_progress", "stock_silent_projection_s"):
            out[key] = mid.get(key)
    out["failed"] = [{"run_id": r["run_id"], "rc": r["rc"], "error": r.get("error"), "tail": r.get("tail")}
                     for r in runs if r.get("rc") != 0 and not r.get("limited")]
    return out


# --------------------------------------------------------------------------------------------------
# Report: table and chart


def _fmt(value: Any, spec: str = "", suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def markdown(doc: Mapping[str, Any]) -> str:
    lines = ["| variant | scanners | wall s | vs 1 scanner | vs stock | tail | overhead s (%) | controller peak MiB "
             "(largest process / all) | silent ports/s per scanner | services |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    same = doc.get("services", {})
    for name, r in doc["variants"].items():
        ratio = doc["ratios"].get(name, {})
        t = r.get("tail") or {}
        phase = t.get("service") or t.get("scan") or {}
        over = r.get("overhead") or {}
        silent = r.get("silent") or {}
        rates = ", ".join(f"{h} {e['per_second']}" for h, e in silent.items()) or "-"
        stock = _fmt(ratio.get("to_stock"), ".2f", "x")
        if ratio.get("to_stock") is not None and ratio.get("to_stock_is_lower_bound"):
            stock = ">= " + stock
        seconds = _fmt(r.get("seconds"), ".1f")
        if r.get("failed") and r.get("seconds") is None:
            seconds = f"FAILED (rc {r['failed'][0]['rc']})"
        elif any(x.get("limited") for x in r.get("runs", [])):
            seconds = f">= {seconds} (ended at --stock-limit)"
        mem = (f"{_fmt(r.get('maxrss_kib') and r['maxrss_kib'] / 1024, '.0f')} / "
               f"{_fmt(r.get('peak_session_rss_kib') and r['peak_session_rss_kib'] / 1024, '.0f')}")
        if r["kind"] != "fleet":
            named = "-"
        elif name in same.get("differ", {}):
            named = "DIFFER"
        else:
            named = "same" if r.get("seconds") is not None else "-"
        lines.append(f"| {name} | {r['scanners']} | {seconds} | {_fmt(ratio.get('to_one'), '.2f', 'x')} | {stock} | "
                     f"{_fmt(phase.get('tail'), '.2f')} | {_fmt(over.get('seconds'), '.1f')} "
                     f"({_fmt(over.get('share') and over['share'] * 100, '.1f')}) | {mem} | {rates} | {named} |")
    lines += ["", "Goals:"]
    for goal in doc["goals"]:
        verdict = {True: "met", False: "NOT met", None: "not measured"}[goal["met"]]
        lines.append(f"- {goal['goal']}: **{verdict}** ({goal['why']}; {json.dumps(goal['figures'])})")
    stock = doc["variants"].get("stock-1", {})
    if stock.get("stock_silent_projection_s"):
        where = stock.get("stock_progress") or {}
        lines.append(f"- stock-1 was ended at --stock-limit ({doc['stock_limit']} s of nmap), its nmap at "
                     f"{where.get('phase') or '?'} {_fmt(where.get('percent'), '.1f', '%')}; its "
                     f"{doc['silent_ports']} silent ports alone would take about "
                     f"{stock['stock_silent_projection_s']} s "
                     f"at {STOCK_IN_FLIGHT} in flight and {STOCK_SILENT_SECONDS} s each (a projection, not measured)")
    if same.get("differ"):
        lines.append(f"- Services differ from {same['reference']} in: " + "; ".join(
            f"{n} ({json.dumps(d['counts'])})" for n, d in same["differ"].items()))
    return "\n".join(lines)


def chart(doc: Mapping[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines: dict[str, list[tuple[int, float]]] = {}
    for r in doc["variants"].values():
        if r.get("seconds") is not None:
            lines.setdefault(r["line"], []).append((r["scanners"], r["seconds"]))
    one = doc["variants"].get("one_phase-contiguous-1", {}).get("seconds")
    if one is not None and "one_phase-interleaved" in lines:
        lines["one_phase-interleaved"].append((1, one))  # the same single shard (module docstring)
    fig, ax = plt.subplots(figsize=(7, 4))
    stock = doc["variants"].get("stock-1", {})
    names = {"stock": "stock nmap" + (" (ended at its limit: a lower bound)" if stock.get("stock_silent_projection_s")
                                      else ""), "sweep /16": f"sweep {doc.get('sweep', SWEEP)} (-sn)"}
    for line, points in sorted(lines.items()):
        xs, ys = zip(*sorted(points), strict=True)
        ax.plot(xs, ys, marker="o" if len(xs) > 1 else "s", label=names.get(line, line))
    ax.set_xticks([1, 2, 3])
    ax.set_xlabel("scanners")
    ax.set_ylabel("wall time, s")
    ax.set_ylim(bottom=0)
    ax.set_title(f"Fleet at scale: {doc['targets']} ({doc['ports_count']} ports), {doc['cap']} packets/s per "
                 "scanner", fontsize=9)
    ax.legend(fontsize=8)
    fig.suptitle(f"{doc['date'][:10]}, {doc['machine']['cores']} cores", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def draw(doc: Mapping[str, Any], path: Path) -> str:
    """The chart, or why there is none (matplotlib comes with bench/requirements.txt, which make bench-scale
    installs)."""
    try:
        chart(doc, path)
    except ImportError as exc:
        return f"no chart: {exc}; pip install -r bench/requirements.txt -c constraints.txt"
    return str(path)


def finish(doc: dict[str, Any], args: argparse.Namespace) -> None:
    doc["markdown"] = markdown(doc)
    doc["chart"] = draw(doc, Path(args.chart))
    emit(doc, args.out, show={"out": args.out, "chart": doc["chart"]})
    print(doc["markdown"])


# --------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cap", type=int, default=2000, help="packets/s per scanner (nmap_scan_max_rate_per_scanner)")
    parser.add_argument("--ports", default="lab,1-1024", help="nmap -p list; 'lab': every port of the lab targets")
    parser.add_argument("--variants", default="all", help=f"comma-separated, of: {', '.join(VARIANTS)}")
    parser.add_argument("--repeat", type=int, default=1, help="runs per variant (the median is reported)")
    parser.add_argument("--stock-limit", type=int, default=180, help="seconds before stock nmap's job is ended")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds before a playbook run is ended")
    parser.add_argument("--estimate-only", action="store_true", help="print the estimate and stop")
    parser.add_argument("--report", metavar="JSON", help="only render the table and chart of a saved result")
    parser.add_argument("--inventory", default=str(ROOT / "inventory" / "lab"))
    parser.add_argument("--ansible-playbook", default=str(Path(sys.executable).parent / "ansible-playbook"))
    parser.add_argument("--results", default=str(ROOT / "bench" / "results" / "scale"))
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "fleet_scale.json"))
    parser.add_argument("--chart", default=str(ROOT / "bench" / "fleet_scale.png"))
    args = parser.parse_args(argv)
    if args.report:
        doc = json.loads(Path(args.report).read_text())
        doc["markdown"] = markdown(doc)
        print(doc["markdown"])
        print(draw(doc, Path(args.chart)), file=sys.stderr)
        return 0
    names = list(VARIANTS) if args.variants == "all" else [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown or args.cap < 1 or args.repeat < 1 or args.stock_limit < 1:
        parser.error(f"unknown variants {unknown} (use {', '.join(VARIANTS)})" if unknown else
                     "--cap, --repeat and --stock-limit must be whole numbers >= 1")
    sibling = Path(args.ansible_playbook).parent / "ansible-inventory"
    try:
        hostvars = lab_inventory(Path(args.inventory), str(sibling) if sibling.is_file() else "ansible-inventory")
    except ScanfleetError as exc:
        parser.error(str(exc))
    lab_ports: set[int] = set()
    for hv in hostvars.values():
        lab_ports |= host_ports(hv)[0]
    try:
        ports = port_list(args.ports, lab_ports)
    except ScanfleetError as exc:
        parser.error(str(exc))
    plan = estimate(names, cap=args.cap, ports=len(ports), stock_limit=args.stock_limit, repeat=args.repeat)
    print(f"estimate: {plan['total']} s ({plan['total'] / 60:.1f} min) for {len(names)} variants x {args.repeat}: "
          f"{json.dumps(plan['per_variant'])}; {plan['assumptions']}", file=sys.stderr, flush=True)
    if args.estimate_only:
        return 0
    started = time.time()
    stamp = datetime.datetime.fromtimestamp(started, datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    work = Path(args.results) / stamp
    work.mkdir(parents=True, mode=0o700)
    silent = silent_pairs(hostvars, ports)
    doc = header("fleet-scale", started)
    doc.update(targets=TARGETS, sweep=SWEEP, ports=compress(ports), ports_count=len(ports), cap=args.cap,
               repeat=args.repeat, stock_limit=args.stock_limit, silent_ports=len(silent), estimate=plan,
               results=str(work), variants={})
    if "stock-1" in names:
        doc["stock"] = install_stock(str(Path(args.ansible_playbook).parent / "ansible"), work / "stock-install.log")
        if doc["stock"]["rc"]:
            print(f"stock nmap could not be installed on scanner1 (see {work / 'stock-install.log'}); stock-1 will "
                  "fail", file=sys.stderr)
    try:
        for name in names:
            doc["variants"][name] = run_variant(name, args, work, silent, compress(ports))
    except KeyboardInterrupt:
        print(f"interrupted: the running playbook and its scan jobs were ended; the variants that finished are "
              f"reported, every run is in {work}", file=sys.stderr)
        doc["interrupted"] = True
    found = {}
    for name, r in doc["variants"].items():
        if r["kind"] != "fleet" or r.get("seconds") is None:
            continue
        mid = next((x for x in r["runs"] if x["run_id"] == r.get("run_id")), {})
        if mid.get("services") is not None:
            found[name] = mid["services"]
    doc["services"] = compare_services(found)
    stock_run = next(iter(doc["variants"].get("stock-1", {}).get("runs", [])), {})
    if found and stock_run.get("services") is not None:
        doc["stock_services"] = compare_services({doc["services"]["reference"]: found[doc["services"]["reference"]],
                                                  "stock-1": stock_run["services"]})
    # the JSON keeps the reference's services (address:port/protocol -> [service, product]) and each run's count;
    # how another run differs is in doc["services"]["differ"]
    reference = found.get(doc["services"]["reference"]) or {}
    doc["services"]["open_ports"] = len(reference)
    doc["services"]["reference_services"] = {k: list(v) for k, v in sorted(reference.items())}
    for r in doc["variants"].values():
        for run in r["runs"]:
            if run.get("services") is not None:
                run["services"] = len(run["services"])
    doc["ratios"] = ratios(doc["variants"])
    doc["goals"] = goals(doc["variants"], doc["ratios"])
    doc["seconds"] = round(time.time() - started, 1)
    finish(doc, args)
    failed = {n: r["failed"] for n, r in doc["variants"].items() if r["failed"]}
    for name, runs in failed.items():
        for run in runs:
            print(f"FAILED {name} ({run['run_id']}): rc {run['rc']} {run['error'] or ''}\n{run['tail']}",
                  file=sys.stderr)
    if doc.get("interrupted"):
        return 130
    return 1 if failed or not doc["services"]["same"] else 0


if __name__ == "__main__":
    sys.exit(main())
