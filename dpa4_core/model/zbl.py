"""Tapered ZBL pair repulsion (spec section 5).

``V(r) = k_e Z_i Z_j / r * Phi(r / a)``, ``a = 0.46850 / (Z_i^0.23 + Z_j^0.23)`` A (universal screening length),
``Phi(x) = 0.18175 e^(-3.19980x) + 0.50986 e^(-0.94229x) + 0.28022 e^(-0.40290x) + 0.02817 e^(-0.20162x)``.

Raw ZBL is still ~1 meV for O-O at 6 A and ~1 eV for W-W at the bond length, so it is tapered: the taper is
``1 - w(t)`` with ``t = (r - r_a) / (r_b - r_a)`` clamped to [0, 1], ``r_b = min(R_cov,i + R_cov,j, r_c)``
(ASE covalent radii), ``r_a = r_b / 2`` and ``w`` the C^3 smoothstep. So ZBL acts only at
distances shorter than a covalent bond, is untouched at very short range (where the network, which sees
``r~ >= r_in``, is blind) and is exactly 0 beyond ``r_b <= r_c``.
"""

from __future__ import annotations

import torch
from ase.data import covalent_radii
from torch import nn

from dpa4_core.geometry.envelope import smoothstep7

COULOMB_EV_A = 14.399645  # e^2 / (4 pi eps0) in eV A
ZBL_LENGTH_A = 0.46850
ZBL_COEFFICIENTS = (0.18175, 0.50986, 0.28022, 0.02817)
ZBL_EXPONENTS = (3.19980, 0.94229, 0.40290, 0.20162)


def zbl_potential(r: torch.Tensor, z_i: torch.Tensor, z_j: torch.Tensor) -> torch.Tensor:
    """Untapered ZBL pair energy ``V(r)`` in eV; ``r [E]`` in A, ``z_i, z_j [E]`` atomic numbers (any dtype)."""
    zi, zj = z_i.to(r.dtype), z_j.to(r.dtype)
    a = ZBL_LENGTH_A / (zi**0.23 + zj**0.23)
    x = r / a
    phi = sum(c * torch.exp(-e * x) for c, e in zip(ZBL_COEFFICIENTS, ZBL_EXPONENTS))
    return COULOMB_EV_A * zi * zj / r * phi


class ZBL(nn.Module):
    """Per-atom tapered ZBL energy ``E_i = 1/2 sum_{j} V(r_ij) taper(r_ij)`` (eV).

    Args:
        cutoff: model cutoff r_c in A (the taper ends at ``min(R_cov,i + R_cov,j, r_c)``).
    """

    def __init__(self, cutoff: float) -> None:
        super().__init__()
        self.cutoff = float(cutoff)
        # persistent=False: a constant table, not a learned weight; kept out of checkpoints.
        self.register_buffer("covalent_radii", torch.tensor(covalent_radii, dtype=torch.float32), persistent=False)

    def taper(self, r: torch.Tensor, z_i: torch.Tensor, z_j: torch.Tensor) -> torch.Tensor:
        """Switch ``[E]``: 1 below half the covalent-radius sum, C^3 down to 0 at the sum (capped at r_c)."""
        radii = self.covalent_radii.to(r.dtype)
        r_b = (radii[z_i] + radii[z_j]).clamp(max=self.cutoff)
        r_a = 0.5 * r_b
        t = ((r - r_a) / (r_b - r_a)).clamp(0.0, 1.0)
        return 1.0 - smoothstep7(t)

    def forward(self, r: torch.Tensor, numbers: torch.Tensor, edge_src: torch.Tensor, edge_dst: torch.Tensor,
                n_atoms: int) -> torch.Tensor:
        """Per-atom ZBL energies ``[N]`` from true edge lengths ``r [E]`` (A); each pair is listed twice."""
        z_i, z_j = numbers[edge_dst], numbers[edge_src]
        pair = zbl_potential(r, z_i, z_j) * self.taper(r, z_i, z_j)
        return torch.zeros(n_atoms, dtype=r.dtype, device=r.device).index_add(0, edge_dst, 0.5 * pair)
