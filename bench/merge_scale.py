#!/usr/bin/env python3
"""Benchmark 5b: merge 100 nmap XML files totalling about 500 MB; time and peak memory (streaming).

The inputs are generated from one real nmap XML output of the lab (bench/data/lab-target-web.xml: the
patched nmap 7.95 with the merged probes file against target-web, 7 ports, service-identified): its
<host> element is repeated with distinct addresses from 198.18.0.0/15 (the benchmarking range; these
addresses are only data in the files, nothing is sent to them), and 2% of the hosts appear in two files
so that de-duplication is exercised. The merge (scanfleet.merge.merge) and the JSON/CSV reports
(scanfleet.report.write_reports, no HTML) run in a child process whose peak RSS is read from wait4().

    bench/merge_scale.py [--files 100] [--megabytes 500] [--workdir /tmp/scanfleet-merge-bench]
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

from benchlib import emit, header

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "bench" / "data" / "lab-target-web.xml"
CHILD = """
import json, sys
from pathlib import Path
from scanfleet.merge import merge
from scanfleet.report import write_reports
out = Path(sys.argv[1]); inputs = [Path(p) for p in sys.argv[2:]]
result = merge(inputs, out / "merged.xml")
summary = write_reports(out / "merged.xml", out, result.to_dict())
print(json.dumps({"hosts_up": result.to_dict().get("hosts", {}), "open_ports": summary.get("open_ports")}))
"""


def generate(workdir: Path, files: int, megabytes: int) -> list[Path]:
    text = SOURCE.read_text()
    head, rest = text.split("<host ", 1)
    host, tail = rest.rsplit("</host>", 1)
    host = "<host " + host + "</host>\n"
    old_address = re.search(r'<address addr="([^"]+)" addrtype="ipv4"', host).group(1)
    per_file = max(1, megabytes * 1024 * 1024 // files // len(host))
    base = int(ipaddress.IPv4Address("198.18.0.0"))
    paths = []
    for index in range(files):
        path = workdir / f"shard-{index:03d}" / "scan.xml"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w") as out:
            out.write(head)
            for n in range(per_file):
                number = index * per_file + n
                if index > 0 and n % 50 == 0:  # 2%: a host the previous file has too
                    number -= per_file
                address = str(ipaddress.IPv4Address(base + number))
                out.write(host.replace(f'addr="{old_address}"', f'addr="{address}"'))
            out.write(tail)
        paths.append(path)
    return paths


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--megabytes", type=int, default=500)
    parser.add_argument("--workdir", default="/tmp/scanfleet-merge-bench")
    parser.add_argument("--out", help="write the JSON result here")
    args = parser.parse_args()
    workdir = Path(args.workdir)
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    started = time.time()
    inputs = generate(workdir, args.files, args.megabytes)
    total = sum(p.stat().st_size for p in inputs)
    out = workdir / "out"
    out.mkdir()
    read, write = os.pipe()
    begin = time.monotonic()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        os.dup2(write, 1)
        os.execv(sys.executable, [sys.executable, "-c", CHILD, str(out), *map(str, inputs)])
    os.close(write)
    output = os.read(read, 1 << 20).decode()
    _, status, usage = os.wait4(pid, 0)
    seconds = time.monotonic() - begin
    if status != 0:
        print(f"merge failed with status {status}", file=sys.stderr)
        return 1
    doc = {
        **header("merge-scale", started),
        "inputs": {"files": len(inputs), "bytes": total, "megabytes": round(total / 2**20, 1)},
        "merged_xml_megabytes": round((out / "merged.xml").stat().st_size / 2**20, 1),
        "seconds": round(seconds, 1),
        "peak_rss_megabytes": round(usage.ru_maxrss / 1024, 1),
        "child": json.loads(output.strip().splitlines()[-1]),
    }
    shutil.rmtree(workdir)
    emit(doc, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
