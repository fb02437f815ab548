"""Patch, configure, compile and install each supported nmap source as the role does, then prove the
patches are in effect with the same checks the role and molecule run (in an isolated network namespace)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from tests.conftest import ROOT
from tests.patching import apply_patches, render_patches, role_configure_args

pytestmark = pytest.mark.build

WORK = ROOT / ".cache" / "build-test"
SILENT_CHECK = ROOT / "roles" / "nmap_build" / "files" / "silent_port_check.py"
TCPWRAPPED_CHECK = ROOT / "molecule" / "shared" / "files" / "tcpwrapped_check.py"


def isolated(cmd: list[str]) -> subprocess.CompletedProcess:
    """Run CMD in a new network namespace holding only loopback: nothing it sends leaves it."""
    script = 'ip link set lo up && exec "$@"'
    return subprocess.run(["unshare", "--net", "--", "sh", "-c", script, "sh", *cmd],
                          capture_output=True, text=True, check=False, timeout=300)


@pytest.fixture
def built_nmap(nmap_tree):
    work = WORK / nmap_tree.parent.name
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    os.chmod(WORK, 0o755)
    tree = work / "tree"
    shutil.copytree(nmap_tree, tree, symlinks=True)
    nmap_version = (nmap_tree / "debian" / "changelog").read_text().split("(", 1)[1].split("+", 1)[0]
    result = apply_patches(tree, render_patches(work / "patches"))
    assert result.returncode == 0, result.stdout + result.stderr
    for configure in tree.rglob("configure"):
        configure.touch()
    prefix = work / "prefix"
    steps = [["./configure", f"--prefix={prefix}", *role_configure_args(nmap_version)],
             ["make", f"-j{os.cpu_count()}"], ["make", "install"]]
    for step in steps:
        proc = subprocess.run(step, cwd=tree, capture_output=True, text=True, check=False)
        assert proc.returncode == 0, (
            f"{step[0]} failed for nmap {nmap_version}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    shutil.rmtree(tree)
    return nmap_version, prefix / "bin" / "nmap"


def test_patched_build_runs_with_short_waits(built_nmap):
    version, nmap = built_nmap
    out = subprocess.run([str(nmap), "--version"], capture_output=True, text=True, check=True).stdout
    assert f"Nmap version {version} " in out

    silent = isolated(["python3", str(SILENT_CHECK), "--nmap", str(nmap), "--user", "root", "--max-seconds", "15"])
    assert silent.returncode == 0, silent.stdout + silent.stderr
    assert json.loads(silent.stdout)["port_state"] == "open"

    wrapped = isolated(["python3", str(TCPWRAPPED_CHECK), "--nmap", str(nmap), "--user", "root", "--close-ms", "250"])
    assert wrapped.returncode == 0, wrapped.stdout + wrapped.stderr
    result = json.loads(wrapped.stdout)
    assert result["immediate_close"] == "tcpwrapped" and result["immediate_probes_sent"] == 1
    assert result["delayed_probes_sent"] > 1, result  # the probes file's tcpwrappedms 3000 was ignored
