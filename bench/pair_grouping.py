#!/usr/bin/env python3
"""Benchmark: phase-2 jobs grouped as ``union`` vs ``exact`` (scanfleet.pairs.group_jobs), with real nmap.

Inside a private network namespace (unshare --net: only loopback, nothing leaves; needs root) HOSTS
addresses 127.0.1.1.. get a random (seeded) subset of 0-4 of a pool of PORTS ports, each served by a
listener of tests/fixtures/xml/listeners.py that sends a real banner at once (OpenSSH, vsftpd, Postfix):
nmap names every service from its NULL probe, so the figures measure the grouping (processes, port
probes), not the probe waits. Phase 1 is one ``nmap -sS`` sweep; ``scanfleet pairs`` collects the pairs;
then for each variant (union with the default job cost, union without a bound, exact) one scanner runs
its jobs one after the other (``nmap -sV -Pn -n -T4 -p PORTS -iL JOB``), REPEAT times. Prints (and with
--out writes) JSON: jobs, port probes, extra probes, seconds, services named.

    sudo .venv/bin/python bench/pair_grouping.py --hosts 64 --ports 8 --out bench/results/pair_grouping.json
    sudo .venv/bin/python bench/pair_grouping.py --hosts 200 --ports 64 --out bench/results/pair_grouping_diverse.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from benchlib import emit, header

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scanfleet import pairs  # noqa: E402
from scanfleet.targets import load_targets_file, parse_scope  # noqa: E402

SSH = "SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3"
FTP = "220 (vsFTPd 3.0.3)"
SMTP = "220 mail.fixture.test ESMTP Postfix (Debian/GNU)"
BANNERS = (SSH, FTP, SMTP)
VARIANTS = {"union": ("union", pairs.DEFAULT_JOB_COST), "union-unbounded": ("union", 10**9), "exact": ("exact", 0)}
NMAP = "/usr/bin/nmap"


def services(xml: Path) -> set[tuple[str, int, str]]:
    root = ET.parse(xml).getroot()
    return {(h.find("address").get("addr"), int(p.get("portid")), p.find("service").get("name"))
            for h in root.findall("host") for p in h.iter("port")
            if p.find("state").get("state") == "open" and p.find("service") is not None
            and p.find("service").get("method") == "probed"}


def inside(args: argparse.Namespace) -> dict:
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    if [line.split(": ")[1] for line in links.splitlines()] != ["lo"]:
        raise SystemExit("pair_grouping.py: not in a fresh network namespace; refusing to scan")
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    rand = random.Random(args.seed)
    pool = {2000 + 7 * i: BANNERS[i % len(BANNERS)] for i in range(args.ports)}
    layout = {f"127.0.1.{i}": sorted(rand.sample(sorted(pool), rand.randint(0, 4))) for i in range(1, args.hosts + 1)}
    specs = [f"banner:{a}:{p}:{pool[p]}" for a, ports in layout.items() for p in ports]
    work = Path(tempfile.mkdtemp(prefix="scanfleet-pair-grouping."))
    listener = subprocess.Popen([sys.executable, str(ROOT / "tests/fixtures/xml/listeners.py"), *specs],
                                stdout=subprocess.PIPE, text=True)
    try:
        assert listener.stdout is not None and listener.stdout.readline().strip() == "ready"
        targets = work / "p1.targets"
        targets.write_text(f"127.0.1.1-{args.hosts}\n")
        ports = ",".join(map(str, sorted(pool)))
        started = time.monotonic()
        subprocess.run([NMAP, "-sS", "-n", "-T4", "-p", ports, "-iL", str(targets), "-oX", str(work / "p1.xml")],
                       check=True, capture_output=True)
        phase1 = time.monotonic() - started
        collection = pairs.collect([pairs.shard_from_files(targets, work / "p1.xml")],
                                   load_targets_file(targets), parse_scope("127.0.1.0/24"))
        result = {"hosts": args.hosts, "port_pool": args.ports, "pairs": collection.accounting()["pairs"],
                  "distinct_port_sets": len({pairs._signature(p) for p in collection.pairs.values()}),
                  "phase1_seconds": round(phase1, 2), "groupings": {}}
        for variant, (grouping, job_cost) in VARIANTS.items():
            jobs = pairs.group_jobs("scan1", collection.pairs, grouping=grouping, job_cost=job_cost)
            runs, named = [], set()
            for n in range(args.repeat):
                started = time.monotonic()
                for i, job in enumerate(jobs):
                    job_targets = work / f"{variant}-{i}.targets"
                    job_targets.write_text("".join(f"{line}\n" for line in job.lines))
                    out = work / f"{variant}-{n}-{i}.xml"
                    subprocess.run([NMAP, "-sV", "-Pn", "-n", "-T4", "-p", job.nmap_ports, "-iL", str(job_targets),
                                    "-oX", str(out)], check=True, capture_output=True)
                    if n == 0:
                        named |= services(out)
                runs.append(round(time.monotonic() - started, 2))
            result["groupings"][variant] = {**pairs.grid_cost(jobs), "seconds": runs, "best": min(runs),
                                             "services_named": len(named)}
        for count in (2, 3):  # computed only: what the grouping costs when the pairs are split between scanners
            weights = {f"scan{i}": 1 for i in range(1, count + 1)}
            result[f"computed_{count}_scanners"] = {
                v: pairs.grid_cost([j for h, s in pairs.shard_pairs(collection.pairs, weights).items()
                                    for j in pairs.group_jobs(h, s, grouping=g, whole=collection.pairs, job_cost=c)])
                for v, (g, c) in VARIANTS.items()}
        return result
    finally:
        listener.kill()
        listener.wait()
        for path in work.iterdir():
            path.unlink()
        work.rmdir()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=64)
    parser.add_argument("--ports", type=int, default=8, help="size of the port pool (at most 4 ports per host)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--out", help="write the JSON result here")
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inside:
        print(json.dumps(inside(args)))
        return 0
    if os.geteuid() != 0:
        raise SystemExit("pair_grouping.py: needs root (unshare --net)")
    started = time.time()
    argv = [sys.executable, __file__, "--inside", "--hosts", str(args.hosts), "--ports", str(args.ports),
            "--repeat", str(args.repeat),
            "--seed", str(args.seed)]
    proc = subprocess.run(["unshare", "--net", "--fork", "--", *argv], capture_output=True, text=True, check=True)
    version = subprocess.run([NMAP, "--version"], capture_output=True, text=True, check=True).stdout.split("\n")[0]
    doc = {**header("pair_grouping", started), "nmap": version, **json.loads(proc.stdout)}
    emit(doc, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
