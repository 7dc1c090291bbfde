"""A cell's iopub messages reduced to what a reader of the notebook sees, in a form two kernels can agree on.

What is kept: the error (name and message, not the traceback, whose frames name different files on the two
sides), stdout and stderr text, each display in its final state (``update_display_data`` applied,
``clear_output`` honoured) and the trailing ``Out[n]`` value. What is blanked: memory addresses, the files
IPython names a cell after, PNG bytes (compared by their pixel size), and mini_magic's own run panel, which only
the ``%%thither`` side shows and which is the product's chrome, not the cell's output.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import struct
from dataclasses import asdict, dataclass, field
from typing import Any

from .kernel_pair import RawCell

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
_PANEL_LINE = re.compile(r"^\S+ (queued|running|done|failed|cancelled|interrupted)\b.* · run [0-9a-f]{6,}")
_REWRITES = [
    (re.compile(r"0x[0-9a-fA-F]{6,}"), "0x…"),
    (re.compile(r"/tmp/ipykernel_\d+/\d+\.py"), "<cell>"),
    (re.compile(r"<ipython-input-\d+-[0-9a-f]+>"), "<cell>"),
    # the %%thither line the harness adds shifts the cell's lines by one: a line of the cell is the plain line + 1
    (re.compile(r"<thither In\[\d+\]>(:|, line )(\d+)"), lambda m: f"<cell>{m[1]}{int(m[2]) - 1}"),
    (re.compile(r"<thither In\[\d+\]>"), "<cell>"),
    (re.compile(r"\((?:\d+\.py|<unknown>), line"), "(<cell>, line"),  # a SyntaxError's file; its line is kept
    (re.compile(r"\bT_[0-9a-f]{5}\b"), "T_…"),  # pandas Styler's random table id
    (re.compile(r"\x1b\[[0-9;]*m"), ""),
]
MAX_TEXT = 400


@dataclass
class CellOutputs:
    error: list[str] | None = None
    stdout: str = ""
    stderr: str = ""
    displays: list[dict[str, str]] = field(default_factory=list)
    result: dict[str, str] | None = None
    timed_out: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def normalize_text(text: str) -> str:
    for pattern, replacement in _REWRITES:
        text = pattern.sub(replacement, text)
    return text


def summarize(raw: RawCell) -> CellOutputs:
    out = CellOutputs(timed_out=raw.timed_out)
    displays: list[tuple[str | None, dict[str, Any]]] = []
    for msg in raw.outputs:
        kind = msg["output_type"]
        if kind == "stream":
            if msg["name"] == "stdout":
                out.stdout += msg["text"]
            else:
                out.stderr += msg["text"]
        elif kind == "error":
            out.error = [msg["ename"], normalize_text(msg["evalue"])]
        elif kind == "execute_result":
            out.result = _bundle(msg["data"])
        elif kind == "display_data":
            if not _is_run_panel(msg["data"]):
                displays.append(((msg.get("transient") or {}).get("display_id"), msg["data"]))
        elif kind == "update_display_data":
            target = (msg.get("transient") or {}).get("display_id")
            displays = [(i, msg["data"] if i == target else data) for i, data in displays]
        elif kind == "clear_output":
            out.stdout, out.stderr, displays = "", "", []
    out.stdout, out.stderr = normalize_text(out.stdout), normalize_text(out.stderr)
    out.displays = [_bundle(data) for _, data in displays]
    return out


def _is_run_panel(data: dict[str, Any]) -> bool:
    return WIDGET_VIEW in data and bool(_PANEL_LINE.match(data.get("text/plain", "")))


def _bundle(data: dict[str, Any]) -> dict[str, str]:
    return {mime: _mime_value(mime, value) for mime, value in sorted(data.items())}


def _mime_value(mime: str, value: Any) -> str:
    if mime == "image/png":
        return _png_size(value)
    if mime == WIDGET_VIEW:
        return "widget"
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    text = normalize_text(text)
    if mime == "text/plain" or len(text) <= MAX_TEXT:
        return text
    return f"{text[:80]}… sha1:{hashlib.sha1(text.encode()).hexdigest()[:12]} len:{len(text)}"


def _png_size(b64: str) -> str:
    """``png WxH``: the same figure drawn by two processes differs in bytes (metadata, font hinting), not in size."""
    try:
        head = base64.b64decode(b64[:48])
        width, height = struct.unpack(">II", head[16:24])
        return f"png {width}x{height}"
    except (ValueError, struct.error):
        return "png (unreadable)"
