"""Isolated-atom reference energies (E0): taken from the vendored PBE dimer curves, they give the PBE cohesive
energies of bcc Nb, Mo, Ta, W with the bulk frames; a model referenced to them has an isolated atom at exactly E0."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms

from dpa4_core.config import ConfigError, DPA4Config
from dpa4_core.data.batch import AtomsBatch
from dpa4_core.data.paths import vendored
from dpa4_core.model.bias import BiasFitError, dimer_curve, dimer_e0, e0_vector
from dpa4_core.testing import seeded_model
from dpa4_core.train import TrainConfig, load_dataset
from dpa4_core.train.config import BiasConfig, load_config
from dpa4_core.train.setup import fit_composition_bias, resolve_e0, set_e0_reference

DIMERS = ("matbench_discovery_refs", "diatomics-dft.json.gz")
# PBE cohesive energies of the bcc metals (eV/atom), ranges of published PBE values
PBE_COHESIVE = {"Nb": (6.7, 7.6), "Mo": (6.0, 6.8), "Ta": (7.9, 8.4), "W": (8.2, 8.9)}


@pytest.fixture(scope="module")
def e0():
    return dimer_e0(vendored(*DIMERS), list(PBE_COHESIVE))


def test_dimer_e0_is_half_the_energy_at_the_largest_separation(e0):
    r, energy, forces = dimer_curve(vendored(*DIMERS), "Mo")
    assert r[-1] == pytest.approx(6.0) and np.all(np.diff(r) > 0)
    assert e0["Mo"] == pytest.approx(energy[-1] / 2)
    # the tail is flat to within a few meV per atom: 6 A is the isolated-atom limit at this precision
    assert abs(energy[-1] - energy[-2]) / 2 < 0.01
    assert forces.shape == (len(r), 2, 3)


def test_dimer_e0_and_the_bulk_frames_give_pbe_cohesive_energies(e0):
    """Same PBE setup (up to W_sv vs W_pv PAW): E0 minus the lowest bcc energy per atom of the elastic frames."""
    for el, (low, high) in PBE_COHESIVE.items():
        bulk = load_dataset(str(vendored("maml_MoNbTaW", f"{el}_Elastic.json.gz")))
        cohesive = e0[el] - (bulk.energy / bulk.n_atoms).min()
        assert low < cohesive < high, (el, cohesive)


def test_unknown_element_and_missing_curve_are_errors(e0):
    with pytest.raises(BiasFitError, match="Xx"):
        e0_vector({"Xx": -1.0})
    with pytest.raises(BiasFitError, match="no PBE dimer curve"):
        dimer_e0(vendored(*DIMERS), ["Og"])
    assert e0_vector(e0)[42].item() == pytest.approx(e0["Mo"])


@pytest.fixture(scope="module")
def referenced(e0):
    """A tiny model referenced to E0 on Mo and Nb-Mo frames (plus one Mo dimer, not used for the shift)."""
    data = load_dataset([str(vendored("maml_MoNbTaW", f)) for f in ("Mo_Elastic.json.gz", "NbMo_SS.json.gz")])
    model = seeded_model(DPA4Config.preset("tiny"), seed=0).double()
    shift = set_e0_reference(model, data, {k: e0[k] for k in ("Nb", "Mo")})
    return model, data, shift


def _energy(model, atoms_list):
    batch = AtomsBatch.from_atoms(atoms_list, cutoff=model.config.cutoff, dtype=torch.float64)
    return model(batch, compute_stress=False)


def test_isolated_atom_and_separated_dimer_have_exactly_e0(referenced, e0):
    model, _, _ = referenced
    atom = Atoms("Mo", positions=[[0.0, 0.0, 0.0]])
    dimer = Atoms("Nb2", positions=[[0.0, 0.0, 0.0], [model.config.cutoff + 0.5, 0.0, 0.0]])
    out = _energy(model, [atom, dimer])
    assert out["energy"][0].item() == e0["Mo"]
    assert out["energy"][1].item() == pytest.approx(2 * e0["Nb"], abs=1e-12)
    assert torch.count_nonzero(out["forces"]) == 0


def test_e0_plus_shift_is_the_least_squares_bulk_reference(referenced):
    """The bulk sees E0 + shift: the composition least squares of the frames, so training starts where lstsq does."""
    model, data, shift = referenced
    total = model.energy_bias.numpy() + model.energy_shift.numpy()
    np.testing.assert_allclose(total[[41, 42]], fit_composition_bias(data)[[41, 42]], atol=1e-8)
    assert -8.0 < shift[42] < -5.5  # about minus the cohesive energy of Mo


def test_resolve_e0_names_missing_elements_and_config_requires_e0():
    with pytest.raises(BiasFitError, match="Ta"):
        resolve_e0(BiasConfig(method="e0", e0={"Mo": -4.6}), [42, 73])
    assert resolve_e0(BiasConfig(method="e0", e0={"Mo": -4.6, "W": -1.0}), [42]) == {"Mo": -4.6}
    with pytest.raises(ConfigError, match="needs bias.e0"):
        load_config({"data": {"train": ["x"]}, "bias": {"method": "e0"}}, TrainConfig)
    with pytest.raises(ConfigError, match="set method: e0"):
        load_config({"data": {"train": ["x"]}, "bias": {"e0": "dimer"}}, TrainConfig)


def test_checkpoint_without_a_shift_loads_with_zero_shift(tmp_path):
    from dpa4_core.io.checkpoint import load_checkpoint, save_checkpoint

    model = seeded_model(DPA4Config.preset("tiny"), seed=1)
    path = save_checkpoint(model, tmp_path / "old.pt")
    payload = torch.load(path, weights_only=True)
    del payload["state_dict"]["energy_shift"]  # as written before the shift existed
    torch.save(payload, path)
    loaded = load_checkpoint(path)
    assert torch.count_nonzero(loaded.energy_shift) == 0


def test_shipped_e0_table_equals_the_dimer_curves_and_needs_no_data_folder():
    """`e0: dimer` reads the table shipped in the package (an installed dpa4 has no data/ folder); it must equal
    the E0 of the vendored curves for every element Z = 1-92."""
    import gzip
    import json

    from dpa4_core.model.bias import packaged_dimer_e0

    with gzip.open(vendored(*DIMERS), "rt") as handle:
        elements = sorted({f.split("-")[0] for f in json.load(handle)["PBE"] if f.split("-")[0] == f.split("-")[1]})
    assert len(elements) == 92
    shipped = packaged_dimer_e0(elements)
    expected = dimer_e0(vendored(*DIMERS), elements)
    assert max(abs(shipped[el] - expected[el]) for el in elements) < 1e-6
    assert resolve_e0(BiasConfig(method="e0", e0="dimer"), [42, 74]) == {"Mo": shipped["Mo"], "W": shipped["W"]}
    with pytest.raises(BiasFitError, match="Z = 1-92"):
        packaged_dimer_e0(["Og"])
