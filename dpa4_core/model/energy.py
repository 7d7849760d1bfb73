"""DPA4: atomic numbers + edge vectors -> per-atom energies; forces and stress by one autograd pass (spec 0-5).

``E = sum_i [ c(d_i) (E_NN,i + s[Z_i]) + E_ZBL,i + b[Z_i] ]`` where ``c(d) = tanh(d)`` of the smooth degree
``d_i = sum_j E_5(r_ij)^2`` switches the learned part off, smoothly, as an atom loses its last neighbour: an
isolated atom has exactly its bias energy ``b[Z]`` and zero force, and a dimer pulled apart goes continuously to
``b[Z_i] + b[Z_j]``. In bulk ``d ~ 10`` and ``c = 1`` to machine precision. With isolated-atom energies ``E0`` as
the bias ``b``, the fixed per-element shift ``s`` (``energy_shift``, 0 unless set; see ``dpa4_core.model.bias``)
carries the bulk's cohesive energy, so the network only learns a residual and an atom loses that energy smoothly as
its neighbours leave.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from dpa4_core.config import DPA4Config
from dpa4_core.geometry.edge_cache import EdgeCache, build_edge_cache
from dpa4_core.geometry.radial import RadialEmbedding
from dpa4_core.model.derivatives import forces_and_virial, stress_from_virial
from dpa4_core.model.domain import check_neighbor_cap
from dpa4_core.model.glu_readout import GLUReadout
from dpa4_core.model.zbl import ZBL
from dpa4_core.nn.block import InteractionBlock
from dpa4_core.nn.block_deepmd import DeepmdBlock
from dpa4_core.nn.ffn_so3 import SO3CrossGrid, SO3GridFFN
from dpa4_core.nn.embedding import NodeEmbedding
from dpa4_core.nn.norm import ScalarNorm

N_ELEMENTS = 119


class EnergyReadout(nn.Module):
    """l = 0 channels -> norm -> residual SiLU MLP -> linear head: ``[N, C] -> [N]`` (eV)."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.norm = ScalarNorm(channels)
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.SiLU(), nn.Linear(hidden, channels))
        self.head = nn.Linear(channels, 1)
        nn.init.normal_(self.head.weight, std=0.1 / math.sqrt(channels))

    def forward(self, scalars: torch.Tensor) -> torch.Tensor:
        s = self.norm(scalars).to(scalars.dtype)
        s = s + self.mlp(s)
        return self.head(s).squeeze(-1)


class DPA4(nn.Module):
    """The DPA4 interatomic potential.

    Args:
        config: architecture (default ``DPA4Config()``, the "air" sizes).

    Buffers: ``energy_bias [119]`` (eV per element, index = atomic number; fitted by
    ``dpa4_core.model.bias.fit_energy_bias``, or isolated-atom energies E0), ``energy_shift [119]`` (eV, added to the
    switched network term; the cohesive-energy offset when ``energy_bias`` holds E0, else 0). Every element 1..118 has an embedding, so fine-tuning can add any.
    """

    def __init__(self, config: DPA4Config | None = None) -> None:
        super().__init__()
        config = DPA4Config() if config is None else config
        if not isinstance(config, DPA4Config):
            raise TypeError(f"config must be a DPA4Config, got {type(config).__name__}")
        self.config = config
        c = config
        deepmd = c.embedding == "deepmd"
        self.radial = RadialEmbedding(c.n_radial, c.radial_hidden, c.lmax, c.channels, c.cutoff, c.n_elements,
                                      separate_edge_types=deepmd, hidden_norm=c.edge_norm)
        self.embedding = NodeEmbedding(c.channels, c.lmax, c.n_radial, c.env_dim, c.env_axis, c.n_elements,
                                       c.scalar_density, deepmd_filter=deepmd, env_type_dim=c.env_type_dim,
                                       env_radial_dim=c.env_radial_dim, env_hidden=c.env_hidden,
                                       film_norm=c.edge_norm)
        if c.block == "deepmd":
            def ffn() -> nn.Module:
                return InteractionBlock.make_ffn(c.channels, c.lmax, c.ffn, c.ffn_hidden, c.kmax,
                                                 c.ffn_scalar_hidden, c.grid_branches)
            self.blocks = nn.ModuleList(
                DeepmdBlock(c.channels, c.lmax, c.mmax, c.so2_layers, c.attn_heads, c.rank, ffn(),
                            SO3CrossGrid(c.channels, c.lmax, c.kmax, c.n_focus) if c.message_node_so3 else None,
                            [ffn() for _ in range(c.ffn_blocks - 1)], message_eps=1e-5 if c.edge_norm else 1.0,
                            focus=c.n_focus, focus_norm=c.edge_norm, radial_mode=c.radial_so2_mode)
                for _ in range(c.n_blocks))
        else:
            self.blocks = nn.ModuleList(
                InteractionBlock(c.channels, c.hidden, c.lmax, c.mmax, c.so2_layers, c.rank, c.attn_heads,
                                 c.attn_dim, c.ffn, c.ffn_hidden, c.kmax, c.ffn_scalar_hidden)
                for _ in range(c.n_blocks))
        if c.readout == "deepmd":
            grid = None if c.readout_grid == "none" else SO3GridFFN(c.channels, c.ffn_hidden, c.lmax, c.kmax,
                                                                    c.readout_grid)
            self.readout = GLUReadout(c.channels, c.ffn_hidden, c.readout_hidden, grid)
        else:
            self.readout = EnergyReadout(c.channels, c.readout_hidden)
        self.zbl = ZBL(c.cutoff, r_min=c.r_out, taper_end=c.zbl_taper_end, style=c.zbl_style) if c.zbl else None
        self.register_buffer("energy_bias", torch.zeros(N_ELEMENTS))
        self.register_buffer("energy_shift", torch.zeros(N_ELEMENTS))

    def edge_cache(self, edge_vec: torch.Tensor, edge_src: torch.Tensor, edge_dst: torch.Tensor, n_atoms: int,
                   edge_roll: torch.Tensor | None = None) -> EdgeCache:
        """The per-edge geometry shared by every block (see ``geometry/edge_cache.py``)."""
        c = self.config
        return build_edge_cache(edge_vec, edge_src, edge_dst, n_atoms, cutoff=c.cutoff, r_in=c.r_in, r_out=c.r_out,
                                lmax=c.lmax, mmax=c.mmax, edge_roll=edge_roll, bridging=c.bridging,
                                gate_from_bridged=c.embedding == "deepmd")

    def atom_energies(
        self,
        numbers: torch.Tensor,
        edge_vec: torch.Tensor,
        edge_src: torch.Tensor,
        edge_dst: torch.Tensor,
        edge_roll: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Per-atom energies ``[N]`` (eV): network + ZBL + bias. A pure tensor function (traceable by make_fx).

        Args:
            numbers: ``[N]`` atomic numbers (int64).
            edge_vec: ``[E, 3]`` ``r_ij = pos[src] - pos[dst] + shift @ cell`` (A), fp32 or fp64.
            edge_src, edge_dst: ``[E]`` int64.
            edge_roll: optional ``[E]`` roll angles of the edge frames (augmentation; E does not depend on it).
        """
        n_atoms = numbers.shape[0]  # from the tensor, so the size stays symbolic under make_fx(tracing_mode="symbolic")
        cache = self.edge_cache(edge_vec, edge_src, edge_dst, n_atoms, edge_roll)
        phi, rho = self.radial(cache.bridged, cache.envelope, numbers[edge_src], numbers[edge_dst])
        x = self.embedding(numbers, cache, phi, rho)
        if self.radial.separate_edge_types:  # deepmd-kit: the blocks see the edge-type term, not enveloped
            rho = rho + self.radial.edge_type_term(numbers[edge_src], numbers[edge_dst]).to(rho.dtype)[:, None]
        block_radial = rho if self.config.block == "deepmd" else rho[:, 0]  # deepmd's blocks read every degree
        for block in self.blocks:
            x = block(x, cache, block_radial)
        scalars = x[:, 0]
        network = (self.readout(scalars, x) if self.config.readout == "deepmd" else self.readout(scalars))
        # The cohesive shift (E0 reference models; 0 otherwise) joins the network term that the degree switch
        # turns off as an atom loses its neighbours, so an isolated atom is exactly energy_bias = E0.
        network = network.to(edge_vec.dtype) + self.energy_shift.to(edge_vec.dtype)[numbers]
        if self.config.degree_switch:
            network = network * torch.tanh(cache.degree)
        energy = network + self.energy_bias.to(edge_vec.dtype)[numbers]
        if self.zbl is not None:
            energy = energy + self.zbl(cache.length, numbers, edge_src, edge_dst, n_atoms)
        return energy

    def forward(
        self,
        batch,
        compute_forces: bool = True,
        compute_stress: bool = True,
        random_roll: bool = False,
        roll_generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        """Energies and their exact derivatives for an :class:`~dpa4_core.data.batch.AtomsBatch`.

        Args:
            batch: the batch (positions in the model's dtype).
            compute_forces: return ``forces [N, 3]`` (eV/A).
            compute_stress: return ``stress [F, 3, 3]`` (eV/A^3, ASE sign; 0 for non-periodic frames) and
                ``virial [F, 3, 3]`` (eV).
            random_roll: rotate every edge frame by a random angle about z (training augmentation).
            roll_generator: RNG for the roll angles (implies ``random_roll``).
        Returns:
            dict with ``energy [F]``, ``atom_energy [N]`` and the requested derivatives, in the batch dtype.
            The graph is kept (``create_graph``) in training mode so a force loss can be backpropagated.
        """
        need_grad = compute_forces or compute_stress
        check_neighbor_cap(self.config.neighbor_cap, batch.edge_dst, batch.n_atoms)
        with torch.set_grad_enabled(need_grad or torch.is_grad_enabled()):
            edge_vec = batch.edge_vectors()
            if need_grad and not edge_vec.requires_grad:
                edge_vec.requires_grad_(True)
            roll = None
            if random_roll or roll_generator is not None:
                roll = 2 * math.pi * torch.rand(edge_vec.shape[0], generator=roll_generator, dtype=edge_vec.dtype,
                                                device=edge_vec.device)
            atom_energy = self.atom_energies(batch.numbers, edge_vec, batch.edge_src, batch.edge_dst, edge_roll=roll)
            energy = torch.zeros(batch.n_frames, dtype=atom_energy.dtype, device=atom_energy.device)
            out = {"energy": energy.index_add(0, batch.frame, atom_energy), "atom_energy": atom_energy}
            if need_grad:
                forces, virial = forces_and_virial(
                    atom_energy, edge_vec, batch.edge_src, batch.edge_dst, batch.n_atoms,
                    edge_frame=batch.frame[batch.edge_dst], n_frames=batch.n_frames,
                    create_graph=self.training, compute_virial=compute_stress,
                )
                if compute_forces:
                    out["forces"] = forces
                if compute_stress:
                    out["virial"] = virial
                    out["stress"] = stress_from_virial(virial, batch.cell, batch.pbc)
        return out
