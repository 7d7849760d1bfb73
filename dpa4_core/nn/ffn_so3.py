"""SO(3)-grid FFN of deepmd-kit DPA4 (``DPA4Config.ffn = "so3grid"`` in blocks, and its ``so3_readout`` read-out).

``[u, v] = W1 x`` degree-wise (``C -> 2 K H``, ``K = 2 kmax + 1`` frames in deepmd's order ``0, -1, 1, -2, 2, ..``,
frame-major channels): the coefficients ``c[l, m, k, h]`` of functions on SO(3), ``f(g) = sum c[l,m,k] D^l_mk(g)``
(``k`` outside ``[-l, l]`` unused). A point-wise operation on an exact SO(3) quadrature
(``dpa4_core.geometry.wigner.so3_quadrature``: the integrands are triple products, degree ``<= 3L``, roll frequency
``<= 3 kmax``) is projected back, ``z[l,m,k] = (2l+1) sum_g w_g D^l_mk(g) op(g)``:

- ``"glu"``: ``f_u f_v``;
- ``"mlp"``: ``(A [u, v]) (B [u, v])`` per frame (channel maps ``2H -> 2H``), then ``O`` (``2H -> H``);
- ``"branch"``: ``sum_b r_b (A_b u)(B_b v)`` with ``r = softmax(R [u_0, v_0])`` (scalars), then ``O`` (``H -> H``).

Then ``z <- z * sigmoid(G [u_0, v_0])``, ``z[0, 0, k=0] += SiLU(u_0) v_0`` and ``W2`` (``K H -> C``); ``u_0, v_0``
are the ``l = 0, k = 0`` coefficients. With exact quadrature the result depends on the harmonics' sign convention
only through the signs of the Wigner-D entries: deepmd's ``D = S D_dpa4 S`` (``dpa4_core.io.deepmd_weights.sh_signs``)
so the frame index carries ``S_k`` in the grid matrices here and deepmd's weights map unchanged.
Checked against deepmd-kit's values (tests/core/test_deepmd_released_options.py).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional

from dpa4_core.geometry.wigner import so3_quadrature, wigner_d
from dpa4_core.nn.linear import DegreeLinear

GRID_OPS = ("glu", "mlp", "branch")


def frame_orders(kmax: int) -> list[int]:
    """deepmd-kit's frame order: ``[0, -1, 1, -2, 2, ..]``."""
    return [0, *[k for kk in range(1, kmax + 1) for k in (-kk, kk)]]


def so3_frame_grid(lmax: int, kmax: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``to_grid [G, P, K]`` and ``from_grid [P, K, G]`` (float64), ``P = (L+1)^2``, ``K = 2 kmax + 1``:
    ``to_grid[g, (l, m), k] = S_k D^l_mk(g)`` (zero for ``|k| > l``), ``from_grid = (2l+1) w_g to_grid^T``."""
    k_grid = min(kmax, lmax)
    q, weights = so3_quadrature(max(3 * lmax // 2, k_grid), k_grid, dtype=torch.float64, n_roll=3 * k_grid + 1)
    blocks = wigner_d(q, lmax)
    orders = frame_orders(kmax)
    to_grid = torch.zeros(q.shape[0], (lmax + 1) ** 2, len(orders), dtype=torch.float64)
    from_grid = torch.zeros((lmax + 1) ** 2, len(orders), q.shape[0], dtype=torch.float64)
    for l, block in enumerate(blocks):
        for frame, k in enumerate(orders):
            if abs(k) > l:
                continue
            sign = 1.0 if k == 0 else (-1.0) ** abs(k) * (1.0 if k > 0 else -1.0)
            values = sign * block[:, :, l + k]  # [G, 2l+1]: rows m, column k
            to_grid[:, l * l:(l + 1) ** 2, frame] = values
            from_grid[l * l:(l + 1) ** 2, frame] = (2 * l + 1) * (weights[:, None] * values).T
    return to_grid, from_grid


class SO3GridFFN(nn.Module):
    """``[N, (L+1)^2, C] -> [N, (L+1)^2, C]``, see the module docstring.

    Args: channels C, hidden H, lmax L, kmax (frames ``K = 2 kmax + 1``), op (``GRID_OPS``), branches (``"branch"``).
    """

    def __init__(self, channels: int, hidden: int, lmax: int, kmax: int, op: str = "glu", branches: int = 1) -> None:
        super().__init__()
        if op not in GRID_OPS:
            raise ValueError(f"op must be one of {GRID_OPS}, got {op!r}")
        self.hidden, self.op, self.branches, self.n_frames = hidden, op, branches, 2 * kmax + 1
        self.lift = DegreeLinear(channels, 2 * self.n_frames * hidden, lmax)
        self.scalar_gate = nn.Linear(2 * hidden, hidden, bias=False)
        if op == "mlp":
            self.left, self.right = (nn.Linear(2 * hidden, 2 * hidden, bias=False) for _ in range(2))
            self.out = nn.Linear(2 * hidden, hidden, bias=False)
        elif op == "branch":
            self.left, self.right = (nn.Linear(hidden, branches * hidden, bias=False) for _ in range(2))
            self.router = nn.Linear(2 * hidden, branches, bias=False)
            self.out = nn.Linear(hidden, hidden, bias=False)
        self.project = DegreeLinear(self.n_frames * hidden, channels, lmax, zero_init=True)
        to_grid, from_grid = so3_frame_grid(lmax, kmax)
        self.register_buffer("to_grid", to_grid, persistent=False)
        self.register_buffer("from_grid", from_grid, persistent=False)

    def forward(self, x: torch.Tensor, scalar_only: bool = False) -> torch.Tensor:
        """``[N, P, C] -> [N, P, C]``; with ``scalar_only`` only the ``l = 0`` row, ``[N, 1, C]`` (a read-out's
        need: the projection back from the grid and everything after it run on that row alone)."""
        n, p = x.shape[0], x.shape[1]
        u, v = self.lift(x).view(n, p, 2, self.n_frames, self.hidden).unbind(2)  # [N, P, K, H] each
        scalars = torch.cat([u[:, 0, 0], v[:, 0, 0]], dim=-1)  # [N, 2H]
        if self.op == "mlp":
            fused = torch.cat([u, v], dim=-1)
            u, v = _rows(self.left, fused), _rows(self.right, fused)
        elif self.op == "branch":
            u, v = _rows(self.left, u), _rows(self.right, v)
        to_grid, from_grid = self.to_grid.to(x.dtype), self.from_grid.to(x.dtype)
        product = torch.einsum("gpk,npkc->ngc", to_grid, u) * torch.einsum("gpk,npkc->ngc", to_grid, v)
        if self.op == "branch":
            route = torch.softmax(self.router(scalars), dim=-1)  # [N, B]
            product = torch.einsum("ngbc,nb->ngc", product.view(n, -1, self.branches, self.hidden), route)
        if scalar_only:  # the rows l = 0 of the projection: [1, K, G]
            from_grid, p = from_grid[:1], 1
        z = torch.einsum("pkg,ngc->npkc", from_grid, product)
        if self.op != "glu":
            z = _rows(self.out, z)
        return self.project(_scalar_path(z, scalars, self.scalar_gate).reshape(n, p, -1))


def _rows(linear: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """``linear`` on the last axis of ``x`` as one matrix product over all rows: on a non-contiguous ``x`` (a view
    of the lift, an einsum output) ``nn.Linear`` would broadcast its weight into a batched product per leading
    index, several times slower on CPU."""
    return linear(x.reshape(-1, x.shape[-1])).view(*x.shape[:-1], -1)


def _scalar_path(z: torch.Tensor, scalars: torch.Tensor, gate: nn.Module) -> torch.Tensor:
    """``z [N, P, K, H] * sigmoid(G s)``, plus ``SiLU(s_a) s_b`` on the ``l = 0, k = 0`` row; ``s = [s_a, s_b]``."""
    z = z * torch.sigmoid(gate(scalars))[:, None, None, :]
    value, second = scalars.chunk(2, dim=-1)
    first_row = torch.cat([z[:, :1, :1] + (functional.silu(value) * second)[:, None, None], z[:, :1, 1:]], dim=2)
    return torch.cat([first_row, z[:, 1:]], dim=1)


class SO3CrossGrid(nn.Module):
    """deepmd-kit DPA4's ``message_node_so3`` (``DPA4Config.message_node_so3``): the aggregated message ``m`` (query)
    and the pre-mixed node features ``h`` (context), both ``[N, (L+1)^2, C]``, expanded degree-wise by one shared
    ``E`` (``C -> K C``) into functions on SO(3), multiplied on the grid (its ``"glu"`` product), projected back,
    gated and given the scalar term as in :class:`SO3GridFFN` (scalars ``[m_0, h_0]``), contracted degree-wise
    (``K C -> C``) and scaled per channel: ``m <- m + s * contract(...)`` inside the convolution. With ``focus``
    F > 1 the inputs are ``[N, P, F C]``: F streams sharing ``E`` and the contraction, each with its own gate
    (``2C -> C``) and scale."""

    def __init__(self, channels: int, lmax: int, kmax: int, focus: int = 1) -> None:
        super().__init__()
        self.channels, self.n_frames, self.focus = channels, 2 * kmax + 1, focus
        self.expand = DegreeLinear(channels, self.n_frames * channels, lmax)
        self.contract = DegreeLinear(self.n_frames * channels, channels, lmax)
        self.scalar_gate = nn.Linear(2 * channels, focus * channels, bias=False)  # rows f * C + o: stream f
        self.residual_scale = nn.Parameter(torch.full((focus * channels,), 1e-3))
        to_grid, from_grid = so3_frame_grid(lmax, kmax)
        self.register_buffer("to_grid", to_grid, persistent=False)
        self.register_buffer("from_grid", from_grid, persistent=False)

    def forward(self, message: torch.Tensor, node: torch.Tensor) -> torch.Tensor:
        n, p, f, c = message.shape[0], message.shape[1], self.focus, self.channels
        message, node = (x.view(n, p, f, c).transpose(1, 2).reshape(n * f, p, c) for x in (message, node))
        scalars = torch.cat([message[:, 0], node[:, 0]], dim=-1)  # [N F, 2C]
        to_grid, from_grid = self.to_grid.to(message.dtype), self.from_grid.to(message.dtype)
        u, v = (self.expand(x).view(n * f, p, self.n_frames, c) for x in (message, node))
        product = torch.einsum("gpk,npkc->ngc", to_grid, u) * torch.einsum("gpk,npkc->ngc", to_grid, v)
        z = torch.einsum("pkg,ngc->npkc", from_grid, product)
        gate = torch.einsum("nfi,foi->nfo", scalars.view(n, f, 2 * c), self.scalar_gate.weight.view(f, c, 2 * c))
        z = z * torch.sigmoid(gate).reshape(n * f, 1, 1, c)
        value, second = scalars.chunk(2, dim=-1)
        first_row = torch.cat([z[:, :1, :1] + (functional.silu(value) * second)[:, None, None], z[:, :1, 1:]], dim=2)
        z = torch.cat([first_row, z[:, 1:]], dim=1)
        out = self.contract(z.reshape(n * f, p, -1)).view(n, f, p, c).transpose(1, 2).reshape(n, p, f * c)
        return out * self.residual_scale
