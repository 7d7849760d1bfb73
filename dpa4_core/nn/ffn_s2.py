"""Sphere-grid product FFN (``DPA4Config.ffn = "s2"``): deepmd-kit DPA4's block FFN (``s2_activation``).

``[u, v] = W1 x`` degree-wise (no bias, ``C -> 2 H``); the two sets of coefficients become functions on the sphere
``f(n) = sum_lm c_lm Y_lm(n) / sqrt(L+1)`` with unit-norm real harmonics (``sqrt(4 pi/(2l+1))`` times the
orthonormal ones), are multiplied point-wise and projected back, ``z_lm = sqrt(L+1) (2l+1) sum_n w_n f_u f_v
Y_lm(n)`` (weights summing to 1). The product is band-limited (degree ``<= 2L``, the projection integrand
``<= 3L``), so any quadrature exact to degree ``3L`` gives the same ``z`` and the FFN is equivariant to machine
precision; it also does not depend on the real-harmonic sign convention, so deepmd-kit's weights map without signs.
Then ``z <- z * sigmoid(G [u_0, v_0])`` per channel, ``z_0 <- z_0 + SiLU(u_0) v_0``, and ``W2`` (``H -> C``).
Checked against deepmd-kit's own values (tests/core/test_deepmd_weights.py).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional

from dpa4_core.geometry.wigner import real_spherical_harmonics, sphere_quadrature
from dpa4_core.nn.linear import DegreeLinear


def _grid_matrices(lmax: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``to_grid [G, P]`` and ``from_grid [P, G]`` (float64) of the sphere-grid product."""
    points, weights = sphere_quadrature(3 * lmax)
    harmonics = torch.cat([y * math.sqrt(4 * math.pi / (2 * l + 1))
                           for l, y in enumerate(real_spherical_harmonics(points, lmax))], dim=1)  # [G, P]
    degree = torch.tensor([2 * l + 1 for l in range(lmax + 1) for _ in range(2 * l + 1)], dtype=torch.float64)
    scale = math.sqrt(lmax + 1)
    return harmonics / scale, (harmonics * weights[:, None] * scale * degree[None, :]).T


class SphereProductFFN(nn.Module):
    """``[N, (L+1)^2, C] -> [N, (L+1)^2, C]``, see the module docstring.

    Args:
        channels: C.
        hidden: H (each of the two factors).
        lmax: L.
    """

    def __init__(self, channels: int, hidden: int, lmax: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.lift = DegreeLinear(channels, 2 * hidden, lmax)
        self.scalar_gate = nn.Linear(2 * hidden, hidden, bias=False)
        self.project = DegreeLinear(hidden, channels, lmax, zero_init=True)
        to_grid, from_grid = _grid_matrices(lmax)
        self.register_buffer("to_grid", to_grid, persistent=False)
        self.register_buffer("from_grid", from_grid, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u, v = self.lift(x).chunk(2, dim=-1)  # [N, P, H] each
        to_grid, from_grid = self.to_grid.to(u.dtype), self.from_grid.to(u.dtype)
        product = torch.einsum("gp,npc->ngc", to_grid, u) * torch.einsum("gp,npc->ngc", to_grid, v)
        z = torch.einsum("pg,ngc->npc", from_grid, product)
        scalars = torch.cat([u[:, 0], v[:, 0]], dim=-1)  # [N, 2H]
        z = z * torch.sigmoid(self.scalar_gate(scalars))[:, None, :]
        z = torch.cat([z[:, :1] + (functional.silu(u[:, 0]) * v[:, 0])[:, None], z[:, 1:]], dim=1)
        return self.project(z)
