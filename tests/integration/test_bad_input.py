"""Bad input to provisioning: a clear error naming the input and the fix, before the host changes at all.

Runs the real playbook over SSH against one lab host (lab/lab.sh; a Debian 13 one for what only Debian 13
refuses), once per bad input, and then checks the host: no /opt/scanfleet, no scanner user, no build
dependencies installed.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parents[2]
LAB = ROOT / "lab" / "lab.sh"
HOST, ADDRESS = "badinput-1", "10.77.0.27"
TRIXIE_HOST, TRIXIE_ADDRESS = "badinput-2", "10.77.0.28"
KEY = "/var/lib/scanfleet-lab/ssh/id_ed25519"


def lab(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([str(LAB), *args], capture_output=True, text=True, check=check)


def lab_host(name: str, address: str, suite: str, inventory: Path):
    """Bring up one fresh lab host of SUITE, write an inventory for it; the caller ends it (lab down NAME)."""
    lab("down", name, check=False)
    lab("up", f"{name}={address}:{suite}")
    inventory.write_text(
        "all:\n  children:\n    scanners:\n      hosts:\n"
        f"        {name}:\n          ansible_host: {address}\n"
        "  vars:\n    ansible_user: root\n"
        f"    ansible_ssh_private_key_file: {KEY}\n"
        "    ansible_ssh_common_args: -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR\n"
        "    nmap_build_source: debian\n    nmap_build_debian_suite: trixie\n    nmap_build_version: '7.95'\n"
    )
    return inventory


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    """One fresh (bookworm) lab host, with an inventory for it; ended after the module."""
    yield lab_host(HOST, ADDRESS, "bookworm", tmp_path_factory.mktemp("inv") / "hosts.yml")
    lab("down", HOST, check=False)


@pytest.fixture(scope="module")
def trixie_host(tmp_path_factory):
    """One fresh Debian 13 (trixie) lab host, with an inventory for it; ended after the module."""
    yield lab_host(TRIXIE_HOST, TRIXIE_ADDRESS, "trixie", tmp_path_factory.mktemp("inv-trixie") / "hosts.yml")
    lab("down", TRIXIE_HOST, check=False)


def provision(inventory: Path, *extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_STDOUT_CALLBACK="default")
    return subprocess.run(["ansible-playbook", "-i", str(inventory), str(ROOT / "playbooks" / "provision.yml"),
                           *extra], capture_output=True, text=True, cwd=ROOT, env=env, check=False, timeout=600)


def assert_host_untouched(name: str = HOST) -> None:
    probe = lab("exec", name, "sh", "-c",
                "test -e /opt/scanfleet && echo root; getent passwd scanfleet && echo user; "
                "dpkg-query -W -f='${Status}' build-essential 2>/dev/null | grep -q 'install ok' && echo deps; true")
    assert probe.stdout.strip() == "", f"the host changed: {probe.stdout}"


@pytest.fixture
def os_release():
    """Make the host claim another OS for one test (ansible reads /etc/os-release), then restore it."""
    original = lab("exec", HOST, "cat", "/etc/os-release").stdout
    lab("exec", HOST, "sh", "-c", "rm /etc/os-release; printf 'NAME=\"Fedora Linux\"\\nID=fedora\\n"
        "VERSION_ID=40\\nPRETTY_NAME=\"Fedora Linux 40\"\\n' > /etc/os-release")
    yield
    lab("exec", HOST, "sh", "-c", f"cat > /etc/os-release <<'EOF'\n{original}EOF")


def test_unsupported_os(host, os_release):
    result = provision(host)
    assert result.returncode != 0
    assert "runs Fedora Linux 40; nmap_build supports only Debian 12/13, Ubuntu 22/24" in result.stdout
    assert_host_untouched()


@pytest.mark.parametrize(("extra", "expected"), [
    (["-e", "nmap_build_service_wait_ms=abc"],
     "argument 'nmap_build_service_wait_ms' is of type str and we were unable to convert to int"),
    (["-e", "nmap_build_source=archive"],
     "'archive' needs nmap_build_archive and nmap_build_sha256"),
    (["-e", "nmap_build_source=unknown"],
     "value of nmap_build_source must be one of: upstream, archive, debian, got: unknown"),
    (["-e", '{"nmap_probes_rules": ["tests/fixtures/probes/missing-delimiter.probes"]}'],
     "missing-delimiter.probes:3: match half-open: unterminated p/"),
    (["-e", '{"nmap_probes_rules": ["tests/fixtures/probes/bad-regex.probes"]}'],
     "bad-regex.probes:4: regex of broken does not compile: missing ), unterminated subpattern"),
], ids=["wrong-type", "missing-variable", "bad-choice", "probe-rule-syntax", "probe-rule-regex"])
def test_bad_variables(host, extra, expected):
    result = provision(host, *extra)
    assert result.returncode != 0
    assert expected in result.stdout, result.stdout[-3000:]
    assert_host_untouched()


def test_source_checksum_mismatch(host, tmp_path):
    archive = tmp_path / "nmap-7.95.tar.bz2"
    archive.write_bytes(b"not really nmap")
    result = provision(host, "-e", f'{{"nmap_build_source": "archive", "nmap_build_archive": "{archive}", '
                                   f'"nmap_build_sha256": "{"ab" * 32}"}}')
    assert result.returncode != 0
    assert f"checksum mismatch for {archive}: expected sha256 {'ab' * 32}, got " in result.stdout
    assert_host_untouched()


def test_version_without_pcre1_on_debian_13(trixie_host):
    """nmap 7.93 needs PCRE 1, which Debian 13 no longer ships: refused on such a host before it changes."""
    result = provision(trixie_host, "-e", '{"nmap_build_version": "7.93", "nmap_build_debian_suite": "bookworm"}')
    assert result.returncode != 0
    assert "runs Debian 13" in result.stdout, result.stdout[-3000:]
    assert ("which has no PCRE 1 (libpcre3-dev), and nmap_build_version=7.93 needs it" in result.stdout), \
        result.stdout[-3000:]
    assert_host_untouched(TRIXIE_HOST)
