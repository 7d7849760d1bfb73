"""Composition energy bias: least-squares ``sum_t n_{f,t} b_t ~ E_f`` over training frames (spec section 5)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

N_ELEMENTS = 119


class BiasFitError(ValueError):
    """Inputs to :func:`fit_energy_bias` that cannot define a bias (empty, mismatched, non-finite, bad Z)."""


def fit_energy_bias(numbers_per_frame: Sequence, energies: Sequence | np.ndarray | torch.Tensor) -> torch.Tensor:
    """Per-element reference energies ``b [119]`` (eV, float64) minimising ``sum_f (sum_t n_{f,t} b_t - E_f)^2``.

    Elements that never occur get 0. When the composition matrix is rank deficient (e.g. every frame has the
    same stoichiometry) the minimum-norm solution is returned, which still reproduces the fitted energies.

    Args:
        numbers_per_frame: F arrays/tensors of atomic numbers (1..118), one per frame.
        energies: ``[F]`` total energies in eV.
    """
    energies = np.asarray(torch.as_tensor(energies, dtype=torch.float64).cpu(), dtype=np.float64).reshape(-1)
    if len(numbers_per_frame) == 0:
        raise BiasFitError("fit_energy_bias needs at least one frame, got 0")
    if len(numbers_per_frame) != len(energies):
        raise BiasFitError(f"got {len(numbers_per_frame)} frames but {len(energies)} energies")
    if not np.isfinite(energies).all():
        raise BiasFitError("energies contain NaN or infinite values")
    counts = np.zeros((len(energies), N_ELEMENTS))
    for f, numbers in enumerate(numbers_per_frame):
        z = np.asarray(torch.as_tensor(numbers).cpu()).astype(np.int64).reshape(-1)
        if z.size == 0 or z.min() < 1 or z.max() >= N_ELEMENTS:
            raise BiasFitError(f"frame {f}: atomic numbers must be in 1..{N_ELEMENTS - 1}, got {z.tolist()[:10]}")
        counts[f] = np.bincount(z, minlength=N_ELEMENTS)
    present = counts.sum(0) > 0
    solution, *_ = np.linalg.lstsq(counts[:, present], energies, rcond=None)
    bias = np.zeros(N_ELEMENTS)
    bias[present] = solution
    return torch.as_tensor(bias, dtype=torch.float64)
