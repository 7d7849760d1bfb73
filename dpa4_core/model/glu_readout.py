"""deepmd-kit DPA4's energy read-out (``DPA4Config.readout = "deepmd"``): a residual GLU on the l = 0 channels
(its descriptor's ``output_ffn``), then a GLU fitting net (its ``sezm_ener``), every layer without bias except the
fitting net's hidden one. ``GLU(x) = a * SiLU(b)`` with ``[a, b]`` the two halves of a linear map of ``x``.
Checked against deepmd-kit's own values (tests/core/test_deepmd_readout.py).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional


def glu(values: torch.Tensor) -> torch.Tensor:
    """``a * SiLU(b)`` of the two halves ``[a, b]`` of the last axis."""
    value, gate = values.chunk(2, dim=-1)
    return value * functional.silu(gate)


class GLUReadout(nn.Module):
    """``s = x + W2 GLU(W1 x)``; ``E_i = W4 GLU(W3 s + b3)``: ``[N, C] -> [N]`` (eV, before the energy offset).

    With ``grid`` (an ``SO3GridFFN``, deepmd-kit's ``so3_readout``) the residual is ``grid(x)[:, 0]`` on the full
    node features ``x`` instead of the scalar GLU.

    Args:
        channels: C.
        hidden: width of the residual GLU (``W1: C -> 2 hidden``).
        fitting_hidden: width of the fitting net's GLU layer (``W3: C -> 2 fitting_hidden``).
    """

    def __init__(self, channels: int, hidden: int, fitting_hidden: int, grid: nn.Module | None = None) -> None:
        super().__init__()
        self.grid = grid
        if grid is None:
            self.lift = nn.Linear(channels, 2 * hidden, bias=False)
            self.project = nn.Linear(hidden, channels, bias=False)
            nn.init.zeros_(self.project.weight)  # the residual starts as the identity
        self.fitting = nn.Linear(channels, 2 * fitting_hidden)
        self.head = nn.Linear(fitting_hidden, 1, bias=False)

    def forward(self, scalars: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        if self.grid is None:
            descriptor = scalars + self.project(glu(self.lift(scalars)))
        else:  # deepmd-kit's so3_readout: an SO(3)-grid FFN on every degree of ``features [N, P, C]``, its l = 0 row
            descriptor = scalars + self.grid(features, scalar_only=True)[:, 0]
        return self.head(glu(self.fitting(descriptor))).squeeze(-1)
