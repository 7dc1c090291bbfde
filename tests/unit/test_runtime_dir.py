"""Runtime directories: each is marked with its kernel, and only those of kernels that are surely dead are removed."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

from mini_magic.backends.local.runtime_dir import OWNER_FILE, PREFIX, private_socket_dir, remove_stale_runtime_dirs
from mini_magic.owner import Owner, process_start


def dead_owner() -> Owner:
    """A process that really ran here and ended (its pid and start time were real)."""
    proc = subprocess.Popen(["sleep", "30"])
    owner = Owner(socket.gethostname(), proc.pid, process_start(proc.pid))
    proc.kill()
    proc.wait()
    return owner


def runtime_dir(parent: Path, name: str, owner: object | None) -> Path:
    path = parent / f"{PREFIX}{name}"
    path.mkdir()
    (path / "worker-1.log").write_text("log")
    if owner is not None:
        (path / OWNER_FILE).write_text(owner if isinstance(owner, str) else json.dumps(owner))
    return path


def test_only_directories_of_dead_owners_on_this_host_are_removed(tmp_path):
    me = Owner.current()
    dead = dead_owner()
    stale = runtime_dir(tmp_path, "dead", dead.to_json())
    kept = [
        runtime_dir(tmp_path, "live", me.to_json()),
        runtime_dir(tmp_path, "other-host", {**dead.to_json(), "host": "elsewhere"}),
        runtime_dir(tmp_path, "unmarked", None),
        runtime_dir(tmp_path, "malformed", "{not json"),
        runtime_dir(tmp_path, "half-written", ""),
        runtime_dir(tmp_path, "pid-zero", {**dead.to_json(), "pid": 0}),
    ]
    other = tmp_path / "not-ours"
    other.mkdir()
    (other / OWNER_FILE).write_text(json.dumps(dead.to_json()))

    assert remove_stale_runtime_dirs(me, str(tmp_path)) == [str(stale)]

    assert not stale.exists()
    assert all(path.exists() for path in kept) and other.exists()


def test_a_new_runtime_dir_is_private_marked_with_its_kernel_and_sweeps_dead_ones(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    stale = runtime_dir(tmp_path, "dead", dead_owner().to_json())

    path = Path(private_socket_dir())

    assert path.parent == tmp_path and path.name.startswith(PREFIX)
    assert stat.S_IMODE(path.stat().st_mode) == 0o700
    assert Owner.from_json(json.loads((path / OWNER_FILE).read_text())) == Owner.current()
    assert sorted(p.name for p in path.iterdir()) == [OWNER_FILE]
    assert not stale.exists()


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symlinks")
def test_a_symlink_named_like_a_runtime_dir_is_never_followed(tmp_path):
    target = tmp_path / "target"
    target.mkdir()
    (target / OWNER_FILE).write_text(json.dumps(dead_owner().to_json()))
    (tmp_path / f"{PREFIX}link").symlink_to(target)
    assert remove_stale_runtime_dirs(Owner.current(), str(tmp_path)) == []
    assert target.exists()
