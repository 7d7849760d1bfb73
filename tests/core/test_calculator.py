"""DPA4Calculator: ASE properties and conventions, neighbour-list reuse, dtype handling, checkpoints, atomate2.

The reused neighbour list (built with cutoff + skin) must give the same numbers as a fresh list for moves below
skin/2 and for small cell changes, and must be rebuilt when a pair could have entered the cutoff.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.calculators.calculator import PropertyNotImplementedError
from ase.stress import full_3x3_to_voigt_6_stress

from dpa4_core import pretrained
from dpa4_core import testing
from dpa4_core.calculator import CalculatorSetupError, DPA4Calculator
from dpa4_core.testing import predict, seeded_model

from _vendored import read_vendored


@pytest.fixture(scope="module")
def model():
    from dpa4_core import DPA4Config

    return seeded_model(DPA4Config.preset("tiny"), seed=0)


@pytest.fixture()
def alloy():
    atoms = read_vendored("maml_MoNbTaW", "NbMo_SS.json.gz", index=3)
    atoms.rattle(0.05, seed=1)
    return atoms


@pytest.fixture(scope="module")
def checkpoint(model, tmp_path_factory):
    from dpa4_core.io.checkpoint import save_checkpoint

    return save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "tiny.pt")


def _fresh(model, atoms, **kwargs) -> dict:
    atoms = atoms.copy()
    atoms.calc = DPA4Calculator(model, dtype="float64", **kwargs)
    results = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces(),
               "energies": atoms.get_potential_energies()}
    if atoms.pbc.all():
        results["stress"] = atoms.get_stress()
    return results


def test_properties_follow_ase_conventions(model, alloy):
    alloy.calc = DPA4Calculator(model, dtype="float64")
    energy = alloy.get_potential_energy()
    reference = predict(model, alloy)
    assert energy == pytest.approx(reference["energy"][0], abs=1e-10)
    assert alloy.get_potential_energy(force_consistent=True) == energy  # free_energy
    assert alloy.get_potential_energies().sum() == pytest.approx(energy, abs=1e-9)
    np.testing.assert_allclose(alloy.get_forces(), reference["forces"], atol=1e-10)
    stress = alloy.get_stress()
    assert stress.shape == (6,)
    np.testing.assert_allclose(stress, full_3x3_to_voigt_6_stress(reference["stress"][0]), atol=1e-12)
    # ASE sign (tension positive, (1/V) dE/d strain), checked against the energy itself.
    voigt_fd = full_3x3_to_voigt_6_stress(testing.finite_difference_stress(model, alloy))
    np.testing.assert_allclose(stress, voigt_fd, atol=1e-6 * max(1.0, np.abs(voigt_fd).max()))
    assert isinstance(alloy.get_forces(), np.ndarray) and alloy.get_forces().dtype == np.float64


def test_molecule_has_no_stress(model):
    molecule = read_vendored("botnet", "dataset_acac", "train_300K.xyz.gz", index=0)
    molecule.calc = DPA4Calculator(model, dtype="float64")
    assert np.isfinite(molecule.get_potential_energy())
    with pytest.raises(PropertyNotImplementedError):
        molecule.get_stress()


def test_mixed_periodicity_uses_the_whole_cell_for_the_stress(model, alloy):
    """A slab's stress is ASE's: -virial / volume of the whole cell (see tests/reliability for the slab physics)."""
    slab = alloy.copy()
    slab.pbc = [True, True, False]
    slab.calc = DPA4Calculator(model, dtype="float64")
    reference = predict(model, slab)
    assert slab.get_potential_energy() == pytest.approx(reference["energy"][0], abs=1e-10)
    expected = -reference["virial"][0] / slab.get_volume()
    np.testing.assert_allclose(slab.get_stress(), full_3x3_to_voigt_6_stress(expected), atol=1e-12)


def test_neighbour_list_reuse_equals_fresh_list(model, alloy):
    calc = DPA4Calculator(model, dtype="float64", skin=0.5)
    alloy.calc = calc
    rng = np.random.default_rng(0)
    start = alloy.positions.copy()
    alloy.get_potential_energy()  # the list is built here
    for step in range(4):
        # Random moves with every atom less than skin/2 = 0.25 A from where the list was built.
        displacement = rng.normal(size=start.shape)
        displacement *= 0.24 / np.linalg.norm(displacement, axis=1).max()
        alloy.positions = start + displacement
        if step == 2:
            calc.reset()  # older ase resets on every move; the list must survive it
        reused = {"energy": alloy.get_potential_energy(), "forces": alloy.get_forces(), "stress": alloy.get_stress()}
        fresh = _fresh(model, alloy, skin=0.0)
        assert reused["energy"] == pytest.approx(fresh["energy"], abs=1e-10)
        np.testing.assert_allclose(reused["forces"], fresh["forces"], atol=1e-10)
        np.testing.assert_allclose(reused["stress"], fresh["stress"], atol=1e-12)
    assert calc.neighbor_list_builds == 1
    # One atom further than skin/2: the list must be rebuilt.
    alloy.positions = start
    alloy.positions[3] += [0.26, 0.0, 0.0]
    alloy.get_potential_energy()
    assert calc.neighbor_list_builds == 2


def test_neighbour_list_reuse_under_cell_change(model, alloy):
    calc = DPA4Calculator(model, dtype="float64", skin=0.5)
    alloy.calc = calc
    alloy.get_potential_energy()
    # A 1% strain moves pairs at the cutoff by ~0.06 A: the bound allows reuse, numbers must stay exact.
    strain = np.array([[0.01, 0.003, 0.0], [0.003, -0.008, 0.002], [0.0, 0.002, 0.005]])
    strained = testing.strained(alloy, strain)
    alloy.set_cell(strained.cell, scale_atoms=True)
    energy = alloy.get_potential_energy()
    assert calc.neighbor_list_builds == 1
    fresh = _fresh(model, alloy, skin=0.0)
    assert energy == pytest.approx(fresh["energy"], abs=1e-10)
    np.testing.assert_allclose(alloy.get_stress(), fresh["stress"], atol=1e-12)
    # Compressing by 15% brings pairs from beyond cutoff + skin into the cutoff: rebuilt. (Expanding
    # never brings new pairs in, so it alone would not need a new list.)
    alloy.set_cell(alloy.cell.array * 0.85, scale_atoms=True)
    alloy.get_potential_energy()
    assert calc.neighbor_list_builds == 2


def test_new_composition_rebuilds(model, alloy):
    calc = DPA4Calculator(model, dtype="float64")
    alloy.calc = calc
    first = alloy.get_potential_energy()
    numbers = alloy.numbers.copy()
    numbers[0] = 73
    alloy.numbers = numbers
    second = alloy.get_potential_energy()
    assert calc.neighbor_list_builds == 2 and second != first
    assert second == pytest.approx(_fresh(model, alloy)["energy"], abs=1e-10)


def test_float32_calculator_works_on_a_copy(model, alloy):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    calc = DPA4Calculator(model, dtype="float32")
    assert testing.model_dtype(calc.model) == torch.float32
    assert testing.model_dtype(model) == torch.float64
    assert torch.get_default_dtype() == torch.float32
    alloy.calc = calc
    energy32 = alloy.get_potential_energy()
    assert energy32 == pytest.approx(_fresh(model, alloy)["energy"], rel=1e-5)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]) and value.dtype == before[key].dtype


def test_bad_setup_is_a_clear_error(model, tmp_path, monkeypatch):
    with pytest.raises(CalculatorSetupError, match="float16"):
        DPA4Calculator(model, dtype="float16")
    with pytest.raises(CalculatorSetupError, match="skin"):
        DPA4Calculator(model, skin=-1.0)
    with pytest.raises(CalculatorSetupError, match="either model or checkpoint"):
        DPA4Calculator(model, checkpoint=tmp_path / "x.pt")
    with pytest.raises(CalculatorSetupError, match="got int"):
        DPA4Calculator(model=3)
    missing = tmp_path / "pretrained" / "dpa4-starter.pt"
    monkeypatch.setattr(pretrained, "STARTER", missing)
    with pytest.raises(CalculatorSetupError, match="starter checkpoint"):
        DPA4Calculator()


def test_checkpoint_forms_give_the_same_numbers(model, alloy, checkpoint, monkeypatch):
    expected = _fresh(model, alloy)["energy"]
    monkeypatch.setattr(pretrained, "STARTER", checkpoint)
    calculators = [
        DPA4Calculator.from_checkpoint(checkpoint, dtype="float64"),
        DPA4Calculator(checkpoint=checkpoint, dtype="float64"),
        DPA4Calculator(model=str(checkpoint), dtype="float64"),
        DPA4Calculator(dtype="float64"),  # the starter checkpoint
    ]
    for calc in calculators:
        atoms = alloy.copy()
        atoms.calc = calc
        assert atoms.get_potential_energy() == pytest.approx(expected, abs=1e-10)


def test_atomate2_instantiates_the_calculator_from_kwargs(checkpoint):
    from atomate2.forcefields.jobs import ForceFieldRelaxMaker

    maker = ForceFieldRelaxMaker(
        calculator_meta="dpa4_core.DPA4Calculator",
        calculator_kwargs={"checkpoint": str(checkpoint), "dtype": "float64"},
    )
    calc = maker._get_calculator()
    assert isinstance(calc, DPA4Calculator)
    assert maker.ase_calculator_name == "DPA4Calculator"
    atoms = Atoms("Mo2", positions=[[0.0, 0.0, 0.0], [2.2, 0.0, 0.0]])
    atoms.calc = calc
    assert np.isfinite(atoms.get_forces()).all()
