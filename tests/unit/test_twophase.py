"""Tests of scanfleet.twophase (the role's two-phase runs) and the two-phase parts of scanfleet.pairs,
scanfleet.report and the job's command line, on the real nmap 7.93 output of tests/fixtures/xml/two-phase
(see tests/unit/test_pairs.py). Expected values come from an independent parse of the files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from scanfleet import ScanfleetError, collect, files, pairs, report, twophase
from scanfleet import plan as runplan
from scanfleet.job_model import Job, command
from scanfleet.targets import parse_scope
from tests.conftest import ROOT, required_tool

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "xml" / "two-phase"
P1 = FIXTURES / "phase1"
P2 = FIXTURES / "phase2"
SCOPE = parse_scope("127.0.0.0/28")
WEIGHTS = {"scan1": 1, "scan2": 1}
USER = ["--privileged", "-T4", "-p", "1-1024", "-sS", "-sV", "-v", "--script-timeout", "10s",
        "--version-intensity", "5", "--script=banner", "-sC", "-A", "-O", "--traceroute", "-PS22", "-sn"]


def addr(host: ET.Element) -> str:
    return next(a.get("addr") for a in host.findall("address") if a.get("addrtype") == "ipv4")


def open_pairs(paths) -> set[tuple[str, str, int]]:
    return {(addr(h), p.get("protocol"), int(p.get("portid")))
            for path in paths for h in ET.parse(path).getroot().findall("host")
            if h.find("status").get("state") == "up"
            for p in h.iter("port") if p.find("state").get("state") == "open"}


# ---- the options of each phase -------------------------------------------------------------------------

def test_discovery_options_leave_out_the_service_scan():
    assert twophase.phase_options(USER, "discovery") == [
        "--privileged", "-T4", "-p", "1-1024", "-sS", "-v", "-PS22", "-sn"]


def test_service_options_leave_out_ports_and_host_discovery_and_add_pn():
    assert twophase.phase_options(USER, "service") == [
        "--privileged", "-T4", "-sS", "-sV", "-v", "--script-timeout", "10s", "--version-intensity", "5",
        "--script=banner", "-sC", "-A", "-O", "--traceroute", "-Pn"]
    assert twophase.phase_options(["-Pn", "-sS"], "service") == ["-sS", "-Pn"]  # -Pn once


def test_an_unknown_phase_or_mode_is_refused_with_the_fix():
    with pytest.raises(ScanfleetError, match="no such phase; use one of discovery, service"):
        twophase.phase_options([], "sweep")
    with pytest.raises(ScanfleetError, match=r"nmap_scan_mode='2phase' is not a scan mode; use one_phase .* two_phase"):
        twophase.check_mode("2phase")
    assert [twophase.check_mode(m) for m in twophase.MODES] == ["one_phase", "two_phase"]


def test_run_scope_joins_scope_extra_and_refuses_none():
    assert twophase.run_scope(["127.0.0.0/29"], ["127.0.0.8/29"]) == SCOPE
    with pytest.raises(ScanfleetError, match="scanfleet_scope is empty"):
        twophase.run_scope([])


# ---- a recorded phase 1, then phase 2 as the role runs it ------------------------------------------------

def phase1_run(tmp_path: Path, second: str = "002-scan2") -> Path:
    """Phase 1 planned and recorded as the role does (plan_run, files fetched, record_run): 001-scan1 gets
    127.0.0.1-5 and 002-scan2 127.0.0.6-10, as in the fixtures; SECOND: the fixture XML of the second shard."""
    plan = runplan.build_plan(targets=["127.0.0.1-10"], scope=["127.0.0.0/28"], resolver={})
    runplan.plan_run(results=tmp_path, run_id="r", plan=plan, options=["-sS"], weights=WEIGHTS,
                     available=list(WEIGHTS), unavailable={}, session="s", round_no=1, now=1.0)
    outcomes = []
    for attempt_id, host, source in (("001-scan1", "scan1", "001-scan1"), ("002-scan2", "scan2", second)):
        target = tmp_path / "r" / host / attempt_id / "scan.xml"
        target.parent.mkdir(parents=True)
        shutil.copy(P1 / source / "scan.xml", target)
        outcomes.append({"id": attempt_id, "outcome": "finished", "files": {"scan.xml": files.sha256_file(target)}})
    collect.record_run(results=tmp_path, run_id="r", outcomes=outcomes, session="s", now=2.0)
    return tmp_path / "r"


def fetch_and_record(tmp_path: Path, plan: dict, skip: tuple[str, ...] = ()) -> dict:
    """Copy each planned job's fixture XML where the role fetches it, then record_round."""
    outcomes = []
    for views in plan["assignments"].values():
        for view in views:
            if view["id"] in skip:
                continue
            target = tmp_path / "r" / "phase2" / view["host"] / view["id"] / "scan.xml"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(P2 / view["id"] / "scan.xml", target)
            outcomes.append({"id": view["id"], "outcome": "finished",
                             "files": {"scan.xml": files.sha256_file(target)}})
    return twophase.record_round(results=tmp_path, run_id="r", outcomes=outcomes, now=5.0)


def plan_round(tmp_path: Path, **kwargs) -> dict:
    args = {"results": tmp_path, "run_id": "r", "scope": SCOPE, "weights": WEIGHTS, "available": list(WEIGHTS),
            "unavailable": {}, "now": 3.0, **kwargs}
    return twophase.plan_round(**args)


def test_check_mode_plans_phase2_and_writes_nothing(tmp_path):
    run = phase1_run(tmp_path)
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    dry = plan_round(tmp_path, write=False)
    assert dry["changed"] and dry["new"] == ["p2-001-scan1", "p2-002-scan1", "p2-003-scan2", "p2-004-scan2"]
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before  # no pairs.json, no phase2/


def test_the_role_path_collects_plans_records_and_reports_every_address_once(tmp_path, nmap_dtd):
    run = phase1_run(tmp_path)
    expected = open_pairs([P1 / "001-scan1" / "scan.xml", P1 / "002-scan2" / "scan.xml"])
    first = plan_round(tmp_path)
    assert first["changed"] and (run / "pairs.json").is_file() and (run / "phase2" / "phase2.json").is_file()
    assert (first["total"], first["covered"]) == (len(expected), 0) == (11, 0)
    assert first["accounting"] == {"targets": 10, "up_open": 6, "up_none": 2, "down": 2, "pending": 0, "pairs": 11}
    assert first["lines"][0] == ("10 target addresses: 6 up with open ports, 2 up with none, 2 down; 11 open "
                                 "(host, port) pairs for the service scan")
    # the jobs cover the pairs exactly, each once, balanced by pair count (11 over 1:1: 6 and 5)
    planned = [(a, proto, port) for views in first["assignments"].values() for v in views
               for a, ports in pairs.load_phase2(run / "phase2").job(v["id"]).pair_map().items()
               for proto, nums in ports.items() for port in nums]
    assert sorted(planned) == sorted(expected)
    assert first["balance"]["pairs"] == {"scan1": 6, "scan2": 5}
    assert all(v["size"] == v["pairs"] and v["ports"] for vs in first["assignments"].values() for v in vs)
    # resume before anything came back: the same jobs, nothing written
    stamp = (run / "phase2" / "phase2.json").stat().st_mtime_ns
    again = plan_round(tmp_path, now=4.0)
    assert not again["changed"] and not again["new"]
    assert again["assignments"] == first["assignments"]
    assert (run / "phase2" / "phase2.json").stat().st_mtime_ns == stamp
    recorded = fetch_and_record(tmp_path, first)
    assert (recorded["missing"], recorded["pending"], recorded["lost_hosts"]) == (0, [], {})
    done = plan_round(tmp_path, now=6.0)
    assert done["done"] and not done["new"] and not done["changed"] and done["covered"] == 11
    result = report.report_run(results=tmp_path, run_id="r", dtd=str(nmap_dtd), two_phase=True, now=7.0)
    assert result["complete"] and result["validated"] and result["changed"]
    assert result["phase2_inputs"] == ["p2-001-scan1", "p2-002-scan1", "p2-003-scan2", "p2-004-scan2"]
    assert first["lines"][0] in result["lines"]
    merged = ET.parse(run / "merged.xml").getroot()
    listed = [addr(h) for h in merged.findall("host")]
    assert sorted(listed) == sorted(f"127.0.0.{i}" for i in range(1, 9))  # 8 up, each once
    assert merged.find("runstats/hosts").get("total") == "10" and merged.find("runstats/hosts").get("down") == "2"
    # every open pair carries phase 2's port entry (its -sV service), once
    phase2 = {(addr(h), p.get("protocol"), int(p.get("portid"))): ET.tostring(p)
              for job in first["new"] for h in ET.parse(P2 / job / "scan.xml").getroot().findall("host")
              for p in h.iter("port")}
    seen = [(addr(h), p.get("protocol"), int(p.get("portid"))) for h in merged.findall("host") for p in h.iter("port")]
    assert len(seen) == len(set(seen)) and expected <= set(seen)
    for host in merged.findall("host"):
        for port in host.iter("port"):
            key = (addr(host), port.get("protocol"), int(port.get("portid")))
            if key in expected:
                assert ET.tostring(port) == phase2[key], key
    again = report.report_run(results=tmp_path, run_id="r", dtd=str(nmap_dtd), two_phase=True, now=8.0)
    assert not again["changed"] and again["lines"] == result["lines"]  # idempotent


def test_a_failed_job_is_planned_again_and_nothing_else(tmp_path):
    phase1_run(tmp_path)
    first = plan_round(tmp_path)
    recorded = fetch_and_record(tmp_path, first, skip=("p2-004-scan2",))
    assert recorded["pending"] == ["p2-004-scan2"]
    recorded = twophase.record_round(results=tmp_path, run_id="r", now=5.5,
                                     outcomes=[{"id": "p2-004-scan2", "outcome": "unreachable"}])
    assert recorded["missing"] == 1 and recorded["lost_hosts"] == {"scan2": "unreachable in job p2-004-scan2"}
    second = plan_round(tmp_path, available=["scan1"], unavailable={"scan2": "unreachable"}, now=6.0)
    assert [v["pairs"] for v in second["assignments"]["scan1"]] == [1]
    assert second["new"] == ["p2-005-scan1"] and second["progress"]["done"] == 10


def test_phase2_waits_for_a_complete_phase1(tmp_path):
    phase1_run(tmp_path, second="002-scan2-cut")  # truncated: its unreported addresses are pending
    with pytest.raises(ScanfleetError, match=r"phase 1 is not complete .*re-run the same command to finish phase 1"):
        plan_round(tmp_path)
    assert not (tmp_path / "r" / "pairs.json").exists()


# ---- the rate budget in phase 2 ------------------------------------------------------------------------

def test_phase2_jobs_share_the_budget_by_capacity_then_by_pairs(tmp_path):
    phase1_run(tmp_path)
    first = plan_round(tmp_path, weights={"scan1": 2, "scan2": 1}, rate_budget=300, options=["-sS", "-sV"])
    views = {h: {v["id"]: (v["pairs"], v["max_rate"]) for v in vs} for h, vs in first["assignments"].items()}
    assert first["rates"] == {"scan1": 200, "scan2": 100} and first["rate_total"] == 300
    for host, share in first["rates"].items():
        assert sum(rate for _, rate in views[host].values()) == share
        sizes = sorted(views[host].values())
        assert [r for _, r in sizes] == sorted(r for _, r in sizes)  # more pairs, no less rate
    assert any("rate budget 300 pkt/s" in line for line in first["lines"])
    # scan1 finishes, scan2 is lost with its jobs: they may still run, so their rate stays held
    fetch_and_record(tmp_path, {"assignments": {"scan1": first["assignments"]["scan1"]}})
    second = plan_round(tmp_path, weights={"scan1": 2, "scan2": 1}, available=["scan1"], rate_budget=300,
                        unavailable={"scan2": "unreachable"}, options=["-sS", "-sV"], now=6.0)
    assert second["new"] and second["rates"] == {"scan1": 200}  # 300 less the 100 scan2's jobs may still send
    assert any("held by attempt" in line for line in second["lines"])


def test_phase2_refuses_a_max_rate_of_the_users_own_under_a_budget(tmp_path):
    phase1_run(tmp_path)
    with pytest.raises(ScanfleetError, match="--max-rate"):
        plan_round(tmp_path, rate_budget=300, options=["-sV", "--max-rate", "50"])


# ---- the job's command line ------------------------------------------------------------------------------

def test_a_phase2_job_gets_its_port_list_and_rate_on_nmaps_command_line(tmp_path):
    job = Job(str(tmp_path), "r", "p2-001-scan1")
    p = {"nmap": "/usr/bin/nmap", "options": ["-sS", "-sV", "-Pn"], "versiondb": "", "stats_every": 10,
         "script_args": ""}
    argv, _, _ = command(job, {"id": job.id, "lines": ["127.0.0.1"], "ports": "T:22,80", "max_rate": 50}, p)
    assert argv[:8] == ["/usr/bin/nmap", "-sS", "-sV", "-Pn", "-p", "T:22,80", "--max-rate", "50"]
    argv, _, _ = command(job, {"id": job.id, "lines": ["127.0.0.1"]}, p)
    assert "-p" not in argv and "--max-rate" not in argv  # a phase-1 attempt: -p is in the options


def test_receivers_limit_who_gets_new_pairs_and_mark_lost_is_idempotent(tmp_path):
    phase1_run(tmp_path)
    collected = twophase.collect_run(results=tmp_path, run_id="r", scope=SCOPE)
    assert collected["changed"] and not twophase.collect_run(results=tmp_path, run_id="r", scope=SCOPE)["changed"]
    found, targets = pairs.load_pairs(collected["path"])
    state = pairs.open_phase2(tmp_path / "p2", found, targets, 1.0)
    new = pairs.plan_phase2_round(state, weights=WEIGHTS, available=list(WEIGHTS), receivers=["scan1"], now=1.0)
    assert {j.host for j in new} == {"scan1"} and sum(j.size for j in new) == 11
    pairs.mark_lost(state, ["scan2"], {"scan1": "unreachable"}, 2.0)
    pairs.mark_lost(state, ["scan2"], {"scan1": "unreachable"}, 3.0)
    assert {j.status for j in state.jobs} == {"lost"} and len(state.events) == len(new)
    assert all(j.detail == "scan1 unreachable before its result came back" for j in state.jobs)


# ---- phase 2 through Ansible: the role's phase2.yml on localhost, nmap on loopback in a private namespace -----

PHASE2_PLAY = """
- hosts: all
  connection: local
  gather_facts: false
  vars:
    nmap_scan_mode: two_phase
    nmap_scan_results_dir: "{results}"
    nmap_scan_remote_dir: "{remote}"
    nmap_scan_nmap: {nmap}
    nmap_scan_versiondb: ""
    nmap_scan_user: root
    nmap_scan_group: root
    nmap_scan_options: [-sT, -sV, -n, --version-intensity, "0"]
    nmap_scan_ports: "1-1024"
    nmap_scan_poll_interval: 1
    nmap_scan_stats_every: 1
    nmap_scan_rate_budget: 40
    scanfleet_scope: [127.0.0.0/28]
  tasks:
    - name: The facts the role's earlier steps set
      ansible.builtin.set_fact:
        __nmap_scan_run: r
        __nmap_scan_dir: "{results}/r"
        __nmap_scan_session: s2
        __nmap_scan_scanners: {{localhost: {{capacity: 1}}}}
        __nmap_scan_unavailable: {{}}
        __nmap_scan_lost: {{}}
        __nmap_scan_p2_round: 1
    - name: Phase 2
      ansible.builtin.include_role:
        name: scanfleet.fleet.nmap_scan
        tasks_from: phase2.yml
    - name: Show
      ansible.builtin.debug:
        msg: "RESULT {{{{ __nmap_scan_p2_record | to_json }}}} END"
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="the job module runs as root (become): it chowns the job's "
                                              "directories")
def test_phase2_jobs_start_wait_fetch_and_record_through_ansible(tmp_path, nmap_dtd):
    """roles/nmap_scan/tasks/phase2.yml through ansible-playbook (as test_job_supervisor runs scan_job and
    scan_wait): the pairs of a recorded phase 1 planned for one scanner, each job started by scan_job with its
    -p list and --max-rate, waited for with the fleet line in pairs, fetched and recorded; run again, nothing is
    planned or started. nmap (Debian's) scans loopback only, inside a private network namespace."""
    nmap = required_tool("nmap", "nmap")
    required_tool("unshare", "util-linux")
    results = tmp_path / "results"
    results.mkdir()
    phase1_run(results)
    remote = tmp_path / "remote"
    remote.mkdir(mode=0o755)
    collections = tmp_path / "collections" / "ansible_collections" / "scanfleet"
    collections.mkdir(parents=True)
    (collections / "fleet").symlink_to(ROOT)
    playbook = tmp_path / "play.yml"
    playbook.write_text(PHASE2_PLAY.format(results=results, remote=remote, nmap=nmap))
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(tmp_path / "collections"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_STDOUT_CALLBACK="default",
               PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
    command_line = ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", "ansible-playbook",
                    "-i", "localhost,", "-e", f"ansible_python_interpreter={sys.executable}", str(playbook)]

    def play() -> str:
        proc = subprocess.run(command_line, capture_output=True, text=True, env=env, cwd=ROOT, check=False,
                              timeout=600)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout

    def result(output: str) -> dict:  # the debug line may be wrapped inside strings
        return json.loads(output.split("RESULT ", 1)[1].split(" END", 1)[0], strict=False)

    output = play()
    recorded = result(output)
    state = pairs.load_phase2(results / "r" / "phase2")
    assert {j.status for j in state.jobs} == {"finished"} and state.progress()["done"] == 11
    assert (recorded["missing"], recorded["pending"]) == (0, [])
    for job in state.jobs:
        argv = json.loads((remote / "r" / job.id / "job.json").read_text())["argv"]
        assert argv[argv.index("-p") + 1] == job.nmap_ports and "-Pn" in argv and "1-1024" not in argv
        assert "-sV" in argv and argv[argv.index("--max-rate") + 1] == str(job.max_rate)
        assert (results / "r" / "phase2" / "localhost" / job.id / "scan.xml").is_file()
    assert sum(j.max_rate for j in state.jobs) == 40  # the whole budget, over this one scanner's jobs
    assert "pairs done" in output and "fleet: 11/11 pairs done (100.0%)" in output
    # run again: nothing planned, nothing started, nothing recorded
    again = play()
    assert "round 2: 0 jobs" in again and result(again)["recorded"] == []
    assert pairs.load_phase2(results / "r" / "phase2").to_dict() == state.to_dict()
