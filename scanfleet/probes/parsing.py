"""Parsing nmap-service-probes files and custom rule files into the model."""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable
from pathlib import Path

from scanfleet import ScanfleetError
from scanfleet.probes.model import (
    _WS,
    ENCODING,
    ENCODING_ERRORS,
    PROBE_DIRECTIVES,
    REGEX_FLAGS,
    VERSION_FIELDS,
    Directive,
    Line,
    Match,
    Origin,
    Probe,
    ProbeLine,
    ProbesFile,
    RuleFile,
    RuleSection,
    Template,
    unescape_probe_string,
)

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
