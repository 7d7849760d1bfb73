"""A labelled frame in ASE units and signs, its checks, and the stress unit conversions the readers share.

ASE conventions throughout: energy in eV, forces in eV/A, stress in eV/A^3 with tension positive,
``sigma = (1/V) dE/d(strain)``; 6-component stresses are Voigt vectors (order named where they are read).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from ase import Atoms

KBAR_TO_EV_PER_A3 = 6.241509074460763e-4  # 1 kbar = 0.1 GPa = 0.1 / 160.21766 eV/A^3
GPA_TO_EV_PER_A3 = 1.0 / 160.21766208
# How a stored stress converts to ASE's eV/A^3, tension positive: sigma = factor * raw.
STRESS_UNITS = {
    "kbar_vasp": -KBAR_TO_EV_PER_A3,  # VASP OUTCAR/JSON: kbar, compression positive
    "kbar": KBAR_TO_EV_PER_A3,  # kbar, tension positive
    "gpa": GPA_TO_EV_PER_A3,  # GPa, tension positive
    "ev/a^3": 1.0,  # ASE
}


class DataError(ValueError):
    """Labelled data that cannot be used (missing labels, wrong shapes, NaN, unknown units); names file and frame."""


@dataclass
class Frame:
    """One labelled structure in ASE units.

    Attributes:
        atoms: the structure (cell rows = lattice vectors).
        energy: total energy, eV.
        forces: ``[n_atoms, 3]`` eV/A.
        stress: ``[3, 3]`` eV/A^3, ASE sign (tension positive), or None when not labelled.
        weight: per-frame loss weight.
        group: tag for group-wise splits (file stem or the record's group by default).
        source: ``"file:frame"`` used in error messages.
    """

    atoms: Atoms
    energy: float
    forces: np.ndarray
    stress: np.ndarray | None
    weight: float = 1.0
    group: str = ""
    source: str = ""


def voigt_to_matrix(voigt: Any, order: str = "vasp") -> np.ndarray:
    """6 Voigt components or a 3x3 (9) array -> symmetric ``[3, 3]``.

    ``order="vasp"``: ``[xx, yy, zz, xy, yz, xz]`` (VASP, the maml/mlearn JSON); ``order="ase"``:
    ``[xx, yy, zz, yz, xz, xy]`` (ASE calculators and extxyz).
    """
    v = np.asarray(voigt, dtype=np.float64).reshape(-1)
    if v.size == 9:
        return v.reshape(3, 3)
    if v.size != 6:
        raise ValueError(f"stress needs 6 (Voigt) or 9 components, got {v.size}")
    if order == "ase":
        xx, yy, zz, yz, xz, xy = v
    elif order == "vasp":
        xx, yy, zz, xy, yz, xz = v
    else:
        raise ValueError(f"unknown Voigt order {order!r}; allowed: 'vasp', 'ase'")
    return np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])


def check_frame(frame: Frame) -> Frame:
    """Raise :class:`DataError` (naming ``frame.source``) unless the labels are complete and finite."""
    where = frame.source or "frame"
    n = len(frame.atoms)
    if frame.energy is None or not np.isfinite(frame.energy):
        raise DataError(f"{where}: energy is missing or not finite ({frame.energy!r})")
    if frame.forces is None:
        raise DataError(f"{where}: forces are missing")
    forces = np.asarray(frame.forces, dtype=np.float64)
    if forces.shape != (n, 3):
        raise DataError(f"{where}: forces have shape {forces.shape}, expected ({n}, 3) for {n} atoms")
    if not np.isfinite(forces).all():
        raise DataError(f"{where}: forces contain NaN or infinite values")
    if frame.stress is not None:
        stress = np.asarray(frame.stress, dtype=np.float64)
        if stress.shape != (3, 3) or not np.isfinite(stress).all():
            raise DataError(f"{where}: stress must be a finite 3x3 tensor, got shape {stress.shape}")
        if not np.asarray(frame.atoms.pbc).all():
            raise DataError(f"{where}: stress given for a non-periodic structure")
    if not np.isfinite(frame.atoms.positions).all():
        raise DataError(f"{where}: positions contain NaN or infinite values")
    if not np.isfinite(frame.weight) or frame.weight < 0:
        raise DataError(f"{where}: weight must be finite and >= 0, got {frame.weight!r}")
    frame.forces = forces
    return frame


def stress_factor(unit: str, where: str) -> float:
    """The factor of ``STRESS_UNITS[unit]`` (case-insensitive), or :class:`DataError` naming ``unit`` and ``where``."""
    try:
        return STRESS_UNITS[unit.lower()]
    except KeyError:
        raise DataError(f"{where}: unknown stress unit {unit!r}; allowed: {sorted(STRESS_UNITS)}") from None
