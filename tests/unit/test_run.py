"""Tests of scanfleet.state, .plan, .collect, .report and the job rules of .run: run state, resume,
per-shard completion, reassignment, coverage, progress.

The XML inputs are the real nmap outputs of tests/fixtures/xml (written by nmap in a private network
namespace, see make_fixtures.sh): complete shards (shard-a/-b/-c), a scan killed by SIGTERM between two
hosts (shard-killed: 127.0.0.5-8, two hosts written) and a file cut inside its second host (shard-cut:
127.0.0.11-13, one complete host). The progress lines are real ``--stats-every`` output of the patched nmap
7.95 in the lab (molecule/scan). Expected values are written out from reading those files.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
from pathlib import Path

import pytest

from scanfleet import ScanfleetError, collect, jobs
from scanfleet import plan as runplan
from scanfleet import report as runreport
from scanfleet import state as runstate
from scanfleet.files import sha256_file
from scanfleet.intervals import IntervalSet
from scanfleet.targets import parse_targets, plan_targets

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "xml"
XML = {name: FIXTURES / name / "scan.xml" for name in ("shard-a", "shard-b", "shard-c", "shard-killed",
                                                     "shard-cut")}
NOW = 1_795_255_900.0
OPTIONS = ["--privileged", "-T4", "-sS", "-sV", "-v"]


def ips(text: str) -> IntervalSet:
    return plan_targets(parse_targets(text), scope=["0.0.0.0/0", "::/0"]).addresses


def state_for(targets: str, options: list[str] = OPTIONS, run_id: str = "t1") -> runstate.RunState:
    return runstate.new_state(run_id, ips(targets), options, NOW)


def attempt(state: runstate.RunState, host: str, targets: str, *, family: int = 4) -> runstate.Attempt:
    state.seq += 1
    addresses = ips(targets)
    a = runstate.Attempt(id=f"{state.seq:03d}-{host}", host=host, family=family, lines=addresses.to_lines(),
                    size=addresses.size, session="s0", round=1, created=NOW)
    state.attempts.append(a)
    return a


def fetched(tmp_path: Path, state: runstate.RunState, a: runstate.Attempt, fixture: str | None) -> dict[str, str]:
    """Put a fixture where the playbook fetches an attempt's XML; return {name: sha256} as the host reports."""
    directory = collect.attempt_dir(tmp_path, state.run_id, a)
    directory.mkdir(parents=True, exist_ok=True)
    if fixture is None:
        return {}
    shutil.copy(XML[fixture], directory / "scan.xml")
    return {"scan.xml": sha256_file(directory / "scan.xml")}


def record(tmp_path: Path, state: runstate.RunState, a: runstate.Attempt, fixture: str | None,
           outcome: str) -> list[str]:
    files = fetched(tmp_path, state, a, fixture)
    return collect.record_attempt(state, a, outcome=outcome, directory=collect.attempt_dir(tmp_path, state.run_id, a),
                              remote_sha256=files, session="s1", now=NOW)


# ---- run ids, state file, fingerprints ------------------------------------------------------------------


@pytest.mark.parametrize(("run_id", "ok"), [
    ("demo", True), ("2026-11-21.dmz_1", True), ("scan-1f40f4626328", True), ("a" * 64, True),
    ("", False), ("../etc", False), ("-rf", False), ("a/b", False), ("a b", False), ("a" * 65, False),
    (".hidden", False),
])
def test_run_ids_are_plain_directory_names(run_id, ok):
    if ok:
        assert runstate.check_run_id(run_id) == run_id
    else:
        with pytest.raises(ScanfleetError, match="not usable as a directory name"):
            runstate.check_run_id(run_id)


def test_state_round_trips_through_a_private_file(tmp_path):
    state = state_for("10.0.0.0/30, 2001:db8::1")
    attempt(state, "scanner1", "10.0.0.0/31")
    directory = tmp_path / "results" / "t1"
    runstate.save_state(directory, state)
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(directory / runstate.STATE_FILE).st_mode) == 0o600
    loaded = runstate.load_state(directory)
    assert loaded == state
    assert loaded.targets() == ips("10.0.0.0/30, 2001:db8::1")
    assert runstate.load_state(tmp_path / "nothing") is None


@pytest.mark.parametrize("content", ["{not json", "[]", '{"version": 99, "fingerprint": "x"}'])
def test_a_damaged_state_file_is_refused_with_the_fix(tmp_path, content):
    (tmp_path / runstate.STATE_FILE).write_text(content)
    with pytest.raises(ScanfleetError, match="move it away"):
        runstate.load_state(tmp_path)


@pytest.mark.parametrize(("before", "after"), [
    ("10.0.0.0/30", "10.0.0.0-10.0.0.3"),
    ("10.0.0.0/30", "10.0.0.0-3"),
    ("10.0.0.1, 10.0.0.0, 10.0.0.2, 10.0.0.3", "10.0.0.0/30"),
])
def test_the_same_targets_written_differently_resume_the_same_run(before, after):
    state = state_for(before)
    runstate.check_resume(state, ips(after), OPTIONS)
    assert runstate.derived_run_id(runstate.run_fingerprints(ips(before), OPTIONS)[0]) == \
        runstate.derived_run_id(runstate.run_fingerprints(ips(after), OPTIONS)[0])


@pytest.mark.parametrize(("targets", "options", "fragment"), [
    ("10.0.0.0/29", OPTIONS, "belongs to a different target set: it was planned for 4 addresses"),
    ("10.0.0.1", OPTIONS, "now the targets are 1 addresses (10.0.0.1"),
    ("10.0.0.0/30", [*OPTIONS, "-p", "1-1024"], "was scanned with other nmap options"),
])
def test_a_run_id_of_another_target_set_or_other_options_is_refused(tmp_path, targets, options, fragment):
    state = state_for("10.0.0.0/30")
    runstate.save_state(tmp_path / "t1", state)
    with pytest.raises(ScanfleetError, match="choose a new run id") as info:
        runstate.open_run(tmp_path, "t1", ips(targets), options, NOW)
    assert fragment in str(info.value)


def test_open_run_creates_or_resumes(tmp_path):
    state, resumed = runstate.open_run(tmp_path, "t1", ips("10.0.0.0/30"), OPTIONS, NOW)
    assert not resumed and state.total == 4
    runstate.save_state(tmp_path / "t1", state)
    again, resumed = runstate.open_run(tmp_path, "t1", ips("10.0.0.0-3"), OPTIONS, NOW)
    assert resumed and again.fingerprint == state.fingerprint


# ---- planning rounds -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("targets", "weights", "sizes"), [
    ("10.0.0.0/28", {"a": 1, "b": 1, "c": 1}, {"a": 6, "b": 5, "c": 5}),
    ("10.0.0.0/28", {"a": 2, "b": 1, "c": 1}, {"a": 8, "b": 4, "c": 4}),
    ("10.0.0.1-3", {"a": 1, "b": 1, "c": 1, "d": 1}, {"a": 1, "b": 1, "c": 1}),  # d: empty shard, skipped
    ("10.0.0.1", {"a": 0, "b": 1}, {"b": 1}),
])
def test_a_fresh_round_partitions_the_targets_by_capacity(targets, weights, sizes):
    state = state_for(targets)
    rp = runplan.plan_round(state, weights=weights, available=weights, session="s1", round_no=1, now=NOW)
    got = {h: sum(a.size for a in attempts) for h, attempts in rp.assignments.items() if attempts}
    assert got == sizes
    assert set(rp.assignments) == set(weights)  # every available host is listed, maybe with nothing
    union = IntervalSet()
    for a in rp.new:
        assert not (union & a.addresses())
        union = union | a.addresses()
    assert union == state.targets() == rp.todo
    assert [a.id for a in rp.new] == [f"{i:03d}-{a.host}" for i, a in enumerate(rp.new, start=1)]


def test_planning_is_deterministic():
    plans = []
    for _ in range(2):
        state = state_for("10.0.0.0/24, 10.0.2.0/25")
        rp = runplan.plan_round(state, weights={"a": 1, "b": 2, "c": 1}, available=["a", "b", "c"], session="s",
                            round_no=1, now=NOW, mode="interleaved", seed=7)
        plans.append([(a.id, a.lines) for a in rp.new])
    assert plans[0] == plans[1]


def test_mixed_families_give_one_attempt_per_family_with_ipv6_flagged():
    state = state_for("10.0.0.0/31, 2001:db8::/127")
    rp = runplan.plan_round(state, weights={"a": 1}, available=["a"], session="s", round_no=1, now=NOW)
    assert [(a.family, a.lines) for a in rp.new] == [(4, ["10.0.0.0/31"]), (6, ["2001:db8::/127"])]
    assert [runplan._attempt_view(a)["ipv6"] for a in rp.new] == [False, True]


def test_unavailable_hosts_get_nothing_and_none_available_is_a_clear_error():
    state = state_for("10.0.0.0/29")
    rp = runplan.plan_round(state, weights={"a": 1, "b": 1, "c": 1}, available=["b"],
                        unavailable={"a": "unreachable at the start", "c": "stalled in attempt 002-c"},
                        session="s", round_no=1, now=NOW)
    assert {a.host for a in rp.new} == {"b"} and sum(a.size for a in rp.new) == 8
    assert "not used: a (unreachable at the start), c (stalled in attempt 002-c)" in rp.notes[0]
    state = state_for("10.0.0.0/29")
    with pytest.raises(ScanfleetError) as info:
        runplan.plan_round(state, weights={"a": 1, "b": 1}, available=[], unavailable={"a": "unreachable at the start"},
                       session="s", round_no=1, now=NOW)
    assert "8 addresses left to scan (10.0.0.0-10.0.0.7) but no scanner host is available" in str(info.value)
    assert "a: unreachable at the start; b: not available" in str(info.value)
    assert "re-run the same command to resume" in str(info.value)


@pytest.mark.parametrize(("available", "reattached", "lost"), [
    (["a", "b"], ["001-a"], []),  # the controller went away: the same host gets its attempt again
    (["b"], [], ["001-a"]),  # that host is gone: the attempt is lost, its addresses planned again
])
def test_attempts_still_assigned_are_resumed_on_their_host_or_lost(available, reattached, lost):
    state = state_for("10.0.0.0/30")
    first = attempt(state, "a", "10.0.0.0/31")
    rp = runplan.plan_round(state, weights={"a": 1, "b": 1}, available=available, session="s2", round_no=1, now=NOW)
    assert [a.id for a in rp.reattached] == reattached
    assert [a.id for a in rp.lost] == lost
    new = IntervalSet().union(*(a.addresses() for a in rp.new)) if rp.new else IntervalSet()
    if reattached:
        assert first.status == "assigned" and rp.assignments["a"][0] is first
        assert new == ips("10.0.0.2/31")  # not the reattached addresses
    else:
        assert first.status == "lost" and "a not available before its result was fetched" in first.detail
        assert new == ips("10.0.0.0/30")


# ---- recording what came back (real nmap XML) -------------------------------------------------------------


def test_a_complete_shard_is_finished_including_hosts_nmap_did_not_list(tmp_path):
    state = state_for("127.0.0.4, 127.0.0.10")
    a = attempt(state, "b", "127.0.0.4, 127.0.0.10")
    assert record(tmp_path, state, a, "shard-c", "finished") == []
    assert a.status == "finished" and a.complete and a.exit == "success"
    # 127.0.0.10 is down and, without -v, not in the XML: the complete run still covers it
    assert collect.covered(state) == ips("127.0.0.4, 127.0.0.10")
    assert a.files == {"scan.xml": sha256_file(XML["shard-c"])}


@pytest.mark.parametrize(("fixture", "shard", "kept", "rest", "why"), [
    ("shard-killed", "127.0.0.5-8", ["127.0.0.5", "127.0.0.6"], "127.0.0.7-8", "no </nmaprun>"),
    ("shard-cut", "127.0.0.11-13", ["127.0.0.11"], "127.0.0.12-13", "no </nmaprun>"),
])
def test_a_truncated_shard_keeps_its_complete_hosts_and_only_the_rest_is_planned_again(
        tmp_path, fixture, shard, kept, rest, why):
    state = state_for(shard)
    a = attempt(state, "a", shard)
    notes = record(tmp_path, state, a, fixture, "stalled")
    assert a.status == "partial" and a.complete is False and a.kept == kept
    assert why in a.detail and a.detail.startswith("stalled")
    assert f"{len(kept)} host" in notes[0] and f"{ips(rest).size} of {a.size} addresses planned again" in notes[0]
    assert collect.covered(state) == ips(", ".join(kept))
    rp = runplan.plan_round(state, weights={"a": 1, "b": 1, "c": 1}, available=["b", "c"],
                        unavailable={"a": "stalled in attempt 001-a"}, session="s1", round_no=2, now=NOW)
    assert {x.host for x in rp.new} <= {"b", "c"}
    assert IntervalSet().union(*(x.addresses() for x in rp.new)) == ips(rest) == rp.todo


@pytest.mark.parametrize(("outcome", "status"), [("dead", "failed"), ("exited", "failed"), ("unreachable", "lost")])
def test_no_xml_means_the_whole_shard_is_planned_again(tmp_path, outcome, status):
    state = state_for("127.0.0.5-8")
    a = attempt(state, "a", "127.0.0.5-8")
    notes = record(tmp_path, state, a, None, outcome)
    assert a.status == status and a.kept == []
    assert "its 4 addresses planned again" in notes[0]
    assert collect.coverage(state).missing == ips("127.0.0.5-8")


def test_a_file_that_is_not_nmap_xml_fails_the_attempt_with_the_reason(tmp_path):
    state = state_for("127.0.0.4")
    a = attempt(state, "a", "127.0.0.4")
    directory = collect.attempt_dir(tmp_path, state.run_id, a)
    directory.mkdir(parents=True)
    (directory / "scan.xml").write_text("<html>proxy error</html>\n")
    collect.record_attempt(state, a, outcome="finished", directory=directory,
                       remote_sha256={"scan.xml": sha256_file(directory / "scan.xml")}, session="s", now=NOW)
    assert a.status == "failed" and "not <nmaprun>" in a.detail


@pytest.mark.parametrize("damage", ["mismatch", "missing"])
def test_a_fetch_that_failed_is_never_recorded_finished_and_its_shard_is_planned_again(tmp_path, damage):
    """A file that did not arrive, or arrived with another sha256 than the host reported (a fetch that failed
    after its retries, a half-written copy), is not a result: the attempt is failed (never finished), nothing of
    it is covered or merged, its addresses are planned again, and the host gets no more work in this run."""
    state = state_for("127.0.0.4, 127.0.0.10")
    a = attempt(state, "a", "127.0.0.4, 127.0.0.10")
    files = fetched(tmp_path, state, a, "shard-c")
    directory = collect.attempt_dir(tmp_path, state.run_id, a)
    remote = {"scan.xml": "0" * 64} if damage == "mismatch" else {**files, "scan.nmap": "1" * 64}
    notes = collect.record_attempt(state, a, outcome="exited", directory=directory, remote_sha256=remote,
                                   session="s", now=NOW)
    assert a.status == "failed" and a.files == {} and a.kept == []
    assert a.detail.startswith("fetch failed")
    if damage == "mismatch":
        assert files["scan.xml"] in a.detail and "0" * 64 in a.detail
    else:
        assert "scan.nmap did not arrive" in a.detail
    assert "its 2 addresses planned again" in notes[0]
    assert collect.covered(state) == IntervalSet() and collect.merge_inputs(state, tmp_path) == []
    assert collect.coverage(state).missing == ips("127.0.0.4, 127.0.0.10")


def test_record_run_counts_a_host_whose_fetch_failed_lost(tmp_path):
    results = tmp_path / "results"
    state = state_for("127.0.0.4, 127.0.0.10")
    a = attempt(state, "a", "127.0.0.4, 127.0.0.10")
    directory = runstate.run_dir(results, state.run_id)
    directory.mkdir(parents=True)
    runstate.save_state(directory, state)
    fetched(results, state, a, "shard-c")
    out = collect.record_run(results=results, run_id=state.run_id, session="s", now=NOW,
                             outcomes=[{"id": a.id, "outcome": "exited", "files": {"scan.xml": "0" * 64}}])
    assert out["statuses"] == {a.id: "failed"} and out["missing"] == 2
    detail = runstate.load_state(directory).attempt(a.id).detail
    assert detail.startswith("fetch failed: scan.xml has sha256")
    assert out["lost_hosts"] == {"a": f"{detail} in attempt {a.id}"}


def test_coverage_reports_duplicates_and_what_is_missing(tmp_path):
    state = state_for("127.0.0.2-4")
    a = attempt(state, "a", "127.0.0.2-3")
    b = attempt(state, "b", "127.0.0.3")
    record(tmp_path, state, a, "shard-b", "finished")
    record(tmp_path, state, b, "shard-b", "finished")
    cov = collect.coverage(state)
    assert cov.duplicates == ips("127.0.0.3") and cov.missing == ips("127.0.0.4") and not cov.complete
    assert cov.text() == ("coverage: 2/3 addresses (66.7%); missing: 127.0.0.4; scanned twice: 127.0.0.3")


# ---- a whole run: plan, record, reassign, merge ------------------------------------------------------------


def test_a_run_with_a_killed_scanner_ends_complete_with_each_host_once(tmp_path, nmap_dtd):
    """Round 1: a's shard 127.0.0.5-8 is killed after two hosts (shard-killed), b finishes 127.0.0.4 and
    127.0.0.10 (shard-c). Round 2 hands exactly the rest, 127.0.0.7-8, to b, the surviving host. The merge
    holds every reported host once and the report says what is still missing."""
    targets = "127.0.0.4-8, 127.0.0.10"
    state = state_for(targets)
    state.seq = 0
    a = attempt(state, "a", "127.0.0.5-8")
    b = attempt(state, "b", "127.0.0.4, 127.0.0.10")
    runstate.save_state(tmp_path / state.run_id, state)
    outcomes = []
    for x, fixture, outcome in ((a, "shard-killed", "stalled"), (b, "shard-c", "finished")):
        outcomes.append({"id": x.id, "outcome": outcome, "files": fetched(tmp_path, state, x, fixture)})
    result = collect.record_run(results=tmp_path, run_id=state.run_id, outcomes=outcomes, session="s1", now=NOW)
    assert result["lost_hosts"] == {"a": "stalled in attempt 001-a"}
    assert (result["covered"], result["missing"], result["pending"]) == (4, 2, [])
    assert collect.record_run(results=tmp_path, run_id=state.run_id, outcomes=outcomes, session="s1",
                          now=NOW)["recorded"] == []  # recording the same round again changes nothing

    state = runstate.load_state(tmp_path / state.run_id)
    rp = runplan.plan_round(state, weights={"a": 1, "b": 1}, available=["b"], unavailable=result["lost_hosts"],
                        session="s1", round_no=2, now=NOW)
    assert [(x.id, x.host, x.lines) for x in rp.new] == [("003-b", "b", ["127.0.0.7-8"])]
    runstate.save_state(tmp_path / state.run_id, state)

    report = runreport.report_run(results=tmp_path, run_id=state.run_id, dtd=str(nmap_dtd))
    merged = (tmp_path / state.run_id / "merged.xml").read_text()
    hosts = re.findall(r'<address addr="([0-9.]+)" addrtype="ipv4"', merged)
    assert sorted(hosts) == ["127.0.0.4", "127.0.0.5", "127.0.0.6"]  # each reported host once
    assert "127.0.0.7" not in merged.split("<host", 1)[1]  # never reported: nothing about it is invented
    assert not report["complete"] and report["missing"] == "127.0.0.7-127.0.0.8"
    assert report["inputs"] == ["001-a", "002-b"] and report["changed"]
    assert "coverage: 4/6 addresses (66.7%); missing: 127.0.0.7-127.0.0.8, no duplicates" in report["lines"]
    assert report["validated"]
    again = runreport.report_run(results=tmp_path, run_id=state.run_id, dtd=str(nmap_dtd))
    assert not again["changed"] and again["lines"] == report["lines"]


def test_a_scanner_that_dies_mid_scan_is_lost_and_its_shard_goes_to_the_survivor(tmp_path):
    """The wait (action plugin) reports a host that stopped answering with unreachable_outcome: nothing to
    fetch from it, so the attempt is lost (not failed), the host gets no more work and its whole shard is
    planned again on the surviving host (molecule/faults takes a scanner down for real)."""
    state = state_for("127.0.0.4-8, 127.0.0.10")
    state.seq = 0
    a = attempt(state, "a", "127.0.0.5-8")
    b = attempt(state, "b", "127.0.0.4, 127.0.0.10")
    runstate.save_state(tmp_path / state.run_id, state)
    dead = jobs.unreachable_outcome(a.id, "no answer for 21 s: ssh: No route to host")
    outcomes = [dead, {"id": b.id, "outcome": "finished", "files": fetched(tmp_path, state, b, "shard-c")}]
    result = collect.record_run(results=tmp_path, run_id=state.run_id, outcomes=outcomes, session="s1", now=NOW)
    assert result["lost_hosts"] == {"a": "no answer for 21 s: ssh: No route to host (unreachable) in attempt 001-a"}
    assert result["statuses"] == {"001-a": "lost", "002-b": "finished"} and result["missing"] == 4
    assert any("001-a on a: no answer for 21 s" in note and "4 addresses planned again" in note
               for note in result["notes"])
    state = runstate.load_state(tmp_path / state.run_id)
    assert runreport.lost_scanner_lines(state) == ["a: no answer for 21 s: ssh: No route to host (unreachable) "
                                                   "in attempt 001-a"]
    summary = runreport.run_summary_lines(state, None)
    assert summary[summary.index(next(x for x in summary if x.startswith("lost scanners"))) + 1] == (
        "  a: no answer for 21 s: ssh: No route to host (unreachable) in attempt 001-a")
    assert runreport.lost_scanner_lines(state) == ["a: no answer for 21 s: ssh: No route to host (unreachable) "
                                                   "in attempt 001-a"]
    summary = runreport.run_summary_lines(state, None)
    assert summary[summary.index(next(x for x in summary if x.startswith("lost scanners"))) + 1] == (
        "  a: no answer for 21 s: ssh: No route to host (unreachable) in attempt 001-a")
    rp = runplan.plan_round(state, weights={"a": 1, "b": 1}, available=["b"], unavailable=result["lost_hosts"],
                        session="s1", round_no=2, now=NOW)
    assert [(x.id, x.host, x.lines) for x in rp.new] == [("003-b", "b", ["127.0.0.5-8"])]
    assert state.attempt("001-a").outcome == "unreachable"


# ---- glue: targets, scope, scanners ---------------------------------------------------------------------


def test_build_plan_resolves_names_checks_the_scope_and_leaves_out_the_scanners():
    resolver = {"web.lab": ["10.77.0.101"], "scanner1.lab": ["10.77.0.11"]}
    plan = runplan.build_plan(targets=["web.lab", "10.77.0.10-12"], scope=["10.77.0.0/24"],
                          scanner_addresses=["scanner1.lab", "10.77.0.12", "no-such-host.lab"],
                          resolver=resolver)
    assert plan.addresses == ips("10.77.0.10, 10.77.0.101")
    with pytest.raises(ScanfleetError) as info:
        runplan.build_plan(targets=["10.77.0.5", "10.78.0.0/30"], scope=["10.77.0.0/24"], resolver=resolver)
    assert "10.78.0.0/30 (10.78.0.0-10.78.0.3 outside)" in str(info.value)
    assert "scanfleet_scope_extra" in str(info.value)
    widened = runplan.build_plan(targets=["10.77.0.5", "10.78.0.0/30"], scope=["10.77.0.0/24"],
                             scope_extra=["10.78.0.0/30"], resolver=resolver)
    assert widened.addresses.size == 5
    with pytest.raises(ScanfleetError, match="scanfleet_scope is empty"):
        runplan.build_plan(targets=["10.77.0.5"], scope=[], resolver=resolver)


def test_plan_run_writes_the_shards_and_resumes_without_changes(tmp_path):
    plan = runplan.build_plan(targets=["10.77.0.41-44"], scope=["10.77.0.0/24"], resolver={})
    kwargs = {"results": tmp_path, "run_id": "", "plan": plan, "options": OPTIONS,
              "weights": {"s1": 2, "s2": 1, "s3": 1}, "available": ["s1", "s2", "s3"], "unavailable": {},
              "session": "x", "round_no": 1, "now": NOW}
    dry = runplan.plan_run(**kwargs, write=False)
    assert not (tmp_path / dry["run_id"]).exists()  # check mode writes nothing
    first = runplan.plan_run(**kwargs)
    assert first["run_id"] == dry["run_id"] == "scan-" + first["fingerprint"][:12]
    assert first["changed"] and not first["resumed"]
    shards = sorted((tmp_path / first["run_id"] / "shards").iterdir())
    assert [p.name for p in shards] == ["001-s1.targets", "002-s2.targets", "003-s3.targets"]
    assert [p.read_text() for p in shards] == ["10.77.0.41-42\n", "10.77.0.43\n", "10.77.0.44\n"]
    second = runplan.plan_run(**{**kwargs, "session": "y"})
    # a second playbook run takes over the attempts still assigned: its session and the event are recorded
    assert second["resumed"] and second["changed"] and second["reattached"] == ["001-s1", "002-s2", "003-s3"]
    assert "s1: 001-s1 (resumed) 2 addresses: 10.77.0.41-10.77.0.42" in second["lines"]
    state = json.loads((tmp_path / first["run_id"] / runstate.STATE_FILE).read_text())
    assert [s["id"] for s in state["sessions"]] == ["x", "y"]
    assert any(e["session"] == "y" and "resuming 3 attempt(s)" in e["text"] for e in state["events"])
    # once nothing is left assigned, another playbook run changes nothing and is not recorded
    loaded = runstate.load_state(tmp_path / first["run_id"])
    for a in loaded.attempts:
        a.status = "finished"
    runstate.save_state(tmp_path / first["run_id"], loaded)
    third = runplan.plan_run(**{**kwargs, "session": "z"})
    assert third["resumed"] and not third["changed"] and third["reattached"] == []
    state = json.loads((tmp_path / first["run_id"] / runstate.STATE_FILE).read_text())
    assert [s["id"] for s in state["sessions"]] == ["x", "y"]



def test_a_full_disk_is_never_recorded_complete_and_names_the_scanner(tmp_path):
    """nmap on a full disk exits 0 with an empty scan.xml; the supervisor records an error whose detail says
    disk full (tests/unit/test_job_supervisor.py). The empty XML is fetched (its checksum matches) but never
    recorded finished: its whole shard is planned again, the host is lost, and the summary says why."""
    state = state_for("127.0.0.4, 127.0.0.10")
    a = attempt(state, "a", "127.0.0.4, 127.0.0.10")
    runstate.save_state(tmp_path / state.run_id, state)
    directory = collect.attempt_dir(tmp_path, state.run_id, a)
    directory.mkdir(parents=True)
    (directory / "scan.xml").write_bytes(b"")
    why = "disk full on a: no space left on device for nmap's output in /var/lib/scanfleet/runs/r/001-a/out"
    outcome = {"id": a.id, "outcome": "exited", "rc": 0, "reason": "error", "detail": why,
               "files": {"scan.xml": sha256_file(directory / "scan.xml")}}
    result = collect.record_run(results=tmp_path, run_id=state.run_id, outcomes=[outcome], session="s1", now=NOW)
    assert result["statuses"][a.id] in ("partial", "failed") and result["missing"] == 2  # none done
    assert result["lost_hosts"] == {"a": f"{why} (exited) in attempt {a.id}"}
    state = runstate.load_state(tmp_path / state.run_id)
    assert [line.startswith("a: ") and why in line for line in runreport.lost_scanner_lines(state)] == [True]
    assert collect.covered(state) == IntervalSet()
