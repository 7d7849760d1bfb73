"""Where a training step's time goes: batch building, forward + loss, backward, each optimiser, EMA.

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/step_phases.py runs/accuracy/acac/ours/train.yaml

Takes a `dpa4 train` YAML (e.g. the one `accuracy.py` writes for ours), builds the model, data, optimisers and EMA
as the trainer does, runs ``--steps`` steps of the trainer's loop body and prints the median milliseconds of each
phase over the steps after ``--warmup``. ``--torch-muon`` swaps our ``GroupedMuon`` for ``torch.optim.Muon`` with the
same parameters and settings, to compare the two. Nothing is written.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time

import numpy as np
import torch

from dpa4_core.train.compile import make_predictor
from dpa4_core.train.config import TrainConfig, load_config
from dpa4_core.train.loss import LossWeights, compute_loss
from dpa4_core.train.optim import GroupedMuon, build_optimizers
from dpa4_core.train.schedule import EMA
from dpa4_core.train.setup import build_model, initial_bias, model_dtype
from dpa4_core.train.trainer import batch_indices, prepare_data


def _as_torch_muon(grouped: GroupedMuon) -> torch.optim.Optimizer:
    """torch.optim.Muon on the same parameters with the same settings."""
    names = ("lr", "weight_decay", "momentum", "nesterov", "ns_coefficients", "eps", "ns_steps", "adjust_lr_fn")
    return torch.optim.Muon(grouped.param_groups[0]["params"], **{k: grouped.defaults[k] for k in names})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="a dpa4 train YAML")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--warmup", type=int, default=20, help="steps left out of the medians")
    parser.add_argument("--torch-muon", action="store_true", help="torch.optim.Muon instead of GroupedMuon")
    args = parser.parse_args()
    config = load_config(args.config, TrainConfig)
    model = build_model(config.model, config.seed)
    train_set, _, _ = prepare_data(config, r_min=float(model.config.r_in))
    initial_bias(model, train_set, config.bias)
    model.train()
    ema = EMA(model, config.optim.ema_decay)
    optimizers = build_optimizers(model, config)
    if args.torch_muon:
        optimizers = [_as_torch_muon(o) if isinstance(o, GroupedMuon) else o for o in optimizers]
    weights = LossWeights.from_config(config.loss)
    predictor = make_predictor(model, compile=config.compile, bf16=config.bf16)
    dtype = model_dtype(model)  # the batch in the model's dtype, as the trainer builds it
    phases = ["batch", "forward+loss", "backward"] + [type(o).__name__ for o in optimizers] + ["ema"]
    times = {name: [] for name in phases + ["step"]}
    for step in range(args.steps):
        marks = [time.perf_counter()]
        batch, labels = train_set.batch(batch_indices(step, len(train_set), config.batch_size, config.seed),
                                        model.config.cutoff, dtype, "cpu")
        marks.append(time.perf_counter())
        loss, _ = compute_loss(predictor(batch), labels, batch.frame, weights)
        marks.append(time.perf_counter())
        for optimizer in optimizers:
            optimizer.zero_grad(set_to_none=True)
        loss.backward()
        marks.append(time.perf_counter())
        for optimizer in optimizers:
            optimizer.step()
            marks.append(time.perf_counter())
        ema.update(model)
        marks.append(time.perf_counter())
        for name, start, end in zip(phases, marks[:-1], marks[1:]):
            times[name].append(end - start)
        times["step"].append(marks[-1] - marks[0])
    print(f"command: OMP_NUM_THREADS={torch.get_num_threads()} python {shlex.join(sys.argv)}")
    print(f"{len(train_set)} training frames, batch {config.batch_size}, preset {config.model.preset}, "
          f"{torch.get_num_threads()} thread(s); median ms over steps {args.warmup}-{args.steps}:")
    for name, values in times.items():
        print(f"  {name:14s} {1e3 * float(np.median(values[args.warmup:])):8.2f}")


if __name__ == "__main__":
    main()
