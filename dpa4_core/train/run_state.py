"""What a training run keeps in its ``output_dir`` besides the model checkpoints, and how it reads it back.

- ``train_state.pt`` (:data:`STATE_FILE`): everything needed to resume exactly: raw weights, optimisers, EMA,
  step, best validation score, torch's CPU RNG state, training time used, and the fingerprint of the settings
  that define the run (a resume with other settings is refused). Tensors and plain types only, read back with
  ``weights_only=True``: ``output_dir`` may hold files someone else wrote, and unpickling one could run code;
  a state that needs more (an older dpa4's, or a planted pickle) is refused, never unpickled;
- ``metrics.jsonl`` (:data:`LOG_FILE`): one JSON object per training step and per validation;
- ``test_split.extxyz`` (:data:`TEST_FILE`): the held-out test frames.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from dpa4_core.io.checkpoint import check_plain, safe_load
from dpa4_core.io.files import atomic_write
from dpa4_core.train.config import TrainConfig

logger = logging.getLogger(__name__)

STATE_FILE = "train_state.pt"
LOG_FILE = "metrics.jsonl"
TEST_FILE = "test_split.extxyz"


class RunMismatchError(ValueError):
    """``output_dir`` holds the state of a run made with a different configuration."""


class RunStateError(ValueError):
    """``train_state.pt`` cannot be read safely: damaged, written by an older dpa4, or not a dpa4 resume state."""


_STATE_KEYS = ("model", "optimizers", "ema", "torch_rng", "step", "best_score")


@dataclass
class Progress:
    """Where a run stands: optimiser steps done, best validation score and its metrics, training time (s)."""

    step: int = 0
    best_score: float = math.inf
    best_metrics: dict | None = None
    time_used_s: float = 0.0


def fingerprint(config: TrainConfig) -> str:
    """The settings that define a run (not how it is displayed or whether it resumes), as JSON."""
    ignored = {"resume", "progress", "plots", "output_dir"}
    return json.dumps({k: v for k, v in config.model_dump(mode="json").items() if k not in ignored}, sort_keys=True)


def save_state(path: Path, model, optimizers, ema, progress: Progress, run_fingerprint: str) -> None:
    """Write the resume state atomically (a crash while writing leaves the previous state)."""
    state = {"model": model.state_dict(), "optimizers": [o.state_dict() for o in optimizers],
             "ema": ema.state_dict(), "torch_rng": torch.get_rng_state(), "step": progress.step,
             "best_score": progress.best_score, "best_metrics": progress.best_metrics,
             "fingerprint": run_fingerprint, "time_used_s": progress.time_used_s}
    check_plain(state, "train_state")  # what load_state's weights_only=True reads back
    atomic_write(path, lambda stream: torch.save(state, stream))


def load_state(path: Path, model, optimizers, ema, run_fingerprint: str) -> Progress:
    """Restore weights, optimisers, EMA and torch's CPU RNG from ``path`` in place; returns the progress.

    Raises:
        RunStateError: the file is damaged or needs unpickling beyond tensors and plain types (never done).
        RunMismatchError: the state was written by a run with another fingerprint.
    """
    fix = "delete it to start this run fresh, or set resume: false (the file is then overwritten)"
    state = safe_load(path, "cpu", RunStateError, "cannot be read safely as a dpa4 resume state", f"To go on, {fix}")
    if not isinstance(state, dict) or any(key not in state for key in _STATE_KEYS):
        raise RunStateError(f"{path} is not a dpa4 resume state (expected the keys {list(_STATE_KEYS)}); {fix}")
    if state.get("fingerprint", run_fingerprint) != run_fingerprint:
        raise RunMismatchError(f"{path.parent} holds a run with a different configuration; use another "
                               "output_dir, or resume: false to start over there")
    model.load_state_dict(state["model"])
    for optimizer, opt_state in zip(optimizers, state["optimizers"]):
        optimizer.load_state_dict(opt_state)
    ema.load_state_dict(state["ema"])
    torch.set_rng_state(state["torch_rng"])
    logger.info("resumed from %s at step %d", path, state["step"])
    return Progress(state["step"], state["best_score"], state["best_metrics"], float(state.get("time_used_s", 0.0)))


class MetricLog:
    """JSON-lines metric log; on resume, lines past the resumed step are dropped (they will be redone)."""

    def __init__(self, path: Path, enabled: bool, resume_step: int | None):
        self.path, self.enabled = path, enabled
        if not enabled:
            return
        if resume_step is None:
            path.write_text("")
        elif path.exists():
            kept = [line for line in path.read_text().splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= resume_step]
            path.write_text("".join(line + "\n" for line in kept))

    def write(self, record: dict) -> None:
        if self.enabled:
            with self.path.open("a") as stream:
                stream.write(json.dumps(record) + "\n")


def validation_line(step: int, epoch: float, loss: float, lr: float, metrics: dict) -> str:
    """The progress line printed (stderr) at each validation: step, epoch, training loss, learning rate and the
    validation energy and force MAEs (the same numbers ``metrics.jsonl`` records)."""
    stress = metrics.get("stress_mae_gpa")
    return (f"valid step {step:>6d}  epoch {epoch:7.2f}  loss {loss:.4g}  lr {lr:.3g}  "
            f"E MAE {metrics['energy_mae_mev_per_atom']:.2f} meV/atom  F MAE {metrics['force_mae_mev_per_a']:.1f} meV/A"
            + (f"  S MAE {stress:.3f} GPa" if stress is not None else ""))
