"""Bad input gives a clear error naming the problem, never NaN; batching and precision do not change results.

Bad input: atomic number 0 or > 118, an empty structure, NaN/inf coordinates, coincident atoms, a zero-volume
periodic cell, parallel periodic vectors of a slab; checked through ``AtomsBatch`` (what the model reads) and
the calculator.
Consistency: a batch of frames of different sizes (periodic and molecule) equals one-by-one evaluation, and
float32 agrees with float64 within float32 tolerance.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms

from dpa4_core import testing
from dpa4_core.calculator import DPA4Calculator
from dpa4_core.data.batch import AtomsBatch, InvalidStructureError
from dpa4_core.testing import predict, seeded_model

from _vendored import read_vendored


@pytest.fixture(scope="module")
def model():
    from dpa4_core import DPA4Config

    return seeded_model(DPA4Config.preset("tiny"), seed=0)


def _cell(**changes) -> Atoms:
    atoms = Atoms("MoNb", positions=[[0.0, 0.0, 0.0], [1.6, 1.6, 1.6]], cell=np.eye(3) * 3.2, pbc=True)
    for key, value in changes.items():
        setattr(atoms, key, value) if key != "positions" else atoms.set_positions(value)
    return atoms


def _bad_structures():
    nan_positions = np.array([[0.0, 0.0, 0.0], [np.nan, 1.6, 1.6]])
    inf_positions = np.array([[0.0, 0.0, 0.0], [np.inf, 1.6, 1.6]])
    flat = _cell()
    flat.set_cell([[3.2, 0.0, 0.0], [0.0, 3.2, 0.0], [3.2, 3.2, 0.0]], scale_atoms=False)
    z0 = Atoms(numbers=[0, 42], positions=[[0.0, 0.0, 0.0], [2.0, 0.0, 0.0]])
    z119 = Atoms(numbers=[119, 42], positions=[[0.0, 0.0, 0.0], [2.0, 0.0, 0.0]])
    return {
        "atomic number 0": (z0, r"\[0\]"),
        "atomic number 119": (z119, r"119"),
        "empty": (Atoms(), r"empty"),
        "NaN position": (_cell(positions=nan_positions), r"NaN|infinite"),
        "inf position": (_cell(positions=inf_positions), r"NaN|infinite"),
        "coincident": (_cell(positions=[[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]), r"coincident"),
        "coincident via image": (_cell(positions=[[0.0, 0.0, 0.0], [3.2, 0.0, 3.2]]), r"coincident"),
        "zero volume": (flat, r"zero volume"),
        "flat slab": (_cell(pbc=[True, True, False], cell=[[3.2, 0, 0], [6.4, 0, 0], [0, 0, 3.2]]), r"parallel"),
    }


BAD = _bad_structures()


@pytest.mark.parametrize("case", list(BAD))
def test_bad_structure_is_rejected_by_the_batch(case):
    atoms, message = BAD[case]
    with pytest.raises(InvalidStructureError, match=message):
        AtomsBatch.from_atoms([atoms], cutoff=5.0)


@pytest.mark.parametrize("case", list(BAD))
def test_bad_structure_is_rejected_by_the_calculator(model, case):
    atoms, message = BAD[case]
    atoms = atoms.copy()
    atoms.calc = DPA4Calculator(model, dtype="float64")
    with pytest.raises(ValueError, match=message):
        atoms.get_potential_energy()


def test_error_is_raised_during_md_after_neighbour_list_reuse(model):
    """Atoms pushed onto each other between steps (list reused): an error, not NaN."""
    atoms = Atoms("Mo2", positions=[[0.0, 0.0, 0.0], [0.2, 0.0, 0.0]])
    calc = DPA4Calculator(model, dtype="float64", skin=1.0)
    atoms.calc = calc
    atoms.get_potential_energy()
    atoms.positions[1] = [1e-5, 0.0, 0.0]
    with pytest.raises(InvalidStructureError, match="coincident"):
        atoms.get_potential_energy()
    assert calc.neighbor_list_builds == 1


def test_batch_of_different_frames_equals_one_by_one(model):
    frames = [
        read_vendored("maml_MoNbTaW", "NbMo_SS.json.gz", index=3),
        read_vendored("botnet", "dataset_acac", "train_300K.xyz.gz", index=0),
        read_vendored("maml_MoNbTaW", "W_Elastic.json.gz", index=0),
        Atoms("TaW", positions=[[0.0, 0.0, 0.0], [1.1, 1.9, -0.8]]),
    ]
    frames[0].rattle(0.05, seed=1)
    together = predict(model, frames)
    start = 0
    for index, atoms in enumerate(frames):
        alone = predict(model, atoms, compute_stress=bool(atoms.pbc.all()))
        stop = start + len(atoms)
        testing.assert_close(together["energy"][index], alone["energy"][0], 1e-12, f"energy of frame {index}")
        testing.assert_close(together["forces"][start:stop], alone["forces"], 1e-10, f"forces of frame {index}",
                             floor=1e-3)
        testing.assert_close(together["atom_energy"][start:stop], alone["atom_energy"], 1e-12, f"E_i {index}")
        if atoms.pbc.all():
            testing.assert_close(together["stress"][index], alone["stress"][0], 1e-10, f"stress of frame {index}")
        else:
            assert np.all(together["stress"][index] == 0.0), "a molecule has no stress"
        start = stop


def test_float32_agrees_with_float64(model):
    atoms = read_vendored("maml_MoNbTaW", "NbMo_SS.json.gz", index=3)
    atoms.rattle(0.05, seed=1)
    single = seeded_model(model.config, seed=0, dtype=torch.float32)
    assert testing.model_dtype(single) == torch.float32
    out64 = predict(model, atoms)
    out32 = predict(single, atoms)
    # The energy includes per-atom biases of a few eV: compare per-atom energies relative to their scale.
    testing.assert_close(out32["atom_energy"], out64["atom_energy"], 1e-5, "fp32 atom energies")
    testing.assert_close(out32["forces"], out64["forces"], 1e-3, "fp32 forces")
    testing.assert_close(out32["stress"], out64["stress"], 1e-3, "fp32 stress")
    assert torch.get_default_dtype() == torch.float32
