"""One job relaxes a list of structures: the unit of work of a screening flow.

With DPA4 and ``dpa4_core.dynamics.relax_batch`` available, all structures are relaxed together on the
batched engine (many structures per model call). Otherwise (other calculators, or before the batched engine
exists) each structure gets an ASE FIRE relaxation with the cell filter, with this job's own calculator (around
the process-wide cached model). A structure that fails (not a structure, invalid, elements outside the model's
training set, blown up) is reported with its error in its own ``RelaxedStructure``; it does not fail the other
structures, and the stability and report steps of a screening skip it with that reason.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from jobflow import Maker, job
from pymatgen.core import Structure
from tqdm.auto import tqdm

from dpa4_flows.jobs import calculators
from dpa4_flows.jobs.calculators import default_calculator_kwargs
from dpa4_flows.schemas import BatchRelaxDoc, RelaxedStructure
from dpa4_flows.settings import get_settings

logger = logging.getLogger(__name__)
#: One line per finished screening chunk; ``dpa4 screen`` writes it to the run's log file.
progress_logger = logging.getLogger("dpa4_flows.progress")

ENGINES = ("auto", "batched", "ase")


class BatchRelaxError(ValueError):
    """Bad arguments to a batch relaxation (engine name, bad fmax/max_steps, mismatched ids)."""


def _batched_engine():
    try:
        from dpa4_core.dynamics import relax_batch
    except ImportError:
        return None
    return relax_batch


def _as_structure(obj: Any) -> Any:
    """A pymatgen Structure from a Structure or its dict; anything else as is (it gets its own error result)."""
    if isinstance(obj, dict) and obj.get("@class") == "Structure":
        return Structure.from_dict(obj)
    return obj


def _formula(structure: Any) -> str:
    return structure.composition.reduced_formula if isinstance(structure, Structure) else "?"


def _failed(candidate_id: str, structure: Any, exc: BaseException) -> RelaxedStructure:
    logger.warning("relaxation of %s failed: %s: %s", candidate_id, type(exc).__name__, exc)
    return RelaxedStructure(candidate_id=candidate_id, formula=_formula(structure), error=f"{type(exc).__name__}: {exc}")


@dataclass
class BatchRelaxMaker(Maker):
    """Relax a list of structures in one job.

    Args:
        name: job name.
        calculator_meta: calculator import path; DPA4 by default (see :mod:`dpa4_flows.jobs.calculators`).
        calculator_kwargs: ``{"model", "device", "dtype"}`` for DPA4 (defaults from settings).
        fmax: force criterion, eV/A. max_steps: optimiser steps per structure.
        relax_cell: relax cell shape and volume (FrechetCellFilter) as well as positions.
        mask, hydrostatic_strain, scalar_pressure (eV/A^3): ASE's ``FrechetCellFilter`` options; fix_symmetry:
            ASE's ``FixSymmetry`` constraint (see :func:`dpa4_core.dynamics.relax_batch`).
        allow_untrained_elements: relax structures with elements outside the model's training set (warning)
            instead of reporting them as failed with ``UntrainedElementError``.
        engine: "auto" (batched when possible), "batched" (require it), or "ase" (loop).
        progress: show a tqdm bar over structures (quiet off a terminal).
        regime: keyword arguments of :class:`dpa4_flows.analysis.regime.RegimeLimits` for the geometry flags of
            every relaxed structure (``{}``: the defaults; None: no flags).
    """

    name: str = "DPA4 batch relax"
    calculator_meta: str = calculators.DPA4_CALCULATOR_META
    calculator_kwargs: dict = field(default_factory=default_calculator_kwargs)
    fmax: float = field(default_factory=lambda: get_settings().fmax)
    max_steps: int = field(default_factory=lambda: get_settings().max_steps)
    relax_cell: bool = True
    mask: list | None = None
    hydrostatic_strain: bool = False
    scalar_pressure: float = 0.0
    fix_symmetry: bool = False
    allow_untrained_elements: bool = False
    engine: Literal["auto", "batched", "ase"] = "auto"
    progress: bool = True
    regime: dict | None = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise BatchRelaxError(f"engine={self.engine!r}; allowed: {', '.join(ENGINES)}")
        if not self.fmax > 0:
            raise BatchRelaxError(f"fmax={self.fmax} eV/A must be positive")
        if self.max_steps < 0:
            raise BatchRelaxError(f"max_steps={self.max_steps} must be >= 0")

    @job(output_schema=BatchRelaxDoc)
    def make(self, structures: list[Structure], candidate_ids: list[str] | None = None,
             chunk: tuple[int, int] | None = None) -> BatchRelaxDoc:
        """Relax ``structures`` (ids default to ``"0"``, ``"1"``, ...); see :meth:`relax`. ``chunk`` =
        (index, count) of this job among a screening's chunks: one progress line (rate, ETA) when it ends."""
        doc = self.relax(structures, candidate_ids)
        if chunk is not None:
            index, count = chunk
            rate = len(doc.results) / max(doc.elapsed_time, 1e-9)
            eta = (count - index) * doc.elapsed_time
            progress_logger.info("chunk %d/%d done: %d structures in %.1f s (%.2f structures/s); ETA %.0f s at this "
                                 "rate", index, count, len(doc.results), doc.elapsed_time, rate, eta)
        return doc

    def _use_batched(self) -> bool:
        is_dpa4 = str(self.calculator_meta) == calculators.DPA4_CALCULATOR_META
        available = _batched_engine() is not None
        if self.engine == "batched" and not (is_dpa4 and available):
            raise BatchRelaxError(
                "engine='batched' needs calculator_meta='dpa4_core.DPA4Calculator' and dpa4_core.dynamics.relax_batch"
            )
        return self.engine == "batched" or (self.engine == "auto" and is_dpa4 and available)

    def relax(self, structures: list[Structure], candidate_ids: list[str] | None = None) -> BatchRelaxDoc:
        """Relax outside jobflow. Returns a :class:`BatchRelaxDoc` with one result per structure, in order."""
        structures = [_as_structure(s) for s in structures]
        ids = [str(i) for i in range(len(structures))] if candidate_ids is None else [str(c) for c in candidate_ids]
        if len(ids) != len(structures):
            raise BatchRelaxError(f"{len(ids)} candidate_ids for {len(structures)} structures")
        start = time.perf_counter()
        use_batched = self._use_batched() if structures else False
        results = self._relax_batched(structures, ids) if use_batched else self._relax_ase(structures, ids)
        if self.regime is not None:
            _flag(structures, results, self.regime)
        return BatchRelaxDoc(
            results=results,
            model_id=calculators.model_identifier(self.calculator_meta, self.calculator_kwargs),
            engine="batched" if use_batched else "ase",
            fmax=self.fmax,
            max_steps=self.max_steps,
            relax_cell=self.relax_cell,
            elapsed_time=time.perf_counter() - start,
        )

    def _relax_ase(self, structures: list[Structure], ids: list[str]) -> list[RelaxedStructure]:
        from ase.constraints import FixSymmetry
        from ase.filters import FrechetCellFilter
        from ase.optimize import FIRE
        from dpa4_core.model.domain import check_elements
        from pymatgen.io.ase import AseAtomsAdaptor

        calculator = calculators.get_calculator(self.calculator_meta, **self.calculator_kwargs)
        results = []
        bar = tqdm(zip(ids, structures), total=len(ids), desc="relax", disable=not self.progress or None)
        for candidate_id, structure in bar:
            try:
                if not isinstance(structure, Structure):
                    raise BatchRelaxError(f"{candidate_id} is a {type(structure).__name__}, not a pymatgen Structure")
                atoms = AseAtomsAdaptor.get_atoms(structure)
                check_elements(getattr(calculator, "model", None), atoms.numbers, self.allow_untrained_elements,
                               where=f"{candidate_id} ({structure.composition.reduced_formula})")
                atoms.calc = calculator
                if self.fix_symmetry:
                    atoms.set_constraint(FixSymmetry(atoms))
                target = FrechetCellFilter(atoms, mask=self.mask, hydrostatic_strain=self.hydrostatic_strain,
                                           scalar_pressure=self.scalar_pressure) if self.relax_cell else atoms
                optimizer = FIRE(target, logfile=None)  # logfile=None: nothing printed, no file written
                converged = bool(optimizer.run(fmax=self.fmax, steps=self.max_steps))
                energy = float(atoms.get_potential_energy())
                forces = atoms.get_forces()
                relaxed = AseAtomsAdaptor.get_structure(atoms)
                results.append(
                    RelaxedStructure(
                        candidate_id=candidate_id,
                        formula=relaxed.composition.reduced_formula,
                        structure=relaxed,
                        energy=energy,
                        energy_per_atom=energy / len(atoms),
                        max_force=float(np.linalg.norm(forces, axis=1).max()),
                        n_steps=int(optimizer.nsteps),
                        converged=converged,
                    )
                )
            except Exception as exc:  # noqa: BLE001 - one bad structure must not sink the chunk
                results.append(_failed(candidate_id, structure, exc))
        return results

    def _relax_batched(self, structures: list[Structure], ids: list[str]) -> list[RelaxedStructure]:
        relax_batch = _batched_engine()
        kwargs = self.calculator_kwargs
        model = calculators.get_model(kwargs["model"], kwargs.get("device", "cpu"), kwargs.get("dtype", "float32"))
        raw = relax_batch(
            structures, model, fmax=self.fmax, max_steps=self.max_steps, relax_cell=self.relax_cell, mask=self.mask,
            hydrostatic_strain=self.hydrostatic_strain, scalar_pressure=self.scalar_pressure,
            fix_symmetry=self.fix_symmetry, allow_untrained_elements=self.allow_untrained_elements,
            dtype=kwargs.get("dtype", "float32"), device=kwargs.get("device", "cpu"),
            progress=None if self.progress else False,
        )
        return [_from_engine(cid, s, r) for cid, s, r in zip(ids, structures, raw, strict=True)]


def _flag(structures: list[Any], results: list[RelaxedStructure], regime: dict) -> None:
    """Set ``flags`` of every relaxed structure that left the physical regime (see analysis.regime)."""
    from dpa4_flows.analysis.regime import RegimeLimits, geometry_flags

    limits = RegimeLimits(**regime)
    for initial, result in zip(structures, results):
        if result.structure is not None and isinstance(initial, Structure):
            result.flags = geometry_flags(initial, result.structure, limits)
            if result.flags:
                logger.warning("%s left the physical regime: %s", result.candidate_id, "; ".join(result.flags))


def _from_engine(candidate_id: str, initial: Structure, result: Any) -> RelaxedStructure:
    """Adapt one ``dpa4_core.dynamics.RelaxResult`` (structure or atoms, energy, forces, steps, converged)."""
    error = getattr(result, "error", None)
    if error:
        logger.warning("relaxation of %s failed: %s", candidate_id, error)
        return RelaxedStructure(candidate_id=candidate_id, formula=_formula(initial), error=str(error))
    relaxed = getattr(result, "structure", None)
    if relaxed is None and getattr(result, "atoms", None) is not None:
        from pymatgen.io.ase import AseAtomsAdaptor

        relaxed = AseAtomsAdaptor.get_structure(result.atoms)
    energy = float(result.energy)
    forces = getattr(result, "forces", None)
    max_force = getattr(result, "max_force", None)
    if max_force is None and forces is not None:
        max_force = float(np.linalg.norm(np.asarray(forces), axis=1).max())
    n_steps = getattr(result, "n_steps", getattr(result, "steps", None))
    return RelaxedStructure(
        candidate_id=candidate_id,
        formula=initial.composition.reduced_formula,
        structure=relaxed,
        energy=energy,
        energy_per_atom=energy / len(initial),
        max_force=None if max_force is None else float(max_force),
        n_steps=None if n_steps is None else int(n_steps),
        converged=bool(getattr(result, "converged", False)),
    )
