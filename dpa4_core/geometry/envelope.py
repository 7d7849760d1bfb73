"""Smooth cutoff envelopes, short-range zone bridging and the source gate (spec section 1).

Every function here is a polynomial in a clamped variable, so it is C^3, traceable (no Python control flow on
tensor values) and twice differentiable. All are evaluated in the input dtype; callers keep geometry in fp32/fp64.
"""

from __future__ import annotations

from math import comb

import torch


def polynomial_envelope(x: torch.Tensor, p: int) -> torch.Tensor:
    """C^3 envelope ``E_p(x) = (1-x)^4 * sum_{k<p} C(k+3, 3) x^k`` for ``x < 1``, else 0.

    Properties (tested): ``E_p(0) = 1``; ``E_p(x) = 1 - O(x^p)`` at 0; value and three derivatives vanish at
    ``x = 1``; exactly 0 for ``x >= 1`` (so edges from a neighbour list with a skin contribute nothing).

    Args:
        x: reduced distance ``r / r_c``, any shape, ``x >= 0``.
        p: polynomial order (5 for edge weights, 7 inside the radial basis).
    """
    xc = x.clamp(0.0, 1.0)
    poly = torch.zeros_like(xc)
    for k in reversed(range(p)):  # Horner; p is a Python int, not a tensor value
        poly = poly * xc + comb(k + 3, 3)
    return (1.0 - xc) ** 4 * poly


def _bridge_t(r: torch.Tensor, r_in: float, r_out: float) -> torch.Tensor:
    return ((r - r_in) / (r_out - r_in)).clamp(0.0, 1.0)


def smoothstep7(t: torch.Tensor) -> torch.Tensor:
    """``w(t) = 35t^4 - 84t^5 + 70t^6 - 20t^7`` on ``t in [0, 1]``: 0 -> 1, first three derivatives 0 at both ends."""
    return t**4 * (35.0 + t * (-84.0 + t * (70.0 - 20.0 * t)))


def bridged_distance(r: torch.Tensor, r_in: float, r_out: float) -> torch.Tensor:
    """Zone bridging ``r~(r)``: ``r_in`` below ``r_in``, ``r`` above ``r_out``, C^3 in between.

    ``r~ = r_in + (r_out - r_in) h(t) + max(r - r_out, 0)`` with ``h(t) = 20t^4 - 45t^5 + 36t^6 - 10t^7``,
    ``h(1) = h'(1) = 1`` and ``h''(1) = h'''(1) = 0``, so the joins at both ends are C^3.

    Args:
        r: distances ``[E]`` in A.
    Returns:
        ``[E]`` clamped distances in A, ``>= r_in``.
    """
    t = _bridge_t(r, r_in, r_out)
    h = t**4 * (20.0 + t * (-45.0 + t * (36.0 - 10.0 * t)))
    return r_in + (r_out - r_in) * h + (r - r_out).clamp(min=0.0)


def source_gate(
    r: torch.Tensor, edge_dst: torch.Tensor, n_atoms: int, r_in: float, r_out: float
) -> torch.Tensor:
    """Per-atom gate ``eta_j = prod_{k in N(j)} w(t(r_jk))``: 0 as soon as a neighbour is closer than ``r_in``.

    The product is computed as ``exp(sum log w)`` with an explicit count of zero factors because a scatter
    product neither traces nor has a usable gradient; ``log`` is taken of ``w`` only where ``w > 0``.
    Edges beyond ``r_out`` have ``w = 1`` and change nothing.

    Args:
        r: edge lengths ``[E]`` in A.
        edge_dst: ``[E]`` atom owning each edge (the neighbour list is symmetric, so this is every neighbour).
        n_atoms: number of atoms N.
    Returns:
        ``[N]`` gates in ``[0, 1]``.
    """
    w = smoothstep7(_bridge_t(r, r_in, r_out))
    positive = w > 0
    log_w = torch.log(torch.where(positive, w, torch.ones_like(w)))
    log_sum = torch.zeros(n_atoms, dtype=r.dtype, device=r.device).index_add(0, edge_dst, log_w)
    zeros = torch.zeros(n_atoms, dtype=r.dtype, device=r.device).index_add(0, edge_dst, (~positive).to(r.dtype))
    return torch.exp(log_sum) * (zeros == 0).to(r.dtype)
