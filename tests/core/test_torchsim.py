"""The torch-sim adapter: torch-sim's own interface validator, and the same numbers as the ASE calculator.

Real structures from the vendored Mo-Nb-Ta-W DFT data, with non-orthogonal (strained) cells so that a
row/column mix-up of the cell or a flipped stress sign shows; float64 throughout, agreement to 1e-8.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import bulk

ts = pytest.importorskip("torch_sim", reason="optional dependency: pip install 'dpa4[torchsim]'")

from _vendored import read_vendored  # noqa: E402

from dpa4_core.calculator import DPA4Calculator  # noqa: E402
from dpa4_core.model.domain import UntrainedElementError  # noqa: E402
from dpa4_core.pretrained import starter_checkpoint  # noqa: E402
from dpa4_core.torchsim import DPA4Model  # noqa: E402

SOURCES = [("NbMo_SS.json.gz", 3), ("TaW_SS.json.gz", 0), ("Mo_Elastic.json.gz", 5), ("W_AIMD.json.gz", 2)]


def _structures():
    """Four real cells; each sheared and rattled a little so that the cell is not symmetric."""
    rng = np.random.default_rng(7)
    out = []
    for name, index in SOURCES:
        atoms = read_vendored("maml_MoNbTaW", name, index=index)
        shear = np.eye(3) + 0.03 * rng.standard_normal((3, 3))
        atoms.set_cell(atoms.cell.array @ shear, scale_atoms=True)
        atoms.positions += 0.05 * rng.standard_normal(atoms.positions.shape)
        out.append(atoms)
    return out


@pytest.fixture(scope="module")
def model():
    return DPA4Model(starter_checkpoint(), dtype="float64")


def test_torch_sims_validator_accepts_the_adapter():
    # The validator evaluates Si and Fe, which the starter never saw: allowed here, refused by default.
    adapter = DPA4Model(starter_checkpoint(), dtype="float64", allow_untrained_elements=True)
    from torch_sim.models.interface import validate_model_outputs

    validate_model_outputs(adapter, torch.device("cpu"), torch.float64)
    silicon = ts.io.atoms_to_state([bulk("Si", "diamond", a=5.43)], torch.device("cpu"), torch.float64)
    with pytest.raises(UntrainedElementError, match="Si"):
        DPA4Model(starter_checkpoint(), dtype="float64")(silicon)


def test_batched_results_equal_the_ase_calculator(model):
    structures = _structures()
    state = ts.io.atoms_to_state(structures, torch.device("cpu"), torch.float64)
    cell_before = state.cell.clone()
    out = model(state)
    assert torch.equal(state.cell, cell_before), "the adapter must not modify the state"
    assert out["energy"].shape == (4,) and out["stress"].shape == (4, 3, 3)
    calc = DPA4Calculator(starter_checkpoint(), dtype="float64")
    start = 0
    for k, atoms in enumerate(structures):
        atoms.calc = calc
        n = len(atoms)
        np.testing.assert_allclose(out["energy"][k].item(), atoms.get_potential_energy(), rtol=0, atol=1e-8)
        np.testing.assert_allclose(out["forces"][start:start + n].numpy(), atoms.get_forces(), rtol=0, atol=1e-8)
        stress = atoms.get_stress(voigt=False)
        assert np.abs(stress).max() > 1e-3, "the strained cells must carry stress for the sign check to mean much"
        np.testing.assert_allclose(out["stress"][k].numpy(), stress, rtol=0, atol=1e-8)
        start += n


def test_state_to_atoms_round_trip_keeps_the_lattice_rows(model):
    # torch-sim stores the lattice vectors as columns; the adapter must read rows (a transposed cell of a sheared
    # cell is a different crystal, so the energy would change).
    atoms = _structures()[2]
    state = ts.io.atoms_to_state([atoms], torch.device("cpu"), torch.float64)
    np.testing.assert_allclose(state.row_vector_cell[0].numpy(), atoms.cell.array, atol=1e-12)
    transposed = atoms.copy()
    transposed.set_cell(atoms.cell.array.T, scale_atoms=True)
    e_true = model(state)["energy"].item()
    e_transposed = model(ts.io.atoms_to_state([transposed], torch.device("cpu"), torch.float64))["energy"].item()
    atoms.calc = DPA4Calculator(starter_checkpoint(), dtype="float64")
    assert abs(e_true - atoms.get_potential_energy()) < 1e-8 and abs(e_true - e_transposed) > 1e-4


def test_optimize_with_the_frechet_cell_filter_lowers_energy_and_stress(model):
    atoms = _structures()[:2]
    state = ts.io.atoms_to_state(atoms, torch.device("cpu"), torch.float64)
    before = model(state)
    relaxed = ts.optimize(system=state, model=model, optimizer=ts.frechet_cell_fire, max_steps=60,
                          convergence_fn=ts.generate_force_convergence_fn(force_tol=0.05))
    after = model(relaxed)
    assert bool((after["energy"] < before["energy"]).all())
    assert after["stress"].abs().amax(dim=(1, 2)).max() < before["stress"].abs().amax(dim=(1, 2)).min()
