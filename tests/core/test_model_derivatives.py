"""Forces and stress are exact derivatives of the energy (spec sections 0, 4 and 5).

Central finite differences of the energy against the autograd forces and stress; edges exactly along +z and
-z (where Euler-angle frames break) give finite forces equal to finite differences; second derivatives exist
(``gradgradcheck``); an isolated atom is its bias energy with zero force. (Close contacts, where ZBL takes over,
are in ``test_zbl.py``.)
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms

from dpa4_core import testing
from dpa4_core.data.batch import AtomsBatch
from dpa4_core.testing import predict, seeded_model

from _vendored import read_vendored

FD_RTOL = 1e-6  # central differences with delta 1e-4 A in float64: truncation ~1e-8, round-off ~1e-10


@pytest.fixture(scope="module")
def model():
    from dpa4_core import DPA4Config

    return seeded_model(DPA4Config.preset("tiny"), seed=0)


@pytest.fixture(scope="module")
def alloy():
    atoms = read_vendored("maml_MoNbTaW", "NbMo_SS.json.gz", index=3)
    atoms.rattle(0.05, seed=1)
    return atoms


def test_forces_equal_finite_differences_periodic(model, alloy):
    indices = [0, 5, 11]
    forces = predict(model, alloy)["forces"][indices]
    reference = testing.finite_difference_forces(model, alloy, delta=1e-4, indices=indices)
    assert np.abs(reference).max() > 1e-3
    testing.assert_close(forces, reference, FD_RTOL, "forces vs finite differences (NbMo cell)")


def test_forces_equal_finite_differences_molecule(model):
    atoms = read_vendored("botnet", "dataset_acac", "train_300K.xyz.gz", index=0)
    forces = predict(model, atoms, compute_stress=False)["forces"]
    reference = testing.finite_difference_forces(model, atoms, delta=1e-4)
    testing.assert_close(forces, reference, FD_RTOL, "forces vs finite differences (acetylacetone)")


def test_stress_equals_strain_derivative(model, alloy):
    stress = predict(model, alloy)["stress"][0]
    reference = testing.finite_difference_stress(model, alloy, delta=1e-5)
    assert np.abs(reference).max() > 1e-6
    testing.assert_close(stress, reference, FD_RTOL, "stress vs strain derivative (NbMo cell)")


def test_stress_equals_strain_derivative_triclinic(model):
    atoms = read_vendored("maml_MoNbTaW", "W_Elastic.json.gz", index=7)
    atoms.set_cell(atoms.cell.array @ np.array([[1.0, 0.08, -0.05], [0.0, 0.97, 0.06], [0.02, 0.0, 1.03]]),
                   scale_atoms=True)
    atoms.rattle(0.05, seed=3)
    stress = predict(model, atoms)["stress"][0]
    testing.assert_close(stress, testing.finite_difference_stress(model, atoms), FD_RTOL, "triclinic stress")
    # The virial is the same tensor times -V, from the same backward pass.
    virial = predict(model, atoms)["virial"][0]
    testing.assert_close(-virial / atoms.get_volume(), stress, 1e-12, "stress = -virial / V")


def _axis_molecule():
    """Mo atoms with bonds exactly along +z and -z from the centre, plus one off-axis atom."""
    return Atoms("Mo3Nb", positions=[[0.0, 0.0, 0.0], [0.0, 0.0, 2.3], [0.0, 0.0, -2.1], [1.9, 0.4, 0.7]])


def test_edges_exactly_along_z_give_finite_forces_equal_to_finite_differences(model):
    atoms = _axis_molecule()
    batch = AtomsBatch.from_atoms([atoms], cutoff=model.config.cutoff)
    unit = batch.edge_vectors() / batch.edge_vectors().norm(dim=-1, keepdim=True)
    assert (unit[:, 2] == 1.0).any() and (unit[:, 2] == -1.0).any(), "test needs edges exactly along +z and -z"
    forces = predict(model, atoms, compute_stress=False)["forces"]
    assert np.isfinite(forces).all()
    reference = testing.finite_difference_forces(model, atoms, delta=1e-4)
    testing.assert_close(forces, reference, FD_RTOL, "forces with edges along +-z")


def test_perfect_cubic_crystal_has_axis_edges_and_correct_forces(model):
    """Unrattled bcc Nb-Mo: many edges exactly along +-x, +-y, +-z; forces still match finite differences."""
    atoms = read_vendored("maml_MoNbTaW", "NbMo_SS.json.gz", index=3)
    out = predict(model, atoms)
    assert np.isfinite(out["forces"]).all() and np.isfinite(out["stress"]).all()
    indices = [0, 7]
    reference = testing.finite_difference_forces(model, atoms, delta=1e-4, indices=indices)
    testing.assert_close(out["forces"][indices], reference, FD_RTOL, "forces of the perfect crystal", floor=1e-3)


def test_second_derivatives_gradgradcheck(model):
    """d2E/dR2 exists and autograd's double backward equals finite differences of the first derivative."""
    atoms = Atoms("MoNbMo", positions=[[0.0, 0.0, 0.0], [2.4, 0.3, -0.2], [0.6, 2.2, 0.9]])
    batch = AtomsBatch.from_atoms([atoms], cutoff=model.config.cutoff, dtype=torch.float64)

    def energy(positions: torch.Tensor) -> torch.Tensor:
        edge_vec = batch.edge_vectors(positions=positions)
        return model.atom_energies(batch.numbers, edge_vec, batch.edge_src, batch.edge_dst).sum()

    positions = batch.positions.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(energy, (positions,), eps=1e-6, atol=1e-6, rtol=1e-5)
    assert torch.autograd.gradgradcheck(energy, (positions,), eps=1e-6, atol=1e-5, rtol=1e-4)


def test_isolated_atom_is_its_bias(model):
    for z in (1, 8, 42, 74):
        out = predict(model, Atoms(numbers=[z], positions=[[0.3, -1.0, 2.0]]), compute_stress=False)
        assert out["energy"][0] == pytest.approx(float(model.energy_bias[z]), abs=1e-12)
        assert np.all(out["forces"] == 0.0)


def test_isolated_atom_in_a_large_cell(model):
    """One atom alone in a periodic box larger than the cutoff: bias energy, zero force and zero stress."""
    box = 2.0 * model.config.cutoff + 1.0
    atoms = Atoms("W", positions=[[1.0, 2.0, 3.0]], cell=np.eye(3) * box, pbc=True)
    out = predict(model, atoms)
    assert out["energy"][0] == pytest.approx(float(model.energy_bias[74]), abs=1e-12)
    assert np.all(out["forces"] == 0.0) and np.all(out["stress"] == 0.0)
