"""nmap sources on the controller: fetch once, verify, and describe them for the hosts.

Three kinds of source (``nmap_build_source`` in roles/nmap_build):

- ``upstream``: the release tarball (and its detached ``.asc``) from nmap.org, verified by sha256 and/or by
  the Nmap Project signing key;
- ``archive``: a source archive already on the controller, verified by the sha256 the user gives;
- ``debian``: the Debian source package (``apt-get source``, with a private apt state so the controller's
  own apt configuration is untouched), whose files apt verifies against the signed Sources index; we check
  them again against the ``.dsc``.

Every check happens before anything is unpacked or pushed, and a checksum mismatch names both sums.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import subprocess
import tempfile
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

from scanfleet import ScanfleetError
from scanfleet.files import atomic_write, sha256_file

DEBIAN_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
SOURCES_LIST = Path("/etc/apt/sources.list")
SOURCES_DIR = Path("/etc/apt/sources.list.d")


@dataclass
class SourceFile:
    name: str
    path: str
    sha256: str


@dataclass
class PreparedSource:
    """What the hosts need: the files to push (with sums) and how to unpack them."""

    kind: str
    version: str
    files: list[SourceFile] = field(default_factory=list)
    unpack: str = "tar"  # "tar" (archive with one top directory) or "dpkg-source" (the .dsc)
    main: str = ""  # the file to unpack: the archive, or the .dsc
    verified_by: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def verify_sha256(path: str | Path, expected: str, what: str = "source") -> str:
    """Raise ScanfleetError naming both sums unless PATH's sha256 is EXPECTED."""
    expected = expected.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", expected):
        raise ScanfleetError(f"{what}: '{expected}' is not a sha256 (64 hex digits); fix the pinned sum")
    actual = sha256_file(path)
    if actual != expected:
        raise ScanfleetError(
            f"checksum mismatch for {path}: expected sha256 {expected}, got {actual}. "
            f"Nothing was unpacked or built. The file is damaged or is not the {what} that was pinned: "
            f"delete it and fetch again, or correct the pinned sum if you verified this file yourself."
        )
    return actual


def verify_gpg(path: str | Path, signature: str | Path, key: str | Path, fingerprint: str = "") -> str:
    """Verify PATH against its detached SIGNATURE with the public KEY only; return the signer's fingerprint."""
    if shutil.which("gpg") is None:
        raise ScanfleetError("gpg is not installed on the controller; install gnupg or disable nmap_build_gpg_verify")
    with tempfile.TemporaryDirectory(prefix="scanfleet-gpg-") as home:
        subprocess.run(["gpg", "--homedir", home, "--batch", "--quiet", "--import", str(key)],
                       check=True, capture_output=True)
        proc = subprocess.run(
            ["gpg", "--homedir", home, "--batch", "--status-fd", "1", "--verify", str(signature), str(path)],
            capture_output=True, text=True, check=False,
        )
        # an agent gpg may have started for this homedir must not outlive it
        subprocess.run(["gpgconf", "--homedir", home, "--kill", "gpg-agent"], capture_output=True, check=False)
    valid = re.search(r"^\[GNUPG:\] VALIDSIG ([0-9A-F]{40})", proc.stdout, re.M)
    if proc.returncode != 0 or not valid:
        raise ScanfleetError(
            f"GPG verification of {path} with {signature} failed against the key in {key}: "
            f"{(proc.stderr or proc.stdout).strip().splitlines()[-1:]}. Nothing was unpacked or built."
        )
    signer = valid.group(1)
    if fingerprint and signer.upper() != fingerprint.replace(" ", "").upper():
        raise ScanfleetError(f"{path} is signed by {signer}, not by the expected key {fingerprint}")
    return signer


def parse_dsc(path: str | Path) -> dict:
    """Return {'source', 'version', 'files': {name: sha256}} from a Debian .dsc file."""
    text = Path(path).read_text(errors="replace")
    fields: dict[str, str] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("-----BEGIN PGP SIGNATURE"):
            break
        if line.startswith(" ") and current:
            fields[current] += "\n" + line.strip()
        elif ":" in line and not line.startswith("-----"):
            current, _, value = line.partition(":")
            fields[current] = value.strip()
    if "Checksums-Sha256" not in fields or "Version" not in fields:
        raise ScanfleetError(f"{path}: not a Debian .dsc (no Version or Checksums-Sha256 field)")
    files = {}
    for entry in fields["Checksums-Sha256"].strip().splitlines():
        digest, _size, name = entry.split()
        files[name] = digest
    return {"source": fields.get("Source", ""), "version": fields["Version"], "files": files}


def apt_mirror() -> str:
    """The Debian mirror URI this machine's apt uses (deb822 .sources first, then sources.list)."""
    for path in sorted(SOURCES_DIR.glob("*.sources")):
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("URIs:"):
                for uri in line.split()[1:]:
                    if "security" not in uri:
                        return uri
    if SOURCES_LIST.is_file():
        for line in SOURCES_LIST.read_text(errors="replace").splitlines():
            parts = line.split()
            if parts[:1] == ["deb"] and "security" not in line:
                for part in parts[1:]:
                    if re.match(r"(https?|file):", part):
                        return part
    raise ScanfleetError(
        f"no Debian mirror found in {SOURCES_DIR}/*.sources or {SOURCES_LIST}; "
        "set nmap_build_debian_mirror (or SCANFLEET_MIRROR for the lab)"
    )


def fetch_debian_source(suite: str, dest: str | Path, mirror: str = "", package: str = "nmap") -> Path:
    """Download PACKAGE's source package from SUITE into DEST (once); return the .dsc path.

    apt checks the files against the Sources index, itself verified through the signed InRelease.
    """
    dest = Path(dest)
    mirror = mirror or apt_mirror()
    state = dest / f".apt-{suite}"
    for sub in ("lists/partial", "cache/archives/partial"):
        (state / sub).mkdir(parents=True, exist_ok=True)
    (state / "sources.list").write_text(f"deb-src [signed-by={DEBIAN_KEYRING}] {mirror} {suite} main\n")
    opts = ["-o", f"Dir::Etc::SourceList={state / 'sources.list'}", "-o", "Dir::Etc::SourceParts=/dev/null",
            "-o", f"Dir::State::Lists={state / 'lists'}", "-o", f"Dir::Cache={state / 'cache'}",
            "-o", "APT::Sandbox::User=root"]
    existing = sorted(dest.glob(f"{package}_*.dsc"))
    if existing:
        return existing[-1]
    for step in (["update"], ["--download-only", "source", package]):
        proc = subprocess.run(["apt-get", *opts, "-qq", *step], cwd=dest, capture_output=True, text=True,
                              check=False)
        if proc.returncode != 0:
            raise ScanfleetError(
                f"apt-get {' '.join(step)} for {package} from {mirror} {suite} failed: "
                f"{proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode}. "
                "Check the suite name and that the mirror serves source packages."
            )
    found = sorted(dest.glob(f"{package}_*.dsc"))
    if not found:
        raise ScanfleetError(f"apt-get source {package} ({suite}) left no .dsc in {dest}")
    return found[-1]


def _download(url: str, dest: Path) -> Path:
    if dest.is_file() and dest.stat().st_size > 0:
        return dest
    try:
        with urllib.request.urlopen(url, timeout=60) as response, atomic_write(dest, binary=True) as out:
            shutil.copyfileobj(response, out)
    except OSError as exc:
        raise ScanfleetError(
            f"cannot download {url}: {exc}. Fetch it elsewhere and use nmap_build_source: archive"
        ) from exc
    return dest


def prepare(kind: str, version: str, cache: str | Path, *, url: str = "", sha256: str = "",
            pinned: dict | None = None, gpg_verify: bool = False, gpg_key: str = "",
            gpg_fingerprint: str = "", archive: str = "", suite: str = "", mirror: str = "") -> PreparedSource:
    """Fetch (once) and verify the nmap source of KIND; return what to push to the hosts."""
    cache = Path(cache)
    cache.mkdir(parents=True, exist_ok=True)
    result = PreparedSource(kind=kind, version=version)
    if kind == "upstream":
        url = url.replace("{version}", version)
        expected = sha256 or (pinned or {}).get(version, "")
        if not expected and not gpg_verify:
            raise ScanfleetError(
                f"no sha256 pinned for nmap {version} and GPG verification is off: set nmap_build_sha256 "
                "to the sum you verified, or set nmap_build_gpg_verify: true"
            )
        tarball = _download(url, cache / url.rsplit("/", 1)[-1])
        if expected:
            verify_sha256(tarball, expected, f"nmap {version} release tarball")
            result.verified_by.append("sha256")
        if gpg_verify:
            signature = _download(url + ".asc", cache / (tarball.name + ".asc"))
            signer = verify_gpg(tarball, signature, gpg_key, gpg_fingerprint)
            result.verified_by.append(f"gpg:{signer}")
        result.files.append(SourceFile(tarball.name, str(tarball), sha256_file(tarball)))
        result.main = tarball.name
    elif kind == "archive":
        if not archive or not Path(archive).is_file():
            raise ScanfleetError(f"nmap_build_archive '{archive}' is not a file on the controller; "
                                 "set it to the path of an nmap source archive")
        if not sha256:
            raise ScanfleetError(f"nmap_build_sha256 is required with nmap_build_source: archive ({archive}); "
                                 "set it to the archive's verified sha256")
        verify_sha256(archive, sha256, "source archive")
        result.verified_by.append("sha256")
        result.files.append(SourceFile(Path(archive).name, str(Path(archive).resolve()), sha256.lower()))
        result.main = Path(archive).name
    elif kind == "debian":
        if not suite:
            raise ScanfleetError("nmap_build_debian_suite is required with nmap_build_source: debian")
        dsc = fetch_debian_source(suite, cache / f"debian-{suite}", mirror)
        info = parse_dsc(dsc)
        upstream_version = info["version"].split(":")[-1].split("+")[0].split("-")[0]
        if upstream_version != version:
            raise ScanfleetError(
                f"Debian suite {suite} carries nmap {info['version']}, not {version}: set nmap_build_version "
                f"to {upstream_version} or pick the suite that carries {version} (bookworm=7.93, trixie=7.95)"
            )
        for name, digest in info["files"].items():
            verify_sha256(dsc.parent / name, digest, f"{name} listed in {dsc.name}")
            result.files.append(SourceFile(name, str(dsc.parent / name), digest))
        result.files.append(SourceFile(dsc.name, str(dsc), sha256_file(dsc)))
        result.verified_by.append("apt+dsc-sha256")
        result.unpack = "dpkg-source"
        result.main = dsc.name
    else:
        raise ScanfleetError(f"nmap_build_source '{kind}' is not one of upstream, archive, debian")
    return result


def build_id(version: str, source_sums: list[str], patches: list[str], configure_args: list[str]) -> str:
    """The build stamp: sha256 of everything that changes the binary (version, sources, patches, flags)."""
    payload = json.dumps(
        {"version": version, "sources": sorted(source_sums), "patches": patches, "configure": configure_args},
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("source", help="nmap sources: mirror, fetch+verify, Debian .dsc")
    commands = parser.add_subparsers(dest="source_command", required=True)
    mirror = commands.add_parser("mirror", help="print this machine's Debian mirror")
    mirror.set_defaults(func=lambda args: print(apt_mirror()) or 0)
    fetch = commands.add_parser("fetch-debian", help="fetch a Debian source package; print the .dsc path")
    fetch.add_argument("suite")
    fetch.add_argument("dest")
    fetch.add_argument("--mirror", default="")
    fetch.add_argument("--package", default="nmap")
    fetch.set_defaults(func=lambda a: print(fetch_debian_source(a.suite, a.dest, a.mirror, a.package)) or 0)
