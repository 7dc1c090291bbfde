"""Ready-made hithers: a live line plot of metrics and a progress bar, both driven by remote code.

::

    from mini_magic import live_plot, progress
    plot = live_plot("loss", title="training")     # in a normal cell: handles, nothing is shown yet
    bar = progress(1000, desc="steps")

    %%thither
    for step in range(1000):
        loss = train_step()
        plot(step, loss=loss)                      # the figure in this cell redraws in place (at most 4 times/s)
        bar()                                      # the local notebook bar advances

Both are context-manager hithers: the figure and the bar appear when a run that uses them starts, and get their
final state after the run's last call.
"""

from __future__ import annotations

import contextlib
import io
import time
from collections.abc import Callable, Iterator
from typing import Any

from .callbacks import hither


@hither
@contextlib.contextmanager
def progress(total: float | None = None, desc: str | None = None, unit: str = "it") -> Iterator[Callable[..., None]]:
    """A local ``tqdm.notebook`` bar; remote code calls ``bar()`` / ``bar(n)`` / ``bar(loss=0.1)`` (postfix)."""
    from tqdm.notebook import tqdm

    from .ui import show_bar

    bar = tqdm(total=total, desc=desc, unit=unit, display=False)
    view = show_bar(bar)

    def step(n: float = 1, **postfix: Any) -> None:
        if postfix:
            bar.set_postfix(postfix, refresh=False)
        bar.update(n)

    try:
        yield step
    finally:
        bar.close()
        view.refresh()  # where widgets do not render, the notebook keeps the final count


@hither
@contextlib.contextmanager
def live_plot(*metrics: str, title: str | None = None, xlabel: str = "step", redraw_every: float = 0.25,
              figsize: tuple[float, float] = (6.0, 3.0)) -> Iterator[Callable[..., None]]:
    """A line plot that redraws in place; remote code calls ``plot(step, loss=..., acc=...)``.

    Drawn with matplotlib's object API (no pyplot state) into an ``ipywidgets.Image``, whose value can be updated
    from any thread, so it also works for background runs. Where widgets do not render (nbconvert, GitHub), the
    output keeps the final figure as a PNG and a line of text.
    """
    import base64

    import ipywidgets
    from matplotlib.figure import Figure

    from .ui import TextView

    image = ipywidgets.Image(format="png")
    figure = Figure(figsize=figsize)
    axes = figure.add_subplot()
    series: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in metrics}
    last_draw = 0.0

    def draw() -> None:
        nonlocal last_draw
        last_draw = time.monotonic()
        axes.clear()
        for name, (xs, ys) in series.items():
            axes.plot(xs, ys, label=name)
        axes.set_xlabel(xlabel)
        if title:
            axes.set_title(title)
        if series:
            axes.legend(loc="best")
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", bbox_inches="tight")
        image.value = buffer.getvalue()

    def update(step: float | None = None, **values: float) -> None:
        for name, value in values.items():
            xs, ys = series.setdefault(name, ([], []))
            xs.append(step if step is not None else len(xs))
            ys.append(float(value))
        if time.monotonic() - last_draw >= redraw_every:
            draw()

    def fallback() -> dict[str, Any]:
        points = max((len(xs) for xs, _ in series.values()), default=0)
        text = f"live plot{': ' + title if title else ''} ({', '.join(series) or 'no metrics'}; {points} points)"
        png = {"image/png": base64.b64encode(image.value).decode("ascii")} if points else {}
        return {"text/plain": text, **png}

    draw()
    view = TextView(image, fallback)
    view.show()
    try:
        yield update
    finally:
        draw()
        view.refresh()
