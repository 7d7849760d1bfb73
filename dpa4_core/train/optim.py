"""Optimisers: AdamW, or Muon on the hidden matrices plus AdamW on the rest.

:class:`GroupedMuon` is ``torch.optim.Muon`` with one change, in how the Newton-Schulz orthogonalisation is
computed. torch's Muon orthogonalises each matrix on its own, in bf16. A DPA4 has dozens of small hidden matrices
(``tiny``: 56 matrices of 17 shapes), so its step is ~850 tiny matmul calls, and CPUs without bf16 matrix units run
bf16 matmuls slower than fp32 (the tiny model's 56 matrices: 13.6 ms in bf16, 3.6 ms in fp32 on the 2-core Xeon we
benchmark on). Here matrices of one shape are stacked and orthogonalised together by batched matmuls, in fp32 (bf16
on GPUs, as torch does). Algorithm, hyperparameters and state (``momentum_buffer``) are torch's, so optimiser states
load in either class; ``tests/core/test_optim.py`` compares the two.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict

import torch

logger = logging.getLogger(__name__)


def build_optimizers(model: torch.nn.Module, config) -> list[torch.optim.Optimizer]:
    """AdamW for everything, or Muon for hidden 2-D weight matrices plus AdamW for the rest (``optim.optimizer``)."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = config.optim
    # foreach: one multi-tensor kernel per update instead of a loop over ~50 small tensors (torch only defaults
    # to it on GPUs; on CPU it saves ~1 ms of a ~90 ms tiny-model step).
    adamw = dict(lr=opt.lr, weight_decay=opt.weight_decay, foreach=True)
    if opt.optimizer == "muon" and hasattr(torch.optim, "Muon"):
        # Muon orthogonalises updates of hidden-layer matrices; lookup tables (a few rows get gradients) and
        # 1 x n vectors (the energy head, where orthogonalising only normalises) stay with AdamW, as Muon's
        # authors advise.
        tables = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
        matrices = [p for p in params if p.ndim == 2 and min(p.shape) > 1 and id(p) not in tables]
        chosen = {id(p) for p in matrices}
        others = [p for p in params if id(p) not in chosen]
        optimizers = [GroupedMuon(matrices, lr=opt.lr, weight_decay=opt.weight_decay,
                                  adjust_lr_fn="match_rms_adamw")] if matrices else []
        if others:
            optimizers.append(torch.optim.AdamW(others, **adamw))
        return optimizers
    if opt.optimizer == "muon":
        logger.warning("torch.optim.Muon is not available in torch %s; using AdamW", torch.__version__)
    return [torch.optim.AdamW(params, **adamw)]


# torch < 2.9 has no Muon; build_optimizers falls back to AdamW there, so the class only needs to be definable
_TORCH_MUON = getattr(torch.optim, "Muon", torch.optim.Optimizer)


class GroupedMuon(_TORCH_MUON):
    """``torch.optim.Muon`` with the Newton-Schulz iteration batched over matrices of equal shape (see module
    docstring). Same arguments as ``torch.optim.Muon``."""

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            momentum, lr = group["momentum"], float(group["lr"])
            updates = []
            for p in params:
                if p.grad.is_sparse or torch.is_complex(p):
                    raise RuntimeError("Muon supports dense real gradients only")
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p.grad, memory_format=torch.preserve_format)
                buf = state["momentum_buffer"]
                buf.lerp_(p.grad, 1 - momentum)
                updates.append(p.grad.lerp(buf, momentum) if group["nesterov"] else buf)
            orthogonal = orthogonalize(updates, group["ns_coefficients"], group["ns_steps"], group["eps"])
            for p, update in zip(params, orthogonal):
                p.mul_(1 - lr * group["weight_decay"])
                p.add_(update.to(p.dtype), alpha=-muon_lr(lr, group["adjust_lr_fn"], p.shape))
        return loss


def muon_lr(lr: float, adjust_lr_fn: str | None, shape: torch.Size) -> float:
    """Muon's shape-dependent rate (torch's ``adjust_lr_fn``): "match_rms_adamw" scales the update to the RMS of
    an AdamW update (``0.2 sqrt(max(A, B))``); None or "original" by ``sqrt(max(1, A / B))``."""
    rows, cols = shape[:2]
    if adjust_lr_fn == "match_rms_adamw":
        return lr * 0.2 * math.sqrt(max(rows, cols))
    if adjust_lr_fn in (None, "original"):
        return lr * math.sqrt(max(1.0, rows / cols))
    return lr


def orthogonalize(matrices: list[torch.Tensor], coefficients: tuple[float, float, float], steps: int,
                  eps: float = 1e-7) -> list[torch.Tensor]:
    """Muon's quintic Newton-Schulz iteration ``X <- a X + (b A + c A^2) X``, ``A = X X^T``, from ``G / |G|_F``,
    on every matrix; matrices of one shape and device go through it as one batch (``[B, r, c]``, wide side last).
    Returns the results in the input order, in fp32 (bf16 on GPUs)."""
    a, b, c = coefficients
    by_shape: dict[tuple, list[int]] = defaultdict(list)
    for i, m in enumerate(matrices):
        by_shape[(tuple(m.shape), m.device)].append(i)
    out: list[torch.Tensor] = [None] * len(matrices)  # type: ignore[list-item]
    for (shape, device), index in by_shape.items():
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        x = torch.stack([matrices[i] for i in index]).to(dtype)
        tall = shape[0] > shape[1]
        if tall:
            x = x.transpose(1, 2)
        x = x / torch.linalg.matrix_norm(x).clamp(min=eps)[:, None, None]
        for _ in range(steps):
            gram = x @ x.transpose(1, 2)
            x = torch.baddbmm(x, torch.baddbmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
        if tall:
            x = x.transpose(1, 2)
        for k, i in enumerate(index):
            out[i] = x[k]
    return out
