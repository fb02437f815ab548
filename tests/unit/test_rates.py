"""The fleet-wide rate budget (scanfleet.rates) through the planner (scanfleet.plan) to the job's nmap command
line (plugins/module_utils/job_model.py, as scanfleet.job_model): checks, split, cap, shares below 1, lost
scanners and the rates they hold, the plan's lines, the CLI."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from scanfleet import ScanfleetError, job_model, rates
from scanfleet import plan as runplan
from scanfleet import state as runstate
from scanfleet.cli import main as cli_main
from scanfleet.intervals import IntervalSet
from scanfleet.targets import parse_targets, plan_targets
from tests.conftest import unavailable

NOW = 1_795_255_900.0
OPTIONS = ["--privileged", "-T4", "-sS", "-sV", "-v"]


def ips(text: str) -> IntervalSet:
    return plan_targets(parse_targets(text), scope=["0.0.0.0/0", "::/0"]).addresses


def fresh(targets: str = "10.0.0.0/24") -> runstate.RunState:
    return runstate.new_state("r1", ips(targets), OPTIONS, NOW)


def plan(state, weights, *, available=None, budget=None, cap=None, now=NOW, timeout=0, kill_grace=0, round_no=1,
         session="s1"):
    limits = rates.check_limits(budget, cap, OPTIONS, scanners=len(weights), timeout=timeout, kill_grace=kill_grace)
    return runplan.plan_round(state, weights=weights, available=list(weights) if available is None else available,
                              session=session, round_no=round_no, now=now, limits=limits)


def sent(rp) -> dict[str, int]:
    """Host -> the --max-rate of its jobs, summed (what each scanner may send this round)."""
    return {h: sum(a.max_rate or 0 for a in attempts) for h, attempts in rp.assignments.items() if attempts}


# ---- checking the values, before anything is sent ---------------------------------------------------------


@pytest.mark.parametrize(("raw", "value"), [(None, None), ("", None), (300, 300), ("300", 300), (" 7 ", 7),
                                            (5.0, 5), (1, 1)])
def test_a_limit_is_a_whole_number_of_packets_per_second_or_none(raw, value):
    assert rates.rate_value(rates.BUDGET_VAR, raw) == value


@pytest.mark.parametrize(("raw", "fragment"), [
    (0, "=0 is zero"), ("0", "='0' is zero"), (-5, "=-5 is negative"), ("-5", "is negative"),
    (True, "=True is a boolean"), (False, "=False is a boolean"), ("fast", "='fast' is not a number"),
    ("1e3", "is not a number"), (2.5, "=2.5 is not a whole number"), (math.nan, "is not a finite number"),
    (math.inf, "is not a finite number"), ([300], "is not a number"), ({"pps": 3}, "is not a number"),
])
@pytest.mark.parametrize("name", [rates.BUDGET_VAR, rates.CAP_VAR])
def test_bad_limits_are_refused_naming_the_variable_the_value_and_the_fix(name, raw, fragment):
    with pytest.raises(ScanfleetError) as info:
        rates.check_limits(**({"budget": raw} if name == rates.BUDGET_VAR else {"cap": raw}))
    text = str(info.value)
    assert text.startswith(name + "=") and fragment in text
    assert f"give {name} a whole number of packets per second >= 1 (e.g. 300)" in text


@pytest.mark.parametrize("option", ["--max-rate", "--max-rate=50", "-max-rate", "--min-rate", "--min-rate=5",
                                    "--max-ra", "--min-rat"])
@pytest.mark.parametrize(("budget", "cap"), [(300, None), (None, 100), (300, 100)])
def test_the_users_own_rate_options_are_refused_with_a_limit(option, budget, cap):
    with pytest.raises(ScanfleetError) as info:
        rates.check_limits(budget, cap, ["-sV", option, "50"], scanners=3)
    text = str(info.value)
    assert text.startswith(f"nmap_scan_options/nmap_scan_options_extra contain {option} while ")
    assert f"remove {option} from the options" in text


@pytest.mark.parametrize("option", ["--max-retries", "--max-rtt-timeout", "--min-rtt-timeout", "--max-r",
                                    "--max-parallelism", "--min-hostgroup"])
def test_other_options_and_rate_options_without_a_limit_are_not_refused(option):
    assert rates.check_limits(300, None, ["-sV", option, "2"]).budget == 300
    assert not rates.check_limits(None, None, ["--max-rate", "50"]).active  # no limit: the user paces nmap


def test_a_cap_below_what_the_budget_needs_is_refused_with_the_numbers_of_the_fix():
    assert rates.check_limits(300, 100, scanners=3).cap == 100  # exactly enough
    with pytest.raises(ScanfleetError) as info:
        rates.check_limits(301, 100, scanners=3)
    assert str(info.value) == (
        "nmap_scan_max_rate_per_scanner=100 is below what nmap_scan_rate_budget=301 needs: 3 scanner(s) at 100 "
        "pkt/s each send at most 300 pkt/s, so the budget could never be used; raise "
        "nmap_scan_max_rate_per_scanner to at least 101, or lower nmap_scan_rate_budget to 300 or less")


def test_plan_run_refuses_bad_limits_before_writing_anything(tmp_path):
    plan = runplan.build_plan(targets=["10.77.0.41-44"], scope=["10.77.0.0/24"], resolver={})
    kwargs = {"results": tmp_path, "run_id": "r1", "plan": plan, "options": [*OPTIONS, "--max-rate", "10"],
              "weights": {"s1": 1, "s2": 1, "s3": 0}, "available": ["s1", "s2"], "unavailable": {},
              "session": "x", "round_no": 1, "now": NOW}
    with pytest.raises(ScanfleetError, match="contain --max-rate while nmap_scan_rate_budget=100 is set"):
        runplan.plan_run(**kwargs, rate_budget=100)
    with pytest.raises(ScanfleetError, match="raise nmap_scan_max_rate_per_scanner to at least 50,"):
        runplan.plan_run(**{**kwargs, "options": OPTIONS}, rate_budget=100, rate_cap=49)  # s3 has capacity 0
    with pytest.raises(ScanfleetError, match="is not a number"):
        runplan.plan_run(**{**kwargs, "options": OPTIONS}, rate_budget="fast")
    assert list(tmp_path.iterdir()) == []


# ---- the split -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("budget", "weights", "expected"), [
    (300, {"a": 1, "b": 1, "c": 1}, {"a": 100, "b": 100, "c": 100}),
    (100, {"a": 1, "b": 1, "c": 1}, {"a": 34, "b": 33, "c": 33}),  # the unit left goes to the first name
    (300, {"a": 2, "b": 1}, {"a": 200, "b": 100}),
    (10, {"a": 3, "b": 1, "c": 1}, {"a": 6, "b": 2, "c": 2}),
    (7, {"a": "1.5", "b": "1"}, {"a": 4, "b": 3}),  # capacities as the inventory gives them
])
def test_the_budget_is_split_by_capacity_in_integers_that_add_up_to_it(budget, weights, expected):
    rp = plan(fresh(), weights, budget=budget)
    assert sent(rp) == rp.rates == expected
    assert sum(rp.rates.values()) == budget
    assert all(a.max_rate >= 1 for a in rp.new)


@pytest.mark.parametrize("budget", range(1, 40))
def test_the_shares_never_exceed_the_budget_and_follow_capacity(budget):
    weights = {"a": 5, "b": 3, "c": 1, "d": 1}
    rp = plan(fresh(), weights, budget=budget)
    assert sum(rp.rates.values()) <= budget
    assert all(r >= 1 for r in rp.rates.values())
    shares = [rp.rates.get(h, 0) for h in "abcd"]
    assert shares == sorted(shares, reverse=True)  # more capacity, never a smaller share


def test_without_limits_nothing_changes():
    rp = plan(fresh(), {"a": 1, "b": 1})
    assert all(a.max_rate is None for a in rp.new) and rp.rates == {} and rp.rate_lines == []
    attempt = runplan._attempt_view(rp.new[0])
    argv, _, _ = job_model.command(job_model.Job("/base", "r1", attempt["id"]), attempt, job_params())
    assert not any(arg.startswith("--max-rate") for arg in argv)


def test_a_share_above_the_cap_is_lowered_and_the_plan_says_the_fleet_sends_less():
    rp = plan(fresh(), {"a": 2, "b": 1}, budget=300, cap=150)
    assert rp.rates == {"a": 150, "b": 100}
    assert rp.rate_lines == [
        "rate budget 300 pkt/s (nmap_scan_rate_budget), round 1: a 150, b 100 pkt/s; cap 150 pkt/s per scanner",
        "a: its share is lowered to the cap nmap_scan_max_rate_per_scanner=150 pkt/s",
        "the fleet sends at most 250 pkt/s, less than the budget 300 pkt/s (shares lowered to the cap)",
    ]


def test_a_cap_alone_gives_every_scanner_the_cap():
    rp = plan(fresh(), {"a": 2, "b": 1}, cap=40)
    assert rp.rates == {"a": 40, "b": 40}
    assert rp.rate_lines == ["rate cap 40 pkt/s per scanner (nmap_scan_max_rate_per_scanner), no fleet budget, "
                             "round 1: a 40, b 40 pkt/s"]


def test_a_scanner_whose_share_would_be_below_1_sits_out_and_gets_no_addresses():
    rp = plan(fresh(), {"a": 1, "b": 1, "c": 1}, budget=2)
    assert rp.rates == {"a": 1, "b": 1}
    assert rp.assignments["c"] == [] and sum(a.size for a in rp.new) == 256  # a and b scan everything
    assert ("round 1: c sits out (no addresses): its share of the 2 pkt/s left of nmap_scan_rate_budget=2 "
            "would be below 1 pkt/s") in rp.rate_lines
    assert not any("empty shard" in n for n in rp.notes)
    # by capacity: the heavy scanner is kept, the light one sits out
    rp = plan(fresh(), {"a": 1, "b": 10}, budget=5)
    assert rp.rates == {"b": 5} and rp.assignments["a"] == []


def test_a_scanner_without_addresses_gets_no_share_of_the_budget():
    rp = plan(fresh("10.0.0.1-2"), {"a": 1, "b": 1, "c": 1}, budget=90)
    assert rp.rates == {"a": 45, "b": 45}  # c has an empty shard: the budget is split over a and b


def test_a_scanner_with_two_families_splits_its_share_over_its_jobs():
    rp = plan(fresh("10.0.0.0/30, 2001:db8::/126"), {"a": 1, "b": 1}, budget=9)
    by_host = {h: [(a.family, a.size, a.max_rate) for a in attempts] for h, attempts in rp.assignments.items()}
    assert by_host == {"a": [(4, 4, 5)], "b": [(6, 4, 4)]}
    rp = plan(fresh("10.0.0.0/29, 2001:db8::/127"), {"a": 1}, budget=12)
    assert [(a.family, a.size, a.max_rate) for a in rp.new] == [(4, 8, 9), (6, 2, 3)]  # 1 each, 10 by size
    with pytest.raises(ScanfleetError, match=r"a runs 2 jobs at once this round .* its share of the rate is 1 pkt/s"):
        plan(fresh("10.0.0.0/29, 2001:db8::/127"), {"a": 1}, budget=1)


# ---- lost scanners, resumed jobs -------------------------------------------------------------------------


def lose(state, host, now=NOW):
    for a in state.attempts:
        if a.host == host and a.status == "assigned":
            a.status, a.outcome, a.recorded = "lost", "unreachable", now


def test_when_a_scanner_is_lost_its_rate_stays_held_while_its_nmap_may_still_run():
    state = fresh()
    first = plan(state, {"a": 1, "b": 1, "c": 1}, budget=300)
    assert first.rates == {"a": 100, "b": 100, "c": 100}
    for a in state.attempts:  # a and b finished, c's host stopped answering mid-scan
        a.status = "finished" if a.host != "c" else a.status
    lose(state, "c", NOW + 10)
    second = plan(state, {"a": 1, "b": 1, "c": 1}, available=["a", "b"], budget=300, round_no=2, now=NOW + 20)
    assert second.rates == {"a": 100, "b": 100}  # c's 100 may still be sent: the survivors share 200
    assert sum(second.rates.values()) + 100 == 300
    assert ("c: 100 pkt/s held by attempt 003-c (lost, its nmap may still run): counted against the budget"
            in second.rate_lines)
    assert {a.host for a in second.new} == {"a", "b"}


def test_a_job_of_an_earlier_run_whose_scanner_is_away_now_holds_its_rate():
    """The controller went away mid-scan; the next playbook run cannot reach c: c's job is recorded lost at
    planning (its nmap may still run, detached) and its rate is held."""
    state = fresh()
    plan(state, {"a": 1, "b": 1, "c": 1}, budget=300)  # every attempt still assigned
    rp = plan(state, {"a": 1, "b": 1, "c": 1}, available=["a", "b"], budget=300, session="s2", now=NOW + 60)
    assert [a.id for a in rp.lost] == ["003-c"] and [a.id for a in rp.reattached] == ["001-a", "002-b"]
    # 300 - 100 (a, resumed) - 100 (b, resumed) - 100 (c, held): nothing left, c's addresses wait
    assert rp.new == [] and rp.rates == {"a": 100, "b": 100} and rp.todo.size == 85
    assert "c: 100 pkt/s held by attempt 003-c (lost, its nmap may still run): counted against the budget" in (
        rp.rate_lines)
    assert ("round 1: 85 addresses wait for the next round: the rate budget is held by jobs that run or may run "
            "(001-a on a 100 (resumed), 002-b on b 100 (resumed), 003-c on c 100 (lost, may still run))") in rp.notes
    for a in rp.reattached:  # a and b finish; the next round splits what c does not hold
        a.status = "finished"
    rp = plan(state, {"a": 1, "b": 1, "c": 1}, available=["a", "b"], budget=300, session="s2", round_no=2,
              now=NOW + 120)
    assert rp.rates == {"a": 100, "b": 100} and sum(a.size for a in rp.new) == 85


def test_a_lost_scanners_rate_is_released_by_the_timeout_or_when_it_answers_again():
    def scenario(*, timeout, now, available):
        state = fresh()
        plan(state, {"a": 1, "b": 1}, budget=200)
        for a in state.attempts:
            a.status = "finished" if a.host == "a" else a.status
        lose(state, "b", NOW + 10)
        return plan(state, {"a": 1, "b": 1}, available=available, budget=200, timeout=timeout, kill_grace=10,
                    round_no=2, now=now)

    assert scenario(timeout=0, now=NOW + 10**6, available=["a"]).rates == {"a": 100}  # no timeout: held
    assert scenario(timeout=600, now=NOW + 10 + 609, available=["a"]).rates == {"a": 100}  # may still run
    assert scenario(timeout=600, now=NOW + 10 + 610, available=["a"]).rates == {"a": 200}  # ended by its host
    # answering again (a later playbook run): its stale jobs are ended before new jobs start
    assert scenario(timeout=0, now=NOW + 100, available=["a", "b"]).rates == {"a": 100, "b": 100}


@pytest.mark.parametrize("outcome", ["stalled", "timeout", "dead", "exited", "missing"])
def test_jobs_known_to_have_ended_hold_nothing(outcome):
    state = fresh()
    plan(state, {"a": 1, "b": 1}, budget=200)
    for a in state.attempts:
        a.status, a.outcome = ("finished", "finished") if a.host == "a" else ("failed", outcome)
    rp = plan(state, {"a": 1, "b": 1}, available=["a"], budget=200, round_no=2)
    assert rp.rates == {"a": 200}


def test_a_resumed_job_keeps_its_rate_and_the_new_ones_share_what_is_left():
    state = fresh()
    plan(state, {"a": 1, "b": 1}, budget=200)
    a_job = next(a for a in state.attempts if a.host == "a")
    for a in state.attempts:
        a.status = "finished" if a.host == "b" else a.status
    # b's shard is to scan again (say its XML was lost), a's job still runs and is attached to
    next(a for a in state.attempts if a.host == "b").status = "failed"
    rp = plan(state, {"a": 1, "b": 1}, budget=200, cap=150, round_no=1, session="s2")
    assert rp.reattached == [a_job] and a_job.max_rate == 100
    new = {a.host: a.max_rate for a in rp.new}
    assert new == {"a": 50, "b": 50}  # 100 left, split by capacity; a's cap leaves it room for 50
    assert rp.rates == {"a": 150, "b": 50}


def test_a_job_planned_before_a_limit_was_set_is_named_when_resumed():
    state = fresh()
    plan(state, {"a": 1, "b": 1})  # no budget: no --max-rate
    next(a for a in state.attempts if a.host == "b").status = "failed"
    rp = plan(state, {"a": 1, "b": 1}, budget=100, session="s2")
    assert {a.host: a.max_rate for a in rp.new} == {"a": 50, "b": 50}
    assert rp.rate_lines[-1].startswith("resumed without --max-rate (planned before a rate limit was set; a running "
                                        "nmap keeps its pace): 001-a; the limits apply to the new jobs only.")


def test_held_rates_that_leave_no_budget_stop_the_plan_with_the_fix():
    state = fresh()
    plan(state, {"a": 1, "b": 1}, budget=200)
    for a in state.attempts:
        a.status = "finished" if a.host == "a" else a.status
    lose(state, "b")
    with pytest.raises(ScanfleetError) as info:
        plan(state, {"a": 1, "b": 1}, available=["a"], budget=100, round_no=2)  # the budget was lowered
    text = str(info.value)
    assert "128 addresses left to scan but the rate budget leaves no scanner 1 pkt/s" in text
    assert "held: 002-b on b 100 (lost, may still run)" in text
    assert "raise nmap_scan_rate_budget (or nmap_scan_max_rate_per_scanner)" in text


# ---- to the job's command line, the plan's output, the CLI ------------------------------------------------


def job_params(**changes):
    return {"nmap": "/opt/nmap", "options": ["--privileged", "-T4", "-sV"], "versiondb": "", "stats_every": 10,
            "script_args": "", **changes}


def test_each_jobs_share_is_on_its_nmap_command_line(tmp_path):
    plan_ = runplan.build_plan(targets=["10.77.0.1-30"], scope=["10.77.0.0/24"], resolver={})
    result = runplan.plan_run(results=tmp_path, run_id="r1", plan=plan_, options=OPTIONS,
                              weights={"s1": 2, "s2": 1}, available=["s1", "s2"], unavailable={}, session="x",
                              round_no=1, now=NOW, rate_budget="300")
    assert result["rates"] == {"s1": 200, "s2": 100} and result["rate_total"] == 300
    assert (result["rate_budget"], result["rate_cap"]) == (300, None)
    for host, rate in (("s1", 200), ("s2", 100)):
        (attempt,) = result["assignments"][host]
        assert attempt["max_rate"] == rate
        argv, _, _ = job_model.command(job_model.Job("/base", "r1", attempt["id"]), attempt, job_params())
        assert argv[argv.index("--max-rate") + 1] == str(rate) and argv.count("--max-rate") == 1
    assert "s1: 001-s1 (new) 20 addresses, --max-rate 200: 10.77.0.1-10.77.0.20" in result["lines"]
    assert "rate budget 300 pkt/s (nmap_scan_rate_budget), round 1: s1 200, s2 100 pkt/s" in result["lines"]
    saved = json.loads((tmp_path / "r1" / runstate.STATE_FILE).read_text())
    assert [a["max_rate"] for a in saved["attempts"]] == [200, 100]  # kept for a resume
    # the rate is not part of the run's identity: the same run resumes with another budget
    again = runplan.plan_run(results=tmp_path, run_id="r1", plan=plan_, options=OPTIONS, weights={"s1": 2, "s2": 1},
                             available=["s1", "s2"], unavailable={}, session="y", round_no=1, now=NOW,
                             rate_budget=600)
    assert again["resumed"] and again["rates"] == {"s1": 200, "s2": 100}  # resumed jobs keep their rate


def test_the_cli_plan_shows_each_scanners_rate(tmp_path, capsys):
    rc = cli_main(["run", "plan", "--scope", "10.77.0.0/24", "--results", str(tmp_path), "--scanner", "s1=1",
                   "--scanner", "s2=1", "--rate-budget", "100", "--max-rate-per-scanner", "60", "--dry-run",
                   "--target", "10.77.0.1-10"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "s1: 001-s1 (new) 5 addresses, --max-rate 50: 10.77.0.1-10.77.0.5" in out
    assert "rate budget 100 pkt/s (nmap_scan_rate_budget), round 1: s1 50, s2 50 pkt/s; cap 60 pkt/s per scanner" in out
    rc = cli_main(["run", "plan", "--scope", "10.77.0.0/24", "--results", str(tmp_path), "--scanner", "s1=1",
                   "--rate-budget", "fast", "--dry-run", "--target", "10.77.0.1-10"])
    assert rc != 0
    assert "nmap_scan_rate_budget='fast' is not a number" in capsys.readouterr().err


def test_the_share_really_paces_nmap(tmp_path):
    """The stock nmap run with a planned job's command line, on loopback in a private network namespace: 150 ports
    at the job's --max-rate 50 (a budget of 100 over two equal scanners) take at least 3 s of nmap's own time
    (nmap 7.93 without the option: 0.11 s for 300 ports here)."""
    nmap = shutil.which("nmap")
    if nmap is None or subprocess.run(["unshare", "--net", "true"], capture_output=True, check=False).returncode:
        unavailable("needs nmap and a network namespace (unshare --net, as root; Debian packages nmap, util-linux)")
    rp = plan(fresh("127.0.0.1-2"), {"s1": 1, "s2": 1}, budget=100)
    attempt = runplan._attempt_view(rp.assignments["s1"][0])
    job = job_model.Job(str(tmp_path), "r1", attempt["id"])
    Path(job.path("out")).mkdir(parents=True)
    Path(job.path("targets")).write_text("127.0.0.1\n")
    argv, _, _ = job_model.command(job, attempt, job_params(nmap=nmap, options=["-n", "-Pn", "-sT", "-p", "1-150"]))
    subprocess.run(["unshare", "--net", "sh", "-c", 'ip link set lo up && exec "$@" >/dev/null', "sh", *argv],
                   check=True, timeout=120)
    root = ET.parse(job.path("out", "scan.xml")).getroot()
    assert " --max-rate 50 " in root.get("args")
    assert float(root.find("runstats/finished").get("elapsed")) >= 150 / 50


def test_hold_rate_adds_min_rate_at_the_jobs_share_and_nothing_without_a_share():
    job = job_model.Job("/base", "r1", "001-s1")
    held, _, _ = job_model.command(job, {"id": "001-s1", "max_rate": 700}, job_params(hold_rate=True))
    assert held[held.index("--max-rate") + 1] == "700" and held[held.index("--min-rate") + 1] == "700"
    plain, _, _ = job_model.command(job, {"id": "001-s1", "max_rate": 700}, job_params())
    assert "--min-rate" not in plain and "--max-rate" in plain
    unlimited, _, _ = job_model.command(job, {"id": "001-s1", "max_rate": None}, job_params(hold_rate=True))
    assert "--min-rate" not in unlimited and "--max-rate" not in unlimited
