"""Readers and FrameDataset: units and signs against DFT's own energies, every format on real frames, bad data.

The key physics check: the JSON sets store stress in kbar with VASP's sign; after conversion to ASE's convention
(eV/A^3, tension positive) the stress must equal (1/V) dE/d(strain) measured by finite differences of the DFT
energies of the Elastic set's own strained cells. A sign or unit slip fails it by a factor -1 or 10.
"""

from __future__ import annotations

import gzip
import json
import logging
import re
from collections import defaultdict

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from dpa4_core.data.paths import vendored
from dpa4_core.data.labels import DataError
from dpa4_core.data.readers import read_frames, read_pymatgen_json
from dpa4_core.train.dataset import FrameDataset, load_dataset, split_indices


def _elastic_by_strain(name: str) -> dict[int, dict[float, object]]:
    """Frames of an Elastic set indexed by (strain type 1..6, strain magnitude) from the record notes."""
    records = json.load(gzip.open(vendored("maml_MoNbTaW", name)))
    frames = list(read_pymatgen_json(vendored("maml_MoNbTaW", name)))
    table: dict[int, dict[float, object]] = defaultdict(dict)
    for record, frame in zip(records, frames):
        kind, value = re.fullmatch(r"(\d)--(-?[\d.]+)", next(iter(record["notes"].values()))).groups()
        table[int(kind)][round(float(value), 4)] = frame
    return table


@pytest.mark.parametrize("name", ["Mo_Elastic.json.gz", "Nb_Elastic.json.gz", "W_Elastic.json.gz"])
def test_converted_stress_is_the_strain_derivative_of_the_dft_energy(name):
    table = _elastic_by_strain(name)
    checked = 0
    for kind, frames in table.items():
        for s in (-0.07, -0.05, -0.03, 0.03, 0.05, 0.07):
            lo, mid, hi = (frames.get(round(s + d, 4)) for d in (-0.01, 0.0, 0.01))
            if lo is None or mid is None or hi is None:
                continue
            cell = mid.atoms.cell.array
            # Deformation between the neighbouring cells, relative to the middle one (rows = lattice vectors).
            g_hi = np.linalg.solve(cell, hi.atoms.cell.array)
            g_lo = np.linalg.solve(cell, lo.atoms.cell.array)
            d_eps = 0.5 * ((g_hi - g_lo) + (g_hi - g_lo).T)
            predicted = mid.atoms.get_volume() * np.sum(mid.stress * d_eps)
            measured = hi.energy - lo.energy
            if abs(measured) < 5e-3:  # too flat for a 2-point difference of DFT energies (noise ~1e-4 eV)
                continue
            assert predicted == pytest.approx(measured, rel=0.06, abs=2e-3), (kind, s, predicted, measured)
            checked += 1
    assert checked >= 12


def test_pymatgen_json_matches_the_raw_records():
    path = vendored("maml_MoNbTaW", "Mo_Surface.json.gz")
    records = json.load(gzip.open(path))
    frames = list(read_frames(path))
    assert len(frames) == len(records)
    f, r = frames[3], records[3]
    assert f.energy == r["outputs"]["energy"]
    np.testing.assert_array_equal(f.forces, np.array(r["outputs"]["forces"]))
    xx, yy, zz, xy, yz, xz = r["outputs"]["stress"]
    assert f.stress[0, 0] == pytest.approx(-xx * 6.2415e-4, rel=1e-4)
    assert f.stress[0, 1] == f.stress[1, 0] == pytest.approx(-xy * 6.2415e-4, rel=1e-4)
    assert f.stress[1, 2] == pytest.approx(-yz * 6.2415e-4, rel=1e-4)
    assert f.stress[0, 2] == pytest.approx(-xz * 6.2415e-4, rel=1e-4)
    assert f.group == "Mo_Surface" and "frame 3" in f.source


def test_mlearn_virial_stress_and_extxyz_molecules():
    mo = list(read_frames(vendored("mlearn", "Mo", "training.json.gz")))
    assert len(mo) > 100 and all(f.stress is not None for f in mo)
    import ase.io

    acac = load_dataset(ase.io.read(vendored("botnet", "dataset_acac", "train_300K.xyz.gz"), index=":20"))
    assert len(acac) == 20 and not acac.has_stress.any() and not acac.pbc.any()
    assert acac.elements == [1, 6, 8]
    assert acac.energy[0] == pytest.approx(-9391.45554428476)
    assert acac.forces[0] == pytest.approx([1.47339228, 1.13796366, 0.06391102])


def test_vasprun_through_ase_agrees_with_pymatgen():
    from pymatgen.io.vasp import Vasprun

    path = vendored("pymatgen_vasprun", "vasprun.md.xml.gz")
    frames = list(read_frames(path))
    run = Vasprun(str(path), parse_dos=False, parse_eigen=False, parse_potcar_file=False)
    assert len(frames) == len(run.ionic_steps)
    last = run.ionic_steps[-1]
    np.testing.assert_allclose(frames[-1].forces, np.array(last["forces"]), atol=1e-6)
    # pymatgen keeps VASP's kbar and sign: our ASE-sign eV/A^3 must be -raw * 6.2415e-4.
    np.testing.assert_allclose(frames[-1].stress, -np.array(last["stress"]) * 6.2415e-4, rtol=1e-3, atol=1e-7)


def test_deepmd_folder_round_trip(tmp_path):
    frames = list(read_frames(vendored("maml_MoNbTaW", "MoTa_SS.json.gz")))
    symbols = frames[0].atoms.get_chemical_symbols()
    originals = [f for f in frames if f.atoms.get_chemical_symbols() == symbols][:3]  # one type.raw per folder
    assert len(originals) == 3 and set(symbols) == {"Mo", "Ta"}
    type_map = ["Mo", "Ta"]
    folder = tmp_path / "MoTa"
    (folder / "set.000").mkdir(parents=True)
    (folder / "type_map.raw").write_text("\n".join(type_map) + "\n")
    (folder / "type.raw").write_text("\n".join(str(type_map.index(s)) for s in symbols) + "\n")
    save = lambda name, x: np.save(folder / "set.000" / f"{name}.npy", np.asarray(x))  # noqa: E731
    save("coord", [f.atoms.positions.reshape(-1) for f in originals])
    save("box", [f.atoms.cell.array.reshape(-1) for f in originals])
    save("energy", [f.energy for f in originals])
    save("force", [f.forces.reshape(-1) for f in originals])
    save("virial", [(-f.stress * f.atoms.get_volume()).reshape(-1) for f in originals])  # DeePMD: W = -sigma V
    frames = list(read_frames(folder))
    assert len(frames) == 3
    for got, want in zip(frames, originals):
        assert got.energy == want.energy
        np.testing.assert_allclose(got.atoms.positions, want.atoms.positions)
        np.testing.assert_allclose(got.forces, want.forces)
        np.testing.assert_allclose(got.stress, want.stress, rtol=1e-12, atol=1e-15)
        assert got.atoms.get_chemical_symbols() == symbols


def test_objects_structures_and_atoms():
    frame = next(read_frames(vendored("maml_MoNbTaW", "Nb_Surface.json.gz")))
    from pymatgen.io.ase import AseAtomsAdaptor

    structure = AseAtomsAdaptor.get_structure(frame.atoms)
    raw_stress_gpa = frame.stress * 160.21766208
    pairs = [(structure, {"energy": frame.energy, "forces": frame.forces, "stress": raw_stress_gpa})]
    ds = load_dataset(pairs, stress_unit="gpa")
    np.testing.assert_allclose(ds.stress[0], frame.stress, rtol=1e-10)
    atoms = frame.atoms.copy()
    atoms.calc = SinglePointCalculator(atoms, energy=frame.energy, forces=frame.forces,  # ASE Voigt order
                                       stress=[frame.stress[0, 0], frame.stress[1, 1], frame.stress[2, 2],
                                               frame.stress[1, 2], frame.stress[0, 2], frame.stress[0, 1]])
    ds2 = load_dataset([atoms])
    np.testing.assert_allclose(ds2.stress[0], frame.stress, rtol=1e-12)
    np.testing.assert_allclose(ds2.forces, frame.forces)


def _write_records(path, mutate):
    records = json.load(gzip.open(vendored("maml_MoNbTaW", "Mo_Surface.json.gz")))[:4]
    mutate(records[2])
    path.write_text(json.dumps(records))
    return path


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda r: r["outputs"].pop("forces"), "forces are missing"),
        (lambda r: r["outputs"].update(forces=r["outputs"]["forces"][:-1]), "forces have shape"),
        (lambda r: r["outputs"].update(energy=float("nan")), "energy is missing or not finite"),
        (lambda r: r["outputs"].update(stress=[1.0, 2.0]), r"6 \(Voigt\) or 9"),
    ],
)
def test_bad_data_names_file_and_frame(tmp_path, mutate, message):
    path = _write_records(tmp_path / "bad.json", mutate)
    with pytest.raises(DataError, match=message) as info:
        load_dataset(path)
    assert "bad.json" in str(info.value) and "frame 2" in str(info.value)


def test_unknown_stress_unit_is_refused(tmp_path):
    with pytest.raises(DataError, match="unknown stress unit 'bar'"):
        load_dataset(vendored("maml_MoNbTaW", "Mo_Surface.json.gz"), stress_unit="bar")


def test_frames_with_atoms_closer_than_r_in_are_dropped_and_reported(caplog):
    frames = list(read_frames(vendored("maml_MoNbTaW", "Mo_Surface.json.gz")))[:5]
    squeezed = frames[1].atoms.copy()
    squeezed.positions[1] = squeezed.positions[0] + [0.3, 0.0, 0.0]  # 0.3 A < r_in = 0.5 A
    frames[1].atoms = squeezed
    with caplog.at_level(logging.WARNING, logger="dpa4_core.train.dataset"):
        ds = FrameDataset.from_frames(frames, r_min=0.5)
    assert len(ds) == 4 and ds.n_dropped == 1
    assert "dropped 1 frame" in caplog.text
    assert FrameDataset.from_frames(frames, r_min=0.2).n_dropped == 0  # control: 0.3 A passes a 0.2 A check


def test_dataset_is_compact_and_splits_are_reproducible():
    paths = [vendored("maml_MoNbTaW", f) for f in ("Mo_Surface.json.gz", "Nb_Surface.json.gz", "Ta_Surface.json.gz")]
    ds = load_dataset(paths)
    assert ds.offsets[-1] == len(ds.numbers) == len(ds.positions) == len(ds.forces)
    assert ds.group_names == ["Mo_Surface", "Nb_Surface", "Ta_Surface"]
    a = split_indices(ds, [0.6, 0.2, 0.2], seed=3)
    b = split_indices(ds, [0.6, 0.2, 0.2], seed=3)
    c = split_indices(ds, [0.6, 0.2, 0.2], seed=4)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))
    assert sorted(np.concatenate(a).tolist()) == list(range(len(ds)))
    groups = split_indices(ds, [0.6, 0.4], seed=0, by_group=True)
    assert len(groups[0]) and len(groups[1])
    assert not set(ds.group[groups[0]]) & set(ds.group[groups[1]])
    sub = ds.subset(a[1])
    for k, i in enumerate(a[1]):
        assert sub.energy[k] == ds.energy[i]
        np.testing.assert_array_equal(sub.atoms(k).positions, ds.atoms(i).positions)
    batch, labels = ds.batch([0, 2], cutoff=5.0)
    assert batch.n_frames == 2 and labels.forces.shape == (batch.n_atoms, 3)
    assert isinstance(ds.atoms(0), Atoms)


def test_extxyz_export_round_trips_labels(tmp_path):
    import ase.io

    molecules = ase.io.read(vendored("botnet", "dataset_ethanol", "train.xyz.gz"), index=":3")
    ds = FrameDataset.concatenate([load_dataset(vendored("maml_MoNbTaW", "Ta_Surface.json.gz")),
                                   load_dataset(molecules)])
    back = load_dataset(ds.write_extxyz(tmp_path / "split.extxyz"))
    assert len(back) == len(ds) and back.has_stress.tolist() == ds.has_stress.tolist()
    np.testing.assert_allclose(back.stress, ds.stress, rtol=1e-12, atol=1e-15)  # off-diagonals keep their place
    np.testing.assert_allclose(back.forces, ds.forces)
    np.testing.assert_allclose(back.energy, ds.energy)
    np.testing.assert_array_equal(back.pbc, ds.pbc)
