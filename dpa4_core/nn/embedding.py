"""Initial node features (spec section 2).

* l = 0: ``x_i0 = gamma * T[Z_i] + beta`` (FiLM), ``gamma = 1 + exp(lambda) tanh(N(W vec G_i))``,
  ``beta = exp(lambda') tanh(N(W' vec G_i))``, ``lambda, lambda'`` starting at ``log 0.01`` (near identity), and
  ``G_i = A_i^T A_i[:, :K]`` the rotation-invariant Gram matrix of the DeePMD-style environment matrix
  ``A_i = n_i sum_j eta_j u_ij (x) g(r_ij, Z_i, Z_j)``, ``u = (s, s r_hat)``, ``s = E_5(r) / r``; plus (our
  addition, ``scalar_density``) the radial density ``n_i sum_j eta_j rho_ij,0``.
* l >= 1: ``x_i,lm = n_i sum_j eta_j Y_lm(r_hat_ij) rho_ij,l`` with ``Y_l`` the m = 0 row of ``D^l(q_ij)``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from dpa4_core.geometry.edge_cache import EdgeCache
from dpa4_core.nn.norm import RMSNorm, ScalarNorm
from dpa4_core.nn.scatter import scatter_sum


class NodeEmbedding(nn.Module):
    """``numbers [N]`` + edge cache + radial features -> packed node features ``[N, (L+1)^2, C]``.

    Args:
        channels: C.
        lmax: L.
        n_radial: radial basis size.
        env_dim: G, width of the environment filter ``g``.
        env_axis: K, Gram-matrix columns.
        n_elements: element table size.
        scalar_density: add ``n_i sum_j eta_j rho_ij,0`` to the l = 0 features (``DPA4Config.scalar_density``).
        deepmd_filter: deepmd-kit's environment filter and FiLM (``DPA4Config.embedding = "deepmd"``): ``g =
            W2 SiLU(W1 [R2 SiLU(R1 phi), T_env[Z_src], T_env[Z_dst]])`` without biases, widths ``env_radial_dim``,
            ``env_type_dim``, ``env_hidden``; logits without bias, uncentred RMS-normed with ``film_norm``
            (deepmd-kit's ``edge_norm``); one scale and one shift strength.
    """

    def __init__(self, channels: int, lmax: int, n_radial: int, env_dim: int, env_axis: int,
                 n_elements: int = 119, scalar_density: bool = True, deepmd_filter: bool = False,
                 env_type_dim: int = 8, env_radial_dim: int = 32, env_hidden: int = 64, film_norm: bool = False
                 ) -> None:
        super().__init__()
        self.scalar_density, self.deepmd_filter = scalar_density, deepmd_filter
        self.channels, self.lmax, self.env_dim, self.env_axis = channels, lmax, env_dim, env_axis
        self.types = nn.Embedding(n_elements, channels)
        nn.init.normal_(self.types.weight, std=1.0)
        if deepmd_filter:
            self.filter_radial = nn.Sequential(nn.Linear(n_radial, env_radial_dim, bias=False), nn.SiLU(),
                                               nn.Linear(env_radial_dim, env_radial_dim, bias=False))
            self.filter_types = nn.Embedding(n_elements, env_type_dim)
            self.filter_mlp = nn.Sequential(nn.Linear(env_radial_dim + 2 * env_type_dim, env_hidden, bias=False),
                                            nn.SiLU(), nn.Linear(env_hidden, env_dim, bias=False))
            self.film = nn.Linear(env_dim * env_axis, 2 * channels, bias=False)
            self.film_norm = RMSNorm((2, channels)) if film_norm else nn.Identity()  # deepmd-kit's edge_norm
            self.log_scale = nn.Parameter(torch.full((2, 1), math.log(0.01)))
            return
        self.filter_radial = nn.Sequential(nn.Linear(n_radial, env_dim), nn.SiLU(), nn.Linear(env_dim, env_dim))
        self.filter_src = nn.Embedding(n_elements, env_dim)
        self.filter_dst = nn.Embedding(n_elements, env_dim)
        self.film = nn.Linear(env_dim * env_axis, 2 * channels)
        # eps = 1: the Gram matrix -> 0 as the last neighbour leaves; a small eps would amplify it (a near-jump).
        self.film_norm = ScalarNorm(channels, eps=1.0, affine=False)
        self.log_scale = nn.Parameter(torch.full((2, channels), math.log(0.01)))

    def _filter(self, numbers: torch.Tensor, src: torch.Tensor, dst: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
        """The per-edge environment filter ``g [E, G]``."""
        if self.deepmd_filter:
            types = torch.cat([self.filter_types(numbers[src]), self.filter_types(numbers[dst])], dim=1)
            return self.filter_mlp(torch.cat([self.filter_radial(phi), types.to(phi.dtype)], dim=1))
        return self.filter_radial(phi) + self.filter_src(numbers[src]) + self.filter_dst(numbers[dst])

    def forward(self, numbers: torch.Tensor, cache: EdgeCache, phi: torch.Tensor, rho: torch.Tensor) -> torch.Tensor:
        """Args: ``numbers [N]``, ``cache``, ``phi [E, n_radial]`` (basis of r~), ``rho [E, L+1, C]``."""
        src, dst, n_atoms = cache.edge_src, cache.edge_dst, cache.n_atoms
        dtype = torch.promote_types(rho.dtype, torch.float32)  # sums over neighbours in >= fp32 (bf16 autocast)
        rho = rho.to(dtype)
        # Environment matrix A_i [N, 4, G]
        s = (cache.envelope / cache.bridged).to(dtype)
        u = torch.cat([s[:, None], s[:, None] * cache.unit.to(dtype)], dim=1)  # [E, 4]
        g = self._filter(numbers, src, dst, phi.to(dtype))
        weight = (cache.gate[src] * cache.inv_sqrt_degree[dst]).to(dtype)
        outer = (weight[:, None, None] * u[:, :, None]) * g[:, None, :]
        env = scatter_sum(outer, dst, n_atoms)
        gram = env.transpose(1, 2) @ env[:, :, : self.env_axis]  # [N, G, K], invariant
        film = self.film(gram.reshape(n_atoms, self.env_dim * self.env_axis)).view(n_atoms, 2, self.channels)
        film = self.film_norm(film)
        film = torch.exp(self.log_scale.to(film.dtype)) * torch.tanh(film)
        scalars = (1.0 + film[:, 0]) * self.types(numbers) + film[:, 1]
        if self.scalar_density:  # the l = 0 term of the sum below (Y_00 = 1): a density, not only an average
            scalars = scalars + scatter_sum(weight[:, None] * rho[:, 0], dst, n_atoms)
        if self.lmax == 0:
            return scalars[:, None].to(dtype)
        # l >= 1 from the harmonics of the edges: one broadcast product per degree, so backward keeps
        # rho [E, L+1, C] rather than its (2l+1)-fold expanded rows.
        weighted = weight[:, None] * cache.harmonics[:, 1:].to(dtype)  # [E, P-1]
        messages = torch.cat([weighted[:, l * l - 1:(l + 1) ** 2 - 1, None] * rho[:, l:l + 1]
                              for l in range(1, self.lmax + 1)], dim=1)  # [E, P-1, C]
        higher = scatter_sum(messages, dst, n_atoms)
        return torch.cat([scalars[:, None].to(higher.dtype), higher], dim=1)
