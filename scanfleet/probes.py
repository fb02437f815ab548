r"""Parse, merge and validate nmap ``nmap-service-probes`` files.

The stock file
==============

``parse(text, path)`` turns an ``nmap-service-probes`` file into a :class:`ProbesFile`: the lines
before the first ``Probe`` line (comments and the ``Exclude`` directive) and the probes in file order.
Each :class:`Probe` keeps its ``Probe`` line and every line of its section (directives, ``match`` and
``softmatch`` rules, comments, blank lines) as :class:`Line` objects holding the raw text and the
line's :class:`Origin` (path, line number).  ``serialize(parse(text)) == text`` byte for byte.

The grammar accepted is what both nmap 7.93 (PCRE) and 7.95+ (PCRE2) accept; where the two differ
(nmap 7.95 wants a space after a field's flags and at most three flag letters) the stricter rule is
used, so that a file accepted here loads in every supported nmap.  One exception: ``cpe:`` with
another delimiter than ``/``, which 7.93's own file has once, is parsed and reported by the
pre-check (7.95 rejects it).  Like nmap, a line is a comment only if ``#`` is its first character,
and a blank line must be really empty.  There are no trailing comments.

Custom rule files (``files/probes/*.probes``)
=============================================

Rule files add ``match``/``softmatch`` lines (and whole new probes) to the stock file.  They are
merged in sorted file-name order.  Example::

    # Comments (first character '#') and blank lines may go anywhere; they are not copied.
    # Rules before any Probe line are rules of the NULL probe (banners sent on connect):
    match myservice m|^MYSERVICE ([\d.]+)\r\n| p/My service/ v/$1/

    # A Probe line without a probe string: the rules that follow go to that existing probe.
    Probe TCP GetRequest
    match http m|^HTTP/1\.[01] \d\d\d .*\r\nServer: MyHTTPd/([\d.]+)\r\n|s p/MyHTTPd/ v/$1/

    # A Probe line with a probe string defines a new probe, with its own directives
    # (ports, sslports, rarity, totalwaitms, tcpwrappedms, fallback) and rules.
    Probe TCP MyHello q|HELLO\r\n|
    rarity 8
    ports 7777
    match myhello m|^HELLO-BACK| p/My hello server/

* ``match``/``softmatch`` lines use exactly nmap's syntax (``m<d>regex<d>[is]``, then any of
  ``p v i h o d`` with any delimiter and ``cpe:/.../[a]``).
* ``Probe PROTO NAME`` without a probe string must name a probe of the stock file (or one defined
  by an earlier rule file); otherwise it is an error that lists similar names.
* A full ``Probe`` line whose protocol and name already exist is only a reference if its probe
  string is the same (compared after unescaping); a different string is an error.  Directives are
  only allowed after a ``Probe`` line that defines a new probe: stock probes keep their directives.
* ``Exclude`` is not allowed in rule files (see the ``drop_exclude`` option).
* A trailing ``\r`` (file edited on Windows) is dropped; lines that hold only whitespace count as
  blank.

Merging
=======

``merge(stock, rules, drop_exclude=, totalwaitms=, tcpwrappedms=)`` puts each rule file's rules for
a probe in a block framed by marker comments (``# scanfleet: begin rules from seed.probes`` ...
``# scanfleet: end``), right after the ``Probe`` line and its directives, i.e. AHEAD of that probe's
stock rules: nmap tries a probe's rules in file order and the first hit wins, so custom rules take
precedence.  Several files' blocks for one probe follow each other in file-name order.  New probes
are appended after the last stock probe (see the comment in ``merge`` for why).

Options: ``drop_exclude`` removes the ``Exclude`` directive; ``totalwaitms=N`` gives every probe
(stock and new) that value, rewriting the directive or adding it where missing (nmap's default is
5000); ``tcpwrappedms=N`` rewrites that directive wherever it is and adds it to the NULL probe if
missing (nmap uses it for the NULL probe only).  A changed stock line becomes a marker block that
records it (``# scanfleet: was totalwaitms 6000``).  Without options only rules are added: every
other byte of the stock file stays as it was.

Merging first removes the blocks of an earlier merge (restoring the recorded lines), so merging an
already-merged file is idempotent (``merge(merge(s)) == merge(s)``) and ``unmerge(merge(s)) == s``.
Hand edits inside marker blocks are lost on the next merge.

Checking and validating
=======================

``precheck_file`` / ``precheck_rules`` find obvious problems in Python (directive values, regex
syntax as far as Python's ``re`` agrees with PCRE, ``$N`` beyond the regex's groups, unknown
fallbacks, lines too long for nmap's line buffer).  ``validate_with_nmap`` is the authoritative
check: a real nmap loads the file (in a fresh network namespace holding only loopback, scanning a
closed port there, so nothing leaves the host) and its complaint, which names a line of the merged
file, is mapped back to the rule file's ``path:line``.

API for the Ansible plugins: ``merge_files(stock_path, rule_paths, **options) -> MergeResult``
(``.text``, ``.origins``, ``.stats``, ``.problems``), ``write_merged(result, out, nmap_binary)``
(atomic, validates first) and ``validate_with_nmap(path, nmap_binary, origins)``.

Command line::

    scanfleet probes merge --stock FILE --rules DIR_OR_FILE... [--drop-exclude]
                           [--totalwaitms MS] [--tcpwrappedms MS] -o OUT [--nmap BIN]
    scanfleet probes check [--stock FILE] FILE...       (FILE *.probes: rule file, else full file)
    scanfleet probes validate --nmap BIN FILE
"""

from __future__ import annotations

import argparse
import difflib
import functools
import os
import re
import shutil
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from scanfleet import ScanfleetError
from scanfleet.files import atomic_path

ENCODING = "utf-8"
ENCODING_ERRORS = "surrogateescape"  # nmap files are bytes: keep any non-UTF-8 byte as is

# Directives allowed inside a probe section, as nmap's parser knows them (each followed by a space).
PROBE_DIRECTIVES = ("ports", "sslports", "rarity", "fallback", "totalwaitms", "tcpwrappedms")
VERSION_FIELDS = {"p": "product", "v": "version", "i": "info", "h": "hostname", "o": "ostype",
                  "d": "devicetype"}
REGEX_FLAGS = "is"
# nmap's defaults when a probe has no such directive (service_scan.h).
DEFAULT_TOTALWAITMS = 5000
DEFAULT_TCPWRAPPEDMS = 2000
WAITMS_RANGE = (100, 300000)
MAXFALLBACKS = 20
# nmap reads the file with fgets(line, 2048): a longer line is cut and its tail read as a new line.
NMAP_LINE_BUFFER = 2048

MARKER = "# scanfleet: "
MARK_BEGIN = MARKER + "begin "
MARK_END = MARKER + "end"
MARK_WAS = MARKER + "was "

_WS = " \t\n\v\f\r"


# --------------------------------------------------------------------------------------------------
# Model


class Origin(NamedTuple):
    """Where a line comes from.  ``note`` says what scanfleet did to it, if anything."""

    path: str
    line: int
    note: str = ""

    def __str__(self) -> str:
        return f"{self.path}:{self.line}"

    def describe(self) -> str:
        return f"{self}" + (f" ({self.note})" if self.note else "")


GENERATED = Origin("<scanfleet>", 0, "marker comment written by scanfleet")


@dataclass(slots=True)
class Template:
    """One ``X<d>value<d>flags`` item of a match line: the regex (``m``), a version field or cpe."""

    field: str  # "m", "p", "v", "i", "h", "o", "d" or "cpe"
    delimiter: str
    value: str  # for cpe: the text after "cpe:/"
    flags: str


@dataclass
class Match:
    """A ``match`` or ``softmatch`` line."""

    soft: bool
    service: str
    pattern: str
    delimiter: str
    flags: str
    templates: tuple[Template, ...]  # version fields and cpe items, in line order
    origin: Origin

    @property
    def fields(self) -> dict[str, str]:
        """Version fields by letter (p v i h o d); like nmap, a repeated field's last value wins."""
        return {t.field: t.value for t in self.templates if t.field in VERSION_FIELDS}

    @property
    def cpe(self) -> list[str]:
        """The cpe items as nmap reports them: ``cpe:/a:vendor:product``."""
        return ["cpe:/" + t.value for t in self.templates if t.field == "cpe"]

    product = property(lambda self: self.fields.get("p"))
    version = property(lambda self: self.fields.get("v"))
    info = property(lambda self: self.fields.get("i"))
    hostname = property(lambda self: self.fields.get("h"))
    ostype = property(lambda self: self.fields.get("o"))
    devicetype = property(lambda self: self.fields.get("d"))


@dataclass(frozen=True)
class Directive:
    """A directive line: ``Exclude`` or one of :data:`PROBE_DIRECTIVES`; value without line end."""

    name: str
    value: str
    origin: Origin


@dataclass(frozen=True)
class ProbeLine:
    """A parsed ``Probe`` line.  ``payload`` is None for a rule file's bare reference."""

    protocol: str
    name: str
    payload: str | None  # escaped text between the delimiters
    delimiter: str
    extra: str  # what follows the closing delimiter, e.g. " no-payload"
    origin: Origin

    @property
    def key(self) -> tuple[str, str]:
        return (self.protocol, self.name)

    @property
    def label(self) -> str:
        return f"{self.protocol} {self.name}"

    @functools.cached_property
    def payload_bytes(self) -> bytes | None:
        return None if self.payload is None else unescape_probe_string(self.payload)

    @property
    def is_null(self) -> bool:
        return self.payload is not None and self.payload_bytes == b""

    @property
    def no_payload(self) -> bool:
        return "no-payload" in self.extra.split()


@dataclass
class Line:
    """One line of a file: raw text (with its line end) and what it is."""

    text: str
    origin: Origin
    kind: str  # blank, comment, exclude, probe, directive, match
    item: Match | Directive | ProbeLine | None = None

    @property
    def content(self) -> str:
        return self.text[:-1] if self.text.endswith("\n") else self.text


@dataclass
class Probe:
    """A probe section: its ``Probe`` line and every line up to the next ``Probe`` line."""

    header: Line
    body: list[Line] = field(default_factory=list)

    @property
    def line(self) -> ProbeLine:
        assert isinstance(self.header.item, ProbeLine)
        return self.header.item

    protocol = property(lambda self: self.line.protocol)
    name = property(lambda self: self.line.name)
    payload = property(lambda self: self.line.payload)
    key = property(lambda self: self.line.key)
    label = property(lambda self: self.line.label)
    is_null = property(lambda self: self.line.is_null)

    @property
    def directives(self) -> list[Directive]:
        return [ln.item for ln in self.body if isinstance(ln.item, Directive)]

    @property
    def matches(self) -> list[Match]:
        return [ln.item for ln in self.body if isinstance(ln.item, Match)]

    def directive(self, name: str) -> str | None:
        """Value of directive NAME (the last one wins, as in nmap), or None."""
        values = [d.value for d in self.directives if d.name == name]
        return values[-1] if values else None

    def effective_waitms(self, name: str) -> int:
        """totalwaitms / tcpwrappedms as nmap uses it: the directive, else nmap's default."""
        value = self.directive(name)
        if value is None:
            return DEFAULT_TOTALWAITMS if name == "totalwaitms" else DEFAULT_TCPWRAPPEDMS
        return _c_strtol(value)

    def lines(self) -> list[Line]:
        return [self.header, *self.body]


@dataclass
class ProbesFile:
    """A whole nmap-service-probes file."""

    path: str
    preamble: list[Line] = field(default_factory=list)
    probes: list[Probe] = field(default_factory=list)

    def lines(self) -> list[Line]:
        out = list(self.preamble)
        for probe in self.probes:
            out.extend(probe.lines())
        return out

    def serialize(self) -> str:
        return "".join(line.text for line in self.lines())

    @property
    def exclude(self) -> Directive | None:
        for line in self.preamble:
            if line.kind == "exclude":
                assert isinstance(line.item, Directive)
                return line.item
        return None

    @property
    def null_probe(self) -> Probe | None:
        return next((p for p in self.probes if p.is_null), None)

    def find(self, protocol: str, name: str) -> Probe | None:
        return next((p for p in self.probes if p.key == (protocol, name)), None)

    def by_name(self, name: str, protocol: str) -> Probe | None:
        """Look a fallback name up as nmap does: same protocol first, then any protocol."""
        return self.find(protocol, name) or next((p for p in self.probes if p.name == name), None)


def serialize(pf: ProbesFile) -> str:
    return pf.serialize()


@dataclass
class RuleSection:
    """The rules of a rule file for one probe: the NULL probe (``header`` None) or a Probe line."""

    header: Line | None
    directives: list[Line] = field(default_factory=list)
    matches: list[Line] = field(default_factory=list)

    @property
    def probe(self) -> ProbeLine | None:
        return None if self.header is None else self.header.item  # type: ignore[return-value]


@dataclass
class RuleFile:
    path: str
    sections: list[RuleSection] = field(default_factory=list)

    @property
    def name(self) -> str:
        return Path(self.path).name

    def lines(self) -> list[Line]:
        out: list[Line] = []
        for section in self.sections:
            if section.header is not None:
                out.append(section.header)
            out.extend(sorted(section.directives + section.matches, key=lambda ln: ln.origin.line))
        return out


# --------------------------------------------------------------------------------------------------
# Parsing


def _fail(origin: Origin, message: str) -> ScanfleetError:
    return ScanfleetError(f"{origin}: {message}")


def _split_lines(text: str) -> list[str]:
    """Split on "\\n" only (nmap's fgets), keeping line ends; str.splitlines would split on \\r, \\f..."""
    parts = text.split("\n")
    lines = [part + "\n" for part in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines


def _number(text: str, path: str) -> list[tuple[str, Origin]]:
    return [(line, Origin(path, n)) for n, line in enumerate(_split_lines(text), 1)]


def read_text(path: str | os.PathLike[str]) -> str:
    """Read a probes file (bytes kept as they are, see ENCODING_ERRORS)."""
    try:
        return Path(path).read_bytes().decode(ENCODING, ENCODING_ERRORS)
    except OSError as exc:
        raise ScanfleetError(f"{path}: cannot read: {exc.strerror}") from exc


def encode(text: str) -> bytes:
    return text.encode(ENCODING, ENCODING_ERRORS)


def unescape_probe_string(text: str) -> bytes:
    """Decode a probe string as nmap's cstring_unescape does; ValueError if nmap would reject it."""
    raw = encode(text)
    simple = {ord("0"): 0, ord("a"): 7, ord("b"): 8, ord("f"): 12, ord("n"): 10, ord("r"): 13,
              ord("t"): 9, ord("v"): 11}
    out = bytearray()
    i = 0
    while i < len(raw):
        c = raw[i]
        if c != ord("\\"):
            out.append(c)
            i += 1
            continue
        if i + 1 >= len(raw):
            raise ValueError("a lone backslash ends the probe string")
        esc = raw[i + 1]
        if esc in simple:
            out.append(simple[esc])
            i += 2
        elif esc == ord("x"):
            digits = raw[i + 2:i + 4]
            if len(digits) != 2 or not all(chr(d) in "0123456789abcdefABCDEF" for d in digits):
                raise ValueError(f"\\x must be followed by two hex digits (at {text[i:i + 4]!r})")
            out.append(int(digits, 16))
            i += 4
        elif chr(esc).isascii() and chr(esc).isalnum():
            raise ValueError(f"unsupported escape \\{chr(esc)} (nmap knows \\0 \\a \\b \\f \\n \\r \\t \\v "
                             f"\\xHH; write other bytes as \\xHH)")
        else:
            out.append(esc)
            i += 2
    return bytes(out)


_ITEM_HEAD = re.compile(r"[ \t\n\v\f\r]*([A-Za-z]*)(:?)")
_LETTERS = re.compile(r"[A-Za-z]*")


def _next_item(text: str, pos: int, origin: Origin, what: str) -> tuple[int, Template | None]:
    """Read the next ``X<d>value<d>flags`` item of a match line from TEXT at POS (cf. next_template)."""
    n = len(text)
    head = _ITEM_HEAD.match(text, pos)
    assert head is not None
    start = head.start(1)
    if start >= n:
        return n, None
    name = head.group(1)
    pos = head.end(1)
    if name == "cpe" and head.group(2):
        pos += 1  # nmap 7.93 takes any delimiter after "cpe:", 7.95 only '/': see check_line
    elif not name:
        raise _fail(origin, f"{what}: expected a field (m, p, v, i, h, o, d or cpe:) at column "
                            f"{start + 1}, found {text[start]!r}")
    elif name != "m" and name not in VERSION_FIELDS:
        raise _fail(origin, f"{what}: unknown field {name!r} at column {start + 1}: nmap knows m/regex/ "
                            "and the version fields p v i h o d and cpe:/.../")
    if pos >= n or text[pos] in _WS:
        raise _fail(origin, f"{what}: missing delimiter after {name!r}: write {name}/.../ "
                            "(any delimiter character, e.g. / or |)")
    delim = text[pos]
    if delim.isalnum() or delim == ":":
        raise _fail(origin, f"{what}: bad delimiter {delim!r} after {name!r}: nmap reads letters and ':' "
                            f"as part of the field name; use / or | or another sign")
    end = text.find(delim, pos + 1)
    if end < 0:
        raise _fail(origin, f"{what}: unterminated {name}{delim}...: no closing {delim!r} (nmap has no "
                            "escape for the delimiter; choose one that does not occur in the text)")
    value = text[pos + 1:end]
    pos = end + 1
    flag_match = _LETTERS.match(text, pos)
    assert flag_match is not None
    flags = flag_match.group()
    pos = flag_match.end()
    if pos < n and text[pos] not in _WS:
        raise _fail(origin, f"{what}: unexpected {text[pos]!r} right after {name}{delim}...{delim}{flags} "
                            f"(column {pos + 1}): separate the fields with a space")
    if len(flags) > 3:
        raise _fail(origin, f"{what}: flags {flags!r} after {name}{delim}...{delim} are too long "
                            "(nmap 7.95 accepts at most 3 letters); is a space missing?")
    return pos, Template("cpe" if name == "cpe" else name, delim, value, flags)


def parse_match(content: str, origin: Origin) -> Match:
    """Parse a ``match``/``softmatch`` line (without its line end)."""
    soft = content.startswith("softmatch ")
    word = "softmatch" if soft else "match"
    rest = content[len(word) + 1:]
    space = rest.find(" ")
    service = rest[:space] if space >= 0 else rest.strip()
    if space < 0 or not service:
        raise _fail(origin, f"{word} without service name and pattern: write "
                            f"'{word} SERVICE m|REGEX|' (one space after {word})")
    if any(c in _WS for c in service):
        raise _fail(origin, f"{word}: bad service name {service!r}: separate it from m|REGEX| with a space")
    what = f"{word} {service}"
    pos, regex = _next_item(rest, space, origin, what)
    if regex is None:
        raise _fail(origin, f"{what}: missing pattern: write m|REGEX| after the service name")
    if regex.field != "m":
        raise _fail(origin, f"{what}: the pattern must come first and start with 'm' (m|REGEX|), "
                            f"found {regex.field}{regex.delimiter}...")
    bad = sorted(set(regex.flags) - set(REGEX_FLAGS))
    if bad:
        raise _fail(origin, f"{what}: unknown regex flag(s) {''.join(bad)!r} after m{regex.delimiter}..."
                            f"{regex.delimiter}: nmap knows only i (ignore case) and s (dot matches newline)")
    items: list[Template] = []
    while True:
        pos, item = _next_item(rest, pos, origin, what)
        if item is None:
            break
        if item.field == "m":
            raise _fail(origin, f"{what}: a second m{item.delimiter}...{item.delimiter} pattern; "
                                "a match line has one pattern")
        items.append(item)
    return Match(soft, service, regex.value, regex.delimiter, regex.flags, tuple(items), origin)


def parse_probe_line(content: str, origin: Origin, *, allow_reference: bool = False) -> ProbeLine:
    """Parse a ``Probe`` line (without its line end), as nmap's setProbeDetails does."""
    usage = "expected 'Probe TCP|UDP NAME q|PROBE STRING|'"
    rest = content[len("Probe "):]
    protocol = rest[:4]
    if protocol not in ("TCP ", "UDP "):
        raise _fail(origin, f"malformed Probe line: the protocol must be TCP or UDP followed by one "
                            f"space; {usage}")
    rest = rest[4:]
    if not rest or not (rest[0].isascii() and rest[0].isalnum()):
        raise _fail(origin, "malformed Probe line: the probe name must start with a letter or digit; "
                            + usage)
    space = rest.find(" ")
    name = rest if space < 0 else rest[:space]
    after = "" if space < 0 else rest[space + 1:]
    if any(c in _WS for c in name):
        raise _fail(origin, f"malformed Probe line: bad probe name {name!r}; {usage}")
    if not after.strip(_WS):
        if allow_reference:
            return ProbeLine(protocol[:3], name, None, "", "", origin)
        raise _fail(origin, f"malformed Probe line: nothing after the probe name {name!r}; {usage}")
    if after[0] != "q":
        raise _fail(origin, f"malformed Probe line: the probe string must begin with 'q' (q|...|); {usage}")
    if len(after) < 2 or after[1] in _WS:
        raise _fail(origin, f"malformed Probe line: missing delimiter after 'q'; {usage}")
    delim = after[1]
    end = after.find(delim, 2)
    if end < 0:
        raise _fail(origin, f"malformed Probe line: no closing {delim!r} for the probe string of {name}")
    payload = after[2:end]
    try:
        unescape_probe_string(payload)
    except ValueError as exc:
        raise _fail(origin, f"malformed Probe line: bad escaping in the probe string of {name}: "
                            f"{exc}") from None
    return ProbeLine(protocol[:3], name, payload, delim, after[end + 1:], origin)


_KNOWN_WORDS = ("Probe", "Exclude", "match", "softmatch", *PROBE_DIRECTIVES)


def _unknown_line(content: str, origin: Origin) -> ScanfleetError:
    word = content.split(None, 1)[0] if content.strip() else ""
    if content[:1] in _WS:
        hint = "remove the leading whitespace (nmap wants the directive at the start of the line)"
    elif word in _KNOWN_WORDS:
        hint = f"write '{word}' followed by one space and its value"
    else:
        close = difflib.get_close_matches(word, _KNOWN_WORDS, n=1, cutoff=0.6) or \
            [w for w in _KNOWN_WORDS if w.lower() == word.lower()]
        hint = (f"did you mean '{close[0]}'? " if close else "") + \
            "a line must be empty, a '#' comment, or start with " + ", ".join(_KNOWN_WORDS)
    return _fail(origin, f"unknown directive {word!r}: {hint}")


def _classify(text: str, origin: Origin, *, rules: bool) -> Line:
    content = text[:-1] if text.endswith("\n") else text
    if content == "":
        return Line(text, origin, "blank")
    if content.startswith("#"):
        return Line(text, origin, "comment")
    if not content.strip(_WS):
        if rules:
            return Line(text, origin, "blank")
        raise _fail(origin, "line holds only whitespace, which nmap rejects (only a really empty line is "
                            "blank): delete the spaces")
    if content.startswith(("match ", "softmatch ")):
        return Line(text, origin, "match", parse_match(content, origin))
    if content.startswith("Probe "):
        return Line(text, origin, "probe", parse_probe_line(content, origin, allow_reference=rules))
    if content.startswith("Exclude "):
        return Line(text, origin, "exclude", Directive("Exclude", content[len("Exclude "):], origin))
    word = content.split(" ", 1)[0]
    if word in PROBE_DIRECTIVES and content.startswith(word + " "):
        return Line(text, origin, "directive", Directive(word, content[len(word) + 1:], origin))
    raise _unknown_line(content, origin)


def _assemble(lines: Iterable[Line], path: str) -> ProbesFile:
    """Group classified lines into a ProbesFile, checking what nmap checks across lines."""
    pf = ProbesFile(path)
    current: Probe | None = None
    seen: dict[tuple[str, str], Origin] = {}
    null_seen: Origin | None = None
    exclude_seen: Origin | None = None
    for line in lines:
        origin = line.origin
        if line.kind == "probe":
            current = Probe(line)
            if current.key in seen:
                raise _fail(origin, f"duplicate probe {current.label}: defined at {seen[current.key]} "
                                    "already; rename one of them")
            if current.is_null:
                if null_seen is not None:
                    raise _fail(origin, f"second probe with an empty probe string (first at {null_seen}): "
                                        "nmap allows only one NULL probe")
                null_seen = origin
            seen[current.key] = origin
            pf.probes.append(current)
        elif line.kind == "exclude":
            if current is not None:
                raise _fail(origin, "Exclude must come before the first Probe line (nmap rejects it later)")
            if exclude_seen is not None:
                raise _fail(origin, f"second Exclude directive (first at {exclude_seen}): nmap allows only "
                                    "one; join the port lists with ','")
            exclude_seen = origin
            pf.preamble.append(line)
        elif line.kind in ("directive", "match"):
            if current is None:
                word = line.content.split(None, 1)[0]
                raise _fail(origin, f"'{word}' before the first Probe line: it must follow a "
                                    "'Probe TCP|UDP NAME q|...|' line")
            current.body.append(line)
        else:
            (current.body if current is not None else pf.preamble).append(line)
    return pf


def _parse_pairs(pairs: Iterable[tuple[str, Origin]], path: str) -> ProbesFile:
    return _assemble((_classify(text, origin, rules=False) for text, origin in pairs), path)


def parse(text: str, path: str = "<string>") -> ProbesFile:
    """Parse the text of an nmap-service-probes file; ScanfleetError "path:line: problem" if invalid."""
    return _parse_pairs(_number(text, str(path)), str(path))


def parse_file(path: str | os.PathLike[str]) -> ProbesFile:
    return parse(read_text(path), str(path))


def parse_rules(text: str, path: str = "<string>") -> RuleFile:
    """Parse a custom rule file (format in the module docstring)."""
    rf = RuleFile(str(path))
    text = text.removeprefix("\ufeff")  # a byte order mark some editors write
    section = RuleSection(None)
    rf.sections.append(section)
    for raw, origin in _number(text, str(path)):
        content = raw[:-1] if raw.endswith("\n") else raw
        content = content.removesuffix("\r")
        line = _classify(content + "\n", origin, rules=True)
        if line.kind == "probe":
            section = RuleSection(line)
            rf.sections.append(section)
        elif line.kind == "exclude":
            raise _fail(origin, "Exclude is not allowed in a rule file: rule files only add rules and "
                                "probes (use the drop_exclude option to remove the stock Exclude)")
        elif line.kind == "directive":
            probe = section.probe
            if probe is None or probe.payload is None:
                where = "the NULL probe" if probe is None else f"stock probe {probe.label}"
                raise _fail(origin, f"directive '{line.item.name}' for {where}: a rule file can only give "  # type: ignore[union-attr]
                                    "directives to a new probe (a Probe line with q|...|); stock probes "
                                    "keep their directives")
            section.directives.append(line)
        elif line.kind == "match":
            section.matches.append(line)
    return rf


def parse_rules_file(path: str | os.PathLike[str]) -> RuleFile:
    return parse_rules(read_text(path), str(path))


def collect_rule_files(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Expand directories to their ``*.probes`` files; all files sorted by file name (then path)."""
    found: dict[Path, None] = {}
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for child in path.glob("*.probes"):
                if child.is_file():
                    found[child] = None
        elif path.is_file():
            found[path] = None
        else:
            raise ScanfleetError(f"{path}: no such rule file or directory")
    return sorted(found, key=lambda p: (p.name, str(p)))


# --------------------------------------------------------------------------------------------------
# Marker blocks of an earlier merge


def _unmerge_pairs(pairs: Sequence[tuple[str, Origin]]) -> tuple[list[tuple[str, Origin]], int]:
    """Drop scanfleet marker blocks, restoring the lines they recorded; return (pairs, blocks removed)."""
    out: list[tuple[str, Origin]] = []
    begin: Origin | None = None
    blocks = 0
    for text, origin in pairs:
        if text.startswith(MARK_BEGIN):
            if begin is not None:
                raise _fail(origin, f"scanfleet block opened at {begin} is not closed before this new one: "
                                    "restore the '# scanfleet: end' line or the stock file")
            begin = origin
        elif text.rstrip("\r\n") == MARK_END:
            if begin is None:
                raise _fail(origin, "'# scanfleet: end' without a matching '# scanfleet: begin' line: "
                                    "restore the stock file")
            begin = None
            blocks += 1
        elif begin is not None:
            if text.startswith(MARK_WAS):
                out.append((text[len(MARK_WAS):], origin))
        else:
            out.append((text, origin))
    if begin is not None:
        raise _fail(begin, "scanfleet block is never closed ('# scanfleet: end' missing): restore the stock "
                           "file")
    return out, blocks


def unmerge(text: str, path: str = "<string>") -> str:
    """Return TEXT without the blocks an earlier merge added (the stock file it was made from)."""
    pairs, _ = _unmerge_pairs(_number(text, path))
    return "".join(t for t, _ in pairs)


# --------------------------------------------------------------------------------------------------
# Merge


@dataclass
class MergeStats:
    rule_files: list[str] = field(default_factory=list)
    rules_added: int = 0
    rules_per_probe: dict[str, int] = field(default_factory=dict)  # "TCP GetRequest" -> count
    probes_added: list[str] = field(default_factory=list)
    previous_blocks_removed: int = 0
    exclude_dropped: bool = False
    totalwaitms_changed: int = 0  # probes whose totalwaitms was rewritten or added
    tcpwrappedms_changed: int = 0


@dataclass
class MergeResult:
    text: str
    origins: list[Origin]  # origins[n - 1] is where line n of text comes from
    stats: MergeStats
    parsed: ProbesFile  # the merged file, parsed, its lines carrying the origins above
    problems: list[Problem] = field(default_factory=list)  # precheck findings (warnings only)

    def origin_of(self, lineno: int) -> Origin | None:
        return self.origins[lineno - 1] if 0 < lineno <= len(self.origins) else None

    def summary(self) -> str:
        s = self.stats
        parts = [f"{s.rules_added} rule(s) from {len(s.rule_files)} file(s)"]
        if s.probes_added:
            parts.append(f"new probe(s) {', '.join(s.probes_added)}")
        if s.exclude_dropped:
            parts.append("Exclude dropped")
        if s.totalwaitms_changed:
            parts.append(f"totalwaitms set on {s.totalwaitms_changed} probe(s)")
        if s.tcpwrappedms_changed:
            parts.append(f"tcpwrappedms set on {s.tcpwrappedms_changed} probe(s)")
        if s.previous_blocks_removed:
            parts.append(f"{s.previous_blocks_removed} block(s) of an earlier merge replaced")
        return "; ".join(parts)


@dataclass
class _NewProbe:
    section: RuleSection
    rule_file: RuleFile


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


def _check_waitms(name: str, value: int | None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not \
            WAITMS_RANGE[0] <= value <= WAITMS_RANGE[1]:
        raise ScanfleetError(f"option {name}={value!r} is out of range: nmap accepts "
                             f"{WAITMS_RANGE[0]}..{WAITMS_RANGE[1]} milliseconds")


def _insertion_point(probe: Probe) -> int:
    """Index in probe.body right after the Probe line's directives (before the first rule)."""
    last = -1
    for i, line in enumerate(probe.body):
        if line.kind == "match":
            break
        if line.kind == "directive":
            last = i
    return last + 1


def _base_file(stock: str | ProbesFile, stock_path: str) -> tuple[ProbesFile, int]:
    """STOCK parsed, with the blocks of an earlier merge removed; and how many blocks were removed."""
    if isinstance(stock, ProbesFile) and not any(ln.text.startswith(MARKER) for ln in stock.lines()):
        return stock, 0  # already parsed, and nothing of an earlier merge to remove
    if isinstance(stock, ProbesFile):
        stock_path = stock.path
        pairs = [(line.text, line.origin) for line in stock.lines()]
    else:
        pairs = _number(stock, stock_path)
    pairs, removed = _unmerge_pairs(pairs)
    return _parse_pairs(pairs, stock_path), removed


def _check_existing_probe(ref: ProbeLine, section: RuleSection, target: Probe | _NewProbe) -> None:
    """A rule section naming a probe that exists (in the stock file or new): same probe string, no
    directives."""
    existing = target.line if isinstance(target, Probe) else target.section.probe
    assert existing is not None
    if existing.payload_bytes != ref.payload_bytes:
        string = f"q{existing.delimiter}{existing.payload}{existing.delimiter}"
        raise _fail(ref.origin, f"probe {ref.label} already exists at {existing.origin} "
                                f"with probe string {string}: to add rules to it write "
                                f"'Probe {ref.label}' alone; for a new probe pick "
                                "another name")
    if section.directives:
        raise _fail(section.directives[0].origin,
                    f"directive for existing probe {ref.label} (defined at "
                    f"{existing.origin}): only the section that defines a new probe may "
                    "have directives")


def _section_target(base: ProbesFile, index: dict[tuple[str, str], Probe | _NewProbe],
                    new_probes: list[_NewProbe], section: RuleSection, rf: RuleFile) -> tuple[str, str]:
    """The key of the probe whose rules SECTION adds to; a section defining a new probe registers it."""
    ref = section.probe
    if ref is None:
        if base.null_probe is None:
            raise _fail(section.matches[0].origin, "rules before any Probe line belong to the NULL "
                                                   f"probe, but {base.path} has none")
        return base.null_probe.key
    target = index.get(ref.key)
    if ref.payload is None:
        if target is None:
            raise _fail(ref.origin, f"no probe {ref.label} in {base.path} to add rules to: "
                                    + _similar_probes(ref.name, ref.protocol, index))
    elif target is None:
        if ref.is_null:
            raise _fail(ref.origin, f"new probe {ref.label} has an empty probe string: nmap "
                                    "allows only one NULL probe (put NULL rules before any "
                                    "Probe line)")
        new = _NewProbe(section, rf)
        index[ref.key] = new
        new_probes.append(new)
    else:
        _check_existing_probe(ref, section, target)
    return ref.key


def _resolve_sections(base: ProbesFile, rules: Sequence[RuleFile]
                      ) -> tuple[list[_NewProbe], dict[tuple[str, str], dict[str, list[Line]]]]:
    """Resolve every rule section to its target probe: the new probes, and per target probe the rule
    lines of each rule file."""
    index: dict[tuple[str, str], Probe | _NewProbe] = {p.key: p for p in base.probes}
    new_probes: list[_NewProbe] = []
    blocks: dict[tuple[str, str], dict[str, list[Line]]] = {}  # target -> rule file -> its rule lines
    for rf in rules:
        for section in rf.sections:
            if section.probe is None and not section.matches:
                continue
            key = _section_target(base, index, new_probes, section, rf)
            if section.matches:
                blocks.setdefault(key, {}).setdefault(rf.path, []).extend(section.matches)
    return new_probes, blocks


def _comment(text: str, origin: Origin = GENERATED) -> Line:
    return Line(text, origin, "comment")


def _directive(name: str, value: int, origin: Origin) -> Line:
    return Line(f"{name} {value}\n", origin, "directive", Directive(name, str(value), origin))


@dataclass
class _Output:
    """The merged file being written: its lines, the rule blocks still to place, and the stats."""

    stats: MergeStats
    blocks: dict[tuple[str, str], dict[str, list[Line]]]
    names: dict[str, str]  # rule file path -> its name
    options: dict[str, int | None]  # totalwaitms / tcpwrappedms to set
    lines: list[Line] = field(default_factory=list)

    def block(self, label: str, body: Iterable[Line], was: Iterable[Line] = ()) -> None:
        """A marked block: BODY, and the stock lines it replaces (WAS) as comments."""
        self.lines.append(_comment(f"{MARK_BEGIN}{label}\n"))
        for line in was:
            text = line.text if line.text.endswith("\n") else line.text + "\n"
            self.lines.append(_comment(MARK_WAS + text, line.origin))
        self.lines.extend(body)
        self.lines.append(_comment(MARK_END + "\n"))

    def rules(self, key: tuple[str, str]) -> None:
        """The rule blocks of probe KEY, one per rule file."""
        for path, lines in self.blocks.get(key, {}).items():
            self.block(f"rules from {self.names[path]}", lines)
            self.stats.rules_added += len(lines)
            label = f"{key[0]} {key[1]}"
            self.stats.rules_per_probe[label] = self.stats.rules_per_probe.get(label, 0) + len(lines)

    def count(self, name: str) -> None:
        setattr(self.stats, f"{name}_changed", getattr(self.stats, f"{name}_changed") + 1)


def _emit_preamble(out: _Output, base: ProbesFile, drop_exclude: bool) -> None:
    for line in base.preamble:
        if line.kind == "exclude" and drop_exclude:
            out.block("option drop_exclude", (), [line])
            out.stats.exclude_dropped = True
        else:
            out.lines.append(line)


def _emit_missing_options(out: _Output, probe: Probe) -> None:
    """Options for a probe lacking the directive (right after its Probe line's directives)."""
    for name, value in out.options.items():
        # nmap uses tcpwrappedms for the NULL probe only.
        if value is None or probe.directive(name) is not None or \
                (name == "tcpwrappedms" and not probe.is_null):
            continue
        if probe.effective_waitms(name) != value:
            out.block(f"option {name}", [_directive(name, value, Origin(
                GENERATED.path, 0, f"{name} option for probe {probe.label}"))])
            out.count(name)


def _emit_stock_probe(out: _Output, probe: Probe) -> None:
    """A stock probe: after its Probe line's directives the missing options, then the rule blocks ahead
    of the stock rules; a directive an option sets is replaced (the stock line kept as a comment)."""
    out.lines.append(probe.header)
    point = _insertion_point(probe)
    for i, line in enumerate([*probe.body, None]):
        if i == point:
            _emit_missing_options(out, probe)
            out.rules(probe.key)
        if line is None:
            break
        item = line.item
        if isinstance(item, Directive) and out.options.get(item.name) is not None:
            value = out.options[item.name]
            assert value is not None
            if _c_strtol(item.value) != value:
                out.block(f"option {item.name}", [_directive(item.name, value, Origin(
                    line.origin.path, line.origin.line, f"value set by the {item.name} option"))], [line])
                out.count(item.name)
                continue
        out.lines.append(line)


def _emit_new_probe(out: _Output, new: _NewProbe) -> None:
    """A new probe from a rule file, its directives set by the options, then its rules."""
    ref = new.section.probe
    assert ref is not None and new.section.header is not None
    body = [_comment("##############################NEXT PROBE##############################\n"),
            new.section.header]
    for ln in new.section.directives:
        assert isinstance(ln.item, Directive)
        value = out.options.get(ln.item.name)
        if value is None or _c_strtol(ln.item.value) == value:
            body.append(ln)
        else:
            body.append(_directive(ln.item.name, value, Origin(
                ln.origin.path, ln.origin.line, f"value set by the {ln.item.name} option")))
            out.count(ln.item.name)
    named = {ln.item.name for ln in new.section.directives if isinstance(ln.item, Directive)}
    totalwaitms = out.options["totalwaitms"]
    if totalwaitms not in (None, DEFAULT_TOTALWAITMS) and "totalwaitms" not in named:
        body.append(_directive("totalwaitms", totalwaitms,
                               Origin(GENERATED.path, 0, f"totalwaitms option for probe {ref.label}")))
        out.count("totalwaitms")
    out.block(f"probe {ref.label} from {new.rule_file.name}", body)
    out.stats.probes_added.append(ref.label)
    out.rules(ref.key)


def merge(stock: str | ProbesFile, rules: Sequence[RuleFile], *, stock_path: str = "<stock>",
          drop_exclude: bool = False, totalwaitms: int | None = None,
          tcpwrappedms: int | None = None) -> MergeResult:
    """Merge RULES (sorted by file name) into STOCK (text or parsed); see the module docstring.

    STOCK may be an already-merged file: the blocks of the earlier merge are removed first.
    """
    _check_waitms("totalwaitms", totalwaitms)
    _check_waitms("tcpwrappedms", tcpwrappedms)
    base, removed = _base_file(stock, stock_path)
    rules = sorted(rules, key=lambda rf: (rf.name, rf.path))
    stats = MergeStats(rule_files=[rf.path for rf in rules], previous_blocks_removed=removed)
    new_probes, blocks = _resolve_sections(base, rules)
    out = _Output(stats, blocks, {rf.path: rf.name for rf in rules},
                  {"totalwaitms": totalwaitms, "tcpwrappedms": tcpwrappedms})
    _emit_preamble(out, base, drop_exclude)
    for probe in base.probes:
        _emit_stock_probe(out, probe)
    # New probes go after the last stock probe.  nmap sends a port its probes in file order (first
    # those whose ports/sslports list the port, then the others whose rarity fits the intensity) and
    # stops at the first hard match.  Placed last, a new probe reaches a port it does not list only
    # after every stock probe has failed there, so each such port keeps the stock probe sequence and
    # result.  Inserted earlier, it would run before stock probes everywhere and could take over or
    # change their results (and cost scan time on every port).
    if new_probes and out.lines and not out.lines[-1].text.endswith("\n"):
        last = out.lines[-1]
        out.lines[-1] = Line(last.text + "\n", last.origin, last.kind, last.item)
    for new in new_probes:
        _emit_new_probe(out, new)
    # Assembling the result checks its structure once more (errors name the rule file's path:line).
    parsed = _assemble(out.lines, base.path)
    return MergeResult("".join(ln.text for ln in out.lines), [ln.origin for ln in out.lines], stats, parsed)


def merge_files(stock_path: str | os.PathLike[str], rule_paths: Iterable[str | os.PathLike[str]], *,
                drop_exclude: bool = False, totalwaitms: int | None = None,
                tcpwrappedms: int | None = None, precheck: bool = True) -> MergeResult:
    """Read the stock file and the rule files (directories: their ``*.probes``) and merge them.

    With PRECHECK, the Python-side checks run on the lines that come from rule files (and on the
    directives the options set); errors raise ScanfleetError, warnings are in ``result.problems``.
    """
    files = collect_rule_files(rule_paths)
    rules = [parse_rules_file(p) for p in files]
    result = merge(read_text(stock_path), rules, stock_path=str(stock_path), drop_exclude=drop_exclude,
                   totalwaitms=totalwaitms, tcpwrappedms=tcpwrappedms)
    if precheck:
        custom = {rf.path for rf in rules} | {GENERATED.path}
        result.problems = raise_on_errors(precheck_file(result.parsed, only=lambda o: o.path in custom))
    return result


# --------------------------------------------------------------------------------------------------
# Python-side pre-check


@dataclass(frozen=True)
class Problem:
    origin: Origin
    message: str
    severity: str = "error"  # or "warning"

    def __str__(self) -> str:
        return f"{self.origin}: {self.severity}: {self.message}"


def _c_strtol(text: str) -> int:
    """C strtol/atoi: leading whitespace, optional sign, digits; 0 if none."""
    m = re.match(r"[ \t\n\v\f\r]*([+-]?\d+)", text)
    return int(m.group(1)) if m else 0


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


# --------------------------------------------------------------------------------------------------
# Validation with a real nmap


def origins_from_markers(text: str, path: str) -> list[Origin]:
    """Origins for a merged file read back from disk: its own path:line, noting the scanfleet block."""
    origins: list[Origin] = []
    label = ""
    for n, line in enumerate(_split_lines(text), 1):
        if line.startswith(MARK_BEGIN):
            label = line[len(MARK_BEGIN):].strip()
            origins.append(Origin(path, n))
        elif line.rstrip("\r\n") == MARK_END:
            label = ""
            origins.append(Origin(path, n))
        else:
            origins.append(Origin(path, n, f"in the scanfleet block '{label}'" if label else ""))
    return origins


def nmap_check_command(nmap_binary: str, probes_path: str) -> list[str]:
    """The command that makes NMAP_BINARY load PROBES_PATH, isolated from every network.

    ``unshare --net`` gives a new network namespace holding only a loopback interface; inside it
    nmap version-scans closed port 9 of 127.0.0.1, which makes it parse the whole file and compile
    every regex (service_scan_init) without sending a single packet anywhere else.
    """
    isolate = ["unshare", "--net"] if os.geteuid() == 0 else ["unshare", "--map-root-user", "--net"]
    scan = [nmap_binary, "-sV", "-sT", "--versiondb", probes_path, "-Pn", "-n", "-p", "9",
            "--host-timeout", "60s", "127.0.0.1"]
    return [*isolate, "--", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *scan]


_NMAP_LINE = re.compile(r"line (\d+) of nmap-service-probes")


def _nmap_message(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines()
             if ln.strip() and ln.strip() != "QUITTING!" and not ln.startswith("Starting Nmap")]
    return " / ".join(lines) or "(no message)"


def validate_with_nmap(merged_path: str | os.PathLike[str], nmap_binary: str = "nmap",
                       origin_map: Sequence[Origin] | Mapping[int, Origin] | None = None,
                       *, timeout: float = 120, name: str | None = None) -> None:
    """Make a real nmap load MERGED_PATH; on rejection raise ScanfleetError naming the origin.

    ORIGIN_MAP gives, for line n of the file, its origin (``origin_map[n - 1]`` for a sequence such
    as ``MergeResult.origins``, ``origin_map[n]`` for a mapping).  Without it the markers of the
    file are used (the error then names the merged file's line and its scanfleet block).  NAME is
    how messages call the file (default: its path).
    """
    path = name or str(merged_path)
    text = read_text(merged_path)
    if shutil.which(nmap_binary) is None:
        raise ScanfleetError(f"nmap binary {nmap_binary!r} not found: give the path of the nmap to "
                             "validate with")
    for tool in ("unshare", "ip"):
        if shutil.which(tool) is None:
            raise ScanfleetError(f"'{tool}' not found: validating with nmap needs util-linux unshare and "
                                 "iproute2 ip (nmap runs in an isolated network namespace)")
    cmd = nmap_check_command(nmap_binary, os.path.abspath(merged_path))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=timeout,
                              check=False)
    except subprocess.TimeoutExpired as exc:
        raise ScanfleetError(f"{path}: nmap did not finish loading the file within {timeout} s") from exc
    if proc.returncode == 0 and "Nmap done" in proc.stdout:
        return
    message = _nmap_message(proc.stderr)
    if "Starting Nmap" not in proc.stdout + proc.stderr:
        raise ScanfleetError(f"could not run {nmap_binary} in an isolated network namespace (unshare --net, "
                             f"ip link set lo up): {message} (run as root, or allow unprivileged user "
                             "namespaces)")
    raise ScanfleetError(explain_rejection(text, path, message, nmap_binary, origin_map))


def explain_rejection(text: str, path: str, message: str, nmap_binary: str = "nmap",
                      origin_map: Sequence[Origin] | Mapping[int, Origin] | None = None) -> str:
    """Turn nmap's rejection MESSAGE of the probes file TEXT (called PATH) into an error naming the origin.

    Used for a file nmap rejected here (validate_with_nmap) or on a scanner host (roles/nmap_probes):
    the origin is the rule file's ``path:line`` when the line came from a rule file.
    """
    message = _nmap_message(message)

    def lookup(n: int) -> Origin | None:
        if origin_map is None:
            table: Sequence[Origin] | Mapping[int, Origin] = origins_from_markers(text, path)
            return table[n - 1] if 0 < n <= len(table) else None
        if isinstance(origin_map, Mapping):
            return origin_map.get(n)
        return origin_map[n - 1] if 0 < n <= len(origin_map) else None

    lines = _split_lines(text)
    where: list[tuple[int, Origin | None]] = []
    m = _NMAP_LINE.search(message)
    if m:
        n = int(m.group(1))
        where.append((n, lookup(n)))
    else:
        # Messages without a line number: find the line they are about.
        fb = re.search(r"Unknown fallback specified in Probe (\S+): '([^']*)'|MAXFALLBACKS exceeded on "
                       r"probe '([^']*)'", message)
        for n, line in enumerate(lines, 1):
            if fb and line.startswith("Probe ") and line.split(" ")[2:3] == [fb.group(1) or fb.group(3)]:
                k = n + 1
                while k <= len(lines) and not lines[k - 1].startswith("Probe "):
                    if lines[k - 1].startswith("fallback "):
                        where.append((k, lookup(k)))
                    k += 1
            elif "Exclude" in message and line.startswith("Exclude "):
                where.append((n, lookup(n)))
    if not where:
        return f"{path}: nmap ({nmap_binary}) rejects the file: {message}"
    n, origin = where[-1]
    shown = lines[n - 1].rstrip("\n") if 0 < n <= len(lines) else ""
    if len(shown) > 160:
        shown = shown[:157] + "..."
    place = origin.describe() if origin is not None else f"{path}:{n}"
    return (f"{place}: nmap ({nmap_binary}) rejects this line: {message}\n"
            f"  line {n} of {path}: {shown}")


# --------------------------------------------------------------------------------------------------
# Writing


def write_merged(result: MergeResult, out_path: str | os.PathLike[str],
                 nmap_binary: str | None = None) -> None:
    """Write RESULT to OUT_PATH atomically; with NMAP_BINARY, only if that nmap accepts the file.

    The text goes to a temporary file next to OUT_PATH which is renamed over it only on success:
    on any error nothing is left behind and an existing OUT_PATH is untouched.
    """
    out = Path(out_path)
    if not out.parent.is_dir():
        raise ScanfleetError(f"{out}: directory {out.parent} does not exist")
    mode = out.stat().st_mode & 0o7777 if out.exists() else 0o644
    with atomic_path(out, mode=mode, durable=True) as tmp:
        tmp.write_bytes(encode(result.text))
        if nmap_binary:
            validate_with_nmap(tmp, nmap_binary, result.origins, name=f"{out} (not written)")


# --------------------------------------------------------------------------------------------------
# Command line


def _cmd_merge(args: argparse.Namespace) -> int:
    result = merge_files(args.stock, args.rules, drop_exclude=args.drop_exclude,
                         totalwaitms=args.totalwaitms, tcpwrappedms=args.tcpwrappedms)
    for problem in result.problems:
        print(problem, file=sys.stderr)
    write_merged(result, args.output, args.nmap)
    checked = f", accepted by {args.nmap}" if args.nmap else ""
    print(f"{args.output}: {result.summary()}{checked}")
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    stock = read_text(args.stock) if args.stock else None
    problems: list[Problem] = []
    for name in args.files:
        try:
            if name.endswith(".probes"):
                rf = parse_rules_file(name)
                if stock is None:
                    problems += precheck_rules(rf)
                else:
                    merged = merge(stock, [rf], stock_path=args.stock).parsed
                    problems += precheck_file(merged, only=lambda o, path=rf.path: o.path == path)
            else:
                problems += precheck_file(parse_file(name))
        except ScanfleetError as exc:
            problems.append(Problem(Origin(name, 0), str(exc)))
    for problem in problems:
        print(f"error: {problem.message}" if problem.origin.line == 0 else problem)
    errors = sum(p.severity == "error" for p in problems)
    print(f"{len(args.files)} file(s): {errors} error(s), {len(problems) - errors} warning(s)")
    return 1 if errors else 0


def _cmd_validate(args: argparse.Namespace) -> int:
    validate_with_nmap(args.file, args.nmap)
    print(f"{args.file}: accepted by {args.nmap}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("probes", help="parse, merge and validate nmap-service-probes files",
                            description="Parse, merge and validate nmap-service-probes files.")
    cmds = parser.add_subparsers(dest="probes_command", required=True)

    m = cmds.add_parser("merge", help="merge custom rule files into a stock nmap-service-probes",
                        description="Merge rule files (sorted by file name) into the stock file and write "
                                    "the result atomically (nothing is written on error).")
    m.add_argument("--stock", required=True, help="stock nmap-service-probes (may be an earlier merge)")
    m.add_argument("--rules", required=True, nargs="+", metavar="DIR_OR_FILE",
                   help="rule files, or directories of *.probes rule files")
    m.add_argument("--drop-exclude", action="store_true", help="remove the Exclude directive")
    m.add_argument("--totalwaitms", type=int, metavar="MS", help="set every probe's totalwaitms")
    m.add_argument("--tcpwrappedms", type=int, metavar="MS", help="set tcpwrappedms (NULL probe)")
    m.add_argument("-o", "--output", required=True, help="file to write")
    m.add_argument("--nmap", metavar="BIN", help="validate with this nmap binary before writing")
    m.set_defaults(func=_cmd_merge)

    c = cmds.add_parser("check", help="Python-side checks of rule files (*.probes) and probes files",
                        description="Check files without nmap: FILE ending in .probes is a rule file, "
                                    "anything else a full nmap-service-probes file.  Exit 1 on errors.")
    c.add_argument("files", nargs="+", metavar="FILE")
    c.add_argument("--stock", help="stock file to resolve the rule files' probe references against")
    c.set_defaults(func=_cmd_check)

    v = cmds.add_parser("validate", help="make a real nmap load a probes file",
                        description="Run nmap (in an isolated network namespace) so that it parses the "
                                    "file and compiles every regex; report its error by file:line.")
    v.add_argument("--nmap", required=True, metavar="BIN", help="nmap binary")
    v.add_argument("file", metavar="FILE")
    v.set_defaults(func=_cmd_validate)
