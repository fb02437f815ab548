"""The collection as a consumer gets it: ``ansible-galaxy collection build`` of the clone, installed into a temporary
collections path, used from a temporary project directory outside the clone (its own ansible.cfg, no link to the
clone: only the installed copy can resolve ``scanfleet.fleet.*``).

- Without the lab: the tarball holds the collection and none of the clone's local state; ``ansible-doc`` renders
  every module, role and filter from the installed copy, with a sample for every return value.
- With the lab (``pytest -m lab``): a playbook in the temporary project uses the installed ``nmap_scan`` role by
  FQCN to plan a scan of the lab's targets in check mode, on a fresh lab host.

The controller-side modules need the ``scanfleet`` Python package: the tests run Ansible with the venv's Python,
which has it (a consumer installs it with pip); every Ansible file comes from the installed tarball.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
MODULES = ["nmap_source", "probes", "scan_harvest", "scan_job", "scan_pairs", "scan_plan", "scan_record",
           "scan_recover", "scan_report", "scan_wait"]
ROLES = ["nmap_build", "nmap_probes", "nmap_scan"]
FILTERS = ["check_rate_limits", "check_script_options", "phase_options", "script_arg_names", "script_args"]
# Left out of the tarball (galaxy.yml build_ignore): the clone's local state.
LOCAL_STATE = (".cache/", ".venv/", "results/", ".pytest_cache/", ".ruff_cache/", "scanfleet.egg-info/",
               "bench/results/")
# The consumer project's ansible.cfg: the installed collections, and the lab's SSH control path (lab/lab.sh
# closes the masters there before it ends a host).
CONSUMER_CFG = """[defaults]
collections_path = collections
retry_files_enabled = false
interpreter_python = auto_silent

[ssh_connection]
pipelining = true
control_path_dir = /tmp/.scanfleet-cp
control_path = %(directory)s/%%h-%%p-%%r
"""


@dataclass
class Consumer:
    project: Path  # the consumer's project directory (outside the clone), with collections/ in it
    tarball: Path

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
        env.update(ANSIBLE_CONFIG=str(self.project / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
                   ANSIBLE_LOCAL_TEMP=str(self.project / ".tmp"), ANSIBLE_HOME=str(self.project / ".ansible"),
                   PATH=f"{BIN}:{env.get('PATH', '')}")
        return env

    def run(self, *argv: str, timeout: int = 300) -> subprocess.CompletedProcess:
        return subprocess.run(list(argv), capture_output=True, text=True, cwd=self.project, env=self.env(),
                              check=False, timeout=timeout)

    @property
    def installed(self) -> Path:
        return self.project / "collections" / "ansible_collections" / "scanfleet" / "fleet"


@pytest.fixture(scope="module")
def consumer(tmp_path_factory) -> Consumer:
    """The clone built into a tarball and installed into a fresh project directory's collections/."""
    project = tmp_path_factory.mktemp("consumer")
    (project / "ansible.cfg").write_text(CONSUMER_CFG)
    (project / ".tmp").mkdir()
    dist = tmp_path_factory.mktemp("dist")
    consumer = Consumer(project, dist / "scanfleet-fleet-0.1.0.tar.gz")
    built = consumer.run("ansible-galaxy", "collection", "build", "--output-path", str(dist), str(ROOT))
    assert built.returncode == 0 and consumer.tarball.is_file(), built.stdout + built.stderr
    installed = consumer.run("ansible-galaxy", "collection", "install", "--offline", "-p", "collections",
                             str(consumer.tarball))
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert (consumer.installed / "MANIFEST.json").is_file(), installed.stdout
    return consumer


def test_tarball_holds_the_collection_and_no_local_state(consumer):
    with tarfile.open(consumer.tarball) as tar:
        names = set(tar.getnames())
        links = {m.name: m.linkname for m in tar.getmembers() if m.issym()}
    for path in ("MANIFEST.json", "meta/runtime.yml", "README.md", "ansible.cfg", "playbooks/scan.yml",
                 "plugins/module_utils/adapter.py", "plugins/doc_fragments/run.py", "plugins/filter/script_args.py",
                 "roles/nmap_build/files/keys/nmap-project-signing-key.asc",
                 "roles/nmap_probes/files/probes/services.probes"):
        assert path in names, f"{path} is not in {consumer.tarball.name}"
    assert not [n for n in names if n.startswith(LOCAL_STATE) or "__pycache__" in n], sorted(names)
    # the top-level files/ that users know are links into the roles, kept as links inside the collection
    assert links.get("files/probes") == "../roles/nmap_probes/files/probes", links
    assert (consumer.installed / "files" / "probes" / "services.probes").is_file()


def test_installed_collection_lists_every_module_role_and_filter(consumer):
    listed = consumer.run("ansible-doc", "--json", "-l", "scanfleet.fleet")
    assert listed.returncode == 0, listed.stderr
    expected = set(MODULES)
    assert {name.rsplit(".", 1)[1] for name in json.loads(listed.stdout)} >= expected, listed.stdout
    roles = consumer.run("ansible-doc", "--json", "-t", "role", "-l", "scanfleet.fleet")
    assert roles.returncode == 0, roles.stderr
    assert {name.rsplit(".", 1)[1] for name in json.loads(roles.stdout)} == set(ROLES), roles.stdout
    filters = consumer.run("ansible-doc", "--json", "-t", "filter", "-l", "scanfleet.fleet")
    assert filters.returncode == 0, filters.stderr
    listed_filters = json.loads(filters.stdout)
    assert {name.rsplit(".", 1)[1] for name in listed_filters} == set(FILTERS), filters.stdout
    assert "UNDOCUMENTED" not in listed_filters.values(), listed_filters


def _samples_missing(returns: dict, prefix: str = "") -> list[str]:
    missing = []
    for key, spec in returns.items():
        if "sample" not in spec:
            missing.append(prefix + key)
        missing += _samples_missing(spec.get("contains") or {}, f"{prefix}{key}.")
    return missing


@pytest.mark.parametrize("module", MODULES)
def test_installed_module_documents_itself(consumer, module):
    """ansible-doc renders the module from the installed copy, without a warning; RETURN has a sample per key."""
    fqcn = f"scanfleet.fleet.{module}"
    text = consumer.run("ansible-doc", fqcn)
    assert text.returncode == 0 and text.stderr.strip() == "", text.stderr
    assert str(consumer.installed / "plugins" / "modules") in text.stdout, text.stdout[:400]
    raw = consumer.run("ansible-doc", "--json", fqcn)
    assert raw.returncode == 0, raw.stderr
    entry = json.loads(raw.stdout)[fqcn]
    doc, returns, examples = entry["doc"], entry["return"] or {}, entry["examples"] or ""
    assert doc["module"] == module and doc["short_description"] and doc["options"], doc
    assert returns and _samples_missing(returns) == [], f"{fqcn}: RETURN without a sample: {_samples_missing(returns)}"
    assert yaml.safe_load(examples) and f"{fqcn}:" in examples, examples


def plan_in_check_mode(consumer: Consumer, host: str, host_vars: dict) -> None:
    """A playbook in the consumer's project (outside the clone) runs the installed nmap_scan role by FQCN in check
    mode with HOST as the one scanner, against the lab inventory's targets: the plan is made and shown, and
    nothing is written. No target is contacted (check mode starts no job)."""
    inventory = consumer.project / f"{host}.yml"
    inventory.write_text(yaml.safe_dump({"all": {
        "children": {"scanners": {"hosts": {host: host_vars}}},
        "vars": {"scanfleet_scope": ["10.77.0.0/24"]}}}))
    playbook = consumer.project / "plan.yml"
    playbook.write_text(yaml.safe_dump([{
        "name": "Plan a scan of the lab targets with the installed collection",
        "hosts": "scanners", "become": True, "gather_facts": False,
        "roles": [{"role": "scanfleet.fleet.nmap_scan"}]}], sort_keys=False))
    # The scanner is not provisioned: nmap_scan_nmap only has to exist for it to count as a scanner, and check
    # mode never runs it.
    variables = {"nmap_scan_target_groups": ["targets"], "nmap_scan_ports": "22,80", "nmap_scan_nmap": "/bin/true"}
    result = consumer.run("ansible-playbook", "--check", "-i", str(inventory),
                          "-i", str(ROOT / "inventory" / "lab" / "targets.yml"), str(playbook),
                          "-e", json.dumps(variables), timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "Plan the shards of round 1" in output, output[-4000:]
    assert "(new; fingerprint" in output and f"{host}: 001-{host} (new) " in output, output[-4000:]
    # check mode writes nothing: the default results directory (relative to the project) was not made
    assert not (consumer.project / "results").exists()


def test_installed_roles_plan_a_scan_from_outside_the_clone(consumer):
    """The controller itself as the one scanner (local connection, the venv's Python)."""
    plan_in_check_mode(consumer, "local-scanner", {"ansible_connection": "local",
                                                   "ansible_python_interpreter": sys.executable})


@pytest.mark.lab
def test_installed_roles_plan_a_scan_on_a_lab_host(consumer):
    """The same plan with a fresh lab host (lab/lab.sh, over SSH) as the scanner."""
    lab = ROOT / "lab" / "lab.sh"
    host, address = "collection-1", "10.77.0.28"
    subprocess.run([str(lab), "down", host], capture_output=True, check=False)
    subprocess.run([str(lab), "up", f"{host}={address}"], capture_output=True, text=True, check=True)
    try:
        plan_in_check_mode(consumer, host, {
            "ansible_host": address, "ansible_user": "root",
            "ansible_ssh_private_key_file": "/var/lib/scanfleet-lab/ssh/id_ed25519",
            "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR"})
    finally:
        subprocess.run([str(lab), "down", host], capture_output=True, check=False)
