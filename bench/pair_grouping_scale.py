#!/usr/bin/env python3
"""Benchmark: what ``scanfleet.pairs`` plans for many hosts, by job cost (computed, nothing is scanned).

Random hosts (seeded) with 1-4 open TCP ports each, 80% from ten common ports and 20% anywhere in 1-65535, are
sharded over three equal scanners (``shard_pairs``) and grouped (``group_jobs``) with each job cost: prints jobs,
port probes, extra probes and the controller's planning time.

    .venv/bin/python bench/pair_grouping_scale.py --out bench/results/pair_grouping_scale.json
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

from benchlib import emit, header

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scanfleet import pairs

COMMON = (22, 80, 443, 8080, 25, 53, 3306, 5432, 6379, 9100)


def hosts_with_ports(count: int, seed: int) -> pairs.PairMap:
    rand = random.Random(seed)
    out: pairs.PairMap = {}
    for i in range(count):
        ports = {rand.choice(COMMON) if rand.random() < 0.8 else rand.randint(1, 65535)
                 for _ in range(rand.randint(1, 4))}
        out[f"10.{77 + i // 65536}.{i // 256 % 256}.{i % 256}"] = {"tcp": ports}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, nargs="+", default=[5000, 20000])
    parser.add_argument("--job-cost", type=int, nargs="+", default=[0, 16, 256, 2048])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", help="write the JSON result here")
    args = parser.parse_args()
    doc = {**header("pair_grouping_scale", time.time()), "runs": []}
    weights = {"s1": 1, "s2": 1, "s3": 1}
    for count in args.hosts:
        pair_map = hosts_with_ports(count, args.seed)
        for job_cost in args.job_cost:
            started = time.perf_counter()
            jobs = [job for host, shard in pairs.shard_pairs(pair_map, weights).items()
                    for job in pairs.group_jobs(host, shard, whole=pair_map, job_cost=job_cost)]
            doc["runs"].append({"hosts": count, "job_cost": job_cost, **pairs.grid_cost(jobs),
                                "seconds": round(time.perf_counter() - started, 2)})
    emit(doc, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
