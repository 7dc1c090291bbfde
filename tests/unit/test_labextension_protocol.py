"""The lab extension's copy of the run states (labextension/src/protocol.ts) matches the kernel's RunState."""

from __future__ import annotations

import re
from pathlib import Path

from mini_magic.runs import RunState

PROTOCOL_TS = Path(__file__).resolve().parents[2] / "labextension" / "src" / "protocol.ts"


def test_the_extension_lists_every_run_state_once_in_the_kernel_s_spelling() -> None:
    lists = re.findall(r"export const RUN_STATES = \[([^\]]*)\] as const;", PROTOCOL_TS.read_text())
    assert len(lists) == 1, "protocol.ts should define RUN_STATES once, as a const array"
    assert re.findall(r"'([a-z]+)'", lists[0]) == [s.value for s in RunState]
    assert PROTOCOL_TS.read_text().count("'cancelled'") == 1  # the type derives from the list, no second copy
