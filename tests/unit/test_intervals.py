"""scanfleet.intervals: CIDR covers come from ipaddress.summarize_address_range and equal our own former code."""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Iterator

import pytest

from scanfleet.intervals import BITS, IPV4, IPV6, IntervalSet, cidr_blocks, render_lines


def integer_cidr_blocks(lo: int, hi: int, bits: int) -> Iterator[tuple[int, int]]:
    """scanfleet's own minimal CIDR cover before it used ipaddress (kept here as the reference)."""
    while lo <= hi:
        align = (lo & -lo).bit_length() - 1 if lo else bits
        fit = (hi - lo + 1).bit_length() - 1
        size = min(align, fit)
        yield lo, bits - size
        lo += 1 << size


def _v4(text: str) -> int:
    return int(ipaddress.IPv4Address(text))


def _v6(text: str) -> int:
    return int(ipaddress.IPv6Address(text))


M4, M6 = (1 << 32) - 1, (1 << 128) - 1
EDGES = [
    (IPV4, 0, 0), (IPV4, M4, M4), (IPV4, 0, M4), (IPV4, 1, M4), (IPV4, 0, M4 - 1), (IPV4, 1, M4 - 1),
    (IPV4, _v4("10.0.0.5"), _v4("10.0.1.20")), (IPV4, _v4("10.0.0.0"), _v4("10.0.0.255")),
    (IPV4, _v4("10.0.0.255"), _v4("10.0.1.0")), (IPV4, _v4("127.255.255.255"), _v4("128.0.0.0")),
    (IPV4, _v4("192.168.0.1"), _v4("192.168.0.1")), (IPV4, _v4("0.0.0.1"), _v4("255.255.255.254")),
    (IPV6, 0, 0), (IPV6, M6, M6), (IPV6, 0, M6), (IPV6, 1, M6), (IPV6, 0, M6 - 1), (IPV6, 1, M6 - 1),
    (IPV6, _v6("2001:db8::1"), _v6("2001:db8::ff")), (IPV6, _v6("2001:db8::"), _v6("2001:db8::ffff:ffff")),
    (IPV6, _v6("::ffff:0:0"), _v6("::ffff:ffff:ffff")), (IPV6, _v6("fe80::1"), _v6("fe80::1:0")),
]


@pytest.mark.parametrize(("family", "lo", "hi"), EDGES)
def test_cidr_blocks_same_as_integer_cover(family, lo, hi):
    bits = BITS[family]
    assert list(cidr_blocks(lo, hi, bits)) == list(integer_cidr_blocks(lo, hi, bits))


@pytest.mark.parametrize("family", [IPV4, IPV6])
def test_cidr_blocks_same_as_integer_cover_random(family):
    rand = random.Random(family)
    bits = BITS[family]
    for _ in range(500):
        width = rand.randrange(bits + 1)
        lo = rand.randrange(1 << bits)
        hi = min(lo + rand.randrange(1 << width), (1 << bits) - 1)
        assert list(cidr_blocks(lo, hi, bits)) == list(integer_cidr_blocks(lo, hi, bits))


def test_render_lines_writes_the_cidr_cover():
    addresses = IntervalSet(v4=[(_v4("10.0.0.5"), _v4("10.0.0.20"))], v6=[(_v6("2001:db8::1"), _v6("2001:db8::6"))])
    assert render_lines(addresses, "cidr") == [
        "10.0.0.5", "10.0.0.6/31", "10.0.0.8/29", "10.0.0.16/30", "10.0.0.20",
        "2001:db8::1", "2001:db8::2/127", "2001:db8::4/127", "2001:db8::6"]
