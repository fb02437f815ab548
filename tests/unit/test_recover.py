"""Two-pass recovery of slow banners (scanfleet.recover): which ports pass 2 scans, its jobs, and its merge.

The fixtures are real nmap XML (tests/fixtures/xml/make_recover.sh: Debian's nmap 7.93 on 127.0.0.21-22 in a private
network namespace): a fast pass (300 ms waits) that leaves two Exim servers with a 3 s greeting pause as 'smtp'
from the port table, and the pass-2 jobs the planner planned from it, run with the NULL probe alone and a 6 s wait.
"""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from scanfleet import ScanfleetError, cli, collect, files, merge, recover
from scanfleet import plan as runplan

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "xml"
RECOVER = FIXTURES / "recover"
PASS1 = [recover.Pass1Input("scanner-a", "pass1-a", RECOVER / "pass1-a" / "scan.xml"),
         recover.Pass1Input("scanner-b", "pass1-b", RECOVER / "pass1-b" / "scan.xml")]
PASS2 = [("pass2-001", RECOVER / "pass2-001" / "scan.xml"), ("pass2-002", RECOVER / "pass2-002" / "scan.xml")]
A, B = "127.0.0.21", "127.0.0.22"


def services(path: Path) -> dict[tuple[str, str, int], ET.Element]:
    """(address, protocol, port) -> <port> of every host of PATH; every port must appear once."""
    out: dict[tuple[str, str, int], ET.Element] = {}
    for host in ET.parse(path).getroot().iter("host"):
        address = host.find("address").get("addr")
        for port in host.iter("port"):
            key = (address, port.get("protocol"), int(port.get("portid")))
            assert key not in out, f"{key} twice in {path}"
            out[key] = port
    return out


def service(port: ET.Element) -> dict[str, str]:
    return dict(port.find("service").attrib)


def test_fixtures_are_real_nmap_runs():
    for path in [*(i.xml for i in PASS1), *(p for _, p in PASS2)]:
        root = ET.parse(path).getroot()
        assert root.get("scanner") == "nmap" and root.get("version") == "7.93"
        assert root.find("runstats/finished").get("exit") == "success"
    # pass 2 ran the NULL probe alone: one probe in the fingerprints of the replies it did not match
    assert "versiondb null.probes" in ET.parse(PASS2[0][1]).getroot().get("args")


def test_select_takes_the_open_tcp_ports_not_named_fully():
    selection = recover.select(PASS1)
    found = {c.key: (c.scanner, c.reason) for c in selection.candidates}
    assert found == {
        (A, "tcp", 25): ("scanner-a", "table"),  # the Exim behind its greeting pause: 'smtp' from the port table
        (A, "tcp", 1337): ("scanner-a", "table"),  # silent
        (A, "tcp", 2121): ("scanner-a", "softmatch"),  # 'ftp' from a softmatch, no product
        (A, "tcp", 7001): ("scanner-a", "tcpwrapped"),
        (B, "tcp", 25): ("scanner-b", "table"),
        (B, "tcp", 587): ("scanner-b", "table"),  # its banner comes after the pause too, unknown to nmap
    }
    # named fully in pass 1, not selected: OpenSSH on A:22, SimpleHTTPServer on B:8080 (closed ports never are)
    assert selection.open_ports == 8
    assert selection.reasons() == {"none": 0, "table": 4, "tcpwrapped": 1, "unknown": 0, "softmatch": 1}


def test_select_reasons_on_an_unrecognised_banner_and_a_softmatch():
    """shard-c (stock nmap, --version-intensity 0): a silent port, a softmatch, a banner nmap does not know."""
    shard_c = recover.Pass1Input("s", "shard-c", FIXTURES / "shard-c" / "scan.xml")
    reasons = {c.port: c.reason for c in recover.select([shard_c]).candidates}
    assert reasons == {1337: "table", 7002: "softmatch", 41414: "unknown"}  # 41414: name 'unknown' with a servicefp


def test_a_port_that_any_input_names_is_not_selected_and_the_first_input_scans_it():
    """shard-a (no -sV) reports 127.0.0.2's 2222 and 8080 from the port table, shard-b names them: not selected,
    in either order; 8000, open in shard-a only, is selected for shard-a's scanner."""
    a = recover.Pass1Input("scanner-a", "shard-a", FIXTURES / "shard-a" / "scan.xml")
    b = recover.Pass1Input("scanner-b", "shard-b", FIXTURES / "shard-b" / "scan.xml")
    for inputs in ([a, b], [b, a]):
        found = {c.key: c.scanner for c in recover.select(inputs).candidates}
        assert ("127.0.0.2", "tcp", 2222) not in found and ("127.0.0.2", "tcp", 8080) not in found
        assert found[("127.0.0.2", "tcp", 8000)] == "scanner-a"
    twice = recover.select([a, a]).candidates
    assert len(twice) == len({c.key for c in twice})


def test_select_refuses_a_missing_file(tmp_path):
    with pytest.raises(ScanfleetError, match=r"no such file.*scanner s, x"):
        recover.select([recover.Pass1Input("s", "x", tmp_path / "scan.xml")])


def test_the_fixture_jobs_are_what_the_planner_plans():
    jobs = recover.plan(recover.select(PASS1))
    recorded = json.loads((RECOVER / "jobs.json").read_text())
    assert [(j.id, j.host, j.hosts, j.nmap_ports) for j in jobs] == [
        ("pass2-001", "scanner-a", [A], "T:25,1337,2121,7001"),
        ("pass2-002", "scanner-b", [B], "T:25,587")]
    assert [j.to_dict() | {"created": 0} for j in jobs] == [j | {"created": 0} for j in recorded]
    for job in jobs:
        assert f"-p {job.nmap_ports} -iL {job.id}.targets" in ET.parse(dict(PASS2)[job.id]).getroot().get("args")
        assert (RECOVER / f"{job.id}.targets").read_text().split() == job.lines


def test_merge_replaces_the_ports_pass_2_named_and_keeps_the_others(tmp_path, nmap_dtd):
    out = tmp_path / "merged.xml"
    result = recover.merge(PASS1, PASS2, out, dtd=nmap_dtd)
    summary = result["recover"]
    assert summary["line"] == "pass 2 named 2 of 6 unnamed ports"
    assert (summary["named"], summary["ports"]) == (2, 6)
    assert {(n["address"], n["port"]) for n in summary["named_ports"]} == {(A, 25), (B, 25)}

    before = {**services(PASS1[0].xml), **{k: v for k, v in services(PASS1[1].xml).items() if k[0] == B}}
    merged = services(out)  # every port once
    assert set(merged) == set(before)
    for address, mail in ((A, "mail21.fixture.test"), (B, "mail22.fixture.test")):
        exim = service(merged[(address, "tcp", 25)])
        assert (exim["product"], exim["version"], exim["hostname"]) == ("Exim smtpd", "4.96", mail)
    for key, port in merged.items():
        if key[2] != 25:  # pass 2 did not name them: the pass-1 entries, unchanged
            assert ET.tostring(port) == ET.tostring(before[key]), key
    # e.g. B:587 keeps pass 1's table name, not pass 2's fingerprint of a banner nmap does not know
    assert "servicefp" not in service(merged[(B, "tcp", 587)])
    assert "GenericLines" in service(merged[(A, "tcp", 2121)])["servicefp"]  # pass 1's, not pass 2's NULL-only one
    labels = [o.text for o in ET.parse(out).getroot().iter("output")]
    assert any("pass2/pass2-001" in (text or "") for text in labels), labels


def test_a_pass_2_entry_of_a_port_not_selected_is_never_used(tmp_path):
    """A union job may probe a port on a host that did not need it: only the selected ports take pass 2's entry."""
    selection = recover.select(PASS1)
    only_b = recover.Selection([c for c in selection.candidates if c.address == B], selection.open_ports)
    out = tmp_path / "merged.xml"
    result = recover.merge(PASS1, PASS2, out, selection=only_b)
    assert result["recover"]["line"] == "pass 2 named 1 of 2 unnamed ports"
    merged = services(out)
    assert service(merged[(A, "tcp", 25)]) == {"name": "smtp", "method": "table", "conf": "3"}
    assert service(merged[(B, "tcp", 25)])["product"] == "Exim smtpd"


def test_what_pass_2_names():
    pass1 = services(PASS1[0].xml)
    pass2 = services(PASS2[0][1])
    exim = service(pass2[(A, "tcp", 25)])
    ftp_soft = service(pass1[(A, "tcp", 2121)])
    assert recover.pass2_names(service(pass1[(A, "tcp", 25)]), exim)  # table -> product
    assert recover.pass2_names(ftp_soft, exim)  # softmatch -> product
    assert recover.pass2_names(None, ftp_soft)  # nothing -> a name nmap matched
    assert recover.pass2_names(service(pass1[(A, "tcp", 1337)]), ftp_soft)  # table -> a name nmap matched
    assert not recover.pass2_names(ftp_soft, service(pass2[(A, "tcp", 2121)]))  # softmatch -> the same softmatch
    assert not recover.pass2_names(service(pass1[(A, "tcp", 7001)]), service(pass2[(A, "tcp", 7001)]))  # tcpwrapped
    assert not recover.pass2_names(service(pass1[(A, "tcp", 1337)]), service(pass2[(A, "tcp", 1337)]))  # silent
    for port in pass1.values():
        assert recover.named_fully(service(port)) == (merge.is_identified(service(port))
                                                       and "product" in service(port))


@pytest.mark.parametrize("value", [6000, 100, 300000])
def test_wait_environment(value):
    assert recover.wait_environment(value) == {"SCANFLEET_SERVICE_WAIT_MS": str(value)}


@pytest.mark.parametrize("value", [99, 300001, 0, -6000, "6000", 6000.0, True, None])
def test_a_bad_wait_is_refused(value):
    with pytest.raises(ScanfleetError, match=r"pass-2 banner wait .* from 100 to 300000; give e\.g\. 6000 "
                                             r"\(nmap_scan_recover_wait_ms\)"):
        recover.wait_environment(value)


def recorded_run(tmp_path) -> Path:
    """plan_run shards 127.0.0.21-22 over scanner-a and scanner-b as the fixtures' pass 1 ran; record_run records
    the fetched XML (the playbook's way); returns the run directory."""
    plan = runplan.build_plan(targets=["127.0.0.21-22"], scope=["127.0.0.0/24"], resolver={})
    planned = runplan.plan_run(results=tmp_path, run_id="r1", plan=plan, options=["-sV"],
                               weights={"scanner-a": 1, "scanner-b": 1}, available=["scanner-a", "scanner-b"],
                               unavailable={}, session="s", round_no=1, now=1.0)
    assert planned["new"] == ["001-scanner-a", "002-scanner-b"]
    outcomes = []
    for attempt_id, scanner, fixture in (("001-scanner-a", "scanner-a", PASS1[0].xml),
                                         ("002-scanner-b", "scanner-b", PASS1[1].xml)):
        target = tmp_path / "r1" / scanner / attempt_id / "scan.xml"
        target.parent.mkdir(parents=True)
        shutil.copy(fixture, target)
        outcomes.append({"id": attempt_id, "outcome": "finished", "files": {"scan.xml": files.sha256_file(target)}})
    collect.record_run(results=tmp_path, run_id="r1", outcomes=outcomes, session="s", now=2.0)
    return tmp_path / "r1"


def test_run_inputs_of_a_run_directory(tmp_path):
    """run_inputs gives each attempt's XML with the scanner that ran it, and select reads them."""
    inputs = recover.run_inputs(recorded_run(tmp_path))
    assert [(i.scanner, i.label, i.xml.name) for i in inputs] == [("scanner-a", "001-scanner-a", "scan.xml"),
                                                                   ("scanner-b", "002-scanner-b", "scan.xml")]
    assert recover.select(inputs).to_dict()["candidates"] == recover.select(PASS1).to_dict()["candidates"]
    with pytest.raises(ScanfleetError, match=r"state\.json: no such run state; give the run's directory"):
        recover.run_inputs(tmp_path)


def test_command_line_plan_and_merge(tmp_path, capsys):
    run_dir = recorded_run(tmp_path)
    assert cli.main(["recover", "plan", str(run_dir)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "pass 2: 6 ports of 8 open (4 table, 1 tcpwrapped, 1 softmatch) in 2 jobs",
        "pass2-001 scanner-a -p T:25,1337,2121,7001 -iL: 127.0.0.21",
        "pass2-002 scanner-b -p T:25,587 -iL: 127.0.0.22"]
    assert cli.main(["recover", "plan", str(run_dir), "--json"]) == 0
    planned = json.loads(capsys.readouterr().out)
    assert [job["nmap_ports"] for job in planned["jobs"]] == ["T:25,1337,2121,7001", "T:25,587"]
    out = tmp_path / "merged.xml"
    assert cli.main(["recover", "merge", str(run_dir), "--pass2", *(str(p) for _, p in PASS2), "-o", str(out)]) == 0
    assert capsys.readouterr().out == f"{out}: pass 2 named 2 of 6 unnamed ports\n"
    assert cli.main(["recover", "plan", str(tmp_path)]) == 2
    assert "scanfleet recover: error: " in capsys.readouterr().err
