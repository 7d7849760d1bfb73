"""Energy and forces are continuous along fine scans (spec sections 0, 1, 3.6 and 5).

Along a path ``R(s) = R0 + s D`` sampled every 1e-3 A, the model's path derivative ``-F . D`` must equal the
fourth-order central difference of its energy at every sample. A jump J in the energy would show as ~J / h, a
jump in the force as ~J / 2, so the same check catches both. Scans: a dimer through the cutoff, a dimer through
the zone-bridging interval [r_in, r_out], a third atom leaving a bonded pair's cutoff (the attention null mass),
an atom leaving a periodic cell's neighbourhood, and an edge sweeping through the +-z poles of the edge frame.
A hard-cutoff pair potential shows the check can fail.
"""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms

from dpa4_core import testing
from dpa4_core.data.batch import AtomsBatch
from dpa4_core.testing import energy_along_path, path_consistency_error, seeded_model

from _vendored import read_vendored

STEP = 1e-3  # A
# The fourth-order difference of a smooth energy sampled every 1e-3 A is off by ~h^4 |E^(5)| / 30, far below
# this bound, while a jump of 1e-9 eV in E (or 2e-6 eV/A in F) exceeds it.
PATH_ATOL = 1e-6


@pytest.fixture(scope="module")
def model():
    from dpa4_core import DPA4Config

    return seeded_model(DPA4Config.preset("tiny"), seed=0)


def _scan(model, atoms, moving: int, direction, start: float, stop: float):
    steps = STEP * np.arange(round(start / STEP), round(stop / STEP) + 1)  # integer multiples: s = 0 is exact
    path = np.zeros((len(atoms), 3))
    path[moving] = np.asarray(direction, dtype=float) / np.linalg.norm(direction)
    return steps, *energy_along_path(model, atoms, path, steps)


def test_dimer_through_the_cutoff(model):
    cutoff = model.config.cutoff
    direction = np.array([0.3, -0.5, 0.8])
    dimer = Atoms("MoNb", positions=[[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    steps, energy, slope = _scan(model, dimer, 1, direction, cutoff - 0.5, cutoff + 0.05)
    error = path_consistency_error(steps, energy, slope)
    assert error < PATH_ATOL, f"E or F jumps as the pair crosses the cutoff: {error:.2e}"
    # The C^3 envelope makes the pair force tiny just inside the cutoff, so the control looks further in.
    inside, outside = steps < cutoff - 0.3, steps > cutoff
    assert np.abs(slope[inside]).max() > 1e-8, "control: the pair must interact inside the cutoff"
    assert np.all(slope[outside] == 0.0), "force beyond the cutoff"
    isolated = energy[-1]
    assert np.all(energy[outside] == isolated)


@pytest.mark.parametrize("symbols", ["Mo2", "CO"])
def test_dimer_through_the_zone_bridge(model, symbols):
    """r from below r_in to above r_out: ZBL plus the clamped distance r~ must join smoothly (C^3 switch)."""
    config = model.config
    dimer = Atoms(symbols, positions=[[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    steps, energy, slope = _scan(model, dimer, 1, [0.6, 0.0, 0.8], config.r_in - 0.1, config.r_out + 0.1)
    assert np.isfinite(energy).all() and np.isfinite(slope).all()
    # ZBL is ~1e4 eV and varies on a 0.1 A scale here (|E^(5)| up to ~1e9 eV/A^5), so the bound is relative
    # to the largest slope: 1e-7 of it is still far below a force jump at r_in or r_out.
    scale = max(1.0, np.abs(slope).max())
    error = path_consistency_error(steps, energy, slope)
    assert error < 1e-7 * scale, f"E or F jumps across [r_in, r_out]: {error:.2e} (slope scale {scale:.1e})"


def test_third_atom_leaves_a_bonded_pair(model):
    """A W atom moves out of the cutoff of a bonded Mo-Nb pair: the attention weights change continuously."""
    cutoff = model.config.cutoff
    atoms = Atoms("MoNbW", positions=[[0.0, 0.0, 0.0], [2.3, 0.4, -0.3], [1.0, 0.0, 0.0]])
    # W starts on the Mo atom and moves away along a fixed direction: at s = cutoff it leaves Mo's
    # neighbourhood while it still sees the Nb atom.
    atoms.positions[2] = [0.0, 0.0, 0.0]
    steps, energy, slope = _scan(model, atoms, 2, [0.2, 0.9, 0.4], cutoff - 0.1, cutoff + 0.1)
    error = path_consistency_error(steps, energy, slope)
    assert error < PATH_ATOL, f"E or F jumps as the third atom leaves the cutoff: {error:.2e}"
    assert np.abs(slope[: len(steps) // 4]).max() > 1e-8, "control: the third atom must interact inside"


def test_atom_leaves_neighbourhood_in_a_crystal(model):
    """In a real Nb-Mo cell, one atom moves so that one of its periodic neighbours crosses the cutoff."""
    cutoff = model.config.cutoff
    atoms = read_vendored("maml_MoNbTaW", "NbMo_SS.json.gz", index=3)
    atoms.rattle(0.05, seed=1)
    # Pick the neighbour of atom 4 closest to the cutoff sphere and move atom 4 straight away from it: the
    # pair distance is then d + s and crosses the cutoff at s = cutoff - d, mid-scan.
    batch = AtomsBatch.from_atoms([atoms], cutoff=cutoff + 1.0)
    vectors = batch.edge_vectors().numpy()[batch.edge_dst.numpy() == 4]
    distances = np.linalg.norm(vectors, axis=1)
    nearest = np.argmin(np.abs(distances - cutoff))
    crossing = cutoff - distances[nearest]
    steps, energy, slope = _scan(model, atoms, 4, -vectors[nearest], crossing - 0.01, crossing + 0.01)
    error = path_consistency_error(steps, energy, slope)
    assert error < PATH_ATOL, f"E or F jumps as a neighbour crosses the cutoff in the crystal: {error:.2e}"


def test_edge_sweeps_through_the_poles(model):
    """An atom moves over another so that their edge passes exactly through +z (and the reverse edge through
    -z), where the two quaternion charts of the edge frame are blended (spec 4): E and F stay smooth."""
    atoms = Atoms("MoNbW", positions=[[0.0, 0.0, 0.0], [0.0, 0.0, 2.4], [2.2, -0.9, 0.5]])
    steps, energy, slope = _scan(model, atoms, 1, [1.0, 0.3, 0.0], -0.01, 0.01)
    assert np.any(steps == 0.0), "the scan must hit the pole exactly"
    assert np.isfinite(slope).all()
    error = path_consistency_error(steps, energy, slope)
    assert error < PATH_ATOL, f"E or F jumps as an edge passes through +-z: {error:.2e}"


def test_check_catches_a_hard_cutoff():
    """Control: the same scan flags a pair potential whose envelope is a step at the cutoff."""
    hard = testing.LennardJones(cutoff=5.0, switch="step").double()
    dimer = Atoms("MoNb", positions=[[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    steps, energy, slope = _scan(hard, dimer, 1, [0.0, 0.6, 0.8], 4.9, 5.1)
    assert path_consistency_error(steps, energy, slope) > 1e3 * PATH_ATOL
    smooth = testing.LennardJones(cutoff=5.0, switch="envelope").double()
    steps, energy, slope = _scan(smooth, dimer, 1, [0.0, 0.6, 0.8], 4.9, 5.1)
    assert path_consistency_error(steps, energy, slope) < PATH_ATOL
