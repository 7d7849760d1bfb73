"""``dpa4 eval``: MAE and RMSE overall, per subset (file, and config_type within a file) and per element, and the
``--predictions`` file, all checked against an independent computation: DPA4Calculator on the same real frames
(vendored Mo surfaces and strained Nb cells) with numpy errors."""

from __future__ import annotations

import json

import ase.io
import numpy as np
import pytest
from ase.calculators.singlepoint import SinglePointCalculator

from dpa4_core.calculator import DPA4Calculator
from dpa4_core.cli import main
from dpa4_core.data.paths import vendored
from dpa4_core.data.readers import read_frames
from dpa4_core.pretrained import starter_checkpoint

CK = str(starter_checkpoint())
MO = str(vendored("maml_MoNbTaW", "Mo_Surface.json.gz"))
GPA = 160.21766208


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Two sources: the Mo surface file (one subset) and an extxyz of 6 Nb cells in two config_types."""
    tmp = tmp_path_factory.mktemp("eval")
    frames = read_frames(vendored("maml_MoNbTaW", "Nb_Elastic.json.gz"))
    images = []
    for index in range(6):
        frame = next(frames)
        atoms = frame.atoms.copy()
        stress = frame.stress[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]
        atoms.calc = SinglePointCalculator(atoms, energy=frame.energy, forces=frame.forces, stress=stress)
        atoms.info["config_type"] = "strain_a" if index < 4 else "strain_b"
        images.append(atoms)
    nb = tmp / "nb.extxyz"
    ase.io.write(nb, images)
    return tmp, [MO, str(nb)]


def _reference(sources):
    """Per frame: (subset, numbers, E label, E pred, F label, F pred, stress label 3x3 or None, stress pred)."""
    calc = DPA4Calculator(CK, dtype="float64")
    rows = []
    for source in sources:
        for frame in read_frames(source):
            atoms = frame.atoms.copy()
            atoms.calc = calc
            subset = source if source == MO else f"{source} [{frame.group}]"
            rows.append((subset, atoms.numbers, frame.energy, atoms.get_potential_energy(), frame.forces,
                         atoms.get_forces(), frame.stress, atoms.get_stress(voigt=False)))
    return rows


def _errors(rows) -> dict:
    de = np.array([(r[3] - r[2]) / len(r[1]) for r in rows]) * 1000
    df = np.concatenate([r[5] - r[4] for r in rows]).ravel() * 1000
    ds = np.concatenate([(r[7] - r[6]).ravel() for r in rows if r[6] is not None]) * GPA
    return {"energy_mae_mev_per_atom": np.abs(de).mean(), "energy_rmse_mev_per_atom": np.sqrt((de**2).mean()),
            "force_mae_mev_per_a": np.abs(df).mean(), "force_rmse_mev_per_a": np.sqrt((df**2).mean()),
            "stress_mae_gpa": np.abs(ds).mean(), "stress_rmse_gpa": np.sqrt((ds**2).mean()), "n_frames": len(rows)}


def _check(printed: dict, expected: dict):
    for key, value in expected.items():
        assert printed[key] == pytest.approx(value, rel=1e-7, abs=1e-9), key


def test_eval_errors_match_the_calculator_overall_per_subset_and_per_element(data, capsys):
    _, sources = data
    assert main(["eval", CK, *sources, "--dtype", "float64", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    rows = _reference(sources)
    _check(printed, _errors(rows))
    names = [s["subset"] for s in printed["subsets"]]
    assert names == [MO, f"{sources[1]} [strain_a]", f"{sources[1]} [strain_b]"]
    for subset in printed["subsets"]:
        _check(subset, _errors([r for r in rows if r[0] == subset["subset"]]))
    for element in printed["elements"]:
        z = {"Mo": 42, "Nb": 41}[element["element"]]
        df = np.concatenate([(r[5] - r[4])[r[1] == z] for r in rows]).ravel() * 1000
        assert element["n_atoms"] * 3 == df.size
        assert element["force_mae_mev_per_a"] == pytest.approx(np.abs(df).mean(), rel=1e-7)
        assert element["force_rmse_mev_per_a"] == pytest.approx(np.sqrt((df**2).mean()), rel=1e-7)
    assert main(["eval", CK, *sources, "--dtype", "float64", "--table"]) == 0
    table = capsys.readouterr().out
    assert "RMSE" in table and "per subset" in table and f"{sources[1]} [strain_b]" in table


def test_predictions_file_holds_labels_and_predictions(data, capsys):
    tmp, sources = data
    out = tmp / "pred.extxyz"
    assert main(["eval", CK, *sources, "--dtype", "float64", "--predictions", str(out)]) == 0
    capsys.readouterr()
    frames = ase.io.read(out, index=":")
    rows = _reference(sources)
    assert len(frames) == len(rows) == 17
    for atoms, row in zip(frames, rows):
        assert atoms.info["subset"] == row[0]
        assert atoms.info["dft_energy"] == pytest.approx(row[2], abs=1e-8)
        assert atoms.info["dpa4_energy"] == pytest.approx(row[3], abs=1e-8)
        assert np.allclose(atoms.arrays["dft_forces"], row[4], atol=1e-8)
        assert np.allclose(atoms.arrays["dpa4_forces"], row[5], atol=1e-8)
        voigt = [0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]
        assert np.allclose(atoms.info["dft_stress"], row[6][voigt], atol=1e-10)
        assert np.allclose(atoms.info["dpa4_stress"], row[7][voigt], atol=1e-10)
