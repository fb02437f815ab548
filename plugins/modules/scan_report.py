#!/usr/bin/python
"""Ansible adapter over scanfleet.report: merge a run's results into one report, on the controller."""

from __future__ import annotations

DOCUMENTATION = r"""
module: scan_report
short_description: Merge a scan run's nmap XML into one validated report and summarise the run
description:
  - "Thin adapter over C(scanfleet.report.report_run), which uses C(scanfleet.merge.merge) and
    C(scanfleet.report.write_reports). Run it on the controller (C(delegate_to: localhost),
    C(run_once: true))."
  - "Merges the XML of every finished attempt and the complete hosts of every partial one into
    C(RESULTS/RUN_ID/merged.xml), validated with C(xmllint --dtdvalid) against O(dtd), and writes
    C(merged.json), C(merged.csv), C(merged.html) (a self-contained page for people: summary, services,
    unidentified ports with their replies and draft rules, time and coverage per shard, changes),
    C(merged-nmap.html) (nmap's rendering: C(xsltproc) with O(xsl)), C(summary.json) and C(summary.txt).
    Skipped (no change) when the inputs did not change since the last merge."
  - "With O(compare_to), also compares the run with an earlier one (C(scanfleet.diff.run_changes)): hosts up or
    down that were not, ports opened and closed, service, product or version changes, ports that became
    identified or unidentified. Writes C(changes.json), C(changes.csv) and C(changes.txt) into the run's
    directory only when they are not there yet for the same two merged XML files, and C(merged.html) again to
    show them."
  - "Returns the summary lines (hosts up, open ports, identified and unidentified services, time per shard,
    coverage, what happened) and whether the run covers every target exactly once."
extends_documentation_fragment:
  - scanfleet.fleet.controller
  - scanfleet.fleet.run
options:
  dtd:
    description: "nmap.dtd to validate the merged XML with; empty: not validated (a note says so)."
    type: path
    default: ""
  xsl:
    description: "nmap.xsl for merged-nmap.html; empty: no merged-nmap.html (merged.html is written anyway)."
    type: path
    default: ""
  two_phase:
    description: "A two-phase run: the phase-1 attempts and the recorded phase-2 jobs (C(RUN_ID/phase2/)) go
      through the two-phase merge (C(scanfleet.pairs.merge_two_phase)), and the lines add the accounting of
      every target address (up with open ports, up with none, down)."
    type: bool
    default: false
  compare_to:
    description:
      - "The earlier run to compare the run with: a run id (a directory under O(results_dir)), or the path of a
        run directory or of an nmap XML file."
      - "An empty string: the latest earlier run with the same targets (the same targets fingerprint in its
        C(state.json), created before this run, the one updated last); when there is none, RV(changes.lines)
        says so, not an error."
      - "V(none) or V(false): no comparison (RV(changes.lines) is empty). Not given: no comparison, and
        RV(changes) is not returned."
    type: str
"""

EXAMPLES = r"""
- name: Merge and summarise
  scanfleet.fleet.scan_report:
    results_dir: /srv/scanfleet/results
    run_id: demo
    dtd: /usr/share/nmap/nmap.dtd
    xsl: /usr/share/nmap/nmap.xsl
  delegate_to: localhost
  run_once: true

- name: Merge, summarise, and compare with the latest earlier run of the same targets
  scanfleet.fleet.scan_report:
    results_dir: /srv/scanfleet/results
    run_id: demo-2026-12-02
    compare_to: ""
  delegate_to: localhost
  run_once: true
  register: report

- name: Show what changed
  ansible.builtin.debug:
    msg: "{{ report.changes.lines }}"
  run_once: true
"""

RETURN = r"""
run_id:
  description: The run id.
  type: str
  returned: success
  sample: demo
dir:
  description: The run's directory on the controller.
  type: str
  returned: success
  sample: /srv/scanfleet/results/demo
merged:
  description: Path of merged.xml.
  type: str
  returned: success
  sample: /srv/scanfleet/results/demo/merged.xml
summary:
  description: The content of summary.json (null when nothing could be merged).
  type: dict
  returned: success
  sample:
    merged_xml: merged.xml
    files: {json: merged.json, csv: merged.csv, html: merged.html, nmap_html: merged-nmap.html,
            summary: summary.json}
    rows: 23
    validated: true
    hosts: {up: 4, down: 15, total: 19}
    open_ports: 23
    identified: {count: 21, by_service: {http: 9, ssh: 4}}
    unidentified: {count: 2, by_service: {unknown: 2}}
    notes: []
lines:
  description: The summary as text lines.
  type: list
  elements: str
  returned: success
  sample:
    - "run demo (fingerprint 5d41402abc4b): 19 target addresses"
    - "coverage: 19/19 addresses (100.0%), none missing, no duplicates"
    - "attempts: 3 finished"
complete:
  description: Every target address is covered exactly once.
  type: bool
  returned: success
  sample: true
covered:
  description: Addresses covered.
  type: int
  returned: success
  sample: 19
total:
  description: Target addresses.
  type: int
  returned: success
  sample: 19
missing:
  description: The addresses not covered, as text (empty when none).
  type: str
  returned: success
  sample: ""
duplicates:
  description: Addresses covered twice, as text (empty when none).
  type: str
  returned: success
  sample: ""
validated:
  description: merged.xml was validated against the DTD.
  type: bool
  returned: success
  sample: true
inputs:
  description: Labels (attempt ids) of the merged inputs.
  type: list
  elements: str
  returned: success
  sample: [001-scanner1, 002-scanner2, 003-scanner3]
recover:
  description: "The run's pass 2 (two-pass recovery of slow banners, C(scanfleet.fleet.scan_recover)): C(line)
    (C(pass 2 named N of M unnamed ports), also in the summary), C(named), C(ports), C(reasons); null for a run
    without a pass 2. Its jobs' XML go into the merge: their entries replace the fast pass's for the ports pass 2
    named, and the fast pass alone is kept as C(merged-fast.xml)."
  type: dict
  returned: success
  sample: {line: "pass 2 named 1 of 2 unnamed ports", named: 1, ports: 2,
           reasons: {none: 0, table: 2, tcpwrapped: 0, unknown: 0, softmatch: 0}}
changes:
  description: The changes since the earlier run (O(compare_to) given and not V(none)/V(false)).
  type: dict
  returned: when O(compare_to) is given
  sample:
    changed: true
    compared_to: demo-2026-12-01
    old: /srv/scanfleet/results/demo-2026-12-01/merged.xml
    lines: ["changes since demo-2026-12-01: 1 host up, 0 down, 1 port opened, 0 closed, 0 services changed,
      0 identified, 0 unidentified", "  10.77.0.104: host up (was down)",
      "  10.77.0.104:8080/tcp: opened (was host down): http nginx 1.22.1"]
    counts: {host_up: 1, host_down: 0, port_opened: 1, port_closed: 0, identified: 0, unidentified: 0,
             service_changed: 0}
    files: {json: /srv/scanfleet/results/demo/changes.json, csv: /srv/scanfleet/results/demo/changes.csv,
            txt: /srv/scanfleet/results/demo/changes.txt}
  contains:
    changed:
      description: changes.json, .csv and .txt were written (in check mode, would be).
      type: bool
      sample: true
    compared_to:
      description: The earlier run's id (or the XML file's path); null when there is none to compare to.
      type: str
      sample: demo-2026-12-01
    old:
      description: The earlier run's nmap XML file; null when there is none.
      type: str
      sample: /srv/scanfleet/results/demo-2026-12-01/merged.xml
    lines:
      description: The summary line and at most 20 changes (changes.txt has them all); empty when the run has no
        merged.xml yet.
      type: list
      elements: str
      sample:
        - "changes since demo-2026-12-01: 1 host up, 0 down, 1 port opened, 0 closed, 0 services changed,
          0 identified, 0 unidentified"
        - "  10.77.0.104: host up (was down)"
        - "  10.77.0.104:8080/tcp: opened (was host down): http nginx 1.22.1"
    counts:
      description: Changes by kind (null when there is nothing to compare to).
      type: dict
      sample: {host_up: 1, host_down: 0, port_opened: 1, port_closed: 0, identified: 0, unidentified: 0,
               service_changed: 0}
    files:
      description: The files written (null when there is nothing to compare to).
      type: dict
      sample: {json: /srv/scanfleet/results/demo/changes.json, csv: /srv/scanfleet/results/demo/changes.csv,
               txt: /srv/scanfleet/results/demo/changes.txt}
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.scanfleet.fleet.plugins.module_utils.adapter import RUN_OPTIONS, load, user_errors


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            **RUN_OPTIONS,
            "dtd": {"type": "path", "default": ""},
            "xsl": {"type": "path", "default": ""},
            "two_phase": {"type": "bool", "default": False},
            "compare_to": {"type": "str"},
        },
        supports_check_mode=True,
    )
    sfrun = load(module, "report")
    p = module.params
    with user_errors(module):
        result = sfrun.report_run(results=p["results_dir"], run_id=p["run_id"], dtd=p["dtd"] or None,
                                  xsl=p["xsl"] or None, two_phase=p["two_phase"],
                                  write=not module.check_mode)
        if p["compare_to"] is not None:
            result["changes"] = load(module, "diff").run_changes(
                results=p["results_dir"], run_id=p["run_id"], compare_to=p["compare_to"], write=not module.check_mode)
            result["changed"] = result["changed"] or result["changes"]["changed"]
    module.exit_json(**result)


if __name__ == "__main__":
    main()
