"""Tests of merged.html (scanfleet.page, written by scanfleet.report.write_page), in a real browser too.

The run is built from real nmap XML (tests/fixtures): scanner a finished 127.0.0.2-4 with the services stock nmap
does not name (tests/fixtures/probes/harvest/scan.xml, make_harvest.sh: nats-server, the Prometheus exporters,
beanstalkd, and an OpenSSH banner), scanner b was killed after two hosts of 127.0.0.5-8 (shard-killed), scanner c
stopped answering before it sent anything (127.0.0.9). The run is compared with tests/fixtures/xml/diff/old.xml
(make_diff.sh: 127.0.0.2-4, other ports), which gives changes of every kind the page lists.

The browser test loads the page in Debian's Chromium (tests/browser/check_html.py); without chromium it fails
under CI=true and is skipped, saying why, elsewhere.
"""

from __future__ import annotations

import json
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from scanfleet import cli, collect, jobs, merge, page, report
from scanfleet import diff as rundiff
from scanfleet import state as runstate
from scanfleet.files import sha256_file
from scanfleet.probes import harvest as harvesting
from tests.browser.check_html import Tree, check_dom, dump_dom, main
from tests.conftest import unavailable
from tests.unit.test_twophase import fetch_and_record, phase1_run, plan_round

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
HARVEST_XML = FIXTURES / "probes" / "harvest" / "scan.xml"
HARVEST_PROBES = FIXTURES / "probes" / "harvest" / "harvest.probes"
KILLED_XML = FIXTURES / "xml" / "shard-killed" / "scan.xml"
OLD_XML = FIXTURES / "xml" / "diff" / "old.xml"
NOW = 1_795_255_900.0
RUN = "t-page"


def _attempt(state: runstate.RunState, host: str, targets: str) -> runstate.Attempt:
    state.seq += 1
    lines = [t.strip() for t in targets.split(",")]
    addresses = runstate.parse_target_lines(lines, source="test", allow_hostnames=False)
    a = runstate.Attempt(id=f"{state.seq:03d}-{host}", host=host, family=4, lines=lines,
                         size=runstate.addresses_of(addresses).size, session="s0", round=1, created=NOW)
    state.attempts.append(a)
    return a


def _fetched(results: Path, a: runstate.Attempt, xml: Path | None) -> dict[str, str]:
    directory = collect.attempt_dir(results, RUN, a)
    directory.mkdir(parents=True, exist_ok=True)
    if xml is None:
        return {}
    shutil.copy(xml, directory / "scan.xml")
    return {"scan.xml": sha256_file(directory / "scan.xml")}


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A recorded, merged run (see the module docstring), compared with OLD_XML; its directory."""
    state = runstate.new_state(RUN, runstate.addresses_of(runstate.parse_target_lines(
        ["127.0.0.2-9"], source="test", allow_hostnames=False)), ["-sV"], NOW)
    a = _attempt(state, "a", "127.0.0.2-4")
    b = _attempt(state, "b", "127.0.0.5-8")
    c = _attempt(state, "c", "127.0.0.9")
    runstate.save_state(tmp_path / RUN, state)
    outcomes = [{"id": a.id, "outcome": "finished", "files": _fetched(tmp_path, a, HARVEST_XML)},
                {"id": b.id, "outcome": "stalled", "files": _fetched(tmp_path, b, KILLED_XML)},
                jobs.unreachable_outcome(c.id, "no answer for 21 s: ssh: No route to host")]
    _fetched(tmp_path, c, None)
    collect.record_run(results=tmp_path, run_id=RUN, outcomes=outcomes, session="s1", now=NOW)
    result = report.report_run(results=tmp_path, run_id=RUN, now=NOW)
    assert result["changed"] and result["inputs"] == ["001-a", "002-b"]
    changes = rundiff.run_changes(results=tmp_path, run_id=RUN, compare_to=str(OLD_XML))
    assert changes["changed"] and changes["counts"]["port_opened"] > 0
    return tmp_path / RUN


def _dom(text: str) -> Tree:
    tree = Tree()
    tree.feed(text)
    tree.close()
    return tree


def _cells(tree: Tree, table_id: str) -> list[list[str]]:
    table = tree.root.find_id(table_id)
    assert table is not None, table_id
    body = next(table.iter("tbody"))
    return [[td.all_text() for td in tr.iter("td")] for tr in body.iter("tr")]


def _open_ports(xml: Path) -> dict[str, dict[str, str]]:
    """address:port/proto -> service attributes of every open port of XML (read without scanfleet)."""
    out = {}
    for host in ET.parse(xml).getroot().iter("host"):
        addr = host.find("address").get("addr")
        for port in host.iter("port"):
            if port.find("state").get("state") == "open":
                service = port.find("service")
                out[f"{addr}:{port.get('portid')}/{port.get('protocol')}"] = (
                    dict(service.attrib) if service is not None else {})
    return out


def test_the_page_holds_every_section_from_the_run(run_dir):
    text = (run_dir / "merged.html").read_text()
    problems, _ = check_dom(text)
    assert problems == []
    tree = _dom(text)
    summary = tree.root.find_id("summary")
    facts = dict(zip([dt.all_text() for dt in summary.iter("dt")], [dd.all_text() for dd in summary.iter("dd")],
                     strict=True))
    merged = run_dir / "merged.xml"
    ports = _open_ports(merged)
    named = [k for k, s in ports.items() if report.is_identified(s)]
    assert facts["Run"] == RUN
    assert facts["Targets"] == "8 addresses: 127.0.0.2-127.0.0.9"
    # a: 3 addresses, b: the 2 hosts its XML holds whole (127.0.0.5-6), c: nothing
    assert facts["Coverage"].startswith("5/8 addresses (62.5%); missing: 127.0.0.7-127.0.0.9")
    assert facts["Open ports"] == str(len(ports))
    assert facts["Services"] == f"{len(named)} named, {len(ports) - len(named)} unnamed"
    assert facts["Lost scanners"] == "c: no answer for 21 s: ssh: No route to host (unreachable) in attempt 003-c"
    assert facts["Hosts"].startswith("5 up")

    # by service: every open port once, under its service, product, version
    listed = {}
    for service, product, version, identified, count, where in _cells(tree, "services"):
        endpoints = [w.split(" ")[0] for w in where.split(", ") if not w.startswith("...")]
        assert int(count) == len(endpoints)
        for endpoint in endpoints:
            listed[endpoint] = (service, product, version, identified)
    assert set(listed) == set(ports)
    for endpoint, s in ports.items():
        assert listed[endpoint] == (s.get("name", "unknown"), s.get("product") or "-", s.get("version") or "-",
                                    "yes" if report.is_identified(s) else "no")


def test_unidentified_ports_show_their_reply_and_the_draft_rule(run_dir):
    tree = _dom((run_dir / "merged.html").read_text())
    rows = {r[0]: r for r in _cells(tree, "unidentified-ports")}
    merged = run_dir / "merged.xml"
    ports = _open_ports(merged)
    assert set(rows) == {k for k, s in ports.items() if not report.is_identified(s)}
    _, services = harvesting.read_services(merged)
    with_reply = [p for p in services if p.fingerprint is not None]
    assert len(with_reply) == 8  # nats, two exporters, beanstalkd on 127.0.0.2 and .3
    for p in with_reply:
        first = p.fingerprint.replies[0]
        assert harvesting.excerpt(first.data, page.REPLY_SHOWN) in rows[f"{p.where}/tcp"][2]
        assert rows[f"{p.where}/tcp"][3].startswith("rule ")
    assert "no reply recorded" in rows["127.0.0.5:1337/tcp"][2]  # shard-killed: a port-table guess, no reply
    # the rules are those of harvest.probes, drafted by scanfleet probes harvest from the same scan
    expected = [line for line in HARVEST_PROBES.read_text().splitlines() if line.startswith(("match", "softmatch"))]
    rules = [pre.all_text() for pre in tree.root.find_id("rules").iter("pre")]
    assert sorted(rules) == sorted(expected)
    # each port links to the rule whose group holds it
    found = harvesting.harvest(merged)
    for rank, d in enumerate(found.drafts, 1):
        for m in d.group.members:
            assert f"rule {rank}" in rows[f"{m.where}/tcp"][3]


def test_the_chart_has_a_time_and_a_coverage_bar_per_shard(run_dir):
    tree = _dom((run_dir / "merged.html").read_text())
    svg = tree.root.find_id("shard-chart")
    bars = [r for r in svg.iter("rect") if "bar" in r.classes()]
    state = runstate.load_state(run_dir)
    assert [a.status for a in state.attempts] == ["finished", "partial", "lost"]
    assert len(bars) == 2 * len(state.attempts) == int(svg.attrs["data-bars"])
    times = [float(b.attrs["width"]) for b in bars if "time" in b.classes()]
    cover = [float(b.attrs["width"]) for b in bars if "coverage" in b.classes()]
    longest = max(a.elapsed for a in state.attempts if a.elapsed is not None)
    assert times == [pytest.approx(360 * (a.elapsed or 0) / longest, abs=0.1) for a in state.attempts]
    assert cover == [360.0, 180.0, 0.0]  # 3/3, 2/4 (127.0.0.5-6 kept), 0/1


def test_the_changes_are_those_of_changes_json(run_dir):
    data = json.loads((run_dir / "changes.json").read_text())
    assert data["new"]["sha256"] == sha256_file(run_dir / "merged.xml")
    tree = _dom((run_dir / "merged.html").read_text())
    rows = _cells(tree, "changes-table")
    assert [r[0] for r in rows] == [c["kind"] for c in data["changes"]]
    assert data["summary"] in tree.root.find_id("changes").all_text()
    assert {"host_up", "port_opened", "port_closed"} <= {r[0] for r in rows}


def test_no_earlier_run_is_said_and_a_stale_changes_json_is_not_shown(run_dir):
    summary = report.load_summary(run_dir)
    state = runstate.load_state(run_dir)
    assert not report.write_page(run_dir / "merged.xml", run_dir, summary, state=state)  # unchanged: not written
    data = json.loads((run_dir / "changes.json").read_text())
    data["new"]["sha256"] = "0" * 64  # computed for another merged.xml
    (run_dir / "changes.json").write_text(json.dumps(data))
    assert report.write_page(run_dir / "merged.xml", run_dir, summary, state=state)
    section = _dom((run_dir / "merged.html").read_text()).root.find_id("changes")
    assert section.all_text() == "Changes" + report.NO_CHANGES


def test_everything_from_the_scan_is_escaped(tmp_path):
    """A product and a reply holding markup (real XML, two values replaced) stay text."""
    text = HARVEST_XML.read_text()
    evil = "<script>alert(1)</script>&amp;<marquee>"
    text = text.replace('product="OpenSSH"', f'product="{evil.replace("<", "&lt;").replace(">", "&gt;")}"', 1)
    text = text.replace("INFO\\x20", "INFO\\x20&lt;/pre&gt;&lt;img\\x20src=x&gt;", 1)
    scan = tmp_path / "evil" / "scan.xml"
    scan.parent.mkdir()
    scan.write_text(text)
    info = merge.merge([scan], tmp_path / "merged.xml").to_dict()
    summary = report.write_reports(tmp_path / "merged.xml", tmp_path, info, run_id="t<x>")
    page_text = (tmp_path / "merged.html").read_text()
    assert "<script" not in page_text and "<img" not in page_text and "<marquee>" not in page_text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&amp;&lt;marquee&gt;" in page_text
    assert "INFO &lt;/pre&gt;&lt;img src=x&gt;" in page_text
    assert "<title>scanfleet run t&lt;x&gt;</title>" in page_text
    problems, _ = check_dom(page_text)
    assert problems == []
    assert summary["files"]["html"] == "merged.html"


def test_a_merge_outside_a_run_charts_its_files(tmp_path):
    """scanfleet merge shards: no run state, one bar pair per merged file, the run id from --run-id."""
    out = tmp_path / "out"
    rc = cli.main(["merge", "shards", "--out", str(out), "--run-id", "adhoc", str(HARVEST_XML), str(KILLED_XML)])
    assert rc == 1  # shard-killed is truncated
    tree = _dom((out / "merged.html").read_text())
    svg = tree.root.find_id("shard-chart")
    labels = [t.all_text() for t in svg.iter("text")][1::2]
    assert labels == ["harvest", "shard-killed"]
    assert "Targets" not in [dt.all_text() for dt in tree.root.find_id("summary").iter("dt")]
    rows = json.loads((out / "merged.json").read_text())
    assert {r["run_id"] for r in rows} == {"adhoc"}


# ---- in a real browser -----------------------------------------------------------------------------------


def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        unavailable("chromium not found: install the Debian package chromium (make deps installs it)")
    return path


def test_the_page_renders_in_chromium(run_dir):
    browser = chromium()
    dom = dump_dom(run_dir / "merged.html", browser)
    problems, found = check_dom(dom)
    assert problems == []
    tree = _dom(dom)
    assert len(_cells(tree, "services")) == int(tree.root.find_id("services").attrs["data-rows"]) > 0
    assert len(_cells(tree, "unidentified-ports")) == 10  # 8 with a reply, 2 port-table guesses (1337)
    assert "chart: 6 bars" in found
    assert main([str(run_dir / "merged.html"), "--chromium", browser]) == 0


@pytest.mark.parametrize(("damage", "problem"), [
    (lambda t: re.sub(r"<svg.*?</svg>", "", t, flags=re.S), "#shard-chart: no SVG chart"),
    # an unescaped cell: the browser's parser ends the row there, the table no longer has the rows written
    (lambda t: t.replace("<td>ssh</td>", "<td>ssh</tr><tr><td>x</td>", 1), "#services: "),
    (lambda t: t.replace("</style>", "</style><link rel=stylesheet href=https://example.test/a.css>", 1),
     "<link> in the page"),
    (lambda t: re.sub(r'<dt>Hosts</dt><dd>[^<]*</dd>', "", t), "#summary: no Hosts"),
])
def test_the_checker_fails_a_page_that_did_not_render(run_dir, tmp_path, damage, problem, capsys):
    browser = chromium()
    bad = tmp_path / "bad.html"
    bad.write_text(damage((run_dir / "merged.html").read_text()))
    problems, _ = check_dom(dump_dom(bad, browser))
    assert any(p.startswith(problem) for p in problems), problems
    assert main([str(bad), "--chromium", browser]) == 1
    assert problem in capsys.readouterr().err


def test_the_checker_says_what_it_cannot_check(tmp_path, capsys):
    assert main([str(tmp_path / "missing.html")]) == 2
    assert "no such file" in capsys.readouterr().err
    (tmp_path / "p.html").write_text("<p>x</p>")
    assert main([str(tmp_path / "p.html"), "--chromium", "/bin/false"]) == 2
    assert "cannot check: /bin/false --dump-dom" in capsys.readouterr().err


def test_a_two_phase_run_charts_its_phase2_jobs_too(tmp_path, nmap_dtd):
    """The recorded two-phase run of test_twophase (real phase-1 and phase-2 XML): a bar pair per phase-1 attempt
    (its addresses) and per phase-2 job (its merged file, labelled phase2/JOB)."""
    run = phase1_run(tmp_path)
    first = plan_round(tmp_path)
    fetch_and_record(tmp_path, first)
    report.report_run(results=tmp_path, run_id="r", dtd=str(nmap_dtd), two_phase=True, now=7.0)
    svg = _dom((run / "merged.html").read_text()).root.find_id("shard-chart")
    labels = [t.all_text() for t in svg.iter("text")][1::2]
    state = runstate.load_state(run)
    assert labels == [a.id for a in state.attempts] + [f"phase2/{job}" for job in first["new"]]
    assert len([r for r in svg.iter("rect") if "bar" in r.classes()]) == 2 * len(labels) == 12


@pytest.mark.parametrize(("open_ports", "said"), [(0, "None: no open port."),
                                                  (3, "None: every open port was identified.")])
def test_no_unidentified_port_says_why(open_ports, said):
    shown = page.Page(run_id="r", summary={"open_ports": open_ports, "unidentified": {"count": 0}}, facts=[],
                      services=page.ServiceTable(), unidentified=[], harvest=None, harvest_note="", shards=[],
                      changes=None, changes_note="")
    section = _dom(page.unidentified_section(shown)).root.find_id("unidentified")
    assert section.all_text() == "Unidentified ports" + said
