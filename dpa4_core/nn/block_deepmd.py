"""deepmd-kit DPA4's interaction block (``DPA4Config.block = "deepmd"``), for its checkpoints.

``x <- x + Norm_eps=1(Conv(x))``, then ``x <- x + FFN(Norm_eps=1e-5(x))`` (no norm before the convolution;
``ffn_blocks`` such FFN sub-blocks in turn, each with its own norm). Conv,
per edge j -> i, with every weight as deepmd-kit stores it:

1. ``h = Pre(x)`` degree-wise (``pre_focus_mix``), rotated into the edge frame and truncated to ``|m| <= M``.
2. Degree mixer: ``y[o, m, c] = sum_i K[o, i, |m|](rho) x[i, m, c] * B[c]``, ``K`` linear in the radial features
   of EVERY degree (``rho_l + T[Z_src] + T[Z_dst]``), the same kernel on the ``-m`` and ``+m`` rows; with
   ``radial_mode = "none"`` (deepmd-kit's ``radial_so2_mode``, DPA4-Nano) instead ``y[l, m, c] = rho[l, c] x[l, m, c]``.
3. ``S`` residual SO(2) layers ``x <- x + act(W x)``: ``W`` a free matrix on the m = 0 rows and the complex
   multiplication ``[W_u, W_v]`` per ``m > 0``; ``act`` = SiLU on the scalar row and sigmoid gates from it for the
   others, on every layer but the last (none there).
4. Rotate back, rescale degrees ``l > M`` by ``sqrt((2l+1)/(2M+1))``.
5. Attention: logits ``<Q n(h_0,i), K n(h_0,j)> / sqrt(d) + W_r rho_0`` (``n``: uncentred RMS norm with scale, of
   the pre-mixed scalars), weights ``a e^l / (sum a e^l + softplus(z) + 1e-7)`` per destination with
   ``a = E_5^2 eta_src`` (``eta`` the bridging source gate, 1 without bridging); output
   gate ``sigmoid(W_g n'(h_0,i))`` per head; optionally ``+ SO3CrossGrid(out, h)`` (``message_node_so3``,
   ``dpa4_core/nn/ffn_so3.py``); then ``Post`` degree-wise (``post_focus_mix``).

deepmd-kit's local frame uses its real-harmonic signs: the kept rows carry the sign map ``S_K`` of
:func:`dpa4_core.io.deepmd_weights.sh_signs` around steps 2-3 so the stored weights are used as they are.
Checked against deepmd-kit's own values (tests/core/test_deepmd_block.py).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional

from dpa4_core.geometry.edge_cache import EdgeCache
from dpa4_core.layout import degree_of_packed, kept_layout
from dpa4_core.nn.linear import DegreeLinear
from dpa4_core.nn.scatter import scatter_sum

EPS = 1e-7  # deepmd-kit's descriptor eps: RMS norms of the attention scalars, the null mass floor


def _rms(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Uncentred RMS norm over the last axis of ``[..., F, C]`` (one norm per focus), scale ``[F * C]``."""
    return x * torch.rsqrt(x.square().mean(dim=-1, keepdim=True) + EPS) * scale.view(x.shape[-2:])


class DeepmdConvolution(nn.Module):
    """``x [N, P, C]`` (dpa4 signs) + edge cache + ``rho [E, L+1, C]`` -> message ``[N, P, C]``.

    Args: channels C, lmax L, mmax M, layers S (``mixing_layers``), heads (``n_atten_head``), rank R, foci F
    (``n_focus``; every step after ``Pre`` runs on ``F`` streams of C channels, ``W = F C``).

    With ``F > 1`` (deepmd-kit's ``n_focus``): the radial features are projected ``C -> W`` before the mixer;
    the SO(2) layers, gates and attention (``F x heads``) act per stream; after the SO(2) layers each stream is
    scaled by its competition weight ``0.98 softmax_f(<x_f,00, w_f>) + 0.02/F`` (``x_f,00`` the stream's l = 0,
    m = 0 row after the mixer; with ``focus_norm``, deepmd-kit's ``edge_norm``, first RMS-normed per stream with
    eps 1e-7 and its own scale, ``focus_compete_norm``); ``Post`` maps ``W -> C``.
    """

    def __init__(self, channels: int, lmax: int, mmax: int, layers: int, heads: int, rank: int,
                 message_node: nn.Module | None = None, focus: int = 1, focus_norm: bool = False,
                 radial_mode: str = "degree_channel") -> None:
        super().__init__()
        self.message_node = message_node  # SO3CrossGrid (message_node_so3) between aggregation and Post
        self.focus, wide = focus, focus * channels
        self.radial_proj = nn.Linear(channels, wide, bias=False) if focus > 1 else None
        self.compete = nn.Parameter(torch.zeros(channels, focus)) if focus > 1 else None
        self.compete_scale = nn.Parameter(torch.ones(wide)) if focus > 1 and focus_norm else None
        self.channels, self.lmax, self.heads = channels, lmax, heads
        packed, degrees, orders = kept_layout(lmax, mmax)
        self.n_kept, self.n_m0 = len(packed), lmax + 1
        self.blocks = [(lmax + 1 + 2 * sum(lmax - k + 1 for k in range(1, m)), lmax - m + 1) for m in range(1, mmax + 1)]
        self.pre_mix = DegreeLinear(channels, wide, lmax)
        self.post_mix = DegreeLinear(wide, channels, lmax, zero_init=True)
        kernel = sum((lmax - m + 1) ** 2 for m in range(mmax + 1))
        mixed = radial_mode == "degree_channel"  # "none": elementwise radial scaling per degree, no weights
        self.mixer = nn.Parameter(torch.zeros((lmax + 1) * wide, kernel * rank)) if mixed else None
        self.channel_basis = nn.Parameter(torch.ones(rank, wide)) if mixed else None
        # per focus f: the columns [f * out, (f + 1) * out) (deepmd-kit's (in, F, out) layout)
        self.weight_m0 = nn.ParameterList(nn.Parameter(torch.zeros(self.n_m0 * channels, focus * self.n_m0 * channels))
                                          for _ in range(layers))
        self.weight_m = nn.ParameterList(nn.Parameter(torch.zeros(n * channels, focus * 2 * n * channels))
                                         for _ in range(layers) for _, n in self.blocks)
        self.gates = nn.ModuleList(nn.Linear(channels, focus * lmax * channels, bias=False) for _ in range(layers - 1))
        self.qk_scale = nn.Parameter(torch.ones(wide))
        self.query = nn.Linear(channels, wide, bias=False)  # rows f * C + o: stream f's map
        self.key = nn.Linear(channels, wide, bias=False)
        self.logit_radial = nn.Parameter(torch.zeros(channels, focus * heads))
        self.null_raw = nn.Parameter(torch.zeros(focus * heads))
        self.gate_scale = nn.Parameter(torch.ones(wide))
        self.gate_weight = nn.Parameter(torch.zeros(channels, focus * heads))
        sign_k = [(-1.0) ** abs(m) * (1.0 if m >= 0 else -1.0) if m else 1.0 for m in orders]
        self.register_buffer("sign_k", torch.tensor(sign_k, dtype=torch.float64), persistent=False)
        self.register_buffer("kept_degree", torch.tensor(degrees), persistent=False)
        xi = [math.sqrt((2 * l + 1) / (2 * mmax + 1)) if l > mmax else 1.0 for l in degree_of_packed(lmax)]
        self.register_buffer("xi", torch.tensor(xi, dtype=torch.float64), persistent=False)
        dense = []  # (compact kernel entry, dense (out, in) entry) of the degree mixer
        offset = 0
        for start, n in [(0, lmax + 1), *self.blocks]:
            for sub in ([start] if start == 0 else [start, start + n]):
                dense += [(offset + i * n + o, (sub + o) * self.n_kept + sub + i) for i in range(n) for o in range(n)]
            offset += n * n
        self.register_buffer("mixer_index", torch.tensor(dense), persistent=False)
        self.rank = rank

    def _mix(self, x: torch.Tensor, rho: torch.Tensor) -> torch.Tensor:
        """Degree mixer: ``x [E, K, C]`` (deepmd's local frame), ``rho [E, L+1, C]``."""
        if self.mixer is None:  # radial_so2_mode "none"
            return x * rho[:, self.kept_degree]
        compact = (rho.flatten(1) @ self.mixer).view(rho.shape[0], self.mixer.shape[1] // self.rank, self.rank)
        kernel = compact.new_zeros(rho.shape[0], self.n_kept * self.n_kept, self.rank)
        kernel[:, self.mixer_index[:, 1]] = compact[:, self.mixer_index[:, 0]]
        kernel = kernel.view(-1, self.n_kept, self.n_kept, self.rank)
        return torch.einsum("eoir,eic,rc->eoc", kernel, x, self.channel_basis)

    def _so2(self, x: torch.Tensor, layer: int) -> torch.Tensor:
        """One SO(2) layer on ``x [E, K, W]``, each focus stream with its own weights."""
        n_edges, c, f = x.shape[0], self.channels, self.focus
        streams = x.view(n_edges, x.shape[1], f, c)  # explicit sizes: a frame may have no edges

        def per_focus(rows: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:  # [E, n, F, C] -> [E, F, out]
            if f == 1:  # one stream: a plain matrix product
                return (rows.reshape(n_edges, rows.shape[1] * c) @ weight).view(n_edges, 1, weight.shape[1])
            flat = rows.permute(0, 2, 1, 3).reshape(n_edges, f, rows.shape[1] * c)
            return torch.einsum("efi,ifo->efo", flat, weight.view(weight.shape[0], f, -1))

        def as_rows(values: torch.Tensor, n: int) -> torch.Tensor:  # [E, F, n C] -> [E, n, W]
            return values.view(n_edges, f, n, c).permute(0, 2, 1, 3).reshape(n_edges, n, f * c)

        # one split, not a slice per block: split's gradient is one concatenation, each slice's a zero-filled
        # [E, K, W] tensor, all of them then summed
        pieces = streams.split([self.n_m0, *(n for _, n in self.blocks for _ in range(2))], dim=1)
        parts = [as_rows(per_focus(pieces[0], self.weight_m0[layer]), self.n_m0)]
        for index, (_, n) in enumerate(self.blocks):
            w = self.weight_m[layer * len(self.blocks) + index].view(n * c, f, 2, n * c)
            w_u, w_v = w[:, :, 0].reshape(n * c, -1), w[:, :, 1].reshape(n * c, -1)
            neg, pos = pieces[1 + 2 * index], pieces[2 + 2 * index]
            parts += [as_rows(per_focus(neg, w_u) - per_focus(pos, w_v), n),
                      as_rows(per_focus(neg, w_v) + per_focus(pos, w_u), n)]
        return torch.cat(parts, dim=1)

    def _activate(self, x: torch.Tensor, layer: int) -> torch.Tensor:
        n_edges, f, c = x.shape[0], self.focus, self.channels
        weight = self.gates[layer].weight.view(f, self.lmax * c, c)  # per stream: C -> L C
        first, rest = x.split([1, x.shape[1] - 1], dim=1)
        logits = torch.einsum("efi,foi->efo", first.view(n_edges, f, c), weight)
        gates = torch.sigmoid(logits).view(n_edges, f, self.lmax, c).transpose(1, 2).reshape(n_edges, self.lmax, f * c)
        return torch.cat([functional.silu(first), rest * gates[:, self.kept_degree[1:] - 1]], dim=1)

    def forward(self, x: torch.Tensor, cache: EdgeCache, rho: torch.Tensor) -> torch.Tensor:
        src, dst, n_atoms = cache.edge_src, cache.edge_dst, cache.n_atoms
        h = self.pre_mix(x)
        wigner = cache.wigner.to(h.dtype)  # [E, K, P]
        sign_k = self.sign_k.to(h.dtype)
        # the per-row signs (and below, the degree rescaling and, with one attention stream, the attention weight)
        # multiply the small [E, K, P] rotation, not the [E, K, W] features they act on
        local = torch.bmm(sign_k[None, :, None] * wigner, h[src])  # deepmd's local frame
        rho = rho.to(h.dtype) if self.radial_proj is None else self.radial_proj(rho.to(h.dtype))  # [E, L+1, W]
        local = self._mix(local, rho)  # the kernel reads every degree's radial features
        f, c = self.focus, self.channels
        compete = None if self.compete is None else local[:, 0].view(-1, f, c)  # the streams' l = 0, m = 0 rows
        if self.compete_scale is not None:  # edge_norm's focus norm (it crosses its eps floor near the cutoff)
            compete = _rms(compete, self.compete_scale)
        layers = len(self.weight_m0)
        for layer in range(layers):
            update = self._so2(local, layer)
            local = local + (self._activate(update, layer) if layer < layers - 1 else update)
        if compete is not None:  # deepmd-kit's focus competition (softmax over streams, label smoothing 0.02)
            alpha = torch.softmax(torch.einsum("efi,if->ef", compete, self.compete), dim=1) * 0.98 + 0.02 / f
            local = (local.view(local.shape[0], local.shape[1], f, c) * alpha[:, None, :, None]).view(local.shape)
        back = wigner.transpose(1, 2) * (self.xi.to(h.dtype)[:, None] * sign_k[None, :])  # [E, P, K]
        scalars = h[:, 0].view(-1, f, c)
        qk = _rms(scalars, self.qk_scale)
        head_dim = c // self.heads

        def per_focus(x: torch.Tensor, linear: nn.Linear) -> torch.Tensor:  # [N, F, C] -> [N, F, C]
            return torch.einsum("nfi,foi->nfo", x, linear.weight.view(f, c, c))
        query, key = per_focus(qk, self.query), per_focus(qk, self.key)
        logits = (query[dst] * key[src]).view(-1, f * self.heads, head_dim).sum(-1) / math.sqrt(head_dim)
        radial = torch.einsum("efi,ifh->efh", rho[:, 0].view(-1, f, c), self.logit_radial.view(c, f, self.heads))
        logits = logits + radial.reshape(-1, f * self.heads)
        source = (cache.envelope ** 2 * cache.gate[src]).to(h.dtype)[:, None]  # E_5^2 eta_src (bridging)
        shift = logits.max() if logits.shape[0] else logits.new_zeros(())  # cancels; no edges: nothing to shift
        mass = source * torch.exp(logits - shift)
        null = (functional.softplus(self.null_raw) + EPS) * torch.exp(-shift)
        alpha = mass / (scatter_sum(mass, dst, n_atoms) + null)[dst]
        streams = (local.shape[0], back.shape[1], f * self.heads, head_dim)  # explicit: a frame may have no edges
        if f * self.heads == 1:  # one attention weight per edge: folded into the rotation back
            weighted = torch.bmm(back * alpha[:, :, None], local).view(streams)
        else:
            weighted = torch.bmm(back, local).view(streams) * alpha[:, None, :, None]
        out = scatter_sum(weighted, dst, n_atoms)
        gate = torch.einsum("nfi,ifh->nfh", _rms(scalars, self.gate_scale), self.gate_weight.view(c, f, self.heads))
        out = (out * torch.sigmoid(gate).reshape(n_atoms, 1, -1, 1)).reshape(n_atoms, -1, f * c)
        if self.message_node is not None:
            out = out + self.message_node(out, h)
        return self.post_mix(out)


class DeepmdBlock(nn.Module):
    """``x <- x + Norm_1(Conv(x))``; ``x <- x + FFN(Norm_1e-5(x))`` (module docstring); ``rho [E, L+1, C]``.

    Args: channels C, lmax L, mmax M, layers S, heads, rank R, and the FFN module.
    """

    def __init__(self, channels: int, lmax: int, mmax: int, layers: int, heads: int, rank: int,
                 ffn: nn.Module, message_node: nn.Module | None = None, extra_ffns: list[nn.Module] | None = None,
                 message_eps: float = 1.0, focus: int = 1, focus_norm: bool = False,
                 radial_mode: str = "degree_channel") -> None:
        super().__init__()
        from dpa4_core.nn.norm import EquivariantRMSNorm

        self.conv = DeepmdConvolution(channels, lmax, mmax, layers, heads, rank, message_node, focus, focus_norm,
                                      radial_mode)
        self.message_norm = EquivariantRMSNorm(channels, lmax, eps=message_eps)  # 1e-5 with deepmd's edge_norm
        self.ffn_norm = EquivariantRMSNorm(channels, lmax, eps=1e-5)
        self.ffn = ffn
        # deepmd-kit's ffn_blocks > 1: more residual FFN sub-blocks, each with its own norm, after the first
        self.extra_ffns = nn.ModuleList(extra_ffns or [])
        self.extra_ffn_norms = nn.ModuleList(EquivariantRMSNorm(channels, lmax, eps=1e-5) for _ in self.extra_ffns)

    def forward(self, x: torch.Tensor, cache: EdgeCache, rho: torch.Tensor) -> torch.Tensor:
        x = x + self.message_norm(self.conv(x, cache, rho)).to(x.dtype)
        x = x + self.ffn(self.ffn_norm(x)).to(x.dtype)
        for norm, ffn in zip(self.extra_ffn_norms, self.extra_ffns):
            x = x + ffn(norm(x)).to(x.dtype)
        return x
