"""Unit tests for mini_magic.ui's text forms: what frontends without a widget manager (nbconvert, GitHub, a terminal)
show of a run."""

from __future__ import annotations

import warnings

import pytest

from mini_magic import errors
from mini_magic.runs import RunRecord, RunState
from mini_magic.ui import RunPanel, describe, format_duration, outputs_text, runs_table


@pytest.mark.parametrize(("seconds", "text"), [
    (None, "-"), (0.0, "<1 ms"), (0.0004, "<1 ms"), (0.0123, "12 ms"), (0.999, "999 ms"), (3.414, "3.41 s"),
    (125, "02:05"), (3725, "1:02:05"),
])
def test_durations_never_read_as_zero(seconds: float | None, text: str) -> None:
    assert format_duration(seconds) == text


def record(run_id: str, state: RunState, elapsed: float, **fields: object) -> RunRecord:
    return RunRecord(run_id=run_id, backend="local", state=state, started_at=100.0, finished_at=100.0 + elapsed,
                     **fields)  # type: ignore[arg-type]


def test_runs_table_has_a_header_aligned_columns_and_the_kernel_only_when_asked() -> None:
    records = [
        record("aaaaaaaaaaaa", RunState.FAILED, 0.004, label="x = 1 / 0", error="ZeroDivisionError: division by zero",
               kernel_id="0123456789abcdef"),
        record("bbbbbbbbbbbb", RunState.DONE, 12.5, label="train(config)", kernel_id="fedcba9876543210"),
    ]
    mine = runs_table(records, with_kernel=False).splitlines()
    assert mine[0].split() == ["RUN", "STATE", "BACKEND", "TIME", "CELL", "REASON"]
    assert mine[1].split()[:5] == ["aaaaaaaaaaaa", "failed", "local", "4", "ms"]
    assert mine[1].endswith("ZeroDivisionError: division by zero")
    assert "12.50 s" in mine[2] and "0123" not in "\n".join(mine)
    assert mine[1].index("x = 1") == mine[0].index("CELL") == mine[2].index("train")  # aligned
    every = runs_table(records, with_kernel=True).splitlines()
    assert every[0].split()[:4] == ["RUN", "STATE", "BACKEND", "KERNEL"]
    assert "01234567" in every[1] and "fedcba98" in every[2]
    assert runs_table([], with_kernel=False) == "no runs recorded yet"


def test_run_panel_text_is_its_state_bars_and_output_never_a_widget_repr() -> None:
    from tqdm.notebook import tqdm

    running = record("cccccccccccc", RunState.RUNNING, 1.0)
    panel = RunPanel(running, on_cancel=lambda: True, background=True)
    bar = tqdm(total=10, desc="epochs", display=False)
    panel.attach(bar)
    panel.output.append_stdout("step 1\n")
    bar.update(10)
    bar.close()
    bundle = panel.view.bundle()
    assert "application/vnd.jupyter.widget-view+json" in bundle  # the live widget where a widget manager exists
    text = bundle["text/plain"]
    assert text.splitlines()[0] == describe(running) and "running" in text
    assert "epochs: 100%" in text and "10/10" in text and text.endswith("step 1")
    assert "Box(" not in text and "HTML(" not in text


def test_outputs_text_joins_streams_and_displays_and_keeps_the_end() -> None:
    outputs = [{"output_type": "stream", "name": "stdout", "text": "a\n"},
               {"output_type": "display_data", "data": {"text/plain": "<Figure>", "image/png": "…"}},
               {"output_type": "stream", "name": "stderr", "text": "b\n"}]
    assert outputs_text(outputs) == "a\n<Figure>\nb\n"
    assert outputs_text([{"output_type": "stream", "text": "x" * 50}], limit=10) == "…" + "x" * 10


def test_thither_warnings_show_without_a_file_and_line_prefix_while_loaded() -> None:
    def shown(message: str) -> str:
        with warnings.catch_warnings(record=True) as caught:
            errors.warn(message)
        (warning,) = caught
        return warnings.formatwarning(warning.message, warning.category, warning.filename, warning.lineno)

    assert shown("before").startswith("%%thither:0: ThitherWarning: before")  # the standard format
    errors.show_warnings_plainly()
    errors.show_warnings_plainly()  # idempotent
    try:
        assert shown("--gpu any: no GPU here") == "ThitherWarning: --gpu any: no GPU here\n"
        other = warnings.formatwarning("other", UserWarning, "f.py", 3)
        assert other.startswith("f.py:3: UserWarning: other")
        with pytest.warns(errors.ThitherWarning, match="still recorded"):  # recorders and filters are unchanged
            errors.warn("still recorded")
    finally:
        errors.restore_warnings()
    assert not hasattr(warnings.formatwarning, "mini_magic_previous")
    assert shown("after").startswith("%%thither:0:")
