"""Models for the training tests: the real tiny DPA4 (seeded, fp32).

Until the DPA4 model landed, a learnable conservative pair potential with the same interface stood in
(``PairStandIn``); it stays for the tests of the loop that do not need the real architecture to be fast.
"""

from __future__ import annotations

import dataclasses

import torch


@dataclasses.dataclass(frozen=True)
class PairStandInConfig:
    cutoff: float = 5.0
    r_in: float = 0.5
    hidden: int = 16

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class PairStandIn(torch.nn.Module):
    """``E = sum_i b[Z_i] + sum_edges MLP(sinc basis(r), t[Z_j] * t[Z_i]) * envelope(r)``; forces by autograd."""

    def __init__(self, config: PairStandInConfig = PairStandInConfig()):
        super().__init__()
        self.config = config
        self.embedding = torch.nn.Embedding(119, config.hidden)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(8 + config.hidden, config.hidden), torch.nn.SiLU(),
                                       torch.nn.Linear(config.hidden, 1))
        self.register_buffer("energy_bias", torch.zeros(119))
        self.blocks = torch.nn.ModuleList()

    def atom_energies(self, numbers, edge_vec, edge_src, edge_dst, n_atoms):
        r = torch.sqrt((edge_vec**2).sum(-1) + 1e-14)
        x = r / self.config.cutoff
        env = (1 - x).clamp(min=0) ** 4 * (1 + 4 * x)
        n = torch.arange(1, 9, dtype=r.dtype, device=r.device)
        basis = torch.sin(n * torch.pi * x[:, None]) / r[:, None] * env[:, None]
        feat = torch.cat([basis, self.embedding(numbers[edge_src]) * self.embedding(numbers[edge_dst])], -1)
        pair = self.mlp(feat).squeeze(-1) * env
        return self.energy_bias.to(r.dtype)[numbers].index_add(0, edge_dst, pair)

    def forward(self, batch, compute_forces: bool = True, compute_stress: bool = True):
        from dpa4_core.train.compile import make_predictor

        return make_predictor(self)(batch)


def small_model(seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """A seeded tiny DPA4 (the stand-in while ``dpa4_core.model.energy`` does not exist yet)."""
    torch.manual_seed(seed)
    try:
        from dpa4_core import DPA4, DPA4Config
    except ImportError:
        return PairStandIn().to(dtype)
    return DPA4(DPA4Config.preset("tiny")).to(dtype)
