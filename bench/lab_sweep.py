#!/usr/bin/env python3
"""Benchmark 3: the whole lab target set, stock nmap on one scanner vs the patched fleet on 1 and on 3 hosts.

Needs the demo lab provisioned (`make provision`: scanner1-3) and the target hosts up (`lab/targets.sh up`).
Scans only the lab target hosts of inventory/lab/targets.yml (real services, custom-matched services, 27
silent ports), all TCP ports, one variant after the other:

1. stock:   Debian 12's nmap package (7.93, its own probes file) on scanner1, as root, with the fleet's
            options (-sS -sV -T4 -v --script-timeout 10s);
2. fleet-1: playbooks/scan.yml limited to scanner1 (patched nmap + merged probes);
3. fleet-3: playbooks/scan.yml on scanner1-3 (pass 2 on, the default: README "Two-pass recovery");
4. fleet-3-fast: the same with nmap_scan_recover_slow_banners false: the fast pass alone, the anchor of the
   "whole run <= 1.5x the fast pass" goal of issue 12 (ratio "vs fast pass" in the result).

Writes bench/results/lab_sweep.json and the chart bench/lab_sweep.png (wall time and services identified).
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import time
from pathlib import Path

import yaml
from benchlib import emit, header

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scanfleet.report import iter_rows  # noqa: E402

KEY = "/var/lib/scanfleet-lab/ssh/id_ed25519"
SSH = ["ssh", "-i", KEY, "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"]
OPTIONS = ["-sS", "-sV", "-T4", "-v", "--script-timeout", "10s"]


def targets() -> list[str]:
    inv = yaml.safe_load((ROOT / "inventory" / "lab" / "targets.yml").read_text())
    return [h["ansible_host"] for h in inv["all"]["children"]["targets"]["hosts"].values()]


def scanner(name: str) -> str:
    inv = yaml.safe_load((ROOT / "inventory" / "lab" / "hosts.yml").read_text())
    return inv["all"]["children"]["scanners"]["hosts"][name]["ansible_host"]


def stock_on_scanner(addresses: list[str], ports: str, out: Path) -> float:
    host = f"root@{scanner('scanner1')}"
    subprocess.run([*SSH, host, "command -v /usr/bin/nmap >/dev/null || (apt-get update -qq && "
                    "DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nmap >/dev/null)"],
                   check=True)
    start = time.monotonic()
    subprocess.run([*SSH, host, " ".join(["/usr/bin/nmap", *OPTIONS, "-p", ports, "-oX", "/tmp/stock-sweep.xml",
                                          *addresses, ">/dev/null"])], check=True)
    seconds = time.monotonic() - start
    with open(out, "wb") as handle:
        subprocess.run([*SSH, host, "cat /tmp/stock-sweep.xml"], stdout=handle, check=True)
    return seconds


def fleet(run_id: str, ports: str, limit: str | None, *, recover: bool = True) -> tuple[float, Path]:
    extra = json.dumps({"nmap_scan_target_groups": ["targets"], "nmap_scan_ports": ports, "nmap_scan_run_id": run_id,
                        "nmap_scan_recover_slow_banners": recover})
    cmd = [str(ROOT / ".venv" / "bin" / "ansible-playbook"), "playbooks/scan.yml", "-e", extra]
    if limit:
        cmd += ["--limit", limit]
    start = time.monotonic()
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return time.monotonic() - start, ROOT / "results" / run_id / "merged.xml"


def services(xml: Path) -> dict[str, dict]:
    found = {}
    for row in iter_rows(xml):
        if row["state"] == "open":
            found[f"{row['address']}:{row['port']}/{row['protocol']}"] = {
                "service": row["service"], "product": row["product"], "version": row["version"],
                "identified": bool(row["identified"])}
    return found


def chart(doc: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = ["stock nmap\n1 host", "scanfleet\n1 host", "scanfleet\n3 hosts", "3 hosts,\nfast pass only"]
    keys = ["stock", "fleet-1", "fleet-3", "fleet-3-fast"]
    seconds = [doc["variants"][k]["seconds"] for k in keys]
    identified = [doc["variants"][k]["identified"] for k in keys]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
    bars = left.bar(labels, seconds, color=["#999999", "#2a7ab9", "#1b4f80", "#7fa7c9"])
    left.set_ylabel("wall time, s")
    left.set_title("Lab sweep: wall time (lower is better)")
    left.bar_label(bars, fmt="%.0f s")
    bars = right.bar(labels, identified, color=["#999999", "#2a7ab9", "#1b4f80", "#7fa7c9"])
    right.set_ylabel("open ports with a named service")
    right.set_title(f"Services identified (of {doc['open_ports']} open ports)")
    right.bar_label(bars)
    fig.suptitle(f"{doc['date'][:10]}, {doc['machine']['cores']} cores, lab of {len(doc['targets'])} target hosts",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ports", default="1-65535")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "lab_sweep.json"))
    parser.add_argument("--chart", default=str(ROOT / "bench" / "lab_sweep.png"))
    args = parser.parse_args()
    addresses = targets()
    started = time.time()
    stamp = datetime.datetime.fromtimestamp(started, datetime.UTC).strftime("%Y%m%dT%H%M%S")
    work = ROOT / "results" / f"bench-sweep-{stamp}"
    work.mkdir(parents=True)
    stock_xml = work / "stock.xml"
    runs = {"stock": (stock_on_scanner(addresses, args.ports, stock_xml), stock_xml)}
    print(f"stock: {runs['stock'][0]:.1f} s", file=sys.stderr, flush=True)
    runs["fleet-1"] = fleet(f"bench-sweep-{stamp}-1host", args.ports, "scanner1")
    print(f"fleet on 1 host: {runs['fleet-1'][0]:.1f} s", file=sys.stderr, flush=True)
    runs["fleet-3"] = fleet(f"bench-sweep-{stamp}-3hosts", args.ports, None)
    print(f"fleet on 3 hosts: {runs['fleet-3'][0]:.1f} s", file=sys.stderr, flush=True)
    runs["fleet-3-fast"] = fleet(f"bench-sweep-{stamp}-3hosts-fast", args.ports, None, recover=False)
    print(f"fleet on 3 hosts, fast pass only: {runs['fleet-3-fast'][0]:.1f} s", file=sys.stderr, flush=True)
    found = {name: services(xml) for name, (_, xml) in runs.items()}

    def order(port: str) -> tuple:
        address, _, rest = port.partition(":")
        return tuple(int(x) for x in address.split(".")), int(rest.split("/")[0])

    ports = sorted(set().union(*found.values()), key=order)
    table = []
    for port in ports:
        row = {"port": port}
        for name in runs:
            entry = found[name].get(port)
            row[name] = entry or {"service": "(not open)", "product": "", "version": "", "identified": False}
        row["fleet_lost"] = row["stock"]["identified"] and not row["fleet-3"]["identified"]
        table.append(row)
    stock_seconds = runs["stock"][0]
    fast_seconds = runs["fleet-3-fast"][0]
    doc = {
        **header("lab-sweep", started),
        "targets": addresses, "ports": args.ports, "open_ports": len(ports),
        "variants": {name: {"seconds": round(seconds, 1), "ratio_to_stock": round(stock_seconds / seconds, 1),
                            "identified": sum(1 for e in found[name].values() if e["identified"]),
                            "open_ports": len(found[name]), "xml": str(xml.relative_to(ROOT))}
                     for name, (seconds, xml) in runs.items()},
        "fleet_lost": [row["port"] for row in table if row["fleet_lost"]],
        "fast_lost": [row["port"] for row in table
                      if row["stock"]["identified"] and not row["fleet-3-fast"]["identified"]],
        "pass2_vs_fast": round(runs["fleet-3"][0] / fast_seconds, 2),
        "table": table,
    }
    emit(doc, args.out, show={k: v for k, v in doc.items() if k != "table"})
    chart(doc, Path(args.chart))
    return 0


if __name__ == "__main__":
    sys.exit(main())
