"""What every controller-side module of scanfleet.fleet needs: ``extends_documentation_fragment:
[scanfleet.fleet.controller]``."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
# No GitHub handle to give: validate-modules asks for (!UNKNOWN) then.
author: scanfleet maintainers (!UNKNOWN)
requirements:
  - "The C(scanfleet) Python package on the controller, for the Python that runs the module: in a clone,
    C(make venv) installs it into C(.venv); from an installed collection, C(pip install) the collection's
    directory (its C(pyproject.toml))."
attributes:
  check_mode:
    description: Can run in check mode and return changed status prediction without modifying target.
    support: full
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
  platform:
    description: Target OS/families that can be operated against.
    support: full
    platforms: posix
notes:
  - "Runs on the controller (C(delegate_to: localhost)): without the C(scanfleet) package the task fails with
    a message naming the fix."
"""
