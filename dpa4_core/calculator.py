"""ASE calculator for DPA4, with neighbour-list reuse between nearby geometries (MD, relaxations).

The neighbour list is built with ``cutoff + skin`` and reused while no pair can have entered the cutoff sphere
since it was built. The model ignores edges beyond ``config.cutoff`` exactly (every per-edge term carries an
envelope that is zero there), so a reused list gives the same numbers as a fresh one.

One calculator may be shared between threads: a lock makes each property request (state check, calculation,
reading the result) one step, so a thread never gets another thread's structure's numbers.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from dpa4_core.data.batch import MIN_DISTANCE, AtomsBatch, InvalidStructureError, resolve_dtype, skin_list_valid
from dpa4_core.io.checkpoint import load_for_inference
from dpa4_core.io.files import file_sha256
from dpa4_core.model.derivatives import STRESS_MIN_VOLUME
from dpa4_core.model.domain import check_elements
from dpa4_core.pretrained import resolve_checkpoint, starter_checkpoint

if TYPE_CHECKING:
    from dpa4_core.model.energy import DPA4

logger = logging.getLogger(__name__)


class CalculatorSetupError(ValueError):
    """The calculator was given a bad model, checkpoint, dtype or skin."""


def _model_source(
    model: DPA4 | str | os.PathLike | None, checkpoint: str | os.PathLike | None
) -> DPA4 | str | os.PathLike:
    """The model or checkpoint path to load: ``model``, else ``checkpoint``, else the starter checkpoint."""
    if model is not None and checkpoint is not None:
        raise CalculatorSetupError("give either model or checkpoint, not both")
    source = model if model is not None else checkpoint
    if source is not None:
        return source
    try:
        return starter_checkpoint()
    except FileNotFoundError as exc:
        raise CalculatorSetupError(
            f"no model given and {exc}; pass model=<DPA4> or checkpoint=<path to a .pt file>"
        ) from None


@lru_cache(maxsize=32)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    """sha256 of a checkpoint, once per (path, size, modification time) per process."""
    return file_sha256(path)


def model_provenance(source: DPA4 | str | os.PathLike) -> dict[str, str | None]:
    """Which model a calculator runs: ``{"model": file name, "checkpoint": absolute path, "sha256": hex digest}``
    for a checkpoint file; ``{"model": "DPA4 (in memory)", "checkpoint": None, "sha256": None}`` for a model
    object (it has no file to point to)."""
    if isinstance(source, str | os.PathLike):
        path = resolve_checkpoint(source).expanduser().resolve()  # a shipped model's name is its file
        stat = path.stat()
        digest = _sha256(str(path), stat.st_size, stat.st_mtime_ns)
        return {"model": path.name, "checkpoint": str(path), "sha256": digest}
    return {"model": "DPA4 (in memory)", "checkpoint": None, "sha256": None}


@dataclass(frozen=True)
class _ListReference:
    """The geometry a cached neighbour list was built at: ``numbers [N]``, ``pbc [3]``, ``positions [N, 3]`` (A),
    ``cell [3, 3]`` (rows, A)."""

    numbers: np.ndarray
    pbc: np.ndarray
    positions: np.ndarray
    cell: np.ndarray


class DPA4Calculator(Calculator):
    """ASE calculator: energy, free_energy, forces, stress (Voigt, eV/A^3, ASE sign) and per-atom energies.

    Args:
        model: a ``DPA4``, a checkpoint path, or None (then ``checkpoint``, else the starter checkpoint).
        device: torch device to run on.
        dtype: "float32" or "float64"; the calculator works on a cast copy, the caller's model is untouched.
        checkpoint: checkpoint path (the keyword form of :meth:`from_checkpoint`, for atomate2's
            ``calculator_kwargs``).
        skin: extra neighbour-list radius in A; the list is reused while atoms moved less than ``skin / 2``.
        allow_untrained_elements: evaluate structures with elements outside the model's training set (with a
            warning) instead of raising ``UntrainedElementError``.

    Periodicity is per direction. Slabs and wires (e.g. ``pbc=(True, True, False)``) get ASE's stress: the
    virial over the volume of the whole cell, vacuum included; without a vacuum cell vector (zero volume), and for
    structures open in every direction, ``get_stress`` raises ``PropertyNotImplementedError``.

    ``todict()`` and ``parameters`` (what ASE databases and trajectories store with every result) record the model:
    ``model`` (checkpoint file name), ``checkpoint`` (absolute path), ``sha256`` (of the file), ``dtype``,
    ``device``, ``skin`` and ``allow_untrained_elements`` (see :func:`model_provenance` for model objects).
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress", "energies"]

    def __init__(
        self,
        model: DPA4 | str | os.PathLike | None = None,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype = "float32",
        checkpoint: str | os.PathLike | None = None,
        skin: float = 0.5,
        allow_untrained_elements: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not (np.isfinite(skin) and skin >= 0):
            raise CalculatorSetupError(f"skin must be a finite number >= 0 A, got {skin!r}")
        self.device = torch.device(device)
        self.dtype = resolve_dtype(dtype, CalculatorSetupError)
        # A private cast copy: never change the caller's model or torch's global default dtype.
        source = _model_source(model, checkpoint)
        self.model = load_for_inference(source, self.dtype, self.device, CalculatorSetupError)
        self.cutoff = float(self.model.config.cutoff)
        self.skin = float(skin)
        self.allow_untrained_elements = bool(allow_untrained_elements)
        # What ASE's todict() returns and ase.db / Trajectory store: plain JSON values only.
        self.parameters.update(
            model_provenance(source), dtype=str(self.dtype).removeprefix("torch."), device=str(self.device),
            skin=self.skin, allow_untrained_elements=self.allow_untrained_elements,
        )
        self._accepted_numbers: frozenset[int] = frozenset()  # elements check_elements already let through
        self._lock = threading.RLock()  # get_property -> calculate re-enters it
        # The cached list survives reset(): some ase versions reset the calculator whenever the atoms
        # move, and _list_still_valid decides on the geometry alone.
        self._batch: AtomsBatch | None = None
        self._reference: _ListReference | None = None
        self.neighbor_list_builds = 0  # how many lists were built (for tests and diagnostics)

    @classmethod
    def from_checkpoint(
        cls, path: str | os.PathLike, device: str | torch.device = "cpu", dtype: str | torch.dtype = "float32",
        **kwargs: Any,
    ) -> DPA4Calculator:
        """Calculator for the model stored in ``path`` (see ``dpa4_core.io.checkpoint``)."""
        return cls(checkpoint=path, device=device, dtype=dtype, **kwargs)

    def _list_still_valid(self, atoms: Atoms) -> bool:
        """True if no pair can be inside ``cutoff`` now without having been inside ``cutoff + skin`` at the build
        (the bound of :func:`dpa4_core.data.batch.skin_list_valid`; for a fixed cell: every atom moved less than
        ``skin / 2``)."""
        ref = self._reference
        if ref is None or len(atoms) != len(ref.numbers):
            return False
        if not (np.array_equal(atoms.numbers, ref.numbers) and np.array_equal(atoms.pbc, ref.pbc)):
            return False
        positions = atoms.positions
        if not np.isfinite(positions).all():
            return False  # let the full validation name the problem
        has_cell = bool(atoms.pbc.any())
        cell = atoms.cell.array
        if has_cell and not np.isfinite(cell).all():
            return False
        valid = skin_list_valid(
            torch.as_tensor(positions, dtype=torch.float64),
            torch.as_tensor(cell[None], dtype=torch.float64),
            torch.as_tensor(ref.positions, dtype=torch.float64),
            torch.as_tensor(ref.cell[None], dtype=torch.float64),
            torch.tensor([has_cell]),
            torch.zeros(len(atoms), dtype=torch.long),
            self.cutoff,
            self.skin,
        )
        return bool(valid[0])

    def _build_batch(self, atoms: Atoms) -> AtomsBatch:
        if self._batch is not None and self._list_still_valid(atoms):
            positions = torch.as_tensor(atoms.positions, dtype=self.dtype, device=self.device)
            cell = self._batch.cell
            if atoms.pbc.any():
                cell = torch.as_tensor(atoms.cell.array[None], dtype=self.dtype, device=self.device)
            batch = replace(self._batch, positions=positions, cell=cell)
            # The full validation (a second neighbour search) is skipped on reuse; keep its cheapest
            # safety net so atoms squeezed together still give a clear error instead of NaN.
            if batch.edge_src.numel():
                closest = float(batch.edge_vectors().norm(dim=-1).min())
                if closest < MIN_DISTANCE:
                    raise InvalidStructureError(f"atoms closer than {MIN_DISTANCE} A ({closest:.3g} A, coincident)")
            return batch
        batch = AtomsBatch.from_atoms([atoms], cutoff=self.cutoff + self.skin, dtype=self.dtype, device=self.device)
        self.neighbor_list_builds += 1
        self._batch = batch
        self._reference = _ListReference(
            numbers=atoms.numbers.copy(),
            pbc=np.asarray(atoms.pbc, dtype=bool).copy(),
            positions=atoms.positions.copy(),
            cell=atoms.cell.array.copy(),
        )
        return batch

    def _check_elements(self, atoms: Atoms) -> None:
        numbers = frozenset(int(z) for z in atoms.numbers)
        if numbers <= self._accepted_numbers:
            return  # checked before (warn once, not on every MD step)
        where = f"structure ({atoms.get_chemical_formula()})"
        check_elements(self.model, numbers, self.allow_untrained_elements, where)
        self._accepted_numbers |= numbers

    def get_property(self, name: str, atoms: Atoms | None = None, allow_calculation: bool = True):
        with self._lock:  # check_state, calculate and the read of self.results as one step
            return super().get_property(name, atoms, allow_calculation)

    def calculate(
        self, atoms: Atoms | None = None, properties: list[str] | None = None, system_changes=all_changes
    ) -> None:
        with self._lock:
            self._calculate(atoms, properties or ["energy"], system_changes)

    def _calculate(self, atoms: Atoms | None, properties: list[str], system_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        batch = self._build_batch(atoms)  # validates the structure first
        self._check_elements(atoms)
        # ASE's stress for slabs and wires too: -virial / volume of the whole cell (vacuum included).
        has_stress = bool(atoms.pbc.any() and abs(atoms.cell.volume) > STRESS_MIN_VOLUME)
        out = self.model(batch, compute_forces=True, compute_stress=has_stress)
        energy = float(out["energy"][0].detach())
        self.results = {
            "energy": energy,
            "free_energy": energy,
            "energies": out["atom_energy"].detach().cpu().double().numpy().copy(),
            "forces": out["forces"].detach().cpu().double().numpy().copy(),
        }
        if has_stress:
            stress = out["stress"][0].detach().cpu().double().numpy()
            self.results["stress"] = full_3x3_to_voigt_6_stress(stress)
