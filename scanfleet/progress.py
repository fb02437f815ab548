"""The fleet-wide progress line of the wait: addresses done out of the run's total, and the time left.

Ansible runs the wait of each scanner (the action plugin scanfleet.fleet.scan_wait) in its own worker process,
so the scanners' figures meet in files on the controller, in the run's directory:
``RESULTS/RUN_ID/progress/HOST.json`` (written by that host's wait after every poll, atomically) and
``fleet.json`` (when the round began, the last fleet line and when it was printed), updated under an exclusive
lock (``fleet.lock``) so that one worker prints each line, not every worker the same line.

* **Done**: the addresses covered before this round (from the plan) plus, for each job of this round: its whole
  shard once it finished; the hosts its XML holds when it ended otherwise (what a salvage can keep); nothing
  when its scanner was lost (its addresses are planned again); while it runs, the larger of nmap's "hosts
  completed" (its ``--stats-every`` line, down hosts included) and the hosts written to its XML, never more
  than its shard.
* **Time left**: the fleet's pace in this round, the addresses done since the round's wait began over the
  seconds since then, applied to the addresses not done yet (``left = (total - done) / pace``). nmap completes
  hosts in groups, so the pace means little at first: **no estimate** until this round has done at least 5% of
  what was left to scan at its start (at least 1 address) and 30 seconds have passed.
* A line is printed when the figures change, at most once per poll interval (the scanners' waits poll at the
  same pace, so one line carries each poll's figures), and again after ``quiet_every`` seconds without change.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from scanfleet.files import atomic_write

FLEET = "fleet.json"
LOCK = "fleet.lock"
MIN_SHARE = 0.05  # of what was left at the start of the round, done in it before a time is estimated
MIN_SECONDS = 30.0


def _clock(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def job_done(size: int, *, outcome: str | None = None, hosts_completed: int | None = None,
             hosts_done: int | None = None) -> int:
    """Addresses of a job's shard that count as done (see the module docstring); ``outcome`` None: running."""
    if outcome == "finished":
        return size
    if outcome == "unreachable":
        return 0
    seen = max(hosts_done or 0, 0 if outcome else hosts_completed or 0)
    return min(size, seen)


def estimate(*, total: int, done: int, left_at_start: int, progressed: int, seconds: float) -> float | None:
    """Seconds left at the round's pace, or None while there is not enough data (see the module docstring)."""
    if seconds < MIN_SECONDS or progressed < max(1, math.ceil(MIN_SHARE * left_at_start)) or progressed <= 0:
        return None
    return max(total - done, 0) * seconds / progressed


def fleet_line(*, total: int, done: int, reporting: int, left_at_start: int, progressed: int,
               seconds: float, unit: str = "addresses") -> str:
    """The fleet-wide progress line; ``unit``: what is counted (addresses; (host, port) pairs for a phase that
    scans pairs)."""
    percent = 100.0 * done / total if total else 100.0
    text = f"fleet: {done}/{total} {unit} done ({percent:.1f}%), {reporting} scanner(s) reporting"
    left = estimate(total=total, done=done, left_at_start=left_at_start, progressed=progressed, seconds=seconds)
    if done >= total:
        return text + "; all done"
    if left is None:
        need = max(1, math.ceil(MIN_SHARE * left_at_start))
        return (text + f"; no estimate of the time left yet (after {need} of them done in this round and "
                f"{int(MIN_SECONDS)} s)")
    return (text + f"; about {_clock(left)} left (at {progressed / seconds:.2f} {unit}/s over "
            f"{_clock(seconds)} of this round)")


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write(path: Path, data: Mapping[str, Any]) -> None:
    with atomic_write(path, mode=0o600) as f:
        json.dump(data, f, sort_keys=True)


class FleetBoard:
    """One scanner's side of the fleet-wide line: call it with that scanner's jobs after every poll
    (attempt id -> (shard size, addresses done, ended)). ``round_id`` tells this round's files from older
    ones (e.g. session and round number); ``total``/``covered``: the run's addresses, and those covered
    before this round (``unit``: what they count, for the line)."""

    def __init__(self, directory: str | os.PathLike[str], host: str, *, round_id: str, total: int, covered: int,
                 show: Callable[[str], None], every: float = 10, quiet_every: float = 60,
                 clock: Callable[[], float] = time.time, unit: str = "addresses") -> None:
        self.dir = Path(directory)
        self.host = host
        self.round_id = round_id
        self.total = int(total)
        self.covered = int(covered)
        self.show = show
        self.every = float(every)
        self.quiet_every = float(quiet_every)
        self.clock = clock
        self.unit = unit
        self.first: dict[str, int] = {}  # attempt -> done when first seen (a resumed job may be well on)

    def __call__(self, jobs: Mapping[str, tuple[int, int, bool]]) -> str | None:
        """Publish this scanner's figures; print the fleet line when it is this worker's turn. Returns the
        line printed, if any. Problems with the files never stop the wait: the line is left out."""
        try:
            return self._update(jobs)
        except OSError:
            return None

    def _update(self, jobs: Mapping[str, tuple[int, int, bool]]) -> str | None:
        now = self.clock()
        for attempt_id, (_, done, _) in jobs.items():
            self.first.setdefault(attempt_id, done)
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        _write(self.dir / f"{self.host}.json", {
            "host": self.host, "round": self.round_id, "updated": now,
            "jobs": {a: {"size": s, "done": d, "ended": e, "first": self.first[a]} for a, (s, d, e) in jobs.items()},
        })
        with _locked(self.dir / LOCK):
            fleet = _read(self.dir / FLEET)
            if fleet.get("round") != self.round_id:
                fleet = {"round": self.round_id, "began": now, "line": None, "shown": None}
            done = progressed = reporting = 0
            for path in sorted(self.dir.glob("*.json")):
                if path.name == FLEET:
                    continue
                data = _read(path)
                if data.get("round") != self.round_id:
                    continue  # an earlier round's
                reporting += 1
                for job in (data.get("jobs") or {}).values():
                    done += int(job.get("done", 0))
                    progressed += int(job.get("done", 0)) - int(job.get("first", 0))
            left_at_start = max(self.total - self.covered - (done - progressed), 0)
            line = fleet_line(total=self.total, done=min(self.covered + done, self.total), reporting=reporting,
                              left_at_start=left_at_start, progressed=progressed,
                              seconds=now - float(fleet["began"]), unit=self.unit)
            shown = fleet.get("shown")
            due = shown is None or (now - shown >= self.every and (
                _figures(line) != _figures(fleet.get("line")) or now - shown >= self.quiet_every))
            if not due:
                _write(self.dir / FLEET, fleet)
                return None
            fleet.update(line=line, shown=now)
            _write(self.dir / FLEET, fleet)
        self.show(line)
        return line


def _figures(line: str | None) -> str | None:
    """What must change for a new line: the counts, not the estimate (which moves with the clock)."""
    return None if line is None else line.split(";", 1)[0]


__all__ = ["FleetBoard", "estimate", "fleet_line", "job_done"]
