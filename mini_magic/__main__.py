"""``python -m mini_magic invoke FILE FUNCTION [options]``: run a function of a Python file in a worker.

The function's output streams to this terminal; its JSON result is printed last, on stdout. A remote error prints the
remote traceback on stderr and exits with status 1; a bad argument or option exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mini_magic")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("invoke", help="run FUNCTION of FILE in a worker and print its JSON result")
    run.add_argument("file", help="the Python file, relative to --code-root")
    run.add_argument("function", help="a function defined at the top level of FILE")
    run.add_argument("--args", default="[]", help="positional arguments as a JSON list")
    run.add_argument("--kwargs", default="{}", help="keyword arguments as a JSON object")
    run.add_argument("--code-root", default=None, help="the folder shipped to the worker (default: .)")
    run.add_argument("--backend", help="where to run: local (default) or modal")
    run.add_argument("--gpu", help="GPU request, e.g. L4, A100-80GB:2, any")
    run.add_argument("--timeout", type=float, help="seconds before the run is stopped")
    run.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="repeatable")
    run.add_argument("--volume", action="append", default=[], metavar="NAME:/PATH", help="repeatable")
    run.add_argument("--secret", action="append", default=[], metavar="NAME", help="repeatable")
    run.add_argument("--pip", action="append", default=[], metavar="PKG", help="Modal: repeatable")
    options = parser.parse_args(argv)
    try:
        args, kwargs = json.loads(options.args), json.loads(options.kwargs)
    except json.JSONDecodeError as exc:
        parser.error(f"--args/--kwargs must be JSON: {exc}")
    task: dict[str, Any] = {"backend": options.backend, "gpu": options.gpu, "timeout": options.timeout}
    if options.env:
        task["env"] = dict(item.partition("=")[::2] for item in options.env)
    for key, values in (("volumes", options.volume), ("secrets", options.secret), ("pip", options.pip)):
        if values:
            task[key] = values
    from .errors import MiniMagicError
    from .invoker import RemoteExecutionFailed, invoke

    try:
        result = invoke(options.file, options.function, args, kwargs, code_root=options.code_root,
                        **{k: v for k, v in task.items() if v is not None})
    except RemoteExecutionFailed as exc:
        sys.stderr.write(exc.remote_traceback.rstrip("\n") + "\n" + str(exc) + "\n")
        return 1
    except (MiniMagicError, TypeError) as exc:
        sys.stderr.write(f"{exc}\n")
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
