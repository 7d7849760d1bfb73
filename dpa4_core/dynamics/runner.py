"""The model side of batched inference: a private cast, frozen copy of the model, optionally compiled.

A model is anything with DPA4's interface (DEVELOPING.md): ``model.config.cutoff`` and
``model(batch, compute_forces=True, compute_stress=True) -> {"energy" [F], "forces" [N, 3], "stress" [F, 3, 3]}``.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import torch

from dpa4_core.data.batch import AtomsBatch, resolve_dtype
from dpa4_core.io.checkpoint import load_for_inference

logger = logging.getLogger(__name__)


class BatchSetupError(ValueError):
    """Bad arguments to the batched engine (model, dtype, budgets, skin, ...)."""


class ModelRunner:
    """Calls a private, cast, frozen copy of the model on :class:`AtomsBatch` objects.

    Args:
        model_or_checkpoint: a DPA4 (or any model with its interface) or a checkpoint path.
        device: torch device.
        dtype: "float32" (default) or "float64"; the caller's model is never changed.
        compile: wrap the model call in ``torch.compile(dynamic=True)``; if compiling or the first compiled call
            fails, warn once and run eagerly.
    """

    def __init__(self, model_or_checkpoint: Any, device="cpu", dtype="float32", compile: bool = False):
        self.device = torch.device(device)
        self.dtype = resolve_dtype(dtype, BatchSetupError)
        self.model = load_for_inference(model_or_checkpoint, self.dtype, self.device, BatchSetupError)
        self.cutoff = float(self.model.config.cutoff)
        self._compiled = None
        if compile:
            try:
                self._compiled = torch.compile(self.model, dynamic=True)
            except Exception as exc:  # noqa: BLE001 - any failure means: run eagerly
                self._fallback(exc)
        self.calls = 0

    def _fallback(self, exc: Exception) -> None:
        warnings.warn(f"torch.compile of the model failed ({type(exc).__name__}: {exc}); running eagerly", stacklevel=3)
        logger.info("compiled inference disabled", exc_info=exc)
        self._compiled = None

    def __call__(self, batch: AtomsBatch, compute_stress: bool) -> dict[str, torch.Tensor]:
        """Energy ``[F]``, forces ``[N, 3]`` and (if asked) stress ``[F, 3, 3]``, detached, in float64."""
        self.calls += 1
        out = None
        if self._compiled is not None:
            try:
                out = self._compiled(batch, compute_forces=True, compute_stress=compute_stress)
            except Exception as exc:  # noqa: BLE001
                self._fallback(exc)
        if out is None:
            out = self.model(batch, compute_forces=True, compute_stress=compute_stress)
        result = {k: out[k].detach().to(torch.float64) for k in ("energy", "forces")}
        if compute_stress:
            result["stress"] = out["stress"].detach().to(torch.float64)
        else:
            result["stress"] = torch.zeros(batch.n_frames, 3, 3, dtype=torch.float64, device=batch.positions.device)
        return result
