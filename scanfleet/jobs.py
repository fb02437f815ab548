"""Jobs on the scanner hosts, seen from the controller: outcome, progress, stalls, and the wait's result.

The words of a job's life (state, reason, outcome, status, action) are defined once, in
:data:`scanfleet.job_model.WORDS` (``scanfleet/job_model.py`` is a symlink to the collection's
``plugins/module_utils/job_model.py``, the code that runs on the hosts). This module holds what only the
controller does with them: read nmap's progress from its ``--stats-every`` lines, tell a stalled job, print
the wait's lines, and shape the wait's result (outcomes, fetch list, whether the host is lost). The action
plugin scanfleet.fleet.scan_wait calls it; :mod:`scanfleet.collect` records the outcomes.
"""

from __future__ import annotations

import contextvars
import dataclasses
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from scanfleet.job_model import HOST_LOST_OUTCOMES, OUTCOMES, STATUSES, job_outcome, outcome_line
from scanfleet.progress import job_done

# --------------------------------------------------------------------------------------------------
# Progress


@dataclasses.dataclass(frozen=True)
class Progress:
    """nmap's own progress figures, from its ``--stats-every`` lines."""

    elapsed: int | None = None  # seconds since nmap started
    hosts_completed: int | None = None
    hosts_up: int | None = None
    undergoing: int | None = None
    phase: str | None = None  # e.g. "Service scan", "SYN Stealth Scan"
    percent: float | None = None  # of the current phase
    etc: str | None = None  # estimated time of completion of the phase (HH:MM)
    remaining: int | None = None  # seconds left in the phase


_STATS = re.compile(r"^Stats: (\d+):(\d\d):(\d\d) elapsed; (\d+) hosts? completed \((\d+) up\), "
                    r"(\d+) undergoing (.+?)\s*$", re.M)
_TIMING = re.compile(r"^(.+?) Timing: About (\d+(?:\.\d+)?)% done"
                     r"(?:; ETC: (\S+) \((\d+):(\d\d):(\d\d) remaining\))?\s*$", re.M)


def parse_stats(text: str) -> Progress | None:
    """The latest progress in nmap's stdout ``text`` (``Stats:`` and ``... Timing: About N% done`` lines,
    printed by ``--stats-every``), or None when there is none yet. A Timing line older than the latest
    Stats line belongs to an earlier phase and is not used."""
    stats = list(_STATS.finditer(text))
    timing = list(_TIMING.finditer(text))
    last_stats = stats[-1] if stats else None
    last_timing = timing[-1] if timing else None
    if last_stats is None and last_timing is None:
        return None
    values: dict[str, Any] = {}
    if last_stats is not None:
        h, m, s, done, up, undergoing, phase = last_stats.groups()
        values.update(elapsed=int(h) * 3600 + int(m) * 60 + int(s), hosts_completed=int(done),
                      hosts_up=int(up), undergoing=int(undergoing), phase=phase)
    if last_timing is not None and (last_stats is None or last_timing.start() > last_stats.start()):
        phase, percent, etc, h, m, s = last_timing.groups()
        values.update(phase=phase, percent=float(percent), etc=etc)
        if h is not None:
            values["remaining"] = int(h) * 3600 + int(m) * 60 + int(s)
    return Progress(**values)


def progress_signature(status: Mapping[str, Any], progress: Progress | None) -> tuple[Any, ...]:
    """What must change for a running job to count as making progress: nmap's phase, its percentage,
    the hosts it completed, and the hosts written to its XML (the Stats line's elapsed time and the
    growing log do not count: a stuck nmap keeps printing them)."""
    if progress is None:
        return (None, None, None, status.get("hosts_done"))
    return (progress.phase, progress.percent, progress.hosts_completed, status.get("hosts_done"))


@dataclasses.dataclass
class StallWatch:
    """Tracks when a job last made progress (see :func:`progress_signature`)."""

    timeout: float
    signature: tuple[Any, ...] | None = None
    since: float | None = None

    def update(self, signature: tuple[Any, ...], now: float) -> float:
        """Feed the latest signature; return the seconds since the last change."""
        if self.since is None or signature != self.signature:
            self.signature, self.since = signature, now
        return now - self.since

    def stalled(self, now: float) -> bool:
        return self.timeout > 0 and self.since is not None and now - self.since > self.timeout


# --------------------------------------------------------------------------------------------------
# The wait's lines


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def format_progress(host: str, attempt_id: str, size: int, status: Mapping[str, Any],
                    progress: Progress | None, *, quiet_for: float = 0.0) -> str:
    """One progress line of a running job, from nmap's own figures."""
    head = f"{host} {attempt_id}:"
    if progress is None:
        text = f"{head} started, no nmap stats yet"
    else:
        phase = progress.phase or "scan"
        if progress.percent is not None:
            text = f"{head} {progress.percent:5.1f}% of {phase}"
            if progress.remaining is not None:
                text += f" (ETC {progress.etc}, {_clock(progress.remaining)} left)"
        else:
            text = f"{head} {phase}"
        if progress.hosts_completed is not None:
            text += (f"; {progress.hosts_completed}/{size} hosts done ({progress.hosts_up} up), "
                     f"{progress.undergoing} in progress")
        if progress.elapsed is not None:
            text += f"; {_clock(progress.elapsed)} elapsed"
    if quiet_for >= 60:
        text += f"; no progress for {_clock(quiet_for)}"
    return text


def format_outcome(host: str, attempt_id: str, outcome: str, status: Mapping[str, Any]) -> str:
    """The line of an ended job (its outcome's words: :data:`scanfleet.job_model.WORDS`)."""
    hosts = status.get("hosts_done")
    in_xml = f"; {hosts} host{'' if hosts == 1 else 's'} in its XML" if hosts is not None else ""
    detail = f" ({status['detail']})" if status.get("detail") else ""
    return f"{host} {attempt_id}: {outcome_line(outcome, status.get('rc'))}{detail}{in_xml}"


# --------------------------------------------------------------------------------------------------
# The wait's result


def attempt_outcome(attempt_id: str, outcome: str, status: Mapping[str, Any]) -> dict[str, Any]:
    """The wait's entry for an ended attempt, from its status on the host (scan_job): what
    :func:`scanfleet.collect.record_run` records, and the paths to fetch (:func:`fetch_list`)."""
    files = status.get("files") or {}
    return {
        "id": attempt_id,
        "outcome": outcome,
        "detail": status.get("detail"),
        "rc": status.get("rc"),
        "reason": status.get("reason"),
        "pid": status.get("pid"),
        "started": status.get("started"),
        "ended": status.get("ended"),
        "hosts_done": status.get("hosts_done"),
        "versiondb": status.get("versiondb"),
        "files": {name: info["sha256"] for name, info in files.items()},
        "paths": {name: info["path"] for name, info in files.items()},
    }


def unreachable_outcome(attempt_id: str, detail: str) -> dict[str, Any]:
    """The outcome of an attempt whose host stopped answering while it ran: nothing can be fetched from it
    (no files, no paths), so :func:`scanfleet.collect.record_attempt` marks it ``lost`` and its addresses are
    planned again."""
    return {"id": attempt_id, "outcome": "unreachable", "detail": detail, "files": {}, "paths": {}}


def fetch_list(outcomes: Iterable[Mapping[str, Any]]) -> list[dict[str, str]]:
    """What the role fetches from the host: one entry (attempt, name, src) per file of every outcome."""
    return [{"attempt": o["id"], "name": name, "src": path}
            for o in outcomes for name, path in sorted(o["paths"].items())]


def host_lost(outcomes: Iterable[Mapping[str, Any]]) -> bool:
    """Whether an outcome means the host gets no more work in this playbook run."""
    return any(o["outcome"] in HOST_LOST_OUTCOMES for o in outcomes)


# --------------------------------------------------------------------------------------------------
# Contact: a scanner is lost when nothing it sends arrives for lost_after seconds


class ContactWatch:
    """When a scanner last answered. It counts as lost when nothing it sent arrived for ``lost_after``
    seconds since its last answer (or since the watch began), whatever the transport does meanwhile:
    a call that hangs, a call that fails, answers that stop. ``clock`` gives seconds (monotonic)."""

    def __init__(self, lost_after: float, clock: Callable[[], float] = time.monotonic) -> None:
        if lost_after <= 0:
            raise ValueError(f"lost_after must be > 0, got {lost_after}")
        self.lost_after = float(lost_after)
        self.clock = clock
        self.last = clock()

    def answered(self) -> None:
        """Something the scanner sent arrived now."""
        self.last = self.clock()

    def silent_for(self) -> float:
        return self.clock() - self.last

    def remaining(self) -> float:
        """Seconds left before the scanner counts as lost (0 once it is)."""
        return max(0.0, self.lost_after - self.silent_for())

    def lost(self) -> bool:
        return self.silent_for() >= self.lost_after

    def detail(self) -> str:
        return f"no answer for {int(self.silent_for())} s"


@dataclasses.dataclass
class Answer:
    """What a bounded call gave: ``value`` (it answered), ``error`` (it failed without an answer), or
    neither, with ``lost`` set (nothing arrived before the watch said lost)."""

    value: Any = None
    error: BaseException | None = None
    lost: bool = False


class BoundedCaller:
    """Runs one remote call at a time in a daemon thread and waits for it no longer than the
    :class:`ContactWatch` allows. A call still outstanding is waited for again, never doubled (no second
    call on the same connection); once the watch says lost, the stuck thread is abandoned (a daemon thread
    does not keep the process from exiting). Exceptions of the ``transient`` types are a failed call without
    an answer; any other exception is re-raised (the host answered, with an error)."""

    def __init__(self, watch: ContactWatch, transient: tuple[type[BaseException], ...] = (),
                 slice_seconds: float = 0.5) -> None:
        self.watch = watch
        self.transient = transient
        self.slice = slice_seconds
        self._done: threading.Event | None = None
        self._box: dict[str, Any] = {}

    @property
    def busy(self) -> bool:
        return self._done is not None and not self._done.is_set()

    def call(self, fn: Callable[..., Any], *args: Any) -> Answer:
        if not self.busy:
            done, box = threading.Event(), {}
            context = contextvars.copy_context()  # the caller's context (Ansible keeps task state in it)

            def run() -> None:
                try:
                    box["value"] = context.run(fn, *args)
                except BaseException as exc:  # handed to the waiting thread
                    box["error"] = exc
                finally:
                    done.set()

            self._done, self._box = done, box
            threading.Thread(target=run, name="scanfleet-remote-call", daemon=True).start()
        done, box = self._done, self._box
        assert done is not None
        while not done.wait(min(self.slice, max(self.watch.remaining(), 0.01))):
            if self.watch.lost():
                return Answer(lost=True)
        self._done = None
        if "error" in box:
            if isinstance(box["error"], self.transient):
                return Answer(error=box["error"], lost=self.watch.lost())
            raise box["error"]
        self.watch.answered()
        return Answer(value=box["value"])


def wait_jobs(call: Callable[[str, list[str], dict[str, Any] | None], dict[str, dict[str, Any]]],
              attempts: list[Mapping[str, Any]], *, host: str, show: Callable[[str], None], poll: float = 10,
              stall_timeout: float = 600, timeout: float = 0, kill_grace: float = 10, quiet_every: float = 60,
              lost_after: float = 90, transient: tuple[type[BaseException], ...] = (),
              clock: Callable[[], float] = time.monotonic,
              sleep: Callable[[float], None] = time.sleep,
              progress: Callable[[dict[str, tuple[int, int, bool]]], Any] | None = None,
              ) -> tuple[list[dict[str, Any]], bool]:
    """The wait of scanfleet.fleet.scan_wait on one host: poll the jobs (``call("status", ids, None)``), show
    progress, end stalled or overdue jobs (``call("stopped", [id], {"reason": ..., "kill_grace": ...})``), until
    every attempt has an outcome. Every call is bounded (:class:`BoundedCaller`): when nothing answered for
    ``lost_after`` seconds, the pending attempts get the outcome ``unreachable`` ("no answer for N s") and the
    wait returns at once. After every poll, and at the end, ``progress`` gets each attempt's (shard size,
    addresses done, ended) (:func:`scanfleet.progress.job_done`; the fleet-wide line,
    :class:`scanfleet.progress.FleetBoard`). Returns (the outcomes in attempt order, whether a job was stopped)."""
    watch = ContactWatch(lost_after, clock)
    caller = BoundedCaller(watch, transient)
    sizes = {a["id"]: int(a.get("size", 0)) for a in attempts}
    watches = {a["id"]: StallWatch(stall_timeout) for a in attempts}
    last_line: dict[str, tuple[str, float]] = {}
    pending = {a["id"] for a in attempts}
    outcomes: dict[str, dict] = {}
    figures = {a["id"]: (sizes[a["id"]], 0, False) for a in attempts}
    changed = False
    start = clock()
    deadline = start + timeout + kill_grace + 3 * poll if timeout > 0 else None

    def lose(why: str) -> None:
        why = " ".join(why.split())[:200]  # one line: it goes into the summary and the events
        detail = watch.detail() + (f": {why}" if why else "")
        for attempt_id in sorted(pending):
            outcomes[attempt_id] = unreachable_outcome(attempt_id, detail)
            figures[attempt_id] = (sizes[attempt_id], 0, True)
            show(f"{host} {attempt_id}: the host is lost ({detail}); its share goes to the other scanners")
        pending.clear()

    while pending:
        answer = caller.call(call, "status", sorted(pending), None)
        if answer.lost:
            lose(str(answer.error or ""))
            break
        if answer.error is not None:
            show(f"{host}: no answer ({answer.error}); trying again in {poll} s")
            sleep(min(poll, watch.remaining()))
            continue
        statuses = answer.value
        now = clock()
        to_stop: dict[str, str] = {}
        for attempt_id in sorted(pending):
            status = statuses.get(attempt_id, {"state": "absent"})
            outcome = job_outcome(status)
            if outcome is not None:
                outcomes[attempt_id] = attempt_outcome(attempt_id, outcome, status)
                figures[attempt_id] = (sizes[attempt_id], job_done(sizes[attempt_id], outcome=outcome,
                                                                   hosts_done=status.get("hosts_done")), True)
                show(format_outcome(host, attempt_id, outcome, status))
                continue
            stats = parse_stats(status.get("tail") or "")
            figures[attempt_id] = (sizes[attempt_id], job_done(sizes[attempt_id], hosts_done=status.get("hosts_done"),
                                                               hosts_completed=stats and stats.hosts_completed),
                                   False)
            stall = watches[attempt_id]
            quiet = stall.update(progress_signature(status, stats), now)
            line = format_progress(host, attempt_id, sizes[attempt_id], status, stats, quiet_for=quiet)
            shown, when = last_line.get(attempt_id, ("", 0.0))
            if line != shown or now - when >= quiet_every:
                show(line)
                last_line[attempt_id] = (line, now)
            if stall.stalled(now):
                to_stop[attempt_id] = "stalled"
            elif deadline is not None and now > deadline:
                to_stop[attempt_id] = "timeout"
        pending.difference_update(outcomes)
        for attempt_id, reason in sorted(to_stop.items()):
            show(f"{host} {attempt_id}: no progress for {int(watches[attempt_id].timeout)} s, ending its nmap by "
                 "PID" if reason == "stalled" else
                 f"{host} {attempt_id}: still running after the timeout, ending its nmap by PID")
            answer = caller.call(call, "stopped", [attempt_id], {"reason": reason, "kill_grace": kill_grace})
            if answer.lost:
                lose(str(answer.error or ""))
                break
            if answer.error is not None:
                show(f"{host} {attempt_id}: the stop got no answer ({answer.error}); trying again")
                continue
            status = answer.value.get(attempt_id, {"state": "dead"})
            outcomes[attempt_id] = attempt_outcome(attempt_id, reason, status)
            figures[attempt_id] = (sizes[attempt_id], job_done(sizes[attempt_id], outcome=reason,
                                                               hosts_done=status.get("hosts_done")), True)
            changed = True
            pending.discard(attempt_id)
        if progress is not None:
            progress(dict(figures))
        if pending:
            # a quarter of the time waited so far, at least 1 s, at most poll: a short job (a pass-2 job, a small
            # shard) is seen ended within about a quarter of its length, a long one every poll seconds
            sleep(min(poll, max(1.0, (clock() - start) / 4), watch.remaining()))
    if progress is not None:
        progress(dict(figures))  # the last figures (a lost host leaves the loop before the call above)
    return [outcomes[a["id"]] for a in attempts if a["id"] in outcomes], changed


__all__ = [
    "HOST_LOST_OUTCOMES", "OUTCOMES", "STATUSES", "Answer", "BoundedCaller", "ContactWatch", "Progress",
    "StallWatch", "attempt_outcome", "fetch_list",
    "format_outcome", "format_progress", "host_lost", "job_outcome", "parse_stats", "progress_signature",
    "unreachable_outcome", "wait_jobs",
]
