"""``evaluate(checkpoint_or_model, data)``: energy, force and stress errors of a model on labelled data (MAE; for
RMSE, per-subset and per-element tables and per-frame predictions see :mod:`dpa4_core.train.evaluate_report`)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from dpa4_core.data.labels import check_energy_scale
from dpa4_core.io.checkpoint import load_checkpoint
from dpa4_core.model.domain import check_elements
from dpa4_core.train.dataset import FrameDataset, load_dataset
from dpa4_core.train.trainer import run_validation

logger = logging.getLogger(__name__)


def evaluate(checkpoint_or_model, data, batch_size: int = 8, dtype: str | torch.dtype | None = None,
             allow_untrained_elements: bool = False, **read_kwargs) -> dict:
    """Errors of a model on labelled frames.

    Args:
        checkpoint_or_model: a checkpoint path or a loaded model.
        data: anything :func:`dpa4_core.train.dataset.load_dataset` reads (path(s), objects, a FrameDataset).
        batch_size: frames per forward pass.
        dtype: evaluate in this dtype (default: the checkpoint's).
        allow_untrained_elements: score frames with elements outside the model's training set (with a warning)
            instead of refusing them; errors there measure extrapolation, not the model.

    Returns:
        ``{"energy_mae_mev_per_atom", "force_mae_mev_per_a", "stress_mae_gpa" (None without stress labels),
        "n_frames", "n_atoms", "n_stress_frames", "n_dropped"}``; frames with atoms closer than the model's
        ``r_in`` are dropped (counted in ``n_dropped``, as in training).

    Raises:
        UntrainedElementError: the data holds elements the model was not trained on.
        DataError: labels in the wrong units (:func:`dpa4_core.data.labels.check_units`), named.
    """
    model = load_model(checkpoint_or_model, dtype)
    r_min = float(getattr(model.config, "r_in", 0.0))
    dataset = data if isinstance(data, FrameDataset) else load_dataset(data, r_min=r_min, **read_kwargs)
    check_elements(model, dataset.elements, allow_untrained_elements, where=f"evaluation data {_name(data)}")
    accumulator = run_validation(model, dataset, batch_size, keep=True)
    # The model's own energies are the reference that shows Hartree or per-atom labels: refuse before reporting.
    records = accumulator.records
    if records["e_ref"]:
        check_energy_scale(torch.cat(records["e_ref"]).numpy(), torch.cat(records["e_pred"]).numpy(),
                           dataset.n_atoms, where=f"evaluation data {_name(data)}")
    metrics = accumulator.result()
    metrics["n_dropped"] = dataset.n_dropped
    return metrics


def load_model(checkpoint_or_model, dtype: str | torch.dtype | None = None) -> torch.nn.Module:
    """The model itself or the one in a checkpoint, cast to ``dtype`` when given."""
    model = checkpoint_or_model
    if isinstance(model, str | Path):
        model = load_checkpoint(model)
    if dtype is not None:
        model = model.to(getattr(torch, dtype) if isinstance(dtype, str) else dtype)
    return model


def _name(data) -> str:
    if isinstance(data, str | Path):
        return str(data)
    if isinstance(data, list | tuple) and data and all(isinstance(d, str | Path) for d in data):
        return ", ".join(str(d) for d in data)
    return f"({type(data).__name__})"
