#!/usr/bin/python
"""Ansible adapter over scanfleet.source: fetch and verify nmap sources once, on the controller."""

from __future__ import annotations

DOCUMENTATION = r"""
module: nmap_source
short_description: Fetch and verify an nmap source on the controller, and compute the build id
description:
  - "Thin adapter over the C(scanfleet.source) package. Run it on the controller
    (C(delegate_to: localhost), C(run_once: true))."
  - Fetches the source once into O(cache), verifies it (sha256, GPG, Debian .dsc) before anything is
    unpacked, and returns the files to push to the hosts with their sha256, plus the build id.
extends_documentation_fragment:
  - scanfleet.fleet.controller
options:
  kind:
    description: "upstream, archive or debian."
    type: str
    required: true
    choices: [upstream, archive, debian]
  version:
    description: "nmap version."
    type: str
    required: true
  cache:
    description: "Controller directory for downloads."
    type: path
    required: true
  url:
    description: "Upstream tarball URL (C({version}) is replaced)."
    type: str
    default: ""
  sha256:
    description: "Expected sha256 of the archive or tarball."
    type: str
    default: ""
  pinned:
    description: "Pinned upstream sha256 by version."
    type: dict
    default: {}
  gpg_verify:
    description: "Verify the upstream detached signature."
    type: bool
    default: false
  gpg_key:
    description: "Public key file for GPG verification."
    type: path
    default: ""
  gpg_fingerprint:
    description: "Required signer fingerprint."
    type: str
    default: ""
  archive:
    description: "Source archive on the controller."
    type: path
    default: ""
  suite:
    description: "Debian suite of the source package."
    type: str
    default: ""
  mirror:
    description: "Debian mirror (default the controller's)."
    type: str
    default: ""
  patches:
    description: "Rendered patch texts (part of the build id)."
    type: list
    elements: str
    default: []
  configure_args:
    description: "configure arguments (part of the build id)."
    type: list
    elements: str
    default: []
"""

EXAMPLES = r"""
- name: Fetch and verify the Debian source of nmap 7.95
  scanfleet.fleet.nmap_source:
    kind: debian
    version: "7.95"
    suite: trixie
    cache: /var/cache/scanfleet
  delegate_to: localhost
  run_once: true
"""

RETURN = r"""
kind:
  description: The kind of source (O(kind)).
  type: str
  returned: success
  sample: debian
version:
  description: The nmap version (O(version)).
  type: str
  returned: success
  sample: "7.95"
files:
  description: Files to push to the hosts, each with its path on the controller and its sha256.
  type: list
  elements: dict
  returned: success
  sample:
    - name: nmap_7.95+dfsg-3.dsc
      path: /var/cache/scanfleet/nmap-build/debian-trixie/nmap_7.95+dfsg-3.dsc
      sha256: 6c2b1e5a0d47f0b5e7b0c7b0a4d8d3c58a3f0e4f1a2b3c4d5e6f708192a3b4c5
main:
  description: The file to unpack on the host (the archive, or the C(.dsc)).
  type: str
  returned: success
  sample: nmap_7.95+dfsg-3.dsc
unpack:
  description: How to unpack it, C(tar) or C(dpkg-source).
  type: str
  returned: success
  sample: dpkg-source
verified_by:
  description: The checks that passed (C(sha256), C(gpg:FINGERPRINT), C(apt+dsc-sha256)).
  type: list
  elements: str
  returned: success
  sample: [apt+dsc-sha256]
build_id:
  description: sha256 over the version, the source files' sums, the rendered patches and the configure arguments.
  type: str
  returned: success
  sample: 3f1d0c9e5b7a2d4c6e8f0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.scanfleet.fleet.plugins.module_utils.adapter import load, user_errors


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "kind": {"type": "str", "required": True, "choices": ["upstream", "archive", "debian"]},
            "version": {"type": "str", "required": True},
            "cache": {"type": "path", "required": True},
            "url": {"type": "str", "default": ""},
            "sha256": {"type": "str", "default": ""},
            "pinned": {"type": "dict", "default": {}},
            "gpg_verify": {"type": "bool", "default": False},
            "gpg_key": {"type": "path", "default": ""},
            "gpg_fingerprint": {"type": "str", "default": ""},
            "archive": {"type": "path", "default": ""},
            "suite": {"type": "str", "default": ""},
            "mirror": {"type": "str", "default": ""},
            "patches": {"type": "list", "elements": "str", "default": []},
            "configure_args": {"type": "list", "elements": "str", "default": []},
        },
        supports_check_mode=True,
    )
    sources = load(module, "source")
    p = module.params
    with user_errors(module):
        source = sources.prepare(p["kind"], p["version"], p["cache"], url=p["url"], sha256=p["sha256"],
                                 pinned=p["pinned"], gpg_verify=p["gpg_verify"], gpg_key=p["gpg_key"],
                                 gpg_fingerprint=p["gpg_fingerprint"], archive=p["archive"], suite=p["suite"],
                                 mirror=p["mirror"])
    result = source.to_dict()
    result["build_id"] = sources.build_id(p["version"], [f.sha256 for f in source.files], p["patches"],
                                          p["configure_args"])
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
