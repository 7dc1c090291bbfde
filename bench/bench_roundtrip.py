"""Warm round trip of a trivial %%thither cell, against baselines measured in the same run.

Two levels:
  api     run_cell() on a warm local worker (everything the magic does: analysis, packing, the worker round trip,
          registry records, assignment), against exec() of the same cell in-process.
  kernel  a real kernel driven by jupyter_client: execute_request -> reply for `%%thither\\nx = 1` against a plain
          `x = 1` cell (the kernel's own messaging cost is the baseline).

Run: python bench/bench_roundtrip.py [--n 300]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

from mini_magic.options import RunOptions
from mini_magic.backends.local import LocalBackend
from mini_magic.jobs import CellContext
from mini_magic.session import run_cell
from mini_magic.sinks import ListSink
from mini_magic.runs import RunRegistry


def timed(fn, n: int) -> list[float]:
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return samples


def api_level(n: int) -> list[tuple[str, list[float]]]:
    home = tempfile.mkdtemp()
    registry = RunRegistry(os.path.join(home, "runs.sqlite"))
    backend = LocalBackend(max_workers=1, prewarm=False)
    options = RunOptions(backend="local")
    namespace = {"a": 1}
    sink = ListSink()

    def thither():
        run_cell("x = a + 1\n", namespace, options, backend=backend, registry=registry, sink=sink,
                 context=CellContext(), show_panel=False)

    for _ in range(5):  # spawn and warm the worker
        thither()
    code = compile("x = a + 1\n", "<cell>", "exec")
    rows = [("exec() in-process", timed(lambda: exec(code, namespace), n)),
            ("%%thither run_cell, warm worker", timed(thither, n))]
    backend.close()
    registry.close()
    return rows


def kernel_level(n: int) -> list[tuple[str, list[float]]]:
    from run import start_kernel  # bench/run.py, beside this script

    run, close = start_kernel()
    try:
        run("%load_ext mini_magic")
        for _ in range(5):
            run("%%thither\nx = 1")
        rows = [("kernel: plain cell `x = 1`", timed(lambda: run("x = 1"), n)),
                ("kernel: %%thither cell `x = 1`", timed(lambda: run("%%thither\nx = 1"), n))]
    finally:
        close()
    return rows


def report(title: str, rows: list[tuple[str, list[float]]]) -> None:
    base = statistics.median(rows[0][1])
    print(f"\n{title}")
    print(f"{'case':40} {'median ms':>10} {'p90 ms':>8} {'vs first row':>13}")
    for name, samples in rows:
        med = statistics.median(samples)
        p90 = sorted(samples)[int(len(samples) * 0.9)]
        print(f"{name:40} {med * 1e3:10.3f} {p90 * 1e3:8.3f} {med / base:12.1f}x")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=300)
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, n={args.n}")
    report("API level (what %%thither adds)", api_level(args.n))
    report("Kernel level (execute_request -> reply, from a jupyter_client)", kernel_level(max(50, args.n // 3)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
