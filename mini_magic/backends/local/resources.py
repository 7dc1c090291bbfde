"""Volumes and secrets for runs on this machine, mirroring what Modal provides remotely.

* ``--volume NAME:/path``: a persistent directory per volume name under ``$MINI_MAGIC_HOME/volumes`` (default
  ``~/.local/share/mini_magic/volumes``), linked at ``/path`` when that is possible, and always exposed as
  ``$MINI_MAGIC_VOLUME_<NAME>``.
* ``--secret NAME``: the keys of secret ``NAME`` come from a ``.env.NAME`` file in the notebook's directory
  (``KEY=VALUE`` lines) or from environment variables ``MINI_MAGIC_SECRET_<NAME>_<KEY>``. They reach the worker
  process's environment only: never the Job, the run store or a pickle.
"""

from __future__ import annotations

import os
from pathlib import Path

from ...errors import ThitherUsageError, warn
from ...run_store import mini_magic_home
from ..base import environment_name, volume_variable


def parse_volume(spec: str) -> tuple[str, str]:
    name, sep, path = spec.partition(":")
    if not sep or not name or not path.startswith("/"):
        raise ThitherUsageError(f"--volume {spec!r}: expected NAME:/absolute/path, e.g. --volume data:/data")
    if not all(c.isalnum() or c in "-_." for c in name):
        raise ThitherUsageError(f"--volume {spec!r}: a volume name uses letters, digits, '-', '_' and '.' only")
    return name, path.rstrip("/") or "/"


def local_volume(name: str, path: str, *, link: bool = True) -> dict[str, str]:
    """Create the volume's directory, link it at ``path`` if possible (``link``), and return its variable."""
    directory = mini_magic_home() / "volumes" / name
    directory.mkdir(parents=True, exist_ok=True)
    if not link:
        return {volume_variable(name): str(directory)}
    target = Path(path)
    try:
        if target.is_symlink() and target.resolve() == directory.resolve():
            pass
        elif target.exists() or target.is_symlink():
            raise FileExistsError(f"{path} already exists")
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(directory, target_is_directory=True)
    except OSError as exc:
        warn(f"--volume {name}:{path}: cannot link {path} here ({exc}); the volume is {directory}, also in "
             f"${volume_variable(name)}.")
    return {volume_variable(name): str(directory)}


def _parse_env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def local_secret(name: str, cwd: str) -> dict[str, str]:
    """The key/value pairs of secret ``name`` on this machine; a clear error when it is not defined."""
    path = Path(cwd) / f".env.{name}"
    if path.is_file():
        return _parse_env_file(path)
    prefix = environment_name("MINI_MAGIC_SECRET_", name) + "_"
    values = {k[len(prefix):]: v for k, v in os.environ.items() if k.startswith(prefix) and len(k) > len(prefix)}
    if not values:
        raise ThitherUsageError(
            f"--secret {name}: not defined on this machine. Put KEY=VALUE lines in {path}, or set environment "
            f"variables {prefix}<KEY>."
        )
    return values
