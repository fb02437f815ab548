"""Merging custom rule files into a stock nmap-service-probes file, and writing the result."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from scanfleet import ScanfleetError
from scanfleet.files import atomic_path
from scanfleet.probes.check import Problem, _similar_probes, precheck_file, raise_on_errors
from scanfleet.probes.model import (
    DEFAULT_TOTALWAITMS,
    GENERATED,
    MARK_BEGIN,
    MARK_END,
    MARK_WAS,
    MARKER,
    WAITMS_RANGE,
    Directive,
    Line,
    Origin,
    Probe,
    ProbeLine,
    ProbesFile,
    RuleFile,
    RuleSection,
    _c_strtol,
    encode,
)
from scanfleet.probes.parsing import (
    _assemble,
    _fail,
    _number,
    _parse_pairs,
    collect_rule_files,
    parse_rules_file,
    read_text,
)
from scanfleet.probes.validate import validate_with_nmap

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
