#!/usr/bin/env python3
"""Benchmark: silent ports completed per second by one nmap, whole run (port scan, service scan, NSE).

For each nmap and each number of probes in flight, one nmap run in its own network namespace holding only
loopback (unshare --net: nothing leaves it): ``nmap -sT -sV -T4 -Pn -n -v`` against PORTS silent ports (accept,
never speak: tests/fixtures/silent_ports.py) on 127.0.0.1, together with a few real services on loopback (Python's
http.server and smtpd) that must still be named under that load. The rate is PORTS over nmap's own elapsed time
for the whole run (``runstats/finished/@elapsed``); the service scan's and NSE's own figures come from -v; nmap's
CPU time (user + system) and peak memory from getrusage: on a shared machine the rate falls with the CPU share
nmap gets, its CPU time per port does not.

In flight: ``build`` runs the build as it is (nmap_build_service_parallelism for the service scan and NSE's socket
lock); a number N pins both with ``--min-parallelism N --max-parallelism N``.

    bench/silent_port_rate.py --nmap patched-7.95=.cache/build-test/trixie/prefix/bin/nmap \\
        --ports 1000 --in-flight 200 --in-flight build --out bench/results/silent_port_rate.json
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from benchlib import emit, header

ROOT = Path(__file__).resolve().parent.parent
SILENT_PORTS = ROOT / "tests" / "fixtures" / "silent_ports.py"

# Real services on loopback, started inside the namespace before the silent ports: port -> (command, the
# service nmap must name there). Both are the Python standard library's own servers (smtpd greets as "Python
# SMTP proxy", which nmap's probes file names smtp-proxy).
REAL = {
    8000: ("python3 -m http.server --bind 127.0.0.1 8000", "http"),
    2525: ("python3 -W ignore -m smtpd -n -c DebuggingServer 127.0.0.1:2525", "smtp-proxy"),
}

INSIDE = """
set -eu
ip link set lo up
cd "$WORK"
pids=""
trap 'kill $pids 2>/dev/null || true' EXIT
{starts}
for port in {ports}; do
  for i in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
done
python3 "$SILENT" --count "$COUNT" -- python3 -c "$RUSAGE" "$NMAP" -sT -sV -T4 -Pn -n -v $OPTIONS \\
  -p "{{ports}},{ports_csv}" -oX "$WORK/out.xml" 127.0.0.1 > "$WORK/nmap.out" 2>&1
"""

# Runs nmap (its arguments) and writes its CPU seconds (user, system) and peak RSS (KiB) to $WORK/rusage.
RUSAGE = """import os, resource, subprocess, sys
rc = subprocess.call(sys.argv[1:])
r = resource.getrusage(resource.RUSAGE_CHILDREN)
with open(os.environ["WORK"] + "/rusage", "w") as f:
    f.write(f"{r.ru_utime} {r.ru_stime} {r.ru_maxrss}")
sys.exit(rc)
"""

PHASE = re.compile(r"Completed (Service scan|NSE|Connect Scan) at [^,]+, ([0-9.]+)s elapsed")


def options(in_flight: str) -> list[str]:
    """nmap's options for an IN_FLIGHT setting (see the module's doc)."""
    if in_flight == "build":
        return []
    if not in_flight.isdigit() or int(in_flight) < 1:
        raise SystemExit(f"--in-flight {in_flight}: give build or a number of probes in flight")
    return ["--min-parallelism", in_flight, "--max-parallelism", in_flight]

def run_one(nmap: str, count: int, in_flight: str) -> dict:
    """One whole nmap run against COUNT silent ports and the real services, in a private network namespace."""
    with tempfile.TemporaryDirectory(prefix="scanfleet-rate-") as work:
        starts = "\n".join(f"{command} > /dev/null 2>&1 & pids=\"$pids $!\"" for command, _ in REAL.values())
        script = INSIDE.format(starts=starts, ports=" ".join(map(str, REAL)), ports_csv=",".join(map(str, REAL)))
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "WORK": work, "SILENT": str(SILENT_PORTS),
               "COUNT": str(count), "NMAP": nmap, "OPTIONS": " ".join(options(in_flight)), "RUSAGE": RUSAGE}
        load = os.getloadavg()[0]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        begun = time.monotonic()
        proc = subprocess.run(["unshare", "--net", "--", "bash", "-c", script], env=env, capture_output=True,
                              text=True, check=False)
        wall = time.monotonic() - begun
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        everything = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
        out = (Path(work) / "nmap.out").read_text() if (Path(work) / "nmap.out").exists() else ""
        if proc.returncode != 0:
            raise SystemExit(f"{nmap} at {in_flight}: exit {proc.returncode}\n{proc.stderr[-2000:]}\n{out[-3000:]}")
        root = ET.parse(Path(work) / "out.xml").getroot()
        user, system, rss = (Path(work) / "rusage").read_text().split()
    elapsed = float(root.find("runstats/finished").get("elapsed"))
    ports = root.findall("host/ports/port")
    silent = [p for p in ports if int(p.get("portid")) not in REAL]
    services = {int(p.get("portid")): p.find("service") for p in ports if int(p.get("portid")) in REAL}
    named = {port: None if service is None else service.get("name") for port, service in services.items()}
    products = {port: None if service is None else " ".join(filter(None, (service.get("product"),
                                                                            service.get("version"))))
                for port, service in services.items()}
    phases: dict[str, float] = {}
    for phase, seconds in PHASE.findall(out):
        phases[phase] = round(phases.get(phase, 0.0) + float(seconds), 2)
    return {
        "in_flight": in_flight,
        "options": options(in_flight),
        "ports": count,
        "load_1min_before": round(load, 2),  # the machine's load: other work competes for its cores
        "elapsed_s": elapsed,
        "wall_s": round(wall, 2),
        "silent_ports_per_s": round(count / elapsed, 1),
        "phases_s": phases,
        "nmap_cpu_s": round(float(user) + float(system), 2),
        "nmap_cpu_ms_per_port": round(1000 * (float(user) + float(system)) / count, 2),
        "nmap_peak_rss_mib": round(int(rss) / 1024, 1),
        # nmap, the Python listener of the silent ports and the real services: what the run cost the machine
        "all_cpu_s": round(everything, 2),
        "silent_reported": len(silent),
        "silent_open": sum(1 for p in silent if p.find("state").get("state") == "open"),
        "real_named": {str(port): named.get(port) for port in REAL},
        "real_products": {str(port): products.get(port) for port in REAL},
        "real_ok": all(named.get(port) == name for port, (_, name) in REAL.items()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nmap", action="append", required=True, metavar="LABEL=PATH")
    parser.add_argument("--ports", type=int, action="append", help="silent ports per run (default 1000; repeatable)")
    parser.add_argument("--in-flight", action="append", help="build or a number (default: 200, build)")
    parser.add_argument("--out", help="write the JSON result here")
    args = parser.parse_args()
    for setting in args.in_flight or []:
        options(setting)  # refused before anything runs
    started = time.time()
    results: dict[str, list[dict]] = {}
    for item in args.nmap:
        label, _, path = item.partition("=")
        version = subprocess.run([path, "--version"], capture_output=True, text=True,
                                 check=True).stdout.split("\n")[0]
        path = str(Path(path).resolve())
        results[label] = []
        for count in args.ports or [1000]:
            for in_flight in args.in_flight or ["200", "build"]:
                result = {"version": version, **run_one(path, count, in_flight)}
                results[label].append(result)
                print(f"{label} {count} ports at {in_flight}: {result['elapsed_s']} s, "
                      f"{result['silent_ports_per_s']} ports/s, phases {result['phases_s']}, "
                      f"cpu {result['nmap_cpu_s']} s, "
                      f"{result['silent_open']}/{count} open, real {result['real_named']}", file=sys.stderr,
                      flush=True)
    emit({**header("silent-port-rate", started), "results": results}, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
