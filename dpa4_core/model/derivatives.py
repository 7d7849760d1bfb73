"""Forces, virial and stress from one autograd pass with respect to the edge vectors (spec section 5).

With ``g_e = dE/dr_e`` and ``r_e = pos[src] - pos[dst] + shift @ cell``:
``F_k = sum_{dst(e)=k} g_e - sum_{src(e)=k} g_e``, ``W = -sum_e g_e (x) r_e`` per frame and, with ASE's sign
(tension positive, eV/A^3), ``sigma = -W / V = (1/V) dE/d(strain)``. Frames open in every direction get zero
stress. Slabs and wires (periodic along some directions) follow ASE: the virial over the volume of the whole
cell, vacuum included, so a slab's stress equals that of the same cell made fully periodic; a slab or wire whose
open cell vector is zero has no volume and gets zero stress (the calculator then reports none).
"""

from __future__ import annotations

import torch

from dpa4_core.nn.scatter import scatter_sum

#: A^3; a cell below this volume (a slab without a vacuum vector) has no stress.
STRESS_MIN_VOLUME = 1e-6


def forces_and_virial(
    energy: torch.Tensor,
    edge_vec: torch.Tensor,
    edge_src: torch.Tensor,
    edge_dst: torch.Tensor,
    n_atoms: int,
    edge_frame: torch.Tensor | None = None,
    n_frames: int = 1,
    create_graph: bool = False,
    compute_virial: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Forces ``[N, 3]`` (eV/A) and virial ``[F, 3, 3]`` (eV) from ``energy`` (any shape; summed).

    Args:
        energy: energies whose sum is differentiated.
        edge_vec: ``[E, 3]`` edge vectors the energy was computed from (requires grad).
        edge_src, edge_dst: ``[E]``.
        n_atoms: N.
        edge_frame: ``[E]`` frame of each edge (default: all in frame 0).
        n_frames: F.
        create_graph: keep the graph (training with a force loss; double backward).
        compute_virial: if False the virial is None.
    """
    (grad,) = torch.autograd.grad(energy.sum(), edge_vec, create_graph=create_graph, allow_unused=True)
    if grad is None:  # no edges or no dependence: zero forces
        grad = torch.zeros_like(edge_vec)
    return forces_and_virial_from_gradient(grad, edge_vec, edge_src, edge_dst, n_atoms, edge_frame, n_frames,
                                           compute_virial)


def forces_and_virial_from_gradient(
    grad: torch.Tensor,
    edge_vec: torch.Tensor,
    edge_src: torch.Tensor,
    edge_dst: torch.Tensor,
    n_atoms: int,
    edge_frame: torch.Tensor | None = None,
    n_frames: int = 1,
    compute_virial: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The sums of :func:`forces_and_virial` for an already computed ``grad = dE/d edge_vec`` ``[E, 3]``
    (the compiled trainer gets it from its traced graph)."""
    forces = scatter_sum(grad, edge_dst, n_atoms) - scatter_sum(grad, edge_src, n_atoms)
    if not compute_virial:
        return forces, None
    if edge_frame is None:
        edge_frame = torch.zeros_like(edge_src)
    per_edge = -grad[:, :, None] * edge_vec[:, None, :]
    virial = torch.zeros(n_frames, 3, 3, dtype=grad.dtype, device=grad.device).index_add(0, edge_frame, per_edge)
    return forces, virial


def stress_from_virial(virial: torch.Tensor, cell: torch.Tensor, pbc: torch.Tensor) -> torch.Tensor:
    """ASE stress ``sigma = -W / V`` ``[F, 3, 3]`` (eV/A^3) of frames periodic in any direction whose cell has a
    volume; exactly 0 for the others."""
    volume = torch.linalg.det(cell).abs()
    periodic = pbc.any(dim=-1) & (volume > STRESS_MIN_VOLUME)
    safe_volume = torch.where(periodic, volume, torch.ones_like(volume))
    return torch.where(periodic[:, None, None], -virial / safe_volume[:, None, None], torch.zeros_like(virial))
