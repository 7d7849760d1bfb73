"""What a ``run_resumable`` workdir holds: the persisted flow (``flow.json``) and the state database.

The runner writes the flow here once (its uuids are then fixed); readers of results
(:mod:`dpa4_flows.execution.results`) load it back to name the flow, without the runner.
A run file that is missing or unreadable raises :class:`RunFileError`, whose one-line
message names the file and says what to do.
"""

from __future__ import annotations

import json
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
#: Written before the first dynamic job (replace, detour, addition) is recorded: those jobs live only in
#: the state file, so a lost state file can then not be rebuilt from ``flow.json`` and the store.
DYNAMIC_FILE = "dynamic-jobs"


class RunFileError(ValueError):
    """A run file (persisted flow, state database, run record) is missing, empty or unreadable."""


def flow_path(workdir: str | os.PathLike) -> Path:
    """Absolute path of the persisted flow of ``workdir`` (``~`` expanded); it may not exist."""
    return Path(workdir).expanduser().resolve() / FLOW_FILE


def save_flow(workdir: str | os.PathLike, flow: Flow) -> None:
    """Persist ``flow`` in ``workdir`` atomically (a kill leaves the old file or the new one)."""
    atomic_write(flow_path(workdir), flow.to_json())


def load_flow(workdir: str | os.PathLike) -> Flow:
    """The flow persisted in ``workdir`` by ``run_resumable`` (same uuids).

    Raises:
        RunFileError: ``workdir`` holds no persisted flow, or it cannot be read back.
    """
    from jobflow import Flow
    from monty.json import MontyDecoder

    path = flow_path(workdir)
    if not path.is_file():
        raise RunFileError(f"{path} does not exist: {path.parent} is not a run_resumable workdir")
    try:
        flow = MontyDecoder().decode(path.read_text())
    except (ValueError, TypeError, KeyError, AttributeError, ImportError) as err:  # broken JSON, moved code
        flow = err
    if not isinstance(flow, Flow):
        why = f"{type(flow).__name__}: {flow}" if isinstance(flow, Exception) else f"a {type(flow).__name__}"
        raise RunFileError(f"{path} is not a readable persisted flow ({str(why)[:200]}); restore it, or start "
                           f"over in a new workdir (the outputs already in the store are kept)")
    return flow


def mark_dynamic(workdir: Path) -> None:
    """Record (once) that the flow of ``workdir`` made dynamic jobs: see :data:`DYNAMIC_FILE`."""
    path = workdir / DYNAMIC_FILE
    if not path.exists():
        atomic_write(path, json.dumps({"dynamic_jobs": True}))
