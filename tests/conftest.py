"""Shared fixtures: real nmap sources (Debian source packages, or a tree of nmap's git repository where no Debian
package can be had) unpacked once into .cache/src; the tools and nmap data files the tests require; what a test
does when a required input cannot be had."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import NoReturn

import pytest

from scanfleet import ScanfleetError, merge
from scanfleet.files import sha256_file
from scanfleet.source import fetch_debian_source

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "src"

# nmap version -> Debian suite whose source package carries it.
NMAP_SUITES = {"7.93": "bookworm", "7.95": "trixie"}

# nmap 7.991 -- provenance. Debian's index lists nmap 7.991+dfsg-1 (sid), but its files answer 404 on the mirror
# these machines use. The tests use instead the tree of nmap's public git repository at tag v7.991 (commit
# 1bb2586a85ae41dc6824a8405e44d17309e9288c, 2026-08-05), packed with `git archive --prefix=nmap-7.991/` into
# nmap-7.991-src.tar.xz, whose sha256 below was computed from the file itself (no upstream signature covers it).
# How it differs from the release tarball nmap-7.991.tar.bz2 (the file's README.md beside it says the same):
#   - it is a git tree: nmap.h has NMAP_SPECIAL "SVN", so `nmap --version` says 7.99SVN (the role's version
#     rule, roles/nmap_build/vars/main.yml __nmap_build_version_reported, accepts that for 7.991);
#   - nmap-os-db is missing (only -O reads it, but `make install` copies it): the build test puts 7.95's there
#     (NMAP_OS_DB_FROM), so the OS fingerprints of that build are 7.95's.
# The file is not in the repository: it is looked for in $SCANFLEET_NMAP_SOURCES, by default ../shared/sources
# beside the clone (on the lab machine /work/shared/sources). Missing, the tests that need it skip, naming that
# variable, or fail under CI=true.
NMAP_GIT_TREES = {
    "7.991": {"file": "nmap-7.991-src.tar.xz", "top": "nmap-7.991", "tag": "v7.991",
              "commit": "1bb2586a85ae41dc6824a8405e44d17309e9288c",
              "sha256": "5a0159880198abe1227940fd430a2d557dad4802b6b7919e7b96893d2938a8a3",
              "nmap_h": {"NMAP_MAJOR": "7", "NMAP_MINOR": "99", "NMAP_BUILD": "1", "NMAP_SPECIAL": '"SVN"'}},
}
NMAP_SOURCES_VAR = "SCANFLEET_NMAP_SOURCES"
NMAP_SOURCES_DEFAULT = ROOT.parent / "shared" / "sources"
NMAP_SOURCES_HINT = "/work/shared/sources"
NMAP_OS_DB_FROM = "7.95"

# Every supported version, oldest first.
NMAP_VERSIONS = sorted([*NMAP_SUITES, *NMAP_GIT_TREES], key=lambda v: tuple(int(p) for p in v.split(".")))

# CI (make test in the pipeline) must have every input: there a missing one fails the test instead of skipping it.
CI = os.environ.get("CI") == "true"


def unavailable(reason: str) -> NoReturn:
    """A test's required input cannot be had: skip it, saying why, except under CI=true, where the test fails
    with the same reason."""
    if CI:
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


def nmap_sources_dir() -> Path:
    """The directory holding the nmap source archives that no mirror serves ($SCANFLEET_NMAP_SOURCES)."""
    value = os.environ.get(NMAP_SOURCES_VAR, "")
    return Path(value).expanduser().resolve() if value else NMAP_SOURCES_DEFAULT.resolve()


def git_tree_archive(version: str) -> Path:
    """The verified archive of nmap VERSION's git tree; skips (fails under CI=true) when it is missing."""
    info = NMAP_GIT_TREES[version]
    where = nmap_sources_dir()
    archive = where / info["file"]
    if not archive.is_file():
        unavailable(f"nmap {version} source {info['file']} not found in {where}: set {NMAP_SOURCES_VAR} to the "
                    f"directory holding it (on the lab machine: {NMAP_SOURCES_HINT}), e.g. "
                    f"'{NMAP_SOURCES_VAR}={NMAP_SOURCES_HINT} make build-test'")
    digest = sha256_file(archive)
    assert digest == info["sha256"], (
        f"{archive} has sha256 {digest}, not {info['sha256']} (git archive of nmap's tag {info['tag']}, "
        f"commit {info['commit']}): replace it with that file")
    return archive


def _unpack_git_tree(version: str, dest: Path) -> Path:
    info = NMAP_GIT_TREES[version]
    archive = git_tree_archive(version)
    tree = dest / "tree"
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    subprocess.run(["tar", "-xJf", str(archive), "-C", str(dest)], check=True, capture_output=True)
    (dest / info["top"]).rename(tree)
    return tree


def nmap_h_defines(tree: Path) -> dict[str, str]:
    """The version #defines of TREE's nmap.h (NMAP_MAJOR, NMAP_MINOR, NMAP_BUILD, NMAP_SPECIAL)."""
    text = (tree / "nmap.h").read_text(errors="replace")
    return dict(re.findall(r"^#define (NMAP_(?:MAJOR|MINOR|BUILD|SPECIAL)) +(\S+)", text, re.M))


def nmap_tree_version(tree: Path) -> str:
    """The nmap version of a tree made by nmap_source_tree: Debian's changelog, or the git tree it came from."""
    changelog = tree / "debian" / "changelog"
    if changelog.is_file():
        return changelog.read_text(errors="replace").split("(", 1)[1].split("+", 1)[0]
    return tree.parent.name.removeprefix("git-")


def nmap_source_tree(version: str) -> Path:
    """Return the extracted source tree of nmap VERSION (Debian-patched, or the git tree of NMAP_GIT_TREES),
    fetching or unpacking it if needed.

    When the source cannot be had (the mirror does not serve the package, the git tree's archive is not in
    $SCANFLEET_NMAP_SOURCES), skips the calling test naming the reason and the fix, or fails it under CI=true.
    """
    if version in NMAP_GIT_TREES:
        dest = CACHE / f"git-{version}"
        tree = dest / "tree"
        if not (tree / "service_scan.cc").is_file():
            tree = _unpack_git_tree(version, dest)
        defines = nmap_h_defines(tree)
        expected = NMAP_GIT_TREES[version]["nmap_h"]
        assert defines == expected, f"{tree} is not nmap {version}'s git tree: nmap.h has {defines}, not {expected}"
        return tree
    suite = NMAP_SUITES[version]
    dest = CACHE / suite
    tree = dest / "tree"
    if not (tree / "service_scan.cc").is_file():
        try:
            dsc = fetch_debian_source(suite, dest)
        except ScanfleetError as exc:
            unavailable(f"nmap {version} source ({suite}) not available from the apt mirror: {exc}")
        subprocess.run(["dpkg-source", "-x", str(dsc), str(tree)], cwd=dest, check=True,
                       capture_output=True)
    changelog = (tree / "debian" / "changelog").read_text(errors="replace").splitlines()[0]
    assert f"({version}+" in changelog, f"{tree} is not nmap {version}: {changelog}"
    return tree


@pytest.fixture(scope="module", params=NMAP_VERSIONS)
def nmap_tree(request) -> Path:
    """Parametrised over every supported nmap version: the extracted source tree."""
    return nmap_source_tree(request.param)
