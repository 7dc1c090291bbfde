"""``f.map`` of many trivial items on the local backend, against ``ProcessPoolExecutor.map`` with the same number of
worker processes, measured in the same run (issue 13's figure).

Both run as a plain script would (no kernel): the map is one run in the registry, every item a call job through the
run session (packing, worker round trip, unpacking), up to ``Thither.max_workers`` in flight. The executor is given
the same function (defined in ``__main__``, as a notebook's would be) and its default chunksize of 1, so both send
one item per round trip; a second executor row uses a chunksize that batches, for scale.

Run: python bench/bench_map.py [--items 1000] [--workers 4] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor


def inc(x: int) -> int:
    return x + 1


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("MINI_MAGIC_HOME", tempfile.mkdtemp())
    from mini_magic import thither
    from mini_magic.runtime import close_script_runtime, script_runtime

    script_runtime().config.max_workers = args.workers
    remote_inc = thither(inc)
    items = list(range(args.items))
    expected = [x + 1 for x in items]
    assert remote_inc.map(items[: args.workers * 4]) == expected[: args.workers * 4]  # workers started and warm
    rows: dict[str, list[float]] = {"ProcessPoolExecutor.map": [], "ProcessPoolExecutor.map, chunksize 50": [],
                                    "@thither .map": []}
    with ProcessPoolExecutor(args.workers) as pool:
        list(pool.map(inc, items[: args.workers * 4]))  # warm
        for _ in range(args.rounds):
            t = time.perf_counter()
            assert list(pool.map(inc, items)) == expected
            rows["ProcessPoolExecutor.map"].append(time.perf_counter() - t)
            t = time.perf_counter()
            assert list(pool.map(inc, items, chunksize=50)) == expected
            rows["ProcessPoolExecutor.map, chunksize 50"].append(time.perf_counter() - t)
            t = time.perf_counter()
            assert remote_inc.map(items) == expected
            rows["@thither .map"].append(time.perf_counter() - t)
    close_script_runtime()
    baseline = statistics.median(rows["ProcessPoolExecutor.map"])
    print(f"{args.items} trivial items, {args.workers} worker processes, {args.rounds} rounds "
          f"(Python {sys.version.split()[0]}, {os.cpu_count()} CPUs)")
    print(f"{'':40} {'median s':>9} {'per item ms':>12} {'vs executor':>12}")
    for name, samples in rows.items():
        median = statistics.median(samples)
        print(f"{name:40} {median:9.3f} {1000 * median / args.items:12.3f} {median / baseline:11.1f}x")


if __name__ == "__main__":
    main()
