"""Python-side pre-check of probes files and rule files (what nmap would reject or misread)."""

from __future__ import annotations

import difflib
import re
import warnings

try:  # Python's own regex parser, for the shortest match of a pattern (re._parser since 3.11)
    from re import _parser as _sre_parser  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - Python 3.10
    import sre_parse as _sre_parser  # type: ignore[no-redef]
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from scanfleet import ScanfleetError
from scanfleet.probes.model import (
    MAXFALLBACKS,
    NMAP_LINE_BUFFER,
    WAITMS_RANGE,
    Directive,
    Line,
    Match,
    Origin,
    ProbesFile,
    RuleFile,
    encode,
)

# --------------------------------------------------------------------------------------------------
# Python-side pre-check


@dataclass(frozen=True)
class Problem:
    origin: Origin
    message: str
    severity: str = "error"  # or "warning"

    def __str__(self) -> str:
        return f"{self.origin}: {self.severity}: {self.message}"


def _check_ports(value: str) -> str | None:
    """Port list as nmap's setPortVector wants it ("21-25,53,80"); message or None."""
    for part in value.split(","):
        m = re.fullmatch(r"[ \t\r]*(\d+)[ \t\r]*(?:-(\d+)[ \t\r]*)?", part)
        if not m:
            return f"bad port list {value!r}: write it like 21-25,53,80"
        start = int(m.group(1))
        end = int(m.group(2)) if m.group(2) else start
        if start > 65535 or end > 65535 or end < start:
            return f"bad port range {part.strip()!r}: ports are 0..65535 and a range goes up"
    return None


# Python re errors that PCRE reports too; other errors may be Python's limits (e.g. PCRE allows
# (?<=ab|c), \Q..\E, \z): those are only warnings, nmap decides.
_SURE_REGEX_ERRORS = ("missing ), unterminated subpattern", "unbalanced parenthesis",
                      "unterminated character set", "nothing to repeat", "multiple repeat",
                      "bad character range", "bad escape (end of pattern)",
                      "min repeat greater than max repeat", "invalid group reference",
                      "unknown group name", "redefinition of group name")

_GROUP_REF = re.compile(r"\$(?:P|I|SUBST)?\(?(\d)")


def compile_regex(match: Match) -> re.Pattern[bytes]:
    """Compile a match's pattern with Python's re (bytes, like nmap); re.error if it cannot."""
    flags = (re.IGNORECASE if "i" in match.flags else 0) | (re.DOTALL if "s" in match.flags else 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # FutureWarning about PCRE-style "[[:alpha:]]" sets
        return re.compile(encode(match.pattern), flags)


def can_match_empty(match: Match) -> bool:
    """Whether the pattern of MATCH can match the empty string (its shortest match is zero-length).

    nmap 7.991 refuses to load such a line (PCRE2_INFO_MATCHEMPTY: "pattern matches zero-length string"); earlier
    versions load it and it then matches every response of its probe. Like PCRE's own test this is a static one:
    assertions (^, $, \\b, lookarounds) are zero-length, so m|^| and m|(?=x)| count as empty, and so does m|a*|.
    The pattern must compile with Python's re (compile_regex).
    """
    return _sre_parser.parse(encode(match.pattern)).getwidth()[0] == 0


def _check_match(m: Match) -> list[Problem]:
    problems: list[Problem] = []
    try:
        regex = compile_regex(m)
    except re.error as exc:
        sure = any(str(exc).startswith(s) for s in _SURE_REGEX_ERRORS)
        msg = f"regex of {m.service} does not compile: {exc}"
        if not sure:
            msg += " (Python's re; nmap's PCRE may still accept it: run 'scanfleet probes validate')"
        problems.append(Problem(m.origin, msg, "error" if sure else "warning"))
        regex = None
    if regex is not None and can_match_empty(m):
        problems.append(Problem(m.origin, f"regex m{m.delimiter}{m.pattern}{m.delimiter} of {m.service} can match the "
                                          "empty string: nmap 7.991 refuses to load the file (\"pattern matches "
                                          "zero-length string\"), earlier versions match every response with it; "
                                          "make it require at least one character (e.g. a+ instead of a*)"))
    for t in m.templates:
        if t.field == "cpe":
            if t.delimiter != "/":
                problems.append(Problem(m.origin, f"cpe:{t.delimiter}{t.value}{t.delimiter}: nmap 7.95 and "
                                                  "later accept only cpe:/.../"))
            if not re.match(r"[aho]:", t.value):
                problems.append(Problem(m.origin, f"cpe:/{t.value}/ should start with a:, h: or o:",
                                        "warning"))
            if t.flags not in ("", "a"):
                problems.append(Problem(m.origin, f"cpe flag {t.flags!r}: nmap knows only 'a'", "warning"))
        elif t.flags:
            problems.append(Problem(m.origin, f"flags {t.flags!r} after {t.field}{t.delimiter}..."
                                              f"{t.delimiter} mean nothing to nmap (a missing space?)",
                                    "warning"))
        if regex is not None:
            for ref in _GROUP_REF.findall(t.value):
                if int(ref) > regex.groups:
                    problems.append(Problem(m.origin, f"{t.field if t.field != 'cpe' else 'cpe:'}"
                                                      f"{t.delimiter}{t.value}{t.delimiter} uses ${ref} but "
                                                      f"the regex has {regex.groups} group(s)"))
    return problems


def check_line(line: Line) -> list[Problem]:
    """Problems of one line on its own (no cross-line context)."""
    problems: list[Problem] = []
    size = len(encode(line.content)) + 1
    if size > NMAP_LINE_BUFFER - 1:
        problems.append(Problem(line.origin, f"line is {size} bytes: nmap reads at most "
                                             f"{NMAP_LINE_BUFFER - 1} and would read the rest as a new "
                                             "line"))
    item = line.item
    if isinstance(item, Match):
        problems += _check_match(item)
    elif isinstance(item, Directive):
        value = item.value
        msg = None
        if item.name in ("ports", "sslports"):
            msg = _check_ports(value)
        elif item.name == "rarity":
            if not re.fullmatch(r"[ \t]*[1-9][ \t\r]*", value):
                msg = f"rarity {value.strip()!r}: must be a number from 1 to 9"
        elif item.name in ("totalwaitms", "tcpwrappedms"):
            if not re.fullmatch(r"[ \t]*\d+[ \t\r]*", value) or \
                    not WAITMS_RANGE[0] <= int(value) <= WAITMS_RANGE[1]:
                low, high = WAITMS_RANGE
                msg = f"{item.name} {value.strip()!r}: must be {low}..{high} milliseconds"
        elif item.name == "fallback" and not [n for n in re.split(r"[,\r\n\t ]+", value) if n]:
            msg = "fallback without probe names"
        elif item.name == "Exclude" and not value.strip():
            msg = "Exclude without ports"
        if msg:
            problems.append(Problem(item.origin, msg))
    return problems


def precheck_file(pf: ProbesFile, only: Callable[[Origin], bool] | None = None) -> list[Problem]:
    """Python-side checks of a parsed file (all lines, or those whose origin ONLY accepts)."""
    problems: list[Problem] = []
    wanted = only or (lambda _o: True)
    lines = pf.lines()
    for line in lines:
        if wanted(line.origin):
            problems += check_line(line)
    if lines and not lines[-1].text.endswith("\n") and lines[-1].kind == "match" and wanted(lines[-1].origin):
        problems.append(Problem(lines[-1].origin, "the last line has no line end: nmap 7.95 rejects a "
                                                  "match line without one"))
    for probe in pf.probes:
        for d in probe.directives:
            if d.name != "fallback" or not wanted(d.origin):
                continue
            names = [n for n in re.split(r"[,\r\n\t ]+", d.value) if n]
            for name in names:
                if pf.by_name(name, probe.protocol) is None:
                    hint = _similar_probes(name, probe.protocol, (p.key for p in pf.probes))
                    problems.append(Problem(d.origin, f"fallback {name!r} of probe {probe.label} names no "
                                                      f"probe; {hint}"))
            if len(names) > MAXFALLBACKS - 2:
                problems.append(Problem(d.origin, f"{len(names)} fallbacks: nmap allows at most "
                                                  f"{MAXFALLBACKS - 2}"))
    return problems


def precheck_rules(rf: RuleFile) -> list[Problem]:
    """Python-side checks of a rule file on its own (references are resolved only by merge)."""
    problems: list[Problem] = []
    for line in rf.lines():
        problems += check_line(line)
    return problems


def raise_on_errors(problems: list[Problem]) -> list[Problem]:
    """Raise ScanfleetError listing the errors among PROBLEMS; return the warnings."""
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        raise ScanfleetError("\n".join(f"{p.origin}: {p.message}" for p in errors))
    return problems


def _similar_probes(name: str, protocol: str, candidates: Iterable[tuple[str, str]]) -> str:
    keys = list(candidates)
    names = sorted({n for _, n in keys})
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.6)
    close += [n for n in names if n.lower() == name.lower() and n not in close]
    other = [p for p, n in keys if n == name and p != protocol]
    hints = []
    if other:
        hints.append(f"there is a {other[0]} probe of that name: write 'Probe {other[0]} {name}'")
    if close:
        hints.append("similar existing names: " + ", ".join(
            f"{p} {n}" for n in close for p, m in keys if m == n))
    if not hints:
        hints.append(f"no similar name among the {len(keys)} probes ('grep ^Probe' the stock file for "
                     "the list)")
    return "; ".join(hints)
