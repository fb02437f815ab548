#!/usr/bin/env python3
"""Benchmark 2: the lab's custom-matched services, stock nmap + stock probes vs patched nmap + merged probes.

Each (service, nmap) pair is one `nmap -sV -Pn -n -p PORT --version-trace` run from the controller against
the lab target (lab/targets.sh up; addresses from inventory/lab/targets.yml: lab addresses only). The stock
runs go concurrently (each mostly waits, so each wall time is its own), then the patched runs one at a time.
Reports, per service, the wall time of the whole nmap run, nmap's own "Service scan ... elapsed" figure,
and whether nmap named the service and product.

    bench/custom_services.py --stock /usr/bin/nmap --patched .cache/build-test/trixie/prefix --out FILE
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml
from benchlib import emit, header

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scanfleet import probes  # noqa: E402
from tests.lab.test_rules import CASES  # noqa: E402  (the one list of custom-matched lab services)


def addresses() -> dict[str, str]:
    inv = yaml.safe_load((ROOT / "inventory" / "lab" / "targets.yml").read_text())
    hosts = inv["all"]["children"]["targets"]["hosts"]
    return {name: spec["ansible_host"] for name, spec in hosts.items()}


def scan(nmap: str, versiondb: str | None, address: str, port: int) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".xml") as out:
        cmd = [nmap, "-v", "-sV", "-Pn", "-n", "-p", str(port), "--allports", "-oX", out.name, address]
        if versiondb:
            cmd[1:1] = ["--versiondb", versiondb]
        start = time.monotonic()
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        seconds = time.monotonic() - start
        service = ET.parse(out.name).find(".//port/service")
    attrs = service.attrib if service is not None else {}
    # nmap's own account of its phases: "Completed Service scan at 10:56, 0.31s elapsed (1 service on 1 host)"
    phases = {m.group(1): float(m.group(2))
              for m in re.finditer(r"^Completed (Service scan|NSE) at [^,]+, ([\d.]+)s elapsed", proc.stdout, re.M)}
    return {"seconds": round(seconds, 2), "service_scan_seconds": phases.get("Service scan"),
            "nse_seconds": phases.get("NSE"), "service": attrs.get("name", ""),
            "product": attrs.get("product", ""), "version": attrs.get("version", ""),
            "method": attrs.get("method", "")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stock", default="/usr/bin/nmap", help="stock nmap binary (its own probes file)")
    parser.add_argument("--patched", required=True, help="install prefix of the patched nmap (bin/, share/nmap/)")
    parser.add_argument("--out", help="write the JSON result here")
    args = parser.parse_args()
    prefix = Path(args.patched)
    merged = tempfile.NamedTemporaryFile(suffix=".probes", delete=False)  # noqa: SIM115 (nmap reads it by name)
    result = probes.merge_files(prefix / "share" / "nmap" / "nmap-service-probes", [ROOT / "files" / "probes"],
                                drop_exclude=True)
    probes.write_merged(result, merged.name, str(prefix / "bin" / "nmap"))
    where = addresses()
    started = time.time()
    jobs = [(case, where[case.host]) for case in CASES]
    with ThreadPoolExecutor(len(jobs)) as pool:
        stock = list(pool.map(lambda j: scan(args.stock, None, j[1], j[0].port), jobs))
    # the patched runs one at a time: they are short, and CPU time would show in them
    patched = [scan(str(prefix / "bin" / "nmap"), merged.name, address, case.port) for case, address in jobs]
    os.unlink(merged.name)
    rows = []
    for (case, address), s, p in zip(jobs, stock, patched, strict=True):
        rows.append({
            "service": case.product, "target": f"{case.host} {address}:{case.port}", "expected": case.product,
            "stock": s | {"identified": s["product"].startswith(case.product)},
            "patched": p | {"identified": p["product"].startswith(case.product)},
        })
        print(f"{case.product:24} stock {s['seconds']:7.2f} s {s['product'] or s['service'] or '-':30} "
              f"patched {p['seconds']:5.2f} s (service scan {p['service_scan_seconds']} s) {p['product'] or '-'}",
              file=sys.stderr)

    def version(nmap: str) -> str:
        return subprocess.run([nmap, "--version"], capture_output=True, text=True, check=True).stdout.split("\n")[0]

    doc = {
        **header("custom-services", started),
        "stock_nmap": version(args.stock), "patched_nmap": version(str(prefix / "bin" / "nmap")),
        "rows": rows,
    }
    emit(doc, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
