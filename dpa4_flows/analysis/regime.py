"""Has a relaxation left the physical regime? Flags, not rankings.

A model pushed far from its training data can "relax" a candidate into nonsense that then looks most stable (a
candidate that started with two atoms 0.1 A apart came out of the starter model in a 1.8x-volume cell, 962
meV/atom below the hull). A flagged candidate keeps its numbers in the report but is left out of the hull and of
"stable". Checks, on the initial and relaxed structures (distances in units of the covalent-radius sum of the
pair, ASE's radii):

- volume change: ``|V / V0 - 1| > max_volume_change``;
- collapse: two atoms closer than ``min_distance_ratio`` x their radius sum, or the mean coordination number
  (neighbours within ``bond_ratio`` x the radius sum) falling below ``min_coordination_kept`` of its start;
- separation: an atom with no neighbour within ``isolation_ratio`` x the radius sum (it left the structure);
- energy: a formation energy below ``min_formation_energy`` (eV/atom), beyond any known compound.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pymatgen.core import Structure


@dataclass(frozen=True)
class RegimeLimits:
    """Thresholds of the physical regime (see the module doc); the defaults are deliberately loose."""

    max_volume_change: float = 0.30
    min_distance_ratio: float = 0.55
    bond_ratio: float = 1.25
    min_coordination_kept: float = 0.5
    isolation_ratio: float = 1.6
    min_formation_energy: float = -5.0  # eV/atom; the most bound known compounds are near -4 eV/atom


def _pairs(structure: Structure, reach: float) -> tuple[np.ndarray, np.ndarray]:
    """(centre index, distance / covalent-radius sum) of every neighbour pair within ``reach`` x the sum."""
    from ase.data import covalent_radii

    radii = covalent_radii[np.array(structure.atomic_numbers)]
    centers, neighbors, _, distances = structure.get_neighbor_list(float(reach * 2 * radii.max()))
    keep = distances > 1e-8
    centers, neighbors, distances = centers[keep], neighbors[keep], distances[keep]
    return centers, distances / (radii[centers] + radii[neighbors])


def geometry_flags(initial: Structure, relaxed: Structure, limits: RegimeLimits = RegimeLimits()) -> list[str]:
    """Reasons the relaxation from ``initial`` to ``relaxed`` left the physical regime ([] if it did not)."""
    flags = []
    change = relaxed.volume / initial.volume - 1.0
    if abs(change) > limits.max_volume_change:
        flags.append(f"volume changed by {100 * change:+.0f}% in the relaxation "
                     f"(limit {100 * limits.max_volume_change:.0f}%)")
    reach = max(limits.isolation_ratio, limits.bond_ratio)
    centers, ratio = _pairs(relaxed, reach)
    if len(ratio) and ratio.min() < limits.min_distance_ratio:
        flags.append(f"atoms collapsed: two atoms at {ratio.min():.2f} x their covalent-radius sum "
                     f"(limit {limits.min_distance_ratio})")
    n = len(relaxed)
    isolated = n - len(np.unique(centers[ratio <= limits.isolation_ratio]))
    if isolated:
        flags.append(f"atoms separated: {isolated} atom(s) without a neighbour within "
                     f"{limits.isolation_ratio} x the covalent-radius sum")
    start_centers, start_ratio = _pairs(initial, limits.bond_ratio)
    before = np.sum(start_ratio <= limits.bond_ratio) / len(initial)
    after = np.sum(ratio <= limits.bond_ratio) / n
    if before > 0 and after < limits.min_coordination_kept * before:
        flags.append(f"coordination collapsed: mean coordination {before:.1f} -> {after:.1f}")
    return flags


def energy_flag(formation_energy_per_atom: float | None, limits: RegimeLimits = RegimeLimits()) -> str | None:
    """The reason a formation energy is implausibly low (or not finite), else None."""
    if formation_energy_per_atom is None:
        return None
    if not np.isfinite(formation_energy_per_atom):
        return f"formation energy is {formation_energy_per_atom}"
    if formation_energy_per_atom < limits.min_formation_energy:
        return (f"formation energy {formation_energy_per_atom:.2f} eV/atom below the plausible bound "
                f"{limits.min_formation_energy} eV/atom")
    return None
