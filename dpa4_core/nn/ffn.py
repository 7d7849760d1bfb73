"""Feed-forward networks on packed features ``[N, (L+1)^2, C]`` (spec section 3, FFN).

Wigner bilinear FFN: each degree is lifted to coefficients of two functions on SO(3),
``f(g) = sum_{l,m,|k|<=kmax} u^(l)_{mk} D^(l)_{mk}(g)``; their point-wise product on a quadrature grid is
projected back, ``z^(l)_{mk} = (2l+1) sum_g w_g D^(l)_{mk}(g) f_L(g) f_R(g)``. The integrand is a product of three
band-limited functions (degree <= 3L, roll frequency <= 3 kmax), the grid (Lebedev of order >= 3L times
3 kmax + 1 roll angles) integrates it exactly, so the FFN is equivariant to machine precision. A rotation R of
the input maps ``f(g) -> f(R^-1 g)``, which the Haar-invariant integral absorbs.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from dpa4_core.geometry.wigner import so3_quadrature, wigner_d
from dpa4_core.nn.linear import DegreeLinear


def so3_grid_basis(lmax: int, kmax: int) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Evaluation and projection matrices of band-limited functions on an SO(3) grid (fp64).

    Returns:
        ``(basis [G, B], projection [B, G], n_k)``: ``basis[g, (l, m, k)] = D^l_mk(g_g)`` for ``|k| <=
        min(l, kmax)`` in (l, m, k) order; ``projection = (2l+1) w_g basis^T`` so ``projection @ basis = I``
        and ``projection @ (basis u * basis v)`` is exact; ``n_k[l] = 2 min(l, kmax) + 1``.
    """
    # so3_quadrature(l') uses the first Lebedev order >= 2 l' (orders are odd); we need a triple product of
    # degree <= 3L, and l' = floor(3L/2) gives exactly order 3L (3L odd) or 3L + 1 (3L even). Roll frequency
    # <= 3 kmax needs 3 kmax + 1 roll angles. (L = 3: 38 Lebedev points x 4 rolls = 152 grid points.)
    q, weights = so3_quadrature(max(3 * lmax // 2, kmax), kmax, dtype=torch.float64, n_roll=3 * kmax + 1)
    blocks = wigner_d(q, lmax)
    columns, rows, n_k = [], [], []
    for l, block in enumerate(blocks):
        k_max = min(l, kmax)
        n_k.append(2 * k_max + 1)
        cols = block[:, :, l - k_max:l + k_max + 1].reshape(q.shape[0], -1)  # (m, k) order
        columns.append(cols)
        rows.append((2 * l + 1) * weights[:, None] * cols)
    return torch.cat(columns, dim=1), torch.cat(rows, dim=1).T.contiguous(), n_k


class WignerBilinearFFN(nn.Module):
    """Wigner bilinear FFN plus a SwiGLU path on the scalars; zero-initialised output.

    Args:
        channels: C.
        hidden: H_FFN, channels of each function on SO(3).
        lmax: L.
        kmax: right index range of the functions on SO(3).
        scalar_hidden: width of the SwiGLU path on the scalars (default ``hidden``).

    Shapes: ``x [N, (L+1)^2, C] -> [N, (L+1)^2, C]``.
    """

    def __init__(self, channels: int, hidden: int, lmax: int, kmax: int = 1, scalar_hidden: int | None = None) -> None:
        super().__init__()
        self.channels, self.hidden, self.lmax = channels, hidden, lmax
        basis, projection, n_k = so3_grid_basis(lmax, kmax)
        self.n_k = n_k
        # fp64 masters: buffers are re-cast from them on every .to()/.double()/.float(), so a model converted
        # fp32 -> fp64 keeps exact fp64 grid values (equivariance to 1e-12, not 1e-7).
        self._masters = {"basis": basis, "projection": projection}
        self.register_buffer("basis", basis.clone(), persistent=False)
        self.register_buffer("projection", projection.clone(), persistent=False)
        self.lift = nn.ParameterList(
            nn.Parameter(torch.randn(channels, 2 * nk * hidden) / math.sqrt(channels)) for nk in n_k
        )
        self.out = nn.ParameterList(nn.Parameter(torch.zeros(nk * hidden, channels)) for nk in n_k)
        scalar_hidden = hidden if scalar_hidden is None else scalar_hidden
        self.swiglu_in = nn.Linear(channels, 2 * scalar_hidden, bias=False)
        self.swiglu_out = nn.Linear(scalar_hidden, channels, bias=False)
        nn.init.zeros_(self.swiglu_out.weight)

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        for name, master in self._masters.items():
            buffer = getattr(self, name)
            setattr(self, name, master.to(device=buffer.device, dtype=buffer.dtype))
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, h = x.shape[0], self.hidden
        # Layout [N, H, B] (B = (l, m, k) basis index last) so the grid evaluation and the projection are two
        # large GEMMs against the [B, G] / [G, B] matrices instead of N small ones.
        left, right = [], []
        for l, (weight, nk) in enumerate(zip(self.lift, self.n_k)):
            x_l = x[:, l * l:(l + 1) ** 2]
            w_l = weight.view(-1, 2, nk, h)
            left.append(torch.einsum("nmc,ckh->nhmk", x_l, w_l[:, 0]).reshape(n, h, -1))
            right.append(torch.einsum("nmc,ckh->nhmk", x_l, w_l[:, 1]).reshape(n, h, -1))
        autocast = torch.is_autocast_enabled()
        basis = self.basis if autocast else self.basis.to(x.dtype)
        projection = self.projection if autocast else self.projection.to(x.dtype)
        f_left = torch.cat(left, dim=-1) @ basis.T  # [N, H, G]: values of f_L on the grid
        f_right = torch.cat(right, dim=-1) @ basis.T
        z = (f_left * f_right) @ projection.T  # [N, H, B]: exact projection of the product
        out, offset = [], 0
        for l, (weight, nk) in enumerate(zip(self.out, self.n_k)):
            size = (2 * l + 1) * nk
            z_l = z[:, :, offset:offset + size].reshape(n, h, 2 * l + 1, nk)
            out.append(torch.einsum("nhmk,khc->nmc", z_l, weight.view(nk, h, -1)))
            offset += size
        out = torch.cat(out, dim=1)
        a, b = self.swiglu_in(x[:, 0]).chunk(2, dim=-1)
        scalars = out[:, 0] + self.swiglu_out(nn.functional.silu(a) * b)
        return torch.cat([scalars[:, None], out[:, 1:]], dim=1)


class GatedFFN(nn.Module):
    """Simpler equivariant FFN: degree-wise linear, SiLU on scalars and sigmoid gates per (l, channel), linear.

    Args:
        channels: C.
        hidden: H_FFN.
        lmax: L.
    """

    def __init__(self, channels: int, hidden: int, lmax: int) -> None:
        super().__init__()
        self.lmax, self.hidden = lmax, hidden
        self.inner = DegreeLinear(channels, hidden, lmax, bias=True)
        self.gate = nn.Linear(hidden, lmax * hidden) if lmax > 0 else None
        self.outer = DegreeLinear(hidden, channels, lmax, zero_init=True)
        self.register_buffer("gate_index", self.inner.degree[1:] - 1, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.inner(x)
        scalars = y[:, 0]
        parts = [nn.functional.silu(scalars)[:, None]]
        if self.gate is not None:
            gates = torch.sigmoid(self.gate(scalars)).view(-1, self.lmax, self.hidden)
            parts.append(y[:, 1:] * gates[:, self.gate_index])
        return self.outer(torch.cat(parts, dim=1))
