"""The fleet-wide rate budget: how many packets per second each scanner's nmap may send (``--max-rate``).

Two limits, both optional (none: no ``--max-rate``, nmap's own pace):

* **budget** (``nmap_scan_rate_budget``): packets per second the whole fleet may send;
* **cap** (``nmap_scan_max_rate_per_scanner``): packets per second any one scanner may send.

Rules (also in docs/scan.md):

* Values are whole numbers >= 1 (an integer, or a string of digits as ``-e name=300`` gives). Zero, negative,
  fractional, not a number (``"fast"``, booleans, NaN) are refused before anything is sent, naming the
  variable, the value and the fix; so is ``--max-rate``/``--min-rate`` in the user's nmap options while a
  limit is set (the role passes ``--max-rate`` itself). nmap's long options also work with one dash and as
  unambiguous prefixes (``-max-rate``, ``--max-ra``): those are refused too.
* **The cap must not be below what the budget needs**: with N scanners that can scan when the run starts, the
  budget needs ``ceil(budget / N)`` per scanner, so a cap with ``cap * N < budget`` could never let the fleet
  use its budget, even with every scanner alive and equal capacities: refused (raise the cap or lower the
  budget). A cap that only lowers the share of a heavy scanner is allowed: the plan then says the fleet sends
  less than the budget.
* **Split**: each round, the budget left after the *held* rates (below) is split over the scanners that get
  new work, by ``scanfleet_capacity``, with the largest-remainder method of :func:`scanfleet.shards.largest_remainder`
  (each gets the floor of its exact quota, the units left go to the largest remainders, ties to the name that
  sorts first): integer shares whose sum is exactly the budget left, never more. A share above the cap is
  lowered to the cap (minus what that scanner's held jobs already send); the surplus is not handed to the
  others (the shards follow capacity, and so do the rates).
* **A share below 1**: nmap cannot send less than 1 packet per second usefully and ``--max-rate 0`` is not a
  limit. Scanners are taken by capacity (largest first, then by name) while the smallest exact quota stays >= 1;
  the others *sit out the round* (they get no addresses; the plan says so). When not even one scanner can get
  1 packet per second: with resumed jobs running, the addresses left wait for the next round (:mod:`scanfleet.plan`);
  with none, planning stops with the fix.
* **Jobs**: a scanner may run several jobs at once (an IPv4 and an IPv6 shard): its share is split over its new
  jobs, 1 each first, the rest by address count (largest remainder), so their sum is its share.
* **Held rates** count against the budget before the split:
  - a *resumed* job (an attempt still assigned from an earlier run, attached to, not restarted) keeps the rate
    it was started with: a running nmap's rate cannot change;
  - a job *lost while it may still run* (its host stopped answering: outcome ``unreachable``; the job is
    detached, so its nmap may go on sending) keeps its rate held while its host is not available, because
    the fleet-wide budget must hold against every nmap that may be sending. The hold ends when the host is
    available again (a later playbook run that reaches it first ends its stale jobs, ``stale.yml``, before new
    jobs start), or, with a per-host timeout, ``timeout + kill_grace`` seconds after it was recorded lost: the
    host's own supervisor ends the job by then (it started before it was lost). Jobs that ended (finished,
    exited, stopped by PID, dead, missing) hold nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from fractions import Fraction
from numbers import Real
from typing import Any

from scanfleet import ScanfleetError
from scanfleet.shards import capacity_weights, largest_remainder

BUDGET_VAR = "nmap_scan_rate_budget"
CAP_VAR = "nmap_scan_max_rate_per_scanner"
OPTIONS_VAR = "nmap_scan_options/nmap_scan_options_extra"
# nmap parses long options with getopt_long_only: one or two dashes, unambiguous prefixes (max-ra, min-ra)
RATE_OPTION = re.compile(r"^--?(max|min)-ra(?:t|te)?(?:=.*)?$")
UNIT = "pkt/s"


def rate_value(name: str, raw: Any) -> int | None:
    """A limit as given (None or "" = no limit) -> a whole number >= 1, or a :class:`ScanfleetError` naming
    the variable, the value and the fix."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    fix = f"give {name} a whole number of packets per second >= 1 (e.g. 300), or leave it unset for no limit"
    if isinstance(raw, bool):
        raise ScanfleetError(f"{name}={raw!r} is a boolean, not a number of packets per second; {fix}")
    value: Any = raw
    if isinstance(raw, str):
        text = raw.strip()
        if not re.fullmatch(r"[+-]?\d+", text):
            raise ScanfleetError(f"{name}={raw!r} is not a number; {fix}")
        value = int(text)
    if not isinstance(value, Real):
        raise ScanfleetError(f"{name}={raw!r} is not a number; {fix}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ScanfleetError(f"{name}={raw!r} is not a finite number; {fix}")
    if value != int(value):
        raise ScanfleetError(f"{name}={raw!r} is not a whole number; {fix}")
    value = int(value)
    if value <= 0:
        what = "zero" if value == 0 else "negative"
        raise ScanfleetError(f"{name}={raw!r} is {what}: nmap would not send at all; {fix}")
    return value


@dataclasses.dataclass(frozen=True)
class Limits:
    """The checked limits of a run (see the module docstring); ``timeout``/``kill_grace`` are the per-host
    timeout and grace (seconds), which bound how long a lost job may still run (0: no bound)."""

    budget: int | None = None
    cap: int | None = None
    timeout: float = 0
    kill_grace: float = 0

    @property
    def active(self) -> bool:
        return self.budget is not None or self.cap is not None


def check_limits(budget: Any = None, cap: Any = None, options: Sequence[str] = (), *, scanners: int | None = None,
                 timeout: float = 0, kill_grace: float = 0) -> Limits:
    """Check the limits before anything is sent (see the module docstring); ``scanners``: how many scanners
    can scan when the run starts (for the cap rule; None: not checked)."""
    limits = Limits(rate_value(BUDGET_VAR, budget), rate_value(CAP_VAR, cap), float(timeout or 0),
                    float(kill_grace or 0))
    if not limits.active:
        return limits
    clash = [str(o) for o in options if RATE_OPTION.match(str(o))]
    if clash:
        given = " and ".join(f"{v}={raw}" for v, raw in ((BUDGET_VAR, limits.budget), (CAP_VAR, limits.cap))
                             if raw is not None)
        raise ScanfleetError(
            f"{OPTIONS_VAR} contain {', '.join(clash)} while {given} is set: the role gives each scanner's nmap "
            f"its --max-rate from the budget; remove {', '.join(clash)} from the options, or unset {BUDGET_VAR} "
            f"and {CAP_VAR} to pace nmap yourself")
    budget, cap = limits.budget, limits.cap
    if budget is not None and cap is not None and scanners and cap * scanners < budget:
        raise ScanfleetError(
            f"{CAP_VAR}={cap} is below what {BUDGET_VAR}={budget} needs: {scanners} scanner(s) at {cap} {UNIT} "
            f"each send at most {cap * scanners} {UNIT}, so the budget could never be used; raise {CAP_VAR} to "
            f"at least {-(-budget // scanners)}, or lower {BUDGET_VAR} to {cap * scanners} or less")
    return limits


def positive_count(capacities: Iterable[Any]) -> int:
    """How many of the scanners' capacities are positive numbers (the N of the cap rule); a capacity that is not
    a number is left to the sharding, which names it."""
    count = 0
    for raw in capacities:
        with contextlib.suppress(TypeError, ValueError):
            count += not isinstance(raw, bool) and float(raw) > 0
    return count


# --------------------------------------------------------------------------------------------------
# Held rates


@dataclasses.dataclass(frozen=True)
class Hold:
    """A rate that counts against the budget before the split: a job that runs (or may) with its own rate."""

    attempt: str
    host: str
    rate: int
    why: str  # "resumed" or "lost, may still run"


def held(attempts: Iterable[Any], *, resumed: Iterable[Any], available: Iterable[str], now: float,
         limits: Limits) -> list[Hold]:
    """The held rates of a round (see the module docstring). ``attempts``: every attempt of the run (objects
    with id, host, status, outcome, recorded, max_rate); ``resumed``: those handed again to their host."""
    available = set(available)
    out = [Hold(a.id, a.host, int(a.max_rate), "resumed") for a in resumed if a.max_rate]
    for a in attempts:
        if a.status != "lost" or a.outcome != "unreachable" or not a.max_rate or a.host in available:
            continue
        if limits.timeout > 0 and a.recorded is not None and now >= a.recorded + limits.timeout + limits.kill_grace:
            continue  # its host's supervisor has ended it by now
        out.append(Hold(a.id, a.host, int(a.max_rate), "lost, may still run"))
    return out


def _by_host(holds: Iterable[Hold]) -> dict[str, int]:
    out: dict[str, int] = {}
    for h in holds:
        out[h.host] = out.get(h.host, 0) + h.rate
    return out


# --------------------------------------------------------------------------------------------------
# Who may get work, and the split


def _room(limits: Limits, host: str, holds: Sequence[Hold]) -> int | None:
    """What the cap leaves for new jobs on ``host`` (None: no cap)."""
    if limits.cap is None:
        return None
    return limits.cap - _by_host(holds).get(host, 0)


def left_over(limits: Limits, holds: Sequence[Hold]) -> int | None:
    """The budget left for new jobs after the held rates (None: no budget)."""
    if limits.budget is None:
        return None
    return limits.budget - sum(h.rate for h in holds)


def eligible(limits: Limits, weights: Mapping[str, Any], holds: Sequence[Hold]) -> tuple[list[str], dict[str, str]]:
    """The hosts (of ``weights``, positive weights only) that may get new work this round, and the others with
    why: a cap already used up by the host's held jobs, or an exact quota of the budget left below 1
    (hosts taken by capacity, largest first, then by name, while the newest one's quota stays >= 1)."""
    exact = capacity_weights(weights)
    hosts = sorted(h for h, w in exact.items() if w > 0)
    if not limits.active:
        return hosts, {}
    out: dict[str, str] = {}
    for h in hosts:
        room = _room(limits, h, holds)
        if room is not None and room < 1:
            out[h] = (f"its resumed jobs already send {limits.cap} {UNIT}, the cap ({CAP_VAR}={limits.cap})")
    hosts = [h for h in hosts if h not in out]
    budget = left_over(limits, holds)
    if budget is None:
        return hosts, out
    chosen: list[str] = []
    total = Fraction(0)
    for h in sorted(hosts, key=lambda n: (-exact[n], n)):
        w = exact[h]
        if budget * w / (total + w) < 1:
            break
        chosen.append(h)
        total += w
    for h in hosts:
        if h not in chosen:
            out[h] = (f"its share of the {max(budget, 0)} {UNIT} left of {BUDGET_VAR}={limits.budget} would be "
                      f"below 1 {UNIT}")
    return sorted(chosen), out


def split(limits: Limits, weights: Mapping[str, Any], holds: Sequence[Hold]) -> tuple[dict[str, int], list[str]]:
    """Each host of ``weights`` (the hosts that get new work; each passed :func:`eligible`) -> its rate for
    new jobs, and the hosts lowered to the cap. No limit -> empty dict."""
    if not limits.active or not weights:
        return {}, []
    budget = left_over(limits, holds)
    shares = (largest_remainder(budget, weights) if budget is not None
              else {h: limits.cap for h in weights})  # type: ignore[misc]
    lowered = []
    for h in sorted(shares):
        room = _room(limits, h, holds)
        if room is not None and shares[h] > room:
            if budget is not None:
                lowered.append(h)
            shares[h] = room
    return shares, lowered


def per_job(host: str, share: int, sizes: Mapping[str, int]) -> dict[str, int]:
    """Split ``share`` over a host's new jobs (attempt id -> address count): 1 each, the rest by size."""
    if not sizes:
        return {}
    if share < len(sizes):
        raise ScanfleetError(
            f"{host} runs {len(sizes)} jobs at once this round (one per address family) but its share of the rate "
            f"is {share} {UNIT}: each nmap needs at least 1; raise {BUDGET_VAR} (or {CAP_VAR})")
    rest = largest_remainder(share - len(sizes), {a: max(int(s), 0) for a, s in sizes.items()}) \
        if any(int(s) > 0 for s in sizes.values()) else dict.fromkeys(sizes, 0)
    return {a: 1 + rest[a] for a in sizes}


# --------------------------------------------------------------------------------------------------
# Plan lines


def summary(limits: Limits, rates: Mapping[str, int], holds: Sequence[Hold], lowered: Sequence[str],
            out: Mapping[str, str], round_no: int, unlimited: Sequence[str] = ()) -> list[str]:
    """The plan's lines about the rates: the budget, each scanner's rate, held rates, lowered shares, hosts that
    sit out, and resumed attempts planned before a limit was set (``unlimited``)."""
    if not limits.active:
        return []
    total = sum(rates.values())
    per = ", ".join(f"{h} {r}" for h, r in sorted(rates.items())) or "no scanner sends"
    lost_held = [h for h in holds if h.why != "resumed"]
    sending = total + sum(h.rate for h in lost_held)
    if limits.budget is not None:
        head = f"rate budget {limits.budget} {UNIT} ({BUDGET_VAR}), round {round_no}: {per} {UNIT}"
        if limits.cap is not None:
            head += f"; cap {limits.cap} {UNIT} per scanner"
    else:
        head = f"rate cap {limits.cap} {UNIT} per scanner ({CAP_VAR}), no fleet budget, round {round_no}: {per} {UNIT}"
    lines = [head]
    for h in lost_held:
        lines.append(f"{h.host}: {h.rate} {UNIT} held by attempt {h.attempt} (lost, its nmap may still run): "
                     "counted against the budget")
    for h in lowered:
        lines.append(f"{h}: its share is lowered to the cap {CAP_VAR}={limits.cap} {UNIT}")
    if limits.budget is not None and sending < limits.budget:
        why = []
        if lowered:
            why.append("shares lowered to the cap")
        if out:
            why.append("scanners sitting out")
        lines.append(f"the fleet sends at most {sending} {UNIT}, less than the budget {limits.budget} {UNIT}"
                     + (f" ({', '.join(why)})" if why else ""))
    for h, why in sorted(out.items()):
        lines.append(f"round {round_no}: {h} sits out (no addresses): {why}")
    if unlimited:
        lines.append(f"resumed without --max-rate (planned before a rate limit was set; a running nmap keeps its "
                     f"pace): {', '.join(unlimited)}; the limits apply to the new jobs only. To hold the budget "
                     "exactly, let these end first or scan under a new nmap_scan_run_id")
    return lines


__all__ = ["Hold", "Limits", "check_limits", "eligible", "held", "left_over", "per_job", "positive_count",
           "rate_value", "split", "summary"]
