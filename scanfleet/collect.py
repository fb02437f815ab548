"""Collecting a round: record what came back of each attempt, and the run's coverage.

See :mod:`scanfleet.state` for the statuses of an attempt and the coverage rule.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from scanfleet import ScanfleetError
from scanfleet.files import sha256_file
from scanfleet.intervals import EMPTY, IntervalSet
from scanfleet.jobs import HOST_LOST_OUTCOMES
from scanfleet.merge import inspect_input
from scanfleet.state import Attempt, RunState, counted, load_planned, run_dir, save_state
from scanfleet.targets import subtract_finished

# Files of an attempt fetched from the host: name on the controller -> what it is.
FETCHED = {
    "scan.xml": "nmap XML (-oA)",
    "scan.nmap": "nmap normal output (-oA)",
    "scan.gnmap": "nmap grepable output (-oA)",
    "nmap.log": "nmap's stdout/stderr (--stats-every lines)",
}
XML = "scan.xml"


def attempt_dir(results: Path, run_id: str, attempt: Attempt) -> Path:
    return run_dir(results, run_id) / attempt.host / attempt.id


def record_attempt(state: RunState, attempt: Attempt, *, outcome: str, directory: Path,
                   remote_sha256: Mapping[str, str], session: str, now: float,
                   detail: str | None = None, versiondb: str | None = None,
                   started: float | None = None, ended: float | None = None) -> list[str]:
    """Record what came back of ``attempt`` (files fetched into ``directory``); returns notes.

    Every fetched file must have the sha256 the host reported. The XML decides the status: complete
    with exit success -> ``finished``; truncated or exit error -> ``partial`` with the hosts it fully
    reports (salvaged by :func:`scanfleet.merge.inspect_input`); none or unusable -> ``failed``
    (``lost`` for an unreachable host). ``started``/``ended`` (the job's own times on the host) give the
    shard's time when the XML has no runstats.
    """
    directory = Path(directory)
    files: dict[str, str] = {}
    fetch_problem = None
    for name, expected in sorted(remote_sha256.items()):
        if name not in FETCHED:
            raise ScanfleetError(f"attempt {attempt.id}: unexpected file {name!r}; expected {', '.join(FETCHED)}")
        path = directory / name
        if not path.is_file():
            fetch_problem = fetch_problem or f"fetch failed: {name} did not arrive"
            continue
        actual = sha256_file(path)
        if actual != expected:
            fetch_problem = fetch_problem or (f"fetch failed: {name} has sha256 {actual}, {attempt.host} "
                                              f"reported {expected}")
            continue
        files[name] = actual
    if fetch_problem is not None:
        # A fetch that failed (after its retries) is not a result: nothing of the attempt is used, its
        # addresses are planned again, and the host gets no more work in this playbook run.
        attempt.files = {}
        attempt.outcome = outcome
        attempt.recorded = now
        attempt.status = "failed"
        attempt.kept = []
        attempt.detail = f"{fetch_problem} ({outcome})" + (f"; {detail}" if detail else "")
        text = (f"attempt {attempt.id} on {attempt.host}: {attempt.detail}; "
                f"its {counted(attempt.size, 'address')} planned again")
        state.event(session, text, now)
        return [text]
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
            shard_report = inspect_input(xml, attempt.id)
        except ScanfleetError as exc:
            problem = str(exc)
    if shard_report is None:
        attempt.status = "lost" if outcome == "unreachable" else "failed"
        attempt.kept = []
        attempt.detail = detail or problem or f"{outcome}: no nmap XML came back"
        text = (f"attempt {attempt.id} on {attempt.host}: {attempt.detail}; "
                f"its {counted(attempt.size, 'address')} planned again")
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
    text = (f"attempt {attempt.id} on {attempt.host} {outcome}: {why}; {counted(len(kept), 'host')} kept from its "
            f"XML, {rest.size} of {counted(attempt.size, 'address')} planned again")
    notes.append(text)
    state.event(session, text, now)
    return notes


def record_run(*, results: str | Path, run_id: str, outcomes: Sequence[Mapping[str, Any]], session: str,
               write: bool = True, now: float | None = None) -> dict[str, Any]:
    """Record the outcomes of a round (one entry per attempt: id, outcome, detail, files {name: sha256},
    versiondb), the files being fetched already; return the hosts lost and what is left."""
    now = time.time() if now is None else now
    results = Path(results)
    directory, state = load_planned(results, run_id)
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
        if attempt.detail and attempt.detail.startswith("fetch failed"):
            lost_hosts[attempt.host] = f"{attempt.detail} in attempt {attempt.id}"
        elif outcome in HOST_LOST_OUTCOMES:
            why = item.get("detail") or (attempt.detail if outcome == "unreachable" else None)
            lost_hosts[attempt.host] = (f"{why} ({outcome})" if why else outcome) + f" in attempt {attempt.id}"
    state.updated = now
    if write and recorded:
        save_state(directory, state)
    cov = coverage(state)
    pending = [a.id for a in state.attempts if a.status == "assigned"]
    return {"changed": bool(recorded), "recorded": recorded, "lost_hosts": lost_hosts, "notes": notes,
            "covered": cov.covered.size, "total": state.total, "missing": cov.missing.size,
            "pending": pending, "statuses": {a.id: a.status for a in state.attempts}}


# --------------------------------------------------------------------------------------------------
# Coverage


def covered(state: RunState) -> IntervalSet:
    """The addresses scanned for good by the recorded attempts."""
    sets = [a.covered() for a in state.attempts if a.status in ("finished", "partial")]
    return sets[0].union(*sets[1:]) if sets else EMPTY


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
        text = f"coverage: {done}/{counted(self.total, 'address')} ({percent:.1f}%)"
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


def run_status(state: RunState) -> dict[str, Any]:
    """The run's state and coverage as plain data (``scanfleet run status``): rounds, attempts, coverage."""
    cov = coverage(state)
    return {
        "run_id": state.run_id, "fingerprint": state.fingerprint, "options": list(state.options),
        "created": state.created, "updated": state.updated, "total": state.total,
        "rounds": max((a.round for a in state.attempts), default=0), "sessions": len(state.sessions),
        "attempts": [{"id": a.id, "host": a.host, "round": a.round, "family": a.family, "size": a.size,
                      "status": a.status, "outcome": a.outcome, "detail": a.detail, "elapsed": a.elapsed}
                     for a in state.attempts],
        "covered": cov.covered.size, "missing": cov.missing.size,
        "missing_ranges": cov.missing.describe() if cov.missing else "",
        "duplicates": cov.duplicates.size, "duplicate_ranges": cov.duplicates.describe() if cov.duplicates else "",
        "complete": cov.complete, "coverage": cov.text(),
        "report": state.report,
    }
