"""Tests of scanfleet.probes: parse / merge / check nmap-service-probes files.

The stock files are nmap's own (Debian source packages, see tests/conftest.py); validation runs
the real nmap 7.93 at /usr/bin/nmap inside a private network namespace (no traffic leaves it).
"""

from __future__ import annotations

import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from scanfleet import ScanfleetError, cli, probes
from tests.conftest import ROOT, nmap_source_tree, unavailable

FIXTURES = ROOT / "tests" / "fixtures" / "probes"
SEED = ROOT / "files" / "probes" / "seed.probes"
NMAP = "/usr/bin/nmap"


# --------------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module")
def stock_path() -> Path:
    return nmap_source_tree("7.93") / "nmap-service-probes"


@pytest.fixture(scope="module")
def stock_text(stock_path: Path) -> str:
    return probes.read_text(stock_path)


@pytest.fixture(scope="module")
def stock(stock_path: Path, stock_text: str) -> probes.ProbesFile:
    return probes.parse(stock_text, str(stock_path))


@pytest.fixture(scope="module")
def seed() -> probes.RuleFile:
    return probes.parse_rules_file(SEED)


NEW_PROBE_RULES = """\
# a new probe, a rule for it, and a rule for a stock probe
Probe TCP ScanfleetHello q|HELLO\\r\\n|
rarity 8
ports 7777
fallback GetRequest
match scanfleet-hello m|^HELLO-BACK ([\\d.]+)\\r\\n| p/Hello server/ v/$1/

Probe TCP GetRequest
match scanfleet-http m|^HTTP/1\\.[01] 200 .*X-Scanfleet-Test: yes\\r\\n|s p/Scanfleet test httpd/
"""


@pytest.fixture(scope="module")
def extra() -> probes.RuleFile:
    return probes.parse_rules(NEW_PROBE_RULES, "extra.probes")


@pytest.fixture(scope="module")
def merged(stock: probes.ProbesFile, seed: probes.RuleFile) -> probes.MergeResult:
    return probes.merge(stock, [seed])


@pytest.fixture(scope="module")
def nmap_ns() -> str:
    """The stock nmap, if it exists and a network namespace can be made here (else skip; under CI=true, fail)."""
    if not Path(NMAP).is_file() or not shutil.which("unshare") or not shutil.which("ip"):
        unavailable(f"needs {NMAP}, unshare and ip (Debian packages nmap, util-linux, iproute2)")
    if subprocess.run(["unshare", "--net", "true"], capture_output=True, check=False).returncode != 0:
        unavailable("cannot create a network namespace here (unshare --net; needs root)")
    return NMAP


def strip_blocks(text: str) -> str:
    """The merged text without scanfleet blocks (written independently of probes.unmerge)."""
    out, inside = [], False
    for line in text.split("\n"):
        if line.startswith("# scanfleet: begin "):
            assert not inside
            inside = True
        elif line == "# scanfleet: end":
            assert inside
            inside = False
        elif not inside:
            out.append(line)
    assert not inside
    return "\n".join(out)


# --------------------------------------------------------------------------------------------------
# Parser on nmap's own files


def test_round_trip_of_stock_file(nmap_tree: Path) -> None:
    path = nmap_tree / "nmap-service-probes"
    raw = path.read_bytes()
    pf = probes.parse_file(path)
    assert probes.encode(probes.serialize(pf)) == raw
    # The structure agrees with a plain scan of the lines ...
    lines = raw.split(b"\n")
    assert [p.label for p in pf.probes] == [
        " ".join(ln.decode().split(" ")[1:3]) for ln in lines if ln.startswith(b"Probe ")]
    assert sum(len(p.matches) for p in pf.probes) == sum(
        ln.startswith((b"match ", b"softmatch ")) for ln in lines)
    # ... and every line knows where it comes from.
    for line in pf.lines():
        assert line.origin.path == str(path)
        assert probes.encode(line.content) == lines[line.origin.line - 1]


def _find(pf: probes.ProbesFile, service: str, *needles: str) -> probes.Match:
    found = [m for p in pf.probes for m in p.matches
             if m.service == service and all(n in m.pattern for n in needles)]
    assert len(found) == 1, (service, needles, found)
    return found[0]


def test_parse_every_version_field_on_real_lines(stock: probes.ProbesFile) -> None:
    telnet = _find(stock, "telnet", "Welcome to D-Link Print Server", "Please Enter Password")
    assert (telnet.soft, telnet.delimiter, telnet.flags) == (False, "|", "s")
    assert telnet.product == "D-Link $2 print server telnetd"
    assert telnet.info == "FW version $3; MAC $4; Uptime $5"
    assert telnet.devicetype == "print server"
    assert telnet.hostname == "$1"
    assert telnet.cpe == ["cpe:/h:dlink:$2"]
    assert telnet.templates[-1].flags == "a"
    assert probes.compile_regex(telnet).groups == 5

    acap = _find(stock, "acap", "CommuniGate Pro ACAP")
    assert acap.fields == {"p": "CommuniGate Pro ACAP server", "v": "$1",
                           "i": "for mail client preference sharing"}
    assert acap.cpe == ["cpe:/a:stalker:communigate_pro:$1"]
    assert [t.field for t in acap.templates] == ["p", "v", "i", "cpe"]

    mq = _find(stock, "apachemq", "PlatformDetails")
    assert mq.ostype == "Linux $2"
    assert mq.cpe == ["cpe:/a:apache:activemq:$4", "cpe:/o:linux:linux_kernel:$2"]

    axis = _find(stock, "ftp", "Axis ([\\w._ -]+) Network Camera(?: version)? ")
    assert (axis.flags, axis.version, axis.devicetype) == ("i", "$2", "webcam")

    soft = [m for p in stock.probes for m in p.matches if m.soft and m.service == "apachemq"]
    assert len(soft) == 1 and soft[0].product == "ActiveMQ OpenWire transport"


def test_parse_other_delimiters_on_real_lines(stock: probes.ProbesFile) -> None:
    avg = _find(stock, "avg", "AVG daemon mode scanner")
    assert avg.delimiter == "=" and avg.pattern.endswith(r"220 Ready\r\n")
    assert avg.product == "AVG daemon mode"
    # '|' inside a %-delimited regex is just a character
    swift = _find(stock, "ftp", "SFXP")
    assert swift.delimiter == "%" and swift.pattern.count("|") == 3 and swift.product == "SwiftFXP"
    # a version field with its own delimiter, and a regex delimited by '@'
    sonic = _find(stock, "http", "__extraweb__EPCmicrointerrogatorpage")
    assert sonic.delimiter == "@"
    assert [(t.field, t.delimiter) for t in sonic.templates] == [("p", "/"), ("i", "|"), ("h", "/")]
    assert sonic.info == 'resource: $SUBST(1,"%25252F","/")'
    # nmap 7.93 still has a cpe with '|' (and a '/' inside): parsed, and flagged for nmap 7.95+
    siemens = _find(stock, "http", "405 Method Not Allowed", "Allow: GET, POST\\r\\nContent-Type: text/html")
    assert siemens.cpe == ["cpe:/h:siemens:315-2pn/dp"]
    assert siemens.product == "Siemens 315-2PN/DP programmable logic controller http admin"
    assert any("7.95" in p.message for p in probes.check_line(
        next(ln for ln in stock.lines() if ln.item is siemens)))


def test_parse_every_directive_on_real_lines(stock: probes.ProbesFile) -> None:
    assert stock.exclude is not None and stock.exclude.value == "T:9100-9107"
    null = stock.null_probe
    assert null is not None and null.label == "TCP NULL" and null.payload == ""
    assert null.directive("totalwaitms") == "6000" and null.directive("tcpwrappedms") == "3000"
    assert null.effective_waitms("totalwaitms") == 6000
    get = stock.find("TCP", "GetRequest")
    assert get is not None and get.line.payload_bytes == b"GET / HTTP/1.0\r\n\r\n"
    assert get.directive("rarity") == "1"
    assert get.directive("ports").startswith("1,70,79,80-85,88,")
    assert get.directive("sslports").startswith("443,993,995,")
    assert get.effective_waitms("totalwaitms") == probes.DEFAULT_TOTALWAITMS  # no directive
    options = stock.find("TCP", "HTTPOptions")
    assert options is not None and options.directive("fallback") == "GetRequest"
    assert stock.find("UDP", "RPCCheck").protocol == "UDP"  # type: ignore[union-attr]
    assert stock.find("TCP", "RPCCheck").payload.startswith(r"\x80\0\0\x28")  # type: ignore[union-attr]
    # Every directive nmap knows occurs in the stock file and is parsed as such.
    names = {d.name for p in stock.probes for d in p.directives}
    assert names == set(probes.PROBE_DIRECTIVES)


def test_no_payload_flag_of_nmap_795() -> None:
    pf = probes.parse_file(nmap_source_tree("7.95") / "nmap-service-probes")
    sqlping = pf.find("UDP", "Sqlping")
    assert sqlping is not None and sqlping.line.no_payload and sqlping.line.payload_bytes == b"\x02"
    assert not pf.find("TCP", "GetRequest").line.no_payload  # type: ignore[union-attr]


@pytest.mark.parametrize(("text", "line", "expect"), [
    ("Probe TCP A q|x|\nmatch a m|x|\nProbe TCP A q|y|\n", 3, "duplicate probe TCP A: defined at t:1"),
    ("Probe TCP A q|x|\nProbe UDP A q|x|\nProbe TCP A q|x|\n", 3, "duplicate probe TCP A"),
    ("Probe TCP A q|x|\nratity 5\n", 2, "unknown directive 'ratity': did you mean 'rarity'?"),
    ("Probe TCP A q|x|\n match a m|x|\n", 2, "remove the leading whitespace"),
    ("Probe TCP A q|x|\nmatch a m|x| p/unterminated\n", 2, "unterminated p/"),
    ("Probe TCP A q|x|\nmatch a m|x|q\n", 2, "unknown regex flag"),
    ("Probe TCP A q|x|\nmatch a m|x| z/what/\n", 2, "unknown field 'z'"),
    ("Probe TCP A q|x|\nmatch a m|x|p/x/\n", 2, "separate the fields with a space"),
    ("Probe TCP A\n", 1, "malformed Probe line: nothing after the probe name"),
    ("Probe TCP A q|x\n", 1, "no closing '|'"),
    ("Probe TCP A q|\\x4|\n", 1, "bad escaping"),
    ("Probe TCP A q||\nProbe TCP B q||\n", 2, "only one NULL probe"),
    ("Probe TCP A q|x|\nExclude T:1\n", 2, "Exclude must come before the first Probe"),
    ("match a m|x|\n", 1, "before the first Probe line"),
    ("Probe TCP A q|x|\n \n", 2, "only whitespace"),
])
def test_parse_errors_name_file_and_line(text: str, line: int, expect: str) -> None:
    with pytest.raises(ScanfleetError) as exc:
        probes.parse(text, "t")
    assert str(exc.value).startswith(f"t:{line}: ")
    assert expect in str(exc.value)


# --------------------------------------------------------------------------------------------------
# Merge


def test_rules_go_ahead_of_the_stock_rules_of_their_probe(stock: probes.ProbesFile, seed: probes.RuleFile,
                                                          merged: probes.MergeResult) -> None:
    out = merged.parsed
    # where the seed file puts its rules (read from the seed itself)
    wanted: dict[str, list[str]] = {}
    target = "TCP NULL"
    for line in SEED.read_text().splitlines():
        if line.startswith("Probe "):
            target = " ".join(line.split()[1:3])
        elif line.startswith(("match ", "softmatch ")):
            wanted.setdefault(target, []).append(line)
    assert merged.stats.rules_per_probe == {k: len(v) for k, v in wanted.items()}
    assert set(wanted) == {"TCP NULL", "TCP GetRequest", "TCP RPCCheck"}
    for probe in out.probes:
        ours = wanted.get(probe.label, [])
        rules = [ln for ln in probe.body if ln.kind == "match"]
        # the custom rules come first, in file order, then the stock rules unchanged
        assert [ln.content for ln in rules[:len(ours)]] == ours
        assert all(ln.origin.path == str(SEED) for ln in rules[:len(ours)])
        assert [ln.item for ln in rules[len(ours):]] == stock.find(*probe.key).matches  # type: ignore[union-attr]
        if ours:
            # ... right after the Probe line and its directives, framed by the markers
            begin = next(i for i, ln in enumerate(probe.body) if ln.text.startswith("# scanfleet: begin"))
            assert probe.body[begin].text == "# scanfleet: begin rules from seed.probes\n"
            assert probe.body[begin + len(ours) + 1].text == "# scanfleet: end\n"
            directives = [i for i, ln in enumerate(probe.body) if ln.kind == "directive"]
            assert all(i < begin for i in directives)
            assert begin == (directives[-1] + 1 if directives else 0)


def test_merge_changes_nothing_else(stock_text: str, merged: probes.MergeResult) -> None:
    assert strip_blocks(merged.text) == stock_text
    assert probes.unmerge(merged.text) == stock_text
    # origins: stock lines keep their stock line number, rule lines their rule file line
    seed_lines = SEED.read_text().split("\n")
    stock_lines = stock_text.split("\n")
    for n, line in enumerate(merged.text.split("\n")[:-1], 1):
        origin = merged.origin_of(n)
        assert origin is not None
        if origin.path == str(SEED):
            assert seed_lines[origin.line - 1] == line
        elif origin.path != probes.GENERATED.path:
            assert stock_lines[origin.line - 1] == line


def test_new_probe_is_appended_after_the_last_stock_probe(stock: probes.ProbesFile, seed: probes.RuleFile,
                                                          extra: probes.RuleFile) -> None:
    result = probes.merge(stock, [extra, seed])  # merged in file-name order whatever the order given
    assert result.stats.rule_files == [extra.path, seed.path]
    out = result.parsed
    assert [p.label for p in out.probes] == [p.label for p in stock.probes] + ["TCP ScanfleetHello"]
    new = out.probes[-1]
    assert new.line.payload_bytes == b"HELLO\r\n"
    assert (new.directive("rarity"), new.directive("ports"), new.directive("fallback")) == \
        ("8", "7777", "GetRequest")
    assert [m.service for m in new.matches] == ["scanfleet-hello"]
    assert result.stats.probes_added == ["TCP ScanfleetHello"]
    # both files' blocks in GetRequest, extra.probes first (sorted by name), then the stock rules
    get = out.find("TCP", "GetRequest")
    assert get is not None
    services = [m.service for m in get.matches]
    n_seed = result.stats.rules_per_probe["TCP GetRequest"] - 1
    assert services[0] == "scanfleet-http"
    assert [m.origin.path for m in get.matches[1:1 + n_seed]] == [str(SEED)] * n_seed
    assert strip_blocks(result.text) == stock.serialize()


def test_merge_is_idempotent(stock: probes.ProbesFile, stock_text: str, seed: probes.RuleFile,
                             extra: probes.RuleFile, merged: probes.MergeResult) -> None:
    again = probes.merge(merged.text, [seed])
    assert again.text == merged.text
    assert again.stats.previous_blocks_removed == 3 and again.stats.rules_added == merged.stats.rules_added
    opts = {"drop_exclude": True, "totalwaitms": 8000, "tcpwrappedms": 4000}
    once = probes.merge(stock, [seed, extra], **opts)
    twice = probes.merge(once.text, [seed, extra], **opts)
    assert twice.text == once.text
    # and an earlier merge with other options or rules is replaced, not stacked
    assert probes.merge(once.text, [seed]).text == merged.text
    assert probes.unmerge(once.text) == stock_text


def test_option_drop_exclude(stock: probes.ProbesFile, stock_text: str) -> None:
    result = probes.merge(stock, [], drop_exclude=True)
    assert stock.exclude is not None and result.parsed.exclude is None
    assert result.stats.exclude_dropped and result.stats.rules_added == 0
    assert strip_blocks(result.text) == stock_text.replace("Exclude T:9100-9107\n", "")


def test_option_totalwaitms_and_tcpwrappedms(stock: probes.ProbesFile, stock_text: str,
                                             extra: probes.RuleFile) -> None:
    result = probes.merge(stock, [extra], totalwaitms=8000, tcpwrappedms=4000)
    out = result.parsed
    assert {p.label: p.effective_waitms("totalwaitms") for p in out.probes} == \
        {p.label: 8000 for p in out.probes}
    assert out.null_probe.effective_waitms("tcpwrappedms") == 4000  # type: ignore[union-attr]
    # tcpwrappedms is only given to the NULL probe (nmap uses it nowhere else)
    assert [p.label for p in out.probes if p.directive("tcpwrappedms") is not None] == ["TCP NULL"]
    # only totalwaitms / tcpwrappedms lines differ from the stock file outside the blocks
    changed = Counter(stock_text.split("\n")) - Counter(strip_blocks(result.text).split("\n"))
    assert changed == Counter(ln for ln in stock_text.split("\n")
                              if ln.startswith(("totalwaitms ", "tcpwrappedms ")))
    assert probes.unmerge(result.text) == stock_text


def test_no_options_adds_only_rules(stock_text: str, merged: probes.MergeResult) -> None:
    added = list((Counter(merged.text.split("\n")) - Counter(stock_text.split("\n"))).elements())
    assert strip_blocks(merged.text) == stock_text  # stock lines all there, in order
    assert all(ln.startswith("# scanfleet: ") or ln.startswith(("match ", "softmatch ")) for ln in added)
    assert sum(ln.startswith("match ") for ln in added) == merged.stats.rules_added


@pytest.mark.parametrize("value", [99, 300001, "8000"])
def test_option_out_of_range(stock: probes.ProbesFile, value: object) -> None:
    with pytest.raises(ScanfleetError, match="totalwaitms"):
        probes.merge(stock, [], totalwaitms=value)  # type: ignore[arg-type]


def test_rule_file_tolerates_bom_crlf_and_blank_space(stock: probes.ProbesFile) -> None:
    rules = probes.parse_rules("\ufeff# edited on Windows\r\nmatch crlf m|^CRLF| p/CRLF/\r\n  \r\n"
                               "Probe TCP GetRequest\r\nmatch crlf-http m|^X|", "win.probes")
    result = probes.merge(stock, [rules])
    assert [m.service for m in result.parsed.null_probe.matches[:1]] == ["crlf"]  # type: ignore[union-attr]
    added = [ln for ln in result.text.split("\n") if ln.startswith("match crlf")]
    assert added == ["match crlf m|^CRLF| p/CRLF/", "match crlf-http m|^X|"]


def test_docstring_example_is_a_valid_rule_file(stock: probes.ProbesFile) -> None:
    doc = probes.__doc__ or ""
    example = doc[doc.index("Example::") + len("Example::"):doc.index("* ``match``")].strip("\n")
    rules = probes.parse_rules("\n".join(ln[4:] for ln in example.split("\n")) + "\n", "doc.probes")
    result = probes.merge(stock, [rules])
    assert result.stats.rules_added == 3 and result.stats.probes_added == ["TCP MyHello"]
    assert probes.precheck_file(result.parsed, only=lambda o: o.path == "doc.probes") == []


@pytest.mark.parametrize(("text", "line", "expect"), [
    ("# scanfleet: begin rules from x.probes\nmatch a m|x|\n", 1, "never closed"),
    ("# scanfleet: begin a\n# scanfleet: begin b\n# scanfleet: end\n", 2, "not closed before"),
    ("# x\n# scanfleet: end\n", 2, "without a matching"),
])
def test_broken_markers_of_an_earlier_merge(text: str, line: int, expect: str) -> None:
    with pytest.raises(ScanfleetError) as exc:
        probes.merge(text + "Probe TCP NULL q||\n", [], stock_path="m")
    assert str(exc.value).startswith(f"m:{line}: ") and expect in str(exc.value)


# --------------------------------------------------------------------------------------------------
# Bad rule files


@pytest.mark.parametrize(("name", "line", "expect"), [
    ("unknown-directive.probes", 4, ["unknown directive 'mtach': did you mean 'match'?"]),
    ("missing-delimiter.probes", 3, ["unterminated p/"]),
    ("no-such-probe.probes", 2, ["no probe TCP GetRequets in", "similar existing names: TCP GetRequest"]),
    ("malformed-probe.probes", 2, ["malformed Probe line", "TCP or UDP"]),
    ("other-probe-string.probes", 2, ["probe TCP GetRequest already exists at", "q|GET / HTTP/1.0"]),
    ("stock-directive.probes", 3, ["directive 'rarity' for stock probe TCP GetRequest"]),
    ("bad-regex.probes", 4, ["missing ), unterminated subpattern"]),  # Python pre-check
    ("empty-match.probes", 4, ["regex m|a*| of x can match the empty string: nmap 7.991 refuses"]),
])
def test_bad_rule_file_names_file_and_line(stock_path: Path, name: str, line: int, expect: list[str]) -> None:
    path = FIXTURES / name
    with pytest.raises(ScanfleetError) as exc:
        probes.merge_files(stock_path, [SEED, path])
    assert str(exc.value).startswith(f"{path}:{line}: ")
    for text in expect:
        assert text in str(exc.value)


def test_precheck_findings(stock: probes.ProbesFile) -> None:
    rules = probes.parse_rules(
        "match a m%(?<=ab|c)x% p/x/\n"        # PCRE accepts, Python's re cannot: a warning only
        "match b m|^(x)| v/$2/\n"             # $2 with one group
        "Probe TCP Fresh q|x|\n"
        "ports 80,90-85\n"                    # range going down
        "rarity 10\n"
        "fallback GetRequets\n"               # no such probe
        "match c m|^x|\n", "pre.probes")
    result = probes.merge(stock, [rules])
    problems = probes.precheck_file(result.parsed, only=lambda o: o.path == "pre.probes")
    by_line = {(p.origin.line, p.severity) for p in problems}
    assert by_line == {(1, "warning"), (2, "error"), (4, "error"), (5, "error"), (6, "error")}
    assert "GetRequest" in next(p.message for p in problems if p.origin.line == 6)


@pytest.mark.parametrize(("pattern", "empty"), [
    ("a*", True), ("^", True), ("^x?$", True), ("(?=x)", True), (r"\bfoo|", True), ("(a|)", True),
    ("x", False), ("^x", False), ("a+", False), (r"^SSH-([\d.]+)", False), ("(?:a|b)c*", False),
])
def test_precheck_refuses_a_pattern_that_can_match_the_empty_string(pattern: str, empty: bool) -> None:
    """nmap 7.991 refuses to load a match line whose pattern can match the empty string (a static test, as PCRE2's
    PCRE2_INFO_MATCHEMPTY: assertions are zero-length); the controller-side pre-check refuses it first."""
    rules = probes.parse_rules(f"# a comment\nmatch x m%{pattern}% p/X/\n", "empty.probes")
    problems = probes.precheck_rules(rules)
    if empty:
        with pytest.raises(ScanfleetError) as exc:
            probes.raise_on_errors(problems)
        assert str(exc.value) == (f"empty.probes:2: regex m%{pattern}% of x can match the empty string: nmap 7.991 "
                                  "refuses to load the file (\"pattern matches zero-length string\"), earlier "
                                  "versions match every response with it; make it require at least one character "
                                  "(e.g. a+ instead of a*)")
    else:
        assert problems == []


def test_no_stock_pattern_and_none_of_ours_can_match_the_empty_string(nmap_tree: Path) -> None:
    """Every supported version's own probes file passes the empty-match check (7.991 loads its file), and so do
    our rule files (files/probes), merged into it."""
    stock = probes.parse_file(nmap_tree / "nmap-service-probes")
    assert [str(p) for p in probes.precheck_file(stock) if "empty string" in p.message] == []
    rules = sorted((ROOT / "files" / "probes").glob("*.probes"))
    assert rules
    result = probes.merge(stock, [probes.parse_rules_file(path) for path in rules])
    assert probes.precheck_file(result.parsed, only=lambda o: o.path in {str(p) for p in rules}) == []


# --------------------------------------------------------------------------------------------------
# Validation with the real nmap


def test_nmap_accepts_the_merged_seed(tmp_path: Path, merged: probes.MergeResult, nmap_ns: str) -> None:
    path = tmp_path / "merged"
    path.write_bytes(probes.encode(merged.text))
    probes.validate_with_nmap(path, nmap_ns, merged.origins)  # no exception


def test_nmap_rejects_bad_regex_at_the_rule_line(tmp_path: Path, stock: probes.ProbesFile,
                                                nmap_ns: str) -> None:
    rule = FIXTURES / "bad-regex.probes"
    # merge without the Python pre-check, to see that nmap itself catches it, and at which line
    result = probes.merge(stock, [probes.parse_rules_file(rule)])
    path = tmp_path / "merged"
    path.write_bytes(probes.encode(result.text))
    with pytest.raises(ScanfleetError) as exc:
        probes.validate_with_nmap(path, nmap_ns, result.origins)
    message = str(exc.value)
    assert message.startswith(f"{rule}:4: nmap ({nmap_ns}) rejects this line: ")
    assert "illegal regexp" in message and "missing )" in message
    assert "match broken m|(|" in message


def test_nmap_error_without_line_number_is_mapped(tmp_path: Path, stock: probes.ProbesFile,
                                                  nmap_ns: str) -> None:
    # nmap names no line for an unknown fallback; the error still points at the rule file's line.
    rules = probes.parse_rules("Probe TCP Zed q|zed\\r\\n|\nrarity 9\nfallback Nope\nmatch zed m|^Z|\n",
                               "fb.probes")
    result = probes.merge(stock, [rules])
    assert [(p.origin.line, p.severity) for p in probes.precheck_file(
        result.parsed, only=lambda o: o.path == "fb.probes")] == [(3, "error")]
    path = tmp_path / "merged"
    path.write_bytes(probes.encode(result.text))
    with pytest.raises(ScanfleetError) as exc:
        probes.validate_with_nmap(path, nmap_ns, result.origins)
    assert str(exc.value).startswith("fb.probes:3: nmap")
    assert "Unknown fallback specified in Probe Zed: 'Nope'" in str(exc.value)


# --------------------------------------------------------------------------------------------------
# Command line


def run_cli(*args: str) -> int:
    return cli.main(["probes", *args])


def test_cli_merge_writes_the_merge(tmp_path: Path, stock_path: Path, merged: probes.MergeResult,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "nmap-service-probes"
    assert run_cli("merge", "--stock", str(stock_path), "--rules", str(SEED), "-o", str(out)) == 0
    assert out.read_bytes() == probes.encode(merged.text)
    assert "6 rule(s) from 1 file(s)" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nmap-service-probes"]


def test_cli_merge_writes_nothing_on_error(tmp_path: Path, stock_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "nmap-service-probes"
    bad = FIXTURES / "unknown-directive.probes"
    assert run_cli("merge", "--stock", str(stock_path), "--rules", str(SEED), str(bad), "-o", str(out)) == 2
    assert f"{bad}:4: unknown directive" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
    out.write_text("previous content\n")
    assert run_cli("merge", "--stock", str(stock_path), "--rules", str(bad), "-o", str(out)) == 2
    assert out.read_text() == "previous content\n"
    assert list(tmp_path.iterdir()) == [out]


def test_cli_merge_with_nmap_writes_nothing_when_nmap_rejects(tmp_path: Path, stock_path: Path, nmap_ns: str,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "nmap-service-probes"
    out.write_text("previous content\n")
    bad = FIXTURES / "pcre-only-bad-regex.probes"
    # The Python pre-check lets this regex through; nmap's PCRE does not.
    assert probes.precheck_rules(probes.parse_rules_file(bad)) == []
    rc = run_cli("merge", "--stock", str(stock_path), "--rules", str(bad), "-o", str(out), "--nmap", nmap_ns)
    assert rc == 2
    err = capsys.readouterr().err
    assert f"{bad}:2: nmap ({nmap_ns}) rejects this line" in err and "number too big" in err
    assert out.read_text() == "previous content\n"
    assert list(tmp_path.iterdir()) == [out]


def test_cli_check(stock_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("check", "--stock", str(stock_path), str(SEED)) == 0
    assert "0 error(s)" in capsys.readouterr().out
    bad = FIXTURES / "bad-regex.probes"
    assert run_cli("check", str(bad), str(FIXTURES / "missing-delimiter.probes")) == 1
    out = capsys.readouterr().out
    assert f"{bad}:4: error: regex of broken does not compile" in out
    assert f"{FIXTURES / 'missing-delimiter.probes'}:3: match half-open: unterminated p/" in out


def test_cli_validate(tmp_path: Path, stock: probes.ProbesFile, nmap_ns: str,
                      capsys: pytest.CaptureFixture[str]) -> None:
    result = probes.merge(stock, [probes.parse_rules_file(FIXTURES / "bad-regex.probes")])
    path = tmp_path / "merged"
    path.write_bytes(probes.encode(result.text))
    # Without the origins of the merge, the error names the merged file's line and its block.
    assert run_cli("validate", "--nmap", nmap_ns, str(path)) == 2
    n = result.text.split("\n").index("match broken m|(| p/Broken/") + 1
    err = capsys.readouterr().err
    assert f"{path}:{n} (in the scanfleet block 'rules from bad-regex.probes'): nmap ({nmap_ns}) " \
           "rejects this line" in err
