"""ASE calculator for DPA4, with neighbour-list reuse between nearby geometries (MD, relaxations).

The neighbour list is built with ``cutoff + skin`` and reused while no pair can have entered the cutoff sphere
since it was built. The model ignores edges beyond ``config.cutoff`` exactly (every per-edge term carries an
envelope that is zero there), so a reused list gives the same numbers as a fresh one.
"""

from __future__ import annotations

import copy
import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from dpa4_core.data.batch import MIN_DISTANCE, AtomsBatch, InvalidStructureError, resolve_dtype

if TYPE_CHECKING:
    from dpa4_core.model.energy import DPA4

logger = logging.getLogger(__name__)

STARTER_CHECKPOINT = Path(__file__).resolve().parent / "pretrained" / "dpa4-starter.pt"


class CalculatorSetupError(ValueError):
    """The calculator was given a bad model, checkpoint, dtype or skin."""


def _resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    return resolve_dtype(dtype, CalculatorSetupError)


def _resolve_model(model: DPA4 | str | os.PathLike | None, checkpoint: str | os.PathLike | None) -> DPA4:
    from dpa4_core.io.checkpoint import load_checkpoint

    if model is not None and checkpoint is not None:
        raise CalculatorSetupError("give either model or checkpoint, not both")
    source = model if model is not None else checkpoint
    if source is None:
        if not STARTER_CHECKPOINT.is_file():
            raise CalculatorSetupError(
                f"no model given and the starter checkpoint {STARTER_CHECKPOINT} does not exist; "
                "pass model=<DPA4> or checkpoint=<path to a .pt file>"
            )
        source = STARTER_CHECKPOINT
    if isinstance(source, str | os.PathLike):
        return load_checkpoint(source, map_location="cpu")
    if not isinstance(source, torch.nn.Module):
        raise CalculatorSetupError(f"model must be a DPA4 or a checkpoint path, got {type(source).__name__}")
    return source


class DPA4Calculator(Calculator):
    """ASE calculator: energy, free_energy, forces, stress (Voigt, eV/A^3, ASE sign) and per-atom energies.

    Args:
        model: a ``DPA4``, a checkpoint path, or None (then ``checkpoint``, else the starter checkpoint).
        device: torch device to run on.
        dtype: "float32" or "float64"; the calculator works on a cast copy, the caller's model is untouched.
        checkpoint: checkpoint path (the keyword form of :meth:`from_checkpoint`, for atomate2's
            ``calculator_kwargs``).
        skin: extra neighbour-list radius in A; the list is reused while atoms moved less than ``skin / 2``.

    Non-periodic structures have no stress (``get_stress`` raises ``PropertyNotImplementedError``); mixed
    periodicity raises ``InvalidStructureError``.
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress", "energies"]

    def __init__(
        self,
        model: DPA4 | str | os.PathLike | None = None,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype = "float32",
        checkpoint: str | os.PathLike | None = None,
        skin: float = 0.5,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not (np.isfinite(skin) and skin >= 0):
            raise CalculatorSetupError(f"skin must be a finite number >= 0 A, got {skin!r}")
        self.device = torch.device(device)
        self.dtype = _resolve_dtype(dtype)
        source = _resolve_model(model, checkpoint)
        # A private cast copy: never change the caller's model or torch's global default dtype.
        self.model = copy.deepcopy(source).to(device=self.device, dtype=self.dtype).eval()
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)
        self.cutoff = float(self.model.config.cutoff)
        self.skin = float(skin)
        # The cached list survives reset(): some ase versions reset the calculator whenever the atoms
        # move, and _list_still_valid decides on the geometry alone.
        self._batch: AtomsBatch | None = None
        self._reference: dict[str, np.ndarray] | None = None
        self.neighbor_list_builds = 0  # how many lists were built (for tests and diagnostics)

    @classmethod
    def from_checkpoint(
        cls, path: str | os.PathLike, device: str | torch.device = "cpu", dtype: str | torch.dtype = "float32",
        **kwargs: Any,
    ) -> DPA4Calculator:
        """Calculator for the model stored in ``path`` (see ``dpa4_core.io.checkpoint``)."""
        return cls(checkpoint=path, device=device, dtype=dtype, **kwargs)

    def _list_still_valid(self, atoms: Atoms) -> bool:
        """True if no pair can be inside ``cutoff`` now without having been inside ``cutoff + skin`` at build.

        With fractional coordinates ``f`` and cell ``C`` (rows), a pair vector is ``r = x C`` with
        ``x = f_j - f_i + shift``. Then ``|r_old| <= |r_new| * ||C_new^-1 C_old|| + |dx C_old|``, and
        ``|dx C_old| <= 2 max_k |(f_k,new - f_k,old) C_old|``. For a fixed cell this is the usual
        "every atom moved less than skin/2".
        """
        ref = self._reference
        if ref is None or len(atoms) != len(ref["numbers"]):
            return False
        if not (np.array_equal(atoms.numbers, ref["numbers"]) and np.array_equal(atoms.pbc, ref["pbc"])):
            return False
        positions = atoms.positions
        if not np.isfinite(positions).all():
            return False  # let the full validation name the problem
        if atoms.pbc.all():
            cell = atoms.cell.array
            if not np.isfinite(cell).all() or abs(np.linalg.det(cell)) < 1e-6:
                return False
            old_cell = ref["cell"]
            stretch = np.linalg.norm(np.linalg.solve(cell, old_cell), ord=2)  # ||C_new^-1 C_old||
            moved = (np.linalg.solve(cell.T, positions.T).T - ref["scaled"]) @ old_cell
        else:
            stretch = 1.0
            moved = positions - ref["positions"]
        worst = self.cutoff * stretch + 2 * np.sqrt((moved**2).sum(axis=1).max())
        return bool(worst < self.cutoff + self.skin)

    def _build_batch(self, atoms: Atoms) -> AtomsBatch:
        if self._batch is not None and self._list_still_valid(atoms):
            positions = torch.as_tensor(atoms.positions, dtype=self.dtype, device=self.device)
            cell = self._batch.cell
            if atoms.pbc.all():
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
        cell = atoms.cell.array.copy()
        self._reference = {
            "numbers": atoms.numbers.copy(),
            "pbc": np.asarray(atoms.pbc, dtype=bool).copy(),
            "positions": atoms.positions.copy(),
            "cell": cell,
            "scaled": np.linalg.solve(cell.T, atoms.positions.T).T if atoms.pbc.all() else None,
        }
        return batch

    def calculate(
        self, atoms: Atoms | None = None, properties: list[str] | None = None, system_changes=all_changes
    ) -> None:
        super().calculate(atoms, properties or ["energy"], system_changes)
        atoms = self.atoms
        periodic = bool(atoms.pbc.all())
        batch = self._build_batch(atoms)
        out = self.model(batch, compute_forces=True, compute_stress=periodic)
        energy = float(out["energy"][0].detach())
        self.results = {
            "energy": energy,
            "free_energy": energy,
            "energies": out["atom_energy"].detach().cpu().double().numpy().copy(),
            "forces": out["forces"].detach().cpu().double().numpy().copy(),
        }
        if periodic:
            stress = out["stress"][0].detach().cpu().double().numpy()
            self.results["stress"] = full_3x3_to_voigt_6_stress(stress)
