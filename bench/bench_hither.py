"""Hither callback throughput and latency, against a multiprocessing.Queue baseline measured in the same run.

Three numbers per case:
  loop      calls/s of the remote loop itself: the worker times ``for i in range(N): track(...)`` with
            time.perf_counter and prints it (for the baseline: the producer process timing its ``q.put`` loop).
  e2e       from submit until the N-th call has been dispatched here (baseline: from the "go" signal to a warm,
            already spawned producer until the parent got the N-th item), and the calls/s that makes.
  latency   per call, ``time.time()`` here minus the ``time.time()`` the worker took when it made the call
            (same machine, same clock): p50 / p90 / p99 / max.

Cases: ``track(i)`` (the plain loop, for the loop and e2e rates) and ``track(i, time.time())`` (for latency), each
through %%thither's Python API (run_cell on a warm LocalBackend worker, the backend's own hither batching interval)
and through a spawn-context multiprocessing.Queue. Target from the issue: >= 100k calls/s from the remote loop.

Run: python bench/bench_hither.py [--n 200000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time

from mini_magic.options import RunOptions
from mini_magic.backends.local import LocalBackend
from mini_magic.callbacks import hither
from mini_magic.jobs import CellContext
from mini_magic.session import run_cell
from mini_magic.sinks import ListSink
from mini_magic.runs import RunRegistry

TARGET = 100_000  # calls/s from the remote loop


class CollectSink(ListSink):
    """Keeps the run's stdout (the cell reports its own loop time there); stderr shows."""

    def __init__(self) -> None:
        super().__init__()
        self.out: list[str] = []

    def stdout(self, text): self.out.append(text)
    def stderr(self, text): sys.stderr.write(text)

    def loop_seconds(self) -> float:
        line = next(ln for ln in "".join(self.out).splitlines() if ln.startswith("LOOP "))
        return float(line.split()[1])


class Case:
    """One measured run: loop time (as timed where the calls are made), end-to-end time, and latencies."""

    def __init__(self, n: int, loop: float, e2e: float, latencies: list[float]) -> None:
        self.n, self.loop, self.e2e, self.latencies = n, loop, e2e, latencies


CELL = """
import time
t0 = time.perf_counter()
for i in range(N):
    track({args})
loop = time.perf_counter() - t0
print('LOOP', loop)
del t0, i, loop
"""


def hither_case(n: int, timed_calls: bool, backend: LocalBackend, registry: RunRegistry) -> Case:
    state = {"count": 0, "last": 0.0}
    latencies: list[float] = []

    if timed_calls:
        def track(i, sent):
            now = time.time()
            latencies.append(now - sent)
            state["count"] += 1
            if state["count"] == n:
                state["last"] = time.perf_counter()
    else:
        def track(i):
            state["count"] += 1
            if state["count"] == n:
                state["last"] = time.perf_counter()

    namespace = {"track": hither(track), "N": n}
    sink = CollectSink()
    source = CELL.format(args="i, time.time()" if timed_calls else "i")
    t0 = time.perf_counter()
    run_cell(source, namespace, RunOptions(backend="local"), backend=backend, registry=registry, sink=sink,
             context=CellContext(hither_interval=backend.hither_interval), show_panel=False)
    if state["count"] != n:
        raise RuntimeError(f"only {state['count']} of {n} hither calls arrived")
    return Case(n, sink.loop_seconds(), state["last"] - t0, latencies)


def _producer(q, go, n: int, timed_calls: bool) -> None:
    go.wait()
    t0 = time.perf_counter()
    if timed_calls:
        for i in range(n):
            q.put((i, time.time()))
    else:
        for i in range(n):
            q.put((i,))
    q.put(("LOOP", time.perf_counter() - t0))


def queue_case(n: int, timed_calls: bool) -> Case:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    go = ctx.Event()
    producer = ctx.Process(target=_producer, args=(q, go, n, timed_calls), daemon=True)
    producer.start()
    time.sleep(0.5)  # let it finish spawning: compare with a warm worker
    latencies: list[float] = []
    t0 = time.perf_counter()
    go.set()
    for _ in range(n):
        item = q.get()
        if timed_calls:
            latencies.append(time.time() - item[1])
    last = time.perf_counter()
    tag, loop = q.get()
    assert tag == "LOOP"
    producer.join(10)
    return Case(n, loop, last - t0, latencies)


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))]


def median_case(cases: list[Case]) -> Case:
    """Medians over the repeats (latencies pooled)."""
    return Case(cases[0].n, statistics.median(c.loop for c in cases), statistics.median(c.e2e for c in cases),
                [x for c in cases for x in c.latencies])


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    n = args.n

    home = tempfile.mkdtemp()
    registry = RunRegistry(os.path.join(home, "runs.sqlite"))
    backend = LocalBackend(max_workers=1, prewarm=False)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, n={n}, repeat={args.repeat}, "
          f"hither flush interval {backend.hither_interval * 1e3:g} ms")
    try:
        hither_case(1000, False, backend, registry)  # spawn and warm the worker
        hither_case(1000, True, backend, registry)
        results = {}
        for timed_calls in (False, True):
            results[("hither", timed_calls)] = median_case(
                [hither_case(n, timed_calls, backend, registry) for _ in range(args.repeat)])
            results[("queue", timed_calls)] = median_case([queue_case(n, timed_calls) for _ in range(args.repeat)])
    finally:
        backend.close()
        registry.close()

    print("\nThroughput (median of repeats)")
    print(f"{'case':44} {'loop calls/s':>13} {'e2e s':>8} {'e2e calls/s':>12}")
    for (kind, timed_calls), case in results.items():
        what = ("track(i, time.time())" if timed_calls else "track(i)") if kind == "hither" else \
            ("q.put((i, time.time()))" if timed_calls else "q.put((i,))")
        label = f"{'%%thither hither' if kind == 'hither' else 'mp.Queue (spawn)'}: {what}"
        print(f"{label:44} {n / case.loop:13,.0f} {case.e2e:8.3f} {n / case.e2e:12,.0f}")

    print("\nDelivery latency, ms (calls carrying time.time(); all repeats pooled)")
    print(f"{'case':44} {'p50':>8} {'p90':>8} {'p99':>8} {'max':>8}")
    for kind in ("hither", "queue"):
        lat = results[(kind, True)].latencies
        label = "%%thither hither" if kind == "hither" else "mp.Queue (spawn)"
        print(f"{label:44} " + " ".join(f"{pct(lat, p) * 1e3:8.2f}" for p in (0.5, 0.9, 0.99, 1.0)))

    print("\nRatios (hither / mp.Queue)")
    for timed_calls in (False, True):
        h, q = results[("hither", timed_calls)], results[("queue", timed_calls)]
        what = "timed calls" if timed_calls else "plain calls"
        print(f"  {what}: loop rate {q.loop / h.loop:5.2f}x   e2e rate {q.e2e / h.e2e:5.2f}x")
    h_lat, q_lat = results[("hither", True)].latencies, results[("queue", True)].latencies
    print("  latency: " + "   ".join(f"p{int(p * 100)} {pct(h_lat, p) / max(pct(q_lat, p), 1e-9):6.2f}x"
                                     for p in (0.5, 0.9, 0.99)))

    loop_rate = n / results[("hither", False)].loop
    verdict = "meets" if loop_rate >= TARGET else "MISSES"
    print(f"\nTarget: >= {TARGET:,} calls/s from the remote loop: {loop_rate:,.0f} calls/s ({verdict} it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
