"""The Ansible adapters over the scanfleet package, run for real on the controller only.

- Script arguments and rate limits: the scan role refuses bad ones before anything is sent (the inventory's
  scanner is never reached: every case fails in the role's checks, which run on the controller before the first
  connection), and the script arguments' values never reach Ansible's output (the job module's no_log parameter,
  run locally in state=status).
- A Python without the scanfleet package gets a message naming the fix from every controller-side module.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SECRET = "s3cr3t-Marker-9f27"


def env() -> dict[str, str]:
    return dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
                ANSIBLE_STDOUT_CALLBACK="default", ANSIBLE_LOCALHOST_WARNING="0",
                PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")


@pytest.fixture(scope="module")
def inventory(tmp_path_factory) -> Path:
    """One scanner that is never contacted (nothing listens at 10.77.0.250; no case gets that far)."""
    path = tmp_path_factory.mktemp("inv") / "hosts.yml"
    path.write_text("all:\n  children:\n    scanners:\n      hosts:\n        never-1:\n"
                    "          ansible_host: 10.77.0.250\n  vars:\n    scanfleet_scope: [10.77.0.0/24]\n")
    return path


def scan(inventory: Path, extra: dict) -> subprocess.CompletedProcess:
    variables = {"nmap_scan_targets": ["10.77.0.101"], **extra}
    return subprocess.run(["ansible-playbook", "-v", "-i", str(inventory), str(ROOT / "playbooks" / "scan.yml"),
                           "-e", json.dumps(variables)], capture_output=True, text=True, cwd=ROOT, env=env(),
                          check=False, timeout=300)


@pytest.mark.parametrize(("extra", "expected"), [
    ({"nmap_scan_options_extra": ["--script-args", f"smbpassword={SECRET}"]},
     "give the arguments as nmap_scan_script_args"),
    ({"nmap_scan_options_extra": ["-d"], "nmap_scan_script_args": {"smbpassword": SECRET}},
     "contain -d with nmap_scan_script_args set"),
    ({"nmap_scan_script_args": {"smbpassword": SECRET, "": SECRET}},
     "argument names must be non-empty strings"),
    ({"nmap_scan_script_args": [SECRET]},
     "nmap_scan_script_args"),
])
def test_bad_script_args_are_refused_before_any_connection(inventory, extra, expected):
    result = scan(inventory, extra)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert expected in output, output
    assert "never-1" in output and "UNREACHABLE" not in output, output  # refused before the first connection
    if "nmap_scan_script_args" in extra:
        assert SECRET not in output, output


@pytest.mark.parametrize("mode", ["2phase", ""])
def test_an_unknown_scan_mode_is_refused_before_any_connection(inventory, mode):
    result = scan(inventory, {"nmap_scan_mode": mode})
    output = " ".join((result.stdout + result.stderr).split())
    assert result.returncode != 0, output
    assert "nmap_scan_mode" in output and "one_phase" in output and "two_phase" in output, output
    assert "never-1" in output and "UNREACHABLE" not in output, output


@pytest.mark.parametrize(("extra", "expected"), [
    ({"nmap_scan_rate_budget": "fast"}, "nmap_scan_rate_budget='fast' is not a number"),
    ({"nmap_scan_rate_budget": 0}, "nmap_scan_rate_budget=0 is zero"),
    ({"nmap_scan_max_rate_per_scanner": True}, "nmap_scan_max_rate_per_scanner=True is a boolean"),
    ({"nmap_scan_rate_budget": 300, "nmap_scan_options_extra": ["--max-rate", "50"]},
     "contain --max-rate while nmap_scan_rate_budget=300 is set"),
    ({"nmap_scan_rate_budget": 300, "nmap_scan_max_rate_per_scanner": 100},  # one scanner in the inventory
     "nmap_scan_max_rate_per_scanner=100 is below what nmap_scan_rate_budget=300 needs"),
])
def test_bad_rate_limits_are_refused_before_any_connection(inventory, extra, expected):
    result = scan(inventory, extra)
    output = " ".join((result.stdout + result.stderr).split())  # the message may be wrapped
    assert result.returncode != 0, output
    assert expected in output, output
    assert "never-1" in output and "UNREACHABLE" not in output, output


def test_job_module_never_shows_the_script_args(tmp_path):
    """-vvv prints the module's invocation: the script_args value is masked there and in the result."""
    args = {"state": "status", "base_dir": str(tmp_path), "run_id": "r1", "attempts": [{"id": "001-a"}],
            "script_args": f'"smbpassword"="{SECRET}"'}
    result = subprocess.run(["ansible", "localhost", "-c", "local", "-vvv", "-m", "scanfleet.fleet.scan_job",
                             "-a", json.dumps(args), "-e", f"ansible_python_interpreter={sys.executable}"],
                            capture_output=True, text=True, cwd=ROOT, env=env(), check=False, timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "state: absent" in output, output
    assert "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER" in output, output
    assert SECRET not in output, output


@pytest.mark.parametrize(("module", "args"), [
    ("scanfleet.fleet.nmap_source", {"kind": "debian", "version": "7.95", "cache": "CACHE"}),
    ("scanfleet.fleet.probes", {"state": "checked"}),
    ("scanfleet.fleet.scan_plan",
     {"results_dir": "CACHE", "session": "s", "scanners": {}, "available": [], "scope": []}),
    ("scanfleet.fleet.scan_record", {"results_dir": "CACHE", "run_id": "r", "session": "s", "outcomes": []}),
    ("scanfleet.fleet.scan_report", {"results_dir": "CACHE", "run_id": "r"}),
    ("scanfleet.fleet.scan_harvest", {"results_dir": "CACHE", "run_id": "r"}),
    ("scanfleet.fleet.scan_recover", {"results_dir": "CACHE", "run_id": "r"}),
])
def test_adapters_say_how_to_fix_a_missing_package(module, args, tmp_path):
    """Run by a Python without the scanfleet package (the system's), each controller-side module fails with
    the same message naming the fix, instead of a traceback."""
    system_python = "/usr/bin/python3"
    probe = subprocess.run([system_python, "-c", "import scanfleet"], capture_output=True, cwd=tmp_path, check=False)
    assert probe.returncode != 0, "the system Python must not have the scanfleet package for this test"
    args = json.loads(json.dumps(args).replace("CACHE", str(tmp_path)))
    result = subprocess.run(["ansible", "localhost", "-c", "local", "-m", module, "-a", json.dumps(args),
                             "-e", f"ansible_python_interpreter={system_python}"],
                            capture_output=True, text=True, cwd=tmp_path, env=env(), check=False, timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "the scanfleet package is not importable (No module named 'scanfleet'): run ansible from the " \
           "project's virtualenv (make venv; . .venv/bin/activate)" in " ".join(output.split()), output
    assert "Traceback" not in output, output
