"""Two-phase runs of the ``nmap_scan`` role (``nmap_scan_mode: two_phase``): the nmap options of each phase, the
pairs of a finished phase 1 collected into the run's directory, and the run's places.

A two-phase run is one run directory ``RESULTS/RUN_ID``: phase 1 is the run's ordinary address-sharded rounds
(``state.json``, ``shards/``, ``HOST/ATTEMPT/``), ``pairs.json`` the collection of its open pairs, and
``phase2/`` the phase-2 state (``phase2.json``, ``jobs/``, ``HOST/JOB_ID/``) of :mod:`scanfleet.pairs`.

The options of each phase are derived from the user's options (``nmap_scan_options`` + ``_extra``, with ``-p``
and ``-T`` the role adds), by these rules (also in docs/two_phase.md):

* **Phase 1, discovery and port sweep**: the user's options without what belongs to the service scan:
  ``-sV``, ``-sC``, ``-A``, ``-O``, ``--traceroute``, the ``--version-*`` and ``--osscan-*`` options, and the
  ``--script*`` options with their values. Everything else stays (scan type ``-sS``/``-sT``/``-sU``, ``-p``,
  ``-T``, ``-v``, host discovery options, ``--privileged``). No script arguments are passed.
* **Phase 2, service scan**: the user's options without ``-p`` (each job has its own port list) and without
  host discovery (``-sn``, ``-P*``): ``-Pn`` is added, since every host of a job was found up in phase 1.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from scanfleet import ScanfleetError, pairs
from scanfleet.files import atomic_write
from scanfleet.intervals import IntervalSet
from scanfleet.state import run_dir
from scanfleet.targets import parse_scope

MODES = ("one_phase", "two_phase")
PHASES = ("discovery", "service")
PAIRS_FILE = "pairs.json"
PHASE2_DIR = "phase2"

# options of the service scan, left out of phase 1; those in WITH_VALUE take the next word as their value
_SERVICE_ONLY = ("-sV", "-sC", "-A", "-O", "--traceroute", "--version-light", "--version-all", "--version-trace",
                 "--osscan-limit", "--osscan-guess", "--fuzzy")
_SERVICE_PREFIXES = ("--version-", "--script", "--osscan-", "--max-os-tries")
_WITH_VALUE = ("--version-intensity", "--script", "--script-timeout", "--script-args", "--script-args-file",
               "--max-os-tries")


def check_mode(mode: Any) -> str:
    """MODE (``nmap_scan_mode``) when it is one of :data:`MODES`, else a clear error with the fix."""
    if mode not in MODES:
        raise ScanfleetError(f"nmap_scan_mode={mode!r} is not a scan mode; use one_phase (the default: one nmap "
                             "-sV pass per address shard) or two_phase (a discovery sweep, then the service scan "
                             "sharded by open (host, port) pairs)")
    return str(mode)


def _drop(options: Sequence[str], single: Sequence[str], prefixes: Sequence[str],
          with_value: Sequence[str]) -> list[str]:
    out: list[str] = []
    skip = False
    for option in options:
        if skip:
            skip = False
            continue
        name = option.split("=", 1)[0]
        if name in with_value and "=" not in option:
            skip = True
            continue
        if option in single or name in with_value or name.startswith(tuple(prefixes)):
            continue
        out.append(option)
    return out


def phase_options(options: Sequence[str], phase: str) -> list[str]:
    """The nmap options of PHASE (``discovery``: phase 1, ``service``: phase 2) derived from the user's
    OPTIONS by the rules in the module docstring."""
    options = [str(o) for o in options]
    if phase == "discovery":
        return _drop(options, _SERVICE_ONLY, _SERVICE_PREFIXES, _WITH_VALUE)
    if phase == "service":
        # -p and its value: each job has its port list; host discovery (-sn, -sP, -P*): the hosts are known up
        return [*_drop(options, ("-sn", "-sP"), ("-P",), ("-p",)), "-Pn"]
    raise ScanfleetError(f"nmap options of phase {phase!r}: no such phase; use one of {', '.join(PHASES)}")


def pairs_path(results: str | Path, run_id: str) -> Path:
    return run_dir(Path(results), run_id) / PAIRS_FILE


def phase2_dir(results: str | Path, run_id: str) -> Path:
    return run_dir(Path(results), run_id) / PHASE2_DIR


def collect_run(*, results: str | Path, run_id: str, scope: IntervalSet, write: bool = True) -> dict[str, Any]:
    """Collect the open pairs of the run's finished phase 1 into ``pairs.json`` (once: a run that has it keeps
    it, so a resumed phase 2 is planned with the same pairs). Returns ``changed``, ``path``, the accounting
    and its lines; a phase 1 with pending addresses is refused with the fix."""
    path = pairs_path(results, run_id)
    if path.is_file():
        data = json.loads(path.read_text(encoding="utf-8"))
        collection = None
        accounting = data.get("accounting", {})
    else:
        targets, shards = pairs.shards_from_run(path.parent)
        collection = pairs.collect(shards, targets, scope)
        accounting = collection.accounting()
        if accounting["pending"]:
            raise ScanfleetError(
                f"run {run_id}: phase 1 is not complete ({'; '.join(collection.lines()[1:])}); re-run the same "
                "command to finish phase 1, then phase 2 starts")
    changed = collection is not None and write
    if changed:
        with atomic_write(path, mode=0o600) as f:
            json.dump(collection.to_dict(), f, indent=1, sort_keys=True)  # type: ignore[union-attr]
            f.write("\n")
    return {"changed": changed, "path": str(path), "accounting": accounting,
            "written": path.is_file(), "lines": [accounting_line(accounting)]}


def run_scope(scope: Sequence[str], scope_extra: Sequence[str] = ()) -> IntervalSet:
    """The run's scope (``scanfleet_scope`` and ``scanfleet_scope_extra``): every pair is checked against it."""
    if not scope:
        raise ScanfleetError("scanfleet_scope is empty: declare the networks you may scan in the inventory "
                             "(scanfleet_scope), nothing is scanned without it")
    out = parse_scope(list(scope), origin="scanfleet_scope")
    return out | parse_scope(list(scope_extra), origin="scanfleet_scope_extra") if scope_extra else out


def plan_round(*, results: str | Path, run_id: str, scope: IntervalSet, weights: Mapping[str, Any],
               available: Sequence[str], unavailable: Mapping[str, str], options: Sequence[str] = (),
               rate_budget: Any = None, rate_cap: Any = None, timeout: float = 0, kill_grace: float = 0,
               write: bool = True, now: float | None = None) -> dict[str, Any]:
    """One phase-2 round of the run: collect its pairs (:func:`collect_run`, once), then plan
    (:func:`scanfleet.pairs.plan_phase2`) in ``RUN/phase2``. With WRITE false (check mode) and no pairs file
    yet, the pairs are collected in memory and nothing is written."""
    collected = collect_run(results=results, run_id=run_id, scope=scope, write=write)
    source = Path(collected["path"])
    with contextlib.ExitStack() as stack:
        if not collected["written"]:  # check mode, first time: plan from a scratch copy of the collection
            scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="scanfleet-check-")))
            source = scratch / PAIRS_FILE
            targets, shards = pairs.shards_from_run(pairs_path(results, run_id).parent)
            source.write_text(json.dumps(pairs.collect(shards, targets, scope).to_dict()), encoding="utf-8")
        plan = pairs.plan_phase2(pairs_file=source, directory=phase2_dir(results, run_id), weights=weights,
                                 available=available, unavailable=unavailable, scope=scope, options=options,
                                 rate_budget=rate_budget, rate_cap=rate_cap, timeout=timeout,
                                 kill_grace=kill_grace, write=write, now=now)
    progress = plan["progress"]
    return {**plan, "changed": plan["changed"] or collected["changed"],
            "lines": [*collected["lines"], *plan["lines"]], "accounting": collected["accounting"],
            "total": progress["pairs"], "covered": progress["done"]}


def record_round(*, results: str | Path, run_id: str, outcomes: Sequence[Mapping[str, Any]], write: bool = True,
                 now: float | None = None) -> dict[str, Any]:
    """Record a phase-2 round of the run (:func:`scanfleet.pairs.record_phase2` in ``RUN/phase2``); adds
    ``missing`` (pairs left) and ``pending`` (jobs still assigned), as the one-phase record returns them."""
    result = pairs.record_phase2(directory=phase2_dir(results, run_id), outcomes=outcomes, write=write, now=now)
    progress = result["progress"]
    return {**result, "missing": progress["pairs"] - progress["done"] - progress["assigned"],
            "pending": sorted(j for j, status in result["statuses"].items() if status == "assigned")}


def accounting_line(accounting: dict[str, Any]) -> str:
    """Every target address once: up with open ports, up with none, down (from the collection)."""
    return (f"{accounting.get('targets', 0)} target addresses: {accounting.get('up_open', 0)} up with open ports, "
            f"{accounting.get('up_none', 0)} up with none, {accounting.get('down', 0)} down"
            f"{', ' + str(accounting['pending']) + ' pending' if accounting.get('pending') else ''}; "
            f"{accounting.get('pairs', 0)} open (host, port) pairs for the service scan")


__all__ = ["MODES", "PAIRS_FILE", "PHASE2_DIR", "PHASES", "accounting_line", "check_mode", "collect_run",
           "pairs_path", "phase2_dir", "phase_options", "plan_round", "record_round", "run_scope"]
