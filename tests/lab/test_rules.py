"""Lab tests: the custom probe rules (files/probes/*.probes) against the lab's target hosts.

Needs the target hosts up (``lab/targets.sh up``) and a patched nmap; skips, saying which is missing,
otherwise (under CI=true it fails instead). Every rule of every rule file must have a case in CASES (a target
port that the rule is verified against): the patched nmap scans that port with the merged probes file and
``--version-trace``, and the test checks the service, product (and version and info where the rule sets them),
that the match is our rule at the probe the rule sits under, and that nmap sent no probe after that one.
Silent ports and the port that closes at once are checked too.

Safety: only the target hosts' lab addresses (10.77.0.101-119, from inventory/lab/targets.yml) are scanned.
"""

from __future__ import annotations

import os
import re
import select
import shutil
import socket
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from scanfleet import probes
from tests.conftest import ROOT, unavailable

pytestmark = pytest.mark.lab

INVENTORY = ROOT / "inventory" / "lab" / "targets.yml"
RULES_DIR = ROOT / "files" / "probes"
LAB_HOSTS = Path("/var/lib/scanfleet-lab/hosts")
# Patched nmap builds, best first: $SCANFLEET_LAB_NMAP_PREFIX (an install prefix: bin/nmap, share/nmap), the
# build test's (tests/build) and the scanner hosts' (roles/nmap_build).
BUILD_TEST_NMAPS = [ROOT / ".cache" / "build-test" / suite / "prefix" for suite in ("trixie", "sid", "bookworm")]
SCANNER_NMAP = Path("opt/scanfleet/nmap-current")
# Version scripts (-sV runs them) that wait on a socket nobody answers would add their 30 s default timeout
# (drda-info on port 9090): they do not take part in service matching, so cap them.
NMAP_SCRIPT_TIMEOUT = "2s"


@dataclass(frozen=True)
class Case:
    """Where one custom rule is verified and what nmap must report there."""

    rule_file: str
    probe: str  # the probe the rule sits under (its section in the rule file)
    service: str
    product: str
    host: str
    port: int
    version: str | None = None  # expected version, when the rule captures one
    info: str | None = None  # expected extra info, when the rule sets one
    allports: bool = False  # port excluded from version detection by the stock file (Exclude T:9100-9107)


CASES = [
    Case("seed.probes", "NULL", "mysql", "MariaDB", "target-db", 3307, info="unauthorized"),
    Case("seed.probes", "GetRequest", "hadoop-ipc", "Hadoop IPC", "target-db", 8020),
    Case("seed.probes", "GetRequest", "prometheus", "Node Exporter", "target-web", 9100, allports=True),
    Case("seed.probes", "GetRequest", "prometheus", "Blackbox Exporter", "target-web", 9115),
    Case("seed.probes", "GetRequest", "http", "Pike http server", "target-web", 8080, version="8.0",
         info="Release 1738"),
    Case("seed.probes", "RPCCheck", "cassandra-native", "Apache Cassandra", "target-db", 9042,
         info="native protocol version 4"),
    Case("services.probes", "GenericLines", "clickhouse", "ClickHouse DBMS", "target-db", 9000, version="18.16",
         info="native protocol"),
    Case("services.probes", "GetRequest", "http", "Grafana http", "target-web", 3000),
    Case("services.probes", "GetRequest", "http", "Kubernetes Dashboard", "target-web", 9090),
    Case("services.probes", "GetRequest", "http", "ClickHouse DBMS", "target-db", 8123, info="HTTP interface"),
    # learned.probes: drafted by the harvest from a lab scan (README "Harvest"), on both hosts that serve them
    Case("learned.probes", "NULL", "nats", "NATS server", "target-db", 4222, version="2.9.10"),
    Case("learned.probes", "NULL", "tarantool", "Tarantool", "target-mail", 3301, version="2.6.0",
         info="binary protocol"),
    Case("learned.probes", "GenericLines", "beanstalkd", "beanstalkd", "target-db", 11300),
]

# Real services that stock rules identify: the merged file must still name them so (our rules go first).
# (host, port, service, product as a regex: nmap 7.93 calls MariaDB "MySQL")
STOCK_CASES = [
    ("target-web", 22, "ssh", "OpenSSH"),
    ("target-web", 80, "http", "nginx"),
    ("target-db", 3306, "mysql", "MariaDB|MySQL"),
    ("target-db", 6379, "redis", "Redis key-value store"),
    ("target-mail", 587, "smtp", "Exim smtpd"),
]

SENDING = re.compile(r"^Service scan sending probe (\S+) to ([\d.]+):(\d+) \(tcp\)$")
MATCHED = re.compile(r"^Service scan (?:hard |soft )?match \(Probe (\S+) matched with (\S+) line (\d+)\): "
                     r"([\d.]+):(\d+) is ")
HARD = re.compile(r"^Service scan (?:hard )?match ")  # nmap 7.93 prints "match" for both kinds
SERVICE_PHASE = re.compile(r"^Completed Service scan at [\d:]+, ([\d.]+)s elapsed")


# --------------------------------------------------------------------------------------------------
# The lab


def load_targets() -> dict[str, dict]:
    """Target hosts from the inventory: name -> host vars (ansible_host, targets_responder ...)."""
    inventory = yaml.safe_load(INVENTORY.read_text())
    hosts = inventory["all"]["children"]["targets"]["hosts"]
    for name, hostvars in hosts.items():
        octets = hostvars["ansible_host"].split(".")
        # never scan anything but the lab's target addresses
        assert name.startswith("target-") and octets[:3] == ["10", "77", "0"] and 101 <= int(octets[3]) <= 119
    return hosts


def port_open(address: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def targets() -> dict[str, dict]:
    hosts = load_targets()
    down = [name for name, hv in hosts.items() if not port_open(hv["ansible_host"], 22)]
    if down:
        unavailable(f"target hosts not up: {', '.join(down)} (run: lab/targets.sh up)")
    return hosts


def address(targets: dict[str, dict], host: str) -> str:
    return targets[host]["ansible_host"]


def responder_ports(targets: dict[str, dict], kind: str) -> list[tuple[str, int]]:
    return [(hv["ansible_host"], entry["port"]) for hv in targets.values()
            for entry in hv.get("targets_responder", []) if entry["kind"] == kind]


# --------------------------------------------------------------------------------------------------
# The patched nmap and the merged probes file


def scanner_prefixes() -> list[Path]:
    """nmap-current of the lab's scanner hosts, read through their overlay's upper directory."""
    found = []
    for upper in sorted(LAB_HOSTS.glob("*/upper")):
        link = upper / SCANNER_NMAP
        if link.is_symlink():
            target = Path(str(link.readlink()))
            prefix = upper / target.relative_to("/") if target.is_absolute() else link.parent / target
            found.append(prefix)
    return found


@pytest.fixture(scope="session")
def patched_nmap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """(nmap binary, its data directory): a private copy, so that a rebuild elsewhere cannot pull it away.

    NMAPDIR names the copy's data for the session: the merged file's validation runs the binary without
    --datadir, and a scanner host's build was compiled for a data directory that exists only on that host."""
    chosen = os.environ.get("SCANFLEET_LAB_NMAP_PREFIX")
    for prefix in [Path(chosen)] if chosen else [*BUILD_TEST_NMAPS, *scanner_prefixes()]:
        binary, data = prefix / "bin" / "nmap", prefix / "share" / "nmap"
        if not (binary.is_file() and (data / "nmap-service-probes").is_file()):
            continue
        copy = tmp_path_factory.mktemp("nmap")
        try:
            shutil.copy2(binary, copy / "nmap")
            shutil.copytree(data, copy / "share")
        except OSError:
            continue  # being rebuilt right now: try the next one
        out = subprocess.run([str(copy / "nmap"), "--version"], capture_output=True, text=True, check=False)
        if out.returncode == 0:
            with pytest.MonkeyPatch.context() as env:
                env.setenv("NMAPDIR", str(copy / "share"))
                yield copy / "nmap", copy / "share"
            return
    unavailable(f"no patched nmap{' at ' + chosen if chosen else ''}: build one (pytest -m build), provision a "
                "scanner host (make provision) or set SCANFLEET_LAB_NMAP_PREFIX")


@pytest.fixture(scope="session")
def rule_files() -> list[probes.RuleFile]:
    return [probes.parse_rules_file(p) for p in probes.collect_rule_files([RULES_DIR])]


@pytest.fixture(scope="session")
def merged(patched_nmap: tuple[Path, Path], rule_files: list[probes.RuleFile],
           tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """The stock file of the patched nmap merged with every rule file (validated by that nmap)."""
    nmap, data = patched_nmap
    result = probes.merge_files(data / "nmap-service-probes", [f.path for f in rule_files])
    out = tmp_path_factory.mktemp("probes") / "nmap-service-probes"
    probes.write_merged(result, out, str(nmap))
    return out, out.read_text(errors="surrogateescape").split("\n")


# --------------------------------------------------------------------------------------------------
# Scanning


@dataclass
class PortResult:
    service: str | None
    product: str | None
    version: str | None
    info: str | None
    sent: list[str]  # probes sent, in order
    matches: list[tuple[str, str, int, bool]]  # (probe, section, merged-file line, hard)


@dataclass
class Scan:
    ports: dict[int, PortResult]
    seconds: float  # the whole nmap run
    service_seconds: float  # its service scan phase (probes only, not NSE)
    trace: str


def run_scan(nmap: Path, data: Path, probes_file: Path, ip: str, ports: list[int], *extra: str,
             tmp: Path) -> Scan:
    xml_out = tmp / f"scan-{ip}-{'-'.join(map(str, ports))}.xml"
    cmd = [str(nmap), "-sV", "-v", "--version-trace", "--versiondb", str(probes_file), "--datadir", str(data),
           "--script-timeout", NMAP_SCRIPT_TIMEOUT, "-Pn", "-n", *extra, "-p", ",".join(map(str, ports)),
           "-oX", str(xml_out), ip]
    start = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=300, check=False)
    seconds = time.monotonic() - start
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    results = {p: PortResult(None, None, None, None, [], []) for p in ports}
    for line in proc.stdout.splitlines():
        sending, matched = SENDING.match(line), MATCHED.match(line)
        if sending and sending.group(2) == ip and int(sending.group(3)) in results:
            results[int(sending.group(3))].sent.append(sending.group(1))
        elif matched and matched.group(4) == ip and int(matched.group(5)) in results:
            results[int(matched.group(5))].matches.append(
                (matched.group(1), matched.group(2), int(matched.group(3)), bool(HARD.match(line))))
    for port in ET.parse(xml_out).getroot().iter("port"):
        number = int(port.get("portid", "0"))
        service = port.find("service")
        if number in results and service is not None:
            r = results[number]
            r.service, r.product = service.get("name"), service.get("product")
            r.version, r.info = service.get("version"), service.get("extrainfo")
    phase = next((m for m in map(SERVICE_PHASE.match, proc.stdout.splitlines()) if m), None)
    return Scan(results, seconds, float(phase.group(1)) if phase else seconds, proc.stdout)


@pytest.fixture(scope="session")
def scans(targets: dict[str, dict], patched_nmap: tuple[Path, Path], merged: tuple[Path, list[str]],
          tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, bool], Scan]:
    """One nmap run per (host, --allports) over all of its ports that are checked here."""
    nmap, data = patched_nmap
    wanted: dict[tuple[str, bool], set[int]] = {}
    for case in CASES:
        wanted.setdefault((case.host, case.allports), set()).add(case.port)
    for host, port, _service, _product in STOCK_CASES:
        wanted.setdefault((host, False), set()).add(port)
    tmp = tmp_path_factory.mktemp("scans")
    return {key: run_scan(nmap, data, merged[0], address(targets, key[0]), sorted(ports),
                          *(["--allports"] if key[1] else []), tmp=tmp)
            for key, ports in wanted.items()}


# --------------------------------------------------------------------------------------------------
# Tests


def rule_cases(rule_files: list[probes.RuleFile]) -> list[tuple[str, str, probes.Match, str]]:
    """(rule file, probe, match, rule text) of every custom rule."""
    out = []
    for rf in rule_files:
        for section in rf.sections:
            probe = "NULL" if section.probe is None else section.probe.name
            for line in section.matches:
                assert isinstance(line.item, probes.Match)
                out.append((rf.name, probe, line.item, line.content))
    return out


def case_for(rule_file: str, probe: str, match: probes.Match) -> Case | None:
    found = [c for c in CASES if (c.rule_file, c.probe, c.service, c.product) ==
             (rule_file, probe, match.service, match.product)]
    return found[0] if len(found) == 1 else None


def test_every_custom_rule_has_a_lab_case(rule_files: list[probes.RuleFile]) -> None:
    rules = rule_cases(rule_files)
    missing = [f"{f} ({p}): {m.service} {m.product}" for f, p, m, _ in rules if case_for(f, p, m) is None]
    assert not missing, f"rules without a target port to verify them on (add them to CASES): {missing}"
    assert len(rules) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.rule_file}:{c.product}@{c.host}:{c.port}")
def test_rule_identifies_the_service_at_its_probe(case: Case, rule_files: list[probes.RuleFile],
                                                   scans: dict[tuple[str, bool], Scan],
                                                   merged: tuple[Path, list[str]]) -> None:
    rule = next(text for f, p, m, text in rule_cases(rule_files) if case_for(f, p, m) == case)
    scan = scans[(case.host, case.allports)]
    result = scan.ports[case.port]
    where = f"{case.host}:{case.port}"
    # what nmap reports
    assert (result.service, result.product) == (case.service, case.product), f"{where}: {result}"
    if case.version is not None:
        assert result.version == case.version, f"{where}: {result}"
    if case.info is not None:
        assert result.info == case.info, f"{where}: {result}"
    # ... comes from our rule, matched at the probe it sits under
    hard = [m for m in result.matches if m[3]]
    assert hard, f"{where}: no match in the trace: {result.matches}"
    probe, _section, line, _ = hard[-1]
    assert probe == case.probe, f"{where}: matched at probe {probe}, the rule sits under {case.probe}"
    assert merged[1][line - 1] == rule, f"{where}: matched line {line} is not our rule: {merged[1][line - 1]}"
    # ... and no probe was sent after that one
    assert result.sent and result.sent[-1] == case.probe, f"{where}: probes sent: {result.sent}"
    assert result.sent.count(case.probe) == 1, f"{where}: probes sent: {result.sent}"


def test_identified_ports_take_little_time(scans: dict[tuple[str, bool], Scan]) -> None:
    # Each scan covers the identified ports of one host in parallel: its service scan phase takes well under
    # a second here (0.3-0.6 s); the bound leaves room for a busy machine.  The whole run adds NSE (capped).
    for (host, allports), scan in scans.items():
        assert scan.service_seconds < 2, f"{host} (allports={allports}): service scan {scan.service_seconds} s"
        assert scan.seconds < 15, f"{host} (allports={allports}): {scan.seconds:.1f} s"


@pytest.mark.parametrize(("host", "port", "service", "product"), STOCK_CASES,
                         ids=[f"{h}:{p}" for h, p, _s, _p in STOCK_CASES])
def test_stock_rules_still_identify_real_services(host: str, port: int, service: str, product: str,
                                                  scans: dict[tuple[str, bool], Scan]) -> None:
    result = scans[(host, False)].ports[port]
    assert result.service == service and re.fullmatch(product, result.product or ""), f"{host}:{port}: {result}"


def silent_after(ip: str, port: int, wait: float = 1.0) -> str:
    """Connect, say something, wait: '' if the port accepted and neither spoke nor closed, else what it did."""
    try:
        sock = socket.create_connection((ip, port), timeout=2)
    except OSError as exc:
        return f"connect: {exc}"
    with sock:
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        readable, _, _ = select.select([sock], [], [], wait)
        if readable:
            data = sock.recv(100)
            return f"sent {data!r}" if data else "closed"
    return ""


def test_silent_ports_accept_and_never_speak(targets: dict[str, dict]) -> None:
    ports = responder_ports(targets, "silent")
    assert len(ports) >= 25
    assert len({ip for ip, _ in ports}) == len(targets), "silent ports are spread over every target host"
    with ThreadPoolExecutor(max_workers=len(ports)) as pool:
        outcomes = dict(zip(ports, pool.map(lambda p: silent_after(*p), ports), strict=True))
    spoke = {f"{ip}:{port}": what for (ip, port), what in outcomes.items() if what}
    assert not spoke


def test_close_port_accepts_and_closes_at_once(targets: dict[str, dict]) -> None:
    ports = responder_ports(targets, "close")
    assert ports
    for ip, port in ports:
        with socket.create_connection((ip, port), timeout=2) as sock:
            readable, _, _ = select.select([sock], [], [], 1.0)
            assert readable and sock.recv(100) == b"", f"{ip}:{port} did not close at once"


def test_patched_nmap_on_silent_and_closing_ports(targets: dict[str, dict], patched_nmap: tuple[Path, Path],
                                                  merged: tuple[Path, list[str]], tmp_path: Path) -> None:
    """One silent port: open, unidentified, in about 10 s; the closing port: tcpwrapped after one probe."""
    nmap, data = patched_nmap
    (ip, silent), = responder_ports(targets, "silent")[:1]
    (close_ip, close), = responder_ports(targets, "close")[:1]
    scan = run_scan(nmap, data, merged[0], ip, [silent], tmp=tmp_path)
    result = scan.ports[silent]
    assert not [m for m in result.matches if m[3]], f"{ip}:{silent}: {result}"
    assert result.product is None and len(result.sent) > 10, f"{ip}:{silent}: {result}"
    assert 5 < scan.service_seconds < 30, f"{ip}:{silent}: service scan {scan.service_seconds} s"
    scan = run_scan(nmap, data, merged[0], close_ip, [close], tmp=tmp_path)
    assert scan.ports[close].service == "tcpwrapped" and scan.ports[close].sent == ["NULL"]
