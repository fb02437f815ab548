#!/usr/bin/python
"""Controller side of a scan's pass 2 (two-pass recovery of slow banners): thin adapter over scanfleet.recover."""

from __future__ import annotations

DOCUMENTATION = r"""
module: scan_recover
short_description: Plan and record the pass 2 of a scan run, which names the slow banners the fast pass missed
description:
  - "Thin adapter over C(scanfleet.recover) (C(plan_run), C(record_run); rules in the collection's
    C(docs/recover.md)). Run it on the controller (C(delegate_to: localhost), C(run_once: true)) after the fast
    pass is recorded (in a two-phase run: after its phase 2)."
  - "O(state=planned): selects, once, the open TCP ports the fast pass left unidentified (no match, a softmatch
    only, C(tcpwrapped), a name from the port table), groups them per scanner that scanned them into nmap jobs
    (ids C(pass2-NNN)), and saves both in C(RESULTS/RUN_ID/pass2/) (C(selection.json), C(phase2.json)). A run that
    has them resumes: the jobs still assigned are given again. A job is never handed to another scanner: one
    whose scanner is not in O(available) waits, unrun, for a later run of the same run id, and its ports keep the
    fast pass's entries. O(wait_ms) is checked before anything is planned."
  - "O(state=recorded): records the jobs' outcomes (the fetched C(scan.xml) checked against the sha256 the
    scanner reported, in C(RESULTS/RUN_ID/pass2/HOST/JOB_ID/)). C(scanfleet.fleet.scan_report) then merges: the
    pass-2 entries of the ports pass 2 named replace the fast pass's."
  - "Check mode writes nothing."
extends_documentation_fragment:
  - scanfleet.fleet.controller
  - scanfleet.fleet.run
options:
  state:
    description: "V(planned) or V(recorded)."
    type: str
    choices: [planned, recorded]
    default: planned
  two_phase:
    description: "The run is two-phase: the fast pass's service scan is its phase 2 (O(state=planned))."
    type: bool
    default: false
  available:
    description: "Scanners that can run pass-2 jobs now (reachable, with a build that has runtime waits)."
    type: list
    elements: str
    default: []
  unavailable:
    description: "Scanner -> why it cannot run its pass-2 jobs (recorded with the lost jobs)."
    type: dict
    default: {}
  options:
    description: "The scan's nmap options; pass 2's are derived from them (returned as RV(options))."
    type: list
    elements: str
    default: []
  wait_ms:
    description: "Pass 2's banner wait in milliseconds, 100 to 300000 (C(SCANFLEET_SERVICE_WAIT_MS)); another
      value fails the task before anything is planned."
    type: int
    default: 6000
  rate_budget:
    description: "The fleet's packets per second (nmap_scan_rate_budget): split evenly over the pass-2 jobs."
    type: raw
  rate_cap:
    description: "Packets per second any one scanner may send (nmap_scan_max_rate_per_scanner)."
    type: raw
  outcomes:
    description: "For O(state=recorded): per job C(id), C(outcome) and C(files) (name -> sha256), as
      C(scanfleet.fleet.scan_wait) returns them."
    type: list
    elements: dict
    default: []
"""

EXAMPLES = r"""
- name: Plan pass 2 of run demo
  scanfleet.fleet.scan_recover:
    results_dir: /srv/scanfleet/results
    run_id: demo
    available: [scanner1, scanner2]
    options: ["-sS", "-sV", "-T4"]
    wait_ms: 6000
  delegate_to: localhost
  run_once: true
  register: pass2

- name: Record what came back
  scanfleet.fleet.scan_recover:
    state: recorded
    results_dir: /srv/scanfleet/results
    run_id: demo
    outcomes: "{{ ansible_play_hosts | map('extract', hostvars, 'wait') | map(attribute='outcomes', default=[])
                  | flatten(levels=1) }}"
  delegate_to: localhost
  run_once: true
"""

RETURN = r"""
lines:
  description: What was planned (O(state=planned)).
  type: list
  elements: str
  returned: when state=planned
  sample: ["pass 2: 2 ports of 9 open left unnamed by the fast pass (2 table), 1 job, banner wait 6000 ms",
           "scanner1: pass2-001 -p T:25,1337 -iL 10.77.0.105"]
assignments:
  description: "Scanner -> its jobs to run (C(id), C(lines), C(ports), C(ipv6), C(max_rate), ...), for
    C(scanfleet.fleet.scan_job)."
  type: dict
  returned: when state=planned
  sample: {scanner1: [{id: pass2-001, lines: [10.77.0.105], ports: "T:25,1337", ipv6: false, max_rate: null}]}
options:
  description: The nmap options of the pass-2 jobs (the module adds -p, --versiondb, -iL, -oA).
  type: list
  elements: str
  returned: when state=planned
  sample: ["--privileged", "-T4", "-sS", "-Pn", "-sV"]
environment:
  description: The environment of the pass-2 nmap (the banner wait).
  type: dict
  returned: when state=planned
  sample: {SCANFLEET_SERVICE_WAIT_MS: "6000"}
ports:
  description: Ports pass 2 scans again.
  type: int
  returned: when state=planned
  sample: 2
total:
  description: Ports pass 2 scans again (the progress line's total).
  type: int
  returned: when state=planned
  sample: 2
covered:
  description: Ports of jobs already recorded (the progress line's start).
  type: int
  returned: when state=planned
  sample: 0
done:
  description: No pass-2 job is left to run.
  type: bool
  returned: when state=planned
  sample: false
waiting:
  description: Jobs left unrun for now, their scanner not in O(available) (a later run of the run id runs them).
  type: list
  elements: str
  returned: when state=planned
  sample: []
notes:
  description: One line per job recorded (O(state=recorded)).
  type: list
  elements: str
  returned: when state=recorded
  sample: ["job pass2-001 on scanner1: finished, 2 pairs"]
lost_hosts:
  description: Scanner -> why it gets no more work in this playbook run (O(state=recorded)).
  type: dict
  returned: when state=recorded
  sample: {}
pending:
  description: Jobs still assigned (O(state=recorded)).
  type: list
  elements: str
  returned: when state=recorded
  sample: []
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.scanfleet.fleet.plugins.module_utils.adapter import RUN_OPTIONS, load, user_errors


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            **RUN_OPTIONS,
            "state": {"type": "str", "choices": ["planned", "recorded"], "default": "planned"},
            "two_phase": {"type": "bool", "default": False},
            "available": {"type": "list", "elements": "str", "default": []},
            "unavailable": {"type": "dict", "default": {}},
            "options": {"type": "list", "elements": "str", "default": []},
            "wait_ms": {"type": "int", "default": 6000},
            "rate_budget": {"type": "raw"},
            "rate_cap": {"type": "raw"},
            "outcomes": {"type": "list", "elements": "dict", "default": []},
        },
        supports_check_mode=True,
    )
    recover = load(module, "recover")
    p = module.params
    with user_errors(module):
        if p["state"] == "recorded":
            result = recover.record_run(results=p["results_dir"], run_id=p["run_id"], outcomes=p["outcomes"],
                                        write=not module.check_mode)
            for note in result["notes"]:
                if ": finished, " not in note:
                    module.warn(note)
        else:
            result = recover.plan_run(
                results=p["results_dir"], run_id=p["run_id"], available=p["available"],
                unavailable={k: str(v) for k, v in p["unavailable"].items()}, two_phase=p["two_phase"],
                options=p["options"], wait_ms=p["wait_ms"], rate_budget=p["rate_budget"], rate_cap=p["rate_cap"],
                write=not module.check_mode)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
