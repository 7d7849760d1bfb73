"""Envelope-gated attention with a null mass (spec section 3, step 6).

``w_ij = a_ij exp(l_ij) / (softplus(zeta) + sum_k a_ik exp(l_ik))`` with ``a_ij = E_5(r_ij)^2 eta_j``. Because
``a_ij`` vanishes (with three derivatives) at the cutoff and the null mass ``softplus(zeta) > 0`` keeps the
denominator away from 0, the weights, and so the aggregate, are continuous as the last neighbour leaves; plain
softmax (EquiformerV2) jumps there. Computed in log space with a per-destination max shift, in >= fp32.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class EnvelopeAttention(nn.Module):
    """Attention weights per edge and head.

    Args:
        channels: C (normalised node scalars ``N0(x_0)`` feeding queries and keys).
        radial_channels: width of ``rho_0``.
        heads: number of heads.
        dim: key/query width per head d.
    """

    def __init__(self, channels: int, radial_channels: int, heads: int, dim: int) -> None:
        super().__init__()
        self.heads, self.dim = heads, dim
        self.query = nn.Linear(channels, heads * dim, bias=False)
        self.key = nn.Linear(channels, heads * dim, bias=False)
        self.radial_bias = nn.Linear(radial_channels, heads, bias=False)
        # softplus(zeta) = 1 at init
        self.zeta = nn.Parameter(torch.full((heads,), math.log(math.e - 1.0)))

    def forward(self, scalars: torch.Tensor, rho0: torch.Tensor, edge_weight: torch.Tensor,
                edge_src: torch.Tensor, edge_dst: torch.Tensor) -> torch.Tensor:
        """Weights ``[E, heads]``.

        Args:
            scalars: ``[N, C]`` normalised l = 0 node features ``N0(x_0)``.
            rho0: ``[E, C_rad]`` l = 0 radial features.
            edge_weight: ``[E]`` ``E_5^2 eta_src`` (0 beyond the cutoff).
            edge_src, edge_dst: ``[E]``.
        """
        n_atoms, n_edges = scalars.shape[0], edge_src.shape[0]
        with torch.autocast(device_type=scalars.device.type, enabled=False):
            dtype = torch.promote_types(scalars.dtype, torch.float32)
            s = scalars.to(dtype)
            q = self.query.weight.to(dtype)
            k = self.key.weight.to(dtype)
            queries = (s @ q.T).view(n_atoms, self.heads, self.dim)
            keys = (s @ k.T).view(n_atoms, self.heads, self.dim)
            logits = (queries[edge_dst] * keys[edge_src]).sum(-1) / math.sqrt(self.dim)
            logits = logits + rho0.to(dtype) @ self.radial_bias.weight.to(dtype).T
            weight = edge_weight.to(dtype)[:, None]
            active = weight > 0
            null = nn.functional.softplus(self.zeta.to(dtype))
            log_null = torch.log(null)
            # Per-destination shift: max over active edges and the null logit. It cancels exactly in w, so it
            # carries no gradient (detached); edges with a = 0 never enter it (a skin list changes nothing).
            masked = torch.where(active, logits, log_null.expand(n_edges, -1))
            shift = log_null.expand(n_atoms, -1).contiguous().scatter_reduce(
                0, edge_dst[:, None].expand(-1, self.heads), masked, reduce="amax", include_self=True
            ).detach()
            exponent = torch.where(active, logits - shift[edge_dst], torch.zeros_like(logits))
            numerator = weight * torch.exp(exponent)
            denominator = null * torch.exp(-shift)
            denominator = denominator.index_add(0, edge_dst, numerator)
            return numerator / denominator[edge_dst]
