"""``%%thither`` and ``%thither``: parse options, then call :func:`mini_magic.execution.run_cell`.

The option parser is built at load time from the core options plus every registered backend's own options, so a
backend adds flags (and they show in ``%%thither?``) without this module knowing them.
"""

from __future__ import annotations

import dataclasses
import keyword
import math
from typing import TYPE_CHECKING, Any

from IPython.core.magic import Magics, line_cell_magic, magics_class
from IPython.core.magic_arguments import MagicArgumentParser

from .backends import backend_classes
from .backends.base import RunOptions
from .config import DEFAULT_TIMEOUT
from .errors import ThitherUsageError, explain_interrupt
from .execution import CellContext, run_cell
from .local_resources import parse_volume
from .ui import runs_table

if TYPE_CHECKING:
    from .extension import ExtensionState

_CORE = {"backend", "gpu", "timeout", "out", "inputs", "env", "bg", "name", "volume", "secret"}


def build_parser() -> MagicArgumentParser:
    parser = MagicArgumentParser(
        prog="%thither",  # MagicArgumentParser adds the other %
        description=(
            "Run this cell in a worker (a separate local process by default, or a cloud backend). The names the "
            "cell reads from the notebook travel with it; the names it assigns, and captured objects it changes "
            "by item or attribute assignment (df['c'] = ..., obj.x = ...), come back when it succeeds. Changes "
            "made through method calls (xs.append(...)) come back only when named in --out. Output streams live."
        ),
        epilog="`%thither runs [N] [--all]` lists recent runs of this kernel (of every kernel with --all).",
        add_help=False,
    )
    parser.add_argument("--backend", metavar="NAME", help="where to run: " + ", ".join(
        f"'{name}' ({cls.description})" if cls.description else f"'{name}'" for name, cls in backend_classes().items()
    ) + ". Default: %%config Thither.backend, else $MINI_MAGIC_BACKEND, else 'local'.")
    parser.add_argument("--gpu", metavar="SPEC", help="GPU request, e.g. L4, A100-80GB:2, any. The local backend "
                        "exposes that many visible GPUs (CUDA_VISIBLE_DEVICES) and warns when there is none.")
    parser.add_argument("--timeout", metavar="SECONDS", type=float, help="stop the run after this long "
                        f"(0: no limit). Default: %%config Thither.timeout, else {DEFAULT_TIMEOUT:.0f} (24 h).")
    parser.add_argument("--out", metavar="a,b", help="bring back exactly these names ('' for none) instead of "
                        "everything the cell assigns; also names mutated through method calls, e.g. --out xs.")
    parser.add_argument("--in", dest="inputs", metavar="a,b", help="also send these names to the worker, for code "
                        "that uses a name where the analysis cannot see it (e.g. eval(expr) of a string built at run "
                        "time); names inside literal strings of eval, exec, df.query('@x'), pd.eval and "
                        "numexpr.evaluate are found without it.")
    parser.add_argument("--env", metavar="KEY=VALUE", action="append", default=[],
                        help="set an environment variable for this run (repeatable).")
    parser.add_argument("--volume", metavar="NAME:/PATH", action="append", default=[],
                        help="mount persistent volume NAME at /PATH (repeatable). Modal: a modal.Volume, committed at "
                        "the end of the run; local: a directory per name, linked at /PATH when possible; both: "
                        "$MINI_MAGIC_VOLUME_<NAME> holds its path.")
    parser.add_argument("--secret", metavar="NAME", action="append", default=[],
                        help="attach secret NAME as environment variables (repeatable). Modal: modal.Secret.from_name;"
                        " local: a .env.NAME file in the notebook's directory, or MINI_MAGIC_SECRET_<NAME>_<KEY> "
                        "variables. Values are scrubbed from the cell's output (best effort).")
    parser.add_argument("--bg", action="store_true", help="run in the background: the cell returns at once with a "
                        "Run handle (state, elapsed, wait(), result(), cancel(), assign()); output goes to the "
                        "run's own panel. Results are assigned only by run.assign().")
    parser.add_argument("--name", metavar="NAME", help="with --bg: bind the Run handle to this variable.")
    for name, cls in backend_classes().items():
        group = parser.add_argument_group(f"{name} backend options")
        cls.add_arguments(group)
    return parser


def parse_out(text: str | None, option: str = "--out") -> tuple[str, ...] | None:
    """``a,b`` (quotes around it allowed) as names; None when the option was not given."""
    if text is None:
        return None
    names = tuple(n.strip() for n in text.strip("'\"").split(",") if n.strip())
    for name in names:
        if not name.isidentifier() or keyword.iskeyword(name):
            raise ThitherUsageError(f"{option}: {name!r} is not a variable name; give names separated by commas.")
    return names


def parse_in(text: str | None) -> tuple[str, ...]:
    return parse_out(text, "--in") or ()


def parse_env(items: list[str], defaults: dict[str, str]) -> dict[str, str]:
    env = dict(defaults)
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ThitherUsageError(f"--env expects KEY=VALUE, got {item!r}.")
        env[key.strip()] = value
    return env


def _current_count(shell: Any) -> int:
    """The running cell's In[N]: IPython 9 increments the counter before the cell runs, IPython 8 after."""
    import IPython

    return shell.execution_count - 1 if IPython.version_info >= (9,) else shell.execution_count


@magics_class
class ThitherMagics(Magics):
    def __init__(self, shell: Any, state: ExtensionState) -> None:
        super().__init__(shell)
        self.state = state
        self.parser = build_parser()
        # `%%thither?` shows the function's docstring: make it the full option help.
        type(self).thither.__doc__ = self.parser.format_help()

    def options(self, args: Any) -> RunOptions:
        """Apply precedence (flag > %config > environment > default) to parsed flags."""
        config = self.state.config
        backend = args.backend or config.backend
        if backend not in backend_classes():
            raise ThitherUsageError(
                f"--backend {backend!r} is not available; choose one of: {', '.join(backend_classes())}."
            )
        timeout = config.timeout if args.timeout is None else args.timeout
        if not math.isfinite(timeout) or timeout < 0:  # float() parses 'nan' and 'inf'; no limit is 0
            source = "--timeout" if args.timeout is not None else "%config Thither.timeout"
            raise ThitherUsageError(f"{source} {timeout}: give 0 (no limit) or a finite positive number of seconds, "
                                    "e.g. --timeout 3600.")
        extra = {k: v for k, v in vars(args).items() if k not in _CORE and v is not None}
        return RunOptions(
            backend=backend,
            gpu=args.gpu if args.gpu is not None else config.gpu,
            timeout=timeout,
            out=parse_out(args.out),
            inputs=parse_in(args.inputs),
            env=parse_env(args.env, dict(config.env)),
            volumes=tuple(parse_volume(spec) for spec in args.volume),
            secrets=tuple(dict.fromkeys(args.secret)),
            extra=extra,
        )

    @line_cell_magic
    def thither(self, line: str, cell: str | None = None) -> Any:
        if cell is None:
            return self._line_command(line)
        try:
            return self._cell(line, cell)
        except KeyboardInterrupt as exc:  # one line, never a traceback of mini_magic's frames
            raise explain_interrupt(exc, "interrupted before the run started; nothing ran.") from None

    def _cell(self, line: str, cell: str) -> Any:
        assert self.shell is not None
        args = self.parser.parse_argstring(line)
        options = self.options(args)
        if args.name is not None and (not args.bg or not args.name.isidentifier()):
            raise ThitherUsageError("--name NAME needs --bg and a valid variable name, e.g. --bg --name job")
        if options.extra.get("detach") and not args.bg:
            raise ThitherUsageError("--detach needs --bg: a detached run outlives the cell (and the kernel).")
        source = self.shell.transform_cell(cell)
        backend = self.state.backend(options.backend)
        context = dataclasses.replace(self._context(cell), hither_interval=backend.hither_interval)
        grace = self.state.config.interrupt_grace
        if args.bg:
            from .background import start_background

            run = start_background(source, self.shell.user_ns, options, shell=self.shell, backend=backend,
                                   registry=self.state.registry, context=context, name=args.name, grace=grace)
            if args.name:
                self.shell.user_ns[args.name] = run
                return None
            return run
        run_cell(source, self.shell.user_ns, options, backend=backend, registry=self.state.registry,
                 sink=self.state.sink, context=context, interrupt_grace=grace)
        return None

    def _context(self, cell: str) -> CellContext:
        parent: dict[str, Any] = {}
        kernel = getattr(self.shell, "kernel", None)
        if kernel is not None:
            try:
                parent = kernel.get_parent() or {}
            except Exception:  # noqa: BLE001 - no parent outside a kernel request
                parent = {}
        first = next((line.strip() for line in cell.splitlines() if line.strip()), "")
        return CellContext(
            cell_id=(parent.get("metadata") or {}).get("cellId"),
            msg_id=(parent.get("header") or {}).get("msg_id"),
            execution_count=_current_count(self.shell),
            label=first[:80] or None,
            widgets=kernel is not None,  # a terminal IPython has no frontend that could render a widget
        )

    def _line_command(self, line: str) -> None:
        words = line.split()
        if words[:1] == ["runs"]:
            show_all = "--all" in words
            numbers = [w for w in words[1:] if w.isdigit()]
            registry = self.state.registry
            registry.reconcile()  # runs of kernels that died since this one started are shown as lost
            records = registry.recent(int(numbers[0]) if numbers else 20,
                                      kernel_id=None if show_all else registry.kernel_id)
            print(runs_table(records, with_kernel=show_all))
            return
        if words[:1] == ["attach"] and len(words) == 2:
            self._attach(words[1])
            return
        raise ThitherUsageError(
            "use %%thither as a cell magic (see %%thither?); `%thither runs [N] [--all]` lists recent runs "
            "(this kernel's, or every kernel's with --all); `%thither attach RUN_ID` waits for a detached run and "
            "assigns its results."
        )

    def _attach(self, run_id: str) -> None:
        """The result of a detached run, possibly started by an earlier kernel, assigned into this namespace."""
        from .outcome import assign, interpret

        registry = self.state.registry
        record = registry.get(run_id)
        if record is None or not record.remote_id:
            raise ThitherUsageError(f"%thither attach {run_id}: no detached run with that id in the run store "
                                    "(`%thither runs --all` lists them).")
        backend = self.state.backend(record.backend)
        attach = getattr(backend, "attach", None)
        if attach is None:
            raise ThitherUsageError(f"%thither attach: the {record.backend} backend cannot reattach runs.")
        print(f"attached to run {run_id} ({record.state.value}); its live output is not replayed, only its "
              "result comes back.")
        handle = attach(record.remote_id, run_id)
        terminal = None
        while terminal is None:  # a kernel interrupt stops waiting, never the detached run
            terminal = next((e for e in handle.next_events(0.5) if e.terminal), None)
        outcome = interpret(terminal, None, RunOptions(backend=record.backend))
        if record.state.terminal:
            registry.update(run_id, outputs=list(outcome.values))
        else:
            if record.state.value == "queued":
                registry.start(run_id)
            registry.finish(run_id, outcome.state, error=outcome.summary, outputs=list(outcome.values))
        if outcome.error is not None:
            raise outcome.error
        assert self.shell is not None
        assign(outcome, self.shell.user_ns)
        if outcome.values:
            print("assigned:", ", ".join(outcome.values))
