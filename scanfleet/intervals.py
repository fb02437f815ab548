"""Address intervals and their rendering: the sets of addresses that targets, shards and runs are made of.

Every set of addresses is an :class:`IntervalSet`: per address family (4, 6) a sorted tuple of
disjoint, non-adjacent, inclusive integer intervals.  Nothing here ever enumerates addresses, so
``0.0.0.0/0`` and ``::/0`` cost the same as a single host.  :func:`render_lines` writes a set as
nmap ``-iL`` lines (CIDRs from :func:`ipaddress.summarize_address_range`, or nmap octet ranges).
"""

from __future__ import annotations

import bisect
import ipaddress
import re
from collections.abc import Iterable, Iterator, Sequence

from scanfleet import ScanfleetError

IPV4 = 4
IPV6 = 6
FAMILIES = (IPV4, IPV6)
BITS = {IPV4: 32, IPV6: 128}
MAX = {IPV4: (1 << 32) - 1, IPV6: (1 << 128) - 1}
_ADDRESS_CLASS = {IPV4: ipaddress.IPv4Address, IPV6: ipaddress.IPv6Address}

Interval = tuple[int, int]

RENDER_STYLES = ("auto", "cidr", "range")


# --------------------------------------------------------------------------------------------
# Interval sets


def _merge(intervals: Iterable[Interval]) -> list[Interval]:
    """Merge intervals sorted by start: overlapping or adjacent ones become one."""
    out: list[Interval] = []
    for lo, hi in intervals:
        if out and lo <= out[-1][1] + 1:
            if hi > out[-1][1]:
                out[-1] = (out[-1][0], hi)
        else:
            out.append((lo, hi))
    return out


def _difference(a: Sequence[Interval], b: Sequence[Interval]) -> list[Interval]:
    out: list[Interval] = []
    j, nb = 0, len(b)
    for lo, hi in a:
        while j < nb and b[j][1] < lo:
            j += 1
        cur = lo
        k = j
        while k < nb and b[k][0] <= hi:
            blo, bhi = b[k]
            if blo > cur:
                out.append((cur, blo - 1))
            if bhi + 1 > cur:
                cur = bhi + 1
            if bhi >= hi:
                break
            k += 1
        if cur <= hi:
            out.append((cur, hi))
    return out


def _intersection(a: Sequence[Interval], b: Sequence[Interval]) -> list[Interval]:
    out: list[Interval] = []
    i = j = 0
    na, nb = len(a), len(b)
    while i < na and j < nb:
        lo = max(a[i][0], b[j][0])
        hi = min(a[i][1], b[j][1])
        if lo <= hi:
            out.append((lo, hi))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return out


class IntervalSet:
    """An immutable set of IPv4 and IPv6 addresses stored as inclusive integer intervals.

    ``IntervalSet(v4=[(lo, hi), ...], v6=[...])`` accepts intervals in any order, overlapping or
    not; they are validated, sorted and merged.  Set operators ``| - & <= ==`` and ``in`` work as
    for ``set``; ``size`` is the number of addresses (``len()`` would overflow for IPv6).
    """

    __slots__ = ("_iv",)

    def __init__(self, v4: Iterable[Interval] = (), v6: Iterable[Interval] = ()) -> None:
        iv = {}
        for family, intervals in ((IPV4, v4), (IPV6, v6)):
            checked = []
            for lo, hi in intervals:
                if not (isinstance(lo, int) and isinstance(hi, int) and 0 <= lo <= hi <= MAX[family]):
                    raise ValueError(f"bad IPv{family} interval ({lo!r}, {hi!r})")
                checked.append((lo, hi))
            checked.sort()
            iv[family] = tuple(_merge(checked))
        self._iv: dict[int, tuple[Interval, ...]] = iv

    @classmethod
    def _trusted(cls, v4: Iterable[Interval], v6: Iterable[Interval]) -> IntervalSet:
        """Build from intervals already sorted, disjoint and non-adjacent (no checks)."""
        obj = object.__new__(cls)
        obj._iv = {IPV4: tuple(v4), IPV6: tuple(v6)}
        return obj

    @classmethod
    def from_sorted(cls, v4: Iterable[Interval] = (), v6: Iterable[Interval] = ()) -> IntervalSet:
        """Build from intervals sorted by start and disjoint; adjacent ones are merged (no sort)."""
        return cls._trusted(_merge(v4), _merge(v6))

    @classmethod
    def from_family(cls, family: int, intervals: Iterable[Interval]) -> IntervalSet:
        return cls(v4=intervals) if family == IPV4 else cls(v6=intervals)

    @classmethod
    def everything(cls) -> IntervalSet:
        return cls._trusted([(0, MAX[IPV4])], [(0, MAX[IPV6])])

    @classmethod
    def from_addresses(cls, addresses: Iterable[str], *, what: str = "address") -> IntervalSet:
        """Set of single addresses given as strings; consecutive ones become one interval.

        Raises ScanfleetError naming the first string that is not an IPv4/IPv6 address.
        """
        ints: dict[int, list[int]] = {IPV4: [], IPV6: []}
        for text in addresses:
            family, value = parse_single_address(str(text).strip(), what)
            ints[family].append(value)
        out = {}
        for family, values in ints.items():
            values.sort()
            out[family] = _merge((v, v) for v in values)
        return cls._trusted(out[IPV4], out[IPV6])

    # -- inspection
    def intervals(self, family: int) -> tuple[Interval, ...]:
        """The sorted disjoint intervals of one family (4 or 6)."""
        return self._iv[family]

    def ranges(self) -> Iterator[tuple[int, int, int]]:
        """(family, lo, hi) for every interval, IPv4 first, in address order."""
        for family in FAMILIES:
            for lo, hi in self._iv[family]:
                yield family, lo, hi

    def family_size(self, family: int) -> int:
        return sum(hi - lo + 1 for lo, hi in self._iv[family])

    @property
    def size(self) -> int:
        """Number of addresses (may exceed sys.maxsize for IPv6)."""
        return self.family_size(IPV4) + self.family_size(IPV6)

    @property
    def interval_count(self) -> int:
        return len(self._iv[IPV4]) + len(self._iv[IPV6])

    def __bool__(self) -> bool:
        return bool(self._iv[IPV4] or self._iv[IPV6])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, IntervalSet):
            return NotImplemented
        return self._iv == other._iv

    def __hash__(self) -> int:
        return hash((self._iv[IPV4], self._iv[IPV6]))

    def __repr__(self) -> str:
        text = ", ".join(range_text(f, lo, hi) for f, lo, hi in self.ranges())
        return f"IntervalSet({text})"

    def __contains__(self, address: object) -> bool:
        if isinstance(address, str):
            family, value = parse_single_address(address, "address")
        elif isinstance(address, ipaddress.IPv4Address | ipaddress.IPv6Address):
            family, value = address.version, int(address)
        else:
            return False
        iv = self._iv[family]
        i = bisect.bisect_right(iv, (value, MAX[IPV6] + 1)) - 1
        return i >= 0 and iv[i][0] <= value <= iv[i][1]

    # -- algebra
    def union(self, *others: IntervalSet) -> IntervalSet:
        out = {}
        for family in FAMILIES:
            parts = list(self._iv[family])
            for other in others:
                parts.extend(other._iv[family])
            parts.sort()
            out[family] = _merge(parts)
        return IntervalSet._trusted(out[IPV4], out[IPV6])

    def difference(self, other: IntervalSet) -> IntervalSet:
        return IntervalSet._trusted(*(_difference(self._iv[f], other._iv[f]) for f in FAMILIES))

    def intersection(self, other: IntervalSet) -> IntervalSet:
        return IntervalSet._trusted(*(_intersection(self._iv[f], other._iv[f]) for f in FAMILIES))

    def issubset(self, other: IntervalSet) -> bool:
        return not self.difference(other)

    def isdisjoint(self, other: IntervalSet) -> bool:
        return not self.intersection(other)

    __or__ = union
    __sub__ = difference
    __and__ = intersection
    __le__ = issubset

    # -- text
    def describe(self, limit: int = 4) -> str:
        """Human text: ``10.0.0.1, 10.0.1.0-10.0.1.255`` (at most LIMIT ranges, then a count)."""
        parts = []
        for n, (family, lo, hi) in enumerate(self.ranges()):
            if n == limit:
                parts.append(f"and {self.interval_count - limit} more ranges")
                break
            parts.append(range_text(family, lo, hi))
        return ", ".join(parts) if parts else "nothing"

    def to_lines(self, style: str = "auto") -> list[str]:
        """Render as nmap ``-iL`` lines; see :func:`render_lines`."""
        return render_lines(self, style)


EMPTY = IntervalSet()


def union_all(sets: Iterable[IntervalSet]) -> IntervalSet:
    sets = list(sets)
    return sets[0].union(*sets[1:]) if sets else EMPTY


# --------------------------------------------------------------------------------------------
# Address text <-> integers


def format_address(family: int, value: int) -> str:
    if family == IPV4:
        return f"{value >> 24}.{value >> 16 & 255}.{value >> 8 & 255}.{value & 255}"
    return str(ipaddress.IPv6Address(value))


def range_text(family: int, lo: int, hi: int) -> str:
    if lo == hi:
        return format_address(family, lo)
    return f"{format_address(family, lo)}-{format_address(family, hi)}"


class BadInput(Exception):
    """A problem with one target string; turned into ScanfleetError naming the input and origin."""

    def __init__(self, problem: str, fix: str = "") -> None:
        super().__init__(problem)
        self.problem = problem
        self.fix = fix


_ASCII_DIGITS = re.compile(r"[0-9]+")


def parse_decimal(text: str, what: str, maximum: int) -> int:
    if not _ASCII_DIGITS.fullmatch(text):
        raise BadInput(f"{what} {text!r} is not a decimal number")
    if len(text) > 1 and text[0] == "0":
        raise BadInput(f"{what} {text!r} has a leading zero (octal or decimal?)", f"write {int(text)}")
    value = int(text)
    if value > maximum:
        raise BadInput(f"{what} {value} > {maximum}")
    return value


def parse_ipv4(text: str) -> int:
    parts = text.split(".")
    if len(parts) != 4:
        raise BadInput(f"{text!r} has {len(parts)} dot-separated parts, an IPv4 address needs 4")
    value = 0
    for part in parts:
        value = value << 8 | parse_decimal(part, "octet", 255)
    return value


def parse_ipv6(text: str) -> int:
    if "%" in text:
        raise BadInput("IPv6 zone ids (%interface) are not supported", "drop the %zone suffix")
    try:
        return int(ipaddress.IPv6Address(text))
    except ValueError as exc:
        raise BadInput(f"not a valid IPv6 address: {exc}") from None


def parse_address(text: str) -> tuple[int, int]:
    """(family, int) of one literal address."""
    if ":" in text:
        return IPV6, parse_ipv6(text)
    return IPV4, parse_ipv4(text)


def parse_single_address(text: str, what: str) -> tuple[int, int]:
    try:
        return parse_address(text)
    except BadInput as exc:
        raise ScanfleetError(f"{what} {text!r}: {exc.problem}; give a single IPv4 or IPv6 address") from None


# --------------------------------------------------------------------------------------------
# Rendering (nmap -iL)


def cidr_blocks(lo: int, hi: int, bits: int) -> Iterator[tuple[int, int]]:
    """Minimal CIDR cover of [LO, HI] as (network, prefix length), from ipaddress.summarize_address_range."""
    address = _ADDRESS_CLASS[IPV4 if bits == BITS[IPV4] else IPV6]
    for network in ipaddress.summarize_address_range(address(lo), address(hi)):
        yield int(network.network_address), network.prefixlen


def octet_ranges(lo: int, hi: int) -> Iterator[str]:
    """Cover the IPv4 interval [LO, HI] with nmap octet-range expressions (``10.0.0.5-255``)."""
    while lo <= hi:
        trailing = 0  # number of trailing octets that can be 0-255
        while trailing < 3:
            unit = 1 << 8 * (trailing + 1)
            if lo % unit or lo + unit - 1 > hi:
                break
            trailing += 1
        unit = 1 << 8 * trailing
        value = lo // unit & 255
        n = min(256 - value, (hi - lo + 1) // unit)
        octets = [str(lo >> s & 255) for s in (24, 16, 8, 0)]
        position = 3 - trailing
        octets[position] = f"{value}-{value + n - 1}" if n > 1 else str(value)
        for i in range(position + 1, 4):
            octets[i] = "0-255"
        yield ".".join(octets)
        lo += n * unit


def _cidr_lines(family: int, lo: int, hi: int) -> list[str]:
    bits = BITS[family]
    out = []
    for network, plen in cidr_blocks(lo, hi, bits):
        text = format_address(family, network)
        out.append(text if plen == bits else f"{text}/{plen}")
    return out


def render_lines(addresses: IntervalSet, style: str = "auto") -> list[str]:
    """nmap ``-iL`` lines for ADDRESSES, in address order (IPv4 first).

    STYLE ``cidr``: the minimal CIDR cover of each interval (a /32 or /128 is written as a bare
    address); ``range``: nmap octet ranges for IPv4 (``10.0.0.5-255``, ``10.0.1.0-20``);
    ``auto``: per interval whichever of the two gives fewer lines (CIDR on a tie).  IPv6 is
    always written as CIDRs (nmap has no IPv6 ranges).  nmap needs ``-6`` for IPv6 targets, so a
    scanner whose shard holds both families has to run nmap once per family.
    """
    if style not in RENDER_STYLES:
        raise ScanfleetError(f"unknown render style {style!r}; use one of {', '.join(RENDER_STYLES)}")
    out: list[str] = []
    append = out.append
    for family, lo, hi in addresses.ranges():
        n = hi - lo + 1
        if not (n & (n - 1) or lo & (n - 1)) and (style != "range" or family == IPV6 or n == 1):
            # the interval is exactly one CIDR block (the usual case for shards): one line
            text = format_address(family, lo)
            append(text if n == 1 else f"{text}/{BITS[family] - n.bit_length() + 1}")
        elif family == IPV6 or style == "cidr":
            out.extend(_cidr_lines(family, lo, hi))
        elif style == "range":
            out.extend(octet_ranges(lo, hi))
        else:
            cidrs = _cidr_lines(family, lo, hi)
            if len(cidrs) > 1:
                ranges = list(octet_ranges(lo, hi))
                if len(ranges) < len(cidrs):
                    cidrs = ranges
            out.extend(cidrs)
    return out
