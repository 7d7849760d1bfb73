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
"""

from __future__ import annotations

import torch


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
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised forces of the filter.

    Args:
        forces: Cartesian forces ``[n_atoms, 3]`` (eV/A).
        stress: ``[F, 3, 3]`` (eV/A^3, ASE sign).
        volume: ``[F]`` (A^3).
        log_f, deform: ``log F`` and ``F`` ``[F, 3, 3]``.
        exp_cell_factor: ``[F]``.
        cell_mask: ``[F]`` 1.0 where the cell relaxes, 0.0 where it is fixed (then ``F = I`` and the cell
            force is zero, which is ASE's plain-atoms optimisation).
        frame: ``[n_atoms]`` system index.

    Returns:
        ``(atom_forces [n_atoms, 3], cell_forces [F, 3, 3])``.
    """
    atom_forces = torch.einsum("ni,nij->nj", forces, deform[frame])
    virial = -volume[:, None, None] * stress
    ucf_grad = torch.linalg.solve(deform, virial.transpose(1, 2)).transpose(1, 2)  # W F^-T
    cell_forces = frechet_exp(log_f.transpose(1, 2), ucf_grad) / exp_cell_factor[:, None, None]
    return atom_forces, cell_forces * cell_mask[:, None, None]


def max_force(atom_forces: torch.Tensor, cell_forces: torch.Tensor, frame: torch.Tensor) -> torch.Tensor:
    """ASE's convergence measure per system ``[F]``: the largest row norm of atom and cell forces."""
    atom_norm = atom_forces.norm(dim=1)
    out = cell_forces.norm(dim=2).amax(dim=1)
    return out.scatter_reduce(0, frame, atom_norm, reduce="amax", include_self=True)
