"""The verdict of a short NVT run on a relaxed candidate (no jobflow): mean square displacement, space group, verdict.

- ``msd``: mean square displacement of the atoms from their relaxed positions (centre-of-mass drift removed),
  averaged over the snapshots of the run's second half (A^2).
- ``msd_bound``: a Lindemann-like bound ``(lindemann * d_nn)^2`` with ``d_nn`` the closest pair of the relaxed
  structure (a solid's atoms vibrate with an RMS displacement of about 0.1 d_nn at its melting point).
- space group: spglib (through pymatgen's ``SpacegroupAnalyzer``, ``symprec`` 0.25 A) of the relaxed structure and of
  the time-averaged structure of the second half (unwrapped positions averaged: thermal vibrations cancel out).
- verdict: ``failed`` (the engine refused the input or it blew up), ``decomposed`` (two atoms collapsed together, or
  the space group changed without melting: the ordering fell apart), ``melted`` (MSD above the bound), else
  ``stable``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pymatgen.core import Structure

from dpa4_flows.schemas import MDCheck

#: A: spglib distance tolerance for the averaged structure. A short run averages over about one vibration period,
#: which leaves ~0.1 A of thermal displacement; a changed ordering or a shear (bcc -> fcc) moves atoms much further.
SYMPREC = 0.25
LINDEMANN = 0.15  # RMS displacement / nearest-neighbour distance taken as molten (0.1 at melting, with a margin)


def _displacements(start: Structure, snapshot: Structure) -> np.ndarray:
    """Per-atom displacement ``[N, 3]`` (A) of an unwrapped snapshot from ``start``, mean (drift) removed."""
    d = np.asarray(snapshot.cart_coords) - np.asarray(start.cart_coords)
    return d - d.mean(axis=0)


def msd(start: Structure, snapshots: Sequence[Structure]) -> float:
    """Mean square displacement (A^2) over ``snapshots`` (unwrapped, same atom order as ``start``)."""
    return float(np.mean([(_displacements(start, s) ** 2).sum(axis=1).mean() for s in snapshots]))


def averaged_structure(start: Structure, snapshots: Sequence[Structure]) -> Structure:
    """The structure at the mean positions of ``snapshots`` (unwrapped, fixed cell, drift removed)."""
    mean = np.mean([_displacements(start, s) for s in snapshots], axis=0) + np.asarray(start.cart_coords)
    return Structure(start.lattice, start.species, mean, coords_are_cartesian=True)


def spacegroup(structure: Structure, symprec: float = SYMPREC) -> tuple[str, int]:
    """(international symbol, number) of ``structure`` at ``symprec`` (A)."""
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    analyzer = SpacegroupAnalyzer(structure, symprec=symprec, angle_tolerance=5)
    return analyzer.get_space_group_symbol(), int(analyzer.get_space_group_number())


def nearest_neighbor_distance(structure: Structure) -> float:
    """Closest pair distance (A), periodic images included."""
    if len(structure) == 1:
        return float(min(structure.lattice.abc))
    dm = structure.distance_matrix
    return float(np.min(dm[~np.eye(len(structure), dtype=bool)]))


def md_check(candidate_id: str, start: Structure, result, temperature: float, steps: int,
             lindemann: float = LINDEMANN, symprec: float = SYMPREC) -> MDCheck:
    """The :class:`MDCheck` of one ``md_batch`` result (run with a trajectory) started from ``start``."""
    base = dict(candidate_id=candidate_id, temperature=float(temperature), steps=int(steps))
    initial = spacegroup(start, symprec)
    if result.error or not result.trajectory or not np.isfinite(result.max_displacement):
        return MDCheck(**base, verdict="failed", spacegroup_initial=initial[0],
                       reason=result.error or "the run blew up (non-finite positions or energies)")
    second_half = result.trajectory[len(result.trajectory) // 2:]
    value = msd(start, second_half)
    bound = (lindemann * nearest_neighbor_distance(start)) ** 2
    final = spacegroup(averaged_structure(start, second_half), symprec)
    kept = final[1] == initial[1]
    if not result.intact and value <= bound:
        verdict, reason = "decomposed", f"atoms came within {result.min_distance:.2f} A of each other"
    elif value > bound:
        verdict, reason = "melted", f"MSD {value:.3f} A^2 above the Lindemann bound {bound:.3f} A^2"
    elif not kept:
        verdict, reason = "decomposed", f"space group {initial[0]} became {final[0]}"
    else:
        verdict, reason = "stable", None
    return MDCheck(**base, verdict=verdict, reason=reason, msd=value, msd_bound=bound,
                   spacegroup_initial=initial[0], spacegroup_final=final[0], spacegroup_kept=kept,
                   max_displacement=float(result.max_displacement), mean_temperature=float(result.temperature),
                   epot_drift=float(result.epot_drift))


def md_summary(checks: Sequence[MDCheck]) -> str | None:
    """One cell of the table: ``"300K stable; 1500K melted"`` (None without checks)."""
    if not checks:
        return None
    return "; ".join(f"{c.temperature:g}K {c.verdict}" for c in sorted(checks, key=lambda c: c.temperature))
