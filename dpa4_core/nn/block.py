"""EMFA SO(2) convolution and the interaction block (spec section 3).

Block: ``x <- x + Norm_eps=1(EMFA(Norm(x)))``, then ``x <- x + FFN(Norm(x))``. Both residual branches end in a
zero-initialised map, so every block starts as the identity. (The pre-norm before EMFA is our addition for a
well-scaled residual stream; it is equivariant and changes no symmetry.)

EMFA per edge j -> i: pre-mix C -> H (degree-wise, on nodes), gather the source, rotate into the edge frame and
truncate to ``|m| <= M`` (one batched matmul with the cached ``[E, K, P]`` matrix), degree coupling and S SO(2)
layers, weight by the envelope-gated attention, rotate back, scatter to the destination, rescale degrees
``l > M`` by ``Xi_l = sqrt((2l+1)/(2M+1))``, output gate, post-mix H -> C (zero-initialised).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from dpa4_core.geometry.edge_cache import EdgeCache
from dpa4_core.layout import degree_of_packed
from dpa4_core.nn.attention import EnvelopeAttention
from dpa4_core.nn.ffn import GatedFFN, WignerBilinearFFN
from dpa4_core.nn.ffn_s2 import SphereProductFFN
from dpa4_core.nn.ffn_so3 import SO3GridFFN
from dpa4_core.nn.linear import DegreeLinear
from dpa4_core.nn.norm import EquivariantRMSNorm, ScalarNorm
from dpa4_core.nn.scatter import scatter_sum
from dpa4_core.nn.so2 import DegreeCoupling, SO2Stack


class EMFA(nn.Module):
    """EMFA SO(2) convolution with envelope-gated attention: ``[N, P, C] -> [N, P, C]``.

    Args:
        channels: C; hidden: H; lmax, mmax: L, M; so2_layers: S; rank: R; heads, attn_dim: attention sizes.
    """

    def __init__(self, channels: int, hidden: int, lmax: int, mmax: int, so2_layers: int, rank: int,
                 heads: int, attn_dim: int) -> None:
        super().__init__()
        self.hidden, self.heads = hidden, heads
        self.pre_mix = DegreeLinear(channels, hidden, lmax, bias=True)
        self.coupling = DegreeCoupling(channels, hidden, lmax, mmax, rank)
        self.so2 = SO2Stack(hidden, lmax, mmax, so2_layers)
        self.scalar_norm = ScalarNorm(channels)
        self.attention = EnvelopeAttention(channels, channels, heads, attn_dim)
        self.output_gate = nn.Linear(channels, hidden)
        self.post_mix = DegreeLinear(hidden, channels, lmax, zero_init=True)
        xi = [math.sqrt((2 * l + 1) / (2 * mmax + 1)) if l > mmax else 1.0 for l in degree_of_packed(lmax)]
        self.register_buffer("xi", torch.tensor(xi, dtype=torch.float64), persistent=False)

    def forward(self, x: torch.Tensor, cache: EdgeCache, rho0: torch.Tensor) -> torch.Tensor:
        """``x [N, P, C]`` (normalised), ``rho0 [E, C]`` l = 0 radial features."""
        src, dst, n_atoms = cache.edge_src, cache.edge_dst, cache.n_atoms
        n_edges = src.shape[0]
        wigner = cache.wigner
        h = self.pre_mix(x)  # [N, P, H]
        # Degree coupling folded into the rotation: sum_r K_r(rho) P_M D(q_ij) (B_r * x_j), one bmm over edges.
        coupling = self.coupling.matrix(rho0.to(h.dtype))  # [E, R, K, K]
        coupled = torch.matmul(coupling, wigner.to(h.dtype).unsqueeze(1))  # [E, R, K, P]
        rank, n_kept, n_packed = coupled.shape[1], coupled.shape[2], coupled.shape[3]
        scaled = h.unsqueeze(1) * self.coupling.mix.to(h.dtype)[None, :, None, :]  # [N, R, P, H]
        coupled = coupled.transpose(1, 2).reshape(n_edges, n_kept, rank * n_packed)
        rotated = torch.bmm(coupled, scaled.reshape(n_atoms, rank * n_packed, self.hidden)[src])  # [E, K, H]
        y = self.so2(rotated)
        scalars = self.scalar_norm(x[:, 0])
        weights = self.attention(scalars, rho0, cache.edge_weight, src, dst)  # [E, heads]
        weights = weights.repeat_interleave(self.hidden // self.heads, dim=1)  # [E, H]
        y = y * weights[:, None, :].to(y.dtype)
        back = torch.bmm(wigner.transpose(1, 2).to(y.dtype), y)  # [E, P, H]: D^T P_M^T y
        # sum over neighbours in >= fp32 (under bf16 autocast the per-edge messages are bf16)
        acc_dtype = torch.promote_types(back.dtype, torch.float32)
        aggregate = scatter_sum(back, dst, n_atoms, dtype=acc_dtype)
        gate = torch.sigmoid(self.output_gate(scalars.to(x.dtype)))
        aggregate = aggregate * self.xi.to(aggregate.dtype)[None, :, None] * gate[:, None, :].to(aggregate.dtype)
        return self.post_mix(aggregate)


class InteractionBlock(nn.Module):
    """One DPA4 interaction block: EMFA then FFN, each as a normalised residual branch.

    Args:
        config-like sizes: channels C, hidden H, lmax L, mmax M, so2_layers S, rank R, heads, attn_dim,
        ffn ("bilinear" | "gated" | "s2"), ffn_hidden H_FFN, kmax, ffn_scalar_hidden (SwiGLU width of the scalars).
    """

    def __init__(self, channels: int, hidden: int, lmax: int, mmax: int, so2_layers: int, rank: int, heads: int,
                 attn_dim: int, ffn: str, ffn_hidden: int, kmax: int, ffn_scalar_hidden: int | None = None) -> None:
        super().__init__()
        self.pre_norm = EquivariantRMSNorm(channels, lmax)
        self.emfa = EMFA(channels, hidden, lmax, mmax, so2_layers, rank, heads, attn_dim)
        self.message_norm = EquivariantRMSNorm(channels, lmax, eps=1.0)
        self.ffn_norm = EquivariantRMSNorm(channels, lmax)
        self.ffn = self.make_ffn(channels, lmax, ffn, ffn_hidden, kmax, ffn_scalar_hidden)

    @staticmethod
    def make_ffn(channels: int, lmax: int, ffn: str, ffn_hidden: int, kmax: int,
                 ffn_scalar_hidden: int | None, grid_branches: int = 1) -> nn.Module:
        """The FFN named by ``DPA4Config.ffn``."""
        if ffn == "bilinear":
            return WignerBilinearFFN(channels, ffn_hidden, lmax, kmax, ffn_scalar_hidden)
        if ffn == "s2":
            return SphereProductFFN(channels, ffn_hidden, lmax)
        if ffn.startswith("so3_"):
            return SO3GridFFN(channels, ffn_hidden, lmax, kmax, ffn[4:], grid_branches)
        return GatedFFN(channels, ffn_hidden, lmax)

    def forward(self, x: torch.Tensor, cache: EdgeCache, rho0: torch.Tensor) -> torch.Tensor:
        x = x + self.message_norm(self.emfa(self.pre_norm(x), cache, rho0)).to(x.dtype)
        return x + self.ffn(self.ffn_norm(x)).to(x.dtype)
