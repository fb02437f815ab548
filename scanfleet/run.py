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
* **status** of an attempt on the controller (``assigned``, ``finished``, ``partial``, ``failed``,
  ``lost``; see :func:`record_attempt`) and **outcome** of an attempt on its host
  (:func:`scanfleet.jobs.job_outcome`): these words, and the job's state and exit reason on the host, are
  defined once with their meaning in :data:`scanfleet.job_model.WORDS`.

Rules
-----
* The run's identity is :func:`scanfleet.targets.fingerprint` over the target addresses (after
  exclusions, the scanners' own addresses and hostname resolution) and the nmap options that shape the
  results. A state whose fingerprint differs is refused (:func:`open_run`): a run id belongs to one
  target set and one set of options. With no run id, the run id is derived from the fingerprint
  (``scan-`` + 12 hex digits), so the same command resumes the same run.
* **Resume** (:func:`plan_round`): what is covered -- the whole shard of a finished attempt, the hosts a
  partial attempt fully reports (:func:`scanfleet.targets.subtract_finished` gives the rest) -- is never
  scanned again. An attempt still ``assigned`` (the controller went away while it ran) is handed to the
  same host again when that host is available (the job on the host is attached to, not restarted);
  otherwise it is ``lost`` and its addresses are planned again.
* **Reassignment**: the addresses not covered and not assigned are sharded
  (:func:`scanfleet.shard.shard`, weighted by capacity) over the *available* hosts only: a host
  unreachable at the start, or whose job stalled, timed out or died in this playbook run, gets nothing
  more in this run. No available host while addresses remain is an error that names the hosts and why.
* **Coverage** (:func:`coverage`): the run is complete when the covered addresses are exactly the target
  set; the same address covered by two attempts is reported as a duplicate (the scheme above never does
  that; the check guards it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from scanfleet import ScanfleetError
from scanfleet import nmapxml as _nmapxml
from scanfleet import report as _report
from scanfleet.job_model import sha256_file
from scanfleet.jobs import (
    HOST_LOST_OUTCOMES,
    STATUSES,
    Progress,
    StallWatch,
    format_outcome,
    format_progress,
    job_outcome,
    parse_stats,
    progress_signature,
    unreachable_outcome,
)
from scanfleet.shard import shard as _shard
from scanfleet.targets import (
    EMPTY,
    FAMILIES,
    IPV6,
    IntervalSet,
    TargetPlan,
    addresses_of,
    fingerprint,
    parse_scope,
    parse_target_lines,
    parse_targets,
    parse_targets_file,
    plan_targets,
    render_lines,
    subtract_finished,
    system_resolver,
)

STATE_FILE = "state.json"
STATE_VERSION = 1
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# Files of an attempt fetched from the host: name on the controller -> what it is.
FETCHED = {
    "scan.xml": "nmap XML (-oA)",
    "scan.nmap": "nmap normal output (-oA)",
    "scan.gnmap": "nmap grepable output (-oA)",
    "nmap.log": "nmap's stdout/stderr (--stats-every lines)",
}
XML = "scan.xml"
MERGED = "merged.xml"


def _dir_mode(path: Path) -> None:
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


# --------------------------------------------------------------------------------------------------
# State


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
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


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
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
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
    _dir_mode(directory)
    fd, name = tempfile.mkstemp(prefix=f".{STATE_FILE}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(state.to_dict(), f, indent=1, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(name, 0o600)
        os.replace(name, directory / STATE_FILE)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(name)
        raise


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


# --------------------------------------------------------------------------------------------------
# Planning a round


@dataclasses.dataclass
class RoundPlan:
    """What :func:`plan_round` decided."""

    assignments: dict[str, list[Attempt]]  # available host -> its attempts of this round (maybe none)
    new: list[Attempt]
    reattached: list[Attempt]
    lost: list[Attempt]
    todo: IntervalSet  # what was left to assign before this round's new attempts
    notes: list[str]


def covered(state: RunState) -> IntervalSet:
    """The addresses scanned for good by the recorded attempts."""
    sets = [a.covered() for a in state.attempts if a.status in ("finished", "partial")]
    return sets[0].union(*sets[1:]) if sets else EMPTY


def _n(count: int, word: str) -> str:
    """``1 address``, ``2 addresses``."""
    plural = word + ("es" if word.endswith(("s", "sh")) else "s")
    return f"{count} {word if count == 1 else plural}"


def _hosts_text(hosts: Iterable[str]) -> str:
    names = sorted(hosts)
    return ", ".join(names) if names else "none"


def plan_round(state: RunState, *, weights: Mapping[str, Any], available: Iterable[str],
               unavailable: Mapping[str, str] | None = None, session: str, round_no: int, now: float,
               mode: str = "contiguous", seed: int = 0, style: str = "auto") -> RoundPlan:
    """Decide what each available host scans in this round; updates ``state`` (see the module docstring).

    ``weights``: every scanner host of the play -> capacity; ``available``: the hosts that may get work
    now; ``unavailable``: host -> why not (for the notes).
    """
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
            text = (f"attempt {attempt.id} ({_n(attempt.size, 'address')}) is lost: {attempt.detail}; "
                    "its addresses are planned again")
            notes.append(text)
            state.event(session, text, now)
    in_flight = [a.addresses() for a in reattached]
    todo = state.targets() - covered(state)
    for addresses in in_flight:
        todo = todo - addresses
    assignments: dict[str, list[Attempt]] = {h: [a for a in reattached if a.host == h] for h in available}
    new: list[Attempt] = []
    if todo:
        usable = {h: weights[h] for h in available}
        if not usable or not any(float(w) > 0 for w in usable.values()):
            why = "; ".join(f"{h}: {unavailable.get(h, 'capacity 0' if h in usable else 'not available')}"
                            for h in sorted(weights))
            raise ScanfleetError(
                f"run {state.run_id}: {_n(todo.size, 'address')} left to scan ({todo.describe()}) but no scanner "
                f"host is available ({why}); bring a scanner back and re-run the same command to resume")
        shards = _shard(todo, usable, mode=mode, seed=seed)
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
        skipped = sorted(h for h in available if not assignments[h])
        shared = sorted({a.host for a in new})
        if unavailable:
            away = ", ".join(f"{h} ({why})" for h, why in sorted(unavailable.items()) if h in weights)
            notes.append(f"round {round_no}: {_n(todo.size, 'address')} shared between {_hosts_text(shared)}; "
                         f"not used: {away}")
        if skipped:
            notes.append(f"round {round_no}: no addresses for {_hosts_text(skipped)} (empty shard): skipped")
    if reattached:
        text = (f"round {round_no}: resuming {len(reattached)} attempt(s) still assigned from an earlier run: "
                + ", ".join(a.id for a in reattached))
        notes.append(text)
        state.event(session, text, now)
    state.updated = now
    return RoundPlan(assignments=assignments, new=new, reattached=reattached, lost=lost, todo=todo,
                     notes=notes)


# --------------------------------------------------------------------------------------------------
# Recording what came back


def attempt_dir(results: Path, run_id: str, attempt: Attempt) -> Path:
    return run_dir(results, run_id) / attempt.host / attempt.id


def record_attempt(state: RunState, attempt: Attempt, *, outcome: str, directory: Path,
                   remote_sha256: Mapping[str, str], session: str, now: float,
                   detail: str | None = None, versiondb: str | None = None,
                   started: float | None = None, ended: float | None = None) -> list[str]:
    """Record what came back of ``attempt`` (files fetched into ``directory``); returns notes.

    Every fetched file must have the sha256 the host reported. The XML decides the status: complete
    with exit success -> ``finished``; truncated or exit error -> ``partial`` with the hosts it fully
    reports (salvaged by :func:`scanfleet.nmapxml.inspect_input`); none or unusable -> ``failed``
    (``lost`` for an unreachable host). ``started``/``ended`` (the job's own times on the host) give the
    shard's time when the XML has no runstats.
    """
    directory = Path(directory)
    files: dict[str, str] = {}
    for name, expected in sorted(remote_sha256.items()):
        if name not in FETCHED:
            raise ScanfleetError(f"attempt {attempt.id}: unexpected file {name!r}; expected {', '.join(FETCHED)}")
        path = directory / name
        if not path.is_file():
            raise ScanfleetError(f"{path}: not fetched; re-run the same command to fetch it again")
        actual = sha256_file(path)
        if actual != expected:
            raise ScanfleetError(f"{path}: sha256 {actual} differs from {expected} on {attempt.host}; the copy "
                                 "is damaged: re-run the same command to fetch it again")
        files[name] = actual
    attempt.files = files
    attempt.outcome = outcome
    attempt.recorded = now
    if versiondb is not None:
        attempt.versiondb = versiondb
    notes: list[str] = []
    xml = directory / XML
    shard_report = None
    problem = None
    if XML in files:
        try:
            shard_report = _nmapxml.inspect_input(xml, attempt.id)
        except ScanfleetError as exc:
            problem = str(exc)
    if shard_report is None:
        attempt.status = "lost" if outcome == "unreachable" else "failed"
        attempt.kept = []
        attempt.detail = detail or problem or f"{outcome}: no nmap XML came back"
        text = (f"attempt {attempt.id} on {attempt.host}: {attempt.detail}; "
                f"its {_n(attempt.size, 'address')} planned again")
        notes.append(text)
        state.event(session, text, now)
        return notes
    attempt.complete = shard_report.complete
    attempt.exit = shard_report.exit
    if shard_report.elapsed is not None:
        attempt.elapsed = shard_report.elapsed
    elif started is not None and ended is not None:
        attempt.elapsed = round(float(ended) - float(started), 2)
    elif shard_report.start is not None and shard_report.last_seen is not None:
        attempt.elapsed = float(shard_report.last_seen - shard_report.start)
    mine = attempt.addresses()
    kept = [a for a in shard_report.addresses if a in mine]
    if shard_report.complete and shard_report.exit == "success":
        attempt.status = "finished"
        attempt.kept = []
        attempt.detail = detail
        return notes
    attempt.status = "partial"
    attempt.kept = kept
    why = shard_report.problem if not shard_report.complete else (
        f"nmap exit {shard_report.exit or 'unknown'}" + (f": {shard_report.errormsg}" if shard_report.errormsg
                                                         else ""))
    attempt.detail = f"{outcome}; {why}" + (f"; {detail}" if detail else "")
    rest = subtract_finished(mine, kept)
    text = (f"attempt {attempt.id} on {attempt.host} {outcome}: {why}; {_n(len(kept), 'host')} kept from its "
            f"XML, {rest.size} of {_n(attempt.size, 'address')} planned again")
    notes.append(text)
    state.event(session, text, now)
    return notes


# --------------------------------------------------------------------------------------------------
# Coverage and report


@dataclasses.dataclass(frozen=True)
class Coverage:
    total: int
    covered: IntervalSet
    missing: IntervalSet
    duplicates: IntervalSet

    @property
    def complete(self) -> bool:
        return not self.missing and not self.duplicates

    def text(self) -> str:
        done = self.covered.size
        percent = 100.0 * done / self.total if self.total else 100.0
        text = f"coverage: {done}/{_n(self.total, 'address')} ({percent:.1f}%)"
        text += "; missing: " + self.missing.describe() if self.missing else ", none missing"
        text += "; scanned twice: " + self.duplicates.describe() if self.duplicates else ", no duplicates"
        return text


def coverage(state: RunState) -> Coverage:
    """Covered, missing and doubly covered addresses of the run."""
    seen = EMPTY
    duplicates = EMPTY
    for attempt in state.attempts:
        if attempt.status not in ("finished", "partial"):
            continue
        part = attempt.covered()
        duplicates = duplicates | (seen & part)
        seen = seen | part
    targets = state.targets()
    return Coverage(total=state.total, covered=seen & targets, missing=targets - seen, duplicates=duplicates)


def merge_inputs(state: RunState, results: Path) -> list[tuple[str, Path]]:
    """(label, XML path) of every attempt that contributes hosts to the merged report, in attempt order."""
    out = []
    for attempt in state.attempts:
        if XML not in attempt.files:
            continue
        if attempt.status == "finished" or (attempt.status == "partial" and attempt.kept):
            out.append((attempt.id, attempt_dir(results, state.run_id, attempt) / XML))
    return out


def report_digest(inputs: Sequence[tuple[str, Path]], state: RunState, extra: Sequence[str] = ()) -> str:
    """Identifies a merge: its inputs (labels and sha256) and the validation/stylesheet files."""
    files = {a.id: a.files.get(XML) for a in state.attempts}
    payload = json.dumps({"inputs": [[label, files.get(label)] for label, _ in inputs], "extra": list(extra)},
                         sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def run_summary_lines(state: RunState, summary: Mapping[str, Any] | None) -> list[str]:
    """The end-of-play summary: the merged report's figures, coverage and what happened in the run."""
    lines = [f"run {state.run_id} (fingerprint {state.fingerprint[:12]}): {_n(state.total, 'target address')}"]
    if summary is not None:
        lines.extend(_report.format_summary(summary).splitlines())
    cov = coverage(state)
    lines.append(cov.text())
    counts: dict[str, int] = {}
    for attempt in state.attempts:
        counts[attempt.status] = counts.get(attempt.status, 0) + 1
    lines.append("attempts: " + ", ".join(f"{counts[s]} {s}" for s in STATUSES if counts.get(s)))
    for attempt in state.attempts:
        took = f"{attempt.elapsed:.1f} s" if attempt.elapsed is not None else "-"
        lines.append(f"  {attempt.id}: {attempt.status}, {_n(attempt.size, 'address')}, {took}"
                     + (f", {attempt.outcome}" if attempt.outcome and attempt.outcome != "finished" else "")
                     + (f" ({attempt.detail})" if attempt.detail else ""))
    fallback = sorted({a.host for a in state.attempts if a.versiondb == ""})
    if fallback:
        lines.append(f"custom probes file missing on {', '.join(fallback)}: nmap's own nmap-service-probes "
                     "was used there")
    if state.events:
        lines.append("events:")
        lines.extend(f"  {e['text']}" for e in state.events)
    return lines


# --------------------------------------------------------------------------------------------------
# Glue for the Ansible modules (plugins/modules/scanfleet_scan_*.py)


def _attempt_view(attempt: Attempt) -> dict[str, Any]:
    return {"id": attempt.id, "host": attempt.host, "family": attempt.family, "ipv6": attempt.family == IPV6,
            "lines": attempt.lines, "size": attempt.size, "status": attempt.status, "round": attempt.round}


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
             session: str, round_no: int, mode: str = "contiguous", seed: int = 0,
             write: bool = True, now: float | None = None) -> dict[str, Any]:
    """Open (or resume) the run and plan one round; write state.json and the shards' -iL files."""
    now = time.time() if now is None else now
    results = Path(results)
    full, _ = run_fingerprints(plan.addresses, options)
    run_id = run_id or derived_run_id(full)
    state, resumed = open_run(results, run_id, plan.addresses, options, now)
    current = next((s for s in state.sessions if s.get("id") == session), None)
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
                    round_no=round_no, now=now, mode=mode, seed=seed)
    directory = run_dir(results, run_id)
    changed = bool(rp.new or rp.lost) or not resumed
    if write and changed:
        if not results.exists():
            _dir_mode(results)
        _dir_mode(directory)
        shards = directory / "shards"
        _dir_mode(shards)
        for attempt in rp.new:
            path = shards / f"{attempt.id}.targets"
            path.write_text("".join(f"{line}\n" for line in attempt.lines), encoding="utf-8")
            os.chmod(path, 0o600)
        save_state(directory, state)
    cov = coverage(state)
    lines = [f"run {run_id} ({'resumed' if resumed else 'new'}; fingerprint {state.fingerprint[:12]}): "
             f"{_n(state.total, 'target address')} ({plan.addresses.describe()}), {cov.covered.size} scanned already"]
    if plan.scanner_addresses:
        lines.append(f"scanners' own addresses left out: {plan.scanner_addresses.describe()}")
    for host in sorted(rp.assignments):
        attempts = rp.assignments[host]
        if not attempts:
            lines.append(f"{host}: nothing to scan this round")
        for attempt in attempts:
            how = "resumed" if attempt in rp.reattached else "new"
            lines.append(f"{host}: {attempt.id} ({how}) {_n(attempt.size, 'address')}: "
                         f"{attempt.addresses().describe()}")
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
        "newly_unavailable": newly,
        "scanners_excluded": plan.scanner_addresses.describe(),
        "resolved": plan.resolved(),
    }


def _planned_run(results: Path, run_id: str) -> tuple[Path, RunState]:
    """The run's directory and its state, which must have been planned already."""
    directory = run_dir(results, run_id)
    state = load_state(directory)
    if state is None:
        raise ScanfleetError(f"{directory / STATE_FILE}: no such run state; plan the run first")
    return directory, state


def record_run(*, results: str | Path, run_id: str, outcomes: Sequence[Mapping[str, Any]], session: str,
               write: bool = True, now: float | None = None) -> dict[str, Any]:
    """Record the outcomes of a round (one entry per attempt: id, outcome, detail, files {name: sha256},
    versiondb), the files being fetched already; return the hosts lost and what is left."""
    now = time.time() if now is None else now
    results = Path(results)
    directory, state = _planned_run(results, run_id)
    notes: list[str] = []
    lost_hosts: dict[str, str] = {}
    recorded = []
    for item in outcomes:
        attempt = state.attempt(str(item["id"]))
        if attempt.status != "assigned":
            continue  # recorded already (a re-run of the same round)
        outcome = str(item.get("outcome") or "missing")
        notes += record_attempt(state, attempt, outcome=outcome,
                                directory=attempt_dir(results, run_id, attempt),
                                remote_sha256=item.get("files") or {}, session=session, now=now,
                                detail=item.get("detail"), versiondb=item.get("versiondb"),
                                started=item.get("started"), ended=item.get("ended"))
        recorded.append(attempt.id)
        if outcome in HOST_LOST_OUTCOMES:
            lost_hosts[attempt.host] = f"{outcome} in attempt {attempt.id}"
    state.updated = now
    if write and recorded:
        save_state(directory, state)
    cov = coverage(state)
    pending = [a.id for a in state.attempts if a.status == "assigned"]
    return {"changed": bool(recorded), "recorded": recorded, "lost_hosts": lost_hosts, "notes": notes,
            "covered": cov.covered.size, "total": state.total, "missing": cov.missing.size,
            "pending": pending, "statuses": {a.id: a.status for a in state.attempts}}


def report_run(*, results: str | Path, run_id: str, dtd: str | None = None, xsl: str | None = None,
               write: bool = True, now: float | None = None) -> dict[str, Any]:
    """Merge every usable attempt into ``merged.xml`` (validated with ``dtd``) and write the reports
    (:func:`scanfleet.report.write_reports`); skipped when the inputs did not change since the last merge.
    Returns the summary, its text lines and the coverage."""
    now = time.time() if now is None else now
    results = Path(results)
    directory, state = _planned_run(results, run_id)
    inputs = merge_inputs(state, results)
    notes: list[str] = []
    dtd_path = Path(dtd) if dtd else None
    xsl_path = Path(xsl) if xsl else None
    # the build's own files (fetched from a scanner) first, else the controller's nmap package
    if dtd_path is None or not dtd_path.is_file():
        dtd_path = _nmapxml.find_nmap_file("nmap.dtd")
        if dtd_path is not None:
            notes.append(f"merged.xml validated against {dtd_path} (the build's nmap.dtd was not fetched)")
    if xsl_path is None or not xsl_path.is_file():
        xsl_path = _nmapxml.find_nmap_file("nmap.xsl")
    extra = [f"dtd={sha256_file(dtd_path) if dtd_path and dtd_path.is_file() else ''}",
             f"xsl={'yes' if xsl_path and xsl_path.is_file() else 'no'}"]
    digest = report_digest(inputs, state, extra)
    merged = directory / MERGED
    summary = None
    changed = False
    if dtd_path is None:
        notes.append("merged.xml not validated: no nmap.dtd found (apt-get install nmap, or fetch the build's)")
    current = (state.report or {}).get("digest") == digest and merged.is_file()
    if current:
        with contextlib.suppress(ScanfleetError):
            summary = _report.load_summary(directory)
    if summary is None and inputs:
        if not write:
            notes.append("check mode: merged report not written")
        else:
            (directory / _report.SUMMARY_FILE).unlink(missing_ok=True)
            result = _nmapxml.merge([p for _, p in inputs], merged, labels=[label for label, _ in inputs],
                                    dtd=dtd_path, stylesheet=xsl_path.resolve().as_uri() if xsl_path else None)
            summary = _report.write_reports(merged, directory, result.to_dict(), xsl=xsl_path, notes=notes)
            for name in (MERGED, "merged.json", "merged.csv", "merged.html", _report.SUMMARY_FILE):
                with contextlib.suppress(FileNotFoundError):
                    os.chmod(directory / name, 0o600)
            state.report = {"digest": digest, "time": now, "inputs": [label for label, _ in inputs],
                            "validated": result.validated}
            state.updated = now
            save_state(directory, state)
            changed = True
    cov = coverage(state)
    lines = run_summary_lines(state, summary)
    if write and changed:
        (directory / "summary.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
        os.chmod(directory / "summary.txt", 0o600)
    return {"changed": changed, "run_id": run_id, "dir": str(directory), "merged": str(merged),
            "summary": summary, "lines": lines, "complete": cov.complete, "covered": cov.covered.size,
            "total": cov.total, "missing": cov.missing.describe() if cov.missing else "",
            "duplicates": cov.duplicates.describe() if cov.duplicates else "",
            "validated": bool(summary and summary.get("validated")), "inputs": [label for label, _ in inputs]}


__all__ = [
    "FETCHED", "STATE_FILE", "Attempt", "Coverage", "Progress", "RoundPlan", "RunState", "StallWatch",
    "build_plan", "check_resume", "check_run_id", "coverage", "covered", "derived_run_id", "format_outcome",
    "format_progress", "job_outcome", "load_state", "merge_inputs", "new_state", "open_run", "parse_stats",
    "plan_round", "plan_run", "progress_signature", "record_attempt", "record_run", "report_run",
    "run_summary_lines", "save_state", "unreachable_outcome",
]
