"""Large arrays into a cell and back on the local backend, against a copy into fresh shared memory measured in the
same run, with the socket path (MINI_MAGIC_SHARED_MEMORY=0) alongside; and the peak memory of the kernel side plus
its worker while an array goes in and a result of the same size comes back.

  in     `n = x.nbytes` with x of SIZE, minus the same cell with a 1-element x: the cost of bringing x in.
  back   `b = np.ones(N)` minus `n = np.ones(N).nbytes` (the worker makes the array in both): bringing b back.
  base   multiprocessing.shared_memory.SharedMemory(create=True, size=SIZE) and one numpy copy into it.
  peak   memory of this process and all its descendants (see memory_bytes: shared pages counted once), sampled during
         `b = x + 1`, above what they held before (this process already holds x).

Run: python bench/bench_arrays.py [--mib 1024] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from multiprocessing import shared_memory
from pathlib import Path

import numpy as np

from mini_magic.backends.local import LocalBackend
from mini_magic.jobs import CellContext
from mini_magic.options import RunOptions
from mini_magic.runs import RunRegistry
from mini_magic.session import run_cell
from mini_magic.sinks import ListSink


def copy_into_fresh_shared_memory(x: np.ndarray) -> float:
    t = time.perf_counter()
    segment = shared_memory.SharedMemory(create=True, size=x.nbytes)
    np.ndarray(x.shape, x.dtype, buffer=segment.buf)[...] = x
    elapsed = time.perf_counter() - t
    segment.close()
    segment.unlink()
    return elapsed


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(children.get(p, ()))
    return found


def memory_bytes(pids: list[int]) -> int:
    """Private and file-backed PSS of ``pids`` plus all shared memory on the machine (memory files included).

    Shared memory is read machine-wide (``Shmem`` of /proc/meminfo) because a memory file in flight, written by
    one process and not yet mapped by the other, is in no process's PSS; counting it there and not in the PSS
    counts every shared page once."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith(("Pss_Anon:", "Pss_File:")):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("Shmem:"):
            total += int(line.split()[1]) * 1024
    return total


class PeakSampler(threading.Thread):
    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.pids = descendants(os.getpid())
        self.peak = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            self.peak = max(self.peak, memory_bytes(self.pids))
            time.sleep(0.002)


class Runner:
    """One warm worker per transport; each run picks its transport for both directions."""

    def __init__(self) -> None:
        self.registry = RunRegistry(os.path.join(tempfile.mkdtemp(), "runs.sqlite"))
        self.backend = LocalBackend(max_workers=2, prewarm=False)
        self.options = {"shared memory": RunOptions(backend="local"),
                        "socket": RunOptions(backend="local", env={"MINI_MAGIC_SHARED_MEMORY": "0"})}

    def run(self, transport: str, cell: str, namespace: dict) -> float:
        os.environ["MINI_MAGIC_SHARED_MEMORY"] = "0" if transport == "socket" else "1"
        t = time.perf_counter()
        outcome = run_cell(cell, namespace, self.options[transport], backend=self.backend, registry=self.registry,
                           sink=ListSink(), context=CellContext(), show_panel=False)
        elapsed = time.perf_counter() - t
        assert outcome.record.state == "done", outcome.record
        return elapsed

    def close(self) -> None:
        self.backend.close()
        self.registry.close()


def measure(mib: int, repeat: int) -> dict[str, list[float]]:
    """Seconds per figure: base, and in/back for each transport (the differences described above)."""
    x = np.random.default_rng(0).random((mib << 20) // 8)
    tiny = np.ones(1)
    runner = Runner()
    samples: dict[str, list[float]] = {"base": []}
    try:
        for transport in runner.options:  # warm both workers
            runner.run(transport, "n = x.nbytes", {"x": tiny})
        for _ in range(repeat):
            samples["base"].append(copy_into_fresh_shared_memory(x))
            for transport in runner.options:
                big = runner.run(transport, "n = x.nbytes", {"x": x})
                small = runner.run(transport, "n = x.nbytes", {"x": tiny})
                samples.setdefault(f"in, {transport}", []).append(big - small)
                names = {"np": np, "N": x.size}
                made_and_back = runner.run(transport, "b = np.ones(N)", dict(names))
                made_only = runner.run(transport, "n = np.ones(N).nbytes", dict(names))
                samples.setdefault(f"back, {transport}", []).append(made_and_back - made_only)
    finally:
        runner.close()
    return samples


def peak_memory(mib: int) -> dict[str, float]:
    """Bytes above the starting point while `b = x + 1` runs, per transport (a fresh worker each)."""
    result = {}
    for transport in ("shared memory", "socket"):
        x = np.random.default_rng(0).random((mib << 20) // 8)
        runner = Runner()
        try:
            runner.run(transport, "n = x.nbytes", {"x": np.ones(1)})
            sampler = PeakSampler()
            before = memory_bytes(sampler.pids)
            sampler.start()
            namespace = {"x": x}
            runner.run(transport, "b = x + 1", namespace)
            sampler.done.set()
            sampler.join()
            assert namespace["b"][7] == x[7] + 1
            result[transport] = sampler.peak - before
            del namespace, x  # the next transport starts from the same place
        finally:
            runner.close()
    return result


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    gib = args.mib / 1024
    samples = measure(args.mib, args.repeat)
    base = statistics.median(samples["base"])
    print(f"{args.mib} MiB float64, {args.repeat} repeats, medians")
    print(f"{'figure':28} {'s':>7} {'GiB/s':>7} {'vs base':>8}")
    for name, values in samples.items():
        med = statistics.median(values)
        print(f"{name:28} {med:7.3f} {gib / med:7.2f} {base / med:7.2f}x")
    for transport, peak in peak_memory(args.mib).items():
        print(f"peak above start, {transport:14} {peak / (1 << 30):6.2f} GiB ({peak / (args.mib << 20):.2f}x the array)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
