"""What fingerprinting a run's inputs costs (mini_magic.worker_inputs: detecting inputs changed in place and sending
unchanged ones back as references), against the same runs with fingerprints off, in the same process.

Each case runs a cell that reads one input and changes nothing (`n = x.nbytes`) on a warm local worker; two warm
workers (fingerprints on / off: --env MINI_MAGIC_FINGERPRINT_LIMIT=0, read when the worker starts) take turns, so
drift hits both alike.

Run: python bench/bench_inputs.py [--n 20] [--max-mib 1024]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np

from mini_magic.options import RunOptions
from mini_magic.backends.local import LocalBackend
from mini_magic.jobs import CellContext
from mini_magic.session import run_cell
from mini_magic.sinks import ListSink
from mini_magic.runs import RunRegistry

sys.path.insert(0, os.path.dirname(__file__))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--max-mib", type=int, default=1024)
    args = parser.parse_args()
    home = tempfile.mkdtemp()
    registry = RunRegistry(os.path.join(home, "runs.sqlite"))
    modes = {"on": RunOptions(backend="local"),
             "off": RunOptions(backend="local", env={"MINI_MAGIC_FINGERPRINT_LIMIT": "0"})}
    sink = ListSink()
    cases = [("trivial `y = a + 1`, a = 1", {"a": 1}, "y = a + 1\n")]
    for label, nbytes in (("1 KiB", 1 << 10), ("1 MiB", 1 << 20), ("8 MiB (the limit)", 8 << 20),
                          ("64 MiB", 64 << 20), ("1 GiB", 1 << 30)):
        if nbytes <= args.max_mib << 20:
            cases.append((f"ndarray {label}", {"x": np.ones(nbytes // 8)}, "n = x.nbytes\n"))
    cases.append(("list of 100k floats (~0.9 MiB)", {"x": [float(i) for i in range(100_000)]}, "n = len(x)\n"))

    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, n={args.n} (fewer for the big inputs)")
    print(f"{'input':34} {'off ms':>9} {'on ms':>9} {'on/off':>7}")
    for label, namespace, cell in cases:
        # a fresh backend per case, so one case's memory does not weigh on the next
        backend = LocalBackend(max_workers=2, prewarm=False)
        samples: dict[str, list[float]] = {"on": [], "off": []}
        repeats = args.n if sum(getattr(v, "nbytes", 0) for v in namespace.values()) < 64 << 20 else max(3, args.n // 5)
        for i in range(repeats + 2):
            for name in ("off", "on") if i % 2 else ("on", "off"):
                t = time.perf_counter()
                run_cell(cell, dict(namespace), modes[name], backend=backend, registry=registry, sink=sink,
                         context=CellContext(), show_panel=False)
                if i >= 2:  # the first two start and warm the workers
                    samples[name].append(time.perf_counter() - t)
        backend.close()
        med_off, med_on = statistics.median(samples["off"]), statistics.median(samples["on"])
        print(f"{label:34} {med_off * 1e3:9.2f} {med_on * 1e3:9.2f} {med_on / med_off:7.2f}")
    registry.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
