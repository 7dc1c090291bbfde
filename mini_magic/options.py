"""A run's options: :class:`RunOptions`, the ``%%thither`` flag parser, and the checks that turn flags into options.

The parser is built from the core flags plus every registered backend's own (``Backend.add_arguments``), so that
``%%thither?`` lists them all; each backend flag remembers which backend declared it, and a flag of another backend
than the one the cell runs on is refused (it would otherwise be silently ignored: ``--backend local --pip torch``).

Importing this module is light (stdlib only, errors and IPython are imported where needed): the backends' base
module imports :class:`RunOptions` from here.
"""

from __future__ import annotations

import keyword
import math
from dataclasses import dataclass, field
from typing import Any

DEFAULT_TIMEOUT = 24 * 3600.0  # seconds: the default limit of a run, and the longest Modal allows

CORE_OPTIONS = frozenset({"backend", "gpu", "timeout", "out", "inputs", "env", "bg", "name", "volume", "secret",
                          "guard"})


@dataclass(frozen=True)
class RunOptions:
    """A cell's options after precedence (flag > %config > environment > default) has been applied."""

    backend: str
    gpu: str | None = None
    timeout: float = 0.0  # seconds; 0 means no limit
    out: tuple[str, ...] | None = None
    inputs: tuple[str, ...] = ()  # --in: names captured besides those the analysis finds
    env: dict[str, str] = field(default_factory=dict)
    volumes: tuple[tuple[str, str], ...] = ()  # (volume name, mount path)
    secrets: tuple[str, ...] = ()  # secret names; their values never enter the Job, the run store or a pickle
    guards: tuple[str, ...] = ()  # --guard: names of guards in the notebook (mini_magic.guards)
    extra: dict[str, Any] = field(default_factory=dict)  # the backend's own options, by argparse dest

    def profile(self) -> dict[str, Any]:
        """What the run registry records: resources and names, never environment or secret values."""
        return {"gpu": self.gpu, "timeout": self.timeout, "env_keys": sorted(self.env), **({"guards": list(
                self.guards)} if self.guards else {}),
                "volumes": [list(v) for v in self.volumes], "secrets": list(self.secrets), **self.extra}


@dataclass(frozen=True)
class BackendFlag:
    """A flag a backend declared: which backend, as the user types it, and its value when not given."""

    backend: str
    flag: str
    default: Any


class _DeclaringGroup:
    """The argument group a backend declares its flags on, recording each flag's owner (``add_argument`` returns the
    argparse Action: public API, no peeking into the parser)."""

    def __init__(self, group: Any, backend: str, owners: dict[str, BackendFlag]) -> None:
        self._group = group
        self._backend = backend
        self._owners = owners

    def add_argument(self, *args: Any, **kwargs: Any) -> Any:
        action = self._group.add_argument(*args, **kwargs)
        flag = max(action.option_strings, key=len) if action.option_strings else action.dest
        self._owners[action.dest] = BackendFlag(self._backend, flag, action.default)
        return action

    def __getattr__(self, name: str) -> Any:
        return getattr(self._group, name)


def build_parser() -> Any:
    """The ``%%thither`` parser (an IPython MagicArgumentParser); ``parser.backend_flags`` maps each backend flag's
    argparse dest to its :class:`BackendFlag`."""
    from IPython.core.magic_arguments import MagicArgumentParser

    from .backends import backend_classes

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
    parser.add_argument("--guard", metavar="NAME", action="append", default=[],
                        help="run this cell inside guard NAME (repeatable): a guard, or a context manager function, the "
                        "notebook defines; around the global guard(...)s, first given outermost. See guard().")
    parser.add_argument("--bg", action="store_true", help="run in the background: the cell returns at once with a "
                        "Run handle (state, elapsed, wait(), result(), cancel(), assign()); output goes to the "
                        "run's own panel. Results are assigned only by run.assign().")
    parser.add_argument("--name", metavar="NAME", help="with --bg: bind the Run handle to this variable.")
    owners: dict[str, BackendFlag] = {}
    for name, cls in backend_classes().items():
        group = parser.add_argument_group(f"{name} backend options")
        cls.add_arguments(_DeclaringGroup(group, name, owners))  # type: ignore[arg-type]
    parser.backend_flags = owners
    return parser


def refuse_other_backends_flags(args: Any, backend: str, backend_flags: dict[str, BackendFlag]) -> None:
    """A flag given for a backend the cell does not run on would be ignored: say so, and which backend has it."""
    from .errors import ThitherUsageError

    given: dict[str, list[str]] = {}
    for dest, owner in backend_flags.items():
        if owner.backend != backend and getattr(args, dest, owner.default) != owner.default:
            given.setdefault(owner.backend, []).append(owner.flag)
    if not given:
        return
    problems = []
    for owner, flags in given.items():
        names = ", ".join(flags)
        problems.append(f"{names} {'is an option' if len(flags) == 1 else 'are options'} of the {owner!r} backend")
    fixes = " or ".join(f"--backend {owner}" for owner in given)
    raise ThitherUsageError(f"{'; '.join(problems)}; this cell runs on {backend!r}, which does not have "
                            f"{'it' if sum(map(len, given.values())) == 1 else 'them'}. Add {fixes}, or remove "
                            f"{'it' if sum(map(len, given.values())) == 1 else 'them'}.")


def run_options(args: Any, config: Any, backend_flags: dict[str, BackendFlag]) -> RunOptions:
    """Apply precedence (flag > %config > environment > default) to parsed flags, and check them."""
    from .backends import backend_classes
    from .errors import ThitherUsageError

    backend = args.backend or config.backend
    if backend not in backend_classes():
        raise ThitherUsageError(
            f"--backend {backend!r} is not available; choose one of: {', '.join(backend_classes())}."
        )
    refuse_other_backends_flags(args, backend, backend_flags)
    timeout = config.timeout if args.timeout is None else args.timeout
    if not math.isfinite(timeout) or timeout < 0:  # float() parses 'nan' and 'inf'; no limit is 0
        source = "--timeout" if args.timeout is not None else "%config Thither.timeout"
        raise ThitherUsageError(f"{source} {timeout}: give 0 (no limit) or a finite positive number of seconds, "
                                "e.g. --timeout 3600.")
    from .backends.local.resources import parse_volume

    extra = {k: v for k, v in vars(args).items() if k not in CORE_OPTIONS and v is not None}
    return RunOptions(
        backend=backend,
        gpu=args.gpu if args.gpu is not None else config.gpu,
        timeout=timeout,
        out=parse_out(args.out),
        inputs=parse_in(args.inputs),
        env=parse_env(args.env, dict(config.env)),
        volumes=tuple(parse_volume(spec) for spec in args.volume),
        secrets=tuple(dict.fromkeys(args.secret)),
        guards=tuple(getattr(args, "guard", ()) or ()),
        extra=extra,
    )


def parse_out(text: str | None, option: str = "--out") -> tuple[str, ...] | None:
    """``a,b`` (quotes around it allowed) as names; None when the option was not given."""
    from .errors import ThitherUsageError

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
    from .errors import ThitherUsageError

    env = dict(defaults)
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ThitherUsageError(f"--env expects KEY=VALUE, got {item!r}.")
        env[key.strip()] = value
    return env
