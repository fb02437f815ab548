#!/usr/bin/python
"""Documentation of the scanfleet.fleet.scan_wait action (plugins/action/scan_wait.py).

The work is done on the controller by the action plugin of the same name; this file carries its
documentation, as ansible-core does for its own action-only modules (e.g. wait_for_connection).
"""

from __future__ import annotations

DOCUMENTATION = r"""
module: scan_wait
short_description: Wait for a scanner host's nmap jobs, showing nmap's own progress, ending stalled jobs
description:
  - "Action plugin (controller side). Polls the host with M(scanfleet.fleet.scan_job) (O(state=status))
    every O(poll) seconds -- short commands, no connection held for the length of the scan -- and prints
    one line per job with nmap's progress from its C(--stats-every) lines: the percentage and ETC of the
    current phase, hosts done of the shard, time elapsed."
  - "A job whose progress (phase, percentage, hosts completed, hosts written to the XML) does not change for
    O(stall_timeout) seconds is ended by its recorded PID (M(scanfleet.fleet.scan_job) O(state=stopped)); so
    is a job still running O(timeout) seconds (plus grace) after the wait began (the host's supervisor normally
    ends it first). A host from which nothing arrives for O(lost_after) seconds gives the outcome
    C(unreachable): each call runs in a thread waited for no longer than that."
  - "Rules (outcome, progress parsing, stall, the result) are in C(scanfleet.jobs): C(job_outcome),
    C(parse_stats), C(progress_signature), C(StallWatch), C(ContactWatch), C(wait_jobs), C(fetch_list); the
    words of a job's state and outcome are defined once in C(scanfleet.job_model) (the collection's
    C(module_utils/job_model.py))."
options:
  run_id:
    description: "Run id."
    type: str
    required: true
  base_dir:
    description: "Root of the run directories on the host."
    type: path
    required: true
  attempts:
    description: "The host's attempts: C(id) and C(size) (addresses in the shard)."
    type: list
    elements: dict
    required: true
  poll:
    description: "Seconds between polls."
    type: int
    default: 10
  stall_timeout:
    description: "Seconds without progress after which a job is ended; 0 never."
    type: int
    default: 600
  timeout:
    description: "Seconds after which a job still running is ended; 0 never."
    type: int
    default: 0
  kill_grace:
    description: "Seconds between SIGTERM and SIGKILL when a job is ended."
    type: int
    default: 10
  quiet_every:
    description: "An unchanged progress line is printed again after this many seconds."
    type: int
    default: 60
  lost_after:
    description:
      - "Seconds without an answer from the host (since its last answer, or since the wait began) after
        which it counts as lost: its pending attempts get the outcome C(unreachable) (detail C(no answer for
        N s)) and the wait returns at once. Every call to the host (status poll, stop) is bounded by it,
        whatever the SSH connection does: a call that hangs is abandoned."
    type: float
    default: 90
  progress_dir:
    description:
      - "Controller directory where the waits of all scanners meet (C(RESULTS/RUN_ID/progress)): each writes its
        jobs' figures there after every poll, and one line for the whole fleet is printed: addresses done of
        O(total) and an estimate of the time left at this round's pace (none until 5% of what was left at the
        round's start is done and 30 s have passed). Rules: C(scanfleet.progress). Empty: no fleet line."
    type: path
    default: ""
  round_id:
    description: "Names this round (the session and round number), so that an earlier round's figures are left out."
    type: str
    default: ""
  total:
    description: "The run's target addresses (the plan's C(total))."
    type: int
    default: 0
  covered:
    description: "Addresses covered before this round (the plan's C(covered))."
    type: int
    default: 0
  unit:
    description: "What O(total) and O(covered) count, for the fleet line: C(addresses), or C(pairs) in the
      service-scan phase of a two-phase scan (each attempt's C(size) is then its pairs)."
    type: str
    default: addresses
author: scanfleet
"""

EXAMPLES = r"""
- name: Wait for the scans, showing nmap's progress
  scanfleet.fleet.scan_wait:
    run_id: demo
    base_dir: /var/lib/scanfleet/runs
    attempts: [{id: 001-scanner1, size: 7}]
    poll: 10
    stall_timeout: 300
    timeout: 14400
  become: true
"""

RETURN = r"""
outcomes:
  description: "Per attempt: id, outcome (finished, exited, timeout, stalled, stopped, dead, missing,
    unreachable), detail, rc, reason, pid, started, ended, hosts_done, versiondb, files (name -> sha256 on the
    host), paths (name -> path on the host)."
  type: list
  elements: dict
  returned: always
  sample:
    - id: 001-scanner1
      outcome: finished
      detail: null
      rc: 0
      reason: finished
      pid: 4242
      started: 1795255900.1
      ended: 1795255912.4
      hosts_done: 2
      versiondb: /opt/scanfleet/probes/current/nmap-service-probes
      files:
        scan.xml: 9f2c0d0b4e1c7a3d5e6f8a9b0c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d
      paths:
        scan.xml: /var/lib/scanfleet/runs/demo/001-scanner1/out/scan.xml
fetch:
  description: "What to fetch from the host: one entry per file of every outcome (attempt, name, src)."
  type: list
  elements: dict
  returned: always
  sample:
    - attempt: 001-scanner1
      name: scan.xml
      src: /var/lib/scanfleet/runs/demo/001-scanner1/out/scan.xml
lost:
  description: "True when an outcome means the host gets no more work in this run."
  type: bool
  returned: always
  sample: false
"""

from ansible.module_utils.basic import AnsibleModule


def main() -> None:
    module = AnsibleModule(argument_spec={}, supports_check_mode=True)
    module.fail_json(msg="scanfleet.fleet.scan_wait is an action plugin: run it as a task of a play "
                         "(plugins/action/scan_wait.py), not as a module")


if __name__ == "__main__":
    main()
