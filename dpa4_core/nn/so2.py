"""SO(2) layers inside the edge frame: radial degree coupling, complex-linear maps, gates (spec section 3, 2-4).

Per-edge features are in the m-major kept layout ``[E, K, H]`` (see ``geometry/edge_cache.py``). A rotation about
z by ``gamma`` acts on each ``(-m, +m)`` pair of rows as a 2D rotation by ``m gamma`` and leaves ``m = 0`` alone.
Every map here commutes with it: the ``m = 0`` block gets any linear map; each ``m > 0`` block gets a complex
multiplication ``[[W_u, -W_v], [W_v, W_u]]`` acting on ``(x_-m, x_+m)``; the degree coupling uses the same matrix
on ``-m`` and ``+m``; gates depend on ``m = 0`` scalars and on the degree only. Hence the energy does not depend on
the roll of the edge frame.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from dpa4_core.layout import kept_layout



def _block_sizes(lmax: int, mmax: int) -> list[int]:
    """Rows per order: ``[L+1, L, L-1, ...]`` for m = 0..M (each m > 0 appears twice, as -m and +m)."""
    return [lmax + 1 - m for m in range(mmax + 1)]


class DegreeCoupling(nn.Module):
    """Low-rank radial degree coupling ``x_{l,m,c} <- sum_l' K_{l,l',|m|,c}(rho) x_{l',m,c}``.

    ``K = sum_{r<=R} K^(r)_{l,l',|m|}(rho_0) B_{r,c}`` with ``K^(r)`` linear (plus a bias that starts at the
    identity) in the l = 0 radial features. ``K^(r)`` is block-diagonal over m with the same block on -m and +m.

    Because ``B`` only scales channels and ``K^(r)`` only mixes rows, the EMFA applies the coupling by folding
    ``K^(r)`` into the per-edge rotation (``K^(r) P_M D``: ``[E, K, P]``, no channel axis) and ``B_r`` into the
    node features before the gather: no batched matmul over ``[E, K, H]`` tensors.

    Args:
        radial_channels: width C of ``rho_0``.
        hidden: H.
        lmax, mmax: L, M.
        rank: R.
    """

    def __init__(self, radial_channels: int, hidden: int, lmax: int, mmax: int, rank: int) -> None:
        super().__init__()
        self.lmax, self.mmax, self.rank = lmax, mmax, rank
        self.sizes = _block_sizes(lmax, mmax)
        # one linear map per order m (not one flat output): separate, small parameter shapes
        self.kernels = nn.ModuleList(nn.Linear(radial_channels, rank * s * s) for s in self.sizes)
        for kernel, s in zip(self.kernels, self.sizes):
            nn.init.normal_(kernel.weight, std=0.1 / math.sqrt(radial_channels))
            with torch.no_grad():
                kernel.bias.copy_(torch.eye(s).flatten().repeat(rank) / rank)
        self.mix = nn.Parameter(torch.ones(rank, hidden))
        self.n_kept = len(kept_layout(lmax, mmax)[0])
        self.register_buffer("gather_index", torch.tensor(_coupling_index(lmax, mmax)), persistent=False)

    def matrix(self, rho0: torch.Tensor) -> torch.Tensor:
        """Row-mixing matrices ``K^(r)`` ``[E, R, K, K]`` on the m-major kept layout."""
        n_edges = rho0.shape[0]
        flat = [kernel(rho0).view(n_edges, self.rank, size * size) for kernel, size in zip(self.kernels, self.sizes)]
        flat = torch.cat(flat + [flat[0].new_zeros(n_edges, self.rank, 1)], dim=2)
        return flat[:, :, self.gather_index].view(n_edges, self.rank, self.n_kept, self.n_kept)

    def forward(self, x: torch.Tensor, rho0: torch.Tensor) -> torch.Tensor:
        """Reference form ``[E, K, H] -> [E, K, H]`` (the EMFA uses the folded form; tests compare the two)."""
        return torch.einsum("erkj,ejh,rh->ekh", self.matrix(rho0), x, self.mix)


def _coupling_index(lmax: int, mmax: int) -> list[int]:
    """Flat index into ``cat(K_m.flatten() for m) + [0]`` for each entry of the ``[K, K]`` coupling matrix."""
    sizes = _block_sizes(lmax, mmax)
    offsets = [sum(s * s for s in sizes[:m]) for m in range(len(sizes))]
    zero = sum(s * s for s in sizes)
    _, degrees, orders = kept_layout(lmax, mmax)
    index = []
    for l_a, m_a in zip(degrees, orders):
        for l_b, m_b in zip(degrees, orders):
            m = abs(m_a)
            index.append(offsets[m] + (l_a - m) * sizes[m] + (l_b - m) if m_a == m_b else zero)
    return index


class SO2Layer(nn.Module):
    """One residual SO(2) layer ``x <- x + Gamma(W x)``.

    ``W``: a free matrix on the ``(L+1) H`` entries of ``m = 0``; for each ``m > 0`` a complex multiplication
    ``y_-m = W_u x_-m - W_v x_+m``, ``y_+m = W_v x_-m + W_u x_+m`` on ``(L-m+1) H`` entries (initialised
    times ``1/sqrt 2``). ``Gamma``: SiLU on the (l = 0, m = 0) scalars, ``sigmoid(Linear(scalars))`` gates per
    (degree, channel) on everything else. ``SiLU(s) = s sigmoid(s)``, so the whole m = 0 update is
    ``y_0 * sigmoid([s, Linear(s)])``: one gate vector, no concatenation.

    Args:
        hidden: H.
        lmax, mmax: L, M.
    """

    def __init__(self, hidden: int, lmax: int, mmax: int) -> None:
        super().__init__()
        self.hidden, self.lmax, self.mmax = hidden, lmax, mmax
        self.sizes = _block_sizes(lmax, mmax)
        n0 = self.sizes[0] * hidden
        self.w0 = nn.Linear(n0, n0)
        nn.init.normal_(self.w0.weight, std=1.0 / math.sqrt(n0))
        nn.init.zeros_(self.w0.bias)
        self.wu = nn.ParameterList()
        self.wv = nn.ParameterList()
        for size in self.sizes[1:]:
            n = size * hidden
            self.wu.append(nn.Parameter(torch.randn(n, n) / math.sqrt(2 * n)))
            self.wv.append(nn.Parameter(torch.randn(n, n) / math.sqrt(2 * n)))
        self.gate = nn.Linear(hidden, lmax * hidden)
        self.register_buffer("identity", torch.eye(hidden), persistent=False)

    def forward(self, blocks: list[torch.Tensor]) -> list[torch.Tensor]:
        """``blocks[m]``: ``[E, n_signs, L-m+1, H]`` -> same shapes."""
        n_edges, hidden = blocks[0].shape[0], self.hidden
        y0 = self.w0(blocks[0].reshape(n_edges, self.sizes[0] * hidden))
        scalars = y0[:, :hidden]
        gate_weight = torch.cat([self.identity.to(self.gate.weight.dtype), self.gate.weight], dim=0)
        gate_bias = torch.cat([self.gate.bias.new_zeros(hidden), self.gate.bias])
        gates = torch.sigmoid(nn.functional.linear(scalars, gate_weight, gate_bias))  # [E, (L+1) H]
        out = [blocks[0] + (y0 * gates).view_as(blocks[0])]
        degree_gates = gates.view(n_edges, 1, self.lmax + 1, hidden)
        for m, (wu, wv, block) in enumerate(zip(self.wu, self.wv, blocks[1:]), start=1):
            size = self.sizes[m]
            pair = block.reshape(n_edges, 2 * size * hidden)  # (x_-m, x_+m) flattened
            complex_matrix = torch.cat([torch.cat([wu, wv], dim=1), torch.cat([-wv, wu], dim=1)], dim=0)
            y = (pair @ complex_matrix).view(n_edges, 2, size, hidden)
            out.append(block + y * degree_gates[:, :, m:])  # gate of degree l = m..L, same for -m and +m
        return out


class SO2Stack(nn.Module):
    """S residual SO(2) layers on the m-major kept layout ``[E, K, H]``."""

    def __init__(self, hidden: int, lmax: int, mmax: int, n_layers: int) -> None:
        super().__init__()
        self.sizes = _block_sizes(lmax, mmax)
        self.layers = nn.ModuleList(SO2Layer(hidden, lmax, mmax) for _ in range(n_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [E, K, H] -> [E, K, H]``."""
        n_edges, hidden = x.shape[0], x.shape[-1]
        rows = [self.sizes[0]] + [2 * s for s in self.sizes[1:]]
        blocks = [b.view(n_edges, 1 if m == 0 else 2, self.sizes[m], hidden)
                  for m, b in enumerate(torch.split(x, rows, dim=1))]
        for layer in self.layers:
            blocks = layer(blocks)
        return torch.cat([b.reshape(n_edges, r, hidden) for b, r in zip(blocks, rows)], dim=1)
