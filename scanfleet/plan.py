"""Planning a run: targets as the playbook gives them, and one round's shards over the available hosts.

See :mod:`scanfleet.state` for the rules (resume, reassignment). :func:`plan_run` is the one planner: the
``scan_plan`` module and ``scanfleet run plan`` call it; it writes ``RESULTS/RUN_ID/state.json`` and the
shards' nmap ``-iL`` files ``RESULTS/RUN_ID/shards/NNN-HOST.targets``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from scanfleet import ScanfleetError, rates
from scanfleet.collect import coverage, covered
from scanfleet.intervals import FAMILIES, IPV6, IntervalSet, render_lines
from scanfleet.shards import shard as _shard
from scanfleet.state import (
    Attempt,
    RunState,
    counted,
    derived_run_id,
    open_run,
    private_dir,
    run_dir,
    run_fingerprints,
    save_state,
)
from scanfleet.targets import TargetPlan, parse_scope, parse_targets, parse_targets_file, plan_targets, system_resolver


@dataclasses.dataclass
class RoundPlan:
    """What :func:`plan_round` decided."""

    assignments: dict[str, list[Attempt]]  # available host -> its attempts of this round (maybe none)
    new: list[Attempt]
    reattached: list[Attempt]
    lost: list[Attempt]
    todo: IntervalSet  # what was left to assign before this round's new attempts
    notes: list[str]
    rates: dict[str, int] = dataclasses.field(default_factory=dict)  # host -> --max-rate of its jobs, summed
    rate_lines: list[str] = dataclasses.field(default_factory=list)  # the rates, for people


def _hosts_text(hosts: Iterable[str]) -> str:
    names = sorted(hosts)
    return ", ".join(names) if names else "none"


def plan_round(state: RunState, *, weights: Mapping[str, Any], available: Iterable[str],
               unavailable: Mapping[str, str] | None = None, session: str, round_no: int, now: float,
               mode: str = "contiguous", seed: int = 0, style: str = "auto", block_prefix: int | None = None,
               block_prefix6: int | None = None, limits: rates.Limits | None = None) -> RoundPlan:
    """Decide what each available host scans in this round; updates ``state`` (see the module docstring).

    ``weights``: every scanner host of the play -> capacity; ``available``: the hosts that may get work
    now; ``unavailable``: host -> why not (for the notes); ``limits``: the rate budget and cap, each new
    attempt gets its ``max_rate`` (see :mod:`scanfleet.rates`).
    """
    limits = limits or rates.Limits()
    available = [h for h in sorted(set(available)) if h in weights]
    unavailable = dict(unavailable or {})
    notes: list[str] = []
    reattached: list[Attempt] = []
    lost: list[Attempt] = []
    for attempt in state.attempts:
        if attempt.status != "assigned":
            continue
        if attempt.host in available:
            reattached.append(attempt)
        else:
            attempt.status = "lost"
            attempt.outcome = attempt.outcome or "unreachable"
            why = unavailable.get(attempt.host, "not available")
            attempt.detail = f"{attempt.host} {why} before its result was fetched"
            attempt.recorded = now
            lost.append(attempt)
            text = (f"attempt {attempt.id} ({counted(attempt.size, 'address')}) is lost: {attempt.detail}; "
                    "its addresses are planned again")
            notes.append(text)
            state.event(session, text, now)
    in_flight = [a.addresses() for a in reattached]
    todo = state.targets() - covered(state)
    for addresses in in_flight:
        todo = todo - addresses
    assignments: dict[str, list[Attempt]] = {h: [a for a in reattached if a.host == h] for h in available}
    new: list[Attempt] = []
    holds = rates.held(state.attempts, resumed=reattached, available=available, now=now, limits=limits)
    sitting_out: dict[str, str] = {}
    shares: dict[str, int] = {}
    lowered: list[str] = []
    if todo:
        usable = {h: weights[h] for h in available}
        if not usable or not any(float(w) > 0 for w in usable.values()):
            why = "; ".join(f"{h}: {unavailable.get(h, 'capacity 0' if h in usable else 'not available')}"
                            for h in sorted(weights))
            raise ScanfleetError(
                f"run {state.run_id}: {counted(todo.size, 'address')} left to scan ({todo.describe()}) but no scanner "
                f"host is available ({why}); bring a scanner back and re-run the same command to resume")
        chosen, sitting_out = rates.eligible(limits, usable, holds)
        held_text = ", ".join(f"{h.attempt} on {h.host} {h.rate} ({h.why})" for h in holds) or "nothing"
        if not chosen and not reattached:
            raise ScanfleetError(
                f"run {state.run_id}: {counted(todo.size, 'address')} left to scan but the rate budget leaves no "
                f"scanner 1 {rates.UNIT}: {'; '.join(f'{h}: {why}' for h, why in sorted(sitting_out.items()))} "
                f"(held: {held_text}); raise {rates.BUDGET_VAR} (or {rates.CAP_VAR}), or re-run once the held "
                "jobs have ended")
        if not chosen:  # the resumed jobs use the budget: what is left waits until they end (the next round)
            notes.append(f"round {round_no}: {counted(todo.size, 'address')} wait for the next round: the rate "
                         f"budget is held by jobs that run or may run ({held_text})")
        shards = _shard(todo, {h: usable[h] for h in chosen}, mode=mode, seed=seed, block_prefix=block_prefix,
                        block_prefix6=block_prefix6) if chosen else {}
        for host in sorted(shards):
            for family in FAMILIES:
                part = IntervalSet.from_family(family, shards[host].intervals(family))
                if not part:
                    continue
                state.seq += 1
                attempt = Attempt(id=f"{state.seq:03d}-{host}", host=host, family=family,
                                  lines=render_lines(part, style), size=part.size, session=session,
                                  round=round_no, created=now)
                state.attempts.append(attempt)
                assignments[host].append(attempt)
                new.append(attempt)
        shares, lowered = rates.split(limits, {h: usable[h] for h in sorted({a.host for a in new})}, holds)
        for host, share in shares.items():
            jobs = {a.id: a for a in new if a.host == host}
            for attempt_id, rate in rates.per_job(host, share, {i: a.size for i, a in jobs.items()}).items():
                jobs[attempt_id].max_rate = rate
        skipped = sorted(h for h in available if not assignments[h] and h not in sitting_out)
        shared = sorted({a.host for a in new})
        if unavailable:
            away = ", ".join(f"{h} ({why})" for h, why in sorted(unavailable.items()) if h in weights)
            notes.append(f"round {round_no}: {counted(todo.size, 'address')} shared between {_hosts_text(shared)}; "
                         f"not used: {away}")
        if skipped:
            notes.append(f"round {round_no}: no addresses for {_hosts_text(skipped)} (empty shard): skipped")
    if reattached:
        text = (f"round {round_no}: resuming {len(reattached)} attempt(s) still assigned from an earlier run: "
                + ", ".join(a.id for a in reattached))
        notes.append(text)
        state.event(session, text, now)
    state.updated = now
    host_rates = {h: sum(a.max_rate or 0 for a in attempts) for h, attempts in assignments.items()
                  if any(a.max_rate for a in attempts)}
    return RoundPlan(assignments=assignments, new=new, reattached=reattached, lost=lost, todo=todo,
                     notes=notes, rates=host_rates,
                     rate_lines=rates.summary(limits, host_rates, holds, lowered, sitting_out, round_no,
                                              unlimited=[a.id for a in reattached if not a.max_rate]))


def _attempt_view(attempt: Attempt) -> dict[str, Any]:
    return {"id": attempt.id, "host": attempt.host, "family": attempt.family, "ipv6": attempt.family == IPV6,
            "lines": attempt.lines, "size": attempt.size, "status": attempt.status, "round": attempt.round,
            "max_rate": attempt.max_rate}


def build_plan(*, targets: Sequence[str], targets_files: Sequence[str] = (), exclude: Sequence[str] = (),
               exclude_files: Sequence[str] = (), scope: Sequence[str], scope_extra: Sequence[str] = (),
               scanner_addresses: Sequence[str] = (), include_scanners: bool = False,
               resolver: Any = system_resolver) -> TargetPlan:
    """Targets, exclusions and scope as the playbook gives them -> :class:`scanfleet.targets.TargetPlan`."""
    parsed = parse_targets(list(targets), resolver=resolver, origin="nmap_scan_targets")
    for path in targets_files:
        parsed += parse_targets_file(path, resolver=resolver)
    excluded = parse_targets(list(exclude), resolver=resolver, origin="nmap_scan_exclude")
    for path in exclude_files:
        excluded += parse_targets_file(path, resolver=resolver)
    if not scope:
        raise ScanfleetError("scanfleet_scope is empty: declare the networks you may scan in the inventory "
                             "(scanfleet_scope), nothing is scanned without it")
    scope_set = parse_scope(list(scope), origin="scanfleet_scope")
    if scope_extra:
        scope_set = scope_set | parse_scope(list(scope_extra), origin="scanfleet_scope_extra")
    scanners: list[str] = []
    for text in scanner_addresses:
        # a scanner's address that does not resolve cannot be among the (resolved) targets either
        with contextlib.suppress(ScanfleetError):
            for target in parse_targets(str(text), resolver=resolver, origin="scanner address"):
                scanners.extend(target.resolved or [target.text])
    return plan_targets(parsed, excluded, scope_set, scanner_addresses=scanners,
                        include_scanners=include_scanners, scope_label="scanfleet_scope",
                        scope_fix="widen the scope explicitly with scanfleet_scope_extra, or remove the target")


def plan_run(*, results: str | Path, run_id: str, plan: TargetPlan, options: Sequence[str],
             weights: Mapping[str, Any], available: Sequence[str], unavailable: Mapping[str, str],
             session: str, round_no: int, mode: str = "contiguous", seed: int = 0, style: str = "auto",
             block_prefix: int | None = None, block_prefix6: int | None = None,
             rate_budget: Any = None, rate_cap: Any = None, timeout: float = 0, kill_grace: float = 0,
             write: bool = True, now: float | None = None) -> dict[str, Any]:
    """Open (or resume) the run and plan one round; write state.json and the shards' -iL files.

    The shards' files are ``RESULTS/RUN_ID/shards/NNN-HOST.targets`` (nmap ``-iL``, lines in STYLE, see
    :func:`scanfleet.intervals.render_lines`); BLOCK_PREFIX/BLOCK_PREFIX6 as in :func:`scanfleet.shards.shard`.
    RATE_BUDGET/RATE_CAP (packets per second, None: no limit) are checked against OPTIONS and the scanners
    before anything is planned, and give each new attempt its ``max_rate`` (:mod:`scanfleet.rates`; TIMEOUT
    and KILL_GRACE, the per-host timeout, bound how long a lost job may still send).
    """
    now = time.time() if now is None else now
    limits = rates.check_limits(rate_budget, rate_cap, options, timeout=timeout, kill_grace=kill_grace,
                                scanners=rates.positive_count(weights.values()))
    results = Path(results)
    full, _ = run_fingerprints(plan.addresses, options)
    run_id = run_id or derived_run_id(full)
    state, resumed = open_run(results, run_id, plan.addresses, options, now)
    current = next((s for s in state.sessions if s.get("id") == session), None)
    new_session = current is None
    if current is None:
        current = {"id": session, "started": now, "hosts": sorted(weights), "available": sorted(available),
                   "unavailable": {}}
        state.sessions.append(current)
    # hosts that became unavailable since the last round of this playbook run (warned about once)
    newly = {h: why for h, why in sorted(unavailable.items()) if h not in current["unavailable"]}
    for host, why in newly.items():
        state.event(session, f"{host} {why}: gets no more of the targets in this run", now)
    current["unavailable"] = {**current["unavailable"], **newly}
    rp = plan_round(state, weights=weights, available=available, unavailable=unavailable, session=session,
                    round_no=round_no, now=now, mode=mode, seed=seed, style=style, block_prefix=block_prefix,
                    block_prefix6=block_prefix6, limits=limits)
    directory = run_dir(results, run_id)
    # a playbook run (session) that takes over attempts an earlier one left assigned is recorded, with the event,
    # though nothing new is planned; the same session planning again changes nothing
    changed = bool(rp.new or rp.lost or (rp.reattached and new_session)) or not resumed
    if write and changed:
        if not results.exists():
            private_dir(results)
        private_dir(directory)
        shards = directory / "shards"
        private_dir(shards)
        for attempt in rp.new:
            path = shards / f"{attempt.id}.targets"
            path.write_text("".join(f"{line}\n" for line in attempt.lines), encoding="utf-8")
            os.chmod(path, 0o600)
        save_state(directory, state)
    cov = coverage(state)
    lines = [f"run {run_id} ({'resumed' if resumed else 'new'}; fingerprint {state.fingerprint[:12]}): "
             f"{counted(state.total, 'target address')} ({plan.addresses.describe()}), "
             f"{cov.covered.size} scanned already"]
    if plan.scanner_addresses:
        lines.append(f"scanners' own addresses left out: {plan.scanner_addresses.describe()}")
    for host in sorted(rp.assignments):
        attempts = rp.assignments[host]
        if not attempts:
            lines.append(f"{host}: nothing to scan this round")
        for attempt in attempts:
            how = "resumed" if attempt in rp.reattached else "new"
            rate = f", --max-rate {attempt.max_rate}" if attempt.max_rate else ""
            lines.append(f"{host}: {attempt.id} ({how}) {counted(attempt.size, 'address')}{rate}: "
                         f"{attempt.addresses().describe()}")
    lines.extend(rp.rate_lines)
    lines.extend(rp.notes)
    return {
        "changed": changed,
        "lines": lines,
        "run_id": run_id,
        "dir": str(directory),
        "resumed": resumed,
        "fingerprint": state.fingerprint,
        "total": state.total,
        "covered": cov.covered.size,
        "todo": rp.todo.size,
        "done": not rp.todo and not rp.reattached,
        "assignments": {h: [_attempt_view(a) for a in attempts] for h, attempts in rp.assignments.items()},
        "new": [a.id for a in rp.new],
        "reattached": [a.id for a in rp.reattached],
        "lost": [a.id for a in rp.lost],
        "notes": rp.notes,
        "rates": rp.rates,
        "rate_budget": limits.budget,
        "rate_cap": limits.cap,
        "rate_total": sum(rp.rates.values()),
        "newly_unavailable": newly,
        "scanners_excluded": plan.scanner_addresses.describe(),
        "resolved": plan.resolved(),
    }
