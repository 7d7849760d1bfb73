"""Model-side set-up for training: building a DPA4, its dtype, the energy bias before training (least squares
on composition or isolated atoms), and a check of how much force the fixed ZBL term puts on the training frames.
Checkpoints are read with :func:`dpa4_core.io.checkpoint.load_checkpoint`; the training predictor is
:func:`dpa4_core.train.compile.make_predictor`."""

from __future__ import annotations

import numpy as np
import torch

from dpa4_core.model.derivatives import forces_and_virial
from dpa4_core.model.zbl import ZBL
from dpa4_core.train.config import BiasConfig
from dpa4_core.train.dataset import FrameDataset


def build_model(section, seed: int = 0) -> torch.nn.Module:
    """A fresh ``DPA4`` from ``config.model`` (preset plus overrides), in the training dtype.

    The weights are drawn from torch's global RNG seeded with ``seed`` inside a ``fork_rng`` scope: the same
    ``seed`` gives the same weights, and the caller's RNG state is left as it was.
    """
    import dataclasses

    from dpa4_core.config import DPA4Config
    from dpa4_core.model.energy import DPA4

    config = DPA4Config.preset(section.preset)
    if section.overrides:
        try:
            config = dataclasses.replace(config, **section.overrides)
        except TypeError as exc:  # unknown field name
            raise ValueError(f"model.overrides {section.overrides}: {exc}") from exc
    with torch.random.fork_rng(devices=[]):  # built on the CPU
        torch.manual_seed(seed)
        return DPA4(config).to(getattr(torch, section.dtype))


def model_dtype(model: torch.nn.Module) -> torch.dtype:
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float64


def fit_composition_bias(dataset: FrameDataset, energies: np.ndarray | None = None) -> np.ndarray:
    """Least-squares per-element energies ``b [119]`` (eV) with ``sum_t n_ft b_t ~ E_f`` (spec section 5).

    ``energies`` defaults to the dataset's DFT energies (pass residuals to refit a trained model's bias).
    """
    from dpa4_core.model.bias import fit_energy_bias

    numbers = np.split(dataset.numbers, dataset.offsets[1:-1])
    target = dataset.energy if energies is None else energies
    return fit_energy_bias(numbers, target).numpy()


def isolated_atom_bias(path: str) -> np.ndarray:
    """Per-element energies (eV) from a file of single-atom frames (e.g. ``isolated_atoms.xyz``; no forces needed)."""
    import ase.io

    from dpa4_core.data.labels import DataError

    bias = np.zeros(119)
    for index, atoms in enumerate(ase.io.read(path, index=":")):
        energy = atoms.calc.results.get("energy") if atoms.calc is not None else atoms.info.get("energy")
        if len(atoms) != 1 or energy is None:
            raise DataError(f"{path}:frame {index}: not a single atom with an energy ({len(atoms)} atoms)")
        bias[int(atoms.numbers[0])] = float(energy)
    return bias


def set_energy_bias(model: torch.nn.Module, bias: np.ndarray) -> None:
    with torch.no_grad():
        model.energy_bias.copy_(torch.as_tensor(bias, dtype=model.energy_bias.dtype))


def resolve_e0(config: BiasConfig, elements: list[int]) -> dict[str, float]:
    """The ``{symbol: E0}`` of ``config.e0`` for the trained ``elements`` (atomic numbers).

    Raises:
        BiasFitError: a trained element has no E0.
    """
    from ase.data import chemical_symbols

    from dpa4_core.model.bias import BiasFitError, dimer_e0, packaged_dimer_e0

    symbols = [chemical_symbols[z] for z in elements]
    if config.e0 == "dimer":
        if config.dimer_file is None:
            return packaged_dimer_e0(symbols)
        return dimer_e0(config.dimer_file, symbols)
    missing = [s for s in symbols if s not in config.e0]
    if missing:
        raise BiasFitError(f"bias.e0 has no isolated-atom energy for trained element(s) {missing}")
    return {s: float(config.e0[s]) for s in symbols}


def set_e0_reference(model, dataset: FrameDataset, e0: dict[str, float]) -> np.ndarray:
    """Bias = E0; shift = least squares of ``E_f - sum_i E0[Z_i]`` on composition (the cohesive energy per atom,
    carried by the switched network term), fitted on the periodic frames when there are any (a dimer's binding
    energy is not a bulk cohesive energy). Returns the shift ``[119]`` (eV)."""
    from dpa4_core.model.bias import e0_vector

    e0_vec = e0_vector(e0).numpy()
    bulk = dataset.pbc.all(axis=1)
    fit_on = dataset.subset(np.flatnonzero(bulk)) if bulk.any() else dataset
    shift = fit_composition_bias(fit_on, fit_on.energy - fit_on.composition() @ e0_vec)
    set_energy_bias(model, e0_vec)
    with torch.no_grad():
        model.energy_shift.copy_(torch.as_tensor(shift, dtype=model.energy_shift.dtype))
    return shift


def initial_bias(model, dataset: FrameDataset, config: BiasConfig) -> None:
    if config.method == "lstsq":
        set_energy_bias(model, fit_composition_bias(dataset))
    elif config.method == "isolated_atoms":
        set_energy_bias(model, isolated_atom_bias(config.isolated_atoms))
    elif config.method == "e0":
        set_e0_reference(model, dataset, resolve_e0(config, dataset.elements))


def zbl_force_share(zbl: ZBL | None, dataset: FrameDataset, max_frames: int = 64) -> float | None:
    """RMS of the ZBL forces over the RMS of the DFT forces, on up to ``max_frames`` evenly spaced frames.

    ZBL is a fixed term: the network has to learn to cancel whatever it adds on the training bonds, which slows
    early training (see ``dpa4_core/model/zbl.py``). None without ZBL, frames or forces. Computed in fp64 (ZBL
    follows the dtype of the distances it is given).
    """
    if zbl is None or len(dataset) == 0:
        return None
    indices = np.unique(np.linspace(0, len(dataset) - 1, min(len(dataset), max_frames)).round().astype(int))
    batch, labels = dataset.batch(indices, cutoff=zbl.cutoff, dtype=torch.float64,
                                  device=zbl.covalent_radii.device)
    edge_vec = batch.edge_vectors().requires_grad_(True)
    energy = zbl(edge_vec.norm(dim=1), batch.numbers, batch.edge_src, batch.edge_dst, batch.n_atoms)
    forces, _ = forces_and_virial(energy, edge_vec, batch.edge_src, batch.edge_dst, batch.n_atoms,
                                  compute_virial=False)
    reference = labels.forces.pow(2).mean().sqrt().item()
    return forces.pow(2).mean().sqrt().item() / reference if reference > 0 else None
