"""The fleet-wide progress line (scanfleet.progress) and the wait that feeds it (scanfleet.jobs.wait_jobs): what
counts as done, when the time left is estimated, one line per poll for the whole fleet although each scanner's wait
runs in its own process. The nmap output is the real ``--stats-every`` output of tests/unit/test_jobs.py."""

from __future__ import annotations

import json
import multiprocessing

import pytest

from scanfleet import jobs, progress
from tests.unit.test_jobs import STATS_SECOND_HOST, STATS_SERVICE


class Clock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def board(tmp_path, host, clock, lines, *, total=100, covered=0, round_id="s1-1", every=10, quiet_every=60):
    return progress.FleetBoard(tmp_path / "progress", host, round_id=round_id, total=total, covered=covered,
                               show=lines.append, every=every, quiet_every=quiet_every, clock=clock)


@pytest.mark.parametrize(("kwargs", "done"), [
    ({"outcome": "finished", "hosts_done": 3}, 10),  # the whole shard, whatever nmap listed
    ({"outcome": "unreachable", "hosts_done": 7}, 0),  # lost: planned again
    ({"outcome": "stalled", "hosts_done": 4, "hosts_completed": 9}, 4),  # what a salvage keeps
    ({"outcome": "exited", "hosts_done": None}, 0),
    ({"hosts_completed": 6, "hosts_done": 2}, 6),  # running: nmap's count, down hosts included
    ({"hosts_completed": 1, "hosts_done": 3}, 3),
    ({"hosts_completed": 40, "hosts_done": 0}, 10),  # never more than the shard
    ({}, 0),
])
def test_what_counts_as_done_for_a_job(kwargs, done):
    assert progress.job_done(10, **kwargs) == done


@pytest.mark.parametrize(("progressed", "seconds", "left"), [
    (0, 600, None),  # nothing done yet
    (4, 600, None),  # below 5% of the 100 left at the start
    (5, 29, None),  # too early
    (5, 30, 95 * 30 / 5),
    (50, 100, 50 * 100 / 50),
])
def test_the_time_left_is_estimated_at_the_rounds_pace_once_there_is_enough_data(progressed, seconds, left):
    assert progress.estimate(total=100, done=progressed, left_at_start=100, progressed=progressed,
                             seconds=seconds) == left


def test_the_fleet_line_reads_the_scanners_figures_and_prints_once_per_poll(tmp_path):
    clock, lines = Clock(), []
    a = board(tmp_path, "scanner1", clock, lines, total=1024, covered=24)
    b = board(tmp_path, "scanner2", clock, lines, total=1024, covered=24)
    no_estimate = "no estimate of the time left yet (after 50 of them done in this round and 30 s)"
    assert a({"001-scanner1": (500, 0, False)}) == (
        f"fleet: 24/1024 addresses done (2.3%), 1 scanner(s) reporting; {no_estimate}")
    assert b({"002-scanner2": (500, 0, False)}) is None  # the same poll: a line was just printed
    clock.now += 10
    assert b({"002-scanner2": (500, 20, False)}) == (
        f"fleet: 44/1024 addresses done (4.3%), 2 scanner(s) reporting; {no_estimate}")
    clock.now += 10
    assert a({"001-scanner1": (500, 80, False)}) == (
        f"fleet: 124/1024 addresses done (12.1%), 2 scanner(s) reporting; {no_estimate}")  # only 20 s
    clock.now += 5
    assert b({"002-scanner2": (500, 90, False)}) is None  # within the poll interval of the last line
    clock.now += 15
    assert b({"002-scanner2": (500, 500, True)}) == (
        "fleet: 604/1024 addresses done (59.0%), 2 scanner(s) reporting; about 0:00:29 left (at 14.50 "
        "addresses/s over 0:00:40 of this round)")  # (1024 - 604) / (580 / 40)
    clock.now += 10
    assert a({"001-scanner1": (500, 500, True)}) == (
        "fleet: 1024/1024 addresses done (100.0%), 2 scanner(s) reporting; all done")
    assert len(lines) == 5
    files = sorted(p.name for p in (tmp_path / "progress").iterdir())
    assert files == ["fleet.json", "fleet.lock", "scanner1.json", "scanner2.json"]
    assert oct((tmp_path / "progress").stat().st_mode & 0o777) == "0o700"
    assert json.loads((tmp_path / "progress" / "scanner2.json").read_text())["jobs"] == {
        "002-scanner2": {"size": 500, "done": 500, "ended": True, "first": 0}}


def test_the_estimate_uses_what_this_round_did_not_what_a_resumed_job_had_done(tmp_path):
    clock, lines = Clock(), []
    a = board(tmp_path, "s1", clock, lines, total=200, covered=0, every=1)
    a({"001-s1": (200, 100, False)})  # a resumed job, half done when the round began
    clock.now += 60
    line = a({"001-s1": (200, 110, False)})
    # 10 addresses in 60 s; 5% of the 100 left at the start is 5: enough data
    assert line == ("fleet: 110/200 addresses done (55.0%), 1 scanner(s) reporting; about 0:09:00 left (at 0.17 "
                    "addresses/s over 0:01:00 of this round)")


def test_an_earlier_rounds_figures_are_left_out(tmp_path):
    clock, lines = Clock(), []
    board(tmp_path, "s1", clock, lines, total=100, covered=0, round_id="s1-1")({"001-s1": (50, 50, True)})
    clock.now += 100
    second = board(tmp_path, "s2", clock, lines, total=100, covered=50, round_id="s1-2")
    # the earlier round's scanner s1 is not counted (its shard is in covered now); what s2 had done at its first
    # poll is the round's starting point: 5% of the 40 left then is 2
    assert second({"003-s2": (50, 10, False)}) == (
        "fleet: 60/100 addresses done (60.0%), 1 scanner(s) reporting; no estimate of the time left yet (after 2 "
        "of them done in this round and 30 s)")


def test_the_line_counts_what_the_phase_scans():
    assert progress.fleet_line(total=40, done=10, reporting=2, left_at_start=40, progressed=10, seconds=60,
                               unit="(host, port) pairs") == (
        "fleet: 10/40 (host, port) pairs done (25.0%), 2 scanner(s) reporting; about 0:03:00 left (at 0.17 "
        "(host, port) pairs/s over 0:01:00 of this round)")


def test_an_unchanged_line_is_printed_again_after_quiet_every(tmp_path):
    clock, lines = Clock(), []
    a = board(tmp_path, "s1", clock, lines, every=10, quiet_every=60)
    for _ in range(13):
        a({"001-s1": (100, 0, False)})
        clock.now += 10
    assert len(lines) == 3  # at 0, 60 and 120 s


def _one_scanner(directory, host, rounds, queue):
    clock, lines = Clock(), []
    b = progress.FleetBoard(directory, host, round_id="r", total=300, covered=0, show=lines.append, every=10,
                            clock=clock)
    for i in range(rounds):
        clock.now = 1_000.0 + 10 * i
        b({f"00{host[-1]}-{host}": (100, 10 * i, False)})
    queue.put(lines)


def test_scanners_waiting_in_separate_processes_print_each_line_once(tmp_path):
    """As Ansible runs them: one worker process per scanner, all writing the same directory at the same time."""
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_one_scanner, args=(tmp_path, f"s{i}", 8, queue)) for i in (1, 2, 3)]
    for p in procs:
        p.start()
    printed = [line for _ in procs for line in queue.get(timeout=60)]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert len(printed) <= 8  # at most one line per poll interval for the whole fleet, not one per scanner
    assert len(printed) == len(set(printed)) and printed
    assert json.loads((tmp_path / "fleet.json").read_text())["round"] == "r"


def test_the_wait_feeds_the_board_after_every_poll_and_at_the_end(tmp_path):
    clock, lines = Clock(), []
    statuses = iter([
        {"001-s1": {"state": "running", "tail": STATS_SERVICE, "hosts_done": 0},
         "002-s1": {"state": "running", "tail": "", "hosts_done": 0}},
        {"001-s1": {"state": "running", "tail": STATS_SECOND_HOST, "hosts_done": 1},
         "002-s1": {"state": "exited", "reason": "finished", "rc": 0, "hosts_done": 1, "files": {}}},
        {"001-s1": {"state": "exited", "reason": "finished", "rc": 0, "hosts_done": 2, "files": {}}},
    ])
    seen = []

    def call(state, ids, extra):
        return {i: s for i, s in next(statuses).items() if i in ids}

    def sleep(seconds):
        clock.now += seconds

    b = board(tmp_path, "s1", clock, lines, total=6, covered=1, every=1)

    def feed(figures):
        seen.append(figures)
        return b(figures)

    outcomes, _ = jobs.wait_jobs(call, [{"id": "001-s1", "size": 2}, {"id": "002-s1", "size": 3}], host="s1",
                                 show=lambda _line: None, poll=10, lost_after=60, clock=clock, sleep=sleep,
                                 progress=feed)
    assert [o["outcome"] for o in outcomes] == ["finished", "finished"]
    assert seen == [
        {"001-s1": (2, 0, False), "002-s1": (3, 0, False)},  # Stats: 0 hosts completed
        {"001-s1": (2, 1, False), "002-s1": (3, 3, True)},  # 1 host completed; 002 finished: its whole shard
        {"001-s1": (2, 2, True), "002-s1": (3, 3, True)},
        {"001-s1": (2, 2, True), "002-s1": (3, 3, True)},  # the end
    ]
    assert lines[-1] == "fleet: 6/6 addresses done (100.0%), 1 scanner(s) reporting; all done"


def test_a_lost_host_gives_its_last_figures_with_nothing_done(tmp_path):
    seen = []

    def call(state, ids, extra):
        raise ConnectionError("no route")

    clock = Clock(0.0)

    def sleep(seconds):
        clock.now += seconds

    jobs.wait_jobs(call, [{"id": "001-s1", "size": 4}], host="s1", show=lambda _line: None, poll=5, lost_after=10,
                   transient=(ConnectionError,), clock=clock, sleep=sleep, progress=seen.append)
    assert seen[-1] == {"001-s1": (4, 0, True)}


def test_the_board_never_stops_the_wait(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    b = progress.FleetBoard(blocker / "progress", "s1", round_id="r", total=1, covered=0, show=print)
    assert b({"001-s1": (1, 0, False)}) is None
