"""Options shared by the modules that work on a scan run's directory on the controller (scan_plan, scan_record,
scan_report): ``extends_documentation_fragment: [scanfleet.fleet.run]``, plus ``scanfleet.fleet.run.session`` for
the modules that tag the run's events with the playbook run."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  results_dir:
    description:
      - "Controller directory holding one directory per run: C(RUN_ID/state.json), the fetched outputs
        C(RUN_ID/HOST/ATTEMPT/) and the merged report."
    type: path
    required: true
  run_id:
    description:
      - "Run id: the name of the run's directory under O(results_dir) and on the scanner hosts."
    type: str
    required: true
"""

    SESSION = r"""
options:
  session:
    description:
      - "Id of this playbook run: the run's events in C(state.json) are tagged with it."
    type: str
    required: true
"""
