"""``invoke(path, function, ...)``: run a function of a plain Python file in a worker, with no decorator in the user's
code (flow's invoker pattern).

The file's module, and the local modules it imports, are shipped as source from ``code_root`` (the way a cell's
local modules are) and imported in the worker, which calls the function with JSON arguments and sends back its JSON
result. Arguments and results are JSON and at most 10 MB each: big data travels as a path (a volume, a bucket),
not as a value. Everything else is a ``@thither`` call's: the same options (``gpu``, ``timeout``, ``env``,
``volumes``, ``secrets``, ``backend`` and the backend's own), output streaming to the caller, the run registry.
``invoke_async`` returns a handle at once. ``python -m mini_magic invoke FILE FUNCTION`` is the command line.
"""

from __future__ import annotations

import ast
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .worker.invoker import JSON_LIMIT  # bytes of JSON per argument and for the result


def _usage_error(message: str) -> Exception:
    from .errors import ThitherUsageError  # here: IPython loads when something is wrong, not at import

    return ThitherUsageError(message)


class RemoteExecutionFailed(RuntimeError):
    """The invoked function raised; ``remote_traceback`` is the worker's traceback (the function's own lines)."""

    def __init__(self, message: str, remote_traceback: str) -> None:
        super().__init__(message)
        self.remote_traceback = remote_traceback


def invoke(module_path: str | os.PathLike[str], function_name: str, args: list[Any] | None = None,
           kwargs: dict[str, Any] | None = None, *, code_root: str | os.PathLike[str] | None = None,
           **task_params: Any) -> Any:
    """Run ``function_name`` of the file ``module_path`` (relative to ``code_root``, default: the current
    directory) in a worker and return its JSON result. A remote exception is raised as
    ``RuntimeError("Remote execution failed: ValueError: ...")`` carrying the remote traceback."""
    request = InvokeRequest.check(module_path, function_name, args, kwargs, code_root, task_params)
    return json_result(lambda: request.function()(request.module, function_name, request.args_json,
                                                  request.kwargs_json))


def invoke_async(module_path: str | os.PathLike[str], function_name: str, args: list[Any] | None = None,
                 kwargs: dict[str, Any] | None = None, *, code_root: str | os.PathLike[str] | None = None,
                 **task_params: Any) -> InvokeTask:
    """Start :func:`invoke`'s run and return its handle at once: ``get_result(timeout)``, ``status``, ``cancel()``."""
    request = InvokeRequest.check(module_path, function_name, args, kwargs, code_root, task_params)
    call = request.function().spawn(request.module, function_name, request.args_json, request.kwargs_json)
    return InvokeTask(call, f"{request.module}.{function_name}")


class InvokeRequest:
    """An invoke call, checked before anything runs."""

    def __init__(self, module: str, function_name: str, root: Path, args_json: str, kwargs_json: str,
                 task_params: dict[str, Any]):
        self.module = module
        self.function_name = function_name
        self.code_root = root
        self.args_json = args_json
        self.kwargs_json = kwargs_json
        self.task_params = task_params

    def function(self) -> Any:
        """The worker's JSON entry point as a ``@thither`` function that runs in code_root and ships the module
        (and the local modules it imports) from there."""
        from .functions import ThitherFunction
        from .worker.invoker import call_json

        function = ThitherFunction(call_json, self.task_params, cwd=str(self.code_root), imports=(self.module,))
        function.__qualname__ = f"invoke {self.module}"
        function.label = f"invoke {self.module}.{self.function_name}"
        return function

    @classmethod
    def check(cls, module_path: Any, function_name: str, args: Any, kwargs: Any, code_root: Any,
              task_params: dict[str, Any]) -> InvokeRequest:
        from . import call_options

        root = Path(code_root if code_root is not None else os.getcwd()).resolve()
        if not root.is_dir():
            raise _usage_error(f"invoke: code_root {str(root)!r} is not a directory; give the folder that holds "
                                    "the module (default: the current directory).")
        path = Path(module_path)
        path = (path if path.is_absolute() else root / path).resolve()
        if path.suffix != ".py" or not path.is_file():
            raise _usage_error(f"invoke: no Python file {str(module_path)!r} under {str(root)!r}; give the path "
                                    "of a .py file, relative to code_root.")
        try:
            relative = path.relative_to(root)
        except ValueError:
            raise _usage_error(f"invoke: {str(path)!r} is outside code_root {str(root)!r}; only files under "
                                    "code_root are shipped to the worker.") from None
        module = ".".join(relative.with_suffix("").parts)
        if not all(part.isidentifier() for part in relative.with_suffix("").parts):
            raise _usage_error(f"invoke: {str(relative)!r} cannot be imported as a module (each part of its path "
                                    "must be a Python identifier).")
        _check_function(path, function_name)
        if args is not None and not isinstance(args, (list, tuple)):
            raise TypeError(f"invoke: args must be a list, not {type(args).__name__}.")
        if kwargs is not None and not isinstance(kwargs, dict):
            raise TypeError(f"invoke: kwargs must be a dict, not {type(kwargs).__name__}.")
        for i, value in enumerate(args or ()):
            to_json(value, f"args[{i}]")
        for key, value in (kwargs or {}).items():
            to_json(value, f"kwargs[{key!r}]")
        params = dict(task_params)
        call_options.resolve(params, _config(), "invoke(...)")  # unknown or bad task parameters, named, now
        return cls(module, function_name, root, to_json(list(args or ()), "args"), to_json(dict(kwargs or {}), "kwargs"), params)


def _config() -> Any:
    from . import runtime

    return runtime.current().config


def _check_function(path: Path, name: str) -> None:
    """The function must be defined at the top level of the file (found without importing it here)."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    except SyntaxError as exc:
        raise _usage_error(f"invoke: {path.name} does not parse: {exc}") from None
    defined = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defined.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            defined.update(t.id for t in targets if isinstance(t, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            defined.update((alias.asname or alias.name).partition(".")[0] for alias in node.names)
    if name not in defined:
        functions = sorted(n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)))
        raise _usage_error(f"invoke: {path.name} has no function {name!r} at its top level; it defines: "
                                f"{', '.join(functions) or 'no functions'}.")


def to_json(value: Any, name: str) -> str:
    """``value`` as JSON, or a TypeError that names it and says what to do."""
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"invoke: {name} ({type(value).__name__}) is not JSON-serializable ({exc}): arguments and "
                        "results travel as JSON. Save it to disk (or a volume) and pass the path instead.") from None
    if len(text.encode()) > JSON_LIMIT:
        raise TypeError(f"invoke: {name} is {len(text.encode()) / 1e6:.1f} MB as JSON, over the 10 MB limit. Save "
                        "it to disk (or a volume) and pass the path instead.")
    return text


def json_result(call: Callable[[], str]) -> Any:
    """What ``call`` (the worker's JSON text) amounts to, its failure turned into :func:`remote_failure`'s."""
    try:
        text = call()
    except Exception as exc:
        failure = remote_failure(exc)
        if failure is exc:
            raise
        raise failure from exc
    return json.loads(text)


def remote_failure(exc: Exception) -> Exception:
    """What the caller of invoke gets: mini_magic's own errors (a timeout, a cancel, a crash, an argument that
    cannot travel) as they are; the function's exception as RuntimeError("Remote execution failed: ...")."""
    from .errors import MiniMagicError

    if isinstance(exc, (MiniMagicError, TimeoutError)):
        return exc
    remote = str(exc.__cause__).lstrip("\n") if exc.__cause__ is not None else ""
    return RemoteExecutionFailed(f"Remote execution failed: {type(exc).__name__}: {exc}", remote)


class InvokeTask:
    """The handle :func:`invoke_async` returns."""

    def __init__(self, call: Any, label: str) -> None:
        self._call = call
        self.label = label

    @property
    def status(self) -> str:
        """queued, running, done, failed or cancelled."""
        return self._call.state

    @property
    def run_id(self) -> str:
        return self._call.run_id

    def cancel(self) -> None:
        self._call.cancel()

    def get_result(self, timeout: float | None = None) -> Any:
        """The function's JSON result; ``RuntimeError("Remote execution failed: ...")`` if it raised,
        ``TimeoutError`` if it is still running after ``timeout`` seconds."""
        return json_result(lambda: self._call.result(timeout))

    def __repr__(self) -> str:
        return f"<invoke {self.label}: {self.status}>"
