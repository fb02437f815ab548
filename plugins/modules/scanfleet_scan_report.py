#!/usr/bin/python
"""Ansible adapter over scanfleet.run: merge a run's results into one report, on the controller."""

from __future__ import annotations

DOCUMENTATION = r"""
module: scanfleet_scan_report
short_description: Merge a scan run's nmap XML into one validated report and summarise the run
description:
  - "Thin adapter over C(scanfleet.run.report_run), which uses C(scanfleet.nmapxml.merge) and
    C(scanfleet.report.write_reports). Run it on the controller (C(delegate_to: localhost),
    C(run_once: true))."
  - "Merges the XML of every finished attempt and the complete hosts of every partial one into
    C(RESULTS/RUN_ID/merged.xml), validated with C(xmllint --dtdvalid) against O(dtd), and writes
    C(merged.json), C(merged.csv), C(merged.html) (C(xsltproc) with O(xsl)), C(summary.json) and
    C(summary.txt). Skipped (no change) when the inputs did not change since the last merge."
  - "Returns the summary lines (hosts up, open ports, identified and unidentified services, time per shard,
    coverage, what happened) and whether the run covers every target exactly once."
options:
  results_dir:
    description: "Controller directory holding one directory per run."
    type: path
    required: true
  run_id:
    description: "Run id."
    type: str
    required: true
  dtd:
    description: "nmap.dtd to validate the merged XML with; empty: not validated (a note says so)."
    type: path
    default: ""
  xsl:
    description: "nmap.xsl for merged.html; empty: no HTML."
    type: path
    default: ""
author: scanfleet
"""

EXAMPLES = r"""
- name: Merge and summarise
  scanfleet_scan_report:
    results_dir: "{{ playbook_dir }}/../results"
    run_id: demo
    dtd: /usr/share/nmap/nmap.dtd
    xsl: /usr/share/nmap/nmap.xsl
  delegate_to: localhost
  run_once: true
"""

RETURN = r"""
merged: {description: Path of merged.xml., type: str, returned: success}
summary: {description: The content of summary.json (None when nothing could be merged)., type: dict, returned: success}
lines: {description: The summary as text lines., type: list, returned: success}
complete: {description: Every target address is covered exactly once., type: bool, returned: success}
covered: {description: Addresses covered., type: int, returned: success}
total: {description: Target addresses., type: int, returned: success}
missing: {description: The addresses not covered, as text., type: str, returned: success}
duplicates: {description: Addresses covered twice, as text., type: str, returned: success}
validated: {description: merged.xml was validated against the DTD., type: bool, returned: success}
inputs: {description: Labels (attempt ids) of the merged inputs., type: list, returned: success}
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.scanfleet_adapter import load, user_errors


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "results_dir": {"type": "path", "required": True},
            "run_id": {"type": "str", "required": True},
            "dtd": {"type": "path", "default": ""},
            "xsl": {"type": "path", "default": ""},
        },
        supports_check_mode=True,
    )
    sfrun = load(module, "report")
    p = module.params
    with user_errors(module):
        result = sfrun.report_run(results=p["results_dir"], run_id=p["run_id"], dtd=p["dtd"] or None,
                                  xsl=p["xsl"] or None, write=not module.check_mode)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
