"""Degree-wise linear maps on packed (l, m) features (spec sections 3 and 2).

A degree-wise map multiplies every ``(l, m)`` row by the same matrix ``W_l`` (shared over m), which commutes
with rotations; a bias is allowed on ``l = 0`` only.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from dpa4_core.layout import degree_of_packed


class DegreeLinear(nn.Module):
    """``y[:, (l, m), :] = x[:, (l, m), :] @ W_l (+ b on l = 0)``.

    Args:
        in_channels, out_channels: channel widths.
        lmax: L; inputs have ``(L+1)^2`` packed rows.
        bias: learnable bias on the l = 0 row.
        zero_init: start from W = 0 (a residual branch that starts as the identity).

    Shapes: ``x [N, (L+1)^2, in] -> [N, (L+1)^2, out]``.
    """

    def __init__(self, in_channels: int, out_channels: int, lmax: int, bias: bool = False, zero_init: bool = False):
        super().__init__()
        self.lmax = lmax
        self.weight = nn.Parameter(torch.empty(lmax + 1, in_channels, out_channels))
        if zero_init:
            nn.init.zeros_(self.weight)
        else:
            nn.init.normal_(self.weight, std=1.0 / math.sqrt(in_channels))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.register_buffer("degree", torch.tensor(degree_of_packed(lmax)), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # [P, in, out] expanded per packed row: one batched matmul over the P rows (an input with fewer rows holds
        # the first packed rows, e.g. only l = 0).
        out = torch.einsum("npi,pio->npo", x, self.weight[self.degree[:x.shape[1]]])
        if self.bias is not None:
            out = torch.cat([out[:, :1] + self.bias, out[:, 1:]], dim=1)
        return out
