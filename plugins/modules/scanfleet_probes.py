#!/usr/bin/python
"""Ansible adapter over scanfleet.probes: merge custom rules into an nmap-service-probes file."""

from __future__ import annotations

DOCUMENTATION = r"""
module: scanfleet_probes
short_description: Merge custom match rules into nmap-service-probes, or explain nmap's rejection of it
description:
  - "Thin adapter over the C(scanfleet.probes) package. Runs on the controller (C(delegate_to: localhost))."
  - "With O(state=merged): parses the stock file and every rule file, merges the rules ahead of the stock
    rules of their probe, and writes O(dest) atomically when its content changed. Bad input fails here,
    naming C(file:line), before anything reaches a host."
  - "With O(state=explained): fails with nmap's rejection O(nmap_message) of the merged file translated to
    the rule file's C(file:line) (give the same O(stock), O(rules) and options as for the merge)."
options:
  state:
    description: "merged, explained, or checked (parse and pre-check the rule files only, no stock file needed)."
    type: str
    default: merged
    choices: [merged, explained, checked]
  stock:
    description: "The stock nmap-service-probes (on the controller)."
    type: path
  rules:
    description: "Rule files or directories of C(*.probes) files."
    type: list
    elements: path
    default: []
  dest:
    description: "Where to write the merged file on the controller (required unless O(state=checked))."
    type: path
  drop_exclude:
    description: "Remove the stock file's Exclude directive."
    type: bool
    default: false
  totalwaitms:
    description: "Rewrite every probe's totalwaitms to this (ms); omit to keep them."
    type: int
  tcpwrappedms:
    description: "Rewrite the tcpwrappedms to this (ms); omit to keep it."
    type: int
  nmap:
    description: "Path of nmap on the scanner host, for the returned check command."
    type: str
    default: nmap
  host_path:
    description: "Path the merged file will have on the scanner host, for the returned check command."
    type: str
    default: ""
  nmap_message:
    description: "nmap's error output for O(state=explained)."
    type: str
    default: ""
author: scanfleet
"""

EXAMPLES = r"""
- name: Merge the custom rules
  scanfleet_probes:
    stock: /var/cache/scanfleet/stock.probes
    rules: [files/probes]
    dest: /var/cache/scanfleet/merged.probes
    drop_exclude: true
  delegate_to: localhost
"""

RETURN = r"""
sha256: {description: sha256 of the merged file., type: str, returned: state=merged}
summary: {description: What the merge did., type: str, returned: state=merged}
problems: {description: Warnings of the pre-check., type: list, returned: state=merged}
check_command:
  description: argv that makes the host's nmap load the file in an isolated network namespace.
  type: list
  returned: state=merged
"""

import hashlib
import os

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.scanfleet_adapter import load, user_errors


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "state": {"type": "str", "default": "merged", "choices": ["merged", "explained", "checked"]},
            "stock": {"type": "path"},
            "rules": {"type": "list", "elements": "path", "default": []},
            "dest": {"type": "path"},
            "drop_exclude": {"type": "bool", "default": False},
            "totalwaitms": {"type": "int"},
            "tcpwrappedms": {"type": "int"},
            "nmap": {"type": "str", "default": "nmap"},
            "host_path": {"type": "str", "default": ""},
            "nmap_message": {"type": "str", "default": ""},
        },
        required_if=[("state", "merged", ["stock", "dest"]), ("state", "explained", ["dest"])],
        supports_check_mode=True,
    )
    probes = load(module, "probes")
    p = module.params
    if p["state"] == "checked":
        with user_errors(module):
            files = probes.collect_rule_files(p["rules"])
            warnings = []
            for path in files:
                problems = probes.precheck_rules(probes.parse_rules_file(path))
                probes.raise_on_errors(problems)
                warnings += [str(problem) for problem in problems]
        module.exit_json(changed=False, files=[str(path) for path in files], problems=warnings)
    with user_errors(module):
        result = probes.merge_files(p["stock"], p["rules"], drop_exclude=p["drop_exclude"],
                                    totalwaitms=p["totalwaitms"],
                                    tcpwrappedms=p["tcpwrappedms"]) if p["stock"] else None
    if p["state"] == "explained":
        # The same merge again gives every line's origin: nmap's line number maps to the rule file's line.
        text = result.text if result else probes.read_text(p["dest"])
        module.fail_json(msg=probes.explain_rejection(text, p["host_path"] or p["dest"], p["nmap_message"],
                                                      p["nmap"], result.origins if result else None))
    data = probes.encode(result.text)
    digest = hashlib.sha256(data).hexdigest()
    sffiles = load(module, "files")
    old = sffiles.sha256_file(p["dest"]) if os.path.exists(p["dest"]) else None
    changed = old != digest
    if changed and not module.check_mode:
        with sffiles.atomic_write(p["dest"], binary=True) as handle:
            handle.write(data)
    module.exit_json(changed=changed, sha256=digest, summary=result.summary(),
                     problems=[str(problem) for problem in result.problems],
                     check_command=probes.nmap_check_command(p["nmap"], p["host_path"] or p["dest"]))


if __name__ == "__main__":
    main()
