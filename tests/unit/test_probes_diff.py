"""What --diff shows when a changed probes file is pushed: the rule changes per probe (scanfleet.probes.diff and
the probes module's state=compared), on nmap 7.93's own stock file merged with the project's rule files."""

from __future__ import annotations

import difflib
import json
import os
import subprocess
from pathlib import Path

import pytest

from scanfleet import probes
from tests.conftest import nmap_source_tree

ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT / "files" / "probes" / "seed.probes"
PIKE = ("match http m|^HTTP/1\\.[01] \\d\\d\\d .*Server: Pike v([\\d.]+) release (\\d+): HTTP Server module\\r\\n|s "
        "p/Pike http server/ v/$1/ i/Release $2/")
NEW = "match scanfleet-test m|^HTTP/1\\.[01] 200 .*X-Scanfleet: yes\\r\\n|s p/Scanfleet test httpd/"


@pytest.fixture(scope="module")
def stock() -> probes.ProbesFile:
    return probes.parse_file(nmap_source_tree("7.93") / "nmap-service-probes")


def merged(stock: probes.ProbesFile, seed_text: str) -> probes.ProbesFile:
    text = probes.merge(stock, [probes.parse_rules(seed_text, "seed.probes")]).text
    return probes.parse(text, "merged")


def edited_seed() -> str:
    """seed.probes with one GetRequest rule replaced by another, and a comment changed."""
    text = SEED.read_text()
    assert PIKE + "\n" in text, "seed.probes changed: update PIKE in this test"
    return text.replace(PIKE + "\n", NEW + "\n").replace("#", "# edited:", 1)


def test_first_push_shows_every_custom_rule_as_added(stock):
    after = merged(stock, SEED.read_text())
    changes = probes.rule_changes(stock, after)
    expected = sum(1 for line in SEED.read_text().splitlines() if line.startswith(("match ", "softmatch ")))
    assert sum(len(c.added) for c in changes) == expected
    assert not any(c.removed for c in changes)
    assert {c.probe for c in changes} <= {p.label for p in stock.probes}
    assert PIKE in next(c for c in changes if c.probe == "TCP GetRequest").added


def test_changed_rule_file_shows_only_the_changed_rules(stock):
    before, after = merged(stock, SEED.read_text()), merged(stock, edited_seed())
    changes = probes.rule_changes(before, after)
    assert [c.as_dict() for c in changes] == [
        {"probe": "TCP GetRequest", "status": "changed", "removed": [PIKE], "added": [NEW]}]
    assert probes.diff_summary(changes) == "1 probe(s) changed: 1 line(s) added, 1 removed"
    diff = probes.ansible_diff(changes, "host: current", "controller: merged")
    lines = list(difflib.unified_diff(diff["before"].splitlines(), diff["after"].splitlines(), lineterm=""))
    assert " # TCP GetRequest (changed)" in lines and f"-{PIKE}" in lines and f"+{NEW}" in lines


def test_same_rules_and_moved_rules_are_no_change(stock):
    before = merged(stock, SEED.read_text())
    comment_only = SEED.read_text().replace("#", "# reworded:", 1)
    assert probes.rule_changes(before, merged(stock, comment_only)) == []
    # a new probe is reported as added, a probe that is gone as removed
    extra = SEED.read_text() + "\nProbe TCP ScanfleetHello q|HELLO\\r\\n|\nrarity 8\nmatch hello m|^HELLO|\n"
    added = probes.rule_changes(before, merged(stock, extra))
    assert [(c.probe, c.status, c.added) for c in added] == [
        ("TCP ScanfleetHello", "added",
         ["Probe TCP ScanfleetHello q|HELLO\\r\\n|", "rarity 8", "match hello m|^HELLO|"])]
    assert [c.status for c in probes.rule_changes(merged(stock, extra), before)] == ["removed"]


def test_module_shows_the_rule_diff_under_diff_and_check(stock, tmp_path):
    before, after = tmp_path / "current.probes", tmp_path / "merged.probes"
    before.write_text(probes.serialize(merged(stock, SEED.read_text())))
    after.write_text(probes.serialize(merged(stock, edited_seed())))
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg")}
    result = subprocess.run(
        ["ansible", "localhost", "-c", "local", "--check", "--diff", "-m", "scanfleet.fleet.probes",
         "-a", json.dumps({"state": "compared", "before": str(before), "dest": str(after)})],
        capture_output=True, text=True, cwd=ROOT, env=env, check=False, timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert f"-{PIKE}" in output and f"+{NEW}" in output and "CHANGED" in output, output
    same = subprocess.run(
        ["ansible", "localhost", "-c", "local", "--diff", "-m", "scanfleet.fleet.probes",
         "-a", json.dumps({"state": "compared", "before": str(before), "dest": str(before)})],
        capture_output=True, text=True, cwd=ROOT, env=env, check=False, timeout=120)
    assert same.returncode == 0 and "SUCCESS" in same.stdout and "-match" not in same.stdout, same.stdout
