"""Jobs on the scanner hosts: outcome, progress, stalls (the job concern; moving to scanfleet.jobs)."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

from scanfleet.state import counted as _n

# Outcomes after which a host gets no more work in this playbook run.
HOST_LOST_OUTCOMES = frozenset({"exited", "timeout", "stalled", "stopped", "dead", "missing", "unreachable"})


# --------------------------------------------------------------------------------------------------
# Jobs on the hosts: outcome, progress, stalls


def job_outcome(status: Mapping[str, Any]) -> str | None:
    """The outcome of a job from its status on the host (scanfleet_scan_job), None while it runs."""
    state = status.get("state")
    if state == "running":
        return None
    if state == "absent":
        return "missing"
    if state == "dead":
        return "dead"
    reason = status.get("reason")
    if reason == "finished" and status.get("rc") == 0:
        return "finished"
    if reason in ("timeout", "stalled", "stopped"):
        return reason
    return "exited"


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


def unreachable_outcome(attempt_id: str, detail: str) -> dict[str, Any]:
    """The outcome of an attempt whose host stopped answering while it ran: nothing can be fetched from it
    (no files, no paths), so :func:`record_attempt` marks it ``lost`` and its addresses are planned again."""
    return {"id": attempt_id, "outcome": "unreachable", "detail": detail, "files": {}, "paths": {}}


def format_outcome(host: str, attempt_id: str, outcome: str, status: Mapping[str, Any]) -> str:
    detail = {"finished": "nmap finished", "exited": f"nmap exited with status {status.get('rc')}",
              "timeout": "ended by the per-host timeout", "stalled": "ended: no progress (stall timeout)",
              "stopped": "stopped", "dead": "the job vanished without an exit record",
              "missing": "no such job on the host", "unreachable": "the host stopped answering"}[outcome]
    hosts = status.get("hosts_done")
    return f"{host} {attempt_id}: {detail}" + (f"; {_n(hosts, 'host')} in its XML" if hosts is not None else "")
