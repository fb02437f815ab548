"""scanfleet.source: checksums, Debian .dsc, GPG verification, the build id."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from scanfleet import ScanfleetError
from scanfleet.cli import main as cli_main
from scanfleet.files import sha256_file
from scanfleet.source import build_id, parse_dsc, prepare, verify_gpg, verify_sha256
from tests.conftest import CACHE, nmap_source_tree


def test_sha256_mismatch_names_both_sums(tmp_path):
    path = tmp_path / "nmap-7.95.tar.bz2"
    path.write_bytes(b"not the release")
    actual = sha256_file(path)
    wrong = "0" * 64
    with pytest.raises(ScanfleetError) as err:
        verify_sha256(path, wrong)
    assert wrong in str(err.value) and actual in str(err.value) and str(path) in str(err.value)
    assert verify_sha256(path, actual.upper()) == actual


def test_a_malformed_pinned_sum_is_refused(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"x")
    with pytest.raises(ScanfleetError, match="not a sha256"):
        verify_sha256(path, "abc")


@pytest.mark.parametrize("version", ["7.93", "7.95"])
def test_parse_real_dsc_and_its_files_match(version):
    nmap_source_tree(version)
    suite = {"7.93": "bookworm", "7.95": "trixie"}[version]
    dsc = next((CACHE / suite).glob("nmap_*.dsc"))
    info = parse_dsc(dsc)
    assert info["source"] == "nmap" and info["version"].startswith(version + "+")
    assert any(name.endswith(".orig.tar.xz") for name in info["files"])
    for name, digest in info["files"].items():
        assert sha256_file(dsc.parent / name) == digest


def test_archive_source_checks_before_anything(tmp_path):
    archive = tmp_path / "nmap-7.95.tar.xz"
    archive.write_bytes(b"tampered")
    with pytest.raises(ScanfleetError, match="checksum mismatch"):
        prepare("archive", "7.95", tmp_path / "cache", archive=str(archive), sha256="1" * 64)
    with pytest.raises(ScanfleetError, match="nmap_build_sha256 is required"):
        prepare("archive", "7.95", tmp_path / "cache", archive=str(archive))
    with pytest.raises(ScanfleetError, match="is not a file"):
        prepare("archive", "7.95", tmp_path / "cache", archive=str(tmp_path / "missing.tar.xz"), sha256="1" * 64)
    good = prepare("archive", "7.95", tmp_path / "cache", archive=str(archive), sha256=sha256_file(archive))
    assert good.files[0].sha256 == sha256_file(archive) and good.verified_by == ["sha256"]


def test_upstream_without_any_verification_is_refused(tmp_path):
    with pytest.raises(ScanfleetError, match=r"no sha256 pinned for nmap 7\.95 and GPG verification is off"):
        prepare("upstream", "7.95", tmp_path, url="https://nmap.org/dist/nmap-{version}.tar.bz2")


def test_debian_suite_must_carry_the_version():
    nmap_source_tree("7.93")
    with pytest.raises(ScanfleetError, match=r"carries nmap 7\.93"):
        prepare("debian", "7.95", CACHE.parent / "nmap-build-test", suite="bookworm")


@pytest.fixture(scope="module")
def signing_key(tmp_path_factory):
    """A throw-away key pair made with real gpg: (homedir, public key file, fingerprint)."""
    home = tmp_path_factory.mktemp("gnupg")
    home.chmod(0o700)
    gpg = ["gpg", "--homedir", str(home), "--batch"]
    subprocess.run([*gpg, "--passphrase", "", "--quick-gen-key", "scanfleet-test", "ed25519", "sign", "1d"],
                   check=True, capture_output=True)
    listing = subprocess.run([*gpg, "--with-colons", "--list-keys"], check=True, capture_output=True,
                             text=True).stdout
    fingerprint = next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr"))
    public = home / "public.asc"
    public.write_text(subprocess.run([*gpg, "--armor", "--export"], check=True, capture_output=True,
                                     text=True).stdout)
    yield home, public, fingerprint
    # key generation and signing started this homedir's gpg-agent: end it (through its own socket)
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"], check=True, capture_output=True)


def _sign(home: Path, path: Path) -> Path:
    subprocess.run(["gpg", "--homedir", str(home), "--batch", "--yes", "--armor", "--detach-sign",
                    "--output", str(path) + ".asc", str(path)], check=True, capture_output=True)
    return Path(str(path) + ".asc")


def test_gpg_good_tampered_and_wrong_signer(signing_key, tmp_path):
    home, public, fingerprint = signing_key
    tarball = tmp_path / "nmap-7.95.tar.bz2"
    tarball.write_bytes(b"release bytes")
    signature = _sign(home, tarball)
    assert verify_gpg(tarball, signature, public, fingerprint) == fingerprint
    with pytest.raises(ScanfleetError, match="not by the expected key"):
        verify_gpg(tarball, signature, public, "436D66AB9A798425FDA0E3F801AF9F036B9355D0")
    tarball.write_bytes(b"release bytes, tampered")
    with pytest.raises(ScanfleetError, match=r"GPG verification of .* failed"):
        verify_gpg(tarball, signature, public, fingerprint)


def live_gpg_agents(homedir_part: str) -> list[int]:
    """PIDs of running (not zombie) gpg-agents whose command line names a homedir containing HOMEDIR_PART."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        agent = cmdline[0].endswith(b"gpg-agent")
        if state != "Z" and agent and homedir_part.encode() in b" ".join(cmdline):
            found.append(int(proc.name))
    return found


def test_gpg_verification_leaves_no_agent_behind(signing_key, tmp_path):
    home, public, fingerprint = signing_key
    tarball = tmp_path / "nmap-7.95.tar.bz2"
    tarball.write_bytes(b"release bytes")
    signature = _sign(home, tarball)
    before = set(live_gpg_agents("scanfleet-gpg-"))
    assert verify_gpg(tarball, signature, public, fingerprint) == fingerprint
    assert set(live_gpg_agents("scanfleet-gpg-")) - before == set()


def test_shipped_nmap_key_has_the_pinned_fingerprint(tmp_path):
    key = Path(__file__).resolve().parents[2] / "files" / "keys" / "nmap-project-signing-key.asc"
    out = subprocess.run(["gpg", "--homedir", str(tmp_path), "--batch", "--with-colons", "--show-keys", str(key)],
                         capture_output=True, text=True, check=True).stdout
    assert "fpr:::::::::436D66AB9A798425FDA0E3F801AF9F036B9355D0:" in out


@pytest.mark.parametrize("change", ["version", "sources", "patches", "configure"])
def test_build_id_changes_with_every_input(change):
    base = {"version": "7.95", "sources": ["a" * 64], "patches": ["p1", "p2"], "configure": ["--x"]}
    other = dict(base)
    other[change] = {"version": "7.93", "sources": ["b" * 64], "patches": ["p1", "p2 changed"],
                     "configure": ["--y"]}[change]
    ids = [build_id(d["version"], d["sources"], d["patches"], d["configure"]) for d in (base, other)]
    assert ids[0] != ids[1]
    assert build_id(base["version"], base["sources"], base["patches"], base["configure"]) == ids[0]


def test_cli_mirror_follows_apt_configuration(capsys):
    assert cli_main(["source", "mirror"]) == 0
    assert capsys.readouterr().out.strip().startswith(("http://", "https://", "file:"))
