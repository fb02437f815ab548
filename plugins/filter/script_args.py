"""Ansible filters, thin adapters over the scanfleet package (scanfleet.scriptargs, scanfleet.rates,
scanfleet.twophase).

  nmap_scan_script_args | scanfleet.fleet.script_args             the --script-args-file text ('' when empty)
  nmap_scan_script_args | scanfleet.fleet.script_arg_names        the argument names, sorted (what a run records)
  options | scanfleet.fleet.check_script_options(args)            the options, or an error when they would leak args
  options | scanfleet.fleet.check_rate_limits(budget, cap, caps)  the options, or an error naming a bad rate limit
  options | scanfleet.fleet.phase_options(mode, phase)            the options of a phase (two_phase), else as given
"""

from __future__ import annotations

from ansible.errors import AnsibleFilterError


def _call(name, *args, module="scriptargs", **kwargs):
    """scanfleet.MODULE.NAME(*ARGS, **KWARGS); its errors become filter errors (they name the input, not values)."""
    try:
        import importlib

        from scanfleet import ScanfleetError
        functions = importlib.import_module(f"scanfleet.{module}")
    except ImportError as exc:
        raise AnsibleFilterError(f"the scanfleet package is not importable ({exc}): run ansible from the "
                                 "project's virtualenv (make venv; . .venv/bin/activate)") from None
    try:
        return getattr(functions, name)(*args, **kwargs)
    except ScanfleetError as exc:
        raise AnsibleFilterError(str(exc)) from None


def script_args(args):
    return _call("render", args)


def script_arg_names(args):
    return _call("names", args)


def check_script_options(options, args):
    _call("check_options", args, list(options))
    return options


def check_rate_limits(options, budget=None, cap=None, capacities=()):
    _call("check_limits", budget, cap, list(options), module="rates",
          scanners=_call("positive_count", list(capacities), module="rates"))
    return options


def phase_options(options, mode="one_phase", phase="discovery"):
    if _call("check_mode", mode, module="twophase") == "one_phase":
        return list(options)
    return _call("phase_options", list(options), phase, module="twophase")


class FilterModule:
    def filters(self):
        return {
            "script_args": script_args,
            "script_arg_names": script_arg_names,
            "check_script_options": check_script_options,
            "check_rate_limits": check_rate_limits,
            "phase_options": phase_options,
        }
