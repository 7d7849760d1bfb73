"""Run any model with the DPA4 call contract on ASE structures and get float64 NumPy results back.

A "model" here is anything with ``model.config.cutoff`` and
``model(batch, compute_forces=..., compute_stress=...) -> {"energy" [F], "atom_energy" [N], "forces" [N, 3],
"stress" [F, 3, 3], "virial" [F, 3, 3]}`` (see DEVELOPING.md). Results come back in eV, eV/A and eV/A^3 (ASE stress
sign: ``sigma = (1/V) dE/d(strain)``). Not the metrics ``dpa4_core.train.evaluate``: this only predicts.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from ase import Atoms

from dpa4_core.data.batch import AtomsBatch


def model_dtype(model: torch.nn.Module) -> torch.dtype:
    """Floating dtype of the model's parameters (float64 if it has none)."""
    for tensor in list(model.parameters()) + list(model.buffers()):
        if tensor.is_floating_point():
            return tensor.dtype
    return torch.float64


def model_device(model: torch.nn.Module) -> torch.device:
    for tensor in list(model.parameters()) + list(model.buffers()):
        return tensor.device
    return torch.device("cpu")


def predict(
    model,
    structures: Atoms | Sequence[Atoms],
    compute_forces: bool = True,
    compute_stress: bool = True,
    cutoff: float | None = None,
    chunk: int | None = None,
    validate: bool = True,
) -> dict[str, np.ndarray]:
    """Run ``model`` on one or many structures in the model's dtype.

    Args:
        structures: one ``Atoms`` or a list (frames of any size, periodic or not).
        cutoff: neighbour-list cutoff in A, default ``model.config.cutoff`` (a larger one must not matter).
        chunk: run at most this many frames per model call (bounds memory of finite differences).
        validate: run ``AtomsBatch``'s input checks on every frame (its coincident-atom search costs ~20 ms
            per frame, so the scan helpers validate only the undisplaced structure).

    Returns:
        ``energy [F]``, ``atom_energy [N]``, ``forces [N, 3]`` (if computed), ``stress``/``virial [F, 3, 3]``
        (if computed), ``frame [N]``, all float64 NumPy arrays (``frame`` int64).
    """
    if isinstance(structures, Atoms):
        structures = [structures]
    structures = list(structures)
    chunk = chunk or len(structures)
    parts = []
    for start in range(0, len(structures), chunk):
        batch = AtomsBatch.from_atoms(
            structures[start : start + chunk],
            cutoff=model.config.cutoff if cutoff is None else cutoff,
            dtype=model_dtype(model),
            device=model_device(model),
            validate=validate,
        )
        out = model(batch, compute_forces=compute_forces, compute_stress=compute_stress)
        part = {k: v.detach().cpu().double().numpy() for k, v in out.items() if isinstance(v, torch.Tensor)}
        part["frame"] = batch.frame.cpu().numpy() + start
        parts.append(part)
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
