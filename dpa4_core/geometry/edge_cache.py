"""EdgeCache: every per-edge geometric tensor, built once per forward and shared by all blocks (spec section 1).

Built in fp32 or fp64 (autocast is disabled here so bf16 training never touches geometry). The packed and
m-major "kept" orders of the features are defined in :mod:`dpa4_core.layout`. The truncated rotation ``P_M D(q_ij)`` is stored as one dense ``[E, K, P]`` matrix (zeros outside the degree
blocks), so rotating a message is a single batched matmul; the full ``[E, P, P]`` Wigner matrix is never formed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dpa4_core.geometry.envelope import bridged_distance, polynomial_envelope, source_gate
from dpa4_core.geometry.frames import edge_quaternion, quaternion_multiply, z_rotation_quaternion
from dpa4_core.geometry.wigner import wigner_d
from dpa4_core.layout import degree_of_packed, kept_layout, wigner_gather_index

LENGTH_EPS = 1e-14  # A^2; safe length sqrt(|r|^2 + eps) keeps gradients finite for coincident images


def truncated_wigner(q: torch.Tensor, lmax: int, mmax: int) -> torch.Tensor:
    """Dense truncated rotation ``P_M D(q)``: ``[E, K, P]`` (rows m-major kept order, columns packed (l, m))."""
    blocks = wigner_d(q, lmax, mmax=mmax)
    flat = torch.cat([b.flatten(1) for b in blocks] + [q.new_zeros(q.shape[0], 1)], dim=1)
    index = torch.tensor(wigner_gather_index(lmax, mmax), device=q.device)
    n_kept = len(kept_layout(lmax, mmax)[0])
    return flat[:, index].view(-1, n_kept, (lmax + 1) ** 2)


@dataclass
class EdgeCache:
    """Per-edge and per-atom geometry shared by every block.

    Attributes (E edges, N atoms, P = (L+1)^2, K kept rows):
        edge_src, edge_dst: ``[E]`` source j and destination i.
        n_atoms: N.
        length: ``[E]`` true safe length ``|r|`` (A), for ZBL.
        bridged: ``[E]`` zone-bridged length ``r~`` (A), what the network sees.
        envelope: ``[E]`` ``E_5(r~ / r_c)``.
        edge_weight: ``[E]`` ``E_5^2 * eta_src``: the prefactor of every message j -> i.
        gate: ``[N]`` source gate ``eta``.
        degree: ``[N]`` smooth degree ``d_i = sum_j E_5^2``.
        inv_sqrt_degree: ``[N]`` ``n_i = (d_i + 0.25)^(-1/2)``.
        wigner: ``[E, K, P]`` truncated rotation ``P_M D(q_ij)``.
        harmonics: ``[E, P]`` ``Y_l(r_hat_ij)`` as the ``m = 0`` rows of ``D^l`` (``sqrt(4pi/(2l+1)) Y_lm``).
        unit: ``[E, 3]`` edge direction.
    """

    edge_src: torch.Tensor
    edge_dst: torch.Tensor
    n_atoms: int
    length: torch.Tensor
    bridged: torch.Tensor
    envelope: torch.Tensor
    edge_weight: torch.Tensor
    gate: torch.Tensor
    degree: torch.Tensor
    inv_sqrt_degree: torch.Tensor
    wigner: torch.Tensor
    harmonics: torch.Tensor
    unit: torch.Tensor


def build_edge_cache(
    edge_vec: torch.Tensor,
    edge_src: torch.Tensor,
    edge_dst: torch.Tensor,
    n_atoms: int,
    *,
    cutoff: float,
    r_in: float,
    r_out: float,
    lmax: int,
    mmax: int,
    edge_roll: torch.Tensor | None = None,
    bridging: bool = True,
    gate_from_bridged: bool = False,
) -> EdgeCache:
    """Build the :class:`EdgeCache` from edge vectors.

    Args:
        edge_vec: ``[E, 3]`` vectors ``r_ij`` (A), fp32 or fp64 (the result keeps this dtype).
        edge_src, edge_dst: ``[E]`` int64.
        n_atoms: N.
        cutoff, r_in, r_out: r_c and the zone-bridging window (A).
        lmax, mmax: L and M.
        edge_roll: optional ``[E]`` angles (rad) of an extra rotation about z applied in every edge frame
            (training augmentation; the energy does not depend on it).
        bridging: False: no zone bridging (``bridged = length``, gate 1; ``DPA4Config.bridging``).
        gate_from_bridged: the source gate's switch reads the bridged length ``r~`` instead of ``r`` (deepmd-kit
            DPA4's, so there ``w = h_gate(h_clamp(t))``); dpa4's own models read ``r``.
    """
    with torch.autocast(device_type=edge_vec.device.type, enabled=False):
        length = torch.sqrt((edge_vec * edge_vec).sum(-1) + LENGTH_EPS)
        unit = edge_vec / length[:, None]
        if bridging:
            bridged = bridged_distance(length, r_in, r_out)
            gate = source_gate(bridged if gate_from_bridged else length, edge_dst, n_atoms, r_in, r_out)
        else:  # the network sees the true length; no source gate
            bridged = length
            gate = torch.ones(n_atoms, dtype=edge_vec.dtype, device=edge_vec.device)
        envelope = polynomial_envelope(bridged / cutoff, 5)
        env_sq = envelope * envelope
        edge_weight = env_sq * gate[edge_src]
        degree = torch.zeros(n_atoms, dtype=edge_vec.dtype, device=edge_vec.device).index_add(0, edge_dst, env_sq)
        q = edge_quaternion(edge_vec)
        if edge_roll is not None:
            q = quaternion_multiply(z_rotation_quaternion(edge_roll.to(q.dtype)), q)
        wigner = truncated_wigner(q, lmax, mmax)
        # Y_l(r_hat) = m = 0 row of D^l, which is kept row l of the m-major layout.
        rows = torch.tensor(degree_of_packed(lmax), device=edge_vec.device)
        harmonics = wigner[:, rows, torch.arange(rows.shape[0], device=edge_vec.device)]
    return EdgeCache(
        edge_src=edge_src, edge_dst=edge_dst, n_atoms=n_atoms, length=length, bridged=bridged, envelope=envelope,
        edge_weight=edge_weight, gate=gate, degree=degree, inv_sqrt_degree=(degree + 0.25).rsqrt(), wigner=wigner,
        harmonics=harmonics, unit=unit,
    )
