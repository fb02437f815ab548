"""Debian 12 and 13 (bookworm, trixie): the Makefile's package list per release (`make -s apt-packages`), the
nmap_build role's vars per release, and molecule/default's release-like 7.991 archive (files/release_archive.sh).

The package names themselves were looked up in each release's Packages index (docs/lab.md, "Suites"), and
molecule/default resolves each list in a lab host of that release (lab/apt-check.sh); here, what can be known
without a mirror."""

from __future__ import annotations

import hashlib
import io
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ROLE_VARS = ROOT / "roles" / "nmap_build" / "vars"
RELEASE_ARCHIVE = ROOT / "molecule" / "default" / "files" / "release_archive.sh"


def apt_packages(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "-s", "--no-print-directory", "-C", str(ROOT), "apt-packages", *args],
                          capture_output=True, text=True, check=False)


def test_trixie_list_lacks_what_trixie_dropped_and_bookworm_keeps_it():
    bookworm = apt_packages("RELEASE=bookworm").stdout.split()
    trixie = apt_packages("RELEASE=trixie").stdout.split()
    assert {"libpcre3-dev", "liblua5.3-dev"} <= set(bookworm)
    assert "libpcre3-dev" not in trixie and "liblua5.3-dev" not in trixie
    assert set(trixie) == set(bookworm) - {"libpcre3-dev", "liblua5.3-dev"}
    assert {"libpcre2-dev", "liblua5.4-dev", "libssh2-1-dev", "debootstrap", "apt-cacher-ng"} <= set(trixie)
    assert len(trixie) == len(set(trixie))


def test_an_unknown_release_is_refused_naming_the_fix():
    result = apt_packages("RELEASE=forky")
    assert result.returncode != 0 and result.stdout == ""
    assert "no Debian package list for release 'forky'" in result.stderr
    assert "the Makefile has lists for bookworm trixie" in result.stderr and "RELEASE=trixie" in result.stderr


def test_every_supported_release_has_its_vars_file():
    supported = yaml.safe_load((ROLE_VARS / "main.yml").read_text())["nmap_build_supported"]
    for distribution, majors in supported.items():
        for major in majors:
            assert (ROLE_VARS / f"{distribution}-{major}.yml").is_file(), f"no vars/{distribution}-{major}.yml"


def test_debian_13_has_libssh2_1_11_and_no_pcre1():
    family = yaml.safe_load((ROLE_VARS / "Debian.yml").read_text())
    trixie = yaml.safe_load((ROLE_VARS / "Debian-13.yml").read_text())
    bookworm = yaml.safe_load((ROLE_VARS / "Debian-12.yml").read_text())
    assert family["__nmap_build_pcre1"] is True and trixie["__nmap_build_pcre1"] is False
    assert "__nmap_build_pcre1" not in bookworm
    assert trixie["__nmap_build_libssh2_version"] == "1.11" and bookworm["__nmap_build_libssh2_version"] == "1.10"


def _tar_xz(path: Path, files: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:xz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 1_754_000_000
            tar.addfile(info, io.BytesIO(data))


@pytest.fixture
def sources(tmp_path):
    """A stand-in for the 7.991 git archive (no nmap-os-db) and a Debian 7.95 .dsc with its orig tarball."""
    tree = tmp_path / "nmap-7.991-src.tar.xz"
    _tar_xz(tree, {"nmap-7.991/nmap.h": b'#define NMAP_SPECIAL "SVN"\n', "nmap-7.991/README": b"tree\n"})
    debian = tmp_path / "debian"
    debian.mkdir()
    orig = debian / "nmap_7.95+dfsg.orig.tar.xz"
    _tar_xz(orig, {"nmap-7.95/nmap-os-db": b"# os db of 7.95\n", "nmap-7.95/nmap.h": b"7.95\n"})
    digest = hashlib.sha256(orig.read_bytes()).hexdigest()
    dsc = debian / "nmap_7.95+dfsg-3.dsc"
    dsc.write_text(f"Source: nmap\nVersion: 7.95+dfsg-3\nChecksums-Sha256:\n {digest} {orig.stat().st_size} "
                   f"{orig.name}\n {'0' * 64} 10 nmap_7.95+dfsg-3.debian.tar.xz\nFiles:\n x 1 {orig.name}\n")
    return tree, hashlib.sha256(tree.read_bytes()).hexdigest(), dsc


def run_release_archive(*args) -> subprocess.CompletedProcess:
    return subprocess.run([str(RELEASE_ARCHIVE), *map(str, args)], capture_output=True, text=True, check=False)


def test_release_archive_adds_the_os_db_and_writes_its_sum_reproducibly(sources, tmp_path):
    tree, tree_sha, dsc = sources
    sums = []
    for n in (1, 2):
        out = tmp_path / f"out{n}" / "nmap-7.991.tar.gz"
        result = run_release_archive(tree, tree_sha, dsc, out)
        assert result.returncode == 0, result.stderr
        digest = hashlib.sha256(out.read_bytes()).hexdigest()
        assert result.stdout.strip() == digest == Path(f"{out}.sha256").read_text().strip()
        sums.append(digest)
        with tarfile.open(out) as tar:
            assert sorted(tar.getnames()) == ["nmap-7.991", "nmap-7.991/README", "nmap-7.991/nmap-os-db",
                                              "nmap-7.991/nmap.h"]
            assert tar.extractfile("nmap-7.991/nmap-os-db").read() == b"# os db of 7.95\n"
    assert sums[0] == sums[1]


def test_release_archive_refuses_a_missing_tree_or_a_wrong_sum(sources, tmp_path):
    tree, tree_sha, dsc = sources
    out = tmp_path / "out" / "nmap-7.991.tar.gz"
    missing = run_release_archive(tmp_path / "nowhere.tar.xz", tree_sha, dsc, out)
    assert missing.returncode != 0 and "set SCANFLEET_NMAP_SOURCES to the directory" in missing.stderr
    wrong = run_release_archive(tree, "ab" * 32, dsc, out)
    assert wrong.returncode != 0 and f"has sha256 {tree_sha}, not {'ab' * 32}" in wrong.stderr
    (dsc.parent / "nmap_7.95+dfsg.orig.tar.xz").write_bytes(b"damaged")
    damaged = run_release_archive(tree, tree_sha, dsc, out)
    assert damaged.returncode != 0 and f"as {dsc} says" in damaged.stderr
    assert not out.exists()
