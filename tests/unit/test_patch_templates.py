"""The role's patch templates apply without fuzz to every supported nmap source and carry the values."""

from __future__ import annotations

import re
import shutil

import pytest

from tests import conftest
from tests.patching import DEFAULTS, apply_patches, render_patches, role_configure_args, role_version_pattern

PATCHED_FILES = ("service_scan.h", "service_scan.cc", "nse_nsock.cc", "nse_main.lua", "nmap.cc")


def test_patches_apply_cleanly(nmap_tree, tmp_path):
    patches = render_patches(tmp_path / "patches")
    result = apply_patches(nmap_tree, patches, dry_run=True)
    assert result.returncode == 0, result.stdout + result.stderr
    # The role forbids fuzz; allowed it (patch's default, 2), patch reports every hunk it applied and any fuzz
    # it needed: each hunk of the rendered patches lands, at most moved by an offset, with all its context.
    hunks = sum(len(re.findall(r"^@@ ", path.read_text(), re.M)) for path in patches)
    loose = apply_patches(nmap_tree, patches, dry_run=True, fuzz=2, verbose=True)
    assert loose.returncode == 0, loose.stdout + loose.stderr
    applied = re.findall(r"^Hunk #\d+ succeeded at \d+(?: \(offset -?\d+ lines?\))?\.$", loose.stdout, re.M)
    assert len(applied) == hunks, loose.stdout
    assert not re.search(r"with fuzz|FAILED|ignored", loose.stdout), loose.stdout


@pytest.mark.parametrize("values", [
    {},
    {"nmap_build_service_wait_ms": 450, "nmap_build_tcpwrapped_ms": 150,
     "nmap_build_service_parallelism": 64, "nmap_build_nse_timeout_cap_ms": 750},
    {"nmap_build_service_parallelism": 400},
])
def test_patched_source_carries_the_values(nmap_tree, tmp_path, values):
    tree = tmp_path / "tree"
    tree.mkdir()
    for name in PATCHED_FILES:
        shutil.copy(nmap_tree / name, tree / name)
    result = apply_patches(tree, render_patches(tmp_path / "patches", **values))
    assert result.returncode == 0, result.stdout + result.stderr
    wait = values.get("nmap_build_service_wait_ms", 300)
    wrapped = values.get("nmap_build_tcpwrapped_ms", 200)
    par = values.get("nmap_build_service_parallelism", DEFAULTS["nmap_build_service_parallelism"])
    cap = values.get("nmap_build_nse_timeout_cap_ms", 500)
    header = (tree / "service_scan.h").read_text()
    assert re.search(rf"^#define DEFAULT_SERVICEWAITMS {wait}\b", header, re.M)
    assert re.search(rf"^#define DEFAULT_TCPWRAPPEDMS {wrapped}\b", header, re.M)
    scan = (tree / "service_scan.cc").read_text()
    # Neither per-probe wait from the probes file is assigned any more; both are still range-checked.
    assert "newProbe->totalwaitms = waitms;" not in scan
    assert "newProbe->tcpwrappedms = waitms;" not in scan
    assert scan.count("bad totalwaitms value") == 1 and scan.count("bad tcpwrappedms value") == 1
    assert f"if (o.timing_level >= 3) desired_par = {par};" in scan
    assert f"o.max_parallelism : {max(par, 100)})" in scan
    nse = (tree / "nse_nsock.cc").read_text()
    assert f"if (timeout == -1 || timeout > {cap})\n    timeout = {cap};" in nse
    assert re.search(rf"^#define DEFAULT_TIMEOUT {cap}\b", nse, re.M)  # sockets no script sets a timeout on
    # NSE's socket lock follows the service parallelism; its thread limit is raised to 3 times it, never lowered
    assert re.search(rf"^#define MAX_PARALLELISM   {par} /\* scanfleet \*/$", nse, re.M)
    main = (tree / "nse_main.lua").read_text()
    assert re.search(rf"^local CONCURRENCY_LIMIT = {max(3 * par, 1000)}; -- scanfleet$", main, re.M)
    # Every probe gets the waits read from the environment at start (the compiled ones when unset), read in nmap_main
    assert "totalwaitms = scanfleet_service_wait_ms;" in scan and "totalwaitms = DEFAULT_SERVICEWAITMS;" not in scan
    assert "tcpwrappedms = scanfleet_tcpwrapped_ms;" in scan and "tcpwrappedms = DEFAULT_TCPWRAPPEDMS;" not in scan
    assert 'getenv(name)' in scan and '"SCANFLEET_SERVICE_WAIT_MS"' in scan and '"SCANFLEET_TCPWRAPPED_MS"' in scan
    nmap_main = (tree / "nmap.cc").read_text()
    assert nmap_main.index("scanfleet_read_runtime_waits();") < nmap_main.index("  apply_delayed_options();")


def test_patch_refuses_a_source_it_does_not_fit(nmap_tree, tmp_path):
    tree = tmp_path / "tree"
    tree.mkdir()
    for name in PATCHED_FILES:
        shutil.copy(nmap_tree / name, tree / name)
    text = (tree / "service_scan.cc").read_text().replace("desired_par = 20;", "desired_par = 25;")
    (tree / "service_scan.cc").write_text(text)
    result = apply_patches(tree, render_patches(tmp_path / "patches"))
    assert result.returncode != 0
    assert "FAILED" in result.stdout


@pytest.mark.parametrize(("version", "source", "present", "absent"), [
    ("7.93", "debian", ["LIBS=-llua5.3-lpeg", "--with-liblua=/usr"], ["--without-libssh2"]),
    ("7.95", "debian", ["--without-libssh2", "--without-ncat"], ["LIBS=-llua5.3-lpeg"]),
    # the git tree of 7.991 (tests/conftest.py NMAP_GIT_TREES) bundles libssh2, as release tarballs do
    ("7.991", "archive", ["--with-liblua=/usr", "--without-ncat"], ["--without-libssh2", "LIBS=-llua5.3-lpeg"]),
])
def test_role_configure_args(version, source, present, absent):
    args = role_configure_args(version, source)
    for arg in present:
        assert arg in args
    for arg in absent:
        assert arg not in args


# What real builds print (the first line of `nmap --version`): 7.93 and 7.95 from Debian's sources, 7.99SVN from the
# git tree of tag v7.991 (nmap.h: NMAP_MINOR 99, NMAP_SPECIAL "SVN"), and what a release tarball of 7.991 prints.
REPORTED = {"7.93": "Nmap version 7.93 ( https://nmap.org )", "7.95": "Nmap version 7.95 ( https://nmap.org )",
            "7.99SVN": "Nmap version 7.99SVN ( https://nmap.org )", "7.991": "Nmap version 7.991 ( https://nmap.org )"}


@pytest.mark.parametrize(("requested", "accepted"), [
    ("7.991", {"7.991", "7.99SVN"}),
    ("7.95", {"7.95"}),
    ("7.93", {"7.93"}),
])
def test_role_version_rule(requested, accepted):
    """verify.yml accepts the requested release or, from a development tree, its major.minor + SVN; every other
    version fails (README "Versions")."""
    pattern = role_version_pattern(requested)
    assert {name for name, line in REPORTED.items() if re.search(pattern, line)} == accepted
    assert not re.search(pattern, "Nmap version 7.9 ( https://nmap.org )")
    assert not re.search(pattern, "Nmap version 7.9911 ( https://nmap.org )")


def test_a_missing_git_tree_fails_under_ci_naming_the_variable(tmp_path, monkeypatch):
    """Where $SCANFLEET_NMAP_SOURCES holds no 7.991 tree, CI=true fails the test, naming the variable and the fix
    (without CI it skips with the same words); a file with another sum is refused, naming both sums."""
    monkeypatch.setenv(conftest.NMAP_SOURCES_VAR, str(tmp_path))
    monkeypatch.setattr(conftest, "CI", True)
    with pytest.raises(pytest.fail.Exception) as failed:
        conftest.git_tree_archive("7.991")
    message = str(failed.value)
    assert f"nmap 7.991 source nmap-7.991-src.tar.xz not found in {tmp_path}: set SCANFLEET_NMAP_SOURCES" in message
    assert "CI=true: a missing input fails instead of skipping" in message
    monkeypatch.setattr(conftest, "CI", False)
    with pytest.raises(pytest.skip.Exception, match="set SCANFLEET_NMAP_SOURCES to the directory holding it"):
        conftest.git_tree_archive("7.991")
    (tmp_path / "nmap-7.991-src.tar.xz").write_bytes(b"not the git archive")
    with pytest.raises(AssertionError, match=conftest.NMAP_GIT_TREES["7.991"]["sha256"]):
        conftest.git_tree_archive("7.991")
