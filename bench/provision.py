#!/usr/bin/env python3
"""Benchmark 4: provisioning from bare to patched nmap with probes, 1 host vs 3 hosts in parallel, and a no-op.

Brings up fresh lab hosts benchprov-1..3 (10.77.0.61-63; lab/lab.sh), runs playbooks/provision.yml on one of
them, ends them, brings up three fresh ones, runs it on the three at once, then runs it again (nothing to
do). Ends its hosts. Writes bench/results/provision.json.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import emit, header

ROOT = Path(__file__).resolve().parent.parent
HOSTS = {f"benchprov-{n}": f"10.77.0.{60 + n}" for n in (1, 2, 3)}
LAB = str(ROOT / "lab" / "lab.sh")


def inventory(names: list[str]) -> str:
    lines = ["all:", "  children:", "    scanners:", "      hosts:"]
    lines += [f"        {name}:\n          ansible_host: {HOSTS[name]}" for name in names]
    lines += ["  vars:", "    ansible_user: root",
              "    ansible_ssh_private_key_file: /var/lib/scanfleet-lab/ssh/id_ed25519",
              "    ansible_ssh_common_args: -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null",
              "    nmap_build_source: debian", "    nmap_build_debian_suite: trixie", "    nmap_build_version: '7.95'"]
    handle = tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False)  # noqa: SIM115 (ansible reads it by name)
    handle.write("\n".join(lines) + "\n")
    handle.close()
    return handle.name


def provision(inv: str) -> float:
    start = time.monotonic()
    subprocess.run([str(ROOT / ".venv" / "bin" / "ansible-playbook"), "-i", inv, "playbooks/provision.yml"],
                   cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return round(time.monotonic() - start, 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "provision.json"))
    args = parser.parse_args()
    started = time.time()
    names = sorted(HOSTS)
    subprocess.run([LAB, "down", *names], check=True, capture_output=True)
    try:
        subprocess.run([LAB, "up", f"{names[0]}={HOSTS[names[0]]}"], check=True, capture_output=True)
        one = provision(inventory(names[:1]))
        print(f"1 host: {one} s", file=sys.stderr, flush=True)
        subprocess.run([LAB, "down", names[0]], check=True, capture_output=True)
        subprocess.run([LAB, "up", *(f"{n}={HOSTS[n]}" for n in names)], check=True, capture_output=True)
        inv = inventory(names)
        three = provision(inv)
        print(f"3 hosts: {three} s", file=sys.stderr, flush=True)
        noop = provision(inv)
        print(f"no-op re-run on 3 hosts: {noop} s", file=sys.stderr, flush=True)
    finally:
        subprocess.run([LAB, "down", *names], check=False, capture_output=True)
    doc = {
        **header("provision", started),
        "seconds": {"one_host": one, "three_hosts_parallel": three, "noop_three_hosts": noop},
        "ratio_three_to_one": round(three / one, 2),
    }
    emit(doc, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
