"""The GPUs of this machine, for ``--gpu`` on the local backend: found with ``nvidia-smi``, chosen by
``CUDA_VISIBLE_DEVICES``.

Apart from the pool on purpose: the pool (and its tests) never needs ``nvidia-smi``; only a run's profile does, when
it asks for a GPU.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from functools import lru_cache

from ...errors import ThitherUsageError, warn


@lru_cache(maxsize=1)
def visible_gpus() -> tuple[tuple[str, str], ...]:
    """(index, name) of the NVIDIA GPUs this process may use, honouring CUDA_VISIBLE_DEVICES."""
    if shutil.which("nvidia-smi") is None:
        return ()
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=index,name", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    gpus = [tuple(part.strip() for part in line.split(",", 1)) for line in out.splitlines() if "," in line]
    allowed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if allowed is not None:
        keep = [d.strip() for d in allowed.split(",") if d.strip()]
        gpus = [g for g in gpus if g[0] in keep]
    return tuple((i, n) for i, n in gpus)


def gpu_count(spec: str) -> int:
    """``L4`` -> 1, ``A100-80GB:2`` -> 2, ``any`` -> 1."""
    _, _, count = spec.rpartition(":")
    if ":" in spec:
        if not count.isdigit() or int(count) < 1:
            raise ThitherUsageError(f"--gpu {spec!r}: the count after ':' must be a positive integer, e.g. 'L4:2'")
        return int(count)
    return 1


def gpu_environment(spec: str | None) -> dict[str, str]:
    """Environment exposing the requested number of visible GPUs; warns when the request cannot be met here."""
    if not spec:
        return {}
    wanted = gpu_count(spec)
    kind = spec.rpartition(":")[0] if ":" in spec else spec
    gpus = visible_gpus()
    if not gpus:
        warn(
            f"--gpu {spec}: no GPU is visible on this machine (nvidia-smi found none), so the local worker runs on "
            "the CPU. Use a GPU backend (e.g. --backend modal) to get one."
        )
        return {"CUDA_VISIBLE_DEVICES": ""}
    chosen = gpus[:wanted]
    if len(chosen) < wanted:
        warn(f"--gpu {spec}: only {len(chosen)} GPU(s) are visible here; using those.")
    if kind.lower() != "any" and not any(kind.lower() in name.lower() for _, name in chosen):
        names = ", ".join(name for _, name in chosen)
        warn(f"--gpu {spec}: the local GPU is {names}, not {kind}; running there anyway.")
    return {"CUDA_VISIBLE_DEVICES": ",".join(index for index, _ in chosen)}


__all__ = ["gpu_count", "gpu_environment", "visible_gpus"]
