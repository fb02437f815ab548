"""Ansible filters, thin adapters over the scanfleet package (scanfleet.scriptargs).

  nmap_scan_script_args | scanfleet.fleet.script_args             the --script-args-file text ('' when empty)
  nmap_scan_script_args | scanfleet.fleet.script_arg_names        the argument names, sorted (what a run records)
  options | scanfleet.fleet.check_script_options(args)            the options, or an error when they would leak args
"""

from __future__ import annotations

from ansible.errors import AnsibleFilterError


def _call(name, *args):
    """scanfleet.scriptargs.NAME(*ARGS); its errors become filter errors (they name the input, not values)."""
    try:
        from scanfleet import ScanfleetError, scriptargs
    except ImportError as exc:
        raise AnsibleFilterError(f"the scanfleet package is not importable ({exc}): run ansible from the "
                                 "project's virtualenv (make venv; . .venv/bin/activate)") from None
    try:
        return getattr(scriptargs, name)(*args)
    except ScanfleetError as exc:
        raise AnsibleFilterError(str(exc)) from None


def script_args(args):
    return _call("render", args)


def script_arg_names(args):
    return _call("names", args)


def check_script_options(options, args):
    _call("check_options", args, list(options))
    return options


class FilterModule:
    def filters(self):
        return {
            "script_args": script_args,
            "script_arg_names": script_arg_names,
            "check_script_options": check_script_options,
        }
