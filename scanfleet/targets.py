"""Targets, exclusions, scope guard, rendering and fingerprint of a scan plan.

Every set of addresses is an :class:`IntervalSet`: per address family (4, 6) a sorted tuple of
disjoint, non-adjacent, inclusive integer intervals.  Nothing here ever enumerates addresses, so
``0.0.0.0/0`` and ``::/0`` cost the same as a single host.

Target syntax (targets, exclusions, scope and ``-iL`` files all use it):

* addresses: ``10.0.0.1``, ``2001:db8::1``
* CIDRs: ``10.0.0.0/24``, ``2001:db8::/64``.  A CIDR with host bits set (``10.0.0.5/24``) is
  *rejected*, with a message suggesting ``10.0.0.0/24`` or ``10.0.0.5/32``: silently widening a
  typo to a whole network is the wrong default for a tool that decides what gets scanned.
* full ranges: ``10.0.0.5-10.0.1.20``, ``2001:db8::1-2001:db8::ff`` (both ends included)
* nmap octet ranges (IPv4): ``10.0.0.1-20``, ``10.0.1-3.1-20``, ``10.0.*.1``, open ends
  ``10.0.0.100-`` (100-255) and ``10.0.0.-20`` (0-20).  They become one interval per combination
  of the leading octets, never one per address.  nmap's comma lists inside an octet
  (``10.0.1,3.1``) are not supported, because commas separate targets here.
* hostnames, resolved *on the controller* by an injectable resolver.  The resolved addresses are
  what gets scanned and checked against the scope: if nmap re-resolved the name on a scanner it
  could get a different answer (split-horizon DNS, round robin, a changed record) and scan an
  address that was never checked against the scope.
* lists separated by commas and/or whitespace; files with ``#`` comments and blank lines.

Pipeline (:func:`plan_targets`): targets - exclusions - scanner addresses (unless
``include_scanners``), then the scope guard on what is left (an excluded address is never scanned,
so it need not be in scope), then a non-empty check.  :mod:`scanfleet.shards` splits the result
between scanner hosts.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import socket
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from scanfleet import ScanfleetError
from scanfleet.intervals import (
    BITS,
    EMPTY,
    IPV4,
    IPV6,
    BadInput,
    Interval,
    IntervalSet,
    format_address,
    parse_address,
    parse_decimal,
    parse_ipv4,
    parse_ipv6,
    parse_single_address,
    range_text,
    union_all,
)

Resolver = Callable[[str], Iterable[str]] | Mapping[str, Iterable[str]]

# An nmap octet expression such as 1-255.1-255.1-255.1 is a product of ranges; past this many
# intervals it is almost certainly a mistake (and slow): ask for CIDRs instead.
MAX_OCTET_INTERVALS = 1 << 18


_DOTTED_QUAD = re.compile(r"[0-9]+(?:\.[0-9]+){3}")
_NUMERIC_IPV4 = re.compile(r"[0-9.*\-]+")


# --------------------------------------------------------------------------------------------
# Parsing one target expression


def _parse_cidr(text: str) -> tuple[int, list[Interval]]:
    addr, _, plen_text = text.partition("/")
    if ":" in addr:
        family, value = IPV6, parse_ipv6(addr)
    elif _DOTTED_QUAD.fullmatch(addr):
        family, value = IPV4, parse_ipv4(addr)
    elif _NUMERIC_IPV4.fullmatch(addr):
        if "-" in addr or "*" in addr:
            raise BadInput("an octet range cannot take a /prefix", "write either the range or a CIDR")
        family, value = IPV4, parse_ipv4(addr)  # raises: wrong number of octets
    else:
        raise BadInput("a hostname cannot take a /prefix", "resolve it and write the network as a CIDR")
    bits = BITS[family]
    if not plen_text:
        raise BadInput("missing prefix length after '/'", f"write e.g. {addr}/{bits}")
    plen = parse_decimal(plen_text, "prefix length", bits)
    host_bits = bits - plen
    if value & ((1 << host_bits) - 1):
        network = format_address(family, value >> host_bits << host_bits)
        raise BadInput(
            f"has host bits set for a /{plen}",
            f"write {network}/{plen} for the whole network or {addr}/{bits} for one host",
        )
    return family, [(value, value + (1 << host_bits) - 1)]


def _parse_full_range(text: str) -> tuple[int, list[Interval]]:
    start_text, end_text = text.split("-")
    if not start_text or not end_text:
        raise BadInput("range is missing its start or end", "write START-END with two full addresses")
    start_family = IPV6 if ":" in start_text else IPV4
    # an end like "ff" (neither ':' nor '.') is taken as a truncated address of the start's family
    end_family = IPV6 if ":" in end_text else IPV4 if "." in end_text else start_family
    if start_family != end_family:
        raise BadInput("range mixes IPv4 and IPv6", "give one range per address family")
    try:
        start = parse_address(start_text)[1]
    except BadInput as exc:
        raise BadInput(f"range start {start_text!r}: {exc.problem}", exc.fix) from None
    try:
        end = parse_address(end_text)[1]
    except BadInput as exc:
        raise BadInput(f"range end {end_text!r}: {exc.problem} (the end of a range must be a full address)",
                   exc.fix) from None
    if start > end:
        raise BadInput("range is reversed (start after end)", f"write {end_text}-{start_text}")
    return start_family, [(start, end)]


def _octet_range(part: str) -> tuple[int, int]:
    if part == "*":
        return 0, 255
    if "-" not in part:
        value = parse_decimal(part, "octet", 255)
        return value, value
    if part.count("-") > 1:
        raise BadInput(f"octet {part!r} has more than one '-'")
    lo_text, hi_text = part.split("-")
    lo = parse_decimal(lo_text, "octet", 255) if lo_text else 0
    hi = parse_decimal(hi_text, "octet", 255) if hi_text else 255
    if lo > hi:
        raise BadInput(f"octet range {part} is reversed", f"write {hi}-{lo}")
    return lo, hi


def _parse_octets(text: str) -> tuple[int, list[Interval]]:
    parts = text.split(".")
    if len(parts) != 4:
        raise BadInput(f"{len(parts)} dot-separated parts, an IPv4 address or octet range needs 4")
    ranges = [_octet_range(p) for p in parts]
    # Trailing full octets (0-255) fold into the last partial one: each combination of the
    # octets before it gives one contiguous interval.
    last = 3
    while last > 0 and ranges[last] == (0, 255):
        last -= 1
    tail_bits = 8 * (3 - last)
    count = 1
    for lo, hi in ranges[:last]:
        count *= hi - lo + 1
    if count > MAX_OCTET_INTERVALS:
        raise BadInput(
            f"expands to {count} separate ranges (limit {MAX_OCTET_INTERVALS})",
            "use CIDRs or full START-END ranges",
        )
    prefixes = [0]
    for lo, hi in ranges[:last]:
        prefixes = [p << 8 | v for p in prefixes for v in range(lo, hi + 1)]
    lo, hi = ranges[last]
    span = (1 << tail_bits) - 1
    intervals = [((p << 8 | lo) << tail_bits, (p << 8 | hi) << tail_bits | span) for p in prefixes]
    return IPV4, intervals


_HOST_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")


def _is_hostname(text: str) -> bool:
    name = text[:-1] if text.endswith(".") else text
    if not name or len(name) > 253:
        return False
    labels = name.split(".")
    return all(_HOST_LABEL.fullmatch(label) for label in labels) and not labels[-1].isdigit()


def _parse_literal(text: str) -> tuple[int, list[Interval]] | None:
    """(family, intervals) of an address/CIDR/range expression, None if it looks like a hostname."""
    if "/" in text:
        return _parse_cidr(text)
    if ":" in text:
        if "-" in text:
            if text.count("-") > 1:
                raise BadInput("more than one '-' in an IPv6 range", "write START-END")
            return _parse_full_range(text)
        return IPV6, [(v := parse_ipv6(text), v)]
    if _NUMERIC_IPV4.fullmatch(text):
        # START-END needs a full address before the '-' and a dotted one after it (10.0.0.5-10.0.1.20);
        # anything else is nmap octet syntax (10.0.0.1-20, 10.1-2.*.*)
        if text.count("-") == 1:
            start, end = text.split("-")
            if start.count(".") == 3 and "." in end:
                return _parse_full_range(text)
        return _parse_octets(text)
    if not _is_hostname(text):
        raise BadInput(
            "is not an address, CIDR, range or hostname",
            "see the target syntax: 10.0.0.1, 10.0.0.0/24, 10.0.0.5-10.0.1.20, 10.0.0.1-20, host.example.org",
        )
    return None


_FILE_LINE = re.compile(r":[0-9]+$")


@dataclass(frozen=True)
class Target:
    """One target expression as written, where it came from, and the addresses it stands for."""

    text: str
    origin: str
    addresses: IntervalSet
    resolved: tuple[str, ...] = ()  # for a hostname: the addresses the resolver returned

    @property
    def label(self) -> str:
        """``text`` plus its origin when that is a file line, for messages."""
        return f"{self.text} [{self.origin}]" if _FILE_LINE.search(self.origin) else self.text


def _resolve(name: str, resolver: Resolver) -> list[str]:
    if isinstance(resolver, Mapping):
        answer = resolver.get(name)
        if answer is None:
            answer = resolver.get(name.lower().rstrip("."))
        if answer is None:
            raise BadInput("hostname does not resolve (not in the resolver table)",
                       "check the name or write its address")
        return [answer] if isinstance(answer, str) else list(answer)
    try:
        return list(resolver(name))
    except ScanfleetError as exc:
        raise BadInput(f"hostname does not resolve: {exc}", "check the name or write its address") from None
    except OSError as exc:
        raise BadInput(f"hostname does not resolve: {exc.strerror or exc}",
                   "check the name or write its address") from None


def system_resolver(name: str) -> list[str]:
    """Resolve NAME with the controller's resolver (A and AAAA records), sorted, deduplicated."""
    infos = socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
    return sorted({info[4][0] for info in infos})


def _error(origin: str, text: str, problem: str, fix: str) -> ScanfleetError:
    where = f"{origin}: " if origin else ""
    return ScanfleetError(f"{where}{text!r} {problem}" + (f"; {fix}" if fix else ""))


def parse_target(
    text: str,
    *,
    resolver: Resolver | None = None,
    origin: str = "",
    allow_hostnames: bool = True,
) -> Target:
    """Parse ONE target expression (no commas or spaces) into a :class:`Target`.

    Hostnames are resolved with RESOLVER (a callable name -> addresses, or a mapping); with no
    resolver, or with ``allow_hostnames=False``, a hostname is an error.  ORIGIN (e.g. ``file:3``
    or ``--target``) is put in front of error messages.
    """
    text = text.strip()
    try:
        parsed = _parse_literal(text)
        if parsed is not None:
            family, intervals = parsed
            return Target(text, origin, IntervalSet.from_family(family, intervals))
        if not allow_hostnames:
            raise BadInput("is a hostname, but only addresses, CIDRs and ranges are allowed here",
                       "write the addresses or networks")
        if resolver is None:
            raise BadInput("is a hostname and no resolver was given", "write its address")
        answers = _resolve(text, resolver)
        if not answers:
            raise BadInput("hostname resolves to no address", "check the name or write its address")
        resolved = []
        for answer in answers:
            try:
                resolved.append(parse_address(str(answer).strip()))
            except BadInput as exc:
                raise BadInput(f"resolver returned {answer!r}, which is not an address ({exc.problem})",
                           "fix the resolver") from None
        v4 = [(v, v) for f, v in resolved if f == IPV4]
        v6 = [(v, v) for f, v in resolved if f == IPV6]
        addresses = IntervalSet(v4, v6)
        shown = tuple(range_text(f, lo, hi) for f, lo, hi in addresses.ranges())
        return Target(text, origin, addresses, resolved=shown)
    except BadInput as exc:
        raise _error(origin, text, exc.problem, exc.fix) from None


_SEPARATORS = re.compile(r"[,\s]+")


def split_targets(text: str) -> list[str]:
    """Split a comma and/or whitespace separated list into expressions."""
    return [t for t in _SEPARATORS.split(text) if t]


def parse_targets(
    specs: Iterable[str] | str,
    *,
    resolver: Resolver | None = None,
    origin: str = "",
    allow_hostnames: bool = True,
) -> list[Target]:
    """Parse target lists (each string may hold several comma/space separated expressions)."""
    if isinstance(specs, str):
        specs = [specs]
    return [
        parse_target(token, resolver=resolver, origin=origin, allow_hostnames=allow_hostnames)
        for spec in specs
        for token in split_targets(spec)
    ]


def parse_target_lines(
    lines: Iterable[str],
    *,
    source: str = "<lines>",
    resolver: Resolver | None = None,
    allow_hostnames: bool = True,
) -> list[Target]:
    """Parse lines of a targets file: ``#`` starts a comment, blank lines are skipped.

    Each target's origin is ``SOURCE:LINE``.
    """
    out: list[Target] = []
    for number, line in enumerate(lines, start=1):
        content = line.split("#", 1)[0]
        for token in split_targets(content):
            out.append(parse_target(token, resolver=resolver, origin=f"{source}:{number}",
                                    allow_hostnames=allow_hostnames))
    return out


def parse_targets_file(
    path: str | os.PathLike[str],
    *,
    resolver: Resolver | None = None,
    allow_hostnames: bool = True,
) -> list[Target]:
    """Parse a targets file (also an nmap ``-iL`` file written by :func:`render_lines`)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ScanfleetError(f"cannot read targets file {str(path)!r}: {exc.strerror or exc}; "
                             "check the path") from None
    except UnicodeDecodeError as exc:
        raise ScanfleetError(f"targets file {str(path)!r} is not UTF-8 text ({exc.reason}); "
                             "save it as UTF-8") from None
    return parse_target_lines(text.splitlines(), source=str(path), resolver=resolver,
                              allow_hostnames=allow_hostnames)


def load_targets_file(path: str | os.PathLike[str]) -> IntervalSet:
    """The addresses of a targets file without hostnames, e.g. a HOST.targets shard file."""
    return addresses_of(parse_targets_file(path, allow_hostnames=False))


def addresses_of(targets: Iterable[Target] | IntervalSet) -> IntervalSet:
    """The union of the addresses of TARGETS (an IntervalSet is returned as is)."""
    if isinstance(targets, IntervalSet):
        return targets
    return union_all(t.addresses for t in targets)


def _as_targets(items: Iterable[Target | str] | IntervalSet, *, origin: str) -> list[Target]:
    if isinstance(items, IntervalSet):
        return [Target(items.describe(), origin, items)]
    out: list[Target] = []
    for item in items:
        if isinstance(item, Target):
            out.append(item)
        else:
            out.extend(parse_targets(item, origin=origin, allow_hostnames=False))
    return out


# --------------------------------------------------------------------------------------------
# Scope guard and plan


SCOPE_LABEL = "scanfleet_scope"
SCOPE_FIX = "widen the scope with scanfleet_scope_extra or remove the target"


def parse_scope(entries: Iterable[str] | str, *, origin: str = "scope") -> IntervalSet:
    """Scope entries: addresses, CIDRs and ranges only (no hostnames)."""
    return addresses_of(parse_targets(entries, origin=origin, allow_hostnames=False))


def check_scope(
    targets: Iterable[Target | str],
    scope: IntervalSet | Iterable[Target | str],
    *,
    exclude: IntervalSet | None = None,
    label: str = SCOPE_LABEL,
    fix: str = SCOPE_FIX,
) -> None:
    """Raise ScanfleetError unless every target (minus EXCLUDE) lies within SCOPE.

    The message lists each offending target as written (with its ``file:line``) and the part of
    it outside the scope.
    """
    scope_set = addresses_of(_as_targets(scope, origin=label))
    removed = exclude or EMPTY
    offending = []
    for target in _as_targets(targets, origin="target"):
        outside = target.addresses - removed - scope_set
        if outside:
            offending.append(f"{target.label} ({outside.describe()} outside)")
    if offending:
        raise ScanfleetError(f"targets outside the declared scope ({label}): {'; '.join(offending)}; {fix}")


def _names(targets: Sequence[Target], limit: int = 6) -> str:
    shown = [t.label for t in targets[:limit]]
    if len(targets) > limit:
        shown.append(f"and {len(targets) - limit} more")
    return ", ".join(shown) if shown else "none"


@dataclass(frozen=True)
class TargetPlan:
    """What to scan: the parsed inputs and the resulting address set."""

    targets: tuple[Target, ...]
    exclusions: tuple[Target, ...]
    scope: IntervalSet
    scanner_addresses: IntervalSet  # removed from the targets (empty with include_scanners)
    addresses: IntervalSet  # targets - exclusions - scanner_addresses, checked against the scope

    @property
    def excluded(self) -> IntervalSet:
        return addresses_of(self.exclusions)

    def fingerprint(self, extra: Sequence[str] = ()) -> str:
        return fingerprint(self.addresses, self.excluded, self.scope, extra)

    def resolved(self) -> dict[str, list[str]]:
        """hostname -> addresses it resolved to (targets and exclusions)."""
        return {t.text: list(t.resolved) for t in (*self.targets, *self.exclusions) if t.resolved}


def plan_targets(
    targets: Iterable[Target | str],
    exclusions: Iterable[Target | str] = (),
    scope: IntervalSet | Iterable[Target | str] = (),
    *,
    scanner_addresses: Iterable[str] | IntervalSet = (),
    include_scanners: bool = False,
    scope_label: str = SCOPE_LABEL,
    scope_fix: str = SCOPE_FIX,
) -> TargetPlan:
    """Targets minus exclusions minus the scanners' own addresses, checked against SCOPE.

    Strings are parsed without a resolver (parse hostnames first with :func:`parse_targets`).
    Raises ScanfleetError when a target is outside the scope or nothing is left to scan.
    """
    target_list = tuple(_as_targets(targets, origin="target"))
    exclusion_list = tuple(_as_targets(exclusions, origin="exclude"))
    scope_set = addresses_of(_as_targets(scope, origin=scope_label))
    if not target_list:
        raise ScanfleetError("no targets given; add targets")
    if isinstance(scanner_addresses, IntervalSet):
        scanners = scanner_addresses
    else:
        scanners = IntervalSet.from_addresses(scanner_addresses, what="scanner address")
    if include_scanners:
        scanners = EMPTY
    excluded = addresses_of(exclusion_list)
    removed = excluded | scanners
    check_scope(target_list, scope_set, exclude=removed, label=scope_label, fix=scope_fix)
    addresses = addresses_of(target_list) - removed
    if not addresses:
        what = f"exclusions ({_names(exclusion_list)})"
        if scanners:
            what += f" and the scanners' own addresses ({scanners.describe()})"
        raise ScanfleetError(
            f"nothing left to scan: targets ({_names(target_list)}) minus {what} is empty; "
            "remove an exclusion or add targets"
            + (" (or pass include_scanners to scan the scanners too)" if scanners else "")
        )
    return TargetPlan(target_list, exclusion_list, scope_set, scanners, addresses)


def subtract_finished(shard: IntervalSet, finished: Iterable[str]) -> IntervalSet:
    """SHARD minus the FINISHED addresses (strings, e.g. from nmap XML): what is left to scan.

    Addresses outside the shard are ignored; a string that is not an address is an error.
    """
    return shard - IntervalSet.from_addresses(finished, what="finished address")


# --------------------------------------------------------------------------------------------
# Fingerprint


def fingerprint(
    addresses: IntervalSet,
    exclusions: IntervalSet = EMPTY,
    scope: IntervalSet = EMPTY,
    extra: Sequence[str] = (),
) -> str:
    """sha256 (hex) over the normalised target set, exclusions, scope and EXTRA strings.

    Normalised: the same addresses written differently give the same fingerprint.  EXTRA (ports,
    nmap options...) is taken in the given order.
    """
    def encode(s: IntervalSet) -> list[list[str]]:
        return [[str(f), format(lo, "x"), format(hi, "x")] for f, lo, hi in s.ranges()]

    document = {
        "version": 1,
        "targets": encode(addresses),
        "exclusions": encode(exclusions),
        "scope": encode(scope),
        "extra": [str(e) for e in extra],
    }
    payload = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(payload).hexdigest()


# --------------------------------------------------------------------------------------------
# Command line


_HOST_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class Scanner:
    name: str
    weight: Fraction
    addresses: tuple[str, ...]


def parse_scanner(text: str) -> Scanner:
    """``NAME=WEIGHT[@ADDR[,ADDR...]]`` -> Scanner.  WEIGHT: a non-negative number (2, 1.5)."""
    fix = "write NAME=WEIGHT or NAME=WEIGHT@ADDRESS, e.g. scan1=2@10.0.0.11"
    name, eq, rest = text.partition("=")
    if not eq or not name:
        raise ScanfleetError(f"--scanner {text!r}: missing NAME=; {fix}")
    if not _HOST_NAME.fullmatch(name):
        raise ScanfleetError(f"--scanner {text!r}: host name {name!r} cannot be used as a file name; "
                             "use letters, digits, '.', '_' and '-'")
    weight_text, at, addr_text = rest.partition("@")
    try:
        weight = Fraction(weight_text.strip())
    except (ValueError, ZeroDivisionError):
        raise ScanfleetError(f"--scanner {text!r}: weight {weight_text!r} is not a number; {fix}") from None
    if weight < 0:
        raise ScanfleetError(f"--scanner {text!r}: weight {weight_text} is negative; use 0 or more")
    addresses = tuple(split_targets(addr_text)) if at else ()
    if at and not addresses:
        raise ScanfleetError(f"--scanner {text!r}: nothing after '@'; {fix}")
    for address in addresses:
        parse_single_address(address, f"--scanner {text!r}: address")
    return Scanner(name, weight, addresses)


def gather_inputs(args: argparse.Namespace, resolver: Resolver | None) -> tuple[TargetPlan, list[Scanner]]:
    targets = parse_targets(args.target, resolver=resolver, origin="--target")
    for path in args.targets_file:
        targets += parse_targets_file(path, resolver=resolver)
    exclusions = parse_targets(args.exclude, resolver=resolver, origin="--exclude")
    for path in args.exclude_file:
        exclusions += parse_targets_file(path, resolver=resolver)
    scope = parse_targets(args.scope, origin="--scope", allow_hostnames=False)
    for path in args.scope_file:
        scope += parse_targets_file(path, allow_hostnames=False)
    if not scope:
        raise ScanfleetError("no scope given; pass --scope CIDR... (or --scope-file) with the networks "
                             "you are allowed to scan")
    if not targets:
        raise ScanfleetError("no targets given; pass --target or --targets-file")
    scanners = [parse_scanner(s) for s in args.scanner]
    names = [s.name for s in scanners]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ScanfleetError(f"--scanner given twice for {', '.join(duplicates)}; give each host once")
    plan = plan_targets(
        targets, exclusions, scope,
        scanner_addresses=[a for s in scanners for a in s.addresses],
        include_scanners=args.include_scanners,
        scope_label="--scope",
        scope_fix="widen --scope or remove the target",
    )
    return plan, scanners


def add_input_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", action="extend", nargs="+", default=[], metavar="T",
                        help="target expressions (address, CIDR, range, hostname; comma lists ok)")
    parser.add_argument("--targets-file", action="extend", nargs="+", default=[], metavar="F",
                        help="files of targets (# comments, blank lines)")
    parser.add_argument("--exclude", action="extend", nargs="+", default=[], metavar="X")
    parser.add_argument("--exclude-file", action="extend", nargs="+", default=[], metavar="F")
    parser.add_argument("--scope", action="extend", nargs="+", default=[], metavar="S",
                        help="networks you may scan (CIDRs/ranges); every target must lie inside")
    parser.add_argument("--scope-file", action="extend", nargs="+", default=[], metavar="F")
    parser.add_argument("--scanner", action="extend", nargs="+", default=[], metavar="NAME=WEIGHT[@ADDR]",
                        help="scanner host, its capacity weight and its own address(es)")
    parser.add_argument("--include-scanners", action="store_true",
                        help="also scan the scanners' own addresses (excluded by default)")
    parser.add_argument("--extra", action="extend", nargs="+", default=[], metavar="STR",
                        help="extra strings for the fingerprint (ports, nmap options); "
                        "a value starting with '-' needs the --extra=-sV form")


def _counts(addresses: IntervalSet) -> str:
    return f"IPv4 {addresses.family_size(IPV4)}, IPv6 {addresses.family_size(IPV6)}"


def _cmd_check(args: argparse.Namespace) -> int:
    plan, _ = gather_inputs(args, system_resolver)
    print(f"{plan.addresses.size} addresses to scan ({_counts(plan.addresses)}) "
          f"from {len(plan.targets)} targets, all within scope")
    print(f"fingerprint {plan.fingerprint(args.extra)}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``scanfleet targets check`` (sharding and planning: ``scanfleet run plan``)."""
    parser = sub.add_parser("targets", help="parse targets and check them against the scope",
                            description=__doc__.splitlines()[0])
    actions = parser.add_subparsers(dest="targets_command", required=True)

    check = actions.add_parser("check", help="parse targets, check them against the scope, print the count")
    add_input_arguments(check)
    check.set_defaults(func=_cmd_check)
