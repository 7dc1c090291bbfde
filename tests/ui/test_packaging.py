"""The wheel carries the prebuilt lab extension, and an installed mini_magic is an enabled labextension: what
`pip install` alone must give a user (no JupyterLab rebuild)."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHARE = "mini_magic-0.1.0.data/data/share/jupyter/labextensions/mini-magic/"


def test_the_wheel_ships_the_built_extension(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
                   check=True, timeout=600)
    (wheel,) = tmp_path.glob("mini_magic-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {SHARE + "package.json", SHARE + "install.json", SHARE + "static/style.js"} <= names
    assert any(n.startswith(SHARE + "static/remoteEntry.") for n in names)
    built = json.loads(zipfile.ZipFile(wheel).read(SHARE + "package.json"))
    assert built["name"] == "mini-magic" and built["jupyterlab"]["_build"]["load"].startswith("static/remoteEntry.")


def test_the_installed_extension_is_enabled():
    listing = subprocess.run([sys.executable, "-m", "jupyter", "labextension", "list"], capture_output=True,
                             text=True, timeout=120)
    line = next((ln for ln in (listing.stdout + listing.stderr).splitlines() if "mini-magic" in ln), "")
    assert "enabled" in line and "OK" in line and "(python, mini_magic)" in line, listing.stdout + listing.stderr
