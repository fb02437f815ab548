"""The probes file of pass 2 (scanfleet.probes.null_only): the NULL probe alone, every rule of it kept, and nmap
loads it (Debian's nmap 7.93 in a private network namespace, as test_probes.py does)."""

from __future__ import annotations

from pathlib import Path

import pytest

from scanfleet import ScanfleetError, cli, probes
from tests.conftest import ROOT
from tests.unit.test_probes import nmap_ns, stock_path  # noqa: F401 (fixtures)

RULES = ROOT / "files" / "probes"


def test_null_only_keeps_the_preamble_and_the_null_probe_whole(stock_path):  # noqa: F811
    stock = probes.parse_file(stock_path)
    merged = probes.merge_files(stock_path, [RULES])
    cut = probes.null_only(merged.parsed)
    assert [p.label for p in cut.probes] == ["TCP NULL"]
    assert cut.preamble == merged.parsed.preamble and cut.exclude is not None  # pass 2 skips what pass 1 skipped
    null = merged.parsed.null_probe
    assert cut.probes[0].lines() == null.lines()  # every line of it, with its origin
    ours = [m for m in null.matches if m.origin.path.startswith(str(RULES))]
    assert ours, "files/probes holds NULL probe rules"
    assert len(null.matches) == len(stock.null_probe.matches) + len(ours)
    assert {m.soft for m in null.matches} == {True, False}


def test_null_only_refuses_a_file_without_the_null_probe():
    rules = probes.parse("Probe TCP GetRequest q|GET / HTTP/1.0\\r\\n\\r\\n|\nmatch http m|^HTTP/1|\n", "x")
    with pytest.raises(ScanfleetError, match=r"x: no 'Probe TCP NULL q\|\|' section"):
        probes.null_only(rules)


def test_null_only_command_writes_a_file_nmap_loads(stock_path, nmap_ns, tmp_path, capsys):  # noqa: F811
    merged = tmp_path / "merged"
    assert cli.main(["probes", "merge", "--stock", str(stock_path), "--rules", str(RULES), "-o", str(merged)]) == 0
    out = tmp_path / "null.probes"
    assert cli.main(["probes", "null-only", str(merged), "-o", str(out), "--nmap", nmap_ns]) == 0
    said = capsys.readouterr().out.splitlines()[-1]
    assert said.startswith(f"{out}: the NULL probe of {merged} alone, ") and said.endswith(f"accepted by {nmap_ns}")
    written = probes.parse_file(out)
    assert [p.label for p in written.probes] == ["TCP NULL"]
    assert probes.read_text(out) == written.serialize()


def test_null_only_command_names_a_file_nmap_refuses(stock_path, nmap_ns, tmp_path, capsys):  # noqa: F811
    bad = tmp_path / "bad"
    bad.write_text(Path(stock_path).read_text(errors="surrogateescape").replace(
        "totalwaitms 6000", "totalwaitms 99", 1), errors="surrogateescape")
    out = tmp_path / "null.probes"
    assert cli.main(["probes", "null-only", str(bad), "-o", str(out), "--nmap", nmap_ns]) == 2
    assert "totalwaitms" in capsys.readouterr().err
    assert not out.exists()
