"""Warmup-stable-decay learning rate and an exponential moving average of the weights (spec section 7)."""

from __future__ import annotations

import math
from contextlib import contextmanager

import torch


def wsd_lr(step: int, total_steps: int, peak_lr: float, warmup_fraction: float = 0.05,
           decay_fraction: float = 0.65, final_ratio: float = 0.01) -> float:
    """Learning rate at ``step`` (0-based) of a warmup-stable-decay schedule.

    Linear warmup from ``peak_lr / warmup_steps`` over the first ``warmup_fraction`` of the steps, constant
    ``peak_lr``, then a cosine decay to ``final_ratio * peak_lr`` over the last ``decay_fraction`` (the paper decays
    over the last 65%). A pure function of the step, so a resumed run gets exactly the same rates.
    """
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    warmup = max(int(round(warmup_fraction * total_steps)), 0)
    decay = max(int(round(decay_fraction * total_steps)), 0)
    decay_start = max(total_steps - decay, warmup)
    if step < warmup:
        return peak_lr * (step + 1) / warmup
    if step < decay_start or decay == 0:
        return peak_lr
    return _cosine_decay(peak_lr, final_ratio, min((step - decay_start) / max(total_steps - decay_start - 1, 1), 1.0))


def wsd_lr_at(progress: float, peak_lr: float, warmup_fraction: float = 0.05, decay_fraction: float = 0.65,
              final_ratio: float = 0.01) -> float:
    """The warmup-stable-decay rate as a function of the fraction ``progress`` in [0, 1] of the run done.

    For runs bounded by time, where the number of steps is not known in advance: the same shape as
    :func:`wsd_lr`, on the fraction of the time budget used.
    """
    progress = min(max(float(progress), 0.0), 1.0)
    if progress < warmup_fraction:
        return peak_lr * max(progress / warmup_fraction, 1e-3)
    decay_start = max(1.0 - decay_fraction, warmup_fraction)
    if progress < decay_start or decay_fraction == 0.0:
        return peak_lr
    return _cosine_decay(peak_lr, final_ratio, (progress - decay_start) / max(1.0 - decay_start, 1e-12))


def _cosine_decay(peak_lr: float, final_ratio: float, t: float) -> float:
    """``peak_lr`` at ``t = 0`` down to ``final_ratio * peak_lr`` at ``t = 1``, on a half cosine."""
    return peak_lr * (final_ratio + (1.0 - final_ratio) * 0.5 * (1.0 + math.cos(math.pi * t)))


class EMA:
    """Exponential moving average of a model's trainable floating-point parameters, used for evaluation.

    ``shadow <- decay_t * shadow + (1 - decay_t) * param`` with ``decay_t = min(decay, (1 + t) / (10 + t))`` so the
    average follows the fast-changing weights early on.
    """

    def __init__(self, model: torch.nn.Module, decay: float = 0.99) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        # Frozen parameters are left out: averaging a constant is not exact in floating point.
        self.shadow = {n: p.detach().clone() for n, p in model.named_parameters()
                       if p.is_floating_point() and p.requires_grad}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))
        if not self.shadow:  # everything frozen (and foreach ops reject empty lists)
            return
        params = dict(model.named_parameters())
        # one multi-tensor kernel for all parameters: a loop over ~100 small tensors costs ~1 ms a step on CPU
        torch._foreach_lerp_(list(self.shadow.values()), [params[n].detach() for n in self.shadow], 1.0 - d)

    @contextmanager
    def applied(self, model: torch.nn.Module):
        """Temporarily load the averaged weights into ``model`` (restored on exit, even on error)."""
        params = dict(model.named_parameters())
        backup = {n: params[n].detach().clone() for n in self.shadow}
        with torch.no_grad():
            for n, value in self.shadow.items():
                params[n].copy_(value)
        try:
            yield model
        finally:
            with torch.no_grad():
                for n, value in backup.items():
                    params[n].copy_(value)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "updates": self.updates, "shadow": {n: t.clone() for n, t in self.shadow.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.decay = float(state["decay"])
        self.updates = int(state["updates"])
        for n, t in state["shadow"].items():
            self.shadow[n] = t.clone()
