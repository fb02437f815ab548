"""Targets: parsing, interval sets, exclusions, scope guard, rendering, fingerprint, CLI."""

from __future__ import annotations

import ipaddress
import itertools
import json
import random
import re
import socket
from pathlib import Path

import pytest

from scanfleet import ScanfleetError, cli, runcli
from scanfleet import targets as tg
from scanfleet.intervals import IPV4, IPV6, IntervalSet, render_lines, union_all
from scanfleet.targets import (
    check_scope,
    fingerprint,
    parse_scanner,
    parse_target,
    parse_target_lines,
    parse_targets,
    parse_targets_file,
    plan_targets,
    subtract_finished,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "targets"

# The fake DNS every test uses; real resolution is forbidden (see no_real_dns).
DNS = {
    "www.example.test": ["10.0.0.80", "2001:db8::80"],
    "mail.example.test": ["10.0.3.25"],
    "outside.example.test": ["192.0.2.7"],
    "empty.example.test": [],
    "garbage.example.test": ["not-an-address"],
}


@pytest.fixture(autouse=True)
def no_real_dns(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError(f"a test tried real DNS: {args}")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def ip(text: str) -> int:
    return int(ipaddress.ip_address(text))


def iset(*ranges: tuple[str, str] | str) -> IntervalSet:
    """Oracle-side constructor: ('a', 'b') or 'a', using the stdlib to turn text into integers."""
    v4, v6 = [], []
    for r in ranges:
        lo, hi = (r, r) if isinstance(r, str) else r
        (v4 if ipaddress.ip_address(lo).version == 4 else v6).append((ip(lo), ip(hi)))
    return IntervalSet(v4, v6)


def enumerate_small(s: IntervalSet) -> set[tuple[int, int]]:
    return {(f, a) for f, lo, hi in s.ranges() for a in range(lo, hi + 1)}


# --------------------------------------------------------------------------------------------
# Parsing every form

FORMS = [
    ("10.0.0.1", [("10.0.0.1", "10.0.0.1")]),
    ("10.0.0.0/24", [("10.0.0.0", "10.0.0.255")]),
    ("10.0.0.0/8", [("10.0.0.0", "10.255.255.255")]),
    ("255.255.255.255/32", [("255.255.255.255", "255.255.255.255")]),
    ("0.0.0.0/0", [("0.0.0.0", "255.255.255.255")]),
    ("10.0.0.5-10.0.1.20", [("10.0.0.5", "10.0.1.20")]),
    ("10.0.0.7-10.0.0.7", [("10.0.0.7", "10.0.0.7")]),
    ("10.0.0.1-20", [("10.0.0.1", "10.0.0.20")]),
    ("10.0.1-3.1-20", [("10.0.1.1", "10.0.1.20"), ("10.0.2.1", "10.0.2.20"), ("10.0.3.1", "10.0.3.20")]),
    ("10.1-2.*.*", [("10.1.0.0", "10.2.255.255")]),
    ("10.1-2.0-255.0-255", [("10.1.0.0", "10.2.255.255")]),
    ("10.0.0.100-", [("10.0.0.100", "10.0.0.255")]),
    ("10.0.0.-20", [("10.0.0.0", "10.0.0.20")]),
    ("*.*.*.*", [("0.0.0.0", "255.255.255.255")]),
    ("2001:db8::1", [("2001:db8::1", "2001:db8::1")]),
    ("2001:db8::/64", [("2001:db8::", "2001:db8::ffff:ffff:ffff:ffff")]),
    ("2001:db8::1-2001:db8::ff", [("2001:db8::1", "2001:db8::ff")]),
    ("::/0", [("::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")]),
    ("::1", [("::1", "::1")]),
    ("::ffff:10.0.0.1", [("::ffff:10.0.0.1", "::ffff:10.0.0.1")]),
    ("2001:DB8::A", [("2001:db8::a", "2001:db8::a")]),
]


@pytest.mark.parametrize(("text", "expected"), FORMS, ids=[f[0] for f in FORMS])
def test_every_form_parses_to_its_intervals(text, expected):
    target = parse_target(text)
    assert target.text == text
    assert target.addresses == iset(*expected)
    # the intervals come out exactly as listed (sorted, merged), not just as an equal set
    family = ipaddress.ip_address(expected[0][0]).version
    assert list(target.addresses.intervals(family)) == [(ip(a), ip(b)) for a, b in expected]


def brute_octets(text: str) -> set[tuple[int, int]]:
    """Independent oracle for nmap octet syntax: enumerate the cartesian product."""
    choices = []
    for part in text.split("."):
        if part == "*":
            choices.append(range(256))
        elif "-" in part:
            a, b = part.split("-")
            choices.append(range(int(a or 0), int(b or 255) + 1))
        else:
            choices.append([int(part)])
    return {(IPV4, a << 24 | b << 16 | c << 8 | d) for a, b, c, d in itertools.product(*choices)}


@pytest.mark.parametrize("text", ["10.0.1-3.1-20", "10.0-1.*.7", "1-3.2-4.5-6.7-9", "10.0.0.-3",
                                  "192.168.3-4.250-", "10.0.255.*", "10.0.0-1.*"])
def test_octet_ranges_match_brute_force_expansion(text):
    target = parse_target(text)
    assert enumerate_small(target.addresses) == brute_octets(text)


def test_octet_ranges_make_one_interval_per_leading_combination():
    # 10.0-255.*.1 would be 256*256 single addresses; 10.0-3.*.* is one interval
    assert parse_target("10.0-3.*.*").addresses.interval_count == 1
    assert parse_target("10.0-3.*.1").addresses.interval_count == 4 * 256
    assert parse_target("10.0-3.*.1").addresses.size == 4 * 256


def test_huge_networks_are_instant_and_exact():
    everything4 = parse_target("0.0.0.0/0").addresses
    everything6 = parse_target("::/0").addresses
    assert everything4.size == 2**32
    assert everything6.size == 2**128
    both = everything4 | everything6
    assert both == IntervalSet.everything()
    assert both.size == 2**32 + 2**128
    hole = both - parse_target("::1").addresses - parse_target("10.0.0.0/8").addresses
    assert hole.size == 2**32 - 2**24 + 2**128 - 1
    assert hole.interval_count == 4
    assert not (everything6 - everything6)
    assert everything4 & everything6 == IntervalSet()


# --------------------------------------------------------------------------------------------
# Malformed inputs: the message names the input and suggests the fix

MALFORMED = [
    ("10.0.0.5/24", ["host bits", "10.0.0.0/24", "10.0.0.5/32"]),
    ("2001:db8::1/64", ["host bits", "2001:db8::/64"]),
    ("10.0.0.0/33", ["prefix length 33 > 32"]),
    ("2001:db8::/129", ["prefix length 129 > 128"]),
    ("10.0.0.0/", ["missing prefix length"]),
    ("10.0.0.0/2x", ["prefix length '2x' is not a decimal number"]),
    ("10.0.0.256", ["octet 256 > 255"]),
    ("10.0.0.1-300", ["octet 300 > 255"]),
    ("10.0.300.1-10.0.0.5", ["range start", "octet 300 > 255"]),
    ("10.0.0.20-1", ["reversed", "write 1-20"]),
    ("10.0.1.20-10.0.0.5", ["reversed", "10.0.0.5-10.0.1.20"]),
    ("2001:db8::ff-2001:db8::1", ["reversed", "2001:db8::1-2001:db8::ff"]),
    ("10.0.0.1-2001:db8::1", ["mixes IPv4 and IPv6"]),
    ("2001:db8::1-10.0.0.9", ["mixes IPv4 and IPv6"]),
    ("2001:db8::1-ff", ["range end", "full address"]),
    ("10.0.0.1-10.0.0", ["range end", "3 dot-separated parts"]),
    ("10.0.1", ["3 dot-separated parts", "needs 4"]),
    ("10.0.0.1.5", ["5 dot-separated parts"]),
    ("010.0.0.1", ["leading zero", "write 10"]),
    ("10.0.0.1--5", ["more than one '-'"]),
    ("2001:zz::1", ["not a valid IPv6 address"]),
    ("fe80::1%eth0", ["zone"]),
    ("host.example.test/24", ["hostname cannot take a /prefix"]),
    ("10.0.0.1-5/24", ["octet range cannot take a /prefix"]),
    ("bad!host", ["not an address, CIDR, range or hostname"]),
    ("-", ["1 dot-separated parts"]),
    ("1-255.1-255.1-255.1", ["expands to 16581375 separate ranges", "use CIDRs"]),
]


@pytest.mark.parametrize(("text", "fragments"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_inputs_are_named_with_the_problem(text, fragments):
    with pytest.raises(ScanfleetError) as info:
        parse_target(text, origin="--target")
    message = str(info.value)
    assert message.startswith(f"--target: {text!r}")
    for fragment in fragments:
        assert fragment in message


def test_file_errors_name_file_and_line():
    path = FIXTURES / "bad_line.txt"
    with pytest.raises(ScanfleetError, match=re.escape(f"{path}:3: '10.0.0.1-300' octet 300 > 255")):
        parse_targets_file(path)


def test_missing_file_is_named():
    with pytest.raises(ScanfleetError, match=r"cannot read targets file .*nope\.txt"):
        parse_targets_file(FIXTURES / "nope.txt")


# --------------------------------------------------------------------------------------------
# Hostnames: resolved on the controller by an injected resolver


def test_hostname_resolves_through_a_table():
    target = parse_target("www.example.test", resolver=DNS)
    assert target.addresses == iset("10.0.0.80", "2001:db8::80")
    assert target.resolved == ("10.0.0.80", "2001:db8::80")


def test_hostname_resolves_through_a_callable_and_trailing_dot_or_case_in_table():
    calls = []

    def resolver(name):
        calls.append(name)
        return ["10.9.9.9", "10.9.9.8"]

    assert parse_target("db.example.test", resolver=resolver).addresses == iset(("10.9.9.8", "10.9.9.9"))
    assert calls == ["db.example.test"]
    assert parse_target("MAIL.example.test.", resolver=DNS).addresses == iset("10.0.3.25")


@pytest.mark.parametrize(("name", "resolver", "fragment"), [
    ("unknown.example.test", DNS, "does not resolve"),
    ("empty.example.test", DNS, "resolves to no address"),
    ("garbage.example.test", DNS, "resolver returned 'not-an-address'"),
    ("www.example.test", None, "no resolver was given"),
    ("www.example.test", lambda n: (_ for _ in ()).throw(OSError(-2, "Name or service not known")),
     "Name or service not known"),
])
def test_hostname_failures_name_the_host(name, resolver, fragment):
    with pytest.raises(ScanfleetError, match=re.escape(fragment)) as info:
        parse_target(name, resolver=resolver, origin="--target")
    assert repr(name) in str(info.value)


def test_hostnames_are_refused_where_only_networks_make_sense():
    with pytest.raises(ScanfleetError, match="only addresses, CIDRs and ranges"):
        parse_targets("10.0.0.0/8 www.example.test", resolver=DNS, allow_hostnames=False)


# --------------------------------------------------------------------------------------------
# Lists and files


def test_comma_and_whitespace_lists_and_duplicates_collapse():
    targets = parse_targets(["10.0.0.1,10.0.0.2  10.0.0.3,\t10.0.0.4", " ,10.0.0.2 , 2001:db8::1 "])
    assert [t.text for t in targets] == ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.2",
                                         "2001:db8::1"]
    union = tg.addresses_of(targets)
    assert union == iset(("10.0.0.1", "10.0.0.4"), "2001:db8::1")
    assert union.intervals(IPV4) == ((ip("10.0.0.1"), ip("10.0.0.4")),)


def test_overlapping_targets_collapse_to_disjoint_intervals():
    union = tg.addresses_of(parse_targets("10.0.0.0/24 10.0.0.128-10.0.1.5 10.0.1.6 10.0.0.7 10.0.3.0/24"))
    assert union.intervals(IPV4) == ((ip("10.0.0.0"), ip("10.0.1.6")), (ip("10.0.3.0"), ip("10.0.3.255")))
    assert union.size == 256 + 7 + 256


def test_targets_file_with_comments_blank_lines_and_origins():
    path = FIXTURES / "targets.txt"
    targets = parse_targets_file(path, resolver=DNS)
    assert [(t.text, t.origin) for t in targets] == [
        ("10.0.0.0/24", f"{path}:3"),
        ("10.0.1.5-10.0.1.20", f"{path}:4"),
        ("10.0.2.1-3", f"{path}:4"),
        ("2001:db8::/126", f"{path}:5"),
        ("10.0.0.7", f"{path}:6"),
        ("www.example.test", f"{path}:8"),
    ]
    assert tg.addresses_of(targets) == iset(("10.0.0.0", "10.0.0.255"), ("10.0.1.5", "10.0.1.20"),
                                            ("10.0.2.1", "10.0.2.3"), ("2001:db8::", "2001:db8::3"),
                                            "2001:db8::80")


# --------------------------------------------------------------------------------------------
# IntervalSet algebra against Python sets


def random_set(rng: random.Random, family: int = IPV4, universe: int = 300, base: int = 0) -> IntervalSet:
    intervals = []
    for _ in range(rng.randint(0, 6)):
        lo = base + rng.randrange(universe)
        intervals.append((lo, min(base + universe - 1, lo + rng.randrange(40))))
    return IntervalSet.from_family(family, intervals)


@pytest.mark.parametrize("seed", range(40))
def test_set_operations_agree_with_python_sets(seed):
    rng = random.Random(seed)
    base6 = 2**128 - 300  # near the top of IPv6 to exercise the boundary
    a = random_set(rng) | random_set(rng, IPV6, base=base6)
    b = random_set(rng) | random_set(rng, IPV6, base=base6)
    ea, eb = enumerate_small(a), enumerate_small(b)
    assert enumerate_small(a | b) == ea | eb
    assert enumerate_small(a - b) == ea - eb
    assert enumerate_small(a & b) == ea & eb
    assert (a | b).size == len(ea | eb)
    assert (a <= b) == (ea <= eb)
    assert a.isdisjoint(b) == ea.isdisjoint(eb)
    assert ((a | b) == (b | a)) and (a - b) | (a & b) == a
    for family in (IPV4, IPV6):
        ivs = (a | b).intervals(family)
        assert all(ivs[i][1] + 1 < ivs[i + 1][0] for i in range(len(ivs) - 1)), "not disjoint/merged"
    probe = rng.randrange(300)
    assert (str(ipaddress.IPv4Address(probe)) in a) == ((IPV4, probe) in ea)


def test_interval_set_rejects_out_of_range_intervals():
    with pytest.raises(ValueError, match="bad IPv4 interval"):
        IntervalSet([(0, 2**32)])
    with pytest.raises(ValueError, match="bad IPv6 interval"):
        IntervalSet(v6=[(5, 4)])


def test_from_addresses_merges_consecutive_and_names_bad_strings():
    s = IntervalSet.from_addresses(["10.0.0.3", "10.0.0.1", "10.0.0.2", "10.0.0.9", "2001:db8::1"])
    assert s.intervals(IPV4) == ((ip("10.0.0.1"), ip("10.0.0.3")), (ip("10.0.0.9"), ip("10.0.0.9")))
    assert s.intervals(IPV6) == ((ip("2001:db8::1"), ip("2001:db8::1")),)
    with pytest.raises(ScanfleetError, match=re.escape("address '10.0.0.0/24'")):
        IntervalSet.from_addresses(["10.0.0.1", "10.0.0.0/24"])


def test_describe_is_readable_and_bounded():
    s = parse_targets("10.0.0.1 10.0.1.0/24 10.0.3.0/24 10.0.5.0/24 10.0.7.0/24 10.0.9.9")
    text = tg.addresses_of(s).describe(limit=3)
    assert text == "10.0.0.1, 10.0.1.0-10.0.1.255, 10.0.3.0-10.0.3.255, and 3 more ranges"
    assert IntervalSet().describe() == "nothing"


# --------------------------------------------------------------------------------------------
# Exclusions, scope guard, scanner self-exclusion


def test_exclusions_subtract_in_every_form_and_from_files():
    targets = parse_targets_file(FIXTURES / "targets.txt", resolver=DNS)
    exclusions = parse_targets_file(FIXTURES / "exclude.txt") + parse_targets("mail.example.test 10.0.0.0-9",
                                                                                resolver=DNS)
    scope = parse_targets_file(FIXTURES / "scope.txt")
    plan = plan_targets(targets, exclusions, scope)
    expected = iset(("10.0.0.10", "10.0.0.255"), ("10.0.1.5", "10.0.1.9"), ("10.0.2.1", "10.0.2.3"),
                    ("2001:db8::", "2001:db8::2"), "2001:db8::80")
    assert plan.addresses == expected
    assert plan.excluded == iset(("10.0.0.0", "10.0.0.9"), ("10.0.1.10", "10.0.1.20"), "2001:db8::3",
                                 "10.0.3.25")
    assert plan.resolved() == {"www.example.test": ["10.0.0.80", "2001:db8::80"],
                               "mail.example.test": ["10.0.3.25"]}


def test_exclusions_that_empty_everything_name_targets_and_exclusions():
    with pytest.raises(ScanfleetError) as info:
        plan_targets(["10.0.0.0/30", "10.0.0.4"], ["10.0.0.0/29"], ["10.0.0.0/8"])
    message = str(info.value)
    assert message.startswith("nothing left to scan: targets (10.0.0.0/30, 10.0.0.4) minus exclusions "
                              "(10.0.0.0/29) is empty")
    assert "remove an exclusion or add targets" in message


SCOPE_CASES = [
    (["10.0.0.0/24"], ["10.0.0.0/8"], None),
    (["10.0.0.0/24", "2001:db8::5"], ["10.0.0.0/24", "2001:db8::/64"], None),
    (["10.0.0.5-10.0.0.9"], ["10.0.0.0-10.0.0.5", "10.0.0.6/31", "10.0.0.8-9"], None),
    (["10.0.0.0/24", "192.168.1.0/24"], ["10.0.0.0/8"],
     "targets outside the declared scope (scanfleet_scope): 192.168.1.0/24 "
     "(192.168.1.0-192.168.1.255 outside); widen the scope with scanfleet_scope_extra or remove the target"),
    (["10.0.0.0/23", "10.0.0.1"], ["10.0.0.0/24"],
     "targets outside the declared scope (scanfleet_scope): 10.0.0.0/23 (10.0.1.0-10.0.1.255 outside); "),
    (["10.0.0.0-10.0.0.10", "2001:db8::/127"], ["10.0.0.5", "2001:db8::1"],
     "10.0.0.0-10.0.0.10 (10.0.0.0-10.0.0.4, 10.0.0.6-10.0.0.10 outside); "
     "2001:db8::/127 (2001:db8:: outside)"),
    (["0.0.0.0/0"], ["::/0"], "0.0.0.0/0 (0.0.0.0-255.255.255.255 outside)"),
]


@pytest.mark.parametrize(("targets", "scope", "message"), SCOPE_CASES)
def test_scope_guard(targets, scope, message):
    if message is None:
        check_scope(targets, scope)
        return
    with pytest.raises(ScanfleetError) as info:
        check_scope(targets, scope)
    assert message in str(info.value)
    # targets entirely inside the scope are not listed
    for text in targets:
        inside = parse_target(text).addresses <= tg.parse_scope(scope)
        assert (f"{text} (" in str(info.value)) != inside


def test_scope_guard_names_file_lines_and_hostnames():
    targets = parse_target_lines(["10.0.0.0/24", "# comment", "outside.example.test 10.1.0.0/16"],
                                 source="t.txt", resolver=DNS)
    with pytest.raises(ScanfleetError) as info:
        check_scope(targets, ["10.0.0.0/16"], label="--scope", fix="widen --scope")
    assert str(info.value) == (
        "targets outside the declared scope (--scope): outside.example.test [t.txt:3] (192.0.2.7 outside); "
        "10.1.0.0/16 [t.txt:3] (10.1.0.0-10.1.255.255 outside); widen --scope"
    )


def test_excluded_parts_need_not_be_in_scope_but_the_rest_must():
    plan = plan_targets(["10.0.0.0/23"], ["10.0.1.0/24"], ["10.0.0.0/24"])
    assert plan.addresses == iset(("10.0.0.0", "10.0.0.255"))
    with pytest.raises(ScanfleetError, match=re.escape("10.0.0.0/23 (10.0.1.128-10.0.1.255 outside)")):
        plan_targets(["10.0.0.0/23"], ["10.0.1.0/25"], ["10.0.0.0/24"])


def test_scope_refuses_hostnames():
    with pytest.raises(ScanfleetError, match="only addresses, CIDRs and ranges"):
        check_scope(["10.0.0.1"], ["www.example.test"])


@pytest.mark.parametrize(("include", "expected"), [
    (False, iset(("10.0.0.0", "10.0.0.10"), ("10.0.0.12", "10.0.0.255"), "2001:db8::1")),
    (True, iset(("10.0.0.0", "10.0.0.255"), ("2001:db8::1", "2001:db8::2"))),
])
def test_scanners_own_addresses_are_excluded_unless_asked(include, expected):
    plan = plan_targets(["10.0.0.0/24", "2001:db8::1-2001:db8::2"], [], ["10.0.0.0/8", "2001:db8::/32"],
                        scanner_addresses=["10.0.0.11", "2001:db8::2", "192.0.2.1"], include_scanners=include)
    assert plan.addresses == expected
    assert bool(plan.scanner_addresses) != include


def test_targeting_only_the_scanners_is_an_error_that_suggests_include_scanners():
    with pytest.raises(ScanfleetError, match=r"scanners' own addresses .*include_scanners"):
        plan_targets(["10.0.0.11"], [], ["10.0.0.0/8"], scanner_addresses=["10.0.0.11"])


# --------------------------------------------------------------------------------------------
# Rendering and round trip


def stdlib_cidrs(family: int, lo: int, hi: int) -> list[str]:
    cls = ipaddress.IPv4Address if family == IPV4 else ipaddress.IPv6Address
    out = []
    for net in ipaddress.summarize_address_range(cls(lo), cls(hi)):
        out.append(str(net.network_address) if net.num_addresses == 1 else str(net))
    return out


@pytest.mark.parametrize("seed", range(30))
def test_cidr_rendering_is_the_minimal_cover(seed):
    rng = random.Random(seed)
    family = rng.choice((IPV4, IPV6))
    bits = 32 if family == IPV4 else 128
    lo = rng.randrange(2**bits)
    hi = min(2**bits - 1, lo + rng.randrange(2 ** rng.randrange(1, bits)))
    s = IntervalSet.from_family(family, [(lo, hi)])
    assert render_lines(s, "cidr") == stdlib_cidrs(family, lo, hi)


NMAP_OCTET = re.compile(r"(?:\d{1,3}(?:-\d{1,3})?\.){3}\d{1,3}(?:-\d{1,3})?")
NMAP_CIDR = re.compile(r"(?:\d{1,3}\.){3}\d{1,3}(?:/\d{1,2})?")


@pytest.mark.parametrize(("text", "style", "lines"), [
    ("10.0.0.5-10.0.1.20", "range", ["10.0.0.5-255", "10.0.1.0-20"]),
    ("10.0.0.5-10.2.3.20", "range", ["10.0.0.5-255", "10.0.1-255.0-255", "10.1.0-255.0-255", "10.2.0-2.0-255",
                                     "10.2.3.0-20"]),
    ("10.0.0.1-14", "auto", ["10.0.0.1-14"]),
    ("10.0.0.0/24", "auto", ["10.0.0.0/24"]),
    ("10.0.0.0/24", "range", ["10.0.0.0-255"]),
    ("10.0.0.0-10.0.0.1", "auto", ["10.0.0.0/31"]),
    ("10.0.0.7", "range", ["10.0.0.7"]),
    ("0.0.0.0/0", "range", ["0-255.0-255.0-255.0-255"]),
    ("0.0.0.0/0", "auto", ["0.0.0.0/0"]),
    ("2001:db8::1-2001:db8::6", "range",
     ["2001:db8::1", "2001:db8::2/127", "2001:db8::4/127", "2001:db8::6"]),
    ("::/0", "auto", ["::/0"]),
])
def test_rendering_examples(text, style, lines):
    assert render_lines(parse_target(text).addresses, style) == lines


@pytest.mark.parametrize("seed", range(30))
@pytest.mark.parametrize("style", ["auto", "cidr", "range"])
def test_render_parse_round_trip(seed, style):
    rng = random.Random(seed)
    s = IntervalSet()
    for _ in range(rng.randint(1, 8)):
        family = rng.choice((IPV4, IPV6))
        bits = 32 if family == IPV4 else 128
        lo = rng.randrange(2**bits)
        hi = min(2**bits - 1, lo + rng.randrange(2 ** rng.randrange(0, 30)))
        s = s | IntervalSet.from_family(family, [(lo, hi)])
    lines = render_lines(s, style)
    back = parse_target_lines(lines, source="x.targets", allow_hostnames=False)
    assert tg.addresses_of(back) == s
    # lines never overlap: their sizes add up to the size of the set
    assert sum(t.addresses.size for t in back) == s.size
    # never one line per address: each interval takes a bounded number of lines
    per_ipv4_interval = {"cidr": 2 * 32, "auto": 7, "range": 7}[style]
    bound = per_ipv4_interval * len(s.intervals(IPV4)) + 2 * 128 * len(s.intervals(IPV6))
    assert len(lines) <= bound
    for line in lines:
        if ":" in line:
            continue  # IPv6: always CIDR or a single address
        if style == "range":
            assert NMAP_OCTET.fullmatch(line), line
        elif style == "cidr":
            assert NMAP_CIDR.fullmatch(line), line
        else:
            assert NMAP_OCTET.fullmatch(line) or NMAP_CIDR.fullmatch(line), line


def test_unknown_render_style():
    with pytest.raises(ScanfleetError, match="unknown render style 'csv'"):
        render_lines(IntervalSet(), "csv")


# --------------------------------------------------------------------------------------------
# Fingerprint


def fp(targets, exclusions=(), scope=("10.0.0.0/8", "2001:db8::/32"), extra=()):
    return fingerprint(tg.addresses_of(parse_targets(targets)), tg.addresses_of(parse_targets(exclusions)),
                       tg.parse_scope(scope), extra)


def test_fingerprint_is_stable_across_spellings():
    base = fp(["10.0.0.0/24 2001:db8::/127"])
    assert re.fullmatch(r"[0-9a-f]{64}", base)
    assert fp(["10.0.0.0-10.0.0.255", "2001:db8::1, 2001:db8::"]) == base
    assert fp(["10.0.0.0-255 10.0.0.0/25 2001:db8::-2001:db8::1"]) == base
    assert fp(["10.0.0.0/24 2001:db8::/127"], scope=["2001:db8::/32", "10.0.0.0/9", "10.128.0.0/9"]) == base


@pytest.mark.parametrize("change", [
    {"targets": ["10.0.0.0/24 2001:db8::/126"]},
    {"targets": ["10.0.0.0/24"]},
    {"exclusions": ["10.0.0.5"]},
    {"exclusions": ["192.0.2.1"]},  # excluding nothing that is targeted still changes the plan
    {"scope": ["10.0.0.0/16", "2001:db8::/32"]},
    {"extra": ["-p", "80"]},
])
def test_fingerprint_is_sensitive_to_each_input(change):
    args = {"targets": ["10.0.0.0/24 2001:db8::/127"], "exclusions": [],
            "scope": ["10.0.0.0/8", "2001:db8::/32"], "extra": []}
    base = fp(**args)
    assert fp(**{**args, **change}) != base


def test_fingerprint_extra_order_matters():
    assert fp(["10.0.0.1"], extra=["-p", "80", "-sV"]) != fp(["10.0.0.1"], extra=["-sV", "-p", "80"])
    assert fp(["10.0.0.1"], extra=["-p", "80"]) == fp(["10.0.0.1"], extra=("-p", "80"))


# --------------------------------------------------------------------------------------------
# Rescanning the unfinished remainder


def test_subtract_finished_addresses():
    shard = parse_target("10.0.0.0/29").addresses | parse_target("2001:db8::/126").addresses
    left = subtract_finished(shard, ["10.0.0.0", "10.0.0.3", " 10.0.0.4", "2001:db8::2", "192.0.2.9"])
    assert left == iset(("10.0.0.1", "10.0.0.2"), ("10.0.0.5", "10.0.0.7"), ("2001:db8::", "2001:db8::1"),
                        "2001:db8::3")


def test_subtract_finished_can_empty_a_shard():
    shard = parse_target("10.0.0.0/30").addresses
    assert subtract_finished(shard, [f"10.0.0.{i}" for i in range(4)]) == IntervalSet()
    assert not subtract_finished(shard, [f"10.0.0.{i}" for i in range(4)])


def test_subtract_finished_rejects_non_addresses():
    with pytest.raises(ScanfleetError, match=re.escape("finished address 'host-3'")):
        subtract_finished(parse_target("10.0.0.0/30").addresses, ["10.0.0.1", "host-3"])


# --------------------------------------------------------------------------------------------
# --scanner and CLI


@pytest.mark.parametrize(("text", "name", "weight", "addresses"), [
    ("scan1=2", "scan1", 2, ()),
    ("scan-2.lab=1.5@10.0.0.12", "scan-2.lab", 1.5, ("10.0.0.12",)),
    ("s3=0@10.0.0.13,2001:db8::13", "s3", 0, ("10.0.0.13", "2001:db8::13")),
])
def test_parse_scanner(text, name, weight, addresses):
    scanner = parse_scanner(text)
    assert (scanner.name, scanner.weight, scanner.addresses) == (name, weight, addresses)


@pytest.mark.parametrize(("text", "fragment"), [
    ("scan1", "missing NAME="),
    ("../x=1", "cannot be used as a file name"),
    ("scan1=heavy", "weight 'heavy' is not a number"),
    ("scan1=-1", "negative"),
    ("scan1=1@", "nothing after '@'"),
    ("scan1=1@10.0.0.0/24", "give a single IPv4 or IPv6 address"),
])
def test_parse_scanner_errors(text, fragment):
    with pytest.raises(ScanfleetError, match=re.escape(fragment)):
        parse_scanner(text)


@pytest.fixture
def fake_system_dns(monkeypatch):
    monkeypatch.setattr(tg, "system_resolver", lambda name: DNS[name])
    monkeypatch.setattr(runcli, "system_resolver", lambda name: DNS[name])


def run_cli(argv, capsys):
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_check_prints_the_count(capsys, fake_system_dns):
    code, out, err = run_cli(["targets", "check", "--target", "10.0.0.0/24", "www.example.test",
                              "--exclude", "10.0.0.0-9", "--scope", "10.0.0.0/16", "2001:db8::/32"], capsys)
    assert (code, err) == (0, "")
    assert out.splitlines()[0] == "247 addresses to scan (IPv4 246, IPv6 1) from 2 targets, all within scope"


def test_cli_check_scope_failure_exits_2_naming_the_target(capsys):
    code, _, err = run_cli(["targets", "check", "--target", "10.0.0.0/24,192.168.1.0/24",
                              "--scope", "10.0.0.0/16"], capsys)
    assert code == 2
    assert err == ("scanfleet targets: error: targets outside the declared scope (--scope): 192.168.1.0/24 "
                   "(192.168.1.0-192.168.1.255 outside); widen --scope or remove the target\n")


def test_cli_requires_a_scope(capsys):
    code, _, err = run_cli(["targets", "check", "--target", "10.0.0.1"], capsys)
    assert code == 2 and "no scope given" in err


def read_run(results: Path, result: dict) -> tuple[dict, dict[str, IntervalSet]]:
    """state.json of a run planned by scanfleet run plan, and each host's addresses from its -iL files."""
    state = json.loads((results / result["run_id"] / "state.json").read_text())
    shards: dict[str, IntervalSet] = {}
    for attempt in state["attempts"]:
        path = results / result["run_id"] / "shards" / f"{attempt['id']}.targets"
        assert path.read_text().splitlines() == attempt["lines"]
        shards[attempt["host"]] = shards.get(attempt["host"], IntervalSet()) | tg.load_targets_file(path)
    return state, shards


def run_plan(argv, capsys) -> tuple[int, dict, str]:
    code, out, err = run_cli(["run", "plan", *argv, "--json"], capsys)
    return code, json.loads(out) if code == 0 else {}, err


@pytest.mark.parametrize("mode", ["contiguous", "interleaved"])
def test_cli_run_plan_writes_state_and_shards(tmp_path, capsys, fake_system_dns, mode):
    results = tmp_path / "results"
    argv = ["--targets-file", str(FIXTURES / "targets.txt"),
            "--exclude-file", str(FIXTURES / "exclude.txt"), "--scope-file", str(FIXTURES / "scope.txt"),
            "--scanner", "b=0.5@10.0.0.200", "a=1@10.0.0.100", "idle=0", "--mode", mode, "--seed", "7",
            "--results", str(results)]
    code, result, err = run_plan(argv, capsys)
    assert code == 0, err
    state, shards = read_run(results, result)
    # targets.txt minus exclude.txt (10.0.0.1, 10.0.1.10-20, 2001:db8::3) minus the scanners
    expected = iset("10.0.0.0", ("10.0.0.2", "10.0.0.99"), ("10.0.0.101", "10.0.0.199"),
                    ("10.0.0.201", "10.0.0.255"), ("10.0.1.5", "10.0.1.9"), ("10.0.2.1", "10.0.2.3"),
                    ("2001:db8::", "2001:db8::2"), "2001:db8::80")
    assert result["total"] == state["total"] == expected.size == 265
    assert result["run_id"] == "scan-" + result["fingerprint"][:12] and not result["resumed"]
    assert sorted(result["assignments"]) == ["a", "b", "idle"] and result["assignments"]["idle"] == []
    # 265 * 2/3 = 176.67 and 265 * 1/3 = 88.33: the leftover address goes to the larger remainder (a)
    sizes = {h: sum(a["size"] for a in attempts) for h, attempts in result["assignments"].items()}
    assert sizes == {"a": 177, "b": 88, "idle": 0}
    assert union_all(shards.values()) == expected
    assert shards["a"].isdisjoint(shards["b"]) and "idle" not in shards
    assert result["resolved"] == {"www.example.test": ["10.0.0.80", "2001:db8::80"]}
    assert result["scanners_excluded"] == "10.0.0.100, 10.0.0.200"
    assert "round 1: no addresses for idle (empty shard): skipped" in result["notes"]
    assert sorted(p.name for p in (results / result["run_id"]).iterdir()) == ["shards", "state.json"]


def test_cli_run_plan_fingerprint_ignores_sharding_but_not_options(tmp_path, capsys):
    common = ["--target", "10.0.0.0/24", "--scope", "10.0.0.0/8", "--scanner", "a=1", "b=1"]
    prints = set()
    for mode, seed in (("contiguous", "0"), ("interleaved", "3")):
        code, result, err = run_plan([*common, "--extra", "ports=80", "options=-sV", "--mode", mode, "--seed", seed,
                                      "--results", str(tmp_path / mode)], capsys)
        assert code == 0, err
        prints.add(result["fingerprint"])
    assert len(prints) == 1
    _, other, _ = run_plan([*common, "--extra", "ports=443", "options=-sV", "--results", str(tmp_path / "o")], capsys)
    assert other["fingerprint"] not in prints


def test_cli_run_plan_resumes_the_same_run_and_refuses_other_targets(tmp_path, capsys):
    base = ["--target", "10.0.0.0/28", "--scope", "10.0.0.0/8", "--results", str(tmp_path), "--run-id", "r1"]
    code, first, _ = run_plan([*base, "--scanner", "a=1", "b=1", "c=1", "--session", "s1"], capsys)
    assert code == 0 and first["new"] == ["001-a", "002-b", "003-c"]
    before = (tmp_path / "r1" / "state.json").read_text()
    code, again, _ = run_plan([*base, "--scanner", "a=1", "b=1", "c=1", "--session", "s1"], capsys)
    assert code == 0 and again["resumed"] and again["new"] == [] and not again["changed"]
    assert again["reattached"] == ["001-a", "002-b", "003-c"]
    assert (tmp_path / "r1" / "state.json").read_text() == before
    code, other, _ = run_plan([*base, "--scanner", "a=1", "b=1", "c=1", "--session", "s2"], capsys)
    assert code == 0 and other["changed"] and other["reattached"] == ["001-a", "002-b", "003-c"]
    sessions = json.loads((tmp_path / "r1" / "state.json").read_text())["sessions"]
    assert [s["id"] for s in sessions] == ["s1", "s2"]
    code, without_c, _ = run_plan([*base, "--scanner", "a=1", "b=1"], capsys)  # c's shard goes to a and b
    assert code == 0 and without_c["lost"] == ["003-c"] and without_c["new"] == ["004-a", "005-b"]
    code, _, err = run_cli(["run", "plan", *base[:1], "10.0.1.0/28", *base[2:], "--scanner", "a=1"], capsys)
    assert code == 2 and "belongs to a different target set" in err
    foreign = tmp_path / "home"
    foreign.mkdir()
    (foreign / "state.json").write_text("{}")
    code, _, err = run_cli(["run", "plan", *base[:-1], "home", "--scanner", "a=1"], capsys)
    assert code == 2 and "not a scanfleet run state" in err
    assert (foreign / "state.json").read_text() == "{}"


def test_cli_run_status_shows_state_and_coverage(tmp_path, capsys):
    run_plan(["--target", "10.0.0.0/30", "2001:db8::/127", "--scope", "10.0.0.0/8", "2001:db8::/32",
              "--scanner", "a=1", "--results", str(tmp_path), "--run-id", "r1"], capsys)
    code, out, err = run_cli(["run", "status", str(tmp_path / "r1")], capsys)
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].startswith("run r1 (fingerprint ") and "6 target addresses, 1 round in 1 session" in lines[0]
    assert lines[2] == "covered 0, missing 6, total 6, duplicates 0: not complete"
    assert lines[3:6] == ["attempts: 2 assigned",
                          "  001-a: assigned on a, round 1, IPv4, 4 addresses, -",
                          "  002-a: assigned on a, round 1, IPv6, 2 addresses, -"]
    code, out, _ = run_cli(["run", "status", "--json", str(tmp_path / "r1")], capsys)
    status = json.loads(out)
    assert (status["covered"], status["missing"], status["total"], status["duplicates"]) == (0, 6, 6, 0)
    assert [(a["id"], a["host"], a["status"]) for a in status["attempts"]] == [("001-a", "a", "assigned"),
                                                                              ("002-a", "a", "assigned")]
    code, _, err = run_cli(["run", "status", str(tmp_path)], capsys)
    assert code == 2 and "no such run state" in err


@pytest.mark.parametrize(("extra_args", "fragment"), [
    ([], "no scanners given"),
    (["--scanner", "a=1", "a=2"], "--scanner given twice for a"),
    (["--scanner", "a=0"], "no scanner host is available (a: capacity 0)"),
])
def test_cli_run_plan_scanner_errors(tmp_path, capsys, extra_args, fragment):
    code, _, err = run_cli(["run", "plan", "--target", "10.0.0.0/28", "--scope", "10.0.0.0/8",
                            "--results", str(tmp_path / "p"), *extra_args], capsys)
    assert code == 2 and fragment in err
    assert not (tmp_path / "p").exists()
