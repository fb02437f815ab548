"""scanfleet.probes.harvest on the lab's real scan: tests/fixtures/probes/lab-harvest/.

before.xml is the merged XML of a distributed scan of the lab (targets 10.77.0.101-103, all 65535 ports, nmap
7.95 with the project's probes files) that left six ports unnamed: nats-server (:4222, an INFO {json} greeting
with a server_id and server_name drawn at each start and the client's address), tarantool (:3301, "Tarantool
2.6.0 (Binary) UUID" and a base64 salt drawn per connection) and beanstalkd (:11300, silent; UNKNOWN_COMMAND to
GenericLines), each on 10.77.0.102 and 10.77.0.103. after.xml is the same scan after
files/probes/learned.probes (the reviewed drafts) was provisioned. The per-host values checked against below
are read from the fixture's replies, not written out here.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from scanfleet import ScanfleetError, cli
from scanfleet import diff as sfdiff
from scanfleet.probes import harvest as hv
from scanfleet.probes import parse_rules_file
from scanfleet.probes.check import compile_regex
from scanfleet.probes.model import Match
from scanfleet.probes.parsing import parse_match
from tests.conftest import ROOT
from tests.unit.test_harvest import open_services, servicefps

LAB = ROOT / "tests" / "fixtures" / "probes" / "lab-harvest"
BEFORE = LAB / "before.xml"
AFTER = LAB / "after.xml"
LEARNED = ROOT / "files" / "probes" / "learned.probes"
HOSTS = ["10.77.0.102", "10.77.0.103"]
# port -> (the probe of its first reply, the service name the review gave it in learned.probes)
PORTS = {4222: ("NULL", "nats"), 3301: ("NULL", "tarantool"), 11300: ("GenericLines", "beanstalkd")}
NAMES = {port: name for port, (_, name) in PORTS.items()}
SIX = [f"{host}:{port}" for host in HOSTS for port in sorted(PORTS)]  # in address and port order


@pytest.fixture(scope="module")
def result() -> hv.Harvest:
    return hv.harvest(BEFORE)


def by_port(h: hv.Harvest) -> dict[int, hv.Draft]:
    drafts = {d.group.members[0].port: d for d in h.drafts}
    assert len(drafts) == len(h.drafts), [d.line for d in h.drafts]  # one draft per port number
    return drafts


def learned_rules() -> dict[str, tuple[str, Match]]:
    """service -> (probe name, the rule) of learned.probes, read with the project's parser."""
    out: dict[str, tuple[str, Match]] = {}
    for section in parse_rules_file(LEARNED).sections:
        probe = "NULL" if section.probe is None else section.probe.name
        for line in section.matches:
            assert isinstance(line.item, Match)
            assert line.item.service not in out, line.content
            out[line.item.service] = (probe, line.item)
    return out


def regex_of(d: hv.Draft) -> re.Pattern[bytes]:
    """The draft compiled as check_draft compiles it (Python re on bytes, nmap's flags)."""
    return compile_regex(parse_match(d.line, hv._origin()))


def replies_of(where: str) -> list[bytes]:
    """Every reply in before.xml's fingerprint of WHERE (address:port), decoded."""
    return [r.data for r in hv.decode_fingerprint(servicefps(BEFORE)[where]).replies]


def other_replies(mine: set[str]) -> list[tuple[str, bytes]]:
    """Every reply (any probe) of every fingerprinted port of before.xml but MINE, read independently of harvest."""
    return [(where, data) for where in servicefps(BEFORE) if where not in mine for data in replies_of(where)]


def greeting_parts(data: bytes) -> tuple[bytes, bytes, bytes]:
    """A Tarantool greeting's version, instance UUID and salt (two 64-byte lines: "Tarantool V (Binary) UUID")."""
    first, second = data[:64], data[64:128]
    words = first.split()
    assert words[0] == b"Tarantool" and words[2] == b"(Binary)" and first.endswith(b"\n"), data
    return words[1], words[3], second.strip()


def varying_values() -> dict[str, set[bytes]]:
    """The per-host values of the fixture's replies (every probe): nats ids and client addresses, Tarantool UUIDs
    and salts."""
    values: dict[str, set[bytes]] = {"server_id": set(), "server_name": set(), "client_ip": set(), "uuid": set(),
                                     "salt": set()}
    for host in HOSTS:
        for data in replies_of(f"{host}:4222"):
            info = json.loads(data[len(b"INFO "):data.index(b"\r\n")])
            for key in ("server_id", "server_name", "client_ip"):
                values[key].add(info[key].encode())
        for data in replies_of(f"{host}:3301"):
            _, uuid, salt = greeting_parts(data)
            values["uuid"].add(uuid)
            values["salt"].add(salt)
    return values


# --------------------------------------------------------------------------------------------------
# Groups and drafts


def test_three_groups_of_two_hosts(result: hv.Harvest) -> None:
    assert sorted(p.where for p in result.unnamed) == sorted(SIX)
    drafts = by_port(result)
    assert sorted(drafts) == sorted(PORTS)
    for port, d in drafts.items():
        assert [m.where for m in d.group.members] == [f"{host}:{port}" for host in HOSTS]
        assert d.group.probe == PORTS[port][0] and d.group.protocol == "TCP" and not d.group.ssl
        assert d.group.parent is None and d.status == "ok" and not d.soft and d.notes == []
    assert drafts[4222].fields == {"v": "$1"} and drafts[3301].fields == {"v": "$1"}
    assert drafts[11300].fields == {}
    # the names harvest guesses without --name: nmap-services' (method="table") or FILLME
    assert (drafts[4222].service, drafts[3301].service, drafts[11300].service) == \
        ("vrml-multi-use", "tarantool", hv.PLACEHOLDER)


def test_the_two_replies_of_each_group_differ_except_beanstalkd(result: hv.Harvest) -> None:
    """nats and Tarantool differ per host (ids, salt, client address): grouped as near-equal, not equal."""
    drafts = by_port(result)
    for port in (4222, 3301):
        a, b = drafts[port].group.replies
        assert a != b and hv._near_equal(hv.tokens(a), hv.tokens(b))
    a, b = drafts[11300].group.replies
    assert a == b == b"UNKNOWN_COMMAND\r\nUNKNOWN_COMMAND\r\n"


def test_drafts_are_the_patterns_of_learned_probes(result: hv.Harvest) -> None:
    """files/probes/learned.probes is what this harvest drafts: the same patterns under the same probes (the
    Tarantool greeting's padding before its line end drafted as " *", as the first review made it by hand)."""
    rules = learned_rules()
    assert sorted(rules) == sorted(NAMES.values())
    drafts = by_port(hv.harvest(BEFORE, NAMES))
    for port, (probe, service) in PORTS.items():
        d = drafts[port]
        rule_probe, rule = rules[service]
        assert (d.service, d.group.probe) == (service, rule_probe) == (service, probe)
        assert not d.soft and not rule.soft and rule.flags == "s"
        assert rule.fields.get("v") == d.fields.get("v")
        assert rule.pattern == d.pattern
    assert drafts[3301].pattern.endswith(r"[^ \n\r]+ *\n")  # the UUID a gap, the padding any number of spaces


def test_padding_before_a_line_end_is_any_number_of_spaces() -> None:
    # the Tarantool greeting pads its first line to 63 characters: a longer version leaves fewer spaces
    greeting = next(data for data in replies_of(f"{HOSTS[0]}:3301") if len(data) == 128)
    longer = greeting.replace(b"2.6.0", b"2.10.4").replace(b"  \n", b" \n", 1)
    assert len(longer.split(b"\n")[0]) == len(greeting.split(b"\n")[0])
    d = by_port(hv.harvest(BEFORE, NAMES))[3301]
    regex = re.compile(d.pattern.encode("latin-1"), re.S)
    assert regex.match(greeting) and regex.match(longer)


def test_no_draft_holds_a_per_host_value(result: hv.Harvest) -> None:
    values = varying_values()
    # two hosts: two of each id; the salt is drawn per connection
    assert all(len(values[k]) == 2 for k in ("server_id", "server_name", "client_ip", "uuid"))
    assert len(values["salt"]) > 2
    patterns = [d.pattern for d in result.drafts] + [rule.pattern for _, rule in learned_rules().values()]
    for kind, found in values.items():
        for value in found:
            for pattern in patterns:
                assert value.decode() not in pattern and hv.escape(value) not in pattern, (kind, value, pattern)


def test_each_draft_matches_its_two_ports_and_no_other_reply(result: hv.Harvest) -> None:
    for d in result.drafts:
        regex = regex_of(d)
        mine = {m.where for m in d.group.members}
        for where in mine:
            assert regex.match(hv.first_reply(next(m for m in d.group.members if m.where == where)).data)
            assert regex.match(replies_of(where)[0]), (d.line, where)
        others = other_replies(mine)
        assert len({w for w, _ in others}) == 4  # the other two services on both hosts
        assert not [where for where, data in others if regex.match(data)], d.line
        assert hv.check_draft(d, others) == (None, None)


def test_learned_rules_match_their_ports_and_no_other_reply() -> None:
    """The reviewed rules (Tarantool's " *" included) still name both hosts and nothing else; the version they
    capture is the one in the replies."""
    for service, (_, rule) in learned_rules().items():
        port = next(p for p, name in NAMES.items() if name == service)
        regex = compile_regex(rule)
        mine = {f"{host}:{port}" for host in HOSTS}
        for where in mine:
            m = regex.match(replies_of(where)[0])
            assert m, (service, where)
            if service == "tarantool":
                assert m.group(1) == greeting_parts(replies_of(where)[0])[0] == b"2.6.0"
        assert not [where for where, data in other_replies(mine) if regex.match(data)], service


def test_a_group_of_one_port_still_has_gaps_for_its_ids(tmp_path: Path) -> None:
    """Only 10.77.0.102 in the XML: each group has one member, so nothing varies between members; the UUID and
    the nats ids are gaps all the same (ids by their form), and the drafts are those of the two-host run."""
    tree = ET.parse(BEFORE)
    root = tree.getroot()
    for host in root.findall("host"):
        if host.find("address").get("addr") != HOSTS[0]:  # type: ignore[union-attr]
            root.remove(host)
    one = tmp_path / "one-host.xml"
    tree.write(one)
    h = hv.harvest(one)
    assert sorted(p.where for p in h.unnamed) == sorted(w for w in SIX if w.startswith(f"{HOSTS[0]}:"))
    drafts = by_port(h)
    assert all(d.group.count == 1 and d.status == "ok" for d in drafts.values())
    assert {p: d.line for p, d in drafts.items()} == {p: d.line for p, d in by_port(hv.harvest(BEFORE)).items()}
    reply = replies_of(f"{HOSTS[0]}:3301")[0]
    _, uuid, salt = greeting_parts(reply)
    tarantool = drafts[3301]
    assert uuid.decode() not in tarantool.pattern and hv.escape(uuid) not in tarantool.pattern
    assert regex_of(tarantool).match(reply)
    template = hv.template(tarantool.group)
    assert template[tarantool.group.templates[0].index(uuid)] is hv.VAR
    assert template[tarantool.group.templates[0].index(salt)] is hv.VAR
    info = json.loads(replies_of(f"{HOSTS[0]}:4222")[0][len(b"INFO "):])
    assert info["server_id"] not in drafts[4222].pattern and info["server_name"] not in drafts[4222].pattern
    assert regex_of(drafts[4222]).match(replies_of(f"{HOSTS[0]}:4222")[0])


# --------------------------------------------------------------------------------------------------
# Tokens and ids


def test_a_tarantool_salt_is_one_token() -> None:
    greetings = [data for host in HOSTS for data in replies_of(f"{host}:3301") if len(data) == 128]
    assert len(greetings) >= 10  # NULL and every probe answered with the greeting alone
    salts = {greeting_parts(data)[2] for data in greetings}
    # the salts differ in how many '+' and '/' they hold (a '+' or '/' split a base64 run into several words)
    assert len({(s.count(b"+"), s.count(b"/")) for s in salts}) > 1
    counts = set()
    for data in greetings:
        toks = hv.tokens(data)
        salt = greeting_parts(data)[2]
        assert toks.count(salt) == 1
        counts.add(len(toks))
    assert len(counts) == 1  # so any two greetings are near-equal
    assert all(hv._near_equal(hv.tokens(greetings[0]), hv.tokens(g)) for g in greetings)


@pytest.mark.parametrize("word", [b"Mail7Relay3Host9ab.example.test", b"mail.Relay3Host9abXYZ12.test",
                                  b"node-Relay3Host9abXYZ12", b"Relay3Host9abXYZ12_x"])
def test_a_letter_digit_run_inside_a_longer_word_stays_in_that_word(word: bytes) -> None:
    # a hostname label of 16+ mixed letters and digits, first, inside or last: the whole name is one word
    assert hv.tokens(b"220 " + word + b" ready\r\n") == [b"220", b" ", word, b" ", b"ready", b"\r", b"\n"]


def test_is_id_by_form() -> None:
    values = varying_values()
    ids = values["uuid"] | values["server_id"] | values["salt"]
    assert all(hv.is_id(v) for v in ids), [v for v in ids if not hv.is_id(v)]
    for word in (b"Tarantool", b"2.6.0", b"UNKNOWN_COMMAND", b"Binary", b"server_id", b"go1.19.8", None):
        assert not hv.is_id(word), word
    assert not any(hv.is_id(ip) for ip in values["client_ip"])  # an address varies, but is no id by its form


# --------------------------------------------------------------------------------------------------
# --name


def test_parse_names() -> None:
    assert hv.parse_names([]) == {}
    assert hv.parse_names(["4222=nats", "3301=tarantool", "11300=beanstalkd", "4222=nats"]) == NAMES
    assert hv.parse_names(["1=a", "65535=my_svc.v2+x-y"]) == {1: "a", 65535: "my_svc.v2+x-y"}


@pytest.mark.parametrize("spec", ["x=nats", "70000=a", "0=a", "4222=", "4222=na/ts", "4222", "=nats", "4222=na ts",
                                  "-1=a", "\u00b2=nats", "\u0664\u0662\u0662\u0662=nats"])
def test_parse_names_refuses(spec: str) -> None:
    """Every malformed spec is a ScanfleetError naming it, with an example; the port is ASCII digits only ('\u00b2'
    passes str.isdigit() but not int(), the Arabic-Indic digits of 4222 pass both)."""
    with pytest.raises(ScanfleetError) as info:
        hv.parse_names([spec])
    message = str(info.value)
    assert f"--name {spec!r}" in message and "PORT=NAME" in message and "(e.g. --name 4222=nats)" in message


def test_parse_names_refuses_two_names_for_a_port() -> None:
    with pytest.raises(ScanfleetError, match=r"--name '4222=gnatsd': port 4222 is already named 'nats'"):
        hv.parse_names(["4222=nats", "3301=tarantool", "4222=gnatsd"])


def test_cli_names_the_drafts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "harvest.probes"
    args = ["probes", "harvest", str(BEFORE), "--out", str(out)]
    for port, name in NAMES.items():
        args += ["--name", f"{port}={name}"]
    assert cli.main(args) == 0
    assert f"{out}: written" in capsys.readouterr().out
    rules = {ln.item.service: ln.item for ln in parse_rules_file(out).lines()
             if ln.kind == "match" and isinstance(ln.item, Match)}
    assert sorted(rules) == sorted(NAMES.values())
    text = out.read_text()
    comments = " ".join(ln[2:] for ln in text.splitlines() if ln.startswith("# "))  # wrapped comment text
    for port, name in NAMES.items():
        assert f"Service: {name} (given: --name {port}={name})." in comments
    assert hv.PLACEHOLDER not in "".join(ln for ln in text.splitlines() if not ln.startswith("#"))
    # a bad --name fails the command with the message, writing nothing
    bad = tmp_path / "bad.probes"
    assert cli.main(["probes", "harvest", str(BEFORE), "--out", str(bad), "--name", "4222=na/ts"]) == 2
    assert "--name '4222=na/ts'" in capsys.readouterr().err and not bad.exists()


# --------------------------------------------------------------------------------------------------
# After learned.probes was provisioned


def test_after_the_six_are_named_by_the_learned_rules() -> None:
    h = hv.harvest(AFTER)
    assert h.unnamed == [] and h.drafts == []
    assert not [p.where for p in h.ports if p.fingerprint is not None]
    rules = learned_rules()
    before, after = open_services(BEFORE), open_services(AFTER)
    for where in SIX:
        port = int(where.split(":")[1])
        _, rule = rules[NAMES[port]]
        svc = after[where]
        assert (svc["name"], svc["product"], svc["method"]) == (rule.service, rule.product, "probed"), where
        # the version is what the rule captures from the reply before (v/$1/), none where the rule has no v/
        m = compile_regex(rule).match(replies_of(where)[0])
        assert m and svc.get("version") == (m.group(1).decode() if rule.version else None), where
        assert "product" not in before[where] and "servicefp" in before[where]
    assert sorted(before) == sorted(after)
    assert {w: s for w, s in after.items() if w not in SIX} == {w: s for w, s in before.items() if w not in SIX}


def test_diff_before_after_is_six_identified() -> None:
    result = sfdiff.diff(BEFORE, AFTER)
    assert [(c.kind, f"{c.address}:{c.port}", c.protocol) for c in result.changes] == \
        [("identified", where, "tcp") for where in SIX]
    assert sfdiff.counts(result.changes) == {**dict.fromkeys(sfdiff.counts([]), 0), "identified": 6}
    for c in result.changes:
        assert c.old_service is not None and c.new_service is not None
        assert not c.old_service["identified"] and c.new_service["identified"]
        assert c.new_service["service"] == NAMES[int(c.port)]  # type: ignore[arg-type]
