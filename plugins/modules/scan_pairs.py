#!/usr/bin/python
"""Controller side of phase 2 of a two-phase scan: thin adapter over scanfleet.twophase."""

from __future__ import annotations

DOCUMENTATION = r"""
module: scan_pairs
short_description: Plan and record the service-scan phase of a two-phase scan run
description:
  - "Thin adapter over C(scanfleet.twophase) (rules: docs/two_phase.md). Run it on the controller
    (C(delegate_to: localhost), C(run_once: true)) once phase 1 (the run's address-sharded rounds) is complete."
  - "O(state=planned): collects the open (host, port) pairs of phase 1 into C(RUN_ID/pairs.json) (once; a
    phase 1 with pending addresses is refused), then plans (or resumes) a phase-2 round in C(RUN_ID/phase2/):
    the pairs not done and not assigned are sharded over the available scanners by pair count weighted by
    capacity and grouped into jobs (an C(-iL) host list and a C(-p) port list each), each with its share of the
    rate budget (C(max_rate)). In check mode nothing is written."
  - "O(state=recorded): records what came back of each job (outcome entries as C(scan_record) takes them,
    the files fetched into C(RUN_ID/phase2/HOST/JOB_ID/) and checked against the sha256 the scanner reported)."
extends_documentation_fragment:
  - scanfleet.fleet.controller
  - scanfleet.fleet.run
options:
  state:
    description: "Plan a round, or record one."
    type: str
    choices: [planned, recorded]
    default: planned
  scope:
    description: "C(scanfleet_scope): every pair must lie inside (O(state=planned))."
    type: list
    elements: str
    default: []
  scope_extra:
    description: "C(scanfleet_scope_extra)."
    type: list
    elements: str
    default: []
  scanners:
    description: "Scanner -> {capacity} (O(state=planned))."
    type: dict
    default: {}
  available:
    description: "Scanners that may get work this round."
    type: list
    elements: str
    default: []
  unavailable:
    description: "Scanner -> why it gets no work (its assigned jobs are lost, their pairs planned again)."
    type: dict
    default: {}
  options:
    description: "The phase-2 nmap options (checked against the rate limits)."
    type: list
    elements: str
    default: []
  rate_budget:
    description: "C(nmap_scan_rate_budget): packets per second of the fleet (null: none)."
    type: raw
  rate_cap:
    description: "C(nmap_scan_max_rate_per_scanner) (null: none)."
    type: raw
  timeout:
    description: "Per-host timeout of a job (bounds how long a lost job may still send)."
    type: int
    default: 0
  kill_grace:
    description: "Seconds between SIGTERM and SIGKILL."
    type: int
    default: 0
  outcomes:
    description: "Per job (O(state=recorded)): id, outcome, detail, files (name -> sha256 on the host)."
    type: list
    elements: dict
    default: []
"""

EXAMPLES = r"""
- name: Plan the service scan
  scanfleet.fleet.scan_pairs:
    results_dir: /srv/scanfleet/results
    run_id: demo
    scope: [10.77.0.0/16]
    scanners: {scanner1: {capacity: 1}, scanner2: {capacity: 2}}
    available: [scanner1, scanner2]
    options: [--privileged, -T4, -sS, -sV, -Pn]
    rate_budget: 3000
  delegate_to: localhost
  run_once: true
"""

RETURN = r"""
lines:
  description: The plan or the notes, for people.
  type: list
  elements: str
  returned: success
  sample: ["scanner1: p2-001-scanner1 IPv4 3 hosts -p T:22,80 (5 pairs, 6 port probes, --max-rate 100)
           -iL jobs/p2-001-scanner1.targets"]
assignments:
  description: "Scanner -> its jobs to run: id, lines (-iL), ports (-p), ipv6, max_rate, size (pairs)
    (O(state=planned))."
  type: dict
  returned: success
  sample:
    scanner1: [{id: p2-001-scanner1, lines: [10.77.0.5/32], ports: "T:22,80", ipv6: false, max_rate: 100, size: 2}]
progress:
  description: "Pairs: total, done, assigned, remaining."
  type: dict
  returned: success
  sample: {pairs: 11, done: 6, assigned: 5, remaining: 5}
total:
  description: Pairs to scan in phase 2 (O(state=planned)).
  type: int
  returned: success
  sample: 11
covered:
  description: Pairs done before this round (O(state=planned)).
  type: int
  returned: success
  sample: 6
balance:
  description: "Pairs per scanner of the new jobs and the tail (largest / weighted share) (O(state=planned))."
  type: dict
  returned: success
  sample: {pairs: {scanner1: 6, scanner2: 5}, tail: 1.091}
lost_hosts:
  description: Scanner -> why it gets no more work in this playbook run (O(state=recorded)).
  type: dict
  returned: success
  sample: {scanner2: "unreachable in job p2-003-scanner2"}
missing:
  description: Pairs neither done nor assigned (O(state=recorded)).
  type: int
  returned: success
  sample: 0
pending:
  description: Jobs still assigned (O(state=recorded)).
  type: list
  elements: str
  returned: success
  sample: []
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.scanfleet.fleet.plugins.module_utils.adapter import RUN_OPTIONS, load, user_errors


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            **RUN_OPTIONS,
            "state": {"type": "str", "choices": ["planned", "recorded"], "default": "planned"},
            "scope": {"type": "list", "elements": "str", "default": []},
            "scope_extra": {"type": "list", "elements": "str", "default": []},
            "scanners": {"type": "dict", "default": {}},
            "available": {"type": "list", "elements": "str", "default": []},
            "unavailable": {"type": "dict", "default": {}},
            "options": {"type": "list", "elements": "str", "default": []},
            "rate_budget": {"type": "raw", "default": None},
            "rate_cap": {"type": "raw", "default": None},
            "timeout": {"type": "int", "default": 0},
            "kill_grace": {"type": "int", "default": 0},
            "outcomes": {"type": "list", "elements": "dict", "default": []},
        },
        supports_check_mode=True,
    )
    twophase = load(module, "twophase")
    p = module.params
    with user_errors(module):
        if p["state"] == "recorded":
            result = twophase.record_round(results=p["results_dir"], run_id=p["run_id"], outcomes=p["outcomes"],
                                           write=not module.check_mode)
            for note in result["notes"]:
                module.warn(note)
        else:
            result = twophase.plan_round(
                results=p["results_dir"], run_id=p["run_id"], scope=twophase.run_scope(p["scope"], p["scope_extra"]),
                weights={name: (info or {}).get("capacity", 1) for name, info in p["scanners"].items()},
                available=p["available"], unavailable={k: str(v) for k, v in p["unavailable"].items()},
                options=p["options"], rate_budget=p["rate_budget"], rate_cap=p["rate_cap"], timeout=p["timeout"],
                kill_grace=p["kill_grace"], write=not module.check_mode)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
