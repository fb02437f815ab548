"""The model of an nmap-service-probes file and of a custom rule file (see :mod:`scanfleet.probes`)."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

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
# Bytes, probe strings and numbers as nmap's C code reads them


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


def _c_strtol(text: str) -> int:
    """C strtol/atoi: leading whitespace, optional sign, digits; 0 if none."""
    m = re.match(r"[ \t\n\v\f\r]*([+-]?\d+)", text)
    return int(m.group(1)) if m else 0
