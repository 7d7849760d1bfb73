"""FrameDataset: labelled frames stored compactly (concatenated arrays + offsets), batched lazily.

A dataset of F frames and N atoms in total holds a handful of numpy arrays (``numbers [N]``, ``positions [N,3]``,
``forces [N,3]``, ``offsets [F+1]``, ``cell [F,3,3]``, ...) and no Python object per frame; ASE Atoms and
neighbour lists are built only for the frames of the batch being assembled (:meth:`FrameDataset.batch`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from ase import Atoms

from dpa4_core.data.batch import AtomsBatch
from dpa4_core.data.neighbors import neighbor_list
from dpa4_core.data.labels import DataError, Frame, UnitsCheck
from dpa4_core.data.readers import read_frames

logger = logging.getLogger(__name__)


@dataclass
class Labels:
    """Reference labels of one batch (torch, ASE units).

    ``energy [F]`` eV, ``forces [N,3]`` eV/A, ``stress [F,3,3]`` eV/A^3 (zeros where absent),
    ``has_stress [F]`` bool, ``weight [F]``, ``n_atoms [F]`` (float, for per-atom normalisation),
    ``volume [F]`` A^3 (0 for molecules).
    """

    energy: torch.Tensor
    forces: torch.Tensor
    stress: torch.Tensor
    has_stress: torch.Tensor
    weight: torch.Tensor
    n_atoms: torch.Tensor
    volume: torch.Tensor


class FrameDataset:
    """Labelled frames in flat arrays. Build with :meth:`from_frames` or :func:`load_dataset`.

    Attributes (F frames, N atoms in total): ``numbers [N]`` int, ``positions [N,3]``, ``forces [N,3]``,
    ``offsets [F+1]`` (atoms of frame f are ``offsets[f]:offsets[f+1]``), ``cell [F,3,3]``, ``pbc [F,3]``,
    ``energy [F]``, ``stress [F,3,3]``, ``has_stress [F]``, ``weight [F]``, ``group [F]`` (int codes into
    ``group_names``).
    """

    def __init__(self, numbers, positions, forces, offsets, cell, pbc, energy, stress, has_stress, weight,
                 group, group_names: Sequence[str]):
        self.numbers = np.asarray(numbers, dtype=np.int64)
        self.positions = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
        self.forces = np.asarray(forces, dtype=np.float64).reshape(-1, 3)
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self.cell = np.asarray(cell, dtype=np.float64).reshape(-1, 3, 3)
        self.pbc = np.asarray(pbc, dtype=bool).reshape(-1, 3)
        self.energy = np.asarray(energy, dtype=np.float64)
        self.stress = np.asarray(stress, dtype=np.float64).reshape(-1, 3, 3)
        self.has_stress = np.asarray(has_stress, dtype=bool)
        self.weight = np.asarray(weight, dtype=np.float64)
        self.group = np.asarray(group, dtype=np.int64)
        self.group_names = list(group_names)
        self.n_dropped = 0  # frames dropped while reading (atoms closer than r_in)

    # ----------------------------------------------------------------------------------------- building
    @classmethod
    def from_frames(cls, frames: Iterable[Frame], r_min: float = 0.0) -> FrameDataset:
        """Collect frames into flat arrays, dropping (and reporting) frames with atoms closer than ``r_min``.

        Args:
            frames: labelled frames (validated by the readers).
            r_min: zone-bridging radius ``r_in`` in A; pairs closer than this are unphysical for the model.

        Raises:
            DataError: no frame left, or coordinates that are not in A (:class:`~dpa4_core.data.labels.UnitsCheck`).
        """
        parts: dict[str, list] = {k: [] for k in ("numbers", "positions", "forces", "n", "cell", "pbc", "energy",
                                                  "stress", "has_stress", "weight", "group")}
        group_codes: dict[str, int] = {}
        dropped: list[str] = []
        units = UnitsCheck()
        for frame in frames:
            units.add(frame)  # coordinates in bohr or fractional: refused below, before anything is trained or scored
            atoms = frame.atoms
            pbc = np.asarray(atoms.pbc, dtype=bool)
            cell = atoms.cell.array if pbc.all() else np.zeros((3, 3))
            if r_min > 0 and len(atoms) > 1 and len(neighbor_list(atoms.positions, cell, pbc, r_min)[0]):
                dropped.append(frame.source)
                continue
            parts["numbers"].append(atoms.numbers)
            parts["positions"].append(atoms.positions)
            parts["forces"].append(frame.forces)
            parts["n"].append(len(atoms))
            parts["cell"].append(cell)
            parts["pbc"].append(pbc)
            parts["energy"].append(frame.energy)
            parts["stress"].append(np.zeros((3, 3)) if frame.stress is None else frame.stress)
            parts["has_stress"].append(frame.stress is not None)
            parts["weight"].append(frame.weight)
            parts["group"].append(group_codes.setdefault(frame.group, len(group_codes)))
        units.finish()
        if dropped:
            logger.warning("dropped %d frame(s) with atoms closer than r_in = %.3g A, e.g. %s",
                           len(dropped), r_min, dropped[0])
        if not parts["n"]:
            raise DataError(f"no usable frames ({len(dropped)} dropped for atoms closer than {r_min} A)")
        dataset = cls(
            numbers=np.concatenate(parts["numbers"]),
            positions=np.concatenate(parts["positions"]),
            forces=np.concatenate(parts["forces"]),
            offsets=np.concatenate([[0], np.cumsum(parts["n"])]),
            cell=np.stack(parts["cell"]),
            pbc=np.stack(parts["pbc"]),
            energy=np.array(parts["energy"], dtype=np.float64),
            stress=np.stack(parts["stress"]),
            has_stress=np.array(parts["has_stress"]),
            weight=np.array(parts["weight"], dtype=np.float64),
            group=np.array(parts["group"]),
            group_names=list(group_codes),
        )
        dataset.n_dropped = len(dropped)
        return dataset

    # ------------------------------------------------------------------------------------------ access
    def __len__(self) -> int:
        return len(self.energy)

    @property
    def n_atoms(self) -> np.ndarray:
        """Atoms per frame ``[F]``."""
        return np.diff(self.offsets)

    @property
    def elements(self) -> list[int]:
        """Sorted atomic numbers present."""
        return sorted(int(z) for z in np.unique(self.numbers))

    def atoms(self, index: int) -> Atoms:
        """Frame ``index`` as ASE Atoms (unlabelled; built on demand)."""
        a, b = self.offsets[index], self.offsets[index + 1]
        return Atoms(numbers=self.numbers[a:b], positions=self.positions[a:b], cell=self.cell[index],
                     pbc=self.pbc[index])

    def composition(self) -> np.ndarray:
        """Element counts per frame ``[F, 119]`` (column = atomic number)."""
        counts = np.zeros((len(self), 119))
        frame_of_atom = np.repeat(np.arange(len(self)), self.n_atoms)
        np.add.at(counts, (frame_of_atom, self.numbers), 1.0)
        return counts

    def subset(self, indices: Sequence[int] | np.ndarray) -> FrameDataset:
        """A new compact dataset with frames ``indices`` (in that order)."""
        idx = np.asarray(indices, dtype=np.int64)
        n = self.n_atoms[idx]
        atom_idx = np.concatenate([np.arange(self.offsets[i], self.offsets[i + 1]) for i in idx]) if len(idx) else \
            np.zeros(0, dtype=np.int64)
        return FrameDataset(
            self.numbers[atom_idx], self.positions[atom_idx], self.forces[atom_idx],
            np.concatenate([[0], np.cumsum(n)]), self.cell[idx], self.pbc[idx], self.energy[idx], self.stress[idx],
            self.has_stress[idx], self.weight[idx], self.group[idx], self.group_names,
        )

    @staticmethod
    def concatenate(datasets: Sequence[FrameDataset]) -> FrameDataset:
        """One dataset holding all frames of ``datasets`` (group names merged)."""
        names: dict[str, int] = {}
        groups = []
        for ds in datasets:
            codes = np.array([names.setdefault(g, len(names)) for g in ds.group_names], dtype=np.int64)
            groups.append(codes[ds.group] if len(ds) else ds.group)
        n = np.concatenate([ds.n_atoms for ds in datasets])
        return FrameDataset(
            np.concatenate([d.numbers for d in datasets]), np.concatenate([d.positions for d in datasets]),
            np.concatenate([d.forces for d in datasets]), np.concatenate([[0], np.cumsum(n)]),
            np.concatenate([d.cell for d in datasets]), np.concatenate([d.pbc for d in datasets]),
            np.concatenate([d.energy for d in datasets]), np.concatenate([d.stress for d in datasets]),
            np.concatenate([d.has_stress for d in datasets]), np.concatenate([d.weight for d in datasets]),
            np.concatenate(groups), list(names),
        )

    def write_extxyz(self, path: str | Path) -> Path:
        """Write every frame with its labels (energy, forces, stress in ASE units) to an extxyz file, so a held-out
        split can be re-evaluated later (``dpa4 eval CHECKPOINT path``)."""
        import ase.io
        from ase.calculators.singlepoint import SinglePointCalculator

        images = []
        for i in range(len(self)):
            atoms = self.atoms(i)
            a, b = self.offsets[i], self.offsets[i + 1]
            stress = self.stress[i][[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]] if self.has_stress[i] else None
            atoms.calc = SinglePointCalculator(atoms, energy=float(self.energy[i]), forces=self.forces[a:b],
                                               stress=stress)
            atoms.info["config_type"] = self.group_names[self.group[i]]
            images.append(atoms)
        path = Path(path)
        ase.io.write(path, images, format="extxyz")
        return path.resolve()

    def batch(self, indices: Sequence[int] | np.ndarray, cutoff: float, dtype: torch.dtype = torch.float32,
              device: torch.device | str = "cpu") -> tuple[AtomsBatch, Labels]:
        """Model input (neighbour lists built now) and labels for frames ``indices``."""
        idx = [int(i) for i in indices]
        batch = AtomsBatch.from_atoms([self.atoms(i) for i in idx], cutoff=cutoff, dtype=dtype, device=device,
                                      validate=False)
        atom_idx = np.concatenate([np.arange(self.offsets[i], self.offsets[i + 1]) for i in idx])
        as_float = dict(dtype=dtype, device=device)
        volume = np.array([abs(np.linalg.det(self.cell[i])) for i in idx])
        labels = Labels(
            energy=torch.as_tensor(self.energy[idx], **as_float),
            forces=torch.as_tensor(self.forces[atom_idx], **as_float),
            stress=torch.as_tensor(self.stress[idx], **as_float),
            has_stress=torch.as_tensor(self.has_stress[idx], device=device),
            weight=torch.as_tensor(self.weight[idx], **as_float),
            n_atoms=torch.as_tensor(self.n_atoms[idx], **as_float),
            volume=torch.as_tensor(volume, **as_float),
        )
        return batch, labels

    # ------------------------------------------------------------------------------------------ splits
    def split(self, fractions: Sequence[float], seed: int = 0, by_group: bool = False) -> list[FrameDataset]:
        """Random split into parts of the given fractions (the last part takes the remainder).

        With ``by_group`` whole groups go to one part (group fractions count frames only approximately).
        """
        return [self.subset(i) for i in split_indices(self, fractions, seed, by_group)]


def split_indices(dataset: FrameDataset, fractions: Sequence[float], seed: int = 0,
                  by_group: bool = False) -> list[np.ndarray]:
    """Index arrays of a seeded random split, by frame or by whole group; see :meth:`FrameDataset.split`."""
    fractions = [float(f) for f in fractions]
    if any(f < 0 for f in fractions) or sum(fractions) > 1 + 1e-9:
        raise ValueError(f"split fractions must be >= 0 and sum to <= 1, got {fractions}")
    rng = np.random.default_rng(seed)
    if not by_group:
        order = rng.permutation(len(dataset))
        bounds = np.round(np.cumsum([0.0] + fractions[:-1]) * len(dataset)).astype(int)
        ends = list(bounds[1:]) + [len(dataset) if abs(sum(fractions) - 1) < 1e-9 else
                                   int(round(sum(fractions) * len(dataset)))]
        return [np.sort(order[a:b]) for a, b in zip(bounds, ends)]
    # Whole groups, in random order, each to the part furthest below its target frame count.
    sizes = np.bincount(dataset.group, minlength=len(dataset.group_names))
    targets = np.array(fractions) * len(dataset)
    filled = np.zeros(len(fractions))
    parts: list[list[int]] = [[] for _ in fractions]
    for g in rng.permutation(len(dataset.group_names)):
        part = int(np.argmax(targets - filled))
        parts[part].append(int(g))
        filled[part] += sizes[g]
    return [np.sort(np.flatnonzero(np.isin(dataset.group, p))) for p in parts]


def load_dataset(sources, r_min: float = 0.0, **read_kwargs) -> FrameDataset:
    """Read one or several sources (paths, folders or in-memory objects) into one :class:`FrameDataset`.

    Args:
        sources: a path, a list of paths, or a list of Atoms / ``(structure, labels)`` pairs; a dict
            ``{"path": ..., "format": ..., "stress_unit": ..., "group": ..., "weight": ...}`` per source works too.
        r_min: drop frames with atoms closer than this (the model's ``r_in``), with a logged warning.
        read_kwargs: passed to :func:`dpa4_core.data.readers.read_frames`.
    """
    if isinstance(sources, FrameDataset):
        return sources
    if isinstance(sources, str | Path | dict):
        sources = [sources]
    sources = list(sources)
    if sources and not isinstance(sources[0], str | Path | dict):
        return FrameDataset.from_frames(read_frames(sources, **read_kwargs), r_min=r_min)

    def frames():
        for source in sources:
            if isinstance(source, dict):
                kwargs = {**read_kwargs, **{k: v for k, v in source.items() if k != "path" and v is not None}}
                yield from read_frames(source["path"], **kwargs)
            else:
                yield from read_frames(source, **read_kwargs)

    return FrameDataset.from_frames(frames(), r_min=r_min)
