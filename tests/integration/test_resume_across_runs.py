"""Results survive the job: a scan interrupted in one playbook run is finished by a second, separate playbook run
that shares nothing with the first but nmap_scan_results_dir, an absolute path (as on AWX, where each job runs in
a fresh container and only a persistent volume carries the run).

Lab test (pytest -m lab; make lab-test): one lab scanner host of its own (lab/lab.sh), provisioned by the real
playbook, and the lab's target hosts (lab/targets.sh up, as make test does). Each playbook run has its own working
directory, HOME and ANSIBLE_LOCAL_TEMP (fresh temporary directories); the first is ended by PID (its process
group: the test started it) once the scan's first job is assigned. Then the second must resume the same run id
from the results directory alone: every target covered exactly once, both runs recorded as sessions, and no
attempt the first run finished scanned again.

Safety: only the lab target hosts' addresses (10.77.0.101-103) are scanned, within the scope 10.77.0.0/24.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import unavailable

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parents[2]
LAB = ROOT / "lab" / "lab.sh"
HOST, ADDRESS = "resume-1", "10.77.0.29"
KEY = "/var/lib/scanfleet-lab/ssh/id_ed25519"
TARGETS = ["10.77.0.101-103"]
RUN_ID = "resume-across-runs"


def lab(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([str(LAB), *args], capture_output=True, text=True, check=check)


def playbook_env(home: Path) -> dict[str, str]:
    """A playbook run's own HOME and local temp: nothing on the controller but the results dir is shared."""
    (home / "tmp").mkdir(parents=True, exist_ok=True)
    return dict(os.environ, HOME=str(home), ANSIBLE_LOCAL_TEMP=str(home / "tmp"),
                ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1", ANSIBLE_STDOUT_CALLBACK="default")


def scan_command(inventory: Path, results: Path) -> list[str]:
    extra = {"nmap_scan_targets": TARGETS, "nmap_scan_ports": "1-65535", "nmap_scan_run_id": RUN_ID,
             "nmap_scan_results_dir": str(results)}
    return ["ansible-playbook", "-i", str(inventory), str(ROOT / "playbooks" / "scan.yml"), "-e", json.dumps(extra)]


def status(results: Path) -> dict:
    out = subprocess.run(["scanfleet", "run", "status", str(results / RUN_ID), "--json"], capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout)


@pytest.fixture(scope="module")
def inventory(tmp_path_factory):
    """One fresh lab scanner host, provisioned by playbooks/provision.yml; ended after the module."""
    if not LAB.exists() or os.geteuid() != 0:
        unavailable("the lab needs root and lab/lab.sh")
    try:  # sshd runs on every lab host: one connection says the first target host is up
        socket.create_connection(("10.77.0.101", 22), timeout=3).close()
    except OSError as exc:
        unavailable(f"the lab's target hosts are not up ({exc}): lab/targets.sh up (make test brings them up)")
    lab("down", HOST, check=False)
    lab("up", f"{HOST}={ADDRESS}")
    path = tmp_path_factory.mktemp("inv") / "hosts.yml"
    ssh_args = "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR"  # throw-away host
    connection = {"ansible_user": "root", "ansible_ssh_private_key_file": KEY, "ansible_ssh_common_args": ssh_args}
    build = {"nmap_build_source": "debian", "nmap_build_debian_suite": "trixie", "nmap_build_version": "7.95"}
    path.write_text(yaml.safe_dump({"all": {
        "children": {"scanners": {"hosts": {HOST: {"ansible_host": ADDRESS}}}},
        "vars": {**connection, **build, "scanfleet_scope": ["10.77.0.0/24"]}}}))
    home = tmp_path_factory.mktemp("provision")
    result = subprocess.run(["ansible-playbook", "-i", str(path), str(ROOT / "playbooks" / "provision.yml")],
                            capture_output=True, text=True, cwd=home, env=playbook_env(home), check=False,
                            timeout=1200)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    yield path
    lab("down", HOST, check=False)


def test_second_run_resumes_from_the_results_dir_alone(inventory, tmp_path):
    results = tmp_path / "volume" / "scanfleet-results"  # absolute, outside the clone: the persistent volume
    first, second = tmp_path / "job1", tmp_path / "job2"
    first.mkdir()
    second.mkdir()

    # Job 1: started in its own process group, ended by PID once its first attempt is assigned.
    job = subprocess.Popen(scan_command(inventory, results), cwd=first, env=playbook_env(first / "home"),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    deadline = time.monotonic() + 300
    state = results / RUN_ID / "state.json"
    while time.monotonic() < deadline and job.poll() is None:
        if state.exists() and json.loads(state.read_text()).get("attempts"):
            break
        time.sleep(0.5)
    assert job.poll() is None, f"job 1 ended before it could be interrupted:\n{job.communicate()[0][-4000:]}"
    assert state.exists(), "job 1 assigned no attempt within 300 s"
    os.killpg(job.pid, signal.SIGTERM)
    try:
        job.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(job.pid, signal.SIGKILL)
        job.wait(timeout=30)
    before = status(results)
    assert not before["complete"], "job 1 was interrupted too late to test resuming"
    done_before = {a["id"] for a in before["attempts"] if a["status"] == "finished"}

    # Job 2: another working directory and HOME; only the results directory is shared.
    result = subprocess.run(scan_command(inventory, results), cwd=second, env=playbook_env(second / "home"),
                            capture_output=True, text=True, check=False, timeout=1200)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    after = status(results)
    # Every address once (duplicates counts addresses two finished attempts both cover: a finished shard of job 1
    # scanned again would show there), job 1's finished attempts kept as they were, and two sessions.
    assert after["complete"] and after["duplicates"] == 0, after["coverage"]
    assert after["sessions"] >= 2, "job 2 did not resume job 1's run (one session only)"
    kept = {a["id"] for a in after["attempts"] if a["status"] == "finished"}
    assert done_before <= kept, f"attempts job 1 finished are no longer finished: {done_before - kept}"
    for name in ("merged.xml", "merged.csv", "summary.json"):
        assert (results / RUN_ID / name).is_file(), f"{name} missing after job 2"
