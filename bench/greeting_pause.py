#!/usr/bin/env python3
"""Benchmark: which pass 2 names a service behind a greeting pause, and what it costs (issue 12).

On 127.0.0.1 of a private network namespace (unshare --net: only loopback, nothing leaves), a responder greets
PAUSE seconds after the connection with an Exim greeting (tests/fixtures/xml/listeners.py "pause"), and a second
port never speaks (a silent port, which pass 2 gets too: the fast pass leaves it unidentified). Each variant scans
each port REPEAT times, one after the other; the wall time of the nmap process and the service it reports:

* ``fast``: the patched build as pass 1 runs it (its compiled wait, our rules merged into its probes file);
* ``pass2-null``: the same build, SCANFLEET_SERVICE_WAIT_MS=WAIT, the NULL probe alone (scanfleet probes null-only);
* ``pass2-full``: the same build, SCANFLEET_SERVICE_WAIT_MS=WAIT, the whole merged probes file (a second -sV);
* ``stock``: Debian's nmap -sV, for comparison.

    bench/greeting_pause.py --patched .cache/build-test/trixie/prefix/bin/nmap --out bench/results/greeting_pause.json
    bench/greeting_pause.py --patched .cache/build-test/bookworm/prefix/bin/nmap --variant fast --variant pass2-null
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from benchlib import emit, header

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from scanfleet import probes  # noqa: E402

LISTENERS = ROOT / "tests" / "fixtures" / "xml" / "listeners.py"
GREETING = "220 mail.bench.test ESMTP Exim 4.96 Wed, 02 Dec 2026 05:00:00 +0000"
PORTS = {"greeting": 25, "silent": 1337}


def scan(nmap: str, port: int, versiondb: Path | None, env: dict[str, str], timeout: float) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".xml") as xml:
        cmd = [nmap, "-sT", "-sV", "-Pn", "-n", "-p", str(port), "-oX", xml.name, "127.0.0.1"]
        if versiondb:
            cmd[1:1] = ["--versiondb", str(versiondb)]
        start = time.monotonic()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **env}, timeout=timeout,
                                  check=False)
        except subprocess.TimeoutExpired:
            return {"seconds": None, "timeout": timeout}
        seconds = round(time.monotonic() - start, 2)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)}: exit {proc.returncode}: {proc.stderr}")
        service = ET.parse(xml.name).getroot().find(".//port/service")
    attrs = {} if service is None else service.attrib
    named = " ".join(attrs[k] for k in ("product", "version") if attrs.get(k))
    return {"seconds": seconds, "name": attrs.get("name"), "method": attrs.get("method"), "product": named or None}


def inside(args: argparse.Namespace) -> dict:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    listener = subprocess.Popen(["python3", str(LISTENERS), f"pause:127.0.0.1:{PORTS['greeting']}:{args.pause}:"
                                 f"{GREETING}", f"silent:127.0.0.1:{PORTS['silent']}"],
                                stdout=subprocess.PIPE, text=True)
    try:
        assert listener.stdout is not None and listener.stdout.readline().strip() == "ready"
        with tempfile.TemporaryDirectory() as work:
            stock_probes = Path(args.patched).resolve().parent.parent / "share" / "nmap" / "nmap-service-probes"
            merged = Path(work) / "merged.probes"
            probes.write_merged(probes.merge_files(stock_probes, [ROOT / "files" / "probes"]), merged, args.patched)
            null = Path(work) / "null.probes"
            probes.write_null_only(merged, null, args.patched)
            wait = {"SCANFLEET_SERVICE_WAIT_MS": str(args.wait_ms)}
            variants = {"fast": (args.patched, merged, {}), "pass2-null": (args.patched, null, wait),
                        "pass2-full": (args.patched, merged, wait), "stock": (args.stock, None, {})}
            results = {}
            for name, (nmap, versiondb, env) in variants.items():
                if args.variant and name not in args.variant:
                    continue
                for what, port in PORTS.items():
                    runs = [scan(nmap, port, versiondb, env, args.timeout) for _ in range(args.repeat)]
                    results[f"{name}/{what}"] = runs
                    print(f"{name}/{what}: {runs}", file=sys.stderr)
    finally:
        listener.kill()
        listener.wait()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patched", required=True, help="nmap of a build with patch 60-runtime-waits")
    parser.add_argument("--stock", default="/usr/bin/nmap")
    parser.add_argument("--pause", type=float, default=5.0, help="greeting pause, seconds (the lab's Exim: 5)")
    parser.add_argument("--wait-ms", type=int, default=6000, help="pass 2's SCANFLEET_SERVICE_WAIT_MS")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=300.0, help="a scan taking longer is recorded as such")
    parser.add_argument("--variant", action="append", choices=("fast", "pass2-null", "pass2-full", "stock"),
                        help="run only this variant (repeatable; default: all)")
    parser.add_argument("--out")
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inside:
        print(json.dumps(inside(args)))
        return 0
    started = time.time()
    proc = subprocess.run(["unshare", "--net", "--", sys.executable, __file__, "--inside", *sys.argv[1:]],
                          stdout=subprocess.PIPE, text=True, check=True)
    doc = {**header("greeting_pause", started), "pause_s": args.pause, "wait_ms": args.wait_ms,
           "nmap": {"patched": args.patched, "stock": args.stock}, "results": json.loads(proc.stdout)}
    emit(doc, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
