"""Structures out of the batched engines: one system's geometry (and results) as ASE Atoms, in the caller's type.

Used by :mod:`dpa4_core.dynamics.relax` and :mod:`dpa4_core.dynamics.md` for final structures and trajectories.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.stress import full_3x3_to_voigt_6_stress


def as_input_type(template: Any, atoms: Atoms) -> Any:
    """``atoms`` as the type of ``template``: ASE ``Atoms`` as is, pymatgen ``Molecule`` or ``Structure`` converted."""
    if isinstance(template, Atoms):
        return atoms
    from pymatgen.core import Molecule
    from pymatgen.io.ase import AseAtomsAdaptor

    if isinstance(template, Molecule):
        return AseAtomsAdaptor.get_molecule(atoms)
    return AseAtomsAdaptor.get_structure(atoms)


def snapshot(
    template: Atoms,
    positions: np.ndarray,
    cell: np.ndarray,
    energy: float | None = None,
    forces: np.ndarray | None = None,
    stress: np.ndarray | None = None,
) -> Atoms:
    """A copy of ``template`` at this geometry, with a ``SinglePointCalculator`` if results are given.

    Args:
        positions: ``[n_atoms, 3]`` Cartesian (A). cell: ``[3, 3]`` rows (A; ignored for a non-periodic system).
        energy: eV. forces: ``[n_atoms, 3]`` eV/A. stress: ``[3, 3]`` eV/A^3, ASE sign (any periodic direction).
    """
    atoms = template.copy()
    if atoms.pbc.any():
        atoms.set_cell(cell, scale_atoms=False)
    atoms.set_positions(positions)
    if energy is not None:
        results = {"energy": energy, "free_energy": energy, "forces": forces}
        # Slabs and wires have ASE's stress too (virial over the whole cell), unless the cell has no volume.
        if atoms.pbc.any() and stress is not None and atoms.cell.volume > 0:
            results["stress"] = full_3x3_to_voigt_6_stress(stress)
        atoms.calc = SinglePointCalculator(atoms, **results)
    return atoms
