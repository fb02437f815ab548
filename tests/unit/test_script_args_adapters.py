"""Script arguments through Ansible: the scan role refuses bad ones before anything is sent, and the values
never reach Ansible's output (module no_log, filters). Runs the real ansible-playbook/ansible on the controller
only: the scanner of the inventory is never reached (every case fails in the role's checks, which run on the
controller before the first connection), and the module runs locally in state=status on an empty directory."""

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


def test_job_module_never_shows_the_script_args(tmp_path):
    """-vvv prints the module's invocation: the script_args value is masked there and in the result."""
    args = {"state": "status", "base_dir": str(tmp_path), "run_id": "r1", "attempts": [{"id": "001-a"}],
            "script_args": f'"smbpassword"="{SECRET}"'}
    result = subprocess.run(["ansible", "localhost", "-c", "local", "-vvv", "-m", "scanfleet_scan_job",
                             "-a", json.dumps(args), "-e", f"ansible_python_interpreter={sys.executable}"],
                            capture_output=True, text=True, cwd=ROOT, env=env(), check=False, timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "state: absent" in output, output
    assert "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER" in output, output
    assert SECRET not in output, output
