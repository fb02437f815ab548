"""Tests of scanfleet.pairs (two-phase scanning) on real nmap 7.93 output.

The fixtures in tests/fixtures/xml/two-phase were written by stock nmap inside a private network namespace
(tests/fixtures/xml/make_two_phase.sh): a phase-1 sweep of 127.0.0.1-10 in two shards, and the phase-2
jobs that ``scanfleet pairs shard`` planned from it, each run by nmap -sV. Expected values come from an
independent full parse of the files, never from the module's output.
"""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from fractions import Fraction
from pathlib import Path

import pytest

from scanfleet import ScanfleetError, cli, collect, files, pairs
from scanfleet import plan as runplan
from scanfleet.intervals import IntervalSet
from scanfleet.targets import parse_scope

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "xml" / "two-phase"
P1 = FIXTURES / "phase1"
P2 = FIXTURES / "phase2"
SHARDS = [(P1 / "001-scan1.targets", P1 / "001-scan1" / "scan.xml"),
          (P1 / "002-scan2.targets", P1 / "002-scan2" / "scan.xml")]
CUT_SHARD = (P1 / "002-scan2.targets", P1 / "002-scan2-cut" / "scan.xml")
SCOPE = parse_scope("127.0.0.0/28")
TARGETS = IntervalSet.from_addresses([f"127.0.0.{i}" for i in range(1, 11)])
JOBS = sorted(p.name for p in P2.iterdir() if p.name.startswith("p2-"))
CUT_JOB = P2 / "cut" / "scan.xml"
REGENERATE = "regenerate with sudo tests/fixtures/xml/make_two_phase.sh"


# ---- independent reading of the inputs (the test oracle) -------------------------------------------

def hosts(path: Path) -> list[ET.Element]:
    return ET.parse(path).getroot().findall("host")


def addr(host: ET.Element) -> str:
    return next(a.get("addr") for a in host.findall("address") if a.get("addrtype") == "ipv4")


def open_pairs(paths) -> set[tuple[str, str, int]]:
    return {(addr(h), p.get("protocol"), int(p.get("portid")))
            for path in paths for h in hosts(path) if h.find("status").get("state") == "up"
            for p in h.iter("port") if p.find("state").get("state") == "open"}


def reported_ports(path: Path) -> dict[str, dict[tuple[str, int], ET.Element]]:
    return {addr(h): {(p.get("protocol"), int(p.get("portid"))): p for p in h.iter("port")} for h in hosts(path)}


def phase1_collection(shards=SHARDS) -> pairs.Collection:
    return pairs.collect([pairs.shard_from_files(t, x) for t, x in shards], TARGETS, SCOPE)


def test_fixtures_are_real_nmap_runs():
    for _, xml in SHARDS:
        root = ET.parse(xml).getroot()
        assert root.get("scanner") == "nmap" and "-sV" not in root.get("args"), xml
    assert JOBS, f"no phase-2 job output in {P2}; {REGENERATE}"
    for job in JOBS:
        assert " -sV " in ET.parse(P2 / job / "scan.xml").getroot().get("args")


# ---- 1. collect ---------------------------------------------------------------------------------------

def test_collect_pairs_and_accounting():
    result = phase1_collection()
    expected = open_pairs(x for _, x in SHARDS)
    assert set(pairs.iter_pairs(result.pairs)) == expected
    up = {addr(h) for _, x in SHARDS for h in hosts(x) if h.find("status").get("state") == "up"}
    assert set(result.up_open) == {a for a, _, _ in expected}
    assert set(result.up_none) == up - {a for a, _, _ in expected} == {"127.0.0.3", "127.0.0.7"}
    # .9 and .10 are in a complete shard and listed nowhere: down
    assert result.down == IntervalSet.from_addresses(["127.0.0.9", "127.0.0.10"])
    assert not result.pending
    acc = result.accounting()
    assert acc["up_open"] + acc["up_none"] + acc["down"] == acc["targets"] == 10
    assert acc["pairs"] == len(expected) == 11


def test_incomplete_shard_is_pending_never_down():
    result = phase1_collection([SHARDS[0], CUT_SHARD])
    kept = {addr(h) for h in hosts(SHARDS[1][1])[:1]}  # the cut file keeps its first host only
    assert kept == {"127.0.0.6"}
    assert result.pending == IntervalSet.from_addresses([f"127.0.0.{i}" for i in range(7, 11)])
    assert not result.down  # 127.0.0.9-10 are not down: their shard did not finish
    assert "127.0.0.6" in result.up_open
    assert any("incomplete" in line and "pending" in line for line in result.lines())


def test_collect_refuses_a_pair_outside_the_scope():
    shards = [pairs.shard_from_files(t, x) for t, x in SHARDS]
    with pytest.raises(ScanfleetError, match=r"\(127\.0\.0\.4-127\.0\.0\.6, 127\.0\.0\.8 outside\); widen the scope"):
        pairs.collect(shards, TARGETS, parse_scope("127.0.0.0/30"))


def test_collect_refuses_an_xml_given_with_another_shards_targets():
    shard = pairs.shard_from_files(SHARDS[1][0], SHARDS[0][1])
    with pytest.raises(ScanfleetError, match=r"001-scan1/scan.xml: lists host 127\.0\.0\.1, which is not among"):
        pairs.collect([shard], TARGETS, SCOPE)


# ---- 2-3. shard and group -----------------------------------------------------------------------------

@pytest.mark.parametrize("weights", [{"a": 1, "b": 1}, {"a": 2, "b": 1}, {"a": 1, "b": 0},
                                     {"a": 1, "b": 1, "c": 1}, {"a": "1.5", "b": 1, "c": Fraction(1, 2)}])
def test_shard_pairs_by_count_weighted(weights):
    collection = phase1_collection()
    shards = pairs.shard_pairs(collection.pairs, weights)
    total = len(pairs.iter_pairs(collection.pairs))
    weight_sum = sum(Fraction(w) for w in weights.values())
    every = []
    for host, shard in shards.items():
        n = len(pairs.iter_pairs(shard))
        assert abs(n - total * Fraction(weights[host]) / weight_sum) < 1, (host, n)
        every += pairs.iter_pairs(shard)
    assert sorted(every) == sorted(pairs.iter_pairs(collection.pairs))  # disjoint, and all of them
    assert pairs.shard_pairs(collection.pairs, weights) == shards  # deterministic


@pytest.mark.parametrize("grouping", pairs.GROUPINGS)
@pytest.mark.parametrize("weights", [{"a": 1}, {"a": 1, "b": 1}, {"a": 2, "b": 1, "c": 1}])
def test_jobs_cover_their_shard_and_never_probe_a_pair_of_another_job(grouping, weights):
    collection = phase1_collection()
    everything = set(pairs.iter_pairs(collection.pairs))
    jobs = [job for host, shard in pairs.shard_pairs(collection.pairs, weights).items()
            for job in pairs.group_jobs(host, shard, grouping=grouping, whole=collection.pairs)]
    answered = [p for job in jobs for p in pairs.iter_pairs(job.pair_map())]
    assert sorted(answered) == sorted(everything)
    for job in jobs:
        ports = {(proto, port) for proto, text in job.ports.items() for port in pairs._ranges(text)}
        probed = {(a, proto, port) for a in job.hosts for proto, port in ports}
        mine = set(pairs.iter_pairs(job.pair_map()))
        assert mine <= probed
        assert not (probed - mine) & everything, f"{job.host} job probes open pairs of another job"
        assert job.grid == len(probed)
        assert job.nmap_ports.startswith("T:")
    cost = pairs.grid_cost(jobs)
    if grouping == "exact":
        assert cost["extra"] == 0
    assert cost["pairs"] == len(everything)


def test_union_costs_extra_probes_and_fewer_jobs_than_exact():
    collection = phase1_collection()
    cost = {}
    for grouping in pairs.GROUPINGS:
        jobs = [job for host, shard in pairs.shard_pairs(collection.pairs, {"scan1": 1, "scan2": 1}).items()
                for job in pairs.group_jobs(host, shard, grouping=grouping, whole=collection.pairs)]
        cost[grouping] = pairs.grid_cost(jobs)
    # exact: scan1 {.4} {.6} {.1:2222}, scan2 {.1:8080 .5:8080} {.2} {.8}; union: one per shard + the split .1
    assert cost["exact"] == {"jobs": 6, "pairs": 11, "probes": 11, "extra": 0}
    assert cost["union"] == {"jobs": 4, "pairs": 11, "probes": 19, "extra": 8}


@pytest.mark.parametrize("job_cost", [0, 1, 2, 3, 5, 8, 256])
def test_union_merges_only_while_a_merge_adds_at_most_job_cost_probes(job_cost):
    collection = phase1_collection()
    exact = pairs.group_jobs("a", collection.pairs, grouping="exact")
    union = pairs.group_jobs("a", collection.pairs, job_cost=job_cost)
    saved = len(exact) - len(union)
    assert 0 <= pairs.grid_cost(union)["extra"] <= job_cost * saved
    assert sorted(p for j in union for p in pairs.iter_pairs(j.pair_map())) == sorted(
        pairs.iter_pairs(collection.pairs))
    if job_cost == 0:
        assert saved == 0
    if job_cost == 256:
        assert len(union) == 1 and union[0].nmap_ports == "T:1337,2121,2222,7001,8080"


@pytest.mark.parametrize("job_cost", [-1, True, 1.5, "256"])
def test_a_bad_job_cost_is_refused(job_cost):
    with pytest.raises(ScanfleetError, match=r"job cost .* is not a whole number of port probes >= 0; give e.g. 256"):
        pairs.group_jobs("a", {"127.0.0.1": {"tcp": {22}}}, job_cost=job_cost)


def test_each_job_holds_one_address_family():
    mixed = {"127.0.0.1": {"tcp": {22, 80}}, "::1": {"tcp": {22}}, "2001:db8::5": {"tcp": {22}, "udp": {53}}}
    jobs = pairs.group_jobs("a", mixed)
    assert [(j.family, j.hosts, j.nmap_ports) for j in jobs] == [
        (4, ["127.0.0.1"], "T:22,80"), (6, ["::1", "2001:db8::5"], "T:22,U:53")]
    assert jobs[1].lines == ["::1", "2001:db8::5"] and jobs[1].grid == 4 and jobs[1].size == 3
    assert [j.family for j in pairs.group_jobs("a", mixed, grouping="exact")] == [4, 6, 6]


def test_udp_open_filtered_pairs_when_asked(tmp_path):
    """A real phase-1 file with 127.0.0.5:8080 rewritten as a UDP port in state open|filtered."""
    text = SHARDS[0][1].read_text()
    host5 = text.index('addr="127.0.0.5"')
    port = text.index('<port protocol="tcp" portid="8080"><state state="open"', host5)
    text = (text[:port] + '<port protocol="udp" portid="8080"><state state="open|filtered"'
            + text[port + len('<port protocol="tcp" portid="8080"><state state="open"'):])
    xml = tmp_path / "udp" / "scan.xml"
    xml.parent.mkdir()
    xml.write_text(text)
    shard = pairs.shard_from_files(SHARDS[0][0], xml)
    only_open = pairs.collect([shard], TARGETS, SCOPE)
    assert "127.0.0.5" in only_open.up_none
    with_udp = pairs.collect([shard], TARGETS, SCOPE, states=("open", "open|filtered"))
    assert with_udp.pairs["127.0.0.5"] == {"udp": {8080}}
    (job,) = [j for j in pairs.group_jobs("a", with_udp.pairs, job_cost=0) if j.hosts == ["127.0.0.5"]]
    assert job.nmap_ports == "U:8080"


def test_unknown_grouping_is_refused():
    with pytest.raises(ScanfleetError, match="unknown pair grouping 'best'; use one of union, exact"):
        pairs.group_jobs("a", {"127.0.0.1": {"tcp": {22}}}, grouping="best")


def test_the_fixture_jobs_are_what_the_planner_plans(tmp_path):
    state = pairs.open_phase2(tmp_path, phase1_collection().pairs, TARGETS, now=1.0)
    jobs = pairs.plan_phase2_round(state, weights={"scan1": 1, "scan2": 1}, available=["scan1", "scan2"],
                                   scope=SCOPE, now=1.0)
    assert [j.id for j in jobs] == JOBS, REGENERATE
    for job in jobs:
        lines = (P2 / "jobs" / f"{job.id}.targets").read_text().split()
        assert lines == job.lines, REGENERATE
        assert f"-p {job.nmap_ports} " in ET.parse(P2 / job.id / "scan.xml").getroot().get("args"), REGENERATE


# ---- 4. phase-2 state: record, resume, reassignment ------------------------------------------------------

def planned(tmp_path, weights=None):
    state = pairs.open_phase2(tmp_path, phase1_collection().pairs, TARGETS, now=1.0)
    weights = weights or {"scan1": 1, "scan2": 1}
    pairs.plan_phase2_round(state, weights=weights, available=list(weights), scope=SCOPE, now=1.0)
    return state


def test_every_job_finished_leaves_nothing(tmp_path):
    state = planned(tmp_path)
    for job in JOBS:
        assert "finished" in pairs.record_job(state, job, P2 / job / "scan.xml", now=2.0)
    assert state.progress() == {"pairs": 11, "done": 11, "assigned": 0, "remaining": 0}
    assert not pairs.plan_phase2_round(state, weights={"scan1": 1}, available=["scan1"], now=3.0)


def test_a_cut_job_keeps_the_hosts_it_reports_and_the_rest_is_planned_again(tmp_path):
    state = planned(tmp_path)
    cut_job = next(j for j in state.jobs if j.hosts == ["127.0.0.2", "127.0.0.5", "127.0.0.8"])
    for job in state.jobs:
        pairs.record_job(state, job.id, CUT_JOB if job is cut_job else P2 / job.id / "scan.xml", now=2.0)
    assert cut_job.status == "partial" and cut_job.kept == ["127.0.0.2"]
    left = state.remaining()
    assert left == {"127.0.0.5": {"tcp": {8080}}, "127.0.0.8": {"tcp": {7001}}}
    again = pairs.plan_phase2_round(state, weights={"scan1": 1, "scan2": 1}, available=["scan1", "scan2"],
                                    round_no=2, now=3.0)
    assert sorted(p for j in again for p in pairs.iter_pairs(j.pair_map())) == sorted(pairs.iter_pairs(left))
    assert {j.host for j in again} == {"scan1", "scan2"}  # one pair each


def test_a_lost_scanners_unfinished_pairs_go_to_the_survivors(tmp_path):
    state = planned(tmp_path)
    scan2_pairs = {p for j in state.jobs if j.host == "scan2" for p in pairs.iter_pairs(j.pair_map())}
    for job in state.jobs:
        if job.host == "scan1":
            pairs.record_job(state, job.id, P2 / job.id / "scan.xml", now=2.0)
    again = pairs.plan_phase2_round(state, weights={"scan1": 1, "scan2": 1}, available=["scan1"],
                                    unavailable={"scan2": "unreachable"}, round_no=2, now=3.0)
    assert all(j.status == "lost" for j in state.jobs if j.host == "scan2")
    assert {j.host for j in again} == {"scan1"}
    assert {p for j in again for p in pairs.iter_pairs(j.pair_map())} == scan2_pairs
    assert state.progress()["assigned"] == len(scan2_pairs)


def test_a_failed_job_and_no_scanner_left(tmp_path):
    state = planned(tmp_path, {"scan1": 1})
    (job,) = [j for j in state.jobs]  # one scanner: one union job (no split host)
    assert "planned again" in pairs.record_job(state, job.id, None, now=2.0, outcome="dead")
    assert job.status == "failed"
    with pytest.raises(ScanfleetError, match=r"11 pairs left to scan in phase 2 but no scanner is available "
                                             r"\(scan1: stalled\); bring a scanner back"):
        pairs.plan_phase2_round(state, weights={"scan1": 1}, available=[], unavailable={"scan1": "stalled"},
                                now=3.0)


def test_phase2_state_round_trips_and_refuses_other_pairs(tmp_path):
    state = planned(tmp_path)
    pairs.save_phase2(tmp_path, state)
    again = pairs.load_phase2(tmp_path)
    assert again.to_dict() == state.to_dict()
    assert (tmp_path / pairs.PHASE2_FILE).stat().st_mode & 0o777 == 0o600
    fewer = phase1_collection().pairs
    fewer.pop("127.0.0.1")
    with pytest.raises(ScanfleetError, match=r"planned for 11 other pairs, not the 9 of this pairs file"):
        pairs.open_phase2(tmp_path, fewer, TARGETS, now=2.0)


def write_pairs(tmp_path, shards=SHARDS) -> Path:
    path = tmp_path / "pairs.json"
    path.write_text(json.dumps(phase1_collection(shards).to_dict()))
    return path


def test_plan_phase2_writes_resumes_and_reassigns(tmp_path):
    pairs_file, directory = write_pairs(tmp_path), tmp_path / "p2"
    kwargs = {"pairs_file": pairs_file, "directory": directory, "weights": {"scan1": 1, "scan2": 1},
              "available": ["scan1", "scan2"], "scope": SCOPE}
    dry = pairs.plan_phase2(**kwargs, write=False, now=1.0)
    assert dry["changed"] and not directory.exists()  # check mode writes nothing
    first = pairs.plan_phase2(**kwargs, now=1.0)
    assert first["new"] == dry["new"] == JOBS
    assert first["balance"] == {"pairs": {"scan1": 6, "scan2": 5}, "tail": 1.091}  # 11 pairs, 1:1
    assert sorted(p.name for p in (directory / "jobs").iterdir()) == [f"{j}.targets" for j in JOBS]
    view = first["assignments"]["scan2"][0]
    assert (view["ports"], view["lines"], view["protocols"], view["ipv6"]) == (
        "T:2222,7001,8080", ["127.0.0.2", "127.0.0.5", "127.0.0.8"], ["tcp"], False)
    again = pairs.plan_phase2(**kwargs, now=2.0)  # nothing recorded: the same jobs, nothing new
    assert not again["changed"] and not again["new"]
    assert [v["id"] for vs in again["assignments"].values() for v in vs] == JOBS
    state = pairs.load_phase2(directory)
    for job in ("p2-001-scan1", "p2-002-scan1"):
        pairs.record_job(state, job, P2 / job / "scan.xml", now=3.0)
    pairs.save_phase2(directory, state)
    lost = pairs.plan_phase2(**{**kwargs, "available": ["scan1"]}, unavailable={"scan2": "unreachable"}, now=4.0)
    assert lost["lost"] == ["p2-003-scan2", "p2-004-scan2"] and lost["changed"]
    assert lost["balance"]["pairs"] == {"scan1": 5} and set(lost["assignments"]) == {"scan1"}
    assert lost["progress"] == {"pairs": 11, "done": 6, "assigned": 5, "remaining": 5}
    assert any("p2-003-scan2 lost: scan2 unreachable" in line for line in lost["lines"])


def test_record_phase2_checks_the_fetched_files_and_counts_a_lost_host(tmp_path):
    directory = tmp_path / "p2"
    pairs.plan_phase2(pairs_file=write_pairs(tmp_path), directory=directory, weights={"scan1": 1, "scan2": 1},
                      available=["scan1", "scan2"], scope=SCOPE, now=1.0)
    state = pairs.load_phase2(directory)
    outcomes = []
    for job in state.jobs:
        target = pairs.job_dir(directory, job) / "scan.xml"
        target.parent.mkdir(parents=True)
        shutil.copy(P2 / job.id / "scan.xml", target)
        outcomes.append({"id": job.id, "outcome": "finished", "files": {"scan.xml": files.sha256_file(target)}})
    outcomes[1]["files"]["scan.xml"] = "0" * 64  # p2-002-scan1: the copy is not what the scanner had
    outcomes[3] = {"id": outcomes[3]["id"], "outcome": "unreachable"}  # p2-004-scan2: the scanner went away
    result = pairs.record_phase2(directory=directory, outcomes=outcomes, now=2.0)
    assert result["statuses"] == {"p2-001-scan1": "finished", "p2-002-scan1": "failed",
                                  "p2-003-scan2": "finished", "p2-004-scan2": "lost"}
    assert result["lost_hosts"] == {"scan1": "fetch failed: scan.xml has sha256 " + files.sha256_file(
        pairs.job_dir(directory, state.jobs[1]) / "scan.xml") + " in job p2-002-scan1",
        "scan2": "unreachable in job p2-004-scan2"}
    assert result["progress"] == {"pairs": 11, "done": 9, "assigned": 0, "remaining": 2}
    assert pairs.load_phase2(directory).remaining() == {"127.0.0.1": {"tcp": {2222, 8080}}}
    again = pairs.record_phase2(directory=directory, outcomes=outcomes, now=3.0)
    assert not again["changed"]  # recording the same round again changes nothing


def test_plan_refuses_pairs_outside_the_scope(tmp_path):
    state = pairs.open_phase2(tmp_path, phase1_collection().pairs, TARGETS, now=1.0)
    with pytest.raises(ScanfleetError, match=r"scope of the phase-2 pairs.*outside"):
        pairs.plan_phase2_round(state, weights={"a": 1}, available=["a"], scope=parse_scope("127.0.0.0/30"),
                                now=1.0)


# ---- 5. merge ------------------------------------------------------------------------------------------

def test_merge_two_phase_accounts_for_every_address_once_and_validates(tmp_path, nmap_dtd):
    phase1 = [("001-scan1", SHARDS[0][1]), ("002-scan2", SHARDS[1][1])]
    phase2 = [(job, P2 / job / "scan.xml") for job in JOBS]
    out = tmp_path / "merged.xml"
    result = pairs.merge_two_phase(phase1, phase2, out, dtd=nmap_dtd)
    assert result["validated"] and result["exit"] == "success"
    merged = {addr(h): h for h in hosts(out)}
    assert len(merged) == len(hosts(out)) == 8  # every listed address once
    # the two down addresses are counted in runstats, as nmap counts unlisted down hosts
    assert result["hosts"] == {"up": 8, "down": 2, "total": 10}
    runstats = ET.parse(out).getroot().find("runstats/hosts").attrib
    assert runstats == {"up": "8", "down": "2", "total": "10"}
    # phase 2 replaces phase 1: every port a phase-2 job reports is its element, with its service
    reported = {}
    for _, path in phase2:
        for address, ports in reported_ports(path).items():
            reported.setdefault(address, {}).update(ports)
    for address, ports in reported.items():
        mine = {(p.get("protocol"), int(p.get("portid"))): p for p in merged[address].iter("port")}
        for key, port in ports.items():
            if port.find("state").get("state") == "open":
                assert ET.tostring(mine[key]) == ET.tostring(port), (address, key)
    for address, _proto, port in open_pairs(x for _, x in SHARDS):
        service = merged[address].find(f"ports/port[@portid='{port}']/service")
        if port != 1337:  # the silent port stays unidentified
            assert service.get("method") == "probed", (address, port)
    # phase-1 ports phase 2 did not report stay (closed ports of every up host, the hosts with none open)
    for _, path in phase1:
        for address, ports in reported_ports(path).items():
            mine = {(p.get("protocol"), int(p.get("portid"))) for p in merged[address].iter("port")}
            assert set(ports) <= mine, address
    assert result["replaced_ports"] == sum(
        len(set(ports) & set(reported.get(address, {})))
        for _, path in phase1 for address, ports in reported_ports(path).items())


def test_merge_with_a_cut_phase2_job_keeps_phase1_ports_of_the_hosts_it_lost(tmp_path, nmap_dtd):
    cut_job = next(j for j in JOBS if "127.0.0.5" in (P2 / "jobs" / f"{j}.targets").read_text())
    phase2 = [(job, CUT_JOB if job == cut_job else P2 / job / "scan.xml") for job in JOBS]
    out = tmp_path / "merged.xml"
    result = pairs.merge_two_phase([("001-scan1", SHARDS[0][1]), ("002-scan2", SHARDS[1][1])], phase2, out,
                                   dtd=nmap_dtd)
    assert result["validated"] and result["hosts"]["total"] == 10
    merged = {addr(h): h for h in hosts(out)}
    assert merged["127.0.0.2"].find("ports/port[@portid='8080']/service").get("method") == "probed"
    lost = reported_ports(SHARDS[0][1])["127.0.0.5"][("tcp", 8080)]  # .5 was in the cut-off part: phase 1 stays
    assert ET.tostring(merged["127.0.0.5"].find("ports/port[@portid='8080']")) == ET.tostring(lost)


def test_merge_a_recorded_run_and_its_phase2(tmp_path, capsys, nmap_dtd):
    """Phase 1 planned and recorded by plan_run/record_run, phase 2 by plan_phase2/record_phase2 with one job
    failed (a bad copy): the merge takes the recorded XML only, and names what is missing."""
    plan = runplan.build_plan(targets=["127.0.0.1-10"], scope=["127.0.0.0/28"], resolver={})
    runplan.plan_run(results=tmp_path, run_id="p1", plan=plan, options=["-sS"], weights={"scan1": 1, "scan2": 1},
                     available=["scan1", "scan2"], unavailable={}, session="s", round_no=1, now=1.0)
    outcomes = []
    for attempt_id, host in (("001-scan1", "scan1"), ("002-scan2", "scan2")):
        target = tmp_path / "p1" / host / attempt_id / "scan.xml"
        target.parent.mkdir(parents=True)
        shutil.copy(P1 / attempt_id / "scan.xml", target)
        outcomes.append({"id": attempt_id, "outcome": "finished", "files": {"scan.xml": files.sha256_file(target)}})
    collect.record_run(results=tmp_path, run_id="p1", outcomes=outcomes, session="s", now=2.0)
    pairs_file = tmp_path / "p1" / "pairs.json"
    assert run(capsys, "pairs", "collect", "--run-dir", tmp_path / "p1", "--scope", "127.0.0.0/28",
               "--out", pairs_file)[0] == 0
    directory = tmp_path / "p1" / "phase2"
    pairs.plan_phase2(pairs_file=pairs_file, directory=directory, weights={"scan1": 1, "scan2": 1},
                      available=["scan1", "scan2"], scope=SCOPE, now=3.0)
    outcomes = []
    for job in pairs.load_phase2(directory).jobs:
        target = pairs.job_dir(directory, job) / "scan.xml"
        target.parent.mkdir(parents=True)
        shutil.copy(P2 / job.id / "scan.xml", target)
        sha = files.sha256_file(target) if job.id != "p2-004-scan2" else "0" * 64
        outcomes.append({"id": job.id, "outcome": "finished", "files": {"scan.xml": sha}})
    pairs.record_phase2(directory=directory, outcomes=outcomes, now=4.0)
    assert [label for label, _ in pairs.phase2_inputs(pairs.load_phase2(directory))] == JOBS[:3]
    code, out, _ = run(capsys, "pairs", "merge", "--run-dir", tmp_path / "p1", "--state", directory,
                       "--out", tmp_path / "p1" / "merged.xml", "--dtd", nmap_dtd)
    assert code == 0 and "10 addresses (8 up, 2 down)" in out and "valid against nmap.dtd" in out
    merged = {addr(h): h for h in hosts(tmp_path / "p1" / "merged.xml")}
    # p2-004-scan2 (127.0.0.1:8080) was not recorded: its port keeps phase 1's table guess until it is scanned
    assert merged["127.0.0.1"].find("ports/port[@portid='8080']/service").get("method") == "table"
    assert merged["127.0.0.1"].find("ports/port[@portid='2222']/service").get("method") == "probed"


def test_merge_keeps_a_truncated_phase1_file_truncated(tmp_path, nmap_dtd):
    out = tmp_path / "merged.xml"
    result = pairs.merge_two_phase([("001-scan1", SHARDS[0][1]), ("002-scan2", CUT_SHARD[1])],
                                   [(job, P2 / job / "scan.xml") for job in JOBS], out, dtd=nmap_dtd)
    assert result["exit"] == "error" and "phase1/002-scan2" in result["errormsg"]
    residual = tmp_path / "phase1-residual" / "002-scan2.xml"
    assert "</nmaprun>" not in residual.read_text()


# ---- CLI ----------------------------------------------------------------------------------------------

def run(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_collect_shard_record_status_merge(tmp_path, capsys, nmap_dtd):
    shard_args = [a for t, x in SHARDS for a in ("--shard", t, x)]
    code, out, _ = run(capsys, "pairs", "collect", *shard_args, "--scope", "127.0.0.0/28",
                       "--out", tmp_path / "pairs.json")
    assert code == 0 and "10 target addresses: 6 up with open ports, 2 up with none, 2 down, 0 pending" in out
    data = json.loads((tmp_path / "pairs.json").read_text())
    assert data["accounting"]["pairs"] == 11 and data["down"] == ["127.0.0.9", "127.0.0.10"]
    state = tmp_path / "p2"
    code, out, _ = run(capsys, "pairs", "shard", "--pairs", tmp_path / "pairs.json", "--state", state,
                       "--scope", "127.0.0.0/28", "--scanner", "scan1=1", "scan2=1")
    assert code == 0 and "round 1: 4 jobs, 11 pairs, 19 port probes (8 beyond the pairs" in out
    assert sorted(p.stem for p in (state / "jobs").iterdir()) == JOBS
    assert run(capsys, "pairs", "status", "--state", state)[0] == 1
    for job in JOBS:
        assert run(capsys, "pairs", "record", "--state", state, "--job", job, "--xml",
                   P2 / job / "scan.xml")[0] == 0
    code, out, _ = run(capsys, "pairs", "status", "--state", state)
    assert code == 0 and "11/11 pairs done" in out
    code, out, _ = run(capsys, "pairs", "merge", "--phase1", *(x for _, x in SHARDS),
                       "--phase2", *(P2 / j / "scan.xml" for j in JOBS), "--out", tmp_path / "m" / "merged.xml",
                       "--dtd", nmap_dtd)
    assert code == 0 and "10 addresses (8 up, 2 down)" in out and "valid against nmap.dtd" in out


def test_cli_collect_exit_1_with_pending_and_shard_refuses_it(tmp_path, capsys):
    code, out, _ = run(capsys, "pairs", "collect", "--shard", *CUT_SHARD, "--scope", "127.0.0.0/28",
                       "--out", tmp_path / "pairs.json")
    assert code == 1 and "pending, not down" in out
    code, _, err = run(capsys, "pairs", "shard", "--pairs", tmp_path / "pairs.json", "--state", tmp_path / "p2",
                       "--scanner", "a=1", "--scope", "127.0.0.0/28")
    assert code == 2 and "phase 1 is not complete, 127.0.0.7-127.0.0.10 pending" in err
    assert "resume phase 1" in err and not (tmp_path / "p2").exists()


@pytest.mark.parametrize(("argv", "message"), [
    (["collect", "--out", "x.json", "--scope", "127.0.0.0/8"], "give either --run-dir RESULTS/RUN_ID"),
    (["collect", "--shard", *map(str, SHARDS[0]), "--out", "x.json"], "no scope given; pass --scope"),
    (["shard", "--pairs", "missing.json", "--state", "p2", "--scanner", "a=1", "--scope", "127.0.0.0/8"],
     "missing.json: no such file; write it with scanfleet pairs collect"),
    (["shard", "--pairs", str(SHARDS[0][0]), "--state", "p2", "--scope", "127.0.0.0/8"],
     "no scanners given; pass --scanner NAME=WEIGHT"),
    (["record", "--state", "nowhere", "--job", "p2-001-a"], "no phase-2 state; plan it with scanfleet pairs shard"),
    (["merge", "--out", "m.xml"], "give either --run-dir RESULTS/RUN_ID with --state DIR"),
    (["merge", "--run-dir", "p1", "--out", "m.xml"], "give either --run-dir RESULTS/RUN_ID with --state DIR"),
    (["merge", "--run-dir", "p1", "--state", "p2", "--out", "m.xml"], "p1/state.json: no such run state"),
])
def test_cli_errors_name_the_input_and_the_fix(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, "pairs", *argv)
    assert code == 2 and message in err


@pytest.mark.parametrize(("text", "message"), [
    ("127.0.0.1-5\n", "unreadable (Extra data"),
    ('{"kind": "scanfleet-phase2", "version": 1}', "not a scanfleet pairs file"),
    ('{"kind": "scanfleet-pairs", "version": 1, "pairs": {"127.0.0.1": {"tcp": "x"}}}',
     "'127.0.0.1': {'tcp': 'x'} is not"),
])
def test_cli_refuses_a_file_that_is_not_a_pairs_file(tmp_path, capsys, text, message):
    (tmp_path / "pairs.json").write_text(text)
    code, _, err = run(capsys, "pairs", "shard", "--pairs", tmp_path / "pairs.json", "--state", tmp_path / "p2",
                       "--scanner", "a=1", "--scope", "127.0.0.0/8")
    assert code == 2 and message in err and "scanfleet pairs collect" in err


# ---- from a phase-1 run directory, planned and recorded as the playbook does ---------------------------

@pytest.mark.parametrize(("fixture2", "pending"), [("002-scan2", 0), ("002-scan2-cut", 4)])
def test_collect_from_a_phase1_run_directory(tmp_path, capsys, fixture2, pending):
    """plan_run shards 127.0.0.1-10 over scan1 and scan2 exactly as the fixtures' phase 1 did (001-scan1 gets
    .1-.5, 002-scan2 .6-.10); record_run records the fetched XML; collect reads the run directory."""
    plan = runplan.build_plan(targets=["127.0.0.1-10"], scope=["127.0.0.0/28"], resolver={})
    planned_run = runplan.plan_run(results=tmp_path, run_id="p1", plan=plan, options=["-sS"],
                                   weights={"scan1": 1, "scan2": 1}, available=["scan1", "scan2"],
                                   unavailable={}, session="s", round_no=1, now=1.0)
    assert planned_run["new"] == ["001-scan1", "002-scan2"]
    outcomes = []
    for attempt_id, host, fixture in (("001-scan1", "scan1", "001-scan1"), ("002-scan2", "scan2", fixture2)):
        target = tmp_path / "p1" / host / attempt_id / "scan.xml"
        target.parent.mkdir(parents=True)
        shutil.copy(P1 / fixture / "scan.xml", target)
        outcomes.append({"id": attempt_id, "outcome": "finished" if not pending else "stalled",
                         "files": {"scan.xml": files.sha256_file(target)}})
    collect.record_run(results=tmp_path, run_id="p1", outcomes=outcomes, session="s", now=2.0)
    targets, shards = pairs.shards_from_run(tmp_path / "p1")
    result = pairs.collect(shards, targets, SCOPE)
    assert result.accounting()["pending"] == pending
    if not pending:
        assert result.accounting() == phase1_collection().accounting()
        assert result.pairs == phase1_collection().pairs
    code, _, _ = run(capsys, "pairs", "collect", "--run-dir", tmp_path / "p1", "--scope", "127.0.0.0/28",
                     "--out", tmp_path / "pairs.json")
    assert code == (1 if pending else 0)


def test_collect_from_a_directory_without_a_run(tmp_path):
    with pytest.raises(ScanfleetError, match=r"state\.json: no such run state; give the phase-1 run's directory"):
        pairs.shards_from_run(tmp_path)
