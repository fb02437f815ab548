"""Shared fixtures: real nmap sources (Debian source packages) fetched once into .cache/src."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from scanfleet import ScanfleetError
from scanfleet.source import fetch_debian_source

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "src"

# nmap version -> Debian suite whose source package carries it.
NMAP_SUITES = {"7.93": "bookworm", "7.95": "trixie", "7.991": "sid"}


def nmap_source_tree(version: str) -> Path:
    """Return the extracted (Debian-patched) source tree of nmap VERSION, fetching it if needed.

    Skips the calling test, naming the reason, when the mirror does not serve that source package.
    """
    suite = NMAP_SUITES[version]
    dest = CACHE / suite
    tree = dest / "tree"
    if not (tree / "service_scan.cc").is_file():
        try:
            dsc = fetch_debian_source(suite, dest)
        except ScanfleetError as exc:
            pytest.skip(f"nmap {version} source ({suite}) not available from the apt mirror: {exc}")
        subprocess.run(["dpkg-source", "-x", str(dsc), str(tree)], cwd=dest, check=True,
                       capture_output=True)
    changelog = (tree / "debian" / "changelog").read_text(errors="replace").splitlines()[0]
    assert f"({version}+" in changelog, f"{tree} is not nmap {version}: {changelog}"
    return tree


@pytest.fixture(scope="module", params=sorted(NMAP_SUITES, key=lambda v: tuple(int(p) for p in v.split("."))))
def nmap_tree(request) -> Path:
    """Parametrised over every supported nmap version: the extracted source tree."""
    return nmap_source_tree(request.param)
