"""A run's pass 2 as the nmap_scan role runs it (scanfleet.recover.plan_run/record_run, the scan_recover module,
and the report's merge), on the real nmap XML of tests/fixtures/xml/recover (one-phase: the fast pass of two
scanners and the pass-2 jobs the planner plans from it) and tests/fixtures/xml/two-phase (a two-phase run)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from scanfleet import ScanfleetError, collect, files, pairs, probes, recover, report
from scanfleet import plan as runplan
from tests.conftest import ROOT, required_tool
from tests.unit.test_adapters import env
from tests.unit.test_probes import stock_path  # noqa: F401 (fixture)
from tests.unit.test_recover import PASS1, RECOVER, A, B, recorded_run, service, services
from tests.unit.test_twophase import fetch_and_record, phase1_run, plan_round

OPTIONS = ["--privileged", "-T4", "-p", "1-1024", "-sS", "-sV", "-v", "--script-timeout", "10s", "-sC", "-O",
           "--script", "banner", "-PS22"]


def fetch(tmp_path: Path, run: str, views, *, skip: tuple[str, ...] = ()) -> list[dict]:
    """Copy each planned pass-2 job's fixture XML where the role fetches it (RUN/pass2/HOST/JOB_ID/scan.xml);
    the outcomes scan_wait would return (a skipped job: its scanner was lost while it ran)."""
    outcomes = []
    for view in views:
        if view["id"] in skip:
            outcomes.append({"id": view["id"], "outcome": "unreachable", "files": {}})
            continue
        target = tmp_path / run / "pass2" / view["host"] / view["id"] / "scan.xml"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(RECOVER / view["id"] / "scan.xml", target)
        outcomes.append({"id": view["id"], "outcome": "finished", "files": {"scan.xml": files.sha256_file(target)}})
    return outcomes


def plan(tmp_path: Path, **kwargs) -> dict:
    args = {"results": tmp_path, "run_id": "r1", "available": ["scanner-a", "scanner-b"], "unavailable": {},
            "options": OPTIONS, "now": 3.0, **kwargs}
    return recover.plan_run(**args)


def views(planned: dict) -> list[dict]:
    return [v for vs in planned["assignments"].values() for v in vs]


def test_pass2_options_rerun_the_banner_wait_not_the_scripts():
    # the user's scripts and their timeout are dropped; -sV's own version scripts are capped at 1 s
    assert recover.pass2_options(OPTIONS) == ["--privileged", "-T4", "-sS", "-v", "-Pn", "--script-timeout", "1s",
                                              "-sV"]
    assert recover.pass2_options(["-sT", "-A", "--script=vuln", "--version-intensity", "5", "--script-timeout",
                                  "10s"]) == [
        "-sT", "--version-intensity", "5", "-Pn", "--script-timeout", "1s", "-sV"]
    assert recover.wants_service_scan(OPTIONS) and recover.wants_service_scan(["-A"])
    assert not recover.wants_service_scan(["-sS", "-p", "25", "--version-all"])


def test_the_role_path_plans_runs_records_and_merges_pass_2(tmp_path, nmap_dtd):
    run = recorded_run(tmp_path)
    first = plan(tmp_path)
    assert first["changed"]
    assert (run / "pass2" / "selection.json").is_file() and (run / "pass2" / "phase2.json").is_file()
    # the fixtures' jobs, each on the scanner that scanned its ports, with pass 2's options and wait
    assert [(v["id"], v["host"], v["lines"], v["ports"], v["ipv6"]) for v in views(first)] == [
        ("pass2-001", "scanner-a", [A], "T:25,1337,2121,7001", False),
        ("pass2-002", "scanner-b", [B], "T:25,587", False)]
    assert first["options"] == ["--privileged", "-T4", "-sS", "-v", "-Pn", "--script-timeout", "1s", "-sV"]
    assert first["environment"] == {"SCANFLEET_SERVICE_WAIT_MS": "6000"}
    assert (first["total"], first["covered"], first["done"]) == (6, 0, False)
    assert first["lines"][0] == ("pass 2: 6 ports of 8 open left unnamed by the fast pass (4 table, 1 tcpwrapped, "
                                 "1 softmatch), 2 jobs, banner wait 6000 ms")
    # resumed before anything came back: the same jobs, nothing written
    stamp = (run / "pass2" / "phase2.json").stat().st_mtime_ns
    again = plan(tmp_path, now=4.0)
    assert not again["changed"] and again["assignments"] == first["assignments"]
    assert (run / "pass2" / "phase2.json").stat().st_mtime_ns == stamp

    recorded = recover.record_run(results=tmp_path, run_id="r1", outcomes=fetch(tmp_path, "r1", views(first)), now=5.0)
    assert (recorded["pending"], recorded["lost_hosts"]) == ([], {})
    done = plan(tmp_path, now=6.0)
    assert done["done"] and not done["changed"] and done["covered"] == 6 and views(done) == []

    result = report.report_run(results=tmp_path, run_id="r1", dtd=str(nmap_dtd), now=7.0)
    assert result["changed"] and result["validated"] and result["complete"]
    assert result["recover"]["line"] == "pass 2 named 2 of 6 unnamed ports"
    assert "pass 2 named 2 of 6 unnamed ports" in result["lines"]
    assert (run / "summary.txt").read_text().count("pass 2 named 2 of 6 unnamed ports") == 1
    merged = services(run / "merged.xml")  # every port once
    fast = services(run / "merged-fast.xml")
    assert set(merged) == set(fast)
    for address in (A, B):
        assert service(merged[(address, "tcp", 25)])["product"] == "Exim smtpd"
        assert service(fast[(address, "tcp", 25)]) == {"name": "smtp", "method": "table", "conf": "3"}
    for key, port in merged.items():
        if key[2] != 25:
            assert ET.tostring(port) == ET.tostring(fast[key]), key
    summary = json.loads((run / "summary.json").read_text())
    assert summary["recover"]["named"] == 2
    # the time per shard lists the fast pass's attempts and the pass-2 jobs, each once
    assert [s["label"] for s in summary["shards"]] == ["001-scanner-a", "002-scanner-b", "pass2/pass2-001",
                                                      "pass2/pass2-002"]
    # a re-run of the finished run changes nothing
    stamp = (run / "merged.xml").stat().st_mtime_ns
    rerun = report.report_run(results=tmp_path, run_id="r1", dtd=str(nmap_dtd), now=8.0)
    assert not rerun["changed"] and rerun["lines"] == result["lines"] and rerun["recover"] == result["recover"]
    assert (run / "merged.xml").stat().st_mtime_ns == stamp


def test_a_lost_scanner_leaves_its_ports_unnamed_never_lost(tmp_path, nmap_dtd):
    run = recorded_run(tmp_path)
    first = plan(tmp_path)
    recorded = recover.record_run(results=tmp_path, run_id="r1", now=5.0,
                                  outcomes=fetch(tmp_path, "r1", views(first), skip=("pass2-002",)))
    assert recorded["lost_hosts"] == {"scanner-b": "unreachable in job pass2-002"}
    assert any("pass2-002" in n and "keep the fast pass's entries" in n for n in recorded["notes"])
    # never handed to scanner-a, and not run again
    later = plan(tmp_path, available=["scanner-a"], unavailable={"scanner-b": "unreachable"}, now=6.0)
    assert later["done"] and views(later) == []
    result = report.report_run(results=tmp_path, run_id="r1", dtd=str(nmap_dtd), now=7.0)
    assert result["validated"] and result["recover"]["line"] == "pass 2 named 1 of 6 unnamed ports"
    merged = services(run / "merged.xml")
    assert set(merged) == set(services(run / "merged-fast.xml"))
    assert service(merged[(A, "tcp", 25)])["product"] == "Exim smtpd"
    assert service(merged[(B, "tcp", 25)]) == {"name": "smtp", "method": "table", "conf": "3"}  # unnamed, kept


def test_a_job_of_an_unavailable_scanner_waits_for_a_later_run(tmp_path):
    recorded_run(tmp_path)
    first = plan(tmp_path, available=["scanner-a"], unavailable={"scanner-b": "has no runtime waits in its nmap build"})
    assert [v["id"] for v in views(first)] == ["pass2-001"] and first["waiting"] == ["pass2-002"]
    assert first["lines"][-1] == ("pass-2 job pass2-002 not run now: scanner-b has no runtime waits in its nmap "
                                  "build; its 2 ports keep the fast pass's entries until a run of the same run id "
                                  "runs it")
    later = plan(tmp_path, now=9.0)
    assert [v["id"] for v in views(later)] == ["pass2-001", "pass2-002"] and not later["changed"]


@pytest.mark.parametrize("wait", [99, 300001, "6000", None])
def test_a_bad_wait_is_refused_before_anything_is_planned(tmp_path, wait):
    run = recorded_run(tmp_path)
    with pytest.raises(ScanfleetError, match=r"pass-2 banner wait .* \(nmap_scan_recover_wait_ms\)"):
        plan(tmp_path, wait_ms=wait)
    assert not (run / "pass2").exists()


def test_check_mode_plans_and_writes_nothing(tmp_path):
    run = recorded_run(tmp_path)
    dry = plan(tmp_path, write=False)
    assert dry["changed"] and [v["id"] for v in views(dry)] == ["pass2-001", "pass2-002"]
    assert not (run / "pass2").exists()


def test_a_rate_budget_is_split_over_the_jobs(tmp_path):
    recorded_run(tmp_path)
    planned = plan(tmp_path, rate_budget=301, rate_cap=100)
    assert [v["max_rate"] for v in views(planned)] == [100, 100]
    assert recover._job_rate(2, 301, None) == 150 and recover._job_rate(400, 301, None) == 1
    assert recover._job_rate(2, None, None) is None


def test_two_phase_pass_2_takes_the_phase_2_jobs_and_their_scanners(tmp_path, nmap_dtd):
    """In a two-phase run the service scan is phase 2: pass 2 selects from its jobs' XML, on their scanners."""
    run = phase1_run(tmp_path)
    fetch_and_record(tmp_path, plan_round(tmp_path))
    planned = recover.plan_run(results=tmp_path, run_id="r", available=["scan1", "scan2"], unavailable={},
                               two_phase=True, options=OPTIONS, now=6.0)
    state = pairs.load_phase2(run / "phase2")
    by_job = {j.id: j.host for j in state.jobs}
    selected = json.loads((run / "pass2" / "selection.json").read_text())["candidates"]
    # independently: the open TCP ports of the phase-2 XML without a product (no other input names them)
    unnamed = {key for _, path in pairs.phase2_inputs(state) for key, port in services(path).items()
               if port.find("state").get("state") == "open" and "product" not in service(port)}
    assert {(c["address"], c["protocol"], c["port"]) for c in selected} == unnamed
    assert {c["reason"] for c in selected} == {"table", "tcpwrapped"}
    # each selected port goes to the scanner of the phase-2 job that reported it
    for c in selected:
        reporter = next(label for label, path in pairs.phase2_inputs(state)
                        if (c["address"], "tcp", c["port"]) in services(path))
        assert c["scanner"] == by_job[reporter]
    assert {v["host"] for v in views(planned)} <= {"scan1", "scan2"}
    # the scanners were lost before any pass-2 job ran: every port keeps its phase-2 entry, once
    recover.record_run(results=tmp_path, run_id="r", now=7.0,
                       outcomes=[{"id": v["id"], "outcome": "unreachable", "files": {}} for v in views(planned)])
    result = report.report_run(results=tmp_path, run_id="r", dtd=str(nmap_dtd), two_phase=True, now=8.0)
    assert result["validated"] and result["recover"]["line"] == f"pass 2 named 0 of {len(selected)} unnamed ports"
    merged, fast = services(run / "merged.xml"), services(run / "merged-fast.xml")
    assert {k: ET.tostring(v) for k, v in merged.items()} == {k: ET.tostring(v) for k, v in fast.items()}


def test_two_phase_pass_2_needs_the_phase_2_state(tmp_path):
    phase1_run(tmp_path)
    with pytest.raises(ScanfleetError, match=r"phase2: no phase-2 state; pass 2 of a two-phase run follows"):
        recover.plan_run(results=tmp_path, run_id="r", available=["scan1"], unavailable={}, two_phase=True)


# ---- the module, as Ansible runs it --------------------------------------------------------------------


def run_module(name: str, args: dict, tmp_path: Path, check: bool = False) -> dict:
    """Run a collection module on the controller as the role does (ansible localhost, this Python): its result
    and ansible's exit status (rc)."""
    command = ["ansible", "localhost", "-c", "local", "-m", f"scanfleet.fleet.{name}", "-a", json.dumps(args),
               "-e", f"ansible_python_interpreter={sys.executable}", *(["--check"] if check else [])]
    proc = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, check=False, timeout=120,
                          env={**env(), "ANSIBLE_STDOUT_CALLBACK": "minimal",
                               "ANSIBLE_CALLBACK_RESULT_FORMAT": "json"})
    try:  # localhost | CHANGED => {...}
        return {**json.loads(proc.stdout.split(" => ", 1)[1]), "rc": proc.returncode}
    except (ValueError, IndexError):
        raise AssertionError(proc.stdout + proc.stderr) from None


def test_the_module_plans_records_and_refuses_a_bad_wait(tmp_path):
    recorded_run(tmp_path)
    base = {"results_dir": str(tmp_path), "run_id": "r1"}
    bad = run_module("scan_recover", {**base, "available": ["scanner-a"], "wait_ms": 50}, tmp_path)
    assert bad["rc"] != 0 and "pass-2 banner wait 50 is not a whole number of milliseconds from 100 to 300000" \
        in bad["msg"]
    dry = run_module("scan_recover", {**base, "available": ["scanner-a", "scanner-b"], "options": OPTIONS},
                     tmp_path, check=True)
    assert dry["changed"] and not (tmp_path / "r1" / "pass2").exists()
    planned = run_module("scan_recover", {**base, "available": ["scanner-a", "scanner-b"], "options": OPTIONS,
                                          "wait_ms": 8000}, tmp_path)
    assert planned["changed"] and planned["environment"] == {"SCANFLEET_SERVICE_WAIT_MS": "8000"}
    assert [v["id"] for v in planned["assignments"]["scanner-a"]] == ["pass2-001"]
    recorded = run_module("scan_recover", {**base, "state": "recorded",
                                           "outcomes": fetch(tmp_path, "r1", views(planned))}, tmp_path)
    assert recorded["changed"] and recorded["recorded"] == ["pass2-001", "pass2-002"] and not recorded.get("warnings")
    again = run_module("scan_recover", {**base, "available": ["scanner-a", "scanner-b"]}, tmp_path)
    assert not again["changed"] and again["done"]


def test_the_probes_module_cuts_the_null_only_file_once(tmp_path, stock_path):  # noqa: F811
    """nmap_probes' task: the NULL-only file of the merged file, written when its content changes only."""
    merged = tmp_path / "merged.probes"
    probes.write_merged(probes.merge_files(stock_path, [ROOT / "files" / "probes"]), merged)
    expected = tmp_path / "expected.probes"
    probes.write_null_only(merged, expected)
    args = {"state": "null_only", "source": str(merged), "dest": str(tmp_path / "null.probes"),
            "nmap": "/opt/scanfleet/nmap-current/bin/nmap", "host_path": "%s"}
    dry = run_module("probes", args, tmp_path, check=True)
    assert dry["rc"] == 0 and dry["changed"] and not (tmp_path / "null.probes").exists()
    first = run_module("probes", args, tmp_path)
    assert first["changed"] and (tmp_path / "null.probes").read_bytes() == expected.read_bytes()
    assert first["sha256"] == files.sha256_file(expected)
    assert "--versiondb" in first["check_command"] and first["check_command"][
        first["check_command"].index("--versiondb") + 1] == "%s"
    again = run_module("probes", args, tmp_path)
    assert again["rc"] == 0 and not again["changed"] and again["sha256"] == first["sha256"]
    no_null = tmp_path / "get.probes"
    no_null.write_text("Probe TCP GetRequest q|GET / HTTP/1.0\\r\\n\\r\\n|\nmatch http m|^HTTP/1|\n")
    refused = run_module("probes", {**args, "source": str(no_null)}, tmp_path)
    assert refused["rc"] != 0 and f"{no_null}: no 'Probe TCP NULL q||' section" in refused["msg"]


# ---- pass 2 through Ansible: the role's recover.yml on localhost, nmap on loopback in a private namespace -----

RECOVER_PLAY = """
- hosts: all
  connection: local
  gather_facts: false
  vars:
    nmap_scan_results_dir: "{results}"
    nmap_scan_remote_dir: "{remote}"
    nmap_scan_nmap: "{nmap}"
    nmap_scan_versiondb: ""
    nmap_scan_recover_versiondb: "{null_only}"
    nmap_scan_recover_wait_ms: 2500
    nmap_scan_user: root
    nmap_scan_group: root
    nmap_scan_options: [-sT, -sV, -n, --script, banner]
    nmap_scan_poll_interval: 1
    nmap_scan_stats_every: 1
    scanfleet_scope: [127.0.0.0/24]
  tasks:
    - name: The facts the role's earlier steps set
      ansible.builtin.set_fact:
        __nmap_scan_run: r1
        __nmap_scan_dir: "{results}/r1"
        __nmap_scan_session: s2
        __nmap_scan_scanners: {{localhost: {{capacity: 1, build: {build}}}}}
        __nmap_scan_unavailable: {{}}
        __nmap_scan_lost: {{}}
    - name: Pass 2
      ansible.builtin.include_role:
        name: scanfleet.fleet.nmap_scan
        tasks_from: recover.yml
    - name: Show
      ansible.builtin.debug:
        msg: "RESULT {{{{ __nmap_scan_recover_record | default({{}}) | to_json }}}} END"
"""

LISTENERS = ROOT / "tests" / "fixtures" / "xml" / "listeners.py"
EXIM = "220 mail21.fixture.test ESMTP Exim 4.96 Wed, 02 Dec 2026 04:00:00 +0000"


def localhost_run(results: Path) -> Path:
    """The fast pass of 127.0.0.21 (the fixture pass1-a: Exim behind its pause as 'smtp' from the port table)
    recorded as the role records it, scanned by the scanner 'localhost'."""
    plan = runplan.build_plan(targets=["127.0.0.21"], scope=["127.0.0.0/24"], resolver={})
    runplan.plan_run(results=results, run_id="r1", plan=plan, options=["-sV"], weights={"localhost": 1},
                     available=["localhost"], unavailable={}, session="s", round_no=1, now=1.0)
    target = results / "r1" / "localhost" / "001-localhost" / "scan.xml"
    target.parent.mkdir(parents=True)
    shutil.copy(PASS1[0].xml, target)
    collect.record_run(results=results, run_id="r1", session="s", now=2.0, outcomes=[
        {"id": "001-localhost", "outcome": "finished", "files": {"scan.xml": files.sha256_file(target)}}])
    return results / "r1"


@pytest.mark.skipif(os.geteuid() != 0, reason="the job module runs as root (become): it chowns the job's "
                                              "directories")
def test_pass_2_runs_through_the_role_and_names_the_exim_behind_its_pause(tmp_path, nmap_dtd):
    """roles/nmap_scan/tasks/recover.yml through ansible-playbook: pass 2 of a recorded fast pass planned for the
    scanner that scanned the ports, started by scan_job with the NULL-only file, -p of its ports and the wait in
    nmap's environment, waited for, fetched, recorded; the report names the Exim. Run again: nothing is started.
    A build without runtime waits: one warning, no pass 2. Debian's nmap (through a wrapper that records the
    environment it got) scans loopback only, inside a private network namespace, with a listener greeting 1 s
    after the connection."""
    stock = required_tool("nmap", "nmap")
    required_tool("unshare", "util-linux")
    results = tmp_path / "results"
    results.mkdir()
    run = localhost_run(results)
    remote = tmp_path / "remote"
    remote.mkdir(mode=0o755)
    seen = tmp_path / "seen-wait"
    wrapper = tmp_path / "nmap"
    wrapper.write_text(f'#!/bin/sh\necho "${{SCANFLEET_SERVICE_WAIT_MS:-unset}}" >> {seen}\nexec {stock} "$@"\n')
    wrapper.chmod(0o755)
    null_only = tmp_path / "nmap-service-probes.null-only"
    probes.write_null_only(Path(stock).resolve().parent.parent / "share" / "nmap" / "nmap-service-probes", null_only)
    collections = tmp_path / "collections" / "ansible_collections" / "scanfleet"
    collections.mkdir(parents=True)
    (collections / "fleet").symlink_to(ROOT)
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(tmp_path / "collections"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_STDOUT_CALLBACK="default",
               PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
    listeners = " ".join(f"'{spec}'" for spec in (f"pause:127.0.0.21:25:1:{EXIM}", "silent:127.0.0.21:1337",
                                                  "banner:127.0.0.21:2121:220 scanfleet ftp service ready",
                                                  "close:127.0.0.21:7001"))
    script = (f"ip link set lo up && {{ {sys.executable} {LISTENERS} {listeners} > {tmp_path}/ready & pid=$!; }} && "
              f"for i in $(seq 100); do grep -q ready {tmp_path}/ready 2>/dev/null && break; sleep 0.1; done; "
              'ansible-playbook "$@"; rc=$?; kill "$pid"; exit "$rc"')

    def play(build: str, *extra: str) -> str:
        playbook = tmp_path / "play.yml"
        playbook.write_text(RECOVER_PLAY.format(results=results, remote=remote, nmap=wrapper, null_only=null_only,
                                                build=build))
        proc = subprocess.run(["unshare", "-n", "sh", "-c", script, "sh", "-i", "localhost,", "-e",
                               f"ansible_python_interpreter={sys.executable}", *extra, str(playbook)],
                              capture_output=True, text=True, env=env, cwd=tmp_path, check=False, timeout=600)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout

    without = play("{}")
    assert "WARNING: no pass 2 (recovery of slow banners) on localhost: the nmap build there has no runtime " \
           "waits" in " ".join(without.split())
    assert not (run / "pass2").exists() and not seen.exists()

    output = play("{runtime_waits: true}")
    assert "pass 2: 4 ports of 5 open left unnamed by the fast pass" in output
    state = pairs.load_phase2(run / "pass2")
    assert [(j.id, j.status, j.nmap_ports) for j in state.jobs] == [("pass2-001", "finished", "T:25,1337,2121,7001")]
    argv = json.loads((remote / "r1" / "pass2-001" / "job.json").read_text())["argv"]
    assert argv[argv.index("--versiondb") + 1] == str(null_only) and "-Pn" in argv and "banner" not in argv
    assert seen.read_text() == "2500\n"  # the wait reached nmap's environment
    assert (run / "pass2" / "localhost" / "pass2-001" / "scan.xml").is_file()

    result = report.report_run(results=results, run_id="r1", dtd=str(nmap_dtd), now=9.0)
    assert result["validated"] and result["recover"]["line"] == "pass 2 named 1 of 4 unnamed ports"
    merged = services(run / "merged.xml")
    assert set(merged) == set(services(PASS1[0].xml))
    exim = service(merged[(A, "tcp", 25)])
    assert (exim["product"], exim["version"], exim["hostname"]) == ("Exim smtpd", "4.96", "mail21.fixture.test")

    again = play("{runtime_waits: true}")  # a finished pass 2: nothing planned, started or recorded
    assert result_of(again)["recorded"] == [] and "changed=0" in again and seen.read_text() == "2500\n"
    assert pairs.load_phase2(run / "pass2").to_dict() == state.to_dict()
    checked = play("{runtime_waits: true}", "--check")  # check mode: nothing started, recorded or changed
    assert "changed=0" in checked and seen.read_text() == "2500\n"
    assert pairs.load_phase2(run / "pass2").to_dict() == state.to_dict()


def result_of(output: str) -> dict:  # the debug line may be wrapped inside strings
    return json.loads(output.split("RESULT ", 1)[1].split(" END", 1)[0], strict=False)
