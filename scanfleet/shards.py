"""Split a target set between scanner hosts by address count, weighted by capacity.

Shard sizes come from the largest-remainder method, so they add up exactly to the number of
target addresses and follow the weights as closely as integers allow (2:1 -> 2/3 and 1/3).
Everything is deterministic: hosts are taken in name order, the interleaved order is drawn from
``random.Random(seed)``.

``contiguous``: the ordered intervals (IPv4 then IPv6, by address) are cut into consecutive
pieces, one per host in name order.  Fewest lines per shard; a subnet is usually scanned by one
scanner.

``interleaved``: the address space is cut into aligned blocks (default /28 for IPv4, /124 for
IPv6), each block holding the targets that fall into it.  When a family would have more than
``max_blocks`` non-empty blocks, its block size is doubled until it has at most that many (a
binary search on the prefix length): ``0.0.0.0/0`` becomes /16 blocks, which keeps planning fast
and the ``-iL`` files short.  Blocks are dealt in address order to the host that is furthest
behind its share (ties broken at random from the seed), and the host that got the previous block
yields to a host that would otherwise be served right after it; so with equal weights
neighbouring blocks always go to different hosts, and any target subnet larger than a block is
spread over several scanners.  (With unequal weights a heavy host must sometimes get two
neighbouring blocks: with 2:1 the pattern is A A B.)  To hit the exact counts, a host whose share
runs out in the middle of a block gets the first part of it and the next host the rest.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterable, Iterator, Mapping
from fractions import Fraction
from numbers import Real

from scanfleet import ScanfleetError
from scanfleet.intervals import BITS, FAMILIES, IPV4, IPV6, Interval, IntervalSet

MODES = ("contiguous", "interleaved")
DEFAULT_BLOCK_PREFIX = {IPV4: 28, IPV6: 124}
MAX_BLOCKS = 1 << 16


def _weights(hosts: Mapping[str, Real | str]) -> dict[str, Fraction]:
    if not hosts:
        raise ScanfleetError("no scanner hosts to shard between; give at least one host with a weight")
    out = {}
    for name in sorted(hosts):
        raw = hosts[name]
        try:
            if isinstance(raw, bool):
                raise TypeError
            weight = Fraction(raw)
        except (TypeError, ValueError, OverflowError, ZeroDivisionError):
            raise ScanfleetError(f"scanner {name!r}: weight {raw!r} is not a finite number; "
                                 "give a number >= 0") from None
        if weight < 0:
            raise ScanfleetError(f"scanner {name!r}: weight {raw} is negative; give a number >= 0")
        out[name] = weight
    if not any(out.values()):
        raise ScanfleetError(f"every scanner weight is 0 ({', '.join(out)}); "
                             "give at least one a positive weight")
    return out


def capacity_weights(hosts: Mapping[str, Real | str]) -> dict[str, Fraction]:
    """HOSTS' weights (name -> capacity) checked and exact; an error names a bad one and the fix."""
    return _weights(hosts)


def largest_remainder(total: int, hosts: Mapping[str, Real | str]) -> dict[str, int]:
    """Split TOTAL between HOSTS in proportion to their weights, exactly (sum == TOTAL).

    Each host gets the floor of its exact quota; the units left over go to the largest
    remainders, ties to the host name that sorts first.  Weight 0 gets 0.
    """
    weights = _weights(hosts)
    weight_sum = sum(weights.values())
    quotas = {name: total * w / weight_sum for name, w in weights.items()}
    counts = {name: q.numerator // q.denominator for name, q in quotas.items()}
    left = total - sum(counts.values())
    by_remainder = sorted(weights, key=lambda n: (-(quotas[n] - counts[n]), n))
    for name in by_remainder[:left]:
        counts[name] += 1
    return counts


def _count_blocks(intervals: Iterable[Interval], shift: int) -> int:
    count, last = 0, -1
    for lo, hi in intervals:
        first, end = lo >> shift, hi >> shift
        if first == last:
            first += 1
        if end >= first:
            count += end - first + 1
        last = end
    return count


def block_prefixes(
    addresses: IntervalSet,
    block_prefix: int | None = None,
    block_prefix6: int | None = None,
    max_blocks: int = MAX_BLOCKS,
) -> dict[int, int]:
    """Interleaving block size per family, as a prefix length, after adapting to MAX_BLOCKS."""
    wanted = {
        IPV4: DEFAULT_BLOCK_PREFIX[IPV4] if block_prefix is None else block_prefix,
        IPV6: DEFAULT_BLOCK_PREFIX[IPV6] if block_prefix6 is None else block_prefix6,
    }
    if max_blocks < 1:
        raise ScanfleetError(f"max_blocks {max_blocks} must be at least 1")
    out = {}
    for family in FAMILIES:
        bits = BITS[family]
        prefix = wanted[family]
        if isinstance(prefix, bool) or not isinstance(prefix, int) or not 0 <= prefix <= bits:
            option = "block_prefix" if family == IPV4 else "block_prefix6"
            raise ScanfleetError(f"{option} {prefix!r} is not a prefix length 0-{bits} for IPv{family}; "
                                 f"e.g. {DEFAULT_BLOCK_PREFIX[family]}")
        intervals = addresses.intervals(family)
        low = bits - prefix  # smallest shift (block = 2**shift addresses) allowed
        if _count_blocks(intervals, low) > max_blocks:
            high = bits  # one block always fits
            while high - low > 1:  # invariant: count(low) > max_blocks >= count(high)
                mid = (low + high) // 2
                if _count_blocks(intervals, mid) > max_blocks:
                    low = mid
                else:
                    high = mid
            low = high
        out[family] = bits - low
    return out


def _blocks(intervals: Iterable[Interval], shift: int) -> Iterator[list[Interval]]:
    """The non-empty aligned blocks of 2**SHIFT addresses, each as its list of pieces."""
    current: list[Interval] = []
    current_index = -1
    size = 1 << shift
    for lo, hi in intervals:
        first, last = lo >> shift, hi >> shift
        if first != current_index:
            if current:
                yield current
            current, current_index = [], first
        if first == last:
            current.append((lo, hi))
            continue
        current.append((lo, ((first + 1) << shift) - 1))
        yield current
        for index in range(first + 1, last):
            start = index << shift
            yield [(start, start + size - 1)]
        current, current_index = [(last << shift, hi)], last
    if current:
        yield current


def _contiguous(addresses: IntervalSet, counts: dict[str, int]) -> dict[str, dict[int, list[Interval]]]:
    out: dict[str, dict[int, list[Interval]]] = {h: {IPV4: [], IPV6: []} for h in counts}
    ranges = addresses.ranges()
    current = None
    for host in counts:  # name order
        need = counts[host]
        while need:
            family, lo, hi = current if current is not None else next(ranges)
            current = None
            n = hi - lo + 1
            if n <= need:
                out[host][family].append((lo, hi))
                need -= n
            else:
                out[host][family].append((lo, lo + need - 1))
                current = (family, lo + need, hi)
                need = 0
    return out


def _interleaved(
    addresses: IntervalSet, counts: dict[str, int], seed: int, prefixes: dict[int, int]
) -> dict[str, dict[int, list[Interval]]]:
    out: dict[str, dict[int, list[Interval]]] = {h: {IPV4: [], IPV6: []} for h in counts}
    names = [h for h in counts if counts[h]]  # name order; hosts with nothing to get are left out
    quota = [counts[h] for h in names]
    remaining = list(quota)
    given = [0] * len(names)
    rand = random.Random(seed).random
    heappop, heappushpop = heapq.heappop, heapq.heappushpop
    # heap of (progress = given / quota, random tie-break, host index), one entry per host with
    # room left; PENDING is the entry of the host just served, pushed back with the next pop
    heap = [(0.0, rand(), i) for i in range(len(names))]
    heapq.heapify(heap)
    pending = None
    previous = -1
    for family in FAMILIES:
        sinks = [out[h][family] for h in names]
        shift = BITS[family] - prefixes[family]
        for pieces in _blocks(addresses.intervals(family), shift):
            block_left = sum(hi - lo + 1 for lo, hi in pieces)
            index = 0
            while block_left:
                entry = heappop(heap) if pending is None else heappushpop(heap, pending)
                pending = None
                i = entry[2]
                # the previous host yields to the next one if that would come right after it anyway
                if i == previous and heap and heap[0][0] < entry[0] + block_left / quota[i]:
                    entry = heapq.heapreplace(heap, entry)
                    i = entry[2]
                sink = sinks[i]
                take = remaining[i]
                if take >= block_left and index == 0 and len(pieces) == 1:  # the common case
                    take = block_left
                    sink.append(pieces[0])
                else:
                    take = min(take, block_left)
                    rest = take
                    while rest:
                        lo, hi = pieces[index]
                        n = hi - lo + 1
                        if n <= rest:
                            sink.append((lo, hi))
                            rest -= n
                            index += 1
                        else:
                            sink.append((lo, lo + rest - 1))
                            pieces[index] = (lo + rest, hi)
                            rest = 0
                remaining[i] -= take
                given[i] += take
                block_left -= take
                if remaining[i]:
                    pending = (given[i] / quota[i], rand(), i)
                previous = i
    return out


def shard(
    targetset: IntervalSet,
    hosts: Mapping[str, Real | str],
    mode: str = "contiguous",
    seed: int = 0,
    block_prefix: int | None = None,
    block_prefix6: int | None = None,
    max_blocks: int = MAX_BLOCKS,
) -> dict[str, IntervalSet]:
    """Split TARGETSET between HOSTS (name -> capacity weight), returning name -> IntervalSet.

    Every host is in the result (in name order); weight-0 hosts, and hosts beyond the number of
    addresses, get an empty set.  The shards are pairwise disjoint and their union is TARGETSET.
    BLOCK_PREFIX / BLOCK_PREFIX6 and MAX_BLOCKS only matter for ``interleaved``.
    """
    if mode not in MODES:
        raise ScanfleetError(f"unknown shard mode {mode!r}; use one of {', '.join(MODES)}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ScanfleetError(f"seed {seed!r} is not an integer; give e.g. 0")
    counts = largest_remainder(targetset.size, hosts)
    if mode == "contiguous":
        pieces = _contiguous(targetset, counts)
    else:
        prefixes = block_prefixes(targetset, block_prefix, block_prefix6, max_blocks)
        pieces = _interleaved(targetset, counts, seed, prefixes)
    return {h: IntervalSet.from_sorted(pieces[h][IPV4], pieces[h][IPV6]) for h in counts}
