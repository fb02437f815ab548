#!/usr/bin/env python3
"""Benchmark 1: `nmap -sV` against one port that accepts and never speaks, stock vs patched.

Runs every nmap in its own isolated network namespace (unshare --net: only loopback, nothing leaves),
against a silent listener on 127.0.0.1, one after the other, in the same run: the ratio cancels the
machine's noise. Prints a JSON document (and writes it with --out).

    bench/silent_port.py --nmap stock-7.93=/usr/bin/nmap --nmap patched-7.93=.cache/build-test/bookworm/prefix/bin/nmap
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from benchlib import emit, header

LISTENER = r"""
import socket, sys, time
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(16)
print(s.getsockname()[1], flush=True)
held = []
while True:
    c, _ = s.accept(); held.append(c)
"""


def run_one(nmap: str, repeat: int) -> dict:
    script = f"""
set -e
ip link set lo up
python3 -c '{LISTENER}' > "$TMPDIR_/port" &
listener=$!
for i in $(seq 50); do [ -s "$TMPDIR_/port" ] && break; sleep 0.1; done
port=$(cat "$TMPDIR_/port")
for i in $(seq {repeat}); do
  start=$(date +%s.%N)
  "$NMAP" -sV -Pn -n -p "$port" -oX "$TMPDIR_/out-$i.xml" 127.0.0.1 > /dev/null
  end=$(date +%s.%N)
  echo "$start $end"
done
kill "$listener"
"""
    tmp = Path(f"/tmp/scanfleet-bench-{os.getpid()}")
    tmp.mkdir(exist_ok=True)
    env = dict(os.environ, NMAP=nmap, TMPDIR_=str(tmp))
    proc = subprocess.run(["unshare", "--net", "--", "bash", "-c", script], capture_output=True, text=True,
                          env=env, check=True)
    times = [float(b) - float(a) for a, b in (line.split() for line in proc.stdout.split("\n") if line.strip())]
    state = "open" if 'state="open"' in (tmp / "out-1.xml").read_text() else "not open"
    version = subprocess.run([nmap, "--version"], capture_output=True, text=True, check=True).stdout.split("\n")[0]
    for f in tmp.iterdir():
        f.unlink()
    tmp.rmdir()
    return {"nmap": nmap, "version": version, "seconds": [round(t, 2) for t in times],
            "best": round(min(times), 2), "port_state": state}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nmap", action="append", required=True, metavar="LABEL=PATH")
    parser.add_argument("--repeat", type=int, default=1, help="runs per nmap (default 1)")
    parser.add_argument("--out", help="write the JSON result here")
    args = parser.parse_args()
    started = time.time()
    results = {}
    for item in args.nmap:
        label, _, path = item.partition("=")
        results[label] = run_one(path, args.repeat)
        print(f"{label}: {results[label]['best']} s ({results[label]['version']})", file=sys.stderr, flush=True)
    stock = [v["best"] for k, v in results.items() if k.startswith("stock")]
    doc = {
        **header("silent-port", started),
        "results": results,
        "ratios_vs_stock": {k: round(stock[0] / v["best"], 1) for k, v in results.items()
                            if stock and not k.startswith("stock")},
    }
    emit(doc, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
