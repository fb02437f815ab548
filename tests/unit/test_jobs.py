"""Jobs seen from the controller (scanfleet.jobs over scanfleet.job_model): outcomes, nmap's progress, stalls, and
the wait's result (what is fetched, whether the host is lost). The progress lines are real ``--stats-every``
output of the patched nmap 7.95 in the lab (molecule/scan).
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import pytest

from scanfleet import collect, job_model, jobs, report

ROOT = Path(__file__).resolve().parents[2]

# Real --stats-every output of the patched nmap 7.95 (lab, molecule/scan, nmap.log).
STATS_SERVICE = """\
Initiating Service scan at 10:37
Scanning 6 services on 2 hosts
Stats: 0:00:02 elapsed; 0 hosts completed (2 up), 2 undergoing Service Scan
Service scan Timing: About 50.00% done; ETC: 10:37 (0:00:00 remaining)
Stats: 0:00:04 elapsed; 0 hosts completed (2 up), 2 undergoing Service Scan
Service scan Timing: About 66.67% done; ETC: 10:37 (0:00:02 remaining)
"""
STATS_SECOND_HOST = """\
Scanning 3 services on 10.77.0.42
Stats: 0:00:12 elapsed; 1 hosts completed (2 up), 1 undergoing Service Scan
Service scan Timing: About 66.67% done; ETC: 10:39 (0:00:01 remaining)
"""
STATS_NSE = """\
Service scan Timing: About 66.67% done; ETC: 10:39 (0:00:04 remaining)
Completed Service scan at 10:39, 9.33s elapsed (3 services on 1 host)
NSE: Script scanning 10.77.0.42.
Initiating NSE at 10:39
Stats: 0:00:10 elapsed; 0 hosts completed (1 up), 1 undergoing Script Scan
NSE: Active NSE Script Threads: 2 (1 waiting)
"""
# nmap prints this form below 1% (timing.cc, ScanProgressMeter::printStats).
STATS_EARLY = "Stats: 0:00:01 elapsed; 0 hosts completed (0 up), 4 undergoing Ping Scan\n" \
              "Ping Scan Timing: About 0.50% done\n"




# ---- jobs: outcome, progress, stalls -----------------------------------------------------------------------


@pytest.mark.parametrize(("status", "outcome"), [
    ({"state": "running"}, None),
    ({"state": "absent"}, "missing"),
    ({"state": "dead"}, "dead"),
    ({"state": "exited", "reason": "finished", "rc": 0}, "finished"),
    ({"state": "exited", "reason": "error", "rc": 1}, "exited"),
    ({"state": "exited", "reason": "signal", "rc": -9}, "exited"),
    ({"state": "exited", "reason": "timeout", "rc": -15}, "timeout"),
    ({"state": "exited", "reason": "stalled", "rc": -15}, "stalled"),
    ({"state": "exited", "reason": "stopped", "rc": None}, "stopped"),
    ({"state": "exited", "reason": "finished", "rc": 1}, "exited"),  # finished means exit status 0
    ({"state": "exited", "reason": None, "rc": None}, "exited"),
])
def test_job_outcome(status, outcome):
    assert jobs.job_outcome(status) == outcome
    if outcome is not None and outcome != "finished":
        assert outcome in jobs.HOST_LOST_OUTCOMES


@pytest.mark.parametrize(("text", "expected"), [
    (STATS_SERVICE, jobs.Progress(elapsed=4, hosts_completed=0, hosts_up=2, undergoing=2, phase="Service scan",
                                 percent=66.67, etc="10:37", remaining=2)),
    (STATS_SECOND_HOST, jobs.Progress(elapsed=12, hosts_completed=1, hosts_up=2, undergoing=1,
                                     phase="Service scan", percent=66.67, etc="10:39", remaining=1)),
    # the Timing line is older than the Stats line: it belongs to the previous phase
    (STATS_NSE, jobs.Progress(elapsed=10, hosts_completed=0, hosts_up=1, undergoing=1, phase="Script Scan")),
    (STATS_EARLY, jobs.Progress(elapsed=1, hosts_completed=0, hosts_up=0, undergoing=4, phase="Ping Scan",
                               percent=0.5)),
    ("Starting Nmap 7.95 ( https://nmap.org )\nInitiating ARP Ping Scan at 10:37\n", None),
    ("", None),
])
def test_parse_stats_reads_nmaps_own_figures(text, expected):
    assert jobs.parse_stats(text) == expected


def test_format_progress_shows_the_percentage_hosts_and_quiet_time():
    line = jobs.format_progress("scanner1", "001-scanner1", 2, {}, jobs.parse_stats(STATS_SERVICE), quiet_for=75)
    assert line == ("scanner1 001-scanner1:  66.7% of Service scan (ETC 10:37, 0:00:02 left); 0/2 hosts done "
                    "(2 up), 2 in progress; 0:00:04 elapsed; no progress for 0:01:15")
    assert jobs.format_progress("s", "001-s", 1, {}, None) == "s 001-s: started, no nmap stats yet"


@pytest.mark.parametrize(("feed", "stalled_at"), [
    # (time, stdout so far, hosts in XML): nmap keeps printing Stats lines with the same figures: stalled
    ([(0, STATS_SERVICE, 0), (5, STATS_SERVICE + STATS_SERVICE, 0), (11, STATS_SERVICE * 3, 0)], 11),
    # the percentage moves: not stalled
    ([(0, STATS_SERVICE, 0), (5, STATS_SECOND_HOST, 0), (11, STATS_SECOND_HOST + STATS_SERVICE, 0)], None),
    # a host is written to the XML: progress
    ([(0, STATS_SERVICE, 0), (5, STATS_SERVICE, 1), (11, STATS_SERVICE, 1)], None),
    # no stats at all for longer than the timeout (frozen before its first line)
    ([(0, "", 0), (6, "", 0), (12, "", 0)], 12),
])
def test_a_job_stalls_when_nmaps_figures_do_not_move(feed, stalled_at):
    watch = jobs.StallWatch(timeout=10)
    seen = None
    for now, text, hosts in feed:
        status = {"hosts_done": hosts}
        watch.update(jobs.progress_signature(status, jobs.parse_stats(text)), now)
        if seen is None and watch.stalled(now):
            seen = now
    assert seen == stalled_at


def test_no_stall_timeout_never_stalls():
    watch = jobs.StallWatch(timeout=0)
    watch.update(("x",), 0)
    assert not watch.stalled(10**9)


# ---- the one table of words ------------------------------------------------------------------------------


def test_the_controller_uses_the_hosts_job_model_itself():
    """scanfleet/job_model.py is a symlink to the collection's module_utils file, not a copy of it."""
    link = ROOT / "scanfleet" / "job_model.py"
    assert link.is_symlink() and link.resolve() == ROOT / "plugins" / "module_utils" / "job_model.py"
    assert Path(job_model.__file__).resolve() == link.resolve()


def test_every_word_is_defined_once_with_its_meaning_and_the_vocabularies_follow_from_it():
    names = [w.word for w in job_model.WORDS]
    assert len(names) == len(set(names))
    assert all(w.meaning and w.kinds for w in job_model.WORDS)
    assert job_model.STATES == ("running", "exited", "dead", "absent")
    assert job_model.REASONS == ("finished", "error", "signal", "timeout", "stalled", "stopped")
    assert job_model.STOP_REASONS == ("timeout", "stalled", "stopped")
    assert set(job_model.OUTCOMES) == {"finished", "exited", "timeout", "stalled", "stopped", "dead", "missing",
                                       "unreachable"}
    assert job_model.STATUSES == ("assigned", "finished", "partial", "failed", "lost")
    lost = frozenset(job_model.OUTCOMES) - {"finished"}
    assert lost == job_model.HOST_LOST_OUTCOMES
    # what a state or a reason gives is an outcome, and every outcome has its line
    assert all(w.gives in (None, "reason", *job_model.OUTCOMES) for w in job_model.WORDS)
    assert all(job_model.TABLE[o].says for o in job_model.OUTCOMES)
    assert report.STATUSES is job_model.STATUSES and collect.HOST_LOST_OUTCOMES is job_model.HOST_LOST_OUTCOMES


@pytest.mark.parametrize(("outcome", "status", "line"), [
    ("finished", {"hosts_done": 2}, "s1 001-s1: nmap finished; 2 hosts in its XML"),
    ("exited", {"rc": 3, "hosts_done": 1}, "s1 001-s1: nmap exited with status 3; 1 host in its XML"),
    ("timeout", {"hosts_done": 0}, "s1 001-s1: ended by the per-host timeout; 0 hosts in its XML"),
    ("stalled", {}, "s1 001-s1: ended: no progress (stall timeout)"),
    ("dead", {}, "s1 001-s1: the job vanished without an exit record"),
    ("missing", {}, "s1 001-s1: no such job on the host"),
])
def test_format_outcome(outcome, status, line):
    assert jobs.format_outcome("s1", "001-s1", outcome, status) == line


# ---- the wait's result -----------------------------------------------------------------------------------


def test_an_unreachable_host_gives_nothing_to_fetch_and_is_lost():
    """The action plugin's result: ``fetch`` from jobs.fetch_list and ``lost`` from jobs.host_lost, over the
    outcomes it builds with attempt_outcome (an ended job's status on its host) and unreachable_outcome."""
    xml = {"path": "/runs/r/002-s1/out/scan.xml", "sha256": "a" * 64, "bytes": 10}
    log = {"path": "/runs/r/002-s1/nmap.log", "sha256": "b" * 64, "bytes": 5}
    status = {"state": "exited", "rc": 0, "reason": "finished", "pid": 7, "hosts_done": 1,
              "files": {"scan.xml": xml, "nmap.log": log}}
    finished = jobs.attempt_outcome("002-s1", jobs.job_outcome(status), status)
    gone = jobs.unreachable_outcome("001-s1", "no answer for 21 s: ssh: No route to host")
    assert finished["outcome"] == "finished" and finished["files"] == {"scan.xml": "a" * 64, "nmap.log": "b" * 64}
    assert jobs.fetch_list([gone, finished]) == [
        {"attempt": "002-s1", "name": "nmap.log", "src": "/runs/r/002-s1/nmap.log"},
        {"attempt": "002-s1", "name": "scan.xml", "src": "/runs/r/002-s1/out/scan.xml"},
    ]
    assert jobs.fetch_list([gone]) == []
    assert jobs.host_lost([gone, finished]) and not jobs.host_lost([finished])


# ---- contact: a scanner is lost when nothing it sends arrives for lost_after seconds ------------------------


class TickingClock:
    """A fake monotonic clock: every reading advances it by ``step`` seconds (time passes while one waits)."""

    def __init__(self, step: float = 0.0) -> None:
        self.now = 1000.0
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def test_contact_watch_counts_silence_from_the_last_answer_or_the_start():
    clock = TickingClock()
    watch = jobs.ContactWatch(30, clock)
    clock.now += 29.9
    assert not watch.lost() and watch.remaining() == pytest.approx(0.1)
    watch.answered()
    clock.now += 29.9
    assert not watch.lost()
    clock.now += 0.1
    assert watch.lost() and watch.remaining() == 0 and watch.detail() == "no answer for 30 s"


def test_contact_watch_refuses_a_lost_after_that_is_not_positive():
    with pytest.raises(ValueError, match="lost_after"):
        jobs.ContactWatch(0)


def _hang(*_args):
    threading.Event().wait()


def _refuse(*_args):
    raise ConnectionError("Connection timed out during banner exchange")


@pytest.mark.parametrize("transport", [_hang, _refuse], ids=["hangs", "raises"])
def test_no_answer_for_lost_after_means_lost_whatever_the_transport_does(transport):
    clock = TickingClock(step=1.0)
    watch = jobs.ContactWatch(30, clock)
    caller = jobs.BoundedCaller(watch, (ConnectionError,), slice_seconds=0.001)
    answer = caller.call(transport)
    tries = 1
    while not answer.lost:  # a failing call returns at once: the caller tries again until the watch says lost
        assert answer.error is not None and answer.value is None
        answer = caller.call(transport)
        tries += 1
    assert watch.silent_for() >= 30 and tries < 30


def test_answers_that_stop_mean_lost_and_an_outstanding_call_is_never_doubled():
    clock = TickingClock(step=1.0)
    watch = jobs.ContactWatch(10, clock)
    calls = []
    gate = threading.Event()

    def transport(n):
        calls.append(n)
        if n > 2:
            gate.wait()
        return n

    caller = jobs.BoundedCaller(watch, (ConnectionError,), slice_seconds=0.001)
    assert [caller.call(transport, n).value for n in (1, 2)] == [1, 2]
    assert caller.call(transport, 3).lost and caller.busy
    assert caller.call(transport, 4).lost  # waits again for call 3: no second call on the same connection
    assert calls == [1, 2, 3]
    gate.set()
    assert caller.call(transport, 5).value == 3  # the late answer of the outstanding call
    assert not watch.lost()


def test_an_error_the_host_answered_with_is_raised():
    def transport():
        raise RuntimeError("scan_job state=status: permission denied")

    caller = jobs.BoundedCaller(jobs.ContactWatch(10, TickingClock(1.0)), (ConnectionError,), slice_seconds=0.001)
    with pytest.raises(RuntimeError, match="permission denied"):
        caller.call(transport)


RUNNING = {"state": "running", "tail": "", "hosts_done": 0}


def test_the_wait_returns_unreachable_within_lost_after_when_a_poll_blocks_forever():
    """The loop scan_wait delegates to, with the real clock: the first poll answers, the next one hangs on
    the connection. The wait returns within lost_after (2 s) and a small margin, the pending attempts
    unreachable with "no answer for N s"; the hung call is left in a daemon thread."""
    polls = []

    def call(state, ids, extra):
        polls.append(state)
        if len(polls) > 1:
            threading.Event().wait()
        return {i: dict(RUNNING) for i in ids}

    lines: list[str] = []
    began = time.monotonic()
    outcomes, changed = jobs.wait_jobs(call, [{"id": "001-s2", "size": 4}, {"id": "002-s2", "size": 4}],
                                       host="s2", show=lines.append, poll=1, lost_after=2,
                                       transient=(ConnectionError,))
    took = time.monotonic() - began
    assert took < 1 + 2 + 1.5, took  # one poll interval, then lost_after of silence, and a margin
    assert [o["outcome"] for o in outcomes] == ["unreachable", "unreachable"] and not changed
    assert all(re.fullmatch(r"no answer for [23] s", o["detail"]) for o in outcomes)
    assert jobs.fetch_list(outcomes) == [] and jobs.host_lost(outcomes)
    assert polls == ["status", "status"] and any("is lost" in line for line in lines)


def test_the_wait_keeps_polling_through_short_failures_and_records_the_outcomes():
    clock = TickingClock()
    answers = iter([ConnectionError("reset"), {"001-s1": dict(RUNNING)},
                    {"001-s1": {"state": "exited", "reason": "exited", "rc": 0, "files": {}}}])

    def call(state, ids, extra):
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def sleep(seconds):
        clock.now += seconds

    outcomes, _ = jobs.wait_jobs(call, [{"id": "001-s1"}], host="s1", show=lambda _line: None, poll=5,
                                 lost_after=30, transient=(ConnectionError,), clock=clock, sleep=sleep)
    assert [o["outcome"] for o in outcomes] == ["exited"]


def test_a_host_that_only_fails_is_lost_after_lost_after_with_the_last_error_on_one_line():
    clock = TickingClock()

    def call(state, ids, extra):
        clock.now += 1
        raise ConnectionError("Failed to connect to the host via ssh: ssh: connect to host 10.77.0.52 port 22:\r\n"
                              "No route to host")

    def sleep(seconds):
        clock.now += seconds

    outcomes, _ = jobs.wait_jobs(call, [{"id": "002-s2"}], host="s2", show=lambda _line: None, poll=2,
                                 lost_after=20, transient=(ConnectionError,), clock=clock, sleep=sleep)
    assert [o["outcome"] for o in outcomes] == ["unreachable"]
    assert outcomes[0]["detail"] == ("no answer for 21 s: Failed to connect to the host via ssh: ssh: connect to "
                                     "host 10.77.0.52 port 22: No route to host")


def test_the_polls_come_after_a_quarter_of_the_time_waited_at_least_1_s_at_most_poll():
    clock = TickingClock()
    slept = []
    answers = iter([{"001-s1": dict(RUNNING)}] * 12 + [{"001-s1": {"state": "exited", "reason": "exited", "rc": 0,
                                                                   "files": {}}}])

    def sleep(seconds):
        slept.append(seconds)
        clock.now += seconds

    outcomes, _ = jobs.wait_jobs(lambda state, ids, extra: next(answers), [{"id": "001-s1"}], host="s1",
                                 show=lambda _line: None, poll=10, lost_after=60, clock=clock, sleep=sleep)
    assert [o["outcome"] for o in outcomes] == ["exited"]
    # 1 s until 4 s have passed, then a quarter of the time waited: 5 s -> 1.25 s, 6.25 s -> 1.5625 s, ...
    assert slept == pytest.approx([1, 1, 1, 1, 1, 1.25, 1.5625, 1.953125, 2.44140625, 3.0517578125, 3.814697265625,
                                   4.76837158203125])
    answers = iter([{"001-s1": dict(RUNNING)}] * 30 + [{"001-s1": {"state": "exited", "reason": "exited", "rc": 0,
                                                                   "files": {}}}])
    slept.clear()
    jobs.wait_jobs(lambda state, ids, extra: next(answers), [{"id": "001-s1"}], host="s1", show=lambda _line: None,
                   poll=10, lost_after=600, clock=clock, sleep=sleep)
    assert max(slept) == 10 and slept[-5:] == [10] * 5  # never longer than poll
