"""Batched Frechet cell filter: the degrees of freedom, forces and convergence measure of ASE's
``FrechetCellFilter`` for many systems at once.

Per system, with the original cell ``C0`` (rows = lattice vectors) and the deformation gradient ``F``:

- cell ``C = C0 F^T``, positions ``r = x F^T`` (``x`` = positions in the undeformed cell);
- cell degrees of freedom ``c = exp_cell_factor * log(F)`` (so ``F = expm(c / exp_cell_factor)``);
- generalised forces: on ``x`` ``f F`` (``f`` = Cartesian forces), on ``c``
  ``dE/dlog(F)`` = ``L_exp(log F^T, W F^-T) / exp_cell_factor`` with the virial ``W = -V sigma``
  (``sigma`` in eV/A^3, ASE's sign) and ``L_exp(A, G)`` the Frechet derivative of the matrix exponential.

ASE sums ``<L_exp(log F, E_mn), W F^-T>`` over the nine unit directions ``E_mn``; that is the adjoint of the
Frechet derivative, which equals ``L_exp(log F^T, W F^-T)`` and is read off one 6x6 exponential,
``expm([[A, G], [0, A]]) = [[expm A, L_exp(A, G)], [0, expm A]]``. The convergence measure is ASE's: the
largest row norm over the 3 x (n_atoms + 3) generalised force array.

The options of ASE's filter, per system: ``scalar_pressure`` p adds ``-V p I`` to the virial (the optimiser then
minimises the enthalpy ``E + pV``), ``hydrostatic_strain`` replaces the virial by ``diag(tr W / 3)``, and the strain
``mask`` (3x3) zeroes virial components; as in ASE the cell then follows ``F_eff = I + (F - I) * mask^T`` and the
degrees of freedom are re-read as ``exp_cell_factor * logm(F_eff)`` after every step (:func:`project_masked`).
Non-periodic directions of a slab or wire are always masked (:func:`strain_mask`), so the cell never eats the vacuum.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from ase.stress import voigt_6_to_full_3x3_stress

from dpa4_core.dynamics.runner import BatchSetupError


def parse_mask(mask) -> np.ndarray:
    """ASE's ``FrechetCellFilter(mask=...)``: None (all), 6 Voigt or 3x3 flags -> a ``[3, 3]`` float array."""
    if mask is None:
        return np.ones((3, 3))
    array = np.asarray(mask)
    if array.shape == (6,):
        array = voigt_6_to_full_3x3_stress(array)
    if array.shape != (3, 3) or not np.isin(array.astype(float), (0.0, 1.0)).all():
        raise BatchSetupError(f"mask must be 6 Voigt or 3x3 flags (0/1, True/False) as in ASE, got {mask!r}")
    return array.astype(float)


@dataclass(frozen=True)
class CellOptions:
    """ASE's ``FrechetCellFilter`` options and ``FixSymmetry`` for one relaxation call (checked; the mask is
    stored as its ``[3, 3]`` float form). Units: ``scalar_pressure`` eV/A^3, ``symprec`` A."""

    relax_cell: bool = True
    exp_cell_factor: float | None = None
    mask: Any = None
    hydrostatic_strain: bool = False
    scalar_pressure: float = 0.0
    fix_symmetry: bool = False
    symprec: float = 0.01

    def __post_init__(self) -> None:
        if self.exp_cell_factor is not None and not (self.exp_cell_factor > 0):
            raise BatchSetupError(f"exp_cell_factor must be > 0, got {self.exp_cell_factor!r}")
        if not (np.isfinite(self.scalar_pressure) and self.symprec > 0):
            raise BatchSetupError(f"scalar_pressure must be finite (eV/A^3) and symprec > 0 A, got "
                                  f"{self.scalar_pressure!r}, {self.symprec!r}")
        object.__setattr__(self, "mask", parse_mask(self.mask))


def strain_mask(mask: np.ndarray, pbc) -> np.ndarray:
    """The user's ``[3, 3]`` mask restricted to periodic directions: component (i, j) relaxes only when both i and j
    are periodic (a slab with pbc (T, T, F) keeps its vacuum height and its out-of-plane shear)."""
    periodic = np.asarray(pbc, dtype=bool)
    return mask * np.outer(periodic, periodic)


def frechet_exp(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Frechet derivative of ``expm`` at ``a`` in direction ``g`` (both ``[F, 3, 3]``), via a block exponential."""
    n = a.shape[-1]
    block = torch.zeros(*a.shape[:-2], 2 * n, 2 * n, dtype=a.dtype, device=a.device)
    block[..., :n, :n] = a
    block[..., n:, n:] = a
    block[..., :n, n:] = g
    return torch.linalg.matrix_exp(block)[..., :n, n:]


def deformation(cell_dof: torch.Tensor, exp_cell_factor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log F, F)`` from the cell degrees of freedom ``[F, 3, 3]`` and the factor ``[F]``."""
    log_f = cell_dof / exp_cell_factor[:, None, None]
    return log_f, torch.linalg.matrix_exp(log_f)


def apply_deformation(
    x: torch.Tensor, orig_cell: torch.Tensor, deform: torch.Tensor, frame: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cartesian positions ``x F^T [n_atoms, 3]`` and cell ``C0 F^T [F, 3, 3]``."""
    ft = deform.transpose(1, 2)
    positions = torch.einsum("ni,nij->nj", x, ft[frame])
    return positions, torch.bmm(orig_cell, ft)


def filter_forces(
    forces: torch.Tensor,
    stress: torch.Tensor,
    volume: torch.Tensor,
    log_f: torch.Tensor,
    deform: torch.Tensor,
    exp_cell_factor: torch.Tensor,
    cell_mask: torch.Tensor,
    frame: torch.Tensor,
    mask: torch.Tensor | None = None,
    hydrostatic_strain: bool = False,
    scalar_pressure: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised forces of the filter (ASE's ``FrechetCellFilter.get_forces``, options as in the module docstring).

    Args:
        forces: Cartesian forces ``[n_atoms, 3]`` (eV/A).
        stress: ``[F, 3, 3]`` (eV/A^3, ASE sign).
        volume: ``[F]`` (A^3).
        log_f, deform: ``log F`` and ``F`` ``[F, 3, 3]``.
        exp_cell_factor: ``[F]``.
        cell_mask: ``[F]`` 1.0 where the cell relaxes, 0.0 where it is fixed (then ``F = I`` and the cell
            force is zero, which is ASE's plain-atoms optimisation).
        frame: ``[n_atoms]`` system index.
        mask: ``[F, 3, 3]`` strain mask (None: all components). hydrostatic_strain, scalar_pressure (eV/A^3): ASE's.

    Returns:
        ``(atom_forces [n_atoms, 3], cell_forces [F, 3, 3])``.
    """
    atom_forces = torch.einsum("ni,nij->nj", forces, deform[frame])
    eye = torch.eye(3, dtype=stress.dtype, device=stress.device)
    virial = -volume[:, None, None] * (stress + scalar_pressure * eye)
    if hydrostatic_strain:
        virial = virial.diagonal(dim1=1, dim2=2).mean(dim=1)[:, None, None] * eye
    if mask is not None:
        virial = virial * mask
    ucf_grad = torch.linalg.solve(deform, virial.transpose(1, 2)).transpose(1, 2)  # W F^-T
    cell_forces = frechet_exp(log_f.transpose(1, 2), ucf_grad) / exp_cell_factor[:, None, None]
    return atom_forces, cell_forces * cell_mask[:, None, None]


def max_force(atom_forces: torch.Tensor, cell_forces: torch.Tensor, frame: torch.Tensor) -> torch.Tensor:
    """ASE's convergence measure per system ``[F]``: the largest row norm of atom and cell forces."""
    atom_norm = atom_forces.norm(dim=1)
    out = cell_forces.norm(dim=2).amax(dim=1)
    return out.scatter_reduce(0, frame, atom_norm, reduce="amax", include_self=True)


def project_masked(cell_dof: torch.Tensor, exp_cell_factor: torch.Tensor, mask: torch.Tensor,
                   cell_mask: torch.Tensor) -> torch.Tensor:
    """After a step: the degrees of freedom ASE re-reads from a masked cell, ``exp_cell_factor * logm(F_eff)`` with
    ``F_eff = I + (expm(c / exp_cell_factor) - I) * mask^T``, for the systems whose mask is partial."""
    partial = (cell_mask > 0) & ~(mask == 1).flatten(1).all(dim=1)
    if not bool(partial.any()):
        return cell_dof
    from scipy.linalg import logm  # ASE's matrix log; torch has none

    out = cell_dof.clone()
    eye = torch.eye(3, dtype=cell_dof.dtype, device=cell_dof.device)
    for s in torch.nonzero(partial).flatten().tolist():
        factor = exp_cell_factor[s]
        deform = eye + (torch.linalg.matrix_exp(cell_dof[s] / factor) - eye) * mask[s].T
        log_f = np.real(logm(deform.cpu().numpy()))
        out[s] = factor * torch.as_tensor(log_f, dtype=cell_dof.dtype, device=cell_dof.device)
    return out
