"""The training loop: data, bias fit, optimiser, warmup-stable-decay, EMA, validation, checkpoints, resume.

Files written in ``output_dir`` (rank 0 only):
    - ``best.pt`` / ``last.pt``: model checkpoints (EMA weights) readable by ``load_checkpoint`` and ``dpa4 eval``;
    - ``train_state.pt``, ``metrics.jsonl``, ``test_split.extxyz``: see :mod:`dpa4_core.train.run_state`;
    - ``parity_energy.png`` / ``parity_forces.png``: validation parity plots at the end.

Global state: the run draws from torch's global RNG (a custom model's dropout, say) only inside a
``torch.random.fork_rng`` scope seeded with ``config.seed`` (or restored from the resume state), so the caller's
RNG state is the same after ``train`` as before.

Resume: the data order of step ``s`` is a pure function of ``(seed, s)`` and the learning rate of ``s`` a pure
function of ``s``, so restarting from ``train_state.pt`` (written every ``checkpoint_every`` steps) continues the
run exactly as if it had never stopped. A run bounded by ``time_limit_s`` is the exception: its schedule follows
the time used (saved with the state, so a restart continues the budget rather than starting it over), which
depends on the machine's speed.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from dpa4_core.io.checkpoint import load_checkpoint
from dpa4_core.train.compile import make_predictor
from dpa4_core.train.config import TrainConfig, load_config
from dpa4_core.train.dataset import FrameDataset, load_dataset, split_indices
from dpa4_core.train.distributed import init_from_env
from dpa4_core.train.loss import LossWeights, MetricAccumulator, compute_loss
from dpa4_core.train.optim import build_optimizers
from dpa4_core.train.run_state import (
    LOG_FILE,
    STATE_FILE,
    TEST_FILE,
    MetricLog,
    Progress,
    fingerprint,
    load_state,
    save_state,
    validation_line,
)
from dpa4_core.train.schedule import EMA, wsd_lr, wsd_lr_at
from dpa4_core.train.setup import (
    build_model,
    initial_bias,
    model_dtype,
    zbl_force_share,
)

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """Paths and metrics of a finished run (``metrics``: validation metrics of the best checkpoint, plus
    ``test`` and, for fine-tuning, ``base`` metrics on the same validation split)."""

    checkpoint: Path
    last_checkpoint: Path
    metrics: dict
    log_path: Path
    plots: list[Path] = field(default_factory=list)


# ------------------------------------------------------------------------------------------------ helpers
def prepare_data(config: TrainConfig, r_min: float) -> tuple[FrameDataset, FrameDataset, FrameDataset | None]:
    """Train, validation and (optional) test sets: explicit sources or a seeded split of ``data.train``."""
    data = config.data

    def read(sources):
        return load_dataset([s if isinstance(s, str) else s.model_dump() for s in sources], r_min=r_min)

    full = read(data.train)
    valid = read(data.valid) if data.valid else None
    test = read(data.test) if data.test else None
    held_valid = 0.0 if valid is not None else data.split.valid
    held_test = 0.0 if test is not None else data.split.test
    if held_valid or held_test:
        parts = split_indices(full, [1.0 - held_valid - held_test, held_valid, held_test], data.split.seed,
                              data.split.by_group)
        train = full.subset(parts[0])
        valid = full.subset(parts[1]) if valid is None else valid
        test = full.subset(parts[2]) if test is None and held_test else test
    else:
        train = full
    if data.max_frames is not None and len(train) > data.max_frames:
        pick = np.sort(np.random.default_rng(data.split.seed).permutation(len(train))[: data.max_frames])
        train = train.subset(pick)
    if valid is None or len(valid) == 0:
        raise ValueError("no validation frames: give data.valid or a data.split.valid fraction > 0")
    return train, valid, test


def batch_indices(step: int, n_frames: int, batch_size: int, seed: int) -> np.ndarray:
    """Frames of the global batch at ``step``: epoch-wise seeded permutations, a pure function of the step."""
    if n_frames <= batch_size:
        return np.arange(n_frames)
    per_epoch = n_frames // batch_size
    epoch, position = divmod(step, per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(n_frames)
    return order[position * batch_size:(position + 1) * batch_size]


def run_validation(model, dataset: FrameDataset, batch_size: int = 8, keep: bool = False,
                   max_frames: int | None = None) -> MetricAccumulator:
    """Metrics of ``model`` (eval mode, eager) on ``dataset``; forces and stress by autograd."""
    dtype = model_dtype(model)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    acc = MetricAccumulator()
    n = len(dataset) if max_frames is None else min(max_frames, len(dataset))
    for start in range(0, n, batch_size):
        batch, labels = dataset.batch(range(start, min(start + batch_size, n)), model.config.cutoff, dtype, device)
        pred = model(batch)
        acc.add({k: v.detach() for k, v in pred.items()}, labels, keep=keep)
    model.train(was_training)
    return acc


def _score(metrics: dict) -> float:
    """Model selection: energy MAE (meV/atom) + force MAE (meV/A)."""
    return metrics["energy_mae_mev_per_atom"] + metrics["force_mae_mev_per_a"]


# ------------------------------------------------------------------------------------------------ loop
def run_training(config: TrainConfig, model: torch.nn.Module, train_set: FrameDataset, valid_set: FrameDataset,
                 test_set: FrameDataset | None = None, callback: Callable[[int, dict], None] | None = None,
                 extra_metrics: dict | None = None, fit_bias: bool = True,
                 extra_metadata: dict | None = None) -> TrainResult:
    """Train ``model`` on ``train_set`` following ``config``; resumes from ``output_dir`` when a state exists.

    Args:
        callback: called as ``callback(step, parts)`` after every optimiser step (``step`` counts from 1);
            an exception raised there stops the run like a crash would.
        extra_metrics: added to the result's metrics (e.g. the base model's errors when fine-tuning).
        fit_bias: fit the energy bias before the first step (``config.bias``); ignored when resuming.
        extra_metadata: plain values stored in every checkpoint's metadata (e.g. the fine-tuned base's provenance).
    """
    ctx = init_from_env()
    cuda = [ctx.device.index or 0] if ctx.device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):  # the caller's RNG state is left as it was
        torch.manual_seed(config.seed)
        return _run(ctx, config, model, train_set, valid_set, test_set, callback, extra_metrics, fit_bias,
                    extra_metadata or {})


def _run(ctx, config, model, train_set, valid_set, test_set, callback, extra_metrics, fit_bias,
         extra_metadata) -> TrainResult:
    """The body of :func:`run_training`, inside its private RNG scope."""
    from dpa4_core.io.checkpoint import save_checkpoint

    out = Path(config.output_dir).expanduser().resolve()
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
    ctx.barrier()
    device = ctx.device  # torchrun on GPUs: this rank's GPU
    model.to(device)
    dtype = model_dtype(model)
    cutoff = model.config.cutoff
    ema = EMA(model, config.optim.ema_decay)
    optimizers = build_optimizers(model, config)
    weights = LossWeights.from_config(config.loss)
    state_path = out / STATE_FILE
    run_fingerprint = fingerprint(config)
    progress = Progress()
    if config.resume and state_path.exists():
        progress = load_state(state_path, model, optimizers, ema, run_fingerprint)
    elif fit_bias:  # training from scratch (fine-tuning refits its bias and keeps its checkpoint's ZBL)
        initial_bias(model, train_set, config.bias)  # a buffer: the EMA of the parameters is unaffected
        if ctx.is_main:
            _warn_if_zbl_acts_on_bonds(model, train_set, chosen="zbl_taper_end" in config.model.overrides)
    ctx.broadcast_parameters(model)  # every rank starts from rank 0's weights (and bias)
    start, best_score, best_metrics, time_before = (progress.step, progress.best_score, progress.best_metrics,
                                                    progress.time_used_s)
    log = MetricLog(out / LOG_FILE, ctx.is_main, start if start else None)
    if ctx.is_main and test_set is not None and len(test_set) and not (out / TEST_FILE).exists():
        test_set.write_extxyz(out / TEST_FILE)  # the held-out frames, for `dpa4 eval best.pt test_split.extxyz`
    elements = sorted(set(train_set.elements) | set(getattr(model, "trained_elements", [])))
    metadata = {"config": json.loads(config.model_dump_json()), "n_train": len(train_set), **extra_metadata}

    def save_model(path: Path, step: int, metrics: dict | None):
        with ema.applied(model):
            save_checkpoint(model, path, metadata={**metadata, "step": step, "metrics": metrics or {}},
                            elements=elements)

    predictor = make_predictor(model, compile=config.compile, bf16=config.bf16)
    model.train()
    limit = config.time_limit_s
    clock = time.process_time if config.time_clock == "cpu" else time.perf_counter
    clock0 = clock()
    schedule = (config.optim.lr, config.optim.warmup_fraction, config.optim.decay_fraction,
                config.optim.final_lr_ratio)
    # The bar counts steps, or seconds of the time limit when that bounds the run.
    total, initial = (round(limit), round(min(time_before, limit))) if limit else (config.steps, start)
    bar = tqdm(total=total, initial=initial,
               unit="s" if limit else "it", disable=True if not (config.progress and ctx.is_main) else None,
               desc="train", dynamic_ncols=True)
    t0 = time.perf_counter()
    done, used = start, time_before
    for step in range(start, config.steps):
        if limit is not None and used >= limit:
            break
        global_idx = batch_indices(step, len(train_set), config.batch_size, config.seed)
        local_idx = ctx.shard(global_idx)
        batch, labels = train_set.batch(local_idx, cutoff, dtype, device)
        if limit is None:
            lr = wsd_lr(step, config.steps, *schedule)
        else:  # whichever runs out first, steps or time, sets how far along the schedule we are
            lr = wsd_lr_at(max(step / config.steps, used / limit), *schedule)
        for optimizer in optimizers:
            for group in optimizer.param_groups:
                group["lr"] = lr
        pred = predictor(batch)
        loss, parts = compute_loss(pred, labels, batch.frame, weights)
        for optimizer in optimizers:
            optimizer.zero_grad(set_to_none=True)
        loss.backward()
        ctx.all_reduce_gradients(model)
        grad_norm = None
        if config.optim.grad_clip is not None:
            trainable = [p for p in model.parameters() if p.requires_grad]
            grad_norm = float(torch.nn.utils.clip_grad_norm_(trainable, config.optim.grad_clip))
        for optimizer in optimizers:
            optimizer.step()
        ema.update(model)
        done = step + 1
        parts = {k: float(ctx.all_reduce_mean(v)) for k, v in parts.items()}  # the global batch's, not this rank's
        log.write({"step": done, "split": "train", "lr": lr, "loss": parts, "grad_norm": grad_norm,
                   "elapsed_s": time.perf_counter() - t0})
        used = time_before + clock() - clock0  # training time of the whole run, restarts included
        if limit is not None:  # ranks agree on the rate and on when to stop
            used = float(ctx.all_reduce_mean(used))
        bar.set_postfix(loss=f"{parts['total']:.4g}", lr=f"{lr:.2e}", **({"step": done} if limit else {}))
        bar.update(round(min(used, limit)) - bar.n if limit else 1)
        last = done == config.steps or (limit is not None and used >= limit)
        if ctx.is_main and (done % config.valid_every == 0 or last):
            with ema.applied(model):
                metrics = run_validation(model, valid_set, config.valid_batch_size,
                                         max_frames=config.max_valid_frames).result()
            log.write({"step": done, "split": "valid", **metrics})
            if config.progress:  # one line per validation on stderr, above the bar
                bar.write(validation_line(done, done * config.batch_size / len(train_set), parts["total"], lr,
                                          metrics), file=sys.stderr)
            if _score(metrics) < best_score:
                best_score, best_metrics = _score(metrics), metrics
                save_model(out / "best.pt", done, metrics)
        if ctx.is_main and (done % config.checkpoint_every == 0 or last):
            save_model(out / "last.pt", done, best_metrics)
            save_state(state_path, model, optimizers, ema, Progress(done, best_score, best_metrics, used),
                       run_fingerprint)
        ctx.barrier()
        if callback is not None:
            callback(done, parts)
        if last:
            break
    bar.close()
    if limit is not None and done < config.steps:
        logger.info("time limit of %.0f s (%s clock) reached after %d steps", limit, config.time_clock, done)
    return _finish(config, model, ema, out, valid_set, test_set, log, extra_metrics, ctx, done)


def _finish(config, model, ema, out, valid_set, test_set, log, extra_metrics, ctx, step: int) -> TrainResult:
    """Final metrics of the best checkpoint on validation (and test), parity plots."""
    best_path, last_path = out / "best.pt", out / "last.pt"
    metrics: dict = {}
    plots: list[Path] = []
    if ctx.is_main:
        try:
            best = load_checkpoint(best_path).to(model_dtype(model))
        except (ImportError, ValueError) as exc:  # e.g. a custom model load_checkpoint cannot rebuild
            logger.warning("cannot reload %s (%s); final metrics use the last EMA weights", best_path, exc)
            best = model
        with ema.applied(model):
            acc = run_validation(best, valid_set, config.valid_batch_size, keep=config.plots)
            metrics = {"valid": acc.result()}
            if test_set is not None and len(test_set):
                metrics["test"] = run_validation(best, test_set, config.valid_batch_size).result()
        metrics.update(extra_metrics or {})
        log.write({"step": step, "split": "final", **metrics})
        if config.plots:
            from dpa4_core.train.plots import parity_plots

            plots = parity_plots(acc.records, out, title=f"validation ({len(valid_set)} frames)")
    ctx.barrier()
    return TrainResult(checkpoint=best_path, last_checkpoint=last_path, metrics=metrics, log_path=out / LOG_FILE,
                       plots=plots)


def _warn_if_zbl_acts_on_bonds(model, train_set, chosen: bool = False, threshold: float = 1.0) -> None:
    """Warn when ZBL's force RMS on the training frames exceeds the labels' and the taper end is the default.

    Both signs of the trade-off exceed 1 on real data (acetylacetone 3.3x, where ZBL hurts; the Mo-Nb-Ta-W set
    2.0x, where it helps the equation of state), so a recipe that sets ``zbl_taper_end`` itself is only logged.
    """
    share = zbl_force_share(getattr(model, "zbl", None), train_set)
    if share is None or share <= threshold:
        return
    message = ("ZBL puts %.2fx the DFT force RMS on the training frames (its taper ends at %.2f x the "
               "covalent-radius sum), which the network must learn to cancel. For molecules with double or triple "
               "bonds, or a fit to forces only, set model.overrides.zbl_taper_end: 0.5; for metals the repulsion "
               "near the bonds helps learn the equation of state (set zbl_taper_end: 1.0 to keep it and silence "
               "this). See dpa4_core/model/zbl.py.")
    (logger.info if chosen else logger.warning)(message, share, model.zbl.taper_end)


def train(config, model: torch.nn.Module | None = None,
          callback: Callable[[int, dict], None] | None = None) -> TrainResult:
    """Train a DPA4 from scratch as described by ``config`` (a ``TrainConfig``, a dict, or a YAML path).

    Args:
        model: use this model instead of building ``config.model`` (e.g. a custom architecture).
        callback: see :func:`run_training`.

    Returns:
        :class:`TrainResult` with absolute checkpoint paths, metrics, the log path and plot paths.
    """
    config = load_config(config, TrainConfig)
    if model is None:
        model = build_model(config.model, config.seed)
    train_set, valid_set, test_set = prepare_data(config, r_min=float(getattr(model.config, "r_in", 0.0)))
    logger.info("training on %d frames, validating on %d", len(train_set), len(valid_set))
    return run_training(config, model, train_set, valid_set, test_set, callback=callback)
