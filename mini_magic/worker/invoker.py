"""Worker side of ``invoke(path, function, ...)`` (mini_magic.invoke): import the shipped module, call the function
with its JSON arguments, return its result as JSON. Standard library only."""

from __future__ import annotations

import importlib
import inspect
import json
from typing import Any

JSON_LIMIT = 10 * 1024 * 1024  # bytes (mini_magic.invoke.JSON_LIMIT: the same limit both ways)


def call_json(module: str, function: str, args_json: str, kwargs_json: str) -> str:
    target: Any = getattr(importlib.import_module(module), function)
    result = target(*json.loads(args_json), **json.loads(kwargs_json))
    if inspect.iscoroutine(result):
        import asyncio

        result = asyncio.run(result)
    try:
        text = json.dumps(result, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{module}.{function} returned a {type(result).__name__}, which is not JSON-serializable "
                        f"({exc}): invoke's results travel as JSON. Save it to disk (or a volume) and return the "
                        "path instead.") from None
    if len(text.encode()) > JSON_LIMIT:
        raise TypeError(f"{module}.{function} returned {len(text.encode()) / 1e6:.1f} MB of JSON, over the 10 MB "
                        "limit. Save it to disk (or a volume) and return the path instead.")
    return text
