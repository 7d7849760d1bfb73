"""A seeded, untrained tiny-preset DPA4 checkpoint for plumbing tests (not for accuracy)."""

from __future__ import annotations

from pathlib import Path


def save_tiny_checkpoint(path: Path, dtype: str = "float64", elements=(41, 42, 73, 74)) -> Path:
    """Write a tiny DPA4 (seed 0, ``dtype``) that declares ``elements`` (atomic numbers); returns the path."""
    import torch

    from dpa4_core.config import DPA4Config
    from dpa4_core.io.checkpoint import save_checkpoint
    from dpa4_core.model.energy import DPA4

    torch.manual_seed(0)
    model = DPA4(DPA4Config.preset("tiny")).to(getattr(torch, dtype))
    return save_checkpoint(model, path, elements=list(elements))
