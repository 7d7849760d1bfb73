"""Settings of dpa4_flows, read from the environment (prefix ``DPA4_``) by pydantic-settings.

Example: ``DPA4_MODEL=/abs/path/model.pt DPA4_DEVICE=cuda python workflows/screen_candidates.py``.
Nothing here is read at import time of the jobs: makers call :func:`get_settings` when they are built,
so a test or a script can change the environment first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from dpa4_core.pretrained import STARTER


class DPA4FlowSettings(BaseSettings):
    """Defaults for DPA4 jobs: which checkpoint, on which device, in which precision, how many per chunk."""

    model_config = SettingsConfigDict(env_prefix="DPA4_", extra="ignore")

    model: Path = Field(STARTER, description="Default DPA4 checkpoint file (absolute path after validation); "
                        "the shipped starter model unless DPA4_MODEL is set.")
    device: str = Field("cpu", description="torch device for inference, e.g. 'cpu' or 'cuda'.")
    dtype: Literal["float32", "float64"] = Field("float32", description="Floating-point precision of inference.")
    chunk_size: int = Field(16, ge=1, description="Structures per batched-relaxation job in screening flows.")
    fmax: float = Field(0.05, gt=0, description="Force convergence criterion of relaxations, eV/A.")
    max_steps: int = Field(300, ge=0, description="Maximum optimiser steps per relaxation.")

    @field_validator("model")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        # Jobs run in other working directories (FireWorks, run_locally(create_folders=True)): never relative.
        # A shipped model's name (`dpa4 models`) becomes its file.
        from dpa4_core.pretrained import UnknownModelError, resolve_checkpoint

        try:
            value = resolve_checkpoint(value)
        except UnknownModelError:
            pass  # a relative path that does not exist (yet): the loader names it
        return Path(value).expanduser().resolve()


def get_settings(**overrides) -> DPA4FlowSettings:
    """Current settings from the environment, with keyword overrides (e.g. ``get_settings(device="cuda")``)."""
    return DPA4FlowSettings(**overrides)
