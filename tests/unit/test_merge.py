"""Tests of scanfleet.merge and scanfleet.report, on real nmap 7.93 output.

The fixtures in tests/fixtures/xml were written by stock nmap inside a private network namespace
(tests/fixtures/xml/make_fixtures.sh). Expected values are computed here from the input files with an
independent reading (full parse, or splitting the text at ``</host>`` for truncated files), never
copied from the module's output.
"""

from __future__ import annotations

import csv
import datetime
import ipaddress
import json
import re
import subprocess
import tracemalloc
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from scanfleet import ScanfleetError, cli, merge, report

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "xml"
SHARD_A = FIXTURES / "shard-a" / "scan.xml"
SHARD_B = FIXTURES / "shard-b" / "scan.xml"
SHARD_C = FIXTURES / "shard-c" / "scan.xml"
KILLED = FIXTURES / "shard-killed" / "scan.xml"
CUT = FIXTURES / "shard-cut" / "scan.xml"
COMPLETE = [SHARD_A, SHARD_B, SHARD_C]
ALL = [*COMPLETE, KILLED, CUT]



# ---- independent reading of the inputs (the test oracle) -------------------------------------------

def complete_hosts(path: Path) -> list[ET.Element]:
    """Every complete <host> element of a file, complete or truncated: split the text at </host>."""
    text = path.read_text()
    hosts = []
    for chunk in text.split("</host>")[:-1]:
        start = [m.start() for m in re.finditer(r"<host[ >]", chunk)][-1]
        hosts.append(ET.fromstring(chunk[start:] + "</host>"))
    return hosts


def partial_host_address(path: Path) -> str | None:
    tail = path.read_text().split("</host>")[-1]
    start = re.search(r"<host[ >]", tail)
    if start is None:
        return None
    match = re.search(r'<address addr="([^"]+)" addrtype="ipv[46]"', tail[start.start():])
    return match.group(1) if match else None


def address(host: ET.Element) -> str:
    return next(a.get("addr") for a in host.findall("address") if a.get("addrtype") != "mac")


def root_attrib(path: Path) -> dict[str, str]:
    match = re.search(r"<nmaprun ([^>]*)>", path.read_text())
    assert match, path
    return dict(re.findall(r'(\w+)="([^"]*)"', match.group(1)))


def unescape(text: str) -> str:
    return text.replace("&#45;", "-").replace("&quot;", '"').replace("&lt;", "<").replace(
        "&gt;", ">").replace("&amp;", "&")


def runstats(path: Path) -> tuple[ET.Element, ET.Element] | None:
    text = path.read_text()
    if "</nmaprun>" not in text:
        return None
    tree = ET.parse(path).getroot()
    return tree.find("runstats/finished"), tree.find("runstats/hosts")


def explicit_ports(host: ET.Element) -> dict[tuple[str, int], ET.Element]:
    return {(p.get("protocol"), int(p.get("portid"))): p for p in host.iterfind("ports/port")}


def extraports_ports(host: ET.Element) -> dict[tuple[str, int], str]:
    ports = {}
    for group in host.iterfind("ports/extraports"):
        for reason in group.iterfind("extrareasons"):
            for part in reason.get("ports").split(","):
                low, _, high = part.partition("-")
                for port in range(int(low), int(high or low) + 1):
                    ports[(reason.get("proto"), port)] = group.get("state")
    return ports


def xmllint_ok(path: Path, dtd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["xmllint", "--noout", "--dtdvalid", str(dtd), str(path)],
                          capture_output=True, text=True, check=False)


@pytest.fixture
def merged_all(tmp_path):
    out = tmp_path / "merged.xml"
    result = merge.merge(ALL, out)
    return out, result


# ---- the fixtures themselves ---------------------------------------------------------------------

def test_fixtures_are_what_the_tests_need():
    for path in ALL:
        attrib = root_attrib(path)
        assert attrib["scanner"] == "nmap" and attrib["version"] == "7.93", path
        assert unescape(attrib["args"]).startswith("/usr/bin/nmap "), path
    for path in COMPLETE:
        assert path.read_text().rstrip().endswith("</nmaprun>"), path
    # the killed run stops between hosts, the cut one inside a <host>
    assert "</nmaprun>" not in KILLED.read_text() and KILLED.read_text().rstrip().endswith("</host>")
    assert "</nmaprun>" not in CUT.read_text() and partial_host_address(CUT) is not None
    # shards a and b overlap on exactly one host, with different port sets
    common = {address(h) for h in complete_hosts(SHARD_A)} & {address(h) for h in complete_hosts(SHARD_B)}
    assert len(common) == 1
    (dup,) = common
    host_a = next(h for h in complete_hosts(SHARD_A) if address(h) == dup)
    host_b = next(h for h in complete_hosts(SHARD_B) if address(h) == dup)
    assert set(explicit_ports(host_a)) != set(explicit_ports(host_b))


# ---- merge ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("inputs", [ALL, [SHARD_B, SHARD_A], [KILLED], [CUT, SHARD_C]],
                         ids=["all", "b-a", "killed", "cut-c"])
def test_merged_xml_validates_against_nmap_dtd(tmp_path, inputs, nmap_dtd):
    out = tmp_path / "merged.xml"
    result = merge.merge(inputs, out, dtd=nmap_dtd)
    assert result.validated
    proc = xmllint_ok(out, nmap_dtd)
    assert proc.returncode == 0, proc.stderr


def test_every_host_appears_exactly_once(merged_all):
    out, _ = merged_all
    expected = {address(h) for path in ALL for h in complete_hosts(path)}
    got = [address(h) for h in ET.parse(out).getroot().findall("host")]
    assert sorted(got) == sorted(expected)
    assert len(got) == len(set(got))
    # inputs do repeat a host, so the de-duplication really happened
    assert sum(len(complete_hosts(p)) for p in ALL) > len(expected)


def _dup_occurrences(inputs):
    by_addr: dict[str, list[ET.Element]] = {}
    for path in inputs:
        for host in complete_hosts(path):
            by_addr.setdefault(address(host), []).append(host)
    return {a: hosts for a, hosts in by_addr.items() if len(hosts) > 1}


@pytest.mark.parametrize("inputs", [[SHARD_A, SHARD_B], [SHARD_B, SHARD_A]], ids=["a-b", "b-a"])
def test_duplicated_host_gets_the_union_of_ports(tmp_path, inputs):
    out = tmp_path / "merged.xml"
    merge.merge(inputs, out)
    dups = _dup_occurrences(inputs)
    assert dups
    merged_hosts = {address(h): h for h in ET.parse(out).getroot().findall("host")}
    for addr, occurrences in dups.items():
        merged = merged_hosts[addr]
        explicit = set().union(*(explicit_ports(h) for h in occurrences))
        assert set(explicit_ports(merged)) == explicit
        # every port scanned on the host by any shard is accounted for exactly once
        everything = explicit | set().union(*(extraports_ports(h) for h in occurrences))
        merged_extra = extraports_ports(merged)
        assert set(merged_extra).isdisjoint(explicit_ports(merged))
        assert set(merged_extra) | set(explicit_ports(merged)) == everything
        count = sum(int(g.get("count")) for g in merged.iterfind("ports/extraports"))
        assert count == len(merged_extra)
        assert "shard-a" in merged.get("comment") and "shard-b" in merged.get("comment")
        starts = [int(h.get("starttime")) for h in occurrences]
        ends = [int(h.get("endtime")) for h in occurrences]
        assert int(merged.get("starttime")) == min(starts)
        assert int(merged.get("endtime")) == max(ends)


@pytest.mark.parametrize("inputs", [[SHARD_A, SHARD_B], [SHARD_B, SHARD_A]], ids=["a-b", "b-a"])
def test_port_conflicts_prefer_open_then_probed_in_any_input_order(tmp_path, inputs):
    out = tmp_path / "merged.xml"
    merge.merge(inputs, out)
    merged_hosts = {address(h): h for h in ET.parse(out).getroot().findall("host")}
    state_conflicts = method_conflicts = 0
    for addr, occurrences in _dup_occurrences(inputs).items():
        merged_ports = explicit_ports(merged_hosts[addr])
        keys = set().union(*(explicit_ports(h) for h in occurrences))
        for key in keys:
            versions = [explicit_ports(h)[key] for h in occurrences if key in explicit_ports(h)]
            # the state of the port in each occurrence, listed or in a "Not shown" group
            states = {p.find("state").get("state") for p in versions} | {
                extraports_ports(h)[key] for h in occurrences if key in extraports_ports(h)}
            merged = merged_ports[key]
            if "open" in states and len(states) > 1:
                state_conflicts += 1
                assert merged.find("state").get("state") == "open", key
            if len(versions) < 2:
                continue
            methods = {p.find("service").get("method") for p in versions}
            if states == {"open"} and methods == {"table", "probed"}:
                method_conflicts += 1
                probed = next(p for p in versions if p.find("service").get("method") == "probed")
                assert merged.find("service").attrib == probed.find("service").attrib, key
    assert state_conflicts >= 1 and method_conflicts >= 1  # the fixtures do hold both conflicts


def _variant(tmp_path: Path, source: Path, name: str, edit) -> Path:
    """A copy of a real file with a small edit, in a directory named after the shard."""
    text = source.read_text()
    changed = edit(text)
    assert changed != text
    path = tmp_path / name / "scan.xml"
    path.parent.mkdir(parents=True)
    path.write_text(changed)
    return path


@pytest.mark.parametrize("order", ["variant-first", "real-first"])
def test_state_order_closed_beats_filtered_and_ties_keep_the_first_input(tmp_path, order):
    # shard-b as it would look from a scanner behind a firewall: 127.0.0.3:2222 filtered, not closed,
    # and the open 2121 answering with another TTL (same rank: the first input wins).
    def edit(text):
        text = re.sub(r'(<port protocol="tcp" portid="2121"><state state="open" reason="syn-ack" '
                      r'reason_ttl=")64', r"\g<1>63", text)
        host3 = text.index('<address addr="127.0.0.3"')
        head, tail = text[:host3], text[host3:]
        tail = tail.replace('proto="tcp" ports="40-80,2222,3306,8080"',
                            'proto="tcp" ports="40-80,3306,8080"', 1).replace(
            '<extraports state="closed" count="44">\n<extrareasons reason="reset" count="44"',
            '<extraports state="closed" count="43">\n<extrareasons reason="reset" count="43"', 1)
        tail = tail.replace("</extraports>\n", '</extraports>\n<port protocol="tcp" portid="2222">'
                            '<state state="filtered" reason="no-response" reason_ttl="0"/>'
                            '<service name="EtherNetIP-1" method="table" conf="3"/></port>\n', 1)
        return head + tail
    variant = _variant(tmp_path, SHARD_B, "shard-fw", edit)
    inputs = [variant, SHARD_B] if order == "variant-first" else [SHARD_B, variant]
    out = tmp_path / "merged.xml"
    merge.merge(inputs, out)
    host = next(h for h in ET.parse(out).getroot().findall("host") if address(h) == "127.0.0.3")
    assert ("tcp", 2222) not in explicit_ports(host)  # closed (from shard-b's extraports) won
    assert extraports_ports(host)[("tcp", 2222)] == "closed"
    ttl = explicit_ports(host)[("tcp", 2121)].find("state").get("reason_ttl")
    assert ttl == ("63" if order == "variant-first" else "64")


def test_combine_hosts_unites_addresses_and_hostnames_and_prefers_up():
    host_b = next(h for h in complete_hosts(SHARD_B) if address(h) == "127.0.0.2")
    down = next(h for h in complete_hosts(SHARD_A) if h.find("status").get("state") == "down")
    # the down host of shard-a, seen up (with a MAC and a user-given name) by another scanner
    seen_up = ET.fromstring(ET.tostring(host_b).replace(b"127.0.0.2", down.find("address").get("addr")
                                                        .encode()))
    mac = ET.Element("address", {"addr": "02:00:00:00:00:01", "addrtype": "mac"})
    seen_up.insert(2, mac)
    ET.SubElement(seen_up.find("hostnames"), "hostname", {"name": "user.example", "type": "user"})
    merged = merge.combine_hosts(down, seen_up)
    assert merged.find("status").get("state") == "up"
    assert [(a.get("addr"), a.get("addrtype")) for a in merged.findall("address")] == [
        (address(down), "ipv4"), ("02:00:00:00:00:01", "mac")]
    assert {h.get("name") for h in merged.iterfind("hostnames/hostname")} == {
        "web.fixture.test", "user.example"}
    assert [c.tag for c in merged][:3] == ["status", "address", "address"]
    assert list(merged)[-1].tag == "times"


def test_runstats_totals_and_times_are_true_to_the_inputs(merged_all):
    out, result = merged_all
    root = ET.parse(out).getroot()
    starts = [int(root_attrib(p)["start"]) for p in ALL]
    ends = []
    for path in ALL:
        stats = runstats(path)
        if stats is not None:
            ends.append(int(stats[0].get("time")))
        else:  # truncated: the latest time written in it
            ends.append(max(int(h.get("endtime")) for h in complete_hosts(path)))
    assert int(root.get("start")) == min(starts)
    finished = root.find("runstats/finished")
    assert int(finished.get("time")) == max(ends)
    assert float(finished.get("elapsed")) == pytest.approx(max(ends) - min(starts))
    assert finished.get("exit") == "error"  # two inputs are truncated
    assert "shard-killed" in finished.get("errormsg") and "shard-cut" in finished.get("errormsg")

    # hosts: listed hosts de-duplicated (up wins), plus hosts an input counted but did not list
    state: dict[str, str] = {}
    unlisted = {"up": 0, "down": 0, "total": 0}
    for path in ALL:
        hosts = complete_hosts(path)
        for host in hosts:
            s = host.find("status").get("state")
            if state.get(address(host)) != "up":
                state[address(host)] = s
        stats = runstats(path)
        if stats is not None:
            counted = stats[1]
            for key in ("up", "down"):
                listed = sum(1 for h in hosts if h.find("status").get("state") == key)
                unlisted[key] += int(counted.get(key)) - listed
            unlisted["total"] += int(counted.get("total")) - len(hosts)
    expected = {"up": sum(1 for s in state.values() if s == "up") + unlisted["up"],
                "down": sum(1 for s in state.values() if s == "down") + unlisted["down"],
                "total": len(state) + unlisted["total"]}
    assert unlisted["down"] >= 1  # shard-c's down host is only in its runstats
    got = {k: int(root.find("runstats/hosts").get(k)) for k in expected}
    assert got == expected
    assert (result.hosts_up, result.hosts_down, result.hosts_total) == tuple(expected.values())


def test_exit_is_success_only_when_every_input_succeeded(tmp_path):
    result = merge.merge(COMPLETE, tmp_path / "ok.xml")
    assert result.exit == "success"
    finished = ET.parse(tmp_path / "ok.xml").getroot().find("runstats/finished")
    assert finished.get("exit") == "success" and finished.get("errormsg") is None
    failed = _variant(tmp_path, SHARD_C, "shard-failed", lambda t: t.replace(
        'exit="success"', 'exit="error" errormsg="pcap died"'))
    result = merge.merge([SHARD_A, failed], tmp_path / "bad.xml")
    assert result.exit == "error" and "pcap died" in result.errormsg


def test_every_shard_command_line_is_kept(merged_all):
    out, _ = merged_all
    root = ET.parse(out).getroot()
    assert root.get("args").startswith("scanfleet merge ")
    notes = [o.text for o in root.findall("output")]
    for path in ALL:
        args = unescape(root_attrib(path)["args"])
        label = path.parent.name
        assert any(f"[{label}] args: {args}" in note for note in notes), label


def test_scaninfo_unites_the_scanned_ports(merged_all):
    out, _ = merged_all
    services = set()
    for path in ALL:
        match = re.search(r'<scaninfo [^>]*services="([^"]*)"', path.read_text())
        services |= set(merge.parse_ranges(match.group(1)))
    (info,) = ET.parse(out).getroot().findall("scaninfo")
    assert set(merge.parse_ranges(info.get("services"))) == services
    assert int(info.get("numservices")) == len(services)


def test_ranges_round_trip():
    assert merge.format_ranges({1, 2, 3, 7, 9, 10}) == "1-3,7,9-10"
    assert list(merge.parse_ranges("1-3,7,9-10")) == [1, 2, 3, 7, 9, 10]
    assert merge.format_ranges(set()) == ""


# ---- truncated and bad inputs --------------------------------------------------------------------

def _expand_targets(args: str) -> set[str]:
    """127.0.0.5-8 style targets of a fixture's command line."""
    targets = set()
    for word in args.split():
        match = re.fullmatch(r"(\d+\.\d+\.\d+\.)(\d+)(?:-(\d+))?", word)
        if match:
            low, high = int(match.group(2)), int(match.group(3) or match.group(2))
            targets |= {f"{match.group(1)}{i}" for i in range(low, high + 1)}
    return targets


@pytest.mark.parametrize("path", [KILLED, CUT], ids=["killed", "cut"])
def test_truncated_input_is_salvaged_and_reports_what_was_lost(tmp_path, path):
    shard = merge.inspect_input(path)
    kept = [address(h) for h in complete_hosts(path)]
    assert not shard.complete and shard.status == "truncated"
    assert shard.hosts_kept == len(kept) >= 1
    assert shard.addresses == kept
    assert shard.partial_host == partial_host_address(path)
    assert shard.elapsed is None and shard.end is None
    targets = _expand_targets(unescape(root_attrib(path)["args"]))
    lost = targets - set(shard.addresses)
    assert lost  # the kill / cut really lost targets
    result = merge.merge([path], tmp_path / "merged.xml")
    merged = [address(h) for h in ET.parse(tmp_path / "merged.xml").getroot().findall("host")]
    assert merged == kept
    assert not set(merged) & lost
    assert result.exit == "error"


def test_cut_input_drops_the_partial_host(tmp_path):
    partial = partial_host_address(CUT)
    merge.merge([CUT], tmp_path / "merged.xml")
    assert partial not in (tmp_path / "merged.xml").read_text().split('<runstats>')[0].split(
        "</output>")[-1]


def test_zero_byte_file_is_a_truncated_run_with_no_hosts(tmp_path):
    empty = tmp_path / "shard-z" / "scan.xml"
    empty.parent.mkdir()
    empty.write_bytes(b"")
    result = merge.merge([SHARD_A, empty], tmp_path / "merged.xml")
    shard = result.shards[1]
    assert (shard.label, shard.complete, shard.hosts_kept, shard.addresses) == ("shard-z", False, 0, [])
    assert "empty file" in shard.problem
    assert result.exit == "error"
    assert len(ET.parse(tmp_path / "merged.xml").getroot().findall("host")) == len(
        complete_hosts(SHARD_A))


BAD_INPUTS = {
    "text": lambda: b"Starting Nmap 7.93 ( https://nmap.org ) at 2026-11-21 10:09 UTC\n",
    "whitespace": lambda: b"\n\n",
    "html": lambda: b"<html><body>502 Bad Gateway</body></html>\n",
    "corrupted-middle": lambda: SHARD_B.read_bytes().replace(b"</ports>", b"</port>", 1),
    "two-runs": lambda: SHARD_A.read_bytes() + SHARD_C.read_bytes(),
}


@pytest.mark.parametrize("kind", sorted(BAD_INPUTS))
def test_bad_input_raises_naming_the_file_and_writes_nothing(tmp_path, kind):
    bad = tmp_path / "shard-bad" / "scan.xml"
    bad.parent.mkdir()
    bad.write_bytes(BAD_INPUTS[kind]())
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "merged.xml"
    out.write_text("previous merge\n")
    with pytest.raises(ScanfleetError) as info:
        merge.merge([SHARD_A, bad], out)
    assert str(bad) in str(info.value)
    assert out.read_text() == "previous merge\n"  # untouched
    assert [p.name for p in out_dir.iterdir()] == ["merged.xml"]  # no temp file left


def test_missing_and_repeated_inputs_are_refused(tmp_path):
    missing = tmp_path / "nowhere" / "scan.xml"
    with pytest.raises(ScanfleetError, match=re.escape(str(missing))):
        merge.merge([SHARD_A, missing], tmp_path / "m.xml")
    with pytest.raises(ScanfleetError, match="given twice"):
        merge.merge([SHARD_A, SHARD_A], tmp_path / "m.xml")
    assert not (tmp_path / "m.xml").exists()


# ---- reports -------------------------------------------------------------------------------------

def _utc(value: str | None) -> str | None:
    return datetime.datetime.fromtimestamp(int(value), datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if value else None


def expected_rows(merged_xml: Path, run_id: str = "") -> list[dict]:
    rows = []
    root = ET.parse(merged_xml).getroot()
    for host in root.findall("host"):
        if host.find("status").get("state") != "up":
            continue
        names = [h.get("name") for h in host.iterfind("hostnames/hostname")]
        base = {"address": address(host), "hostname": names[0] if names else ""}
        times = {"run_id": run_id, "scan_start": _utc(host.get("starttime") or root.get("start")),
                 "scan_end": _utc(host.get("endtime")) if host.get("starttime") else None}
        ports = host.findall("ports/port")
        if not ports:
            rows.append({**base, "port": None, "protocol": "", "state": "", "service": "",
                         "product": "", "version": "", "extrainfo": "", "identified": False, **times, "cpe": []})
        for port in ports:
            service = port.find("service")
            s = service.attrib if service is not None else {}
            rows.append({**base, "port": int(port.get("portid")), "protocol": port.get("protocol"),
                         "state": port.find("state").get("state"), "service": s.get("name", ""),
                         "product": s.get("product", ""), "version": s.get("version", ""),
                         "extrainfo": s.get("extrainfo", ""),
                         "identified": s.get("method") == "probed"
                         and s.get("name") not in ("unknown", "tcpwrapped"), **times,
                         "cpe": [c.text for c in port.iterfind("service/cpe")]})
    return rows


@pytest.fixture
def reports(tmp_path, nmap_xsl):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    result = merge.merge(ALL, out_dir / "merged.xml")
    summary = report.write_reports(out_dir / "merged.xml", out_dir, result.to_dict(), xsl=nmap_xsl, run_id="t-merge")
    return out_dir, result, summary


def test_json_and_csv_rows_match_the_merged_xml(reports):
    out_dir, _, summary = reports
    expected = expected_rows(out_dir / "merged.xml", "t-merge")
    assert json.loads((out_dir / "merged.json").read_text()) == expected
    with open(out_dir / "merged.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == report.COLUMNS
        got = list(reader)
    assert got == [{k: report.csv_value(v) for k, v in row.items()} for row in expected]
    assert summary["rows"] == len(expected)
    assert any(r["port"] is None for r in expected)  # 127.0.0.1 has all its ports in extraports


def test_the_new_columns_on_a_real_service(reports):
    """run id, nmap's start and end of the host and the service's CPEs (OpenSSH on 127.0.0.2:2222). The host is in
    shard-a (starttime 1795255772, 10:09:32) and shard-b (1795255773-1795255779): the earliest start, the latest end."""
    out_dir, _, _ = reports
    rows = json.loads((out_dir / "merged.json").read_text())
    ssh = next(r for r in rows if (r["address"], r["port"]) == ("127.0.0.2", 2222) and r["product"] == "OpenSSH")
    assert ssh["run_id"] == "t-merge"
    assert (ssh["scan_start"], ssh["scan_end"]) == ("2026-11-21T10:09:32Z", "2026-11-21T10:09:39Z")
    assert ssh["cpe"] == ["cpe:/a:openbsd:openssh:9.2p1", "cpe:/o:linux:linux_kernel"]
    with open(out_dir / "merged.csv", newline="") as f:
        line = next(r for r in csv.DictReader(f) if (r["address"], r["port"]) == ("127.0.0.2", "2222"))
    assert line["cpe"] == "cpe:/a:openbsd:openssh:9.2p1 cpe:/o:linux:linux_kernel"
    assert (line["scan_start"], line["scan_end"], line["run_id"]) == ("2026-11-21T10:09:32Z", "2026-11-21T10:09:39Z",
                                                                      "t-merge")


def test_identified_rule_on_real_services():
    services = {}
    for path in COMPLETE:
        for host in complete_hosts(path):
            for port in host.iterfind("ports/port"):
                service = port.find("service")
                if port.find("state").get("state") == "open" and service is not None:
                    services[(address(host), port.get("portid"))] = dict(service.attrib)
    identified = {k for k, s in services.items() if report.is_identified(s)}
    # probed matches: ssh (hard), http, ftp (vsftpd, and a soft match without product)
    assert {services[k]["name"] for k in identified} == {"ssh", "http", "ftp"}
    assert all(services[k]["method"] == "probed" for k in identified)
    assert any(not services[k].get("product") for k in identified)  # soft match counts
    refused = {services[k]["name"] for k in set(services) - identified}
    assert {"tcpwrapped", "unknown", "waste"} <= refused  # wrapped, unrecognised, silent port guess
    probed_ssh = next(s for s in services.values() if s["name"] == "ssh")
    assert not report.is_identified({**probed_ssh, "method": "table"})
    assert not report.is_identified({**probed_ssh, "name": "ssh?"})
    assert not report.is_identified(None)


def test_summary_counts_and_shard_times(reports):
    out_dir, result, summary = reports
    rows = expected_rows(out_dir / "merged.xml")
    open_rows = [r for r in rows if r["state"] == "open"]
    assert summary["open_ports"] == len(open_rows)
    ident = [(r["address"], r["port"]) for r in open_rows if r["identified"]]
    unident = [(r["address"], r["port"]) for r in open_rows if not r["identified"]]
    assert summary["identified"]["count"] == len(ident) >= 1
    assert [(s["address"], s["port"]) for s in summary["identified"]["services"]] == ident
    assert summary["unidentified"]["count"] == len(unident) >= 1
    assert [(s["address"], s["port"]) for s in summary["unidentified"]["services"]] == unident
    assert summary["hosts"] == {"up": result.hosts_up, "down": result.hosts_down,
                                "total": result.hosts_total}
    by_label = {s["label"]: s for s in summary["shards"]}
    assert set(by_label) == {p.parent.name for p in ALL}
    for path in ALL:
        stats = runstats(path)
        elapsed = float(stats[0].get("elapsed")) if stats else None
        assert by_label[path.parent.name]["elapsed"] == elapsed
        assert by_label[path.parent.name]["status"] == ("complete" if stats else "truncated")
    assert json.loads((out_dir / "summary.json").read_text()) == summary
    text = report.format_summary(summary)
    for path in ALL:
        assert path.parent.name in text
    assert f"open ports: {len(open_rows)}" in text


def test_html_reports_are_produced(reports):
    """merged-nmap.html: nmap.xsl's rendering, every host; merged.html: scanfleet's page, every open port."""
    out_dir, _, summary = reports
    html = (out_dir / "merged-nmap.html").read_text()
    assert summary["files"]["nmap_html"] == "merged-nmap.html"
    assert "<html" in html.lower()
    for host in ET.parse(out_dir / "merged.xml").getroot().findall("host"):
        assert address(host) in html
    assert summary["files"]["html"] == "merged.html"
    page = (out_dir / "merged.html").read_text()
    for row in expected_rows(out_dir / "merged.xml"):
        if row["state"] == "open":
            assert f"{row['address']}:{row['port']}/{row['protocol']}" in page


# ---- command line --------------------------------------------------------------------------------

def test_cli_merge_then_summary(tmp_path, capsys, nmap_dtd, nmap_xsl):
    out_dir = tmp_path / "out"
    rc = cli.main(["merge", "shards", "--out", str(out_dir), "--label", f"web={SHARD_B}",
                   *map(str, [SHARD_A, SHARD_B, SHARD_C])])
    printed = capsys.readouterr().out
    assert rc == 0
    for name in ("merged.xml", "merged.json", "merged.csv", "summary.json"):
        assert (out_dir / name).is_file(), name
    assert (out_dir / "merged.html").is_file() and (out_dir / "merged-nmap.html").is_file()
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["run_id"] == "out"  # no --run-id, no state.json: the directory's name
    assert [s["label"] for s in summary["shards"]] == ["shard-a", "web", "shard-c"]
    assert summary["validated"] is True
    assert cli.main(["merge", "summary", str(out_dir)]) == 0
    assert capsys.readouterr().out == printed
    assert "web" in printed and "hosts:" in printed


def test_cli_merge_with_truncated_shard_exits_1(tmp_path, capsys):
    rc = cli.main(["merge", "shards", "--out", str(tmp_path / "out"), str(SHARD_A), str(KILLED)])
    printed = capsys.readouterr().out
    assert rc == 1
    for addr in (address(h) for h in complete_hosts(KILLED)):
        assert addr in printed  # the fully reported hosts of the truncated shard are listed


def test_cli_bad_input_exits_2_naming_the_file(tmp_path, capsys):
    bad = tmp_path / "shard-x" / "scan.xml"
    bad.parent.mkdir()
    bad.write_text("Nmap scan report for 127.0.0.1\n")
    rc = cli.main(["merge", "shards", "--out", str(tmp_path / "out"), str(SHARD_A), str(bad)])
    err = capsys.readouterr().err
    assert rc == 2
    assert str(bad) in err and "error" in err
    assert not (tmp_path / "out" / "merged.xml").exists()
    assert cli.main(["merge", "summary", str(tmp_path / "out")]) == 2
    assert "summary.json" in capsys.readouterr().err


# ---- memory --------------------------------------------------------------------------------------

def _big_input(path: Path, hosts: int) -> int:
    """A shard file of HOSTS copies of a real host of shard-b (distinct addresses), streamed out."""
    text = SHARD_B.read_text()
    first = text.index("<host ")
    host = text[first:text.index("</host>", first) + len("</host>\n")]
    head, tail = text[:first], text[text.index("<runstats>"):]
    tail = re.sub(r'<hosts up="\d+" down="\d+" total="\d+"/>',
                  f'<hosts up="{hosts}" down="0" total="{hosts}"/>', tail)
    base = int(ipaddress.ip_address("127.64.0.0"))
    with open(path, "w") as f:
        f.write(head)
        for i in range(hosts):
            f.write(host.replace('addr="127.0.0.2"', f'addr="{ipaddress.ip_address(base + i)}"'))
        f.write(tail)
    return path.stat().st_size


def _peak(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_merge_memory_does_not_grow_with_the_input(tmp_path):
    small, large = tmp_path / "small" / "scan.xml", tmp_path / "large" / "scan.xml"
    small.parent.mkdir()
    large.parent.mkdir()
    _big_input(small, 200)
    size_large = _big_input(large, 1200)
    peak_small = _peak(lambda: merge.merge([small], tmp_path / "m1.xml"))
    peak_large = _peak(lambda: merge.merge([large], tmp_path / "m2.xml"))
    assert len(ET.parse(tmp_path / "m2.xml").getroot().findall("host")) == 1200
    # Per extra host, only the address bookkeeping may grow (a set entry and a list entry, about
    # 120 bytes), never the host itself (about 8 kB once parsed): 1000 more hosts, < 300 kB more.
    per_host = 300
    assert peak_large - peak_small < per_host * 1000, (peak_small, peak_large)
    assert peak_large < size_large / 2
    # The bound is meaningful: holding the parsed hosts breaks it tenfold.
    whole = _peak(lambda: ET.parse(large))
    assert whole - peak_small > 10 * per_host * 1000


def test_summary_lists_are_bounded_but_counts_are_complete(tmp_path, monkeypatch):
    """The summary counts every open service but lists at most SUMMARY_LIST_LIMIT of each kind."""
    monkeypatch.setattr(report, "SUMMARY_LIST_LIMIT", 1)
    out = tmp_path / "out"
    inputs = [FIXTURES / "shard-a" / "scan.xml", FIXTURES / "shard-b" / "scan.xml", FIXTURES / "shard-c" / "scan.xml"]
    result = merge.merge(inputs, tmp_path / "merged.xml")
    summary = report.write_reports(tmp_path / "merged.xml", out, result.to_dict())
    rows = [r for r in report.iter_rows(tmp_path / "merged.xml") if r["state"] == "open"]
    for kind, flag in (("identified", True), ("unidentified", False)):
        expected = [r for r in rows if bool(r["identified"]) is flag]
        assert summary[kind]["count"] == len(expected)
        assert sum(summary[kind]["by_service"].values()) == len(expected)
        assert len(summary[kind]["services"]) == min(1, len(expected))
    assert "more (merged.csv has them all)" in report.format_summary(summary)
