"""Equivariant RMS norm and the scalar norm used for attention keys/queries and gates (spec section 3).

Both run in at least fp32 with autocast disabled (bf16 training keeps norms in fp32).
"""

from __future__ import annotations

import torch
from torch import nn

from dpa4_core.layout import degree_of_packed


def _float(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.promote_types(x.dtype, torch.float32))


class EquivariantRMSNorm(nn.Module):
    """Equivariant RMS norm of packed features ``x [N, (L+1)^2, C]``.

    The l = 0 slice is centred over channels; one RMS is taken over all (l, m, c) with degree l weighted
    ``1 / ((2l+1)(L+1))`` (so each degree counts equally); then a learnable scale per (l, c) and a bias on l = 0.
    A rotation acts on m within each degree and keeps every per-degree sum of squares, so the norm commutes with it.

    Args:
        channels: C.
        lmax: L.
        eps: added to the mean square; ``eps = 1`` after the EMFA so tiny messages near the cutoff stay tiny.
    """

    def __init__(self, channels: int, lmax: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = float(eps)
        degree = torch.tensor(degree_of_packed(lmax))
        self.register_buffer("degree", degree, persistent=False)
        self.register_buffer("row_weight", 1.0 / ((2 * degree + 1) * (lmax + 1)).double(), persistent=False)
        self.scale = nn.Parameter(torch.ones(lmax + 1, channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = _float(x)
            scalars = x[:, :1] - x[:, :1].mean(dim=-1, keepdim=True)
            x = torch.cat([scalars, x[:, 1:]], dim=1)
            mean_square = (x * x).mean(dim=-1) @ self.row_weight.to(x.dtype)  # [N]
            x = x * torch.rsqrt(mean_square + self.eps)[:, None, None] * self.scale.to(x.dtype)[self.degree]
            return torch.cat([x[:, :1] + self.bias.to(x.dtype), x[:, 1:]], dim=1)


class ScalarNorm(nn.Module):
    """``N0``: centred RMS norm of invariant features ``[..., C]`` with learnable scale (LayerNorm-like).

    Args:
        channels: C.
        eps: added to the variance; a large eps (e.g. 1) keeps the map smooth and bounded for near-zero inputs.
        affine: learnable per-channel scale and bias.
    """

    def __init__(self, channels: int, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__()
        self.eps = float(eps)
        self.weight = nn.Parameter(torch.ones(channels)) if affine else None
        self.bias = nn.Parameter(torch.zeros(channels)) if affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = _float(x)
            x = x - x.mean(dim=-1, keepdim=True)
            x = x * torch.rsqrt((x * x).mean(dim=-1, keepdim=True) + self.eps)
            if self.weight is not None:
                x = x * self.weight.to(x.dtype) + self.bias.to(x.dtype)
            return x


class RMSNorm(nn.Module):
    """Uncentred RMS norm over the last axis with a learnable scale of shape ``shape`` (deepmd-kit DPA4's
    ``edge_norm`` norms): ``x / sqrt(mean(x^2) + eps) * scale``.

    Args:
        shape: scale shape, ``(C,)`` or ``(rows, C)`` (one scale per row of ``[..., rows, C]`` inputs).
        eps: added to the mean square (deepmd-kit's descriptor eps, 1e-7).
    """

    def __init__(self, shape: tuple[int, ...], eps: float = 1e-7) -> None:
        super().__init__()
        self.eps = float(eps)
        self.scale = nn.Parameter(torch.ones(shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.square().mean(dim=-1, keepdim=True) + self.eps) * self.scale.to(x.dtype)
