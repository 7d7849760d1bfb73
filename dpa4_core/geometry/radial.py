"""Sinc radial basis with learnable frequencies and the radial MLP (spec section 1).

``phi_n(r) = sin(w_n r) / r * E_7(r / r_c)`` with ``w_n`` initialised to ``n pi / r_c``; written with ``sinc``
so ``r -> 0`` is finite. The radial features ``rho_ij = (MLP(phi) + T[Z_src] + T[Z_dst]) * E_5(r / r_c)``
have one slice per degree, shape ``[E, L+1, C]``, and vanish (with three derivatives) at the cutoff.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from dpa4_core.geometry.envelope import polynomial_envelope


class RadialBasis(nn.Module):
    """``phi_n(r) = sin(w_n r)/r * E_7(r/r_c)``, ``n = 1..n_radial``, learnable ``w_n`` (1/A).

    Args:
        n_radial: number of functions.
        cutoff: r_c in A.
    """

    def __init__(self, n_radial: int, cutoff: float) -> None:
        super().__init__()
        self.cutoff = float(cutoff)
        self.frequencies = nn.Parameter(torch.arange(1, n_radial + 1, dtype=torch.float32) * math.pi / cutoff)
        # sqrt(2/r_c) makes the initial functions orthonormal on [0, r_c] (with weight r^2), i.e. O(1) values.
        self.prefactor = math.sqrt(2.0 / cutoff)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        """``r [E]`` (A) -> ``[E, n_radial]``."""
        w = self.frequencies.to(r.dtype)
        # sin(w r)/r = w sinc(w r / pi): finite and smooth at r = 0.
        values = w * torch.sinc(r[:, None] * w / math.pi)
        return self.prefactor * values * polynomial_envelope(r / self.cutoff, 7)[:, None]


class RadialEmbedding(nn.Module):
    """Per-edge radial features ``rho [E, L+1, C]`` from the basis and the two element types.

    Args:
        n_radial: basis size.
        hidden: MLP hidden width.
        lmax: L (one output slice per degree l = 0..L).
        channels: C.
        cutoff: r_c in A.
        n_elements: element table size (119).
        separate_edge_types: deepmd-kit's variant (``DPA4Config.embedding = "deepmd"``): an MLP without biases and
            ``rho = MLP(phi) * E_5`` without the edge-type term, which :meth:`edge_type_term` gives apart (it
            enters only the blocks' radial features, not enveloped).
        hidden_norm: an uncentred RMS norm on the hidden layer (deepmd-kit's ``edge_norm``).
    """

    def __init__(self, n_radial: int, hidden: int, lmax: int, channels: int, cutoff: float, n_elements: int = 119,
                 separate_edge_types: bool = False, hidden_norm: bool = False):
        super().__init__()
        from dpa4_core.nn.norm import RMSNorm

        self.lmax, self.channels, self.cutoff = lmax, channels, float(cutoff)
        self.separate_edge_types = separate_edge_types
        self.basis = RadialBasis(n_radial, cutoff)
        bias = not separate_edge_types
        norm = [RMSNorm((hidden,))] if hidden_norm else []  # deepmd-kit's edge_norm: RMS norm before the SiLU
        self.mlp = nn.Sequential(nn.Linear(n_radial, hidden, bias=bias), *norm, nn.SiLU(),
                                 nn.Linear(hidden, (lmax + 1) * channels, bias=bias))
        self.edge_types = nn.Embedding(n_elements, channels)
        nn.init.normal_(self.edge_types.weight, std=0.5)

    def forward(
        self, r: torch.Tensor, envelope: torch.Tensor, numbers_src: torch.Tensor, numbers_dst: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Radial basis and features.

        Args:
            r: bridged distances ``[E]`` (A).
            envelope: ``E_5(r / r_c)`` ``[E]``.
            numbers_src, numbers_dst: atomic numbers of the edge ends ``[E]``.
        Returns:
            ``(phi [E, n_radial], rho [E, L+1, C])``; ``rho`` is 0 beyond the cutoff.
        """
        phi = self.basis(r)
        rho = self.mlp(phi).view(-1, self.lmax + 1, self.channels)
        if self.separate_edge_types:
            return phi, rho * envelope[:, None, None].to(rho.dtype)
        types = self.edge_type_term(numbers_src, numbers_dst)
        return phi, (rho + types[:, None, :]) * envelope[:, None, None].to(rho.dtype)

    def edge_type_term(self, numbers_src: torch.Tensor, numbers_dst: torch.Tensor) -> torch.Tensor:
        """``T[Z_src] + T[Z_dst]`` ``[E, C]``."""
        return self.edge_types(numbers_src) + self.edge_types(numbers_dst)
