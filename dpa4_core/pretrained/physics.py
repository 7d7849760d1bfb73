"""Physics checks of a model against DFT for bcc metals: lattice constant, cohesive energy, expansion to the
isolated-atom limit, dimer well, cubic elastic constants from a strain-stress fit.

Everything takes a model (anything :func:`dpa4_core.testing.predict` runs, in float64 preferably) and plain
structures or numbers; reading the DFT frames is the caller's job (``benchmarks/physics_monbtaw.py``).
Stress is ASE's (tension positive), elastic constants in GPa, Voigt order xx, yy, zz, yz, xz, xy.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from ase import Atoms
from ase.build import bulk
from ase.units import GPa

from dpa4_core.testing.predict import predict

VOIGT = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))


def small_strain(cell: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Voigt engineering strain ``[6]`` of ``cell`` relative to ``reference`` (rows = lattice vectors)."""
    deformation = np.linalg.solve(reference, cell).T  # cell = reference @ F^T
    eps = 0.5 * (deformation + deformation.T) - np.eye(3)
    return np.array([eps[i, j] * (1 if i == j else 2) for i, j in VOIGT])


def voigt_stress(stress: np.ndarray) -> np.ndarray:
    """``[3,3]`` -> ``[6]`` in the order of :data:`VOIGT`."""
    return np.array([stress[i, j] for i, j in VOIGT])


def strain_stress_fit(cells: Sequence[np.ndarray], stresses: Sequence[np.ndarray], reference: np.ndarray,
                      max_strain: float = 0.021) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares ``sigma = sigma0 + C eps`` on the cells within ``max_strain`` of ``reference``.

    Args:
        cells: ``[3,3]`` cells; stresses: ``[3,3]`` ASE stresses (eV/A^3) of the same frames.
    Returns:
        ``C [6,6]`` and ``sigma0 [6]``, both in GPa.
    """
    strains = np.array([small_strain(np.asarray(c), reference) for c in cells])
    sigma = np.array([voigt_stress(np.asarray(s)) for s in stresses]) / GPa
    keep = np.abs(strains).max(axis=1) <= max_strain
    if keep.sum() < 7:
        raise ValueError(f"only {int(keep.sum())} frames within {max_strain} strain: cannot fit 6x6 constants")
    design = np.hstack([np.ones((int(keep.sum()), 1)), strains[keep]])
    solution, *_ = np.linalg.lstsq(design, sigma[keep], rcond=None)
    return solution[1:].T, solution[0]


def cubic_constants(c: np.ndarray) -> dict[str, float]:
    """C11, C12, C44 (cubic averages of a ``[6,6]`` matrix) and C' = (C11 - C12) / 2, in GPa."""
    c11 = float(np.mean([c[0, 0], c[1, 1], c[2, 2]]))
    c12 = float(np.mean([c[0, 1], c[0, 2], c[1, 2], c[1, 0], c[2, 0], c[2, 1]]))
    c44 = float(np.mean([c[3, 3], c[4, 4], c[5, 5]]))
    return {"C11": c11, "C12": c12, "C44": c44, "C'": (c11 - c12) / 2}


def isotropic_equilibrium(c: np.ndarray, sigma0: np.ndarray) -> float:
    """Isotropic strain that cancels the hydrostatic stress of the reference: ``a_eq = a_ref (1 + e)``."""
    return float(np.mean(sigma0[:3]) / (np.mean(c[:3, :3].sum(axis=1))))


def energies(model, structures: Sequence[Atoms]) -> np.ndarray:
    return predict(model, list(structures), compute_forces=False, compute_stress=False)["energy"]


def stresses(model, structures: Sequence[Atoms]) -> np.ndarray:
    return predict(model, list(structures), compute_forces=True, compute_stress=True)["stress"]


def isolated_energy(model, element: str) -> float:
    return float(energies(model, [Atoms(element, positions=[[0.0, 0.0, 0.0]])])[0])


def bcc_energy_per_atom(model, element: str, lattice: Sequence[float]) -> np.ndarray:
    cells = [bulk(element, "bcc", a=float(a), cubic=True) for a in lattice]
    return energies(model, cells) / 2.0


def lattice_constant(model, element: str, guess: float, span: float = 0.04, points: int = 17) -> tuple[float, float]:
    """``(a0, E/atom at a0)`` of bcc ``element``: a quartic fit of E(a) on ``guess * (1 +- span)``, refined once."""
    a0 = guess
    for width in (span, span / 4):
        grid = a0 * np.linspace(1 - width, 1 + width, points)
        fit = np.polynomial.Polynomial.fit(grid, bcc_energy_per_atom(model, element, grid), 4)
        fine = np.linspace(grid[0], grid[-1], 2001)
        a0 = float(fine[np.argmin(fit(fine))])
    return a0, float(bcc_energy_per_atom(model, element, [a0])[0])


def expansion_curve(model, element: str, a0: float, volume_ratios: Sequence[float]) -> np.ndarray:
    """Energy per atom of bcc ``element`` uniformly expanded to ``V/V0`` in ``volume_ratios``."""
    return bcc_energy_per_atom(model, element, [a0 * float(v) ** (1 / 3) for v in volume_ratios])


def dimer_energies(model, element: str, distances: Sequence[float]) -> np.ndarray:
    """Energies of the ``element`` dimer (no cell) at ``distances``."""
    return energies(model, [Atoms(f"{element}2", positions=[[0, 0, 0], [float(r), 0, 0]]) for r in distances])


def well(distances: np.ndarray, energy: np.ndarray, limit: float) -> tuple[float, float]:
    """``(depth, position)`` of a dimer curve's minimum; depth relative to ``limit`` (eV, negative if bound)."""
    i = int(np.argmin(energy))
    return float(energy[i] - limit), float(distances[i])
