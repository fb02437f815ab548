#!/usr/bin/python
"""Ansible adapter over scanfleet.plan: plan (or resume) a distributed scan run, on the controller."""

from __future__ import annotations

DOCUMENTATION = r"""
module: scan_plan
short_description: Plan or resume a distributed nmap scan run and shard it over the available scanners
description:
  - "Thin adapter over C(scanfleet.plan.build_plan) and C(scanfleet.plan.plan_run). Run it on the controller
    (C(delegate_to: localhost), C(run_once: true))."
  - "Parses the targets and exclusions (addresses, CIDRs, ranges, nmap octet ranges, hostnames resolved on
    the controller, files with comments), removes the scanners' own addresses unless O(include_scanners),
    and refuses the run, before anything is sent, when a target lies outside O(scope) + O(scope_extra),
    naming the offending targets."
  - "Opens the run's state C(RESULTS/RUN_ID/state.json) or creates it; a run id whose state belongs to
    another target set or other options is refused. Plans one round: attempts still assigned are handed to
    their host again when it is available, everything neither covered nor assigned is sharded over the
    O(available) hosts by capacity; writes the shards as nmap -iL files in C(RESULTS/RUN_ID/shards/)."
  - "With O(rate_budget) and/or O(rate_cap), each new attempt gets C(max_rate), its share of the fleet's packets
    per second (C(scanfleet.rates)), which M(scanfleet.fleet.scan_job) passes to nmap as C(--max-rate); the lines
    and RV(rates) show each scanner's rate."
  - In check mode nothing is written; the plan is returned.
extends_documentation_fragment:
  - scanfleet.fleet.controller
  - scanfleet.fleet.run
  - scanfleet.fleet.run.session
options:
  run_id:
    description:
      - "Run id: the name of the run's directory under O(results_dir) and on the scanner hosts."
      - "Empty: derived from the fingerprint of targets and options (C(scan-) + 12 hex digits)."
    type: str
    required: false
    default: ""
  round:
    description: "Round number within this playbook run (1 = first)."
    type: int
    default: 1
  targets:
    description: "Target expressions (comma/space separated lists allowed)."
    type: list
    elements: str
    default: []
  targets_files:
    description: "Files of targets on the controller (C(#) comments)."
    type: list
    elements: path
    default: []
  exclude:
    description: "Exclusions, same syntax as targets."
    type: list
    elements: str
    default: []
  exclude_files:
    description: "Files of exclusions on the controller."
    type: list
    elements: path
    default: []
  scope:
    description: "Networks the inventory allows to scan (C(scanfleet_scope))."
    type: list
    elements: str
    required: true
  scope_extra:
    description: "Explicit widening of the scope (C(scanfleet_scope_extra))."
    type: list
    elements: str
    default: []
  scanners:
    description: "Every scanner host of the play: name -> {capacity, addresses}."
    type: dict
    required: true
  available:
    description: "Scanner hosts that may get work now."
    type: list
    elements: str
    required: true
  unavailable:
    description: "Scanner hosts that may not, with the reason (for the warnings and the summary)."
    type: dict
    default: {}
  include_scanners:
    description: "Also scan the scanners' own addresses."
    type: bool
    default: false
  mode:
    description: "Sharding mode."
    type: str
    choices: [contiguous, interleaved]
    default: contiguous
  seed:
    description: "Seed of the interleaved order."
    type: int
    default: 0
  options:
    description: "The nmap options that shape the results (part of the run's fingerprint)."
    type: list
    elements: str
    default: []
  rate_budget:
    description:
      - "Packets per second the whole fleet may send (C(nmap_scan_rate_budget)): split over the scanners that
        get work this round by capacity, each new attempt gets its C(max_rate) (nmap C(--max-rate)). Empty: no
        limit. Rules: C(scanfleet.rates)."
      - "A whole number >= 1; anything else (0, negative, fractional, not a number, a boolean) is refused, and
        so is C(--max-rate)/C(--min-rate) in O(options) while a limit is set."
    type: raw
    default: null
  rate_cap:
    description:
      - "Packets per second any one scanner may send (C(nmap_scan_max_rate_per_scanner)); a share above it is
        lowered to it. Refused when the scanners at the cap could never use the budget (cap x scanners <
        budget). Empty: no cap."
    type: raw
    default: null
  timeout:
    description: "The per-host timeout of the jobs, seconds (0: none): bounds how long a lost job may still send,
      so how long its rate stays held against the budget."
    type: int
    default: 0
  kill_grace:
    description: "Seconds between SIGTERM and SIGKILL when a job is ended (with O(timeout))."
    type: int
    default: 0
"""

EXAMPLES = r"""
- name: Plan the run
  scanfleet.fleet.scan_plan:
    results_dir: /srv/scanfleet/results
    session: "20261121T101500Z"
    targets: ["10.77.0.101-119"]
    scope: "{{ scanfleet_scope }}"
    scanners: {scanner1: {capacity: 1, addresses: [10.77.0.11]}, scanner2: {capacity: 2, addresses: [10.77.0.12]}}
    available: [scanner1, scanner2]
    options: ["-sS", "-sV", "-p", "1-1024"]
  delegate_to: localhost
  run_once: true
"""

RETURN = r"""
run_id:
  description: The run id (derived when none was given).
  type: str
  returned: success
  sample: scan-5d41402abc4b
dir:
  description: The run's directory on the controller.
  type: str
  returned: success
  sample: /srv/scanfleet/results/scan-5d41402abc4b
resumed:
  description: The run existed (its state was found and matches).
  type: bool
  returned: success
  sample: false
fingerprint:
  description: sha256 over the target addresses and the options.
  type: str
  returned: success
  sample: 5d41402abc4b2a76b9719d911017c592a1b2c3d4e5f60718293a4b5c6d7e8f90
total:
  description: Number of target addresses.
  type: int
  returned: success
  sample: 19
covered:
  description: Addresses already scanned for good.
  type: int
  returned: success
  sample: 0
todo:
  description: Addresses neither covered nor still assigned before this round.
  type: int
  returned: success
  sample: 19
done:
  description: Nothing is left to scan or to wait for.
  type: bool
  returned: success
  sample: false
assignments:
  description: "Available host -> its attempts this round (id, host, family, ipv6, lines, size, status, round)."
  type: dict
  returned: success
  sample:
    scanner1:
      - id: 001-scanner1
        host: scanner1
        family: 4
        ipv6: false
        lines: [10.77.0.101-10.77.0.107]
        size: 7
        status: assigned
        round: 1
        max_rate: 100
new:
  description: Ids of the attempts created this round.
  type: list
  elements: str
  returned: success
  sample: [001-scanner1, 002-scanner2]
reattached:
  description: Ids of the attempts handed again to their host (resume).
  type: list
  elements: str
  returned: success
  sample: []
lost:
  description: Ids of the attempts whose host is not available any more.
  type: list
  elements: str
  returned: success
  sample: []
notes:
  description: What the planning noted this round, for people (shares handed to other hosts, lost attempts).
  type: list
  elements: str
  returned: success
  sample: ["scanner3 did not answer SSH within 30 s: gets no more of the targets in this run"]
lines:
  description: The plan as text lines (the run, the shards per host, the notes).
  type: list
  elements: str
  returned: success
  sample:
    - "run scan-5d41402abc4b (new; fingerprint 5d41402abc4b): 19 target addresses (10.77.0.101-10.77.0.119),
      0 scanned already"
    - "scanner1: 001-scanner1 (new) 7 addresses: 10.77.0.101-10.77.0.107"
rates:
  description: "Scanner -> the packets per second its jobs of this round may send (the sum of their --max-rate);
    empty without a rate budget or cap."
  type: dict
  returned: success
  sample: {scanner1: 100, scanner2: 200}
rate_budget:
  description: The fleet's rate budget in packets per second (null for none).
  type: int
  returned: success
  sample: 300
rate_cap:
  description: The per-scanner cap in packets per second (null for none).
  type: int
  returned: success
  sample: null
rate_total:
  description: "What the fleet's jobs of this round may send together, packets per second (not counting lost jobs
    whose rate is held)."
  type: int
  returned: success
  sample: 300
newly_unavailable:
  description: Hosts unavailable since the last round, with the reason (warned about).
  type: dict
  returned: success
  sample: {scanner3: "did not answer SSH within 30 s"}
scanners_excluded:
  description: The scanners' own addresses left out of the targets, as text.
  type: str
  returned: success
  sample: 10.77.0.11, 10.77.0.12
resolved:
  description: Hostname -> the addresses it resolved to on the controller (targets and exclusions).
  type: dict
  returned: success
  sample: {www.example.internal: [10.77.0.101]}
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.scanfleet.fleet.plugins.module_utils.adapter import (
    RUN_OPTIONS,
    SESSION_OPTION,
    load,
    user_errors,
)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            **RUN_OPTIONS,
            "run_id": {"type": "str", "default": ""},
            **SESSION_OPTION,
            "round": {"type": "int", "default": 1},
            "targets": {"type": "list", "elements": "str", "default": []},
            "targets_files": {"type": "list", "elements": "path", "default": []},
            "exclude": {"type": "list", "elements": "str", "default": []},
            "exclude_files": {"type": "list", "elements": "path", "default": []},
            "scope": {"type": "list", "elements": "str", "required": True},
            "scope_extra": {"type": "list", "elements": "str", "default": []},
            "scanners": {"type": "dict", "required": True},
            "available": {"type": "list", "elements": "str", "required": True},
            "unavailable": {"type": "dict", "default": {}},
            "include_scanners": {"type": "bool", "default": False},
            "mode": {"type": "str", "choices": ["contiguous", "interleaved"], "default": "contiguous"},
            "seed": {"type": "int", "default": 0},
            "options": {"type": "list", "elements": "str", "default": []},
            "rate_budget": {"type": "raw", "default": None},
            "rate_cap": {"type": "raw", "default": None},
            "timeout": {"type": "int", "default": 0},
            "kill_grace": {"type": "int", "default": 0},
        },
        supports_check_mode=True,
    )
    sfrun = load(module, "plan")
    p = module.params
    scanners = p["scanners"]
    with user_errors(module):
        plan = sfrun.build_plan(
            targets=p["targets"], targets_files=p["targets_files"], exclude=p["exclude"],
            exclude_files=p["exclude_files"], scope=p["scope"], scope_extra=p["scope_extra"],
            scanner_addresses=[str(a) for info in scanners.values() for a in (info or {}).get("addresses", [])],
            include_scanners=p["include_scanners"])
        result = sfrun.plan_run(
            results=p["results_dir"], run_id=p["run_id"], plan=plan, options=p["options"],
            weights={name: (info or {}).get("capacity", 1) for name, info in scanners.items()},
            available=p["available"], unavailable={k: str(v) for k, v in p["unavailable"].items()},
            session=p["session"], round_no=p["round"], mode=p["mode"], seed=p["seed"],
            rate_budget=p["rate_budget"], rate_cap=p["rate_cap"], timeout=p["timeout"], kill_grace=p["kill_grace"],
            write=not module.check_mode)
    for host, why in sorted(result["newly_unavailable"].items()):
        module.warn(f"scanner {host} {why}: its share of the targets goes to "
                    f"{', '.join(sorted(p['available'])) or 'no other host'}")
    module.exit_json(**result)


if __name__ == "__main__":
    main()
