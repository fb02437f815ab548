"""Sharding: exact weighted counts, disjointness and exact union, contiguous and interleaved order."""

from __future__ import annotations

import ipaddress
import itertools
import random
from fractions import Fraction

import pytest

from scanfleet import ScanfleetError
from scanfleet.intervals import IPV4, IPV6, IntervalSet
from scanfleet.shards import block_prefixes, largest_remainder, shard
from scanfleet.targets import addresses_of, parse_targets, plan_targets

MODES = ["contiguous", "interleaved"]


def ips(text: str) -> IntervalSet:
    return addresses_of(parse_targets(text))


def ip(text: str) -> int:
    return int(ipaddress.ip_address(text))


def assert_partition(shards: dict[str, IntervalSet], whole: IntervalSet) -> None:
    """Union of the shards == WHOLE exactly, and the shards are pairwise disjoint."""
    assert IntervalSet().union(*shards.values()) == whole
    # equal union and sizes adding up to the union's size already imply pairwise disjointness;
    # check pairs directly too when that is cheap
    assert sum(s.size for s in shards.values()) == whole.size
    if len(shards) <= 12:
        for (a, sa), (b, sb) in itertools.combinations(shards.items(), 2):
            assert sa.isdisjoint(sb), f"{a} and {b} overlap: {sa & sb}"


# --------------------------------------------------------------------------------------------
# Largest remainder


@pytest.mark.parametrize(("total", "weights", "expected"), [
    (10, {"a": 1, "b": 1, "c": 1}, {"a": 4, "b": 3, "c": 3}),  # tie on remainders: name order
    (10, {"c": 1, "b": 1, "a": 1}, {"a": 4, "b": 3, "c": 3}),  # input order does not matter
    (11, {"x-a": 1, "scan-b": 1, "scan-a": 1}, {"scan-a": 4, "scan-b": 4, "x-a": 3}),  # whole-name order
    (3, {"a": 2, "b": 1}, {"a": 2, "b": 1}),
    (100, {"a": 2, "b": 1}, {"a": 67, "b": 33}),
    (100, {"b": 2, "a": 1}, {"a": 33, "b": 67}),
    (7, {"x": 1.5, "y": 0.5}, {"x": 5, "y": 2}),  # 5.25 / 1.75: the spare goes to y (.75 > .25)
    (5, {"a": 1, "z": 0}, {"a": 5, "z": 0}),
    (2, {"a": 1, "b": 1, "c": 1, "d": 1}, {"a": 1, "b": 1, "c": 0, "d": 0}),
    (0, {"a": 1, "b": 3}, {"a": 0, "b": 0}),
    (2**128, {"a": 1, "b": 1, "c": 1}, {"a": (2**128 - 1) // 3 + 1, "b": (2**128 - 1) // 3,
                                        "c": (2**128 - 1) // 3}),
    (11, {"a": "2", "b": Fraction(1, 2)}, {"a": 9, "b": 2}),  # 8.8 / 2.2
])
def test_largest_remainder(total, weights, expected):
    assert largest_remainder(total, weights) == expected


@pytest.mark.parametrize("seed", range(30))
def test_largest_remainder_sums_exactly_and_stays_within_one_of_the_quota(seed):
    rng = random.Random(seed)
    weights = {f"h{i}": rng.choice([0, 1, 2, 3, 0.5, 7]) for i in range(rng.randint(1, 12))}
    if not any(weights.values()):
        weights["h0"] = 1
    total = rng.randrange(10**rng.randint(1, 12))
    counts = largest_remainder(total, weights)
    assert sum(counts.values()) == total
    weight_sum = sum(Fraction(w) for w in weights.values())
    for host, w in weights.items():
        quota = total * Fraction(w) / weight_sum
        assert quota - 1 < counts[host] < quota + 1
        if w == 0:
            assert counts[host] == 0


@pytest.mark.parametrize(("hosts", "fragment"), [
    ({}, "no scanner hosts"),
    ({"a": 0, "b": 0}, "every scanner weight is 0 (a, b)"),
    ({"a": -1, "b": 1}, "scanner 'a': weight -1 is negative"),
    ({"a": float("nan")}, "scanner 'a': weight nan is not a finite number"),
    ({"a": float("inf")}, "not a finite number"),
    ({"a": "heavy"}, "weight 'heavy' is not a finite number"),
    ({"a": True}, "not a finite number"),
])
def test_bad_weights(hosts, fragment):
    with pytest.raises(ScanfleetError) as info:
        largest_remainder(10, hosts)
    assert fragment in str(info.value)


@pytest.mark.parametrize(("kwargs", "fragment"), [
    ({"mode": "random"}, "unknown shard mode 'random'"),
    ({"mode": "interleaved", "block_prefix": 33}, "block_prefix 33 is not a prefix length 0-32"),
    ({"mode": "interleaved", "block_prefix6": -1}, "block_prefix6 -1"),
    ({"mode": "interleaved", "max_blocks": 0}, "max_blocks 0"),
    ({"seed": "x"}, "seed 'x' is not an integer"),
])
def test_bad_shard_arguments(kwargs, fragment):
    with pytest.raises(ScanfleetError, match=fragment):
        shard(ips("10.0.0.0/24"), {"a": 1}, **kwargs)


# --------------------------------------------------------------------------------------------
# Properties common to both modes


def random_targets(rng: random.Random) -> IntervalSet:
    parts = []
    for _ in range(rng.randint(1, 10)):
        if rng.random() < 0.7:
            lo = rng.randrange(2**32 - 5000)
            parts.append(IntervalSet([(lo, lo + rng.randrange(rng.choice([1, 20, 300, 5000])))]))
        else:
            lo = rng.randrange(2**128 - 10**6)
            parts.append(IntervalSet(v6=[(lo, lo + rng.randrange(rng.choice([1, 50, 10**6])))]))
    return IntervalSet().union(*parts)


@pytest.mark.parametrize("seed", range(25))
@pytest.mark.parametrize("mode", MODES)
def test_shards_partition_the_input_with_exact_weighted_sizes(mode, seed):
    rng = random.Random(seed)
    targets = random_targets(rng)
    hosts = {f"scan{i:02d}": rng.choice([0, 1, 1, 2, 3]) for i in range(rng.randint(1, 9))}
    hosts.setdefault("scan00", 1)
    hosts["scan00"] = hosts["scan00"] or 1
    shards = shard(targets, hosts, mode=mode, seed=seed, block_prefix=rng.choice([24, 28, 30, 32]),
                   block_prefix6=rng.choice([100, 124, 128]))
    assert list(shards) == sorted(hosts)
    assert_partition(shards, targets)
    assert {h: s.size for h, s in shards.items()} == largest_remainder(targets.size, hosts)


@pytest.mark.parametrize("mode", MODES)
def test_weights_two_to_one(mode):
    targets = ips("10.0.0.0/22")  # 1024 addresses: 682.67 / 341.33
    shards = shard(targets, {"big": 2, "small": 1}, mode=mode)
    assert (shards["big"].size, shards["small"].size) == (683, 341)
    assert_partition(shards, targets)


@pytest.mark.parametrize("mode", MODES)
def test_more_hosts_than_addresses(mode):
    targets = ips("10.0.0.1 10.0.0.9 2001:db8::1")
    hosts = {f"h{i}": 1 for i in range(5)}
    shards = shard(targets, hosts, mode=mode, seed=3)
    assert sorted(s.size for s in shards.values()) == [0, 0, 1, 1, 1]
    assert_partition(shards, targets)


@pytest.mark.parametrize("mode", MODES)
def test_zero_weight_hosts_get_nothing_but_are_listed(mode):
    targets = ips("10.0.0.0/24")
    shards = shard(targets, {"a": 1, "off": 0, "b": 1}, mode=mode)
    assert list(shards) == ["a", "b", "off"]
    assert not shards["off"]
    assert shards["a"].size == shards["b"].size == 128


@pytest.mark.parametrize("mode", MODES)
def test_an_exclusion_that_empties_a_shard(mode):
    plan = plan_targets(["10.0.0.0/30"], ["10.0.0.1-10.0.0.3"], ["10.0.0.0/8"])
    shards = shard(plan.addresses, {"a": 1, "b": 1}, mode=mode)
    assert shards["a"] == ips("10.0.0.0") and not shards["b"]


@pytest.mark.parametrize("mode", MODES)
def test_empty_target_set_gives_empty_shards(mode):
    assert shard(IntervalSet(), {"a": 1, "b": 2}, mode=mode) == {"a": IntervalSet(), "b": IntervalSet()}


@pytest.mark.parametrize("mode", MODES)
def test_the_whole_address_space(mode):
    targets = IntervalSet.everything()
    shards = shard(targets, {"a": 1, "b": 1, "c": 1}, mode=mode)
    assert_partition(shards, targets)
    third, left = divmod(2**32 + 2**128, 3)
    assert left == 2  # so two hosts get one more address than the third
    assert [s.size for s in shards.values()] == [third + 1, third + 1, third]


# --------------------------------------------------------------------------------------------
# Contiguous


def test_contiguous_cuts_consecutive_pieces_in_name_order():
    targets = ips("10.0.0.0/24 10.0.2.0/25 2001:db8::/120")  # 256 + 128 + 256 = 640
    shards = shard(targets, {"c": 1, "a": 1, "b": 2}, mode="contiguous")
    assert shards["a"] == ips("10.0.0.0-10.0.0.159")
    assert shards["b"] == ips("10.0.0.160-10.0.0.255 10.0.2.0/25 2001:db8::-2001:db8::5f")
    assert shards["c"] == ips("2001:db8::60-2001:db8::ff")


def test_contiguous_is_deterministic_and_ignores_the_seed():
    targets = ips("10.0.0.0/16")
    hosts = {"a": 1, "b": 3, "c": 2}
    assert shard(targets, hosts, seed=1) == shard(targets, hosts, seed=2) == shard(targets, dict(hosts))


# --------------------------------------------------------------------------------------------
# Interleaved


def owners(shards: dict[str, IntervalSet], prefix: int, family: int = IPV4) -> list[set[str]]:
    """For each block (in address order) that holds targets: the hosts that got part of it."""
    shift = (32 if family == IPV4 else 128) - prefix
    blocks: dict[int, set[str]] = {}
    for host, s in shards.items():
        for lo, hi in s.intervals(family):
            for b in range(lo >> shift, (hi >> shift) + 1):
                blocks.setdefault(b, set()).add(host)
    return [blocks[b] for b in sorted(blocks)]


def test_interleaved_equal_weights_deal_whole_blocks_to_alternating_hosts():
    targets = ips("10.0.0.0/20")  # 256 blocks of /28
    shards = shard(targets, {"a": 1, "b": 1, "c": 1, "d": 1}, mode="interleaved", seed=5)
    seq = owners(shards, 28)
    assert all(len(o) == 1 for o in seq)  # 4096 / 4 is a whole number of blocks: no block is split
    seq = [next(iter(o)) for o in seq]
    assert all(x != y for x, y in itertools.pairwise(seq)), "neighbouring blocks went to the same host"
    assert {h: seq.count(h) for h in "abcd"} == dict.fromkeys("abcd", 64)
    # every /24 of the targets is scanned by all four scanners, none by one alone
    for block24 in owners(shards, 24):
        assert block24 == {"a", "b", "c", "d"}


def test_interleaved_two_to_one_never_gives_three_neighbours_to_one_host():
    targets = ips("10.0.0.0/20")
    shards = shard(targets, {"a": 2, "b": 1}, mode="interleaved", seed=0)
    seq = owners(shards, 28)
    assert [s.size for s in shards.values()] == [2731, 1365]
    flat = [min(o) if len(o) == 1 else "split" for o in seq]
    runs = [len(list(g)) for _, g in itertools.groupby(flat)]
    assert max(runs) <= 2
    assert flat.count("a") >= 2 * 80 and flat.count("b") >= 80


def test_interleaved_respects_the_block_prefix():
    targets = ips("10.0.0.0/22")
    shards = shard(targets, {"a": 1, "b": 1}, mode="interleaved", block_prefix=26)
    for s in shards.values():
        for lo, hi in s.intervals(IPV4):
            assert lo % 64 == 0 and (hi + 1) % 64 == 0  # whole /26 blocks only
    assert sum(s.interval_count for s in shards.values()) == 16  # 16 blocks, none adjacent to its owner


def test_interleaved_ipv6_blocks():
    targets = ips("2001:db8::/118")  # 1024 addresses, 64 blocks of /124
    shards = shard(targets, {"a": 1, "b": 1, "c": 1, "d": 1}, mode="interleaved", seed=2)
    assert_partition(shards, targets)
    seq = owners(shards, 124, IPV6)
    assert len(seq) == 64 and all(len(o) == 1 for o in seq)
    flat = [next(iter(o)) for o in seq]
    assert all(x != y for x, y in itertools.pairwise(flat))


def test_interleaved_splits_a_block_only_to_hit_exact_counts():
    targets = ips("10.0.0.0/27")  # two /28 blocks, three equal hosts: 11, 11, 10
    shards = shard(targets, {"a": 1, "b": 1, "c": 1}, mode="interleaved")
    assert sorted(s.size for s in shards.values()) == [10, 11, 11]
    assert_partition(shards, targets)


def test_interleaved_is_deterministic_for_a_seed_and_varies_with_it():
    targets = ips("10.0.0.0/20 10.9.0.0/24 2001:db8::/120")
    hosts = {"a": 1, "b": 1, "c": 2, "d": 1}
    first = shard(targets, hosts, mode="interleaved", seed=11)
    assert shard(targets, dict(reversed(hosts.items())), mode="interleaved", seed=11) == first
    results = {tuple(shard(targets, hosts, mode="interleaved", seed=s).items()) for s in range(8)}
    assert len(results) >= 6
    # whatever the seed, the sizes are the same exact counts
    for result in results:
        assert {h: s.size for h, s in result} == {h: s.size for h, s in first.items()}


def test_block_size_grows_when_there_would_be_too_many_blocks():
    internet = ips("0.0.0.0/0") - ips("10.0.0.0/8 172.16.0.0/12 192.168.0.0/16")
    assert block_prefixes(internet) == {IPV4: 16, IPV6: 124}
    # 10.0.0.0/16 has 2**(p-16) blocks of /p: at most 100 blocks -> /22 (64 blocks; /23 would be 128)
    assert block_prefixes(ips("10.0.0.0/16"), max_blocks=100) == {IPV4: 22, IPV6: 124}
    assert block_prefixes(ips("10.0.0.0/16"), max_blocks=64) == {IPV4: 22, IPV6: 124}
    assert block_prefixes(ips("10.0.0.0/16"), max_blocks=63) == {IPV4: 21, IPV6: 124}
    # scattered single hosts: 1000 hosts 4096 apart share no /20 block, but pairs share a /19
    scattered = IntervalSet([(i * 4096, i * 4096) for i in range(1000)])
    assert block_prefixes(scattered, max_blocks=999)[IPV4] == 19
    assert block_prefixes(scattered, max_blocks=1000)[IPV4] == 28
    assert block_prefixes(ips("::/0"))[IPV6] == 16
    assert block_prefixes(IntervalSet(), block_prefix=20, block_prefix6=64) == {IPV4: 20, IPV6: 64}


def test_interleaved_internet_sized_target_uses_the_grown_blocks():
    internet = ips("0.0.0.0/0") - ips("10.0.0.0/8 172.16.0.0/12 192.168.0.0/16")
    hosts = {f"scan{i:03d}": 1 + i % 3 for i in range(50)}
    shards = shard(internet, hosts, mode="interleaved", seed=1)
    assert_partition(shards, internet)
    assert {h: s.size for h, s in shards.items()} == largest_remainder(internet.size, hosts)
    # whole /16 blocks (65263 of them) except where a host's share runs out inside a block: at
    # most one split per host, each adding at most two pieces
    assert sum(s.interval_count for s in shards.values()) <= 65263 + 2 * len(hosts)
