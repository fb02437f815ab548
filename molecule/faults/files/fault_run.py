#!/usr/bin/env python3
"""Run playbooks/scan.yml as its own ansible-playbook process and make a fault happen for real while it scans.

  fault_run.py interrupt RUN_ID ...   when one shard has finished on its scanner and another still runs
                                      (--at fetch: once the play has begun its fetch), send SIGINT (--signal
                                      KILL: SIGKILL) to ansible-playbook's PID (as Ctrl-C would), then run the
                                      same command again (it must resume and complete)
  fault_run.py hostdown RUN_ID ...    when VICTIM's nmap job runs, take VICTIM down (lab/lab.sh down VICTIM)
  fault_run.py partition RUN_ID ...   when VICTIM's nmap job runs, take its link down inside its network
                                      namespace (ip netns exec sf-VICTIM ip link set eth0 down); after the
                                      run, link up and the same command again
  fault_run.py freeze RUN_ID ...      when VICTIM's nmap job runs, SIGSTOP every process of its PID namespace
                                      (found by PID: /proc/*/ns/pid against the namespace of the host's init,
                                      the child of the unshare PID that lab/lab.sh recorded); after the run,
                                      SIGCONT them and run the same command again

  fault_run.py slowlink RUN_ID ...    when VICTIM's nmap job runs, 300 ms delay and 5% loss on its link (tc
                                      qdisc add dev eth0 root netem ... inside its network namespace; without
                                      netem in the kernel: 5% loss by nftables and a 1 Mbit/s tbf); after the
                                      run, the qdisc (and table) removed and the same command again
  fault_run.py diskfull RUN_ID ...    before the run, a 1 MiB tmpfs on VICTIM's run directory inside its mount
                                      namespace (nsenter -t INIT -m -r); when VICTIM's nmap job runs, filled
                                      (cat /dev/zero) so nmap's writes fail; after the run, unmounted and the
                                      same command again

None of partition, freeze, slowlink and diskfull closes the controller's SSH masters to VICTIM before the fault
(lab/lab.sh down does): the controller sees what it sees when a real VM freezes or loses its network.

The scanners' job records (RUN_ID/ATTEMPT/pid.json, exit.json under the remote run directory) are read from
inside each lab host (lab/lab.sh exec), not over SSH. Prints a JSON report on stdout (verify.yml asserts on
it); the ansible-playbook output goes to LOG_DIR. Every process started here is ended by its PID.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from scanfleet.job_model import proc_stat

ANSI = re.compile(r"\x1b\[[0-9;]*m")
READ_RECORDS = r"""
import json, os, sys
base = sys.argv[1]
out = {}
for attempt in sorted(os.listdir(base)) if os.path.isdir(base) else []:
    entry = {}
    for name in ("pid.json", "exit.json"):
        try:
            with open(os.path.join(base, attempt, name)) as f:
                entry[name[:-5]] = json.load(f)
        except (OSError, ValueError):
            entry[name[:-5]] = None
    pid = (entry["pid"] or {}).get("pid")
    ticks = (entry["pid"] or {}).get("ticks")
    try:
        with open("/proc/%d/stat" % int(pid)) as f:
            fields = f.read().rpartition(")")[2].split()
        entry["alive"] = fields[0] not in ("Z", "X") and fields[19] == ticks
    except (OSError, ValueError, TypeError, IndexError):
        entry["alive"] = False
    out[attempt] = entry
print(json.dumps(out))
"""


def records(lab: str, host: str, base: str) -> dict | None:
    """{attempt: {pid: ..., exit: ...}} of the host's job records, or None when the host cannot be read."""
    proc = subprocess.run([lab, "exec", host, "python3", "-c", READ_RECORDS, base], capture_output=True,
                          text=True, timeout=30, check=False)
    if proc.returncode != 0:
        return None
    return json.loads(proc.stdout)


def all_records(args: argparse.Namespace) -> dict[str, dict | None]:
    base = f"{args.remote_dir}/{args.run_id}"
    return {host: records(args.lab, host, base) for host in args.hosts}


def session_processes(sid: int) -> list[dict]:
    """Processes still in the session of the ansible-playbook we started (its workers, ssh masters)."""
    found = []
    for entry in Path("/proc").iterdir():
        stat = proc_stat(int(entry.name)) if entry.name.isdigit() else None
        if stat is None:
            continue
        comm, fields = stat
        if int(fields[3]) == sid:
            found.append({"pid": int(entry.name), "comm": comm, "ticks": fields[19]})
    return found


def end_leftovers(sid: int) -> list[dict]:
    """End what is left of our ansible-playbook's session by PID (ssh ControlPersist masters are left to
    expire: they are shared connection caches, not scans)."""
    left = [p for p in session_processes(sid) if p["comm"] != "ssh"]
    for proc in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc["pid"], signal.SIGTERM)
    return left


def targets_not_listening(args: argparse.Namespace) -> str | None:
    """None when every port of the lab's target hosts listens (lab/targets.sh status), else that status: a
    scan of targets that are gone ends at once, and no fault could happen mid-scan."""
    proc = subprocess.run([f"{args.project}/lab/targets.sh", "status"], capture_output=True, text=True,
                          timeout=120, check=False)
    if proc.returncode != 0 or not proc.stdout.strip() or re.search(r"NOT listening| down$", proc.stdout, re.M):
        return (proc.stdout + proc.stderr).strip() or f"lab/targets.sh status exited with {proc.returncode}"
    return None


def start(args: argparse.Namespace, log_name: str) -> tuple[subprocess.Popen, Path]:
    log = Path(args.log_dir) / log_name
    cmd = [args.ansible_playbook, "-i", args.inventory, f"{args.project}/playbooks/scan.yml",
           "-e", f"@{args.vars}", "-e", f"nmap_scan_run_id={args.run_id}",
           "-e", f"nmap_scan_results_dir={args.results}"]
    with open(log, "w", encoding="utf-8") as out:
        out.write("$ " + " ".join(cmd) + "\n")
        out.flush()
        # JSON results: one printed line per plan/summary line (the YAML format may fold long lines)
        env = {**os.environ, "ANSIBLE_CALLBACK_RESULT_FORMAT": "json", "ANSIBLE_NOCOLOR": "1",
               "ANSIBLE_FORCE_COLOR": "0", "PY_COLORS": "0"}
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=args.project, env=env, start_new_session=True)
    return proc, log


def wait(proc: subprocess.Popen, seconds: float) -> int | None:
    try:
        return proc.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        return None


def stop(proc: subprocess.Popen) -> None:
    """End a run that went on too long (by PID), so the scenario does not hang."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        if wait(proc, 30) is None:
            proc.kill()
            proc.wait()


def plan_lines(log: Path) -> list[str]:
    """The plan and summary lines the play printed (e.g. 'run X (new; ...)', 'coverage: ...')."""
    keep = []
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        text = ANSI.sub("", line).strip().strip(' ,"-')
        if text.startswith(("run ", "coverage:", "mol-", "attempt", "round ", "events:")) or "scanned already" in text:
            keep.append(text)
    return keep


def state_copy(args: argparse.Namespace, name: str) -> dict | None:
    path = Path(args.results) / args.run_id / "state.json"
    if not path.is_file():
        return None
    shutil.copy(path, Path(args.log_dir) / name)
    return json.loads(path.read_text(encoding="utf-8"))


def interrupt(args: argparse.Namespace) -> dict:
    report: dict = {"fault": "interrupt", "run_id": args.run_id, "at": args.at, "signal": args.signal}
    if (status := targets_not_listening(args)) is not None:
        report["error"] = f"the lab's target hosts do not all listen before the run: {status}"
        return report
    proc, log = start(args, f"{args.run_id}-1.log")
    report["first"] = {"pid": proc.pid, "log": str(log), "start": time.time()}
    deadline = time.monotonic() + args.timeout
    seen = None
    while time.monotonic() < deadline and proc.poll() is None:
        if args.at == "fetch":  # the fetch is short: only the play's log is read until it begins
            if "Fetch the outputs of the jobs" in log.read_text(errors="replace"):
                os.kill(proc.pid, getattr(signal, f"SIG{args.signal}"))  # to ansible-playbook's PID only
                report["first"]["signalled_after"] = round(time.monotonic() - deadline + args.timeout, 1)
                report["at_interrupt"] = all_records(args)
                break
            time.sleep(0.1)
            continue
        seen = all_records(args)
        jobs = [job for host in seen.values() if host for job in host.values()]
        done = [job for job in jobs if job["exit"]]
        running = [job for job in jobs if job["pid"] and not job["exit"]]
        if done and running:
            os.kill(proc.pid, getattr(signal, f"SIG{args.signal}"))  # as Ctrl-C would, to ansible-playbook's PID
            report["first"]["signalled_after"] = round(time.monotonic() - deadline + args.timeout, 1)
            report["at_interrupt"] = seen
            break
        time.sleep(0.3)
    report["first"]["rc"] = wait(proc, 60)
    if report["first"]["rc"] is None:
        stop(proc)
    report["first"]["left_behind"] = end_leftovers(proc.pid)
    report["first"]["lines"] = plan_lines(log)
    report["after_interrupt"] = all_records(args)
    report["state_after_interrupt"] = state_copy(args, f"{args.run_id}-state-interrupted.json")
    if "at_interrupt" not in report:
        report["error"] = (f"no moment with one job finished and another running (last seen: {seen})"
                           if args.at == "shard" else "the play never reached its fetch")
        return report
    proc, log = start(args, f"{args.run_id}-2.log")
    report["second"] = {"pid": proc.pid, "log": str(log), "rc": wait(proc, args.timeout)}
    report["second"]["end"] = time.time()
    stop(proc)
    report["second"]["left_behind"] = end_leftovers(proc.pid)
    report["second"]["lines"] = plan_lines(log)
    report["after_resume"] = all_records(args)
    report["state_after_resume"] = state_copy(args, f"{args.run_id}-state-resumed.json")
    return report


def run_with_fault(args: argparse.Namespace, log_name: str, key: str, make_fault) -> dict:
    """Run the scan (after checking that the lab's targets listen); as soon as the victim's nmap job runs (a PID
    in its records, no exit), make the fault: ``report[key] = make_fault()``, with the victim's records then in
    ``report["at_" + key]`` and the controller's time in ``report["fault_at"]``; then wait for the run's end."""
    report: dict = {"fault": args.fault, "run_id": args.run_id, "victim": args.victim}
    if (status := targets_not_listening(args)) is not None:
        report["error"] = f"the lab's target hosts do not all listen before the run: {status}"
        return report
    proc, log = start(args, log_name)
    report["run"] = {"pid": proc.pid, "log": str(log), "start": time.time()}
    started = time.monotonic()
    while time.monotonic() - started < args.timeout and proc.poll() is None:
        jobs = records(args.lab, args.victim, f"{args.remote_dir}/{args.run_id}") or {}
        if any(job["pid"] and not job["exit"] for job in jobs.values()):
            report["at_" + key] = jobs
            report["fault_at"] = time.time()
            report[key] = make_fault()
            report[key]["after"] = round(time.monotonic() - started, 1)
            break
        time.sleep(0.3)
    report["run"]["rc"] = wait(proc, max(1.0, args.timeout - (time.monotonic() - started)))
    report["run"]["end"] = time.time()
    stop(proc)
    report["run"]["left_behind"] = end_leftovers(proc.pid)
    report["run"]["lines"] = plan_lines(log)
    if key not in report:
        report["error"] = f"{args.victim}'s job was never seen running"
    return report


def hostdown(args: argparse.Namespace) -> dict:
    def down() -> dict:
        proc = subprocess.run([args.lab, "down", args.victim], capture_output=True, text=True, timeout=120,
                              check=False)
        return {"rc": proc.returncode, "stderr": proc.stderr.strip()}

    report = run_with_fault(args, f"{args.run_id}.log", "down", down)
    if "run" in report:
        report["victim_readable_after"] = records(args.lab, args.victim, f"{args.remote_dir}/{args.run_id}") is not None
    return report


def host_init(args: argparse.Namespace, host: str) -> int:
    """PID (in our namespace) of the lab host's init: the child of the unshare process whose PID and start
    time lab/lab.sh recorded in LAB_DIR/hosts/HOST/pid."""
    pid, ticks = (Path(args.lab_dir) / "hosts" / host / "pid").read_text(encoding="utf-8").split()
    stat = proc_stat(int(pid))
    if stat is None or stat[1][19] != ticks:
        raise RuntimeError(f"{host}: its unshare process {pid} (start {ticks}) does not run")
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text(encoding="utf-8").split()
    if not children:
        raise RuntimeError(f"{host}: its unshare process {pid} has no init")
    return int(children[0])


def namespace_processes(init: int) -> list[tuple[int, str]]:
    """(PID, start time) of every process in the PID namespace of ``init`` (same /proc/PID/ns/pid link)."""
    ns = os.readlink(f"/proc/{init}/ns/pid")
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            same = os.readlink(entry / "ns" / "pid") == ns
        except OSError:
            continue
        stat = proc_stat(int(entry.name)) if same else None
        if stat is not None:
            found.append((int(entry.name), stat[1][19]))
    return found


def signal_namespace(init: int, sig: signal.Signals) -> int:
    """Send ``sig`` to every process of the PID namespace of ``init``, by PID (checked against its start
    time), again until a pass finds none it has not signalled (a process forked meanwhile); returns how many."""
    done: set[tuple[int, str]] = set()
    for _ in range(20):
        new = [p for p in namespace_processes(init) if p not in done]
        if not new:
            break
        for pid, ticks in new:
            stat = proc_stat(pid)
            if stat is not None and stat[1][19] == ticks:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            done.add((pid, ticks))
    return len(done)


def run_argv(argv: list[str]) -> dict:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    return {"argv": argv, "rc": proc.returncode, "stdout": proc.stdout.strip(), "stderr": proc.stderr.strip()}


NETEM = ["netem", "delay", "300ms", "loss", "5%"]
# Without netem (a kernel built without CONFIG_NET_SCH_NETEM: tc says the qdisc kind is unknown) the nearest
# fault the kernel has: 5% of the packets dropped both ways by nftables inside the victim's namespace, and its
# egress held to 1 Mbit/s by tbf. No delay: the report says which one was made ("link").
LOSSY_NFT = """table inet sf_slowlink {
  chain in { type filter hook input priority 0; numgen random mod 100 < 5 drop; }
  chain out { type filter hook output priority 0; numgen random mod 100 < 5 drop; }
}
"""


def slowlink(args: argparse.Namespace, heal: bool) -> dict:
    """300 ms delay and 5% loss on the victim's link (tc netem inside its network namespace), or, when this
    kernel has no netem, 5% loss (nftables) and a 1 Mbit/s egress (tbf); healing removes what was added."""
    ns = ["ip", "netns", "exec", f"sf-{args.victim}"]
    if heal:
        done = run_argv([*ns, "tc", "qdisc", "del", "dev", "eth0", "root"])
        nft = run_argv([*ns, "nft", "delete", "table", "inet", "sf_slowlink"]) if shutil.which("nft") else None
        done["rc"] = 0 if done["rc"] == 0 or (nft and nft["rc"] == 0) else done["rc"]
        return {**done, "nft": nft}
    done = run_argv([*ns, "tc", "qdisc", "add", "dev", "eth0", "root", *NETEM])
    if done["rc"] == 0:
        return {**done, "link": "netem delay 300ms loss 5%"}
    if not shutil.which("nft"):
        return {**done, "link": "none: no netem in this kernel and no nft on the controller (apt-get install nftables)"}
    nft = subprocess.run([*ns, "nft", "-f", "-"], input=LOSSY_NFT, capture_output=True, text=True, timeout=60,
                         check=False)
    tbf = run_argv([*ns, "tc", "qdisc", "add", "dev", "eth0", "root", "tbf", "rate", "1mbit", "burst", "32kbit",
                    "latency", "400ms"])
    return {"argv": done["argv"], "netem_stderr": done["stderr"], "rc": nft.returncode or tbf["rc"],
            "stderr": (nft.stderr.strip() + " " + tbf["stderr"]).strip(),
            "link": "no netem in this kernel: nftables drops 5% both ways, tbf 1mbit egress, no delay"}


# The victim's run directory as a tiny tmpfs, inside its mount namespace (nsenter -m -r: its mounts and its
# root, as its sshd and the job supervisors see them), and its PID namespace (-p): its /proc is mounted for that
# namespace, so without -p /proc/self does not resolve and umount cannot read its mount table. $1: the run
# directory.
DISK = {
    "mount": 'gid=$(stat -c %g "$1") && mount -t tmpfs -o size=1m,mode=0750,uid=0,gid="$gid" sf-diskfull "$1"',
    "fill": 'cat /dev/zero > "$1/ballast" 2>/dev/null; df -k "$1" | tail -n 1',
    "umount": 'umount -l "$1"',
}


def disk(args: argparse.Namespace, step: str) -> dict:
    """A step of the full disk on the victim (:data:`DISK`)."""
    init = host_init(args, args.victim)
    return {"init": init, **run_argv(["nsenter", "-t", str(init), "-m", "-p", "-r", "--", "sh", "-c", DISK[step], "sh",
                                      args.remote_dir])}


def cut(args: argparse.Namespace, kind: str, heal: bool) -> dict:
    """Make (or heal) the fault ``kind`` on the victim; returns what was done."""
    if kind == "partition":
        argv = ["ip", "netns", "exec", f"sf-{args.victim}", "ip", "link", "set", "eth0", "up" if heal else "down"]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        return {"argv": argv, "rc": proc.returncode, "stderr": proc.stderr.strip()}
    if kind == "slowlink":
        return slowlink(args, heal)
    if kind == "diskfull":
        return disk(args, "umount" if heal else "fill")
    init = host_init(args, args.victim)
    sig = signal.SIGCONT if heal else signal.SIGSTOP
    return {"signal": sig.name, "init": init, "processes": signal_namespace(init, sig), "rc": 0}


def real_fault(args: argparse.Namespace) -> dict:
    """partition / freeze / slowlink / diskfull: the fault while the victim's nmap runs, the run to its end, then
    healing (always, once the fault was made) and the same command again (the victim's jobs of the run must all
    be ended)."""
    base = f"{args.remote_dir}/{args.run_id}"
    made: dict = {}
    report: dict = {"fault": args.fault, "run_id": args.run_id, "victim": args.victim}
    try:
        if args.fault == "diskfull":  # the tiny run directory first; filled once the victim's nmap runs
            made["mount"] = disk(args, "mount")
            if made["mount"]["rc"] != 0:
                report["error"] = f"cannot mount a tmpfs on {args.victim}: {made['mount']}"
                return report
        report = run_with_fault(args, f"{args.run_id}-1.log", "cut",
                                lambda: made.setdefault("cut", cut(args, args.fault, heal=False)))
        if "run" in report:
            report["survivors"] = {h: records(args.lab, h, base) for h in args.hosts if h != args.victim}
            report["state"] = state_copy(args, f"{args.run_id}-state-1.json")
    finally:
        if made:
            healed = cut(args, args.fault, heal=True)
    if "error" in report:
        return report
    report["heal"] = healed
    if healed.get("rc") != 0:  # a fault left in place would spoil every later run on this host
        report["error"] = f"cannot heal {args.fault} on {args.victim}: {healed}"
        return report
    report["made"] = made
    report["before_next"] = records(args.lab, args.victim, base)
    proc, log = start(args, f"{args.run_id}-2.log")
    report["next"] = {"pid": proc.pid, "log": str(log), "rc": wait(proc, args.timeout)}
    stop(proc)
    report["next"]["left_behind"] = end_leftovers(proc.pid)
    report["next"]["lines"] = plan_lines(log)
    report["after_next"] = records(args.lab, args.victim, base)
    report["state_after_next"] = state_copy(args, f"{args.run_id}-state-2.json")
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("fault", choices=["interrupt", "hostdown", "partition", "freeze", "slowlink", "diskfull"])
    parser.add_argument("run_id")
    parser.add_argument("--project", required=True)
    parser.add_argument("--inventory", required=True)
    parser.add_argument("--vars", required=True, help="extra-vars file of the scan (the same for every run)")
    parser.add_argument("--results", required=True)
    parser.add_argument("--log-dir", required=True)
    parser.add_argument("--hosts", nargs="+", required=True)
    parser.add_argument("--victim", default="")
    parser.add_argument("--ansible-playbook", default="ansible-playbook")
    parser.add_argument("--remote-dir", default="/var/lib/scanfleet/runs")
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--at", choices=["shard", "fetch"], default="shard",
                        help="interrupt: when one shard has finished and another runs, or once the play fetches")
    parser.add_argument("--signal", choices=["INT", "KILL"], default="INT", help="interrupt: the signal sent")
    parser.add_argument("--lab-dir", default=os.environ.get("SCANFLEET_LAB_DIR", "/var/lib/scanfleet-lab"))
    args = parser.parse_args()
    args.lab = f"{args.project}/lab/lab.sh"
    Path(args.log_dir).mkdir(parents=True, exist_ok=True)
    report = {"interrupt": interrupt, "hostdown": hostdown}.get(args.fault, real_fault)(args)
    json.dump(report, sys.stdout, indent=1, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
