"""Shared fixtures: real nmap sources (Debian source packages) fetched once into .cache/src; the tools and nmap
data files the tests require; what a test does when a required input cannot be had."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import NoReturn

import pytest

from scanfleet import ScanfleetError, merge
from scanfleet.source import fetch_debian_source

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "src"

# nmap version -> Debian suite whose source package carries it.
NMAP_SUITES = {"7.93": "bookworm", "7.95": "trixie", "7.991": "sid"}

# Versions whose source may be missing even in CI: no mirror serves 7.991 yet (a later issue gives it one).
NMAP_SOURCE_OPTIONAL = {"7.991"}

# CI (make test in the pipeline) must have every input: there a missing one fails the test instead of skipping it.
CI = os.environ.get("CI") == "true"


def unavailable(reason: str, *, optional: bool = False) -> NoReturn:
    """A test's required input cannot be had: skip it, saying why, except under CI=true (unless OPTIONAL),
    where the test fails with the same reason."""
    if CI and not optional:
        pytest.fail(f"{reason} (CI=true: a missing input fails instead of skipping)", pytrace=False)
    pytest.skip(reason)


def required_tool(name: str, package: str) -> str:
    """The path of a tool the tests need; fails, naming the Debian package, when it is not installed."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found: install the Debian package {package} (make deps installs it)", pytrace=False)
    return path


def required_nmap_file(name: str) -> Path:
    """nmap.dtd / nmap.xsl as scanfleet finds them; fails, naming where it looked, when there is none."""
    path = merge.find_nmap_file(name)
    if path is None:
        places = ", ".join(str(d) for d in merge.NMAP_DATA_DIRS)
        pytest.fail(f"{name} not found in {places}: install the Debian package nmap (make deps installs it)",
                    pytrace=False)
    return path


@pytest.fixture(scope="session")
def nmap_dtd() -> Path:
    """nmap.dtd, with xmllint to validate against it: make test installs both, so both are required."""
    required_tool("xmllint", "libxml2-utils")
    return required_nmap_file("nmap.dtd")


@pytest.fixture(scope="session")
def nmap_xsl() -> Path:
    """nmap.xsl, with xsltproc to render it: required like nmap_dtd."""
    required_tool("xsltproc", "xsltproc")
    return required_nmap_file("nmap.xsl")


def nmap_source_tree(version: str) -> Path:
    """Return the extracted (Debian-patched) source tree of nmap VERSION, fetching it if needed.

    When the mirror does not serve that source package, skips the calling test naming the reason, or fails
    it under CI=true (except for the versions of NMAP_SOURCE_OPTIONAL).
    """
    suite = NMAP_SUITES[version]
    dest = CACHE / suite
    tree = dest / "tree"
    if not (tree / "service_scan.cc").is_file():
        try:
            dsc = fetch_debian_source(suite, dest)
        except ScanfleetError as exc:
            unavailable(f"nmap {version} source ({suite}) not available from the apt mirror: {exc}",
                        optional=version in NMAP_SOURCE_OPTIONAL)
        subprocess.run(["dpkg-source", "-x", str(dsc), str(tree)], cwd=dest, check=True,
                       capture_output=True)
    changelog = (tree / "debian" / "changelog").read_text(errors="replace").splitlines()[0]
    assert f"({version}+" in changelog, f"{tree} is not nmap {version}: {changelog}"
    return tree


@pytest.fixture(scope="module", params=sorted(NMAP_SUITES, key=lambda v: tuple(int(p) for p in v.split("."))))
def nmap_tree(request) -> Path:
    """Parametrised over every supported nmap version: the extracted source tree."""
    return nmap_source_tree(request.param)
