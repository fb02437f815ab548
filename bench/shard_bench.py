"""Benchmark: shard 0.0.0.0/0 minus RFC 1918 into 1000 shards and render every shard as -iL lines.

Run: .venv/bin/python bench/shard_bench.py [--hosts N] [--repeat R]
Not a test: prints wall-clock figures (best and median of R runs) for both modes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from scanfleet.intervals import render_lines
from scanfleet.shards import block_prefixes, shard
from scanfleet.targets import addresses_of, parse_targets


def run(mode: str, hosts: int) -> tuple[float, float, int, int]:
    start = time.perf_counter()
    targets = addresses_of(parse_targets("0.0.0.0/0")) - addresses_of(
        parse_targets("10.0.0.0/8 172.16.0.0/12 192.168.0.0/16"))
    weights = {f"scan{i:04d}": 1 + i % 3 for i in range(hosts)}
    shards = shard(targets, weights, mode=mode, seed=1)
    split = time.perf_counter()
    lines = sum(len(render_lines(s)) for s in shards.values())
    end = time.perf_counter()
    assert sum(s.size for s in shards.values()) == targets.size
    return split - start, end - start, lines, targets.size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs, {args.hosts} shards, best / median of {args.repeat} runs")
    for mode in ("contiguous", "interleaved"):
        runs = [run(mode, args.hosts) for _ in range(args.repeat)]
        shard_times = [r[0] for r in runs]
        totals = [r[1] for r in runs]
        _, _, lines, size = runs[0]
        extra = ""
        if mode == "interleaved":
            targets = addresses_of(parse_targets("0.0.0.0/0")) - addresses_of(
                parse_targets("10.0.0.0/8 172.16.0.0/12 192.168.0.0/16"))
            extra = f", blocks /{block_prefixes(targets)[4]}"
        best, median = min(shard_times) * 1000, statistics.median(shard_times) * 1000
        print(f"{mode:12s} shard {best:6.1f} / {median:6.1f}"
              f" ms   shard+render {min(totals) * 1000:6.1f} / {statistics.median(totals) * 1000:6.1f} ms"
              f"   ({size} addresses, {lines} lines{extra})")


if __name__ == "__main__":
    main()
