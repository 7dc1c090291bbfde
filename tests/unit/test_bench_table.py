"""bench/run.py's table: how each kind of figure turns into a ratio and a verdict (pure logic; the benchmarks
themselves are run by hand, never asserted as wall-clock limits in tests)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "run.py"


def load_runner():
    spec = importlib.util.spec_from_file_location("bench_run", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_run"] = module
    spec.loader.exec_module(module)
    return module


def test_each_kind_of_figure_has_its_ratio_and_verdict():
    run = load_runner()
    slow = run.Figure("cell", "pool", "ms", "slowdown", 3, values=[4.0, 6.0, 5.0], baselines=[1.0, 2.0, 2.0])
    assert slow.ratio == 2.5 and slow.met and slow.target_text() == "<= 3x"
    rate = run.Figure("copy", "shm", "GiB/s", "rate", 0.8, values=[0.5], baselines=[1.0])
    assert rate.ratio == 0.5 and not rate.met
    extra = run.Figure("first", "python", "ms", "extra", 300, values=[500.0], baselines=[100.0])
    assert extra.ratio == 400 and not extra.met and extra.ratio_text() == "+400 ms"
    ceiling = run.Figure("peak", "-", "GiB", "ceiling", 2.2, values=[2.0])
    assert ceiling.met and ceiling.ratio_text() == "2.00 GiB"


def test_the_table_marks_misses_and_shows_the_earlier_version_alongside():
    run = load_runner()
    rows = run.table({"map_items": {"values": [0.5], "baselines": [0.1]},
                      "modal_fake": {"warm_ms": 150.0, "queue_ops": 3.0}}, before_modal={"warm_ms": 140.0})
    earlier = {f.name: f for f in run.table({"map_items": {"values": [1.4], "baselines": [0.2]}})}
    for row in rows:
        row.before = earlier.get(row.name)
    text = run.render(rows)
    assert "| .map of trivial items, 4 workers |" in text and "5.00x | <= 2x | **no** | 1.4 (1.4-1.4) s | 7.00x |" in text
    assert "Modal (fake control plane): warm trivial cell | 150 (150-150) ms | the --before version" in text
    assert "1.07x | <= 1.2x | yes" in text
