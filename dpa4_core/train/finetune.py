"""Fine-tuning a trained DPA4 on a user's DFT set (spec section 7, issue 3).

Steps: load the base checkpoint; measure its errors on the user's validation split ("base"); refit the energy
bias on the new training data (least squares of the base model's energy residuals on composition, so a new
element or a different DFT reference energy is absorbed by the bias); measure again ("base_refit"). A base model
with an isolated-atom reference (``bias.method: e0``: ``energy_bias`` = E0, a non-zero ``energy_shift``) keeps E0:
the residuals of its periodic frames go to the cohesive shift instead, so a free atom stays at E0; optionally
freeze the embedding and the first ``freeze_blocks`` interaction blocks; train with the fine-tuning learning rate.
New elements need no special handling: the type embeddings are indexed by atomic number (1..118).

A committee (:func:`finetune_committee`) is one fine-tuning per seed into ``<output_dir>/seed<k>``. What the seed
changes: the training data order (``batch_indices``) and torch's RNG inside the run (dropout or any other draw).
Fine-tuning adds no freshly initialised head (the bias refit is a deterministic least-squares fit and every type
embedding comes from the checkpoint), so members differ by their data order. The validation/test split
(``data.split.seed``) and ``data.max_frames`` stay shared, so every member is measured on the same frames.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from dpa4_core.train.config import FinetuneConfig, load_config
from dpa4_core.train.dataset import FrameDataset
from dpa4_core.data.labels import check_energy_scale
from dpa4_core.io.checkpoint import model_from_data, read_checkpoint
from dpa4_core.io.files import file_sha256
from dpa4_core.model.domain import untrained_elements
from dpa4_core.train.setup import fit_composition_bias, model_dtype, set_energy_bias
from dpa4_core.train.run_state import STATE_FILE
from dpa4_core.train.trainer import TrainResult, prepare_data, run_training, run_validation

logger = logging.getLogger(__name__)


class FinetuneError(ValueError):
    """A fine-tuning request that cannot run (no base checkpoint, nothing left to train, ...)."""


def predicted_energies(model, dataset: FrameDataset, batch_size: int = 8) -> np.ndarray:
    """Total energies ``[F]`` (eV) of ``model`` on every frame (no forces)."""
    dtype = model_dtype(model)
    out = []
    for start in range(0, len(dataset), batch_size):
        batch, _ = dataset.batch(range(start, min(start + batch_size, len(dataset))), model.config.cutoff, dtype)
        pred = model(batch, compute_forces=False, compute_stress=False)
        out.append(pred["energy"].detach().double().cpu().numpy())
    return np.concatenate(out)


def refit_bias(model, dataset: FrameDataset, batch_size: int = 8) -> np.ndarray:
    """Shift the per-element bias so the model's mean energy error on ``dataset`` is least squares on composition.

    A model with an E0 reference (non-zero ``energy_shift``) keeps ``energy_bias`` = E0: the fit uses the
    periodic frames only (as ``set_e0_reference`` does) and goes to ``energy_shift``, which the network's switch
    multiplies (about 1 in a bulk, 0 for a free atom), so the isolated-atom energy is unchanged.

    Returns the change ``delta [119]`` (eV) added to ``model.energy_bias`` (or to ``model.energy_shift``).
    """
    was_training = model.training
    model.eval()
    predicted = predicted_energies(model, dataset, batch_size)
    model.train(was_training)
    # Labels in Hartree or per-atom energies would be absorbed by the refit and trained on; the base model's
    # energies show them, on the frames it knows (new elements are what fine-tuning adds: not checked).
    known = [f for f in range(len(dataset)) if not untrained_elements(model, dataset.numbers[
        dataset.offsets[f]:dataset.offsets[f + 1]])]
    check_energy_scale(dataset.energy[known], predicted[known], dataset.n_atoms[known],
                       where=f"fine-tuning data ({', '.join(dataset.group_names[:3])})")
    residual = dataset.energy - predicted
    if has_e0_reference(model):
        bulk = np.flatnonzero(dataset.pbc.all(axis=1))
        fit_on = bulk if bulk.size else np.arange(len(dataset))
        delta = fit_composition_bias(dataset.subset(fit_on), residual[fit_on])
        with torch.no_grad():
            model.energy_shift.add_(torch.as_tensor(delta, dtype=model.energy_shift.dtype))
        return delta
    delta = fit_composition_bias(dataset, residual)
    set_energy_bias(model, model.energy_bias.detach().double().cpu().numpy() + delta)
    return delta


def has_e0_reference(model) -> bool:
    """True for a model trained with ``bias.method: e0`` (its cohesive energy is in ``energy_shift``)."""
    shift = getattr(model, "energy_shift", None)
    return shift is not None and bool((shift != 0).any())


def freeze_early_blocks(model: torch.nn.Module, n_blocks: int) -> list[str]:
    """Stop gradients for the embedding and the first ``n_blocks`` interaction blocks; returns the frozen names.

    Parameters are matched by name: ``embedding*``/``type_embedding*``/``edge*``/``radial*`` (the input side) and
    ``blocks.<k>.`` for ``k < n_blocks``.
    """
    if n_blocks <= 0:
        return []
    n_total = len(getattr(model, "blocks", []))
    if n_blocks > n_total:
        raise FinetuneError(f"freeze_blocks={n_blocks} but the model has {n_total} interaction blocks")
    early = ("embedding", "type_embedding", "edge", "radial")
    frozen = []
    for name, param in model.named_parameters():
        is_early = name.startswith(early) or any(name.startswith(f"blocks.{k}.") for k in range(n_blocks))
        if is_early:
            param.requires_grad_(False)
            frozen.append(name)
    if len(frozen) == sum(1 for _ in model.parameters()):
        raise FinetuneError("freezing left no trainable parameters")
    return frozen


def finetune(config, base_checkpoint: str | Path | None = None, model: torch.nn.Module | None = None,
             callback=None) -> TrainResult:
    """Fine-tune a checkpoint on new data; see the module docstring.

    Args:
        config: ``FinetuneConfig``, a dict or a YAML path.
        base_checkpoint: overrides ``config.base_checkpoint`` (the CLI's ``--from``).
        model: an already loaded base model instead of a checkpoint path.
        callback: see :func:`dpa4_core.train.trainer.run_training`.

    Returns:
        :class:`TrainResult`; ``metrics`` holds ``valid`` (fine-tuned), ``base`` and ``base_refit`` (base model
        before/after the bias refit) on the same validation split, and ``test`` when a test split exists.
    """
    config = load_config(config, FinetuneConfig)
    if model is None:
        path = base_checkpoint or config.base_checkpoint
        if path is None:
            raise FinetuneError("no base checkpoint: set base_checkpoint in the config or pass --from")
        data = read_checkpoint(path)
        model = model_from_data(data)
        # what was fine-tuned, kept in every checkpoint written: the file's hash and, for a deepmd-kit file, its
        # provenance (sha256, type map, head, descriptor version)
        origin = {"checkpoint": str(data.path), "sha256": file_sha256(data.path)}
        if "converted_from" in data.metadata:
            origin["converted_from"] = data.metadata["converted_from"]
    else:
        origin = {"checkpoint": "(a model object)"}
    model = model.to(getattr(torch, config.model.dtype))
    frozen = freeze_early_blocks(model, config.freeze_blocks)
    if frozen:
        logger.info("froze %d parameter tensors", len(frozen))
    train_set, valid_set, test_set = prepare_data(config, r_min=float(getattr(model.config, "r_in", 0.0)))
    base = run_validation(model, valid_set, config.valid_batch_size).result()
    resuming = config.resume and (Path(config.output_dir).expanduser() / STATE_FILE).exists()
    extra = {"base": base}
    if not resuming:
        delta = refit_bias(model, train_set, config.valid_batch_size)
        logger.info("bias refit: max |delta| = %.4g eV", float(np.abs(delta).max()))
        extra["base_refit"] = run_validation(model, valid_set, config.valid_batch_size).result()
    return run_training(config, model, train_set, valid_set, test_set, callback=callback, extra_metrics=extra,
                        fit_bias=False, extra_metadata={"base": origin})


def committee_member_dir(output_dir: str | Path, seed: int) -> Path:
    """Where the member fine-tuned with ``seed`` writes its checkpoints, log and plots."""
    return Path(output_dir).expanduser() / f"seed{seed}"


def finetune_committee(config, seeds: Sequence[int], base_checkpoint: str | Path | None = None,
                       callback=None) -> list[tuple[int, TrainResult]]:
    """Fine-tune one committee member per seed, one after another, into ``<output_dir>/seed<k>/``.

    Each member starts from the same base checkpoint with ``config.seed = k``; see the module docstring for what
    the seed changes. Resumable like :func:`finetune`: a rerun skips finished members' training (their state is
    at the last step) and continues an interrupted member from its ``train_state.pt``.

    Returns:
        ``[(seed, TrainResult), ...]`` in the order of ``seeds``.
    """
    config = load_config(config, FinetuneConfig)
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise FinetuneError("a committee needs at least one seed")
    if len(set(seeds)) != len(seeds):
        raise FinetuneError(f"repeated seeds {seeds}: members with the same seed are the same model")
    results = []
    for seed in seeds:
        member = config.model_copy(update={"seed": seed,
                                           "output_dir": str(committee_member_dir(config.output_dir, seed))})
        logger.info("committee member seed %d -> %s", seed, member.output_dir)
        results.append((seed, finetune(member, base_checkpoint=base_checkpoint, callback=callback)))
    return results
