"""Validation of a probes file with a real nmap (in an isolated network namespace)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence

from scanfleet import ScanfleetError
from scanfleet.probes.model import MARK_BEGIN, MARK_END, Origin
from scanfleet.probes.parsing import _split_lines, read_text

# --------------------------------------------------------------------------------------------------
# Validation with a real nmap


def origins_from_markers(text: str, path: str) -> list[Origin]:
    """Origins for a merged file read back from disk: its own path:line, noting the scanfleet block."""
    origins: list[Origin] = []
    label = ""
    for n, line in enumerate(_split_lines(text), 1):
        if line.startswith(MARK_BEGIN):
            label = line[len(MARK_BEGIN):].strip()
            origins.append(Origin(path, n))
        elif line.rstrip("\r\n") == MARK_END:
            label = ""
            origins.append(Origin(path, n))
        else:
            origins.append(Origin(path, n, f"in the scanfleet block '{label}'" if label else ""))
    return origins


def nmap_check_command(nmap_binary: str, probes_path: str) -> list[str]:
    """The command that makes NMAP_BINARY load PROBES_PATH, isolated from every network.

    ``unshare --net`` gives a new network namespace holding only a loopback interface; inside it
    nmap version-scans closed port 9 of 127.0.0.1, which makes it parse the whole file and compile
    every regex (service_scan_init) without sending a single packet anywhere else.
    """
    isolate = ["unshare", "--net"] if os.geteuid() == 0 else ["unshare", "--map-root-user", "--net"]
    scan = [nmap_binary, "-sV", "-sT", "--versiondb", probes_path, "-Pn", "-n", "-p", "9",
            "--host-timeout", "60s", "127.0.0.1"]
    return [*isolate, "--", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *scan]


_NMAP_LINE = re.compile(r"line (\d+) of nmap-service-probes")


def _nmap_message(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines()
             if ln.strip() and ln.strip() != "QUITTING!" and not ln.startswith("Starting Nmap")]
    return " / ".join(lines) or "(no message)"


def validate_with_nmap(merged_path: str | os.PathLike[str], nmap_binary: str = "nmap",
                       origin_map: Sequence[Origin] | Mapping[int, Origin] | None = None,
                       *, timeout: float = 120, name: str | None = None) -> None:
    """Make a real nmap load MERGED_PATH; on rejection raise ScanfleetError naming the origin.

    ORIGIN_MAP gives, for line n of the file, its origin (``origin_map[n - 1]`` for a sequence such
    as ``MergeResult.origins``, ``origin_map[n]`` for a mapping).  Without it the markers of the
    file are used (the error then names the merged file's line and its scanfleet block).  NAME is
    how messages call the file (default: its path).
    """
    path = name or str(merged_path)
    text = read_text(merged_path)
    if shutil.which(nmap_binary) is None:
        raise ScanfleetError(f"nmap binary {nmap_binary!r} not found: give the path of the nmap to "
                             "validate with")
    for tool in ("unshare", "ip"):
        if shutil.which(tool) is None:
            raise ScanfleetError(f"'{tool}' not found: validating with nmap needs util-linux unshare and "
                                 "iproute2 ip (nmap runs in an isolated network namespace)")
    cmd = nmap_check_command(nmap_binary, os.path.abspath(merged_path))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=timeout,
                              check=False)
    except subprocess.TimeoutExpired as exc:
        raise ScanfleetError(f"{path}: nmap did not finish loading the file within {timeout} s") from exc
    if proc.returncode == 0 and "Nmap done" in proc.stdout:
        return
    message = _nmap_message(proc.stderr)
    if "Starting Nmap" not in proc.stdout + proc.stderr:
        raise ScanfleetError(f"could not run {nmap_binary} in an isolated network namespace (unshare --net, "
                             f"ip link set lo up): {message} (run as root, or allow unprivileged user "
                             "namespaces)")
    raise ScanfleetError(explain_rejection(text, path, message, nmap_binary, origin_map))


def explain_rejection(text: str, path: str, message: str, nmap_binary: str = "nmap",
                      origin_map: Sequence[Origin] | Mapping[int, Origin] | None = None) -> str:
    """Turn nmap's rejection MESSAGE of the probes file TEXT (called PATH) into an error naming the origin.

    Used for a file nmap rejected here (validate_with_nmap) or on a scanner host (roles/nmap_probes):
    the origin is the rule file's ``path:line`` when the line came from a rule file.
    """
    message = _nmap_message(message)

    def lookup(n: int) -> Origin | None:
        if origin_map is None:
            table: Sequence[Origin] | Mapping[int, Origin] = origins_from_markers(text, path)
            return table[n - 1] if 0 < n <= len(table) else None
        if isinstance(origin_map, Mapping):
            return origin_map.get(n)
        return origin_map[n - 1] if 0 < n <= len(origin_map) else None

    lines = _split_lines(text)
    where: list[tuple[int, Origin | None]] = []
    m = _NMAP_LINE.search(message)
    if m:
        n = int(m.group(1))
        where.append((n, lookup(n)))
    else:
        # Messages without a line number: find the line they are about.
        fb = re.search(r"Unknown fallback specified in Probe (\S+): '([^']*)'|MAXFALLBACKS exceeded on "
                       r"probe '([^']*)'", message)
        for n, line in enumerate(lines, 1):
            if fb and line.startswith("Probe ") and line.split(" ")[2:3] == [fb.group(1) or fb.group(3)]:
                k = n + 1
                while k <= len(lines) and not lines[k - 1].startswith("Probe "):
                    if lines[k - 1].startswith("fallback "):
                        where.append((k, lookup(k)))
                    k += 1
            elif "Exclude" in message and line.startswith("Exclude "):
                where.append((n, lookup(n)))
    if not where:
        return f"{path}: nmap ({nmap_binary}) rejects the file: {message}"
    n, origin = where[-1]
    shown = lines[n - 1].rstrip("\n") if 0 < n <= len(lines) else ""
    if len(shown) > 160:
        shown = shown[:157] + "..."
    place = origin.describe() if origin is not None else f"{path}:{n}"
    return (f"{place}: nmap ({nmap_binary}) rejects this line: {message}\n"
            f"  line {n} of {path}: {shown}")
