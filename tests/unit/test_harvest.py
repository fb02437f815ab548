"""scanfleet.probes.harvest on real nmap output: tests/fixtures/probes/harvest/ (make_harvest.sh: Debian's
nats-server, prometheus-node-exporter, prometheus-blackbox-exporter and beanstalkd, two instances each, scanned
by stock nmap 7.93) and tests/fixtures/xml/shard-c/scan.xml (a listeners.py banner)."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from scanfleet import ScanfleetError, cli
from scanfleet.probes import harvest as hv
from scanfleet.probes import merge, parse_rules, parse_rules_file, precheck_rules, read_text, validate_with_nmap
from scanfleet.probes.check import compile_regex
from scanfleet.probes.parsing import parse_match
from tests.conftest import ROOT, nmap_source_tree
from tests.unit.test_adapters import env
from tests.unit.test_probes import nmap_ns  # noqa: F401 - the fixture: stock nmap in a network namespace

FIXTURES = ROOT / "tests" / "fixtures" / "probes" / "harvest"
SCAN = FIXTURES / "scan.xml"
SCAN_NMAP = FIXTURES / "scan.nmap"
SCAN_AFTER = FIXTURES / "scan-after.xml"
SHARD_C = ROOT / "tests" / "fixtures" / "xml" / "shard-c" / "scan.xml"

# The drafts for the fixture, in rank order (most ports first, then the NULL probe first, then by probe).
EXPECTED = [
    ("GenericLines", ["127.0.0.2:9110", "127.0.0.2:9115", "127.0.0.3:9110", "127.0.0.3:9115"],
     r"softmatch http m|^HTTP/1\.[01] 400 (?:[^\r\n]*\r\n)*?\r\n400 Bad Request|s"),
    ("GetRequest", ["127.0.0.2:9115", "127.0.0.3:9115"],
     r"match http m|^HTTP/1\.[01] 200 .*?<title>Blackbox Exporter</title>|s p/Blackbox Exporter/"),
    ("GetRequest", ["127.0.0.2:9110", "127.0.0.3:9110"],
     r"match http m|^HTTP/1\.[01] 200 .*?<title>Node Exporter</title>|s p/Node Exporter/"),
    ("NULL", ["127.0.0.2:4222", "127.0.0.3:4222"],
     r'match vrml-multi-use m|^INFO \{"server_id":"[^"\n\r]+","server_name":"[^"\n\r]+","version":"([\d.]+[a-z]?)"|s'
     r" v/$1/"),
    ("GenericLines", ["127.0.0.2:11300", "127.0.0.3:11300"], r"match FILLME m|^UNKNOWN_COMMAND\r\n|s"),
]


def servicefps(path: Path) -> dict[str, str]:
    """address:port -> servicefp attribute, read independently of the module."""
    out = {}
    for host in ET.parse(path).getroot().iter("host"):
        addr = host.find("address").get("addr")  # type: ignore[union-attr]
        for port in host.iter("port"):
            svc = port.find("service")
            if svc is not None and svc.get("servicefp"):
                out[f"{addr}:{port.get('portid')}"] = svc.get("servicefp")
    return out


@pytest.fixture(scope="module")
def result() -> hv.Harvest:
    return hv.harvest(SCAN)


# --------------------------------------------------------------------------------------------------
# Decoding


def test_decode_real_fingerprints_to_their_recorded_lengths() -> None:
    fps = servicefps(SCAN)
    assert sorted(fps) == ["127.0.0.2:11300", "127.0.0.2:4222", "127.0.0.2:9110", "127.0.0.2:9115",
                           "127.0.0.3:11300", "127.0.0.3:4222", "127.0.0.3:9110", "127.0.0.3:9115"]
    for where, text in fps.items():
        fp = hv.decode_fingerprint(text)
        assert fp.port == int(where.split(":")[1]) and fp.protocol == "TCP"
        assert fp.fields["V"] == "7.93" and fp.fields["P"] == "x86_64-pc-linux-gnu"
        # every escape decodes to one byte: the decoded length is nmap's HEXLEN
        assert [len(r.data) for r in fp.replies] == [r.length for r in fp.replies], where
        assert fp.replies and not any(r.truncated for r in fp.replies)


def test_decode_nats_greeting() -> None:
    fp = hv.decode_fingerprint(servicefps(SCAN)["127.0.0.2:4222"])
    assert [r.probe for r in fp.replies][:2] == ["NULL", "GenericLines"]
    data = fp.replies[0].data
    assert data.startswith(b'INFO {"server_id":"N') and data.endswith(b'"client_ip":"127.0.0.2"} \r\n')
    info = json.loads(data[len(b"INFO "):].strip())
    assert info["version"] == "2.9.10" and info["host"] == "127.0.0.2" and info["server_name"] == info["server_id"]


def test_decode_escapes_of_a_real_reply() -> None:
    # \x20, \", \. (nmap escapes regex metacharacters), \r\n; and \0 / \\ as nmap writes them
    assert hv.unescape_reply(r'INFO\x20{\"version\":\"2\.9\.10\"}\x20\r\n') == b'INFO {"version":"2.9.10"} \r\n'
    assert hv.unescape_reply(r"a\0b\x00\\\(\)") == b"a\0b\0\\()"


def test_decode_the_wrapped_normal_output() -> None:
    """scan.nmap (nmap -oN of the same scan) has the fingerprints wrapped on SF: lines, cut anywhere."""
    text = SCAN_NMAP.read_text()
    blocks = re.findall(r"^(SF-Port\d+-TCP:.*?\n(?:SF:.*\n)*)", text, re.M)
    assert len(blocks) == 8
    assert all(len(b.splitlines()) > 1 for b in blocks)  # every one is wrapped
    assert re.search(r"\\x\nSF:", text) and re.search(r"\\\nSF:", text)  # some wraps cut an escape in two
    for block in blocks:
        fp = hv.decode_fingerprint(block)
        assert [len(r.data) for r in fp.replies] == [r.length for r in fp.replies]
    by_port = {hv.decode_fingerprint(b).port: hv.decode_fingerprint(b) for b in blocks}
    assert by_port[11300].replies[0].data == b"UNKNOWN_COMMAND\r\nUNKNOWN_COMMAND\r\n"


def test_decode_shard_c_banner() -> None:
    fp = hv.decode_fingerprint(servicefps(SHARD_C)["127.0.0.4:41414"])
    assert fp.replies == (hv.Reply("NULL", 0x22, b"SCANFLEET-FIXTURE-PROTOCOL hello\r\n"),)


def test_decode_refuses_what_is_no_fingerprint() -> None:
    with pytest.raises(ScanfleetError, match="not an nmap service fingerprint"):
        hv.decode_fingerprint("SF:r(NULL,2,\"a\")")
    with pytest.raises(ScanfleetError, match=r"malformed reply entry.*port 80"):
        hv.decode_fingerprint('SF-Port80-TCP:V=7.93%r(NULL,"x")')


def test_cut_fingerprint_is_truncated() -> None:
    fp = hv.decode_fingerprint('SF-Port80-TCP:V=7.93%r(NULL,10,"abc\\x2')
    assert fp.replies[0].data == b"abc" and fp.replies[0].truncated


# --------------------------------------------------------------------------------------------------
# Grouping and drafts


def test_groups_rank_and_split(result: hv.Harvest) -> None:
    assert len(result.unnamed) == 8
    got = [(d.group.probe, [m.where for m in d.group.members]) for d in result.drafts]
    assert got == [(probe, ports) for probe, ports, _ in EXPECTED]
    parent = result.drafts[0].group
    assert [d.group.parent for d in result.drafts] == [None, parent, parent, None, None]


def test_near_equal_definition(result: hv.Harvest) -> None:
    nats = result.drafts[3].group
    a, b = nats.replies
    assert a != b  # server_id, server_name, host, client_ip differ
    assert hv._near_equal(hv.tokens(a), hv.tokens(b))
    node, blackbox = result.drafts[2].group.replies[0], result.drafts[1].group.replies[0]
    assert not hv._near_equal(hv.tokens(node), hv.tokens(blackbox))
    # two node exporters differ in their Date header only: one token each
    n1, n2 = result.drafts[2].group.replies
    assert n1 != n2 and hv._near_equal(hv.tokens(n1), hv.tokens(n2))


def test_drafts_are_exactly(result: hv.Harvest) -> None:
    assert [d.line for d in result.drafts] == [line for _, _, line in EXPECTED]
    assert [d.status for d in result.drafts] == ["ok"] * 5
    nats = result.drafts[3]
    assert nats.service_from.startswith("the port's nmap-services name")
    assert result.drafts[4].service == hv.PLACEHOLDER


def _all_replies(result: hv.Harvest) -> list[tuple[str, str, bytes]]:
    return [(p.where, r.probe, r.data) for p in result.unnamed for r in p.fingerprint.replies]  # type: ignore[union-attr]


def test_each_draft_matches_its_group_and_nothing_else(result: hv.Harvest) -> None:
    """Python re with nmap's flags (s: DOTALL; i would be IGNORECASE), on bytes like nmap. PCRE and re agree on
    these patterns: literals, [^...] classes, \\d, lazy groups; no $ (PCRE_DOLLAR_ENDONLY is where they differ)."""
    for d in result.drafts:
        regex = re.compile(parse_match(d.line, hv._origin()).pattern.encode(), re.S)
        mine = {m.where for m in d.group.members}
        for data in d.group.replies:
            assert regex.match(data), d.line
        for where, probe, data in _all_replies(result):
            if where not in mine:
                assert not regex.match(data), (d.line, where, probe)
        # never anchored on a varying part: no id, address or date of any member appears in the pattern
        for toks in d.group.templates:
            for tok, fixed in zip(toks, hv.template(d.group), strict=True):
                if fixed is None and len(tok) > 3:
                    assert re.escape(tok.decode()) not in d.pattern and tok.decode() not in d.pattern


def test_drafts_pass_the_probes_checker(result: hv.Harvest, tmp_path: Path) -> None:
    out = tmp_path / "harvest.probes"
    hv.write_harvest(result, out)
    rf = parse_rules_file(out)
    assert [p for p in precheck_rules(rf) if p.severity == "error"] == []
    lines = [ln.content for ln in rf.lines() if ln.kind == "match"]
    assert sorted(lines) == sorted(line for _, _, line in EXPECTED)
    heads = [ln.content for ln in rf.lines() if ln.kind == "probe"]
    assert heads == ["Probe TCP GenericLines", "Probe TCP GetRequest"]
    text = out.read_text()
    assert "# Draft 1: 2 port(s): 127.0.0.2:4222, 127.0.0.3:4222" in text  # NULL probe first in the file
    assert '#   INFO {"server_id":"N' in text
    assert "FILLME (placeholder: replace FILLME" in text


def test_nmap_loads_the_drafts(result: hv.Harvest, tmp_path: Path, nmap_ns: str) -> None:  # noqa: F811
    """Stock nmap 7.93 loads the stock file merged with the drafts (PCRE compiles every draft)."""
    rules = tmp_path / "harvest.probes"
    hv.write_harvest(result, rules)
    stock = nmap_source_tree("7.93") / "nmap-service-probes"
    merged = merge(read_text(stock), [parse_rules_file(rules)], stock_path=str(stock))
    path = tmp_path / "nmap-service-probes"
    path.write_text(merged.text, encoding="utf-8", errors="surrogateescape")
    validate_with_nmap(path, nmap_ns, merged.origins)


# --------------------------------------------------------------------------------------------------
# The three checks


def test_empty_match_is_refused(result: hv.Harvest) -> None:
    d = dataclasses.replace(result.drafts[4], pattern="(?:UNKNOWN_COMMAND)?")
    error, matched = hv.check_draft(d, [])
    assert error is not None and "empty string" in error and matched is None


def test_checker_error_is_reported(result: hv.Harvest) -> None:
    d = dataclasses.replace(result.drafts[4], pattern="^UNKNOWN(_COMMAND")
    error, _ = hv.check_draft(d, [])
    assert error is not None and error.startswith("the probes checker rejects it") and "compile" in error


def test_draft_must_match_its_own_group(result: hv.Harvest) -> None:
    d = dataclasses.replace(result.drafts[4], pattern="^UNKNOWN_COMMANDS")
    error, _ = hv.check_draft(d, [])
    assert error is not None and "does not match its own group's reply at 127.0.0.2:11300, 127.0.0.3:11300" in error


def test_draft_matching_another_reply_is_narrowed(result: hv.Harvest) -> None:
    """Real replies: beanstalkd on .2 (GenericLines: UNKNOWN_COMMAND twice) against beanstalkd on .3 answering
    Help with one UNKNOWN_COMMAND line: the first draft matches that reply, the longer one does not."""
    ports = {p.where: p for p in result.unnamed}
    mine = ports["127.0.0.2:11300"]
    theirs = ports["127.0.0.3:11300"]
    help_only = dataclasses.replace(theirs, fingerprint=dataclasses.replace(
        theirs.fingerprint, replies=tuple(r for r in theirs.fingerprint.replies if r.probe == "Help")))  # type: ignore[arg-type]
    assert help_only.fingerprint.replies[0].data == b"UNKNOWN_COMMAND\r\n"  # type: ignore[union-attr]
    groups = hv.group_replies([mine])
    [d] = hv.harvest_drafts(groups, [mine, help_only])
    assert d.status == "narrowed"
    assert d.line == r"match FILLME m|^UNKNOWN_COMMAND\r\nUNKNOWN_COMMAND\r\n|s"
    assert d.notes == [r"narrowed: the shorter draft m|^UNKNOWN_COMMAND\r\n| matched 127.0.0.3:11300 (Help reply)"]


def test_draft_matching_another_reply_whatever_its_length_is_dropped(result: hv.Harvest, tmp_path: Path) -> None:
    """Only .2's beanstalkd is harvested while .3's (the same software) is another service: dropped, and said."""
    ports = {p.where: p for p in result.unnamed}
    groups = hv.group_replies([ports["127.0.0.2:11300"]])
    [d] = hv.harvest_drafts(groups, [ports["127.0.0.2:11300"], ports["127.0.0.3:11300"]])
    assert d.status == "dropped"
    assert d.notes[-1] == ("dropped: it matches the reply of 127.0.0.3:11300 (GenericLines reply), even with its "
                           "longest anchor")
    h = hv.Harvest(SCAN, [], [ports["127.0.0.2:11300"]], [d])
    text = hv.render(h)
    assert "# --- Dropped drafts (no rule written) ---" in text
    assert not [ln for ln in text.splitlines() if ln.startswith(("match", "softmatch"))]
    assert parse_rules(text).sections[0].matches == []


def test_identified_services_without_reply_are_counted(result: hv.Harvest) -> None:
    assert result.unchecked_identified == 1  # 127.0.0.4:2222 OpenSSH: nmap keeps no reply of it
    assert "1 identified service(s) could not be\n# checked" in hv.render(result)


# --------------------------------------------------------------------------------------------------
# Command line and the role's step


def run_dir(tmp_path: Path) -> Path:
    d = tmp_path / "results" / "demo"
    d.mkdir(parents=True)
    shutil.copy(SCAN, d / "merged.xml")
    return d


def test_cli_writes_run_dir_harvest_and_is_idempotent(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = run_dir(tmp_path)
    assert cli.main(["probes", "harvest", str(d)]) == 0
    out = capsys.readouterr().out
    assert f"{d / 'harvest.probes'}: written" in out and "5 group(s)" in out
    first = (d / "harvest.probes").read_text()
    assert cli.main(["probes", "harvest", str(d)]) == 0
    assert f"{d / 'harvest.probes'}: unchanged" in capsys.readouterr().out
    assert (d / "harvest.probes").read_text() == first
    assert cli.main(["probes", "check", str(d / "harvest.probes")]) == 0


def test_cli_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_file = tmp_path / "h.probes"
    assert cli.main(["probes", "harvest", str(SCAN), "--out", str(out_file), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["unnamed_ports"] == 8 and data["unchecked_identified"] == 1
    assert [g["rule"] for g in data["groups"]] == [line for _, _, line in EXPECTED]
    assert data["groups"][3]["ports"] == ["127.0.0.2:4222", "127.0.0.3:4222"]
    assert data["groups"][3]["reply_excerpt"].startswith('INFO {"server_id":"N')
    assert out_file.is_file()


def test_cli_names_a_bad_source(tmp_path: Path) -> None:
    with pytest.raises(ScanfleetError, match=r"no merged\.xml in this directory"):
        hv.harvest(tmp_path)
    with pytest.raises(ScanfleetError, match="no such run directory or nmap XML file"):
        hv.harvest(tmp_path / "nope.xml")
    bad = tmp_path / "bad.xml"
    bad.write_text("not xml")
    with pytest.raises(ScanfleetError, match="not readable as nmap XML"):
        hv.harvest(bad)


def test_harvest_run_check_mode_writes_nothing(tmp_path: Path) -> None:
    d = run_dir(tmp_path)
    result = hv.harvest_run(tmp_path / "results", "demo", write=False)
    assert result["changed"] is True and not (d / "harvest.probes").exists()
    assert hv.harvest_run(tmp_path / "results", "demo")["changed"] is True
    assert hv.harvest_run(tmp_path / "results", "demo")["changed"] is False
    assert (result["drafts"], result["dropped"], result["unnamed"]) == (5, 0, 8)
    assert hv.harvest_run(tmp_path / "results", "other")["changed"] is False


def test_shard_c_banner_draft() -> None:
    h = hv.harvest(SHARD_C)
    assert [d.line for d in h.drafts] == [r"match FILLME m|^SCANFLEET-FIXTURE-PROTOCOL hello\r\n|s"]
    assert compile_regex(parse_match(h.drafts[0].line, hv._origin())).match(b"SCANFLEET-FIXTURE-PROTOCOL hello\r\n")


def test_module_check_mode_and_idempotence(tmp_path: Path) -> None:
    """The role's step (module scan_harvest, run by ansible): check mode writes nothing; the second run is ok."""
    d = run_dir(tmp_path)
    args = json.dumps({"results_dir": str(tmp_path / "results"), "run_id": "demo"})

    def run(*extra: str) -> str:
        result = subprocess.run(["ansible", "localhost", "-c", "local", "-m", "scanfleet.fleet.scan_harvest", "-a",
                                 args, "-e", f"ansible_python_interpreter={sys.executable}", *extra],
                                capture_output=True, text=True, cwd=ROOT, env=env(), check=False, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    assert "CHANGED" in run("--check") and not (d / "harvest.probes").exists()
    assert "CHANGED" in run() and (d / "harvest.probes").is_file()
    assert "SUCCESS" in run() and (d / "harvest.probes").read_text() == hv.render(hv.harvest(d))


# --------------------------------------------------------------------------------------------------
# The loop, run by make_harvest.sh with stock nmap 7.93: harvest, review (two names), merge, scan again

REVIEWED = {"FILLME": "beanstalkd", "vrml-multi-use": "nats"}  # what make_harvest.sh's reviewer step renames


def open_services(path: Path) -> dict[str, dict[str, str]]:
    out = {}
    for host in ET.parse(path).getroot().iter("host"):
        addr = host.find("address").get("addr")  # type: ignore[union-attr]
        for port in host.iter("port"):
            state, svc = port.find("state"), port.find("service")
            if state is not None and state.get("state") == "open" and svc is not None:
                out[f"{addr}:{port.get('portid')}"] = dict(svc.attrib)
    return out


def test_fixture_harvest_is_what_the_module_drafts_now() -> None:
    """harvest.probes of the generator (drafted from its own scan.xml) holds exactly today's drafts."""
    committed = parse_rules_file(FIXTURES / "harvest.probes")
    assert [ln.content for ln in committed.lines() if ln.kind == "match"] == \
        [d.line for d in sorted(hv.harvest(SCAN).drafts, key=lambda d: (d.group.probe != "NULL", d.group.probe))]
    reviewed = (FIXTURES / "reviewed.probes").read_text()
    expected = (FIXTURES / "harvest.probes").read_text()
    for old, new in REVIEWED.items():
        expected = expected.replace(f"\nmatch {old} ", f"\nmatch {new} ")
    assert reviewed == expected


def test_after_the_loop_every_harvested_port_is_named_and_nothing_else_changed() -> None:
    before, after = open_services(SCAN), open_services(SCAN_AFTER)
    assert sorted(before) == sorted(after)
    named = {w: (s["name"], s.get("product"), s.get("version")) for w, s in after.items()}
    for host in ("127.0.0.2", "127.0.0.3"):
        assert named[f"{host}:4222"] == ("nats", None, "2.9.10")
        assert named[f"{host}:9110"] == ("http", "Node Exporter", None)
        assert named[f"{host}:9115"] == ("http", "Blackbox Exporter", None)
        assert named[f"{host}:11300"] == ("beanstalkd", None, None)
    for where, svc in after.items():
        assert svc["method"] == "probed" and "servicefp" not in svc, where  # a hard match: no fingerprint left
    assert after["127.0.0.4:2222"] == before["127.0.0.4:2222"]  # named before (OpenSSH): unchanged


def test_after_the_loop_each_is_named_at_the_first_probe_with_a_reply() -> None:
    """nmap --version-trace of the second scan: the probe whose rule named each port is the probe of its draft;
    the exporters first get the GenericLines softmatch (the first probe with a reply), then GetRequest names them."""
    trace = (FIXTURES / "trace-after.txt").read_text()
    hits: dict[str, list[tuple[str, str]]] = {}
    for line in trace.splitlines():
        m = re.search(r"Service scan (\w+ )?match \(Probe (\w+) matched with (\w+) line \d+\): ([\d.]+:\d+) is", line)
        assert m, line
        hits.setdefault(m.group(4), []).append((m.group(1) or "", m.group(2)))
    for host in ("127.0.0.2", "127.0.0.3"):
        assert [p for _, p in hits[f"{host}:4222"]] == ["NULL"]
        assert [p for _, p in hits[f"{host}:11300"]] == ["GenericLines"]
        for port in (9110, 9115):
            assert [p for _, p in hits[f"{host}:{port}"]] == ["GenericLines", "GetRequest"]
            assert hits[f"{host}:{port}"][0][0].startswith("soft")
