#!/usr/bin/python
"""Ansible adapter over scanfleet.probes.harvest: draft match rules from a run's unnamed services."""

from __future__ import annotations

DOCUMENTATION = r"""
module: scan_harvest
short_description: Draft match rules from the services a scan run could not name
description:
  - "Thin adapter over C(scanfleet.probes.harvest.harvest_run). Run it on the controller (C(delegate_to:
    localhost), C(run_once: true)) after C(scanfleet.fleet.scan_report)."
  - "Reads C(RESULTS/RUN_ID/merged.xml), groups the replies (C(servicefp)) of the unidentified services and writes
    C(RESULTS/RUN_ID/harvest.probes): one checked draft C(match)/C(softmatch) line per group, in the
    C(files/probes/) format, for review. The file is written only when its content changes (no change
    otherwise); check mode writes nothing. Nothing to do (no change) when the run has no merged.xml yet."
extends_documentation_fragment:
  - scanfleet.fleet.controller
  - scanfleet.fleet.run
"""

EXAMPLES = r"""
- name: Draft rules from the unnamed services of run demo
  scanfleet.fleet.scan_harvest:
    results_dir: /srv/scanfleet/results
    run_id: demo
  delegate_to: localhost
  run_once: true
"""

RETURN = r"""
path:
  description: Path of harvest.probes.
  type: str
  returned: success
  sample: /srv/scanfleet/results/demo/harvest.probes
unnamed:
  description: Open ports with a fingerprint that nmap did not name.
  type: int
  returned: when the run has a merged.xml
  sample: 8
drafts:
  description: Draft rules written.
  type: int
  returned: when the run has a merged.xml
  sample: 4
dropped:
  description: Groups whose draft was dropped (it matched another reply, or a check refused it).
  type: int
  returned: when the run has a merged.xml
  sample: 0
lines:
  description: One line per group (rank, ports, probe, status, rule).
  type: list
  elements: str
  returned: success
  sample: ["8 unnamed port(s) with a fingerprint, 4 group(s)"]
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.scanfleet.fleet.plugins.module_utils.adapter import RUN_OPTIONS, load, user_errors


def main() -> None:
    module = AnsibleModule(argument_spec={**RUN_OPTIONS}, supports_check_mode=True)
    harvest = load(module, "probes.harvest")
    p = module.params
    with user_errors(module):
        result = harvest.harvest_run(p["results_dir"], p["run_id"], write=not module.check_mode)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
