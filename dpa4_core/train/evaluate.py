"""``evaluate(checkpoint_or_model, data)``: energy, force and stress errors of a model on labelled data."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from dpa4_core.io.checkpoint import load_checkpoint
from dpa4_core.train.dataset import FrameDataset, load_dataset
from dpa4_core.train.trainer import run_validation

logger = logging.getLogger(__name__)


def evaluate(checkpoint_or_model, data, batch_size: int = 8, dtype: str | torch.dtype | None = None,
             **read_kwargs) -> dict:
    """Errors of a model on labelled frames.

    Args:
        checkpoint_or_model: a checkpoint path or a loaded model.
        data: anything :func:`dpa4_core.train.dataset.load_dataset` reads (path(s), objects, a FrameDataset).
        batch_size: frames per forward pass.
        dtype: evaluate in this dtype (default: the checkpoint's).

    Returns:
        ``{"energy_mae_mev_per_atom", "force_mae_mev_per_a", "stress_mae_gpa" (None without stress labels),
        "n_frames", "n_atoms", "n_stress_frames", "n_dropped"}``; frames with atoms closer than the model's
        ``r_in`` are dropped (counted in ``n_dropped``, as in training).
    """
    model = checkpoint_or_model
    if isinstance(model, str | Path):
        model = load_checkpoint(model)
    if dtype is not None:
        model = model.to(getattr(torch, dtype) if isinstance(dtype, str) else dtype)
    r_min = float(getattr(model.config, "r_in", 0.0))
    dataset = data if isinstance(data, FrameDataset) else load_dataset(data, r_min=r_min, **read_kwargs)
    metrics = run_validation(model, dataset, batch_size).result()
    metrics["n_dropped"] = dataset.n_dropped
    return metrics
