"""``evaluate_report(checkpoint_or_model, sources)``: MAE and RMSE of a model on labelled data, overall, per
subset (each source and, within it, each ``config_type``/group its reader gives) and per element, with every
frame's prediction kept for :meth:`EvalReport.write_predictions`.

Units: energy per atom meV/atom, force components meV/A, stress components GPa (ASE sign). Frames with atoms closer
than the model's ``r_in`` are dropped (``n_dropped``), as in training and :func:`~dpa4_core.train.evaluate`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from ase.data import chemical_symbols
from tqdm.auto import tqdm

from dpa4_core.data.labels import check_energy_scale
from dpa4_core.model.domain import check_elements
from dpa4_core.train.dataset import FrameDataset, load_dataset
from dpa4_core.train.evaluate import load_model
from dpa4_core.train.loss import EV_PER_A3_TO_GPA
from dpa4_core.train.setup import model_dtype


def _stats(errors: np.ndarray, scale: float) -> tuple[float | None, float | None]:
    """(MAE, RMSE) of ``errors`` times ``scale``; (None, None) when there are none."""
    if errors.size == 0:
        return None, None
    return float(np.abs(errors).mean() * scale), float(np.sqrt((errors**2).mean()) * scale)


@dataclass
class EvalReport:
    """Labels and predictions of every evaluated frame (F frames, N atoms; see :class:`FrameDataset`).

    ``energy [F]`` eV, ``forces [N,3]`` eV/A, ``stress [F,3,3]`` eV/A^3 (zeros where not periodic);
    ``subset [F]`` codes into ``subset_names``.
    """

    dataset: FrameDataset
    energy: np.ndarray
    forces: np.ndarray
    stress: np.ndarray
    subset: np.ndarray
    subset_names: list[str]

    def errors(self, frames: np.ndarray | None = None) -> dict:
        """MAE and RMSE of energy per atom, forces and stress over ``frames`` (a boolean mask; default all)."""
        data = self.dataset
        frames = np.ones(len(data), dtype=bool) if frames is None else frames
        atoms = np.repeat(frames, data.n_atoms)
        e_err = (self.energy - data.energy)[frames] / data.n_atoms[frames]
        f_err = (self.forces - data.forces)[atoms]
        labelled = frames & data.has_stress
        s_err = (self.stress - data.stress)[labelled]
        e_mae, e_rmse = _stats(e_err, 1000.0)
        f_mae, f_rmse = _stats(f_err, 1000.0)
        s_mae, s_rmse = _stats(s_err, EV_PER_A3_TO_GPA)
        return {"energy_mae_mev_per_atom": e_mae, "energy_rmse_mev_per_atom": e_rmse,
                "force_mae_mev_per_a": f_mae, "force_rmse_mev_per_a": f_rmse,
                "stress_mae_gpa": s_mae, "stress_rmse_gpa": s_rmse,
                "n_frames": int(frames.sum()), "n_atoms": int(atoms.sum()), "n_stress_frames": int(labelled.sum())}

    def subsets(self) -> list[dict]:
        """:meth:`errors` of each subset, ``{"subset": name, ...}``, in the order the subsets were read."""
        return [{"subset": name, **self.errors(self.subset == code)} for code, name in enumerate(self.subset_names)]

    def elements(self) -> list[dict]:
        """Force MAE and RMSE (meV/A) on the atoms of each element."""
        rows = []
        for z in self.dataset.elements:
            on = self.dataset.numbers == z
            mae, rmse = _stats(self.forces[on] - self.dataset.forces[on], 1000.0)
            rows.append({"element": chemical_symbols[z], "n_atoms": int(on.sum()), "force_mae_mev_per_a": mae,
                         "force_rmse_mev_per_a": rmse})
        return rows

    def to_dict(self) -> dict:
        """The overall errors (keys as :func:`~dpa4_core.train.evaluate`, plus the RMSEs), ``n_dropped``,
        ``subsets`` and ``elements``."""
        return {**self.errors(), "n_dropped": self.dataset.n_dropped, "subsets": self.subsets(),
                "elements": self.elements()}

    def write_predictions(self, path: str | Path) -> Path:
        """Every frame to an extxyz file with labels and predictions side by side: info ``dft_energy``,
        ``dpa4_energy`` (eV), ``dft_stress``, ``dpa4_stress`` (Voigt in ASE's order xx yy zz yz xz xy, eV/A^3, ASE
        sign, as ``Atoms.get_stress()``; DFT only where labelled),
        ``subset``, ``config_type``; arrays ``dft_forces``, ``dpa4_forces`` (eV/A)."""
        import ase.io

        data = self.dataset
        images = []
        for i in range(len(data)):
            atoms = data.atoms(i)
            a, b = data.offsets[i], data.offsets[i + 1]
            atoms.info.update(dft_energy=float(data.energy[i]), dpa4_energy=float(self.energy[i]),
                              subset=self.subset_names[self.subset[i]], config_type=data.group_names[data.group[i]])
            if data.pbc[i].any():
                atoms.info["dpa4_stress"] = _voigt(self.stress[i])
            if data.has_stress[i]:
                atoms.info["dft_stress"] = _voigt(data.stress[i])
            atoms.arrays["dft_forces"] = data.forces[a:b].copy()
            atoms.arrays["dpa4_forces"] = self.forces[a:b].copy()
            images.append(atoms)
        path = Path(path)
        ase.io.write(path, images, format="extxyz")
        return path


def _voigt(stress: np.ndarray) -> np.ndarray:
    return stress[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]].copy()


def predict(model, dataset: FrameDataset, batch_size: int = 8,
            progress: bool | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Energies ``[F]``, forces ``[N,3]`` and stresses ``[F,3,3]`` of ``model`` on ``dataset`` (float64 numpy),
    batched in order exactly as :func:`dpa4_core.train.trainer.run_validation` does; a tqdm bar over batches
    (``progress`` None: only on a terminal)."""
    dtype, device = model_dtype(model), next(model.parameters()).device
    energy, forces, stress = [], [], []
    starts = range(0, len(dataset), batch_size)
    for start in tqdm(starts, desc="eval", unit="batch", disable=None if progress is None else not progress):
        batch, _ = dataset.batch(range(start, min(start + batch_size, len(dataset))), model.config.cutoff, dtype,
                                 device)
        out = model(batch)
        energy.append(out["energy"].detach().double().cpu())
        forces.append(out["forces"].detach().double().cpu())
        stress.append(out["stress"].detach().double().cpu())
    return torch.cat(energy).numpy(), torch.cat(forces).numpy(), torch.cat(stress).numpy()


def _subset_names(source, dataset: FrameDataset) -> list[str]:
    """``source`` for a file whose frames carry only its default tag, else ``source [group]`` per group."""
    path = Path(str(source))
    defaults = {str(source), str(path.expanduser()), path.name.removesuffix(".gz").removesuffix(".json"),
                path.name}
    if len(dataset.group_names) == 1 and dataset.group_names[0] in defaults:
        return [str(source)]
    return [f"{source} [{group}]" for group in dataset.group_names]


def evaluate_report(checkpoint_or_model, sources, batch_size: int = 8, dtype: str | torch.dtype | None = None,
                    allow_untrained_elements: bool = False, progress: bool | None = None,
                    **read_kwargs) -> EvalReport:
    """Errors of a model on labelled frames, overall, per subset and per element (see the module docstring).

    Args:
        checkpoint_or_model: a checkpoint path or a loaded model.
        sources: a path or a list of paths (files or folders that :func:`load_dataset` reads); each is a subset.
        batch_size, dtype, allow_untrained_elements, read_kwargs: as :func:`dpa4_core.train.evaluate`.
        progress: a bar over batches on stderr; None = only on a terminal.

    Raises:
        UntrainedElementError, DataError: as :func:`dpa4_core.train.evaluate`.
    """
    model = load_model(checkpoint_or_model, dtype)
    sources = [sources] if isinstance(sources, str | Path) else list(sources)
    r_min = float(getattr(model.config, "r_in", 0.0))
    parts, subset, names = [], [], []
    for source in sources:
        part = load_dataset(source, r_min=r_min, **read_kwargs)
        local = _subset_names(source, part)
        subset.append(len(names) + (part.group if len(local) > 1 else np.zeros(len(part), dtype=np.int64)))
        names.extend(local)
        parts.append(part)
    dataset = FrameDataset.concatenate(parts)
    dataset.n_dropped = sum(p.n_dropped for p in parts)
    where = f"evaluation data {', '.join(str(s) for s in sources)}"
    check_elements(model, dataset.elements, allow_untrained_elements, where=where)
    energy, forces, stress = predict(model, dataset, batch_size, progress)
    check_energy_scale(dataset.energy / dataset.n_atoms, energy / dataset.n_atoms, dataset.n_atoms, where=where)
    return EvalReport(dataset, energy, forces, stress, np.concatenate(subset), names)
