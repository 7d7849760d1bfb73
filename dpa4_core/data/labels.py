"""A labelled frame in ASE units and signs, its checks, and the stress unit conversions the readers share.

ASE conventions throughout: energy in eV, forces in eV/A, stress in eV/A^3 with tension positive,
``sigma = (1/V) dE/d(strain)``; 6-component stresses are Voigt vectors (order named where they are read).
"""

from __future__ import annotations

from collections.abc import Iterable
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
    _check_magnitudes(frame.atoms.numbers, float(frame.energy), forces, frame.stress, where)
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


# ------------------------------------------------------------------------------------ unit plausibility
# Limits no correct label in eV, eV/A, eV/A^3 and A reaches; past them the data is in other units, and a model
# trained or scored on it would answer confidently and wrongly. Each names the likely mistake.
HARTREE_EV = 27.211386
BOHR_A = 0.529177
# |E| of a neutral atom is below the Thomas-Fermi value 0.7687 Z^(7/3) Hartree (all-electron, the largest any
# code reports: ORCA's acetylacetone in data/botnet is -626 eV/atom); 1.0 Z^(7/3) Ha + 20 eV of binding per atom
# leaves a wide margin. A flat |E/atom| < 50 eV would refuse every all-electron data set.
MAX_FORCE = 1.0e3  # eV/A: 100x the hardest AIMD forces in data/ (14 eV/A); meV/A labels are ~1e3 and beyond
MAX_STRESS = 10.0  # eV/A^3 = 1.6 TPa, 4x the pressure at the Earth's centre: GPa or kbar read as eV/A^3
# Nearest-neighbour distance over the sum of covalent radii, median over a frame's atoms: 0.72-1.17 on every
# frame of data/maml_MoNbTaW, data/mlearn and data/botnet (hot AIMD to bcc Li). Bohr read as A scales it by
# 1.89 (>= 1.36), A converted to bohr twice (or fractional coordinates) by <= 0.53.
STRETCHED, SQUEEZED = 1.3, 0.6
NOBLE_GASES = frozenset({2, 10, 18, 36, 54, 86})  # van der Waals solids: no covalent bond, large ratios


def _max_energy(numbers: np.ndarray) -> float:
    return float(np.sum(HARTREE_EV * numbers.astype(np.float64) ** (7.0 / 3.0) + 20.0))


def _check_magnitudes(numbers: np.ndarray, energy: float, forces: np.ndarray, stress, where: str) -> None:
    """Z outside 1..118 and labels of impossible size, as :class:`DataError` naming the likely unit mistake."""
    bad_z = sorted({int(z) for z in numbers if not 0 < z <= 118})
    if bad_z:
        raise DataError(f"{where}: atomic number(s) {bad_z} are not elements (allowed 1..118); Z = 0 is a dummy "
                        "or ghost atom, or a type map that did not resolve: fix the species of these atoms")
    if abs(energy) > _max_energy(numbers):
        raise DataError(f"{where}: energy {energy:.6g} eV ({energy / len(numbers):.6g} eV/atom) exceeds any "
                        f"all-electron total energy of these atoms ({_max_energy(numbers):.4g} eV): the energies "
                        "look like meV, kJ/mol or kcal/mol; convert them to eV")
    largest = float(np.linalg.norm(forces, axis=1).max()) if len(forces) else 0.0
    if largest > MAX_FORCE:
        raise DataError(f"{where}: a force of {largest:.4g} eV/A exceeds {MAX_FORCE:g} eV/A: the forces look "
                        "like meV/A (x1000) or kcal/mol/A (x23); convert them to eV/A")
    if stress is not None and np.abs(stress).max() > MAX_STRESS:
        size = float(np.abs(stress).max())
        raise DataError(f"{where}: a stress of {size:.4g} eV/A^3 ({size * 160.2:.4g} GPa) exceeds {MAX_STRESS:g} "
                        "eV/A^3: the stresses look like GPa (x160) or kbar given as eV/A^3; set the stress unit "
                        "(stress_unit / --stress-unit: 'gpa', 'kbar' or 'kbar_vasp')")


def neighbor_ratio(atoms: Atoms) -> float | None:
    """Median over atoms of the nearest-neighbour distance / the pair's covalent-radius sum (None: < 2 atoms that
    are not noble gases). ``inf`` counts atoms with no neighbour within 2x the bond length."""
    from ase.data import covalent_radii

    from dpa4_core.data.neighbors import neighbor_list

    keep = np.array([z not in NOBLE_GASES for z in atoms.numbers])
    if keep.sum() < 2:
        return None
    pbc = np.asarray(atoms.pbc, dtype=bool)
    cell = atoms.cell.array if pbc.all() else np.zeros((3, 3))
    radii = covalent_radii[atoms.numbers]
    src, dst, shift = neighbor_list(atoms.positions, cell, pbc, 4.0 * float(radii.max()))
    distance = np.linalg.norm(atoms.positions[src] - atoms.positions[dst] + shift @ cell, axis=1)
    nearest = np.full(len(atoms), np.inf)
    np.minimum.at(nearest, dst, distance / (radii[src] + radii[dst]))
    return float(np.median(nearest[keep]))


class UnitsCheck:
    """Frame-by-frame evidence that a data set's coordinates are not in A; :meth:`finish` refuses the set when
    most frames agree (single frames may be stretched dimers or compressed on purpose)."""

    def __init__(self) -> None:
        self.n_frames = 0
        self.stretched: list[str] = []
        self.squeezed: list[str] = []

    def add(self, frame: Frame) -> None:
        ratio = neighbor_ratio(frame.atoms)
        if ratio is None:
            return
        self.n_frames += 1
        if ratio > STRETCHED:
            self.stretched.append(frame.source)
        elif ratio < SQUEEZED:
            self.squeezed.append(frame.source)

    def finish(self) -> None:
        """Raise :class:`DataError` naming the likely mistake when more than half of the frames point to it."""
        for found, scale, mistake in ((self.stretched, f"{1 / BOHR_A:.2f}x", "bohr read as A (multiply by "
                                       f"{BOHR_A})"), (self.squeezed, f"{BOHR_A:.2f}x", "A converted to bohr, or "
                                       "fractional coordinates read as Cartesian")):
            if self.n_frames and len(found) > self.n_frames / 2:
                raise DataError(f"{len(found)} of {self.n_frames} frames (e.g. {found[0]}) have nearest-neighbour "
                                f"distances about {scale} the usual bond lengths: the coordinates look like "
                                f"{mistake}; give positions and cells in A")


def check_units(frames: Iterable[Frame], reference: np.ndarray | None = None) -> list[Frame]:
    """The plausibility check of a data set: every frame's magnitudes (also done by :func:`check_frame`), the
    coordinates' unit over the set and, with ``reference`` (a trained model's total energies [F], eV), the
    energies' unit (:func:`check_energy_scale`). Returns the frames; raises :class:`DataError`."""
    frames = list(frames)
    check = UnitsCheck()
    for frame in frames:
        check_frame(frame)
        check.add(frame)
    check.finish()
    if reference is not None:
        check_energy_scale([f.energy for f in frames], reference, [len(f.atoms) for f in frames],
                           frames[0].source if frames else "data")
    return frames


# A labelled energy E against a trained model's prediction P (same frames, eV): how E would look for each
# mistake. A mistake is named only when it explains the labels (median relative error < 5%) and taking the
# labels as they are does not (> 50%): a model far off its domain matches neither and is not accused.
_ENERGY_MISTAKES = (
    ("Hartree (multiply by 27.211)", lambda e, n: e * HARTREE_EV),
    ("Rydberg (multiply by 13.606)", lambda e, n: e * HARTREE_EV / 2),
    ("per-atom energies given as total energies (multiply by the number of atoms)", lambda e, n: e * n),
    ("total energies given as per-atom energies, i.e. multiplied by the number of atoms once too often",
     lambda e, n: e / n),
)


def check_energy_scale(energy, reference, n_atoms, where: str) -> None:
    """Raise :class:`DataError` when the labelled energies match the model's ``reference`` energies only after a
    typical unit mistake (Hartree, Rydberg, per-atom vs total), naming it."""
    e, p, n = (np.asarray(x, dtype=np.float64) for x in (energy, reference, n_atoms))
    if len(e) == 0:
        return

    def error(values):
        return float(np.median(np.abs(values - p) / np.maximum(np.abs(p), 1e-9)))

    if error(e) < 0.5:
        return
    # All that fit are named: with 27 atoms a frame, Hartree and per-atom energies are 0.8% apart.
    matches = [mistake for mistake, fix in _ENERGY_MISTAKES if error(fix(e, n)) < 0.05]
    if matches:
        raise DataError(f"{where}: the energies of {len(e)} frame(s) differ from the model's by a "
                        f"median {100 * error(e):.0f}% but match them within 5% if they are "
                        f"{' or '.join(matches)}: the energies look like {matches[0].split(' (')[0]}; convert them "
                        "to total energies in eV")
