"""The execution environment (execution-environment.yml, ansible-builder format 3) renders into a build context
that holds what the controller side needs, and the requirement files are split and pinned.

`ansible-builder create` needs no container engine: the test builds the collection tarball the definition copies,
renders the context into a temporary directory and reads the generated Containerfile and _build/ files.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==(\S+)$")


def requirement_lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


def pins(path: Path) -> dict[str, str]:
    out = {}
    for line in requirement_lines(path):
        match = PIN.match(line)
        assert match, f"{path.name}: {line!r} is not pinned as NAME==VERSION"
        out[match.group(1).lower().replace("_", "-")] = match.group(2)
    return out


@pytest.fixture(scope="module")
def context(tmp_path_factory) -> Path:
    builder = shutil.which("ansible-builder")
    if builder is None:
        pytest.fail("ansible-builder not found: make venv installs it (requirements-dev.txt)", pytrace=False)
    work = tmp_path_factory.mktemp("ee")
    definition = yaml.safe_load((ROOT / "execution-environment.yml").read_text())
    # The tarball the definition copies is built by `make ee` into .cache/ee/collection; here into a copy of the
    # definition's directory layout under WORK, so the test does not depend on (or change) the clone's cache.
    tarball = definition["additional_build_files"][0]["src"]
    out = work / Path(tarball).parent
    out.mkdir(parents=True)
    subprocess.run(["ansible-galaxy", "collection", "build", "--force", "--output-path", str(out), str(ROOT)],
                   check=True, capture_output=True, text=True)
    assert (work / tarball).is_file(), f"ansible-galaxy did not make {tarball}: galaxy.yml's version changed?"
    for name in ("execution-environment.yml", "requirements.txt", "bindep.txt"):
        shutil.copy(ROOT / name, work / name)
    (work / "ee").mkdir()
    shutil.copy(ROOT / "ee" / "requirements.yml", work / "ee" / "requirements.yml")
    result = subprocess.run([builder, "create", "-f", "execution-environment.yml", "-c", "context",
                             "--output-filename", "Containerfile"], cwd=work, capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, f"ansible-builder create failed:\n{result.stdout}\n{result.stderr}"
    return work / "context"


def test_context_installs_the_pinned_core_python_and_system_tools(context):
    containerfile = (context / "Containerfile").read_text()
    core = pins(ROOT / "requirements.txt")["ansible-core"]
    assert f'ANSIBLE_INSTALL_REFS="ansible-core=={core} ' in containerfile
    assert 'PYCMD="/usr/bin/python3.11"' in containerfile
    assert (context / "_build" / "requirements.txt").read_text() == (ROOT / "requirements.txt").read_text()
    bindep = (context / "_build" / "bindep.txt").read_text()
    for package in ("libxml2-utils [platform:dpkg]", "xsltproc [platform:dpkg]", "libxml2 [platform:rpm]",
                    "libxslt [platform:rpm]", "openssh-clients [platform:rpm]", "gnupg2 [platform:rpm]"):
        assert package in bindep, f"bindep.txt lacks {package}"
    assert "introspect --user-pip=requirements.txt --user-bindep=bindep.txt" in containerfile


def test_context_installs_the_collection_and_its_python_package(context):
    containerfile = (context / "Containerfile").read_text()
    galaxy = yaml.safe_load((context / "_build" / "requirements.yml").read_text())
    (entry,) = galaxy["collections"]
    tarball = context / "_build" / entry["name"]
    assert entry["type"] == "file" and tarball.is_file(), f"{entry} is not in the context's _build/"
    with tarfile.open(tarball) as tar:
        names = set(tar.getnames())
    for member in ("pyproject.toml", "scanfleet/__init__.py", "scanfleet/probes/__init__.py", "LICENSE",
                   "playbooks/scan.yml", "plugins/module_utils/adapter.py"):
        assert member in names, f"the collection tarball lacks {member}"
    assert not {n for n in names if n.startswith((".venv", ".cache", "results/"))}, "local state in the tarball"
    # galaxy installs it from /build (where _build is copied), then pip installs the package from the collection.
    assert "COPY _build /build" in containerfile
    assert "ansible-galaxy collection install $ANSIBLE_GALAXY_CLI_COLLECTION_OPTS -r requirements.yml" in containerfile
    install = containerfile.index("/usr/share/ansible/collections/ansible_collections/scanfleet/fleet")
    assert containerfile.rfind("FROM base AS final", 0, install) > 0, "the package is not installed in the final image"
    assert "import scanfleet' && xmllint --version && xsltproc --version" in containerfile


def test_requirements_are_split_and_pinned_by_the_constraints():
    runtime = pins(ROOT / "requirements.txt")
    dev = pins(ROOT / "requirements-dev.txt")
    bench = pins(ROOT / "bench" / "requirements.txt")
    constraints = pins(ROOT / "constraints.txt")
    assert not set(runtime) & {"molecule", "ansible-lint", "yamllint", "ruff", "pytest", "ansible-builder"}, (
        "test tools belong in requirements-dev.txt")
    assert {"molecule", "ansible-lint", "yamllint", "ruff", "pytest", "ansible-builder"} <= set(dev)
    # Nothing imports paramiko (connections use OpenSSH): it is in no requirement file.
    assert "paramiko" not in runtime | dev | bench | constraints
    for name, version in (runtime | dev | bench).items():
        assert constraints.get(name) == version, f"{name}=={version} differs from constraints.txt"
    makefile = (ROOT / "Makefile").read_text()
    assert "pip install -q -r requirements.txt -r requirements-dev.txt -c constraints.txt" in makefile
    assert "pip install -q -r bench/requirements.txt -c constraints.txt" in makefile
