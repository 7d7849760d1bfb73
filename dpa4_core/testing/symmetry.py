"""Symmetry checks: rotation, translation (and wrapping) and permutation of the atoms.

The ``assert_*`` helpers raise ``AssertionError`` with the measured error; structures come from the caller.
"""

from __future__ import annotations

import numpy as np
from ase import Atoms

from dpa4_core.testing.predict import predict


def random_rotation(seed: int = 0) -> np.ndarray:
    """A uniformly random proper rotation matrix ``[3, 3]`` (det +1), reproducible from ``seed``."""
    rng = np.random.default_rng(seed)
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def rotated(atoms: Atoms, rotation: np.ndarray) -> Atoms:
    """Copy of ``atoms`` with positions and cell rows rotated: ``x -> R x`` (row vectors: ``x @ R.T``)."""
    out = atoms.copy()
    out.positions = atoms.positions @ rotation.T
    if atoms.pbc.any():
        out.set_cell(atoms.cell.array @ rotation.T, scale_atoms=False)
    return out


def relative_error(actual: np.ndarray, expected: np.ndarray, floor: float = 1e-12) -> float:
    """``max |actual - expected| / max(max |expected|, floor)``."""
    actual, expected = np.asarray(actual, dtype=float), np.asarray(expected, dtype=float)
    if actual.shape != expected.shape:
        raise AssertionError(f"shape {actual.shape} != expected shape {expected.shape}")
    scale = max(float(np.abs(expected).max(initial=0.0)), floor)
    return float(np.abs(actual - expected).max(initial=0.0)) / scale


def assert_close(actual, expected, rtol: float, name: str, floor: float = 1e-12) -> None:
    """Assert ``relative_error(actual, expected, floor) <= rtol`` with a message giving the error."""
    error = relative_error(actual, expected, floor)
    if not error <= rtol:  # also catches NaN
        raise AssertionError(f"{name}: relative error {error:.3e} > {rtol:.1e}")


def assert_rotation_equivariant(model, atoms: Atoms, seed: int = 0, rtol: float = 1e-10) -> None:
    """E invariant, forces rotate (``F -> F R^T``), stress rotates (``R S R^T``) under a random rotation."""
    rotation = random_rotation(seed)
    periodic = bool(atoms.pbc.any())
    ref = predict(model, atoms, compute_stress=periodic)
    rot = predict(model, rotated(atoms, rotation), compute_stress=periodic)
    assert_close(rot["energy"], ref["energy"], rtol, "energy under rotation")
    assert_close(rot["atom_energy"], ref["atom_energy"], rtol, "atom energies under rotation")
    assert_close(rot["forces"], ref["forces"] @ rotation.T, rtol, "forces under rotation")
    if periodic:
        assert_close(rot["stress"][0], rotation @ ref["stress"][0] @ rotation.T, rtol, "stress under rotation")


def assert_translation_invariant(model, atoms: Atoms, seed: int = 0, rtol: float = 1e-10) -> None:
    """E, forces and stress unchanged by a random rigid translation (and, for cells, by wrapping)."""
    shift = np.random.default_rng(seed).normal(scale=3.0, size=3)
    moved = atoms.copy()
    moved.positions += shift
    candidates = [moved]
    if atoms.pbc.all():
        wrapped = moved.copy()
        wrapped.wrap()
        candidates.append(wrapped)
    periodic = bool(atoms.pbc.any())
    ref = predict(model, atoms, compute_stress=periodic)
    for index, other in enumerate(candidates):
        out = predict(model, other, compute_stress=periodic)
        label = "translation" if index == 0 else "translation + wrap"
        assert_close(out["energy"], ref["energy"], rtol, f"energy under {label}")
        assert_close(out["forces"], ref["forces"], rtol, f"forces under {label}")
        if periodic:
            assert_close(out["stress"], ref["stress"], rtol, f"stress under {label}")


def assert_permutation_equivariant(model, atoms: Atoms, seed: int = 0, rtol: float = 1e-10) -> None:
    """Renumbering the atoms permutes forces and atom energies and leaves E and stress unchanged."""
    order = np.random.default_rng(seed).permutation(len(atoms))
    periodic = bool(atoms.pbc.any())
    ref = predict(model, atoms, compute_stress=periodic)
    out = predict(model, atoms[order], compute_stress=periodic)
    assert_close(out["energy"], ref["energy"], rtol, "energy under permutation")
    assert_close(out["atom_energy"], ref["atom_energy"][order], rtol, "atom energies under permutation")
    assert_close(out["forces"], ref["forces"][order], rtol, "forces under permutation")
    if periodic:
        assert_close(out["stress"], ref["stress"], rtol, "stress under permutation")
