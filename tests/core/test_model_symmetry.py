"""Exact symmetries of the whole DPA4 model (spec section 0): rotation, translation, permutation, periodic images.

The tiny preset in float64 with seeded random weights (every parameter perturbed, so no block is the identity)
on real structures: a Nb-Mo solid-solution cell (maml Mo-Nb-Ta-W), an mlearn Si cell (triclinic) and an
acetylacetone molecule (botnet). Symmetries hold to round-off, so the bound is 1e-10 relative.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dpa4_core import testing
from dpa4_core.data.batch import AtomsBatch
from dpa4_core.testing import predict, seeded_model

from _vendored import read_vendored


@pytest.fixture(scope="module")
def model():
    from dpa4_core import DPA4Config

    return seeded_model(DPA4Config.preset("tiny"), seed=0)


def _structure(name: str):
    if name == "NbMo":
        atoms = read_vendored("maml_MoNbTaW", "NbMo_SS.json.gz", index=3)
        atoms.rattle(0.05, seed=1)  # off the perfect lattice, so forces are not zero by symmetry
        return atoms
    if name == "Si":
        return read_vendored("mlearn", "Si", "training.json.gz", index=0)
    return read_vendored("botnet", "dataset_acac", "train_300K.xyz.gz", index=0)


STRUCTURES = ["NbMo", "Si", "acac"]


@pytest.mark.parametrize("name", STRUCTURES)
def test_rotation_invariant_energy_equivariant_forces_and_stress(model, name):
    atoms = _structure(name)
    out = predict(model, atoms)
    assert np.abs(out["forces"]).max() > 1e-3, "forces vanish: the check would be empty"
    testing.assert_rotation_equivariant(model, atoms, seed=7, rtol=1e-10)


@pytest.mark.parametrize("name", ["NbMo", "acac"])
def test_translation_and_wrapping(model, name):
    testing.assert_translation_invariant(model, _structure(name), seed=3, rtol=1e-10)


@pytest.mark.parametrize("name", ["NbMo", "acac"])
def test_permutation(model, name):
    testing.assert_permutation_equivariant(model, _structure(name), seed=5, rtol=1e-10)


def test_supercell_is_extensive(model):
    """A 2x2x2 supercell: 8x the energy, the same stress (8x the virial), forces tiled."""
    cell = read_vendored("maml_MoNbTaW", "NbMo_SS.json.gz", index=3)
    cell.rattle(0.05, seed=2)
    supercell = cell.repeat((2, 2, 2))
    one = predict(model, cell)
    big = predict(model, supercell)
    testing.assert_close(big["energy"], 8 * one["energy"], 1e-10, "supercell energy")
    testing.assert_close(big["stress"], one["stress"], 1e-10, "supercell stress")
    testing.assert_close(big["virial"], 8 * one["virial"], 1e-10, "supercell virial")
    # ase's repeat puts the copies one after another, each in the original atom order.
    testing.assert_close(big["forces"], np.tile(one["forces"], (8, 1)), 1e-10, "supercell forces")
    assert np.abs(one["stress"]).max() > 1e-6


def test_periodic_images_of_a_small_cell(model):
    """A 2-atom W cell whose atoms see their own images inside the cutoff equals its 3x1x2 supercell / 6."""
    cell = read_vendored("maml_MoNbTaW", "W_Elastic.json.gz", index=5)
    cell.rattle(0.03, seed=4)
    assert cell.cell.lengths().min() < model.config.cutoff  # self-images are neighbours
    one = predict(model, cell)
    big = predict(model, cell.repeat((3, 1, 2)))
    testing.assert_close(big["energy"], 6 * one["energy"], 1e-10, "image energy")
    testing.assert_close(big["stress"], one["stress"], 1e-10, "image stress")


@pytest.mark.parametrize("name", ["NbMo", "acac"])
def test_random_roll_inside_the_edge_frames_changes_nothing(model, name):
    """Every operation in the edge frame commutes with rotations about z (spec 4): a random roll per edge
    (the training augmentation) leaves energy, forces and stress unchanged."""
    atoms = _structure(name)
    batch = AtomsBatch.from_atoms([atoms], cutoff=model.config.cutoff, dtype=torch.float64)
    periodic = bool(atoms.pbc.all())
    plain = model(batch, compute_stress=periodic)
    # Control: the roll really changes the frames (so the invariance below is not vacuous).
    edge_vec = batch.edge_vectors()
    args = (edge_vec, batch.edge_src, batch.edge_dst, batch.n_atoms)
    roll = torch.rand(edge_vec.shape[0], generator=torch.Generator().manual_seed(0), dtype=edge_vec.dtype) * 6
    assert (model.edge_cache(*args, edge_roll=roll).wigner - model.edge_cache(*args).wigner).abs().max() > 0.1
    for seed in (1, 2):
        rolled = model(batch, compute_stress=periodic, random_roll=True,
                       roll_generator=torch.Generator().manual_seed(seed))
        for key in ("energy", "atom_energy", "forces") + (("stress",) if periodic else ()):
            testing.assert_close(rolled[key].detach().numpy(), plain[key].detach().numpy(), 1e-10,
                                 f"{key} under a random roll (seed {seed})")


def test_rotation_in_float32(model):
    """The same symmetry in float32 holds to float32 round-off: separates round-off from real breaking."""
    single = seeded_model(model.config, seed=0, dtype=torch.float32)
    atoms = _structure("NbMo")
    testing.assert_rotation_equivariant(single, atoms, seed=7, rtol=1e-5)
