#!/usr/bin/python
"""Ansible adapter over scanfleet.probes: merge custom rules into an nmap-service-probes file."""

from __future__ import annotations

DOCUMENTATION = r"""
module: probes
short_description: Merge custom match rules into nmap-service-probes, or explain nmap's rejection of it
description:
  - "Thin adapter over the C(scanfleet.probes) package. Runs on the controller (C(delegate_to: localhost))."
  - "With O(state=merged): parses the stock file and every rule file, merges the rules ahead of the stock
    rules of their probe, and writes O(dest) atomically when its content changed. Bad input fails here,
    naming C(file:line), before anything reaches a host."
  - "With O(state=compared): which rules the merged file O(dest) changes against O(before) (the file on the
    host now, or the stock file before the first push): C(changed) when any rule differs, and under
    C(--diff) the changed probes with their removed and added lines (comments and blank lines left out)."
  - "With O(state=null_only): writes to O(dest) the probes file of a scan's pass 2 (the recovery of slow
    banners): the preamble and the NULL probe of the merged file O(source), every rule of it kept
    (C(scanfleet.probes.null_only)); written atomically, only when its content changed."
  - "With O(state=explained): fails with nmap's rejection O(nmap_message) of the merged file translated to
    the rule file's C(file:line) (give the same O(stock), O(rules) and options as for the merge)."
extends_documentation_fragment:
  - scanfleet.fleet.controller
options:
  state:
    description: "merged, compared, explained, or checked (parse and pre-check the rule files only, no stock file
      needed)."
    type: str
    default: merged
    choices: [merged, compared, explained, checked, null_only]
  before:
    description: "For O(state=compared): the file O(dest) would replace (on the controller)."
    type: path
  source:
    description: "For O(state=null_only): the merged probes file (on the controller) to take the NULL probe of."
    type: path
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
"""

EXAMPLES = r"""
- name: Merge the custom rules
  scanfleet.fleet.probes:
    stock: /var/cache/scanfleet/stock.probes
    rules: [files/probes]
    dest: /var/cache/scanfleet/merged.probes
    drop_exclude: true
  delegate_to: localhost

- name: Cut the probes file of pass 2 from it (the NULL probe alone)
  scanfleet.fleet.probes:
    state: null_only
    source: /var/cache/scanfleet/merged.probes
    dest: /var/cache/scanfleet/merged.null-only.probes
  delegate_to: localhost
"""

RETURN = r"""
sha256:
  description: sha256 of the merged file.
  type: str
  returned: when state=merged or state=null_only
  sample: 9b0c4d2e1f3a5b7c9d1e3f5a7b9c1d3e5f7a9b1c3d5e7f9a1b3c5d7e9f1a3b5c
summary:
  description: What the merge did.
  type: str
  returned: when state=merged or state=null_only
  sample: "12 rule(s) from 2 file(s); Exclude dropped"
problems:
  description: Warnings of the pre-check of the rule files (C(file:line) and what is wrong).
  type: list
  elements: str
  returned: when state=merged or state=checked
  sample: ["services.probes:14: warning: cpe flag 'x': nmap knows only 'a'"]
files:
  description: The rule files found (directories expanded to their C(*.probes) files, in file-name order).
  type: list
  elements: str
  returned: when state=checked
  sample: [/srv/scanfleet/files/probes/seed.probes, /srv/scanfleet/files/probes/services.probes]
rules:
  description: The probes whose rules differ (O(state=compared)), each with the lines removed and added.
  type: list
  elements: dict
  returned: when state=compared
  sample: [{probe: TCP GetRequest, status: changed, removed: [], added: ["match myhttpd m|^HTTP/1.1 200| p/MyHTTPd/"]}]
check_command:
  description: argv that makes the host's nmap load the file in an isolated network namespace.
  type: list
  elements: str
  returned: when state=merged or state=null_only
  sample: [unshare, --net, --, sh, -c, ip link set lo up && exec "$@", sh, /opt/scanfleet/nmap-current/bin/nmap,
           -sV, -sT, --versiondb, /opt/scanfleet/probes/.incoming/nmap-service-probes, -Pn, -n, -p, "9",
           --host-timeout, 60s, 127.0.0.1]
"""

import hashlib
import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.scanfleet.fleet.plugins.module_utils.adapter import load, user_errors


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "state": {"type": "str", "default": "merged",
                      "choices": ["merged", "compared", "explained", "checked", "null_only"]},
            "before": {"type": "path"},
            "source": {"type": "path"},
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
        required_if=[("state", "merged", ["stock", "dest"]), ("state", "explained", ["dest"]),
                     ("state", "compared", ["before", "dest"]), ("state", "null_only", ["source", "dest"])],
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
    if p["state"] == "compared":
        with user_errors(module):
            changes = probes.rule_changes(probes.parse_file(p["before"]), probes.parse_file(p["dest"]))
        module.exit_json(changed=bool(changes), rules=[change.as_dict() for change in changes],
                         summary=probes.diff_summary(changes),
                         diff=probes.ansible_diff(changes, p["before"], p["dest"]))
    if p["state"] == "null_only":
        with user_errors(module):
            cut = probes.null_only(probes.parse_file(p["source"]))
            text = cut.serialize()
        summary = f"the NULL probe of {p['source']} alone, {len(cut.probes[0].matches)} match and softmatch lines"
        data = probes.encode(text)
    else:
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
        summary = result.summary()
    digest = hashlib.sha256(data).hexdigest()
    sffiles = load(module, "files")
    old = sffiles.sha256_file(p["dest"]) if os.path.exists(p["dest"]) else None
    changed = old != digest
    if changed and not module.check_mode:
        with sffiles.atomic_write(p["dest"], binary=True) as handle:
            handle.write(data)
    module.exit_json(changed=changed, sha256=digest, summary=summary,
                     problems=[str(problem) for problem in result.problems] if p["state"] == "merged" else [],
                     check_command=probes.nmap_check_command(p["nmap"], p["host_path"] or p["dest"]))


if __name__ == "__main__":
    main()
