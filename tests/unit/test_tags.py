"""The tags of the common subsets (README: Tags) select what they should: ansible-playbook --list-tasks with each
tag on the real playbooks. build = nmap_build, probes = the rules' pre-check and nmap_probes, scan = nmap_scan,
report = the merge and summary at the end of nmap_scan."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TASK = re.compile(r"^ {6}(?:(?P<role>[\w.]+) : )?(?P<name>.*?)\tTAGS: \[(?P<tags>[^\]]*)\]$")
ARG_SPEC = "Validating arguments against arg spec"


def listed(playbook: str, *args: str) -> list[tuple[str, str, set[str]]]:
    """(role, task name, tags) of every task ansible-playbook --list-tasks shows for PLAYBOOK with ARGS."""
    result = subprocess.run(["ansible-playbook", "--list-tasks", str(ROOT / "playbooks" / playbook), *args],
                            capture_output=True, text=True, check=False, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    tasks = []
    for line in result.stdout.splitlines():
        match = TASK.match(line)
        if match:
            role = (match["role"] or "").rpartition(".")[2]
            tasks.append((role, match["name"], {t.strip() for t in match["tags"].split(",") if t.strip()}))
    assert tasks, f"no tasks listed:\n{result.stdout}"
    return tasks


def roles(tasks, *, without_always: bool = True) -> set[str]:
    return {role for role, _, tags in tasks if not (without_always and "always" in tags)}


@pytest.fixture(scope="module")
def provision_all():
    return listed("provision.yml")


def test_every_provision_task_has_exactly_one_subset(provision_all):
    for role, name, tags in provision_all:
        if ARG_SPEC in name:
            continue
        assert len(tags & {"build", "probes"}) == 1, f"{role}: {name!r} has tags {tags}"
        assert ("build" in tags) == (role == "nmap_build"), f"{role}: {name!r} has tags {tags}"


def test_build_selects_the_build_only(provision_all):
    tasks = listed("provision.yml", "--tags", "build")
    assert roles(tasks) == {"nmap_build"}
    names = [name for _, name, _ in tasks]
    assert "Compile" in names and "Point the current link at the verified build (atomic rename)" in names
    expected = [t for t in provision_all if t[0] == "nmap_build"]
    assert [t for t in tasks if t[0] == "nmap_build"] == expected


def test_probes_selects_the_precheck_and_the_probes_role(provision_all):
    tasks = listed("provision.yml", "--tags", "probes")
    assert roles(tasks) == {"", "nmap_probes"}
    names = [name for _, name, _ in tasks]
    assert names[0] == "Check the probe rules before any host changes"
    assert "Compile" not in names
    assert [t for t in tasks if t[0] == "nmap_probes"] == [t for t in provision_all if t[0] == "nmap_probes"]


def test_scan_and_report():
    everything = listed("scan.yml")
    assert listed("scan.yml", "--tags", "scan") == everything
    assert roles(everything) == {"nmap_scan"}
    report = [name for _, name, tags in listed("scan.yml", "--tags", "report") if "always" not in tags]
    assert report == ["Fetch nmap.dtd and nmap.xsl of the build (validation and HTML of the merged report)",
                      "Merge the results into merged.xml (validated), merged.json, merged.csv and merged.html",
                      "Show the summary of the run",
                      "Show what changed since the earlier run",
                      "Fail unless every target address was scanned exactly once",
                      "Draft match rules from the unnamed services into harvest.probes"]
    rest = [name for _, name, _ in listed("scan.yml", "--skip-tags", "report")]
    assert not set(rest) & set(report)
    assert "End any job of this run still running on the scanners" in rest
    assert "Scan in rounds until every target is covered (plan or resume, run, progress, fetch, record)" in rest
    assert set(rest) | set(report) == {name for _, name, _ in everything}
