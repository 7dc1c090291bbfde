"""Library settings a notebook treats as its own state, carried to every run and back.

``np.set_printoptions(precision=2)`` in a normal cell changes how every later cell prints arrays. Run remotely, the
call changes only the worker that ran it: later cells print differently depending on which warm worker they land
on, and the notebook's own cells never see it. So each job carries the kernel's settings, the worker applies them
before the cell, sends back those the cell changed, and puts its own back afterwards; the kernel applies the changes
when the run's names are assigned. A result then depends neither on the worker nor on where the setting was made.

Only settings that are cheap to read and set travel (numpy's print options: a few microseconds a run). Random
number generator state does not (a hundred microseconds each way): keep a ``np.random.default_rng(seed)`` in a
variable instead; a generator that draws in the cell comes back changed (worker/inputs.py). Standard library only:
the libraries are found in ``sys.modules``, never imported unless a setting for them arrives.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

# Settings of libraries the kernel does not have (set remotely, never imported here): carried on to later runs.
_ELSEWHERE: dict[str, Any] = {}


def _numpy_printoptions(module: Any, value: Any = None) -> Any:
    if value is None:
        return module.get_printoptions()
    known = module.get_printoptions()  # another numpy version may not know every option
    module.set_printoptions(**{k: v for k, v in value.items() if k in known})
    return None


_SETTINGS: dict[str, tuple[str, Any]] = {"numpy.printoptions": ("numpy", _numpy_printoptions)}


def apply_pending() -> None:
    """Set the settings kept for a library that has been imported since (called where the kernel may have
    imported it: before each cell, when a returned module is first used, before each run)."""
    for key in [k for k in _ELSEWHERE if _SETTINGS[k][0] in sys.modules]:
        apply({key: _ELSEWHERE[key]}, import_missing=False)


def capture() -> dict[str, Any]:
    """The settings of the libraries imported in this process (and those only set elsewhere)."""
    apply_pending()
    settings = dict(_ELSEWHERE)
    for key, (module_name, access) in _SETTINGS.items():
        module = sys.modules.get(module_name)
        if module is not None:
            settings[key] = access(module)
    return settings


def apply(settings: dict[str, Any], *, import_missing: bool = True) -> None:
    """Set what ``settings`` holds; a library not imported yet is imported (it was in use where they come from),
    or, when it is not installed, its settings are kept for later runs."""
    for key, value in settings.items():
        if key not in _SETTINGS:
            continue
        module_name, access = _SETTINGS[key]
        module = sys.modules.get(module_name)
        if module is None and import_missing:
            try:
                module = importlib.import_module(module_name)
            except ImportError:
                module = None
        if module is None:
            _ELSEWHERE[key] = value
            continue
        _ELSEWHERE.pop(key, None)
        try:
            access(module, value)
        except Exception:  # noqa: BLE001 - a setting this version rejects is left as it is
            pass


def changed_since(before: dict[str, Any]) -> dict[str, Any]:
    """The settings that differ from ``before`` now; those of a library imported meanwhile, whatever they are
    (the kernel keeps them for later runs without importing the library itself: ``apply(import_missing=False)``)."""
    now = capture()
    return {key: value for key, value in now.items() if key not in before or not _same(before[key], value)}


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - values that do not compare are taken as changed
        return False
