"""``Thither``: the traitlets Configurable behind ``%config Thither.*`` and ``ipython_config.py``.

Precedence for every option: a cell's own flag > ``%config`` / ipython_config.py > environment (``MINI_MAGIC_BACKEND``)
> the built-in default. The environment is consulted in the trait default, so configuration always wins over it.
"""

from __future__ import annotations

import os

from traitlets import Bool, Dict, Float, Int, Unicode, default
from traitlets.config import Configurable

from .options import DEFAULT_TIMEOUT


class Thither(Configurable):
    """Defaults for ``%%thither`` cells.

    Two traits concern one backend only: ``max_workers`` and ``prewarm`` (the local pool's; ``prewarm`` reaches
    other backends only through :meth:`Backend.prewarm`, which they leave a no-op). They stay here because their
    documented names are ``Thither.max_workers`` / ``Thither.prewarm``: traitlets applies a ``Thither`` config
    section only to this class (and its subclasses), so a trait moved to a backend's own configurable would make
    ``%config Thither.max_workers = 8`` a "not recognized" warning that changes nothing. A backend that needs
    settings of its own declares its own configurable (``%config <Name>.x``) rather than adding traits here.
    """

    backend = Unicode(help="Where cells run: 'local' (worker processes on this machine) or another registered "
                      "backend. Default: $MINI_MAGIC_BACKEND, else 'local'.").tag(config=True)
    gpu = Unicode(None, allow_none=True, help="GPU request for every cell, e.g. 'L4', 'A100-80GB:2', 'any'.").tag(
        config=True
    )
    timeout = Float(DEFAULT_TIMEOUT, help="Seconds a cell may run before it is stopped (0: no limit). "
                    "Default: 86400 (24 h).").tag(config=True)
    env = Dict(value_trait=Unicode(), help="Environment variables set for every cell's run.").tag(config=True)
    max_workers = Int(4, help="Local backend: at most this many worker processes; further runs wait as 'queued'.").tag(
        config=True
    )
    interrupt_grace = Float(1.0, help="Seconds an interrupted worker gets to stop before it is killed.").tag(
        config=True
    )
    prewarm = Bool(True, help="Local backend: start a worker in the background at %load_ext and after a worker is "
                   "recycled, so the next cell does not wait for a Python start-up.").tag(config=True)
    run_store = Unicode("", help="Path of the persistent run store (SQLite). Default: $MINI_MAGIC_HOME/runs.sqlite, "
                        "else ~/.local/share/mini_magic/runs.sqlite.").tag(config=True)

    @default("backend")
    def _backend_from_environment(self) -> str:
        return os.environ.get("MINI_MAGIC_BACKEND", "").strip() or "local"
