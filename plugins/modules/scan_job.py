#!/usr/bin/python
"""Runs on a scanner host: start, watch and stop the detached nmap jobs of a scanfleet run.

Option parsing only: the work (the job directory, the supervisor, the /proc/PID/stat checks, the words of a
job's state) is plugins/module_utils/job_model.py, which Ansible ships with the module (scanner hosts do not
have the scanfleet package). Every decision about shards, resume and reassignment is made on the controller.
"""

from __future__ import annotations

DOCUMENTATION = r"""
module: scan_job
short_description: Start, watch and stop detached nmap jobs on a scanner host
description:
  - "Each attempt is one nmap process over one shard, in its own directory
    O(base_dir)/RUN_ID/ATTEMPT_ID/: the C(-iL) file C(targets), the job description C(job.json), the
    supervisor's C(pid.json) and C(exit.json), nmap's stdout/stderr C(nmap.log) (the C(--stats-every) lines)
    and, in C(out/), nmap's C(-oA) outputs C(scan.xml), C(scan.nmap), C(scan.gnmap)."
  - "O(state=started): starts a detached supervisor (its own session, no controlling terminal, stdio on
    /dev/null) that runs nmap as O(user):O(group) (no supplementary groups, umask 027), records nmap's PID
    with its start time in C(pid.json), ends nmap after O(timeout) seconds (SIGTERM, SIGKILL after
    O(kill_grace)), and writes C(exit.json) when nmap ends. The supervisor is the collection's
    C(module_utils/job_model.py), copied into the attempt's directory (root:O(group) mode 0640) and run by the
    host's Python. The SSH connection is not held: the module
    returns as soon as nmap runs. An attempt that already has a job is never started again: a running
    job is attached to, a finished one is reported (a re-run resumes instead of rescanning), and a
    directory whose job vanished without an exit record is reported C(dead) for the controller to salvage."
  - "O(state=status): reports every attempt (running, exited, dead, absent) with the tail of nmap.log,
    the size of the XML, the number of hosts it holds, and, once ended, the sha256 of every output."
  - "O(state=stopped): ends the running nmap of each attempt by its recorded PID (checked against the
    process start time, so a reused PID is never signalled): SIGTERM and SIGCONT, SIGKILL after
    O(kill_grace) seconds. The reason is recorded in C(exit.json)."
  - Directories are created root:O(group) mode 0750 (C(out/) owned by O(user)); nothing is world-readable.
options:
  state:
    description: "What to do with the attempts."
    type: str
    choices: [started, status, stopped]
    default: status
  base_dir:
    description: "Root of the run directories on the host."
    type: path
    required: true
  run_id:
    description: "Run id (a directory name)."
    type: str
    required: true
  attempts:
    description:
      - "Attempts: C(id) (directory name), and for O(state=started) C(lines) (the -iL lines), C(ipv6)
        (adds C(-6)), C(max_rate) (packets per second, adds C(--max-rate); its share of the fleet's rate
        budget, empty for none) and C(ports) (adds C(-p PORTS): a two-phase service-scan job's port list)."
    type: list
    elements: dict
    required: true
  nmap:
    description: "The nmap binary (O(state=started))."
    type: path
    default: /opt/scanfleet/nmap-current/bin/nmap
  options:
    description: "nmap options before the ones the module adds: C(-p) (attempt C(ports)), C(--max-rate)
      (and C(--min-rate), O(hold_rate)), C(--versiondb), C(--stats-every), C(-iL), C(-oA), C(-6)."
    type: list
    elements: str
    default: []
  versiondb:
    description: "Probes file for C(--versiondb). When it does not exist on the host, nmap's own file is used
      and a warning is given."
    type: path
    default: ""
  hold_rate:
    description: "With an attempt's C(max_rate), add C(--min-rate) at the same rate: nmap sends at its share
      instead of slowing down when probes go unanswered (sweeps of mostly dead address space)."
    type: bool
    default: false
  stats_every:
    description: "Seconds between nmap's progress lines (C(--stats-every))."
    type: int
    default: 10
  user:
    description: "Unprivileged user nmap runs as."
    type: str
    default: scanfleet
  group:
    description: "Its group (owns the nmap binary)."
    type: str
    default: scanfleet
  timeout:
    description: "Seconds after which the supervisor ends nmap; 0 for none."
    type: int
    default: 0
  kill_grace:
    description: "Seconds between SIGTERM and SIGKILL."
    type: int
    default: 10
  script_args:
    description:
      - "NSE script arguments (O(state=started)), in the syntax of nmap's C(--script-args-file) (the
        C(scanfleet.fleet.script_args) filter renders them from a mapping). Written to C(script-args) in the
        attempt's directory (root:O(group) mode 0640) and passed with C(--script-args-file), so the values are
        on no command line; the supervisor removes the file when nmap ends. Never logged (C(no_log))."
    type: str
    default: ""
  reason:
    description: "Why the jobs are stopped (O(state=stopped)), recorded in C(exit.json)."
    type: str
    choices: [stopped, stalled, timeout]
    default: stopped
author: scanfleet
"""

EXAMPLES = r"""
- name: Start the shard of this host
  scanfleet.fleet.scan_job:
    state: started
    base_dir: /var/lib/scanfleet/runs
    run_id: demo
    attempts:
      - id: 001-scanner1
        lines: ["10.77.0.101", "10.77.0.102/31"]
    options: ["-sS", "-sV", "-T4", "-p", "1-1024", "--privileged"]
    versiondb: /opt/scanfleet/probes/current/nmap-service-probes
    timeout: 14400
  become: true
"""

RETURN = r"""
attempts:
  description:
    - "Per attempt: C(id), C(dir), C(state) (running, exited, dead, absent), C(action) (started, attached,
      none, stopped), C(pid), C(rc), C(reason) (finished, error, signal, timeout, stalled, stopped),
      C(detail), C(started), C(ended), C(argv), C(versiondb) (empty: nmap's own file), C(xml_bytes),
      C(hosts_done), C(tail) (end of nmap.log), C(files) (name -> path, sha256, bytes; once ended)."
    - "The words are defined once, with their meaning, in the collection's C(module_utils/job_model.py)
      (C(WORDS))."
  type: list
  elements: dict
  returned: always
  sample:
    - id: 001-scanner1
      dir: /var/lib/scanfleet/runs/demo/001-scanner1
      state: exited
      action: none
      pid: 4242
      rc: 0
      reason: finished
      detail: null
      started: 1795255900.1
      ended: 1795255912.4
      argv: [/opt/scanfleet/nmap-current/bin/nmap, -sS, -sV, --stats-every, 10s, -iL,
             /var/lib/scanfleet/runs/demo/001-scanner1/targets, -oA, /var/lib/scanfleet/runs/demo/001-scanner1/out/scan]
      versiondb: ""
      xml_bytes: 5120
      hosts_done: 2
      tail: "Nmap done: 2 IP addresses (2 hosts up) scanned in 12.31 seconds"
      files:
        scan.xml:
          path: /var/lib/scanfleet/runs/demo/001-scanner1/out/scan.xml
          sha256: 9f2c0d0b4e1c7a3d5e6f8a9b0c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d
          bytes: 5120
"""

import re

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.scanfleet.fleet.plugins.module_utils.job_model import (
    ENDED_STATES,
    STOP_REASONS,
    Job,
    JobError,
    start,
    stop,
)

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def main():
    module = AnsibleModule(
        argument_spec={
            "state": {"type": "str", "choices": ["started", "status", "stopped"], "default": "status"},
            "base_dir": {"type": "path", "required": True},
            "run_id": {"type": "str", "required": True},
            "attempts": {"type": "list", "elements": "dict", "required": True},
            "nmap": {"type": "path", "default": "/opt/scanfleet/nmap-current/bin/nmap"},
            "options": {"type": "list", "elements": "str", "default": []},
            "versiondb": {"type": "path", "default": ""},
            "stats_every": {"type": "int", "default": 10},
            "hold_rate": {"type": "bool", "default": False},
            "user": {"type": "str", "default": "scanfleet"},
            "group": {"type": "str", "default": "scanfleet"},
            "timeout": {"type": "int", "default": 0},
            "kill_grace": {"type": "int", "default": 10},
            "reason": {"type": "str", "default": "stopped", "choices": list(STOP_REASONS)},
            "script_args": {"type": "str", "default": "", "no_log": True},
        },
        supports_check_mode=True,
    )
    p = module.params
    if not NAME.match(p["run_id"]):
        module.fail_json(msg=f"run_id {p['run_id']!r} is not a plain directory name")
    results = []
    warnings = []
    changed = False
    for attempt in p["attempts"]:
        attempt_id = str(attempt.get("id", ""))
        if not NAME.match(attempt_id):
            module.fail_json(msg=f"attempt id {attempt_id!r} is not a plain directory name")
        job = Job(p["base_dir"], p["run_id"], attempt_id)
        if p["state"] == "started":
            try:
                info, more = start(job, attempt, p, check_mode=module.check_mode)
            except JobError as exc:
                module.fail_json(msg=str(exc), **({"attempts": [exc.info]} if exc.info else {}))
            warnings += more
        elif p["state"] == "stopped":
            info = stop(job, p["reason"], p["kill_grace"], check_mode=module.check_mode)
        else:
            info = job.status()
        if info.get("state") in ENDED_STATES and not module.check_mode:
            job.forget_secrets()
        changed = changed or info.get("action") in ("started", "stopped")
        results.append(info)
    for warning in warnings:
        module.warn(warning)
    module.exit_json(changed=changed, attempts=results)


if __name__ == "__main__":
    main()
