"""Forces and stress against finite differences of the energy, and energy/force consistency along a path.

The helpers return numbers so a test can state its own bound. Finite differences batch all displaced copies
into one model call (``chunk`` bounds the memory).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from ase import Atoms

from dpa4_core.data.batch import validate_atoms
from dpa4_core.testing.predict import predict
from dpa4_core.testing.symmetry import assert_close


def finite_difference_forces(
    model, atoms: Atoms, delta: float = 1e-4, indices: Sequence[int] | None = None, chunk: int = 64
) -> np.ndarray:
    """Central-difference forces ``-(E(x + d) - E(x - d)) / 2d`` for the atoms in ``indices`` (default all).

    Returns:
        ``[len(indices), 3]`` in eV/A. Error O(delta^2); round-off about eps * E / delta.
    """
    validate_atoms(atoms)
    indices = range(len(atoms)) if indices is None else indices
    images = []
    for atom in indices:
        for axis in range(3):
            for sign in (1.0, -1.0):
                image = atoms.copy()
                image.positions[atom, axis] += sign * delta
                images.append(image)
    energy = predict(model, images, compute_forces=False, compute_stress=False, chunk=chunk, validate=False)
    energy = energy["energy"]
    return -(energy[0::2] - energy[1::2]).reshape(-1, 3) / (2 * delta)


def strained(atoms: Atoms, strain: np.ndarray) -> Atoms:
    """Copy with cell and positions deformed by ``x -> (1 + strain) x`` (row vectors: ``x @ (I + strain)``)."""
    deformation = np.eye(3) + strain
    out = atoms.copy()
    out.set_cell(atoms.cell.array @ deformation, scale_atoms=False)
    out.positions = atoms.positions @ deformation
    return out


def finite_difference_stress(model, atoms: Atoms, delta: float = 1e-5) -> np.ndarray:
    """Stress ``(1/V) dE/d(strain)`` by central differences of symmetric strains, ``[3, 3]`` eV/A^3 (ASE sign)."""
    if not atoms.pbc.all():
        raise ValueError(f"finite_difference_stress needs a periodic structure, got pbc={atoms.pbc.tolist()}")
    validate_atoms(atoms)
    pairs = [(a, b) for a in range(3) for b in range(a, 3)]
    images = []
    for a, b in pairs:
        for sign in (1.0, -1.0):
            strain = np.zeros((3, 3))
            strain[a, b] += 0.5 * sign * delta
            strain[b, a] += 0.5 * sign * delta
            images.append(strained(atoms, strain))
    energy = predict(model, images, compute_forces=False, compute_stress=False, validate=False)["energy"]
    stress = np.zeros((3, 3))
    for index, (a, b) in enumerate(pairs):
        stress[a, b] = stress[b, a] = (energy[2 * index] - energy[2 * index + 1]) / (2 * delta)
    return stress / atoms.get_volume()


def energy_along_path(
    model, atoms: Atoms, direction: np.ndarray, steps: np.ndarray, chunk: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """Energy and its path derivative from the forces along ``positions + s * direction``.

    Args:
        direction: ``[N, 3]`` displacement per unit ``s`` (A).
        steps: ``[S]`` values of ``s``.

    Returns:
        ``(energy [S], dE/ds [S])`` with ``dE/ds = -sum(F * direction)`` from the model's forces.
    """
    images = []
    for s in steps:
        image = atoms.copy()
        image.positions = atoms.positions + s * direction
        images.append(image)
    validate_atoms(images[0])
    out = predict(model, images, compute_stress=False, chunk=chunk, validate=False)
    forces = out["forces"].reshape(len(steps), len(atoms), 3)
    slope = -np.einsum("sni,ni->s", forces, direction)
    return out["energy"], slope


def path_consistency_error(steps: np.ndarray, energy: np.ndarray, slope: np.ndarray) -> float:
    """Largest mismatch between the forces' path derivative and the energy's, in eV per unit ``s``.

    ``max_k |dE/ds(s_k) - D(s_k)|`` over ``k = 2 .. S-3``, with ``D`` the fourth-order (Richardson) central
    difference ``(8 (E_{k+1} - E_{k-1}) - (E_{k+2} - E_{k-2})) / 12h`` on an evenly spaced path. For a smooth
    energy the mismatch is O(h^4 E^(5)) plus round-off ``~eps |E| / h``; a jump J in the energy shows up as
    about ``J / h``, a jump J in the force as about ``J / 2``: the check catches both.
    """
    steps = np.asarray(steps, dtype=float)
    spacing = np.diff(steps)
    if len(steps) < 5 or not np.allclose(spacing, spacing[0], rtol=1e-9, atol=0.0):
        raise ValueError(f"need >= 5 evenly spaced path points, got {len(steps)} with spacings {spacing[:3]}...")
    h = spacing[0]
    central = (8 * (energy[3:-1] - energy[1:-3]) - (energy[4:] - energy[:-4])) / (12 * h)
    return float(np.abs(slope[2:-2] - central).max())


def assert_conservative(model, atoms: Atoms, indices: Sequence[int], force_rtol: float = 1e-6,
                        stress_rtol: float = 1e-5) -> None:
    """The model's forces on ``indices`` and its stress equal central finite differences of its energy."""
    out = predict(model, atoms)
    assert_close(out["forces"][list(indices)], finite_difference_forces(model, atoms, indices=indices),
                 rtol=force_rtol, name="forces")
    assert_close(out["stress"][0], finite_difference_stress(model, atoms), rtol=stress_rtol, name="stress")
