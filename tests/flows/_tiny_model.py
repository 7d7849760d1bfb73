"""A seeded, untrained tiny-preset DPA4 checkpoint for plumbing tests (not for accuracy)."""

from __future__ import annotations

from pathlib import Path


def save_tiny_checkpoint(path: Path, dtype: str = "float64", elements=(41, 42, 73, 74)) -> Path:
    import torch

    from dpa4_core.config import DPA4Config
    from dpa4_core.model.checkpoint import save_checkpoint
    from dpa4_core.model.energy import DPA4

    torch.manual_seed(0)
    model = DPA4(DPA4Config.preset("tiny")).to(getattr(torch, dtype))
    # torch.__version__ is a TorchVersion, which torch.load(weights_only=True) refuses if a checkpoint stores
    # it; store a plain str (a no-op once dpa4_core.model.checkpoint writes str(torch.__version__)).
    original = torch.__version__
    torch.__version__ = str(original)
    try:
        return save_checkpoint(model, path, elements=list(elements))
    finally:
        torch.__version__ = original
