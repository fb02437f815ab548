"""Tests of scanfleet.diff (``scanfleet diff OLD NEW``, the run's "changes since RUN") and its adapter, the
``compare_to`` option of the scan_report module.

The inputs are two real scans of the same targets by Debian's nmap 7.93 (tests/fixtures/xml/diff, written by
make_diff.sh in a private network namespace), with changes made between them: 127.0.0.3 went down, 127.0.0.4
came up, on 127.0.0.2 a port opened (2121), one closed (8080), an ssh banner changed version (2222) and another
product (2223), an unknown banner became vsFTPd (7002: identified) and vsFTPd an unknown banner (7003). The
expected values are written out from reading both files (``ndiff old.xml new.xml`` shows the same).
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from scanfleet import ScanfleetError, cli, collect
from scanfleet import diff as sfdiff
from scanfleet import report as runreport
from scanfleet import state as runstate
from scanfleet.files import sha256_file
from scanfleet.targets import parse_targets, plan_targets
from tests.conftest import unavailable
from tests.unit.test_adapters import env, inventory, scan  # noqa: F401 - inventory is a fixture: one scanner never contacted

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "xml"
OLD = FIXTURES / "diff" / "old.xml"
NEW = FIXTURES / "diff" / "new.xml"
REGENERATE = "regenerate with sudo tests/fixtures/xml/make_diff.sh"
TARGETS = "127.0.0.2-4"
OPTIONS = ["--privileged", "-T4", "-sS", "-sV", "-v"]
NOW = 1_796_186_600.0

SSH_92 = "ssh OpenSSH 9.2p1 Debian 2+deb12u3"
HTTP = "http SimpleHTTPServer 0.6"
FTP = "ftp vsftpd 3.0.3"
# (kind, address, protocol, port, old, new, fields)
EXPECTED = [
    ("port_opened", "127.0.0.2", "tcp", 2121, "closed", "open", []),
    ("service_changed", "127.0.0.2", "tcp", 2222, SSH_92, "ssh OpenSSH 9.6p1 Debian 4", ["version"]),
    ("service_changed", "127.0.0.2", "tcp", 2223, SSH_92, "ssh Dropbear sshd 2022.83", ["product", "version"]),
    ("identified", "127.0.0.2", "tcp", 7002, "afs3-prserver", FTP, []),
    ("unidentified", "127.0.0.2", "tcp", 7003, FTP, "afs3-vlserver", []),
    ("port_closed", "127.0.0.2", "tcp", 8080, "open", "closed", []),
    ("host_down", "127.0.0.3", "", None, "up", "down", []),
    ("port_closed", "127.0.0.3", "tcp", 2222, "open", "host down", []),
    ("host_up", "127.0.0.4", "", None, "down", "up", []),
    ("port_opened", "127.0.0.4", "tcp", 8080, "host down", "open", []),
]
SUMMARY = ("1 host up, 1 down, 2 ports opened, 2 closed, 2 services changed, 1 identified, 1 unidentified")
TEXT = [
    f"  127.0.0.2:2121/tcp (web.diff.test): opened (was closed): {FTP}",
    f"  127.0.0.2:2222/tcp (web.diff.test): version changed: {SSH_92} -> ssh OpenSSH 9.6p1 Debian 4",
    f"  127.0.0.2:2223/tcp (web.diff.test): product, version changed: {SSH_92} -> ssh Dropbear sshd 2022.83",
    f"  127.0.0.2:7002/tcp (web.diff.test): identified: afs3-prserver -> {FTP}",
    f"  127.0.0.2:7003/tcp (web.diff.test): no longer identified: {FTP} -> afs3-vlserver",
    f"  127.0.0.2:8080/tcp (web.diff.test): no longer open (now closed): was {HTTP}",
    "  127.0.0.3: host down (was up)",
    f"  127.0.0.3:2222/tcp: no longer open (now host down): was {SSH_92}",
    "  127.0.0.4: host up (was down)",
    f"  127.0.0.4:8080/tcp: opened (was host down): {HTTP}",
]


@pytest.fixture(scope="module", autouse=True)
def fixtures_present():
    for path in (OLD, NEW):
        assert path.is_file(), f"{path} missing: {REGENERATE}"


def rows(result: sfdiff.Diff) -> list[tuple]:
    return [(c.kind, c.address, c.protocol, c.port, c.old, c.new, c.fields) for c in result.changes]


# ---- the changes ----------------------------------------------------------------------------------------------


def test_every_kind_of_change_between_two_real_scans():
    result = sfdiff.diff(OLD, NEW)
    assert rows(result) == EXPECTED
    assert sfdiff.counts(result.changes) == {"host_up": 1, "host_down": 1, "port_opened": 2, "port_closed": 2,
                                             "identified": 1, "unidentified": 1, "service_changed": 2}
    by_port = {(c.address, c.port): c for c in result.changes}
    identified = by_port[("127.0.0.2", 7002)]
    assert identified.old_service == {"service": "afs3-prserver", "product": "", "version": "", "extrainfo": "",
                                      "identified": False}  # nmap's table guess (method="table")
    assert identified.new_service == {"service": "ftp", "product": "vsftpd", "version": "3.0.3", "extrainfo": "",
                                      "identified": True}
    assert by_port[("127.0.0.2", 2121)].hostname == "web.diff.test"
    assert by_port[("127.0.0.4", None)].old_service is None


def test_the_reverse_comparison_mirrors_every_change():
    mirror = {"host_up": "host_down", "host_down": "host_up", "port_opened": "port_closed",
              "port_closed": "port_opened", "identified": "unidentified", "unidentified": "identified",
              "service_changed": "service_changed"}
    back = rows(sfdiff.diff(NEW, OLD))
    assert sorted(back, key=repr) == sorted(
        [(mirror[k], a, p, n, new, old, f) for k, a, p, n, old, new, f in EXPECTED], key=repr)


def test_a_scan_compared_with_a_copy_of_itself_has_no_change(tmp_path):
    copy = tmp_path / "copy.xml"
    shutil.copy(NEW, copy)
    result = sfdiff.diff(copy, NEW)
    assert result.changes == []
    assert result.text_lines() == [f"changes since {copy}: 0 hosts up, 0 down, 0 ports opened, 0 closed, "
                                   "0 services changed, 0 identified, 0 unidentified"]


def test_a_port_in_an_extraports_group_has_the_group_state():
    """shard-a lists 127.0.0.2's ports 1-60 and 3306 only in a "closed" extraports group; shard-b (a later scan
    of the same host) has 3306 open: the port opened from the group's state, not from "not listed"."""
    result = sfdiff.diff(FIXTURES / "shard-a" / "scan.xml", FIXTURES / "shard-b" / "scan.xml")
    opened = {c.port: c.old for c in result.changes if c.kind == "port_opened" and c.address == "127.0.0.2"}
    assert opened[3306] == "closed"
    assert ("host_down", "127.0.0.1", "", None, "up", "absent", []) in rows(result)  # not in shard-b at all
    assert ("host_up", "127.0.0.3", "", None, "absent", "up", []) in rows(result)


# ---- outputs ----------------------------------------------------------------------------------------------------


def test_text_is_the_summary_line_then_one_line_per_change():
    text = sfdiff.diff(OLD, NEW).render("text")
    assert text.splitlines() == [f"changes since {OLD}: {SUMMARY}", *TEXT]


def test_the_play_shows_at_most_the_limit_and_says_how_many_more():
    lines = sfdiff.diff(OLD, NEW).text_lines(limit=3)
    assert lines == [f"changes since {OLD}: {SUMMARY}", *TEXT[:3], "  ... 7 more (changes.txt has them all)"]


def test_json_is_the_documented_structure():
    data = json.loads(sfdiff.diff(OLD, NEW).render("json"))
    assert list(data) == ["format", "version", "old", "new", "summary", "counts", "changes"]
    assert (data["format"], data["version"]) == ("scanfleet-diff", 1)
    assert data["old"] == {"run": str(OLD), "path": str(OLD), "sha256": sha256_file(OLD), "finished": 1796186529,
                           "hosts_up": 2}
    assert data["new"]["finished"] == 1796186557 and data["new"]["sha256"] == sha256_file(NEW)
    assert data["summary"] == f"changes since {OLD}: {SUMMARY}"
    assert [list(c) for c in data["changes"]] == [["kind", "address", "hostname", "protocol", "port", "old", "new",
                                                   "fields", "old_service", "new_service"]] * len(EXPECTED)
    assert [[c["kind"], c["address"], c["protocol"], c["port"], c["old"], c["new"], c["fields"]]
            for c in data["changes"]] == [list(e) for e in EXPECTED]


def test_csv_has_one_row_per_change():
    table = list(csv.reader(io.StringIO(sfdiff.diff(OLD, NEW).render("csv"))))
    assert table[0] == list(sfdiff.CSV_COLUMNS)
    assert table[1:] == [[str(OLD), str(NEW), k, a, "web.diff.test" if a == "127.0.0.2" else "", p,
                          "" if n is None else str(n), old, new, service]
                         for (k, a, p, n, old, new, _), service in zip(EXPECTED, [
                             FTP, "ssh OpenSSH 9.6p1 Debian 4", "ssh Dropbear sshd 2022.83", FTP, "afs3-vlserver",
                             HTTP, "", SSH_92, "", HTTP], strict=True)]


@pytest.mark.parametrize("fmt", ["text", "json", "csv"])
def test_cli_writes_each_format_and_exits_1_on_changes(tmp_path, fmt, capsys):
    out = tmp_path / f"changes.{fmt}"
    assert cli.main(["diff", str(OLD), str(NEW), "--format", fmt, "--out", str(out)]) == 1
    assert out.read_text() == sfdiff.diff(OLD, NEW).render(fmt)
    assert capsys.readouterr().err == f"changes since {OLD}: {SUMMARY}\n"


def test_cli_exits_0_without_changes_and_prints_to_stdout(tmp_path, capsys):
    copy = tmp_path / "same.xml"
    shutil.copy(OLD, copy)
    assert cli.main(["diff", str(OLD), str(copy)]) == 0
    assert capsys.readouterr().out.startswith(f"changes since {OLD}: 0 hosts up")


# ---- run directories ----------------------------------------------------------------------------------------


def ips(text: str):
    return plan_targets(parse_targets(text), scope=["0.0.0.0/0", "::/0"]).addresses


def make_run(results: Path, run_id: str, xml: Path, created: float, *, targets: str = TARGETS,
             merge: bool = True) -> Path:
    """A finished run as the playbook leaves it: state.json, one attempt with its fetched XML, recorded, merged."""
    state = runstate.new_state(run_id, ips(targets), OPTIONS, created)
    state.seq = 1
    addresses = ips(targets)
    attempt = runstate.Attempt(id="001-scanner1", host="scanner1", family=4, lines=addresses.to_lines(),
                               size=addresses.size, session="s0", round=1, created=created)
    state.attempts.append(attempt)
    runstate.save_state(results / run_id, state)
    directory = collect.attempt_dir(results, run_id, attempt)
    directory.mkdir(parents=True)
    shutil.copy(xml, directory / "scan.xml")
    collect.record_run(results=results, run_id=run_id, outcomes=[
        {"id": attempt.id, "outcome": "finished", "files": {"scan.xml": sha256_file(directory / "scan.xml")}}],
        session="s0", now=created + 30)
    if merge:
        runreport.report_run(results=results, run_id=run_id, now=created + 40)
    return results / run_id


def test_run_directories_are_compared_by_their_merged_xml_and_named_by_run_id(tmp_path):
    old = make_run(tmp_path, "dmz-monday", OLD, NOW)
    new = make_run(tmp_path, "dmz-tuesday", NEW, NOW + 86400)
    result = sfdiff.diff(old, new)
    assert rows(result) == EXPECTED
    assert result.summary == f"changes since dmz-monday: {SUMMARY}"
    assert (result.old.run, result.new.run) == ("dmz-monday", "dmz-tuesday")
    # a run's merged.xml given as a file is named by its run id too
    assert sfdiff.diff(old / "merged.xml", new).old.run == "dmz-monday"


def test_the_latest_earlier_run_with_the_same_targets_is_the_baseline(tmp_path):
    make_run(tmp_path, "a-first", OLD, NOW)
    make_run(tmp_path, "b-second", OLD, NOW + 100)
    make_run(tmp_path, "c-other-targets", OLD, NOW + 150, targets="127.0.0.2-5")
    make_run(tmp_path, "d-unmerged", OLD, NOW + 160, merge=False)
    new = make_run(tmp_path, "e-this", NEW, NOW + 200)
    make_run(tmp_path, "f-later", OLD, NOW + 300)  # created after this run: not earlier
    state = runstate.load_state(new)
    assert sfdiff.earlier_run(tmp_path, state) == tmp_path / "b-second"
    assert sfdiff.earlier_run(tmp_path, runstate.load_state(tmp_path / "a-first")) is None


def test_run_changes_writes_the_three_files_once(tmp_path):
    make_run(tmp_path, "monday", OLD, NOW)
    new = make_run(tmp_path, "tuesday", NEW, NOW + 86400)
    check = sfdiff.run_changes(results=tmp_path, run_id="tuesday", compare_to="", write=False)
    assert check["changed"] and not any((new / name).exists() for name in sfdiff.CHANGES.values())
    first = sfdiff.run_changes(results=tmp_path, run_id="tuesday", compare_to="")
    assert first["changed"] and first["compared_to"] == "monday"
    assert first["lines"] == [f"changes since monday: {SUMMARY}", *TEXT] == check["lines"]
    expected = sfdiff.diff(tmp_path / "monday", new)
    for fmt, name in sfdiff.CHANGES.items():
        path = new / name
        assert path.read_text() == expected.render("text" if fmt == "txt" else fmt)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    stamps = {name: (new / name).stat().st_mtime_ns for name in sfdiff.CHANGES.values()}
    again = sfdiff.run_changes(results=tmp_path, run_id="tuesday", compare_to="")
    assert not again["changed"] and again["lines"] == first["lines"]
    assert stamps == {name: (new / name).stat().st_mtime_ns for name in sfdiff.CHANGES.values()}
    # naming the run instead of picking it gives the same, already written
    assert not sfdiff.run_changes(results=tmp_path, run_id="tuesday", compare_to="monday")["changed"]
    # another baseline: written again
    make_run(tmp_path, "sunday", NEW, NOW - 86400)
    other = sfdiff.run_changes(results=tmp_path, run_id="tuesday", compare_to="sunday")
    assert other["changed"] and other["lines"] == ["changes since sunday: 0 hosts up, 0 down, 0 ports opened, "
                                                   "0 closed, 0 services changed, 0 identified, 0 unidentified"]
    assert json.loads((new / "changes.json").read_text())["old"]["run"] == "sunday"


@pytest.mark.parametrize("off", [None, False, "false", "none", "None", " FALSE "])
def test_run_changes_can_be_turned_off(tmp_path, off):
    make_run(tmp_path, "monday", OLD, NOW)
    new = make_run(tmp_path, "tuesday", NEW, NOW + 86400)
    result = sfdiff.run_changes(results=tmp_path, run_id="tuesday", compare_to=off)
    assert (result["changed"], result["lines"]) == (False, [])
    assert not (new / "changes.json").exists()


def test_no_earlier_run_is_said_once_and_is_not_an_error(tmp_path):
    new = make_run(tmp_path, "first-ever", NEW, NOW)
    result = sfdiff.run_changes(results=tmp_path, run_id="first-ever", compare_to="")
    assert result["lines"] == [sfdiff.NO_EARLIER] and not result["changed"]
    assert not (new / "changes.json").exists()


def test_an_unreadable_earlier_report_is_said_not_failed_unless_named(tmp_path):
    old = make_run(tmp_path, "monday", OLD, NOW)
    make_run(tmp_path, "tuesday", NEW, NOW + 86400)
    (old / "merged.xml").write_text("<nmaprun><host>\n</nmaprun>\n")  # damaged after its run
    result = sfdiff.run_changes(results=tmp_path, run_id="tuesday", compare_to="")
    assert result["lines"] == [f"changes since monday not computed: OLD {old / 'merged.xml'}: not well-formed XML "
                               "(mismatched tag: line 2, column 2); run scanfleet merge shards again"]
    assert not result["changed"] and not (tmp_path / "tuesday" / "changes.json").exists()
    with pytest.raises(ScanfleetError, match=r"^OLD .*monday/merged\.xml: not well-formed XML"):
        sfdiff.run_changes(results=tmp_path, run_id="tuesday", compare_to="monday")


@pytest.mark.parametrize(("choice", "message"), [
    ("tuesday", "names this run itself"),
    ("no-such-run", "no run no-such-run in"),
])
def test_run_changes_refuses_a_bad_baseline_with_the_fix(tmp_path, choice, message):
    make_run(tmp_path, "tuesday", NEW, NOW)
    with pytest.raises(ScanfleetError, match=message) as info:
        sfdiff.run_changes(results=tmp_path, run_id="tuesday", compare_to=choice)
    assert "nmap_scan_compare_to" in str(info.value)


# ---- errors ----------------------------------------------------------------------------------------------------


def test_bad_inputs_are_refused_naming_the_input_and_the_fix(tmp_path):
    empty_run = tmp_path / "unmerged"
    empty_run.mkdir()
    text = tmp_path / "notes.txt"
    text.write_text("not xml at all\n")
    other_xml = tmp_path / "other.xml"
    other_xml.write_text('<?xml version="1.0"?>\n<project><name>x</name></project>\n')
    copy_dir = tmp_path / "link"
    copy_dir.mkdir()
    (copy_dir / "merged.xml").symlink_to(OLD)
    cases = [
        ((tmp_path / "missing.xml", NEW), f"OLD {tmp_path / 'missing.xml'}: no such file or directory; give a run "
                                          "directory (RESULTS/RUN_ID holding merged.xml) or an nmap XML file"),
        ((OLD, empty_run), f"NEW {empty_run}: a directory without merged.xml; give a run directory whose results "
                           f"were merged (the scan playbook's report step, or scanfleet merge shards --out "
                           f"{empty_run}), or an nmap XML file"),
        ((text, NEW), f"OLD {text}: not nmap XML (syntax error: line 1, column 0); give a run directory"),
        ((OLD, other_xml), f"NEW {other_xml}: not nmap XML (root element <project>); give a run directory"),
        ((OLD, OLD), f"OLD {OLD} and NEW {OLD} are the same scan"),
        ((copy_dir, OLD), "are the same scan"),
    ]
    for (old, new), message in cases:
        with pytest.raises(ScanfleetError) as info:
            sfdiff.diff(old, new)
        assert message in str(info.value), str(info.value)


def test_cli_reports_a_bad_input_with_exit_status_2(tmp_path, capsys):
    assert cli.main(["diff", str(tmp_path / "nope"), str(NEW)]) == 2
    assert capsys.readouterr().err.startswith(f"scanfleet diff: error: OLD {tmp_path / 'nope'}: no such file")


# ---- nmap's ndiff reads what scanfleet compares and writes ----------------------------------------------------


def ndiff() -> str:
    path = shutil.which("ndiff")
    if path is None:
        unavailable("ndiff not found: install the Debian package ndiff (make deps installs it)")
    return path


def test_ndiff_reads_both_fixtures_and_sees_differences():
    proc = subprocess.run([ndiff(), str(OLD), str(NEW)], capture_output=True, text=True, check=False)
    assert proc.returncode == 1, proc.stderr  # ndiff: 0 equal, 1 different, 2 error
    assert "-Host is down.\n+Host is up." in proc.stdout
    assert "+2121/tcp open   ftp           vsftpd 3.0.3" in proc.stdout


def test_ndiff_reads_the_merged_xml_of_scanfleet_runs(tmp_path):
    """The merged.xml a run writes (scanfleet.merge) stays acceptable to ndiff, in its text and XML outputs."""
    old = make_run(tmp_path, "monday", OLD, NOW)
    new = make_run(tmp_path, "tuesday", NEW, NOW + 86400)
    for args in ([], ["--xml"]):
        proc = subprocess.run([ndiff(), *args, str(old / "merged.xml"), str(new / "merged.xml")],
                              capture_output=True, text=True, check=False)
        assert proc.returncode == 1, proc.stderr
        assert "Traceback" not in proc.stderr
    proc = subprocess.run([ndiff(), str(old / "merged.xml"), str(old / "merged.xml")], capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    merged = subprocess.run([ndiff(), str(old / "merged.xml"), str(new / "merged.xml")], capture_output=True,
                            text=True, check=False).stdout
    raw = subprocess.run([ndiff(), str(OLD), str(NEW)], capture_output=True, text=True, check=False).stdout
    # the host blocks (after the two command lines) are the same: the merge changes nothing ndiff sees
    assert merged.split("\n\n", 1)[1] == raw.split("\n\n", 1)[1]


# ---- the adapter: scan_report's compare_to, run by Ansible ------------------------------------------------------


def ansible_report(args: dict, *, check: bool = False) -> dict:
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_STDOUT_CALLBACK="default", ANSIBLE_CALLBACK_RESULT_FORMAT="json",
               ANSIBLE_LOCALHOST_WARNING="0", PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
    proc = subprocess.run(["ansible", "localhost", "-c", "local", "-m", "scanfleet.fleet.scan_report", "-a",
                           json.dumps(args), "-e", f"ansible_python_interpreter={sys.executable}",
                           *(["--check"] if check else [])],
                          capture_output=True, text=True, cwd=ROOT, env=env, check=False, timeout=120)
    assert proc.returncode in (0, 2) and " => " in proc.stdout, proc.stdout + proc.stderr
    head, _, result = proc.stdout.partition(" => ")  # localhost | CHANGED => {...}
    return {**json.loads(result), "failed": proc.returncode != 0 and "FAILED!" in head}


def test_scan_report_compares_once_then_changes_nothing(tmp_path):
    make_run(tmp_path, "monday", OLD, NOW)
    new = make_run(tmp_path, "tuesday", NEW, NOW + 86400)
    args = {"results_dir": str(tmp_path), "run_id": "tuesday", "compare_to": ""}
    check = ansible_report(args, check=True)
    assert check["changed"] and not (new / "changes.json").exists()
    first = ansible_report(args)
    assert first["changed"] and first["changes"]["lines"] == [f"changes since monday: {SUMMARY}", *TEXT]
    assert (new / "changes.csv").is_file()
    again = ansible_report(args)
    assert not again["changed"] and again["changes"]["lines"] == first["changes"]["lines"]
    assert "changes" not in ansible_report({"results_dir": str(tmp_path), "run_id": "tuesday"})
    failed = ansible_report({**args, "compare_to": "no-such-run"})
    assert failed["failed"] and "no run no-such-run in" in failed["msg"], failed


def test_the_scan_play_refuses_a_missing_run_to_compare_to_before_any_connection(request):
    result = scan(request.getfixturevalue("inventory"), {"nmap_scan_compare_to": "no-such-run"})
    output = " ".join((result.stdout + result.stderr).split())
    assert result.returncode != 0, output
    assert "nmap_scan_compare_to=no-such-run: no run of that id with a merged.xml in" in output, output
    assert "never-1" in output and "UNREACHABLE" not in output, output  # refused before the first connection


REPORT_PLAY = """
- name: The report step of the scan role, on runs already recorded
  hosts: localhost
  gather_facts: false
  vars:
    nmap_scan_results_dir: {results}
    nmap_scan_compare_to: {compare_to}
    nmap_scan_harvest: false
    nmap_scan_mode: one_phase
    nmap_scan_lost_after: 90
    nmap_scan_nmap_datadir: /usr/share/nmap
    __nmap_scan_lost: {{}}
    __nmap_scan_dir: {results}/{run}
    __nmap_scan_run: {run}
    __nmap_scan_plan: {{resumed: true}}
  tasks:
    - name: Merge and report as the role does
      ansible.builtin.import_tasks: {root}/roles/nmap_scan/tasks/report.yml
"""


def test_the_role_report_step_prints_the_changes_once_and_is_idempotent(tmp_path):
    """roles/nmap_scan/tasks/report.yml (its report-tagged tasks) through ansible-playbook on a recorded run:
    the play prints "changes since RUN", writes the changes files, and a second run changes nothing."""
    make_run(tmp_path, "monday", OLD, NOW)
    new = make_run(tmp_path, "tuesday", NEW, NOW + 86400)
    (new / "merged.xml").unlink()  # the role's step merges it

    def play(compare_to: str, *extra: str, run: str = "tuesday") -> str:
        playbook = tmp_path / "play.yml"
        playbook.write_text(REPORT_PLAY.format(results=tmp_path, run=run, root=ROOT, compare_to=compare_to))
        proc = subprocess.run(["ansible-playbook", "-i", "localhost,", "-c", "local", "--tags", "report",
                               "-e", f"ansible_python_interpreter={sys.executable}", *extra, str(playbook)],
                              capture_output=True, text=True, cwd=ROOT, env=env(), check=False, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return " ".join(proc.stdout.split())

    first = play('""')
    assert f"changes since monday: {SUMMARY}" in first and " ".join(TEXT[0].split()) in first, first
    assert all((new / name).is_file() for name in sfdiff.CHANGES.values())
    stamps = {name: (new / name).stat().st_mtime_ns for name in sfdiff.CHANGES.values()}
    again = play('""')
    assert "changed=0" in again and f"changes since monday: {SUMMARY}" in again, again
    check = play('""', "--check")
    assert "changed=0" in check, check
    assert stamps == {name: (new / name).stat().st_mtime_ns for name in sfdiff.CHANGES.values()}
    off = play("false")
    assert "changes since" not in off and "changed=0" in off, off
    first_ever = play('""', run="monday")
    assert first_ever.count(sfdiff.NO_EARLIER) == 1, first_ever  # said once, not an error
    assert not (tmp_path / "monday" / "changes.json").exists()
