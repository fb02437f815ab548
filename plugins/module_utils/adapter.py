"""Shared by scanfleet's controller-side modules, thin adapters over the scanfleet package: import the package
(failing the task with the fix when it is not importable) and turn its errors into task failures.

Modules import it as ``ansible_collections.scanfleet.fleet.plugins.module_utils.adapter`` (the repository is
the collection scanfleet.fleet; see collections_path in ansible.cfg).
"""

from __future__ import annotations

import contextlib
import importlib

# The argument specs of the options documented once in plugins/doc_fragments/run.py (scanfleet.fleet.run and
# scanfleet.fleet.run.session).
RUN_OPTIONS = {"results_dir": {"type": "path", "required": True}, "run_id": {"type": "str", "required": True}}
SESSION_OPTION = {"session": {"type": "str", "required": True}}

NOT_IMPORTABLE = ("the scanfleet package is not importable ({exc}): run ansible from the project's virtualenv "
                  "(make venv; . .venv/bin/activate)")


def _import(module, name):
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        module.fail_json(msg=NOT_IMPORTABLE.format(exc=exc))
        raise  # not reached: fail_json exits


def load(module, name):
    """The submodule scanfleet.NAME; fails MODULE's task, naming the fix, when the package is not importable."""
    return _import(module, f"scanfleet.{name}")


@contextlib.contextmanager
def user_errors(module):
    """Inside the block, a ScanfleetError (its message names the input and the fix) fails MODULE's task with
    that message; any other exception is a bug and keeps its traceback."""
    error = _import(module, "scanfleet").ScanfleetError
    try:
        yield
    except error as exc:
        module.fail_json(msg=str(exc))
