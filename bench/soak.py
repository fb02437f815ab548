#!/usr/bin/env python3
"""Soak: scans in a row on the lab, each with one real fault drawn by a seeded random draw (make soak).

Needs the lab of `make demo` (make provision; lab/targets.sh up): the 3 scanners of inventory/lab and the
target hosts. First one fault-free scan (the reference run time), then ``--scans`` scans (new run ids), each
with one fault from: kill (lab/lab.sh down VICTIM mid-scan; up again and provisioned after), partition, freeze,
slowlink, controller (SIGINT or SIGKILL to ansible-playbook by PID while it fetches, then the same command
again) and diskfull. The faults are molecule/faults/files/fault_run.py's own functions (imported, not copied),
with a short nmap_scan_lost_after (``--lost-after``, passed with -e).

After each scan: every target exactly once in merged.xml, merged.xml valid against the run's nmap.dtd
(xmllint --dtdvalid), and no nmap process left on any scanner (by PID, through each host's PID namespace).
Writes the table (fault, victim, time to detect, run time against the fault-free run, result) as JSON to
``--out`` and prints it as a Markdown table for bench/RESULTS.md. Every process started here is ended by PID.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import re
import subprocess
import sys
import time
from pathlib import Path

from benchlib import emit, header

ROOT = Path(__file__).resolve().parents[1]
FAULTS = ("kill", "partition", "freeze", "slowlink", "controller", "diskfull")
SCANNERS = ("scanner1", "scanner2", "scanner3")


def fault_run():
    """molecule/faults/files/fault_run.py as a module: the faults and the lab readers live there once."""
    spec = importlib.util.spec_from_file_location("fault_run", ROOT / "molecule/faults/files/fault_run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def draw(seed: int, scans: int) -> list[tuple[str, str, str]]:
    """(fault, victim, signal) for each scan: the same seed gives the same soak."""
    rng = random.Random(seed)
    return [(rng.choice(FAULTS), rng.choice(SCANNERS), rng.choice(("INT", "KILL"))) for _ in range(scans)]


def fault_args(fr, base: argparse.Namespace, fault: str, run_id: str, victim: str, sig: str) -> argparse.Namespace:
    return argparse.Namespace(
        fault={"kill": "hostdown", "controller": "interrupt"}.get(fault, fault), run_id=run_id,
        project=str(ROOT), inventory=str(ROOT / "inventory" / "lab"), vars=base.vars_file, results=base.results,
        log_dir=base.log_dir, hosts=list(SCANNERS), victim=victim, ansible_playbook=base.ansible_playbook,
        remote_dir="/var/lib/scanfleet/runs", timeout=base.timeout, lab_dir=base.lab_dir,
        lab=str(ROOT / "lab" / "lab.sh"), at="fetch", signal=sig)


def lab_targets() -> list[str]:
    """The addresses of the lab's target hosts (inventory/lab, group targets)."""
    out = subprocess.run(["ansible-inventory", "-i", str(ROOT / "inventory" / "lab"), "--list"], capture_output=True,
                         text=True, check=True, cwd=ROOT, timeout=120).stdout
    inv = json.loads(out)
    hosts = inv.get("targets", {}).get("hosts", [])
    return sorted(inv["_meta"]["hostvars"][h]["ansible_host"] for h in hosts)


def check_run(fr, args: argparse.Namespace, run_id: str, targets: list[str]) -> dict:
    """The checks after a scan: each target once in merged.xml, DTD-valid, no nmap left on any scanner."""
    run = Path(args.results) / run_id
    merged = run / "merged.xml"
    found: dict = {"merged": merged.is_file()}
    if merged.is_file():
        addrs = re.findall(r'<address addr="([0-9.]+)" addrtype="ipv4"', merged.read_text(errors="replace"))
        found["each_target_once"] = sorted(addrs) == targets
        found["hosts_in_merged"] = len(addrs)
        proc = subprocess.run(["xmllint", "--noout", "--nonet", "--dtdvalid", str(run / "nmap" / "nmap.dtd"),
                               str(merged)], capture_output=True, text=True, timeout=300, check=False)
        found["dtd_valid"] = proc.returncode == 0
        if proc.returncode:
            found["xmllint"] = proc.stderr.strip()[-2000:]
    orphans = {}
    for host in SCANNERS:
        try:
            init = fr.host_init(args, host)
        except (OSError, RuntimeError) as exc:
            orphans[host] = f"not readable: {exc}"
            continue
        nmaps = [pid for pid, _ in fr.namespace_processes(init) if (fr.proc_stat(pid) or ("",))[0] == "nmap"]
        if nmaps:
            orphans[host] = nmaps
    found["orphan_nmap"] = orphans
    found["ok"] = bool(found.get("each_target_once") and found.get("dtd_valid") and not orphans)  # every
    # scanner read, none with an nmap left
    return found


def detect_time(report: dict, victim: str, state_file: Path) -> float | None:
    """Seconds from the fault to the record of the victim's round-1 attempt (lost, failed), None when the fault
    is not one that loses the victim (a slow link, a controller kill) or it was not lost."""
    state = json.loads(state_file.read_text()) if state_file.is_file() else {}
    if "fault_at" not in report:
        return None
    for attempt in state.get("attempts", []):
        if attempt.get("host") == victim and attempt.get("round") == 1 and attempt.get("status") != "finished":
            return round(float(attempt["recorded"]) - float(report["fault_at"]), 1)
    return None


def run_time(report: dict) -> float | None:
    first = report.get("run") or report.get("first") or {}
    end = (report.get("second") or {}).get("end") or first.get("end")
    return round(end - first["start"], 1) if end and first.get("start") else None


def reference(fr, args: argparse.Namespace) -> dict:
    """A fault-free scan (run id soak-ref): its run time."""
    fa = fault_args(fr, args, "none", f"soak-{args.seed}-ref", "", "INT")
    started = time.time()
    proc, log = fr.start(fa, f"{fa.run_id}.log")
    rc = fr.wait(proc, args.timeout)
    fr.stop(proc)
    left = fr.end_leftovers(proc.pid)
    return {"run_id": fa.run_id, "rc": rc, "seconds": round(time.time() - started, 1), "left_behind": left,
            "log": str(log)}


def heal_kill(args: argparse.Namespace, victim: str, address: str) -> dict:
    """The killed scanner up again and provisioned (lab/lab.sh down removes its overlay)."""
    up = subprocess.run([str(ROOT / "lab" / "lab.sh"), "up", f"{victim}={address}"], capture_output=True, text=True,
                        timeout=600, check=False)
    prov = subprocess.run([args.ansible_playbook, str(ROOT / "playbooks" / "provision.yml"), "--limit", victim],
                          capture_output=True, text=True, timeout=1800, check=False, cwd=ROOT)
    return {"up_rc": up.returncode, "provision_rc": prov.returncode,
            "stderr": (up.stderr + prov.stderr).strip()[-2000:]}


def markdown(rows: list[dict], ref: float) -> str:
    lines = [f"Fault-free run: {ref} s.", "",
             "| # | fault | victim | time to detect (s) | run time (s) | vs fault-free | result |",
             "|---|---|---|---|---|---|---|"]
    for i, row in enumerate(rows, 1):
        rt = row["run_time"]
        ratio = f"{rt / ref:.1f}x" if rt and ref else "-"
        detect = "-" if row["detect"] is None else row["detect"]
        lines.append(f"| {i} | {row['fault']} | {row['victim'] or '-'} | {detect} | {rt if rt else '-'} | {ratio} "
                     f"| {row['result']} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=10)
    parser.add_argument("--scans", type=int, default=10)
    parser.add_argument("--lost-after", type=int, default=30, help="nmap_scan_lost_after of the soak's scans")
    parser.add_argument("--ports", default="1-65535")
    parser.add_argument("--results", default=str(ROOT / ".cache" / "soak" / "results"))
    parser.add_argument("--log-dir", default=str(ROOT / ".cache" / "soak" / "logs"))
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--ansible-playbook", default=str(Path(sys.executable).parent / "ansible-playbook"))
    parser.add_argument("--lab-dir", default="/var/lib/scanfleet-lab")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "soak.json"))
    args = parser.parse_args()
    started = time.time()
    fr = fault_run()
    Path(args.log_dir).mkdir(parents=True, exist_ok=True)
    args.vars_file = str(Path(args.log_dir) / "scan.json")
    Path(args.vars_file).write_text(json.dumps({"nmap_scan_target_groups": ["targets"], "nmap_scan_ports": args.ports,
                                                "nmap_scan_lost_after": args.lost_after}))
    targets = lab_targets()
    addresses = {h: f"10.77.0.{11 + i}" for i, h in enumerate(SCANNERS)}  # inventory/lab
    ref = reference(fr, args)
    ref["checks"] = check_run(fr, fault_args(fr, args, "none", ref["run_id"], "", "INT"), ref["run_id"], targets)
    print(f"fault-free: {ref['seconds']} s, checks {ref['checks']}", file=sys.stderr)
    rows = []
    for i, (fault, victim, sig) in enumerate(draw(args.seed, args.scans), 1):
        run_id = f"soak-{args.seed}-{i:02d}-{fault}"
        fa = fault_args(fr, args, fault, run_id, "" if fault == "controller" else victim, sig)
        t0 = time.time()
        report = {"interrupt": fr.interrupt, "hostdown": fr.hostdown}.get(fa.fault, fr.real_fault)(fa)
        row = {"fault": fault + (f" (SIG{sig} at fetch)" if fault == "controller" else ""),
               "victim": fa.victim, "run_id": run_id, "seconds_with_heal": round(time.time() - t0, 1),
               "detect": detect_time(report, fa.victim, Path(args.results) / run_id / "state.json"),
               "run_time": run_time(report), "error": report.get("error")}
        if fault == "kill":
            row["heal"] = heal_kill(args, victim, addresses[victim])
        row["checks"] = check_run(fr, fa, run_id, targets)
        row["result"] = "complete" if row["checks"]["ok"] and not row["error"] else (
            "FAILED: " + (row["error"] or json.dumps(row["checks"])[:200]))
        row["report"] = {k: v for k, v in report.items() if k not in ("state", "state_after_next",
                                                                    "state_after_resume", "state_after_interrupt")}
        rows.append(row)
        print(f"{i}: {row['fault']} on {row['victim'] or '-'}: {row['result']}", file=sys.stderr)
    doc = header("soak", started)
    doc.update(seed=args.seed, lost_after=args.lost_after, ports=args.ports, targets=targets, reference=ref,
               runs=rows, complete=sum(r["result"] == "complete" for r in rows), scans=len(rows))
    table = markdown(rows, ref["seconds"])
    doc["markdown"] = table
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    emit(doc, args.out, show={"complete": f"{doc['complete']}/{len(rows)}", "out": args.out})
    print(table)
    return 0 if doc["complete"] == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
