"""Every performance figure of mini_magic against its baseline, measured in the same run: one table.

Each figure runs in a fresh process (``python bench/run.py --figure NAME`` prints its samples as JSON), so one
figure's memory and workers never weigh on the next. The table gives the median of the figure and of its baseline
(with min and max), their ratio, the target and whether it is met; it is printed, written to ``bench/results.md``
with a description of the machine, and drawn in ``bench/results.png`` (each ratio as a share of its target).

With ``--before DIR`` (a checkout of an earlier version, e.g. ``git worktree add /tmp/before v0.1.0``) every
figure is measured with that version's package too, in the same run (``PYTHONPATH=DIR``: the kernels and workers
it starts use it as well), and the table gains its value and ratio: the before/after comparison.

Run: python bench/run.py [--quick] [--only NAME,NAME] [--before DIR]   (the test extras: numpy, tqdm, modal)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
if "PYTHONPATH" not in os.environ:  # else the package under test is the one PYTHONPATH names (--before)
    sys.path.insert(1, str(HERE.parent))


@dataclass
class Figure:
    """``ratio`` is value/baseline when ``higher_is_better`` is False (a slowdown), baseline/value... see kind."""

    name: str
    baseline: str
    unit: str
    kind: str  # "slowdown": value / baseline <= target; "speed": baseline-time / value-time >= target;
    #            "rate": value / baseline >= target; "extra": value - baseline <= target; "ceiling": value <= target
    target: float
    values: list[float] = field(default_factory=list)
    baselines: list[float] = field(default_factory=list)
    note: str = ""
    before: Figure | None = None  # the same figure measured with an earlier version (--before)

    @property
    def ratio(self) -> float:
        value = statistics.median(self.values)
        base = statistics.median(self.baselines) if self.baselines else 0.0
        return {"slowdown": lambda: value / base, "speed": lambda: base / value, "rate": lambda: value / base,
                "extra": lambda: value - base, "ceiling": lambda: value}[self.kind]()

    @property
    def met(self) -> bool:
        return self.ratio <= self.target if self.kind in ("slowdown", "extra", "ceiling") else self.ratio >= self.target

    def target_text(self) -> str:
        return {"slowdown": f"<= {self.target:g}x", "speed": f">= {self.target:g}x", "rate": f">= {self.target:g}x",
                "extra": f"<= +{self.target:g} {self.unit}", "ceiling": f"<= {self.target:g} {self.unit}"}[self.kind]

    def ratio_text(self) -> str:
        if self.kind == "extra":
            return f"+{self.ratio:.0f} {self.unit}"
        if self.kind == "ceiling":
            return f"{self.ratio:.2f} {self.unit}"
        return f"{self.ratio:.2f}x"


def spread(samples: list[float], unit: str) -> str:
    if not samples:
        return "-"
    return f"{statistics.median(samples):.3g} ({min(samples):.3g}-{max(samples):.3g}) {unit}"


# -- the figures: each returns {"values": [...], "baselines": [...], "note": "..."} ----------------------------


def _pool_round_trip(n: int) -> list[float]:
    with ProcessPoolExecutor(1) as pool:
        for _ in range(20):
            pool.submit(int).result()
        samples = []
        for _ in range(n):
            t = time.perf_counter()
            pool.submit(int).result()
            samples.append(time.perf_counter() - t)
    return samples


def start_kernel():
    """A fresh kernel in a temporary folder and run store: ``(run, close)``, ``run(code)`` returning its stdout."""
    from jupyter_client.manager import KernelManager

    km = KernelManager(kernel_name="python3")
    km.start_kernel(cwd=tempfile.mkdtemp(), env={**os.environ, "MINI_MAGIC_HOME": tempfile.mkdtemp()})
    client = km.blocking_client()
    client.start_channels()
    client.wait_for_ready(timeout=60)

    def run(code: str) -> str:
        out: list[str] = []

        def hook(msg):
            if msg["msg_type"] == "stream":
                out.append(msg["content"]["text"])

        reply = client.execute_interactive(code, timeout=120, output_hook=hook)
        assert reply["content"]["status"] == "ok", reply["content"]
        return "".join(out)

    def close() -> None:
        client.stop_channels()
        km.shutdown_kernel(now=True)

    return run, close


WARM_IN_KERNEL = """
import json, time
from concurrent.futures import ProcessPoolExecutor
_ip = get_ipython()
def _timed(fn, n):
    out = []
    for _ in range(n):
        t = time.perf_counter(); fn(); out.append(time.perf_counter() - t)
    return out
for _ in range(20):
    _ip.run_cell_magic('thither', '', 'x = 1')
with ProcessPoolExecutor(1) as _pool:
    for _ in range(20):
        _pool.submit(int).result()
    _base = _timed(lambda: _pool.submit(int).result(), N)
_cell = _timed(lambda: _ip.run_cell_magic('thither', '', 'x = 1'), N)
print('JSON', json.dumps({'values': _cell, 'baselines': _base}))
"""


def warm_cell_in_kernel(quick: bool) -> dict:
    run, close = start_kernel()
    try:
        run("%load_ext mini_magic")
        out = run(WARM_IN_KERNEL.replace("N)", f"{100 if quick else 400})"))
    finally:
        close()
    return json.loads(out.split("JSON ", 1)[1])


def warm_cell_from_client(quick: bool) -> dict:
    n = 60 if quick else 200
    run, close = start_kernel()
    try:
        run("%load_ext mini_magic")
        for _ in range(10):
            run("%%thither\nx = 1")
            run("x = 1")
        plain, thither = [], []
        for _ in range(n):  # alternate, so that drift hits both alike
            t = time.perf_counter()
            run("x = 1")
            plain.append(time.perf_counter() - t)
            t = time.perf_counter()
            run("%%thither\nx = 1")
            thither.append(time.perf_counter() - t)
    finally:
        close()
    extra = [t - p for t, p in zip(sorted(thither), sorted(plain))]  # quantile by quantile
    return {"values": extra, "baselines": _pool_round_trip(n),
            "note": f"plain cell {statistics.median(plain) * 1e3:.2f} ms, %%thither cell "
                    f"{statistics.median(thither) * 1e3:.2f} ms"}


def first_cell(quick: bool) -> dict:
    values, baselines = [], []
    for _ in range(2 if quick else 4):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import cloudpickle"], check=True)
        baselines.append(time.perf_counter() - t)
        run, close = start_kernel()
        try:
            run("%load_ext mini_magic")
            t = time.perf_counter()
            run("%%thither\nx = 1")
            values.append(time.perf_counter() - t)
        finally:
            close()
    return {"values": [v * 1e3 for v in values], "baselines": [b * 1e3 for b in baselines]}


def arrays(quick: bool) -> dict:
    import bench_arrays

    mib = 256 if quick else 1024
    samples = bench_arrays.measure(mib, 2 if quick else 3)
    peaks = bench_arrays.peak_memory(mib)
    return {"base": samples["base"], "in": samples["in, shared memory"], "back": samples["back, shared memory"],
            "in_socket": samples["in, socket"], "back_socket": samples["back, socket"],
            "peak_gib": peaks["shared memory"] / (1 << 30) * (1024 / mib), "mib": mib}


def hither_calls(quick: bool) -> dict:
    import bench_hither
    from mini_magic.backends.local import LocalBackend
    from mini_magic.runs import RunRegistry

    n = 50_000 if quick else 200_000
    registry = RunRegistry(os.path.join(tempfile.mkdtemp(), "runs.sqlite"))
    backend = LocalBackend(max_workers=1, prewarm=False)
    values, baselines = [], []
    try:
        bench_hither.hither_case(1000, False, backend, registry)
        for _ in range(3):
            values.append(n / bench_hither.hither_case(n, False, backend, registry).loop)
            baselines.append(n / bench_hither.queue_case(n, False).loop)
    finally:
        backend.close()
        registry.close()
    return {"values": values, "baselines": baselines}


def _plain_tqdm_loop(n: int) -> float:
    """tqdm's own cost, drawing to a string buffer here (no mirroring): what a mirrored bar is compared with."""
    import io

    from tqdm import tqdm

    t = time.perf_counter()
    for _ in tqdm(range(n), file=io.StringIO()):
        pass
    return time.perf_counter() - t


TQDM_CELL = """
import time
from tqdm import tqdm
def _loop(items, **kw):
    t = time.perf_counter()
    for _ in tqdm(items, **kw):
        pass
    return time.perf_counter() - t
mirrored, disabled, gen_mirrored, gen_disabled = [], [], [], []
for _ in range(R):
    mirrored.append(_loop(range(N)))
    disabled.append(_loop(range(N), disable=True))
    gen_mirrored.append(_loop((i for i in range(N)), total=N))
    gen_disabled.append(_loop((i for i in range(N)), total=N, disable=True))
"""


def tqdm_mirroring(quick: bool) -> dict:
    from mini_magic.backends.local import LocalBackend
    from mini_magic.jobs import CellContext
    from mini_magic.options import RunOptions
    from mini_magic.runs import RunRegistry
    from mini_magic.session import run_cell
    from mini_magic.sinks import ListSink

    registry = RunRegistry(os.path.join(tempfile.mkdtemp(), "runs.sqlite"))
    backend = LocalBackend(max_workers=1, prewarm=False)
    namespace = {"N": 1_000_000 if quick else 10_000_000, "R": 3}
    try:
        run_cell(TQDM_CELL, namespace, RunOptions(backend="local"), backend=backend, registry=registry,
                 sink=ListSink(), context=CellContext(), show_panel=False)
    finally:
        backend.close()
        registry.close()
    plain = statistics.median(_plain_tqdm_loop(namespace["N"]) for _ in range(3))
    return {"values": namespace["mirrored"], "baselines": namespace["disabled"],
            "generator": {"values": namespace["gen_mirrored"], "baselines": namespace["gen_disabled"]},
            "note": f"a plain tqdm (no mirroring, drawing to a buffer, in this process): {plain:.2f} s"}


def map_items(quick: bool) -> dict:
    code = f"""
import json, os, statistics, sys, tempfile, time
sys.path.insert(0, {str(HERE)!r})
os.environ.setdefault("MINI_MAGIC_HOME", tempfile.mkdtemp())
from concurrent.futures import ProcessPoolExecutor
from bench_map import inc
from mini_magic import thither
from mini_magic.runtime import close_script_runtime, script_runtime
script_runtime().config.max_workers = 4
remote_inc = thither(inc)
items = list(range({200 if quick else 1000}))
expected = [x + 1 for x in items]
assert remote_inc.map(items[:16]) == expected[:16]
values, baselines = [], []
with ProcessPoolExecutor(4) as pool:
    list(pool.map(inc, items[:16]))
    for _ in range(3):
        t = time.perf_counter(); assert list(pool.map(inc, items)) == expected; baselines.append(time.perf_counter() - t)
        t = time.perf_counter(); assert remote_inc.map(items) == expected; values.append(time.perf_counter() - t)
close_script_runtime()
print("JSON", json.dumps({{"values": values, "baselines": baselines}}))
"""
    # In the bench folder: `inc` is a local module's function there, shipped to the workers as a notebook's is.
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=HERE)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    return json.loads(done.stdout.split("JSON ", 1)[1])


def modal_fake(quick: bool) -> dict:
    done = subprocess.run([sys.executable, str(HERE / "bench_modal_fake.py")], capture_output=True, text=True,
                          timeout=600)
    if done.returncode != 0:
        return {"error": done.stderr[-2000:]}
    lines = done.stdout.splitlines()
    warm = next(line for line in lines if line.startswith("warm trivial cell"))
    ops = next(line for line in lines if line.startswith("100k hither calls"))
    return {"warm_ms": float(warm.split("median ")[1].split(" ms")[0]),
            "queue_ops": float(ops.rsplit("queue ops/s ", 1)[1])}


def _modal_rows(raw: dict, before: dict | None) -> list[Figure]:
    """No baseline of its own: the figure is "no regression", so its baseline is the earlier version's value."""
    base = [before["warm_ms"]] if before and "warm_ms" in before else []
    return [Figure("Modal (fake control plane): warm trivial cell", "the --before version" if base else
                   "(run with --before)", "ms", "slowdown" if base else "ceiling", 1.2 if base else 1e9,
                   [raw["warm_ms"]], base),
            Figure("Modal (fake): queue ops/s at 100k hither calls", "-", "ops/s", "ceiling", 20, [raw["queue_ops"]])]


FIGURES = {f.__name__: f for f in (warm_cell_in_kernel, warm_cell_from_client, first_cell, arrays, hither_calls,
                                    tqdm_mirroring, map_items, modal_fake)}


def table(raw: dict[str, dict], before_modal: dict | None = None) -> list[Figure]:
    rows: list[Figure] = []

    def add(figure: Figure, values, baselines=()) -> None:
        figure.values, figure.baselines = list(values), list(baselines)
        rows.append(figure)

    if "warm_cell_in_kernel" in raw:
        r = raw["warm_cell_in_kernel"]
        add(Figure("warm trivial cell, run_cell_magic in a kernel", "ProcessPool round trip", "ms", "slowdown", 3),
            [v * 1e3 for v in r["values"]], [b * 1e3 for b in r["baselines"]])
    if "warm_cell_from_client" in raw:
        r = raw["warm_cell_from_client"]
        add(Figure("warm trivial cell, extra reply time seen by a client", "ProcessPool round trip", "ms",
                   "slowdown", 3, note=r["note"]), [v * 1e3 for v in r["values"]], [b * 1e3 for b in r["baselines"]])
    if "first_cell" in raw:
        r = raw["first_cell"]
        add(Figure("first cell after %load_ext (worker start included)", "python -c 'import cloudpickle'", "ms",
                   "extra", 300), r["values"], r["baselines"])
    if "arrays" in raw:
        r = raw["arrays"]
        size = f"{r['mib'] / 1024:g} GiB" if r["mib"] >= 1024 else f"{r['mib']} MiB"
        base = [r["mib"] / 1024 / s for s in r["base"]]  # GiB/s
        add(Figure(f"{size} float64 into a cell", "copy into fresh shared memory", "GiB/s", "rate", 0.8,
                   note=f"socket path: {statistics.median(r['mib'] / 1024 / s for s in r['in_socket']):.2f} GiB/s"),
            [r["mib"] / 1024 / s for s in r["in"]], base)
        add(Figure(f"{size} float64 back from a cell", "copy into fresh shared memory", "GiB/s", "rate", 0.8,
                   note=f"socket path: {statistics.median(r['mib'] / 1024 / s for s in r['back_socket']):.2f} GiB/s"),
            [r["mib"] / 1024 / s for s in r["back"]], base)
        add(Figure("peak memory, 1 GiB in and 1 GiB back (scaled to 1 GiB)", "-", "GiB", "ceiling", 2.2),
            [r["peak_gib"]])
    if "hither_calls" in raw:
        r = raw["hither_calls"]
        add(Figure("hither calls from a tight remote loop", "multiprocessing.Queue put", "calls/s", "rate", 0.5),
            r["values"], r["baselines"])
    if "tqdm_mirroring" in raw:
        r = raw["tqdm_mirroring"]
        add(Figure("tqdm mirroring, empty loop body", "tqdm(disable=True)", "s", "slowdown", 1.03,
                   note=r.get("note", "")), r["values"], r["baselines"])
        if "generator" in r:
            add(Figure("tqdm mirroring, empty loop body, over a generator", "tqdm(disable=True)", "s", "slowdown",
                       1.03, note="an iterator without a length is counted by enumerate (no Python code per item, "
                       "but a C call more than a bare generator)"),
                r["generator"]["values"], r["generator"]["baselines"])
    if "map_items" in raw:
        r = raw["map_items"]
        add(Figure(".map of trivial items, 4 workers", "ProcessPoolExecutor.map", "s", "slowdown", 2),
            r["values"], r["baselines"])
    if "modal_fake" in raw and "error" not in raw["modal_fake"]:
        rows.extend(_modal_rows(raw["modal_fake"], before_modal))
    return rows


def machine() -> str:
    cpu = "unknown CPU"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    memory = ""
    try:
        memory = f", {int(open('/proc/meminfo').readline().split()[1]) / (1 << 20):.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return (f"{cpu}, {os.cpu_count()} CPUs{memory}; {platform.system()} {platform.release()}; "
            f"Python {platform.python_version()}")


def render(rows: list[Figure]) -> str:
    with_before = any(f.before is not None for f in rows)
    lines = ["| figure | value (median, min-max) | baseline | baseline value | ratio | target | met |"
             + (" before: value | before: ratio |" if with_before else ""),
             "|---|---|---|---|---|---|---|" + ("---|---|" if with_before else "")]
    for f in rows:
        line = (f"| {f.name} | {spread(f.values, f.unit)} | {f.baseline} | {spread(f.baselines, f.unit)} | "
                f"{f.ratio_text()} | {f.target_text()} | {'yes' if f.met else '**no**'} |")
        if with_before:
            b = f.before
            line += (f" {spread(b.values, b.unit)} | {b.ratio_text()} |" if b is not None and b.values else " - | - |")
        lines.append(line)
    notes = [f"- {f.name}: {f.note}" for f in rows if f.note]
    return "\n".join(lines + ([""] + notes if notes else []))


def chart(rows: list[Figure], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def share(f: Figure) -> float:  # 1.0 = exactly on target; below 1 = target met
        if f.kind in ("slowdown", "ceiling"):
            return f.ratio / f.target
        if f.kind == "extra":
            return max(f.ratio, 0) / f.target
        return f.target / f.ratio

    fig, ax = plt.subplots(figsize=(9, 0.45 * len(rows) + 1.2))
    shares = [share(f) for f in rows]
    ax.barh([f.name for f in rows], shares, color=["tab:green" if f.met else "tab:red" for f in rows])
    ax.axvline(1.0, color="black", linewidth=1)
    ax.set_xlabel("share of the target (left of the line: met)")
    ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--figure", help="measure one figure and print its samples as JSON (used by the runner)")
    parser.add_argument("--only", help="comma-separated figures to run (default: all)")
    parser.add_argument("--quick", action="store_true", help="smaller sizes and fewer repeats")
    parser.add_argument("--out", default=str(HERE), help="folder for results.md and results.png")
    parser.add_argument("--before", help="a checkout of an earlier version to measure alongside (see above)")
    args = parser.parse_args()
    if args.figure:
        print("RESULT", json.dumps(FIGURES[args.figure](args.quick)))
        return 0
    raw: dict[str, dict] = {}
    before: dict[str, dict] = {}
    for name in (args.only.split(",") if args.only else FIGURES):
        for version, into in ((None, raw), *(((args.before, before),) if args.before else ())):
            t = time.perf_counter()
            command = [sys.executable, __file__, "--figure", name] + (["--quick"] if args.quick else [])
            env = {**os.environ, "PYTHONPATH": version} if version else None
            # Elsewhere than the repository: `python -m mini_magic.worker` puts its folder first on sys.path,
            # which would run this checkout's worker under the --before version's kernel side.
            done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tempfile.mkdtemp())
            label = f"{name}{' (before)' if version else ''}"
            if done.returncode != 0 or "RESULT " not in done.stdout:
                print(f"{label}: FAILED\n{done.stderr[-3000:]}", file=sys.stderr)
                continue
            into[name] = json.loads(done.stdout.split("RESULT ", 1)[1])
            print(f"{label}: {time.perf_counter() - t:.0f} s", file=sys.stderr)
    rows = table(raw, before.get("modal_fake"))
    if before:
        earlier = {f.name: f for f in table(before)}
        for f in rows:
            f.before = earlier.get(f.name)
    text = render(rows)
    print(text)
    out = Path(args.out)
    (out / "results.md").write_text(
        f"# mini_magic benchmarks\n\n`python bench/run.py{' --quick' if args.quick else ''}` on "
        f"{time.strftime('%Y-%m-%d')}: {machine()}."
        + (f" Before: `{args.before}`." if args.before else "") + f"\n\n{text}\n\n![ratios](results.png)\n")
    (out / "raw.json").write_text(json.dumps(raw, indent=1))
    chart(rows, out / "results.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
