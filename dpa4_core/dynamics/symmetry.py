"""``fix_symmetry`` for the batched relaxation: ASE's ``FixSymmetry`` constraint for many systems at once.

Per periodic system, as ``ase.constraints.FixSymmetry(atoms, symprec)`` does at construction: the structure is
refined to its spglib space group (``ase.spacegroup.symmetrize.refine_symmetry``, on the engine's copy: the
caller's input is untouched) and the symmetry operations with their atom maps are read
(``prep_symmetry``). Then, at every step, the forces are symmetrised as rank-1 tensors and the stress as a
rank-2 tensor in the current cell (ASE's ``adjust_forces`` / ``adjust_stress``), so the optimiser's steps keep
the space group; ASE's ``adjust_positions`` / ``adjust_cell`` then only remove round-off and are not repeated.
Non-periodic systems (molecules) have no space group for spglib and relax unconstrained, with a warning.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from ase import Atoms

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SymmetryOps:
    """One system's operations: ``rotations [K, 3, 3]`` (fractional, integer) and ``atom_map [K, n_atoms]``
    (operation k sends atom i to atom ``atom_map[k, i]``)."""

    rotations: np.ndarray
    atom_map: np.ndarray


def refine_and_ops(atoms: Atoms, symprec: float) -> SymmetryOps:
    """Refine ``atoms`` in place (ASE's FixSymmetry does the same) and return its operations; the identity only
    for a non-periodic system."""
    if not atoms.pbc.all():
        logger.warning("fix_symmetry: %s is not periodic (no space group); relaxing it without the constraint",
                       atoms.get_chemical_formula())
        return SymmetryOps(np.eye(3, dtype=int)[None], np.arange(len(atoms))[None])
    from ase.spacegroup.symmetrize import prep_symmetry, refine_symmetry

    refine_symmetry(atoms, symprec)
    rotations, _, atom_map = prep_symmetry(atoms, symprec)
    return SymmetryOps(np.asarray(rotations), np.asarray(atom_map, dtype=np.int64))


@dataclass(frozen=True)
class BatchSymmetry:
    """The operations of every system in flight, flattened: ``rot [K, 3, 3]`` with ``op_system [K]`` and
    ``weight [K]`` (1 / number of operations of its system); per (operation, atom) pair ``pair_op [M]``,
    ``pair_src [M]`` and ``pair_dst [M]`` (global atom indices)."""

    rot: torch.Tensor
    op_system: torch.Tensor
    weight: torch.Tensor
    pair_op: torch.Tensor
    pair_src: torch.Tensor
    pair_dst: torch.Tensor

    @staticmethod
    def build(ops: list[SymmetryOps], starts: np.ndarray, dtype, device) -> BatchSymmetry:
        """From the operations of the systems in batch order; ``starts [F + 1]`` their first atoms."""
        rot, op_system, weight, pair_op, pair_src, pair_dst = [], [], [], [], [], []
        n_ops = 0
        for s, one in enumerate(ops):
            k, n = one.atom_map.shape
            rot.append(one.rotations)
            op_system.append(np.full(k, s))
            weight.append(np.full(k, 1.0 / k))
            pair_op.append(np.repeat(np.arange(n_ops, n_ops + k), n))
            pair_src.append(np.tile(np.arange(n), k) + starts[s])
            pair_dst.append(one.atom_map.reshape(-1) + starts[s])
            n_ops += k

        def cat(parts, kind):
            return torch.as_tensor(np.concatenate(parts), dtype=kind, device=device)

        return BatchSymmetry(cat(rot, dtype), cat(op_system, torch.long), cat(weight, dtype),
                             cat(pair_op, torch.long), cat(pair_src, torch.long), cat(pair_dst, torch.long))

    def forces(self, forces: torch.Tensor, cell: torch.Tensor, frame: torch.Tensor) -> torch.Tensor:
        """Rank-1 symmetrisation (ASE ``symmetrize_rank1``) of ``forces [N, 3]`` in the cells ``[F, 3, 3]``."""
        inverse = torch.linalg.inv(cell)
        scaled = torch.einsum("ni,nij->nj", forces, inverse[frame])
        rotated = torch.einsum("mij,mj->mi", self.rot[self.pair_op], scaled[self.pair_src])
        weight = self.weight[self.pair_op][:, None]
        out = torch.zeros_like(scaled).index_add(0, self.pair_dst, rotated * weight)
        return torch.einsum("ni,nij->nj", out, cell[frame])

    def stress(self, stress: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
        """Rank-2 symmetrisation (ASE ``symmetrize_rank2``) of ``stress [F, 3, 3]``."""
        scaled = cell @ stress @ cell.transpose(1, 2)
        rotated = self.rot.transpose(1, 2) @ scaled[self.op_system] @ self.rot
        out = torch.zeros_like(scaled).index_add(0, self.op_system, rotated * self.weight[:, None, None])
        inverse = torch.linalg.inv(cell)
        return inverse @ out @ inverse.transpose(1, 2)
