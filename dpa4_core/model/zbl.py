"""Tapered ZBL pair repulsion (spec section 5).

``V(r) = k_e Z_i Z_j / r * Phi(r / a)``, ``a = 0.46850 / (Z_i^0.23 + Z_j^0.23)`` A (universal screening length),
``Phi(x) = 0.18175 e^(-3.19980x) + 0.50986 e^(-0.94229x) + 0.28022 e^(-0.40290x) + 0.02817 e^(-0.20162x)``.

Raw ZBL is still ~1 meV for O-O at 6 A and ~1 eV for W-W at the bond length, so it is tapered: the taper is
``1 - w(t)`` with ``t = (r - r_a) / (r_b - r_a)`` clamped to [0, 1], ``r_b = f (R_cov,i + R_cov,j)`` (ASE
covalent radii, ``f = DPA4Config.zbl_taper_end``) kept within ``[r_out, r_c]``, ``r_a = r_b / 2`` and ``w`` the C^3
smoothstep. So ZBL is untouched at very short range, covers the zone-bridging window ``r < r_out`` (where the
network, which sees ``r~ >= r_in``, is blind or nearly so) and is exactly 0 beyond ``r_b``.

Where to end it is a trade-off, measured on real data (tiny preset):
- ``f = 1`` (default): the covalent-radius sum is a single-bond length, and bcc metals sit at 0.85 of it, so ZBL
  gives them a stiff pair repulsion near their bonds. The network learns their equation of state faster with it:
  Mo-Nb-Ta-W starter recipe, validation stress MAE after 400 steps 1.3 GPa with f = 1 and 1.85 GPa (not
  improving) with f = 0.5.
- ``f = 0.5``: double and triple bonds are shorter than the sum (C=O 0.88, triple bonds about 0.78 of it), and at
  f = 1 ZBL put 3.4 eV/A force RMS on acetylacetone at 300 K, three times the DFT forces, which the network first
  had to learn to cancel: test force RMSE after 400 steps 271 meV/A with f = 1, 147 with f = 0.5. At 0.5, ZBL adds
  exactly nothing on those frames nor on any vendored Mo-Nb-Ta-W AIMD frame (the closest pair, Ta-Ta, is at 0.59
  of the sum), and forces on Mo-Nb-Ta-W learn equally well (306 vs 312 meV/A after 400 steps).
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


# deepmd-kit DPA4's ZBL constants (its InnerPotential): rounded differently from the above.
DEEPMD_ZBL = {"coulomb": 14.3996, "length": 0.88534 * 0.5291772109,
              "coefficients": (0.18175, 0.50986, 0.28022, 0.028171), "exponents": (3.1998, 0.94229, 0.4029, 0.20162)}


def zbl_potential(r: torch.Tensor, z_i: torch.Tensor, z_j: torch.Tensor, constants: dict | None = None
                  ) -> torch.Tensor:
    """Untapered ZBL pair energy ``V(r)`` in eV; ``r [E]`` in A, ``z_i, z_j [E]`` atomic numbers (any dtype);
    ``constants``: ``DEEPMD_ZBL`` for deepmd-kit's, default dpa4's."""
    c = constants or {"coulomb": COULOMB_EV_A, "length": ZBL_LENGTH_A, "coefficients": ZBL_COEFFICIENTS,
                      "exponents": ZBL_EXPONENTS}
    zi, zj = z_i.to(r.dtype), z_j.to(r.dtype)
    a = c["length"] / (zi**0.23 + zj**0.23)
    x = r / a
    phi = sum(k * torch.exp(-e * x) for k, e in zip(c["coefficients"], c["exponents"]))
    return c["coulomb"] * zi * zj / r * phi


class ZBL(nn.Module):
    """Per-atom tapered ZBL energy ``E_i = 1/2 sum_{j} V(r_ij) taper(r_ij)`` (eV).

    Args:
        cutoff: model cutoff r_c in A, the taper's latest end.
        r_min: the taper's earliest end in A (the model's ``r_out``: ZBL covers the zone-bridging window).
        taper_end: the taper's end as a fraction of the covalent-radius sum (see the module docstring).
    """

    def __init__(self, cutoff: float, r_min: float = 0.8, taper_end: float = 1.0, style: str = "dpa4") -> None:
        super().__init__()
        if not 0.0 < r_min < cutoff:
            raise ValueError(f"ZBL needs 0 < r_min < cutoff, got r_min={r_min}, cutoff={cutoff}")
        if not taper_end > 0.0:
            raise ValueError(f"ZBL needs taper_end > 0, got {taper_end}")
        self.cutoff, self.r_min, self.taper_end = float(cutoff), float(r_min), float(taper_end)
        self.style = style  # "deepmd": deepmd-kit's ZBL, untapered (every neighbour), its constants, in float64
        # persistent=False: a constant table, not a learned weight; kept out of checkpoints.
        self.register_buffer("covalent_radii", torch.tensor(covalent_radii, dtype=torch.float32), persistent=False)

    def taper(self, r: torch.Tensor, z_i: torch.Tensor, z_j: torch.Tensor) -> torch.Tensor:
        """Switch ``[E]``: 1 below ``r_b / 2``, C^3 down to 0 at ``r_b = taper_end x`` the covalent-radius sum,
        kept within ``[r_min, cutoff]``."""
        radii = self.covalent_radii.to(r.dtype)
        r_b = (self.taper_end * (radii[z_i] + radii[z_j])).clamp(min=self.r_min, max=self.cutoff)
        r_a = 0.5 * r_b
        t = ((r - r_a) / (r_b - r_a)).clamp(0.0, 1.0)
        return 1.0 - smoothstep7(t)

    def forward(self, r: torch.Tensor, numbers: torch.Tensor, edge_src: torch.Tensor, edge_dst: torch.Tensor,
                n_atoms: int) -> torch.Tensor:
        """Per-atom ZBL energies ``[N]`` from true edge lengths ``r [E]`` (A); each pair is listed twice."""
        z_i, z_j = numbers[edge_dst], numbers[edge_src]
        if self.style == "deepmd":
            pair = zbl_potential(r.double(), z_i, z_j, DEEPMD_ZBL).to(r.dtype)
        else:
            pair = zbl_potential(r, z_i, z_j) * self.taper(r, z_i, z_j)
        return torch.zeros(n_atoms, dtype=r.dtype, device=r.device).index_add(0, edge_dst, 0.5 * pair)
