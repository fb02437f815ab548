#!/usr/bin/python
"""Ansible adapter over scanfleet.collect: record the results of a scan round, on the controller."""

from __future__ import annotations

DOCUMENTATION = r"""
module: scan_record
short_description: Record what the scanner hosts' nmap jobs left, per shard, in the run's state
description:
  - "Thin adapter over C(scanfleet.collect.record_run). Run it on the controller (C(delegate_to: localhost),
    C(run_once: true)) after the outputs were fetched to C(RESULTS/RUN_ID/HOST/ATTEMPT/)."
  - "Checks every fetched file against the sha256 the host reported, then records each attempt: finished
    (complete XML), partial (truncated XML or nmap error: the hosts it fully reports are kept, the rest is
    planned again), failed or lost (nothing usable came back). Returns the hosts that get no more work in
    this playbook run (stalled, timed out, died, unreachable)."
extends_documentation_fragment:
  - scanfleet.fleet.controller
  - scanfleet.fleet.run
  - scanfleet.fleet.run.session
options:
  outcomes:
    description: "Per attempt: id, outcome, detail, versiondb, files (name -> sha256 on the host)."
    type: list
    elements: dict
    required: true
"""

EXAMPLES = r"""
- name: Record the round
  scanfleet.fleet.scan_record:
    results_dir: /srv/scanfleet/results
    run_id: demo
    session: "20261121T101500Z"
    outcomes: [{id: 001-scanner1, outcome: finished, files: {scan.xml: "9f86d0..."}}]
  delegate_to: localhost
  run_once: true
"""

RETURN = r"""
recorded:
  description: Ids of the attempts recorded now.
  type: list
  elements: str
  returned: success
  sample: [001-scanner1, 002-scanner2]
lost_hosts:
  description: Host -> why it gets no more work in this playbook run.
  type: dict
  returned: success
  sample: {scanner2: "stalled: ended: no progress (stall timeout)"}
notes:
  description: What the recording noted, for people (also given as warnings).
  type: list
  elements: str
  returned: success
  sample: ["002-scanner2: scan.xml truncated: 3 complete hosts kept, the rest is planned again"]
covered:
  description: Addresses scanned for good so far.
  type: int
  returned: success
  sample: 19
missing:
  description: Addresses not covered yet.
  type: int
  returned: success
  sample: 0
total:
  description: Target addresses.
  type: int
  returned: success
  sample: 19
pending:
  description: Attempts still assigned (not recorded).
  type: list
  elements: str
  returned: success
  sample: []
statuses:
  description: Attempt id -> its status (assigned, finished, partial, failed, lost).
  type: dict
  returned: success
  sample: {001-scanner1: finished, 002-scanner2: finished}
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
            **SESSION_OPTION,
            "outcomes": {"type": "list", "elements": "dict", "required": True},
        },
        supports_check_mode=True,
    )
    sfrun = load(module, "collect")
    p = module.params
    with user_errors(module):
        result = sfrun.record_run(results=p["results_dir"], run_id=p["run_id"], outcomes=p["outcomes"],
                                  session=p["session"], write=not module.check_mode)
    for note in result["notes"]:
        module.warn(note)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
