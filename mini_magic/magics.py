"""``%%thither`` and ``%thither``: flags -> :class:`RunOptions` (mini_magic.options) -> the run session
(:func:`mini_magic.session.run_cell`, or a background run); nothing else.

The option parser is built at load time from the core options plus every registered backend's own options, so a
backend adds flags (and they show in ``%%thither?``) without this module knowing them.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from IPython.core.magic import Magics, line_cell_magic, magics_class

from .errors import ThitherUsageError, explain_interrupt
from .jobs import CellContext
from .options import RunOptions, build_parser, run_options
from .runtime import request_context
from .session import run_cell, wait_detached
from .ui import runs_table

if TYPE_CHECKING:
    from .extension import ExtensionState

@magics_class
class ThitherMagics(Magics):
    def __init__(self, shell: Any, state: ExtensionState) -> None:
        super().__init__(shell)
        self.state = state
        self.parser = build_parser()
        # `%%thither?` shows the function's docstring: make it the full option help.
        type(self).thither.__doc__ = self.parser.format_help()

    def options(self, args: Any) -> RunOptions:
        """Apply precedence (flag > %config > environment > default) to parsed flags (mini_magic.options)."""
        return run_options(args, self.state.config, self.parser.backend_flags)

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
        first = next((line.strip() for line in cell.splitlines() if line.strip()), "")
        return request_context(self.shell, label=first[:80] or None)

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
        from .outcome import assign

        registry = self.state.registry
        record = registry.get(run_id)
        if record is None or not record.remote_id:
            raise ThitherUsageError(f"%thither attach {run_id}: no detached run with that id in the run store "
                                    "(`%thither runs --all` lists them).")
        handle = self.state.backend(record.backend).attach(record.remote_id, run_id)
        print(f"attached to run {run_id} ({record.state.value}); its live output is not replayed, only its "
              "result comes back.")
        outcome = wait_detached(handle, record, registry)
        if outcome.error is not None:
            raise outcome.error
        assert self.shell is not None
        assign(outcome, self.shell.user_ns)
        if outcome.values:
            print("assigned:", ", ".join(outcome.values))
