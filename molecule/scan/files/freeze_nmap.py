#!/usr/bin/env python3
"""Fault injection for molecule/scan/side_effect.yml, on one scanner host: wait until an nmap job of RUN has
written at least one complete host to its XML, then send SIGNAL (default SIGSTOP: nmap freezes and makes no
progress) to that nmap, by the PID its supervisor recorded (checked against the process start time, with the
job model's own /proc reader: the copy of the collection's module_utils/job_model.py in the job's directory,
which is the supervisor that recorded the PID).

usage: freeze_nmap.py RUN_DIR [--signal STOP|KILL] [--timeout SECONDS]
Prints a JSON line: the attempt, the PID and the signal sent (or "timeout").
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import json
import os
import signal
import sys
import time


def job_model(directory: str):
    """The job model the job's supervisor runs (scan_job copies it into the job's directory). No bytecode is
    written: a __pycache__ beside it would be a file in the job's directory that the job did not make."""
    sys.dont_write_bytecode = True
    spec = importlib.util.spec_from_file_location("job_model", os.path.join(directory, "job_model.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir")
    parser.add_argument("--signal", default="STOP", choices=["STOP", "KILL", "TERM"])
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args()
    end = time.time() + args.timeout
    while time.time() < end:
        for job in sorted(glob.glob(os.path.join(args.run_dir, "*", "pid.json"))):
            directory = os.path.dirname(job)
            try:
                with open(os.path.join(directory, "out", "scan.xml"), "rb") as f:
                    hosts = f.read().count(b"</host>")
                with open(job) as f:
                    info = json.load(f)
            except (OSError, ValueError):
                continue
            if hosts >= 1 and not os.path.exists(os.path.join(directory, "exit.json")):
                if not job_model(directory).alive(info["pid"], info["ticks"]):
                    continue
                os.kill(info["pid"], getattr(signal, f"SIG{args.signal}"))
                print(json.dumps({"attempt": os.path.basename(directory), "pid": info["pid"],
                                  "signal": args.signal, "hosts_in_xml": hosts}))
                return 0
        time.sleep(0.2)
    print(json.dumps({"timeout": args.timeout}))
    return 1


if __name__ == "__main__":
    sys.exit(main())
