"""``DPA4Calculator.todict()`` / ``.parameters`` say which model made a result, and ASE files keep it."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from ase.build import bulk
from ase.db import connect
from ase.io import Trajectory, read

from dpa4_core.calculator import DPA4Calculator
from dpa4_core.io.checkpoint import load_checkpoint
from dpa4_core.io.files import file_sha256
from dpa4_core.pretrained import starter_checkpoint


def _atoms():
    atoms = bulk("Mo", "bcc", a=3.16, cubic=True).repeat(2)
    atoms.rattle(0.02, seed=1)
    return atoms


def test_todict_records_the_checkpoint_digest_dtype_device_and_skin(tmp_path):
    path = shutil.copy(starter_checkpoint(), tmp_path / "my-model.pt")
    calc = DPA4Calculator(checkpoint=path, dtype="float64", skin=0.3)
    expected = {"model": "my-model.pt", "checkpoint": str(path.resolve()), "sha256": file_sha256(path),
                "dtype": "float64", "device": "cpu", "skin": 0.3, "allow_untrained_elements": False}
    assert calc.todict() == expected
    assert dict(calc.parameters) == expected
    # The starter, by default: named and hashed like any file.
    default = DPA4Calculator().todict()
    assert default["model"] == "dpa4-starter.pt" and default["sha256"] == file_sha256(starter_checkpoint())
    assert default["dtype"] == "float32"


def test_a_model_object_records_what_it_knows(tmp_path):
    calc = DPA4Calculator(model=load_checkpoint(starter_checkpoint()))
    params = calc.todict()
    assert params["checkpoint"] is None and params["sha256"] is None and params["model"] == "DPA4 (in memory)"
    assert params["dtype"] == "float32" and params["skin"] == 0.5


def test_ase_database_and_trajectory_carry_the_parameters(tmp_path):
    calc = DPA4Calculator(checkpoint=starter_checkpoint(), dtype="float64")
    atoms = _atoms()
    atoms.calc = calc
    energy = atoms.get_potential_energy()
    with connect(tmp_path / "results.db") as db:
        row_id = db.write(atoms)
    row = connect(tmp_path / "results.db").get(id=row_id)
    assert row.calculator == "dpa4calculator"
    assert row.calculator_parameters["sha256"] == file_sha256(starter_checkpoint())
    assert row.calculator_parameters["dtype"] == "float64" and row.calculator_parameters["device"] == "cpu"
    assert np.isclose(row.energy, energy)
    with Trajectory(tmp_path / "relax.traj", "w") as traj:
        traj.write(atoms)
    back = read(tmp_path / "relax.traj")
    assert back.calc.parameters["sha256"] == file_sha256(starter_checkpoint())
    assert back.calc.parameters["model"] == "dpa4-starter.pt" and back.calc.parameters["skin"] == 0.5


def test_parameters_do_not_change_results_or_reset_the_calculator():
    calc = DPA4Calculator(checkpoint=starter_checkpoint(), dtype="float64")
    atoms = _atoms()
    atoms.calc = calc
    first = atoms.get_potential_energy()
    assert calc.todict()["checkpoint"] == str(starter_checkpoint())
    assert atoms.get_potential_energy() == pytest.approx(first, abs=0) and calc.neighbor_list_builds == 1
