"""An exact-physics stand-in with DPA4's model interface: a smooth Lennard-Jones pair potential in torch.

It exists to test the optimisers and integrators (whose correctness does not depend on the potential) against
ASE's own, independent ``ase.calculators.lj.LennardJones(smooth=True)``: the energy here is the same function,
``E = 1/2 sum_{i != j} 4 eps ((sigma/r)^12 - (sigma/r)^6) * c(r^2)`` with ASE's C^1 cutoff ``c`` that goes from
1 at ``ro`` to 0 at ``rc``. Forces and stress come from autograd, so they are exact derivatives.

Two other cutoff switches serve the smoothness tests, which need a pair energy whose derivatives are continuous
to higher order (``switch="envelope"``: the C^3 polynomial envelope ``E_5(r / rc)`` of the DPA4 spec) and one
that is deliberately discontinuous at the cutoff (``switch="step"``), to show that a smoothness check can fail.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dpa4_core.data.batch import AtomsBatch


#: cutoff switches: ASE's C^1 ``smooth=True`` switch, the C^3 polynomial envelope, or a step at ``cutoff``
SWITCHES = ("ase", "envelope", "step")


class PairConfigError(ValueError):
    """A Lennard-Jones parameter with a value the model cannot use (the message names it)."""


@dataclass(frozen=True)
class PairConfig:
    """Parameters in eV and A; ``cutoff`` is what neighbour lists need (same name as ``DPA4Config.cutoff``)."""

    sigma: float = 2.4
    epsilon: float = 0.2
    cutoff: float = 6.0
    ro: float | None = None  # start of the cutoff switch; ASE's default is 0.66 * rc
    switch: str = "ase"  # one of SWITCHES

    def __post_init__(self) -> None:
        if self.switch not in SWITCHES:
            raise PairConfigError(f"switch={self.switch!r}; allowed: {', '.join(SWITCHES)}")

    @property
    def switch_start(self) -> float:
        return 0.66 * self.cutoff if self.ro is None else self.ro


class LennardJones(torch.nn.Module):
    """Smooth Lennard-Jones over an :class:`AtomsBatch`, with the DPA4 call signature and outputs.

    ``model(batch, compute_forces=True, compute_stress=True)`` returns ``energy [F]``, ``atom_energy [N]``,
    ``forces [N, 3]``, ``stress [F, 3, 3]`` and ``virial [F, 3, 3]`` (eV, eV/A, eV/A^3 with ASE's sign; zeros for
    non-periodic frames), in the batch's dtype. Edges beyond ``cutoff`` contribute exactly zero, so a list built
    with a skin gives the same result.
    """

    def __init__(self, sigma: float = 2.4, epsilon: float = 0.2, cutoff: float = 6.0, ro: float | None = None,
                 switch: str = "ase"):
        super().__init__()
        self.config = PairConfig(sigma=sigma, epsilon=epsilon, cutoff=cutoff, ro=ro, switch=switch)
        # A dummy buffer so `.to(dtype)` and `next(model.buffers())` behave like a real model.
        self.register_buffer("_dtype_probe", torch.zeros(()))

    def pair_energy(self, r2: torch.Tensor) -> torch.Tensor:
        """Pair energy [eV] as a function of the squared distance ``r2`` [A^2] (any shape)."""
        c = self.config
        rc2, ro2 = c.cutoff**2, c.switch_start**2
        inside = r2 < rc2
        safe = torch.where(inside, r2, torch.full_like(r2, rc2))
        c6 = (c.sigma**2 / safe) ** 3
        lj = 4 * c.epsilon * (c6 * c6 - c6)
        if c.switch == "step":
            return torch.where(inside, lj, torch.zeros_like(r2))
        if c.switch == "envelope":
            x = safe.sqrt() / c.cutoff
            envelope = (1 - x) ** 4 * (1 + 4 * x + 10 * x**2 + 20 * x**3 + 35 * x**4)
            return torch.where(inside, lj * envelope, torch.zeros_like(r2))
        ramp = (rc2 - safe) ** 2 * (rc2 + 2 * safe - 3 * ro2) / (rc2 - ro2) ** 3
        switch = torch.where(safe < ro2, torch.ones_like(safe), ramp)
        return torch.where(inside, lj * switch, torch.zeros_like(r2))

    def forward(self, batch: AtomsBatch, compute_forces: bool = True, compute_stress: bool = True) -> dict:
        n_frames = batch.n_frames
        dtype = batch.positions.dtype
        positions = batch.positions
        cell = batch.cell
        strain = torch.zeros(n_frames, 3, 3, dtype=dtype, device=positions.device)
        need_grad = compute_forces or compute_stress
        with torch.enable_grad():
            if need_grad:
                positions = positions.detach().requires_grad_(compute_forces)
                strain.requires_grad_(compute_stress)
            # Symmetric strain applied to positions and cell: dE/d(strain) = V * sigma (ASE's sign).
            sym = 0.5 * (strain + strain.transpose(1, 2))
            eye = torch.eye(3, dtype=dtype, device=positions.device)
            deform = eye + sym
            positions_s = torch.einsum("ni,nij->nj", positions, deform[batch.frame])
            cell_s = torch.bmm(cell, deform)
            vec = batch.edge_vectors(positions_s, cell_s)
            pair = self.pair_energy((vec * vec).sum(-1))
            atom_energy = torch.zeros(batch.n_atoms, dtype=dtype, device=positions.device)
            atom_energy = atom_energy.index_add(0, batch.edge_dst, 0.5 * pair)
            energy = torch.zeros(n_frames, dtype=dtype, device=positions.device).index_add(0, batch.frame, atom_energy)
            inputs = [t for t, flag in ((positions, compute_forces), (strain, compute_stress)) if flag]
            grads = torch.autograd.grad(energy.sum(), inputs) if inputs else []
        out = {"energy": energy.detach(), "atom_energy": atom_energy.detach()}
        grads = list(grads)
        if compute_forces:
            out["forces"] = -grads.pop(0)
        if compute_stress:
            de_dstrain = grads.pop(0)
            volume = batch.volume()
            periodic = batch.pbc.all(dim=1)
            safe_volume = torch.where(periodic, volume, torch.ones_like(volume))
            stress = torch.where(periodic[:, None, None], de_dstrain / safe_volume[:, None, None], 0.0)
            out["stress"] = stress
            out["virial"] = -stress * volume[:, None, None]
        return out
