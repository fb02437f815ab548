"""State of a distributed scan run: plan, per-shard completion records, resume, reassignment, report.

A *run* is one scan of one target set with one set of nmap options, named by a run id. Its state lives
on the controller in ``RESULTS/RUN_ID/state.json`` (:class:`RunState`), next to the files fetched from the
scanner hosts (``RESULTS/RUN_ID/HOST/ATTEMPT/scan.xml`` ...) and the merged report
(``RESULTS/RUN_ID/merged.*``). Every directory is created mode 0700.

Vocabulary
----------
* **attempt**: one nmap process on one scanner host over one shard (one address family: nmap needs
  ``-6`` for IPv6). Its id ``NNN-HOST`` (a sequence number of the run, then the host) names its
  directory on the host and on the controller and labels it in the merged report.
* **status** of an attempt on the controller: ``assigned`` (handed to a host, not recorded yet),
  ``finished`` (complete XML, nmap exit success: the whole shard is done), ``partial`` (XML truncated, or
  nmap stopped with an error: the hosts it fully reports are done, see :func:`scanfleet.collect.record_attempt`),
  ``failed`` (nothing usable came back), ``lost`` (the host went away before anything was fetched).
* **outcome** of an attempt on its host (:func:`scanfleet.jobs.job_outcome`): ``finished``, ``exited`` (nmap exit code
  not 0), ``timeout`` (the per-host timeout ended it), ``stalled`` (no progress within the stall
  timeout: the controller ended it by PID), ``stopped``, ``dead`` (the process vanished without an exit
  record), ``missing`` (no job on the host), ``unreachable`` (the host stopped answering).

Rules
-----
* The run's identity is :func:`scanfleet.targets.fingerprint` over the target addresses (after
  exclusions, the scanners' own addresses and hostname resolution) and the nmap options that shape the
  results. A state whose fingerprint differs is refused (:func:`open_run`): a run id belongs to one
  target set and one set of options. With no run id, the run id is derived from the fingerprint
  (``scan-`` + 12 hex digits), so the same command resumes the same run.
* **Resume** (:func:`scanfleet.plan.plan_round`): what is covered -- the whole shard of a finished attempt, the hosts a
  partial attempt fully reports (:func:`scanfleet.targets.subtract_finished` gives the rest) -- is never
  scanned again. An attempt still ``assigned`` (the controller went away while it ran) is handed to the
  same host again when that host is available (the job on the host is attached to, not restarted);
  otherwise it is ``lost`` and its addresses are planned again.
* **Reassignment**: the addresses not covered and not assigned are sharded
  (:func:`scanfleet.shards.shard`, weighted by capacity) over the *available* hosts only: a host
  unreachable at the start, or whose job stalled, timed out or died in this playbook run, gets nothing
  more in this run. No available host while addresses remain is an error that names the hosts and why.
* **Coverage** (:func:`scanfleet.collect.coverage`): the run is complete when the covered addresses are
  exactly the target set; the same address covered by two attempts is reported as a duplicate (the
  scheme above never does that; the check guards it).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from scanfleet import ScanfleetError
from scanfleet.files import atomic_write
from scanfleet.intervals import EMPTY, IntervalSet, render_lines
from scanfleet.targets import addresses_of, fingerprint, parse_target_lines, subtract_finished

STATE_FILE = "state.json"
STATE_VERSION = 1
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)


def check_run_id(run_id: str) -> str:
    if not RUN_ID.fullmatch(run_id or ""):
        raise ScanfleetError(f"run id {run_id!r} is not usable as a directory name; use 1-64 letters, digits, "
                             "'.', '_' or '-', starting with a letter or digit (e.g. 2026-11-21-dmz)")
    return run_id


def derived_run_id(plan_fingerprint: str) -> str:
    """The run id used when none is given: the same targets and options give the same run."""
    return f"scan-{plan_fingerprint[:12]}"


def counted(count: int, word: str) -> str:
    """``1 address``, ``2 addresses``."""
    plural = word + ("es" if word.endswith(("s", "sh")) else "s")
    return f"{count} {word if count == 1 else plural}"


# --------------------------------------------------------------------------------------------------
# State


def known_fields(cls: type, data: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of ``data`` that are fields of dataclass ``cls`` (a record written by another version of
    scanfleet may hold more)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in data.items() if k in names}


@dataclasses.dataclass
class Attempt:
    """One nmap process on one host over one shard (see the module docstring)."""

    id: str
    host: str
    family: int
    lines: list[str]  # the nmap -iL lines of the shard
    size: int  # number of addresses
    session: str
    round: int
    created: float
    status: str = "assigned"
    outcome: str | None = None  # from the host, see job_outcome()
    detail: str | None = None  # why, for people
    recorded: float | None = None
    files: dict[str, str] = dataclasses.field(default_factory=dict)  # fetched file -> sha256
    kept: list[str] = dataclasses.field(default_factory=list)  # addresses fully reported (partial)
    complete: bool | None = None  # the XML ended with </nmaprun>
    exit: str | None = None  # runstats exit
    elapsed: float | None = None  # runstats elapsed (or last seen - start for truncated files)
    versiondb: str | None = None  # probes file used ("" = nmap's own)
    max_rate: int | None = None  # the job's nmap --max-rate (None: none), see scanfleet.rates

    def addresses(self) -> IntervalSet:
        return addresses_of(parse_target_lines(self.lines, source=f"attempt {self.id}", allow_hostnames=False))

    def covered(self) -> IntervalSet:
        """What this attempt scanned for good."""
        if self.status == "finished":
            return self.addresses()
        if self.status == "partial" and self.kept:
            mine = self.addresses()
            return mine - subtract_finished(mine, self.kept)
        return EMPTY

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Attempt:
        return cls(**known_fields(cls, data))


@dataclasses.dataclass
class RunState:
    """Everything the controller knows about one run; stored as ``state.json``."""

    run_id: str
    fingerprint: str
    targets_fingerprint: str
    options: list[str]
    target_lines: list[str]  # the whole target set (CIDRs), to compute coverage without re-resolving
    total: int
    created: float
    updated: float
    seq: int = 0
    sessions: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    attempts: list[Attempt] = dataclasses.field(default_factory=list)
    events: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    report: dict[str, Any] | None = None
    version: int = STATE_VERSION

    def targets(self) -> IntervalSet:
        return addresses_of(parse_target_lines(self.target_lines, source="state.json targets",
                                               allow_hostnames=False))

    def attempt(self, attempt_id: str) -> Attempt:
        for attempt in self.attempts:
            if attempt.id == attempt_id:
                return attempt
        raise ScanfleetError(f"run {self.run_id}: no attempt {attempt_id!r} in state.json; re-plan the run")

    def event(self, session: str, text: str, now: float) -> None:
        self.events.append({"time": now, "session": session, "text": text})

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["attempts"] = [a.to_dict() for a in self.attempts]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunState:
        values = known_fields(cls, data)
        values["attempts"] = [Attempt.from_dict(a) for a in data.get("attempts", [])]
        return cls(**values)


def run_dir(results: Path, run_id: str) -> Path:
    return Path(results) / check_run_id(run_id)


def load_state(directory: Path) -> RunState | None:
    """The state in ``directory/state.json``, or None when there is none."""
    path = Path(directory) / STATE_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ScanfleetError(f"{path}: unreadable ({exc}); move it away to start the run afresh") from None
    if not isinstance(data, dict) or data.get("version") != STATE_VERSION or "fingerprint" not in data:
        raise ScanfleetError(f"{path}: not a scanfleet run state (version {STATE_VERSION}); "
                             "move it away or choose another run id")
    return RunState.from_dict(data)


def save_state(directory: Path, state: RunState) -> None:
    """Write ``state.json`` atomically (temporary file, fsync, rename)."""
    directory = Path(directory)
    private_dir(directory)
    with atomic_write(directory / STATE_FILE, mode=0o600, durable=True) as f:
        json.dump(state.to_dict(), f, indent=1, sort_keys=True)
        f.write("\n")


def run_fingerprints(addresses: IntervalSet, options: Sequence[str]) -> tuple[str, str]:
    """(fingerprint of targets + options, fingerprint of the targets alone)."""
    return fingerprint(addresses, extra=list(options)), fingerprint(addresses)


def new_state(run_id: str, addresses: IntervalSet, options: Sequence[str], now: float) -> RunState:
    full, targets_only = run_fingerprints(addresses, options)
    return RunState(run_id=check_run_id(run_id), fingerprint=full, targets_fingerprint=targets_only,
                    options=list(options), target_lines=render_lines(addresses, "cidr"),
                    total=addresses.size, created=now, updated=now)


def check_resume(state: RunState, addresses: IntervalSet, options: Sequence[str]) -> None:
    """Refuse to continue ``state`` with another target set or other options (see the module docstring)."""
    full, targets_only = run_fingerprints(addresses, options)
    if state.fingerprint == full:
        return
    fix = ("choose a new run id (nmap_scan_run_id) for this scan, or re-run with the original targets and "
           "options to resume it")
    if state.targets_fingerprint != targets_only:
        before = state.targets()
        raise ScanfleetError(
            f"run id {state.run_id!r} belongs to a different target set: it was planned for {state.total} "
            f"addresses ({before.describe()}; fingerprint {state.targets_fingerprint[:12]}), now the targets "
            f"are {addresses.size} addresses ({addresses.describe()}; fingerprint {targets_only[:12]}); {fix}")
    raise ScanfleetError(
        f"run id {state.run_id!r} was scanned with other nmap options: before {' '.join(state.options)!r}, "
        f"now {' '.join(options)!r}; {fix}")


def open_run(results: Path, run_id: str, addresses: IntervalSet, options: Sequence[str],
             now: float) -> tuple[RunState, bool]:
    """The state of ``run_id`` (checked against the targets and options), or a new one; and whether it
    existed (a resume)."""
    state = load_state(run_dir(results, run_id))
    if state is None:
        return new_state(run_id, addresses, options, now), False
    if state.run_id != run_id:
        raise ScanfleetError(f"{run_dir(results, run_id) / STATE_FILE}: holds run {state.run_id!r}, not "
                             f"{run_id!r}; move it away")
    check_resume(state, addresses, options)
    return state, True


def load_planned(results: Path, run_id: str) -> tuple[Path, RunState]:
    """The run's directory and its state, which must have been planned already."""
    directory = run_dir(results, run_id)
    state = load_state(directory)
    if state is None:
        raise ScanfleetError(f"{directory / STATE_FILE}: no such run state; plan the run first")
    return directory, state
