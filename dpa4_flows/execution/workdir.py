"""What a ``run_resumable`` workdir holds: the persisted flow (``flow.json``) and the state database.

The runner writes the flow here once (its uuids are then fixed); readers of results
(:mod:`dpa4_flows.execution.results`) load it back to name the flow, without the runner.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from dpa4_core.io.files import atomic_write

if TYPE_CHECKING:
    from jobflow import Flow

#: The persisted flow, as jobflow JSON.
FLOW_FILE = "flow.json"
#: The runner's bookkeeping database (:class:`dpa4_flows.execution.state.ResumeState`).
STATE_FILE = "state.sqlite"


def flow_path(workdir: str | os.PathLike) -> Path:
    """Absolute path of the persisted flow of ``workdir`` (``~`` expanded); it may not exist."""
    return Path(workdir).expanduser().resolve() / FLOW_FILE


def save_flow(workdir: str | os.PathLike, flow: Flow) -> None:
    """Persist ``flow`` in ``workdir`` atomically (a kill leaves the old file or the new one)."""
    atomic_write(flow_path(workdir), flow.to_json())


def load_flow(workdir: str | os.PathLike) -> Flow:
    """The flow persisted in ``workdir`` by ``run_resumable`` (same uuids).

    Raises:
        FileNotFoundError: ``workdir`` holds no persisted flow.
    """
    from monty.json import MontyDecoder

    return MontyDecoder().decode(flow_path(workdir).read_text())
