"""The kernel's private runtime directory (worker sockets and logs), and the removal of those dead kernels left.

A kernel that closes its local backend removes its directory; one that is killed (``kill -9``, the OOM killer) cannot.
Its keepers remove it when they notice (see mini_magic/worker/keeper.py), but they may be gone too. So every directory carries its
owner (host, pid and process start time, in ``owner.json``: a pid alone is reused) and a kernel that makes its own
first removes those whose owner is surely dead. A directory without a readable owner (another tool's, an older
version's, one being made right now) is never touched.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from ...owner import Owner

log = logging.getLogger("mini_magic.workers")

PREFIX = "mini-magic-"
OWNER_FILE = "owner.json"


def private_socket_dir() -> str:
    """A new 0700 directory for this kernel's sockets and worker logs, marked with its owner; stale ones go first."""
    me = Owner.current()
    remove_stale_runtime_dirs(me)
    path = tempfile.mkdtemp(prefix=PREFIX)
    partial = os.path.join(path, OWNER_FILE + ".partial")
    with open(partial, "w") as f:
        json.dump(me.to_json(), f)
    os.replace(partial, os.path.join(path, OWNER_FILE))  # whole or absent: a reader never sees half an owner
    return path


def remove_stale_runtime_dirs(judge: Owner, parent: str | None = None) -> list[str]:
    """Remove the runtime directories under ``parent`` (the temp dir) whose owner is surely dead; returns them."""
    removed = []
    for path in Path(parent or tempfile.gettempdir()).glob(PREFIX + "*"):
        try:
            if not path.is_dir() or path.is_symlink() or path.stat().st_uid != os.getuid():
                continue
            owner = Owner.from_json(json.loads((path / OWNER_FILE).read_text()))
        except (OSError, ValueError):
            continue
        if owner is not None and owner.dead_for(judge):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(str(path))
    if removed:
        log.info("removed %d runtime directories of dead kernels", len(removed))
    return removed


__all__ = ["OWNER_FILE", "PREFIX", "private_socket_dir", "remove_stale_runtime_dirs"]
