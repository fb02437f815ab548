"""Patch, configure, compile and install each supported nmap source as the role does, then prove the
patches are in effect with the same checks the role and molecule run (in an isolated network namespace)."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET

import pytest

from scanfleet import ScanfleetError, probes, scriptargs
from tests.conftest import NMAP_GIT_TREES, NMAP_OS_DB_FROM, ROOT, nmap_source_tree, nmap_tree_version
from tests.patching import DEFAULTS, apply_patches, render_patches, role_configure_args, role_version_pattern

pytestmark = pytest.mark.build

WORK = ROOT / ".cache" / "build-test"
ECHO_ARGS = ROOT / "tests" / "fixtures" / "nse" / "scanfleet-echo-args.nse"
SILENT_CHECK = ROOT / "roles" / "nmap_build" / "files" / "silent_port_check.py"
TCPWRAPPED_CHECK = ROOT / "molecule" / "shared" / "files" / "tcpwrapped_check.py"
SILENT_PORTS = ROOT / "tests" / "fixtures" / "silent_ports.py"
TIMEOUT_CAP = ROOT / "tests" / "fixtures" / "nse" / "scanfleet-timeout-cap.nse"


def isolated(cmd: list[str]) -> subprocess.CompletedProcess:
    """Run CMD in a new network namespace holding only loopback: nothing it sends leaves it."""
    script = 'ip link set lo up && exec "$@"'
    return subprocess.run(["unshare", "--net", "--", "sh", "-c", script, "sh", *cmd],
                          capture_output=True, text=True, check=False, timeout=300)


def build_key(nmap_tree, nmap_version: str, patches: list, configure_args: list[str]) -> str:
    """What a build depends on: the version, the source files the patches change, the rendered patches and the
    configure arguments. An install under .cache/build-test with this key is reused (SCANFLEET_REBUILD=1: never)."""
    digest = hashlib.sha256(json.dumps([nmap_version, configure_args]).encode())
    for path in [*(nmap_tree / name for name in PATCHED_SOURCES), *patches]:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


PATCHED_SOURCES = ("service_scan.h", "service_scan.cc", "nse_nsock.cc", "nse_main.lua", "nmap.h", "nmap.cc")


@pytest.fixture(scope="module")
def built_nmap(nmap_tree):
    """nmap_tree patched as the role patches it, configured, compiled and installed (once per version; an install
    from an earlier run with the same build_key is reused, unless SCANFLEET_REBUILD=1)."""
    work = WORK / nmap_tree.parent.name
    nmap_version = nmap_tree_version(nmap_tree)
    # A git tree (nmap 7.991, provenance in tests/conftest.py NMAP_GIT_TREES) is built as the role builds any
    # source archive (nmap_build_source: archive); it lacks nmap-os-db, which make install copies: 7.95's is
    # put in its place, so this build's OS fingerprints are 7.95's (only -O reads them; no test here does).
    source = "archive" if nmap_version in NMAP_GIT_TREES else "debian"
    configure_args = role_configure_args(nmap_version, source)
    patch_dir = WORK / f"patches-{nmap_tree.parent.name}"
    shutil.rmtree(patch_dir, ignore_errors=True)
    patches = render_patches(patch_dir)
    key = build_key(nmap_tree, nmap_version, patches, configure_args)
    prefix = work / "prefix"
    stamp = work / "build-key"
    if (os.environ.get("SCANFLEET_REBUILD") != "1" and (prefix / "bin" / "nmap").is_file() and stamp.is_file()
            and stamp.read_text() == key):
        return nmap_version, prefix / "bin" / "nmap"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    os.chmod(WORK, 0o755)
    tree = work / "tree"
    shutil.copytree(nmap_tree, tree, symlinks=True)
    if not (tree / "nmap-os-db").exists():
        shutil.copy(nmap_source_tree(NMAP_OS_DB_FROM) / "nmap-os-db", tree / "nmap-os-db")
    result = apply_patches(tree, patches)
    assert result.returncode == 0, result.stdout + result.stderr
    for configure in tree.rglob("configure"):
        configure.touch()
    steps = [["./configure", f"--prefix={prefix}", *configure_args],
             ["make", f"-j{os.cpu_count()}"], ["make", "install"]]
    for step in steps:
        proc = subprocess.run(step, cwd=tree, capture_output=True, text=True, check=False)
        assert proc.returncode == 0, (
            f"{step[0]} failed for nmap {nmap_version}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    shutil.rmtree(tree)
    stamp.write_text(key)
    return nmap_version, prefix / "bin" / "nmap"


def test_patched_build_runs_with_short_waits(built_nmap):
    version, nmap = built_nmap
    out = subprocess.run([str(nmap), "--version"], capture_output=True, text=True, check=True).stdout
    assert re.search(role_version_pattern(version), out), out  # the role's own rule (7.991's git tree: 7.99SVN)

    silent = isolated(["python3", str(SILENT_CHECK), "--nmap", str(nmap), "--user", "root", "--max-seconds", "15"])
    assert silent.returncode == 0, silent.stdout + silent.stderr
    assert json.loads(silent.stdout)["port_state"] == "open"

    wrapped = isolated(["python3", str(TCPWRAPPED_CHECK), "--nmap", str(nmap), "--user", "root", "--close-ms", "250"])
    assert wrapped.returncode == 0, wrapped.stdout + wrapped.stderr
    result = json.loads(wrapped.stdout)
    assert result["immediate_close"] == "tcpwrapped" and result["immediate_probes_sent"] == 1
    assert result["delayed_probes_sent"] > 1, result  # the probes file's tcpwrappedms 3000 was ignored


RULES = sorted((ROOT / "files" / "probes").glob("*.probes"))
EMPTY_MATCH = ROOT / "tests" / "fixtures" / "probes" / "empty-match.probes"


def test_our_probe_rules_load_and_an_empty_match_is_refused_from_7_991(built_nmap, tmp_path):
    """Our rule files (files/probes), merged into the build's own probes file, load in this nmap (it parses the file
    and compiles every regex, in a private network namespace). A rule whose pattern can match the empty string
    (match x m|a*|) is fatal from 7.991 on, at its line, and loads in earlier versions; the controller-side pre-check
    refuses it for every version, before any host changes (tests/unit/test_probes.py)."""
    version, nmap = built_nmap
    stock = probes.parse_file(nmap.parent.parent / "share" / "nmap" / "nmap-service-probes")
    merged = probes.merge(stock, [probes.parse_rules_file(path) for path in RULES])
    path = tmp_path / "merged"
    path.write_bytes(probes.encode(merged.text))
    probes.validate_with_nmap(path, str(nmap), merged.origins)

    # merged without the pre-check (probes.merge, not merge_files), to see what this nmap itself does with it
    bad = probes.merge(stock, [probes.parse_rules_file(EMPTY_MATCH)])
    path.write_bytes(probes.encode(bad.text))
    if tuple(int(p) for p in version.split(".")) < (7, 991):
        probes.validate_with_nmap(path, str(nmap), bad.origins)
        return
    with pytest.raises(ScanfleetError) as exc:
        probes.validate_with_nmap(path, str(nmap), bad.origins)
    assert str(exc.value).startswith(f"{EMPTY_MATCH}:4: nmap ({nmap}) rejects this line: "), exc.value
    assert "pattern matches zero-length string" in str(exc.value)


# Values that nmap's own --script-args syntax would split or unquote: commas, '=', braces, both quotes,
# backslashes, newlines, spaces at either end, non-ASCII; numbers and booleans; a nested table and a list.
AWKWARD_ARGS = {
    "http.useragent": 'Mozilla/5.0 (X11; "quoted", a=b) {braces}',
    "smbpassword": "p\\a\"s,s=w'o}r{d\n second line ",
    "snmp.community": "  spaced  ",
    "unicode": "caf\u00e9 \u2603",
    "empty": "",
    "number": 42,
    "flag": True,
    "creds.global": {"user": "admin", "pass": "x,y=z"},
    "ports": [80, "8080"],
}


def flatten(args, prefix=""):
    """What the echo script reports for ARGS (Lua lists are indexed from 1)."""
    items = []
    pairs = args.items() if isinstance(args, dict) else ((i + 1, v) for i, v in enumerate(args))
    for key, value in pairs:
        name = f"{prefix}{key}"
        if isinstance(value, (dict, list)):
            items += flatten(value, name + "/")
        else:
            text = ("true" if value else "false") if isinstance(value, bool) else str(value)
            items.append(f"{name}={text.encode().hex()}")
    return items


def test_script_args_file_reaches_nse_verbatim(built_nmap, tmp_path):
    """The file scanfleet renders from nmap_scan_script_args is parsed by this nmap's NSE into exactly the
    values given (a prerule script echoes nmap.registry.args; no target, nothing is sent)."""
    _, nmap = built_nmap
    args_file = tmp_path / "script-args"
    args_file.write_text(scriptargs.render(AWKWARD_ARGS), encoding="utf-8")
    xml = tmp_path / "out.xml"
    proc = isolated([str(nmap), "-n", "--script", str(ECHO_ARGS), "--script-args-file", str(args_file),
                     "-oX", str(xml)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    output = ET.parse(xml).find("prescript/script[@id='scanfleet-echo-args']").get("output")
    # nmap itself appends its (empty) --script-args to the file's: an empty positional argument "1=", which
    # no script reads by name; every named argument must come through exactly
    named = [item for item in output.split(";") if not re.fullmatch(r"[0-9]+=", item)]
    assert sorted(named) == sorted(flatten(AWKWARD_ARGS))
    assert "Mozilla" not in ET.parse(xml).getroot().get("args")


# ---- the patches' behaviour, on silent loopback ports in a private network namespace ------------------

SERVICE_SCAN_DONE = re.compile(r"Completed Service scan at [^,]+, ([0-9.]+)s elapsed \((\d+) services? on 1 host\)")


def service_scan_seconds(nmap, ports: int, *options: str) -> float:
    """nmap's own figure for its service scan (-v) of PORTS silent ports; nmap is ended right after it."""
    proc = isolated(["python3", str(SILENT_PORTS), "--count", str(ports), "--until", "Completed Service scan", "--",
                     str(nmap), "-sT", "-sV", "-T4", "-Pn", "-n", "-v", *options, "-p", "{ports}", "127.0.0.1"])
    done = SERVICE_SCAN_DONE.search(proc.stdout)
    assert proc.returncode == 0 and done, proc.stdout[-3000:] + proc.stderr[-1000:]
    assert int(done.group(2)) == ports, done.group(0)
    return float(done.group(1))


def test_service_parallelism_scans_silent_ports_in_one_wait_round(built_nmap):
    """A silent port costs one wait round: every probe's wait, one after the other. The build keeps
    nmap_build_service_parallelism ports in flight, so that many silent ports take about one round, where
    stock nmap (20 at -T3, 30 at -T4) needs ceil(ports / 30) rounds. The same build held to stock's -T3 width
    with --max-parallelism shows that the measure tells the two apart."""
    _, nmap = built_nmap
    width = DEFAULTS["nmap_build_service_parallelism"]
    ports = min(width, 200)  # 200 listeners and their connections stay well below the usual 1024 descriptors
    one_round = service_scan_seconds(nmap, 1)
    rounds = math.ceil(ports / width)
    many = service_scan_seconds(nmap, ports)
    assert many < (rounds + 1) * one_round, (
        f"{ports} silent ports took {many} s, one took {one_round} s: more than {rounds} wait round(s) of "
        f"{width} ports in flight (stock at -T4: {math.ceil(ports / 30)} rounds)")

    stock_width = 20
    capped_ports = 3 * stock_width
    capped = service_scan_seconds(nmap, capped_ports, "--max-parallelism", str(stock_width))
    assert capped > (math.ceil(capped_ports / stock_width) - 1) * one_round, (
        f"{capped_ports} silent ports, {stock_width} at a time, took only {capped} s (one port: {one_round} s)")


def test_nse_timeout_cap_ends_a_receive_without_timeout(built_nmap, tmp_path):
    """A script that sets no timeout (-1) or a very long one and receives on a silent port gives up at the
    build's cap (stock nmap waits until --script-timeout ends the script, and reports nothing)."""
    _, nmap = built_nmap
    cap = DEFAULTS["nmap_build_nse_timeout_cap_ms"]
    xml = tmp_path / "out.xml"
    proc = isolated(["python3", str(SILENT_PORTS), "--count", "1", "--", str(nmap), "-n", "--script", str(TIMEOUT_CAP),
                     "--script-args", "scanfleet.port={ports}", "--script-timeout", f"{max(30, 4 * cap // 1000)}s",
                     "-oX", str(xml)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    script = ET.parse(xml).find("prescript/script[@id='scanfleet-timeout-cap']")
    assert script is not None, f"the script reported nothing (did a receive wait for ever?): {proc.stdout[-2000:]}"
    results = {}
    for item in script.get("output").split(";"):
        fields = dict(field.split("=", 1) for field in item.split())
        results[int(fields["timeout"])] = (fields["status"], int(fields["ms"]))
    assert set(results) == {-1, 3600000}, results
    for timeout, (status, ms) in results.items():
        assert status == "TIMEOUT", (timeout, status)
        assert cap - 50 <= ms < 2 * cap, f"set_timeout({timeout}): gave up after {ms} ms, the cap is {cap} ms"



SILENT_RECEIVE = ROOT / "tests" / "fixtures" / "nse" / "scanfleet-silent-receive.nse"
NSE_DONE = re.compile(r"Completed NSE at [^,]+, ([0-9.]+)s elapsed")


def nse_on_silent_ports(nmap, ports: int, xml, *options: str) -> float:
    """nmap's own figure for NSE (-v, every NSE phase summed) when a script that holds a socket for one timeout
    cap runs on each of PORTS silent ports (no service scan); every port must report the receive's timeout."""
    proc = isolated(["python3", str(SILENT_PORTS), "--count", str(ports), "--", str(nmap), "-sT", "-T4", "-Pn", "-n",
                     "-v", "--script", str(SILENT_RECEIVE), *options, "-p", "{ports}", "-oX", str(xml), "127.0.0.1"])
    phases = NSE_DONE.findall(proc.stdout)
    assert proc.returncode == 0 and phases, proc.stdout[-3000:] + proc.stderr[-1000:]
    outputs = [script.get("output") for script in ET.parse(xml).iter("script")]
    assert len(outputs) == ports and all(out.startswith("status=TIMEOUT ") for out in outputs), outputs[:5]
    return sum(float(seconds) for seconds in phases)


def test_nse_holds_as_many_sockets_as_the_service_scan_keeps_probes_in_flight(built_nmap, tmp_path):
    """With -sV, the version scripts rpc-grind and skypev2-version run on every port the service scan left
    unidentified, each holding a socket for the NSE timeout cap on a silent port. The build lets as many script
    threads hold sockets as the service scan keeps probes in flight, so a script on each of PORTS silent ports
    takes about one cap, where stock's 20 socket slots need about PORTS / 21 caps. The same build held to those 20
    slots (--max-parallelism 20) shows that the measure tells the two apart."""
    _, nmap = built_nmap
    width = DEFAULTS["nmap_build_service_parallelism"]
    cap = DEFAULTS["nmap_build_nse_timeout_cap_ms"] / 1000
    ports = min(width, 200)  # listeners and connections well below the usual 1024 descriptors
    lifted = nse_on_silent_ports(nmap, ports, tmp_path / "lifted.xml")
    held = nse_on_silent_ports(nmap, ports, tmp_path / "held.xml", "--max-parallelism", "20")
    rounds = math.ceil(ports / width)
    assert lifted < (rounds + 2) * cap, f"{ports} scripts took {lifted} s: more than {rounds} round(s) of {cap} s"
    assert held > (ports / 21 - 2) * cap, f"held to 20 sockets, {ports} scripts took only {held} s (cap {cap} s)"


# ---- 60-runtime-waits: the service and tcpwrapped waits set when nmap runs ------------------------------

RUNTIME_WAIT = 3000  # ten times the compiled default (nmap_build_service_wait_ms 300): no tolerance covers both


def null_only_probes(nmap, tmp_path):
    """The build's own probes file cut to the NULL probe (scanfleet probes null-only): a silent port costs one wait."""
    path = tmp_path / "null.probes"
    probes.write_null_only(nmap.parent.parent / "share" / "nmap" / "nmap-service-probes", path, str(nmap))
    return path


def null_probe_seconds(nmap, versiondb, *env: str) -> float:
    """nmap's own figure for the service scan (-sV, the NULL probe alone) of one silent port, with ENV (NAME=VALUE)."""
    proc = isolated(["python3", str(SILENT_PORTS), "--count", "1", "--until", "Completed Service scan", "--", "env",
                     *env, str(nmap), "-sT", "-sV", "-Pn", "-n", "-v", "--versiondb", str(versiondb), "-p", "{ports}",
                     "127.0.0.1"])
    done = SERVICE_SCAN_DONE.search(proc.stdout)
    assert proc.returncode == 0 and done, proc.stdout[-3000:] + proc.stderr[-1000:]
    return float(done.group(1))


def test_runtime_service_wait_sets_the_banner_wait(built_nmap, tmp_path):
    """Unset, a silent port's NULL probe ends after the compiled wait; SCANFLEET_SERVICE_WAIT_MS sets it when nmap
    runs, one build serving both passes of a scan (the probes file's totalwaitms 6000 is ignored either way)."""
    _, nmap = built_nmap
    compiled = DEFAULTS["nmap_build_service_wait_ms"] / 1000
    versiondb = null_only_probes(nmap, tmp_path)
    default = null_probe_seconds(nmap, versiondb)
    raised = null_probe_seconds(nmap, versiondb, f"SCANFLEET_SERVICE_WAIT_MS={RUNTIME_WAIT}")
    assert compiled * 0.9 <= default < compiled + 0.7, f"unset: {default} s, the compiled wait is {compiled} s"
    wait = RUNTIME_WAIT / 1000
    assert wait * 0.97 <= raised < wait + 0.7, f"SCANFLEET_SERVICE_WAIT_MS={RUNTIME_WAIT}: {raised} s"


def test_runtime_tcpwrapped_wait(built_nmap):
    """A port that closes 250 ms after the connection: past the compiled tcpwrapped wait (200 ms), nmap goes on
    probing it; with SCANFLEET_TCPWRAPPED_MS=1000 it is settled as tcpwrapped on the NULL probe alone."""
    _, nmap = built_nmap
    check = ["python3", str(TCPWRAPPED_CHECK), "--nmap", str(nmap), "--user", "root", "--close-ms", "250"]
    compiled = isolated(check)
    assert compiled.returncode == 0, compiled.stdout + compiled.stderr
    assert json.loads(compiled.stdout)["delayed_probes_sent"] > 1, compiled.stdout
    raised = isolated([*check, "--env", "SCANFLEET_TCPWRAPPED_MS=1000",
                       "--env", f"SCANFLEET_SERVICE_WAIT_MS={RUNTIME_WAIT}"])
    assert raised.returncode == 0, raised.stdout + raised.stderr
    result = json.loads(raised.stdout)
    assert (result["delayed_close"], result["delayed_probes_sent"]) == ("tcpwrapped", 1), result


@pytest.mark.parametrize(("env", "message"), [
    (["SCANFLEET_SERVICE_WAIT_MS=6s"], 'Bad value of SCANFLEET_SERVICE_WAIT_MS ("6s"): give a whole number of '
                                       "milliseconds from 100 to 300000, or unset it for this build's default of "
                                       f"{DEFAULTS['nmap_build_service_wait_ms']} ms"),
    (["SCANFLEET_SERVICE_WAIT_MS=99"], 'Bad value of SCANFLEET_SERVICE_WAIT_MS ("99")'),
    (["SCANFLEET_SERVICE_WAIT_MS=300001"], 'Bad value of SCANFLEET_SERVICE_WAIT_MS ("300001")'),
    (["SCANFLEET_SERVICE_WAIT_MS=99999999999999999999"], 'SCANFLEET_SERVICE_WAIT_MS ("99999999999999999999")'),
    (["SCANFLEET_SERVICE_WAIT_MS="], 'Bad value of SCANFLEET_SERVICE_WAIT_MS (""'),
    (["SCANFLEET_SERVICE_WAIT_MS= 6000"], 'Bad value of SCANFLEET_SERVICE_WAIT_MS (" 6000")'),
    (["SCANFLEET_TCPWRAPPED_MS=-1"], 'Bad value of SCANFLEET_TCPWRAPPED_MS ("-1"): give a whole number of '
                                     "milliseconds from 100 to 300000, or unset it for this build's default of "
                                     f"{DEFAULTS['nmap_build_tcpwrapped_ms']} ms"),
    ([f"SCANFLEET_TCPWRAPPED_MS={DEFAULTS['nmap_build_service_wait_ms']}"],
     f"The tcpwrapped wait ({DEFAULTS['nmap_build_service_wait_ms']} ms, SCANFLEET_TCPWRAPPED_MS or this build's "
     f"default) must be shorter than the service wait ({DEFAULTS['nmap_build_service_wait_ms']} ms"),
])
def test_a_bad_runtime_wait_is_refused_before_anything_is_sent(built_nmap, env, message):
    _, nmap = built_nmap
    proc = isolated(["env", *env, str(nmap), "-sT", "-sV", "-Pn", "-n", "-p", "1", "127.0.0.1"])
    assert proc.returncode != 0, proc.stdout
    assert message in proc.stderr, proc.stderr
    assert "Nmap scan report" not in proc.stdout, proc.stdout
