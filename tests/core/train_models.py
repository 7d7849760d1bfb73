"""Model for the training tests: the real tiny DPA4 preset, seeded, fp32 (a few training steps take seconds)."""

from __future__ import annotations

import torch

from dpa4_core import DPA4, DPA4Config


def small_model(seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """A freshly initialised tiny DPA4 (same weights for the same seed)."""
    torch.manual_seed(seed)
    return DPA4(DPA4Config.preset("tiny")).to(dtype)
