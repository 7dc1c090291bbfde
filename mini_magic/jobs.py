"""Building a Job: the only place that turns what the user asked for into a :class:`mini_magic.wire.Job`.

Everything is checked and packed before anything runs, so an error here leaves the notebook namespace untouched and
no run exists yet. The result is a :class:`JobSpec`: the Job plus what the kernel keeps while it runs (the hither
objects the closure references, every value sent, the namespace results come home to). The run session
(mini_magic.session) takes a JobSpec and never looks at where it came from, so a job that is not a cell goes through
the same start, drain and end code.
"""

from __future__ import annotations

import ast
import io
import os
import tokenize
import uuid
from dataclasses import dataclass, field
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from . import guards, library_settings, wire
from .capture import closure_values, imported_modules, local_module_sources, notebook_sources, pack_closure
from .closure import StarImportError, analyze_cell
from .errors import ThitherUsageError
from .options import RunOptions
from .placeholder import NOT_SENT


@dataclass(frozen=True)
class CellContext:
    """Where the cell comes from: recorded with the run so the UI can find the cell again."""

    cell_id: str | None = None
    msg_id: str | None = None
    execution_count: int | None = None
    cwd: str = field(default_factory=os.getcwd)
    first_line: int = 2  # the body of a %%thither cell starts on the cell's second line
    label: str | None = None
    hither_interval: float = 0.02  # the backend's batching interval for hither calls
    background: bool = False  # a --bg run: never the kernel's foreground cell, so never stopped by an interrupt
    widgets: bool = True  # False in a terminal IPython (no kernel): no panel, text progress bars


class JobSpec(NamedTuple):
    """A built Job and what the kernel keeps while it runs."""

    job: wire.Job
    hithers: dict[str, Any]  # hither objects the closure references, by reference id
    sent: dict[str, Any]  # every value sent, by name: unchanged ones come back as these very objects
    namespace: dict[str, Any]  # where results are assigned (functions that come back live in it)


def build_job(source: str, namespace: dict[str, Any], options: RunOptions, context: CellContext,
              secret_keys: tuple[str, ...] = ()) -> JobSpec:
    """A cell's Job. Results may refer back to the values sent (see mini_magic.worker.inputs), hence ``sent``."""
    offset = context.first_line - 1
    try:
        analysis = analyze_cell(source)
        tree = ast.parse(source)
    except SyntaxError as exc:
        if exc.lineno is not None:
            exc.lineno += offset
        if context.execution_count is not None:  # named like the cell's code in tracebacks, not <unknown>
            exc.filename = f"<thither In[{context.execution_count}]>"
        raise
    except StarImportError as exc:
        raise ThitherUsageError(f"%%thither: {exc}") from None
    if analysis.magics:
        uses = ", ".join(f"%{'%' if m.kind == 'cell' else ''}{m.name} (line {m.lineno + offset})" for m in analysis.magics)
        raise ThitherUsageError(
            f"%%thither: IPython magics cannot run in the worker: {uses}. Only !shell commands work inside a "
            "%%thither cell; run the magic in a normal cell."
        )
    values = closure_values(analysis, namespace, options.inputs, returned=options.out)
    run_guards = guards.named(options.guards, namespace)
    run_id, count = new_run_id(), context.execution_count
    return _build(values, namespace, options, context, secret_keys, wire.JobHeader(run_id=run_id), run_guards,
                  source=source,
                  filename=f"<thither In[{count}]>" if count is not None else f"<thither {run_id}>",
                  first_line=context.first_line, imports=imported_modules(tree),
                  outputs=options.out,
                  candidates=tuple(n for n in (*analysis.writes, *analysis.mutated) if values.get(n) is not NOT_SENT),
                  deleted=analysis.deleted,
                  display_trailing=analysis.trailing_expression and not ends_with_semicolon(source))


def build_call_job(function: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any], options: RunOptions,
                   context: CellContext, secret_keys: tuple[str, ...] = (), *,
                   namespace: dict[str, Any] | None = None, run_guards: Sequence[Any] = (),
                   imports: Sequence[str] = ()) -> JobSpec:
    """A call's Job: ``function(*args, **kwargs)`` in the worker, packed as a cell's closure is.

    ``namespace`` is where the function lives when it is the notebook's (its globals then travel with it and a
    function that comes back lives there); by default the function's globals when it was defined in ``__main__``
    (a notebook cell), else none: a module's function travels by reference. ``run_guards``: the function's own
    guards (the global ones are added); ``imports``: local modules to ship besides those the values reference."""
    if not callable(function):
        raise ThitherUsageError(f"a call job needs a callable, not {type(function).__name__}")
    if namespace is None:
        namespace = home_namespace(function)
    name = getattr(function, "__qualname__", type(function).__name__)
    return _build(wire.call_values(function, args, kwargs), namespace if namespace is not None else {}, options,
                  context, secret_keys, wire.JobHeader(run_id=new_run_id(), kind="call"), list(run_guards),
                  source="", filename=f"<thither call {name}>", first_line=1, imports=set(imports))


def home_namespace(function: Any) -> dict[str, Any] | None:
    """Where a function lives, for a call of it: its globals when it was defined in ``__main__`` (a notebook
    cell or a script), which then travel with it; None for a module's function, which travels by reference."""
    main = getattr(function, "__module__", None) == "__main__"
    return getattr(function, "__globals__", None) if main else None


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


def _build(values: dict[str, Any], namespace: dict[str, Any], options: RunOptions, context: CellContext,
           secret_keys: tuple[str, ...], header: wire.JobHeader, run_guards: list[Any], *, imports: set[str],
           **fields: Any) -> JobSpec:
    """Pack ``values`` and build the Job: what a cell and a call share. The notebook sources of every function sent
    travel for tracebacks, including those of the helpers a shipped function calls (its globals, in ``sent``).
    The run's guards (the global ones first) travel with the values."""
    run_guards = guards.for_run(run_guards)
    if run_guards:
        values = {**values, wire.GUARDS: run_guards}
    packed = pack_closure(values, namespace)
    job = wire.Job(
        header=header,
        closure=packed.values,
        modules=local_module_sources(packed.modules | imports, context.cwd),
        env=dict(options.env),
        cwd=context.cwd,
        linecache=notebook_sources(packed.sent.values()),
        hither_interval=context.hither_interval if packed.hithers else None,
        secret_keys=secret_keys,
        return_known=not options.extra.get("detach"),  # another kernel may read a detached run's result
        settings=library_settings.capture(),
        **fields,
    )
    return JobSpec(job, packed.hithers, packed.sent, namespace)


def ends_with_semicolon(source: str) -> bool:
    """IPython's rule: a trailing ``;`` (comments aside) suppresses the display of the last expression."""
    try:
        tokens = [t for t in tokenize.generate_tokens(io.StringIO(source).readline)
                  if t.type not in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.ENDMARKER,
                                    tokenize.INDENT, tokenize.DEDENT)]
    except (tokenize.TokenError, SyntaxError):
        return False
    return bool(tokens) and tokens[-1].string == ";"
