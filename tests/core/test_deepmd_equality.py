"""A deepmd-kit DPA4 checkpoint loaded by dpa4 gives deepmd-kit's energy, forces and virial (float64), and the
loaded model passes the same physics checks as dpa4's own models.

deepmd-kit 3.2.0 computed the reference on four vendored frames (tests/fixtures/deepmd/dpa4_tiny_reference.json,
benchmarks/deepmd/make_fixtures.py); dpa4 computes with its own neighbour list, frames and modules.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms

from dpa4_core.calculator import DPA4Calculator
from dpa4_core.io.checkpoint import load_checkpoint
from dpa4_core.testing import (
    assert_conservative,
    assert_permutation_equivariant,
    assert_rotation_equivariant,
    assert_translation_invariant,
    predict,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "deepmd"
REFERENCE = json.loads((FIXTURES / "dpa4_tiny_reference.json").read_text())


@pytest.fixture(scope="module")
def model():
    return load_checkpoint(FIXTURES / "dpa4_tiny.pt")


def _atoms(frame: dict) -> Atoms:
    return Atoms(frame["symbols"], positions=frame["positions"], cell=frame["cell"], pbc=True)


@pytest.mark.parametrize("frame", REFERENCE["frames"], ids=[f["source"].split("/")[-1] for f in REFERENCE["frames"]])
def test_energy_forces_virial_equal_deepmd(model, frame):
    ours = predict(model, _atoms(frame))
    theirs = frame["deepmd"]
    energy = float(np.asarray(ours["energy"]).reshape(-1)[0])
    assert abs(energy - theirs["energy"]) <= 1e-6 * abs(theirs["energy"])
    assert np.abs(ours["forces"] - np.array(theirs["forces"])).max() < 1e-6
    virial = np.asarray(ours["virial"]).reshape(3, 3)
    assert np.abs(virial - np.array(theirs["virial"])).max() <= 1e-6 * max(1.0, np.abs(theirs["virial"]).max())
    assert np.abs(np.array(theirs["forces"])).max() > 1e-3 or len(frame["symbols"]) <= 2  # forces are not trivial


def test_per_atom_energies_equal_deepmd(model):
    frame = REFERENCE["frames"][0]
    ours = predict(model, _atoms(frame))["atom_energy"]
    assert np.abs(ours - np.array(frame["deepmd"]["atom_energy"])).max() < 1e-9


def test_loaded_model_is_symmetric_and_conservative(model):
    atoms = _atoms(REFERENCE["frames"][1])
    assert_rotation_equivariant(model, atoms, seed=1)
    assert_translation_invariant(model, atoms, seed=2)
    assert_permutation_equivariant(model, atoms, seed=3)
    assert_conservative(model, atoms, indices=[0, 7])


def test_calculator_runs_the_deepmd_checkpoint_on_its_elements_only():
    calc = DPA4Calculator.from_checkpoint(FIXTURES / "dpa4_tiny.pt", dtype="float64")
    frame = REFERENCE["frames"][0]
    atoms = _atoms(frame)
    atoms.calc = calc
    assert atoms.get_potential_energy() == pytest.approx(frame["deepmd"]["energy"], rel=1e-9)
    foreign = atoms.copy()
    foreign[0].symbol = "Ta"  # not in the checkpoint's type_map
    foreign.calc = calc
    with pytest.raises(ValueError, match="Ta"):
        foreign.get_potential_energy()


def test_a_loaded_deepmd_model_saves_as_a_native_checkpoint(model, tmp_path):
    from dpa4_core.io.checkpoint import read_checkpoint, save_checkpoint

    path = save_checkpoint(model, tmp_path / "converted.pt", metadata={"source": "dpa4_tiny.pt"})
    native = load_checkpoint(path)
    assert read_checkpoint(path).config["block"] == "deepmd" and native.trained_elements == [41, 42, 74]
    atoms = _atoms(REFERENCE["frames"][2])
    assert predict(native, atoms)["energy"] == pytest.approx(predict(model, atoms)["energy"], rel=1e-14)
